//! Fluent Bit's monitoring HTTP API (`http_server on`): `/`, `/api/v1/uptime`,
//! `/api/v1/metrics` (JSON), `/api/v1/metrics/prometheus`, `/api/v2/metrics/prometheus`,
//! and with `health_check on`, `/api/v1/health` and `/api/v2/health`. Served by hyper on
//! its own tasks; it only reads atomic counters, so it never blocks the pipeline.
//! Fluent Bit: src/http_server/api/v1/*.c, src/http_server/api/v2/*.c

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::app::VERSION;
use crate::pipeline::metrics::{get, Registry};

/// What the endpoints read.
pub struct Monitor {
    /// The running pipeline's metrics; replaced on a hot reload.
    registry: Mutex<Arc<Registry>>,
    /// Asks the supervisor to reload (`hot_reload on`), for `/api/v2/reload`.
    reload: Option<Reload>,
    /// The server's accept/eviction counters.
    server: Arc<ServerCounters>,
    /// `agent_http_refused_reloads_total`: reload requests without the right to reload.
    reloads_refused: std::sync::atomic::AtomicU64,
    reloads: std::sync::atomic::AtomicU64,
    /// (hc_errors_count, hc_retry_failure_count, hc_period seconds).
    health: Option<(u64, u64, u64)>,
    hostname: String,
    /// (when, output errors, failed retries), one a second, `hc_period` long.
    history: Mutex<VecDeque<(Instant, u64, u64)>>,
}

/// Binds the server's socket: a taken port is a clear error before anything runs.
pub async fn bind(listen: &str, port: u16) -> Result<TcpListener, String> {
    TcpListener::bind((listen, port)).await.map_err(|e| {
        format!("[http_server] could not start HTTP server on {listen}:{port}: {e} (set another http_port in [SERVICE], or -P)")
    })
}

/// What [`serve`] counts, for the monitoring server's `agent_http_*` metrics.
pub struct ServerCounters {
    /// `agent_http_accept_errors_total`: failed accepts (out of descriptors and the like).
    pub accept_errors: AtomicU64,
    /// `agent_http_refused_connections_total`: connections closed at once at the cap.
    pub refused: AtomicU64,
    /// `agent_http_evicted_connections_total`: idle connections closed for a new one.
    pub evicted: AtomicU64,
    /// When the server was created, for the connections' last-answered times.
    started: Instant,
}

impl Default for ServerCounters {
    fn default() -> Self {
        ServerCounters {
            accept_errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// `POST /api/v2/reload`: where it goes, and who may ask.
pub struct Reload {
    pub tx: tokio::sync::mpsc::Sender<()>,
    /// `hot_reload.token`: required as `Authorization: Bearer TOKEN` from every client;
    /// `None`: only loopback clients may reload.
    pub token: Option<String>,
}

impl Monitor {
    pub fn new(
        registry: Arc<Registry>,
        health: Option<(u64, u64, u64)>,
        reload: Option<Reload>,
    ) -> Arc<Monitor> {
        Arc::new(Monitor {
            registry: Mutex::new(registry),
            reload,
            server: Arc::new(ServerCounters::default()),
            reloads_refused: Default::default(),
            reloads: Default::default(),
            health,
            hostname: crate::config::parser::hostname().unwrap_or_default(),
            history: Mutex::new(VecDeque::new()),
        })
    }

    /// A hot reload replaced the pipeline: serve its metrics from now on.
    pub fn reloaded(&self, registry: Arc<Registry>) {
        *self.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Health counts restart with the new pipeline's counters.
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn registry(&self) -> Arc<Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn totals(&self) -> (u64, u64) {
        self.registry()
            .outputs
            .iter()
            .fold((0, 0), |(e, r), (_, m)| {
                (e + get(&m.errors), r + get(&m.retries_failed))
            })
    }

    fn sample(&self, now: Instant) {
        let Some((_, _, period)) = self.health else {
            return;
        };
        let (e, r) = self.totals();
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.push_back((now, e, r));
        while h.len() > 1 && now.duration_since(h[1].0) >= Duration::from_secs(period) {
            h.pop_front();
        }
    }

    /// (healthy, errors in the period, failed retries in the period).
    fn health(&self) -> (bool, u64, u64) {
        let Some((max_errors, max_retries, _)) = self.health else {
            return (true, 0, 0);
        };
        let (e, r) = self.totals();
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let (e0, r0) = h.front().map(|x| (x.1, x.2)).unwrap_or((0, 0));
        let (de, dr) = (e - e0.min(e), r - r0.min(r));
        (de <= max_errors && dr <= max_retries, de, dr)
    }

    fn uptime(&self) -> u64 {
        self.registry()
            .start
            .elapsed()
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// Serves until the process exits (health stays readable during a graceful shutdown);
/// samples health every second.
pub fn spawn(listener: TcpListener, monitor: Arc<Monitor>) {
    if let Ok(addr) = listener.local_addr() {
        crate::info!(
            "[http_server] listen iface={} tcp_port={}",
            addr.ip(),
            addr.port()
        );
    }
    let m = monitor.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            m.sample(Instant::now());
        }
    });
    let counters = monitor.server.clone();
    serve(listener, "http_server", counters, move |req, loopback| {
        handle(&monitor, req, loopback)
    });
}

/// Serves HTTP/1 on `listener` with `handle(request, from_loopback)` until the returned
/// task is aborted: at most [`MAX_CONNECTIONS`] at once (at the cap the idlest one is
/// closed for the new one), a connection that sends no request head within
/// [`HEADER_TIMEOUT`] is closed, and failed accepts back off; all counted in `counters`.
/// Shared by the monitoring server and the prometheus_exporter output; `who` prefixes
/// logs.
pub fn serve<F>(
    listener: TcpListener,
    who: &'static str,
    counters: Arc<ServerCounters>,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(&Request<hyper::body::Incoming>, bool) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let open = Open::default();
        let mut backoff = crate::net::downstream::ACCEPT_BACKOFF_MIN;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => {
                    backoff = crate::net::downstream::ACCEPT_BACKOFF_MIN;
                    a
                }
                Err(e) => {
                    // Out of descriptors: back off (and take one from the idlest
                    // client of a server input) instead of spinning or giving up.
                    let n = counters.accept_errors.fetch_add(1, Relaxed) + 1;
                    let (freed, wait) = crate::net::downstream::accept_backoff(&e, &mut backoff);
                    if n.is_power_of_two() {
                        crate::warn!(
                            "[{who}] accept failed: {e} ({n} failures so far){}",
                            if freed {
                                "; closed the idlest input connection to free a descriptor"
                            } else {
                                ""
                            }
                        );
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            // Full: the connection that was answered longest ago (or never) makes room,
            // so idle and half-sent clients can neither hold unbounded descriptors nor
            // keep a good client out; a new one is refused only if none goes in time.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    if let Some(victim) = open.idlest() {
                        victim.notify_one();
                        counters.evicted.fetch_add(1, Relaxed);
                    }
                    tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
            };
            let Some(slot) = slot else {
                let refused = counters.refused.fetch_add(1, Relaxed) + 1;
                if refused.is_power_of_two() {
                    crate::warn!(
                        "[{who}] {refused} connections refused: {MAX_CONNECTIONS} are open"
                    );
                }
                continue;
            };
            let h = handle.clone();
            let counters = counters.clone();
            let (entry, last, evict) = open.add();
            tokio::spawn(async move {
                let loopback = peer.ip().is_loopback()
                    || matches!(peer.ip(), std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    last.store(counters.started.elapsed().as_millis() as u64, Relaxed);
                    async move { Ok::<_, Infallible>(h(&req, loopback)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(io, svc);
                tokio::select! {
                    _ = conn => {}
                    _ = evict.notified() => {}
                }
                drop(entry);
                drop(slot);
            });
        }
    })
}

/// The monitoring server's open connections: when each was last answered (ms since the
/// server started; its open time until then), and how to ask it to close.
#[derive(Default)]
struct Open(Arc<Mutex<(u64, HashMap<u64, OpenConn>)>>);

type OpenConn = (Arc<std::sync::atomic::AtomicU64>, Arc<tokio::sync::Notify>);

/// A connection's place in [`Open`]; leaves it when dropped.
struct OpenEntry(Arc<Mutex<(u64, HashMap<u64, OpenConn>)>>, u64);

impl Drop for OpenEntry {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .remove(&self.1);
    }
}

impl Open {
    fn add(
        &self,
    ) -> (
        OpenEntry,
        Arc<std::sync::atomic::AtomicU64>,
        Arc<tokio::sync::Notify>,
    ) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let id = g.0;
        // Opened now: ordered after every connection answered before.
        let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let evict = Arc::new(tokio::sync::Notify::new());
        g.1.insert(id, (last.clone(), evict.clone()));
        (OpenEntry(self.0.clone(), id), last, evict)
    }

    /// The connection answered longest ago, oldest first among those never answered.
    fn idlest(&self) -> Option<Arc<tokio::sync::Notify>> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter()
            .min_by_key(|(id, (last, _))| (last.load(Relaxed), **id))
            .map(|(_, (_, evict))| evict.clone())
    }
}

/// Most connections the monitoring server keeps open at once.
pub const MAX_CONNECTIONS: usize = 256;

/// A connection must send a whole request head within this long of opening, and of
/// its previous response (keepalive): idle and half-sent requests are closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub fn respond(
    status: StatusCode,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status).header("server", "agent");
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Full::new(body.into()))
        .expect("static headers are valid")
}

fn handle<B>(m: &Monitor, req: &Request<B>, loopback: bool) -> Response<Full<Bytes>> {
    let json = Some("application/json");
    if req.uri().path() == "/api/v2/reload" {
        return reload(m, req, loopback);
    }
    if req.method() != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, None, String::new());
    }
    match req.uri().path() {
        "/" => respond(StatusCode::OK, json, serde_json::json!({"fluent-bit": {"version": VERSION, "edition": "agent", "flags": []}}).to_string()),
        "/api/v1/uptime" => respond(StatusCode::OK, json, uptime_json(m.uptime()).to_string()),
        "/api/v1/metrics" => respond(StatusCode::OK, json, metrics_json(&m.registry()).to_string()),
        "/api/v1/storage" if m.registry().storage_metrics == Some(true) => {
            respond(StatusCode::OK, json, storage_json(&m.registry()).to_string())
        }
        "/api/v1/metrics/prometheus" => respond(StatusCode::OK, Some("text/plain; version=0.0.4"), prometheus(m, true)),
        "/api/v2/metrics/prometheus" => respond(StatusCode::OK, Some("text/plain; version=0.0.4"), prometheus(m, false)),
        "/api/v1/health" if m.health.is_some() => {
            let (ok, _, _) = m.health();
            if ok {
                respond(StatusCode::OK, None, "ok\n")
            } else {
                respond(StatusCode::INTERNAL_SERVER_ERROR, None, "error\n")
            }
        }
        "/api/v2/health" if m.health.is_some() => {
            let (ok, e, r) = m.health();
            let (le, lr, lp) = m.health.unwrap_or_default();
            let body = serde_json::json!({"status": if ok {"ok"} else {"error"}, "errors": e, "retries_failed": r, "error_limit": le, "retry_failure_limit": lr, "period_limit": lp});
            respond(if ok { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR }, json, body.to_string())
        }
        _ => respond(StatusCode::NOT_FOUND, None, String::new()),
    }
}

/// Whether a reload request may reload: with `hot_reload.token`, it must carry
/// `Authorization: Bearer TOKEN` (compared in constant time); without, it must come
/// from loopback. `Err(why)` for the refusal.
fn reload_allowed<B>(r: &Reload, req: &Request<B>, loopback: bool) -> Result<(), &'static str> {
    match &r.token {
        Some(token) => {
            let given = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let same = given.len() == token.len()
                && given
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if same {
                Ok(())
            } else {
                Err("a valid 'Authorization: Bearer' token (hot_reload.token) is required")
            }
        }
        None if loopback => Ok(()),
        None => Err(
            "reloads are accepted from loopback only (set hot_reload.token to allow other clients)",
        ),
    }
}

/// `/api/v2/reload`: GET the reload count, POST/PUT to reload (`hot_reload on`), from
/// loopback or with the token.
fn reload<B>(m: &Monitor, req: &Request<B>, loopback: bool) -> Response<Full<Bytes>> {
    let json = Some("application/json");
    match *req.method() {
        Method::GET => respond(StatusCode::OK, json, serde_json::json!({"hot_reload_count": m.reloads.load(std::sync::atomic::Ordering::Relaxed)}).to_string()),
        Method::POST | Method::PUT => match &m.reload {
            Some(r) => match reload_allowed(r, req, loopback) {
                Err(why) => {
                    let n = m.reloads_refused.fetch_add(1, Relaxed) + 1;
                    if n.is_power_of_two() {
                        crate::warn!("[http_server] POST /api/v2/reload refused: {why} ({n} refused so far)");
                    }
                    respond(StatusCode::FORBIDDEN, json, serde_json::json!({"reload": why, "status": -3}).to_string())
                }
                Ok(()) if r.tx.try_send(()).is_ok() => respond(StatusCode::OK, json, serde_json::json!({"reload": "done", "status": 0}).to_string()),
                Ok(()) => respond(StatusCode::SERVICE_UNAVAILABLE, json, serde_json::json!({"reload": "in progress", "status": -2}).to_string()),
            },
            None => respond(StatusCode::BAD_REQUEST, json, serde_json::json!({"reload": "not enabled", "status": -1}).to_string()),
        },
        _ => respond(StatusCode::METHOD_NOT_ALLOWED, None, String::new()),
    }
}

/// `Fluent Bit has been running:  D day(s), H hour(s), M minute(s) and S second(s)`.
pub fn uptime_json(secs: u64) -> serde_json::Value {
    let unit = |n: u64, w: &str| format!("{n} {w}{}", if n > 1 { "s" } else { "" });
    let hr = format!(
        "Fluent Bit has been running:  {}, {}, {} and {}",
        unit(secs / 86400, "day"),
        unit(secs % 86400 / 3600, "hour"),
        unit(secs % 3600 / 60, "minute"),
        unit(secs % 60, "second")
    );
    serde_json::json!({"uptime_sec": secs, "uptime_hr": hr})
}

fn metrics_json(r: &Registry) -> serde_json::Value {
    let mut input = serde_json::Map::new();
    for (name, m) in &r.inputs {
        input.insert(
            name.to_string(),
            serde_json::json!({"records": get(&m.records), "bytes": get(&m.bytes)}),
        );
    }
    let mut filter = serde_json::Map::new();
    let plugin = r.plugins.all();
    for (name, m) in &r.filters {
        let mut f = serde_json::json!({"drop_records": get(&m.drop_records), "add_records": get(&m.add_records), "records": get(&m.records)});
        // rewrite_tag's own counter, which Fluent Bit lists with the filter's.
        if let Some(e) = plugin
            .iter()
            .find(|p| p.metric == "fluentbit_filter_emit_records_total" && p.instance == *name)
        {
            f["emit_records"] = get(&e.value).into();
        }
        filter.insert(name.to_string(), f);
    }
    let mut output = serde_json::Map::new();
    for (name, m) in &r.outputs {
        output.insert(
            name.to_string(),
            serde_json::json!({"proc_records": get(&m.proc_records), "proc_bytes": get(&m.proc_bytes), "errors": get(&m.errors), "retries": get(&m.retries), "retries_failed": get(&m.retries_failed), "dropped_records": get(&m.dropped_records), "retried_records": get(&m.retried_records)}),
        );
    }
    serde_json::json!({"input": input, "filter": filter, "output": output})
}

/// Prometheus text format 0.0.4; v1 adds Fluent Bit's millisecond timestamps. The
/// fluentbit_metrics input sends the same set (`Registry::metric_set`).
/// `/api/v1/storage` (`storage.metrics on`): Fluent Bit's layout, sizes in its
/// human-readable form.
fn storage_json(r: &Registry) -> serde_json::Value {
    let (total, mem, fs) = r.storage_chunks();
    let inputs: serde_json::Map<String, serde_json::Value> = r
        .inputs
        .iter()
        .map(|(name, m)| {
            let s = m.storage();
            (
                name.to_string(),
                serde_json::json!({
                    "status": {"overlimit": s.overlimit, "mem_size": human_size(s.mem_size), "mem_limit": human_size(s.mem_limit)},
                    "chunks": {"total": s.chunks, "up": s.chunks, "down": 0, "busy": s.chunks, "busy_size": human_size(s.mem_size)},
                }),
            )
        })
        .collect();
    serde_json::json!({
        "storage_layer": {"chunks": {"total_chunks": total, "mem_chunks": mem, "fs_chunks": fs, "fs_chunks_up": fs, "fs_chunks_down": 0}},
        "input_chunks": inputs,
    })
}

/// Fluent Bit's `flb_utils_bytes_to_human_readable_size`: `140b`, `976.6K`, `64.0M`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["b", "K", "M", "G", "T", "P", "E", "Z", "Y"];
    let mut u: u128 = 1024;
    let mut i = 0;
    while i < UNITS.len() - 1 && bytes as u128 / u != 0 {
        u *= 1024;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}b")
    } else {
        format!(
            "{:.1}{}",
            (bytes as f64 / (u / 1024) as f64) as f32,
            UNITS[i]
        )
    }
}

fn prometheus(m: &Monitor, timestamps: bool) -> String {
    let now = SystemTime::now();
    let mut set = m.registry().metric_set(&m.hostname, now);
    let ts = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // The monitoring server's own counters.
    let c = &m.server;
    for (name, help, value) in [
        (
            "agent_http_accept_errors_total",
            "Failed accepts of the monitoring HTTP server (out of file descriptors and the like).",
            &c.accept_errors,
        ),
        (
            "agent_http_refused_connections_total",
            "Connections to the monitoring HTTP server closed at once because it held its maximum.",
            &c.refused,
        ),
        (
            "agent_http_evicted_connections_total",
            "Idle connections to the monitoring HTTP server closed to make room for a new one.",
            &c.evicted,
        ),
        (
            "agent_http_refused_reloads_total",
            "POST/PUT /api/v2/reload refused: not from loopback, or without hot_reload.token.",
            &m.reloads_refused,
        ),
    ] {
        let mut f = crate::event::metrics::Family::new(
            name,
            help,
            crate::event::metrics::MetricType::Counter,
            &[],
        );
        f.push(&[], ts, value.load(Relaxed) as f64);
        set.families.push(f);
    }
    let mut out = Vec::with_capacity(4096);
    crate::event::format::write_prometheus(
        &mut out,
        &set,
        crate::event::format::PromOptions {
            timestamps,
            extra_labels: &[],
            endpoint: true,
        },
    );
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_fluent_bits() {
        assert_eq!(human_size(0), "0b");
        assert_eq!(human_size(140), "140b");
        assert_eq!(human_size(1023), "1023b");
        assert_eq!(human_size(1024), "1.0K");
        // Captured from Fluent Bit 5.1.1: mem_buf_limit 1M.
        assert_eq!(human_size(1_000_000), "976.6K");
        assert_eq!(human_size(64 << 20), "64.0M");
        assert_eq!(human_size(u64::MAX), "16.0E");
    }

    #[test]
    fn uptime_text_matches_fluent_bit() {
        assert_eq!(
            uptime_json(3)["uptime_hr"],
            "Fluent Bit has been running:  0 day, 0 hour, 0 minute and 3 seconds"
        );
        assert_eq!(
            uptime_json(90061)["uptime_hr"],
            "Fluent Bit has been running:  1 day, 1 hour, 1 minute and 1 second"
        );
        assert_eq!(
            uptime_json(2 * 86400 + 2 * 3600 + 120)["uptime_hr"],
            "Fluent Bit has been running:  2 days, 2 hours, 2 minutes and 0 second"
        );
    }
}
