//! `forward` output: the Fluentd Forward protocol over the shared `net.*`/`tls.*` layer.
//! Fluent Bit: plugins/out_forward/forward.c, forward_format.c
//!
//! Modes, chosen as Fluent Bit chooses them:
//! * PackedForward (the default): `[tag, bin(entries), option?]`, each entry
//!   `[EventTime, record]` (`[[EventTime, metadata], record]` with
//!   `retain_metadata_in_forward_mode`).
//! * Forward with `time_as_integer`: `[tag, [[seconds, record], ...], option?]`.
//! * Message when `tag` is a record accessor (`$key`): `[tag, time, record, option?]` per
//!   record, the tag read from each record (the chunk's tag when the key is missing).
//! * CompressedPackedForward with `compress gzip`: the packed entries gzip'd and
//!   `"compressed": "gzip"` in the options (entries keep the time format above).
//!
//! Options (`size`, `chunk`, `compressed`) are sent with `send_options`,
//! `require_ack_response` or `compress`. With `require_ack_response` every frame carries
//! a random `chunk` id and the flush succeeds only once `{"ack": id}` has come back for
//! each; a close, a wrong reply or no reply within `net.io_timeout` (60 s when that is 0,
//! where Fluent Bit waits forever) is a retry of the whole chunk, on a new connection.
//!
//! `shared_key` (or `empty_shared_key`) runs the HELO/PING/PONG handshake on each new
//! connection, with `username`/`password` when the server authenticates users.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::format::{msgpack_value_len, write_event_time, write_msgpack_map, DecodeError};
use crate::event::{Chunk, Record, Value};
use crate::forward::auth::{read_helo, Ping, Pong};
use crate::forward::{read_ack, write_entry, TimeFormat};
use crate::net::{NetSetup, PooledConn, TlsSetup, Upstream};
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "host",
        PropKind::Str,
        Some("127.0.0.1"),
        "Destination host name or IP address.",
    ),
    PropSpec::new("port", PropKind::Int, Some("24224"), "Destination TCP port."),
    PropSpec::new(
        "tag",
        PropKind::Str,
        None,
        "Tag of the outgoing records; a record accessor ($key) sends each record with its own tag (Message mode).",
    ),
    PropSpec::new(
        "time_as_integer",
        PropKind::Bool,
        Some("false"),
        "Send times as integer seconds (Forward mode, for Fluentd v0.12).",
    ),
    PropSpec::new(
        "retain_metadata_in_forward_mode",
        PropKind::Bool,
        Some("false"),
        "Send entries as [[time, metadata], record] (Fluent Bit receivers only).",
    ),
    PropSpec::new(
        "send_options",
        PropKind::Bool,
        Some("false"),
        "Send the option map (size) with every frame.",
    ),
    PropSpec::new(
        "require_ack_response",
        PropKind::Bool,
        Some("false"),
        "Wait for the receiver's ack of each chunk; retry the chunk without it.",
    ),
    PropSpec::new(
        "compress",
        PropKind::Enum(&["gzip"]),
        None,
        "Compress the entries: gzip (CompressedPackedForward).",
    ),
    PropSpec::new(
        "shared_key",
        PropKind::Str,
        None,
        "Shared key for the HELO/PING/PONG handshake.",
    ),
    PropSpec::new(
        "empty_shared_key",
        PropKind::Bool,
        Some("false"),
        "Run the handshake with an empty shared key.",
    ),
    PropSpec::new(
        "self_hostname",
        PropKind::Str,
        Some("localhost"),
        "Hostname this agent gives in the handshake.",
    ),
    PropSpec::new(
        "username",
        PropKind::Str,
        None,
        "Username for the server's user authentication.",
    ),
    PropSpec::new(
        "password",
        PropKind::Str,
        None,
        "Password for the server's user authentication.",
    ),
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "forward",
    description: "Forward (Fluentd protocol)",
    props: PROPS,
    workers: 2,
    net: true,
    build,
};

/// How long an ack may take when `net.io_timeout` is 0.
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Replies (HELO, PONG, acks) are small; a longer one is not a Forward server.
const MAX_REPLY: usize = 64 * 1024;

#[derive(Clone, Debug)]
enum TagMode {
    /// The chunk's tag, or the `tag` property.
    Fixed(Option<Arc<str>>),
    /// Message mode: each record's tag from this accessor.
    PerRecord(Accessor),
}

#[derive(Clone, Debug)]
struct Auth {
    shared_key: String,
    hostname: String,
    user: Option<(String, String)>,
}

#[derive(Clone, Debug)]
struct Format {
    tag: TagMode,
    time: TimeFormat,
    metadata: bool,
    send_options: bool,
    ack: bool,
    gzip: bool,
}

struct ForwardOutput {
    /// `[output:forward:forward.0]`, for log lines.
    prefix: Arc<str>,
    /// Shared by every worker of the instance: one pool, one TLS configuration.
    upstream: Upstream,
    format: Arc<Format>,
    auth: Option<Arc<Auth>>,
    ack_timeout: Duration,
    /// The flush being written, reused between flushes.
    buf: Vec<u8>,
    /// Entries before compression, reused.
    entries: Vec<u8>,
    /// The chunk ids awaiting an ack in this flush.
    pending: Vec<String>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let host = props.str("host").unwrap_or("127.0.0.1");
    let port = props
        .int("port")
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?;
    let tag = match props.str("tag") {
        Some(t) if t.starts_with('$') => TagMode::PerRecord(
            Accessor::parse(t)
                .map_err(|e| props.error("tag", format!("a record accessor: {e}")))?,
        ),
        t => TagMode::Fixed(t.map(Arc::from)),
    };
    let gzip = props.is_set("compress");
    if gzip && matches!(tag, TagMode::PerRecord(_)) {
        return Err(props.error(
            "compress",
            "unset with a record accessor tag: Message mode sends records one by one, uncompressed",
        ));
    }
    let shared_key = match props.str("shared_key") {
        Some(k) => Some(k.to_string()),
        None if props.bool("empty_shared_key") == Some(true) => Some(String::new()),
        None => None,
    };
    let user = match (props.str("username"), props.str("password")) {
        (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
        (None, None) => None,
        (Some(_), None) => return Err(props.error("password", "to be set with username")),
        (None, Some(_)) => return Err(props.error("username", "to be set with password")),
    };
    if user.is_some() && shared_key.is_none() {
        return Err(props.error(
            "username",
            "unset, or a shared_key too: user authentication is part of the shared key handshake",
        ));
    }
    let auth = shared_key.map(|shared_key| {
        Arc::new(Auth {
            shared_key,
            hostname: props
                .str("self_hostname")
                .unwrap_or("localhost")
                .to_string(),
            user,
        })
    });
    let net = NetSetup::from_props(props)?;
    net.warn_proxy_env_unused(props);
    let ack_timeout = net.io_timeout.unwrap_or(DEFAULT_ACK_TIMEOUT);
    let tls = TlsSetup::from_props(props, host)?;
    Ok(Box::new(ForwardOutput {
        prefix: Arc::from(format!("[output:forward:{}]", ctx.instance)),
        upstream: Upstream::new(host, port, net, tls),
        format: Arc::new(Format {
            tag,
            time: if props.bool("time_as_integer") == Some(true) {
                TimeFormat::Integer
            } else {
                TimeFormat::EventTime
            },
            metadata: props.bool("retain_metadata_in_forward_mode") == Some(true),
            send_options: props.bool("send_options") == Some(true),
            ack: props.bool("require_ack_response") == Some(true),
            gzip,
        }),
        auth,
        ack_timeout,
        buf: Vec::with_capacity(64 * 1024),
        entries: Vec::new(),
        pending: Vec::new(),
    }))
}

/// A fresh chunk id: 16 random bytes, hex.
fn chunk_id() -> String {
    let mut rng = fastrand::Rng::new();
    (0..16).map(|_| format!("{:02x}", rng.u8(..))).collect()
}

impl Format {
    fn options(&self, size: usize, chunk: Option<&str>) -> Option<crate::event::Map> {
        if !(self.send_options || self.ack || self.gzip) {
            return None;
        }
        let mut o: crate::event::Map = vec![(Arc::from("size"), Value::UInt(size as u64))];
        if let Some(id) = chunk {
            o.push((Arc::from("chunk"), Value::Str(Arc::from(id))));
        }
        if self.gzip {
            o.push((Arc::from("compressed"), Value::Str(Arc::from("gzip"))));
        }
        Some(o)
    }

    /// Frames for one chunk into `out`; the chunk ids to expect acks for into `ids`.
    fn render(
        &self,
        chunk: &Chunk,
        out: &mut Vec<u8>,
        entries: &mut Vec<u8>,
        ids: &mut Vec<String>,
    ) {
        out.clear();
        ids.clear();
        let mut next_id = || {
            self.ack.then(|| {
                ids.push(chunk_id());
                ids.last().cloned().unwrap_or_default()
            })
        };
        match &self.tag {
            TagMode::PerRecord(acc) => {
                for rec in &chunk.records {
                    let tag = match acc.get(&rec.body) {
                        Some(Value::Str(s)) => s.clone(),
                        _ => chunk.tag.clone(),
                    };
                    let id = next_id();
                    let opts = self.options(1, id.as_deref());
                    let _ = rmp::encode::write_array_len(out, 3 + opts.is_some() as u32);
                    let _ = rmp::encode::write_str(out, &tag);
                    match self.time {
                        TimeFormat::EventTime => write_event_time(out, rec.time),
                        TimeFormat::Integer => {
                            let _ = rmp::encode::write_uint(out, rec.time.secs.max(0) as u64);
                        }
                    }
                    write_msgpack_map(out, &rec.body);
                    if let Some(o) = opts {
                        write_msgpack_map(out, &o);
                    }
                }
            }
            TagMode::Fixed(fixed) => {
                let tag = fixed.as_ref().unwrap_or(&chunk.tag);
                let id = next_id();
                let opts = self.options(chunk.records.len(), id.as_deref());
                let _ = rmp::encode::write_array_len(out, 2 + opts.is_some() as u32);
                let _ = rmp::encode::write_str(out, tag);
                let packed = self.gzip || self.time == TimeFormat::EventTime;
                if packed {
                    entries.clear();
                    write_entries(entries, &chunk.records, self.time, self.metadata);
                    if self.gzip {
                        let raw = std::mem::take(entries);
                        *entries = gzip(&raw);
                    }
                    let _ = rmp::encode::write_bin_len(out, entries.len() as u32);
                    out.extend_from_slice(entries);
                } else {
                    let _ = rmp::encode::write_array_len(out, chunk.records.len() as u32);
                    write_entries(out, &chunk.records, self.time, self.metadata);
                }
                if let Some(o) = opts {
                    write_msgpack_map(out, &o);
                }
            }
        }
    }
}

fn write_entries(out: &mut Vec<u8>, records: &[Record], time: TimeFormat, metadata: bool) {
    for r in records {
        write_entry(out, r, time, metadata);
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(raw);
    enc.finish().unwrap_or_default()
}

/// Reads one complete msgpack reply off the connection.
async fn read_frame(
    conn: &mut PooledConn,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    loop {
        match msgpack_value_len(buf) {
            Ok(n) => return Ok(buf.drain(..n).collect()),
            Err(DecodeError::Invalid(w)) => return Err(format!("invalid reply: {w}")),
            Err(DecodeError::Incomplete) if buf.len() > MAX_REPLY => {
                return Err(format!("reply larger than {MAX_REPLY} bytes"))
            }
            Err(DecodeError::Incomplete) => {}
        }
        match conn.read_reply(buf, timeout).await {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl ForwardOutput {
    async fn handshake(&self, conn: &mut PooledConn, auth: &Auth) -> Result<(), String> {
        conn.awaiting_reply(true);
        let mut buf = Vec::new();
        let helo = read_helo(&read_frame(conn, &mut buf, self.ack_timeout).await?)
            .map_err(|e| format!("expected HELO: {e:?}"))?;
        let user = auth.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let ping = Ping::new(&helo, &auth.hostname, &auth.shared_key, user);
        let mut out = Vec::new();
        ping.write(&mut out);
        conn.write_all(&out).await.map_err(|e| e.to_string())?;
        conn.awaiting_reply(true);
        let pong = Pong::read(&read_frame(conn, &mut buf, self.ack_timeout).await?)
            .map_err(|e| format!("expected PONG: {e:?}"))?;
        pong.verify(&ping, &helo, &auth.shared_key)?;
        conn.awaiting_reply(false);
        Ok(())
    }

    async fn wait_acks(&mut self, conn: &mut PooledConn) -> Result<(), String> {
        conn.awaiting_reply(true);
        let mut buf = Vec::new();
        let mut waiting: Vec<String> = self.pending.clone();
        while !waiting.is_empty() {
            let frame = read_frame(conn, &mut buf, self.ack_timeout).await?;
            let Some(Value::Str(id)) = read_ack(&frame) else {
                return Err("a reply that is not an ack".into());
            };
            let Some(i) = waiting.iter().position(|w| **w == *id) else {
                return Err(format!("an ack for an unknown chunk {id}"));
            };
            waiting.swap_remove(i);
        }
        conn.awaiting_reply(false);
        Ok(())
    }
}

impl Output for ForwardOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            if chunk.records.is_empty() {
                return FlushResult::Ok;
            }
            // Framed before taking a connection, so none is held while formatting.
            self.format
                .render(chunk, &mut self.buf, &mut self.entries, &mut self.pending);
            let mut conn = match self.upstream.get().await {
                Ok(conn) => conn,
                Err(e) => return FlushResult::Retry(e.to_string()),
            };
            if let (Some(auth), true) = (self.auth.clone(), conn.is_new()) {
                if let Err(e) = self.handshake(&mut conn, &auth).await {
                    crate::error!(
                        "{} handshake with {}: {e}",
                        self.prefix,
                        self.upstream.addr()
                    );
                    return FlushResult::Retry(format!("forward handshake failed: {e}"));
                }
            }
            if let Err(e) = conn.write_all(&self.buf).await {
                crate::debug!("[upstream] connection #{}: {e}", conn.id());
                return FlushResult::Retry(e.to_string());
            }
            if self.format.ack {
                if let Err(e) = self.wait_acks(&mut conn).await {
                    return FlushResult::Retry(format!(
                        "no ack for {} records from {}: {e}",
                        chunk.records.len(),
                        self.upstream.addr()
                    ));
                }
            }
            FlushResult::Ok
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(ForwardOutput {
            prefix: self.prefix.clone(),
            upstream: self.upstream.clone(),
            format: self.format.clone(),
            auth: self.auth.clone(),
            ack_timeout: self.ack_timeout,
            buf: Vec::with_capacity(64 * 1024),
            entries: Vec::new(),
            pending: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format::KeyCache;
    use crate::event::EventTime;
    use crate::forward::decode_events;

    fn chunk() -> Chunk {
        Chunk::new(
            Arc::from("app"),
            vec![
                Record::new(
                    EventTime::new(1_700_000_000, 7),
                    vec![(Arc::from("k"), Value::Str(Arc::from("a")))],
                ),
                Record::new(
                    EventTime::new(1_700_000_001, 0),
                    vec![(Arc::from("k"), Value::Str(Arc::from("b")))],
                ),
            ],
        )
    }

    fn format(time: TimeFormat, gzip: bool, ack: bool) -> Format {
        Format {
            tag: TagMode::Fixed(None),
            time,
            metadata: false,
            send_options: false,
            ack,
            gzip,
        }
    }

    /// Every mode decodes back to the records with our own input's decoder.
    #[test]
    fn every_mode_round_trips() {
        let c = chunk();
        let mut secs_only = c.records.clone();
        secs_only[0].time.nanos = 0;
        let cases = [
            (
                format(TimeFormat::EventTime, false, false),
                &c.records,
                0x92,
            ),
            (format(TimeFormat::Integer, false, false), &secs_only, 0x92),
            (format(TimeFormat::EventTime, true, true), &c.records, 0x93),
        ];
        for (f, want, head) in cases {
            let (mut out, mut entries, mut ids) = (Vec::new(), Vec::new(), Vec::new());
            f.render(&c, &mut out, &mut entries, &mut ids);
            assert_eq!(out[0], head);
            let e = decode_events(&out, 1 << 20, &mut KeyCache::default()).unwrap();
            assert_eq!(e.tag, "app");
            assert_eq!(&e.records, want);
            assert_eq!(ids.len(), f.ack as usize);
            if f.ack {
                assert_eq!(e.chunk, Some(Value::Str(Arc::from(ids[0].as_str()))));
            }
        }
    }

    #[test]
    fn message_mode_takes_the_tag_from_each_record() {
        let f = Format {
            tag: TagMode::PerRecord(Accessor::parse("$k").unwrap()),
            ..format(TimeFormat::EventTime, false, true)
        };
        let (mut out, mut entries, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        f.render(&chunk(), &mut out, &mut entries, &mut ids);
        assert_eq!(ids.len(), 2);
        let first = msgpack_value_len(&out).unwrap();
        let a = decode_events(&out[..first], 1 << 20, &mut KeyCache::default()).unwrap();
        let b = decode_events(&out[first..], 1 << 20, &mut KeyCache::default()).unwrap();
        assert_eq!((a.tag.as_str(), b.tag.as_str()), ("a", "b"));
        assert_eq!(a.records, chunk().records[..1]);
    }
}
