//! Fluent Bit's monitoring API: counts after a known number of records, Prometheus text
//! checked by promtool and scraped by a real Prometheus, health, and a taken port.

mod common;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

fn start(port: u16, extra_service: &str) -> Agent {
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {port}\n{extra_service}\
         [INPUT]\n    name dummy\n    samples 10\n    rate 50\n\
         [FILTER]\n    name record_modifier\n    match *\n    record a b\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ));
    a.wait_log(
        &format!("[http_server] listen iface=127.0.0.1 tcp_port={port}"),
        T,
    );
    a
}

fn promtool(text: &str) -> (Option<i32>, String) {
    common::prometheus::promtool(text).expect("promtool (Debian package prometheus)")
}

#[test]
fn metrics_count_records_in_fluent_bits_names_and_promtool_parses_them() {
    let port = free_port();
    let mut a = start(port, "");
    a.wait_lines(10, T);
    let (code, body) = http_get(port, "/api/v1/metrics").unwrap();
    assert_eq!(code, 200);
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["input"]["dummy.0"]["records"], 10);
    // Fluent Bit 5.1.1 counts 280 bytes for these 10 records (28 each: the event
    // [[time, {}], {"message": "dummy"}] in msgpack), measured on the same config.
    assert_eq!(m["input"]["dummy.0"]["bytes"], 280);
    assert_eq!(m["filter"]["record_modifier.0"]["records"], 10);
    assert_eq!(m["output"]["stdout.0"]["proc_records"], 10);
    // With the filter's "a": "b" the smallest encoding is 32 bytes a record (Fluent
    // Bit's filter encoder writes wider headers: 36; see README).
    assert_eq!(m["output"]["stdout.0"]["proc_bytes"], 320);
    assert_eq!(m["output"]["stdout.0"]["errors"], 0);
    let (_, up) = http_get(port, "/api/v1/uptime").unwrap();
    assert!(
        up.contains("\"uptime_hr\":\"Fluent Bit has been running:  0 day, 0 hour, 0 minute and "),
        "{up}"
    );
    let (_, root) = http_get(port, "/").unwrap();
    assert!(root.starts_with("{\"fluent-bit\":{\"version\":"), "{root}");
    for path in ["/api/v1/metrics/prometheus", "/api/v2/metrics/prometheus"] {
        let (code, text) = http_get(port, path).unwrap();
        assert_eq!(code, 200);
        assert!(
            text.contains("fluentbit_input_records_total{name=\"dummy.0\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("fluentbit_input_bytes_total{name=\"dummy.0\"} 280"),
            "{text}"
        );
        assert!(
            text.contains("fluentbit_output_proc_bytes_total{name=\"stdout.0\"} 320"),
            "{text}"
        );
        assert!(
            text.contains("fluentbit_output_proc_records_total{name=\"stdout.0\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fluentbit_output_retries_failed_total counter"),
            "{text}"
        );
        let (rc, lint) = promtool(&text);
        // Exit 3 is promtool's lint verdict; the only complaint allowed is about Fluent
        // Bit's own counter name `fluentbit_uptime` (no _total), kept for dashboards.
        assert!(
            rc == Some(0) || rc == Some(3),
            "promtool failed to parse {path}: {lint}"
        );
        for line in lint.lines().filter(|l| !l.trim().is_empty()) {
            assert!(line.starts_with("fluentbit_uptime "), "{path}: {line}");
        }
    }
    assert_eq!(
        http_get(port, "/api/v1/health").unwrap().0,
        404,
        "health_check is off"
    );
    a.stop(T);
}

#[test]
fn a_real_prometheus_scrapes_the_agent() {
    let port = free_port();
    let mut a = start(port, "");
    a.wait_lines(10, T);
    let dir = Dir::new();
    let cfg = dir.file(
        "prometheus.yml",
        &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agent\n    metrics_path: /api/v2/metrics/prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"),
    );
    let web = free_port();
    let mut prom = Command::new("prometheus")
        .args([
            &format!("--config.file={}", cfg.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{web}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    let end = Instant::now() + Duration::from_secs(60);
    let found = loop {
        if let Ok((200, body)) = http_get(web, "/api/v1/query?query=fluentbit_input_records_total")
        {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(r) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                break Some(r.clone());
            }
        }
        if Instant::now() > end {
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = prom.kill();
    let _ = prom.wait();
    let r = found.expect("prometheus never scraped the agent");
    assert_eq!(r["metric"]["name"], "dummy.0");
    assert_eq!(r["metric"]["job"], "agent");
    assert_eq!(r["value"][1], "10");
    a.stop(T);
}

#[test]
fn health_turns_to_error_after_output_errors_and_back() {
    let port = free_port();
    let dir = Dir::new();
    let conf = dir.file(
        "c.conf",
        &format!(
            "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {port}\n    health_check on\n    hc_errors_count 2\n    hc_retry_failure_count 2\n    hc_period 2\n\
             [INPUT]\n    name dummy\n    samples 6\n    rate 10\n[OUTPUT]\n    name stdout\n    match *\n"
        ),
    );
    // stdout is a pipe whose reader is gone: every flush fails (EPIPE) with an error.
    let mut child = Command::new(BIN)
        .args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let wait_status = |want: u16, body: &str| {
        let end = Instant::now() + T;
        loop {
            if let Ok((code, b)) = http_get(port, "/api/v1/health") {
                if code == want {
                    assert_eq!(b, body);
                    return;
                }
            }
            assert!(Instant::now() < end, "health never became {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_status(500, "error\n");
    let (_, v2) = http_get(port, "/api/v2/health").unwrap();
    let v: serde_json::Value = serde_json::from_str(&v2).unwrap();
    assert_eq!(
        (
            v["status"].as_str(),
            v["error_limit"].as_u64(),
            v["period_limit"].as_u64()
        ),
        (Some("error"), Some(2), Some(2))
    );
    assert!(v["errors"].as_u64().unwrap() > 2, "{v}");
    // No more errors once the 6 samples are done: healthy again after hc_period.
    wait_status(200, "ok\n");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let o = run(
        &[
            "-H",
            "-L",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-i",
            "dummy",
            "-o",
            "stdout",
            "-m",
            "*",
        ],
        None,
    );
    assert_eq!(o.code, Some(255));
    assert!(
        o.stderr.contains(&format!(
            "[http_server] could not start HTTP server on 127.0.0.1:{port}: Address already in use"
        )),
        "{}",
        o.stderr
    );
    drop(taken);
}

#[test]
fn connection_pool_counters() {
    let port = free_port();
    let c = TcpCollector::start();
    let a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {port}\n\
         [INPUT]\n    name dummy\n    samples 5\n    rate 2\n\
         [OUTPUT]\n    name tcp\n    match *\n    port {}\n    format json_lines\n    workers 1\n",
        c.port()
    ));
    c.wait_lines(5, T);
    let (_, text) = http_get(port, "/api/v2/metrics/prometheus").unwrap();
    let get = |m: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{m}{{name=\"tcp.0\"}}")))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{m} missing:\n{text}"))
    };
    // Records 0.5 s apart, flushed every 0.2 s: several flushes over one kept-alive
    // connection (two flushes may still share a record's tick under load).
    assert_eq!(get("agent_output_connections_opened_total"), 1, "{text}");
    assert!(get("agent_output_connections_reused_total") >= 2, "{text}");
    assert_eq!(get("agent_output_connections_closed_total"), 0);
    assert_eq!(get("fluentbit_output_proc_records_total"), 5);
    a.stop(T);
}

/// Idle and half-sent connections cannot hold the monitoring server (issue 21 item 3):
/// at most 256 are kept, each must send its request head within 10 s, and a good client
/// gets its answer (an idle one makes room for it). Before, 3,000 stayed open for ever.
#[test]
fn idle_and_half_sent_connections_are_closed_and_capped() {
    use std::io::{Read, Write};
    let port = free_port();
    let a = start(port, "");
    let mut idle: Vec<std::net::TcpStream> = (0..300)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /api/v1/uptime HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            s
        })
        .collect();
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", a.pid()))
            .unwrap()
            .count()
    };
    // A good client is answered within the header timeout and a margin.
    let deadline = Instant::now() + T;
    loop {
        if let Ok((200, _)) = http_get(port, "/api/v1/uptime") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never answered; {} descriptors",
            fds()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Never more than the cap held open, and every idle connection is closed.
    assert!(fds() < 256 + 64, "{} descriptors", fds());
    for s in idle.iter_mut() {
        s.set_read_timeout(Some(T)).unwrap();
        let mut b = [0u8; 1];
        let closed = match s.read(&mut b) {
            Ok(0) => true,
            // A close with the half-sent request unread resets the connection.
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        assert!(closed, "an idle connection still open after {T:?}");
    }
    a.stop(T);
}

/// Keys of a JSON object, recursively, with their nesting.
fn shape(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    if let Some(m) = v.as_object() {
        for (k, x) in m {
            let p = format!("{at}/{k}");
            out.push(p.clone());
            shape(x, &p, out);
        }
    }
}

/// `storage.metrics`: as Fluent Bit 5.1.1, `/api/v1/storage` only when on (its layout,
/// sizes in its human form), the storage families unless off. A stalled output holds
/// the input's chunks: they are counted, and the input is overlimit at mem_buf_limit.
#[test]
fn storage_metrics_are_fluent_bits() {
    let oracle: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/data/fluent-bit/metrics/api_v1_storage.json").unwrap(),
    )
    .unwrap();
    let dead = free_port();
    let conf = |port: u16, setting: &str| {
        format!(
            "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {port}\n{setting}\
             [INPUT]\n    name dummy\n    rate 5\n    mem_buf_limit 0\n\
             [INPUT]\n    name dummy\n    rate 50\n    mem_buf_limit 1M\n\
             [INPUT]\n    name dummy\n    rate 50\n    mem_buf_limit 1K\n\
             [OUTPUT]\n    name tcp\n    match *\n    host 127.0.0.1\n    port {dead}\n    retry_limit no_limits\n"
        )
    };
    let port = free_port();
    let mut a = Agent::start(&conf(port, "    storage.metrics on\n"));
    a.wait_log("[http_server] listen", T);
    std::thread::sleep(Duration::from_secs(2));
    let (code, body) = http_get(port, "/api/v1/storage").unwrap();
    assert_eq!(code, 200, "{body}");
    let ours: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (mut want, mut got) = (Vec::new(), Vec::new());
    shape(&oracle, "", &mut want);
    let mut two = ours.clone();
    two["input_chunks"]
        .as_object_mut()
        .unwrap()
        .remove("dummy.2");
    shape(&two, "", &mut got);
    assert_eq!(got, want, "{body}");
    let held = &ours["input_chunks"]["dummy.1"];
    assert_eq!(held["status"]["mem_limit"], "976.6K", "{body}");
    assert_eq!(ours["input_chunks"]["dummy.0"]["status"]["mem_limit"], "0b");
    let chunks = held["chunks"]["total"].as_u64().unwrap();
    assert!(chunks > 0, "the stalled output holds chunks: {body}");
    assert_eq!(ours["storage_layer"]["chunks"]["fs_chunks"], 0);
    let full = &ours["input_chunks"]["dummy.2"]["status"];
    assert_eq!(full["overlimit"], true, "{body}");
    assert_eq!(held["status"]["overlimit"], false, "{body}");
    let (_, text) = http_get(port, "/api/v2/metrics/prometheus").unwrap();
    assert!(
        text.contains("fluentbit_input_storage_chunks{name=\"dummy.1\"} "),
        "{text}"
    );
    assert!(text.contains("fluentbit_storage_mem_chunks "), "{text}");
    drop(a);
    // Unset: the families, no endpoint; off: neither.
    for (setting, families, endpoint) in
        [("", true, 404), ("    storage.metrics off\n", false, 404)]
    {
        let port = free_port();
        let mut a = Agent::start(&conf(port, setting));
        a.wait_log("[http_server] listen", T);
        let (code, _) = http_get(port, "/api/v1/storage").unwrap();
        assert_eq!(code, endpoint, "{setting:?}");
        let (_, text) = http_get(port, "/api/v2/metrics/prometheus").unwrap();
        assert_eq!(
            text.contains("fluentbit_storage_chunks"),
            families,
            "{setting:?}: {text}"
        );
        assert_eq!(
            text.contains("fluentbit_input_storage_overlimit"),
            families,
            "{setting:?}"
        );
    }
}

/// Without a filter the output's bytes are the input's (measured once, at the input).
#[test]
fn output_bytes_without_filters_are_the_input_bytes() {
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {port}\n\
         [INPUT]\n    name dummy\n    samples 10\n    rate 50\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ));
    a.wait_lines(10, T);
    let deadline = Instant::now() + T;
    loop {
        let (_, body) = http_get(port, "/api/v1/metrics").unwrap();
        let m: serde_json::Value = serde_json::from_str(&body).unwrap();
        if m["output"]["stdout.0"]["proc_records"] == 10 {
            assert_eq!(m["input"]["dummy.0"]["bytes"], 280, "{body}");
            assert_eq!(m["output"]["stdout.0"]["proc_bytes"], 280, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
