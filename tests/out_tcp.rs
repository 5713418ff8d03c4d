//! `tcp` output and the networking layer, against real sockets on loopback: one test per
//! `net.*`/`tls.*` behaviour, each asserting what the destination received.
//! Facts: ../shared/spec/fluent-bit.md §4.4, §5, §6; fluent-bit-observed.md §4.b.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::*;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls::{self, server::WebPkiClientVerifier, RootCertStore, ServerConfig};

const T: Duration = Duration::from_secs(20);

/// A config with fast flushes and 2 s retries (scheduler base 1, cap 1).
fn conf(input: &str, output: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n    scheduler.base 1\n    scheduler.cap 1\n\
         [INPUT]\n{input}[OUTPUT]\n    name tcp\n    match *\n{output}"
    )
}

/// `n` dummy records, `rate` per second.
fn dummy(n: u32, rate: u32) -> String {
    format!("    name dummy\n    samples {n}\n    rate {rate}\n")
}

fn to(c: &TcpCollector) -> String {
    format!("    host 127.0.0.1\n    port {}\n", c.port())
}

fn lines(c: &Conn) -> usize {
    c.bytes.iter().filter(|&&b| b == b'\n').count()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Every line is `{"date":<double>,"message":"dummy"}`.
fn assert_dummy_lines(text: &str, n: usize) {
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), n, "{text}");
    for l in lines {
        let rest = l
            .strip_prefix("{\"date\":")
            .unwrap_or_else(|| panic!("{l}"));
        let (date, tail) = rest.split_once(',').unwrap();
        assert!(date.parse::<f64>().unwrap() > 1.7e9, "{l}");
        assert_eq!(tail, "\"message\":\"dummy\"}", "{l}");
    }
}

#[test]
fn one_connection_is_reused_across_flushes_by_both_workers() {
    let sink = TcpCollector::start();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    log_level debug\n{}",
        conf(
            &dummy(4, 4),
            &format!("{}    format json_lines\n", to(&sink))
        )
    ));
    let conns = sink.wait_lines(4, T);
    a.wait_log("has been assigned (recycled)", T);
    // TCP keepalive probes are off by default (net.tcp_keepalive off).
    let socks = sockets_of(a.pid(), sink.addr());
    assert_eq!(socks.len(), 1);
    assert!(!socks[0].keepalive().unwrap());
    assert!(socks[0].tcp_nodelay().unwrap());
    // Our duplicate would keep the connection open past the agent's exit.
    drop(socks);
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // workers 2 (the default) and several flushes, one connection.
    assert_eq!(count(&o.stderr, "worker #1 started"), 1);
    assert!(
        count(&o.stderr, "has been assigned (recycled)") >= 1,
        "{}",
        o.stderr
    );
    assert_eq!(count(&o.stderr, "is connected"), 1, "{}", o.stderr);
    assert_eq!(conns.len(), 1, "{conns:#?}");
    assert_dummy_lines(&sink.conns()[0].text(), 4);
    // Stopping the agent closes its kept-alive connection.
    sink.wait(T, "close at exit", |c| c[0].closed.is_some());
}

#[test]
fn idle_connection_is_closed_after_keepalive_idle_timeout() {
    let sink = TcpCollector::start();
    let mut a = Agent::start(&conf(
        &dummy(1, 1),
        &format!(
            "{}    format json_lines\n    net.keepalive_idle_timeout 1\n",
            to(&sink)
        ),
    ));
    let conns = sink.wait(T, "close", |c| c.len() == 1 && c[0].closed.is_some());
    let idle = conns[0].closed.unwrap() - conns[0].last_data.unwrap();
    assert!(
        idle >= Duration::from_millis(950) && idle < Duration::from_millis(2500),
        "closed {idle:?} after the last record"
    );
    assert_dummy_lines(&conns[0].text(), 1);
    a.wait_until(T, "still running", |_, _| true);
    let o = a.stop(T);
    assert_eq!(o.code, Some(0));
}

/// Flushes per connection, from the debug log: `(#id, uses)` in connection order.
fn uses_per_connection(stderr: &str) -> Vec<(u64, usize)> {
    let mut uses: Vec<(u64, usize)> = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.split("KA connection #").nth(1) else {
            continue;
        };
        let id: u64 = rest.split(' ').next().unwrap().parse().unwrap();
        if line.ends_with("is connected") {
            uses.push((id, 1));
        } else if line.ends_with("has been assigned (recycled)") {
            uses.iter_mut().find(|(i, _)| *i == id).unwrap().1 += 1;
        }
    }
    uses
}

#[test]
fn keepalive_max_recycle_opens_a_new_connection() {
    let sink = TcpCollector::start();
    // One record every 500 ms, a flush every 200 ms: about one flush per record.
    let a = Agent::start(&format!(
        "[SERVICE]\n    log_level debug\n{}",
        conf(
            &dummy(6, 2),
            &format!(
                "{}    format json_lines\n    net.keepalive_max_recycle 1\n",
                to(&sink)
            ),
        )
    ));
    sink.wait_lines(6, T);
    let o = a.stop(T);
    assert_eq!(o.code, Some(0));
    // Each connection is used twice (one reuse) and then closed; the last may be cut
    // short by the end of the input.
    let uses = uses_per_connection(&o.stderr);
    assert!(uses.len() >= 2, "{uses:?}\n{}", o.stderr);
    let (last, full) = uses.split_last().unwrap();
    assert!(full.iter().all(|(_, n)| *n == 2) && last.1 <= 2, "{uses:?}");
    let dropped = format!(
        "drop keepalive connection #1 to 127.0.0.1:{} (keepalive_max_recycle reached)",
        sink.port()
    );
    assert!(o.stderr.contains(&dropped), "{}", o.stderr);
    // The destination saw the same connections, one after the other.
    let conns = sink.conns();
    assert_eq!(conns.len(), uses.len());
    for pair in conns.windows(2) {
        assert!(pair[0].closed.unwrap() <= pair[1].opened, "{conns:#?}");
    }
}

#[test]
fn keepalive_off_closes_after_each_flush() {
    let sink = TcpCollector::start();
    let a = Agent::start(&format!(
        "[SERVICE]\n    log_level debug\n{}",
        conf(
            &dummy(3, 2),
            &format!(
                "{}    format json_lines\n    net.keepalive off\n",
                to(&sink)
            )
        )
    ));
    sink.wait_lines(3, T);
    let o = a.stop(T);
    assert_eq!(o.code, Some(0));
    let uses = uses_per_connection(&o.stderr);
    assert!(
        uses.len() >= 2 && uses.iter().all(|(_, n)| *n == 1),
        "{uses:?}"
    );
    assert_eq!(
        count(&o.stderr, "(keepalive off)"),
        uses.len(),
        "{}",
        o.stderr
    );
    let conns = sink.wait(T, "every connection closed", |c| {
        c.iter().all(|c| c.closed.is_some())
    });
    assert_eq!(conns.len(), uses.len());
    assert_dummy_lines(&String::from_utf8(sink.bytes()).unwrap(), 3);
}

#[test]
fn source_address_is_the_peer_address() {
    let sink = TcpCollector::start();
    let a = Agent::start(&conf(
        &dummy(1, 1),
        &format!(
            "{}    format json_lines\n    net.source_address 127.0.0.2\n",
            to(&sink)
        ),
    ));
    let conns = sink.wait_lines(1, T);
    assert_eq!(conns[0].peer.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
    a.stop(T);
}

#[test]
fn tcp_keepalive_timers_are_set_on_the_socket() {
    let sink = TcpCollector::start();
    let a = Agent::start(&conf(
        &dummy(1, 1),
        &format!(
            "{}    format json_lines\n    net.tcp_keepalive on\n    net.tcp_keepalive_time 7\n    net.tcp_keepalive_interval 3\n    net.tcp_keepalive_probes 4\n",
            to(&sink)
        ),
    ));
    sink.wait_lines(1, T);
    let socks = sockets_of(a.pid(), sink.addr());
    assert_eq!(socks.len(), 1);
    let s = &socks[0];
    assert!(s.keepalive().unwrap());
    assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
    assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(3));
    assert_eq!(s.tcp_keepalive_retries().unwrap(), 4);
    drop(socks);
    a.stop(T);
}

#[test]
fn connect_timeout_against_a_destination_that_drops_syns() {
    let ns = netns::NetNs::new("syndrop");
    // The namespace's output chain gets one more rule: SYNs to port 5999 vanish.
    ns.exec(&[
        "nft",
        "add rule inet ct_test out tcp dport 5999 tcp flags syn drop",
    ]);
    let started = Instant::now();
    let mut a = Agent::start_in_netns(
        &conf(
            &dummy(1, 1),
            "    host 127.0.0.1\n    port 5999\n    format json_lines\n    net.connect_timeout 1\n    retry_limit 5\n",
        ),
        &ns,
    );
    let line =
        "[upstream] connection #1 to 127.0.0.1:5999 timed out after 1 seconds (connection timeout)";
    a.wait_log(line, T);
    let failed_after = started.elapsed();
    // The first flush is at most ~1.2 s after start; the attempt then waits the full second.
    assert!(
        failed_after >= Duration::from_secs(1) && failed_after < Duration::from_secs(4),
        "{failed_after:?}"
    );
    // Retried with a new connection, which times out the same way: logged once.
    a.wait_log("connection #2 to 127.0.0.1:5999", T);
    a.wait_until(T, "2 retries", |_, e| {
        count(e, "failed to flush chunk") >= 2
    });
    let o = a.stop(T);
    assert_eq!(o.code, Some(0));
    assert_eq!(count(&o.stderr, "[error] [upstream]"), 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("[error] {line}")),
        "{}",
        o.stderr
    );
    // net.connect_timeout_log_error off: the timeout is a debug message; still retried.
    let mut a = Agent::start_in_netns(
        &conf(
            &dummy(1, 1),
            "    host 127.0.0.1\n    port 5999\n    format json_lines\n    net.connect_timeout 1\n    net.connect_timeout_log_error off\n    retry_limit 5\n",
        ),
        &ns,
    );
    a.wait_until(T, "2 retries", |_, e| {
        count(e, "failed to flush chunk") >= 2
    });
    let o = a.stop(T);
    assert_eq!(count(&o.stderr, "[error] [upstream]"), 0, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("timed out after 1 seconds (connection timeout)), retry in"),
        "{}",
        o.stderr
    );
}

/// `/etc/netns/<ns>/hosts`, which `ip netns exec` mounts over /etc/hosts; removed on drop.
struct NetNsHosts(std::path::PathBuf);

impl NetNsHosts {
    fn new(ns: &netns::NetNs, hosts: &str) -> NetNsHosts {
        let dir = std::path::Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        NetNsHosts(dir)
    }
}

impl Drop for NetNsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_resolved_address_is_tried_in_the_preferred_order() {
    let ns = netns::NetNs::new("dns");
    let _hosts = NetNsHosts::new(&ns, "::1 multi.test\n127.0.0.1 multi.test\n");
    // Listens on 127.0.0.1 inside the namespace only: [::1] refuses.
    let sink = ns.run_in(TcpCollector::start);
    let port = sink.port();
    for (prefer, tried_v6_first) in [
        ("net.dns.prefer_ipv6", true),
        ("net.dns.prefer_ipv4", false),
    ] {
        let mut a = Agent::start_in_netns(
            &format!(
                "[SERVICE]\n    log_level debug\n{}",
                conf(
                    &dummy(1, 1),
                    &format!("    host multi.test\n    port {port}\n    format json_lines\n    {prefer} on\n")
                )
            ),
            &ns,
        );
        a.wait_log("is connected", T);
        let o = a.stop(T);
        let refused = format!("connection #1 to [::1]:{port} failed");
        assert_eq!(
            o.stderr.contains(&refused),
            tried_v6_first,
            "{prefer}: {}",
            o.stderr
        );
        assert!(!o.stderr.contains("[error]"), "{}", o.stderr);
    }
    let conns = sink.wait_lines(2, T);
    assert_eq!(conns.len(), 2);
    assert!(conns
        .iter()
        .all(|c| c.peer.ip() == "127.0.0.1".parse::<IpAddr>().unwrap()));
}

#[test]
fn io_timeout_fails_a_write_to_a_peer_that_stopped_reading() {
    let sink = TcpCollector::with_mode(Mode::Stalled);
    // ~5 MB per second: more than the socket buffers of a peer that reads nothing.
    let big = "x".repeat(100_000);
    let input = format!("    name dummy\n    rate 50\n    dummy {{\"log\":\"{big}\"}}\n");
    let mut a = Agent::start(&conf(
        &input,
        &format!(
            "{}    format json_lines\n    net.io_timeout 1\n    workers 1\n",
            to(&sink)
        ),
    ));
    a.wait_log("(net.io_timeout)", T);
    a.wait_log("failed to flush chunk", T);
    // The stuck connection was dropped and the retry opened a new one.
    sink.wait(T, "a second connection", |c| c.len() >= 2);
    let o = a.stop(T);
    assert!(
        o.stderr
            .contains("made no progress for 1 seconds (net.io_timeout)"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_peer_that_closed_an_idle_connection_gets_the_next_flush_on_a_new_one() {
    let sink = TcpCollector::with_mode(Mode::CloseAfterFirstRead);
    let a = Agent::start(&conf(
        &dummy(3, 2),
        &format!("{}    format json_lines\n", to(&sink)),
    ));
    let conns = sink.wait_lines(3, T);
    let o = a.stop(T);
    assert!(!o.stderr.contains("failed to flush"), "{}", o.stderr);
    // One connection per flush: each was closed by the peer before the next flush.
    assert!(conns.len() >= 2, "{conns:#?}");
    assert!(conns.iter().all(|c| lines(c) >= 1), "{conns:#?}");
    assert_dummy_lines(&String::from_utf8(sink.bytes()).unwrap(), 3);
}

#[test]
fn msgpack_bytes_decode_with_an_independent_decoder() {
    let sink = TcpCollector::start();
    let input = "    name dummy\n    samples 2\n    start_time_sec 1587769732\n    start_time_nsec 572266000\n    fixed_timestamp on\n    dummy {\"s\":\"é\",\"i\":-3,\"u\":18446744073709551615,\"f\":1.5,\"b\":true,\"n\":null,\"a\":[1,\"x\"],\"m\":{\"k\":\"v\"}}\n    metadata {\"meta\":1}\n";
    let a = Agent::start(&conf(input, &to(&sink)));
    // The body's last field, {"m":{"k":"v"}}, ends each record.
    let end: &[u8] = b"\xa1m\x81\xa1k\xa1v";
    sink.wait(T, "2 records", |c| {
        c.len() == 1 && c[0].bytes.windows(end.len()).filter(|w| *w == end).count() == 2
    });
    a.stop(T);
    let bytes = sink.bytes();
    let dir = Dir::new();
    let path = dir.file("chunk.msgpack", "");
    std::fs::write(&path, &bytes).unwrap();
    let script = "import sys, json, msgpack\n\
        def ext(code, data):\n\
        \x20   assert code == 0 and len(data) == 8\n\
        \x20   return [int.from_bytes(data[:4], 'big'), int.from_bytes(data[4:], 'big')]\n\
        out = list(msgpack.Unpacker(open(sys.argv[1], 'rb'), raw=False, ext_hook=ext, strict_map_key=False))\n\
        print(json.dumps(out, ensure_ascii=False, separators=(',', ':')))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = r#"[[[1587769732,572266000],{"meta":1}],{"s":"é","i":-3,"u":18446744073709551615,"f":1.5,"b":true,"n":null,"a":[1,"x"],"m":{"k":"v"}}]"#;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("[{record},{record}]")
    );
}

#[test]
fn json_formats_and_date_options_are_stdouts_bytes() {
    // Two records in one flush, fixed time 1587769732.572266000.
    let input = "    name dummy\n    samples 1\n    copies 2\n    start_time_sec 1587769732\n    start_time_nsec 572266000\n    fixed_timestamp on\n";
    let cases = [
        (
            "    format json\n    json_date_key ts\n    json_date_format iso8601\n",
            "[{\"ts\":\"2020-04-24T23:08:52.572266Z\",\"message\":\"dummy\"},{\"ts\":\"2020-04-24T23:08:52.572266Z\",\"message\":\"dummy\"}]\n",
        ),
        (
            "    format json_stream\n    json_date_format epoch\n",
            "{\"date\":1587769732,\"message\":\"dummy\"}{\"date\":1587769732,\"message\":\"dummy\"}\n",
        ),
        (
            "    format json_lines\n    json_date_key off\n",
            "{\"message\":\"dummy\"}\n{\"message\":\"dummy\"}\n",
        ),
    ];
    for (props, want) in cases {
        let sink = TcpCollector::start();
        let a = Agent::start(&conf(input, &format!("{}{props}", to(&sink))));
        sink.wait(T, "the flush", |c| {
            c.len() == 1 && c[0].bytes.len() >= want.len()
        });
        a.stop(T);
        assert_eq!(sink.conns()[0].text(), want, "{props}");
    }
}

#[test]
fn raw_message_key_sends_the_value_and_a_newline() {
    let sink = TcpCollector::start();
    let input = "    name dummy\n    samples 2\n    dummy {\"log\":\"plain text\",\"n\":1}\n";
    let a = Agent::start(&conf(
        input,
        &format!("{}    raw_message_key $log\n    format json\n", to(&sink)),
    ));
    sink.wait_lines(2, T);
    a.stop(T);
    assert_eq!(sink.bytes(), b"plain text\nplain text\n");
}

#[test]
fn refused_and_unresolvable_destinations_log_once_and_retry() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for (host, port, error) in [
        ("127.0.0.1", closed_port, format!("[error] [upstream] connection to 127.0.0.1:{closed_port} failed: Connection refused (os error 111)")),
        ("no-such-host.invalid", 80, "[error] [upstream] cannot resolve no-such-host.invalid:".to_string()),
    ] {
        let mut a = Agent::start(&conf(
            &dummy(1, 1),
            &format!("    host {host}\n    port {port}\n    retry_limit 5\n    net.connect_timeout 3\n"),
        ));
        a.wait_until(T, "3 failed attempts", |_, e| count(e, "failed to flush chunk") >= 3);
        let o = a.stop(T);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        // One line for the failure, however many retries; the engine's own lines aside.
        assert_eq!(count(&o.stderr, "[error] [upstream]"), 1, "{}", o.stderr);
        assert_eq!(count(&o.stderr, &error), 1, "{}", o.stderr);
    }
}

#[test]
fn a_destination_that_comes_back_gets_the_retried_chunk() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut a = Agent::start(&conf(
        &dummy(1, 1),
        &format!("    host 127.0.0.1\n    port {port}\n    format json_lines\n    retry_limit 5\n"),
    ));
    a.wait_log("failed to flush chunk", T);
    let sink = TcpCollector::on_port(port);
    let conns = sink.wait_lines(1, T);
    a.wait_log("succeeded at retry", T);
    let o = a.stop(T);
    assert_dummy_lines(&conns[0].text(), 1);
    assert_eq!(count(&o.stderr, "[error] [upstream]"), 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "[ info] [upstream] connection to 127.0.0.1:{port} is working again"
        )),
        "{}",
        o.stderr
    );
}

#[test]
fn config_errors_name_the_line() {
    let dir = Dir::new();
    let cases = [
        ("    tls on\n    tls.ciphers HIGH:!aNULL\n", ":8: [config] tcp: invalid value 'HIGH:!aNULL' for property 'tls.ciphers'"),
        ("    net.dns.mode TCP\n", ":7: [config] tcp: invalid value 'TCP' for property 'net.dns.mode'"),
        ("    net.source_address eth0\n", ":7: [config] tcp: invalid value 'eth0' for property 'net.source_address'"),
        ("    tls on\n    tls.max_version TLSv1.1\n", ":8: [config] tcp: invalid value 'TLSv1.1' for property 'tls.max_version'"),
        ("    tls on\n    tls.ca_file /nonexistent/ca.pem\n", ":8: [config] tcp: invalid value '/nonexistent/ca.pem' for property 'tls.ca_file'"),
        ("    port 70000\n", ":7: [config] tcp: invalid value '70000' for property 'port'"),
        ("    net.keepalive_idle_timout 5\n", ":7: [config] tcp: unknown configuration property 'net.keepalive_idle_timout'. The following properties are allowed: host, port, format, json_date_format, json_date_key, and raw_message_key."),
    ];
    for (props, want) in cases {
        let path = dir.file(
            "e.conf",
            &format!("[INPUT]\n    name dummy\n\n[OUTPUT]\n    name tcp\n    match *\n{props}"),
        );
        let o = run(&["-c", path.to_str().unwrap(), "--dry-run"], None);
        assert_ne!(o.code, Some(0), "{props}");
        assert!(
            o.stderr.contains(want),
            "{props}\nwant: {want}\ngot: {}",
            o.stderr
        );
    }
}

// ---- TLS ---------------------------------------------------------------------------

/// What a TLS test server saw on one connection.
#[derive(Clone, Debug, Default)]
struct TlsConn {
    sni: Option<String>,
    version: Option<rustls::ProtocolVersion>,
    suite: Option<String>,
    client_cert: Option<CertificateDer<'static>>,
    bytes: Vec<u8>,
    error: Option<String>,
}

/// A tokio-rustls server on 127.0.0.1:0 recording every connection.
struct TlsServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<TlsConn>>>,
    _rt: tokio::runtime::Runtime,
}

impl TlsServer {
    fn start(
        pki: &Pki,
        version: &'static rustls::SupportedProtocolVersion,
        client_auth: bool,
    ) -> TlsServer {
        TlsServer::start_with(pki, version, client_auth, false)
    }

    /// `close_after_first_read`: close each connection (close_notify, then FIN) once it
    /// delivered its first bytes.
    fn start_with(
        pki: &Pki,
        version: &'static rustls::SupportedProtocolVersion,
        client_auth: bool,
        close_after_first_read: bool,
    ) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap();
        let builder = if client_auth {
            let mut roots = RootCertStore::empty();
            roots.add(pki.ca.clone()).unwrap();
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.1.clone()));
        let config = builder
            .with_single_cert(vec![pki.server.0.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<TlsConn>>> = Arc::default();
        let record = seen.clone();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            let c = TlsConn {
                                error: Some(e.to_string()),
                                ..TlsConn::default()
                            };
                            record.lock().unwrap().push(c);
                            return;
                        }
                    };
                    let index = {
                        let conn = tls.get_ref().1;
                        let mut all = record.lock().unwrap();
                        all.push(TlsConn {
                            sni: conn.server_name().map(str::to_string),
                            version: conn.protocol_version(),
                            suite: conn
                                .negotiated_cipher_suite()
                                .and_then(|s| s.suite().as_str())
                                .map(str::to_string),
                            client_cert: conn.peer_certificates().and_then(|c| c.first().cloned()),
                            ..TlsConn::default()
                        });
                        all.len() - 1
                    };
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap()[index]
                            .bytes
                            .extend_from_slice(&buf[..n]);
                        if close_after_first_read {
                            use tokio::io::AsyncWriteExt;
                            let _ = tls.shutdown().await;
                            break;
                        }
                    }
                });
            }
        });
        TlsServer {
            addr,
            seen,
            _rt: rt,
        }
    }

    fn conns(&self) -> Vec<TlsConn> {
        self.seen.lock().unwrap().clone()
    }

    fn wait(&self, what: &str, cond: impl Fn(&[TlsConn]) -> bool) -> Vec<TlsConn> {
        let end = Instant::now() + T;
        loop {
            let c = self.conns();
            if cond(&c) {
                return c;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {c:#?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn tls_output(server: &TlsServer, host: &str, tls: &str) -> String {
    format!(
        "    host {host}\n    port {}\n    format json_lines\n    tls on\n{tls}",
        server.addr.port()
    )
}

fn delivered(c: &[TlsConn]) -> bool {
    c.iter()
        .any(|c| c.bytes.ends_with(b"\"message\":\"dummy\"}\n"))
}

#[test]
fn tls13_verifies_chain_and_hostname_and_sends_sni() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, &rustls::version::TLS13, false);
    let a = Agent::start(&conf(
        &dummy(1, 1),
        &tls_output(
            &server,
            "127.0.0.1",
            &format!(
                "    tls.ca_file {}\n    tls.verify_hostname on\n    tls.vhost localhost\n    tls.debug 2\n",
                pki.path("ca.pem")
            ),
        ),
    ));
    let conns = server.wait("a record", delivered);
    let o = a.stop(T);
    // tls.debug 2 logs what each handshake negotiated.
    let negotiated = format!(
        "[ info] [tls] connection #1 to 127.0.0.1:{}: TLSv1_3, {}",
        server.addr.port(),
        conns[0].suite.as_deref().unwrap()
    );
    assert!(o.stderr.contains(&negotiated), "{}", o.stderr);
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].sni.as_deref(), Some("localhost"));
    assert_eq!(conns[0].version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert!(conns[0].client_cert.is_none());
    assert_dummy_lines(&String::from_utf8_lossy(&conns[0].bytes), 1);
}

#[test]
fn tls12_with_a_client_certificate() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, &rustls::version::TLS12, true);
    let a = Agent::start(&conf(
        &dummy(1, 1),
        &tls_output(
            &server,
            "localhost",
            &format!(
                "    tls.ca_path {}\n    tls.crt_file {}\n    tls.key_file {}\n    tls.ciphers ECDHE-ECDSA-AES128-GCM-SHA256\n",
                pki.dir.path().display(),
                pki.path("client.pem"),
                pki.path("client.key")
            ),
        ),
    ));
    let conns = server.wait("a record", delivered);
    a.stop(T);
    assert_eq!(conns[0].version, Some(rustls::ProtocolVersion::TLSv1_2));
    // The one suite tls.ciphers allows (of the server's default list).
    assert_eq!(
        conns[0].suite.as_deref(),
        Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
    );
    // host is a name: it is the SNI.
    assert_eq!(conns[0].sni.as_deref(), Some("localhost"));
    assert_eq!(conns[0].client_cert.as_ref(), Some(&pki.client_der));
}

#[test]
fn hostname_verification_rejects_a_wrong_name_only_when_on() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, &rustls::version::TLS13, false);
    let tls = |verify_hostname: &str| {
        format!(
            "    tls.ca_file {}\n    tls.vhost wrong.example\n    tls.verify_hostname {verify_hostname}\n    retry_limit 5\n",
            pki.path("ca.pem")
        )
    };
    let mut a = Agent::start(&conf(
        &dummy(1, 1),
        &tls_output(&server, "127.0.0.1", &tls("on")),
    ));
    a.wait_until(T, "2 failed attempts", |_, e| {
        count(e, "failed to flush chunk") >= 2
    });
    let o = a.stop(T);
    assert_eq!(o.code, Some(0));
    let want = format!(
        "[error] [upstream] TLS handshake with 127.0.0.1:{} failed: invalid peer certificate: certificate not valid for name \"wrong.example\"",
        server.addr.port()
    );
    assert_eq!(count(&o.stderr, "[error] [upstream]"), 1, "{}", o.stderr);
    assert_eq!(count(&o.stderr, &want), 1, "{}", o.stderr);
    let seen = server.conns();
    assert!(!delivered(&seen));
    // The server saw the client abort the handshake.
    assert!(seen.iter().all(|c| c.error.is_some()), "{seen:#?}");
    // Fluent Bit's default, verify_hostname off: the chain is enough.
    let a = Agent::start(&conf(
        &dummy(1, 1),
        &tls_output(&server, "127.0.0.1", &tls("off")),
    ));
    let conns = server.wait("a record", delivered);
    a.stop(T);
    let ok: Vec<_> = conns.iter().filter(|c| !c.bytes.is_empty()).collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].sni.as_deref(), Some("wrong.example"));
}

#[test]
fn an_unknown_ca_is_rejected_unless_verify_is_off() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, &rustls::version::TLS13, false);
    // No tls.ca_file: the system store, which does not know the test CA.
    let mut a = Agent::start(&conf(
        &dummy(1, 1),
        &tls_output(&server, "127.0.0.1", "    retry_limit 5\n"),
    ));
    a.wait_log("failed to flush chunk", T);
    let o = a.stop(T);
    let want = format!(
        "[error] [upstream] TLS handshake with 127.0.0.1:{} failed: invalid peer certificate: UnknownIssuer",
        server.addr.port()
    );
    assert_eq!(count(&o.stderr, &want), 1, "{}", o.stderr);
    let seen = server.conns();
    assert!(!delivered(&seen));
    // The server saw the client abort the handshake.
    assert!(seen.iter().all(|c| c.error.is_some()), "{seen:#?}");
    let a = Agent::start(&conf(
        &dummy(1, 1),
        &tls_output(&server, "127.0.0.1", "    tls.verify off\n"),
    ));
    let conns = server.wait("a record", delivered);
    a.stop(T);
    // The target is an IP address and no tls.vhost is set: no SNI.
    let ok: Vec<_> = conns.iter().filter(|c| !c.bytes.is_empty()).collect();
    assert_eq!(ok[0].sni, None);
}

#[test]
fn a_tls_peer_that_closed_an_idle_connection_gets_the_next_flush_on_a_new_one() {
    let pki = Pki::new();
    let server = TlsServer::start_with(&pki, &rustls::version::TLS13, false, true);
    let a = Agent::start(&conf(
        &dummy(3, 2),
        &tls_output(
            &server,
            "localhost",
            &format!("    tls.ca_file {}\n", pki.path("ca.pem")),
        ),
    ));
    let records = |c: &[TlsConn]| -> usize {
        c.iter()
            .map(|c| c.bytes.iter().filter(|&&b| b == b'\n').count())
            .sum()
    };
    let conns = server.wait("3 records", |c| records(c) == 3);
    let o = a.stop(T);
    assert!(!o.stderr.contains("failed to flush"), "{}", o.stderr);
    assert!(conns.len() >= 2, "{conns:#?}");
    let all: Vec<u8> = conns.iter().flat_map(|c| c.bytes.clone()).collect();
    assert_dummy_lines(&String::from_utf8(all).unwrap(), 3);
}

#[test]
fn tls_settings_that_cannot_be_honoured_are_config_errors() {
    let pki = Pki::new();
    let key = pki.dir.file(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let empty = Dir::new();
    let (crt, ca) = (pki.path("client.pem"), pki.path("ca.pem"));
    let cases = [
        (
            format!("    tls.crt_file {crt}\n    tls.key_file {}\n    tls.key_passwd secret\n", key.display()),
            ":10: [config] tcp: invalid value 'secret' for property 'tls.key_passwd': expected an unencrypted key: agent cannot decrypt private keys",
        ),
        (
            format!("    tls.crt_file {crt}\n"),
            ":8: [config] tcp: invalid value '",
        ),
        (
            format!("    tls.ca_path {}\n", empty.path().display()),
            ":8: [config] tcp: invalid value '",
        ),
        (
            format!("    tls.ca_file {ca}\n    tls.min_version TLSv1.3\n    tls.max_version TLSv1.2\n"),
            ":10: [config] tcp: invalid value 'TLSv1.2' for property 'tls.max_version': expected a version range",
        ),
        (
            format!("    tls.ca_file {ca}\n    tls.debug 7\n"),
            ":9: [config] tcp: invalid value '7' for property 'tls.debug': expected a level from 0 to 4",
        ),
    ];
    let dir = Dir::new();
    for (props, want) in cases {
        let path = dir.file(
            "e.conf",
            &format!("[INPUT]\n    name dummy\n\n[OUTPUT]\n    name tcp\n    match *\n    tls on\n{props}"),
        );
        let o = run(&["-c", path.to_str().unwrap(), "--dry-run"], None);
        assert_eq!(o.code, Some(1), "{props}");
        assert!(
            o.stderr.contains(want),
            "{props}\nwant: {want}\ngot: {}",
            o.stderr
        );
    }
}
