//! Multiline through `tail` with the real binary: CRI partial lines (`P` ... `F`) and
//! Java stack traces written at full speed, rotated, and the agent killed with
//! `kill -9` mid-way and started again: every logical record comes out whole, in
//! order within its file, and none is lost (a db offset never passes a line that a
//! multiline record still holds).

mod common;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(90);

/// The text record `i` of the CRI stream has once joined.
fn cri_text(i: usize) -> String {
    if i.is_multiple_of(3) {
        format!("r{i:08} part one|part two|part three|end")
    } else {
        format!("r{i:08} single line {}", "x".repeat(40))
    }
}

/// The CRI lines of record `i`: three `P` parts and an `F` for every third record.
fn cri_lines(i: usize) -> String {
    let ts = format!("2026-11-30T10:00:{:02}.{i:09}Z", i % 60);
    if i.is_multiple_of(3) {
        format!(
            "{ts} stdout P r{i:08} part one|\n{ts} stdout P part two|\n{ts} stdout P part three|\n{ts} stdout F end\n"
        )
    } else {
        format!("{ts} stdout F {}\n", cri_text(i))
    }
}

/// The text record `i` of the Java stream has once joined (Fluent Bit's java parser
/// keeps each line's newline).
fn java_text(i: usize) -> String {
    if i.is_multiple_of(4) {
        format!("java.lang.IllegalStateException: r{i:08} failed\n\tat com.example.App.run(App.java:10)\n\tat com.example.App.main(App.java:3)\n")
    } else {
        format!("2026-11-30 10:00:00,000 INFO  [main] r{i:08} served\n")
    }
}

fn write_gen(path: &Path, range: std::ops::Range<usize>, f: fn(usize) -> String) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, file);
    for i in range {
        w.write_all(f(i).as_bytes()).unwrap();
    }
    w.flush().unwrap();
}

/// (record id, log text) of every record printed, by stream (its tag's file name).
fn records(stdout: &str) -> BTreeMap<&'static str, Vec<(usize, String, String)>> {
    let mut out: BTreeMap<&'static str, Vec<(usize, String, String)>> = BTreeMap::new();
    for l in stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let log = v["log"].as_str().unwrap_or_default().to_string();
        let file = v["file"].as_str().unwrap_or_default().to_string();
        let id = log
            .find('r')
            .and_then(|at| log.get(at + 1..at + 9))
            .and_then(|d| d.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("a record that is not whole: {l}"));
        let stream = if file.contains("cri.log") {
            "cri"
        } else {
            "java"
        };
        out.entry(stream).or_default().push((id, log, file));
    }
    out
}

#[test]
fn cri_partials_and_java_traces_under_rotation_and_kill_9_lose_nothing() {
    let d = Dir::new();
    let dir = d.path().display().to_string();
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n    log_level debug\n\
         [INPUT]\n    name tail\n    path {dir}/cri.log*\n    path_key file\n    multiline.parser cri\n    db {dir}/cri.db\n    read_from_head on\n    refresh_interval 1\n    rotate_wait 30\n    mem_buf_limit 300k\n\
         [INPUT]\n    name tail\n    path {dir}/app.log*\n    path_key file\n    multiline.parser java\n    db {dir}/java.db\n    read_from_head on\n    refresh_interval 1\n    rotate_wait 30\n    mem_buf_limit 300k\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    );
    let (gens, per_gen) = (4, 15_000);
    let n = gens * per_gen;
    let cri = d.path().join("cri.log");
    let java = d.path().join("app.log");
    fs::write(&cri, "").unwrap();
    fs::write(&java, "").unwrap();
    let mut a = Agent::start(&conf);
    a.wait_until(T, "both files followed", |_, e| {
        e.matches("following from offset").count() >= 2
    });
    for g in 0..gens {
        write_gen(&cri, g * per_gen..(g + 1) * per_gen, cri_lines);
        write_gen(&java, g * per_gen..(g + 1) * per_gen, java_text);
        if g + 1 < gens {
            fs::rename(&cri, d.path().join(format!("cri.log.{g}"))).unwrap();
            fs::rename(&java, d.path().join(format!("app.log.{g}"))).unwrap();
        }
    }
    // Kill once delivery is under way and both dbs hold offsets.
    a.wait_until(T, "records and saved offsets", |o, _| {
        o.lines().count() > 15_000
            && ["cri.db", "java.db"]
                .iter()
                .all(|db| fs::read(d.path().join(db)).is_ok_and(|b| b.len() > 40))
    });
    a.signal(libc::SIGKILL);
    a.wait(T);
    let first_out = a.stdout();
    drop(a);
    let first = records(&first_out);
    let got: usize = first.values().map(Vec::len).sum();
    assert!(got < 2 * n, "killed before the end ({got} records)");

    let mut a = Agent::start(&conf);
    // Rotated files are read on after the restart too: wait until every record of both
    // streams was printed by one run or the other (the last Java record is held until
    // the java parser's flush timeout).
    let ids = |run: &BTreeMap<&'static str, Vec<(usize, String, String)>>,
               s: &str|
     -> BTreeSet<usize> { run.get(s).into_iter().flatten().map(|r| r.0).collect() };
    a.wait_until(T, "every record", |o, _| {
        let now = records(o);
        ["cri", "java"]
            .iter()
            .all(|s| ids(&first, s).union(&ids(&now, s)).count() == n)
    });
    let second_out = a.stop(T).stdout;
    let second = records(&second_out);

    for (stream, text) in [
        ("cri", cri_text as fn(usize) -> String),
        ("java", java_text),
    ] {
        let mut seen = BTreeSet::new();
        for run in [&first, &second] {
            // Within one file, records come in the order they were written.
            let mut last: BTreeMap<&str, usize> = BTreeMap::new();
            for (id, log, file) in run.get(stream).map(Vec::as_slice).unwrap_or_default() {
                assert_eq!(*log, text(*id), "{stream} record {id} is whole");
                if let Some(prev) = last.insert(file, *id) {
                    assert!(prev < *id, "{stream}: {id} after {prev} in {file}");
                }
                seen.insert(*id);
            }
        }
        let missing: Vec<usize> = (0..n).filter(|i| !seen.contains(i)).take(10).collect();
        assert!(missing.is_empty(), "{stream}: lost records {missing:?}");
    }
}
