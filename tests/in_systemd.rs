//! The `systemd` input on real journal files, written by Debian's
//! `systemd-journal-remote` from the journal export format:
//! * every case of tests/data/fluent-bit/systemd (unit tags, filters and/or, max_fields,
//!   max_entries, strip_underscores/lowercase, repeated fields, binary values) prints
//!   Fluent Bit 5.1.1's records byte for byte on a journal made from `journal.export`;
//! * `max_entries` bounds each read; `read_from_tail` reads only what comes after start;
//! * the cursor db is saved only once records are delivered: after `kill -9` a restart
//!   reads from the entry after the saved cursor, nothing skipped;
//! * 100,000 entries are read once each, in order;
//! * a missing path, a file as path, a bad filter, a damaged db stop the agent at start
//!   naming file:line (`--dry-run` accepts them, as Fluent Bit's); bad values are refused
//!   at file:line; a damaged journal file is named and skipped, the good ones read.
//!
//! Skipped, with the reason printed, when systemd-journal-remote is not installed
//! (scripts/test-deps.sh installs it; scripts/test.sh names the skip).

mod common;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

fn data() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/systemd"
    ))
}

/// Debian's systemd-journal-remote, when installed.
fn journal_remote() -> Option<&'static str> {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

macro_rules! needs_journal_remote {
    () => {
        match journal_remote() {
            Some(p) => p,
            None => {
                eprintln!(
                    "skipped: needs systemd-journal-remote (Debian package systemd-journal-remote)"
                );
                return;
            }
        }
    };
}

/// Writes (or appends to) the journal file `file` from export-format text.
fn write_journal(remote: &str, file: &Path, export: &[u8]) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut c = Command::new(remote)
        .arg("-o")
        .arg(file)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(export).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Export text of entries `range`: `MESSAGE=entry <i>`, one second apart from a fixed
/// time, units u0/u1.
fn entries(range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in range {
        write!(
            out,
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=6f1e2d3c4b5a69788796a5b4c3d2e1f0\nMESSAGE=entry {i}\n_SYSTEMD_UNIT=u{}.service\n\n",
            1_764_000_000_000_000u64 + i * 1_000_000,
            1_000_000 + i,
            i % 2
        )
        .unwrap();
    }
    out
}

/// The entry numbers in stdout, in order.
fn entry_numbers(stdout: &str) -> Vec<u64> {
    stdout
        .split("\"MESSAGE\"=>\"entry ")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The sequence number (`i=`) of the cursor saved in an agent systemd db.
fn saved_seqnum(db: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(db).ok()?;
    let cursor = text.lines().nth(1)?;
    let i = cursor.split(';').find_map(|f| f.strip_prefix("i="))?;
    Some(u64::from_str_radix(i, 16).unwrap())
}

fn conf(dir: &Path, extra: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    log_level debug\n[INPUT]\n    name systemd\n    path {}\n{extra}[OUTPUT]\n    name stdout\n    match *\n",
        dir.display()
    )
}

const END: &str = "at the end of the journal (";

#[test]
fn every_captured_case_prints_fluent_bits_records() {
    let remote = needs_journal_remote!();
    let mut cases: Vec<String> = std::fs::read_dir(data())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".expected").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let d = Dir::new();
        write_journal(
            remote,
            &d.path().join("journal/x.journal"),
            &std::fs::read(data().join("journal.export")).unwrap(),
        );
        let conf = format!("{case}.conf");
        std::fs::copy(data().join(&conf), d.path().join(&conf)).unwrap();
        let want = std::fs::read_to_string(data().join(format!("{case}.expected"))).unwrap();
        let mut a = Agent::spawn_in(&d, &["-c", &conf, "-v"], Some(d.path()));
        a.wait_log(END, T);
        a.wait_until(T, "Fluent Bit's output length", |o, _| {
            o.len() >= want.len()
        });
        let o = a.stop(T);
        if o.code != Some(0) || o.stdout != want {
            failures.push(format!(
                "{case}: exit {:?}\n--- agent\n{}--- fluent-bit\n{}--- stderr\n{}",
                o.code, o.stdout, want, o.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn max_entries_bounds_each_read() {
    let remote = needs_journal_remote!();
    let d = Dir::new();
    write_journal(remote, &d.path().join("j/x.journal"), &entries(0..25));
    let mut a = Agent::start(&conf(&d.path().join("j"), "    max_entries 4\n"));
    a.wait_log(&format!("{END}25 entries read)"), T);
    a.wait_until(T, "25 records", |o, _| entry_numbers(o).len() == 25);
    let o = a.stop(T);
    assert_eq!(entry_numbers(&o.stdout), (0..25).collect::<Vec<_>>());
    let reads: Vec<u64> = o
        .stderr
        .lines()
        .filter_map(|l| {
            let s = l.split("] read ").nth(1)?;
            s.split(' ').next()?.parse().ok()
        })
        .collect();
    assert_eq!(reads.iter().sum::<u64>(), 25, "{}", o.stderr);
    assert!(reads.iter().all(|&n| n <= 4), "{reads:?}");
    assert_eq!(reads.len(), 7, "{reads:?}");
}

#[test]
fn read_from_tail_reads_only_new_entries() {
    let remote = needs_journal_remote!();
    let d = Dir::new();
    let file = d.path().join("j/x.journal");
    write_journal(remote, &file, &entries(0..5));
    let mut a = Agent::start(&conf(&d.path().join("j"), "    read_from_tail on\n"));
    a.wait_log(&format!("{END}0 entries read)"), T);
    write_journal(remote, &file, &entries(5..8));
    a.wait_until(T, "3 records", |o, _| entry_numbers(o).len() >= 3);
    let o = a.stop(T);
    assert_eq!(entry_numbers(&o.stdout), vec![5, 6, 7], "{}", o.stderr);
}

/// The cursor is saved only once the records are delivered: with an output that never
/// delivers (a tcp destination that refuses, retried forever) no cursor is saved, and
/// a restart reads everything.
#[test]
fn the_cursor_waits_for_delivery() {
    let remote = needs_journal_remote!();
    let d = Dir::new();
    write_journal(remote, &d.path().join("j/x.journal"), &entries(0..10));
    let db = d.path().join("cursor.db");
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    log_level debug\n[INPUT]\n    name systemd\n    path {}\n    db {}\n[OUTPUT]\n    name tcp\n    match *\n    host 127.0.0.1\n    port {port}\n    retry_limit false\n",
        d.path().join("j").display(),
        db.display()
    ));
    a.wait_log(&format!("{END}10 entries read)"), T);
    // A failed flush, then longer than the db's save interval (1 s): a cursor saved
    // for these records would be on disk by now.
    a.wait_log("failed to flush chunk", T);
    std::thread::sleep(Duration::from_millis(1500));
    a.signal(libc::SIGKILL);
    a.wait(T);
    assert!(!db.exists(), "a cursor was saved for undelivered records");

    let mut b = Agent::start(&conf(
        &d.path().join("j"),
        &format!("    db {}\n", db.display()),
    ));
    b.wait_until(T, "10 records", |o, _| entry_numbers(o).len() >= 10);
    b.wait_until(T, "the db", |_, _| saved_seqnum(&db) == Some(10));
    let o = b.stop(T);
    assert_eq!(entry_numbers(&o.stdout), (0..10).collect::<Vec<_>>());
}

/// `kill -9` while reading: the saved cursor never passes what was printed, and a
/// restart reads from the entry after it, new entries included, each once.
#[test]
fn db_resumes_after_kill_9_with_nothing_skipped() {
    let remote = needs_journal_remote!();
    let d = Dir::new();
    let file = d.path().join("j/x.journal");
    const N: u64 = 5000;
    write_journal(remote, &file, &entries(0..N));
    let db = d.path().join("cursor.db");
    // Delivery throttled (about 50 kB of records a second) so that the kill comes
    // while reading.
    let cfg = format!(
        "[SERVICE]\n    flush 1\n    log_level debug\n[INPUT]\n    name systemd\n    path {}\n    db {}\n    max_entries 100\n    mem_buf_limit 50k\n[OUTPUT]\n    name stdout\n    match *\n",
        d.path().join("j").display(),
        db.display()
    );
    let mut a = Agent::start(&cfg);
    a.wait_until(T, "a saved cursor", |_, _| saved_seqnum(&db).is_some());
    a.signal(libc::SIGKILL);
    a.wait(T);
    let first = entry_numbers(&a.stdout());
    let s = saved_seqnum(&db).unwrap();
    // Entry i has sequence number i + 1: every entry up to the cursor's was printed.
    assert!((1..=N).contains(&s));
    assert!((first.len() as u64) < N, "killed after everything was read");
    assert_eq!(
        &first[..s as usize],
        &(0..s).collect::<Vec<_>>()[..],
        "printed before the kill"
    );

    write_journal(remote, &file, &entries(N..N + 300));
    let mut b = Agent::start(&cfg.replace("    mem_buf_limit 50k\n", ""));
    b.wait_log(&format!("{END}{} entries read)", N + 300 - s), T);
    b.wait_until(T, "every record", |o, _| {
        entry_numbers(o).len() as u64 >= N + 300 - s
    });
    let o = b.stop(T);
    assert!(o.stderr.contains("seek_cursor=s="), "{}", o.stderr);
    let second = entry_numbers(&o.stdout);
    assert_eq!(second, (s..N + 300).collect::<Vec<_>>());
    eprintln!(
        "killed after {} printed, cursor at {s}: {} read twice",
        first.len(),
        first.len() as u64 - s
    );
    assert_eq!(saved_seqnum(&db), Some(N + 300));
}

#[test]
fn a_hundred_thousand_entries_are_read_once() {
    let remote = needs_journal_remote!();
    let d = Dir::new();
    const N: u64 = 100_000;
    write_journal(remote, &d.path().join("j/x.journal"), &entries(0..N));
    let mut a = Agent::start(&conf(&d.path().join("j"), "    tag t.*\n"));
    a.wait_log(&format!("{END}{N} entries read)"), Duration::from_secs(120));
    let o = a.stop(Duration::from_secs(60));
    assert_eq!(o.code, Some(0));
    let mut by_unit = [Vec::new(), Vec::new()];
    for line in o.stdout.lines() {
        let unit = if line.contains("] t.u0.service: ") {
            0
        } else if line.contains("] t.u1.service: ") {
            1
        } else {
            panic!("unexpected line {line}")
        };
        by_unit[unit].extend(entry_numbers(line));
    }
    // Each unit's entries once, in the journal's order.
    assert_eq!(by_unit[0], (0..N).step_by(2).collect::<Vec<_>>());
    assert_eq!(by_unit[1], (1..N).step_by(2).collect::<Vec<_>>());
}

/// A config whose input cannot start (as Fluent Bit's init failing): exit 255, the
/// error logged; `--dry-run` accepts it, as Fluent Bit's (it checks the config alone).
fn fails_to_start(conf: &str) -> String {
    let d = Dir::new();
    d.file("fluent-bit.conf", conf);
    let dry = run(&["-c", "fluent-bit.conf", "--dry-run"], Some(d.path()));
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let o = run(&["-c", "fluent-bit.conf"], Some(d.path()));
    assert_eq!(o.code, Some(255), "{}", o.stderr);
    o.stderr
}

#[test]
fn what_cannot_start_is_refused_at_file_line() {
    let _ = needs_journal_remote!();
    let d = Dir::new();
    let missing = d.path().join("nope");
    let l = fails_to_start(&conf(&missing, ""));
    assert!(l.contains("fluent-bit.conf:6: given path"), "{l}");
    assert!(l.contains("is invalid"), "{l}");

    let f = d.file("file.journal", "x");
    let l = fails_to_start(&conf(&f, ""));
    assert!(
        l.contains("fluent-bit.conf:6: given path is not a directory"),
        "{l}"
    );

    let l = fails_to_start(&conf(d.path(), "    systemd_filter nofield\n"));
    assert!(
        l.contains("fluent-bit.conf:7: systemd_filter error: invalid input 'nofield'"),
        "{l}"
    );

    let db = d.file("bad.db", "agent-systemd-db 1\ns=1\nend 00000000\n");
    let l = fails_to_start(&conf(d.path(), &format!("    db {}\n", db.display())));
    assert!(l.contains("fluent-bit.conf:7: db "), "{l}");
    assert!(l.contains("is damaged (checksum mismatch)"), "{l}");
}

#[test]
fn bad_settings_are_refused_at_file_line() {
    let d = Dir::new();
    for extra in [
        "    systemd_filter_type xor\n",
        "    interval_sec 1\n",
        "    max_entries 0\n",
        "    db.sync sometimes\n",
    ] {
        let l = refused_config(&conf(d.path(), extra)).join("\n");
        assert!(l.contains("fluent-bit.conf:7"), "{extra}: {l}");
    }
}

#[test]
fn a_damaged_journal_file_is_named_and_the_others_read() {
    let remote = needs_journal_remote!();
    let d = Dir::new();
    let dir: PathBuf = d.path().join("j");
    write_journal(remote, &dir.join("good.journal"), &entries(0..3));
    // Random bytes, and a journal cut in its header.
    std::fs::write(dir.join("bad.journal"), b"not a journal at all").unwrap();
    let good = std::fs::read(dir.join("good.journal")).unwrap();
    std::fs::write(dir.join("cut.journal"), &good[..100]).unwrap();
    let mut a = Agent::start(&conf(&dir, ""));
    a.wait_log(&format!("{END}3 entries read)"), T);
    a.wait_until(T, "3 records", |o, _| entry_numbers(o).len() >= 3);
    let o = a.stop(T);
    assert_eq!(o.code, Some(0));
    assert_eq!(entry_numbers(&o.stdout), vec![0, 1, 2]);
    assert!(
        o.stderr
            .contains("bad.journal is not a readable journal file"),
        "{}",
        o.stderr
    );
}
