//! Hot reload (`hot_reload on`): SIGHUP or POST /api/v2/reload with a valid config swaps
//! the pipeline without losing buffered records; an invalid config is rejected and the
//! running one keeps going.

mod common;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn conf(v: u32, extra: &str) -> String {
    format!(
        "[SERVICE]\n    flush 30\n    hot_reload on\n    log_level debug\n{extra}\
         [INPUT]\n    name dummy\n    samples 5\n    rate 50\n    dummy {{\"v\":{v}}}\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
    )
}

#[test]
fn sighup_swaps_the_config_and_keeps_buffered_records() {
    let dir = Dir::new();
    let path = dir.file("c.conf", &conf(1, ""));
    let mut a = Agent::spawn_in(&dir, &["-c", path.to_str().unwrap()], None);
    // The 5 records sit in the buffer: flush is 30 s.
    a.wait_log("all samples sent", T);
    assert_eq!(a.stdout(), "");
    // An invalid config is refused; the running pipeline stays.
    std::fs::write(&path, "[INPUT]\n    name dummy\n    sample 5\n").unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log(
        "[reload] the new configuration is invalid: the running one stays",
        T,
    );
    assert!(
        a.stderr()
            .contains("unknown configuration property 'sample'"),
        "{}",
        a.stderr()
    );
    assert_eq!(a.stdout(), "", "nothing was stopped or flushed");
    // A valid one replaces it: the old pipeline delivers its buffer first.
    std::fs::write(&path, conf(2, "")).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log("[reload] the new configuration is running", T);
    assert_eq!(
        a.stdout(),
        "{\"v\":1}\n".repeat(5),
        "buffered records of the old config delivered"
    );
    a.wait_until(T, "the new input's samples", |_, e| {
        e.matches("all samples sent").count() >= 2
    });
    let o = a.stop(T);
    assert_eq!(o.code, Some(0));
    assert_eq!(
        o.stdout,
        format!("{}{}", "{\"v\":1}\n".repeat(5), "{\"v\":2}\n".repeat(5))
    );
}

#[test]
fn reload_over_http() {
    let dir = Dir::new();
    let port = free_port();
    let http = format!("    http_server on\n    http_listen 127.0.0.1\n    http_port {port}\n");
    let path = dir.file("c.conf", &conf(1, &http));
    let mut a = Agent::spawn_in(&dir, &["-c", path.to_str().unwrap()], None);
    a.wait_log("all samples sent", T);
    assert_eq!(
        http_get(port, "/api/v2/reload").unwrap().1,
        "{\"hot_reload_count\":0}"
    );
    std::fs::write(&path, conf(2, &http)).unwrap();
    let (code, body) = http_request(port, "POST", "/api/v2/reload").unwrap();
    assert_eq!(
        (code, body.as_str()),
        (200, "{\"reload\":\"done\",\"status\":0}")
    );
    a.wait_log("[reload] the new configuration is running", T);
    assert_eq!(
        http_get(port, "/api/v2/reload").unwrap().1,
        "{\"hot_reload_count\":1}"
    );
    a.stop(T);
}

#[test]
fn sighup_without_hot_reload_only_warns() {
    let mut a = Agent::start("[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n[OUTPUT]\n    name stdout\n    match *\n");
    a.wait_lines(1, T);
    a.signal(libc::SIGHUP);
    a.wait_log("[reload] hot reloading is not enabled", T);
    let lines = a.stdout().lines().count();
    a.wait_lines(lines + 1, T); // still running
    assert_eq!(a.stop(T).code, Some(0));
}

/// A reloaded config that cannot start (its port is another process's) never stops
/// the agent: the previous configuration runs again and still takes records (issue 21
/// item 9: the agent exited 255).
#[test]
fn a_reload_that_cannot_start_rolls_back() {
    let dir = Dir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let good = free_port();
    let forward = |port: u16| {
        format!(
            "[SERVICE]\n    flush 0.2\n    hot_reload on\n\
             [INPUT]\n    name forward\n    listen 127.0.0.1\n    port {port}\n\
             [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
        )
    };
    let path = dir.file("c.conf", &forward(good));
    let mut a = Agent::spawn_in(&dir, &["-c", path.to_str().unwrap()], None);
    a.wait_log("listening on", T);
    std::fs::write(&path, forward(busy)).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log(
        "[reload] the new configuration failed to start: the previous one runs again",
        T,
    );
    a.wait_until(T, "the previous listener back", |_, e| {
        e.matches("listening on").count() >= 2
    });
    // Still serving on the previous port: a Forward message arrives.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", good)).unwrap();
    use std::io::Write;
    s.write_all(&[0x93, 0xa1, b't', 0x01, 0x81, 0xa1, b'k', 0xa1, b'v'])
        .unwrap();
    a.wait_until(T, "the record", |out, _| out.contains("{\"k\":\"v\"}"));
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    drop(taken);
}

/// This host's first non-loopback IPv4 address (the agent sees a client connecting to
/// it as remote), or `None`.
fn non_loopback_ip() -> Option<std::net::Ipv4Addr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse::<std::net::Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback())
}

/// `POST /api/v2/reload` to `ip:port` with extra header lines: (status, body).
fn post_reload(ip: std::net::Ipv4Addr, port: u16, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "POST /api/v2/reload HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n{headers}\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

/// Who may reload over HTTP (issue 21 item 3): without `hot_reload.token`, loopback
/// clients only (anyone who reached `http_listen 0.0.0.0` could reload before); with
/// it, whoever sends `Authorization: Bearer TOKEN`, and nobody without it. Refusals are
/// 403, logged and counted, and reload nothing.
#[test]
fn reload_over_http_is_restricted_to_loopback_or_the_token() {
    let Some(remote) = non_loopback_ip() else {
        eprintln!("SKIPPED: this host has no non-loopback IPv4 address");
        return;
    };
    let local = std::net::Ipv4Addr::LOCALHOST;
    let port = free_port();
    let http = format!("    http_server on\n    http_listen 0.0.0.0\n    http_port {port}\n");
    let dir = Dir::new();
    let path = dir.file("c.conf", &conf(1, &http));
    let mut a = Agent::spawn_in(&dir, &["-c", path.to_str().unwrap()], None);
    a.wait_log("all samples sent", T);
    let (code, body) = post_reload(remote, port, "");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("loopback only"), "{body}");
    a.wait_log("POST /api/v2/reload refused", T);
    assert_eq!(
        http_get(port, "/api/v2/reload").unwrap().1,
        "{\"hot_reload_count\":0}"
    );
    let (_, metrics) = http_get(port, "/api/v2/metrics/prometheus").unwrap();
    assert!(
        metrics.contains("\nagent_http_refused_reloads_total 1\n"),
        "{metrics}"
    );
    assert_eq!(post_reload(local, port, "").0, 200);
    a.wait_log("[reload] the new configuration is running", T);
    a.stop(T);

    // With a token: required from everyone, loopback included.
    let token = "    hot_reload.token s3cret-token\n";
    let path = dir.file("t.conf", &conf(1, &format!("{http}{token}")));
    let mut a = Agent::spawn_in(&dir, &["-c", path.to_str().unwrap()], None);
    a.wait_log("all samples sent", T);
    for (ip, header) in [
        (local, ""),
        (remote, "Authorization: Bearer wrong-token!\r\n"),
        (remote, "Authorization: Basic s3cret-token\r\n"),
    ] {
        let (code, body) = post_reload(ip, port, header);
        assert_eq!(code, 403, "{ip} {header}: {body}");
        assert!(body.contains("hot_reload.token"), "{body}");
    }
    let ok = post_reload(remote, port, "Authorization: Bearer s3cret-token\r\n");
    assert_eq!(ok, (200, "{\"reload\":\"done\",\"status\":0}".to_string()));
    a.wait_log("[reload] the new configuration is running", T);
    a.stop(T);
}

#[test]
fn an_empty_reload_token_is_refused_at_its_line() {
    let d = Dir::new();
    d.file(
        "c.yaml",
        "service:\n  hot_reload: on\n  hot_reload.token: \"   \"\n\
         pipeline:\n  inputs:\n    - name: dummy\n  outputs:\n    - name: stdout\n      match: '*'\n",
    );
    let o = run(&["-c", "c.yaml"], Some(d.path()));
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("c.yaml:3") && o.stderr.contains("hot_reload.token"),
        "{}",
        o.stderr
    );
}
