//! `stdout` output: exact bytes of every format, pinned to Fluent Bit's
//! (../shared/spec/fluent-bit-observed.md §4.c, fluent-bit.md §4.5–4.6).

mod common;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(15);

/// Runs dummy (fixed time 1587769732.572266000, 3 copies in one event) into stdout
/// with `out` properties; returns stdout once `lines` lines are printed.
fn capture(dummy: &str, out: &str, lines: usize) -> String {
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n    copies 3\n    start_time_sec 1587769732\n    start_time_nsec 572266000\n    fixed_timestamp on\n{dummy}[OUTPUT]\n    name stdout\n    match *\n{out}"
    );
    let mut a = Agent::start(&conf);
    a.wait_lines(lines, T);
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    o.stdout
}

#[test]
fn default_print_format() {
    let out = capture("", "", 3);
    assert_eq!(
        out,
        "[0] dummy.0: [[1587769732.572266000, {}], {\"message\"=>\"dummy\"}]\n\
         [1] dummy.0: [[1587769732.572266000, {}], {\"message\"=>\"dummy\"}]\n\
         [2] dummy.0: [[1587769732.572266000, {}], {\"message\"=>\"dummy\"}]\n"
    );
}

#[test]
fn print_format_nested_values_and_metadata() {
    let out = capture(
        "    dummy {\"a\":[1,-2,1.5,true,null],\"m\":{\"x\":\"y\"}}\n    metadata {\"k\":\"v\"}\n    tag app\n",
        "",
        3,
    );
    let line = "[[1587769732.572266000, {\"k\"=>\"v\"}], {\"a\"=>[1, -2, 1.500000, true, nil], \"m\"=>{\"x\"=>\"y\"}}]";
    assert_eq!(out.lines().next().unwrap(), format!("[0] app: {line}"));
}

#[test]
fn json_formats() {
    let rec = "{\"date\":1587769732.572266,\"message\":\"dummy\"}";
    assert_eq!(
        capture("", "    format json\n", 1),
        format!("[{rec},{rec},{rec}]\n")
    );
    assert_eq!(
        capture("", "    format json_lines\n", 3),
        format!("{rec}\n{rec}\n{rec}\n")
    );
    assert_eq!(
        capture("", "    format json_stream\n", 1),
        format!("{rec}{rec}{rec}\n")
    );
}

#[test]
fn json_date_formats_and_keys() {
    let cases = [
        ("epoch", "{\"date\":1587769732,\"message\":\"dummy\"}"),
        ("epoch_ms", "{\"date\":1587769732572,\"message\":\"dummy\"}"),
        (
            "iso8601",
            "{\"date\":\"2020-04-24T23:08:52.572266Z\",\"message\":\"dummy\"}",
        ),
        (
            "java_sql_timestamp",
            "{\"date\":\"2020-04-24 23:08:52.572266\",\"message\":\"dummy\"}",
        ),
        (
            "double",
            "{\"date\":1587769732.572266,\"message\":\"dummy\"}",
        ),
    ];
    for (fmt, want) in cases {
        let out = capture(
            "",
            &format!("    format json_lines\n    json_date_format {fmt}\n"),
            3,
        );
        assert_eq!(out.lines().next().unwrap(), want, "json_date_format {fmt}");
    }
    let out = capture("", "    format json_lines\n    json_date_key false\n", 3);
    assert_eq!(out.lines().next().unwrap(), "{\"message\":\"dummy\"}");
    let out = capture("", "    format json_lines\n    json_date_key ts\n", 3);
    assert_eq!(
        out.lines().next().unwrap(),
        "{\"ts\":1587769732.572266,\"message\":\"dummy\"}"
    );
}

#[test]
fn json_escaping() {
    let out = capture(
        "    dummy {\"msg\":\"q\\\"b\\\\s\\n\\t\\u00e9/\\u0001\"}\n",
        "    format json_lines\n    json_date_key false\n",
        3,
    );
    assert_eq!(
        out.lines().next().unwrap(),
        "{\"msg\":\"q\\\"b\\\\s\\n\\t\\u00e9/\\u0001\"}"
    );
}

#[test]
fn random_default_format_shape() {
    let mut a = Agent::start("[SERVICE]\n    flush 0.2\n[INPUT]\n    name random\n    samples 3\n    interval_sec 0\n    interval_nsec 50000000\n[OUTPUT]\n    name stdout\n    match *\n");
    a.wait_lines(3, T);
    let o = a.stop(T);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "samples 3 gives exactly 3 records:\n{}",
        o.stdout
    );
    for l in lines {
        // [0] random.0: [[1795383319.029988923, {}], {"rand_value"=>7221167263947537671}]
        let rest = l.split_once("] random.0: [[").expect(l).1;
        let (ts, rest) = rest.split_once(", {}], {\"rand_value\"=>").expect(l);
        let (sec, nsec) = ts.split_once('.').expect(l);
        assert!(
            sec.parse::<u64>().is_ok() && nsec.len() == 9 && nsec.parse::<u32>().is_ok(),
            "{l}"
        );
        let v = rest.strip_suffix("}]").expect(l);
        assert!(v.parse::<u64>().is_ok(), "{l}");
    }
}

#[test]
fn routing_by_match_and_regex() {
    let conf = "[SERVICE]\n    flush 0.2\n\
        [INPUT]\n    name dummy\n    tag app.one\n    samples 1\n    dummy {\"n\":1}\n\
        [INPUT]\n    name dummy\n    tag sys.two\n    samples 1\n    dummy {\"n\":2}\n\
        [FILTER]\n    name record_modifier\n    match app.*\n    record via filter\n\
        [OUTPUT]\n    name stdout\n    match app.*\n    format json_lines\n    json_date_key false\n\
        [OUTPUT]\n    name stdout\n    match_regex sys\n    format json_lines\n    json_date_key false\n\
        [OUTPUT]\n    name stdout\n    match nothing\n    format json_lines\n";
    let mut a = Agent::start(conf);
    a.wait_lines(2, T);
    let o = a.stop(T);
    let mut lines: Vec<&str> = o.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["{\"n\":1,\"via\":\"filter\"}", "{\"n\":2}"]);
}

#[test]
fn input_ids_are_global_across_inputs() {
    // Fluent Bit numbers inputs across plugins: random.0, then dummy.1.
    let conf = "[SERVICE]\n    flush 0.2\n[INPUT]\n    name random\n    samples 0\n[INPUT]\n    name dummy\n    samples 1\n[OUTPUT]\n    name stdout\n    match dummy.1\n";
    let mut a = Agent::start(conf);
    a.wait_lines(1, T);
    let o = a.stop(T);
    assert!(o.stdout.starts_with("[0] dummy.1: [["), "{}", o.stdout);
    assert!(
        o.stderr.contains("[input:random:random.0] initializing"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("[input:dummy:dummy.1] initializing"),
        "{}",
        o.stderr
    );
}

/// Without `fixed_timestamp`, every copy of a dummy event is stamped when it is made.
#[test]
fn dummy_copies_get_their_own_times() {
    let dir = Dir::new();
    dir.file(
        "c.conf",
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n    copies 5\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    let mut a = Agent::spawn_in(&dir, &["-c", "c.conf"], Some(dir.path()));
    a.wait_lines(5, std::time::Duration::from_secs(10));
    let out = a.stop(std::time::Duration::from_secs(10));
    let times: std::collections::BTreeSet<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split("[[").nth(1)?.split(',').next())
        .collect();
    assert_eq!(times.len(), 5, "{}", out.stdout);
}
