//! `syslog` input: syslog messages over UDP, TCP or Unix sockets, each parsed by a
//! regex parser into a record.
//! Fluent Bit: plugins/in_syslog/syslog.c, syslog_conf.c, syslog_conn.c, syslog_prot.c,
//! syslog_server.c
//!
//! `mode udp`/`unix_udp`: one message per datagram. `mode tcp`/`unix_tcp`: messages
//! ended by a newline (or a NUL byte), or with `format octet_counting` framed as
//! `LEN SP MSG` (RFC 6587). The `parser` (default `syslog-rfc5424`, and
//! `syslog-rfc3164-local` for the Unix modes, as in Fluent Bit; they must be defined in a
//! parsers file, as agent's `conf/parsers.conf` does) makes the record; its time is the
//! message's, or now. `raw_message_key` keeps the message as received,
//! `source_address_key` adds the sender (`udp://IP:PORT`, `tcp://IP:PORT`,
//! `unix://PATH`).
//!
//! A stream connection holds at most `buffer_max_size` of an unfinished message; more
//! closes it (logged, `agent_input_rejected_connections_total`). A datagram larger than
//! `buffer_chunk_size`, or a message the parser does not match, is dropped, counted in
//! `agent_input_dropped_messages_total` and logged at a limited rate.

use std::sync::Arc;

use super::server::{listen_spec, run_server, Dropped};
use super::udp::datagram_setup;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Map, Record, Str, Value};
use crate::net::datagram::{DatagramSetup, DatagramSocket};
use crate::net::downstream::{read_some, Conn, ListenSpec};
use crate::net::DownstreamSetup;
use crate::parser::Parser;
use crate::pipeline::{InputSender, Shutdown};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const MODES: &[&str] = &["udp", "tcp", "unix_udp", "unix_tcp"];

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "mode",
        PropKind::Enum(MODES),
        Some("unix_udp"),
        "Set the socket mode: unix_tcp, unix_udp, tcp or udp.",
    ),
    PropSpec::new(
        "listen",
        PropKind::Str,
        Some("0.0.0.0"),
        "Address to listen on (tcp and udp modes).",
    ),
    PropSpec::new(
        "port",
        PropKind::Int,
        Some("5140"),
        "Port to listen on (tcp and udp modes).",
    ),
    PropSpec::new(
        "path",
        PropKind::Str,
        None,
        "Set the path for the UNIX socket (unix_tcp and unix_udp modes).",
    ),
    PropSpec::new(
        "unix_perm",
        PropKind::Str,
        Some("0644"),
        "Set the permissions for the UNIX socket, octal.",
    ),
    PropSpec::new(
        "buffer_chunk_size",
        PropKind::Size,
        Some("32768"),
        "Bytes read at a time; the largest datagram accepted.",
    )
    .range(1, 1 << 30),
    PropSpec::new(
        "buffer_max_size",
        PropKind::Size,
        None,
        "Largest unfinished message a stream connection holds; default buffer_chunk_size.",
    )
    .range(1, 1 << 30),
    PropSpec::new(
        "parser",
        PropKind::Str,
        None,
        "Set the parser; default syslog-rfc5424 (tcp, udp) or syslog-rfc3164-local (unix modes).",
    ),
    PropSpec::new(
        "receive_buffer_size",
        PropKind::Size,
        None,
        "Set the socket receiving buffer size (SO_RCVBUF).",
    )
    .range(1, i32::MAX as i64),
    PropSpec::new(
        "raw_message_key",
        PropKind::Str,
        None,
        "Key where the raw message will be preserved.",
    ),
    PropSpec::new(
        "source_address_key",
        PropKind::Str,
        None,
        "Key where the source address will be injected.",
    ),
    PropSpec::new(
        "format",
        PropKind::Enum(&["newline", "octet_counting", "octet"]),
        Some("newline"),
        "Format of TCP framing: newline (default) or octet_counting (RFC 6587).",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "syslog",
    description: "Syslog",
    props: PROPS,
    net: true,
    upstream: false,
    build,
};

struct Cfg {
    parser: Arc<Parser>,
    raw_key: Option<Str>,
    source_key: Option<Str>,
    octet_counting: bool,
    chunk: usize,
    max: usize,
    dropped: Dropped,
}

enum Listen {
    Datagram(DatagramSetup),
    Stream(ListenSpec),
}

struct SyslogInput {
    listen: Listen,
    cfg: Arc<Cfg>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let mode = props.str("mode").unwrap_or("unix_udp").to_ascii_lowercase();
    let unix = mode.starts_with("unix_");
    let path = props.str("path");
    if unix && path.is_none() {
        return Err(props.error(
            "mode",
            format!("'path' with mode {mode}: the Unix socket file to listen on (or mode udp/tcp with listen and port)"),
        ));
    }
    let perm = match unix {
        false => None,
        true => Some(
            props
                .str("unix_perm")
                .and_then(|p| u32::from_str_radix(p.trim_start_matches("0o"), 8).ok())
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| props.error("unix_perm", "octal permissions such as 0660"))?,
        ),
    };
    let chunk = props.size("buffer_chunk_size").unwrap_or(32768) as usize;
    let max = props.size("buffer_max_size").map_or(chunk, |n| n as usize);
    if max < chunk {
        return Err(props.error(
            "buffer_max_size",
            format!("a size >= buffer_chunk_size ({chunk})"),
        ));
    }
    let parser = match props.str("parser") {
        Some(name) => ctx.parser_named(props, "parser", name)?,
        None => {
            let name = if unix {
                "syslog-rfc3164-local"
            } else {
                "syslog-rfc5424"
            };
            ctx.parsers.parser(name).ok_or_else(|| {
                ctx.parsers
                    .unknown(props.span(), "parser", name, ctx.parsers.parser_names())
            })?
        }
    };
    let datagram = mode.ends_with("udp");
    let tls = props.bool("tls") == Some(true);
    if tls && mode != "tcp" {
        return Err(props.error("tls", format!("off with mode {mode}: TLS is for mode tcp")));
    }
    let listen = if datagram {
        Listen::Datagram(datagram_setup(
            props,
            path.filter(|_| unix).map(|p| (p, perm)),
        )?)
    } else {
        let mut setup = DownstreamSetup::from_props(props, path.filter(|_| unix))?;
        setup.unix_perm = perm;
        Listen::Stream(listen_spec(setup, "syslog", "message", ctx))
    };
    Ok(Box::new(SyslogInput {
        listen,
        cfg: Arc::new(Cfg {
            parser,
            raw_key: props.str("raw_message_key").map(Str::from),
            source_key: props.str("source_address_key").map(Str::from),
            octet_counting: props
                .str("format")
                .is_some_and(|f| !f.eq_ignore_ascii_case("newline")),
            chunk,
            max,
            dropped: Dropped::new("syslog", ctx),
        }),
    }))
}

impl Input for SyslogInput {
    fn run(self: Box<Self>, ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let SyslogInput { listen, cfg } = *self;
            match listen {
                Listen::Stream(spec) => {
                    run_server(spec, ctx, move |conn, out, shutdown| {
                        serve_conn(conn, cfg.clone(), out, shutdown)
                    })
                    .await
                }
                Listen::Datagram(setup) => serve_datagrams(setup, cfg, ctx).await,
            }
        })
    }
}

impl Cfg {
    /// One message as a record, or dropped (counted, logged) when the parser does not
    /// match it.
    fn record(&self, msg: &[u8], source: &Option<(Str, Value)>) -> Option<Record> {
        let mut body = Map::with_capacity(8);
        match self.parser.parse(msg, &mut body) {
            Ok(time) => {
                let time = time
                    .filter(|t| t.secs != 0 || t.nanos != 0)
                    .unwrap_or_else(EventTime::now);
                if let Some(k) = &self.raw_key {
                    body.push((k.clone(), Value::Bin(msg.to_vec().into())));
                }
                if let Some((k, v)) = source {
                    body.push((k.clone(), v.clone()));
                }
                Some(Record::new(time, body))
            }
            Err(_) => {
                self.dropped.drop_one(|| {
                    format!(
                        "error parsing log message with parser '{}': {}",
                        self.parser.name,
                        msg[..msg.len().min(200)].escape_ascii()
                    )
                });
                None
            }
        }
    }
}

async fn serve_datagrams(
    setup: DatagramSetup,
    cfg: Arc<Cfg>,
    mut ctx: InputContext,
) -> Result<(), PluginError> {
    let socket = DatagramSocket::bind(&setup).map_err(|source| PluginError::Io {
        context: format!("cannot listen on {}", setup.address()),
        source,
    })?;
    crate::info!(
        "{} listening on {}",
        cfg.dropped.prefix(),
        socket.local_address()
    );
    // Fluent Bit reads at most buffer_chunk_size - 1 bytes of a datagram; one byte more
    // tells a longer one, which is dropped rather than cut.
    let max = cfg.chunk.saturating_sub(1).max(1);
    let mut buf = vec![0u8; max + 1];
    loop {
        let (n, peer) = tokio::select! {
            _ = ctx.shutdown.wait() => return Ok(()),
            r = socket.recv(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    cfg.dropped.drop_one(|| format!("receive failed: {e}"));
                    continue;
                }
            },
        };
        if n > max {
            cfg.dropped.drop_one(|| {
                format!(
                    "dropped a datagram from {peer} larger than buffer_chunk_size ({} bytes)",
                    cfg.chunk
                )
            });
            continue;
        }
        let source = cfg
            .source_key
            .as_ref()
            .map(|k| (k.clone(), Value::Str(Str::from(peer.to_string()))));
        if let Some(r) = cfg.record(&buf[..n], &source) {
            ctx.out.send(vec![r]).await?;
        }
    }
}

/// Takes every complete message off the front of `buf` (from `*parsed` on) and returns
/// them as records; `Err` when an octet count is not a number.
fn split(
    cfg: &Cfg,
    buf: &mut Vec<u8>,
    source: &Option<(Str, Value)>,
    out: &mut Vec<Record>,
) -> Result<(), String> {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        if rest.is_empty() {
            break;
        }
        if cfg.octet_counting {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == rest.len() {
                break;
            }
            if rest[digits] != b' ' || digits == 0 || digits > 10 {
                return Err("invalid octet-counting length".to_string());
            }
            let len: usize = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or("invalid octet-counting length")?;
            if len > cfg.max {
                return Err(format!(
                    "a message of {len} bytes, longer than buffer_max_size ({} bytes)",
                    cfg.max
                ));
            }
            let body = &rest[digits + 1..];
            if body.len() < len {
                break;
            }
            if len > 0 {
                out.extend(cfg.record(&body[..len], source));
            }
            start += digits + 1 + len;
            // A newline after a frame is allowed, as in Fluent Bit.
            if buf.get(start) == Some(&b'\n') {
                start += 1;
            }
        } else {
            let Some(i) = memchr::memchr2(b'\n', 0, rest) else {
                break;
            };
            if i > 0 {
                out.extend(cfg.record(&rest[..i], source));
            }
            start += i + 1;
        }
    }
    buf.drain(..start);
    Ok(())
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
    let mut records = Vec::new();
    loop {
        let n = tokio::select! {
            _ = shutdown.wait() => return,
            n = read_some(&mut stream, &mut buf, cfg.chunk, io_timeout) => n,
        };
        let eof = match n {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                rejecter.reject(&e.to_string());
                return;
            }
        };
        let split = split(&cfg, &mut buf, &source, &mut records);
        if eof && split.is_ok() && !cfg.octet_counting && !buf.is_empty() {
            // A last message without its newline still counts.
            let last = std::mem::take(&mut buf);
            records.extend(cfg.record(&last, &source));
        }
        if !records.is_empty() {
            activity.hold();
            let sent = out.send(std::mem::take(&mut records)).await;
            activity.release();
            if sent.is_err() {
                return;
            }
        }
        if let Err(why) = split {
            rejecter.reject(&why);
            return;
        }
        if eof {
            if !buf.is_empty() {
                rejecter.reject(&format!(
                    "closed in the middle of a message ({} bytes unread)",
                    buf.len()
                ));
            }
            return;
        }
        if buf.len() >= cfg.max {
            rejecter.reject(&format!(
                "a message longer than buffer_max_size ({} bytes)",
                cfg.max
            ));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(octet_counting: bool) -> Cfg {
        use crate::config::{Entry, Section, SectionKind, Span};
        let entry = |k: &str, v: &str| Entry {
            key: k.to_string(),
            value: v.to_string(),
            span: Span::new("parsers.conf", 2),
        };
        let section = Section {
            kind: SectionKind::Parser,
            header: "PARSER".to_string(),
            span: Span::new("parsers.conf", 1),
            entries: vec![
                entry("name", "any"),
                entry("format", "regex"),
                entry("regex", "^(?<message>.+)$"),
            ],
            processors: Vec::new(),
        };
        let parser = Arc::new(Parser::from_section(&section).unwrap());
        Cfg {
            parser,
            raw_key: None,
            source_key: None,
            octet_counting,
            chunk: 16,
            max: 32,
            dropped: Dropped::for_tests(),
        }
    }

    fn messages(out: &[Record]) -> Vec<String> {
        out.iter().map(|r| format!("{:?}", r.body[0].1)).collect()
    }

    #[test]
    fn newline_and_nul_framing_keep_the_unfinished_tail() {
        let c = cfg(false);
        let mut buf = b"one\ntwo\0\nthr".to_vec();
        let mut out = Vec::new();
        split(&c, &mut buf, &None, &mut out).unwrap();
        assert_eq!(messages(&out).len(), 2);
        assert_eq!(buf, b"thr");
    }

    #[test]
    fn octet_counting_frames_split_anywhere() {
        let c = cfg(true);
        let mut out = Vec::new();
        let mut buf = b"3 one5 tw".to_vec();
        split(&c, &mut buf, &None, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(buf, b"5 tw");
        buf.extend_from_slice(b"o!!\n12");
        split(&c, &mut buf, &None, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(buf, b"12");
        let mut bad = b"x3 one".to_vec();
        assert!(split(&c, &mut bad, &None, &mut out).is_err());
        let mut huge = b"999 a".to_vec();
        assert!(
            split(&c, &mut huge, &None, &mut out).is_err(),
            "over buffer_max_size"
        );
    }
}
