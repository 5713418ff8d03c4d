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
            let at = line.find(": [[").unwrap_or_else(|| panic!("not a record: {line}"));
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
    assert!(cases.len() >= 16, "cases missing: {cases:?}");
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
