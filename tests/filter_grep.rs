//! The `grep` filter against Fluent Bit 5.1.1: every case in tests/data/fluent-bit/grep
//! (a config tailing records.jsonl through one grep filter) must print exactly the
//! bytes Fluent Bit printed; config errors name file:line, keep Fluent Bit's words and
//! say how to fix them.

mod common;
use std::path::Path;

use common::*;

fn data() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/grep"
    ))
}

#[test]
fn every_captured_case_prints_fluent_bits_records() {
    let n = run_oracle_cases(data());
    assert!(n >= 30, "only {n} cases");
}

const HEAD: &str = "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n[FILTER]\n    name grep\n    match *\n";

fn config_error(filter: &str) -> Vec<String> {
    // Fluent Bit says "AND mode" / "OR mode" at info level before it checks the rules.
    refused_config(&format!(
        "{HEAD}{filter}[OUTPUT]\n    name stdout\n    match *\n"
    ))
    .into_iter()
    .filter(|l| !l.starts_with("[ info]"))
    .collect()
}

#[test]
fn mixing_regex_and_exclude_under_and_or_is_an_error_at_the_second_kind() {
    // Fluent Bit: [error] [filter:grep:grep.0] Both 'regex' and 'exclude' are set.
    let l =
        config_error("    logical_op or\n    regex log a\n    regex log b\n    exclude log c\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:12: [filter:grep:grep.0] Both 'regex' and 'exclude' are set."
    );
    assert_eq!(
        l[1],
        "[ help] with logical_op or every rule must be a 'regex'; drop this 'exclude' or use logical_op legacy"
    );
}

#[test]
fn a_rule_without_a_regex_a_bad_regex_or_a_bad_accessor_is_an_error() {
    let l = config_error("    regex log\n");
    assert_eq!(l[0], "[error] fluent-bit.conf:9: [filter:grep:grep.0] invalid regex, expected field and regular expression");
    assert_eq!(
        l[1],
        "[ help] write 'regex KEY REGEX', e.g. 'regex log ^error'"
    );
    let l = config_error("    exclude log (abc\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:9: [filter:grep:grep.0] could not compile regex pattern '(abc'"
    );
    let l = config_error("    regex $log['a ^x\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:9: [filter:grep:grep.0] invalid record accessor? '$log['a'"
    );
}

#[test]
fn an_unknown_logical_op_runs_as_legacy_with_a_warning() {
    let d = Dir::new();
    let _conf = d.file(
        "fluent-bit.conf",
        &format!("{HEAD}    logical_op xor\n    regex rand_value .\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"),
    );
    let mut a = Agent::spawn_in(&d, &["-c", "fluent-bit.conf"], Some(d.path()));
    a.wait_log("logical_op 'xor'", std::time::Duration::from_secs(20));
    let o = a.stop(std::time::Duration::from_secs(20));
    assert!(o.stderr.contains(
        "fluent-bit.conf:9: [filter:grep:grep.0] logical_op 'xor' is not legacy, and or or; running as legacy"
    ), "{}", o.stderr);
}
