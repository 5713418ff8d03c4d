//! The `stdin` input against Fluent Bit 5.1.1: every case of tests/data/fluent-bit/stdin,
//! piped in, prints Fluent Bit's records byte for byte, and the end of input stops the
//! agent with status 0; a file works as well as a pipe; a record larger than
//! buffer_size is dropped without stopping the agent.

mod common;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn data() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/stdin"
    ))
}

/// Runs `agent -c conf` from the data dir with `input` written to a pipe on its stdin
/// (in `pieces` writes, `gap` apart); returns (exit code, stdout, stderr).
fn piped(conf: &str, input: &[u8], pieces: usize, gap: Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(["-c", conf])
        .current_dir(data())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let input = input.to_vec();
        std::thread::spawn(move || {
            for piece in input.chunks(input.len().div_ceil(pieces).max(1)) {
                stdin.write_all(piece).unwrap();
                std::thread::sleep(gap);
            }
        })
    };
    writer.join().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < end,
            "agent did not stop at the end of input"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

const CASES: [(&str, &str); 5] = [
    ("maps", "maps.json"),
    ("events", "events.json"),
    ("invalid", "invalid.json"),
    ("scalar", "scalar.json"),
    ("kv", "kv.log"),
];

#[test]
fn every_captured_case_prints_fluent_bits_records_and_ends_with_the_input() {
    for (case, input) in CASES {
        let input = std::fs::read(data().join(input)).unwrap();
        let want = std::fs::read_to_string(data().join(format!("{case}.expected"))).unwrap();
        let (code, out, err) = piped(&format!("{case}.conf"), &input, 1, Duration::ZERO);
        assert_eq!(code, Some(0), "{case}: {err}");
        assert_eq!(out, want, "{case}: {err}");
        assert!(
            err.contains("end of file (stdin closed by remote end)"),
            "{err}"
        );
    }
}

#[test]
fn values_split_across_reads_are_joined() {
    let input = std::fs::read(data().join("maps.json")).unwrap();
    let want = std::fs::read_to_string(data().join("maps.expected")).unwrap();
    let (code, out, err) = piped("maps.conf", &input, 7, Duration::from_millis(30));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, want);
    // With a parser, lines split across reads are parsed whole.
    let (_, out, err) = piped(
        "kv.conf",
        b"cpu=4\nmem=7\ncpu=9\n",
        4,
        Duration::from_millis(30),
    );
    assert_eq!(out, "{\"key\":\"cpu\",\"value\":4}\n{\"key\":\"mem\",\"value\":7}\n{\"key\":\"cpu\",\"value\":9}\n", "{err}");
}

#[test]
fn lines_that_do_not_match_the_parser_are_skipped_and_counted() {
    let (code, out, err) = piped(
        "kv.conf",
        b"cpu=4\nnope\nalso nope\nmem=7\n",
        1,
        Duration::ZERO,
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "{\"key\":\"cpu\",\"value\":4}\n{\"key\":\"mem\",\"value\":7}\n"
    );
    assert!(err.contains("parser 'kv' does not match 'nope'"), "{err}");
    assert!(err.contains("2 records were skipped"), "{err}");
}

#[test]
fn a_regular_file_is_read_too() {
    let d = Dir::new();
    let file = std::fs::File::open(data().join("maps.json")).unwrap();
    let o = Command::new(BIN)
        .args(["-c", "maps.conf"])
        .current_dir(data())
        .stdin(file)
        .output()
        .unwrap();
    drop(d);
    assert_eq!(o.status.code(), Some(0));
    let want = std::fs::read_to_string(data().join("maps.expected")).unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), want);
}

#[test]
fn a_record_larger_than_the_buffer_is_dropped_and_reading_goes_on() {
    let big = format!("{{\"big\":\"{}\"}}\n", "y".repeat(40_000));
    let input = format!("{{\"a\":1}}\n{big}{{\"b\":2}}\n");
    let (code, out, err) = piped("maps.conf", input.as_bytes(), 1, Duration::ZERO);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("a record is larger than buffer_size (16000 bytes)"),
        "{err}"
    );
    assert!(out.starts_with("{\"a\":1}\n"), "{out}");
    assert!(out.ends_with("{\"b\":2}\n"), "{out}");
    assert!(!out.contains("big"), "{out}");
}
