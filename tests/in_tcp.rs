//! `tcp` input on loopback: JSON objects from `nc` (several per write, split across
//! writes), separated lines, the client's address, TLS, limits and hostile bytes.
//! Facts: ../shared/spec/fluent-bit.md §5 (downstream net.*).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pki::Pki;
use common::*;

const T: Duration = Duration::from_secs(30);

fn tcp_input(port: u16, extra: &str) -> Agent {
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n\
         [INPUT]\n    name tcp\n    listen 127.0.0.1\n    port {port}\n{extra}\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
    ));
    a.wait_log("listening on", T);
    a
}

#[test]
fn nc_sends_json_objects() {
    let mut a = tcp_input(0, "");
    let port = bound_port(&a);
    let mut nc = Command::new("nc")
        .args(["-q", "1", "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nc");
    nc.stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\":1} {\"b\":\"two\"}\n{\"c\":[1,2]}")
        .unwrap();
    nc.wait().unwrap();
    a.wait_lines(3, T);
    let o = a.stop(T);
    assert_eq!(o.stdout, "{\"a\":1}\n{\"b\":\"two\"}\n{\"c\":[1,2]}\n");
}

#[test]
fn objects_split_across_writes_and_source_address() {
    let mut a = tcp_input(0, "    source_address_key src\n");
    let port = bound_port(&a);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = s.local_addr().unwrap();
    for piece in [&b"{\"msg\":\"he"[..], b"llo\"}{\"n\"", b":2}\n"] {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    a.wait_lines(2, T);
    let o = a.stop(T);
    assert_eq!(
        o.stdout,
        format!("{{\"msg\":\"hello\",\"src\":\"tcp://{local}\"}}\n{{\"n\":2,\"src\":\"tcp://{local}\"}}\n")
    );
}

#[test]
fn format_none_splits_on_the_separator() {
    let mut a = tcp_input(0, "    format none\n    separator ;\n");
    let port = bound_port(&a);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"one;two;thr").unwrap();
    s.write_all(b"ee;last").unwrap();
    drop(s);
    a.wait_lines(4, T);
    let o = a.stop(T);
    assert_eq!(
        o.stdout,
        "{\"log\":\"one\"}\n{\"log\":\"two\"}\n{\"log\":\"three\"}\n{\"log\":\"last\"}\n"
    );
}

#[test]
fn tls_clients_are_served() {
    use rcgen::{CertificateParams, KeyPair};
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = Dir::new();
    let crt = dir.file("s.pem", &cert.pem());
    let k = dir.file("s.key", &key.serialize_pem());
    let mut a = tcp_input(
        0,
        &format!(
            "    tls on\n    tls.crt_file {}\n    tls.key_file {}\n    net.accept_timeout 1s\n",
            crt.display(),
            k.display()
        ),
    );
    let port = bound_port(&a);
    let script = format!(
        "import socket, ssl\n\
         c = ssl.create_default_context(cafile='{}')\n\
         s = c.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='localhost')\n\
         s.sendall(b'{{\"secure\":true}}')\n\
         s.close()\n",
        crt.display()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.wait_lines(1, T);
    // A plaintext client is turned away by the handshake.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.write_all(b"{\"plain\":1}\n").unwrap();
    a.wait_log("TLS handshake failed", T);
    // Slowloris: connected, never starts the handshake.
    let _silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    a.wait_log("no TLS handshake within 1 seconds (net.accept_timeout)", T);
    let o = a.stop(T);
    assert_eq!(o.stdout, "{\"secure\":true}\n");
}

#[test]
fn limits_garbage_and_random_bytes_close_connections_and_serving_goes_on() {
    let mut a = tcp_input(0, "    chunk_size 1\n    buffer_size 2\n");
    let port = bound_port(&a);
    // Not JSON.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"]]] not json\n").unwrap();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap_or(0), 0);
    a.wait_log("invalid JSON", T);
    // A record longer than buffer_size (2 KB).
    let mut long = b"{\"x\":\"".to_vec();
    long.extend(std::iter::repeat_n(b'a', 3000));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = s.write_all(&long);
    a.wait_log("a record longer than buffer_size (2048 bytes)", T);
    // Random bytes, bounded.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..200 {
        let bytes: Vec<u8> = (0..1 + (i * 53) % 1500)
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
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"{\"still\":\"here\"}").unwrap();
    a.wait_until(T, "the good record", |out, _| {
        out.contains("{\"still\":\"here\"}")
    });
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

#[test]
fn a_port_in_use_stops_the_agent_with_the_reason() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let mut a = Agent::start(&format!(
        "[INPUT]\n    name tcp\n    listen 127.0.0.1\n    port {port}\n[OUTPUT]\n    name stdout\n    match *\n"
    ));
    let code = a.wait(T);
    assert_ne!(code, Some(0));
    assert!(
        a.stderr().contains(&format!(
            "[input:tcp:tcp.0] cannot listen on 127.0.0.1:{port}: Address already in use"
        )),
        "{}",
        a.stderr()
    );
}

#[test]
fn verify_client_cert_requires_a_certificate_from_the_ca() {
    let pki = Pki::new();
    let (ca_pem, crt, key) = (
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key"),
    );
    let (ccrt, ckey) = (pki.path("client.pem"), pki.path("client.key"));
    let mut a = tcp_input(
        0,
        &format!(
            "    tls on\n    tls.crt_file {}\n    tls.key_file {}\n    tls.ca_file {}\n    tls.verify_client_cert on\n",
            crt,
            key,
            ca_pem
        ),
    );
    let port = bound_port(&a);
    let client = |with_cert: bool, body: &str| {
        // With TLS 1.3 the server's verdict on the client certificate arrives after the
        // client's handshake is done: a refused client waits for it (an alert, or the
        // close, fails the read); an accepted one just closes.
        let (cert, wait) = if with_cert {
            (
                format!("c.load_cert_chain('{}', '{}')\n", ccrt, ckey),
                "s.close()\n",
            )
        } else {
            (String::new(), "s.settimeout(20)\nassert s.recv(1) != b''\n")
        };
        let script = format!(
            "import socket, ssl\n\
             c = ssl.create_default_context(cafile='{}')\n\
             {cert}\
             s = c.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='localhost')\n\
             s.sendall(b'{body}')\n\
             {wait}",
            ca_pem
        );
        Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap()
    };
    let ok = client(true, "{\"mtls\":1}");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    a.wait_lines(1, T);
    // Without a certificate the handshake fails (TLS 1.3 reports it on the first read).
    let refused = client(false, "{\"anon\":1}");
    assert!(!refused.status.success());
    a.wait_log("TLS handshake failed", T);
    let o = a.stop(T);
    assert_eq!(o.stdout, "{\"mtls\":1}\n");
}

/// `chunk_size`/`buffer_size` are kilobytes as Fluent Bit reads them (`32`, `512k`);
/// `buffer_size` defaults to `chunk_size`. Words are refused with the fix.
#[test]
fn sizes_read_as_fluent_bit_reads_them() {
    let dry = |props: &str| {
        let dir = Dir::new();
        dir.file(
            "c.conf",
            &format!("[INPUT]\n    name tcp\n{props}[OUTPUT]\n    name stdout\n    match *\n"),
        );
        run(&["-c", "c.conf", "--dry-run"], Some(dir.path()))
    };
    assert_eq!(dry("    chunk_size 512k\n").code, Some(0));
    assert_eq!(
        dry("    chunk_size 128\n").code,
        Some(0),
        "buffer_size follows chunk_size"
    );
    let o = dry("    chunk_size lots\n");
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("c.conf:3") && o.stderr.contains("512k"),
        "{}",
        o.stderr
    );
    let o = dry("    chunk_size 64\n    buffer_size 32\n");
    assert_eq!(o.code, Some(1), "{}", o.stderr);
}
