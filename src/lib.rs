//! `agent`: a Fluent Bit-compatible telemetry agent.
//!
//! Layout (a record's path through the code):
//! - [`cli`] parses Fluent Bit's command line; [`config`] loads the classic format
//!   (`config::parser`) into one model and validates it against each plugin's property
//!   table (`config::props`).
//! - [`pipeline`] builds the plugins and runs them: inputs send record batches to the
//!   engine (`pipeline::engine`), which runs filters, groups records into chunks per tag and
//!   routes them (`pipeline::router`) to output workers (`pipeline::output`) that own
//!   retries. Metric sets (`event::metrics`) take the same path past the filters, through
//!   the `metrics:` processors (`plugins::processors`) of their input and outputs.
//! - [`plugins`] holds every plugin by its Fluent Bit name; [`event`] the record type and
//!   its byte-exact formats; [`log`] Fluent Bit's log line format.
//! - [`net`] is what networked plugins share: the `net.*`/`tls.*` tables, socket options,
//!   rustls, the per-output connection pool (`net::upstream`) and the listener of server
//!   inputs (`net::downstream`); [`forward`] the Fluentd Forward protocol, sans-IO.
//! - [`sockdiag`] lists local sockets (sock_diag, with `tcp_info`) and their processes
//!   (`/proc`), for `flow_aggregate`'s process and TCP fields; it knows no plugin.

pub mod app;
pub mod aws;
pub mod cli;
pub mod config;
pub mod event;
pub mod forward;
pub mod http;
pub mod http_client;
pub mod kafka;
pub mod kubernetes;
pub mod log;
pub mod net;
pub mod parser;
pub mod pipeline;
pub mod plugins;
pub mod runtime;
pub mod sockdiag;
