//! Networking shared by every plugin that connects and by server inputs: the `net.*`
//! and `tls.*` property tables, socket options, TLS, the per-output connection pool,
//! and the listener of server inputs.
//! Fluent Bit: src/flb_upstream.c, src/flb_downstream.c, src/flb_network.c, src/tls/.
//!
//! - [`props`]: `NET_PROPS` (upstream), `DOWNSTREAM_NET_PROPS`, and [`NetSetup`].
//! - [`tls`]: `TLS_PROPS` and the rustls client configuration.
//! - [`socket`]: socket options and connect.
//! - [`pool`]: the pool's rules, sans-IO; [`upstream`]: the pool driven by tokio.
//! - [`datagram`]: UDP and Unix datagram sockets of datagram inputs.
//! - [`netlink`]: entering a network namespace, receive timeouts of netlink sockets.
//! - [`downstream`]: listen, accept (TLS handshake included), connection cap, timeouts.

pub mod datagram;
pub mod downstream;
pub mod netlink;
pub mod pool;
pub mod props;
pub mod socket;
pub mod tls;
pub mod upstream;

pub use downstream::{Downstream, DownstreamSetup, ServerStream};
pub use props::{NetSetup, DOWNSTREAM_NET_PROPS, NET_PROPS};
pub use tls::{ServerTls, TlsSetup, DOWNSTREAM_TLS_PROPS, TLS_PROPS};
pub use upstream::{NetError, PooledConn, Upstream};
