//! `tcp` input: records from clients that write JSON objects or separated lines.
//! Fluent Bit: plugins/in_tcp/tcp.c, tcp_conn.c, tcp_config.c
//!
//! `format json`: a stream of JSON objects, any number per read and split anywhere
//! across reads; each object is a record. `format none`: each `separator`-terminated
//! piece is a record `{"log": "..."}`. A connection reads `chunk_size` KB at a time and
//! holds at most `buffer_size` KB of an unfinished record; more, or bytes that are not
//! JSON objects, close it with one log line and `agent_input_rejected_connections_total`.
//! `source_address_key` adds the client's address (`tcp://IP:PORT`).

use std::sync::Arc;

use super::server::{listen_spec, run_server};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Map, Record, Str, Value};
use crate::net::downstream::{read_some, Activity, Conn, ListenSpec};
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
        Some("5170"),
        "TCP port to listen on.",
    ),
    PropSpec::new(
        "format",
        PropKind::Enum(&["json", "none"]),
        Some("json"),
        "json: a stream of JSON objects; none: separated lines as {\"log\": line}.",
    ),
    PropSpec::new(
        "separator",
        PropKind::Str,
        Some("\\n"),
        "Record separator of format none (\\n, \\r, \\t escapes allowed).",
    ),
    PropSpec::new(
        "chunk_size",
        PropKind::Str,
        Some("32"),
        "Kilobytes read from a connection at a time.",
    ),
    PropSpec::new(
        "buffer_size",
        PropKind::Str,
        None,
        "Largest unfinished record held per connection, in kilobytes; default chunk_size.",
    ),
    PropSpec::new(
        "parser",
        PropKind::Str,
        None,
        "Name of a [PARSER] applied to each line (switches format to none); a line it does not match is kept under 'log'.",
    ),
    PropSpec::new(
        "source_address_key",
        PropKind::Str,
        None,
        "Add the client address (tcp://IP:PORT) under this key.",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "tcp",
    description: "TCP",
    props: PROPS,
    net: true,
    upstream: false,
    build,
};

/// How a stream or datagram input splits its bytes into records (tcp, udp).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Format {
    Json,
    None(Vec<u8>),
}

/// `format`, `separator`, `chunk_size` and `buffer_size` as Fluent Bit's tcp and udp
/// inputs read them: a `parser` switches to line mode; sizes in KB; the buffer
/// defaults to the chunk. Returns (format, chunk, max).
pub(crate) fn read_format(
    props: &Props,
    ctx: &BuildContext,
    parser: bool,
) -> Result<(Format, usize, usize), ConfigError> {
    let format = match props.str("format").unwrap_or("json") {
        f if f.eq_ignore_ascii_case("none") || parser => {
            if !f.eq_ignore_ascii_case("none") {
                crate::warn!(
                    "[input:{}:{}] 'parser' requires line-delimited payloads; switching format from '{f}' to 'none'",
                    props.plugin(),
                    ctx.instance
                );
            }
            let sep = unescape(props.str("separator").unwrap_or("\\n"));
            if sep.is_empty() {
                return Err(props.error("separator", "at least one byte"));
            }
            Format::None(sep)
        }
        _ => Format::Json,
    };
    let chunk = kb(props, "chunk_size")?;
    let max = match props.is_set("buffer_size") {
        true => kb(props, "buffer_size")?,
        false => chunk,
    };
    if max < chunk {
        return Err(props.error("buffer_size", "a size >= chunk_size"));
    }
    Ok((format, chunk, max))
}

struct TcpInput {
    /// Where to listen, the log prefix and the rejected-connections counter; bound when
    /// the input starts (so `--dry-run` binds nothing).
    listener: ListenSpec,
    cfg: Arc<Cfg>,
}

struct Cfg {
    format: Format,
    chunk: usize,
    max: usize,
    source_key: Option<Str>,
    parser: Option<Arc<crate::parser::Parser>>,
}

/// `\n`, `\r`, `\t` and `\\` in a configured separator.
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

/// A size in kilobytes, as Fluent Bit reads `chunk_size`/`buffer_size` (`atoi(v) * 1024`):
/// `32` and `32k` are 32 KiB. `1M` is 1 MiB here (Fluent Bit's `atoi` makes it 1 KiB).
pub(crate) fn kb(props: &Props, name: &str) -> Result<usize, ConfigError> {
    let text = props.str(name).unwrap_or_default().trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let unit = match text[digits..].to_ascii_lowercase().as_str() {
        "" | "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => 0,
    };
    match text[..digits].parse::<usize>() {
        // At most 1 GiB: the buffer is allocated per connection.
        Ok(n) if n > 0 && unit > 0 && n.saturating_mul(unit) <= 1 << 30 => Ok(n * unit),
        _ => Err(props.error(
            name,
            "a number of kilobytes from 1 to 1048576, such as 32 or 512k (or 1M)",
        )),
    }
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let parser = ctx.parser(props, "parser")?;
    let (format, chunk, max) = read_format(props, ctx, parser.is_some())?;
    let setup = DownstreamSetup::from_props(props, None)?;
    Ok(Box::new(TcpInput {
        listener: listen_spec(setup, "tcp", "record", ctx),
        cfg: Arc::new(Cfg {
            format,
            chunk,
            max,
            source_key: props.str("source_address_key").map(Str::from),
            parser,
        }),
    }))
}

impl Input for TcpInput {
    fn run(self: Box<Self>, ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let TcpInput { listener, cfg } = *self;
            run_server(listener, ctx, move |conn, out, shutdown| {
                serve_conn(conn, cfg.clone(), out, shutdown)
            })
            .await
        })
    }
}

/// Takes every complete record off the front of `buf`.
fn split(format: &Format, buf: &mut Vec<u8>, out: &mut Vec<Map>) -> Result<(), String> {
    match format {
        Format::Json => {
            let mut stream =
                serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
            let mut used = 0;
            let result = loop {
                match stream.next() {
                    None => break Ok(()),
                    Some(Ok(serde_json::Value::Object(o))) => {
                        used = stream.byte_offset();
                        out.push(
                            o.iter()
                                .map(|(k, v)| (Str::from(k.as_str()), Value::from_json(v)))
                                .collect(),
                        );
                    }
                    Some(Ok(_)) => break Err("a JSON value that is not an object".to_string()),
                    Some(Err(e)) if e.is_eof() => break Ok(()),
                    Some(Err(e)) => break Err(format!("invalid JSON: {e}")),
                }
            };
            // Whitespace between objects is consumed with the next one.
            buf.drain(..used);
            result
        }
        Format::None(sep) => {
            let mut start = 0;
            while let Some(i) = find(&buf[start..], sep) {
                let line = String::from_utf8_lossy(&buf[start..start + i]);
                out.push(vec![(
                    Str::from("log"),
                    Value::Str(Str::from(line.as_ref())),
                )]);
                start += i + sep.len();
            }
            buf.drain(..start);
            Ok(())
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve_conn(conn: Conn, cfg: Arc<Cfg>, mut out: InputSender, mut shutdown: Shutdown) {
    let source = cfg
        .source_key
        .as_ref()
        .map(|k| (k.clone(), Value::Str(Str::from(conn.source_address()))));
    let rejecter = conn.rejecter();
    let io_timeout = conn.io_timeout;
    let activity = conn.activity.clone();
    let mut stream = conn.stream;
    let mut buf = Vec::new();
    let mut bodies = Vec::new();
    loop {
        let n = tokio::select! {
            _ = shutdown.wait() => return,
            n = read_some(&mut stream, &mut buf, cfg.chunk, io_timeout) => n,
        };
        match n {
            Ok(0) => {
                // A last record without its separator still counts, as in Fluent Bit.
                if let Format::None(_) = cfg.format {
                    if !buf.is_empty() {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        bodies.push(vec![(Str::from("log"), Value::Str(Str::from(line)))]);
                        let _ = send(&mut out, &mut bodies, &source, &cfg.parser, &activity).await;
                    }
                } else if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                    rejecter.reject(&format!(
                        "closed in the middle of a JSON object ({} bytes unread)",
                        buf.len()
                    ));
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                rejecter.reject(&e.to_string());
                return;
            }
        }
        if let Err(why) = split(&cfg.format, &mut buf, &mut bodies) {
            let _ = send(&mut out, &mut bodies, &source, &cfg.parser, &activity).await;
            rejecter.reject(&why);
            return;
        }
        if send(&mut out, &mut bodies, &source, &cfg.parser, &activity)
            .await
            .is_err()
        {
            return;
        }
        if buf.len() >= cfg.max {
            rejecter.reject(&format!(
                "a record longer than buffer_size ({} bytes)",
                cfg.max
            ));
            return;
        }
    }
}

async fn send(
    out: &mut InputSender,
    bodies: &mut Vec<Map>,
    source: &Option<(Str, Value)>,
    parser: &Option<Arc<crate::parser::Parser>>,
    activity: &Activity,
) -> Result<(), PluginError> {
    if bodies.is_empty() {
        return Ok(());
    }
    // Whole records are progress; the wait for the engine is work in hand, never idle.
    activity.hold();
    let sent = send_records(out, bodies, source, parser).await;
    activity.release();
    sent
}

async fn send_records(
    out: &mut InputSender,
    bodies: &mut Vec<Map>,
    source: &Option<(Str, Value)>,
    parser: &Option<Arc<crate::parser::Parser>>,
) -> Result<(), PluginError> {
    let now = EventTime::now();
    let records = bodies
        .drain(..)
        .map(|mut body| {
            let mut time = now;
            // A line read with a parser: its keys (then the source address), or the
            // line under 'log' when it does not match, as Fluent Bit's tcp input packs it.
            if let (Some(p), [(_, Value::Str(line))]) = (parser, body.as_slice()) {
                let mut parsed = Map::with_capacity(8);
                if let Ok(t) = p.parse(line.as_bytes(), &mut parsed) {
                    time = t.unwrap_or(now);
                    body = parsed;
                }
            }
            if let Some((k, v)) = source {
                body.push((k.clone(), v.clone()));
            }
            Record::new(time, body)
        })
        .collect();
    out.send(records).await
}
