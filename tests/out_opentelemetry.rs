//! `opentelemetry` output against a stand-in receiver on loopback: each request is
//! decoded by an independent decoder (the OpenTelemetry project's Python classes,
//! PyPI `opentelemetry-proto`, tests/common/otlp_decode.py) and compared with what
//! Fluent Bit 5.1.1 sent for the same config (tests/data/fluent-bit/opentelemetry);
//! faults (a receiver down, 503, 400) lose nothing that can be delivered and count
//! what is dropped.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::http_sink::{Answer, HttpSink, Req};
use common::*;

const T: Duration = Duration::from_secs(30);

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fluent-bit/opentelemetry")
}

/// Raw requests decoded by tests/common/otlp_decode.py: one JSON object per request
/// (request line, headers, body as MessageToDict), with what two runs cannot share
/// masked: the Host header's port, and Content-Length of a compressed body (zlib and
/// flate2 compress the same bytes differently).
fn decode(raw: &[u8]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/otlp_decode.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "otlp_decode.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for req in v.as_array_mut().unwrap() {
        let compressed = req["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "content-encoding");
        for h in req["headers"].as_array_mut().unwrap() {
            if h[0] == "host" {
                let host = h[1].as_str().unwrap();
                h[1] = format!("{}:PORT", host.rsplit_once(':').unwrap().0).into();
            }
            if h[0] == "content-length" && compressed {
                h[1] = "COMPRESSED".into();
            }
        }
    }
    v
}

/// The protobuf bytes of each request's body (decompressed).
fn bodies(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (req, used) = common::http_sink::parse(rest).expect("whole requests");
        rest = &rest[used..];
        out.push(req.decoded());
    }
    out
}

/// Every config of the oracle directory, sent by agent to a receiver that answers 200:
/// the decoded requests equal Fluent Bit's, and so do the protobuf bytes.
#[test]
fn requests_are_fluent_bits() {
    let dir = oracle_dir();
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".conf").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "{cases:?}");
    let mut bad = Vec::new();
    for case in &cases {
        let want = std::fs::read(dir.join(format!("{case}.expected"))).unwrap();
        let n = bodies(&want).len();
        let sink = HttpSink::start();
        let text = std::fs::read_to_string(dir.join(format!("{case}.conf")))
            .unwrap()
            .replace("${HTTP_PORT}", &sink.port().to_string());
        let agent = Agent::start(&text);
        let reqs = sink.wait(T, case, |r| r.len() >= n);
        let o = agent.stop(T);
        let got: Vec<u8> = reqs.iter().flat_map(|r| r.raw.clone()).collect();
        let (g, w) = (decode(&got), decode(&want));
        if g != w || sink.reqs().len() != n {
            bad.push(format!(
                "{case}:\n--- agent\n{}\n--- fluent-bit\n{}\n--- stderr\n{}",
                serde_json::to_string_pretty(&g).unwrap(),
                serde_json::to_string_pretty(&w).unwrap(),
                o.stderr
            ));
        } else if bodies(&got) != bodies(&want) {
            bad.push(format!("{case}: same messages, other protobuf bytes"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
