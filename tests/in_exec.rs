//! The `exec` input against Fluent Bit 5.1.1: every case of tests/data/fluent-bit/exec
//! (a one-shot command) prints Fluent Bit's records byte for byte; exit codes are
//! propagated by the shell's conventions; commands repeat every interval; the command's
//! process group is stopped with the agent; bad settings are refused at file:line.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

fn data() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/exec"
    ))
}

#[test]
fn every_captured_case_prints_fluent_bits_records() {
    let n = run_oracle_cases(data());
    assert!(n >= 6, "only {n} cases");
}

fn oneshot(command: &str, extra: &str) -> Output {
    let d = Dir::new();
    d.file(
        "fluent-bit.conf",
        &format!("[SERVICE]\n    parsers_file {}/parsers.conf\n[INPUT]\n    name exec\n    command {command}\n    exit_after_oneshot on\n{extra}[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n", data().display()),
    );
    run(&["-c", "fluent-bit.conf"], Some(d.path()))
}

#[test]
fn the_exit_code_is_propagated_as_a_shell_would() {
    let o = oneshot("echo a; exit 3", "    propagate_exit_code on\n");
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(o.stdout, "{\"exec\":\"a\"}\n");
    // Killed by a signal: 128 + its number (Fluent Bit's convention).
    let o = oneshot("kill -9 $$", "    propagate_exit_code on\n");
    assert_eq!(o.code, Some(137), "{}", o.stderr);
    // Without propagate_exit_code the agent exits 0.
    let o = oneshot("exit 3", "");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("one-shot command exited"), "{}", o.stderr);
}

#[test]
fn the_command_runs_again_at_every_interval() {
    let d = Dir::new();
    let count = d.path().join("count");
    let conf = format!(
        "[INPUT]\n    name exec\n    command echo run >> {0}; wc -l < {0}\n    interval_sec 0\n    interval_nsec 200000000\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
        count.display()
    );
    let mut a = Agent::start(&conf);
    a.wait_lines(3, Duration::from_secs(10));
    let out = a.stop(Duration::from_secs(10));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [r#"{"exec":"1"}"#, r#"{"exec":"2"}"#, r#"{"exec":"3"}"#]
    );
}

#[test]
fn stopping_the_agent_stops_a_running_command_and_its_children() {
    let d = Dir::new();
    let pids = d.path().join("pids");
    // The shell and a child of it, both in the command's process group.
    let conf = format!(
        "[INPUT]\n    name exec\n    command sleep 300 & echo $$ $! > {0}; echo started; wait\n    oneshot on\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
        pids.display()
    );
    let mut a = Agent::start(&conf);
    a.wait_lines(1, Duration::from_secs(10));
    let ids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let out = a.stop(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for pid in ids {
        // Reaped (the shell) or re-parented and killed (sleep): not running any more.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z"),
            "{pid} still runs: {state}"
        );
    }
}

#[test]
fn lines_the_parser_does_not_match_are_skipped_and_reported() {
    let o = oneshot(
        "printf 'not json\\nnor this\\n{\"a\":1}\\n'",
        "    parser json\n",
    );
    assert_eq!(o.stdout, "{\"a\":1}\n");
    let l = log_lines(&o.stderr);
    assert!(
        l.iter()
            .any(|l| l.contains("parser 'json' returned an error on 'not json'")),
        "{l:?}"
    );
    assert!(
        l.iter()
            .any(|l| l.contains("2 lines of this run did not match")),
        "{l:?}"
    );
}

#[test]
fn bad_settings_are_refused_where_they_are_written() {
    let l = refused_config("[INPUT]\n    name exec\n[OUTPUT]\n    name stdout\n    match *\n");
    assert!(
        l[0].starts_with("[error] fluent-bit.conf:1: [input:exec] no input 'command' was given"),
        "{l:?}"
    );
    let l = refused_config("[INPUT]\n    name exec\n    command true\n    propagate_exit_code on\n[OUTPUT]\n    name stdout\n    match *\n");
    assert!(l[0].starts_with("[error] fluent-bit.conf:4: [input:exec] propagate_exit_code=True option makes no sense without exit_after_oneshot=True"), "{l:?}");
    let l = refused_config("[INPUT]\n    name exec\n    command true\n    parser nope\n[OUTPUT]\n    name stdout\n    match *\n");
    assert!(l[0].starts_with("[error] fluent-bit.conf:4:"), "{l:?}");
    let l = refused_config("[INPUT]\n    name exec\n    command true\n    buf_size 1\n[OUTPUT]\n    name stdout\n    match *\n");
    assert!(l[0].starts_with("[error] fluent-bit.conf:4:"), "{l:?}");
}
