//! `udp` input: records from datagrams of JSON or separated lines.
//! Fluent Bit: plugins/in_udp/udp.c, udp_conn.c, udp_config.c
//!
//! Each datagram stands alone. `format json`: the JSON values in it, an object as a
//! record, an array as `{"msg": [...]}`. `format none`: each `separator`-terminated piece
//! as `{"log": "..."}`. A leading CR or LF is skipped, as in Fluent Bit. A datagram that
//! is not valid JSON, or larger than `buffer_size` KB, is dropped, counted in
//! `agent_input_dropped_messages_total` and logged at a limited rate.

use std::sync::Arc;

use super::server::Dropped;
use super::tcp::{read_format, Format};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Map, Record, Str, Value};
use crate::net::datagram::{DatagramSetup, DatagramSocket};
use crate::parser::Parser;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new("listen", PropKind::Str, Some("0.0.0.0"), "Address to listen on."),
    PropSpec::new("port", PropKind::Int, Some("5170"), "UDP port to listen on."),
    PropSpec::new(
        "format",
        PropKind::Enum(&["json", "none"]),
        Some("json"),
        "json: JSON values (objects are records); none: separated lines as {\"log\": line}.",
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
        "Kilobytes read per datagram.",
    ),
    PropSpec::new(
        "buffer_size",
        PropKind::Str,
        None,
        "Largest datagram accepted, in kilobytes; default chunk_size.",
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
        "Add the sender's address (udp://IP:PORT) under this key.",
    ),
    PropSpec::new(
        "receive_buffer_size",
        PropKind::Size,
        None,
        "Socket receive buffer (SO_RCVBUF) size.",
    )
    .range(1, i32::MAX as i64),
    PropSpec::new(
        "workers",
        PropKind::Int,
        Some("1"),
        "Listener workers; agent reads with one task, only 1 is accepted.",
    )
    .range(1, 1),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "udp",
    description: "UDP",
    props: PROPS,
    net: true,
    upstream: false,
    build,
};

struct UdpInput {
    setup: DatagramSetup,
    format: Format,
    max: usize,
    source_key: Option<Str>,
    parser: Option<Arc<Parser>>,
    dropped: Dropped,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let parser = ctx.parser(props, "parser")?;
    let (format, _, max) = read_format(props, ctx, parser.is_some())?;
    if props.is_set("tls") && props.bool("tls") == Some(true) {
        return Err(props.error("tls", "off: udp has no TLS (use the tcp or http input)"));
    }
    let setup = datagram_setup(props, None)?;
    Ok(Box::new(UdpInput {
        setup,
        format,
        max,
        source_key: props.str("source_address_key").map(Str::from),
        parser,
        dropped: Dropped::new("udp", ctx),
    }))
}

/// `listen`, `port`, `receive_buffer_size` and `net.share_port` of a datagram input.
pub(crate) fn datagram_setup(
    props: &Props,
    unix: Option<(&str, Option<u32>)>,
) -> Result<DatagramSetup, ConfigError> {
    let port = props
        .int("port")
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| props.error("port", "a UDP port from 0 to 65535"))?;
    Ok(DatagramSetup {
        listen: props.str("listen").unwrap_or("0.0.0.0").to_string(),
        port,
        unix_path: unix.map(|(p, _)| p.into()),
        unix_perm: unix.and_then(|(_, m)| m),
        receive_buffer_size: props.size("receive_buffer_size").map(|n| n as usize),
        share_port: props.bool("net.share_port").unwrap_or(false),
    })
}

impl Input for UdpInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let socket = DatagramSocket::bind(&self.setup).map_err(|source| PluginError::Io {
                context: format!("cannot listen on {}", self.setup.address()),
                source,
            })?;
            crate::info!(
                "{} listening on {}",
                self.dropped.prefix(),
                socket.local_address()
            );
            // One byte more than the largest accepted tells a longer datagram.
            let mut buf = vec![0u8; self.max + 1];
            let mut records = Vec::new();
            loop {
                let (n, peer) = tokio::select! {
                    _ = ctx.shutdown.wait() => return Ok(()),
                    r = socket.recv(&mut buf) => match r {
                        Ok(r) => r,
                        Err(e) => {
                            self.dropped.drop_one(|| format!("receive failed: {e}"));
                            continue;
                        }
                    },
                };
                if n > self.max {
                    self.dropped.drop_one(|| {
                        format!(
                            "dropped a datagram from {peer} larger than buffer_size ({} bytes)",
                            self.max
                        )
                    });
                    continue;
                }
                let source = self
                    .source_key
                    .as_ref()
                    .map(|k| (k.clone(), Value::Str(Str::from(peer.to_string()))));
                let mut data = &buf[..n];
                if let [b'\r' | b'\n', rest @ ..] = data {
                    data = rest;
                }
                let now = EventTime::now();
                let parsed = match &self.format {
                    Format::Json => json_records(data, now, &source, &mut records),
                    Format::None(sep) => {
                        line_records(data, sep, now, &source, &self.parser, &mut records);
                        Ok(())
                    }
                };
                if let Err(why) = parsed {
                    records.clear();
                    self.dropped
                        .drop_one(|| format!("dropped a datagram from {peer}: {why}"));
                    continue;
                }
                ctx.out.send(std::mem::take(&mut records)).await?;
            }
        })
    }
}

/// The records of one JSON datagram, all or none: an object is a record, an array is
/// `{"msg": array}` as in Fluent Bit; anything else, or bad JSON, refuses the datagram.
fn json_records(
    data: &[u8],
    now: EventTime,
    source: &Option<(Str, Value)>,
    out: &mut Vec<Record>,
) -> Result<(), String> {
    let stream = serde_json::Deserializer::from_slice(data).into_iter::<serde_json::Value>();
    for v in stream {
        let mut body: Map = match v {
            Ok(serde_json::Value::Object(o)) => o
                .iter()
                .map(|(k, v)| (Str::from(k.as_str()), Value::from_json(v)))
                .collect(),
            Ok(a @ serde_json::Value::Array(_)) => vec![(Str::from("msg"), Value::from_json(&a))],
            Ok(_) => return Err("a JSON value that is neither an object nor an array".into()),
            Err(e) if e.is_eof() => return Err("incomplete JSON".into()),
            Err(e) => return Err(format!("invalid JSON: {e}")),
        };
        if let Some((k, v)) = source {
            body.push((k.clone(), v.clone()));
        }
        out.push(Record::new(now, body));
    }
    Ok(())
}

/// The records of one datagram of separated lines; the datagram's end ends its last
/// line, and empty lines are skipped.
fn line_records(
    data: &[u8],
    sep: &[u8],
    now: EventTime,
    source: &Option<(Str, Value)>,
    parser: &Option<Arc<Parser>>,
    out: &mut Vec<Record>,
) {
    let mut rest = data;
    while !rest.is_empty() {
        let (line, next) = match memchr::memmem::find(rest, sep) {
            Some(i) => (&rest[..i], &rest[i + sep.len()..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        if line.is_empty() {
            continue;
        }
        let mut time = now;
        let mut body = Map::new();
        let parsed = parser
            .as_ref()
            .is_some_and(|p| match p.parse(line, &mut body) {
                Ok(t) => {
                    time = t.unwrap_or(now);
                    true
                }
                Err(_) => false,
            });
        if !parsed {
            body.clear();
            body.push((
                Str::from("log"),
                Value::Str(Str::from(String::from_utf8_lossy(line).as_ref())),
            ));
        }
        if let Some((k, v)) = source {
            body.push((k.clone(), v.clone()));
        }
        out.push(Record::new(time, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> EventTime {
        EventTime { secs: 1, nanos: 0 }
    }

    #[test]
    fn json_objects_arrays_and_refusals() {
        let mut out = Vec::new();
        json_records(br#"{"a":1} {"b":"x"}[1,2]"#, t(), &None, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(&*out[2].body[0].0, "msg");
        for bad in [&b"{\"a\":"[..], b"42", b"{x}"] {
            assert!(
                json_records(bad, t(), &None, &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lines_end_at_the_datagram_end_and_skip_empty_ones() {
        let mut out = Vec::new();
        line_records(b"a\n\nb\nc", b"\n", t(), &None, &None, &mut out);
        let logs: Vec<_> = out.iter().map(|r| format!("{:?}", r.body[0].1)).collect();
        assert_eq!(logs.len(), 3, "{logs:?}");
    }
}
