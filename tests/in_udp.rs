//! `udp` input: datagrams of JSON and of lines from a socket, compared byte for byte
//! with Fluent Bit 5.1.1's records for the same datagrams (tests/data/fluent-bit/udp);
//! hostile senders; configuration errors.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn udp_input(extra: &str, http: Option<u16>) -> Agent {
    let http = http
        .map(|p| format!("    http_server on\n    http_listen 127.0.0.1\n    http_port {p}\n"))
        .unwrap_or_default();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n{http}\
         [INPUT]\n    name udp\n    listen 127.0.0.1\n    port 0\n{extra}\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
    ));
    a.wait_log("listening on", T);
    a
}

fn fluent_bit(case: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/fluent-bit/udp/{case}.out",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The datagrams of the captures, one at a time.
fn send(port: u16, messages: &[&[u8]]) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for m in messages {
        s.send_to(m, ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

#[test]
fn json_datagrams_as_fluent_bit() {
    let mut a = udp_input("    format json\n    source_address_key src\n", None);
    let s = send(
        bound_port(&a),
        &[
            br#"{"a":1,"b":"x"}"#,
            br#"[1,2,"three"]"#,
            br#"{"n":1.5,"t":true,"z":null}{"second":"obj"}"#,
            b"\n{\"lead\":\"newline\"}",
            br#"{"nested":{"k":[1,{"d":-2}]},"u":"\u00e9\n"}"#,
        ],
    );
    a.wait_lines(6, T);
    let o = a.stop(T);
    // Fluent Bit's capture came from port 45999.
    let port = s.local_addr().unwrap().port();
    assert_eq!(
        o.stdout,
        fluent_bit("json").replace("127.0.0.1:45999", &format!("127.0.0.1:{port}"))
    );
}

#[test]
fn line_datagrams_as_fluent_bit() {
    let mut a = udp_input("    format none\n", None);
    send(
        bound_port(&a),
        &[b"hello world\n", b"a\nb\n", b"\rcr first\n", b"tab\there\n"],
    );
    a.wait_lines(5, T);
    let o = a.stop(T);
    assert_eq!(o.stdout, fluent_bit("none"));
}

/// Where agent differs on purpose (README): the end of a datagram ends its last line,
/// empty lines are skipped (Fluent Bit drops an unterminated last line and everything
/// after an empty one), and source_address_key applies to lines too.
#[test]
fn lines_end_with_the_datagram() {
    let mut a = udp_input(
        "    format none\n    separator ;\n    source_address_key src\n",
        None,
    );
    let s = send(bound_port(&a), &[b"one;;two", b"three"]);
    a.wait_lines(3, T);
    let o = a.stop(T);
    let src = format!("udp://{}", s.local_addr().unwrap());
    assert_eq!(
        o.stdout,
        format!("{{\"log\":\"one\",\"src\":\"{src}\"}}\n{{\"log\":\"two\",\"src\":\"{src}\"}}\n{{\"log\":\"three\",\"src\":\"{src}\"}}\n")
    );
}

#[test]
fn parser_makes_the_record() {
    let dir = Dir::new();
    let parsers = dir.file(
        "parsers.conf",
        "[PARSER]\n    name kv\n    format regex\n    regex ^(?<k>\\w+)=(?<v>\\w+)$\n",
    );
    let conf = dir.file(
        "fluent-bit.conf",
        &format!(
            "[SERVICE]\n    flush 0.2\n    grace 2\n    parsers_file {}\n\
             [INPUT]\n    name udp\n    listen 127.0.0.1\n    port 0\n    parser kv\n\
             [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
            parsers.display()
        ),
    );
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log("listening on", T);
    send(bound_port(&a), &[b"a=b\nnot matching\n"]);
    a.wait_lines(2, T);
    let o = a.stop(T);
    assert_eq!(
        o.stdout,
        "{\"k\":\"a\",\"v\":\"b\"}\n{\"log\":\"not matching\"}\n"
    );
    assert!(
        o.stderr.contains("switching format from 'json' to 'none'"),
        "{}",
        o.stderr
    );
}

/// Bad JSON and datagrams larger than buffer_size are dropped whole, counted, and
/// logged at a limited rate; good datagrams around them arrive.
#[test]
fn garbage_and_oversized_datagrams_are_counted() {
    let http = free_port();
    let mut a = udp_input("    chunk_size 1\n    buffer_size 2\n", Some(http));
    let port = bound_port(&a);
    let rss_before = rss_kib(a.pid());
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(br#"{"first":1}"#, ("127.0.0.1", port)).unwrap();
    for i in 0..300 {
        let bad: &[u8] = match i % 3 {
            0 => b"{\"unterminated\":",
            1 => b"42",
            _ => &[b'{'; 3000],
        };
        s.send_to(bad, ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    s.send_to(br#"{"last":2}"#, ("127.0.0.1", port)).unwrap();
    a.wait_lines(2, T);
    a.wait_until(T, "300 drops counted", |_, _| {
        metric(http, "agent_input_dropped_messages_total", "udp.0") == 300
    });
    assert!(rss_kib(a.pid()).saturating_sub(rss_before) < 10 * 1024);
    let o = a.stop(T);
    assert_eq!(o.stdout, "{\"first\":1}\n{\"last\":2}\n");
    let warnings = o
        .stderr
        .lines()
        .filter(|l| l.contains("[input:udp:udp.0]") && l.contains("dropped"))
        .count();
    assert!((1..=3).contains(&warnings), "{}", o.stderr);
}

#[test]
fn config_errors_name_the_line_and_the_fix() {
    for (prop, want) in [
        ("format yaml", "format"),
        ("chunk_size lots", "chunk_size"),
        ("tls on", "tls"),
        ("workers 4", "workers"),
        ("parser nope", "nope"),
    ] {
        let lines = refused_config(&format!(
            "[INPUT]\n    name udp\n    {prop}\n[OUTPUT]\n    name null\n    match *\n"
        ));
        let all = lines.join("\n");
        assert!(
            all.contains("fluent-bit.conf:3") && all.contains(want),
            "{prop}: {all}"
        );
    }
}
