//! `forward` input: a Fluentd Forward protocol server (TCP, TLS, or a Unix socket).
//! Fluent Bit: plugins/in_forward/fw.c, fw_conn.c, fw_prot.c, fw_config.c
//!
//! Accepts Message, Forward, PackedForward and CompressedPackedForward frames (see
//! [`crate::forward`]). Each connection reads up to `buffer_chunk_size` bytes at a time
//! into its own buffer; a frame that is still incomplete when the buffer holds
//! `buffer_max_size` bytes, or bytes that are not a valid frame, close the connection
//! with one log line and `agent_input_rejected_connections_total`.
//!
//! Acks: a frame whose options carry `chunk` is answered `{"ack": chunk}` once every
//! output is done with its records (`send_acked`), not when they are merely buffered,
//! so a client that resends unacked chunks loses nothing if this agent dies (it may
//! send duplicates of the chunks in flight). Records of a frame without `chunk` are
//! sent on as they arrive. At shutdown a connection stops reading and still writes the
//! acks of what is delivered within the grace period.
//!
//! With `shared_key` (or `empty_shared_key`) or `security.users`, the server sends HELO
//! on connect and accepts events only after a valid PING ([`crate::forward::auth`]).

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::server::{listen_spec, run_server};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::format::{DecodeError, KeyCache, ValueLen};
use crate::event::{Tag, Value};
use crate::forward::auth::{random_bytes, write_helo, Helo, Ping, Pong};
use crate::forward::{decode_events, write_ack};
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
        Some("24224"),
        "TCP port to listen on.",
    ),
    PropSpec::new(
        "unix_path",
        PropKind::Str,
        None,
        "Listen on this Unix socket instead of TCP.",
    ),
    PropSpec::new(
        "unix_perm",
        PropKind::Str,
        None,
        "Permissions of the Unix socket, octal (e.g. 0660).",
    ),
    PropSpec::new(
        "tag_prefix",
        PropKind::Str,
        None,
        "Prefix added to the tag of every incoming frame.",
    ),
    PropSpec::new(
        "buffer_chunk_size",
        PropKind::Size,
        Some("1024000"),
        "Bytes read from a connection at a time.",
    )
    .range(1, 1 << 30),
    PropSpec::new(
        "buffer_max_size",
        PropKind::Size,
        Some("6144000"),
        "Largest frame accepted; a larger one closes the connection.",
    )
    .range(1, 1 << 30),
    PropSpec::new(
        "shared_key",
        PropKind::Str,
        None,
        "Shared key clients must prove in the handshake.",
    ),
    PropSpec::new(
        "empty_shared_key",
        PropKind::Bool,
        Some("false"),
        "Require the handshake with an empty shared key.",
    ),
    PropSpec::new(
        "self_hostname",
        PropKind::Str,
        Some("localhost"),
        "Hostname this server gives in the handshake.",
    ),
    PropSpec::new(
        "security.users",
        PropKind::Multi,
        None,
        "'USERNAME PASSWORD' a client may authenticate as; repeat for more users.",
    ),
    PropSpec::new(
        "workers",
        PropKind::Int,
        Some("1"),
        "Threads that serve the connections: the agent's runtime gets at least this many (it has 2 otherwise).",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "forward",
    description: "Fluentd in-forward",
    props: PROPS,
    net: true,
    upstream: false,
    build,
};

/// The handshake a connection must pass first.
#[derive(Clone, Debug)]
struct Security {
    shared_key: String,
    hostname: String,
    users: Vec<(String, String)>,
}

struct ForwardInput {
    /// Where to listen, the log prefix and the rejected-connections counter; bound when
    /// the input starts (so `--dry-run` binds nothing).
    listener: ListenSpec,
    cfg: Arc<ConnConfig>,
    /// `workers`.
    workers: usize,
}

struct ConnConfig {
    chunk: usize,
    max: usize,
    tag_prefix: Option<String>,
    /// The `tag` property: every record gets it, unless `tag_prefix` is set.
    fixed_tag: Option<Tag>,
    security: Option<Security>,
    /// Frames decoded and not yet taken by the engine, for all connections at once:
    /// a decoded frame is several times its bytes, and while the input waits for
    /// mem_buf_limit every connection would otherwise hold one.
    decoding: tokio::sync::Semaphore,
}

/// How many frames the connections of one input may hold decoded at once.
const DECODING_FRAMES: usize = 8;

fn size(props: &Props, name: &str) -> Result<usize, ConfigError> {
    props
        .size(name)
        .filter(|&n| n > 0)
        .map(|n| n as usize)
        .ok_or_else(|| props.error(name, "a size > 0 such as 1M"))
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let chunk = size(props, "buffer_chunk_size")?;
    let max = size(props, "buffer_max_size")?;
    if max < chunk {
        return Err(props.error(
            "buffer_max_size",
            format!("a size >= buffer_chunk_size ({chunk})"),
        ));
    }
    let mut users = Vec::new();
    for u in props.multi("security.users") {
        match u.split_whitespace().collect::<Vec<_>>()[..] {
            [name, password] => users.push((name.to_string(), password.to_string())),
            _ => return Err(props.error("security.users", "'USERNAME PASSWORD'")),
        }
    }
    let shared_key = match props.str("shared_key") {
        Some(k) => Some(k.to_string()),
        None if props.bool("empty_shared_key") == Some(true) => Some(String::new()),
        None if !users.is_empty() => {
            return Err(props.error(
                "shared_key",
                "a shared key (or empty_shared_key on) with security.users",
            ))
        }
        None => None,
    };
    let security = shared_key.map(|shared_key| Security {
        shared_key,
        hostname: props
            .str("self_hostname")
            .unwrap_or("localhost")
            .to_string(),
        users,
    });
    let mut setup = DownstreamSetup::from_props(props, props.str("unix_path"))?;
    let perm = match props.str("unix_perm") {
        None => None,
        Some(p) => Some(
            u32::from_str_radix(p.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| props.error("unix_perm", "octal permissions such as 0660"))?,
        ),
    };
    setup.unix_perm = perm;
    // Fluent Bit runs `workers` listener threads; agent serves every connection as its
    // own task on the runtime's threads, so it asks for that many threads.
    let workers = props.int("workers").unwrap_or(1);
    if workers < 1 {
        return Err(props.error("workers", "a number of threads >= 1"));
    }
    if workers > 1 && props.is_set("unix_path") {
        return Err(ConfigError::invalid(
            props.span_of("workers"),
            "[config] forward: workers is not supported with unix_path",
            Some("remove 'workers', or listen on TCP instead of unix_path".into()),
        ));
    }
    crate::pipeline::request_runtime_threads(workers as usize);
    Ok(Box::new(ForwardInput {
        workers: workers as usize,
        listener: listen_spec(setup, "forward", "frame", ctx),
        cfg: Arc::new(ConnConfig {
            chunk,
            max,
            tag_prefix: props.str("tag_prefix").map(str::to_string),
            fixed_tag: props
                .is_set("tag")
                .then(|| Arc::from(props.str("tag").unwrap_or(""))),
            security,
            decoding: tokio::sync::Semaphore::new(DECODING_FRAMES),
        }),
    }))
}

impl Input for ForwardInput {
    fn threads(&self) -> usize {
        self.workers
    }

    fn run(self: Box<Self>, ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let ForwardInput { listener, cfg, .. } = *self;
            run_server(listener, ctx, move |conn, out, shutdown| {
                serve_conn(conn, cfg.clone(), out, shutdown)
            })
            .await
        })
    }
}

/// Why a connection ends.
enum End {
    /// The client closed it, or shutdown.
    Done,
    /// Logged and counted: bad data, a limit, a timeout.
    Rejected(String),
}

/// The length of the complete frame at the front of `buf`, if there is one; `len`
/// keeps what was measured of an incomplete frame for the next call.
/// `limit` names what `max` is, for the message.
fn next_frame(
    len: &mut ValueLen,
    buf: &[u8],
    max: usize,
    limit: &str,
) -> Result<Option<usize>, String> {
    match len.advance(buf) {
        Ok(Some(n)) => Ok(Some(n)),
        Ok(None) if buf.len() >= max => Err(format!("frame larger than {limit} ({max} bytes)")),
        Ok(None) | Err(DecodeError::Incomplete) => Ok(None),
        Err(DecodeError::Invalid(why)) => Err(format!("invalid msgpack: {why}")),
    }
}

async fn serve_conn(conn: Conn, cfg: Arc<ConnConfig>, out: InputSender, shutdown: Shutdown) {
    let rejecter = conn.rejecter();
    let peer = conn.peer.clone();
    let io_timeout = conn.io_timeout;
    let activity = conn.activity.clone();
    let (mut rd, mut wr) = tokio::io::split(conn.stream);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Value>();
    let mut session = Session {
        cfg,
        out: Some(out),
        ack_tx,
        buf: Vec::new(),
        frame_len: ValueLen::default(),
        helo: None,
        authenticated: false,
        keys: KeyCache::default(),
        activity,
    };
    let mut reply = Vec::new();
    if let Some(sec) = &session.cfg.security {
        let helo = Helo {
            nonce: random_bytes(),
            auth_salt: if sec.users.is_empty() {
                Vec::new()
            } else {
                random_bytes()
            },
        };
        write_helo(&mut reply, &helo);
        session.helo = Some(helo);
        if wr.write_all(&reply).await.is_err() {
            return;
        }
    }
    let end = session
        .run(&mut rd, &mut wr, &mut ack_rx, io_timeout, shutdown, &peer)
        .await;
    if let End::Rejected(why) = end {
        rejecter.reject(&why);
        return;
    }
    // Stopped reading: the engine must see this connection's sender go, and the acks of
    // what gets delivered during the grace period still go out.
    session.out = None;
    drop(session.ack_tx);
    while let Some(chunk) = ack_rx.recv().await {
        reply.clear();
        write_ack(&mut reply, &chunk);
        if wr.write_all(&reply).await.is_err() {
            return;
        }
        session.activity.release();
    }
    let _ = wr.shutdown().await;
}

struct Session {
    cfg: Arc<ConnConfig>,
    /// `None` once the connection stops reading.
    out: Option<InputSender>,
    ack_tx: mpsc::UnboundedSender<Value>,
    buf: Vec<u8>,
    /// How much of the frame at the front of `buf` was measured already.
    frame_len: ValueLen,
    helo: Option<Helo>,
    authenticated: bool,
    /// Record keys this client sent before.
    keys: KeyCache,
    /// Progress (each frame) and work in hand (records with the engine, acks owed), so
    /// that only connections making no progress are closed as idle.
    activity: Arc<Activity>,
}

/// Largest frame before the handshake: a PING is a few hundred bytes, so a client that
/// has not proven the key holds no more than this.
const UNAUTHENTICATED_MAX: usize = 64 * 1024;

impl Session {
    async fn run<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        acks: &mut mpsc::UnboundedReceiver<Value>,
        io_timeout: Option<std::time::Duration>,
        mut shutdown: Shutdown,
        peer: &str,
    ) -> End
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut reply = Vec::new();
        loop {
            let room = self
                .cfg
                .chunk
                .min(self.limit().saturating_sub(self.buf.len()).max(1));
            tokio::select! {
                _ = shutdown.wait() => return End::Done,
                Some(chunk) = acks.recv() => {
                    reply.clear();
                    write_ack(&mut reply, &chunk);
                    if wr.write_all(&reply).await.is_err() {
                        return End::Done;
                    }
                    self.activity.release();
                }
                n = read_some(rd, &mut self.buf, room, io_timeout) => match n {
                    Ok(0) => {
                        if !self.buf.is_empty() {
                            return End::Rejected(format!(
                                "closed in the middle of a frame ({} bytes unread)",
                                self.buf.len()
                            ));
                        }
                        return End::Done;
                    }
                    Ok(_) => {
                        if let Err(why) = self.frames(wr, peer).await {
                            return why;
                        }
                    }
                    Err(e) => return End::Rejected(e.to_string()),
                },
            }
        }
    }

    /// Largest frame accepted now: `buffer_max_size`, or [`UNAUTHENTICATED_MAX`] until a
    /// client required to authenticate has.
    fn limit(&self) -> usize {
        match (&self.cfg.security, self.authenticated) {
            (Some(_), false) => self.cfg.max.min(UNAUTHENTICATED_MAX),
            _ => self.cfg.max,
        }
    }

    /// Handles every complete frame in the buffer.
    async fn frames<W>(&mut self, wr: &mut W, peer: &str) -> Result<(), End>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut start = 0;
        let result = loop {
            let limit = self.limit();
            let name = match limit < self.cfg.max {
                true => "what a client may send before the handshake",
                false => "buffer_max_size",
            };
            let n = match next_frame(&mut self.frame_len, &self.buf[start..], limit, name) {
                Ok(Some(n)) => n,
                Ok(None) => break Ok(()),
                Err(why) => break Err(End::Rejected(why)),
            };
            let frame = start..start + n;
            start += n;
            if let Err(e) = self.frame(frame, wr, peer).await {
                break Err(e);
            }
            self.activity.progress();
        };
        self.buf.drain(..start);
        result
    }

    async fn frame<W>(
        &mut self,
        range: std::ops::Range<usize>,
        wr: &mut W,
        peer: &str,
    ) -> Result<(), End>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        let frame = &self.buf[range.clone()];
        if let (Some(sec), Some(helo), false) = (&self.cfg.security, &self.helo, self.authenticated)
        {
            let ping = Ping::read(frame)
                .map_err(|e| End::Rejected(format!("expected a PING after HELO: {}", why(e))))?;
            let result = ping.verify(helo, &sec.shared_key, &sec.users);
            let pong = Pong::new(&ping, helo, result, &sec.hostname, &sec.shared_key);
            let mut reply = Vec::new();
            pong.write(&mut reply);
            if wr.write_all(&reply).await.is_err() {
                return Err(End::Done);
            }
            return match result {
                Ok(()) => {
                    self.authenticated = true;
                    Ok(())
                }
                Err(reason) => Err(End::Rejected(format!(
                    "authentication of {} failed: {reason}",
                    ping.hostname
                ))),
            };
        }
        // A slot before decoding, kept until the engine took the records: the frames
        // of connections without one wait as bytes.
        let cfg = self.cfg.clone();
        let Ok(_slot) = cfg.decoding.acquire().await else {
            return Err(End::Done);
        };
        let frame = &self.buf[range];
        let events = decode_events(frame, self.cfg.max, &mut self.keys)
            .map_err(|e| End::Rejected(format!("invalid frame: {}", why(e))))?;
        // Fluent Bit's order: tag_prefix + the frame's tag, else the input's own `tag`,
        // else the frame's tag.
        let tag: Tag = match (&self.cfg.tag_prefix, &self.cfg.fixed_tag) {
            (Some(prefix), _) => Arc::from(format!("{prefix}{}", events.tag)),
            (None, Some(t)) => t.clone(),
            (None, None) => Arc::from(events.tag),
        };
        let Some(out) = self.out.as_mut() else {
            return Err(End::Done);
        };
        self.activity.hold();
        let sent = match events.chunk {
            Some(chunk) => {
                // Owed until the ack is written.
                self.activity.hold();
                let tx = self.ack_tx.clone();
                let ack = Box::new(move || {
                    let _ = tx.send(chunk);
                });
                out.send_acked(tag, events.records, ack).await
            }
            None => out.send_tagged(tag, events.records).await,
        };
        self.activity.release();
        if sent.is_err() {
            crate::debug!("[input:forward] {peer}: the engine is shutting down");
            return Err(End::Done);
        }
        Ok(())
    }
}

fn why(e: DecodeError) -> String {
    match e {
        DecodeError::Incomplete => "truncated".into(),
        DecodeError::Invalid(w) => w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_at_their_length_and_limits_hold() {
        // Two complete frames and the start of a third.
        let buf = [0x92, 0xa1, b't', 0x90, 0x92, 0xa1, b'u', 0x90, 0x92];
        let fresh = || ValueLen::default();
        assert_eq!(
            next_frame(&mut fresh(), &buf, 100, "buffer_max_size"),
            Ok(Some(4))
        );
        assert_eq!(
            next_frame(&mut fresh(), &buf[8..], 100, "buffer_max_size"),
            Ok(None)
        );
        // A str32 declaring 4 GB: incomplete, never allocated, refused at the limit.
        let huge = [0x92, 0xa1, b't', 0xdb, 0xff, 0xff, 0xff, 0xff, b'x'];
        assert_eq!(
            next_frame(&mut fresh(), &huge, 100, "buffer_max_size"),
            Ok(None)
        );
        assert!(next_frame(&mut fresh(), &huge, 9, "buffer_max_size")
            .unwrap_err()
            .contains("buffer_max_size"));
        assert!(next_frame(&mut fresh(), &[0xc1], 100, "buffer_max_size")
            .unwrap_err()
            .starts_with("invalid msgpack"));
    }
}
