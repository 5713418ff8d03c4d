//! `http` input: records POSTed as JSON (an object, or an array of objects), as
//! `application/x-www-form-urlencoded` fields, or as MessagePack (agent's addition).
//! Fluent Bit: plugins/in_http/http.c, http_config.c, http_prot.c
//!
//! The tag is the URI path without its `/` (characters other than letters, digits, `_`
//! and `.` become `_`), the input's tag for `/`, or a record's `tag_key` value. The
//! answer is `successful_response_code` only once the engine has taken the records;
//! 503 while the input is paused by `mem_buf_limit` (nothing is taken, the client can
//! retry), 400 for a body that is not records, 413 for one over `buffer_max_size`.
//! Connections are served by hyper on the shared listener ([`crate::net::downstream`]:
//! TLS, connection cap, idle eviction, accept back-off); a completed request is a
//! connection's progress.

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::server::{listen_spec, run_server, Dropped};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::{EventTime, Map, Record, Str, Tag, Value};
use crate::net::downstream::{Activity, Conn, ListenSpec};
use crate::net::DownstreamSetup;
use crate::pipeline::{InputSender, Shutdown};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "listen",
        PropKind::Str,
        Some("0.0.0.0"),
        "Address to listen on.",
    ),
    PropSpec::new(
        "port",
        PropKind::Int,
        Some("9880"),
        "TCP port to listen on.",
    ),
    PropSpec::new(
        "tag_key",
        PropKind::Str,
        None,
        "Specify a key name for extracting the tag from incoming request data.",
    ),
    PropSpec::new(
        "successful_response_code",
        PropKind::Enum(&["200", "201", "204"]),
        Some("201"),
        "Set successful response code. 200, 201 and 204 are supported.",
    ),
    PropSpec::new(
        "buffer_max_size",
        PropKind::Size,
        Some("4M"),
        "Largest request body accepted; a larger one is answered 413.",
    )
    .range(1, 1 << 30),
    PropSpec::new(
        "buffer_chunk_size",
        PropKind::Size,
        Some("512K"),
        "Accepted for compatibility; bodies are read as they arrive, up to buffer_max_size.",
    )
    .range(1, 1 << 30),
    PropSpec::new(
        "add_remote_addr",
        PropKind::Bool,
        Some("false"),
        "Adds the client's address (first X-Forwarded-For entry) to each record.",
    ),
    PropSpec::new(
        "remote_addr_key",
        PropKind::Str,
        Some("REMOTE_ADDR"),
        "Key name for the remote address field added to the record.",
    ),
    PropSpec::new(
        "success_header",
        PropKind::Multi,
        None,
        "'NAME VALUE' header added to successful responses; repeat for more.",
    ),
    PropSpec::new(
        "enable_health_endpoint",
        PropKind::Bool,
        Some("false"),
        "Enable the GET /health endpoint for this input instance.",
    ),
    PropSpec::new(
        "http2",
        PropKind::Bool,
        Some("false"),
        "HTTP/2 (agent serves HTTP/1.1 only: must stay off).",
    ),
    // Fluent Bit 5's shared HTTP server settings (flb_http_server_config_map.c); the
    // plain names above are its compatibility aliases.
    PropSpec::new(
        "http_server.http2",
        PropKind::Bool,
        Some("false"),
        "As http2.",
    ),
    PropSpec::new(
        "http_server.buffer_max_size",
        PropKind::Size,
        None,
        "As buffer_max_size (wins when both are set).",
    )
    .range(1, 1 << 30),
    PropSpec::new(
        "http_server.buffer_chunk_size",
        PropKind::Size,
        None,
        "As buffer_chunk_size (accepted for compatibility).",
    )
    .range(1, 1 << 30),
    PropSpec::new(
        "http_server.idle_timeout",
        PropKind::Time,
        None,
        "Closes a connection idle this long (net.idle_timeout when unset).",
    ),
    PropSpec::new(
        "http_server.max_connections",
        PropKind::Size,
        Some("0"),
        "Most connections at once; 0: agent's cap of 1,024.",
    ),
    PropSpec::new(
        "http_server.workers",
        PropKind::Int,
        Some("1"),
        "Threads serving the connections: the agent's runtime gets at least this many.",
    )
    .range(1, 256),
    PropSpec::new(
        "http_server.ingress_queue_event_limit",
        PropKind::Size,
        Some("8192"),
        "Accepted for compatibility (records go to the engine as each request is read).",
    ),
    PropSpec::new(
        "http_server.ingress_queue_byte_limit",
        PropKind::Size,
        None,
        "Bytes of request bodies held at once (default 64M, at least twice buffer_max_size); beyond it 503.",
    )
    .range(1, 1 << 32),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "http",
    description: "HTTP",
    props: PROPS,
    net: true,
    upstream: false,
    build,
};

struct Cfg {
    tag_key: Option<Accessor>,
    success: StatusCode,
    success_headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    max: usize,
    remote_addr_key: Option<Str>,
    health: bool,
    /// Bad requests: counted and logged at a limited rate.
    dropped: Dropped,
    /// Bytes of request bodies the input holds at once, for all connections: a body
    /// takes its declared length (buffer_max_size when unknown) before it is read, and
    /// gives it back once its records are handed over. Without it, 1,024 connections
    /// could each hold buffer_max_size.
    bodies: tokio::sync::Semaphore,
}

/// The body budget: at least this, and at least two bodies of buffer_max_size.
const BODY_BUDGET: usize = 64 << 20;

struct HttpInput {
    listener: ListenSpec,
    cfg: Arc<Cfg>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    for key in ["http2", "http_server.http2"] {
        if props.bool(key) == Some(true) {
            return Err(props.error(key, "off: agent's http input serves HTTP/1.1 only"));
        }
    }
    let tag_key = props
        .str("tag_key")
        .map(|k| Accessor::parse(k).map_err(|e| props.error("tag_key", e)))
        .transpose()?;
    let success = match props.str("successful_response_code").unwrap_or("201") {
        "200" => StatusCode::OK,
        "204" => StatusCode::NO_CONTENT,
        _ => StatusCode::CREATED,
    };
    let mut success_headers = Vec::new();
    for h in props.multi("success_header") {
        let parsed = h.trim().split_once(char::is_whitespace).and_then(|(n, v)| {
            Some((
                hyper::header::HeaderName::from_bytes(n.as_bytes()).ok()?,
                hyper::header::HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        match parsed {
            Some(p) => success_headers.push(p),
            None => {
                return Err(props.error(
                    "success_header",
                    "'NAME VALUE', a valid header name and value",
                ))
            }
        }
    }
    let max = match props.is_set("http_server.buffer_max_size") {
        true => props.size("http_server.buffer_max_size"),
        false => props.size("buffer_max_size"),
    }
    .unwrap_or(4 << 20) as usize;
    let budget = props
        .size("http_server.ingress_queue_byte_limit")
        .map_or(BODY_BUDGET, |b| b as usize)
        .max(2 * max);
    let mut setup = DownstreamSetup::from_props(props, None)?;
    if let Some(t) = props.time("http_server.idle_timeout") {
        setup.idle_timeout = (!t.is_zero()).then_some(t);
    }
    match props.size("http_server.max_connections") {
        Some(n) if n > 0 => setup.max_connections = setup.max_connections.min(n as usize),
        _ => {}
    }
    crate::pipeline::request_runtime_threads(props.int("http_server.workers").unwrap_or(1) as usize);
    Ok(Box::new(HttpInput {
        listener: listen_spec(setup, "http", "request", ctx),
        cfg: Arc::new(Cfg {
            tag_key,
            success,
            success_headers,
            max,
            remote_addr_key: match props.bool("add_remote_addr") {
                Some(true) => props.str("remote_addr_key").map(Str::from),
                _ => None,
            },
            health: props.bool("enable_health_endpoint") == Some(true),
            dropped: Dropped::new("http", ctx),
            bodies: tokio::sync::Semaphore::new(budget),
        }),
    }))
}

impl Input for HttpInput {
    fn run(self: Box<Self>, ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let HttpInput { listener, cfg } = *self;
            let tag = ctx.tag.clone();
            run_server(listener, ctx, move |conn, out, shutdown| {
                serve_conn(conn, cfg.clone(), tag.clone(), out, shutdown)
            })
            .await
        })
    }
}

/// Serves one client's requests until it closes, is evicted, or the agent stops.
async fn serve_conn(conn: Conn, cfg: Arc<Cfg>, tag: Tag, out: InputSender, mut shutdown: Shutdown) {
    let activity = conn.activity.clone();
    let io = hyper_util::rt::TokioIo::new(conn.stream);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (cfg, tag, mut out, activity) =
            (cfg.clone(), tag.clone(), out.clone(), activity.clone());
        async move {
            let resp = handle(&cfg, &tag, &mut out, req, &activity).await;
            // An answered request is progress; a body that trickles in is not, so a
            // slow client is closed by net.first_frame_timeout / net.idle_timeout.
            activity.progress();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// The media type of a Content-Type header, without parameters, lowercased.
fn media_type(req: &Request<Incoming>) -> Option<String> {
    let v = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

async fn handle(
    cfg: &Cfg,
    default_tag: &Tag,
    out: &mut InputSender,
    req: Request<Incoming>,
    activity: &Activity,
) -> Response<Full<Bytes>> {
    let bad = |why: &'static str, body: &'static str| {
        cfg.dropped.drop_one(|| format!("request refused: {why}"));
        respond(StatusCode::BAD_REQUEST, body)
    };
    let path = req.uri().path();
    if !path.starts_with('/') {
        return bad("invalid request", "error: invalid request\n");
    }
    let tag: Tag = match &path[1..] {
        "" => default_tag.clone(),
        p => Tag::from(sanitize(p).as_str()),
    };
    if req.version() == hyper::Version::HTTP_11 && !req.headers().contains_key(hyper::header::HOST)
    {
        return bad("missing host header", "error: missing host header\n");
    }
    if cfg.health && req.method() == Method::GET && path == "/health" {
        return health();
    }
    if req.method() != Method::POST {
        return bad("invalid HTTP method", "error: invalid HTTP method\n");
    }
    let kind = match media_type(&req).as_deref() {
        None => {
            return bad(
                "no Content-Type",
                "error: header 'Content-Type' is not set\n",
            )
        }
        Some("application/json") => Kind::Json,
        Some("application/x-www-form-urlencoded") => Kind::Form,
        Some("application/msgpack" | "application/x-msgpack") => Kind::Msgpack,
        Some(_) => return bad("invalid Content-Type", "error: invalid 'Content-Type'\n"),
    };
    let too_large = |cfg: &Cfg| {
        cfg.dropped.drop_one(|| {
            format!(
                "request refused: a body over buffer_max_size ({} bytes)",
                cfg.max
            )
        });
        let mut r = respond(StatusCode::PAYLOAD_TOO_LARGE, "error: payload too large\n");
        // The rest of the body is not read: the connection cannot be reused.
        r.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        r
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max as u64) {
        return too_large(cfg);
    }
    let remote = cfg.remote_addr_key.as_ref().and_then(|k| {
        let v = req.headers().get("x-forwarded-for")?.to_str().ok()?;
        let first = v.split(',').next()?.trim();
        (!first.is_empty()).then(|| (k.clone(), Value::Str(Str::from(first))))
    });
    // Room for the body in the input's budget, or 503 at once (the client retries),
    // rather than reading more bodies than the budget holds.
    let want = declared
        .map_or(cfg.max, |n| n as usize)
        .clamp(1, u32::MAX as usize);
    let Ok(_room) = cfg.bodies.try_acquire_many(want as u32) else {
        cfg.dropped.drop_one(|| {
            "request refused with 503: the bodies being read fill the input's budget".to_string()
        });
        let mut r = respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "error: deferred ingress queue is full\n",
        );
        r.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return r;
    };
    let body = match Limited::new(req.into_body(), cfg.max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(cfg),
        // The client went away or sent a broken body: nobody reads this answer.
        Err(_) => return bad("unreadable body", "error: unable to process records\n"),
    };
    if body.is_empty() {
        return bad("empty body", "error: no payload found\n");
    }
    let bodies = match kind {
        Kind::Json => json_bodies(&body),
        Kind::Form => Ok(vec![form_body(&body)]),
        Kind::Msgpack => msgpack_bodies(&body),
    };
    let Ok(bodies) = bodies else {
        return bad(
            "a body that is not records",
            "error: unable to process records\n",
        );
    };
    if out.paused() {
        cfg.dropped.drop_one(|| {
            "request refused with 503: the input is paused (mem_buf_limit)".to_string()
        });
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "error: deferred ingress queue is full\n",
        );
    }
    // Work in hand while the engine takes the records: never closed as idle meanwhile.
    activity.hold();
    let sent = send(cfg, tag, out, bodies, remote).await;
    activity.release();
    match sent {
        Ok(()) => {
            let mut r = respond(cfg.success, "");
            for (n, v) in &cfg.success_headers {
                r.headers_mut().append(n.clone(), v.clone());
            }
            r
        }
        Err(_) => respond(StatusCode::SERVICE_UNAVAILABLE, "error: shutting down\n"),
    }
}

/// Hands the records of one request to the engine, consecutive records of one tag
/// together, in order.
async fn send(
    cfg: &Cfg,
    tag: Tag,
    out: &mut InputSender,
    bodies: Vec<Map>,
    remote: Option<(Str, Value)>,
) -> Result<(), PluginError> {
    let now = EventTime::now();
    // Consecutive records with the same tag go together, in order.
    let mut batch: Vec<Record> = Vec::new();
    let mut batch_tag = tag.clone();
    for mut body in bodies {
        if let Some((k, v)) = &remote {
            if body.iter().any(|(bk, _)| bk == k) {
                crate::warn!(
                    "{} remote_addr_key already present in record, skipping injection",
                    cfg.dropped.prefix()
                );
            } else {
                body.push((k.clone(), v.clone()));
            }
        }
        let rec_tag = cfg
            .tag_key
            .as_ref()
            .and_then(|a| match a.get(&body) {
                Some(Value::Str(s)) => Some(Tag::from(sanitize(s).as_str())),
                _ => None,
            })
            .unwrap_or_else(|| tag.clone());
        if rec_tag != batch_tag && !batch.is_empty() {
            out.send_tagged(batch_tag.clone(), std::mem::take(&mut batch))
                .await?;
        }
        batch_tag = rec_tag;
        batch.push(Record::new(now, body));
    }
    out.send_tagged(batch_tag, batch).await
}

enum Kind {
    Json,
    Form,
    Msgpack,
}

/// Letters, digits, `_` and `.` stay; anything else becomes `_`, as Fluent Bit's tags
/// from URIs and `tag_key`.
fn sanitize(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => b as char,
            _ => '_',
        })
        .collect()
}

fn health() -> Response<Full<Bytes>> {
    let now = crate::event::EventTime::now();
    let t = chrono_like(now);
    let body = format!(
        "{{\n  \"status\": \"ok\",\n  \"message\": \"I can only show you the door. You're the one that has to walk through it.\",\n  \"timestamp\": \"{t}\"\n}}\n"
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::OK;
    r
}

/// `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ` (UTC), as Fluent Bit's health answer.
fn chrono_like(t: EventTime) -> String {
    let days = t.secs.div_euclid(86400);
    let rem = t.secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        t.nanos
    )
}

fn json_map(o: &serde_json::Map<String, serde_json::Value>) -> Map {
    o.iter()
        .map(|(k, v)| (Str::from(k.as_str()), Value::from_json(v)))
        .collect()
}

/// Objects are records; an array gives its objects and ends the body, as in Fluent
/// Bit; anything else refuses the whole body.
fn json_bodies(body: &[u8]) -> Result<Vec<Map>, ()> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
        match v.map_err(|_| ())? {
            serde_json::Value::Object(o) => out.push(json_map(&o)),
            serde_json::Value::Array(a) => {
                for v in a {
                    match v {
                        serde_json::Value::Object(o) => out.push(json_map(&o)),
                        _ => return Err(()),
                    }
                }
                break;
            }
            _ => return Err(()),
        }
    }
    if out.is_empty() {
        return Err(());
    }
    Ok(out)
}

/// As [`json_bodies`], from MessagePack values.
fn msgpack_bodies(body: &[u8]) -> Result<Vec<Map>, ()> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        match crate::event::format::read_msgpack_value(body, &mut pos).map_err(|_| ())? {
            Value::Map(m) => out.push(m),
            Value::Array(a) => {
                for v in a {
                    match v {
                        Value::Map(m) => out.push(m),
                        _ => return Err(()),
                    }
                }
                break;
            }
            _ => return Err(()),
        }
    }
    if out.is_empty() {
        return Err(());
    }
    Ok(out)
}

/// `a=1&b=two+words`: one record of the fields with a `=`, names and values trimmed,
/// values percent-decoded (`+` is a space; a bad escape keeps the raw value).
fn form_body(body: &[u8]) -> Map {
    let text = String::from_utf8_lossy(body);
    let mut map = Map::new();
    for field in text.split('&') {
        let field = field.strip_prefix('\n').unwrap_or(field);
        if field.is_empty() || field.starts_with('=') {
            continue;
        }
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let decoded = percent_decode(v).unwrap_or_else(|| v.to_string());
        map.push((Str::from(k.trim()), Value::Str(Str::from(decoded))));
    }
    map
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(json_bodies(br#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(json_bodies(br#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
        assert!(json_bodies(b"[1]").is_err());
        assert!(json_bodies(b"42").is_err());
        assert!(json_bodies(b"{\"a\":").is_err());
        let f = form_body(b"a=1&b=two+words%21&=x&novalue&c=%zz");
        let want: Map = [("a", "1"), ("b", "two words!"), ("c", "%zz")]
            .iter()
            .map(|(k, v)| (Str::from(*k), Value::Str(Str::from(*v))))
            .collect();
        assert_eq!(f, want);
    }

    #[test]
    fn tags_and_times() {
        assert_eq!(sanitize("app/v1-x.y"), "app_v1_x.y");
        assert_eq!(
            chrono_like(EventTime {
                secs: 1_065_910_455,
                nanos: 3
            }),
            "2003-10-11T22:14:15.000000003Z"
        );
    }
}
