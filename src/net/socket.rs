//! Client sockets: options set before connect (TCP_NODELAY, SO_KEEPALIVE with
//! TCP_KEEPIDLE/INTVL/CNT, bind to `net.source_address`), then an async connect.
//! Fluent Bit: src/flb_network.c (`flb_net_tcp_connect`, `flb_net_socket_tcp_keepalive`,
//! `flb_net_bind_address`).

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream};

use super::props::{NetSetup, Prefer};

/// Orders resolved addresses by the `net.dns.prefer_*` flags, keeping the resolver's order
/// within a family (Fluent Bit sorts its addrinfo list the same way).
pub fn order_addresses(addrs: &mut [SocketAddr], prefer: Prefer) {
    match prefer {
        Prefer::None => {}
        Prefer::V4 => addrs.sort_by_key(|a| !a.is_ipv4()),
        Prefer::V6 => addrs.sort_by_key(|a| !a.is_ipv6()),
    }
}

/// Whether `source` can be used to reach `dest` (same address family).
pub fn source_fits(source: Option<IpAddr>, dest: &SocketAddr) -> bool {
    source.is_none_or(|s| s.is_ipv4() == dest.is_ipv4())
}

/// Opens a TCP connection to `addr` with the options of `net`. The caller bounds the
/// time it takes (`net.connect_timeout`).
pub async fn connect(addr: SocketAddr, net: &NetSetup) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    if let Some(ka) = net.tcp_keepalive {
        let mut opts = socket2::TcpKeepalive::new();
        if let Some(t) = ka.time {
            opts = opts.with_time(t);
        }
        if let Some(i) = ka.interval {
            opts = opts.with_interval(i);
        }
        if let Some(p) = ka.probes {
            opts = opts.with_retries(p);
        }
        // Sets SO_KEEPALIVE, then only the timers that were given.
        SockRef::from(&socket).set_tcp_keepalive(&opts)?;
    }
    if let Some(source) = net.source_address {
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind to source address {source}: {e}"),
            )
        })?;
    }
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::net::props::TcpKeepalive;

    #[test]
    fn prefer_flags_reorder_families_stably() {
        let v4a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let v4b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let mut a = [v6, v4a, v4b];
        order_addresses(&mut a, Prefer::None);
        assert_eq!(a, [v6, v4a, v4b]);
        order_addresses(&mut a, Prefer::V4);
        assert_eq!(a, [v4a, v4b, v6]);
        order_addresses(&mut a, Prefer::V6);
        assert_eq!(a, [v6, v4a, v4b]);
    }

    #[test]
    fn source_address_family_must_match() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert!(source_fits(None, &v6));
        assert!(source_fits(Some("127.0.0.2".parse().unwrap()), &v4));
        assert!(!source_fits(Some("127.0.0.2".parse().unwrap()), &v6));
    }

    #[tokio::test]
    async fn options_are_set_on_the_connected_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let net = NetSetup {
            keepalive: true,
            keepalive_idle_timeout: Duration::from_secs(30),
            keepalive_max_recycle: None,
            max_connections: None,
            tcp_keepalive: Some(TcpKeepalive {
                time: Some(Duration::from_secs(7)),
                interval: Some(Duration::from_secs(3)),
                probes: Some(4),
            }),
            io_timeout: None,
            connect_timeout: Duration::from_secs(1),
            connect_timeout_log_error: true,
            source_address: Some("127.0.0.3".parse().unwrap()),
            prefer: Prefer::None,
            proxy_env_ignore: false,
        };
        let stream = connect(addr, &net).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), "127.0.0.3".parse::<IpAddr>().unwrap());
        let s = SockRef::from(&stream);
        assert!(s.tcp_nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 4);
    }
}
