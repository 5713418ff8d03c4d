//! What server inputs (`tcp`, `forward`, `syslog`, `udp`, `http`) share on the pipeline
//! side of a listener: their log prefix and connection counters registered with the
//! plugin metrics, and the loop that serves connections until the agent shuts down,
//! each with the input's sender. The sockets, TLS, connection cap and timeouts are
//! [`crate::net::downstream`], which knows no pipeline.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::downstream::{Conn, Counters, Downstream, DownstreamSetup, ListenSpec};
use crate::pipeline::{InputSender, Shutdown};
use crate::plugins::{BuildContext, InputContext, PluginError};

/// A server input's [`ListenSpec`]: its log prefix `[input:PLUGIN:NAME]` and its
/// connection counters, on the monitoring endpoint by instance name.
pub fn listen_spec(
    setup: DownstreamSetup,
    plugin: &str,
    unit: &'static str,
    ctx: &BuildContext,
) -> ListenSpec {
    let m = &ctx.metrics;
    let counters = Counters {
        rejected: m.counter(
            "agent_input_rejected_connections_total",
            "Client connections closed for bad data, size limits, timeouts or failed handshakes.",
            ctx.instance,
        ),
        evicted: m.counter(
            "agent_input_evicted_connections_total",
            "Idle client connections closed to make room for a new client at the connection cap.",
            ctx.instance,
        ),
        accept_errors: m.counter(
            "agent_input_accept_errors_total",
            "Failed accepts (out of file descriptors and the like), each followed by a back-off.",
            ctx.instance,
        ),
    };
    ListenSpec {
        setup,
        prefix: Arc::from(format!("[input:{plugin}:{}]", ctx.instance)),
        unit,
        counters,
    }
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
    let address = spec.setup.address();
    let server = Downstream::bind(spec).map_err(|source| PluginError::Io {
        context: format!("cannot listen on {address}"),
        source,
    })?;
    let (out, shutdown) = (ctx.out, ctx.shutdown.clone());
    let mut stop = ctx.shutdown;
    server
        .serve(async move { stop.wait().await }, move |conn| {
            handle(conn, out.clone(), shutdown.clone())
        })
        .await;
    Ok(())
}

/// `agent_input_dropped_messages_total` of a datagram or request input: messages
/// refused (too large, not JSON, not parsed), each counted and logged at a limited rate.
pub struct Dropped {
    prefix: Arc<str>,
    counter: Arc<AtomicU64>,
    log: std::sync::Mutex<(Option<Instant>, u64)>,
}

/// How often at most a drop is logged; the counter counts every one.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Dropped {
    pub fn new(plugin: &str, ctx: &BuildContext) -> Dropped {
        Dropped {
            prefix: Arc::from(format!("[input:{plugin}:{}]", ctx.instance)),
            counter: ctx.metrics.counter(
                "agent_input_dropped_messages_total",
                "Messages (datagrams, lines, request bodies) refused as too large or malformed.",
                ctx.instance,
            ),
            log: std::sync::Mutex::new((None, 0)),
        }
    }

    #[cfg(test)]
    pub fn for_tests() -> Dropped {
        Dropped {
            prefix: Arc::from("[test]"),
            counter: Arc::default(),
            log: std::sync::Mutex::new((None, 0)),
        }
    }

    /// The input's log prefix, `[input:udp:udp.0]`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Counts one dropped message and logs why, at most once per 10 s (saying how many
    /// were left out since).
    pub fn drop_one(&self, why: impl FnOnce() -> String) {
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if g.0.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            g.1 += 1;
            return;
        }
        let skipped = std::mem::take(&mut g.1);
        g.0 = Some(now);
        drop(g);
        let more = match skipped {
            0 => String::new(),
            n => format!(" (and {n} more in the last {} s)", LOG_EVERY.as_secs()),
        };
        crate::warn!("{} {}{more}", self.prefix, why());
    }
}
