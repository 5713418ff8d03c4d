//! `forward` output against an independent Forward server written in Python with the
//! `msgpack` package: every frame is decoded by it and checked against the protocol
//! spec (fluent/fluentd wiki "Forward Protocol Specification v1"), including the
//! options, gzip, acks and the shared key handshake (digests computed by `hashlib`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

/// A Forward server: prints its port, then one JSON line per frame describing it, and
/// exits once `want` records arrived. Answers acks; runs the handshake with `key`.
const SERVER: &str = r#"
import gzip, hashlib, io, json, os, socket, sys
import msgpack

want, key = int(sys.argv[1]), sys.argv[2]
ack = len(sys.argv) < 4 or sys.argv[3] != "noack"

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[4]) if len(sys.argv) > 4 else 0))
srv.listen(8)
print(srv.getsockname()[1], flush=True)

def hexdigest(*parts):
    return hashlib.sha512(b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)).hexdigest()

def entry(e):
    t, rec = e
    assert isinstance(rec, dict), e
    if isinstance(t, msgpack.ExtType):
        assert t.code == 0 and len(t.data) == 8, t
        return {"time": "event", "secs": int.from_bytes(t.data[:4], "big"), "rec": rec}
    assert isinstance(t, int), t
    return {"time": "int", "secs": t, "rec": rec}

got = 0
while got < want:
    conn, _ = srv.accept()
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    if key != "-":
        nonce = os.urandom(16)
        conn.sendall(msgpack.packb(["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}], use_bin_type=True))
    authed = key == "-"
    while got < want:
        data = conn.recv(65536)
        if not data:
            break
        up.feed(data)
        for frame in up:
            if not authed:
                kind, host, salt, digest, user, pw = frame
                ok = kind == "PING" and digest == hexdigest(salt, host, nonce, key)
                conn.sendall(msgpack.packb(["PONG", ok, "" if ok else "bad key", "pysrv", hexdigest(salt, "pysrv", nonce, key)], use_bin_type=True))
                print(json.dumps({"ping": host, "ok": ok}), flush=True)
                authed = ok
                continue
            tag, second = frame[0], frame[1]
            opts = {}
            if isinstance(second, (bytes, str)) or isinstance(second, list):
                opts = frame[2] if len(frame) > 2 else {}
                assert len(frame) in (2, 3), frame
                if isinstance(second, list):
                    mode, entries = "forward", [entry(e) for e in second]
                else:
                    raw = second if isinstance(second, bytes) else second.encode()
                    mode = "packed"
                    if opts.get("compressed") == "gzip":
                        raw, mode = gzip.decompress(raw), "compressed"
                    entries = [entry(e) for e in msgpack.Unpacker(io.BytesIO(raw), raw=False)]
            else:
                assert len(frame) in (3, 4), frame
                mode, entries = "message", [entry([frame[1], frame[2]])]
                opts = frame[3] if len(frame) > 3 else {}
            if "chunk" in opts and ack:
                conn.sendall(msgpack.packb({"ack": opts["chunk"]}))
            got += len(entries)
            print(json.dumps({"tag": tag, "mode": mode, "opts": opts, "entries": entries}), flush=True)
    conn.close()
"#;

struct PyServer {
    child: Child,
    port: u16,
    /// Taken by [`streaming_server`].
    lines: Option<BufReader<std::process::ChildStdout>>,
}

impl PyServer {
    fn start(want: usize, key: &str) -> PyServer {
        PyServer::with_args(&[&want.to_string(), key])
    }

    fn with_args(args: &[&str]) -> PyServer {
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with msgpack");
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        lines.read_line(&mut first).unwrap();
        let port = first.trim().parse().unwrap_or_else(|_| panic!("{first}"));
        PyServer {
            child,
            port,
            lines: Some(lines),
        }
    }

    /// Every frame, once the server has all its records and exited.
    fn frames(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut line = String::new();
        let lines = self.lines.as_mut().unwrap();
        while lines.read_line(&mut line).unwrap() > 0 {
            out.push(serde_json::from_str(&line).unwrap());
            line.clear();
        }
        assert!(
            self.child.wait().unwrap().success(),
            "the python server failed"
        );
        out
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent(port: u16, n: usize, extra: &str) -> Agent {
    Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n    scheduler.base 1\n    scheduler.cap 1\n\
         [INPUT]\n    name dummy\n    tag app.log\n    samples {n}\n    rate 20\n    dummy {{\"msg\":\"hi\",\"k\":\"t1\"}}\n\
         [OUTPUT]\n    name forward\n    match *\n    host 127.0.0.1\n    port {port}\n{extra}"
    ))
}

/// Sends `n` records with `extra`, returns the frames the server decoded and the agent's
/// log.
fn exchange(n: usize, key: &str, extra: &str) -> (Vec<serde_json::Value>, String) {
    let mut server = PyServer::start(n, key);
    let a = agent(server.port, n, extra);
    let frames = server.frames();
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    (frames, o.stderr)
}

fn records(frames: &[serde_json::Value]) -> usize {
    frames
        .iter()
        .filter_map(|f| f["entries"].as_array())
        .map(|e| e.len())
        .sum()
}

fn check_entries(frames: &[serde_json::Value], time: &str) {
    for f in frames.iter().filter(|f| f.get("entries").is_some()) {
        for e in f["entries"].as_array().unwrap() {
            assert_eq!(e["time"], time, "{f}");
            assert!(e["secs"].as_u64().unwrap() > 1_700_000_000, "{f}");
            assert_eq!(e["rec"], serde_json::json!({"msg": "hi", "k": "t1"}), "{f}");
        }
    }
}

#[test]
fn packed_forward_is_the_default_without_options() {
    let (frames, _) = exchange(6, "-", "");
    assert_eq!(records(&frames), 6);
    for f in &frames {
        assert_eq!(f["tag"], "app.log");
        assert_eq!(f["mode"], "packed", "{f}");
        assert_eq!(f["opts"], serde_json::json!({}), "{f}");
    }
    check_entries(&frames, "event");
}

#[test]
fn time_as_integer_is_forward_mode_with_integer_times_and_tag_override() {
    let (frames, _) = exchange(6, "-", "    time_as_integer on\n    tag fixed\n");
    assert_eq!(records(&frames), 6);
    for f in &frames {
        assert_eq!(
            (f["tag"].as_str(), f["mode"].as_str()),
            (Some("fixed"), Some("forward"))
        );
    }
    check_entries(&frames, "int");
}

#[test]
fn gzip_options_and_acks() {
    let (frames, log) = exchange(
        8,
        "-",
        "    compress gzip\n    send_options on\n    require_ack_response on\n",
    );
    assert_eq!(records(&frames), 8);
    for f in &frames {
        assert_eq!(f["mode"], "compressed", "{f}");
        let opts = f["opts"].as_object().unwrap();
        assert_eq!(opts["compressed"], "gzip");
        assert_eq!(
            opts["size"].as_u64().unwrap() as usize,
            f["entries"].as_array().unwrap().len(),
            "size is the number of entries: {f}"
        );
        assert_eq!(opts["chunk"].as_str().unwrap().len(), 32, "{f}");
    }
    check_entries(&frames, "event");
    // Every chunk was acked: nothing retried.
    assert!(!log.contains("retry in"), "{log}");
}

#[test]
fn record_accessor_tag_is_message_mode() {
    let (frames, _) = exchange(4, "-", "    tag $k\n    send_options on\n");
    assert_eq!(records(&frames), 4);
    for f in &frames {
        assert_eq!(
            (f["tag"].as_str(), f["mode"].as_str()),
            (Some("t1"), Some("message"))
        );
        assert_eq!(f["opts"], serde_json::json!({"size": 1}));
    }
    check_entries(&frames, "event");
}

#[test]
fn shared_key_handshake_digests_match_the_spec() {
    let (frames, _) = exchange(
        3,
        "k3y",
        "    shared_key k3y\n    self_hostname node-9\n    require_ack_response on\n",
    );
    assert_eq!(frames[0], serde_json::json!({"ping": "node-9", "ok": true}));
    assert_eq!(records(&frames), 3);
}

#[test]
fn a_wrong_key_is_retried_and_logged() {
    let server = PyServer::start(1, "right");
    let mut a = agent(server.port, 1, "    shared_key wrong\n    retry_limit 1\n");
    a.wait_log("authentication failed: bad key", T);
    a.wait_log("failed to flush chunk for forward.0", T);
    drop(server);
    a.stop(T);
}

/// A server that takes the frames but never acks: after `net.io_timeout` the chunk is
/// retried on a new connection, so the server sees it again.
#[test]
fn a_missing_ack_is_a_retry() {
    let mut server = PyServer::with_args(&["2", "-", "noack"]);
    let mut a = agent(
        server.port,
        1,
        "    require_ack_response on\n    net.io_timeout 1s\n    retry_limit 1\n",
    );
    a.wait_log(
        &format!(
            "no ack for 1 records from 127.0.0.1:{}: no reply from 127.0.0.1:{} within 1 seconds",
            server.port, server.port
        ),
        T,
    );
    let frames = server.frames();
    assert_eq!(records(&frames), 2, "the same record, sent twice");
    assert_eq!(frames[0]["opts"]["chunk"].as_str().unwrap().len(), 32);
    a.stop(T);
}

/// Runs a server until dropped, its frames sent to `tx` as they come.
fn streaming_server(
    args: &[&str],
    tx: std::sync::mpsc::Sender<(u16, serde_json::Value)>,
) -> PyServer {
    let mut s = PyServer::with_args(args);
    let port = s.port;
    let lines = s.lines.take().unwrap();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if tx
                .send((port, serde_json::from_str(&line).unwrap()))
                .is_err()
            {
                break;
            }
        }
    });
    s
}

type ByPort = std::collections::BTreeMap<u16, Vec<serde_json::Value>>;

/// Frames per server port until `n` records arrived in all (or the timeout).
fn collect(rx: &std::sync::mpsc::Receiver<(u16, serde_json::Value)>, n: usize) -> ByPort {
    let mut by_port = ByPort::new();
    collect_into(rx, n, &mut by_port);
    by_port
}

/// Adds frames to `by_port` until it holds `n` records.
fn collect_into(
    rx: &std::sync::mpsc::Receiver<(u16, serde_json::Value)>,
    n: usize,
    by_port: &mut ByPort,
) {
    let deadline = std::time::Instant::now() + T;
    let mut got: usize = by_port.values().map(|f| records(f)).sum();
    while got < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((port, frame)) = rx.recv_timeout(left) else {
            panic!("{got} of {n} records arrived: {by_port:?}");
        };
        got += frame["entries"].as_array().map_or(0, |e| e.len());
        by_port.entry(port).or_default().push(frame);
    }
}

/// `upstream` (a classic file of [UPSTREAM]/[NODE]): flushes go round-robin over the
/// nodes; a node that refuses connections is passed over at once (nothing lost, none
/// doubled), said once, and takes records again when it comes back. Properties of the
/// [OUTPUT] (require_ack_response) apply to every node.
#[test]
fn upstream_nodes_take_turns_and_a_dead_node_is_failed_over() {
    let (tx, rx) = std::sync::mpsc::channel();
    let a = streaming_server(&["1000000", "-"], tx.clone());
    let b = streaming_server(&["1000000", "-"], tx.clone());
    let dead = free_port();
    let dir = Dir::new();
    let up = dir.file(
        "upstream.conf",
        &format!(
            "[UPSTREAM]\n    name balance\n\n\
             [NODE]\n    name node-a\n    host 127.0.0.1\n    port {}\n\n\
             [NODE]\n    name node-dead\n    host 127.0.0.1\n    port {dead}\n\n\
             [NODE]\n    name node-b\n    host 127.0.0.1\n    port {}\n",
            a.port, b.port
        ),
    );
    let http = free_port();
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    tag app.log\n    samples 200\n    rate 20\n    dummy {{\"msg\":\"hi\",\"k\":\"t1\"}}\n\
         [OUTPUT]\n    name forward\n    match *\n    upstream {}\n    require_ack_response on\n",
        up.display()
    ));
    agent.wait_log("upstream 'balance' from", T);
    // Half-way, the dead node comes up.
    let mut got = collect(&rx, 60);
    assert!(!got.contains_key(&dead), "{got:?}");
    let c = streaming_server(&["1000000", "-", "ack", &dead.to_string()], tx.clone());
    collect_into(&rx, 200, &mut got);
    let o = agent.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let mut count = std::collections::BTreeMap::<u16, usize>::new();
    for (port, frames) in &got {
        *count.entry(*port).or_default() += records(frames);
        check_entries(frames, "event");
        for f in frames {
            assert_eq!(f["opts"]["chunk"].as_str().map(str::len), Some(32), "{f}");
        }
    }
    assert_eq!(count.values().sum::<usize>(), 200, "{count:?}");
    for port in [a.port, b.port, c.port] {
        assert!(
            count.get(&port).copied().unwrap_or(0) > 0,
            "{port}: {count:?}"
        );
    }
    // Said once, with where it goes instead, and again when it recovers.
    let down = format!("[output:forward:forward.0] node 'node-dead' (127.0.0.1:{dead}) failed:");
    assert_eq!(o.stderr.matches(&down).count(), 1, "{}", o.stderr);
    assert!(o.stderr.contains("trying the next node"), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "node 'node-dead' (127.0.0.1:{dead}) takes records again"
        )),
        "{}",
        o.stderr
    );
    drop((a, b, c));
}

/// A YAML upstream file (`upstream_servers:`) with a node of its own: its shared_key
/// runs the handshake on that node only; the [OUTPUT]'s tag applies to both.
#[test]
fn yaml_upstream_nodes_keep_their_own_properties() {
    let (tx, rx) = std::sync::mpsc::channel();
    let plain = streaming_server(&["1000000", "-"], tx.clone());
    let keyed = streaming_server(&["1000000", "secret"], tx.clone());
    let dir = Dir::new();
    let up = dir.file(
        "upstream.yaml",
        &format!(
            "upstream_servers:\n  - name: balance\n    nodes:\n\
             \x20     - name: plain\n        host: 127.0.0.1\n        port: {}\n\
             \x20     - name: keyed\n        host: 127.0.0.1\n        port: {}\n        shared_key: secret\n        self_hostname: node-b\n",
            plain.port, keyed.port
        ),
    );
    let agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name dummy\n    tag app.log\n    samples 40\n    rate 20\n    dummy {{\"msg\":\"hi\",\"k\":\"t1\"}}\n\
         [OUTPUT]\n    name forward\n    match *\n    upstream {}\n    tag renamed\n",
        up.display()
    ));
    let got = collect(&rx, 40);
    let o = agent.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let keyed_frames = &got[&keyed.port];
    assert_eq!(
        keyed_frames[0],
        serde_json::json!({"ping": "node-b", "ok": true})
    );
    assert!(got[&plain.port].iter().all(|f| f.get("ping").is_none()));
    for frames in got.values() {
        for f in frames.iter().filter(|f| f.get("tag").is_some()) {
            assert_eq!(f["tag"], "renamed", "{f}");
        }
        assert!(records(frames) > 0);
    }
}

#[test]
fn upstream_config_errors_name_the_line() {
    let dir = Dir::new();
    let up = dir.file(
        "up.conf",
        "[UPSTREAM]\n    name u\n[NODE]\n    name n1\n    host 127.0.0.1\n    port 1\n    shared_kee x\n",
    );
    let lines = refused_config(&format!(
        "[INPUT]\n    name dummy\n[OUTPUT]\n    name forward\n    match *\n    upstream {}\n",
        up.display()
    ));
    assert!(
        lines[0].contains(&format!(
            "{}:7: [config] forward: unknown configuration property 'shared_kee'",
            up.display()
        )),
        "{lines:?}"
    );
    let lines = refused_config(&format!(
        "[INPUT]\n    name dummy\n[OUTPUT]\n    name forward\n    match *\n    host 10.0.0.1\n    upstream {}\n",
        up.display()
    ));
    assert!(
        lines[0].contains(":6: [config] forward: 'host' is not used with 'upstream'"),
        "{lines:?}"
    );
    assert!(
        lines[1]
            .contains("remove 'host': each node of the upstream file has its own host and port"),
        "{lines:?}"
    );
    let lines = refused_config(
        "[INPUT]\n    name dummy\n[OUTPUT]\n    name forward\n    match *\n    upstream nowhere.conf\n",
    );
    assert!(
        lines[0].contains(":6: [upstream_ha] cannot load Upstream file 'nowhere.conf'"),
        "{lines:?}"
    );
}
