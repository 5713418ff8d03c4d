//! The `head` input against Fluent Bit 5.1.1: every case of tests/data/fluent-bit/head
//! prints Fluent Bit's first record byte for byte (or, where agent deliberately
//! differs, `<case>.agent`, checked to differ from Fluent Bit's only by that); the file
//! is read again at every interval; bad settings are refused at file:line.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

fn data() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/head"
    ))
}

fn first_record(conf: &str) -> String {
    let dir = Dir::new();
    let mut a = Agent::spawn_in(&dir, &["-c", conf], Some(data()));
    a.wait_lines(1, Duration::from_secs(10));
    let out = a.stop(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout.lines().next().unwrap().to_string() + "\n"
}

/// Fluent Bit's split_line value is agent's with its last byte (the newline agent
/// strips, or a last character) replaced by a NUL.
fn differs_only_by_the_nul(fb: &str, ours: &str) -> bool {
    let parse = |s: &str| -> Vec<(String, String)> {
        match serde_json::from_str::<serde_json::Value>(s).unwrap() {
            serde_json::Value::Object(m) => m
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
                .collect(),
            v => panic!("not an object: {v}"),
        }
    };
    let (fb, ours) = (parse(fb), parse(ours));
    fb.len() == ours.len()
        && fb.iter().zip(&ours).all(|((fk, fv), (ok, ov))| {
            fk == ok
                && (fv == ov
                    || fv
                        .strip_suffix('\0')
                        .is_some_and(|f| f == ov || ov.strip_suffix(|_: char| true) == Some(f)))
        })
}

#[test]
fn every_case_prints_fluent_bits_first_record() {
    let mut cases: Vec<String> = std::fs::read_dir(data())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".conf").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 9, "{cases:?}");
    for case in cases {
        let got = first_record(&format!("{case}.conf"));
        let fb = std::fs::read_to_string(data().join(format!("{case}.expected"))).unwrap();
        match std::fs::read_to_string(data().join(format!("{case}.agent"))) {
            Ok(ours) => {
                assert_eq!(got, ours, "{case}");
                assert!(differs_only_by_the_nul(&fb, &ours), "{case}:\n{fb}{ours}");
            }
            Err(_) => assert_eq!(got, fb, "{case}"),
        }
    }
}

#[test]
fn the_file_is_read_again_from_its_start_at_every_interval() {
    let dir = Dir::new();
    let file = dir.file("state", "one\n");
    let conf = format!(
        "[INPUT]\n    name head\n    file {}\n    interval_sec 0\n    interval_nsec 100000000\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
        file.display()
    );
    let mut a = Agent::start(&conf);
    a.wait_until(Duration::from_secs(10), "one", |o, _| o.contains("one"));
    std::fs::write(&file, "two\n").unwrap();
    a.wait_until(Duration::from_secs(10), "two", |o, _| o.contains("two"));
    let out = a.stop(Duration::from_secs(10));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| *l == r#"{"head":"one\n"}"# || *l == r#"{"head":"two\n"}"#),
        "{lines:?}"
    );
    // Every record is the whole head, never a tail of what was read before.
    assert_eq!(lines.last(), Some(&r#"{"head":"two\n"}"#));
}

#[test]
fn a_missing_file_is_reported_once_and_sampled_as_empty() {
    let conf = "[INPUT]\n    name head\n    file /nonexistent/head-input\n    interval_sec 0\n    interval_nsec 50000000\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n";
    let mut a = Agent::start(conf);
    a.wait_lines(5, Duration::from_secs(10));
    let out = a.stop(Duration::from_secs(10));
    assert!(
        out.stdout.lines().all(|l| l == r#"{"head":""}"#),
        "{}",
        out.stdout
    );
    let errors: Vec<String> = log_lines(&out.stderr)
        .into_iter()
        .filter(|l| l.contains("/nonexistent/head-input"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("[error] [input:head:head.0] cannot open"),
        "{errors:?}"
    );
}

#[test]
fn no_file_or_a_zero_buffer_is_refused_where_it_is_written() {
    let l = refused_config(
        "[INPUT]\n    name head\n    tag x\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    assert!(
        l[0].starts_with("[error] fluent-bit.conf:1: [input:head] no 'file' was given"),
        "{l:?}"
    );
    let l = refused_config("[INPUT]\n    name head\n    file /etc/hostname\n    buf_size 0\n[OUTPUT]\n    name stdout\n    match *\n");
    assert!(l[0].starts_with("[error] fluent-bit.conf:4:"), "{l:?}");
    assert!(l.join("\n").contains("buf_size"), "{l:?}");
}
