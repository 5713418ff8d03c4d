//! `http` input: records POSTed with curl, compared byte for byte with Fluent Bit
//! 5.1.1's records and answers for the same requests (tests/data/fluent-bit/http,
//! record times masked); MessagePack bodies, TLS, 413 and 503; hostile clients;
//! configuration errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::pki::Pki;
use common::*;

const T: Duration = Duration::from_secs(30);

fn http_input(dir: &Dir, input: &str, service: &str, output: &str) -> Agent {
    let conf = dir.file(
        "fluent-bit.conf",
        &format!(
            "[SERVICE]\n    flush 0.2\n    grace 2\n{service}\
             [INPUT]\n    name http\n    listen 127.0.0.1\n    port 0\n{input}\
             [OUTPUT]\n{output}"
        ),
    );
    let mut a = Agent::spawn_in(dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_log("listening on", T);
    a
}

fn stdout_output() -> &'static str {
    "    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
}

/// `STATUS BODY` of one curl request, the body's newlines as `|` (the captures' form).
fn curl(args: &[&str]) -> String {
    let o = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    format!("{status} {}", body.replace('\n', "|"))
}

/// The requests of the Fluent Bit capture, in order.
fn capture_requests(port: u16) -> Vec<Vec<String>> {
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let json = "Content-Type: application/json";
    let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        r(&[
            "-H",
            json,
            "-d",
            r#"{"msg":"hello","n":1,"f":1.5,"nested":{"a":[1,2,null,true]}}"#,
            &url("/app.log"),
        ]),
        r(&[
            "-H",
            json,
            "-d",
            r#"[{"i":1},{"i":2,"s":"two"}]"#,
            &url("/"),
        ]),
        r(&[
            "-H",
            "Content-Type: application/json; charset=utf-8",
            "-d",
            r#"{"path":"weird"}"#,
            &url("/a/b-c:d"),
        ]),
        r(&[
            "-H",
            json,
            "-d",
            r#"{"tag":"from.key","m":1}"#,
            &url("/uri.tag"),
        ]),
        r(&[
            "-H",
            json,
            "-d",
            r#"{"tag":"bad tag/x","m":2}"#,
            &url("/uri.tag"),
        ]),
        r(&[
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "-d",
            "a=1&b=two+words%21&c= spaced ",
            &url("/form"),
        ]),
        r(&[
            "-H",
            json,
            "-H",
            "X-Forwarded-For: 10.0.0.1, 10.0.0.2",
            "-d",
            r#"{"xff":1}"#,
            &url("/xff"),
        ]),
        r(&["-H", "Content-Type: text/plain", "-d", "hello", &url("/")]),
        r(&["-d", r#"{"a":1}"#, "-H", "Content-Type:", &url("/")]),
        r(&["-H", json, "-d", r#"{"a":"#, &url("/")]),
        r(&["-H", json, "-d", "42", &url("/")]),
        r(&[&url("/")]),
        r(&["-H", json, "-d", r#"{"u":"\u00e9\t\"q\""}"#, &url("/")]),
    ]
}

fn fluent_bit(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/fluent-bit/http/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn curl_requests_as_fluent_bit() {
    let dir = Dir::new();
    let mut a = http_input(
        &dir,
        "    tag_key tag\n    add_remote_addr on\n",
        "",
        &format!(
            "    name file\n    match *\n    path {}\n    file http_records.out\n",
            dir.path().display()
        ),
    );
    let port = bound_port(&a);
    let out = dir.path().join("http_records.out");
    // Each request's records are written before the next is sent, so that the file's
    // order is the requests' (records of one tag in one flush would be written together).
    let records = [1, 2, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1];
    let mut answers = String::new();
    let mut written = 0;
    for (r, n) in capture_requests(port).iter().zip(records) {
        answers += &(curl(&r.iter().map(String::as_str).collect::<Vec<_>>()) + "\n");
        written += n;
        a.wait_until(T, &format!("{written} records in the file"), |_, _| {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .lines()
                .count()
                == written
        });
    }
    assert_eq!(answers, fluent_bit("responses.txt"));
    a.stop(T);
    let time = regex::Regex::new(r"\[\d+\.\d+, ").unwrap();
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(time.replace_all(&got, "[TIME, "), fluent_bit("records.out"));
}

/// agent's additions: MessagePack bodies (an object, or an array of them), and a POST
/// without a body answered 400 (Fluent Bit 5.1.1 closes the connection unanswered).
#[test]
fn msgpack_bodies_and_empty_posts() {
    let dir = Dir::new();
    let mut a = http_input(
        &dir,
        "    successful_response_code 200\n    success_header X-Custom yes\n",
        "",
        stdout_output(),
    );
    let port = bound_port(&a);
    // {"a":1} then [{"b":"x"},{"c":true}]
    let body = dir.path().join("body.mp");
    std::fs::write(&body, b"\x81\xa1a\x01\x92\x81\xa1b\xa1x\x81\xa1c\xc3").unwrap();
    let url = format!("http://127.0.0.1:{port}/mp");
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "-H",
            "Content-Type: application/msgpack",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(&url)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("x-custom: yes"),
        "{head}"
    );
    assert_eq!(
        curl(&[
            "-H",
            "Content-Type: application/msgpack",
            "--data-binary",
            "\u{1}",
            &url
        ]),
        "400 error: unable to process records|"
    );
    assert_eq!(
        curl(&["-X", "POST", "-H", "Content-Type: application/json", &url]),
        "400 error: no payload found|"
    );
    a.wait_lines(3, T);
    let o = a.stop(T);
    assert_eq!(o.stdout, "{\"a\":1}\n{\"b\":\"x\"}\n{\"c\":true}\n");
}

#[test]
fn tls_with_the_shared_tls_properties() {
    let pki = Pki::new();
    let dir = Dir::new();
    let mut a = http_input(
        &dir,
        &format!(
            "    tls on\n    tls.crt_file {}\n    tls.key_file {}\n",
            pki.path("server.pem"),
            pki.path("server.key")
        ),
        "",
        stdout_output(),
    );
    let port = bound_port(&a);
    let answer = curl(&[
        "--cacert",
        &pki.path("ca.pem"),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"secure":true}"#,
        &format!("https://localhost:{port}/"),
    ]);
    assert_eq!(answer, "201 ");
    a.wait_lines(1, T);
    assert_eq!(a.stop(T).stdout, "{\"secure\":true}\n");
}

/// A body over buffer_max_size is answered 413, declared (Content-Length) or not
/// (chunked), and counted; the next request is served.
#[test]
fn bodies_over_buffer_max_size_get_413() {
    let http = free_port();
    let dir = Dir::new();
    let mut a = http_input(
        &dir,
        "    buffer_max_size 1k\n    buffer_chunk_size 1k\n",
        &format!("    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n"),
        stdout_output(),
    );
    let port = bound_port(&a);
    let url = format!("http://127.0.0.1:{port}/");
    let big = format!("{{\"big\":\"{}\"}}", "x".repeat(4000));
    let json = "Content-Type: application/json";
    assert!(curl(&["-H", json, "-d", &big, &url]).starts_with("413 "));
    assert!(curl(&[
        "-H",
        json,
        "-H",
        "Transfer-Encoding: chunked",
        "-d",
        &big,
        &url
    ])
    .starts_with("413 "));
    assert_eq!(curl(&["-H", json, "-d", r#"{"small":1}"#, &url]), "201 ");
    a.wait_lines(1, T);
    assert_eq!(
        metric(http, "agent_input_dropped_messages_total", "http.0"),
        2
    );
    assert_eq!(a.stop(T).stdout, "{\"small\":1}\n");
}

/// Outputs behind and the input over mem_buf_limit: 503 (nothing taken, the client
/// retries) instead of a hung request; the records taken before were taken whole.
#[test]
fn paused_by_mem_buf_limit_answers_503() {
    let http = free_port();
    let dir = Dir::new();
    // An output that cannot deliver: records stay buffered.
    let dead = free_port();
    let a = http_input(
        &dir,
        "    mem_buf_limit 1k\n",
        &format!("    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n"),
        &format!("    name tcp\n    match *\n    host 127.0.0.1\n    port {dead}\n    retry_limit no_limits\n"),
    );
    let port = bound_port(&a);
    let url = format!("http://127.0.0.1:{port}/");
    let json = "Content-Type: application/json";
    let body = format!("{{\"fill\":\"{}\"}}", "x".repeat(2000));
    assert_eq!(curl(&["-H", json, "-d", &body, &url]), "201 ");
    assert_eq!(
        curl(&["-H", json, "-d", r#"{"more":1}"#, &url]),
        "503 error: deferred ingress queue is full|"
    );
    assert_eq!(metric(http, "fluentbit_input_records_total", "http.0"), 1);
    // The output comes back: the buffered record is delivered and requests are taken.
    let sink = TcpCollector::on_port(dead);
    sink.wait(T, "the buffered record", |c| {
        !c.is_empty() && !c[0].bytes.is_empty()
    });
    let mut answer = String::new();
    for _ in 0..200 {
        answer = curl(&["-H", json, "-d", r#"{"more":2}"#, &url]);
        if answer == "201 " {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answer, "201 ");
    a.stop(T);
}

/// 10,000 idle connections (the cap is 1,024), 1,100 slow clients that never finish a
/// request body, and garbage: a good client keeps being served; memory stays bounded.
#[test]
fn hostile_clients_do_not_lock_out_a_good_one() {
    let http = free_port();
    let dir = Dir::new();
    let mut a = http_input(
        &dir,
        "",
        &format!("    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n"),
        stdout_output(),
    );
    let port = bound_port(&a);
    let url = format!("http://127.0.0.1:{port}/good");
    let json = "Content-Type: application/json";
    let rss_before = rss_kib(a.pid());
    let nofile = std::fs::read_to_string(format!("/proc/{}/limits", std::process::id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .unwrap_or(0);
    if nofile < 12_000 {
        eprintln!("skipped: RLIMIT_NOFILE {nofile} < 12000 for 10,000 client sockets");
        a.stop(T);
        return;
    }
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).unwrap();
    garbage
        .write_all(b"\x00\x01\x02 NOT HTTP AT ALL\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    garbage.set_read_timeout(Some(T)).unwrap();
    let _ = garbage.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    // More slow clients than the cap: a request that never completes is no progress,
    // so they cannot hold the cap either.
    let mut slow = Vec::new();
    for _ in 0..1100 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"a\":";
        s.write_all(head.as_bytes()).unwrap();
        slow.push(s);
    }
    let mut idle = Vec::new();
    for _ in 0..10_000 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    for i in 0..5 {
        assert_eq!(
            curl(&["-H", json, "-d", &format!("{{\"good\":{i}}}"), &url]),
            "201 "
        );
    }
    a.wait_lines(5, T);
    assert!(metric(http, "agent_input_evicted_connections_total", "http.0") > 0);
    let grown = rss_kib(a.pid()).saturating_sub(rss_before);
    eprintln!("RSS grew by {grown} KiB under the crowd");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    drop((idle, slow));
    a.stop(T);
}

#[test]
fn config_errors_name_the_line_and_the_fix() {
    for (prop, want) in [
        ("successful_response_code 202", "200, 201, 204"),
        ("http2 on", "HTTP/1.1"),
        ("success_header X-Only", "NAME VALUE"),
        ("tag_key $a['", "tag_key"),
        ("port 70000", "port"),
    ] {
        let lines = refused_config(&format!(
            "[INPUT]\n    name http\n    {prop}\n[OUTPUT]\n    name null\n    match *\n"
        ));
        let all = lines.join("\n");
        assert!(
            all.contains("fluent-bit.conf:3") && all.contains(want),
            "{prop}: {all}"
        );
    }
}

/// Bodies being read share one budget per input (64 MiB, or two bodies of
/// buffer_max_size): 120 clients that each declare 3 MB and send 2.5 MB of it do not
/// make the agent hold 300 MB; those beyond the budget get 503 at once.
#[test]
fn concurrent_large_bodies_share_a_bounded_budget() {
    let http = free_port();
    let dir = Dir::new();
    let a = http_input(
        &dir,
        "",
        &format!("    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n"),
        stdout_output(),
    );
    let port = bound_port(&a);
    let base = rss_kib(a.pid());
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..120)
        .map(|_| {
            let refused = refused.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
                let head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3000000\r\n\r\n";
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&vec![b' '; 2_500_000]);
                let mut answer = [0u8; 12];
                if s.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 503") {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    let grown = rss_kib(a.pid()).saturating_sub(base) / 1024;
    for c in clients {
        let _ = c.join();
    }
    let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("120 bodies of 3 MB at once: RSS grew {grown} MiB, {refused} answered 503");
    assert!(grown < 150, "RSS grew {grown} MiB");
    assert!(refused >= 90, "{refused} of 120 answered 503");
    a.stop(T);
}

/// Fluent Bit 5's `http_server.*` spellings: `http_server.buffer_max_size` bounds the
/// body as `buffer_max_size` does, `http_server.workers` sizes the runtime, and the
/// others are accepted.
#[test]
fn http_server_spellings_are_fluent_bits() {
    let dir = Dir::new();
    let mut a = http_input(
        &dir,
        "    http_server.buffer_max_size 1k\n    http_server.buffer_chunk_size 1k\n    http_server.workers 3\n    http_server.idle_timeout 10s\n    http_server.max_connections 100\n    http_server.ingress_queue_event_limit 8192\n    http_server.ingress_queue_byte_limit 256M\n",
        "",
        stdout_output(),
    );
    a.wait_log("[engine] runtime threads: 3 (the inputs' workers)", T);
    let port = bound_port(&a);
    let url = format!("http://127.0.0.1:{port}/");
    let big = format!("{{\"big\":\"{}\"}}", "x".repeat(4000));
    let json = "Content-Type: application/json";
    assert!(curl(&["-H", json, "-d", &big, &url]).starts_with("413 "));
    assert_eq!(curl(&["-H", json, "-d", r#"{"small":1}"#, &url]), "201 ");
    a.wait_lines(1, T);
    a.stop(T);
    let lines = refused_config(
        "[INPUT]\n    name http\n    http_server.http2 on\n[OUTPUT]\n    name null\n    match *\n",
    );
    assert!(
        lines[0].contains(":3: [config] http: invalid value 'on' for property 'http_server.http2'"),
        "{lines:?}"
    );
}
