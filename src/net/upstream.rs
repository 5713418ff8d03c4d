//! An output's connections to its destination: resolve, connect, TLS, pool, write.
//! Fluent Bit: src/flb_upstream.c, src/flb_io.c, src/flb_network.c.
//!
//! One [`Upstream`] per output instance, shared by all its workers (Fluent Bit keeps one
//! pool per worker thread). A worker takes a connection for one flush and the
//! [`PooledConn`] guard returns it on drop, unless a write failed or was cancelled half
//! way: such a connection is closed, never reused. So a second connection opens only
//! while the first is busy, and with the default `workers 2` a destination that accepts a
//! single connection (`nc -l`) still receives every record, which Fluent Bit's
//! per-worker pools do not achieve (its second worker's records sit unread in `nc`'s
//! accept backlog and are lost).
//!
//! Rules, with Fluent Bit's defaults: an idle connection is closed after
//! `net.keepalive_idle_timeout` (by a background task, so an idle destination sees the
//! close on time) and checked before reuse for a close by the peer; a connection is closed
//! after `net.keepalive_max_recycle` reuses; `net.keepalive off` closes it after each
//! flush; `net.max_worker_connections` caps the open connections of the output, and a
//! flush that finds them all busy waits for one up to `net.connect_timeout`.
//!
//! `net.connect_timeout` covers name resolution, the TCP connects to every resolved
//! address in turn and the TLS handshake. `net.io_timeout` fails a write that makes no
//! progress for that long. Names are resolved by the system resolver (getaddrinfo, on
//! tokio's blocking pool), whatever `net.dns.resolver` says: both of Fluent Bit's
//! resolvers answer from the same sources, and neither blocks the I/O threads here.
//!
//! Connection failures are logged once per change of state (up → failing, one failure
//! → another, failing → up); every failed flush still returns a retry to the engine.

use std::fmt;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use super::pool::{CloseReason, ConnMeta, Limits, PoolCore, Take};
use super::props::NetSetup;
use super::socket;
use super::tls::TlsSetup;

/// How often idle connections are checked for a close by the peer (Fluent Bit's
/// connection timeout timer runs every 1.5 s too).
const PEER_CHECK: Duration = Duration::from_millis(1500);

/// Why no connection could be had or a write failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} has no address usable from net.source_address {source_address}")]
    NoAddress {
        host: String,
        source_address: IpAddr,
    },
    #[error("connection to {addr} failed: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: String, source: io::Error },
    #[error("connection #{id} to {addr} timed out after {} seconds (connection timeout)", secs(*.after))]
    ConnectTimeout {
        id: u64,
        addr: String,
        after: Duration,
    },
    #[error("no upstream connections available to {addr}: all {max} (net.max_worker_connections) are busy")]
    Exhausted { addr: String, max: usize },
    #[error("write to {addr} failed after {written} of {total} bytes: {source}")]
    Write {
        addr: String,
        written: usize,
        total: usize,
        source: io::Error,
    },
    #[error("read from {addr} failed: {source}")]
    Read { addr: String, source: io::Error },
    #[error("no reply from {addr} within {} seconds", secs(*.after))]
    ReadTimeout { addr: String, after: Duration },
    #[error("write to {addr} made no progress for {} seconds (net.io_timeout) after {written} of {total} bytes", secs(*.after))]
    IoTimeout {
        addr: String,
        written: usize,
        total: usize,
        after: Duration,
    },
}

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// A plain or TLS connection. Writes go through tokio; replies (a protocol's acks) are
/// read through tokio too, and between flushes the liveness check reads with system
/// calls directly.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the peer has neither closed nor reset the connection. Bytes the peer sent
    /// meanwhile (TLS session tickets, say) are read and dropped: a sink never answers.
    /// Everything here is a direct non-blocking system call (`MSG_PEEK`, `recv`), not
    /// tokio's cached readiness, so a close that arrived a moment ago is seen even before
    /// the reactor has noticed it.
    fn is_alive(&mut self) -> bool {
        let mut peek = [MaybeUninit::<u8>::uninit(); 1];
        let mut buf = [0u8; 4096];
        // Bounded: a peer that keeps talking is alive.
        for _ in 0..64 {
            match SockRef::from(self.tcp()).peek(&mut peek) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
            let n = match (&*SockRef::from(self.tcp())).read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            // TLS bytes go through rustls: tickets are absorbed, close_notify ends it.
            if let Stream::Tls(s) = self {
                if !tls_absorb(s.get_mut().1, &buf[..n]) {
                    return false;
                }
            }
        }
        true
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

/// Feeds bytes read off the socket to rustls; false when they close or break the session.
fn tls_absorb(conn: &mut rustls::ClientConnection, mut bytes: &[u8]) -> bool {
    let mut plain = [0u8; 4096];
    while !bytes.is_empty() {
        if conn.read_tls(&mut bytes).is_err() {
            return false;
        }
        let state = match conn.process_new_packets() {
            Ok(state) => state,
            Err(_) => return false,
        };
        if state.peer_has_closed() {
            return false;
        }
        // Application data from a sink is unexpected; drop it.
        let mut left = state.plaintext_bytes_to_read();
        while left > 0 {
            match conn.reader().read(&mut plain) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }
    true
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What was last logged about the destination, so a failure is logged once per change.
#[derive(Debug, PartialEq)]
enum Health {
    Unknown,
    Up,
    /// The failure, without the connection number.
    Failing(String),
}

struct Inner {
    host: String,
    port: u16,
    /// `host:port`, for messages.
    addr: String,
    net: NetSetup,
    tls: Option<TlsSetup>,
    /// Never held across an await.
    core: Mutex<PoolCore<Stream>>,
    /// A connection came back or closed: flushes waiting at the cap try again.
    released: Notify,
    /// Wakes the idle reaper: a connection went idle, or the upstream is gone.
    reaper: Arc<Notify>,
    reaper_started: std::sync::atomic::AtomicBool,
    health: Mutex<Health>,
    metrics: PoolMetrics,
}

/// Connection counters of one output's pool (`agent_output_connections_*_total`).
#[derive(Clone, Debug, Default)]
pub struct PoolMetrics {
    pub opened: Arc<std::sync::atomic::AtomicU64>,
    pub reused: Arc<std::sync::atomic::AtomicU64>,
    pub closed: Arc<std::sync::atomic::AtomicU64>,
}

fn count(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reaper holds only a weak reference; let it see that we are gone. Idle
        // connections close (FIN) as `core` drops.
        self.reaper.notify_one();
    }
}

/// The pool and connector of one output instance. Cloning shares it (one per worker).
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// `host:port`, for log lines.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    pub fn new(host: &str, port: u16, net: NetSetup, tls: Option<TlsSetup>) -> Upstream {
        let limits = Limits {
            keepalive: net.keepalive,
            idle_timeout: net.keepalive_idle_timeout,
            max_recycle: net.keepalive_max_recycle,
            max_open: net.max_connections,
        };
        Upstream {
            inner: Arc::new(Inner {
                host: host.to_string(),
                port,
                addr: format!("{host}:{port}"),
                net,
                tls,
                core: Mutex::new(PoolCore::new(limits)),
                released: Notify::new(),
                reaper: Arc::new(Notify::new()),
                reaper_started: false.into(),
                health: Mutex::new(Health::Unknown),
                metrics: PoolMetrics::default(),
            }),
        }
    }

    /// Counts opened, reused and closed connections into `metrics`. Call before use.
    pub fn with_metrics(mut self, metrics: PoolMetrics) -> Upstream {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = metrics;
        }
        self
    }

    /// A connection for one flush: an idle one that is still alive, else a new one.
    pub async fn get(&self) -> Result<PooledConn, NetError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.net.connect_timeout;
        loop {
            let released = inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let mut closed = Vec::new();
            let take = inner.core().take(Instant::now(), &mut closed);
            inner.close_all(closed);
            match take {
                Take::Reuse(mut stream, meta) => {
                    if stream.is_alive() {
                        count(&inner.metrics.reused);
                        crate::debug!(
                            "[upstream] KA connection #{} to {} has been assigned (recycled)",
                            meta.id,
                            inner.addr
                        );
                        return Ok(PooledConn::new(inner.clone(), stream, meta));
                    }
                    inner.core().discard(meta);
                    inner.log_close(meta, CloseReason::PeerClosed);
                }
                Take::Connect(meta) => {
                    // Gives the slot back if this future is dropped mid-connect.
                    let slot = Reservation {
                        inner,
                        meta: Some(meta),
                    };
                    let opened = tokio::time::timeout_at(deadline, inner.open(meta.id)).await;
                    let result = match opened {
                        Ok(Ok(stream)) => Ok(stream),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(NetError::ConnectTimeout {
                            id: meta.id,
                            addr: inner.addr.clone(),
                            after: inner.net.connect_timeout,
                        }),
                    };
                    return match result {
                        Ok(stream) => {
                            slot.keep();
                            count(&inner.metrics.opened);
                            inner.report_up();
                            crate::debug!(
                                "[upstream] KA connection #{} to {} is connected",
                                meta.id,
                                inner.addr
                            );
                            Ok(PooledConn::new(inner.clone(), stream, meta))
                        }
                        Err(e) => {
                            drop(slot);
                            inner.report_failure(&e);
                            Err(e)
                        }
                    };
                }
                Take::Full => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(NetError::Exhausted {
                            addr: inner.addr.clone(),
                            max: inner.net.max_connections.unwrap_or(0),
                        });
                    }
                }
            }
        }
    }

    /// Open connections (busy, idle and connecting).
    #[cfg(test)]
    pub fn open_connections(&self) -> usize {
        self.inner.core().open()
    }
}

impl Inner {
    fn core(&self) -> MutexGuard<'_, PoolCore<Stream>> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves, connects to each address in turn, then the TLS handshake. The caller
    /// bounds the whole with `net.connect_timeout`.
    async fn open(&self, id: u64) -> Result<Stream, NetError> {
        let mut addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|source| NetError::Resolve {
                    host: self.host.clone(),
                    source,
                })?
                .collect(),
        };
        socket::order_addresses(&mut addrs, self.net.prefer);
        addrs.retain(|a| socket::source_fits(self.net.source_address, a));
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match socket::connect(addr, &self.net).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(source) => {
                    crate::debug!("[upstream] connection #{id} to {addr} failed: {source}");
                    last = Some(NetError::Connect {
                        addr: self.addr.clone(),
                        source,
                    });
                }
            }
        }
        let tcp = match (tcp, last, self.net.source_address) {
            (Some(tcp), _, _) => tcp,
            (None, Some(e), _) => return Err(e),
            (None, None, Some(source_address)) => {
                return Err(NetError::NoAddress {
                    host: self.host.clone(),
                    source_address,
                })
            }
            (None, None, None) => {
                return Err(NetError::Resolve {
                    host: self.host.clone(),
                    source: io::Error::new(io::ErrorKind::NotFound, "no address"),
                })
            }
        };
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let stream = tls
            .connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|source| NetError::Tls {
                addr: self.addr.clone(),
                source,
            })?;
        if tls.log_handshake {
            let conn = stream.get_ref().1;
            crate::info!(
                "[tls] connection #{id} to {}: {}, {}",
                self.addr,
                conn.protocol_version()
                    .map(|v| v.as_str().unwrap_or("?"))
                    .unwrap_or("?"),
                conn.negotiated_cipher_suite()
                    .map(|s| s.suite().as_str().unwrap_or("?"))
                    .unwrap_or("?")
            );
        }
        Ok(Stream::Tls(Box::new(stream)))
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report_up(&self) {
        let mut h = self.health();
        if matches!(*h, Health::Failing(_)) {
            crate::info!("[upstream] connection to {} is working again", self.addr);
        }
        *h = Health::Up;
    }

    fn report_failure(&self, e: &NetError) {
        // The same failure again (new connection number aside) is not news.
        let key = match e {
            NetError::ConnectTimeout { addr, after, .. } => format!("timeout {addr} {after:?}"),
            other => other.to_string(),
        };
        let mut h = self.health();
        let news = *h != Health::Failing(key.clone());
        *h = Health::Failing(key);
        drop(h);
        let quiet =
            matches!(e, NetError::ConnectTimeout { .. }) && !self.net.connect_timeout_log_error;
        if news && !quiet {
            crate::error!("[upstream] {e}");
        } else {
            crate::debug!("[upstream] {e}");
        }
    }

    fn log_close(&self, meta: ConnMeta, reason: CloseReason) {
        count(&self.metrics.closed);
        crate::debug!(
            "[upstream] drop keepalive connection #{} to {} ({})",
            meta.id,
            self.addr,
            reason.text()
        );
    }

    fn close_all(&self, closed: Vec<(Stream, ConnMeta, CloseReason)>) {
        let any = !closed.is_empty();
        for (stream, meta, reason) in closed {
            self.log_close(meta, reason);
            close(stream);
        }
        if any {
            self.released.notify_one();
        }
    }

    /// Starts the task that closes idle connections on time, once, on first need.
    fn start_reaper(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.reaper_started.swap(true, Ordering::AcqRel) {
            self.reaper.notify_one();
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reaper_started.store(false, Ordering::Release);
            return;
        };
        rt.spawn(reap(Arc::downgrade(self), self.reaper.clone()));
    }
}

/// A connection slot reserved while connecting: released unless the connection is made.
struct Reservation<'a> {
    inner: &'a Inner,
    meta: Option<ConnMeta>,
}

impl Reservation<'_> {
    /// The connection exists: its [`PooledConn`] owns the slot now.
    fn keep(mut self) {
        self.meta = None;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(meta) = self.meta.take() {
            self.inner.core().discard(meta);
            self.inner.released.notify_one();
        }
    }
}

/// Closes a connection that carries nothing: unread bytes are drained first, so the
/// kernel sends a FIN rather than a reset.
fn close(mut stream: Stream) {
    stream.is_alive();
    drop(stream);
}

/// Closes idle connections when their idle timeout ends, and those the peer closed.
/// Holds only a weak reference so that dropping the output closes everything.
async fn reap(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let woken = wake.notified();
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let now = Instant::now();
            let mut closed = Vec::new();
            {
                let mut core = inner.core();
                core.expire(now, &mut closed);
                core.remove_dead(&mut closed, |s| !s.is_alive());
            }
            inner.close_all(closed);
            let next = inner.core().next_expiry();
            next.map(|t| t.min(now + PEER_CHECK))
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = woken => {}
                }
            }
            None => woken.await,
        }
    }
}

/// A connection taken from the pool for one flush. Dropping it returns it to the pool,
/// unless a write on it failed or never finished: then it is closed, so a destination
/// never gets the rest of a half-written chunk glued to the next one.
pub struct PooledConn {
    inner: Arc<Inner>,
    /// `None` only while dropping.
    stream: Option<Stream>,
    meta: ConnMeta,
    /// A write started and has not completed.
    dirty: bool,
}

impl PooledConn {
    fn new(inner: Arc<Inner>, stream: Stream, meta: ConnMeta) -> Self {
        PooledConn {
            inner,
            stream: Some(stream),
            meta,
            dirty: false,
        }
    }

    /// `#N` of this connection in log lines.
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    /// Whether this is the connection's first flush (a protocol handshake is due).
    pub fn is_new(&self) -> bool {
        self.meta.uses == 1
    }

    /// Marks the connection as waiting for a reply (or done waiting). A connection
    /// dropped while waiting is closed rather than reused, so a late reply can never be
    /// read as the answer to the next flush.
    pub fn awaiting_reply(&mut self, waiting: bool) {
        self.dirty = waiting;
    }

    /// The connection itself, for a protocol that reads and writes on it (the HTTP
    /// client). It counts as mid-exchange until [`Self::awaiting_reply`]`(false)` says
    /// the exchange ended cleanly: dropped before that, it is closed, never reused.
    pub fn io(&mut self) -> Option<&mut Stream> {
        self.dirty = true;
        self.stream.as_mut()
    }

    /// Appends the bytes of a reply that arrive within `timeout` to `buf`; `Ok(0)` when
    /// the peer closed the connection.
    pub async fn read_reply(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, NetError> {
        use tokio::io::AsyncReadExt;
        let addr = || self.inner.addr.clone();
        let Some(stream) = self.stream.as_mut() else {
            return Err(NetError::Read {
                addr: addr(),
                source: io::ErrorKind::NotConnected.into(),
            });
        };
        buf.reserve(4096);
        match tokio::time::timeout(timeout, stream.read_buf(buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(source)) => Err(NetError::Read {
                addr: addr(),
                source,
            }),
            Err(_) => Err(NetError::ReadTimeout {
                addr: addr(),
                after: timeout,
            }),
        }
    }

    /// Writes all of `buf`; returns once the last byte is handed to the kernel.
    /// Each write must make progress within `net.io_timeout`.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), NetError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(NetError::Write {
                addr: self.inner.addr.clone(),
                written: 0,
                total: buf.len(),
                source: io::ErrorKind::NotConnected.into(),
            });
        };
        self.dirty = true;
        let io_timeout = self.inner.net.io_timeout;
        let mut written = 0;
        let fail = |written, source| NetError::Write {
            addr: self.inner.addr.clone(),
            written,
            total: buf.len(),
            source,
        };
        let timed_out = |written, after| NetError::IoTimeout {
            addr: self.inner.addr.clone(),
            written,
            total: buf.len(),
            after,
        };
        while written < buf.len() {
            let step = stream.write(&buf[written..]);
            let n = match io_timeout {
                Some(t) => tokio::time::timeout(t, step)
                    .await
                    .map_err(|_| timed_out(written, t))?,
                None => step.await,
            }
            .map_err(|e| fail(written, e))?;
            if n == 0 {
                return Err(fail(written, io::ErrorKind::WriteZero.into()));
            }
            written += n;
        }
        // TLS keeps records in its buffer until flushed.
        let flush = stream.flush();
        match io_timeout {
            Some(t) => tokio::time::timeout(t, flush)
                .await
                .map_err(|_| timed_out(written, t))?,
            None => flush.await,
        }
        .map_err(|e| fail(written, e))?;
        self.dirty = false;
        Ok(())
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let inner = &self.inner;
        if self.dirty {
            crate::debug!(
                "[upstream] connection #{} to {} closed after a failed write",
                self.meta.id,
                inner.addr
            );
            inner.core().discard(self.meta);
            drop(stream);
            count(&inner.metrics.closed);
            inner.released.notify_one();
            return;
        }
        let closed = inner.core().put(stream, self.meta, Instant::now());
        match closed {
            Some(c) => inner.close_all(vec![c]),
            None => {
                crate::debug!(
                    "[upstream] KA connection #{} to {} is now available",
                    self.meta.id,
                    inner.addr
                );
                inner.released.notify_one();
                inner.start_reaper();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::props::Prefer;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn net() -> NetSetup {
        NetSetup {
            keepalive: true,
            keepalive_idle_timeout: Duration::from_secs(10),
            keepalive_max_recycle: None,
            max_connections: None,
            tcp_keepalive: None,
            io_timeout: None,
            connect_timeout: Duration::from_secs(5),
            connect_timeout_log_error: true,
            source_address: None,
            prefer: Prefer::None,
            proxy_env_ignore: false,
        }
    }

    async fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    /// Whether the peer closed `s`, by a syscall (not tokio's readiness).
    fn closed(s: &TcpStream) -> bool {
        let mut b = [MaybeUninit::uninit(); 1];
        matches!(SockRef::from(s).peek(&mut b), Ok(0))
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_closes_at_the_idle_timeout() {
        let (l, port) = listener().await;
        let up = Upstream::new("127.0.0.1", port, net(), None);
        let mut c = up.get().await.unwrap();
        c.write_all(b"x").await.unwrap();
        drop(c);
        let (mut server, _) = l.accept().await.unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).await.unwrap();
        tokio::time::sleep(Duration::from_millis(9900)).await;
        assert!(!closed(&server), "closed before the idle timeout");
        assert_eq!(up.open_connections(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(closed(&server), "still open after the idle timeout");
        assert_eq!(up.open_connections(), 0);
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_peer_is_not_reused() {
        let (l, port) = listener().await;
        let up = Upstream::new("127.0.0.1", port, net(), None);
        let c = up.get().await.unwrap();
        assert_eq!(c.id(), 1);
        drop(c);
        let (server, _) = l.accept().await.unwrap();
        drop(server);
        let c = up.get().await.unwrap();
        assert_eq!(c.id(), 2);
        assert_eq!(up.open_connections(), 1);
    }

    #[tokio::test]
    async fn a_half_written_connection_is_closed_not_reused() {
        let (l, port) = listener().await;
        let up = Upstream::new("127.0.0.1", port, net(), None);
        let mut c = up.get().await.unwrap();
        // The server never reads, so this write cannot finish; cancel it.
        let big = vec![b'x'; 64 << 20];
        let cancelled = tokio::time::timeout(Duration::from_millis(200), c.write_all(&big)).await;
        assert!(cancelled.is_err());
        drop(c);
        assert_eq!(up.open_connections(), 0);
        assert_eq!(up.get().await.unwrap().id(), 2);
        drop(l);
    }

    #[tokio::test]
    async fn io_timeout_fails_a_stalled_write() {
        let (l, port) = listener().await;
        let up = Upstream::new(
            "127.0.0.1",
            port,
            NetSetup {
                io_timeout: Some(Duration::from_millis(300)),
                ..net()
            },
            None,
        );
        let mut c = up.get().await.unwrap();
        let big = vec![b'x'; 64 << 20];
        let e = c.write_all(&big).await.unwrap_err();
        assert!(
            matches!(e, NetError::IoTimeout { total, written, .. } if total == big.len() && written < total),
            "{e}"
        );
        drop(c);
        assert_eq!(up.open_connections(), 0);
        drop(l);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_a_flush_waits_for_a_busy_connection() {
        let (_l, port) = listener().await;
        let up = Upstream::new(
            "127.0.0.1",
            port,
            NetSetup {
                max_connections: Some(1),
                ..net()
            },
            None,
        );
        let first = up.get().await.unwrap();
        let waiter = tokio::spawn({
            let up = up.clone();
            async move { up.get().await.map(|c| c.id()) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
        // Nobody gives it back: the wait ends at net.connect_timeout.
        let held = up.get().await.unwrap();
        let e = up.get().await.map(|c| c.id()).unwrap_err();
        assert!(matches!(e, NetError::Exhausted { max: 1, .. }), "{e}");
        drop(held);
    }

    /// A listener whose accept queue is full: the kernel drops further SYNs, so a
    /// connect to it hangs.
    fn full_listener() -> (socket2::Socket, Vec<socket2::Socket>, u16) {
        use socket2::{Domain, Socket, Type};
        let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        l.listen(0).unwrap();
        let addr = l.local_addr().unwrap();
        let fillers = (0..3)
            .map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&addr);
                s
            })
            .collect();
        (l, fillers, addr.as_socket().unwrap().port())
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_connect_gives_its_slot_back() {
        let (_l, _fillers, port) = full_listener();
        let up = Upstream::new(
            "127.0.0.1",
            port,
            NetSetup {
                max_connections: Some(1),
                ..net()
            },
            None,
        );
        let cancelled = tokio::time::timeout(Duration::from_millis(100), up.get()).await;
        assert!(cancelled.is_err(), "the connect should hang");
        assert_eq!(up.open_connections(), 0);
        // The connect timeout itself, with the slot back as well.
        let e = up.get().await.map(|c| c.id()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "connection #2 to 127.0.0.1:{port} timed out after 5 seconds (connection timeout)"
            )
        );
        assert_eq!(up.open_connections(), 0);
    }

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let (l, port) = listener().await;
        drop(l);
        let up = Upstream::new("127.0.0.1", port, net(), None);
        let e = up.get().await.map(|c| c.id()).unwrap_err();
        assert!(
            matches!(&e, NetError::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!("connection to 127.0.0.1:{port} failed: Connection refused (os error 111)")
        );
        assert_eq!(up.open_connections(), 0);
    }
}
