//! Graceful shutdown: SIGTERM/SIGINT flush what is buffered, nothing is dropped silently,
//! and the grace period bounds the wait with a report of what stayed undelivered.

mod common;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn sigterm_flushes_everything_buffered() {
    // 20,000 records produced within ~0.2 s; the flush timer (30 s) never fires, so
    // every record printed was flushed by the shutdown path.
    let mut a = Agent::start(
        "[SERVICE]\n    flush 30\n    log_level debug\n[INPUT]\n    name random\n    samples 20000\n    interval_sec 0\n    interval_nsec 10000\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n",
    );
    a.wait_log("[input:random:random.0] all samples sent", T);
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(
        o.stdout.lines().count(),
        20000,
        "records produced vs printed"
    );
    let log = log_lines(&o.stderr);
    for want in [
        "[ warn] [engine] service will shutdown in max 5 seconds",
        "[ info] [engine] pausing all inputs..",
        "[ info] [input] pausing random.0",
        "[ info] [engine] service has stopped (0 pending tasks)",
    ] {
        assert!(
            log.iter().any(|l| l == want),
            "missing '{want}' in:\n{}",
            o.stderr
        );
    }
    assert!(
        o.stderr.contains("] [engine] caught signal (SIGTERM)\n"),
        "{}",
        o.stderr
    );
}

#[test]
fn sigint_mid_stream_loses_nothing_accepted() {
    // An endless dummy at 10k/s; stop it while it runs: every line printed must be whole,
    // and the log must say nothing is pending.
    let mut a = Agent::start(
        "[SERVICE]\n    flush 0.1\n[INPUT]\n    name dummy\n    rate 10000\n    dummy {\"seq\":1}\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
    );
    a.wait_lines(1000, T);
    a.signal(libc::SIGINT);
    let code = a.wait(T);
    let out = a.stdout();
    assert_eq!(code, Some(0));
    assert!(out.ends_with('\n'));
    assert!(out.lines().all(|l| l == "{\"seq\":1}"));
    assert!(
        a.stderr().contains("service has stopped (0 pending tasks)"),
        "{}",
        a.stderr()
    );
}

#[test]
fn grace_period_bounds_shutdown_and_reports_undelivered() {
    // stdout is a pipe nobody reads: the output blocks once the pipe is full, so
    // records stay undelivered; shutdown must end after `grace` and say so.
    use std::process::{Command, Stdio};
    let dir = Dir::new();
    let conf = dir.file(
        "c.conf",
        "[SERVICE]\n    flush 0.1\n    grace 1\n[INPUT]\n    name dummy\n    rate 20000\n    dummy {\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n",
    );
    let err = dir.path().join("err");
    let mut child = Command::new(BIN)
        .args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Wait until records are flowing (and the pipe has filled).
    let end = std::time::Instant::now() + T;
    while !std::fs::read_to_string(&err)
        .unwrap()
        .contains("worker #0 started")
    {
        assert!(std::time::Instant::now() < end);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "grace 1 must end the wait"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let log = std::fs::read_to_string(&err).unwrap();
    assert!(
        elapsed >= Duration::from_millis(900),
        "left before grace: {elapsed:?}"
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        log.contains("records not delivered: the grace period ended first"),
        "{log}"
    );
    drop(child.stdout.take());
}
