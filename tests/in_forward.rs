//! `forward` input, and agent → agent over the Forward protocol, on loopback: acks, TLS,
//! shared key and users, a receiver killed mid-stream, a third-party client (Python's
//! `fluent-logger`), and hostile bytes.
//! Facts: ../shared/spec/fluent-bit.md §5, §6; fluent-bit-observed.md (forward out → in).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::*;

const T: Duration = Duration::from_secs(30);

fn receiver(port: u16, extra: &str) -> Agent {
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n\
         [INPUT]\n    name forward\n    listen 127.0.0.1\n    port {port}\n{extra}\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ));
    a.wait_log("listening on", T);
    a
}

/// A sender of `n` random records (unique `rand_value`s), 1 ms apart.
fn sender(port: u16, n: u32, extra: &str) -> Agent {
    Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 10\n    scheduler.base 1\n    scheduler.cap 1\n\
         [INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 1000000\n\
         [OUTPUT]\n    name forward\n    match *\n    host 127.0.0.1\n    port {port}\n\
         \x20   retry_limit no_limits\n    net.io_timeout 5s\n{extra}"
    ))
}

/// `rand_value` → how many times it arrived, from json_lines output.
fn values(stdout: &str, into: &mut HashMap<u64, u32>) {
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{line}"));
        let r = v["rand_value"].as_u64().unwrap_or_else(|| panic!("{line}"));
        *into.entry(r).or_default() += 1;
    }
}

fn wait_unique(a: &mut Agent, n: usize) -> HashMap<u64, u32> {
    let deadline = Instant::now() + T;
    loop {
        let mut seen = HashMap::new();
        values(&a.stdout(), &mut seen);
        if seen.len() >= n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} records arrived\n{}",
            seen.len(),
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn agent_to_agent_with_acks_delivers_every_record_once() {
    let mut rx = receiver(0, "");
    let port = bound_port(&rx);
    let tx = sender(port, 500, "    require_ack_response on\n");
    let seen = wait_unique(&mut rx, 500);
    assert!(
        seen.values().all(|&c| c == 1),
        "duplicates without a failure"
    );
    let o = tx.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(!o.stderr.contains("retry in"), "{}", o.stderr);
    rx.stop(T);
}

#[test]
fn every_mode_and_gzip_arrive_intact() {
    for extra in [
        "    compress gzip\n",
        "    time_as_integer on\n",
        "    send_options on\n",
        // Message mode; records without the key keep the chunk's tag.
        "    tag $nothing\n",
    ] {
        let mut rx = receiver(0, "");
        let port = bound_port(&rx);
        let tx = sender(port, 50, extra);
        let seen = wait_unique(&mut rx, 50);
        assert_eq!(seen.len(), 50, "{extra}");
        tx.stop(T);
        let o = rx.stop(T);
        assert!(
            !o.stderr.contains("closing connection"),
            "{extra}: {}",
            o.stderr
        );
    }
}

#[test]
fn killing_the_receiver_mid_stream_loses_nothing() {
    let mut rx = receiver(0, "");
    let port = bound_port(&rx);
    let mut tx = sender(port, 3000, "    require_ack_response on\n");
    rx.wait_until(T, "some records", |out, _| out.lines().count() >= 300);
    rx.signal(libc::SIGKILL);
    rx.wait(T);
    let mut seen = HashMap::new();
    values(&rx.stdout(), &mut seen);
    let before = seen.len();
    // The sender notices (a lost ack or a refused connection) and keeps its chunks.
    tx.wait_log("failed to flush chunk for forward.0", T);
    // Same port: the sender retries its unacked chunks there.
    let rx2 = receiver(port, "");
    let deadline = Instant::now() + T;
    loop {
        let mut all = seen.clone();
        values(&rx2.stdout(), &mut all);
        if all.len() == 3000 {
            seen = all;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 3000 after the restart\n{}",
            all.len(),
            tx.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(before < 3000, "the kill came after everything was sent");
    // Duplicates only for chunks that were in flight at the kill: a few flushes' worth.
    let dups: u32 = seen.values().map(|c| c - 1).sum();
    assert!(dups < 1000, "{dups} duplicates");
    tx.stop(T);
    rx2.stop(T);
}

#[test]
fn tls_shared_key_and_users_with_acks() {
    let pki = Pki::new();
    let p = |n: &str| pki.path(n);
    let mut rx = receiver(
        0,
        &format!(
            "    tls on\n    tls.crt_file {}\n    tls.key_file {}\n    shared_key s3cret\n\
             \x20   self_hostname aggregator\n    security.users alice pw1\n",
            p("server.pem"),
            p("server.key")
        ),
    );
    let port = bound_port(&rx);
    let tls = format!(
        "    tls on\n    tls.ca_file {}\n    tls.vhost localhost\n    require_ack_response on\n\
         \x20   shared_key s3cret\n    self_hostname node-1\n",
        p("ca.pem")
    );
    let tx = sender(
        port,
        200,
        &format!("{tls}    username alice\n    password pw1\n"),
    );
    wait_unique(&mut rx, 200);
    tx.stop(T);
    // A wrong key is refused at the handshake: a PONG saying why, one log line each side.
    let mut bad = sender(
        port,
        5,
        &format!(
            "{}    shared_key wrong\n",
            tls.replace("    shared_key s3cret\n", "")
        ),
    );
    bad.wait_log("authentication failed: shared_key mismatch", T);
    rx.wait_log("authentication of node-1 failed: shared_key mismatch", T);
    bad.stop(T);
    let o = rx.stop(T);
    let mut seen = HashMap::new();
    values(&o.stdout, &mut seen);
    assert_eq!(seen.len(), 200, "records from the refused sender arrived");
}

#[test]
fn python_fluent_logger_client_records_all_arrive() {
    let mut rx = receiver(0, "");
    let port = bound_port(&rx);
    let script = format!(
        r#"
from fluent import sender
s = sender.FluentSender('app', host='127.0.0.1', port={port})
for i in range(300):
    assert s.emit('ev', {{'i': i, 'msg': 'hello'}}), s.last_error
s.close()
s = sender.FluentSender('app', host='127.0.0.1', port={port}, nanosecond_precision=True)
for i in range(300, 400):
    assert s.emit_with_time('ev', 1700000000.25, {{'i': i}}), s.last_error
s.close()
"#
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rx.wait_lines(400, T);
    let o = rx.stop(T);
    let mut is: Vec<u64> = Vec::new();
    for line in o.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        is.push(v["i"].as_u64().unwrap());
        if v["i"].as_u64().unwrap() >= 300 {
            assert_eq!(v["date"].as_f64().unwrap(), 1700000000.25, "{line}");
        }
    }
    is.sort();
    assert_eq!(is, (0..400).collect::<Vec<_>>());
    assert!(!o.stderr.contains("closing connection"), "{}", o.stderr);
}

/// Fluent Bit's order: `tag_prefix` + the frame's tag, else the input's `tag`, else the
/// frame's tag.
#[test]
fn tag_prefix_then_input_tag_then_frame_tag() {
    for (props, want) in [
        ("    tag_prefix agg.\n    tag fixed\n", "agg.node"),
        ("    tag fixed\n", "fixed"),
        ("", "node"),
    ] {
        let mut rx = Agent::start(&format!(
            "[SERVICE]\n    flush 0.2\n[INPUT]\n    name forward\n    listen 127.0.0.1\n    port 0\n\
             {props}[OUTPUT]\n    name stdout\n    match *\n"
        ));
        rx.wait_log("listening on", T);
        let port = bound_port(&rx);
        // ["node", 1700000000, {"a": 1}] written by hand (Message mode).
        let mut frame = vec![0x93, 0xa4];
        frame.extend_from_slice(b"node");
        frame.push(0xce);
        frame.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        frame.extend_from_slice(&[0x81, 0xa1, b'a', 0x01]);
        TcpStream::connect(("127.0.0.1", port))
            .unwrap()
            .write_all(&frame)
            .unwrap();
        rx.wait_lines(1, T);
        let o = rx.stop(T);
        assert_eq!(
            o.stdout,
            format!("[0] {want}: [[1700000000.000000000, {{}}], {{\"a\"=>1}}]\n")
        );
    }
}

#[test]
fn unix_socket_with_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let path = dir.path().join("fwd.sock");
    let mut rx = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name forward\n    unix_path {}\n    unix_perm 0600\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
        path.display()
    ));
    rx.wait_log("listening on", T);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // ["u", [[1, {"via": "unix"}]]] (Forward mode).
    let mut frame = vec![0x92, 0xa1, b'u', 0x91, 0x92, 0x01, 0x81, 0xa3];
    frame.extend_from_slice(b"via");
    frame.push(0xa4);
    frame.extend_from_slice(b"unix");
    std::os::unix::net::UnixStream::connect(&path)
        .unwrap()
        .write_all(&frame)
        .unwrap();
    rx.wait_lines(1, T);
    let o = rx.stop(T);
    assert_eq!(o.stdout, "{\"via\":\"unix\"}\n");
    assert!(!path.exists(), "the socket file is removed at exit");
}

/// A hot reload rebinds the same port: the old listener is closed before the new
/// configuration starts, and a client is served by each.
#[test]
fn hot_reload_rebinds_the_port() {
    let dir = Dir::new();
    let conf = |v: u32, port: u16| {
        format!(
            "[SERVICE]\n    flush 0.2\n    hot_reload on\n\
             [INPUT]\n    name forward\n    listen 127.0.0.1\n    port {port}\n    tag v{v}\n\
             [OUTPUT]\n    name stdout\n    match *\n"
        )
    };
    let path = dir.file("c.conf", &conf(1, 0));
    let mut a = Agent::spawn_in(&dir, &["-c", path.to_str().unwrap()], None);
    a.wait_log("listening on", T);
    let port = bound_port(&a);
    // ["t", 1, {}] (Message mode).
    let frame = [0x93, 0xa1, b't', 0x01, 0x80];
    TcpStream::connect(("127.0.0.1", port))
        .unwrap()
        .write_all(&frame)
        .unwrap();
    a.wait_lines(1, T);
    // The same port, still held by the running configuration when the new one is built.
    std::fs::write(&path, conf(2, port)).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log("[reload] the new configuration is running", T);
    a.wait_until(T, "the second listener", |_, e| {
        e.matches(&format!("listening on 127.0.0.1:{port}")).count() == 2
    });
    TcpStream::connect(("127.0.0.1", port))
        .unwrap()
        .write_all(&frame)
        .unwrap();
    a.wait_lines(2, T);
    let o = a.stop(T);
    assert_eq!(
        o.stdout,
        "[0] v1: [[1.000000000, {}], {}]\n[0] v2: [[1.000000000, {}], {}]\n"
    );
}

/// Hostile clients: each is closed with one log line and counted, and a good client is
/// served afterwards.
#[test]
fn garbage_truncated_huge_and_silent_clients_are_closed() {
    let http = free_port();
    let mut rx = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name forward\n    listen 127.0.0.1\n    port 0\n\
         \x20   buffer_chunk_size 1k\n    buffer_max_size 4k\n    net.io_timeout 1s\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ));
    rx.wait_log("listening on", T);
    let port = bound_port(&rx);
    let send = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(bytes).unwrap();
        s
    };
    // 0xc1 is never msgpack.
    let mut garbage = send(&[0xc1, 0x00, 0x01]);
    let mut b = [0u8; 1];
    assert_eq!(garbage.read(&mut b).unwrap_or(0), 0, "closed");
    rx.wait_log("invalid msgpack: byte 0xc1 is not msgpack", T);
    // A str32 that declares 4 GB, then more than buffer_max_size of it.
    let mut huge = vec![0x92, 0xa1, b't', 0xdb, 0xff, 0xff, 0xff, 0xff];
    huge.extend(std::iter::repeat_n(b'x', 5000));
    let _h = send(&huge);
    rx.wait_log("frame larger than buffer_max_size (4000 bytes)", T);
    // Half a frame, then the client goes away.
    drop(send(&[0x92, 0xa1, b't', 0x91]));
    rx.wait_log("closed in the middle of a frame", T);
    // A client that says nothing: net.io_timeout.
    let _silent = send(&[]);
    rx.wait_log("no data for 1 seconds (net.io_timeout)", T);
    // Random bytes, bounded: 200 connections of up to 2 KB each.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..200 {
        let len = 1 + (i * 37) % 2048;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(&bytes);
    }
    // Still serving: a good frame arrives.
    let mut frame = vec![0x93, 0xa2, b'o', b'k', 0x01, 0x81, 0xa2, b'o', b'k'];
    frame.push(0xc3);
    send(&frame);
    rx.wait_until(T, "the good record", |out, _| out.contains("\"ok\":true"));
    let (_, metrics) = http_get(http, "/api/v2/metrics/prometheus").unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("agent_input_rejected_connections_total{name=\"forward.0\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 4, "{line}");
    let o = rx.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(
        log_lines(&o.stderr)
            .iter()
            .filter(|l| l.contains("frame larger than buffer_max_size"))
            .count(),
        1
    );
}

/// Reads one whole msgpack message `parse` accepts (the server writes each handshake
/// message at once, but TCP may split it).
fn read_message<R>(s: &mut TcpStream, parse: impl Fn(&[u8]) -> Option<R>) -> R {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let deadline = Instant::now() + T;
    loop {
        if let Some(r) = parse(&buf) {
            return r;
        }
        assert!(Instant::now() < deadline, "no whole message: {buf:?}");
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed before a whole message: {buf:?}");
        buf.extend_from_slice(&b[..n]);
    }
}

/// A client without the key learns nothing it could test a guess against: the refusal
/// carries neither the server's hostname nor a digest made with the real key (Fluent
/// Bit's PONG), and the connection is closed. Before, the PONG held
/// sha512(salt + hostname + nonce + shared_key), which a dictionary recovers offline.
#[test]
fn refused_ping_gets_no_digest_of_the_key() {
    use agent::forward::auth::{read_helo, Ping, Pong};
    let rx = receiver(
        0,
        "    shared_key s3cret\n    self_hostname aggregator\n    security.users alice pw1\n",
    );
    let port = bound_port(&rx);
    for (key, user, password, reason) in [
        ("guess", "alice", "pw1", "shared_key mismatch"),
        ("s3cret", "alice", "guess", "username/password mismatch"),
        ("s3cret", "mallory", "pw1", "username/password mismatch"),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let helo = read_message(&mut s, |b| read_helo(b).ok());
        let ping = Ping::new(&helo, "prober", key, Some((user, password)));
        let mut f = Vec::new();
        ping.write(&mut f);
        s.write_all(&f).unwrap();
        let pong = read_message(&mut s, |b| Pong::read(b).ok());
        assert_eq!(
            (
                pong.ok,
                pong.reason.as_str(),
                pong.hostname.as_str(),
                pong.digest.as_str()
            ),
            (false, reason, "", ""),
            "{key} {user} {password}"
        );
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap_or(0), 0, "closed after the refusal");
    }
    // The right key and user still get the server's proof of the key.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let helo = read_message(&mut s, |b| read_helo(b).ok());
    let ping = Ping::new(&helo, "node-1", "s3cret", Some(("alice", "pw1")));
    let mut f = Vec::new();
    ping.write(&mut f);
    s.write_all(&f).unwrap();
    let pong = read_message(&mut s, |b| Pong::read(b).ok());
    assert_eq!(pong.hostname, "aggregator");
    assert_eq!(pong.verify(&ping, &helo, "s3cret"), Ok(()));
    rx.stop(T);
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// A connection holds memory for what it sent, not a whole buffer_chunk_size each
/// (issue 21 item 4): 400 clients sending one byte took 400 MB (1,000 took 1 GB).
#[test]
fn one_byte_connections_hold_little_memory() {
    let rx = receiver(0, "");
    let port = bound_port(&rx);
    let before = rss_mib(rx.pid());
    let conns: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&[0x92]).unwrap();
            s
        })
        .collect();
    // Every connection accepted (the agent holds a descriptor for each), then its
    // memory sampled for a while: the old code reserved on the connection's first read.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", rx.pid()))
            .unwrap()
            .count()
    };
    let deadline = Instant::now() + T;
    while fds() < conns.len() {
        assert!(Instant::now() < deadline, "{} descriptors", fds());
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        let grew = rss_mib(rx.pid()).saturating_sub(before);
        assert!(
            grew < 64,
            "RSS grew {grew} MiB for {} one-byte connections",
            conns.len()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(conns);
    rx.stop(T);
}

/// A client that has not proven the shared key holds little (issue 21 item 2): more
/// than 64 KiB before its PING closes it (buffer_max_size, 6 MB by default, applied
/// before), and a client that sends no PING at all is closed after
/// net.first_frame_timeout. Both are counted; a client with the key is served.
#[test]
fn unauthenticated_clients_hold_little_and_not_for_long() {
    use agent::forward::auth::{read_helo, Ping};
    let http = free_port();
    let mut rx = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name forward\n    listen 127.0.0.1\n    port 0\n    shared_key s3cret\n\
         \x20   net.first_frame_timeout 1s\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ));
    rx.wait_log("listening on", T);
    let port = bound_port(&rx);
    // A str32 frame that declares 1 MB and sends 100 KB of it, with no handshake.
    let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
    big.set_read_timeout(Some(T)).unwrap();
    let mut f = vec![0x92, 0xa1, b't', 0xdb, 0x00, 0x10, 0x00, 0x00];
    f.extend(std::iter::repeat_n(b'x', 100_000));
    let _ = big.write_all(&f);
    rx.wait_log(
        "frame larger than what a client may send before the handshake (65536 bytes)",
        T,
    );
    // Connected, HELO read, then nothing.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.set_read_timeout(Some(T)).unwrap();
    read_message(&mut silent, |b| read_helo(b).ok());
    let mut b = [0u8; 1];
    assert_eq!(silent.read(&mut b).unwrap_or(0), 0, "closed");
    rx.wait_log(
        "no whole frame within 1 seconds of connecting (net.first_frame_timeout)",
        T,
    );
    // With the key: served, and a frame after the handshake arrives.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let helo = read_message(&mut s, |b| read_helo(b).ok());
    let ping = Ping::new(&helo, "node-1", "s3cret", None);
    let mut f = Vec::new();
    ping.write(&mut f);
    f.extend_from_slice(&[0x93, 0xa2, b'o', b'k', 0x01, 0x81, 0xa2, b'o', b'k', 0xc3]);
    s.write_all(&f).unwrap();
    rx.wait_until(T, "the good record", |out, _| out.contains("\"ok\":true"));
    let (_, metrics) = http_get(http, "/api/v2/metrics/prometheus").unwrap();
    assert!(
        metrics.contains("agent_input_rejected_connections_total{name=\"forward.0\"} 2"),
        "{metrics}"
    );
    rx.stop(T);
}

/// `workers 4` (Fluent Bit's listener threads): the runtime serving the connections
/// gets 4 threads, and records arrive as with one; with `unix_path` it is refused, as
/// Fluent Bit refuses it.
#[test]
fn workers_give_the_runtime_that_many_threads() {
    let mut rx = receiver(0, "    workers 4\n");
    let port = bound_port(&rx);
    rx.wait_log("[engine] runtime threads: 4 (the inputs' workers)", T);
    let threads = std::fs::read_dir(format!("/proc/{}/task", rx.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("tokio-rt-worker"))
        .count();
    assert_eq!(threads, 4);
    let tx = sender(port, 200, "    require_ack_response on\n");
    wait_unique(&mut rx, 200);
    tx.stop(T);
    rx.stop(T);
    let lines = refused_config(
        "[INPUT]\n    name forward\n    unix_path /tmp/agent-fw.sock\n    workers 2\n[OUTPUT]\n    name null\n    match *\n",
    );
    assert!(
        lines[0].contains(":4: [config] forward: workers is not supported with unix_path"),
        "{lines:?}"
    );
}
