//! The listening side of server inputs (`forward`, `tcp`): bind with the downstream
//! `net.*` options, accept under a connection cap, TLS handshake within
//! `net.accept_timeout`, reads bounded by `net.io_timeout`, and one place where a client
//! is turned away with a log line and a counter.
//! Fluent Bit: src/flb_downstream.c, src/flb_network.c (`flb_net_server`).
//!
//! Each connection runs in its own task with its own buffer; the number of connections is
//! capped ([`MAX_CONNECTIONS`]), so the memory of a server input is bounded by the cap
//! times the plugin's per-connection buffer limit.
//!
//! Idle and trickling clients cannot lock a server out (issue 21 item 2). Progress is a
//! completed frame (forward) or record (tcp), reported by the handler through
//! [`Activity`]; bytes that never complete one are not progress. A connection must make
//! progress within `net.first_frame_timeout` of connecting and then at least every
//! `net.idle_timeout`, and when the cap is full a new client takes the place of the
//! connection that made progress longest ago (never one handing records to the engine
//! or owed an ack), counted in `agent_input_evicted_connections_total`. Accept errors
//! (EMFILE, ENFILE) back off and retry, counted in `agent_input_accept_errors_total`;
//! out of descriptors, the connection idle longest is closed to give one back.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;

use super::tls::ServerTls;
use crate::config::{ConfigError, Props};

/// Counts one (the counters are read by the monitoring endpoint).
fn count(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Most connections one server input holds at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Where and how a server input listens, from its properties.
#[derive(Clone, Debug)]
pub struct DownstreamSetup {
    /// `listen`, `port`; unused when `unix_path` is set.
    pub listen: String,
    pub port: u16,
    /// `unix_path` (forward): a Unix socket instead of TCP.
    pub unix_path: Option<PathBuf>,
    /// `unix_perm`: mode of the socket file.
    pub unix_perm: Option<u32>,
    /// `net.backlog`.
    pub backlog: i32,
    /// `net.share_port`: SO_REUSEPORT, so several listeners share the port.
    pub share_port: bool,
    /// `net.accept_timeout`: from accept to the end of the TLS handshake.
    pub accept_timeout: Duration,
    pub accept_timeout_log_error: bool,
    /// `net.io_timeout`: a connection with no byte for this long is closed; `None` = never.
    pub io_timeout: Option<Duration>,
    /// `net.first_frame_timeout`: the first frame or record must be complete this soon
    /// after accept; `None` = no limit.
    pub first_frame_timeout: Option<Duration>,
    /// `net.idle_timeout`: a connection that completes no frame or record for this long
    /// is closed; `None` = never.
    pub idle_timeout: Option<Duration>,
    pub tls: Option<ServerTls>,
    pub max_connections: usize,
}

impl DownstreamSetup {
    /// Reads `listen`, `port` (the plugin's own keys), `net.*` and `tls.*`.
    pub fn from_props(props: &Props, unix_path: Option<&str>) -> Result<Self, ConfigError> {
        let listen = props.str("listen").unwrap_or("0.0.0.0").to_string();
        let port = props
            .int("port")
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| props.error("port", "a TCP port from 0 to 65535"))?;
        let backlog = props
            .int("net.backlog")
            .and_then(|b| i32::try_from(b).ok())
            .filter(|&b| b > 0)
            .ok_or_else(|| props.error("net.backlog", "a number > 0"))?;
        let accept_timeout = props.time("net.accept_timeout").unwrap_or_default();
        if accept_timeout.is_zero() {
            return Err(props.error("net.accept_timeout", "a duration > 0 such as 10 or 500ms"));
        }
        let tls = ServerTls::from_props(props)?;
        if tls.is_some() && unix_path.is_some() {
            return Err(props.error("tls", "off with unix_path: TLS is for TCP listeners"));
        }
        Ok(DownstreamSetup {
            listen,
            port,
            unix_path: unix_path.map(PathBuf::from),
            unix_perm: None,
            backlog,
            share_port: props.bool("net.share_port").unwrap_or(false),
            accept_timeout,
            accept_timeout_log_error: props.bool("net.accept_timeout_log_error").unwrap_or(true),
            io_timeout: props.time("net.io_timeout").filter(|d| !d.is_zero()),
            first_frame_timeout: props
                .time("net.first_frame_timeout")
                .filter(|d| !d.is_zero()),
            idle_timeout: props.time("net.idle_timeout").filter(|d| !d.is_zero()),
            tls,
            max_connections: MAX_CONNECTIONS,
        })
    }

    /// `host:port` or the socket path, for logs.
    pub fn address(&self) -> String {
        match &self.unix_path {
            Some(p) => p.display().to_string(),
            None if self.listen.contains(':') => format!("[{}]:{}", self.listen, self.port),
            None => format!("{}:{}", self.listen, self.port),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a server input holds from build to run: its settings, its log prefix, what it
/// calls a unit of progress and its counters. It binds only when it runs (so a hot
/// reload can bind the same port again).
pub struct ListenSpec {
    pub setup: DownstreamSetup,
    /// `[input:forward:forward.0]`, the prefix of this input's log lines.
    pub prefix: Arc<str>,
    /// "frame" (forward) or "record" (tcp), for the timeout log lines.
    pub unit: &'static str,
    pub counters: Counters,
}

/// A server input's connection counters, on the monitoring endpoint by instance name.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// `agent_input_rejected_connections_total`.
    pub rejected: Arc<AtomicU64>,
    /// `agent_input_evicted_connections_total`.
    pub evicted: Arc<AtomicU64>,
    /// `agent_input_accept_errors_total`.
    pub accept_errors: Arc<AtomicU64>,
}

pub struct Downstream {
    listener: Listener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
}

/// How often at most a line that a flood of clients would repeat is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line a flood of clients could repeat without end (evictions, timeouts, accept
/// errors): the first is written, then at most one per [`LOG_EVERY`] saying how many
/// were left out. The counters count every one.
#[derive(Default)]
struct Throttle(Mutex<(Option<Instant>, u64)>);

impl Throttle {
    /// Logs `line(left out since the last line)` unless one was logged recently.
    fn warn(&self, line: impl FnOnce(u64) -> String) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if g.0.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            g.1 += 1;
            return;
        }
        let skipped = std::mem::take(&mut g.1);
        g.0 = Some(now);
        drop(g);
        crate::warn!("{}", line(skipped));
    }
}

/// ` (and N more like it in the last 10 s)` when lines were left out.
fn more(skipped: u64) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(
            " (and {skipped} more like it in the last {} s)",
            LOG_EVERY.as_secs()
        )
    }
}

/// What the accept loop and every connection task of one listener share.
struct Shared {
    setup: DownstreamSetup,
    prefix: Arc<str>,
    unit: &'static str,
    counters: Counters,
    /// Activity times are milliseconds since this.
    epoch: Instant,
    /// Open connections, for eviction.
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    log_timeouts: Throttle,
    log_evictions: Throttle,
    log_accept: Throttle,
}

/// What a connection's handler reports, so that a connection making no progress can be
/// closed: [`Activity::progress`] after each completed frame or record, and
/// [`Activity::hold`]/[`Activity::release`] around work in hand (records handed to the
/// engine, an ack owed), during which the connection is never closed as idle.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    peer: String,
    /// Accept order, to break ties between equal times.
    id: u64,
    /// When the connection was accepted, in µs since `epoch`.
    born: u64,
    /// The last progress (or `born`), in µs since `epoch`.
    last: AtomicU64,
    progressed: AtomicBool,
    busy: AtomicU32,
    /// Why it was picked for eviction ([`CAP_FULL`] or [`FDS_SHORT`]; 0 = not picked),
    /// until the connection is gone or refuses.
    marked: AtomicU8,
    evict: tokio::sync::Notify,
}

impl Activity {
    fn new(epoch: Instant, id: u64, peer: String) -> Activity {
        let born = epoch.elapsed().as_micros() as u64;
        Activity {
            epoch,
            id,
            peer,
            born,
            last: AtomicU64::new(born),
            progressed: AtomicBool::new(false),
            busy: AtomicU32::new(0),
            marked: AtomicU8::new(0),
            evict: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A frame or record was completed.
    pub fn progress(&self) {
        self.last.store(self.now(), Relaxed);
        self.progressed.store(true, Relaxed);
    }

    /// Work in hand begins: the connection is not idle until the matching release.
    pub fn hold(&self) {
        self.busy.fetch_add(1, Relaxed);
    }

    /// Work in hand is done (counts as progress).
    pub fn release(&self) {
        self.progress();
        self.busy.fetch_sub(1, Relaxed);
    }

    fn busy(&self) -> bool {
        self.busy.load(Relaxed) > 0
    }

    /// When the connection is to be closed if it makes no progress, and why.
    fn deadline(&self, setup: &DownstreamSetup, unit: &str) -> Option<(Instant, String)> {
        let at = |us: u64, d: Duration| self.epoch + Duration::from_micros(us) + d;
        if self.busy() {
            // Checked again once it could have expired, counting from now.
            return setup
                .idle_timeout
                .or(setup.first_frame_timeout)
                .map(|d| (at(self.now(), d), String::new()));
        }
        let idle = setup.idle_timeout.map(|d| {
            let why = format!(
                "no whole {unit} for {} seconds (net.idle_timeout)",
                d.as_secs_f64()
            );
            (at(self.last.load(Relaxed), d), why)
        });
        let first = setup
            .first_frame_timeout
            .filter(|_| !self.progressed.load(Relaxed))
            .map(|d| {
                let why = format!(
                    "no whole {unit} within {} seconds of connecting (net.first_frame_timeout)",
                    d.as_secs_f64()
                );
                (at(self.born, d), why)
            });
        match (idle, first) {
            (Some(i), Some(f)) => Some(if f.0 <= i.0 { f } else { i }),
            (i, f) => i.or(f),
        }
    }
}

/// An open connection in its listener's table; leaves it when dropped.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
    activity: Arc<Activity>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Shared {
    fn register(self: &Arc<Self>, id: u64, peer: String) -> Registered {
        let activity = Arc::new(Activity::new(self.epoch, id, peer));
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, activity.clone());
        Registered {
            shared: self.clone(),
            id,
            activity,
        }
    }

    /// The connection that made progress longest ago and has no work in hand.
    fn idlest(&self) -> Option<Arc<Activity>> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values()
            .filter(|a| !a.busy() && a.marked.load(Relaxed) == 0)
            .min_by_key(|a| (a.last.load(Relaxed), a.id))
            .cloned()
    }

    /// Asks this listener's idlest connection to close, to make room for a new client;
    /// false when every connection is busy.
    fn evict_oldest(&self) -> bool {
        evict(self.idlest(), CAP_FULL)
    }

    /// Runs a connection's `work` until it ends, the connection is evicted, or it makes
    /// no progress in time (logged, counted as rejected).
    async fn supervise<W: std::future::Future<Output = ()>>(&self, work: W, act: &Activity) {
        tokio::pin!(work);
        loop {
            let deadline = act.deadline(&self.setup, self.unit);
            let expired = async {
                match &deadline {
                    Some((at, _)) => tokio::time::sleep_until((*at).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut work => return,
                _ = act.evict.notified() => {
                    let why = act.marked.swap(0, Relaxed);
                    if act.busy() || why == 0 {
                        continue;
                    }
                    count(&self.counters.evicted);
                    let idle = act.now().saturating_sub(act.last.load(Relaxed));
                    let need = match why {
                        CAP_FULL => format!(
                            "a new client needs its place ({} connections open)",
                            self.setup.max_connections
                        ),
                        _ => "the agent is out of file descriptors".to_string(),
                    };
                    self.log_evictions.warn(|skipped| format!(
                        "{} closing connection from {}: no whole {} for {:.1} seconds, and {need}{}",
                        self.prefix,
                        act.peer,
                        self.unit,
                        idle as f64 / 1e6,
                        more(skipped)
                    ));
                    return;
                }
                _ = expired => {
                    let Some((at, why)) = deadline else { continue };
                    if act.busy() || Instant::now() < at || why.is_empty() {
                        continue;
                    }
                    // Progress since the deadline was computed moves it.
                    if act.deadline(&self.setup, self.unit).is_some_and(|(later, _)| later > at) {
                        continue;
                    }
                    count(&self.counters.rejected);
                    self.log_timeouts.warn(|skipped| format!(
                        "{} closing connection from {}: {why}{}",
                        self.prefix,
                        act.peer,
                        more(skipped)
                    ));
                    return;
                }
            }
        }
    }
}

/// The address a server binds for `listen` and `port`: an IP, or a host name's first
/// address, as Fluent Bit binds.
pub(crate) fn listen_addr(listen: &str, port: u16) -> io::Result<SocketAddr> {
    let ip: std::net::IpAddr = match listen.parse() {
        Ok(ip) => ip,
        Err(_) => {
            use std::net::ToSocketAddrs;
            (listen, port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?
                .ip()
        }
    };
    Ok(SocketAddr::new(ip, port))
}

fn tcp_listener(setup: &DownstreamSetup) -> io::Result<TcpListener> {
    let addr = listen_addr(&setup.listen, setup.port)?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if setup.share_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(setup.backlog)?;
    TcpListener::from_std(socket.into())
}

impl Downstream {
    /// Binds now, so that a port in use stops the agent at start with the reason.
    pub fn bind(spec: ListenSpec) -> io::Result<Downstream> {
        let ListenSpec {
            setup,
            prefix,
            unit,
            counters,
        } = spec;
        let listener = match &setup.unix_path {
            Some(path) => {
                // A socket file left by a previous run would make bind fail.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path)?;
                }
                let l = UnixListener::bind(path)?;
                if let Some(mode) = setup.unix_perm {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                }
                Listener::Unix(l, path.clone())
            }
            None => Listener::Tcp(tcp_listener(&setup)?),
        };
        // The bound address: with `port 0` the log tells which port the kernel chose.
        let bound = match &listener {
            Listener::Tcp(l) => l.local_addr()?.to_string(),
            Listener::Unix(_, path) => path.display().to_string(),
        };
        crate::info!(
            "{prefix} listening on {bound}{}",
            if setup.tls.is_some() { " (TLS)" } else { "" }
        );
        let shared = Arc::new(Shared {
            setup,
            prefix,
            unit,
            counters,
            epoch: Instant::now(),
            open: Mutex::default(),
            log_timeouts: Throttle::default(),
            log_evictions: Throttle::default(),
            log_accept: Throttle::default(),
        });
        {
            let mut all = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
            // Listeners of pipelines a hot reload replaced are gone.
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&shared));
        }
        Ok(Downstream {
            listener,
            slots: Arc::new(Semaphore::new(shared.setup.max_connections)),
            shared,
        })
    }

    /// The bound TCP port (the chosen one when `port 0`).
    pub fn local_port(&self) -> Option<u16> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(..) => None,
        }
    }

    /// Accepts clients until `stop` completes, running `handle` on each established
    /// connection in its own task; returns once every connection task has ended
    /// (handlers are told to stop by their owner, and stop reading then).
    pub async fn serve<S, F, Fut>(self, stop: S, handle: F)
    where
        S: std::future::Future<Output = ()>,
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::pin!(stop);
        let handle = Arc::new(handle);
        let mut tasks = JoinSet::new();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut next_id = 0u64;
        loop {
            let accepted = tokio::select! {
                _ = &mut stop => break,
                a = self.accept() => a,
            };
            // Reap finished connection tasks as we go.
            while tasks.try_join_next().is_some() {}
            let (raw, peer) = match accepted {
                Ok(a) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    a
                }
                Err(e) => {
                    let wait = self.accept_failed(&e, &mut backoff);
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            // A free slot, or the place of the connection idle longest.
            let slot = loop {
                if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                    break Some(slot);
                }
                self.shared.evict_oldest();
                // Every connection busy (or the one asked slow to go): wait, ask again.
                let wait = tokio::time::timeout(
                    Duration::from_millis(500),
                    self.slots.clone().acquire_owned(),
                );
                tokio::select! {
                    _ = &mut stop => break None,
                    s = wait => if let Ok(Ok(slot)) = s { break Some(slot) },
                }
            };
            let Some(slot) = slot else { break };
            next_id += 1;
            let registered = self.shared.register(next_id, peer.clone());
            let pending = Pending {
                raw,
                peer,
                shared: self.shared.clone(),
                activity: registered.activity.clone(),
            };
            let handle = handle.clone();
            // The handshake runs in the connection's task, so a slow client never
            // holds up the accept loop.
            tasks.spawn(async move {
                let work = async move {
                    if let Some(conn) = pending.establish().await {
                        handle(conn).await;
                    }
                };
                let shared = registered.shared.clone();
                shared.supervise(work, &registered.activity).await;
                drop(registered);
                // The slot is free once the handler is done, however it used `conn`.
                drop(slot);
            });
        }
        drop(self.listener);
        while tasks.join_next().await.is_some() {}
    }

    /// Counts and logs (throttled) a failed accept; returns how long to wait before the
    /// next. Out of descriptors, the connection idle longest is closed to give one back,
    /// so a listener is never starved by idle clients of its own.
    fn accept_failed(&self, e: &io::Error, backoff: &mut Duration) -> Duration {
        if e.kind() == io::ErrorKind::ConnectionAborted {
            // The client went away before it was accepted: nothing to wait for.
            return Duration::ZERO;
        }
        let shared = &self.shared;
        count(&shared.counters.accept_errors);
        let (freed, wait) = accept_backoff(e, backoff);
        shared.log_accept.warn(|skipped| {
            format!(
                "{} accept failed: {e}; {}{}",
                shared.prefix,
                if freed {
                    "closing the connection idle longest to free a descriptor".to_string()
                } else {
                    format!("retrying in {} ms", wait.as_millis())
                },
                more(skipped)
            )
        });
        wait
    }

    async fn accept(&self) -> io::Result<(RawStream, String)> {
        match &self.listener {
            Listener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((RawStream::Tcp(s), a.to_string()))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((RawStream::Unix(s), path.display().to_string()))
            }
        }
    }
}

/// The first wait after a failed accept, doubled on each failure in a row up to the max.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// After a failed accept of any listener (server inputs, the HTTP server): out of file
/// descriptors, the idlest connection of any server input is closed to give one back.
/// Returns (whether one was, how long to wait before accepting again), doubling
/// `backoff` for the next failure in a row.
pub fn accept_backoff(e: &io::Error, backoff: &mut Duration) -> (bool, Duration) {
    let fds_short = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    let freed = fds_short && free_a_descriptor();
    let wait = if freed { ACCEPT_BACKOFF_MIN } else { *backoff };
    *backoff = (*backoff * 2).min(ACCEPT_BACKOFF_MAX);
    (freed, wait)
}

/// Why a connection is asked to go: its listener's cap is full, or the process is out
/// of file descriptors.
const CAP_FULL: u8 = 1;
const FDS_SHORT: u8 = 2;

/// Every running server input, so that any listener short of descriptors can take one
/// from the idlest connection of any of them.
static LISTENERS: Mutex<Vec<std::sync::Weak<Shared>>> = Mutex::new(Vec::new());

/// Asks `victim` (if any) to close, for `why`; whether there was one.
fn evict(victim: Option<Arc<Activity>>, why: u8) -> bool {
    match victim {
        Some(a) => {
            a.marked.store(why, Relaxed);
            a.evict.notify_one();
            true
        }
        None => false,
    }
}

/// Closes the connection, of all server inputs, that made progress longest ago and has
/// no work in hand; false when there is none.
pub fn free_a_descriptor() -> bool {
    let mut all = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|w| w.strong_count() > 0);
    let victim = all
        .iter()
        .filter_map(|w| w.upgrade()?.idlest())
        .min_by_key(|a| a.epoch + Duration::from_micros(a.last.load(Relaxed)));
    evict(victim, FDS_SHORT)
}

enum RawStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An accepted connection before its TLS handshake.
struct Pending {
    raw: RawStream,
    peer: String,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
}

impl Pending {
    /// Completes the TLS handshake within `net.accept_timeout`; a failure is logged,
    /// counted, and closes the connection.
    async fn establish(self) -> Option<Conn> {
        let Pending {
            raw,
            peer,
            shared,
            activity,
        } = self;
        let (setup, prefix, rejected) = (&shared.setup, &shared.prefix, &shared.counters.rejected);
        let stream = match (raw, &setup.tls) {
            (RawStream::Tcp(s), Some(tls)) => {
                match tokio::time::timeout(setup.accept_timeout, tls.acceptor.accept(s)).await {
                    Ok(Ok(s)) => {
                        if tls.log_handshake {
                            let c = s.get_ref().1;
                            crate::info!(
                                "{prefix} TLS connection from {peer}: {}, {}",
                                c.protocol_version().and_then(|v| v.as_str()).unwrap_or("?"),
                                c.negotiated_cipher_suite()
                                    .and_then(|s| s.suite().as_str())
                                    .unwrap_or("?")
                            );
                        }
                        ServerStream::Tls(Box::new(s))
                    }
                    Ok(Err(e)) => {
                        reject(
                            prefix,
                            rejected,
                            &peer,
                            &format!("TLS handshake failed: {e}"),
                        );
                        return None;
                    }
                    Err(_) => {
                        let why = format!(
                            "no TLS handshake within {} seconds (net.accept_timeout)",
                            setup.accept_timeout.as_secs_f64()
                        );
                        if setup.accept_timeout_log_error {
                            reject(prefix, rejected, &peer, &why);
                        } else {
                            count(rejected);
                            crate::debug!("{prefix} closing connection from {peer}: {why}");
                        }
                        return None;
                    }
                }
            }
            (RawStream::Tcp(s), None) => ServerStream::Tcp(s),
            (RawStream::Unix(s), _) => ServerStream::Unix(s),
        };
        Some(Conn {
            stream,
            peer,
            io_timeout: setup.io_timeout,
            activity,
            prefix: prefix.clone(),
            rejected: rejected.clone(),
        })
    }
}

/// Logs why a client is turned away and counts it.
fn reject(prefix: &str, rejected: &AtomicU64, peer: &str, why: &str) {
    count(rejected);
    crate::warn!("{prefix} closing connection from {peer}: {why}");
}

/// An established client connection. Dropping it closes the connection; its slot under
/// the input's connection cap is freed when the handler returns.
pub struct Conn {
    pub stream: ServerStream,
    /// `127.0.0.1:40312`, or the socket path.
    pub peer: String,
    /// `net.io_timeout`.
    pub io_timeout: Option<Duration>,
    /// Where the handler reports progress and work in hand (see [`Activity`]).
    pub activity: Arc<Activity>,
    prefix: Arc<str>,
    rejected: Arc<AtomicU64>,
}

impl Conn {
    /// `tcp://127.0.0.1:40312` (Fluent Bit's user-friendly remote address), or
    /// `unix://PATH`.
    pub fn source_address(&self) -> String {
        match self.stream {
            ServerStream::Unix(_) => format!("unix://{}", self.peer),
            _ => format!("tcp://{}", self.peer),
        }
    }

    /// What closing this client for a reason needs (one log line and the
    /// rejected-connections counter), kept apart from the stream so handlers can split it.
    pub fn rejecter(&self) -> Rejecter {
        Rejecter {
            prefix: self.prefix.clone(),
            rejected: self.rejected.clone(),
            peer: self.peer.clone(),
        }
    }
}

/// Turns a client away: [`Rejecter::reject`] logs who and why, and counts it.
#[derive(Clone)]
pub struct Rejecter {
    prefix: Arc<str>,
    rejected: Arc<AtomicU64>,
    peer: String,
}

impl Rejecter {
    pub fn reject(&self, why: &str) {
        reject(&self.prefix, &self.rejected, &self.peer, why);
    }
}

/// Appends up to `max` bytes read from `r` to `buf`, waiting at most `io_timeout`:
/// `Ok(0)` at end of stream, a `TimedOut` error when the client sent nothing for that
/// long. Cancel-safe: when the future is dropped, nothing was read.
pub async fn read_some<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    io_timeout: Option<Duration>,
) -> io::Result<usize> {
    use bytes::BufMut;
    use tokio::io::AsyncReadExt;
    // Room grows with what the connection sends: 4 KiB at first, doubled each time a
    // read fills it, up to `max`. A client that sends one byte holds 4 KiB, not a
    // whole buffer_chunk_size (1,000 such connections to forward took 1 GB), and a busy
    // one soon reads `max` at a time.
    let room = max.min(buf.capacity().saturating_sub(buf.len()).max(4096));
    buf.reserve(room);
    let mut limited = (&mut *buf).limit(room);
    let read = r.read_buf(&mut limited);
    let n = match io_timeout {
        Some(t) => match tokio::time::timeout(t, read).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no data for {} seconds (net.io_timeout)", t.as_secs_f64()),
            )),
        },
        None => read.await,
    }?;
    if n == room && room < max {
        buf.reserve(2 * room);
    }
    Ok(n)
}

/// A client connection: TCP, TLS over TCP, or a Unix socket.
pub enum ServerStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    fn setup(port: u16, share_port: bool, max_connections: usize) -> DownstreamSetup {
        DownstreamSetup {
            listen: "127.0.0.1".into(),
            port,
            unix_path: None,
            unix_perm: None,
            backlog: 16,
            share_port,
            accept_timeout: Duration::from_secs(1),
            accept_timeout_log_error: true,
            io_timeout: None,
            first_frame_timeout: None,
            idle_timeout: None,
            tls: None,
            max_connections,
        }
    }

    fn spec(setup: DownstreamSetup) -> ListenSpec {
        ListenSpec {
            setup,
            prefix: Arc::from("[test]"),
            unit: "frame",
            counters: Counters::default(),
        }
    }

    fn bind(s: DownstreamSetup) -> io::Result<Downstream> {
        Downstream::bind(spec(s))
    }

    #[tokio::test]
    async fn share_port_lets_two_listeners_bind_one_port() {
        let first = bind(setup(0, true, 4)).unwrap();
        let port = first.local_port().unwrap();
        assert!(bind(setup(port, true, 4)).is_ok());
        let e = bind(setup(port, false, 4)).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    /// A test server: echoes each byte; `p` reports progress, `h` holds work in hand
    /// (never released), anything else is a trickle that completes nothing.
    fn echo_server(
        setup: DownstreamSetup,
    ) -> (
        u16,
        Counters,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let mut spec = spec(setup);
        let counters = spec.counters.clone();
        spec.prefix = Arc::from("[test]");
        let server = Downstream::bind(spec).unwrap();
        let port = server.local_port().unwrap();
        let (trigger, stop) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = stop.await;
        };
        let task = tokio::spawn(server.serve(stop, |mut conn: Conn| async move {
            let mut b = [0u8; 1];
            while let Ok(1) = conn.stream.read(&mut b).await {
                match b[0] {
                    b'p' => conn.activity.progress(),
                    b'h' => conn.activity.hold(),
                    _ => {}
                }
                let _ = conn.stream.write_all(&b).await;
            }
        }));
        (port, counters, trigger, task)
    }

    async fn echo(s: &mut TcpStream, byte: u8) -> io::Result<()> {
        s.write_all(&[byte]).await?;
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(1)) if b[0] == byte => Ok(()),
            other => Err(io::Error::other(format!("{other:?}"))),
        }
    }

    /// Closed by the server: EOF (or a reset) within a generous bound.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// At the cap, a new client takes the place of the connection that made progress
    /// longest ago (issue 21 item 2: idle clients held the cap and a good client
    /// waited for as long as they liked); the eviction is counted.
    #[tokio::test]
    async fn at_the_cap_a_new_client_takes_the_place_of_the_idlest() {
        let (port, counters, trigger, task) = echo_server(setup(0, false, 2));
        let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        echo(&mut idle, b'x').await.unwrap();
        let mut good = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        echo(&mut good, b'p').await.unwrap();
        let mut new = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        echo(&mut new, b'p').await.unwrap();
        assert!(closed(&mut idle).await, "the idle connection stays");
        echo(&mut good, b'p').await.unwrap();
        assert_eq!(get(&counters.evicted), 1);
        let _ = trigger.send(());
        drop((good, new));
        task.await.unwrap();
    }

    /// A connection with work in hand (records with the engine, an ack owed) is never
    /// evicted: at the cap a new client waits until it is done.
    #[tokio::test]
    async fn a_busy_connection_is_not_evicted() {
        let (port, counters, trigger, task) = echo_server(setup(0, false, 1));
        let mut busy = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        echo(&mut busy, b'h').await.unwrap();
        let mut new = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        new.write_all(b"p").await.unwrap();
        let mut b = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_millis(1500), new.read(&mut b)).await;
        assert!(waited.is_err(), "served beyond the cap: {waited:?}");
        echo(&mut busy, b'x').await.unwrap();
        drop(busy);
        new.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"p");
        assert_eq!(get(&counters.evicted), 0);
        let _ = trigger.send(());
        drop(new);
        task.await.unwrap();
    }

    /// A client that completes nothing within net.first_frame_timeout, or nothing more
    /// for net.idle_timeout, is closed and counted as rejected; a trickle of bytes is no
    /// progress, and a client that makes progress stays.
    #[tokio::test]
    async fn no_progress_in_time_closes_the_connection() {
        let mut s = setup(0, false, 8);
        s.first_frame_timeout = Some(Duration::from_millis(300));
        s.idle_timeout = Some(Duration::from_secs(2));
        let (port, counters, trigger, task) = echo_server(s);
        let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut trickle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut good = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        echo(&mut good, b'p').await.unwrap();
        for _ in 0..3 {
            let _ = echo(&mut trickle, b'x').await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(closed(&mut silent).await, "silent");
        assert!(closed(&mut trickle).await, "trickle");
        // Progress every 100 ms for 3 s: longer than net.idle_timeout, never idle for it.
        for _ in 0..30 {
            echo(&mut good, b'p').await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(closed(&mut good).await, "idle after its last progress");
        assert_eq!(get(&counters.rejected), 3);
        let _ = trigger.send(());
        task.await.unwrap();
    }
}
