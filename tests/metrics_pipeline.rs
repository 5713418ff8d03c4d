//! Metrics as a signal (issue 23): fluentbit_metrics and node_exporter_metrics feed
//! prometheus_exporter, which a real Prometheus scrapes; log outputs never see metrics
//! and metrics outputs never see records; the names, types and labels of
//! fluentbit_metrics are Fluent Bit's (tests/data/fluent-bit/metrics/).

mod common;
use std::collections::BTreeMap;
use std::time::Duration;

use common::prometheus::{value, Prometheus};
use common::*;

const T: Duration = Duration::from_secs(30);

/// `name -> (type, label names)` of every family in an exposition text.
fn families(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.into(), (kind.into(), Vec::new()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let sample = line.split(['{', ' ']).next().unwrap();
            // A histogram's or summary's series belong to its family.
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| sample.strip_suffix(s))
                .find(|base| out.contains_key(*base))
                .unwrap_or(sample);
            let mut keys: Vec<String> = match line.split_once('{') {
                Some((_, rest)) => rest
                    .split_once('}')
                    .unwrap()
                    .0
                    .split("\",")
                    .map(|kv| kv.split_once('=').unwrap().0.to_string())
                    .filter(|k| k != "le" && k != "quantile")
                    .collect(),
                None => Vec::new(),
            };
            keys.sort();
            let f = out
                .get_mut(name)
                .unwrap_or_else(|| panic!("{line}: no TYPE"));
            f.1 = keys;
        }
    }
    out
}

fn scrape(port: u16) -> String {
    let (code, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    body
}

/// Waits until the exporter on `port` serves text for which `ok` holds.
fn wait_scrape(port: u16, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let end = std::time::Instant::now() + T;
    loop {
        let text = scrape(port);
        if ok(&text) {
            return text;
        }
        assert!(std::time::Instant::now() < end, "{what}: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn promtool_ok(text: &str) {
    let Some((code, lint)) = common::prometheus::promtool(text) else {
        return;
    };
    // Exit 3: lint remarks only. Fluent Bit's own names draw two (fluentbit_uptime is
    // a counter without _total, /proc/meminfo's names are CamelCase).
    assert!(matches!(code, Some(0) | Some(3)), "{lint}");
    for l in lint.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            l.starts_with("fluentbit_uptime ") || l.starts_with("node_memory_"),
            "{l}"
        );
    }
}

#[test]
fn fluentbit_metrics_sends_what_the_endpoint_serves_in_fluent_bits_names_types_and_labels() {
    let http = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    samples 10\n    rate 50\n    tag logs\n\
         [INPUT]\n    name fluentbit_metrics\n    tag m\n    scrape_interval 1\n    scrape_on_start on\n\
         [FILTER]\n    name record_modifier\n    match logs\n    record a b\n\
         [OUTPUT]\n    name null\n    match logs\n\
         [OUTPUT]\n    name prometheus_exporter\n    match m\n    host 127.0.0.1\n    port 0\n"
    ));
    a.wait_log("listening on 127.0.0.1:", T);
    let port = bound_port(&a);
    let text = wait_scrape(port, "dummy's 10 records", |t| {
        t.contains("fluentbit_input_records_total{name=\"dummy.0\"} 10\n")
    });
    promtool_ok(&text);
    let ours = families(&text);
    // Every family of the monitoring endpoint, same names, types and labels, except
    // the server's own agent_http_* counters (they describe the endpoint, not the
    // pipeline, and exist only where it runs).
    let (_, endpoint) = http_get(http, "/api/v1/metrics/prometheus").unwrap();
    let mut served = families(&endpoint);
    served.retain(|name, _| !name.starts_with("agent_http_"));
    assert!(
        endpoint.contains("\nagent_http_accept_errors_total 0 "),
        "{endpoint}"
    );
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        served.keys().collect::<Vec<_>>(),
        "fluentbit_metrics and /api/v1/metrics/prometheus differ"
    );
    // Fluent Bit's own (oracle capture): same type and label names for every shared name.
    let fb = families(include_str!(
        "data/fluent-bit/metrics/api_v2_metrics_prometheus.txt"
    ));
    let mut shared = 0;
    for (name, (kind, labels)) in &ours {
        if name.starts_with("agent_") {
            continue; // the agent's own additions
        }
        let (fb_kind, fb_labels) = fb
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not one of Fluent Bit's metric names"));
        assert_eq!((kind, labels), (fb_kind, fb_labels), "{name}");
        shared += 1;
    }
    assert!(shared >= 14, "{shared} families compared:\n{text}");
    for name in [
        "fluentbit_uptime",
        "fluentbit_input_records_total",
        "fluentbit_filter_records_total",
        "fluentbit_output_proc_records_total",
        "fluentbit_output_retries_failed_total",
        "fluentbit_build_info",
    ] {
        assert!(ours.contains_key(name), "{name} missing:\n{text}");
    }
    assert!(text.contains("fluentbit_filter_records_total{name=\"record_modifier.0\"} 10\n"));
    a.stop(T);
}

#[test]
fn log_outputs_take_no_metrics_and_metric_outputs_take_no_records() {
    let dir = Dir::new();
    let sink = common::http_sink::HttpSink::start();
    let conf = dir.file(
        "c.conf",
        &format!(
            "[SERVICE]\n    flush 0.2\n\
             [INPUT]\n    name dummy\n    samples 5\n    rate 50\n    tag same\n\
             [INPUT]\n    name fluentbit_metrics\n    tag same\n    scrape_interval 1\n    scrape_on_start on\n\
             [OUTPUT]\n    name http\n    match *\n    host 127.0.0.1\n    port {}\n    format json_lines\n\
             [OUTPUT]\n    name prometheus_exporter\n    match *\n    host 127.0.0.1\n    port 0\n\
             [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n\
             [OUTPUT]\n    name file\n    match *\n    path {}\n    file both.txt\n",
            sink.port(),
            dir.path().display()
        ),
    );
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log("listening on 127.0.0.1:", T);
    let port = bound_port(&a);
    // Two scrapes after the 5 records: the second counts what the outputs took.
    let text = wait_scrape(port, "the http output's 5 records", |t| {
        t.contains("fluentbit_output_proc_records_total{name=\"http.0\"} 5\n")
            && t.contains("fluentbit_output_proc_records_total{name=\"prometheus_exporter.1\"} ")
    });
    // The exporter took metric sets only, never the dummy records (same tag).
    assert!(!text.contains("\"message\""), "{text}");
    // http (logs only, in Fluent Bit too) took the records only.
    let sent: String = sink.reqs().iter().map(|r| r.text()).collect();
    assert_eq!(sent.lines().count(), 5, "{sent}");
    assert!(
        sent.lines().all(|l| l.contains("\"message\":\"dummy\"")),
        "{sent}"
    );
    // file takes both, as Fluent Bit's: records in its format, sets as text.
    let end = std::time::Instant::now() + T;
    loop {
        let both = std::fs::read_to_string(dir.path().join("both.txt")).unwrap_or_default();
        let records = both
            .lines()
            .filter(|l| l.contains("\"message\":\"dummy\""))
            .count();
        let samples = both
            .lines()
            .filter(|l| l.contains("Z fluentbit_input_records_total{name=\"dummy.0\"} = "))
            .count();
        if records == 5 && samples > 0 {
            break;
        }
        assert!(std::time::Instant::now() < end, "{both}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // stdout takes both signals: records as JSON lines, metrics as Fluent Bit prints them.
    a.wait_until(T, "records and metrics on stdout", |o, _| {
        o.lines().filter(|l| l.starts_with('{')).count() == 5
            && o.lines()
                .any(|l| l.contains("Z fluentbit_input_records_total{name=\"dummy.0\"} = "))
    });
    let out = a.stdout();
    for l in out.lines().filter(|l| !l.starts_with('{')) {
        // 2026-12-01T00:07:26.367331904Z fluentbit_uptime{hostname="vm"} = 0
        let (time, rest) = l.split_once("Z ").unwrap_or_else(|| panic!("{l}"));
        assert_eq!(time.len(), 29, "{l}");
        assert!(rest.contains(" = "), "{l}");
    }
    a.stop(T);
}

#[test]
fn a_real_prometheus_scrapes_the_agents_counters_and_node_load() {
    let procfs = Dir::new();
    procfs.file("loadavg", "0.42 0.17 0.05 2/345 6789\n");
    let http = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    samples 10\n    rate 50\n    tag logs\n\
         [INPUT]\n    name fluentbit_metrics\n    tag self\n    scrape_interval 1\n    scrape_on_start on\n\
         [INPUT]\n    name node_exporter_metrics\n    tag fake\n    scrape_interval 1\n    metrics loadavg\n    path.procfs {}\n\
         [INPUT]\n    name node_exporter_metrics\n    tag host\n    scrape_interval 1\n    metrics loadavg,meminfo\n\
         [OUTPUT]\n    name null\n    match logs\n\
         [OUTPUT]\n    name prometheus_exporter\n    match fake\n    host 127.0.0.1\n    port 0\n    add_label source fake\n\
         [OUTPUT]\n    name prometheus_exporter\n    match_regex ^(self|host)$\n    host 127.0.0.1\n    port 0\n",
        procfs.path().display()
    ));
    a.wait_until(T, "both exporters listening", |_, e| {
        e.matches("listening on 127.0.0.1:").count() == 2
    });
    let ports: Vec<u16> = a
        .stderr()
        .lines()
        .filter_map(|l| l.split_once("listening on 127.0.0.1:"))
        .map(|(_, p)| p.trim().parse().unwrap())
        .collect();
    let Some(prom) = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: ['127.0.0.1:{}', '127.0.0.1:{}']\n",
            ports[0], ports[1]
        ),
        &[],
    ) else {
        return;
    };
    let r = prom.wait_query(
        "fluentbit_input_records_total{name=\"dummy.0\"}",
        Duration::from_secs(60),
        |r| r.first().is_some_and(|s| value(s) == 10.0),
    );
    assert_eq!(r[0]["metric"]["job"], "agent");
    // The same count the monitoring endpoint gives.
    let (_, endpoint) = http_get(http, "/api/v1/metrics/prometheus").unwrap();
    assert!(
        endpoint.contains("fluentbit_input_records_total{name=\"dummy.0\"} 10 "),
        "{endpoint}"
    );
    let r = prom.wait_query("node_load1{source=\"fake\"}", T, |r| !r.is_empty());
    assert_eq!(value(&r[0]), 0.42);
    assert_eq!(value(&prom.query("node_load15{source=\"fake\"}")[0]), 0.05);
    // The host's own: within what /proc/loadavg said around the query (it moves every 5 s).
    let load = || -> f64 {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (before, r, after) = {
        let b = load();
        let r = prom.wait_query("node_load1{source!=\"fake\"}", T, |r| !r.is_empty());
        (b, r, load())
    };
    let got = value(&r[0]);
    assert!(
        (before.min(after) - 0.3..=before.max(after) + 0.3).contains(&got),
        "node_load1 {got}, /proc/loadavg {before}..{after}"
    );
    let total: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    let r = prom.wait_query("node_memory_MemTotal_bytes", T, |r| !r.is_empty());
    assert_eq!(value(&r[0]), total * 1024.0);
    a.stop(T);
}

#[test]
fn a_taken_exporter_port_stops_the_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = Dir::new();
    dir.file(
        "c.conf",
        &format!(
            "[INPUT]\n    name fluentbit_metrics\n[OUTPUT]\n    name prometheus_exporter\n    match *\n    host 127.0.0.1\n    port {port}\n"
        ),
    );
    let o = run(&["-c", "c.conf"], Some(dir.path()));
    assert_eq!(o.code, Some(255), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "[output:prometheus_exporter:prometheus_exporter.0] cannot listen on 127.0.0.1:{port}: "
        )),
        "{}",
        o.stderr
    );
}

#[test]
fn bad_metrics_properties_name_their_line() {
    let lines = refused_config(
        "[INPUT]\n    name node_exporter_metrics\n    metrics cpu,loadavg,bogus\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    assert!(
        lines[0].starts_with("[error] fluent-bit.conf:3: "),
        "{lines:#?}"
    );
    assert!(lines[0].contains("metrics"), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("loadavg")), "{lines:#?}");
    let lines = refused_config(
        "[INPUT]\n    name fluentbit_metrics\n[OUTPUT]\n    name prometheus_exporter\n    match *\n    add_label novalue\n",
    );
    assert!(
        lines[0].starts_with(
            "[error] fluent-bit.conf:6: prometheus_exporter: invalid add_label 'novalue'"
        ),
        "{lines:#?}"
    );
    let lines = refused_config(
        "[INPUT]\n    name fluentbit_metrics\n    scrape_interval 0\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    assert!(
        lines[0].starts_with("[error] fluent-bit.conf:3: "),
        "{lines:#?}"
    );
}

#[test]
fn mem_buf_limit_pauses_a_metrics_input_whose_sets_are_not_delivered() {
    // Nothing listens on the destination: the first sets wait for their retries and the
    // input is paused at its limit instead of piling sets up.
    let closed = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    scheduler.base 1\n    scheduler.cap 2\n\
         [INPUT]\n    name fluentbit_metrics\n    scrape_interval 0.2\n    scrape_on_start on\n    mem_buf_limit 2k\n\
         [OUTPUT]\n    name prometheus_remote_write\n    match *\n    host 127.0.0.1\n    port {closed}\n    retry_limit no_limits\n"
    ));
    a.wait_log(
        "[input] fluentbit_metrics.0 paused (mem buf overlimit - buffered ",
        T,
    );
    a.wait_log("failed to flush chunk for prometheus_remote_write.0", T);
    a.stop(T);
}

/// `flow_aggregate` with `metrics_tag`: every interval, counters between workloads
/// (cumulative, Prometheus counters) go to the metrics outputs while the flow records
/// go to the log outputs; the counters equal the sums of the flow records' fields.
#[test]
fn flow_aggregate_counts_traffic_between_workloads_as_metrics() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ct = r#"{"event":"destroy","proto_num":6,"src_ip":"10.1.0.5","src_port":40000,"dst_ip":"10.1.0.7","dst_port":80,"reply_src_ip":"10.1.0.7","reply_src_port":80,"delta_orig_packets":2,"delta_orig_bytes":100,"delta_reply_packets":3,"delta_reply_bytes":1000}"#;
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name dummy\n    tag ct\n    samples 6\n    rate 2\n    dummy {ct}\n\
         [FILTER]\n    name flow_aggregate\n    match ct\n    endpoints_file {root}/conf/endpoints.json\n    flush_interval 1s\n    metrics_tag flowmetrics\n\
         [OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n\
         [OUTPUT]\n    name prometheus_exporter\n    match flowmetrics\n    host 127.0.0.1\n    port 0\n"
    ));
    a.wait_log("listening on 127.0.0.1:", T);
    let port = bound_port(&a);
    let series = "{source_namespace=\"policy-demo\",source_name=\"access-6b687c8dcb-*\",dest_namespace=\"policy-demo\",dest_name=\"nginx-86c57db685-*\",proto=\"tcp\",action=\"allow\",reporter=\"src\"}";
    let text = wait_scrape(port, "all six records counted", |t| {
        t.contains(&format!("agent_flow_bytes_out_total{series} 600\n"))
    });
    promtool_ok(&text);
    // Let the interval that counted the last record reach stdout, then compare.
    std::thread::sleep(Duration::from_millis(1500));
    let text = scrape(port);
    let stdout = a.stop(T).stdout;
    let mut sums = std::collections::BTreeMap::<&str, u64>::new();
    let mut records = 0;
    for line in stdout.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        records += 1;
        for f in [
            "bytes_in",
            "bytes_out",
            "packets_in",
            "packets_out",
            "num_flows_started",
            "num_flows_completed",
        ] {
            *sums.entry(f).or_default() += r[f].as_u64().unwrap();
        }
    }
    assert!(records >= 2, "at least two intervals: {stdout}");
    for (family, f) in [
        ("agent_flow_bytes_in_total", "bytes_in"),
        ("agent_flow_bytes_out_total", "bytes_out"),
        ("agent_flow_packets_in_total", "packets_in"),
        ("agent_flow_packets_out_total", "packets_out"),
        ("agent_flow_started_total", "num_flows_started"),
        ("agent_flow_completed_total", "num_flows_completed"),
    ] {
        let want = format!("{family}{series} {}\n", sums[f]);
        assert!(text.contains(&want), "{want}in\n{text}\nfrom\n{stdout}");
    }
    assert_eq!(sums["bytes_out"], 600);
    assert_eq!(sums["bytes_in"], 6000);
}

/// Fluent Bit's forward output forwards metric sets; agent's sends records only: sets
/// routed there are said once and counted as dropped, never skipped in silence.
#[test]
fn metrics_routed_to_forward_are_said_and_counted() {
    let http = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name fluentbit_metrics\n    tag m\n    scrape_interval 1\n    scrape_on_start on\n\
         [OUTPUT]\n    name forward\n    match m\n    host 127.0.0.1\n    port {}\n",
        free_port()
    ));
    a.wait_log(
        "metrics of tag 'm' are routed here but this output sends logs only",
        T,
    );
    let end = std::time::Instant::now() + T;
    while metric(http, "fluentbit_output_dropped_records_total", "forward.0") == 0 {
        assert!(std::time::Instant::now() < end, "nothing counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.stop(T);
}

/// The `.flb` chunk files under `dir`.
fn chunk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir() && e.file_name() != "quarantine")
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| f.path().extension().is_some_and(|x| x == "flb"))
        .count()
}

/// `storage.type filesystem` on a metrics input: its sets are written to chunk files
/// like records. The agent is killed (SIGKILL) while prometheus_remote_write's
/// Prometheus is down; restarted with an input that makes no metrics, it replays the
/// files and a real Prometheus gets every sample of the first run, then the files go.
#[test]
fn metric_sets_of_a_filesystem_input_survive_a_kill_and_arrive_after_restart() {
    if !Prometheus::installed() {
        return;
    }
    let procfs = Dir::new();
    procfs.file("loadavg", "0.42 0.17 0.05 2/345 6789\n");
    let store = Dir::new();
    let port = free_port();
    let output = format!(
        "[OUTPUT]\n    name prometheus_remote_write\n    match node\n    host 127.0.0.1\n    port {port}\n    uri /api/v1/write\n"
    );
    let service = format!(
        "[SERVICE]\n    flush 0.2\n    storage.path {}\n    scheduler.base 1\n    scheduler.cap 2\n",
        store.path().display()
    );
    let mut a = Agent::start(&format!(
        "{service}[INPUT]\n    name node_exporter_metrics\n    tag node\n    scrape_interval 1\n    metrics loadavg\n    path.procfs {}\n    storage.type filesystem\n{output}",
        procfs.path().display()
    ));
    let end = std::time::Instant::now() + T;
    while chunk_files(store.path()) < 3 {
        assert!(
            std::time::Instant::now() < end,
            "no chunk files\n{}",
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    a.signal(libc::SIGKILL);
    a.wait(T);
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let files = chunk_files(store.path());
    assert!(!a.stderr().contains("in memory only"), "{}", a.stderr());
    let Some(prom) = Prometheus::start_on(
        port,
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    ) else {
        return;
    };
    let b = Agent::start(&format!(
        "{service}[INPUT]\n    name dummy\n    tag node\n    samples 1\n{output}"
    ));
    let r = prom.wait_query("count_over_time(node_load1[10m])", T, |r| {
        r.first().is_some_and(|s| value(s) >= files as f64)
    });
    assert!(value(&r[0]) >= 3.0, "{r:?}");
    // Every sample is from the first run (the second makes no metrics).
    let r = prom.query("max_over_time(timestamp(node_load1)[10m:1s])");
    assert!(
        r.is_empty() || value(&r[0]) <= killed_at,
        "{r:?} after {killed_at}"
    );
    assert_eq!(value(&prom.query("node_load1")[0]), 0.42);
    let end = std::time::Instant::now() + T;
    while chunk_files(store.path()) > 0 {
        assert!(
            std::time::Instant::now() < end,
            "chunk files left after delivery"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = b.stop(T);
    assert!(o.stderr.contains("[storage] replayed"), "{}", o.stderr);
}
