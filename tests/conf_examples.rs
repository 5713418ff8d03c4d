//! Every example in conf/ is valid as it is, and the stdout ones run and print.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `parsers_*.conf` hold [PARSER]/[MULTILINE_PARSER] sections for a `parsers_file`, not
/// a pipeline.
fn is_parsers_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("parsers"))
}

#[test]
fn every_example_config_passes_dry_run() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") || is_parsers_file(&path) {
            continue;
        }
        let o = run(&["-c", path.to_str().unwrap(), "--dry-run"], Some(root()));
        assert_eq!(o.code, Some(0), "{}: {}", path.display(), o.stderr);
        checked += 1;
    }
    assert!(checked >= 3, "conf/ should hold runnable examples");
}

#[test]
fn random_stdout_example_prints_five_records() {
    let dir = Dir::new();
    let conf = root().join("conf/random-stdout.conf");
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap(), "-f", "0.5"], None);
    a.wait_lines(5, Duration::from_secs(20));
    let o = a.stop(Duration::from_secs(10));
    assert_eq!(o.code, Some(0));
    assert_eq!(o.stdout.lines().count(), 5);
    // The index restarts with every flush; two records may share one under load.
    assert!(
        o.stdout
            .lines()
            .all(|l| l.starts_with('[') && l.contains("] random.0: [[")),
        "{}",
        o.stdout
    );
}

#[test]
fn dummy_json_example_enriches_records() {
    let dir = Dir::new();
    let conf = root().join("conf/dummy-json.conf");
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_lines(2, Duration::from_secs(20));
    let o = a.stop(Duration::from_secs(10));
    let first = o.stdout.lines().next().unwrap();
    assert!(first.starts_with("{\"date\":\"20"), "{first}");
    assert!(
        first.contains("\"message\":\"hello\",\"env\":\"demo\",\"host\":\""),
        "{first}"
    );
}

#[test]
fn container_logs_example_joins_split_lines_and_parses_json() {
    // Run from the repository's root, as its comment says; records print as they are read.
    let dir = Dir::new();
    let mut a = Agent::spawn_in(&dir, &["-c", "conf/container-logs.conf"], Some(root()));
    a.wait_lines(3, Duration::from_secs(20));
    let o = a.stop(Duration::from_secs(10));
    let lines: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", o.stdout);
    assert_eq!(lines[0]["msg"], "listening");
    assert_eq!(lines[0]["port"], 8080);
    assert_eq!(
        lines[1]["log"],
        "a line the runtime split at its 16 KiB limit: first part, second part"
    );
    assert_eq!(lines[2]["stream"], "stderr");
}

#[test]
fn metrics_example_serves_the_agents_and_the_hosts_metrics() {
    if std::net::TcpListener::bind("0.0.0.0:2021").is_err() {
        eprintln!("skipped: port 2021 (the example's exporter port) is taken");
        return;
    }
    let dir = Dir::new();
    let conf = root().join("conf/metrics-prometheus.conf");
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log("listening on 0.0.0.0:2021", Duration::from_secs(20));
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (_, text) = http_get(2021, "/metrics").unwrap();
        if text.contains("node_load1{agent=\"node-1\"} ") && text.contains("fluentbit_uptime{") {
            break text;
        }
        assert!(std::time::Instant::now() < end, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text.contains("# TYPE node_cpu_seconds_total counter"),
        "{text}"
    );
    a.stop(Duration::from_secs(10));
}
