//! `tcp` output: each flush's records, formatted, written to one pooled connection.
//! Fluent Bit: plugins/out_tcp/tcp.c, tcp_conf.c
//!
//! Formats: `msgpack` (the default) writes Fluent Bit's event bytes,
//! `[[EventTime, {metadata}], {body}]` per record; `json`, `json_lines` and `json_stream`
//! as `stdout` prints them; `raw_message_key` writes one field's value and `\n` per record
//! instead. A flush is reported delivered only once its last byte is written; any
//! connect, TLS, write or timeout failure returns a retry of the whole chunk, and the
//! connection is closed rather than reused half-written (see [`crate::net::upstream`]).

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::format::{self, JsonMode, JsonOptions};
use crate::event::{Chunk, Record, Value};
use crate::net::{NetSetup, TlsSetup, Upstream};
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

use super::{json_options, JSON_DATE_FORMAT, JSON_DATE_KEY};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "host",
        PropKind::Str,
        Some("127.0.0.1"),
        "Destination host name or IP address.",
    ),
    PropSpec::new("port", PropKind::Int, Some("5170"), "Destination TCP port."),
    PropSpec::new(
        "format",
        PropKind::Enum(&["msgpack", "json", "json_lines", "json_stream"]),
        Some("msgpack"),
        "Payload format: msgpack, json, json_lines or json_stream.",
    ),
    JSON_DATE_FORMAT,
    JSON_DATE_KEY,
    PropSpec::new(
        "raw_message_key",
        PropKind::Str,
        None,
        "Send only this key's value and a newline per record ($key, $key['sub'], or key).",
    ),
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "tcp",
    description: "TCP Output",
    props: PROPS,
    workers: 2,
    net: true,
    build,
};

/// A record accessor limited to what `raw_message_key` needs: a top-level key and
/// optional subkeys (`$log`, `$kubernetes['labels']['app']`, or a bare `log`).
#[derive(Clone, Debug, PartialEq)]
struct KeyPath(Vec<String>);

impl KeyPath {
    fn parse(text: &str) -> Option<KeyPath> {
        let text = text.strip_prefix('$').unwrap_or(text);
        let (head, mut rest) = match text.find('[') {
            Some(i) => (&text[..i], &text[i..]),
            None => (text, ""),
        };
        if head.is_empty() {
            return None;
        }
        let mut path = vec![head.to_string()];
        while !rest.is_empty() {
            let inner = rest.strip_prefix('[')?;
            let end = inner.find(']')?;
            let key = inner[..end].trim();
            let key = key
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))?;
            path.push(key.to_string());
            rest = &inner[end + 1..];
        }
        Some(KeyPath(path))
    }

    fn lookup<'a>(&self, rec: &'a Record) -> Option<&'a Value> {
        let mut map = &rec.body;
        let mut found = None;
        for (i, key) in self.0.iter().enumerate() {
            // The last occurrence of a duplicated key wins, as in Fluent Bit's JSON.
            let v = map
                .iter()
                .rev()
                .find(|(k, _)| &**k == key)
                .map(|(_, v)| v)?;
            if i + 1 < self.0.len() {
                let Value::Map(m) = v else { return None };
                map = m;
            }
            found = Some(v);
        }
        found
    }
}

/// A value as Fluent Bit's record accessor renders it as text (`flb_ra_translate`).
fn write_raw_value(out: &mut Vec<u8>, v: &Value, escape_unicode: bool) {
    match v {
        Value::Str(s) => out.extend_from_slice(s.as_bytes()),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        Value::Float(f) => out.extend_from_slice(format!("{f:.6}").as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Bin(b) => {
            for byte in b.iter() {
                out.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
        }
        Value::Map(_) | Value::Array(_) => format::write_json_value(out, v, escape_unicode),
    }
}

#[derive(Clone, Debug)]
enum TcpFormat {
    Msgpack,
    Json(JsonMode, JsonOptions),
    Raw(KeyPath, bool),
}

impl TcpFormat {
    /// The whole payload of one flush, into `buf` (cleared first).
    fn render(&self, records: &[Record], buf: &mut Vec<u8>) {
        buf.clear();
        match self {
            TcpFormat::Msgpack => records
                .iter()
                .for_each(|r| format::write_msgpack_record(buf, r)),
            TcpFormat::Json(mode, opts) => format::write_json_chunk(buf, records, *mode, opts),
            TcpFormat::Raw(path, escape_unicode) => {
                for rec in records {
                    // A record without the key still gets its line, as in Fluent Bit.
                    if let Some(v) = path.lookup(rec) {
                        write_raw_value(buf, v, *escape_unicode);
                    }
                    buf.push(b'\n');
                }
            }
        }
    }
}

struct TcpOutput {
    /// Shared by every worker of the instance: one pool, one TLS configuration.
    upstream: Upstream,
    format: TcpFormat,
    /// The flush being written, reused between flushes.
    buf: Vec<u8>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    // An empty value keeps the default (Props), so a host is always there.
    let host = props.str("host").unwrap_or("127.0.0.1");
    let port = props
        .int("port")
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?;
    let format = match props.str("raw_message_key") {
        Some(key) => TcpFormat::Raw(
            KeyPath::parse(key).ok_or_else(|| {
                props.error(
                    "raw_message_key",
                    "a record key such as $log or $kubernetes['pod_name']",
                )
            })?,
            ctx.service.escape_unicode,
        ),
        None => match JsonMode::parse(props.str("format").unwrap_or("msgpack")) {
            Some(mode) => TcpFormat::Json(mode, json_options(props, ctx.service.escape_unicode)),
            None => TcpFormat::Msgpack,
        },
    };
    let net = NetSetup::from_props(props)?;
    net.warn_proxy_env_unused(props);
    let tls = TlsSetup::from_props(props, host)?;
    Ok(Box::new(TcpOutput {
        upstream: Upstream::new(host, port, net, tls).with_metrics(super::pool_metrics(ctx)),
        format,
        buf: Vec::with_capacity(64 * 1024),
    }))
}

impl Output for TcpOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            // Formatted before taking a connection, so none is held while formatting.
            self.format.render(&chunk.records, &mut self.buf);
            if self.buf.is_empty() {
                return FlushResult::Ok;
            }
            let mut conn = match self.upstream.get().await {
                Ok(conn) => conn,
                Err(e) => return FlushResult::Retry(e.to_string()),
            };
            match conn.write_all(&self.buf).await {
                Ok(()) => FlushResult::Ok,
                Err(e) => {
                    crate::debug!("[upstream] connection #{}: {e}", conn.id());
                    FlushResult::Retry(e.to_string())
                }
            }
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(TcpOutput {
            upstream: self.upstream.clone(),
            format: self.format.clone(),
            buf: Vec::with_capacity(64 * 1024),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::event::{EventTime, Map};

    fn rec(body: Map) -> Record {
        Record::new(EventTime::new(1_700_000_000, 5), body)
    }

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    #[test]
    fn key_paths() {
        assert_eq!(KeyPath::parse("$log"), Some(KeyPath(vec!["log".into()])));
        assert_eq!(KeyPath::parse("log"), Some(KeyPath(vec!["log".into()])));
        assert_eq!(
            KeyPath::parse("$k['a'][\"b\"]"),
            Some(KeyPath(vec!["k".into(), "a".into(), "b".into()]))
        );
        assert_eq!(KeyPath::parse("$"), None);
        assert_eq!(KeyPath::parse("$k[a]"), None);
        assert_eq!(KeyPath::parse("$k['a'"), None);
    }

    #[test]
    fn raw_message_key_writes_values_and_newlines() {
        let records = vec![
            rec(vec![
                (Arc::from("log"), s("hello world")),
                (Arc::from("n"), Value::Int(1)),
            ]),
            rec(vec![(Arc::from("log"), Value::Int(-5))]),
            rec(vec![(Arc::from("other"), s("x"))]),
            rec(vec![(Arc::from("log"), Value::Float(0.5))]),
            rec(vec![(
                Arc::from("log"),
                Value::Map(vec![
                    (Arc::from("a"), Value::UInt(1)),
                    (Arc::from("b"), s("é")),
                ]),
            )]),
            rec(vec![(
                Arc::from("log"),
                Value::Bin(Arc::from(&[0xde, 0xad][..])),
            )]),
        ];
        let f = TcpFormat::Raw(KeyPath::parse("$log").unwrap(), true);
        let mut buf = Vec::new();
        f.render(&records, &mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "hello world\n-5\n\n0.500000\n{\"a\":1,\"b\":\"\\u00e9\"}\ndead\n"
        );
        let nested = vec![rec(vec![(
            Arc::from("k"),
            Value::Map(vec![(Arc::from("pod"), s("web-1"))]),
        )])];
        let mut buf = Vec::new();
        TcpFormat::Raw(KeyPath::parse("$k['pod']").unwrap(), true).render(&nested, &mut buf);
        assert_eq!(buf, b"web-1\n");
    }

    #[test]
    fn msgpack_is_fluent_bit_event_bytes() {
        let records = vec![rec(vec![(Arc::from("a"), Value::UInt(1))])];
        let mut buf = Vec::new();
        TcpFormat::Msgpack.render(&records, &mut buf);
        assert_eq!(
            buf,
            [
                0x92, 0x92, 0xd7, 0x00, 0x65, 0x53, 0xf1, 0x00, 0x00, 0x00, 0x00, 0x05, 0x80, 0x81,
                0xa1, b'a', 0x01
            ]
        );
    }
}
