//! The `expect` filter against Fluent Bit 5.1.1: every case in
//! tests/data/fluent-bit/expect must print Fluent Bit's stdout, exit with its status
//! (`exit_status.tsv`: 255 after `action exit`) and log the filter's lines as Fluent
//! Bit did (`<case>.expected.log`: the `[filter:expect:...]` lines and the record JSON
//! after each, timestamps cut). Then config errors, and `action exit` stopping an agent
//! whose input never ends.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

fn data() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/expect"
    ))
}

/// The filter's log lines: `[filter:expect:...]` lines, each `Record content:` with
/// the JSON line after it.
fn filter_log(stderr: &str) -> String {
    let lines = log_lines(stderr);
    let mut out = String::new();
    let mut it = lines.iter();
    while let Some(l) = it.next() {
        if l.contains("[filter:expect:") {
            out.push_str(l);
            out.push('\n');
            if l.ends_with("Record content:") {
                if let Some(json) = it.next() {
                    out.push_str(json);
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn every_captured_case_prints_logs_and_exits_as_fluent_bit() {
    let dir = data();
    let table = std::fs::read_to_string(dir.join("exit_status.tsv")).unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    for row in table.lines().skip(1) {
        let (case, status) = row.split_once('\t').unwrap();
        let status: i32 = status.parse().unwrap();
        let o = run(&["-c", &format!("{case}.conf")], Some(dir));
        let want = std::fs::read_to_string(dir.join(format!("{case}.expected"))).unwrap();
        let want_log =
            std::fs::read_to_string(dir.join(format!("{case}.expected.log"))).unwrap_or_default();
        let log = filter_log(&o.stderr);
        if o.code != Some(status) || o.stdout != want || log != want_log {
            failures.push(format!(
                "{case}: exit {:?} (want {status})\n--- agent\n{}--- fluent-bit\n{want}--- agent log\n{log}--- fluent-bit log\n{want_log}",
                o.code, o.stdout
            ));
        }
        n += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(n >= 14, "only {n} cases");
}

fn config_error(filter: &str) -> Vec<String> {
    refused_config(&format!(
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n[FILTER]\n    name expect\n    match *\n{filter}[OUTPUT]\n    name stdout\n    match *\n"
    ))
}

#[test]
fn bad_actions_keys_and_values_are_errors_at_their_line() {
    let l = config_error("    key_exists a\n    action stop\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:10: [filter:expect:expect.0] unexpected 'action' value 'stop'"
    );
    assert_eq!(l[1], "[ help] action is warn, exit or result_key");
    let l = config_error("    key_exists $a['b\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:9: [filter:expect:expect.0] error processing accessor key '$a['b'"
    );
    // Fluent Bit would expect the key's own name as the value.
    let l = config_error("    key_val_eq color\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:9: [filter:expect:expect.0] key_val_eq 'color' has no value to compare with"
    );
    let l = config_error("    key_is_there a\n");
    assert!(
        l[0].contains("unknown configuration property 'key_is_there'"),
        "{l:?}"
    );
}

#[test]
fn action_exit_stops_an_endless_input_gracefully_with_status_255() {
    let mut a = Agent::start(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name dummy\n    rate 20\n    dummy {\"a\":1}\n\
         [FILTER]\n    name expect\n    match *\n    key_exists b\n    action exit\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
    );
    let code = a.wait(Duration::from_secs(20));
    assert_eq!(code, Some(255), "{}", a.stderr());
    // What was read before the exit is still delivered, the failed record included.
    let out = a.stdout();
    assert!(out.starts_with("{\"a\":1}\n"), "{out}");
    let err = a.stderr();
    assert!(
        err.contains("[error] [filter:expect:expect.0] exception on rule #0 'key_exists', key 'b' not found. Record content:\n{\"a\":1}\n"),
        "{err}"
    );
    assert!(
        err.contains("service will shutdown in max 5 seconds"),
        "{err}"
    );
    assert!(
        err.contains("service has stopped (0 pending tasks)"),
        "{err}"
    );
}

#[test]
fn no_rules_is_a_warning() {
    let d = Dir::new();
    let _conf = d.file(
        "fluent-bit.conf",
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n[FILTER]\n    name expect\n    match *\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n",
    );
    let mut a = Agent::spawn_in(&d, &["-c", "fluent-bit.conf"], Some(d.path()));
    a.wait_lines(1, Duration::from_secs(20));
    let o = a.stop(Duration::from_secs(20));
    assert!(
        o.stderr
            .contains("[ warn] [filter:expect:expect.0] no rules has been defined"),
        "{}",
        o.stderr
    );
}
