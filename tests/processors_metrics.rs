//! YAML `processors: metrics:` (`labels`, `metrics_selector`) on inputs and outputs:
//! a fixed exposition text served by the test (and a fixed procfs for
//! node_exporter_metrics) goes through the processors to prometheus_exporter, whose
//! text must be Fluent Bit 5.1.1's on the same configuration, byte for byte
//! (tests/data/fluent-bit/processors_metrics/). Units that cannot process metrics are
//! refused at their file:line.

mod common;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::http_sink::{Answer, HttpSink};
use common::*;

const T: Duration = Duration::from_secs(30);

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fluent-bit/processors_metrics")
}

/// Serves `scrape.txt` on /metrics.
fn target() -> HttpSink {
    let text = std::fs::read_to_string(data().join("scrape.txt")).unwrap();
    HttpSink::scripted(move |_, _| {
        Answer::ok()
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(&text)
    })
}

/// Runs `<case>.yaml` and waits until the exporter serves `<case>.expected`.
fn check(case: &str, target: &HttpSink) -> Result<(), String> {
    let dir = data();
    let conf = dir.join(format!("{case}.yaml"));
    let want = std::fs::read_to_string(dir.join(format!("{case}.expected"))).unwrap();
    let scrape = target.port().to_string();
    let procfs = dir.join("proc");
    let env: [(&str, &Path); 3] = [
        ("SCRAPE_PORT", Path::new(&scrape)),
        ("EXPORTER_PORT", Path::new("0")),
        ("PROCFS", &procfs),
    ];
    let tmp = Dir::new();
    let mut a = Agent::spawn_in_env(&tmp, &["-c", conf.to_str().unwrap()], None, &env);
    a.wait_log("listening on 127.0.0.1:", T);
    let port = bound_port(&a);
    let end = Instant::now() + T;
    let mut last = String::new();
    while Instant::now() < end {
        if let Ok((200, text)) = http_get(port, "/metrics") {
            if text == want {
                a.stop(T);
                return Ok(());
            }
            last = text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = a.stderr();
    a.stop(T);
    Err(format!(
        "{case}\n--- agent\n{last}--- fluent-bit\n{want}--- stderr\n{err}"
    ))
}

fn check_all(cases: &[&str]) {
    let target = target();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c, &target).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn labels_insert_upsert_update_delete_and_hash_as_fluent_bit() {
    // labels_dynamic: delete/update/upsert/insert/hash of labels metrics have (samples
    // left identical by a delete stay two lines); labels_static: an upsert of a label
    // no metric has becomes a static label, written first; labels_case: names compare
    // without case, a label added keeps the case it was written in; labels_chain: the
    // next processor starts from a copy without static labels.
    check_all(&[
        "labels_dynamic",
        "labels_static",
        "labels_case",
        "labels_chain",
    ]);
}

#[test]
fn metrics_selector_by_prefix_substring_regex_and_label_value_as_fluent_bit() {
    check_all(&[
        "selector_include_prefix",
        "selector_exclude_regex",
        "selector_substring",
        "selector_delete_label_value",
    ]);
}

#[test]
fn output_processors_work_on_the_outputs_copy_after_the_inputs() {
    // The input's labels insert, then the exporter's selector and labels, then its
    // add_label (a static label, first).
    check_all(&["output_processors"]);
}

#[test]
fn node_exporter_metrics_through_a_selector_and_a_tag_label_as_fluent_bit() {
    // path.procfs is a fixed directory; `insert instance $TAG` takes the tag.
    check_all(&["node_loadavg"]);
}

#[test]
fn fluentbit_metrics_through_processors_keep_only_what_they_select() {
    let dir = Dir::new();
    let conf = dir.file(
        "agent.yaml",
        "service:\n  flush: 0.2\n\
         pipeline:\n  inputs:\n    - name: fluentbit_metrics\n      tag: self\n      scrape_interval: 1\n      scrape_on_start: true\n\
         \x20     processors:\n        metrics:\n          - name: metrics_selector\n            metric_name: /^fluentbit_(input|output)_/\n\
         \x20         - name: metrics_selector\n            context: delete_label_value\n            label: name null.1\n\
         \x20         - name: labels\n            insert: agent_node n1\n\
         \x20   - name: dummy\n      tag: logs\n\
         \x20 outputs:\n    - name: prometheus_exporter\n      match: self\n      host: 127.0.0.1\n      port: 0\n\
         \x20   - name: \"null\"\n      match: logs\n",
    );
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log("listening on 127.0.0.1:", T);
    let port = bound_port(&a);
    let end = Instant::now() + T;
    let text = loop {
        if let Ok((200, text)) = http_get(port, "/metrics") {
            if text.contains("fluentbit_input_records_total{name=\"dummy.") {
                break text;
            }
        }
        assert!(Instant::now() < end, "no input counters served");
        std::thread::sleep(Duration::from_millis(200));
    };
    a.stop(T);
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(samples.len() > 5, "{text}");
    for l in &samples {
        assert!(
            l.starts_with("fluentbit_input_") || l.starts_with("fluentbit_output_"),
            "{l}"
        );
        assert!(!l.contains("name=\"null.1\""), "{l}");
        assert!(
            l.contains(",agent_node=\"n1\"} "),
            "the inserted label comes last: {l}"
        );
    }
    assert!(
        samples
            .iter()
            .any(|l| l.contains("name=\"prometheus_exporter.0\"")),
        "{text}"
    );
}

#[test]
fn units_that_cannot_process_metrics_are_refused_at_their_line() {
    let refused = |unit: &str| {
        let dir = Dir::new();
        let conf = dir.file(
            "agent.yaml",
            &format!(
                "pipeline:\n  inputs:\n    - name: fluentbit_metrics\n      processors:\n        metrics:\n{unit}\
                 \x20 outputs:\n    - name: stdout\n      match: '*'\n"
            ),
        );
        let o = run(&["-c", conf.to_str().unwrap(), "--dry-run"], None);
        assert_eq!(o.code, Some(1), "{unit}: {}", o.stderr);
        o.stderr
    };
    let err = refused("          - name: content_modifier\n            action: insert\n            key: a\n            value: b\n");
    assert!(
        err.contains("agent.yaml:6") && err.contains("content_modifier cannot process metrics"),
        "{err}"
    );
    let err = refused("          - name: grep\n            regex: a b\n");
    assert!(
        err.contains("agent.yaml:6") && err.contains("filters take log records"),
        "{err}"
    );
    let err = refused("          - name: label\n            insert: a b\n");
    assert!(
        err.contains("agent.yaml:6") && err.contains("labels"),
        "{err}"
    );
    let err = refused("          - name: labels\n            insert: lonely\n");
    assert!(
        err.contains("agent.yaml:7") && err.contains("expects a key and a value"),
        "{err}"
    );
    let err = refused("          - name: metrics_selector\n            action: include\n");
    assert!(err.contains("metric_name"), "{err}");
    let err = refused("          - name: metrics_selector\n            metric_name: /(/\n");
    assert!(
        err.contains("agent.yaml:7") && err.contains("regular expression"),
        "{err}"
    );
    let err =
        refused("          - name: metrics_selector\n            context: delete_label_value\n");
    assert!(err.contains("label"), "{err}");
    let err = refused("          - name: labels\n            insert: a b\n            condition:\n              rules:\n                - field: $a\n                  op: eq\n                  value: b\n");
    assert!(err.contains("a condition selects log records"), "{err}");
    // Under logs:, a metrics processor would never run.
    let dir = Dir::new();
    let conf = dir.file(
        "agent.yaml",
        "pipeline:\n  inputs:\n    - name: dummy\n      processors:\n        logs:\n          - name: labels\n            insert: a b\n\
         \x20 outputs:\n    - name: stdout\n      match: '*'\n",
    );
    let o = run(&["-c", conf.to_str().unwrap(), "--dry-run"], None);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("agent.yaml:6") && o.stderr.contains("processes metrics only"),
        "{}",
        o.stderr
    );
    // Units of a signal their input never makes, or their output never takes: said.
    let conf = dir.file(
        "never.yaml",
        "pipeline:\n  inputs:\n    - name: dummy\n      processors:\n        metrics:\n          - name: labels\n            insert: a b\n\
         \x20 outputs:\n    - name: http\n      match: '*'\n      processors:\n        metrics:\n          - name: labels\n            delete: a\n",
    );
    let o = run(&["-c", conf.to_str().unwrap(), "--dry-run"], None);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr.contains("never.yaml:3") && o.stderr.contains("dummy makes no metrics"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("never.yaml:9") && o.stderr.contains("http takes no metrics"),
        "{}",
        o.stderr
    );
    // traces: agent carries none; said, not refused.
    let conf = dir.file(
        "traces.yaml",
        "pipeline:\n  inputs:\n    - name: dummy\n      processors:\n        traces:\n          - name: content_modifier\n            action: delete\n            key: a\n\
         \x20 outputs:\n    - name: stdout\n      match: '*'\n",
    );
    let o = run(&["-c", conf.to_str().unwrap(), "--dry-run"], None);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr.contains("traces.yaml:6") && o.stderr.contains("no traces"),
        "{}",
        o.stderr
    );
}

/// conf/metrics-processors.yaml (YAML only: classic configs have no processors) builds.
#[test]
fn the_metrics_processors_example_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = run(
        &["-c", "conf/metrics-processors.yaml", "--dry-run"],
        Some(root),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(!o.stderr.contains("[ warn]"), "{}", o.stderr);
}
