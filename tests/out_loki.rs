//! `loki` output against the stand-in HTTP server of tests/common/http_sink.rs: the
//! requests are Fluent Bit 5.1.1's (captured in tests/data/fluent-bit/loki), the push
//! JSON holds what Loki reads (checked with serde_json), and faults (400, 503, a
//! receiver down) drop and count, or retry and lose nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http_sink::{run_request_oracle_cases, Answer, HttpSink, Req};
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fluent-bit/loki")
}

fn oracle_conf(case: &str, port: u16) -> String {
    let dir = oracle_dir();
    std::fs::read_to_string(dir.join(format!("{case}.conf")))
        .unwrap()
        .replace("${HTTP_PORT}", &port.to_string())
        .replace("${LOKI_DATA}", dir.to_str().unwrap())
}

#[test]
fn requests_are_fluent_bits() {
    let n = run_request_oracle_cases(&oracle_dir(), Answer::ok, |text, port| {
        text.replace("${HTTP_PORT}", &port.to_string())
            .replace("${LOKI_DATA}", oracle_dir().to_str().unwrap())
    });
    assert!(n >= 9, "{n} cases");
}

/// The push JSON as Loki reads it: `(labels, [(ns, line, metadata)])` per stream.
type Stream = (Value, Vec<(String, String, Option<Value>)>);

fn streams(req: &Req) -> Vec<Stream> {
    assert_eq!(req.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&req.decoded()).expect("a JSON body");
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{v}");
    v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            assert_eq!(s.as_object().unwrap().len(), 2, "{s}");
            let labels = s["stream"].clone();
            for (k, l) in labels.as_object().expect("a label set") {
                assert!(
                    k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && !k.as_bytes()[0].is_ascii_digit(),
                    "label name {k}"
                );
                assert!(l.is_string(), "{l}");
            }
            let values = s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|e| {
                    let e = e.as_array().expect("an entry");
                    assert!(e.len() == 2 || e.len() == 3, "{e:?}");
                    let ns = e[0].as_str().expect("ns as a string").to_string();
                    assert!(ns.bytes().all(|b| b.is_ascii_digit()), "{ns}");
                    (
                        ns,
                        e[1].as_str().expect("a line").to_string(),
                        e.get(2).cloned(),
                    )
                })
                .collect();
            (labels, values)
        })
        .collect()
}

fn loki_conf(port: u16, records: &[&str], extra: &str) -> String {
    let mut conf = String::from("[SERVICE]\n    flush 0.3\n    grace 5\n");
    for (i, r) in records.iter().enumerate() {
        conf.push_str(&format!(
            "[INPUT]\n    name dummy\n    tag t{i}\n    dummy {r}\n    samples 1\n\
             \x20   fixed_timestamp on\n    start_time_sec 1700000000\n    start_time_nsec {i}\n"
        ));
    }
    conf.push_str(&format!(
        "[OUTPUT]\n    name loki\n    match *\n    port {port}\n{extra}"
    ));
    conf
}

/// Independent of Fluent Bit's bytes: labels from record accessors, the line without
/// the keys used as labels and without remove_keys, nanosecond timestamps, structured
/// metadata.
#[test]
fn push_json_carries_labels_lines_and_metadata() {
    let sink = HttpSink::start();
    let records = [
        r#"{"log":"a","level":"info","kubernetes":{"namespace_name":"ns1","labels":{"app":"web"}},"drop":1,"trace":"t1"}"#,
        r#"{"log":"b","level":"warn","kubernetes":{"namespace_name":"ns2","labels":{"app":"db"}},"drop":2}"#,
    ];
    let agent = Agent::start(&loki_conf(
        sink.port(),
        &records,
        "    labels job=test, $level\n    label_keys $kubernetes['namespace_name']\n\
         \x20   remove_keys drop\n    structured_metadata trace=$trace\n    auto_kubernetes_labels on\n",
    ));
    let reqs = sink.wait(T, "both records", |r| {
        r.iter().map(|q| streams(q).len()).sum::<usize>() >= 2
    });
    agent.stop(T);
    let mut got: Vec<Stream> = reqs.iter().flat_map(streams).collect();
    got.sort_by(|a, b| a.1[0].0.cmp(&b.1[0].0));
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].0,
        json!({"job":"test","level":"info","kubernetes_namespace_name":"ns1","app":"web"})
    );
    assert_eq!(
        got[1].0,
        json!({"job":"test","level":"warn","kubernetes_namespace_name":"ns2","app":"db"})
    );
    assert_eq!(got[0].1.len(), 1);
    let (ns, line, meta) = &got[0].1[0];
    assert_eq!(ns, "1700000000000000000");
    let line: Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(
        line,
        json!({"log":"a","kubernetes":{"labels":{"app":"web"}}})
    );
    assert_eq!(meta, &Some(json!({"trace":"t1"})));
    let (ns, line, meta) = &got[1].1[0];
    assert_eq!(ns, "1700000000000000001");
    assert_eq!(
        serde_json::from_str::<Value>(line).unwrap(),
        json!({"log":"b","kubernetes":{"labels":{"app":"db"}}})
    );
    // No trace in the record: the metadata entry is left out, the object stays.
    assert_eq!(meta, &Some(json!({})));
}

/// Static labels: one stream holds every record of the chunk, in order.
#[test]
fn static_labels_make_one_stream_per_chunk() {
    let sink = HttpSink::start();
    let agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.5\n\
         [INPUT]\n    name dummy\n    dummy {{\"n\":1}}\n    copies 5\n    samples 1\n\
         [OUTPUT]\n    name loki\n    match *\n    port {}\n    labels env=prod, team=a\n    line_format key_value\n",
        sink.port()
    ));
    let reqs = sink.wait(T, "a request", |r| !r.is_empty());
    agent.stop(T);
    let s = streams(&reqs[0]);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, json!({"env":"prod","team":"a"}));
    assert_eq!(s[0].1.len(), 5);
    assert!(s[0].1.iter().all(|(_, l, m)| l == "n=1" && m.is_none()));
    let ns: Vec<u128> = s[0].1.iter().map(|(n, _, _)| n.parse().unwrap()).collect();
    assert!(ns.windows(2).all(|w| w[0] <= w[1]), "{ns:?}");
}

fn metric(http: u16, name: &str) -> String {
    let (_, metrics) = http_get(http, "/api/v1/metrics/prometheus").unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{name=\"loki.0\"}}")))
        .unwrap_or_else(|| panic!("{metrics}"))
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string()
}

/// 400 (Loki's out-of-order or bad-request answer) drops the chunk: logged with the
/// body, counted, never retried; later chunks still go.
#[test]
fn bad_request_is_dropped_and_counted() {
    let sink = HttpSink::scripted(|n, _| match n {
        0 => Answer::status(400).body("entry too far behind"),
        _ => Answer::ok(),
    });
    let http = free_port();
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    samples 3\n    rate 2\n\
         [OUTPUT]\n    name loki\n    match *\n    port {}\n",
        sink.port()
    ));
    let reqs = sink.wait(T, "3 requests", |r| r.len() >= 3);
    agent.wait_log("entry too far behind", T);
    assert_eq!(metric(http, "fluentbit_output_dropped_records_total"), "1");
    assert_eq!(metric(http, "fluentbit_output_retries_total"), "0");
    let o = agent.stop(T);
    assert!(
        o.stderr.contains("HTTP status=400 Not retrying"),
        "{}",
        o.stderr
    );
    // The refused chunk was not sent again: every later body is another record's.
    assert!(reqs[1..].iter().all(|r| r.body != reqs[0].body), "{reqs:?}");
    assert_eq!(sink.reqs().len(), 3, "{:?}", sink.reqs());
}

/// `rand_value` of every line from request `from` on, to see loss and duplicates.
fn lines_of(reqs: &[Req], from: usize) -> Vec<u64> {
    reqs[from..]
        .iter()
        .flat_map(streams)
        .flat_map(|(_, v)| v)
        .map(|(_, line, _)| {
            serde_json::from_str::<Value>(&line).unwrap()["rand_value"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn random_to_loki(port: u16, n: u32) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    grace 10\n    scheduler.base 1\n    scheduler.cap 3\n\
         [INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 20000000\n\
         [OUTPUT]\n    name loki\n    match *\n    port {port}\n    retry_limit no_limits\n"
    )
}

/// 503 and 429 retry the chunk (as do other statuses Fluent Bit's loki does not drop,
/// here 401): every record arrives exactly once in the requests answered 200.
#[test]
fn server_errors_are_retried_and_nothing_is_lost() {
    let sink = HttpSink::scripted(|n, _| match n {
        0 => Answer::status(503).body("ingester busy"),
        1 => Answer::status(429).header("Retry-After", "1"),
        2 => Answer::status(401).body("no org id"),
        _ => Answer::ok(),
    });
    let n = 30;
    let agent = Agent::start(&random_to_loki(sink.port(), n));
    let reqs = sink.wait(T, "every record", |r| {
        r.len() > 3 && {
            let mut v = lines_of(r, 3);
            v.sort();
            v.dedup();
            v.len() >= n as usize
        }
    });
    let o = agent.stop(T);
    let got = lines_of(&reqs, 3);
    let mut uniq = got.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), n as usize);
    assert_eq!(
        got.len(),
        n as usize,
        "a record accepted twice\n{}",
        o.stderr
    );
    for text in [
        "HTTP status=503",
        "HTTP status=429",
        "HTTP status=401",
        "no org id",
    ] {
        assert!(o.stderr.contains(text), "{text}\n{}", o.stderr);
    }
}

/// A receiver that is down for 8 s, then up: the records wait and all arrive.
#[test]
fn receiver_down_then_up_loses_nothing() {
    let port = free_port();
    let n = 20;
    let agent = Agent::start(&random_to_loki(port, n));
    std::thread::sleep(Duration::from_secs(8));
    let sink = HttpSink::on_port(port, |_, _| Answer::ok());
    let reqs = sink.wait(T, "every record", |r| lines_of(r, 0).len() >= n as usize);
    let o = agent.stop(T);
    let mut got = lines_of(&reqs, 0);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), n as usize, "{}", o.stderr);
    assert!(o.stderr.contains("Connection refused"), "{}", o.stderr);
}

/// tenant_id_key: one request per tenant. A tenant refused with 400: with
/// partial_success the chunk counts as delivered (nothing is sent again), with
/// partial_error the whole chunk is retried, the delivered tenants again too.
#[test]
fn tenant_groups_and_partial_failures() {
    for (mode, retried) in [("partial_success", false), ("partial_error", true)] {
        let sink = HttpSink::scripted(|_, r| match r.header("x-scope-orgid") {
            Some("b") => Answer::status(400).body("bad tenant"),
            _ => Answer::ok(),
        });
        let conf = oracle_conf("tenant_id_key", sink.port())
            .replace(
                "    labels job=t\n",
                &format!(
                "    labels job=t\n    tenant_id_key_error_handling {mode}\n    retry_limit 1\n"
            ),
            )
            .replace(
                "[SERVICE]\n",
                "[SERVICE]\n    scheduler.base 1\n    scheduler.cap 2\n",
            );
        let agent = Agent::start(&conf);
        if retried {
            sink.wait(T, "the chunk sent twice", |r| r.len() >= 6);
        } else {
            sink.wait(T, "3 tenants", |r| r.len() >= 3);
            std::thread::sleep(Duration::from_secs(4));
        }
        let o = agent.stop(T);
        let reqs = sink.reqs();
        let tenants: Vec<&str> = reqs
            .iter()
            .map(|r| r.header("x-scope-orgid").unwrap())
            .collect();
        let want: &[&str] = if retried {
            &["a", "b", "dflt", "a", "b", "dflt"]
        } else {
            &["a", "b", "dflt"]
        };
        assert_eq!(tenants, want, "{mode}\n{}", o.stderr);
        assert!(o.stderr.contains("bad tenant"), "{}", o.stderr);
        // Each request holds only its tenant's records.
        let lines: Vec<Vec<String>> = reqs[..3]
            .iter()
            .map(|r| {
                streams(r)
                    .into_iter()
                    .flat_map(|s| s.1)
                    .map(|v| v.1)
                    .collect()
            })
            .collect();
        assert_eq!(lines[0], ["{\"tenant\":\"a\"}", "{\"tenant\":\"a\"}"]);
        assert_eq!(lines[1], ["{\"tenant\":\"b\"}"]);
        assert_eq!(lines[2], ["{\"other\":\"x\"}", "{\"tenant\":5}"]);
    }
}

/// Config errors name the line and the fix.
#[test]
fn bad_settings_are_refused() {
    for (line, want) in [
        ("    labels job\n", "not a key=value pair"),
        ("    labels job=\n", "the value is empty"),
        ("    labels $1abc\n", "cannot start with a number"),
        ("    label_keys level\n", "must start with '$'"),
        (
            "    structured_metadata_map_keys labels\n",
            "must start with '$'",
        ),
        ("    drop_single_key maybe\n", "on, off or raw"),
        ("    line_format logfmt\n", "line_format"),
        ("    compress zstd\n", "gzip"),
        (
            "    tenant_id_key_error_handling ignore\n",
            "partial_success",
        ),
        (
            "    label_map_path /nonexistent/map.json\n",
            "label_map_path: no such file",
        ),
        ("    uri loki/api/v1/push\n", "starting with /"),
        ("    header Bad:Name x\n", "invalid header"),
    ] {
        let errs = refused_config(&format!(
            "[INPUT]\n    name dummy\n[OUTPUT]\n    name loki\n    match *\n{line}"
        ));
        assert!(
            errs.iter().any(|e| e.contains(want) && e.contains(":6")),
            "{line}: {errs:?}"
        );
    }
}
