//! The `nest` filter against Fluent Bit 5.1.1: every case in tests/data/fluent-bit/nest
//! (a config tailing records.jsonl through one nest filter) must print exactly the
//! bytes Fluent Bit printed, key order included; config errors name file:line, keep
//! Fluent Bit's words and say how to fix them.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

#[test]
fn every_captured_case_prints_fluent_bits_records() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/nest"
    ));
    let n = run_oracle_cases(dir);
    assert!(n >= 15, "only {n} cases");
}

const HEAD: &str = "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n[FILTER]\n    name nest\n    match *\n";

fn start(filter: &str) -> (Dir, std::path::PathBuf) {
    let d = Dir::new();
    let conf = d.file(
        "fluent-bit.conf",
        &format!("{HEAD}{filter}[OUTPUT]\n    name stdout\n    match *\n"),
    );
    (d, conf)
}

fn config_error(filter: &str) -> Vec<String> {
    refused_config(&format!(
        "{HEAD}{filter}[OUTPUT]\n    name stdout\n    match *\n"
    ))
}

#[test]
fn operation_is_nest_or_lift_in_lowercase() {
    // Fluent Bit compares 4 bytes case-sensitively: 'Nest' is an error, 'nesting' is nest.
    let l = config_error("    operation Nest\n    wildcard log\n    nest_under n\n");
    assert_eq!(l[0], "[error] fluent-bit.conf:9: [filter:nest:nest.0] Key \"operation\" has invalid value 'Nest'. Expected 'nest' or 'lift'");
    assert_eq!(
        l[1],
        "[ help] write 'operation nest' or 'operation lift' (lowercase)"
    );
}

#[test]
fn add_prefix_and_remove_prefix_are_exclusive() {
    let l = config_error(
        "    operation nest\n    wildcard log\n    nest_under n\n    add_prefix a\n    remove_prefix b\n",
    );
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:13: [filter:nest:nest.0] Add_prefix and Remove_prefix are exclusive"
    );
    assert_eq!(
        l[1],
        "[ help] keep either 'add_prefix' (line 12) or 'remove_prefix'"
    );
}

#[test]
fn nest_without_nest_under_is_an_error_where_fluent_bit_loses_records() {
    let l = config_error("    operation nest\n    wildcard log\n");
    assert_eq!(
        l[0],
        "[error] fluent-bit.conf:6: [filter:nest:nest.0] operation nest needs 'nest_under'"
    );
    assert_eq!(
        l[1],
        "[ help] add 'nest_under KEY', the key that will hold the nested map"
    );
}

#[test]
fn prefix_with_is_unknown_as_in_fluent_bit() {
    let l =
        config_error("    operation nest\n    wildcard log\n    nest_under n\n    prefix_with p\n");
    assert!(
        l[0].starts_with("[error] fluent-bit.conf:12: [config] nest: unknown configuration property 'prefix_with'."),
        "{}",
        l[0]
    );
}

#[test]
fn lift_without_nested_under_runs_and_says_it_lifts_nothing() {
    let (d, _) = start("    operation lift\n");
    let mut a = Agent::spawn_in(&d, &["-c", "fluent-bit.conf"], Some(d.path()));
    a.wait_lines(1, Duration::from_secs(20));
    let o = a.stop(Duration::from_secs(20));
    assert!(o.stderr.contains("fluent-bit.conf:6: [filter:nest:nest.0] operation lift without 'nested_under' lifts nothing; add 'nested_under KEY'"), "{}", o.stderr);
    assert!(
        o.stdout.contains("{\"message\"=>\"dummy\"}"),
        "{}",
        o.stdout
    );
}
