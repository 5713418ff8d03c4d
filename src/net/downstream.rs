//! The listening side of server inputs (`forward`, `tcp`): bind with the downstream
//! `net.*` options, accept under a connection cap, TLS handshake within
//! `net.accept_timeout`, reads bounded by `net.io_timeout`, and one place where a client
//! is turned away with a log line and a counter.
//! Fluent Bit: src/flb_downstream.c, src/flb_network.c (`flb_net_server`).
//!
//! Each connection runs in its own task with its own buffer; the number of connections is
//! capped ([`MAX_CONNECTIONS`]), so the memory of a server input is bounded by the cap
//! times the plugin's per-connection buffer limit. At the cap, accepting waits (the
//! kernel's backlog holds new clients) rather than accepting and dropping.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;

use super::tls::ServerTls;
use crate::config::{ConfigError, Props};
use crate::pipeline::{metrics, InputSender, Shutdown};
use crate::plugins::{InputContext, PluginError};

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

/// A bound server socket of one input instance.
/// What a server input holds from build to run: its settings, its log prefix and its
/// rejected-connections counter. It binds only when it runs (so a hot reload can bind
/// the same port again).
pub type ListenSpec = (DownstreamSetup, Arc<str>, Arc<AtomicU64>);

/// A server input's [`ListenSpec`]: its log prefix `[input:PLUGIN:NAME]` and its
/// `agent_input_rejected_connections_total` counter.
pub fn listen_spec(
    setup: DownstreamSetup,
    plugin: &str,
    ctx: &crate::plugins::BuildContext,
) -> ListenSpec {
    let rejected = ctx.metrics.counter(
        "agent_input_rejected_connections_total",
        "Client connections closed for bad data, size limits, timeouts or failed handshakes.",
        ctx.instance,
    );
    (
        setup,
        Arc::from(format!("[input:{plugin}:{}]", ctx.instance)),
        rejected,
    )
}

/// Binds `spec` and serves until shutdown; each connection goes to `handle` with the
/// input's sender. A failure to listen stops the input (and so the agent) with the address.
pub async fn run_server<F, Fut>(
    spec: ListenSpec,
    ctx: InputContext,
    handle: F,
) -> Result<(), PluginError>
where
    F: Fn(Conn, InputSender, Shutdown) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (setup, prefix, rejected) = spec;
    let address = setup.address();
    let server = Downstream::bind(setup, prefix, rejected).map_err(|source| PluginError::Io {
        context: format!("cannot listen on {address}"),
        source,
    })?;
    let (out, shutdown) = (ctx.out, ctx.shutdown.clone());
    server
        .serve(ctx.shutdown, move |conn| {
            handle(conn, out.clone(), shutdown.clone())
        })
        .await;
    Ok(())
}

pub struct Downstream {
    listener: Listener,
    setup: Arc<DownstreamSetup>,
    /// `[input:forward:forward.0]`, the prefix of this input's log lines.
    pub prefix: Arc<str>,
    /// `agent_input_rejected_connections_total` of this instance.
    rejected: Arc<AtomicU64>,
    slots: Arc<Semaphore>,
}

fn tcp_listener(setup: &DownstreamSetup) -> io::Result<TcpListener> {
    let ip: std::net::IpAddr = match setup.listen.parse() {
        Ok(ip) => ip,
        Err(_) => {
            // A host name: the first address it resolves to, as Fluent Bit binds.
            use std::net::ToSocketAddrs;
            (setup.listen.as_str(), setup.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?
                .ip()
        }
    };
    let addr = SocketAddr::new(ip, setup.port);
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
    pub fn bind(
        setup: DownstreamSetup,
        prefix: Arc<str>,
        rejected: Arc<AtomicU64>,
    ) -> io::Result<Downstream> {
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
        Ok(Downstream {
            listener,
            slots: Arc::new(Semaphore::new(setup.max_connections)),
            setup: Arc::new(setup),
            prefix,
            rejected,
        })
    }

    /// The bound TCP port (the chosen one when `port 0`).
    pub fn local_port(&self) -> Option<u16> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(..) => None,
        }
    }

    /// Accepts clients until `shutdown`, running `handle` on each established connection
    /// in its own task; returns once every connection task has ended (handlers watch
    /// `shutdown` too, and stop reading when it fires).
    pub async fn serve<F, Fut>(self, mut shutdown: Shutdown, handle: F)
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = Arc::new(handle);
        let mut tasks = JoinSet::new();
        loop {
            let slot = tokio::select! {
                _ = shutdown.wait() => break,
                slot = self.slots.clone().acquire_owned() => slot,
            };
            let Ok(slot) = slot else { break };
            let accepted = tokio::select! {
                _ = shutdown.wait() => break,
                a = self.accept() => a,
            };
            // Reap finished connection tasks as we go.
            while tasks.try_join_next().is_some() {}
            let (raw, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    crate::error!("{} accept failed: {e}", self.prefix);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let pending = Pending {
                raw,
                peer,
                setup: self.setup.clone(),
                prefix: self.prefix.clone(),
                rejected: self.rejected.clone(),
            };
            let handle = handle.clone();
            // The handshake runs in the connection's task, so a slow client never
            // holds up the accept loop.
            tasks.spawn(async move {
                if let Some(conn) = pending.establish().await {
                    handle(conn).await;
                }
                // The slot is free once the handler is done, however it used `conn`.
                drop(slot);
            });
        }
        drop(self.listener);
        while tasks.join_next().await.is_some() {}
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

enum RawStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An accepted connection before its TLS handshake.
struct Pending {
    raw: RawStream,
    peer: String,
    setup: Arc<DownstreamSetup>,
    prefix: Arc<str>,
    rejected: Arc<AtomicU64>,
}

impl Pending {
    /// Completes the TLS handshake within `net.accept_timeout`; a failure is logged,
    /// counted, and closes the connection.
    async fn establish(self) -> Option<Conn> {
        let Pending {
            raw,
            peer,
            setup,
            prefix,
            rejected,
        } = self;
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
                            &prefix,
                            &rejected,
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
                            reject(&prefix, &rejected, &peer, &why);
                        } else {
                            metrics::add(&rejected, 1);
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
            prefix,
            rejected,
        })
    }
}

/// Logs why a client is turned away and counts it.
fn reject(prefix: &str, rejected: &AtomicU64, peer: &str, why: &str) {
    metrics::add(rejected, 1);
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
            tls: None,
            max_connections,
        }
    }

    fn bind(s: DownstreamSetup) -> io::Result<Downstream> {
        Downstream::bind(s, Arc::from("[test]"), Arc::default())
    }

    #[tokio::test]
    async fn share_port_lets_two_listeners_bind_one_port() {
        let first = bind(setup(0, true, 4)).unwrap();
        let port = first.local_port().unwrap();
        assert!(bind(setup(port, true, 4)).is_ok());
        let e = bind(setup(port, false, 4)).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    /// At the cap a new client waits in the backlog and is served once a slot frees.
    #[tokio::test]
    async fn the_connection_cap_holds_new_clients_until_a_slot_frees() {
        let server = bind(setup(0, false, 1)).unwrap();
        let port = server.local_port().unwrap();
        let (trigger, shutdown) = crate::pipeline::shutdown::channel();
        let task = tokio::spawn(server.serve(shutdown, |mut conn: Conn| async move {
            // Echo one byte, then hold the connection until the client closes it.
            let mut b = [0u8; 1];
            while let Ok(1) = conn.stream.read(&mut b).await {
                let _ = conn.stream.write_all(&b).await;
            }
        }));
        let mut a = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        a.write_all(b"a").await.unwrap();
        let mut b1 = [0u8; 1];
        a.read_exact(&mut b1).await.unwrap();
        let mut b = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        b.write_all(b"b").await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), b.read_exact(&mut b1)).await;
        assert!(waited.is_err(), "served beyond the cap: {waited:?}");
        drop(a);
        b.read_exact(&mut b1).await.unwrap();
        assert_eq!(&b1, b"b");
        trigger.trigger();
        drop(b);
        task.await.unwrap();
    }
}
