//! The `modify` filter against Fluent Bit v5.1.1: every case under
//! tests/data/fluent-bit/modify/ is run with the agent from that directory and its stdout
//! must equal Fluent Bit's, byte for byte. Config errors Fluent Bit refuses (or crashes
//! on) stop the agent with `file:line` and a fix.

mod common;
use std::path::Path;

use common::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fluent-bit/modify");

#[test]
fn every_case_prints_what_fluent_bit_printed() {
    let n = run_oracle_cases(Path::new(DATA));
    assert!(n >= 30, "only {n} cases");
}

/// Runs `[FILTER] name modify` with `rules` (one per line) under --dry-run and returns
/// (exit code, stderr).
fn config_error(rules: &str) -> (Option<i32>, String) {
    let dir = Dir::new();
    let body: String = rules.lines().map(|l| format!("    {l}\n")).collect();
    dir.file(
        "c.conf",
        &format!(
            "[INPUT]\n    name dummy\n\n[FILTER]\n    name  modify\n    match *\n{body}\n[OUTPUT]\n    name stdout\n    match *\n"
        ),
    );
    let o = run(&["-c", "c.conf", "--dry-run"], Some(dir.path()));
    assert_eq!(o.stdout, "");
    (o.code, o.stderr)
}

#[track_caller]
fn refused(rules: &str, line: u32, says: &[&str]) {
    let (code, stderr) = config_error(rules);
    assert_eq!(code, Some(1), "{rules}: {stderr}");
    let at = format!("c.conf:{line}");
    assert!(stderr.contains(&at), "{rules}: no {at} in {stderr}");
    for s in says {
        assert!(stderr.contains(s), "{rules}: no '{s}' in {stderr}");
    }
}

#[test]
fn configs_fluent_bit_refuses_are_refused_with_where_and_how() {
    // Fluent Bit: "Invalid operation set : a in configuration"
    refused(
        "set a",
        7,
        &["'set a'", "set takes 2 arguments, got 1", "KEY VALUE"],
    );
    // Fluent Bit: "Invalid operation remove : a b in configuration"
    refused("remove a b", 7, &["remove takes 1 argument, got 2"]);
    // Fluent Bit: "Invalid config for set"
    refused("set z 1\nset a b c d", 8, &["4 arguments, at most 3"]);
    // Fluent Bit: "Invalid config for condition : bogus a"
    refused(
        "condition bogus a\nset z 1",
        7,
        &["unknown condition 'bogus'", "Key_value_equals"],
    );
    // Fluent Bit: "Unable to create regex for condition condition key_value_matches a"
    refused(
        "condition key_value_matches a\nset z 1",
        7,
        &["missing regex"],
    );
    // Fluent Bit: "Unable to create regex(val) from (x"; it compiles every rule's arguments.
    refused("set z (x", 7, &["'(x' is not a valid regex"]);
    // Fluent Bit: "Unable to create regex(key) from (x"
    refused("remove_regex (x", 7, &["'(x' is not a valid regex"]);
    // Fluent Bit aborts on these two; we refuse them.
    refused(
        "condition a_key_matches (x\nset z 1",
        7,
        &["'(x' is not a valid regex"],
    );
    refused("set a \"b", 7, &["unterminated quote"]);
    // Not in Fluent Bit's config map either (its 'unknown configuration property').
    refused(
        "add_if_not_present zz b",
        7,
        &["unknown configuration property 'add_if_not_present'"],
    );
}

#[test]
fn help_lists_every_rule_and_condition() {
    let o = run(&["-F", "modify", "-h"], None);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    for name in [
        "set",
        "add",
        "remove",
        "remove_wildcard",
        "remove_regex",
        "move_to_start",
        "move_to_end",
        "rename",
        "hard_rename",
        "copy",
        "hard_copy",
        "condition",
    ] {
        assert!(
            o.stdout.contains(name),
            "{name} missing from:\n{}",
            o.stdout
        );
    }
}
