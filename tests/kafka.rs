//! The `kafka` output and input against a real Kafka-protocol broker (tansu, storing in
//! SQLite), read back and fed by an independent client (confluent-kafka, librdkafka 2.x).
//!
//! - messages as Fluent Bit's out_kafka writes them: json with `@timestamp` first,
//!   msgpack, raw; keys from `message_key_field`/`message_key`; topics from `topic_key`
//!   and `dynamic_topic`;
//! - records as Fluent Bit's in_kafka makes them, `format json` and `none`;
//! - the broker killed and restarted during a 100,000-record stream: every record arrives;
//! - a consumer killed before its outputs delivered: nothing lost, another agent in the
//!   group reads it again; two consumers, one killed: the survivor takes its partitions
//!   (with a replacement joining; alone with cooperative-sticky when it is the leader);
//! - brokers that are not there: one log line with the fix, records kept and delivered
//!   when the broker comes;
//! - TLS (through a TLS front: tansu 0.6.0 does not serve TLS itself) and SASL
//!   SCRAM-SHA-512/256 logins for both plugins; a wrong password or CA said once with
//!   the setting to fix, records kept until it is fixed;
//! - config errors at their line.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kafka::{needs, Broker, Message, Security};
use common::pki::Pki;
use common::{log_lines, refused_config, Agent, Dir};

const FIXED: &str =
    "    start_time_sec 1700000000\n    start_time_nsec 123456789\n    fixed_timestamp on\n";

#[test]
fn messages_are_written_as_fluent_bit_writes_them() {
    let Some(bin) = needs() else { return };
    let broker = Broker::start(&bin);
    for t in [
        "t-json",
        "t-msgpack",
        "t-raw",
        "t-gelf",
        "t-default",
        "audit",
        "t-fallback",
        "dyn-topic",
    ] {
        broker.create_topic(t, 1);
    }
    let b = broker.addr();
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name dummy\n    tag app\n    samples 2\n{FIXED}\
         \x20   dummy {{\"message\":\"hello \u{e9}\",\"n\":1,\"svc\":\"billing\",\"dest\":\"audit\",\"dyn\":\"dyn-topic\"}}\n\
         [OUTPUT]\n    name kafka\n    match app\n    brokers {b}\n    topics t-json\n    message_key_field svc\n\
         [OUTPUT]\n    name kafka\n    match app\n    brokers {b}\n    topics t-msgpack\n    format msgpack\n    message_key fixed-key\n    timestamp_format iso8601\n\
         [OUTPUT]\n    name kafka\n    match app\n    brokers {b}\n    topics t-raw\n    format raw\n    raw_log_key message\n\
         [OUTPUT]\n    name kafka\n    match app\n    brokers {b}\n    topics t-gelf\n    format gelf\n    gelf_short_message_key message\n    gelf_host_key svc\n\
         [OUTPUT]\n    name kafka\n    match app\n    brokers {b}\n    topics t-default,audit\n    topic_key dest\n    timestamp_key ts\n    timestamp_format iso8601_ns\n\
         [OUTPUT]\n    name kafka\n    match app\n    brokers {b}\n    topics t-fallback\n    topic_key dyn\n\
         [OUTPUT]\n    name kafka\n    match app\n    brokers {b}\n    topics t-default\n    topic_key dyn\n    dynamic_topic on\n"
    );
    let agent = Agent::start(&conf);
    let q = Duration::from_secs(10);
    let json = broker.consume("t-json", 2, q);
    let msgpack = broker.consume("t-msgpack", 2, q);
    let raw = broker.consume("t-raw", 2, q);
    let gelf = broker.consume("t-gelf", 2, q);
    let audit = broker.consume("audit", 2, q);
    let fallback = broker.consume("t-fallback", 2, q);
    let dynamic = broker.consume("dyn-topic", 4, Duration::from_secs(3));
    let out = agent.stop(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // Fluent Bit's produce_message + flb_msgpack_raw_to_json_sds: the timestamp key first
    // as %.16g, non-ASCII escaped (json.escape_unicode on).
    let body =
        r#""message":"hello \u00e9","n":1,"svc":"billing","dest":"audit","dyn":"dyn-topic"}"#;
    assert_eq!(json.len(), 2, "{json:?}");
    for m in &json {
        assert_eq!(
            m.text(),
            format!("{{\"@timestamp\":1700000000.123457,{body}")
        );
        assert_eq!(m.key.as_deref(), Some("billing"));
    }
    // msgpack: the same map, the time as an iso8601 string (microseconds).
    assert_eq!(msgpack.len(), 2);
    let decoded = python_msgpack(&msgpack[0].value);
    assert_eq!(
        decoded,
        r#"{"@timestamp": "2023-11-14T22:13:20.123456Z", "message": "hello \u00e9", "n": 1, "svc": "billing", "dest": "audit", "dyn": "dyn-topic"}"#
    );
    assert_eq!(msgpack[0].key.as_deref(), Some("fixed-key"));
    // raw: the key's string alone, unescaped.
    assert_eq!(raw.len(), 2);
    assert_eq!(raw[0].value, "hello é".as_bytes());
    assert_eq!(raw[0].key, None);
    // gelf: Fluent Bit's GELF writer (tests/data/fluent-bit/http/gelf*.expected pin it).
    assert_eq!(gelf.len(), 2, "{}\n{}", out.stderr, broker.log());
    assert_eq!(
        gelf[0].text(),
        r#"{"version":"1.1", "short_message":"hello \u00e9", "_n":1, "host":"billing", "_dest":"audit", "_dyn":"dyn-topic", "timestamp":1700000000.123}"#
    );
    // topic_key naming one of `topics`; iso8601_ns under another key.
    assert_eq!(audit.len(), 2);
    assert_eq!(
        audit[0].text(),
        format!("{{\"ts\":\"2023-11-14T22:13:20.123456789Z\",{body}")
    );
    // A name not in `topics` without dynamic_topic: the first topic.
    assert_eq!(fallback.len(), 2);
    // With dynamic_topic the record's own topic, only from the dynamic output.
    assert_eq!(dynamic.len(), 2, "{dynamic:?}");
}

/// Decodes msgpack with Python's msgpack (an independent decoder) and prints it as JSON.
fn python_msgpack(bytes: &[u8]) -> String {
    let d = Dir::new();
    let f = d.file("m.bin", "");
    std::fs::write(&f, bytes).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,msgpack,sys; print(json.dumps(msgpack.unpackb(open(sys.argv[1],'rb').read(), raw=False)))",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn input_records_are_laid_out_as_fluent_bit_makes_them() {
    let Some(bin) = needs() else { return };
    let broker = Broker::start(&bin);
    broker.create_topic("in-json", 1);
    broker.create_topic("in-none", 1);
    let msgs = "k1\t{\"a\":1,\"b\":[true,null]}\nnot json at all\n\"a string\"\n";
    broker.produce("in-json", msgs);
    broker.produce("in-none", "k2\t{\"a\":1}\n");
    let b = broker.addr();
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name kafka\n    tag kj\n    brokers {b}\n    topics in-json\n    format json\n    group_id g-json\n    rdkafka.auto.offset.reset earliest\n\
         [INPUT]\n    name kafka\n    tag kn\n    brokers {b}\n    topics in-none\n    group_id g-none\n    rdkafka.auto.offset.reset earliest\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n"
    ));
    agent.wait_lines(4, Duration::from_secs(30));
    let out = agent.stop(Duration::from_secs(10));
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            r#"{"topic":"in-json","partition":0,"offset":0,"error":null,"key":"k1","payload":{"a":1,"b":[true,null]}}"#,
            r#"{"topic":"in-json","partition":0,"offset":1,"error":null,"key":null,"payload":"not json at all"}"#,
            r#"{"topic":"in-json","partition":0,"offset":2,"error":null,"key":null,"payload":"a string"}"#,
            r#"{"topic":"in-none","partition":0,"offset":0,"error":null,"key":"k2","payload":"{\"a\":1}"}"#,
        ],
        "{}",
        out.stderr
    );
}

fn seqs(msgs: &[Message]) -> (BTreeSet<u64>, usize) {
    let mut set = BTreeSet::new();
    let mut dup = 0;
    for m in msgs {
        let n: u64 = m.text().trim_start_matches("seq ").parse().unwrap();
        if !set.insert(n) {
            dup += 1;
        }
    }
    (set, dup)
}

#[test]
fn a_broker_killed_and_restarted_mid_stream_loses_nothing() {
    let Some(bin) = needs() else { return };
    let mut broker = Broker::start(&bin);
    broker.create_topic("stream", 3);
    let d = Dir::new();
    let log = d.file("app.log", "");
    let http = common::free_port();
    let agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 10\n    http_server on\n    http_port {http}\n\
         [INPUT]\n    name tail\n    path {}\n    read_from_head on\n    refresh_interval 1\n\
         [OUTPUT]\n    name kafka\n    match *\n    brokers {}\n    topics stream\n    format raw\n    raw_log_key log\n\
         \x20   retry_limit no_limits\n    rdkafka.message.timeout.ms 4000\n",
        log.display(),
        broker.addr()
    ));
    const N: u64 = 100_000;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for batch in 0..100u64 {
        let mut s = String::new();
        for i in batch * 1000..(batch + 1) * 1000 {
            s.push_str(&format!("seq {i}\n"));
        }
        f.write_all(s.as_bytes()).unwrap();
        if batch == 30 {
            broker.kill();
        }
        if batch == 70 {
            std::thread::sleep(Duration::from_secs(3));
            broker.restart();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = broker.consume("stream", N as usize * 2, Duration::from_secs(20));
    let (set, dup) = seqs(&got);
    let missing: Vec<u64> = (0..N).filter(|n| !set.contains(n)).take(10).collect();
    let (_, metrics) = common::http_get(http, "/api/v1/metrics/prometheus").unwrap();
    let resent = metrics
        .lines()
        .find(|l| l.starts_with("agent_output_kafka_resent_records_total"))
        .unwrap_or("")
        .to_string();
    let out = agent.stop(Duration::from_secs(15));
    assert!(
        missing.is_empty(),
        "{} of {N} arrived, first missing {missing:?}\n{}",
        set.len(),
        out.stderr
    );
    eprintln!("100000 records through a broker restart: {dup} duplicates; {resent}");
    let lines = log_lines(&out.stderr);
    let unreachable = lines
        .iter()
        .filter(|l| l.contains("cannot reach the brokers"))
        .count();
    assert!(unreachable >= 1, "{lines:#?}");
}

#[test]
fn offsets_are_committed_only_after_delivery() {
    let Some(bin) = needs() else { return };
    let broker = Broker::start(&bin);
    broker.create_topic("work", 2);
    let lines: String = (0..500).map(|i| format!("seq {i}\n")).collect();
    broker.produce("work", &lines);
    let b = broker.addr();
    let down = common::free_port();
    // The output's destination is down: records are read, not delivered, never committed.
    let mut first = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 1\n\
         [INPUT]\n    name kafka\n    brokers {b}\n    topics work\n    group_id workers\n    rdkafka.auto.offset.reset earliest\n\
         [OUTPUT]\n    name http\n    match *\n    host 127.0.0.1\n    port {down}\n    retry_limit no_limits\n"
    ));
    first.wait_log("partitions assigned", Duration::from_secs(30));
    first.wait_until(Duration::from_secs(30), "a failed flush", |_, e| {
        e.contains("127.0.0.1") && e.contains("retry")
    });
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(10));
    // The next member of the group reads all of them again.
    let mut second = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name kafka\n    brokers {b}\n    topics work\n    group_id workers\n    rdkafka.auto.offset.reset earliest\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ));
    second.wait_lines(500, Duration::from_secs(60));
    // Its own deliveries are committed: a third member finds nothing left.
    let out = second.stop(Duration::from_secs(10));
    let got: BTreeSet<String> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got.len(), 500, "{}", out.stderr);
    let mut third = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n\
         [INPUT]\n    name kafka\n    brokers {b}\n    topics work\n    group_id workers\n    rdkafka.auto.offset.reset earliest\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ));
    third.wait_log("partitions assigned", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let out = third.stop(Duration::from_secs(10));
    assert_eq!(
        out.stdout, "",
        "committed offsets were not honoured:\n{}",
        out.stderr
    );
}

/// A kafka input in the group `pair` on topic `shared` (6 s sessions), printing
/// json_lines; `extra`: more `rdkafka.*` lines.
fn group_member(brokers: &str, name: &str, extra: &str) -> Agent {
    Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name kafka\n    alias {name}\n    brokers {brokers}\n    topics shared\n    group_id pair\n\
         \x20   rdkafka.auto.offset.reset earliest\n    rdkafka.session.timeout.ms 6000\n    rdkafka.heartbeat.interval.ms 500\n{extra}\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ))
}

/// `(partition, N)` of each `seq N` record a kafka input printed.
fn payloads(stdout: &str) -> Vec<(i64, u32)> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let seq = v["payload"].as_str().unwrap().trim_start_matches("seq ");
            (v["partition"].as_i64().unwrap(), seq.parse().unwrap())
        })
        .collect()
}

/// With Apache Kafka the survivor alone takes the killed member's partitions once its
/// session times out. tansu 0.6 expires the dead member but answers the survivor's next
/// SyncGroup with its previous assignment, so here the handover happens at the next
/// rebalance: a replacement member joining (as a restarted pod does).
#[test]
fn a_killed_group_member_hands_its_partitions_over() {
    let Some(bin) = needs() else { return };
    let broker = Broker::start(&bin);
    broker.create_topic("shared", 4);
    let b = broker.addr();
    let member = |name: &str| group_member(&b, name, "");
    let mut a = member("a");
    a.wait_log("partitions assigned", Duration::from_secs(30));
    let mut b_agent = member("b");
    // Both hold partitions once the group has rebalanced.
    b_agent.wait_log("partitions assigned: shared", Duration::from_secs(60));
    a.wait_until(
        Duration::from_secs(60),
        "a's share after the rebalance",
        |_, e| e.matches("partitions assigned").count() >= 2,
    );
    let keyed: String = (0..400).map(|i| format!("k{i}\tseq {i}\n")).collect();
    broker.produce("shared", &keyed);
    a.wait_until(Duration::from_secs(30), "a's first records", |o, _| {
        !o.is_empty()
    });
    b_agent.wait_until(Duration::from_secs(30), "b's first records", |o, _| {
        !o.is_empty()
    });
    a.signal(libc::SIGKILL);
    a.wait(Duration::from_secs(10));
    let a_out = a.stdout();
    let more: String = (400..800).map(|i| format!("k{i}\tseq {i}\n")).collect();
    broker.produce("shared", &more);
    let c = member("c");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut all: BTreeSet<u32> = payloads(&a_out).into_iter().map(|(_, n)| n).collect();
        all.extend(payloads(&b_agent.stdout()).into_iter().map(|(_, n)| n));
        all.extend(payloads(&c.stdout()).into_iter().map(|(_, n)| n));
        if all.len() == 800 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 800 records read by the group\nb: {}\nc: {}",
            all.len(),
            b_agent.stderr(),
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let b_out = b_agent.stop(Duration::from_secs(10));
    let c_out = c.stop(Duration::from_secs(10));
    // Every partition was read after the kill by a live member.
    let after: BTreeSet<i64> = payloads(&b_out.stdout)
        .into_iter()
        .chain(payloads(&c_out.stdout))
        .filter(|(_, n)| *n >= 400)
        .map(|(part, _)| part)
        .collect();
    assert_eq!(after.len(), 4, "partitions read after the kill: {after:?}");
}

/// With `partition.assignment.strategy cooperative-sticky` (incremental rebalancing) the
/// group leader, surviving, alone takes a killed member's partitions with tansu 0.6 too:
/// the sticky assignor's member metadata carries the member's assignment and generation,
/// so the survivor's JoinGroup differs from the one tansu stored and starts a new
/// generation whose assignment tansu keeps. (When the leader is the one killed, tansu
/// 0.6 keeps the dead member as leader and the survivor is left with nothing: see
/// README, Kafka.)
#[test]
fn with_cooperative_sticky_a_surviving_leader_takes_a_killed_members_partitions() {
    let Some(bin) = needs() else { return };
    let broker = Broker::start(&bin);
    broker.create_topic("shared", 4);
    let b = broker.addr();
    let sticky = "    rdkafka.partition.assignment.strategy cooperative-sticky\n";
    // The first member is the group's leader.
    let mut leader = group_member(&b, "a", sticky);
    leader.wait_log("partitions assigned", Duration::from_secs(30));
    let mut other = group_member(&b, "b", sticky);
    // The second member holds partitions once the leader gave some up.
    other.wait_log("partitions assigned: shared", Duration::from_secs(60));
    leader.wait_log("partitions revoked: shared", Duration::from_secs(30));
    let keyed: String = (0..400).map(|i| format!("k{i}\tseq {i}\n")).collect();
    broker.produce("shared", &keyed);
    for m in [&mut leader, &mut other] {
        m.wait_until(Duration::from_secs(30), "its first records", |o, _| {
            !o.is_empty()
        });
    }
    other.signal(libc::SIGKILL);
    other.wait(Duration::from_secs(10));
    let other_out = other.stdout();
    let more: String = (400..800).map(|i| format!("k{i}\tseq {i}\n")).collect();
    broker.produce("shared", &more);
    // No one joins: once the killed member's session (6 s) expired, the leader reads
    // every record it did not, from all four partitions.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut all: BTreeSet<u32> = payloads(&other_out).into_iter().map(|(_, n)| n).collect();
        all.extend(payloads(&leader.stdout()).into_iter().map(|(_, n)| n));
        if all.len() == 800 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 800 records read by the group\n{}",
            all.len(),
            leader.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = leader.stop(Duration::from_secs(10));
    let after: BTreeSet<i64> = payloads(&out.stdout)
        .into_iter()
        .filter(|(_, n)| *n >= 400)
        .map(|(part, _)| part)
        .collect();
    assert_eq!(
        after.len(),
        4,
        "partitions read after the kill: {after:?}\n{}",
        out.stderr
    );
    // Incrementally: the leader kept its own partitions and was given the others.
    assert!(
        log_lines(&out.stderr)
            .iter()
            .filter(|l| l.contains("partitions assigned: shared"))
            .count()
            >= 2,
        "{}",
        out.stderr
    );
}

#[test]
fn absent_brokers_are_said_once_and_records_wait_for_them() {
    let Some(bin) = needs() else { return };
    let port = common::free_port();
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name dummy\n    samples 5\n    dummy {{\"m\":\"x\"}}\n\
         [OUTPUT]\n    name kafka\n    match *\n    brokers 127.0.0.1:{port}\n    topics late\n    retry_limit no_limits\n"
    ));
    agent.wait_log("cannot reach the brokers", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(4));
    let said = log_lines(&agent.stderr())
        .iter()
        .filter(|l| l.contains("cannot reach the brokers"))
        .count();
    assert_eq!(said, 1, "{}", agent.stderr());
    let line = log_lines(&agent.stderr())
        .into_iter()
        .find(|l| l.contains("cannot reach the brokers"))
        .unwrap();
    assert!(
        line.starts_with("[error] [output:kafka:kafka.0] cannot reach the brokers '127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("check 'brokers'"), "{line}");
    // The broker comes: the five records were kept and are delivered.
    let broker = Broker::start_on(&bin, port);
    broker.create_topic("late", 1);
    let got = broker.consume("late", 5, Duration::from_secs(30));
    assert_eq!(got.len(), 5);
    agent.wait_log("acknowledge messages again", Duration::from_secs(30));
    let out = agent.stop(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// How many log lines hold `text`.
fn said(agent: &Agent, text: &str) -> usize {
    log_lines(&agent.stderr())
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

#[test]
fn a_missing_topic_and_a_refused_login_are_said_once_with_the_fix() {
    let Some(bin) = needs() else { return };
    let broker = Broker::start(&bin);
    let b = broker.addr();
    // tansu does not create topics on use: the records wait for the topic.
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name dummy\n    samples 3\n    dummy {{\"m\":\"x\"}}\n\
         [OUTPUT]\n    name kafka\n    match *\n    brokers {b}\n    topics not-yet\n    retry_limit no_limits\n"
    ));
    agent.wait_log("does not exist", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        said(&agent, "topic 'not-yet' does not exist"),
        1,
        "{}",
        agent.stderr()
    );
    assert!(agent.stderr().contains("create it"), "{}", agent.stderr());
    broker.create_topic("not-yet", 1);
    assert_eq!(
        broker.consume("not-yet", 3, Duration::from_secs(60)).len(),
        3,
        "{}",
        agent.stderr()
    );
    agent.stop(Duration::from_secs(10));

    // SASL towards a broker that does not authenticate: refused, said once.
    let agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 1\n\
         [INPUT]\n    name dummy\n    samples 1\n\
         [OUTPUT]\n    name kafka\n    match *\n    brokers {b}\n    topics not-yet\n\
         \x20   rdkafka.security.protocol sasl_plaintext\n    rdkafka.sasl.mechanism PLAIN\n\
         \x20   rdkafka.sasl.username u\n    rdkafka.sasl.password p\n"
    ));
    let mut agent = agent;
    agent.wait_log("authentication with", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));
    let lines = log_lines(&agent.stderr());
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("[error] [output:kafka"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("check rdkafka.security.protocol, rdkafka.sasl.mechanism"),
        "{}",
        errors[0]
    );
    agent.stop(Duration::from_secs(10));
}

#[test]
fn config_errors_name_the_line_and_the_fix() {
    let lines = refused_config(
        "[INPUT]\n    name dummy\n[OUTPUT]\n    name kafka\n    match *\n    topics x\n",
    );
    assert_eq!(
        lines[0], "[error] fluent-bit.conf:3: [config] kafka: no brokers defined",
        "{lines:#?}"
    );
    assert_eq!(
        lines[1],
        "[ help] add 'brokers host:9092' (comma-separated for several)"
    );

    let lines = refused_config(
        "[INPUT]\n    name dummy\n[OUTPUT]\n    name kafka\n    match *\n    brokers b:9092\n    rdkafka.request.required.acks 1\n    rdkafka.no.such.setting 1\n",
    );
    assert!(
        lines[0].starts_with("[error] fluent-bit.conf:8: [config] kafka: rdkafka.no.such.setting: No such configuration property"),
        "{lines:#?}"
    );

    let lines = refused_config(
        "[INPUT]\n    name dummy\n[OUTPUT]\n    name kafka\n    match *\n    brokers b:9092\n    rdkafka.compression.codec bzip9\n",
    );
    assert!(
        lines[0].starts_with("[error] fluent-bit.conf:7: [config] kafka: rdkafka.compression.codec: Invalid value \"bzip9\""),
        "{lines:#?}"
    );

    let lines = refused_config(
        "[INPUT]\n    name dummy\n[OUTPUT]\n    name kafka\n    match *\n    brokers b:9092\n    format raw\n",
    );
    assert_eq!(
        lines[0],
        "[error] fluent-bit.conf:7: [config] kafka: format raw sends one key's value: 'raw_log_key' is not set",
        "{lines:#?}"
    );

    let lines = refused_config(
        "[INPUT]\n    name kafka\n    brokers b:9092\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    assert_eq!(
        lines[0], "[error] fluent-bit.conf:1: [config] kafka: no topics specified",
        "{lines:#?}"
    );

    // A dry run checks the settings and connects to nothing.
    let d = Dir::new();
    d.file(
        "c.conf",
        "[INPUT]\n    name kafka\n    brokers 127.0.0.1:1\n    topics a\n[OUTPUT]\n    name kafka\n    match *\n    brokers 127.0.0.1:1\n    rdkafka.log.connection.close false\n    rdkafka.queue.buffering.max.kbytes 10240\n",
    );
    let o = common::run(&["-c", "c.conf", "--dry-run"], Some(d.path()));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(!o.stderr.contains("cannot reach"), "{}", o.stderr);
}

/// The `[error]` lines of one plugin instance (e.g. `[output:kafka`).
fn errors_of(agent: &Agent, prefix: &str) -> Vec<String> {
    let start = format!("[error] {prefix}");
    log_lines(&agent.stderr())
        .into_iter()
        .filter(|l| l.starts_with(&start))
        .collect()
}

/// TLS (`security.protocol ssl` with the test CA): the output delivers every record,
/// read back over TLS by the independent client; the input consumes them all over TLS;
/// a CA that did not sign the broker's certificate is one line naming
/// `rdkafka.ssl.ca.location`, and the records wait.
#[test]
fn over_tls_every_record_is_delivered_and_consumed() {
    let Some(bin) = needs() else { return };
    let pki = Pki::new();
    let broker = Broker::start_secure(
        &bin,
        &Security {
            tls: Some(&pki),
            topics: &[("tls", 2)],
            ..Security::default()
        },
    );
    let b = broker.addr();
    let tls = broker.rdkafka_lines();
    assert!(tls.contains("rdkafka.security.protocol ssl"), "{tls}");
    const N: u64 = 2000;
    let d = Dir::new();
    let log = d.file(
        "app.log",
        &(0..N).map(|i| format!("seq {i}\n")).collect::<String>(),
    );
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name tail\n    path {}\n    read_from_head on\n\
         [OUTPUT]\n    name kafka\n    match *\n    brokers {b}\n    topics tls\n    format raw\n    raw_log_key log\n{tls}",
        log.display()
    ));
    let got = broker.consume("tls", N as usize, Duration::from_secs(30));
    let (set, dup) = seqs(&got);
    assert_eq!((set.len() as u64, dup), (N, 0), "{}", agent.stderr());
    agent.wait_log("brokers='localhost:", Duration::from_secs(5));
    let out = agent.stop(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("[error]"), "{}", out.stderr);

    // The input, a group member over TLS, reads them all.
    let mut reader = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name kafka\n    brokers {b}\n    topics tls\n    group_id tls-readers\n    rdkafka.auto.offset.reset earliest\n{tls}\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    ));
    reader.wait_lines(N as usize, Duration::from_secs(60));
    let out = reader.stop(Duration::from_secs(10));
    let set: BTreeSet<u32> = payloads(&out.stdout).into_iter().map(|(_, n)| n).collect();
    assert_eq!(set.len() as u64, N, "{}", out.stderr);
    assert!(!out.stderr.contains("[error]"), "{}", out.stderr);

    // A CA that did not sign the broker's certificate: said once, with the setting.
    let other = Pki::new();
    let wrong_ca = tls.replace(&pki.path("ca.pem"), &other.path("ca.pem"));
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 1\n\
         [INPUT]\n    name dummy\n    samples 3\n\
         [OUTPUT]\n    name kafka\n    match *\n    brokers {b}\n    topics tls\n    retry_limit no_limits\n{wrong_ca}"
    ));
    agent.wait_log("TLS with", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));
    let errors = errors_of(&agent, "[output:kafka");
    assert_eq!(errors.len(), 1, "{}", agent.stderr());
    eprintln!("{}", errors[0]);
    assert!(
        errors[0].starts_with(&format!(
            "[error] [output:kafka:kafka.0] TLS with '{b}' failed"
        )) && errors[0].contains("certificate")
            && errors[0].contains("check rdkafka.ssl.ca.location"),
        "{}",
        errors[0]
    );
    agent.stop(Duration::from_secs(10));
}

/// SASL SCRAM over TLS (`sasl_ssl`): SCRAM-SHA-512 and SCRAM-SHA-256 logins work for the
/// output and the input; a wrong password is one line with the fix while deliveries are
/// retried with backoff, and the records it held (filesystem storage) arrive once the
/// agent runs again with the right password.
#[test]
fn scram_logins_and_a_wrong_password_loses_nothing() {
    let Some(bin) = needs() else { return };
    let pki = Pki::new();
    let broker = Broker::start_secure(
        &bin,
        &Security {
            tls: Some(&pki),
            users: &[
                ("SCRAM-SHA-512", "reader", "reader-secret"),
                ("SCRAM-SHA-512", "node", "node-secret"),
                ("SCRAM-SHA-256", "aggregator", "aggregator-secret"),
            ],
            topics: &[("scram", 1)],
        },
    );
    let b = broker.addr();
    let ca = pki.path("ca.pem");
    let login = |mechanism: &str, user: &str, password: &str| {
        format!(
            "    rdkafka.security.protocol sasl_ssl\n    rdkafka.ssl.ca.location {ca}\n\
             \x20   rdkafka.sasl.mechanism {mechanism}\n    rdkafka.sasl.username {user}\n\
             \x20   rdkafka.sasl.password {password}\n"
        )
    };
    let storage = Dir::new();
    let node = |samples: u32, value: &str, password: &str| {
        format!(
            "[SERVICE]\n    flush 0.2\n    grace 2\n    storage.path {}\n    scheduler.base 1\n    scheduler.cap 2\n\
             [INPUT]\n    name dummy\n    samples {samples}\n    rate 20\n    dummy {{\"m\":\"{value}\"}}\n    storage.type filesystem\n\
             [OUTPUT]\n    name kafka\n    match *\n    brokers {b}\n    topics scram\n    retry_limit no_limits\n\
             \x20   rdkafka.message.timeout.ms 3000\n{}",
            storage.path().display(),
            login("SCRAM-SHA-512", "node", password)
        )
    };

    // The wrong password: one line with the fix; the engine retries with backoff.
    let mut agent = Agent::start(&node(20, "held", "not-the-secret"));
    agent.wait_log("authentication with", Duration::from_secs(30));
    agent.wait_until(Duration::from_secs(30), "two retries", |_, e| {
        e.matches("[engine] failed to flush chunk for kafka.0")
            .count()
            >= 2
    });
    let errors = errors_of(&agent, "[output:kafka");
    assert_eq!(errors.len(), 1, "{}", agent.stderr());
    eprintln!("{}", errors[0]);
    assert!(
        errors[0].starts_with(&format!(
            "[error] [output:kafka:kafka.0] authentication with '{b}' failed"
        )) && errors[0].contains(
            "check rdkafka.security.protocol, rdkafka.sasl.mechanism, rdkafka.sasl.username and \
             rdkafka.sasl.password"
        ),
        "{}",
        errors[0]
    );
    // The retries say the cause, not its symptom (deliveries time out).
    let retries: Vec<String> = log_lines(&agent.stderr())
        .into_iter()
        .filter(|l| l.contains("[engine] failed to flush chunk for kafka.0"))
        .collect();
    assert!(
        retries.iter().all(|l| l.contains("authentication with")),
        "{retries:#?}"
    );
    let held = agent.stop(Duration::from_secs(15));
    assert_eq!(
        broker.consume("scram", 1, Duration::from_secs(3)).len(),
        0,
        "nothing passed a refused login:\n{}",
        held.stderr
    );

    // The right password: the 20 held records are replayed from storage and delivered.
    let mut agent = Agent::start(&node(1, "after", "node-secret"));
    let got = broker.consume("scram", 21, Duration::from_secs(30));
    let text: Vec<String> = got.iter().map(|m| m.text()).collect();
    let held_n = text.iter().filter(|t| t.contains(r#""m":"held""#)).count();
    let after_n = text.iter().filter(|t| t.contains(r#""m":"after""#)).count();
    assert_eq!((held_n, after_n), (20, 1), "{text:#?}\n{}", agent.stderr());
    agent.wait_log("[storage] replayed", Duration::from_secs(5));
    let out = agent.stop(Duration::from_secs(10));
    assert!(!out.stderr.contains("[error]"), "{}", out.stderr);

    // The input logs in with SCRAM-SHA-256 and reads all 21.
    let mut reader = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name kafka\n    brokers {b}\n    topics scram\n    group_id scram-readers\n    rdkafka.auto.offset.reset earliest\n{}\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n",
        login("SCRAM-SHA-256", "aggregator", "aggregator-secret")
    ));
    reader.wait_lines(21, Duration::from_secs(60));
    let out = reader.stop(Duration::from_secs(10));
    assert_eq!(out.stdout.lines().count(), 21, "{}", out.stderr);
    assert!(!out.stderr.contains("[error]"), "{}", out.stderr);
}
