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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        "upstream",
        PropKind::Str,
        None,
        "File of [UPSTREAM]/[NODE] sections (or YAML upstream_servers): send round-robin over its nodes, failing over to the next.",
    ),
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

#[derive(Clone, Debug, PartialEq)]
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

#[derive(Clone, Debug, PartialEq)]
struct Format {
    tag: TagMode,
    time: TimeFormat,
    metadata: bool,
    send_options: bool,
    ack: bool,
    gzip: bool,
}

/// One destination: an upstream node, or the output's own host and port.
struct Node {
    /// `node 'node-1' (127.0.0.1:43000)`, or the address alone without an upstream.
    label: Arc<str>,
    upstream: Upstream,
    format: Arc<Format>,
    auth: Option<Arc<Auth>>,
    ack_timeout: Duration,
    /// When the node last failed (ms since `Nodes::epoch`, 0 = healthy): skipped in the
    /// rotation for [`NODE_REST`] while others are healthy.
    failed_at: AtomicU64,
}

/// The nodes of one output instance, shared by its workers.
struct Nodes {
    list: Vec<Node>,
    /// Round-robin position: each flush starts at the next node, as Fluent Bit's
    /// `flb_upstream_ha_node_get`.
    next: AtomicUsize,
    epoch: Instant,
    /// `agent_output_forward_failovers_total`: flushes moved to another node.
    failovers: Arc<AtomicU64>,
}

/// How long a node that failed is passed over while another node is healthy.
const NODE_REST: Duration = Duration::from_secs(5);

struct ForwardOutput {
    /// `[output:forward:forward.0]`, for log lines.
    prefix: Arc<str>,
    /// Shared by every worker of the instance: one pool and TLS configuration per node.
    nodes: Arc<Nodes>,
    /// The flush being written, reused between flushes.
    buf: Vec<u8>,
    /// Entries before compression, reused.
    entries: Vec<u8>,
    /// The chunk ids awaiting an ack in this flush.
    pending: Vec<String>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let prefix: Arc<str> = Arc::from(format!("[output:forward:{}]", ctx.instance));
    let list = match props.str("upstream") {
        None => vec![node(props, None)?],
        Some(file) => {
            for key in ["host", "port"] {
                if props.is_set(key) {
                    return Err(ConfigError::invalid(
                        props.span_of(key),
                        format!("[config] forward: '{key}' is not used with 'upstream'"),
                        Some(format!("remove '{key}': each node of the upstream file has its own host and port")),
                    ));
                }
            }
            let def = crate::config::upstream::load(file, props.span_of("upstream"), ctx.main_dir)?;
            let mut list = Vec::with_capacity(def.nodes.len());
            for n in &def.nodes {
                let mut own = Vec::with_capacity(n.entries.len());
                for e in &n.entries {
                    if e.key == "upstream" {
                        return Err(ConfigError::invalid(
                            &e.span,
                            "[upstream_ha] 'upstream' inside a node",
                            Some("remove it: a node is one host and port".into()),
                        ));
                    }
                    // Fluent Bit's documented YAML example writes `tls_verify`, which it
                    // ignores (certificates stay verified); so does agent, but says so.
                    if e.key.starts_with("tls_") {
                        crate::warn!(
                            "{}: [upstream_ha] '{}' is not a node property and is ignored, as Fluent Bit ignores it; write '{}' to set it",
                            e.span,
                            e.key,
                            e.key.replacen('_', ".", 1)
                        );
                        continue;
                    }
                    own.push(e.clone());
                }
                let np = props.overlaid(n.span.clone(), &own)?;
                list.push(node(&np, Some(&n.name))?);
            }
            crate::info!(
                "{prefix} upstream '{}' from {}: {} node(s), round-robin",
                def.name,
                def.file,
                list.len()
            );
            list
        }
    };
    Ok(Box::new(ForwardOutput {
        prefix,
        nodes: Arc::new(Nodes {
            list,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            failovers: ctx.metrics.counter(
                "agent_output_forward_failovers_total",
                "Flushes of a forward output sent to another upstream node because one failed.",
                ctx.instance,
            ),
        }),
        buf: Vec::with_capacity(64 * 1024),
        entries: Vec::new(),
        pending: Vec::new(),
    }))
}

/// One destination from its properties: the output's own, or a node's laid over them.
fn node(props: &Props, name: Option<&str>) -> Result<Node, ConfigError> {
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
    let upstream = Upstream::new(host, port, net, tls);
    Ok(Node {
        label: Arc::from(match name {
            Some(n) => format!("node '{n}' ({})", upstream.addr()),
            None => upstream.addr().to_string(),
        }),
        upstream,
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
        failed_at: AtomicU64::new(0),
    })
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

impl Node {
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

    async fn wait_acks(&self, conn: &mut PooledConn, pending: &[String]) -> Result<(), String> {
        conn.awaiting_reply(true);
        let mut buf = Vec::new();
        let mut waiting: Vec<&str> = pending.iter().map(String::as_str).collect();
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

/// Why a node did not take a chunk.
enum NodeError {
    /// Nothing was sent (no connection, or the handshake failed): another node may
    /// take the chunk at once.
    Unsent(String),
    /// Some of it may have arrived: the chunk is retried later (on the next node).
    Sent(String),
}

impl Nodes {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The order to try the nodes in for one flush: round-robin from the next node,
    /// nodes that failed in the last [`NODE_REST`] after the others.
    fn order(&self) -> impl Iterator<Item = &Node> {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Relaxed) % n;
        let now = self.now_ms();
        let rest = NODE_REST.as_millis() as u64;
        let resting = move |node: &Node| {
            let f = node.failed_at.load(Relaxed);
            f != 0 && now.saturating_sub(f) < rest
        };
        let ring = move || (0..n).map(move |i| &self.list[(start + i) % n]);
        ring()
            .filter(move |x| !resting(x))
            .chain(ring().filter(move |x| resting(x)))
    }
}

impl ForwardOutput {
    /// Sends the chunk to one node.
    async fn send(&mut self, node: &Node, chunk: &Chunk) -> Result<(), NodeError> {
        let mut conn = node
            .upstream
            .get()
            .await
            .map_err(|e| NodeError::Unsent(e.to_string()))?;
        if let (Some(auth), true) = (node.auth.as_deref(), conn.is_new()) {
            node.handshake(&mut conn, auth).await.map_err(|e| {
                crate::error!("{} handshake with {}: {e}", self.prefix, node.label);
                NodeError::Unsent(format!("forward handshake failed: {e}"))
            })?;
        }
        if let Err(e) = conn.write_all(&self.buf).await {
            crate::debug!("[upstream] connection #{}: {e}", conn.id());
            return Err(NodeError::Sent(e.to_string()));
        }
        if node.format.ack {
            node.wait_acks(&mut conn, &self.pending)
                .await
                .map_err(|e| {
                    NodeError::Sent(format!(
                        "no ack for {} records from {}: {e}",
                        chunk.records.len(),
                        node.label
                    ))
                })?;
        }
        Ok(())
    }
}

impl Output for ForwardOutput {
    /// Fluent Bit forwards metric sets (cmetrics msgpack); agent's forward sends
    /// records only, so sets routed here are logged and counted as dropped.
    fn unsupported_signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::METRICS
    }

    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            if chunk.records.is_empty() {
                return FlushResult::Ok;
            }
            let nodes = self.nodes.clone();
            let several = nodes.list.len() > 1;
            let mut rendered: Option<&Format> = None;
            let mut failed = Vec::new();
            for node in nodes.order() {
                // Framed before taking a connection, so none is held while formatting;
                // again only for a node with another format.
                if rendered != Some(&*node.format) {
                    node.format
                        .render(chunk, &mut self.buf, &mut self.entries, &mut self.pending);
                    rendered = Some(&node.format);
                }
                let result = self.send(node, chunk).await;
                let was = node.failed_at.load(Relaxed);
                match result {
                    Ok(()) => {
                        if was != 0 {
                            node.failed_at.store(0, Relaxed);
                            if several {
                                crate::info!("{} {} takes records again", self.prefix, node.label);
                            }
                        }
                        if !failed.is_empty() {
                            nodes.failovers.fetch_add(1, Relaxed);
                        }
                        return FlushResult::Ok;
                    }
                    Err(e) => {
                        node.failed_at.store(nodes.now_ms(), Relaxed);
                        let (text, sent) = match e {
                            NodeError::Unsent(t) => (t, false),
                            NodeError::Sent(t) => (t, true),
                        };
                        if several && was == 0 {
                            crate::warn!(
                                "{} {} failed: {text}; {}",
                                self.prefix,
                                node.label,
                                if sent {
                                    "the chunk is retried, on the next node"
                                } else {
                                    "trying the next node"
                                }
                            );
                        }
                        if sent || !several {
                            return FlushResult::Retry(text);
                        }
                        failed.push(format!("{}: {text}", node.label));
                    }
                }
            }
            FlushResult::Retry(format!(
                "no upstream node took the chunk ({})",
                failed.join("; ")
            ))
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(ForwardOutput {
            prefix: self.prefix.clone(),
            nodes: self.nodes.clone(),
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
