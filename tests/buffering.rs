//! Nothing lost: a destination down for 30 s, a destination that stops reading (memory
//! bounded, inputs paused), and SIGTERM during a long backoff.

mod common;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(60);

fn values(collector: &TcpCollector) -> Vec<String> {
    String::from_utf8_lossy(&collector.bytes())
        .lines()
        .map(|l| {
            l.split("\"rand_value\":")
                .nth(1)
                .unwrap_or("")
                .trim_end_matches('}')
                .to_string()
        })
        .collect()
}

#[test]
fn a_destination_down_for_30_s_loses_nothing() {
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.5\n    scheduler.base 1\n    scheduler.cap 4\n\
         [INPUT]\n    name random\n    samples 400\n    interval_sec 0\n    interval_nsec 50000000\n    mem_buf_limit 3k\n\
         [OUTPUT]\n    name tcp\n    match *\n    host 127.0.0.1\n    port {port}\n    format json_lines\n    retry_limit no_limits\n"
    ));
    a.wait_log("retry in", T);
    std::thread::sleep(Duration::from_secs(30)); // the outage
    let c = TcpCollector::on_port(port);
    c.wait_lines(400, T);
    let o = a.stop(T);
    let v = values(&c);
    let unique: HashSet<&String> = v.iter().collect();
    assert_eq!(
        v.len(),
        400,
        "every record once (nothing was in flight when the peer was down)"
    );
    assert_eq!(unique.len(), 400);
    assert!(
        o.stderr.contains("service has stopped (0 pending tasks)"),
        "{}",
        o.stderr
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_peer_that_stops_reading_pauses_the_input_and_bounds_memory() {
    let c = TcpCollector::with_mode(Mode::Stalled);
    let pad = "x".repeat(1000);
    let http = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    rate 20000\n    mem_buf_limit 2M\n    dummy {{\"pad\":\"{pad}\"}}\n\
         [OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n    workers 1\n",
        port = c.port()
    ));
    a.wait_log("[input] dummy.0 paused (mem buf overlimit", T);
    // Stalled for a while: memory must stay flat, far below what 20k records/s would take.
    let mut peak = 0;
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        peak = peak.max(rss_kib(a.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB while stalled");
    // Once the peer's socket buffers are full, the input stays paused.
    let (_, text) = http_get(http, "/api/v2/metrics/prometheus").unwrap();
    assert!(
        text.contains("fluentbit_input_ingestion_paused{name=\"dummy.0\"} 1"),
        "{text}"
    );
    let o = a.stop(Duration::from_secs(20));
    assert!(
        o.stderr.contains("records not delivered"),
        "what stays undelivered is reported:\n{}",
        o.stderr
    );
}

#[test]
fn sigterm_during_a_long_backoff_delivers_within_grace() {
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n    scheduler.base 60\n    scheduler.cap 120\n\
         [INPUT]\n    name random\n    samples 20\n    interval_sec 0\n    interval_nsec 10000000\n\
         [OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n"
    ));
    a.wait_log("retry in", T);
    let c = TcpCollector::on_port(port);
    let stopped = Instant::now();
    a.signal(libc::SIGTERM);
    let code = a.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "within grace, not after the 60 s backoff"
    );
    assert_eq!(values(&c).len(), 20, "{}", a.stderr());
}
