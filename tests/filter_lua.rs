//! The `lua` filter against Fluent Bit v5.1.1: every case under
//! tests/data/fluent-bit/lua/ is run with the agent from that directory and must print
//! the records Fluent Bit printed. Key order inside maps is compared as a set: Fluent
//! Bit's is random per run (LuaJIT seeds its string hash at start), the agent's keeps
//! the record's order, which `keys_keep_the_record_order` pins. Scripts that fail load as
//! config errors at `file:line`; a function that fails on a record never stops the agent.

mod common;
use std::fs;
use std::path::Path;

use common::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fluent-bit/lua");

/// A printed value, enough of Fluent Bit's `stdout` format for our data (no `"` or
/// `=>` inside strings).
#[derive(Debug)]
enum V {
    Atom(String),
    Arr(Vec<V>),
    Map(Vec<(String, V)>),
}

fn parse(s: &str) -> (V, &str) {
    let s = s.trim_start();
    if let Some(mut rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(']') {
                return (V::Arr(items), r);
            }
            let (v, r) = parse(rest);
            items.push(v);
            rest = r.strip_prefix(',').unwrap_or(r);
        }
    }
    if let Some(mut rest) = s.strip_prefix('{') {
        let mut entries = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                return (V::Map(entries), r);
            }
            let arrow = rest.find("=>").expect("a map key");
            let key = rest[..arrow].to_string();
            let (v, r) = parse(&rest[arrow + 2..]);
            entries.push((key, v));
            rest = r.strip_prefix(',').unwrap_or(r);
        }
    }
    if let Some(rest) = s.strip_prefix('"') {
        let end = rest.find('"').expect("closing quote") + 1;
        return (V::Atom(s[..=end].to_string()), &rest[end..]);
    }
    let end = s.find([',', ']', '}']).unwrap_or(s.len());
    (V::Atom(s[..end].to_string()), &s[end..])
}

fn print(v: &V, out: &mut String) {
    match v {
        V::Atom(a) => out.push_str(a),
        V::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print(item, out);
            }
            out.push(']');
        }
        V::Map(entries) => {
            let mut sorted: Vec<&(String, V)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push_str("=>");
                print(v, out);
            }
            out.push('}');
        }
    }
}

/// Each printed record with map keys sorted at every level.
fn canonical(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|line| {
            let at = line
                .find(": [[")
                .unwrap_or_else(|| panic!("not a record: {line}"));
            let (head, rest) = line.split_at(at + 2);
            let (v, tail) = parse(rest);
            assert_eq!(tail, "", "left over in {line}");
            let mut out = head.to_string();
            print(&v, &mut out);
            out
        })
        .collect()
}

fn cases() -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = fs::read_dir(DATA)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let case = name.strip_suffix(".expected")?.to_string();
            let conf = if Path::new(DATA).join(format!("{case}.yaml")).exists() {
                format!("{case}.yaml")
            } else {
                format!("{case}.conf")
            };
            Some((case, conf))
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_case_prints_what_fluent_bit_printed() {
    let cases = cases();
    assert!(cases.len() >= 20, "cases missing: {cases:?}");
    let mut failed = Vec::new();
    for (name, conf) in &cases {
        let out = run(&["-c", conf], Some(Path::new(DATA)));
        let expected =
            fs::read_to_string(Path::new(DATA).join(format!("{name}.expected"))).unwrap();
        if canonical(&out.stdout) != canonical(&expected) || out.code != Some(0) {
            failed.push(format!(
                "{name} (exit {:?})\n--- fluent-bit\n{expected}--- agent\n{}--- stderr\n{}",
                out.code, out.stdout, out.stderr
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases differ:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// Runs `input` (JSON lines with a `time`) through `[FILTER] lua` with `filter` lines
/// (the script, if any, written as `s.lua`); returns (exit code, stdout, stderr).
fn pipeline(input: &str, script: Option<&str>, filter: &str) -> Output {
    let dir = Dir::new();
    dir.file("in.log", input);
    dir.file(
        "parsers.conf",
        "[PARSER]\n    name json\n    format json\n    time_key time\n    time_format %Y-%m-%dT%H:%M:%S.%LZ\n",
    );
    if let Some(s) = script {
        dir.file("s.lua", s);
    }
    let body: String = filter.lines().map(|l| format!("    {l}\n")).collect();
    dir.file(
        "c.conf",
        &format!(
            "[SERVICE]\n    flush 0.2\n    parsers_file parsers.conf\n\n[INPUT]\n    name tail\n    path in.log\n    read_from_head true\n    exit_on_eof true\n    parser json\n\n[FILTER]\n    name lua\n    match *\n{body}\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
        ),
    );
    run(&["-c", "c.conf"], Some(dir.path()))
}

const THREE: &str = concat!(
    "{\"time\":\"2026-11-30T10:00:00.0Z\",\"k\":\"a\",\"z\":1,\"m\":{\"y\":1,\"x\":2}}\n",
    "{\"time\":\"2026-11-30T10:00:01.0Z\",\"k\":\"b\",\"z\":2,\"m\":{\"y\":1,\"x\":2}}\n",
    "{\"time\":\"2026-11-30T10:00:02.0Z\",\"k\":\"c\",\"z\":3,\"m\":{\"y\":1,\"x\":2}}\n",
);

#[test]
fn keys_keep_the_record_order() {
    let out = pipeline(
        THREE,
        Some(
            "function cb(tag, ts, r)\n  r.zz = 1; r.aa = 2; r.z = nil; r.m.b = true\n  r.copy = r.m\n  return 2, ts, r\nend\n",
        ),
        "script s.lua\ncall cb",
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The record's keys first in their order (nested ones too, and a map moved to a
    // new key), then the added keys by byte order.
    let first = out.stdout.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"k":"a","m":{"y":1,"x":2,"b":true},"aa":2,"copy":{"y":1,"x":2,"b":true},"zz":1}"#
    );
}

#[test]
fn a_failing_record_passes_unchanged_and_each_error_is_logged_once() {
    let out = pipeline(
        THREE,
        Some("function cb(tag, ts, r)\n  if r.k ~= 'a' then error('no ' .. type(r.q)) end\n  r.ok = true\n  return 2, ts, r\nend\n"),
        "script s.lua\ncall cb",
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    // Fluent Bit would leave all three unchanged (the whole chunk).
    assert_eq!(
        lines,
        [
            r#"{"k":"a","z":1,"m":{"y":1,"x":2},"ok":true}"#,
            r#"{"k":"b","z":2,"m":{"y":1,"x":2}}"#,
            r#"{"k":"c","z":3,"m":{"y":1,"x":2}}"#,
        ]
    );
    let errors: Vec<String> = log_lines(&out.stderr)
        .into_iter()
        .filter(|l| l.contains("[error]"))
        .collect();
    assert_eq!(
        errors,
        ["[error] [filter:lua:lua.0] error code 2: s.lua:2: no nil"],
        "{}",
        out.stderr
    );
}

#[test]
fn tables_that_cannot_be_records_never_stop_the_agent() {
    for (what, body, says) in [
        ("a cycle", "r.self = r", "does a table contain itself?"),
        (
            "too deep",
            "local t = {}; for i = 1, 500 do t = {t} end; r.deep = t",
            "nested deeper than 200",
        ),
        (
            "a DAG that doubles",
            "local t = {1}; for i = 1, 40 do t = {a = t, b = t} end; r.dag = t",
            "more than 1048576 values",
        ),
        (
            "a coroutine",
            "r.co = coroutine.create(print)",
            "a thread value",
        ),
        ("a table key", "r[{}] = 1", "a table cannot be a map key"),
    ] {
        let script = format!("function cb(tag, ts, r)\n  {body}\n  return 1, ts, r\nend\n");
        let out = pipeline(THREE, Some(&script), "script s.lua\ncall cb");
        assert_eq!(out.code, Some(0), "{what}: {}", out.stderr);
        assert_eq!(out.stdout.lines().count(), 3, "{what}: {}", out.stdout);
        assert!(out.stdout.starts_with(r#"{"k":"a","z":1,"#), "{what}");
        assert!(
            out.stderr.contains("invalid table returned at cb(), s.lua")
                && out.stderr.contains(says),
            "{what}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_relative_script_is_found_next_to_the_config() {
    let dir = Dir::new();
    dir.file("sub/in.log", "{\"k\":\"a\"}\n");
    dir.file(
        "sub/s.lua",
        "function cb(tag, ts, r) r.found = true return 2, ts, r end\n",
    );
    let conf = dir.file(
        "sub/c.conf",
        &format!(
            "[INPUT]\n    name tail\n    path {}\n    read_from_head true\n    exit_on_eof true\n\n[FILTER]\n    name lua\n    match *\n    script s.lua\n    call cb\n\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
            dir.path().join("sub/in.log").display()
        ),
    );
    let out = run(&["-c", conf.to_str().unwrap()], Some(dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\"log\":\"{\\\"k\\\":\\\"a\\\"}\",\"found\":true}\n"
    );
}

/// `[FILTER] name lua` with `lines` under --dry-run: (exit code, stderr).
fn config_error(lines: &str, script: Option<&str>) -> (Option<i32>, String) {
    let dir = Dir::new();
    if let Some(s) = script {
        dir.file("s.lua", s);
    }
    let body: String = lines.lines().map(|l| format!("    {l}\n")).collect();
    dir.file(
        "c.conf",
        &format!(
            "[INPUT]\n    name dummy\n\n[FILTER]\n    name  lua\n    match *\n{body}\n[OUTPUT]\n    name stdout\n    match *\n"
        ),
    );
    let o = run(&["-c", "c.conf", "--dry-run"], Some(dir.path()));
    (o.code, o.stderr)
}

#[track_caller]
fn refused(lines: &str, script: Option<&str>, line: u32, says: &[&str]) {
    let (code, stderr) = config_error(lines, script);
    assert_eq!(code, Some(1), "{lines}: {stderr}");
    let at = format!("c.conf:{line}");
    assert!(stderr.contains(&at), "{lines}: no {at} in {stderr}");
    for s in says {
        assert!(stderr.contains(s), "{lines}: no '{s}' in {stderr}");
    }
}

#[test]
fn scripts_that_cannot_run_are_config_errors_where_they_are_named() {
    let ok = "function cb(tag, ts, r) return 0, ts, r end\n";
    refused(
        "script nope.lua\ncall cb",
        None,
        7,
        &["cannot access script 'nope.lua'", "searched: nope.lua"],
    );
    refused(
        "script s.lua\ncall cb",
        Some("function cb(tag, ts, r)\n  return 0, ts r\nend\n"),
        7,
        &["error loading script", "s.lua:2:", "fix the Lua syntax"],
    );
    refused(
        "script s.lua\ncall cbb",
        Some(ok),
        8,
        &["function cbb is not found", "did you mean 'cb'?"],
    );
    refused(
        "script s.lua",
        Some(ok),
        4,
        &["function name defined by 'call' is not set"],
    );
    refused("call cb", None, 4, &["no script path defined"]);
    refused(
        "call cb\ncode function cb(tag, ts, r) return 0, ts, r",
        None,
        8,
        &["[string \"fluentbit.lua\"]:1:", "'end' expected"],
    );
    refused(
        "script s.lua\ncall cb",
        Some("error('bad config')\nfunction cb() end\n"),
        7,
        &["invalid lua content", "s.lua:1: bad config"],
    );
    refused(
        "script s.lua\ncall cb\ntime_as_table maybe",
        Some(ok),
        9,
        &["invalid value 'maybe' for property 'time_as_table'"],
    );
    let (code, stderr) = config_error("script s.lua\ncall cb", Some(ok));
    assert_eq!(code, Some(0), "{stderr}");
}
