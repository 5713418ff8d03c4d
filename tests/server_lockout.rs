//! Idle and trickling clients cannot lock a good client out of the server inputs
//! (issue 21 item 2), and a listener short of descriptors keeps serving (item 3): a
//! bounded soak on loopback.
//!
//! Before: `forward` and `tcp` served at most 1,024 connections and, with the default
//! `net.io_timeout 0`, never dropped an idle one, so 1,100 idle sockets (or 1,030
//! clients sending a byte every 2 s) kept a good client out for as long as they liked.

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

/// Raises this process's RLIMIT_NOFILE soft limit to `want` (the agent inherits it);
/// false when the hard limit is lower.
fn raise_nofile(want: u64) -> bool {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return false;
        }
        if r.rlim_cur >= want {
            return true;
        }
        if r.rlim_max < want {
            return false;
        }
        r.rlim_cur = want;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0
    }
}

/// Says visibly why a test did not run.
fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
}

/// A crowd of hostile clients in one thread: each holds a connection that never
/// completes a frame or record; every `every` each sends its next byte (or nothing,
/// when `bytes` is empty) and, when the server closed it, connects again at once.
struct Crowd {
    stop: Arc<AtomicBool>,
    reconnects: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// A non-blocking socket whose connect is under way (the server's backlog may be full).
fn start_connect(addr: SocketAddr) -> Option<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.set_nonblocking(true).ok()?;
    match s.connect(&addr.into()) {
        Ok(()) => Some(s),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Some(s),
        Err(_) => None,
    }
}

impl Crowd {
    fn start(addr: SocketAddr, n: usize, bytes: &'static [u8], every: Duration) -> Crowd {
        let stop = Arc::new(AtomicBool::new(false));
        let reconnects = Arc::new(AtomicU64::new(0));
        let (st, rc) = (stop.clone(), reconnects.clone());
        let thread = std::thread::spawn(move || {
            // (socket, bytes sent)
            let mut socks: Vec<(Option<TcpStream>, usize)> = (0..n)
                .map(|_| (start_connect(addr).map(TcpStream::from), 0))
                .collect();
            while !st.load(Ordering::Relaxed) {
                let tick = Instant::now();
                for (sock, sent) in socks.iter_mut() {
                    let closed = match sock {
                        None => true,
                        Some(s) => {
                            let mut b = [0u8; 64];
                            match s.read(&mut b) {
                                Ok(0) => true,
                                Ok(_) => false,
                                Err(e) => !matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::NotConnected
                                ),
                            }
                        }
                    };
                    if closed {
                        rc.fetch_add(1, Ordering::Relaxed);
                        *sock = start_connect(addr).map(TcpStream::from);
                        *sent = 0;
                        continue;
                    }
                    if let (Some(s), false) = (sock.as_mut(), bytes.is_empty()) {
                        // The prefix, then its last byte again and again.
                        let b = bytes[(*sent).min(bytes.len() - 1)];
                        if let Ok(1) = s.write(&[b]) {
                            *sent += 1;
                        }
                    }
                }
                while tick.elapsed() < every && !st.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Crowd {
            stop,
            reconnects,
            thread: Some(thread),
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects, retrying while the server is crowded (up to `T`); counts the attempts that
/// failed.
fn connect(addr: SocketAddr, failures: &mut u32) -> TcpStream {
    let deadline = Instant::now() + T;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => {
                s.set_read_timeout(Some(T)).unwrap();
                s.set_write_timeout(Some(T)).unwrap();
                return s;
            }
            Err(e) => {
                *failures += 1;
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
            }
        }
    }
}

/// An event time and the record `{"src":"fwd","id":id}`.
fn write_time_and_record(f: &mut Vec<u8>, id: u32) {
    rmp::encode::write_uint(f, 1_700_000_000).unwrap();
    rmp::encode::write_map_len(f, 2).unwrap();
    rmp::encode::write_str(f, "src").unwrap();
    rmp::encode::write_str(f, "fwd").unwrap();
    rmp::encode::write_str(f, "id").unwrap();
    rmp::encode::write_uint(f, u64::from(id)).unwrap();
}

/// A forward frame (Forward mode) of records `{"src":"fwd","id":i}` for `ids`, with a
/// `chunk` option so the server acks it.
fn forward_frame(ids: std::ops::Range<u32>, chunk: &str) -> Vec<u8> {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "good.fwd").unwrap();
    rmp::encode::write_array_len(&mut f, ids.len() as u32).unwrap();
    for i in ids {
        rmp::encode::write_array_len(&mut f, 2).unwrap();
        write_time_and_record(&mut f, i);
    }
    rmp::encode::write_map_len(&mut f, 1).unwrap();
    rmp::encode::write_str(&mut f, "chunk").unwrap();
    rmp::encode::write_str(&mut f, chunk).unwrap();
    f
}

/// Sends `n` records to forward in acked frames of 100, resending a frame whose ack
/// did not come (a closed connection); returns (connect failures, resends).
fn good_forward_client(addr: SocketAddr, n: u32) -> (u32, u32) {
    let (mut failures, mut resends) = (0, 0);
    let mut s = connect(addr, &mut failures);
    let mut start = 0;
    while start < n {
        let chunk = format!("c{start:08}");
        let frame = forward_frame(start..(start + 100).min(n), &chunk);
        let acked = s.write_all(&frame).is_ok() && {
            let mut got = Vec::new();
            let mut b = [0u8; 256];
            loop {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break false,
                    Ok(k) => got.extend_from_slice(&b[..k]),
                }
                if got.windows(chunk.len()).any(|w| w == chunk.as_bytes()) {
                    break true;
                }
            }
        };
        if acked {
            start += 100;
        } else {
            resends += 1;
            assert!(resends < 50, "forward: {resends} frames resent");
            s = connect(addr, &mut failures);
        }
    }
    (failures, resends)
}

/// Sends `n` JSON lines `{"src":"tcp","id":i}` to tcp in writes of 100; returns the
/// connect failures (a connection closed mid-way would lose records: it is asserted on
/// through what arrives).
fn good_tcp_client(addr: SocketAddr, n: u32) -> u32 {
    let mut failures = 0;
    let mut s = connect(addr, &mut failures);
    for start in (0..n).step_by(100) {
        let batch: String = (start..(start + 100).min(n))
            .map(|i| format!("{{\"src\":\"tcp\",\"id\":{i}}}\n"))
            .collect();
        s.write_all(batch.as_bytes())
            .unwrap_or_else(|e| panic!("tcp: the good client's connection failed: {e}"));
    }
    drop(s);
    failures
}

/// The port the input `[input:PLUGIN:...]` bound.
fn port_of(a: &Agent, plugin: &str) -> u16 {
    bound_port_of(a, &format!("[input:{plugin}:"))
}

/// (ids from forward, ids from tcp) in the agent's stdout.
fn delivered(stdout: &str) -> (HashSet<u64>, HashSet<u64>) {
    let (mut fwd, mut tcp) = (HashSet::new(), HashSet::new());
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let id = v["id"].as_u64().unwrap_or_else(|| panic!("{line}"));
        match v["src"].as_str() {
            Some("fwd") => fwd.insert(id),
            Some("tcp") => tcp.insert(id),
            _ => panic!("{line}"),
        };
    }
    (fwd, tcp)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

const RECORDS: u32 = 10_000;

/// 1,100 idle sockets and 1,030 slowloris clients (a byte every 2 s, reconnecting when
/// closed) against each of `forward` and `tcp`, and 600 against the monitoring server,
/// while a good client sends 10,000 records to each input: every record arrives, the
/// monitoring server answers, the evictions are counted, and the agent's peak RSS stays
/// under 128 MiB.
#[test]
fn idle_and_slowloris_crowds_do_not_lock_out_a_good_client() {
    // Per listener 2,130 hostile sockets here plus the good clients.
    if !raise_nofile(14_000) {
        return skip("RLIMIT_NOFILE cannot be raised to 14000 (hard limit too low)");
    }
    let http = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n\
         \x20   http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name forward\n    listen 127.0.0.1\n    port 0\n\
         [INPUT]\n    name tcp\n    listen 127.0.0.1\n    port 0\n    tag good.tcp\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
    ));
    a.wait_until(T, "both listeners", |_, e| {
        e.matches("listening on 127.0.0.1:").count() >= 2
    });
    let fwd: SocketAddr = ([127, 0, 0, 1], port_of(&a, "forward")).into();
    let tcp: SocketAddr = ([127, 0, 0, 1], port_of(&a, "tcp")).into();
    let web: SocketAddr = ([127, 0, 0, 1], http).into();
    let every = Duration::from_secs(2);
    // Slowloris: a frame (a str32 of 1 MB) or a JSON string that never ends.
    let crowds = [
        Crowd::start(fwd, 1100, b"", Duration::from_secs(1)),
        Crowd::start(fwd, 1030, b"\x92\xdb\x00\x10\x00\x00x", every),
        Crowd::start(tcp, 1100, b"", Duration::from_secs(1)),
        Crowd::start(tcp, 1030, b"{\"a\":\"x", every),
        // And the monitoring server: idle, and a request head that never ends.
        Crowd::start(web, 300, b"", Duration::from_secs(1)),
        Crowd::start(web, 300, b"GET / HTTP/1.1\r\nX-Slow: x", every),
    ];
    // Both caps full (1,024 descriptors each) before the good clients come.
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_fds(a.pid()) < 2 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the crowds hold only {} descriptors",
            open_fds(a.pid())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let f = std::thread::spawn(move || good_forward_client(fwd, RECORDS));
    let t = std::thread::spawn(move || good_tcp_client(tcp, RECORDS));
    let (fwd_failures, resends) = f.join().unwrap();
    let tcp_failures = t.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (got_fwd, got_tcp) = loop {
        let (f, t) = delivered(&a.stdout());
        if f.len() as u32 >= RECORDS && t.len() as u32 >= RECORDS {
            break (f, t);
        }
        assert!(
            Instant::now() < deadline,
            "delivered forward {} tcp {} of {RECORDS}\n{}",
            f.len(),
            t.len(),
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    let peak_mib = status_kib(a.pid(), "VmHWM:") / 1024;
    let reconnects: Vec<u64> = crowds
        .iter()
        .map(|c| c.reconnects.load(Ordering::Relaxed))
        .collect();
    // The monitoring server answers during the attack.
    let evicted = [
        metric(http, "agent_input_evicted_connections_total", "forward.0"),
        metric(http, "agent_input_evicted_connections_total", "tcp.1"),
        metric(http, "agent_http_evicted_connections_total", ""),
    ];
    drop(crowds);
    eprintln!(
        "soak: {RECORDS} records each to forward and tcp in {took:?}; peak RSS {peak_mib} MiB; \
         evicted forward {} tcp {} http {}; crowd reconnects {reconnects:?}; good client connect \
         failures forward {fwd_failures} tcp {tcp_failures}, forward frames resent {resends}",
        evicted[0], evicted[1], evicted[2]
    );
    assert_eq!(got_fwd, (0..u64::from(RECORDS)).collect());
    assert_eq!(got_tcp, (0..u64::from(RECORDS)).collect());
    assert!(
        evicted.iter().all(|&e| e > 0),
        "evictions counted: {evicted:?}"
    );
    assert!(peak_mib < 128, "peak RSS {peak_mib} MiB");
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // Throttled: thousands of evictions, a few log lines.
    let lines = log_lines(&o.stderr)
        .iter()
        .filter(|l| l.contains("a new client needs its place"))
        .count();
    assert!((1..100).contains(&lines), "{lines} eviction lines");
}

/// Sends one forward frame (Message mode, `{"src":"fwd","id":id}`), retrying the
/// connection until `T`.
fn send_forward_message(addr: SocketAddr, id: u32) {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "good.fwd").unwrap();
    write_time_and_record(&mut f, id);
    let mut failures = 0;
    connect(addr, &mut failures).write_all(&f).unwrap();
}

/// With the agent's descriptors used up by idle clients of one input (`ulimit -n 200`,
/// which it cannot raise), every listener still serves (issue 21 item 3): the accept
/// loops back off, count the failures, and close the idlest connection to get a
/// descriptor back. Before, forward retried EMFILE every 100 ms for as long as the idle
/// clients stayed, and the other listeners starved with it.
#[test]
fn listeners_keep_serving_when_descriptors_run_out() {
    let http = free_port();
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n\
         \x20   http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name forward\n    listen 127.0.0.1\n    port 0\n\
         [INPUT]\n    name tcp\n    listen 127.0.0.1\n    port 0\n    tag good.tcp\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
    );
    let mut a = Agent::start_wrapped(&conf, &["prlimit", "--nofile=200:200"]);
    a.wait_until(T, "both listeners", |_, e| {
        e.matches("listening on 127.0.0.1:").count() >= 2
    });
    let fwd: SocketAddr = ([127, 0, 0, 1], port_of(&a, "forward")).into();
    let tcp: SocketAddr = ([127, 0, 0, 1], port_of(&a, "tcp")).into();
    // 300 idle clients of forward, reconnecting when closed: more than the agent has
    // descriptors.
    let crowd = Crowd::start(fwd, 300, b"", Duration::from_secs(1));
    a.wait_log("accept failed: Too many open files", T);
    send_forward_message(fwd, 1);
    let mut failures = 0;
    connect(tcp, &mut failures)
        .write_all(b"{\"src\":\"tcp\",\"id\":2}\n")
        .unwrap();
    a.wait_until(T, "a record through each input", |out, _| {
        let (f, t) = delivered(out);
        f.contains(&1) && t.contains(&2)
    });
    // The monitoring server answers too (retried: the crowd takes descriptors back).
    let deadline = Instant::now() + T;
    let errors = loop {
        if let Ok((200, body)) = http_get(http, "/api/v2/metrics/prometheus") {
            break body;
        }
        assert!(Instant::now() < deadline, "the HTTP server never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    let count = |name: &str| -> u64 {
        errors
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{name=\"forward.0\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}\n{errors}"))
    };
    assert!(count("agent_input_accept_errors_total") > 0, "{errors}");
    assert!(
        count("agent_input_evicted_connections_total") > 0,
        "{errors}"
    );
    drop(crowd);
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}
