//! The same configs and inputs as Fluent Bit 5.1.1, the same records out.
//!
//! Every case of `tests/data/fluent-bit/cases.tsv` (the standard parsers, the parser
//! properties, multiline, the parser and multiline filters) is run with the real binary
//! from its own directory, and its stdout (default format: `[N] tag: [[time, {}], {...}]`)
//! is compared with what Fluent Bit printed for the same config and input, record by
//! record. The standard parser cases run with our own `conf/parsers.conf`.
//!
//! Normalised on both sides: the `[N] ` chunk index (not stable in Fluent Bit either),
//! and times stamped at ingestion ("now": any time on the day of the run, which also
//! covers formats that take today's date). Deliberate differences are listed in
//! `DIFFERENCES` with the reason; every other byte must match.

mod common;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fluent-bit");
/// 2026-11-30, the day the expected files were captured (UTC).
const CAPTURE_DAY: i64 = 1_796_000_000 / 86_400;

/// How agent may differ from Fluent Bit in a case, on purpose (the README says why).
enum Differs {
    /// Agent prints more records after all of Fluent Bit's.
    ExtraAtEnd(&'static str),
    /// Agent prints these records (by index in its output) that Fluent Bit drops.
    AgentKeeps(&'static [usize], &'static str),
    /// Not compared.
    Skip(&'static str),
}

impl Differs {
    fn reason(&self) -> &'static str {
        match self {
            Differs::ExtraAtEnd(r) | Differs::AgentKeeps(_, r) | Differs::Skip(r) => r,
        }
    }
}

const HELD_AT_EOF: &str = "a multiline group still open at the end of the file: Fluent Bit drops it with exit_on_eof; agent emits it (nothing read is lost)";
const INVALID_UTF8: &str = "a line that is not UTF-8: Fluent Bit carries it as a msgpack str of the raw bytes, agent as bin (every byte kept), which stdout prints with \\xNN escapes";

const TIME_OUT_OF_RANGE: &str = "a parsed time Fluent Bit cannot pack (time_strict off reads an unparsable time as year 1900): Fluent Bit drops the record, agent keeps it with the ingestion time and warns once";

const DIFFERENCES: &[(&str, Differs)] = &[
    (
        "props/time_strict_off",
        Differs::AgentKeeps(&[4], TIME_OUT_OF_RANGE),
    ),
    ("multiline/cri", Differs::ExtraAtEnd(HELD_AT_EOF)),
    ("multiline/custom_regex", Differs::ExtraAtEnd(HELD_AT_EOF)),
    (
        "multiline/custom_regex_with_parser",
        Differs::ExtraAtEnd(HELD_AT_EOF),
    ),
    ("multiline/docker", Differs::ExtraAtEnd(HELD_AT_EOF)),
    (
        "multiline/docker_cri_on_cri",
        Differs::ExtraAtEnd(HELD_AT_EOF),
    ),
    (
        "multiline/docker_cri_on_docker",
        Differs::ExtraAtEnd(HELD_AT_EOF),
    ),
    (
        "multiline/filter_multiline_custom",
        Differs::ExtraAtEnd(HELD_AT_EOF),
    ),
    ("props/tail_raw_lines", Differs::Skip(INVALID_UTF8)),
    (
        "props/tail_raw_lines_skip_long",
        Differs::Skip(INVALID_UTF8),
    ),
    (
        "props/tail_raw_lines_big_buffer",
        Differs::Skip(INVALID_UTF8),
    ),
];

/// Records of one run, in order, normalised.
fn records(stdout: &[u8], now_day: i64) -> Vec<String> {
    let text = String::from_utf8_lossy(stdout);
    let mut out: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        let is_start = line.starts_with('[')
            && line[1..]
                .find("] ")
                .is_some_and(|i| line[1..1 + i].bytes().all(|b| b.is_ascii_digit()) && i > 0);
        if is_start {
            let body = &line[line.find("] ").unwrap() + 2..];
            out.push(normalise(body, now_day));
        } else if let Some(last) = out.last_mut() {
            // A raw string with a newline in it: the record goes on.
            last.push_str(line);
        }
    }
    out
}

/// `tag: [[S.N, ...` with a time on `now_day` becomes `tag: [[NOW, ...`.
fn normalise(record: &str, now_day: i64) -> String {
    let Some(at) = record.find(": [[") else {
        return record.to_string();
    };
    let start = at + 4;
    let Some(dot) = record[start..].find('.') else {
        return record.to_string();
    };
    let Ok(secs) = record[start..start + dot].parse::<i64>() else {
        return record.to_string();
    };
    if secs.div_euclid(86_400) == now_day {
        let end = start + record[start..].find(',').unwrap_or(dot);
        format!("{}NOW{}", &record[..start], &record[end..])
    } else {
        record.to_string()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

struct Case {
    dir: String,
    name: String,
    tz: String,
    run: String,
}

fn cases() -> Vec<Case> {
    fs::read_to_string(Path::new(DATA).join("cases.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Case {
                dir: f[0].into(),
                name: f[1].into(),
                tz: f[2].into(),
                run: f[3].into(),
            }
        })
        .collect()
}

/// Runs one case; returns (expected, got) records.
fn run_case(c: &Case) -> (Vec<String>, Vec<String>) {
    let work = Dir::new();
    copy_dir(&Path::new(DATA).join(&c.dir), work.path());
    let ours: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/parsers.conf");
    if !work.path().join("parsers.conf").exists() {
        fs::copy(&ours, work.path().join("parsers.conf")).unwrap();
    }
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["-c", &format!("{}.conf", c.name)])
        .current_dir(work.path())
        .env("TZ", &c.tz)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let limit = match c
        .run
        .strip_prefix("timed:")
        .and_then(|s| s.strip_suffix('s'))
    {
        Some(secs) => {
            let secs: u64 = secs.parse().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(secs));
                unsafe { libc::kill(pid, libc::SIGTERM) };
            });
            secs + 20
        }
        None => 20,
    };
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(limit));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    let now_day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let expected = fs::read(
        Path::new(DATA)
            .join(&c.dir)
            .join(format!("{}.expected", c.name)),
    )
    .unwrap();
    let got = records(&out.stdout, now_day);
    if got.is_empty() {
        eprintln!(
            "{}/{}: agent printed nothing; stderr:\n{}",
            c.dir,
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (records(&expected, CAPTURE_DAY), got)
}

/// The first differing record of two runs, for the report.
fn first_difference(expected: &[String], got: &[String]) -> String {
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e != g {
            return format!(
                "record {i}:\n  Fluent Bit: {}\n  agent:      {}",
                e.map(|s| s.trim_end()).unwrap_or("(none)"),
                g.map(|s| s.trim_end()).unwrap_or("(none)")
            );
        }
    }
    String::new()
}

fn check_dir(dir: &str) {
    let mut failed = Vec::new();
    let year_ok = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400
        / 365
        == 1_796_000_000 / 86_400 / 365;
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.dir == dir).collect();
    assert!(!cases.is_empty());
    for c in &cases {
        let id = format!("{}/{}", c.dir, c.name);
        let differs = DIFFERENCES
            .iter()
            .find(|(d, _)| *d == id)
            .map(|(_, how)| how);
        if let Some(d) = differs {
            eprintln!("{id}: differs on purpose: {}", d.reason());
        }
        if let Some(Differs::Skip(_)) = differs {
            continue;
        }
        // Formats without a year take the current one: comparable in the capture year only.
        if !year_ok
            && [
                "syslog-rfc3164",
                "syslog-rfc3164-local",
                "time_no_year_system_tz",
            ]
            .contains(&c.name.as_str())
        {
            continue;
        }
        let (expected, mut got) = run_case(c);
        match differs {
            Some(Differs::ExtraAtEnd(_)) => {
                assert!(
                    got.len() > expected.len(),
                    "{id}: agent should print the held record too:\n{}",
                    got.join("")
                );
                got.truncate(expected.len());
            }
            Some(Differs::AgentKeeps(at, _)) => {
                for &i in at.iter().rev() {
                    assert!(
                        got.get(i).is_some_and(|r| r.contains("[[NOW,")),
                        "{id}: record {i} kept with the ingestion time:\n{}",
                        got.join("")
                    );
                    got.remove(i);
                }
            }
            _ => {}
        }
        if expected != got {
            failed.push(format!("{id}: {}", first_difference(&expected, &got)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases differ from Fluent Bit:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

#[test]
fn standard_parsers_parse_as_fluent_bits() {
    check_dir("parsers");
}

#[test]
fn parser_properties_as_fluent_bits() {
    check_dir("props");
}

#[test]
fn multiline_and_filters_as_fluent_bits() {
    check_dir("multiline");
}
