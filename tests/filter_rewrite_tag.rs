//! The `rewrite_tag` filter against Fluent Bit 5.1.1: every case in
//! tests/data/fluent-bit/rewrite_tag (tail → filters → stdout, Fluent Bit's default
//! format so tags and chunk boundaries show) must print exactly the bytes Fluent Bit
//! printed. Then what Fluent Bit does not pin: config errors at file:line with a fix,
//! a cycle through two filters cut after a bounded number of re-emissions, an empty new
//! tag, the emitter's metrics, and tail offsets that wait for the re-emitted records.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn data() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/rewrite_tag"
    ))
}

#[test]
fn every_captured_case_prints_fluent_bits_records() {
    let n = run_oracle_cases(data());
    assert!(n >= 11, "only {n} cases");
}

const HEAD: &str = "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n    tag app\n[FILTER]\n    name rewrite_tag\n    match app\n";

/// The error lines of a config that must not start.
fn config_error(filter: &str) -> Vec<String> {
    refused_config(&format!(
        "{HEAD}{filter}[OUTPUT]\n    name stdout\n    match *\n"
    ))
    .into_iter()
    .filter(|l| !l.starts_with("[ info]"))
    .collect()
}

#[test]
fn bad_rules_are_errors_at_their_line_with_fluent_bits_words() {
    let l = config_error("    rule $a ^x$ new\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [config map] property 'rule' expects 4 values (only 3 were found)"
    );
    assert_eq!(
        l[1],
        "[ help] write 'rule KEY REGEX NEW_TAG KEEP', e.g. 'rule $level ^(error|warn)$ alert.$1 false'"
    );
    let l = config_error("    rule $a ^(x$ new true\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [filter:rewrite_tag:rewrite_tag.0] could not compile regex pattern '^(x$'"
    );
    let l = config_error("    rule $a ^x$ new.$b[c] true\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [filter:rewrite_tag:rewrite_tag.0] could not compose tag: new.$b[c]"
    );
    let l = config_error("    rule $a['b ^x$ new true\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [filter:rewrite_tag:rewrite_tag.0] invalid record accessor key ? '$a['b'"
    );
    let l = config_error("    emitter_name dummy.0\n    rule $a ^x$ new true\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [filter:rewrite_tag:rewrite_tag.0] emitter_name 'dummy.0' already exists"
    );
}

#[test]
fn what_fluent_bit_accepts_silently_is_an_error_here() {
    // Fluent Bit ignores a fifth field and drops the record on a KEEP that is no bool.
    let l = config_error("    rule $log ^a b$ new true\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [filter:rewrite_tag:rewrite_tag.0] rule has more than 4 fields: 'true' is left over"
    );
    assert!(l[1].contains("double quotes"), "{l:?}");
    let l = config_error("    rule $a ^x$ new maybe\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [filter:rewrite_tag:rewrite_tag.0] KEEP 'maybe' is not a boolean"
    );
    let l = config_error("    rule $a ^x$ \"\" true\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [filter:rewrite_tag:rewrite_tag.0] NEW_TAG is empty"
    );
}

#[test]
fn an_output_processors_emitter_is_an_input_and_filesystem_without_a_path_is_memory() {
    let d = Dir::new();
    // As an output processor, its emitter is an input: its name must be free.
    let _conf = d.file(
        "fluent-bit.yaml",
        "pipeline:\n  inputs:\n    - name: dummy\n      samples: 1\n  outputs:\n    - name: stdout\n      match: '*'\n      processors:\n        logs:\n          - name: rewrite_tag\n            rule: $message ^ new false\n            emitter_name: dummy.0\n",
    );
    let o = run(&["-c", "fluent-bit.yaml"], Some(d.path()));
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("fluent-bit.yaml:12:13: [filter:rewrite_tag:rewrite_tag.0] emitter_name 'dummy.0' already exists"),
        "{}",
        o.stderr
    );
    // As an input's storage.type filesystem without storage.path: a warning, memory.
    let _conf = d.file(
        "fluent-bit.conf",
        &format!("{HEAD}    emitter_storage.type filesystem\n    rule $message ^ new false\n{OUT}"),
    );
    let mut a = Agent::spawn_in(&d, &["-c", "fluent-bit.conf"], Some(d.path()));
    a.wait_lines(1, T);
    let o = a.stop(T);
    assert_eq!(o.stdout, "{\"message\":\"dummy\"}\n");
    assert!(
        o.stderr.contains("fluent-bit.conf:10: [storage] emitter_for_rewrite_tag.0: emitter_storage.type filesystem needs [SERVICE] storage.path"),
        "{}",
        o.stderr
    );
}

/// Runs `conf` (whose input exits by itself) in a temp dir holding `records.jsonl`.
fn run_with_records(conf: &str, records: &str) -> Output {
    let d = Dir::new();
    d.file("records.jsonl", records);
    d.file("parsers.conf", "[PARSER]\n    name json\n    format json\n");
    d.file("fluent-bit.conf", conf);
    run(&["-c", "fluent-bit.conf"], Some(d.path()))
}

const TAIL: &str = "[SERVICE]\n    flush 0.2\n    parsers_file parsers.conf\n[INPUT]\n    name tail\n    tag app\n    path records.jsonl\n    parser json\n    read_from_head on\n    exit_on_eof on\n";
const OUT: &str =
    "[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n";

#[test]
fn a_cycle_through_two_filters_is_cut_after_ten_re_emissions() {
    // a → b → a → … : Fluent Bit loops for ever (and loses the records at exit).
    let o = run_with_records(
        &format!(
            "{TAIL}[FILTER]\n    name rewrite_tag\n    match app\n    rule $k ^ a false\n\
             [FILTER]\n    name rewrite_tag\n    match a\n    rule $k ^ b false\n\
             [FILTER]\n    name rewrite_tag\n    match b\n    rule $k ^ a true\n\
             [FILTER]\n    name record_modifier\n    match *\n    record tag_was_seen yes\n{OUT}"
        ),
        "{\"k\":\"1\"}\n{\"k\":\"2\"}\n",
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // Each record: app→a (hop 1), a→b (2); b keeps a copy and re-emits to a (3), a→b
    // (4)…: copies under b at hops 2, 4, 6 and 8; at hop 10 the re-emission is refused
    // and the record goes on under b.
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2 * 5, "{}", o.stdout);
    assert!(lines
        .iter()
        .all(|l| l.ends_with(",\"tag_was_seen\":\"yes\"}")));
    let warned: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains("re-emitted 10 times"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", o.stderr);
    assert!(
        warned[0].contains("[input:emitter:emitter_for_rewrite_tag.2]"),
        "{}",
        warned[0]
    );
}

#[test]
fn an_empty_new_tag_keeps_the_record_under_its_tag() {
    // Fluent Bit puts it in a chunk without a tag that never leaves.
    let o = run_with_records(
        &format!("{TAIL}[FILTER]\n    name rewrite_tag\n    match app\n    rule $k ^(x)|(y)$ $2 false\n{OUT}"),
        "{\"k\":\"x\"}\n{\"k\":\"y\"}\n",
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stdout, "{\"k\":\"x\"}\n{\"k\":\"y\"}\n");
    assert_eq!(
        o.stderr.matches("came out empty").count(),
        1,
        "{}",
        o.stderr
    );
}

#[test]
fn the_emitter_counts_as_an_input_and_the_filter_counts_what_it_emitted() {
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {port}\n\
         [INPUT]\n    name dummy\n    samples 4\n    rate 50\n    tag test_tag\n    dummy {{\"tool\": \"fluent\"}}\n\
         [FILTER]\n    name rewrite_tag\n    match test_tag\n    rule $tool ^(fluent)$ from.$TAG.$1 false\n    emitter_name re_emitted\n\
         [OUTPUT]\n    name stdout\n    match from.*\n    format json_lines\n"
    ));
    a.wait_lines(4, T);
    a.wait_log("[input:emitter:re_emitted] initializing", T);
    let (_, body) = http_get(port, "/api/v1/metrics").unwrap();
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["input"]["dummy.0"]["records"], 4, "{m}");
    assert_eq!(m["input"]["re_emitted"]["records"], 4, "{m}");
    assert_eq!(m["filter"]["rewrite_tag.0"]["drop_records"], 4, "{m}");
    assert_eq!(m["filter"]["rewrite_tag.0"]["emit_records"], 4, "{m}");
    assert_eq!(m["output"]["stdout.0"]["proc_records"], 4, "{m}");
    let (_, prom) = http_get(port, "/api/v2/metrics/prometheus").unwrap();
    assert!(
        prom.contains("fluentbit_filter_emit_records_total{name=\"rewrite_tag.0\"} 4"),
        "{prom}"
    );
    assert!(
        prom.contains("fluentbit_input_records_total{name=\"re_emitted\"} 4"),
        "{prom}"
    );
    a.stop(T);
}

#[test]
fn tail_offsets_wait_until_the_re_emitted_records_are_delivered() {
    // Every line moves to tag `moved`, whose only output cannot deliver: the lines
    // left the tail batch at once, but its offset must not be saved, so a second run
    // reads them again.
    let d = Dir::new();
    let log = d.path().join("app.log");
    let db = d.path().join("tail.db");
    let lines: String = (0..50).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&log, &lines).unwrap();
    let conf = |output: &str| {
        format!(
            "[SERVICE]\n    flush 0.2\n    grace 1\n    log_level debug\n\
             [INPUT]\n    name tail\n    tag app\n    path {}\n    db {}\n    read_from_head on\n\
             [FILTER]\n    name rewrite_tag\n    match app\n    rule $log ^line moved false\n{output}",
            log.display(),
            db.display()
        )
    };
    let dead = free_port();
    let mut a = Agent::start(&conf(&format!(
        "[OUTPUT]\n    name tcp\n    match moved\n    host 127.0.0.1\n    port {dead}\n    format json_lines\n    retry_limit no_limits\n"
    )));
    a.wait_log("failed to flush chunk", T);
    let first = a.stop(T);
    assert!(
        first.stderr.contains("following from offset 0"),
        "{}",
        first.stderr
    );
    let mut a = Agent::start(&conf(
        "[OUTPUT]\n    name stdout\n    match moved\n    format json_lines\n    json_date_key false\n",
    ));
    a.wait_lines(50, T);
    let second = a.stop(T);
    let want: String = (0..50)
        .map(|i| format!("{{\"log\":\"line {i}\"}}\n"))
        .collect();
    assert_eq!(second.stdout, want);
    // Delivered now: a third run reads nothing again.
    let mut a = Agent::start(&conf(
        "[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n",
    ));
    a.wait_log("following from offset", T);
    let third = a.stop(T);
    assert!(
        third
            .stderr
            .contains(&format!("following from offset {}", lines.len())),
        "{}",
        third.stderr
    );
}

#[test]
fn emitter_storage_filesystem_keeps_undelivered_re_emitted_records_for_the_next_run() {
    let store = Dir::new();
    let dead = free_port();
    let conf = |input: &str, output: &str| {
        format!(
            "[SERVICE]\n    flush 0.2\n    grace 1\n    storage.path {}\n\
             [INPUT]\n{input}\
             [FILTER]\n    name rewrite_tag\n    match app\n    rule $k ^(.*)$ new.$1 false\n    emitter_name re_emitted\n    emitter_storage.type filesystem\n{output}",
            store.path().display()
        )
    };
    let mut a = Agent::start(&conf(
        "    name dummy\n    tag app\n    samples 5\n    rate 50\n    dummy {\"k\":\"v\"}\n",
        &format!("[OUTPUT]\n    name tcp\n    match new.*\n    port {dead}\n    format json_lines\n    retry_limit no_limits\n"),
    ));
    a.wait_log("failed to flush chunk", T);
    a.stop(T);
    let files: Vec<_> = std::fs::read_dir(store.path().join("re_emitted"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "flb"))
        .collect();
    assert!(!files.is_empty(), "no chunk file of the emitter");
    // The next run replays them (no new records: tail of an empty file).
    let empty = store.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let mut a = Agent::start(&conf(
        &format!("    name tail\n    tag app\n    path {}\n", empty.display()),
        "[OUTPUT]\n    name stdout\n    match new.*\n    format json_lines\n    json_date_key false\n",
    ));
    a.wait_lines(5, T);
    let o = a.stop(T);
    assert_eq!(o.stdout, "{\"k\":\"v\"}\n".repeat(5));
}

#[test]
fn emitter_mem_buf_limit_pauses_the_pipeline_while_re_emitted_records_wait() {
    let port = free_port();
    let dead = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 1\n    scheduler.base 60\n    scheduler.cap 60\n    http_server on\n    http_listen 127.0.0.1\n    http_port {port}\n\
         [INPUT]\n    name dummy\n    tag app\n    rate 200\n    dummy {{\"k\":\"some text to make the record larger\"}}\n\
         [FILTER]\n    name rewrite_tag\n    match app\n    rule $k ^ new false\n    emitter_name re_emitted\n    emitter_mem_buf_limit 2k\n\
         [OUTPUT]\n    name tcp\n    match new\n    port {dead}\n    format json_lines\n    retry_limit no_limits\n"
    ));
    a.wait_log("[input] re_emitted paused (mem buf overlimit - buffered", T);
    let dummy_records = || {
        let (_, body) = http_get(port, "/api/v1/metrics").unwrap();
        let m: serde_json::Value = serde_json::from_str(&body).unwrap();
        m["input"]["dummy.0"]["records"].as_u64().unwrap()
    };
    let (_, prom) = http_get(port, "/api/v2/metrics/prometheus").unwrap();
    assert!(
        prom.contains("fluentbit_input_ingestion_paused{name=\"re_emitted\"} 1"),
        "{prom}"
    );
    // Paused: the engine waits, so dummy fills the input queue and stops there (at
    // 200 records a second it would add about 100 in the half second).
    let before = dummy_records();
    std::thread::sleep(Duration::from_millis(500));
    let after = dummy_records();
    assert!(after - before <= 20, "{before} then {after}");
    a.stop(T);
}
