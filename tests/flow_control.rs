//! Flow control with the real binary: `limit` (rate per bucket), per-key isolation,
//! per-output limits, the lowest of several limits, `0`, and keyed `throttle`.

mod common;
use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

/// The complete JSON lines printed so far (the output is read while the agent writes:
/// a last line may be cut).
fn json_lines(out: &str) -> Vec<Value> {
    out.split_inclusive('\n')
        .filter(|l| l.starts_with('{') && l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn limit_passes_the_configured_rate_within_two_percent() {
    // 2000 records/s in, 500/s allowed: count what passes in the 10 s after the first second
    // (the first second also holds the initial burst).
    let mut a = Agent::start(
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    rate 2000\n    samples 24000\n\
         [FILTER]\n    name limit\n    match *\n    max_records_per_second 500\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n",
    );
    a.wait_until(T, "12 s of records", |o, _| {
        let recs = json_lines(o);
        match (recs.first(), recs.last()) {
            (Some(f), Some(l)) => l["date"].as_f64().unwrap() - f["date"].as_f64().unwrap() > 11.2,
            _ => false,
        }
    });
    let recs = json_lines(&a.stop(T).stdout);
    let t0 = recs[0]["date"].as_f64().unwrap();
    let in_window = recs
        .iter()
        .filter(|r| (t0 + 1.0..t0 + 11.0).contains(&r["date"].as_f64().unwrap()))
        .count();
    assert!(
        (4900..=5100).contains(&in_window),
        "500/s over 10 s, got {in_window}"
    );
}

#[test]
fn per_key_limits_isolate_a_noisy_key_from_a_quiet_one() {
    let mut a = Agent::start(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name dummy\n    tag noisy\n    rate 1000\n    samples 2000\n    dummy {\"app\":\"noisy\"}\n\
         [INPUT]\n    name dummy\n    tag quiet\n    rate 10\n    samples 20\n    dummy {\"app\":\"quiet\"}\n\
         [FILTER]\n    name limit\n    match *\n    per $app\n    max_records_per_second 50\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
    );
    a.wait_until(T, "all 20 quiet records", |o, _| {
        o.matches("quiet").count() >= 20
    });
    let o = a.stop(T);
    let noisy = o.stdout.matches("\"noisy\"").count();
    assert_eq!(
        o.stdout.matches("\"quiet\"").count(),
        20,
        "the quiet key keeps everything"
    );
    assert!(
        (50..=50 + 50 * 3).contains(&noisy),
        "noisy capped near 50/s: {noisy}"
    );
}

#[test]
fn an_output_limit_caps_one_destination_only() {
    let mut a = Agent::start(
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    rate 500\n    samples 500\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n    limit.max_records_per_second 10\n\
         [OUTPUT]\n    name stdout\n    match *\n",
    );
    a.wait_until(T, "the unlimited output gets all 500", |o, _| {
        o.lines().filter(|l| l.starts_with('[')).count() >= 500
    });
    let o = a.stop(T);
    let limited = o.stdout.lines().filter(|l| l.starts_with('{')).count();
    assert_eq!(o.stdout.lines().filter(|l| l.starts_with('[')).count(), 500);
    assert!(
        (10..=10 + 10 * 3).contains(&limited),
        "10/s with a burst of 10 over ~1-2 s: {limited}"
    );
}

#[test]
fn the_lowest_of_several_limits_wins_and_zero_forwards_nothing() {
    let mut a = Agent::start(
        "[SERVICE]\n    flush 0.2\n    log_level debug\n[INPUT]\n    name dummy\n    tag a\n    rate 1000\n    samples 1000\n    dummy {\"app\":\"x\"}\n\
         [INPUT]\n    name dummy\n    tag b\n    rate 1000\n    samples 1000\n\
         [FILTER]\n    name limit\n    match a\n    max_records_per_second 100\n\
         [FILTER]\n    name limit\n    match a\n    per $app\n    max_records_per_second 20\n\
         [FILTER]\n    name limit\n    match b\n    max_records_per_second 0\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
    );
    a.wait_log("[input:dummy:dummy.0] all samples sent", T);
    a.wait_log("[input:dummy:dummy.1] all samples sent", T);
    let o = a.stop(T);
    let passed = o.stdout.lines().count();
    assert!(
        (20..=20 + 20 * 2).contains(&passed),
        "the 20/s limit wins over 100/s: {passed}"
    );
    assert!(
        o.stdout.lines().all(|l| l == "{\"app\":\"x\"}"),
        "limit 0 lets nothing of tag b through"
    );
    assert!(
        o.stderr.contains("records dropped over the limit"),
        "{}",
        o.stderr
    );
}

#[test]
fn keyed_throttle_with_sub_second_interval() {
    // Fluent Bit's window (rate 2, window 2, 500ms panes) per key: each key passes the
    // same amount, whatever the other key sends.
    let mut a = Agent::start(
        "[SERVICE]\n    flush 0.2\n    log_level debug\n\
         [INPUT]\n    name dummy\n    rate 200\n    samples 200\n    dummy {\"k\":\"a\"}\n\
         [INPUT]\n    name dummy\n    rate 20\n    samples 20\n    dummy {\"k\":\"b\"}\n\
         [FILTER]\n    name throttle\n    match *\n    rate 2\n    window 2\n    interval 500ms\n    key k\n    print_status on\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
    );
    a.wait_log("[input:dummy:dummy.0] all samples sent", T);
    a.wait_log("[input:dummy:dummy.1] all samples sent", T);
    let o = a.stop(T);
    let (ka, kb) = (
        o.stdout.matches("\"a\"").count(),
        o.stdout.matches("\"b\"").count(),
    );
    // ~1 s of traffic: at most rate x window per 2 panes, plus the first window.
    assert!((4..=16).contains(&ka), "key a: {ka}");
    assert!((4..=16).contains(&kb), "key b is not starved by a: {kb}");
    assert!(
        o.stderr
            .contains("limit is 2.00 per 500ms with window size of 2, current rate is:"),
        "{}",
        o.stderr
    );
    // Fluent Bit's ticker logs a status line at start, before any record counts.
    let first = o
        .stderr
        .lines()
        .find(|l| l.contains("current rate is:"))
        .unwrap();
    assert!(
        first.ends_with("current rate is: 0 per interval"),
        "{first}"
    );
}

/// Watches `path` for opens (IN_OPEN) from any process.
fn open_watch(path: &std::path::Path) -> inotify::Inotify {
    let i = inotify::Inotify::init().unwrap();
    i.watches().add(path, inotify::WatchMask::OPEN).unwrap();
    i
}

fn opened(i: &mut inotify::Inotify) -> bool {
    let mut buf = [0u8; 4096];
    match i.read_events(&mut buf) {
        Ok(mut events) => events.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn zero_limits_mean_tail_files_are_never_opened() {
    let dir = Dir::new();
    let quiet = dir.file("logs/app_team-a_web.log", "a\nb\n");
    let noisy = dir.file("logs/app_team-b_batch.log", "x\ny\n");
    let mut w_noisy = open_watch(&noisy);
    let mut w_quiet = open_watch(&quiet);
    // A limit filter of 0 on team-b's tag, and limit_per_file 0 on a second input.
    let other = dir.file("other/skip.log", "z\n");
    let mut w_other = open_watch(&other);
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n    log_level debug\n\
         [INPUT]\n    name tail\n    tag logs.*\n    path {d}/logs/*.log\n    read_from_head on\n\
         [INPUT]\n    name tail\n    tag other\n    path {d}/other/*.log\n    read_from_head on\n    limit_per_file 0\n\
         [FILTER]\n    name limit\n    match_regex logs\\..*team-b\n    max_records_per_second 0\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
        d = dir.path().display()
    );
    let mut a = Agent::start(&conf);
    a.wait_lines(2, T);
    a.wait_log("is not read: a limit of 0 applies to it", T);
    let o = a.stop(T);
    assert_eq!(o.stdout, "{\"log\":\"a\"}\n{\"log\":\"b\"}\n");
    assert!(opened(&mut w_quiet), "the other file is read");
    assert!(
        !opened(&mut w_noisy),
        "a file under a limit of 0 is never opened"
    );
    assert!(!opened(&mut w_other), "limit_per_file 0: never opened");
}

#[test]
fn limit_per_file_caps_each_file_on_its_own() {
    let dir = Dir::new();
    let many: String = (0..200).map(|i| format!("line {i}\n")).collect();
    dir.file("logs/a.log", &many);
    dir.file("logs/b.log", &many);
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name tail\n    path {}/logs/*.log\n    path_key file\n    read_from_head on\n    limit_per_file 20\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
        dir.path().display()
    ));
    a.wait_until(T, "both files' bursts", |o, _| {
        o.contains("a.log") && o.contains("b.log")
    });
    std::thread::sleep(Duration::from_millis(500));
    let o = a.stop(T);
    let (na, nb) = (
        o.stdout.matches("a.log").count(),
        o.stdout.matches("b.log").count(),
    );
    // Each file: a burst of 20 (one second's worth) from its own bucket.
    assert_eq!((na, nb), (20, 20), "{}", o.stdout);
}

#[test]
fn the_ignore_example_forwards_no_debug_record() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/limit-ignore.conf");
    let dir = Dir::new();
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap(), "-f", "0.2"], None);
    a.wait_lines(3, T);
    let o = a.stop(T);
    assert!(
        o.stdout.lines().all(|l| l.contains("\"level\":\"info\"")),
        "{}",
        o.stdout
    );
}

/// Fluent Bit 5's input rate gate: above `rate_gate.max_records` per `rate_window` the
/// input pauses (nothing is made up for afterwards) and resumes below the resume
/// ratio, logged as Fluent Bit logs it. `routable false` discards an input's records.
#[test]
fn rate_gate_pauses_an_input_over_its_rate() {
    let mut a = Agent::start(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name dummy\n    rate 200\n    rate_gate on\n    rate_gate.max_records 20\n    rate_window 1s\n    tag gated\n\
         [INPUT]\n    name dummy\n    rate 50\n    routable false\n    tag discarded\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n",
    );
    a.wait_log("[input] dummy.0 resume (rate gate)", T);
    std::thread::sleep(Duration::from_millis(1500));
    let o = a.stop(T);
    let n = o.stdout.lines().count();
    // ~2.5 s at 20/s (plus the batch that crossed the limit); without the gate ~500.
    assert!((20..=120).contains(&n), "{n} records");
    assert!(
        o.stderr
            .contains("[ warn] [input] dummy.0 paused (rate gate limit exceeded)"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("dummy.1 paused"), "{}", o.stderr);
}
