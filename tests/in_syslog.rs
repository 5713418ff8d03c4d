//! `syslog` input: messages from util-linux `logger` over UDP, TCP (newline and octet
//! counting) and Unix sockets, compared byte for byte with Fluent Bit 5.1.1's records
//! for the same `logger` commands (tests/data/fluent-bit/syslog, times and the host
//! name masked); hostile clients; configuration errors.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn parsers_file() -> String {
    format!("{}/conf/parsers.conf", env!("CARGO_MANIFEST_DIR"))
}

fn syslog_input(dir: &Dir, extra: &str, http: Option<u16>) -> Agent {
    let http = http
        .map(|p| format!("    http_server on\n    http_listen 127.0.0.1\n    http_port {p}\n"))
        .unwrap_or_default();
    let conf = dir.file(
        "fluent-bit.conf",
        &format!(
            "[SERVICE]\n    flush 0.2\n    grace 2\n    parsers_file {}\n{http}\
             [INPUT]\n    name syslog\n    listen 127.0.0.1\n    port 0\n{extra}\
             [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
            parsers_file()
        ),
    );
    let mut a = Agent::spawn_in(dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log("listening on", T);
    a
}

/// Fluent Bit's capture masks: message times, the host name.
fn mask(text: &str) -> String {
    let t5424 = regex::Regex::new(r"\d{4}-\d\d-\d\dT[\d:.]+[+-]\d\d:\d\d").unwrap();
    let t3164 = regex::Regex::new(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d").unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host =
        regex::Regex::new(&format!(r#"([" ]){}([" ])"#, regex::escape(host.trim()))).unwrap();
    let text = t5424.replace_all(text, "TIME");
    let text = t3164.replace_all(&text, "TIME");
    host.replace_all(&text, "${1}HOSTNAME${2}").into_owned()
}

/// The three `logger` messages of the captures, each written out before the next is
/// sent (each `logger` is a connection of its own: their order is not the server's).
fn logger(a: &mut Agent, target: &[String], flags: &[&str]) {
    let messages: [&[&str]; 3] = [
        &["-t", "myapp", "hello from logger"],
        &["-t", "myapp", "--id=4242", "second message, with pid"],
        &[
            "-t",
            "my.app",
            "-p",
            "local3.warning",
            "quotes \" and \\ backslash é",
        ],
    ];
    for (i, m) in messages.into_iter().enumerate() {
        let s = Command::new("logger")
            .args(target)
            .args(flags)
            .args(m)
            .status()
            .expect("logger (util-linux)");
        assert!(s.success());
        a.wait_lines(i + 1, T);
    }
}

fn compare_with_fluent_bit(mode: &str, extra: &str, flags: &[&str], case: &str) {
    let dir = Dir::new();
    let sock = dir.path().join("sys.sock");
    let mut a = syslog_input(
        &dir,
        &format!(
            "    mode {mode}\n    path {}\n    raw_message_key raw\n{extra}",
            sock.display()
        ),
        None,
    );
    let target: Vec<String> = match mode {
        "udp" => vec![
            "--server".into(),
            "127.0.0.1".into(),
            "--port".into(),
            bound_port(&a).to_string(),
            "--udp".into(),
        ],
        "tcp" => vec![
            "--server".into(),
            "127.0.0.1".into(),
            "--port".into(),
            bound_port(&a).to_string(),
            "--tcp".into(),
        ],
        _ => {
            // Fluent Bit's default unix_perm.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o644);
            vec!["-u".into(), sock.display().to_string()]
        }
    };
    logger(&mut a, &target, flags);
    let o = a.stop(T);
    let want = std::fs::read_to_string(format!(
        "{}/tests/data/fluent-bit/syslog/{case}.out",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(mask(&o.stdout), want, "{}", o.stderr);
}

#[test]
fn udp_rfc5424_as_fluent_bit() {
    compare_with_fluent_bit("udp", "", &["--rfc5424=notq"], "udp_rfc5424");
}

#[test]
fn tcp_rfc5424_as_fluent_bit() {
    compare_with_fluent_bit("tcp", "", &["--rfc5424"], "tcp_rfc5424");
}

#[test]
fn tcp_octet_counting_as_fluent_bit() {
    compare_with_fluent_bit(
        "tcp",
        "    format octet_counting\n",
        &["--rfc5424", "--octet-count"],
        "tcp_octet_rfc5424",
    );
}

#[test]
fn udp_rfc3164_as_fluent_bit() {
    compare_with_fluent_bit(
        "udp",
        "    parser syslog-rfc3164\n",
        &["--rfc3164"],
        "udp_rfc3164",
    );
}

#[test]
fn unix_udp_default_parser_as_fluent_bit() {
    compare_with_fluent_bit("unix_udp", "", &["--rfc3164"], "unix_udp_rfc3164_local");
}

#[test]
fn unix_tcp_rfc3164_as_fluent_bit() {
    compare_with_fluent_bit(
        "unix_tcp",
        "    parser syslog-rfc3164\n",
        &["--rfc3164"],
        "unix_tcp_rfc3164",
    );
}

#[test]
fn source_address_and_the_message_time() {
    let dir = Dir::new();
    let mut a = syslog_input(&dir, "    mode udp\n    source_address_key src\n", None);
    let port = bound_port(&a);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = s.local_addr().unwrap();
    s.send_to(
        b"<13>1 2003-10-11T22:14:15.003Z h app 1 - - hi",
        ("127.0.0.1", port),
    )
    .unwrap();
    a.wait_lines(1, T);
    let o = a.stop(T);
    assert_eq!(
        o.stdout,
        format!("{{\"pri\":\"13\",\"time\":\"2003-10-11T22:14:15.003Z\",\"host\":\"h\",\"ident\":\"app\",\"pid\":\"1\",\"msgid\":\"-\",\"extradata\":\"-\",\"message\":\"hi\",\"src\":\"udp://{local}\"}}\n")
    );
}

/// Garbage and oversized datagrams are dropped and counted; a stream client that sends
/// a line longer than buffer_max_size is closed and counted; good clients keep being
/// served, before and after, and memory stays bounded.
#[test]
fn hostile_clients_are_counted_and_good_ones_served() {
    let http = free_port();
    let dir = Dir::new();
    let mut udp = syslog_input(&dir, "    mode udp\n    buffer_chunk_size 1k\n", Some(http));
    let port = bound_port(&udp);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = b"<13>1 2003-10-11T22:14:15.003Z h app 1 - - good";
    // Paced, so that the kernel's receive buffer drops none of them.
    for _ in 0..200 {
        s.send_to(b"\x00\xffnot syslog at all", ("127.0.0.1", port))
            .unwrap();
        s.send_to(&[b'x'; 4000], ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    s.send_to(good, ("127.0.0.1", port)).unwrap();
    udp.wait_lines(1, T);
    udp.wait_until(T, "400 drops counted", |_, _| {
        metric(http, "agent_input_dropped_messages_total", "syslog.0") == 400
    });
    let o = udp.stop(T);
    assert_eq!(o.stdout.lines().count(), 1);
    // Logged at a limited rate, not once per datagram.
    let warnings = o
        .stderr
        .lines()
        .filter(|l| l.contains("[input:syslog:syslog.0]") && l.contains("warn"))
        .count();
    assert!(warnings <= 3, "{}", o.stderr);

    let http = free_port();
    let dir = Dir::new();
    let mut tcp = syslog_input(
        &dir,
        "    mode tcp\n    buffer_chunk_size 1k\n    buffer_max_size 4k\n",
        Some(http),
    );
    let port = bound_port(&tcp);
    let rss_before = rss_kib(tcp.pid());
    let mut hogs = Vec::new();
    for _ in 0..50 {
        let mut h = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Never ends its line: closed at buffer_max_size.
        let _ = h.write_all(&[b'y'; 64 * 1024]);
        hogs.push(h);
    }
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"<13>1 2003-10-11T22:14:15.003Z h app 1 - - good one\n")
        .unwrap();
    tcp.wait_lines(1, T);
    tcp.wait_until(T, "50 rejections counted", |_, _| {
        metric(http, "agent_input_rejected_connections_total", "syslog.0") == 50
    });
    c.write_all(b"<13>1 2003-10-11T22:14:15.003Z h app 1 - - good two\n")
        .unwrap();
    tcp.wait_lines(2, T);
    let grown = rss_kib(tcp.pid()).saturating_sub(rss_before);
    eprintln!("RSS grew by {grown} KiB under the crowd");
    assert!(grown < 20 * 1024, "RSS grew by {grown} KiB");
    drop((hogs, c));
    tcp.stop(T);
}

#[test]
fn config_errors_name_the_line_and_the_fix() {
    let lines = refused_config(
        "[INPUT]\n    name syslog\n    mode udpp\n[OUTPUT]\n    name null\n    match *\n",
    );
    let all = lines.join("\n");
    assert!(
        all.contains("fluent-bit.conf:3") && all.contains("mode") && all.contains("unix_tcp"),
        "{all}"
    );

    let lines = refused_config(
        "[INPUT]\n    name syslog\n    mode unix_tcp\n[OUTPUT]\n    name null\n    match *\n",
    );
    let all = lines.join("\n");
    assert!(
        all.contains("fluent-bit.conf:3") && all.contains("'path'"),
        "{all}"
    );

    // Fluent Bit's default parser must be defined, as in Fluent Bit: the error says where.
    let lines = refused_config(
        "[INPUT]\n    name syslog\n    mode udp\n[OUTPUT]\n    name null\n    match *\n",
    );
    let all = lines.join("\n");
    assert!(
        all.contains("fluent-bit.conf:1")
            && all.contains("syslog-rfc5424")
            && all.contains("parsers_file"),
        "{all}"
    );

    let lines = refused_config(
        "[INPUT]\n    name syslog\n    mode udp\n    tls on\n    parser x\n[OUTPUT]\n    name null\n    match *\n",
    );
    assert!(lines.join("\n").contains("fluent-bit.conf:"), "{lines:?}");
}
