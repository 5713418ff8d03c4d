//! Networking shared by every plugin that connects (and, later, by server inputs):
//! the `net.*` and `tls.*` property tables, socket options, TLS, and the per-output
//! connection pool.
//! Fluent Bit: src/flb_upstream.c, src/flb_downstream.c, src/flb_network.c, src/tls/.
//!
//! - [`props`]: `NET_PROPS` (upstream), `DOWNSTREAM_NET_PROPS`, and [`NetSetup`].
//! - [`tls`]: `TLS_PROPS` and the rustls client configuration.
//! - [`socket`]: socket options and connect.
//! - [`pool`]: the pool's rules, sans-IO; [`upstream`]: the pool driven by tokio.

pub mod pool;
pub mod props;
pub mod socket;
pub mod tls;
pub mod upstream;

pub use props::{NetSetup, DOWNSTREAM_NET_PROPS, NET_PROPS};
pub use tls::{TlsSetup, TLS_PROPS};
pub use upstream::{NetError, PooledConn, Upstream};
