//! `es` output against a stand-in server on loopback that parses requests by hand:
//! the requests are Fluent Bit 5.1.1's (captured in tests/data/fluent-bit/es), every
//! body is a valid Bulk API NDJSON stream (checked with serde_json), and bulk replies
//! with failed items retry only those items and count the ones dropped.

mod common;

use std::path::Path;
use std::time::Duration;

use common::http_sink::{run_request_oracle_cases, Answer, HttpSink, Req};
use common::*;

const T: Duration = Duration::from_secs(30);

fn oracle_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fluent-bit/es")
}

/// The reply Elasticsearch gives when every document was accepted.
const BULK_OK: &str = r#"{"took":1,"errors":false,"items":[{"create":{"status":201}}]}"#;

/// `cloud_id` for a deployment whose Elasticsearch host is `127.0.0` in region `1`,
/// i.e. 127.0.0.1:`port`.
fn cloud_id(port: u16) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("1$127.0.0:{port}$kb"))
}

#[test]
fn requests_are_fluent_bits() {
    let n = run_request_oracle_cases(
        &oracle_dir(),
        || Answer::ok().body(BULK_OK),
        |text, port| {
            text.replace("${HTTP_PORT}", &port.to_string())
                .replace("${CLOUD_ID}", &cloud_id(port))
        },
    );
    assert!(n >= 10, "{n} cases");
}

/// A bulk body's (action, metadata, document) triples, checked as the Bulk API reads
/// NDJSON: every line one JSON object, an action line (one key: create, index,
/// update or delete, holding an object) followed by its document.
fn documents(body: &str) -> Vec<(String, serde_json::Value, serde_json::Value)> {
    assert!(body.ends_with('\n'), "a bulk body ends with a newline");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len() % 2, 0, "action lines and documents pair up");
    lines
        .chunks(2)
        .map(|pair| {
            let action: serde_json::Value =
                serde_json::from_str(pair[0]).unwrap_or_else(|e| panic!("{e}: {}", pair[0]));
            let obj = action.as_object().expect("an action line is an object");
            assert_eq!(obj.len(), 1, "{}", pair[0]);
            let (op, meta) = obj.iter().next().unwrap();
            assert!(
                ["create", "index", "update", "delete"].contains(&op.as_str()),
                "{op}"
            );
            assert!(meta.get("_index").and_then(|i| i.as_str()).is_some());
            let doc: serde_json::Value =
                serde_json::from_str(pair[1]).unwrap_or_else(|e| panic!("{e}: {}", pair[1]));
            assert!(doc.is_object(), "{}", pair[1]);
            (op.clone(), meta.clone(), doc)
        })
        .collect()
}

/// A bulk reply giving each document of `req` the status `status_of(seq)`, with a
/// reason for the failures.
fn reply(req: &Req, status_of: impl Fn(u64) -> u16) -> Answer {
    let docs = documents(&req.text());
    let mut errors = false;
    let items: Vec<String> = docs
        .iter()
        .map(|(op, _, doc)| {
            let st = status_of(doc["seq"].as_u64().expect("seq"));
            let error = match st {
                200 | 201 => String::new(),
                429 => r#","error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"}"#.to_string(),
                _ => r#","error":{"type":"mapper_parsing_exception","reason":"failed to parse field [seq] of type [date]"}"#.to_string(),
            };
            errors |= st >= 300;
            format!(r#"{{"{op}":{{"_index":"x","status":{st}{error}}}}}"#)
        })
        .collect();
    Answer::ok().body(&format!(
        r#"{{"took":5,"errors":{errors},"items":[{}]}}"#,
        items.join(",")
    ))
}

/// `n` records numbered `seq` 1..=n, in one chunk, to `es`; `extra` output lines.
fn seq_to_es(dir: &Dir, port: u16, http: u16, n: u32, extra: &str) -> String {
    dir.file(
        "seq.lua",
        "n = 0\nfunction seq(tag, ts, r)\n  n = n + 1\n  r[\"seq\"] = n\n  return 1, ts, r\nend\n",
    );
    format!(
        "[SERVICE]\n    flush 0.5\n    grace 10\n    scheduler.base 1\n    scheduler.cap 3\n\
         \x20   http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    dummy {{\"msg\":\"x\"}}\n    copies {n}\n    samples 1\n\
         [FILTER]\n    name lua\n    match *\n    script {}\n    call seq\n\
         [OUTPUT]\n    name es\n    match *\n    host 127.0.0.1\n    port {port}\n    workers 1\n\
         \x20   logstash_format on\n    generate_id on\n    retry_limit no_limits\n{extra}",
        dir.path().join("seq.lua").display()
    )
}

fn seqs(req: &Req) -> Vec<u64> {
    documents(&req.text())
        .iter()
        .map(|(_, _, d)| d["seq"].as_u64().unwrap())
        .collect()
}

/// `fluentbit_output_<what>_total{name="es.0"}`.
fn metric(http: u16, what: &str) -> u64 {
    let (_, text) = http_get(http, "/api/v1/metrics/prometheus").unwrap();
    let prefix = format!("fluentbit_output_{what}_total{{name=\"es.0\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("{prefix}\n{text}"))
        .parse()
        .unwrap()
}

/// Every body is Bulk NDJSON; logstash indices and generated ids as documented.
#[test]
fn bodies_are_bulk_ndjson() {
    let sink = HttpSink::scripted(|_, r| reply(r, |_| 201));
    let d = Dir::new();
    let http = free_port();
    let agent = Agent::start(&seq_to_es(&d, sink.port(), http, 50, ""));
    let reqs = sink.wait(T, "50 documents", |r| {
        r.iter().map(|r| seqs(r).len()).sum::<usize>() >= 50
    });
    agent.stop(T);
    let mut ids = std::collections::HashSet::new();
    for r in &reqs {
        assert_eq!(r.line, "POST /_bulk HTTP/1.1");
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        for (op, meta, doc) in documents(&r.text()) {
            assert_eq!(op, "create");
            let index = meta["_index"].as_str().unwrap();
            assert!(index.starts_with("logstash-20"), "{index}");
            let id = meta["_id"].as_str().unwrap();
            assert_eq!(id.len(), 36, "{id}");
            assert!(ids.insert(id.to_string()), "ids differ per document");
            assert!(doc["@timestamp"].as_str().unwrap().ends_with('Z'));
            assert_eq!(doc["msg"], "x");
        }
    }
    assert_eq!(ids.len(), 50);
}

/// One of 100 documents refused for good (400 mapper_parsing_exception): dropped,
/// counted and logged with its reason; the other 99 are delivered once, nothing is sent
/// again.
#[test]
fn a_refused_item_is_dropped_and_counted_the_rest_delivered_once() {
    let sink = HttpSink::scripted(|_, r| reply(r, |s| if s == 42 { 400 } else { 201 }));
    let d = Dir::new();
    let http = free_port();
    let mut agent = Agent::start(&seq_to_es(&d, sink.port(), http, 100, ""));
    let reqs = sink.wait(T, "100 documents", |r| {
        r.iter().map(|r| seqs(r).len()).sum::<usize>() >= 100
    });
    agent.wait_log("mapper_parsing_exception", T);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(metric(http, "dropped_records"), 1);
    assert_eq!(metric(http, "proc_records"), 99);
    let o = agent.stop(T);
    let all: Vec<u64> = sink.reqs().iter().flat_map(seqs).collect();
    assert_eq!(all.len(), 100, "nothing sent twice: {all:?}");
    assert_eq!(reqs.len(), 1);
    assert!(
        o.stderr
            .contains("1 document(s) refused for good and dropped")
            && o.stderr.contains("failed to parse field [seq]"),
        "{}",
        o.stderr
    );
}

/// Items refused with 429 are sent again, alone; then all is delivered.
#[test]
fn items_refused_with_429_are_retried_alone() {
    let sink = HttpSink::scripted(|n, r| {
        reply(r, |s| {
            if n == 0 && [10, 20, 30].contains(&s) {
                429
            } else {
                201
            }
        })
    });
    let d = Dir::new();
    let http = free_port();
    let agent = Agent::start(&seq_to_es(&d, sink.port(), http, 100, ""));
    let reqs = sink.wait(T, "the retry", |r| r.len() >= 2);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(metric(http, "proc_records"), 100);
    assert_eq!(metric(http, "dropped_records"), 0);
    let o = agent.stop(T);
    assert_eq!(seqs(&reqs[0]).len(), 100);
    assert_eq!(seqs(&reqs[1]), [10, 20, 30], "{}", o.stderr);
    // The retry carries the same generated ids (no duplicates if they had been
    // indexed after all).
    let ids = |r: &Req| -> Vec<String> {
        documents(&r.text())
            .iter()
            .map(|(_, m, _)| m["_id"].as_str().unwrap().to_string())
            .collect()
    };
    let first = ids(&reqs[0]);
    assert_eq!(
        ids(&reqs[1]),
        [first[9].clone(), first[19].clone(), first[29].clone()]
    );
    assert_eq!(sink.reqs().len(), 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("3 of 100 documents to send again"),
        "{}",
        o.stderr
    );
}

/// A 503 for the whole request retries the whole chunk.
#[test]
fn a_503_retries_the_whole_request() {
    let sink = HttpSink::scripted(|n, r| match n {
        0 => Answer::status(503).body("{\"error\":\"unavailable\"}"),
        _ => reply(r, |_| 201),
    });
    let d = Dir::new();
    let http = free_port();
    let agent = Agent::start(&seq_to_es(&d, sink.port(), http, 100, ""));
    let reqs = sink.wait(T, "the retry", |r| r.len() >= 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(metric(http, "proc_records"), 100);
    let o = agent.stop(T);
    assert_eq!(reqs[0].body, reqs[1].body);
    assert_eq!(sink.reqs().len(), 2);
    assert!(o.stderr.contains("HTTP status=503"), "{}", o.stderr);
}

/// The receiver is down for a while, then up: every record arrives.
#[test]
fn receiver_down_then_up_loses_nothing() {
    let port = free_port();
    let d = Dir::new();
    let http = free_port();
    let agent = Agent::start(&seq_to_es(&d, port, http, 100, ""));
    std::thread::sleep(Duration::from_secs(5));
    let sink = HttpSink::on_port(port, |_, r| reply(r, |_| 201));
    sink.wait(T, "100 documents", |r| {
        r.iter().map(|r| seqs(r).len()).sum::<usize>() >= 100
    });
    let o = agent.stop(T);
    let mut all: Vec<u64> = sink.reqs().iter().flat_map(seqs).collect();
    all.sort();
    assert_eq!(all, (1..=100).collect::<Vec<u64>>(), "{}", o.stderr);
    assert!(o.stderr.contains("Connection refused"), "{}", o.stderr);
}

/// Config errors name the line and the fix.
#[test]
fn bad_settings_are_refused() {
    for (line, want) in [
        ("    upstream nodes.conf\n", "HA upstream"),
        ("    aws_auth on\n", "aws_region not set"),
        ("    write_operation update\n", "id_key"),
        ("    write_operation delete\n", "write_operation"),
        ("    cloud_id nonsense\n", "Elastic Cloud ID"),
        ("    buffer_size lots\n", "buffer_size"),
        ("    compress zstd\n", "compress"),
    ] {
        let errs = refused_config(&format!(
            "[INPUT]\n    name dummy\n[OUTPUT]\n    name es\n    match *\n{line}"
        ));
        assert!(
            errs.join("\n").contains(want) && errs.iter().any(|e| e.contains("fluent-bit.conf:6:")),
            "{line}: {errs:?}"
        );
    }
}

/// `index` is strftime'd with the flush's time (records from 2023 go to today's index);
/// `current_time_index` dates logstash indices and `@timestamp` with it too.
#[test]
fn index_dates_come_from_the_flush_time() {
    let today = |fmt: &str| {
        let o = std::process::Command::new("date")
            .args(["-u", fmt])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    for (extra, index, stamp_today) in [
        (
            "    index logs-%Y.%m.%d\n    trace_output on\n",
            format!("logs-{}", today("+%Y.%m.%d")),
            false,
        ),
        (
            "    logstash_format on\n    current_time_index on\n",
            format!("logstash-{}", today("+%Y.%m.%d")),
            true,
        ),
    ] {
        let sink = HttpSink::scripted(|_, _| Answer::ok().body(BULK_OK));
        let agent = Agent::start(&format!(
            "[SERVICE]\n    flush 0.2\n\
             [INPUT]\n    name dummy\n    dummy {{\"seq\":1}}\n    samples 1\n    fixed_timestamp on\n    start_time_sec 1700000000\n\
             [OUTPUT]\n    name es\n    match *\n    host 127.0.0.1\n    port {}\n{extra}",
            sink.port()
        ));
        let reqs = sink.wait(T, "a request", |r| !r.is_empty());
        let o = agent.stop(T);
        // trace_output prints each bulk body to stdout.
        assert_eq!(
            o.stdout.contains(&reqs[0].text()),
            extra.contains("trace_output"),
            "{}",
            o.stdout
        );
        let docs = documents(&reqs[0].text());
        assert_eq!(docs[0].1["_index"], index.as_str(), "{extra}");
        let stamp = docs[0].2["@timestamp"].as_str().unwrap();
        let want = if stamp_today {
            today("+%Y-%m-%dT")
        } else {
            "2023-11-14T22:13:20".to_string()
        };
        assert!(stamp.starts_with(&want), "{extra}: {stamp}");
    }
}
