//! A stand-in HTTP server for output tests: parses requests by hand (independently of
//! the agent's hyper client), keeps each one's raw bytes, and answers as the test
//! scripts it: a status, headers, a body, a stall before answering, or a close.

use std::io::{Read, Write};
use std::net::TcpListener;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_rustls::rustls;

/// How the sink answers one request.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a stalled server).
    pub stall: Option<Duration>,
    /// Send the status line and headers, then stop mid-body and close.
    pub cut: bool,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
            stall: None,
            cut: false,
        }
    }
    pub fn ok() -> Answer {
        Answer::status(200)
    }
    pub fn body(mut self, b: &str) -> Answer {
        self.body = b.to_string();
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Answer {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn stall(mut self, d: Duration) -> Answer {
        self.stall = Some(d);
        self
    }
    pub fn cut(mut self) -> Answer {
        self.cut = true;
        self
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Req {
    /// `POST /path HTTP/1.1`
    pub line: String,
    /// In the order sent, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The connection it came on (0, 1, ...), to see keepalive reuse.
    pub conn: usize,
    /// Every byte of it.
    pub raw: Vec<u8>,
    /// When its last byte arrived.
    pub at: Instant,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body, gunzipped when `Content-Encoding: gzip`.
    pub fn decoded(&self) -> Vec<u8> {
        if self.header("content-encoding") == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&self.body[..])
                .read_to_end(&mut out)
                .expect("a gzip body");
            return out;
        }
        self.body.clone()
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.decoded()).expect("a UTF-8 body")
    }
}

/// Parses one request off the front of `buf`: `(request, bytes used)`, or `None` if
/// `buf` holds less than a whole request. Content-Length bodies only (what the
/// agent's outputs send); a chunked request panics the sink.
pub fn parse(buf: &[u8]) -> Option<(Req, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    for l in lines {
        let (k, v) = l.split_once(':').expect("a header line");
        let (k, v) = (k.to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("content-length") {
            len = v.parse().expect("a length");
        }
        assert!(
            !(k.eq_ignore_ascii_case("transfer-encoding")),
            "chunked request"
        );
        headers.push((k, v));
    }
    let start = end + 4;
    if buf.len() < start + len {
        return None;
    }
    Some((
        Req {
            line,
            headers,
            body: buf[start..start + len].to_vec(),
            conn: 0,
            raw: buf[..start + len].to_vec(),
            at: Instant::now(),
        },
        start + len,
    ))
}

type Script = dyn Fn(usize, &Req) -> Answer + Send + Sync;

pub struct HttpSink {
    port: u16,
    reqs: Arc<Mutex<Vec<Req>>>,
    conns: Arc<Mutex<usize>>,
}

impl HttpSink {
    /// Answers every request 200.
    pub fn start() -> HttpSink {
        HttpSink::scripted(|_, _| Answer::ok())
    }

    /// Answers request `n` (0-based, over all connections) with `script(n, req)`.
    pub fn scripted(script: impl Fn(usize, &Req) -> Answer + Send + Sync + 'static) -> HttpSink {
        HttpSink::on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    /// On a given port (a receiver that comes up late).
    pub fn on_port(
        port: u16,
        script: impl Fn(usize, &Req) -> Answer + Send + Sync + 'static,
    ) -> HttpSink {
        HttpSink::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), script)
    }

    /// Over TLS with `pki`'s server certificate (for `localhost`).
    pub fn tls_scripted(
        pki: &super::pki::Pki,
        script: impl Fn(usize, &Req) -> Answer + Send + Sync + 'static,
    ) -> HttpSink {
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let tls = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![pki.server.0.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.1.clone())),
            )
            .unwrap(),
        );
        HttpSink::serving(TcpListener::bind("127.0.0.1:0").unwrap(), script, Some(tls))
    }

    /// On a listener the test bound (in a network namespace, on another address).
    pub fn on_listener(
        l: TcpListener,
        script: impl Fn(usize, &Req) -> Answer + Send + Sync + 'static,
    ) -> HttpSink {
        HttpSink::serving(l, script, None)
    }

    fn on(
        l: TcpListener,
        script: impl Fn(usize, &Req) -> Answer + Send + Sync + 'static,
    ) -> HttpSink {
        HttpSink::serving(l, script, None)
    }

    fn serving(
        l: TcpListener,
        script: impl Fn(usize, &Req) -> Answer + Send + Sync + 'static,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> HttpSink {
        let port = l.local_addr().unwrap().port();
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(0usize));
        let script: Arc<Script> = Arc::new(script);
        let (r, c) = (reqs.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let id = {
                    let mut c = c.lock().unwrap();
                    *c += 1;
                    *c - 1
                };
                let (r, script, tls) = (r.clone(), script.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(s, id, r, script),
                    Some(tls) => {
                        let Ok(conn) = rustls::ServerConnection::new(tls) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(conn, s), id, r, script)
                    }
                });
            }
        });
        HttpSink { port, reqs, conns }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn reqs(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
    pub fn connections(&self) -> usize {
        *self.conns.lock().unwrap()
    }
    /// Waits until `cond` holds for the requests so far.
    pub fn wait(&self, timeout: Duration, what: &str, cond: impl Fn(&[Req]) -> bool) -> Vec<Req> {
        let deadline = Instant::now() + timeout;
        loop {
            let reqs = self.reqs();
            if cond(&reqs) {
                return reqs;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {reqs:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(mut s: impl Read + Write, id: usize, reqs: Arc<Mutex<Vec<Req>>>, script: Arc<Script>) {
    let mut buf = Vec::new();
    let mut b = [0u8; 65536];
    loop {
        while let Some((mut req, used)) = parse(&buf) {
            buf.drain(..used);
            req.conn = id;
            let n = {
                let mut r = reqs.lock().unwrap();
                r.push(req.clone());
                r.len() - 1
            };
            let a = script(n, &req);
            if let Some(d) = a.stall {
                std::thread::sleep(d);
            }
            let mut out = format!(
                "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
                a.status,
                a.body.len()
            );
            for (k, v) in &a.headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            if a.cut {
                let _ = s.write_all(out.as_bytes());
                let _ = s.write_all(&a.body.as_bytes()[..a.body.len() / 2]);
                return;
            }
            out.push_str(&a.body);
            if s.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
}

/// Requests in a form two HTTP clients can be compared by: each request's line, its
/// headers with names lower-cased (HTTP names are case-insensitive) and the port of
/// `Host` replaced by `PORT`, `content-length` of a gzip body replaced by `gzip`, then
/// the decoded body (in hex when it is not UTF-8).
pub fn canonical(raw: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (req, used) = parse(rest).expect("whole requests");
        rest = &rest[used..];
        let gz = req.header("content-encoding") == Some("gzip");
        out.push_str(&req.line);
        out.push('\n');
        for (k, v) in &req.headers {
            let k = k.to_ascii_lowercase();
            let v = match k.as_str() {
                "host" => v
                    .rsplit_once(':')
                    .map_or(v.clone(), |(h, _)| format!("{h}:PORT")),
                "content-length" if gz => "gzip".into(),
                _ => v.clone(),
            };
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push('\n');
        let body = req.decoded();
        match String::from_utf8(body) {
            Ok(text) => out.push_str(&text),
            Err(e) => e
                .into_bytes()
                .iter()
                .for_each(|b| out.push_str(&format!("{b:02x}"))),
        }
        out.push_str("\n---\n");
    }
    out
}

/// How many requests a capture holds.
pub fn count(raw: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = raw;
    while let Some((_, used)) = parse(rest) {
        rest = &rest[used..];
        n += 1;
    }
    n
}

/// Runs each `<case>.conf` of `dir` (its text passed through `conf` with the sink's
/// port) against a fresh sink answering every request with `answer()`, and compares
/// the requests with Fluent Bit's `<case>.expected` after [`canonical`]. Returns the
/// number of cases; panics with every difference.
pub fn run_request_oracle_cases(
    dir: &std::path::Path,
    answer: impl Fn() -> Answer + Send + Sync + Clone + 'static,
    conf: impl Fn(&str, u16) -> String,
) -> usize {
    let t = Duration::from_secs(30);
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".conf").map(str::to_string)
        })
        .collect();
    cases.sort();
    let mut bad = Vec::new();
    for case in &cases {
        let want = std::fs::read(dir.join(format!("{case}.expected"))).unwrap();
        let n = count(&want);
        assert!(n >= 1, "{case}: an empty capture");
        let answer = answer.clone();
        let sink = HttpSink::scripted(move |_, _| answer());
        let text = std::fs::read_to_string(dir.join(format!("{case}.conf"))).unwrap();
        let agent = super::Agent::start(&conf(&text, sink.port()));
        let reqs = sink.wait(t, case, |r| r.len() >= n);
        let o = agent.stop(t);
        let got: Vec<u8> = reqs.iter().flat_map(|r| r.raw.clone()).collect();
        let (got, want) = (canonical(&got), canonical(&want));
        if got != want || sink.reqs().len() != n {
            bad.push(format!(
                "{case}:\n--- agent\n{got}--- fluent-bit\n{want}--- stderr\n{}",
                o.stderr
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    cases.len()
}
