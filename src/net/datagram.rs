//! The listening side of datagram inputs (`udp`, `syslog` in `udp`/`unix_udp` mode): a
//! UDP or Unix datagram socket bound with `net.share_port` and `receive_buffer_size`,
//! received one datagram at a time with the sender's address.
//! Fluent Bit: src/flb_downstream.c (`FLB_TRANSPORT_UDP`, `FLB_TRANSPORT_UNIX_DGRAM`).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use socket2::{Domain, Socket, Type};
use tokio::net::{UdpSocket, UnixDatagram};

/// Where a datagram input listens.
#[derive(Clone, Debug)]
pub struct DatagramSetup {
    pub listen: String,
    pub port: u16,
    /// A Unix datagram socket at this path instead of UDP.
    pub unix_path: Option<PathBuf>,
    /// Mode of the socket file.
    pub unix_perm: Option<u32>,
    /// SO_RCVBUF, when set (the kernel doubles it and caps it at `rmem_max`).
    pub receive_buffer_size: Option<usize>,
    /// SO_REUSEPORT.
    pub share_port: bool,
}

impl DatagramSetup {
    /// `host:port` or the socket path, for logs.
    pub fn address(&self) -> String {
        match &self.unix_path {
            Some(p) => p.display().to_string(),
            None if self.listen.contains(':') => format!("[{}]:{}", self.listen, self.port),
            None => format!("{}:{}", self.listen, self.port),
        }
    }
}

/// A bound datagram socket; a Unix socket's file is removed when it is dropped.
pub enum DatagramSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram, PathBuf),
}

impl Drop for DatagramSocket {
    fn drop(&mut self) {
        if let DatagramSocket::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl DatagramSocket {
    /// Binds now, so that an address in use stops the agent at start with the reason.
    pub fn bind(setup: &DatagramSetup) -> io::Result<DatagramSocket> {
        match &setup.unix_path {
            Some(path) => {
                // A socket file left by a previous run would make bind fail.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path)?;
                }
                let s = UnixDatagram::bind(path)?;
                if let Some(n) = setup.receive_buffer_size {
                    socket2::SockRef::from(&s).set_recv_buffer_size(n)?;
                }
                if let Some(mode) = setup.unix_perm {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                }
                Ok(DatagramSocket::Unix(s, path.clone()))
            }
            None => {
                let addr = super::downstream::listen_addr(&setup.listen, setup.port)?;
                let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
                socket.set_reuse_address(true)?;
                if setup.share_port {
                    socket.set_reuse_port(true)?;
                }
                if let Some(n) = setup.receive_buffer_size {
                    socket.set_recv_buffer_size(n)?;
                }
                socket.set_nonblocking(true)?;
                socket.bind(&addr.into())?;
                UdpSocket::from_std(socket.into()).map(DatagramSocket::Udp)
            }
        }
    }

    /// The bound address, for the log line (the chosen port with `port 0`).
    pub fn local_address(&self) -> String {
        match self {
            DatagramSocket::Udp(s) => s.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            DatagramSocket::Unix(_, p) => p.display().to_string(),
        }
    }

    /// Receives one datagram into `buf`: its length (a datagram longer than `buf` is cut
    /// to it: give one byte more than the largest accepted to tell), and the sender as
    /// Fluent Bit names it (`udp://IP:PORT`, `unix://PATH`).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Peer)> {
        match self {
            DatagramSocket::Udp(s) => {
                let (n, a) = s.recv_from(buf).await?;
                Ok((n, Peer::Udp(a)))
            }
            DatagramSocket::Unix(s, path) => {
                let (n, a) = s.recv_from(buf).await?;
                let from = a
                    .as_pathname()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| path.clone());
                Ok((n, Peer::Unix(from)))
            }
        }
    }
}

/// The sender of a datagram.
#[derive(Clone, Debug, PartialEq)]
pub enum Peer {
    Udp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Peer {
    /// Fluent Bit's user-friendly remote address: `udp://127.0.0.1:40312`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Udp(a) => write!(f, "udp://{}:{}", a.ip(), a.port()),
            Peer::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}
