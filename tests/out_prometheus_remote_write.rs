//! prometheus_remote_write into a real Prometheus (`--web.enable-remote-write-receiver`):
//! PromQL returns the agent's counters and a node metric with the values the monitoring
//! endpoint and procfs give; while Prometheus is down for 30 s the samples wait, are
//! retried, and arrive in time order once it is back (none refused, none dropped).

mod common;
use std::time::{Duration, Instant};

use common::prometheus::{value, Prometheus};
use common::*;

const T: Duration = Duration::from_secs(30);
const RECEIVER: &[&str] = &["--web.enable-remote-write-receiver"];
const NO_SCRAPES: &str = "global:\n  scrape_interval: 1m\n";

fn conf(http: u16, prom: u16, procfs: &std::path::Path) -> String {
    format!(
        "[SERVICE]\n    flush 0.5\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n    scheduler.base 1\n    scheduler.cap 2\n\
         [INPUT]\n    name dummy\n    samples 10\n    rate 50\n    tag logs\n\
         [INPUT]\n    name fluentbit_metrics\n    tag self\n    scrape_interval 1\n    scrape_on_start on\n\
         [INPUT]\n    name node_exporter_metrics\n    tag node\n    scrape_interval 1\n    metrics loadavg,cpu\n    path.procfs {}\n\
         [OUTPUT]\n    name null\n    match logs\n\
         [OUTPUT]\n    name prometheus_remote_write\n    match_regex ^(self|node)$\n    host 127.0.0.1\n    port {prom}\n    uri /api/v1/write\n    add_label via remote_write\n    retry_limit no_limits\n",
        procfs.display()
    )
}

fn procfs() -> Dir {
    let d = Dir::new();
    d.file("loadavg", "0.42 0.17 0.05 2/345 6789\n");
    d.file(
        "stat",
        "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 100 200 300 400 500 600 700 800 900\n",
    );
    d
}

#[test]
fn prometheus_receives_the_agents_counters_and_node_metrics() {
    let port = free_port();
    let Some(prom) = Prometheus::start_on(port, NO_SCRAPES, RECEIVER) else {
        return;
    };
    let fs = procfs();
    let http = free_port();
    let a = Agent::start(&conf(http, port, fs.path()));
    let r = prom.wait_query(
        "fluentbit_input_records_total{name=\"dummy.0\",via=\"remote_write\"}",
        Duration::from_secs(60),
        |r| r.first().is_some_and(|s| value(s) == 10.0),
    );
    assert_eq!(r.len(), 1);
    let (_, endpoint) = http_get(http, "/api/v1/metrics/prometheus").unwrap();
    assert!(
        endpoint.contains("fluentbit_input_records_total{name=\"dummy.0\"} 10 "),
        "{endpoint}"
    );
    let r = prom.wait_query("node_load1{via=\"remote_write\"}", T, |r| !r.is_empty());
    assert_eq!(value(&r[0]), 0.42);
    // cpu0's user ticks over USER_HZ (100 on Linux).
    let r = prom.wait_query("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}", T, |r| {
        !r.is_empty()
    });
    assert_eq!(value(&r[0]), 1.0);
    let out = a.stop(T);
    assert!(!out.stderr.contains("[error]"), "{}", out.stderr);
}

#[test]
fn samples_wait_while_prometheus_is_down_and_arrive_in_order() {
    if !Prometheus::installed() {
        return;
    }
    let port = free_port();
    let fs = procfs();
    let http = free_port();
    let mut a = Agent::start(&conf(http, port, fs.path()));
    a.wait_log("failed to flush chunk for prometheus_remote_write.1", T);
    let down_since = Instant::now();
    let first_failure = std::time::SystemTime::now();
    // 30 s down, then Prometheus comes up on the port the agent writes to.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed()));
    let prom = Prometheus::start_on(port, NO_SCRAPES, RECEIVER).unwrap();
    a.wait_log("succeeded at retry", Duration::from_secs(60));
    // Every buffered scrape arrives: fluentbit_uptime has a sample per second scraped,
    // from before Prometheus started, each newer than the last.
    let r = prom.wait_query("fluentbit_uptime[3m]", T, |r| {
        r.first()
            .and_then(|s| s["values"].as_array())
            .is_some_and(|v| v.len() >= 10)
    });
    let values = r[0]["values"].as_array().unwrap();
    let times: Vec<f64> = values.iter().map(|v| v[0].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let started = first_failure
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        times[0] <= started,
        "the first sample ({}) predates the outage's start ({started})",
        times[0]
    );
    // Scrapes made while it was down were kept (the pipeline's bounded queues hold
    // them; the inputs wait once they are full).
    let during = times
        .iter()
        .filter(|t| (started..started + 28.0).contains(*t))
        .count();
    assert!(during >= 3, "{during} samples from the outage: {times:?}");
    // Nothing refused nor given up on.
    let (_, endpoint) = http_get(http, "/api/v1/metrics/prometheus").unwrap();
    assert!(
        endpoint.contains(
            "fluentbit_output_dropped_records_total{name=\"prometheus_remote_write.1\"} 0 "
        ),
        "{endpoint}"
    );
    let out = a.stop(T);
    assert!(
        !out.stderr.contains("refused the samples"),
        "{}",
        out.stderr
    );
}

/// Samples Prometheus can never take (three hours old, before its head block): it
/// answers 400, and the agent drops that chunk with Prometheus's reason in the log and
/// counts it in fluentbit_output_dropped_records_total, instead of retrying forever.
#[test]
fn samples_too_old_for_prometheus_are_dropped_and_counted() {
    let port = free_port();
    let Some(_prom) = Prometheus::start_on(port, NO_SCRAPES, RECEIVER) else {
        return;
    };
    // A scrape target with a current sample and one stamped three hours ago: once the
    // first scrape put "now" in Prometheus's head, the old one is out of its bounds.
    let site = Dir::new();
    let old_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 3 * 3600 * 1000;
    site.file(
        "metrics",
        &format!("# TYPE fresh_gauge gauge\nfresh_gauge 2\n# TYPE ancient_gauge gauge\nancient_gauge 1 {old_ms}\n"),
    );
    let target = free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &target.to_string(),
        ])
        .current_dir(site.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.5\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name prometheus_scrape\n    tag old\n    host 127.0.0.1\n    port {target}\n    metrics_path /metrics\n    scrape_interval 1s\n\
         [OUTPUT]\n    name prometheus_remote_write\n    match old\n    host 127.0.0.1\n    port {port}\n    uri /api/v1/write\n    retry_limit no_limits\n"
    ));
    a.wait_log(
        "the server refused the samples (400), they will not be retried",
        T,
    );
    let deadline = Instant::now() + T;
    while metric(
        http,
        "fluentbit_output_dropped_records_total",
        "prometheus_remote_write.0",
    ) == 0
    {
        assert!(Instant::now() < deadline, "nothing counted as dropped");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = a.stop(T);
    assert!(out.stderr.contains("out of bounds"), "{}", out.stderr);
    let _ = server.kill();
    let _ = server.wait();
}
