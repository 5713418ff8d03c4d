//! `opentelemetry` output against a stand-in receiver on loopback: each request is
//! decoded by an independent decoder (the OpenTelemetry project's Python classes,
//! PyPI `opentelemetry-proto`, tests/common/otlp_decode.py) and compared with what
//! Fluent Bit 5.1.1 sent for the same config (tests/data/fluent-bit/opentelemetry);
//! faults (a receiver down, 503, 400) lose nothing that can be delivered and count
//! what is dropped.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http_sink::{Answer, HttpSink, Req};
use common::*;

const T: Duration = Duration::from_secs(30);

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fluent-bit/opentelemetry")
}

/// Raw requests decoded by tests/common/otlp_decode.py: one JSON object per request
/// (request line, headers, body as MessageToDict), with what two runs cannot share
/// masked: the Host header's port, and Content-Length of a compressed body (zlib and
/// flate2 compress the same bytes differently).
fn decode(raw: &[u8]) -> serde_json::Value {
    let raw = &inflate_zstd(raw);
    let out = python_script("otlp_decode.py", raw);
    assert!(
        out.status.success(),
        "otlp_decode.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for req in v.as_array_mut().unwrap() {
        let compressed = req["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "content-encoding");
        for h in req["headers"].as_array_mut().unwrap() {
            if h[0] == "host" {
                let host = h[1].as_str().unwrap();
                h[1] = format!("{}:PORT", host.rsplit_once(':').unwrap().0).into();
            }
            if h[0] == "content-length" && compressed {
                h[1] = "COMPRESSED".into();
            }
        }
    }
    v
}

/// The protobuf bytes of each request's body (decompressed).
fn bodies(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (req, used) = common::http_sink::parse(rest).expect("whole requests");
        rest = &rest[used..];
        out.push(match req.header("content-encoding") {
            Some("zstd") => zstd::stream::decode_all(&req.body[..]).expect("a zstd body"),
            _ => req.decoded(),
        });
    }
    out
}

/// The requests with each zstd body inflated (by the zstd crate, libzstd), its
/// Content-Length set to match and its Content-Encoding to `zstd-inflated`: the
/// Python decoder needs no zstd module.
fn inflate_zstd(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (req, used) = common::http_sink::parse(rest).expect("whole requests");
        rest = &rest[used..];
        if req.header("content-encoding") != Some("zstd") {
            out.extend_from_slice(&req.raw);
            continue;
        }
        let body = zstd::stream::decode_all(&req.body[..]).expect("a zstd body");
        out.extend_from_slice(format!("{}\r\n", req.line).as_bytes());
        for (k, v) in &req.headers {
            let v = match k.to_ascii_lowercase().as_str() {
                "content-length" => body.len().to_string(),
                "content-encoding" => "zstd-inflated".to_string(),
                _ => v.clone(),
            };
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
    }
    out
}

fn connect_retrying(port: u16) -> std::net::TcpStream {
    let deadline = std::time::Instant::now() + T;
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() > deadline => panic!("forward input: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Every config of the oracle directory, sent by agent to a receiver that answers 200:
/// the decoded requests equal Fluent Bit's, and so do the protobuf bytes.
#[test]
fn requests_are_fluent_bits() {
    let dir = oracle_dir();
    let mut cases: Vec<(String, &str)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let (case, ext) = name.rsplit_once('.')?;
            let ext = ["conf", "yaml"].into_iter().find(|x| *x == ext)?;
            Some((case.to_string(), ext))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 13, "{cases:?}");
    let mut bad = Vec::new();
    for (case, ext) in &cases {
        let want = std::fs::read(dir.join(format!("{case}.expected"))).unwrap();
        let n = bodies(&want).len();
        let sink = HttpSink::start();
        let forward = free_port();
        let text = std::fs::read_to_string(dir.join(format!("{case}.{ext}")))
            .unwrap()
            .replace("${HTTP_PORT}", &sink.port().to_string())
            .replace("${FORWARD_PORT}", &forward.to_string());
        let tmp = Dir::new();
        let path = tmp.file(&format!("fluent-bit.{ext}"), &text);
        let agent = Agent::spawn_in(&tmp, &["-c", path.to_str().unwrap()], None);
        if text.contains("name forward") {
            // The case's records (msgpack binaries) as one Forward message.
            let fwd = std::fs::read(dir.join(format!("{case}.fwd"))).unwrap();
            let mut s = connect_retrying(forward);
            s.write_all(&fwd).unwrap();
        }
        let reqs = sink.wait(T, case, |r| r.len() >= n);
        let o = agent.stop(T);
        let got: Vec<u8> = reqs.iter().flat_map(|r| r.raw.clone()).collect();
        let (g, w) = (decode(&got), decode(&want));
        if g != w || sink.reqs().len() != n {
            bad.push(format!(
                "{case}:\n--- agent\n{}\n--- fluent-bit\n{}\n--- stderr\n{}",
                serde_json::to_string_pretty(&g).unwrap(),
                serde_json::to_string_pretty(&w).unwrap(),
                o.stderr
            ));
        } else if bodies(&got) != bodies(&want) {
            bad.push(format!("{case}: same messages, other protobuf bytes"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `rand_value` of every log record in the requests (decoded by the Python classes).
fn values(reqs: &[Req]) -> Vec<u64> {
    if reqs.is_empty() {
        return Vec::new();
    }
    let raw: Vec<u8> = reqs.iter().flat_map(|r| r.raw.clone()).collect();
    let mut out = Vec::new();
    for req in decode(&raw).as_array().unwrap() {
        for rl in req["body"]["resourceLogs"].as_array().unwrap() {
            for sl in rl["scopeLogs"].as_array().unwrap() {
                for lr in sl["logRecords"].as_array().unwrap() {
                    let kv = &lr["body"]["kvlistValue"]["values"][0];
                    assert_eq!(kv["key"], "rand_value", "{lr}");
                    // int64 in MessageToDict is a string; rand_value wraps above i64::MAX.
                    let i: i64 = kv["value"]["intValue"].as_str().unwrap().parse().unwrap();
                    out.push(i as u64);
                }
            }
        }
    }
    out
}

fn random_to_otel(port: u16, n: u32, extra: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    grace 10\n    scheduler.base 1\n    scheduler.cap 10\n\
         [INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 20000000\n\
         [OUTPUT]\n    name opentelemetry\n    match *\n    host 127.0.0.1\n    port {port}\n\
         \x20   retry_limit no_limits\n{extra}"
    )
}

/// A receiver that is down for 10 s, then up: the records wait and all arrive, once.
#[test]
fn receiver_down_then_up_loses_nothing() {
    let port = free_port();
    let n = 30;
    let agent = Agent::start(&random_to_otel(port, n, ""));
    std::thread::sleep(Duration::from_secs(10));
    let sink = HttpSink::on_port(port, |_, _| Answer::ok());
    let reqs = sink.wait(T, "every record", |r| values(r).len() >= n as usize);
    let o = agent.stop(T);
    let mut got = values(&reqs);
    got.sort();
    let all = got.len();
    got.dedup();
    assert_eq!((got.len(), all), (n as usize, n as usize), "{}", o.stderr);
    assert!(o.stderr.contains("Connection refused"), "{}", o.stderr);
}

/// 503 (and 429, 502, 504: OTLP's retryable codes) retries the chunk; after it every
/// record arrives exactly once.
#[test]
fn unavailable_is_retried_and_nothing_is_lost() {
    let sink = HttpSink::scripted(|n, _| match n {
        0 => Answer::status(503).body("busy"),
        1 => Answer::status(429),
        _ => Answer::ok(),
    });
    let n = 20;
    let agent = Agent::start(&random_to_otel(sink.port(), n, ""));
    let accepted = |reqs: &[Req]| values(&reqs[2.min(reqs.len())..]);
    let reqs = sink.wait(T, "every record accepted", |r| {
        let mut v = accepted(r);
        v.sort();
        v.dedup();
        v.len() >= n as usize
    });
    let o = agent.stop(T);
    let mut got = accepted(&reqs);
    got.sort();
    let all = got.len();
    got.dedup();
    assert_eq!((got.len(), all), (n as usize, n as usize), "{}", o.stderr);
    assert!(o.stderr.contains("HTTP status=503\nbusy"), "{}", o.stderr);
}

/// 400 (and any status OTLP does not call retryable) drops the records: logged with
/// the response body and counted in fluentbit_output_dropped_records_total. With
/// `batch_size`, a later batch's 503 retries only that batch and the ones after it.
#[test]
fn refused_batch_is_dropped_and_counted_and_only_the_rest_retried() {
    let sink = HttpSink::scripted(|n, _| match n {
        0 => Answer::status(400).body("{\"code\":3,\"message\":\"bad log record\"}"),
        1 => Answer::ok(),
        2 => Answer::status(503),
        _ => Answer::ok(),
    });
    let http = free_port();
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 1\n    scheduler.base 1\n    scheduler.cap 2\n\
         \x20   http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    dummy {{\"log\":\"x\"}}\n    copies 8\n    samples 1\n\
         [OUTPUT]\n    name opentelemetry\n    match *\n    host 127.0.0.1\n    port {}\n\
         \x20   batch_size 3\n",
        sink.port()
    ));
    // 8 records in batches of 3, 3, 2: the first refused, the second taken, the third
    // answered 503, then sent again alone.
    let reqs = sink.wait(T, "4 requests", |r| r.len() >= 4);
    agent.wait_log("bad log record", T);
    let sizes: Vec<usize> = decode(&reqs.iter().flat_map(|r| r.raw.clone()).collect::<Vec<u8>>())
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["body"]["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, [3, 3, 2, 2]);
    let metric = |name: &str| {
        let (_, text) = http_get(http, "/api/v1/metrics/prometheus").unwrap();
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{name=\"opentelemetry.0\"}}")))
            .and_then(|l| l.split(' ').nth(1).map(str::to_string))
            .unwrap_or_else(|| panic!("{name}: {text}"))
    };
    let deadline = std::time::Instant::now() + T;
    while metric("fluentbit_output_proc_records_total") != "5" {
        assert!(std::time::Instant::now() < deadline, "proc_records never 5");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric("fluentbit_output_dropped_records_total"), "3");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.reqs().len(), 4, "nothing sent twice");
    let o = agent.stop(T);
    assert!(
        o.stderr
            .contains("HTTP status=400\n{\"code\":3,\"message\":\"bad log record\"}")
            && o.stderr.contains("will not be retried"),
        "{}",
        o.stderr
    );
}

/// Settings agent cannot honour are refused at their line, with the fix.
#[test]
fn bad_settings_are_refused() {
    for (line, want) in [
        ("    grpc on\n", "grpc: OTLP/gRPC is not available in agent"),
        (
            "    http2 force\n",
            "http2: HTTP/2 without TLS (force) is not available",
        ),
        ("    compress brotli\n", "compress"),
        ("    batch_size 0\n", "batch_size"),
        ("    logs_max_scopes -1\n", "logs_max_scopes"),
        ("    oauth2.enable on\n", "OAuth2"),
        ("    aws_auth on\n", "aws_region not set"),
        ("    header Bad:Name x\n", "invalid header"),
        ("    logs_body_key $a[\n", "logs_body_key"),
        ("    port 70000\n", "port"),
    ] {
        let errs = refused_config(&format!(
            "[INPUT]\n    name dummy\n[OUTPUT]\n    name opentelemetry\n    match *\n{line}"
        ));
        assert!(errs.iter().any(|e| e.contains(want)), "{line}: {errs:?}");
        // The error names the file and the line of the setting.
        assert!(errs.iter().any(|e| e.contains(":6:")), "{line}: {errs:?}");
    }
}

/// `timeUnixNano` of every data point replaced by `TIME` (each run scrapes at its own
/// time), after checking, for a request of this run (`recent`), that it is within the
/// last 10 minutes (Fluent Bit's pinned requests carry the time of their capture).
fn mask_times(v: &mut serde_json::Value, recent: bool) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "timeUnixNano" {
                    let t: u64 = x.as_str().unwrap().parse().unwrap();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64;
                    assert!(
                        !recent || (t <= now && now - t < 600_000_000_000),
                        "{t} vs {now}"
                    );
                    *x = "TIME".into();
                } else {
                    mask_times(x, recent);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| mask_times(x, recent)),
        _ => {}
    }
}

/// OTLP metrics: each config of tests/data/fluent-bit/opentelemetry/metrics scrapes a
/// fixed exposition text (served here) or reads a fixed procfs and sends to the
/// receiver; the first request, decoded by the Python classes, equals Fluent Bit's but
/// for the scrape times (the decoder also checks each body is the canonical encoding of
/// its message, so equal messages are equal bytes).
#[test]
fn metrics_requests_are_fluent_bits() {
    let dir = oracle_dir().join("metrics");
    let text = std::fs::read_to_string(dir.join("scrape.txt")).unwrap();
    let target = HttpSink::scripted(move |_, _| Answer::ok().body(&text));
    let mut bad = Vec::new();
    let mut n = 0;
    for case in ["scrape_plain", "scrape_gzip_labels", "node_static_label"] {
        n += 1;
        let want = std::fs::read(dir.join(format!("{case}.expected"))).unwrap();
        let sink = HttpSink::start();
        let conf = std::fs::read_to_string(dir.join(format!("{case}.yaml")))
            .unwrap()
            .replace("${HTTP_PORT}", &sink.port().to_string())
            .replace("${SCRAPE_PORT}", &target.port().to_string())
            .replace("${PROCFS}", dir.join("proc").to_str().unwrap());
        let tmp = Dir::new();
        let path = tmp.file("fluent-bit.yaml", &conf);
        let agent = Agent::spawn_in(&tmp, &["-c", path.to_str().unwrap()], None);
        let reqs = sink.wait(T, case, |r| !r.is_empty());
        let o = agent.stop(T);
        let (mut g, mut w) = (decode(&reqs[0].raw), decode(&want));
        mask_times(&mut g, true);
        mask_times(&mut w, false);
        if g != w {
            bad.push(format!(
                "{case}:\n--- agent\n{}\n--- fluent-bit\n{}\n--- stderr\n{}",
                serde_json::to_string_pretty(&g).unwrap(),
                serde_json::to_string_pretty(&w).unwrap(),
                o.stderr
            ));
        }
    }
    assert_eq!(n, 3);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// One output, both signals: the agent's own metrics go to /v1/metrics and the records
/// to /v1/logs, nothing dropped; a 503 on metrics is retried, a 400 drops the set and
/// counts it.
#[test]
fn metrics_and_logs_of_one_output_go_to_their_paths() {
    let sink = HttpSink::scripted(|n, r| {
        if r.line.contains("/v1/metrics") && n < 2 {
            Answer::status(503)
        } else {
            Answer::ok()
        }
    });
    let http = free_port();
    let agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.5\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n    scheduler.base 1\n    scheduler.cap 2\n\
         [INPUT]\n    name fluentbit_metrics\n    tag m\n    scrape_interval 1\n\
         [INPUT]\n    name dummy\n    tag l\n    samples 1\n\
         [OUTPUT]\n    name opentelemetry\n    match *\n    host 127.0.0.1\n    port {}\n",
        sink.port()
    ));
    let reqs = sink.wait(T, "metrics after a 503, and the record", |r| {
        r.iter().any(|q| q.line.starts_with("POST /v1/logs "))
            && r.iter()
                .filter(|q| q.line.starts_with("POST /v1/metrics "))
                .count()
                >= 3
    });
    let raw: Vec<u8> = reqs
        .iter()
        .filter(|q| q.line.starts_with("POST /v1/metrics "))
        .flat_map(|q| q.raw.clone())
        .collect();
    let decoded = decode(&raw);
    let names: Vec<&str> = decoded[0]["body"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"fluentbit_uptime"), "{names:?}");
    assert!(
        names.contains(&"fluentbit_input_records_total"),
        "{names:?}"
    );
    assert!(metric(http, "fluentbit_output_retries_total", "opentelemetry.0") >= 1);
    assert_eq!(
        metric(
            http,
            "fluentbit_output_dropped_records_total",
            "opentelemetry.0"
        ),
        0
    );
    let o = agent.stop(T);
    assert!(!o.stderr.contains("sends logs only"), "{}", o.stderr);

    // A receiver that refuses metrics (400): each set is dropped and counted.
    let sink = HttpSink::scripted(|_, _| Answer::status(400).body("bad metrics"));
    let http = free_port();
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.5\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name fluentbit_metrics\n    tag m\n    scrape_interval 1\n    scrape_on_start on\n\
         [OUTPUT]\n    name opentelemetry\n    match *\n    host 127.0.0.1\n    port {}\n",
        sink.port()
    ));
    agent.wait_log("bad metrics", T);
    let deadline = std::time::Instant::now() + T;
    while metric(
        http,
        "fluentbit_output_dropped_records_total",
        "opentelemetry.0",
    ) == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing counted as dropped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.stop(T);
}

/// `http2 on` starts (with a warning at its line) and the records arrive over HTTP/1.1.
#[test]
fn http2_on_warns_and_sends_over_http_1_1() {
    let sink = HttpSink::start();
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n\
         [OUTPUT]\n    name opentelemetry\n    match *\n    port {}\n    http2 on\n",
        sink.port()
    ));
    agent.wait_log(
        "http2 on: agent sends these OTLP/HTTP requests over HTTP/1.1",
        T,
    );
    let reqs = sink.wait(T, "a request", |r| !r.is_empty());
    assert_eq!(reqs[0].line, "POST /v1/logs HTTP/1.1");
    agent.stop(T);
}
