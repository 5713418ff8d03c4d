//! YAML `processors:` and the `content_modifier` processor against Fluent Bit v5.1.1:
//! every case under tests/data/fluent-bit/processors/ is run with the agent from that
//! directory and its stdout must equal Fluent Bit's, byte for byte. Output processors
//! work on their output's copy only; bad processor configs stop the agent with
//! `file:line:column` and a fix.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/fluent-bit/processors"
);

#[test]
fn every_case_prints_what_fluent_bit_printed() {
    let n = run_oracle_cases(Path::new(DATA));
    assert!(n >= 11, "only {n} cases");
}

/// `rewrite_tag` as an input processor: what it re-emits continues at the next stage
/// of the same input (then the pipeline's filters for its new tag), as in Fluent Bit
/// 5.1.1. Same records as Fluent Bit's (captured in `rewrite_tag_input_processor.fluent-bit`);
/// Fluent Bit prints the re-emitted chunk first, agent after the input's own.
#[test]
fn rewrite_tag_as_an_input_processor_continues_at_the_next_stage() {
    let out = run(
        &["-c", "rewrite_tag_input_processor.yaml"],
        Some(Path::new(DATA)),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let fb =
        std::fs::read_to_string(Path::new(DATA).join("rewrite_tag_input_processor.fluent-bit"))
            .unwrap();
    let sorted = |t: &str| {
        let mut l: Vec<String> = t.lines().map(str::to_string).collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&out.stdout), sorted(&fb), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 3);
}

/// `rewrite_tag` as an output processor: what it re-emits enters the pipeline as
/// records of its emitter input (the pipeline's filters for the new tag, then the
/// outputs matching it); with `keep true` the output still gets the records, after
/// its later processors. Same records as Fluent Bit 5.1.1's (captured with the input
/// running, then SIGINT: with `exit_on_eof`, Fluent Bit exits before it flushes the
/// emitter and loses them; agent delivers them before it stops). The chunk's input is
/// acknowledged only after the re-emitted records are delivered too.
#[test]
fn rewrite_tag_as_an_output_processor_re_emits_into_the_pipeline() {
    let out = run(
        &["-c", "rewrite_tag_output_processor.yaml"],
        Some(Path::new(DATA)),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let fb =
        std::fs::read_to_string(Path::new(DATA).join("rewrite_tag_output_processor.fluent-bit"))
            .unwrap();
    let sorted = |t: &str| {
        let mut l: Vec<String> = t.lines().map(str::to_string).collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&out.stdout), sorted(&fb), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 5);
}

/// A rule whose new tag the same output matches again cannot loop: records an output
/// processor re-emitted are not re-emitted by it again (counted and said once).
#[test]
fn an_output_processor_rewriting_into_its_own_match_does_not_loop() {
    let d = Dir::new();
    let outputs = "    - name: stdout\n      match: '*'\n      format: json_lines\n      json_date_key: false\n      processors:\n        logs:\n          - name: rewrite_tag\n            rule: $level ^(error|warn)$ again.$1 false\n";
    let c = yaml(&d, outputs, "          - name: content_modifier\n            action: insert\n            key: p\n            value: 'yes'\n");
    let out = run(&["-c", &c], Some(d.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    // info passes; error and warn are re-emitted once, then refused and kept.
    assert_eq!(lines.len(), 3, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("rewrite_tag"), "{}", out.stderr);
}

const LOG: &str = concat!(
    "{\"level\":\"error\",\"msg\":\"user=bob id=7\"}\n",
    "{\"level\":\"info\"}\n",
    "{\"level\":\"warn\",\"msg\":\"user=al id=12\"}\n",
);

fn yaml(dir: &Dir, outputs: &str, processors: &str) -> String {
    dir.file("in.log", LOG);
    dir.file(
        "c.yaml",
        &format!(
            "parsers:\n  - name: json\n    format: json\npipeline:\n  inputs:\n    - name: tail\n      path: in.log\n      read_from_head: true\n      exit_on_eof: true\n      parser: json\n      processors:\n        logs:\n{processors}  outputs:\n{outputs}"
        ),
    );
    "c.yaml".into()
}

/// Fluent Bit stops a processor at the first record it cannot apply to (the rest of
/// the chunk is left mixed); agent leaves that record as it is and goes on.
#[test]
fn a_record_the_action_cannot_apply_to_is_skipped_not_the_rest() {
    let dir = Dir::new();
    let conf = yaml(
        &dir,
        "    - name: stdout\n      match: '*'\n      format: json_lines\n      json_date_key: false\n",
        "          - name: content_modifier\n            action: extract\n            key: msg\n            pattern: 'user=(?<user>\\w+)'\n          - name: content_modifier\n            action: convert\n            key: msg\n            converted_type: int\n          - name: content_modifier\n            action: insert\n            key: seen\n            value: 'yes'\n",
    );
    let out = run(&["-c", &conf], Some(dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        concat!(
            "{\"level\":\"error\",\"msg\":\"user=bob id=7\",\"user\":\"bob\",\"seen\":\"yes\"}\n",
            "{\"level\":\"info\",\"seen\":\"yes\"}\n",
            "{\"level\":\"warn\",\"msg\":\"user=al id=12\",\"user\":\"al\",\"seen\":\"yes\"}\n",
        )
    );
}

/// Two outputs take the same records; the processors of one change only its copy.
#[test]
fn output_processors_change_only_their_outputs_copy() {
    let dir = Dir::new();
    let (a, b) = (TcpCollector::start(), TcpCollector::start());
    let outputs = format!(
        "    - name: tcp\n      match: '*'\n      host: 127.0.0.1\n      port: {}\n      format: json_lines\n      json_date_key: false\n      processors:\n        logs:\n          - name: content_modifier\n            action: delete\n            key: msg\n          - name: grep\n            exclude: level info\n    - name: tcp\n      match: '*'\n      host: 127.0.0.1\n      port: {}\n      format: json_lines\n      json_date_key: false\n",
        a.port(),
        b.port()
    );
    let conf = yaml(
        &dir,
        &outputs,
        "          - name: content_modifier\n            action: insert\n            key: in\n            value: 'yes'\n",
    );
    let out = run(&["-c", &conf], Some(dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = |c: &TcpCollector| {
        c.wait(Duration::from_secs(5), "records", |conns| {
            conns
                .iter()
                .map(|c| c.text())
                .collect::<String>()
                .lines()
                .count()
                >= 2
        });
        c.conns().iter().map(|c| c.text()).collect::<String>()
    };
    assert_eq!(
        text(&a),
        "{\"level\":\"error\",\"in\":\"yes\"}\n{\"level\":\"warn\",\"in\":\"yes\"}\n"
    );
    let all = text(&b);
    assert_eq!(
        all,
        concat!(
            "{\"level\":\"error\",\"msg\":\"user=bob id=7\",\"in\":\"yes\"}\n",
            "{\"level\":\"info\",\"in\":\"yes\"}\n",
            "{\"level\":\"warn\",\"msg\":\"user=al id=12\",\"in\":\"yes\"}\n",
        )
    );
}

#[track_caller]
fn refused(processors: &str, says: &[&str]) {
    let dir = Dir::new();
    let conf = yaml(&dir, "    - name: stdout\n      match: '*'\n", processors);
    let o = run(&["-c", &conf, "--dry-run"], Some(dir.path()));
    assert_eq!(o.code, Some(1), "{processors}: {}", o.stderr);
    assert!(o.stderr.contains("c.yaml:"), "no file:line in {}", o.stderr);
    for s in says {
        assert!(o.stderr.contains(s), "no '{s}' in {}", o.stderr);
    }
}

#[test]
fn bad_processors_are_config_errors_with_where_and_how() {
    let cm = "          - name: content_modifier\n";
    refused("          - name: content_modifer\n", &["content_modifier"]);
    refused(&format!("{cm}            key: a\n"), &["action"]);
    refused(
        &format!("{cm}            action: squash\n            key: a\n"),
        &["insert, upsert"],
    );
    refused(&format!("{cm}            action: insert\n"), &["key"]);
    refused(
        &format!("{cm}            action: insert\n            key: a\n"),
        &["value", "required"],
    );
    refused(
        &format!("{cm}            action: extract\n            key: a\n"),
        &["pattern"],
    );
    refused(
        &format!(
            "{cm}            action: extract\n            key: a\n            pattern: '(?<x'\n"
        ),
        &["regular expression"],
    );
    refused(
        &format!("{cm}            action: convert\n            key: a\n            converted_type: float\n"),
        &["string, int, double or boolean"],
    );
    refused(
        &format!("{cm}            action: delete\n            key: a\n            context: span\n"),
        &["metadata"],
    );
    refused(
        &format!("{cm}            action: delete\n            key: a\n            colour: red\n"),
        &["colour"],
    );
    let cond = |rule: &str| {
        format!("{cm}            action: delete\n            key: a\n            condition:\n              rules:\n                - {rule}\n")
    };
    refused(&cond("{field: $level, op: like, value: x}"), &["'like'"]);
    refused(&cond("{field: $level, op: in, value: x}"), &["list"]);
    refused(&cond("{field: level, op: eq, value: x}"), &["'$level'"]);
    refused(
        &cond("{field: $level, op: eq, value: true}"),
        &["unsupported value type", "quote"],
    );
    refused(&cond("{field: $level, op: eq}"), &["'value'"]);
    refused(&cond("{field: $level, op: gt, value: lots}"), &["number"]);
    refused(
        &format!("{cm}            action: delete\n            key: a\n            condition:\n              op: xor\n              rules:\n                - {{field: $a, op: eq, value: x}}\n"),
        &["'xor'"],
    );
}

#[test]
fn processors_under_a_filter_or_an_unknown_signal_are_refused() {
    let dir = Dir::new();
    dir.file(
        "f.yaml",
        "pipeline:\n  inputs:\n    - name: dummy\n  filters:\n    - name: grep\n      match: '*'\n      regex: a b\n      processors:\n        logs:\n          - name: grep\n  outputs:\n    - name: stdout\n      match: '*'\n",
    );
    let o = run(&["-c", "f.yaml", "--dry-run"], Some(dir.path()));
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("f.yaml:8:7") && o.stderr.contains("inputs' or 'outputs'"),
        "{}",
        o.stderr
    );
    dir.file(
        "s.yaml",
        "pipeline:\n  inputs:\n    - name: dummy\n      processors:\n        log:\n          - name: grep\n  outputs:\n    - name: stdout\n      match: '*'\n",
    );
    let o = run(&["-c", "s.yaml", "--dry-run"], Some(dir.path()));
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("s.yaml:5:9") && o.stderr.contains("'logs:'"),
        "{}",
        o.stderr
    );
}

/// `traces:` units are left out with a warning naming their line: agent carries no
/// traces. (`metrics:` units run: tests/processors_metrics.rs.)
#[test]
fn units_for_traces_are_warned_about() {
    let dir = Dir::new();
    dir.file(
        "m.yaml",
        "pipeline:\n  inputs:\n    - name: dummy\n      samples: 1\n      processors:\n        traces:\n          - name: content_modifier\n            action: delete\n            key: a\n  outputs:\n    - name: stdout\n      match: '*'\n",
    );
    let o = run(&["-c", "m.yaml", "--dry-run"], Some(dir.path()));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr.contains("m.yaml:7:13") && o.stderr.contains("no traces"),
        "{}",
        o.stderr
    );
}

/// A `logs:` processors list holding one Lua unit that spends ~3 s in a loop on each
/// record (2 to 3 s: `os.time` has whole seconds), saying when it starts and ends.
const SLOW_PROCESSORS: &str = r#"      processors:
        logs:
          - name: lua
            call: cb
            code: |
              function cb(tag, ts, record)
                io.stderr:write("slow processor: start\n")
                io.stderr:flush()
                local t = os.time()
                while os.time() < t + 3 do end
                io.stderr:write("slow processor: done\n")
                io.stderr:flush()
                return 0, ts, record
              end
"#;

/// Starts `conf`, whose slow processor holds one input or output, and checks that
/// the stdout output kept printing records while the slow call ran.
fn slow_processor_holds_nothing_else(conf: &str, what: &str) {
    // One busy loop at a time: two at once would take both cores of a CI machine.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Dir::new();
    let conf = dir.file("slow.yaml", conf);
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log("slow processor: start", Duration::from_secs(20));
    let before = a.stdout().lines().count();
    std::thread::sleep(Duration::from_millis(1500));
    let during = a.stdout().lines().count();
    // Still inside the first slow call (it lasts 2 to 3 s): nothing of it is done.
    assert!(
        !a.stderr().contains("slow processor: done"),
        "the slow call ended too early to tell: {}",
        a.stderr()
    );
    // 1.5 s at 20 records/s is ~30; at least 10 shows it was not held.
    assert!(
        during >= before + 10,
        "{what} was held behind the slow processor: {before} then {during} lines\n{}",
        a.stderr()
    );
    let out = a.stop(Duration::from_secs(15));
    assert!(
        out.stderr.contains("slow processor: done"),
        "{}",
        out.stderr
    );
}

/// Input processors run in their input's own thread, as Fluent Bit runs them in the
/// input's thread: while a slow processor of one input holds a record, the other
/// input's records keep reaching the output. When processors ran on the engine task
/// beside the filters, every input stopped behind the slow one.
#[test]
fn a_slow_input_processor_does_not_hold_the_other_inputs() {
    slow_processor_holds_nothing_else(
        &format!(
            "service:\n  flush: 0.2\npipeline:\n  inputs:\n    - name: dummy\n      tag: slow\n      rate: 1\n{SLOW_PROCESSORS}    - name: dummy\n      tag: fast\n      rate: 20\n  outputs:\n    - name: stdout\n      match: '*'\n      format: json_lines\n"
        ),
        "the fast input",
    );
}

/// Output processors run in their output's workers, each on a thread of its own, as
/// Fluent Bit runs them in the output's worker threads: while a slow processor of one
/// output holds a chunk, the other output keeps printing.
#[test]
fn a_slow_output_processor_does_not_hold_the_other_outputs() {
    slow_processor_holds_nothing_else(
        &format!(
            "service:\n  flush: 0.2\npipeline:\n  inputs:\n    - name: dummy\n      rate: 20\n  outputs:\n    - name: null\n      match: '*'\n{SLOW_PROCESSORS}    - name: stdout\n      match: '*'\n      format: json_lines\n"
        ),
        "the stdout output",
    );
}

/// An output's `limit.max_records_per_second` counts what its processors leave: a
/// processor that keeps 1 record in 10 of 500 leaves 50, of which the 10/s limit
/// passes 10 to 30 over the ~1 s run. (Limited first, ~20 would pass the limit and
/// 2 the processor.)
#[test]
fn an_output_limit_applies_after_its_processors() {
    let dir = Dir::new();
    let conf = dir.file(
        "limit.yaml",
        r#"service:
  flush: 0.2
  log_level: debug
pipeline:
  inputs:
    - name: dummy
      rate: 500
      samples: 500
  outputs:
    - name: stdout
      match: '*'
      format: json_lines
      json_date_key: false
      limit.max_records_per_second: 10
      processors:
        logs:
          - name: lua
            call: cb
            code: |
              n = 0
              function cb(tag, ts, record)
                n = n + 1
                if n % 10 ~= 0 then return -1, ts, record end
                record.n = n
                return 1, ts, record
              end
"#,
    );
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log(
        "[input:dummy:dummy.0] all samples sent",
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = a.stop(Duration::from_secs(15));
    let kept: Vec<&str> = out.stdout.lines().collect();
    assert!(
        (10..=30).contains(&kept.len()),
        "{} records: {}",
        kept.len(),
        out.stderr
    );
    assert!(kept.iter().all(|l| l.contains("\"n\":")), "{}", out.stdout);
}

/// An input's records and bytes count what its processors leave, as Fluent Bit counts
/// them when they are appended to a chunk, after the processors (5.1.1, measured: a
/// `grep` processor excluding every record leaves `"dummy.0":{"records":0,"bytes":0}`
/// in /api/v1/metrics).
#[test]
fn input_counts_are_what_its_processors_leave() {
    let dir = Dir::new();
    let port = free_port();
    let conf = dir.file(
        "counts.yaml",
        &format!(
            "service:\n  flush: 0.2\n  http_server: on\n  http_listen: 127.0.0.1\n  http_port: {port}\npipeline:\n  inputs:\n    - name: dummy\n      tag: none\n      rate: 20\n      processors:\n        logs:\n          - name: grep\n            exclude: message dummy\n    - name: dummy\n      tag: all\n      rate: 20\n      processors:\n        logs:\n          - name: grep\n            regex: message dummy\n  outputs:\n    - name: stdout\n      match: '*'\n      format: json_lines\n"
        ),
    );
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_lines(10, Duration::from_secs(20));
    let (code, body) = http_get(port, "/api/v1/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["input"]["dummy.0"]["records"], 0, "{body}");
    assert_eq!(m["input"]["dummy.0"]["bytes"], 0, "{body}");
    assert!(
        m["input"]["dummy.1"]["records"].as_u64().unwrap() >= 10,
        "{body}"
    );
    a.stop(Duration::from_secs(15));
}

/// At shutdown, what output processors hold is released after they have processed the
/// last chunks: a multiline processor (java rules, a 60 s flush) holds the last of 3
/// records, all dispatched at the final flush (`flush 10`); it is printed. (Released
/// before the workers had processed that flush's chunks, it was lost.)
#[test]
fn output_processors_release_what_they_hold_after_the_last_chunks() {
    let dir = Dir::new();
    let conf = dir.file(
        "ml.yaml",
        r#"service:
  flush: 10
  grace: 5
pipeline:
  inputs:
    - name: dummy
      rate: 20
      samples: 3
      dummy: '{"log":"Exception in thread main java.lang.Error: x"}'
  outputs:
    - name: stdout
      match: '*'
      format: json_lines
      json_date_key: false
      processors:
        logs:
          - name: multiline
            multiline.key_content: log
            multiline.parser: java
            flush_ms: 60000
"#,
    );
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log("worker #0 started", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1000));
    let out = a.stop(Duration::from_secs(15));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\"log\":\"Exception in thread main java.lang.Error: x\"}\n".repeat(3),
        "{}",
        out.stderr
    );
}
