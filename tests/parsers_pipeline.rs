//! Parsers where records enter and in the filters, with the real binary: the `tcp`
//! input's `parser`, tail's `tag_regex`, the `multiline` filter's `partial_message`
//! mode. Expected bytes are Fluent Bit 5.1.1's for the same config and input.

mod common;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

const KV: &str = "[PARSER]\n    name kv\n    format regex\n    regex ^(?<key>[a-z]+)=(?<value>[^ ]*) (?<time>[^ ]+)$\n    time_key time\n    time_format %Y-%m-%dT%H:%M:%S\n";

#[test]
fn tcp_lines_through_a_parser_keep_unmatched_lines_and_add_the_source_after() {
    let d = Dir::new();
    d.file("p.conf", KV);
    let conf = d.file(
        "c.conf",
        "[SERVICE]\n    flush 0.2\n    grace 2\n    parsers_file p.conf\n\
         [INPUT]\n    name tcp\n    listen 127.0.0.1\n    port 0\n    parser kv\n    source_address_key src\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_format iso8601\n",
    );
    let mut a = Agent::spawn_in(&d, &["-c", conf.to_str().unwrap()], Some(d.path()));
    a.wait_log("listening on", T);
    // Fluent Bit switches to line mode and says so.
    assert!(a.stderr().contains(
        "'parser' requires line-delimited payloads; switching format from 'json' to 'none'"
    ));
    let port = bound_port(&a);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let src = format!("tcp://{}", s.local_addr().unwrap());
    s.write_all(b"a=1 2024-03-14T10:00:00\nnot matching line\nb=2 2024-03-14T10:00:01\n")
        .unwrap();
    drop(s);
    a.wait_lines(3, T);
    let o = a.stop(T);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], format!("{{\"date\":\"2024-03-14T10:00:00.000000Z\",\"key\":\"a\",\"value\":\"1\",\"src\":\"{src}\"}}"));
    assert!(
        lines[1].ends_with(&format!(
            "Z\",\"log\":\"not matching line\",\"src\":\"{src}\"}}"
        )),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], format!("{{\"date\":\"2024-03-14T10:00:01.000000Z\",\"key\":\"b\",\"value\":\"2\",\"src\":\"{src}\"}}"));
}

#[test]
fn tag_regex_names_the_tag_from_the_path_and_skips_files_it_does_not_match() {
    let d = Dir::new();
    let id = "0123456789abcdef".repeat(4);
    let logs = d.path().join("containers");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join(format!("web-7d4b9_prod_nginx-{id}.log")),
        "hello\n",
    )
    .unwrap();
    std::fs::write(logs.join("not-a-container.log"), "other\n").unwrap();
    let o = run(
        &["-c", d.file(
            "c.conf",
            &format!(
                "[SERVICE]\n    flush 0.2\n[INPUT]\n    name tail\n    path {}/*.log\n    read_from_head on\n    exit_on_eof on\n    tag kube.<namespace_name>.<pod_name>.<container_name>\n    tag_regex (?<pod_name>[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)_(?<namespace_name>[^_]+)_(?<container_name>.+)-(?<docker_id>[a-z0-9]{{64}})\\.log$\n[OUTPUT]\n    name stdout\n    match kube.*\n",
                logs.display()
            ),
        ).to_str().unwrap()],
        Some(d.path()),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let records: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(records.len(), 1, "{}", o.stdout);
    assert!(
        records[0].starts_with("[0] kube.prod.web-7d4b9.nginx: [["),
        "{}",
        records[0]
    );
    assert!(
        records[0].ends_with(", {}], {\"log\"=>\"hello\"}]"),
        "{}",
        records[0]
    );
    assert!(
        o.stderr.contains("invalid tag_regex pattern for file")
            && o.stderr.contains("not-a-container.log"),
        "{}",
        o.stderr
    );
}

#[test]
fn partial_message_records_are_joined_by_partial_id() {
    let d = Dir::new();
    let conf = d.file(
        "c.conf",
        "[SERVICE]\n    flush 0.2\n    grace 2\n\
         [INPUT]\n    name tcp\n    listen 127.0.0.1\n    port 0\n    tag docker\n\
         [FILTER]\n    name multiline\n    match docker\n    mode partial_message\n    multiline.key_content log\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
    );
    let mut a = Agent::spawn_in(&d, &["-c", conf.to_str().unwrap()], Some(d.path()));
    a.wait_log("listening on", T);
    let port = bound_port(&a);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(concat!(
        r#"{"source":"stdout","log":"one ","partial_message":"true","partial_id":"p1","partial_ordinal":"1","partial_last":"false"}"#,
        r#"{"source":"stdout","log":"whole line"}"#,
        r#"{"source":"stdout","log":"two ","partial_message":"true","partial_id":"p1","partial_ordinal":"2","partial_last":"false"}"#,
        r#"{"source":"stdout","log":"three","partial_message":"true","partial_id":"p1","partial_ordinal":"3","partial_last":"true"}"#,
        "\n"
    ).as_bytes()).unwrap();
    drop(s);
    a.wait_lines(2, T);
    let o = a.stop(T);
    assert_eq!(
        o.stdout,
        "{\"source\":\"stdout\",\"log\":\"whole line\"}\n{\"source\":\"stdout\",\"log\":\"one two three\"}\n"
    );
}
