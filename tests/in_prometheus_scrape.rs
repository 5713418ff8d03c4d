//! prometheus_scrape reads a real Prometheus' own /metrics (counters, gauges,
//! histograms, summaries) and the agent serves and remote-writes the same families
//! back: same names and types as the target serves, promtool-clean, and queryable in
//! the Prometheus that received them.

mod common;
use std::collections::BTreeSet;
use std::time::Duration;

use common::prometheus::{promtool, Prometheus};
use common::*;

const T: Duration = Duration::from_secs(30);

/// (name, type) of every family of an exposition text.
fn typed(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (n, t) = l.split_once(' ').unwrap();
            (n.to_string(), t.to_string())
        })
        .collect()
}

#[test]
fn a_prometheus_targets_metrics_pass_through_scrape_exporter_and_remote_write() {
    let Some(prom) = Prometheus::start(
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    ) else {
        return;
    };
    let p = prom.port;
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.5\n\
         [INPUT]\n    name prometheus_scrape\n    host 127.0.0.1\n    port {p}\n    scrape_interval 1\n    tag scraped\n\
         [INPUT]\n    name prometheus_scrape\n    host 127.0.0.1\n    port {p}\n    metrics_path /nope\n    scrape_interval 1\n    tag missing\n\
         [OUTPUT]\n    name prometheus_exporter\n    match scraped\n    host 127.0.0.1\n    port 0\n\
         [OUTPUT]\n    name prometheus_remote_write\n    match scraped\n    host 127.0.0.1\n    port {p}\n    uri /api/v1/write\n    add_label via scrape\n"
    ));
    a.wait_log("listening on 127.0.0.1:", T);
    let port = bound_port(&a);
    let end = std::time::Instant::now() + T;
    let text = loop {
        let (_, text) = http_get(port, "/metrics").unwrap();
        if text.contains("# TYPE prometheus_http_request_duration_seconds histogram") {
            break text;
        }
        assert!(std::time::Instant::now() < end, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Read after ours: Prometheus may have grown families since (remote write's).
    let (_, direct) = http_get(p, "/metrics").unwrap();
    let (ours, theirs) = (typed(&text), typed(&direct));
    assert!(ours.is_subset(&theirs), "{:?}", ours.difference(&theirs));
    assert!(
        ours.len() + 10 >= theirs.len(),
        "{} of {}",
        ours.len(),
        theirs.len()
    );
    assert!(typed(&text).iter().any(|(_, t)| t == "summary"), "{text}");
    if let Some((code, lint)) = promtool(&text) {
        assert!(matches!(code, Some(0) | Some(3)), "{lint}");
    }
    // Back in Prometheus through remote write, histograms as their series.
    let r = prom.wait_query(
        "prometheus_http_request_duration_seconds_bucket{via=\"scrape\",le=\"+Inf\"}",
        T,
        |r| !r.is_empty(),
    );
    assert!(r[0]["metric"]["handler"].is_string(), "{r:?}");
    prom.wait_query("go_goroutines{via=\"scrape\"}", T, |r| r.len() == 1);
    a.wait_log("http status code error: [/nope] 404", T);
    a.stop(T);
}
