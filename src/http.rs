//! Fluent Bit's monitoring HTTP API (`http_server on`): `/`, `/api/v1/uptime`,
//! `/api/v1/metrics` (JSON), `/api/v1/metrics/prometheus`, `/api/v2/metrics/prometheus`,
//! and with `health_check on`, `/api/v1/health` and `/api/v2/health`. Served by hyper on
//! its own tasks; it only reads atomic counters, so it never blocks the pipeline.
//! Fluent Bit: src/http_server/api/v1/*.c, src/http_server/api/v2/*.c

use std::collections::VecDeque;
use std::convert::Infallible;
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
    reload: Option<tokio::sync::mpsc::Sender<()>>,
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

impl Monitor {
    pub fn new(
        registry: Arc<Registry>,
        health: Option<(u64, u64, u64)>,
        reload: Option<tokio::sync::mpsc::Sender<()>>,
    ) -> Arc<Monitor> {
        Arc::new(Monitor {
            registry: Mutex::new(registry),
            reload,
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
    serve(listener, "http_server", move |req| handle(&monitor, req));
}

/// Serves HTTP/1 on `listener` with `handle` until the returned task is aborted: at
/// most [`MAX_CONNECTIONS`] at once (more are closed at once, counted in the log), and
/// a connection that sends no request head within [`HEADER_TIMEOUT`] is closed. Shared
/// by the monitoring server and the prometheus_exporter output; `who` prefixes logs.
pub fn serve<F>(listener: TcpListener, who: &'static str, handle: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut refused = 0u64;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    crate::warn!("[{who}] accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Full: the new connection is closed at once (the others free their slot
            // within HEADER_TIMEOUT when they send nothing), so idle clients can hold
            // neither unbounded descriptors nor the server for long.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused += 1;
                if refused.is_power_of_two() {
                    crate::warn!(
                        "[{who}] {refused} connections refused: {MAX_CONNECTIONS} are open"
                    );
                }
                continue;
            };
            let h = handle.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(&req)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(io, svc)
                    .await;
                drop(slot);
            });
        }
    })
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

fn handle<B>(m: &Monitor, req: &Request<B>) -> Response<Full<Bytes>> {
    let json = Some("application/json");
    if req.uri().path() == "/api/v2/reload" {
        return reload(m, req.method());
    }
    if req.method() != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, None, String::new());
    }
    match req.uri().path() {
        "/" => respond(StatusCode::OK, json, serde_json::json!({"fluent-bit": {"version": VERSION, "edition": "agent", "flags": []}}).to_string()),
        "/api/v1/uptime" => respond(StatusCode::OK, json, uptime_json(m.uptime()).to_string()),
        "/api/v1/metrics" => respond(StatusCode::OK, json, metrics_json(&m.registry()).to_string()),
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

/// `/api/v2/reload`: GET the reload count, POST/PUT to reload (`hot_reload on`).
fn reload(m: &Monitor, method: &Method) -> Response<Full<Bytes>> {
    let json = Some("application/json");
    match *method {
        Method::GET => respond(StatusCode::OK, json, serde_json::json!({"hot_reload_count": m.reloads.load(std::sync::atomic::Ordering::Relaxed)}).to_string()),
        Method::POST | Method::PUT => match &m.reload {
            Some(tx) if tx.try_send(()).is_ok() => respond(StatusCode::OK, json, serde_json::json!({"reload": "done", "status": 0}).to_string()),
            Some(_) => respond(StatusCode::SERVICE_UNAVAILABLE, json, serde_json::json!({"reload": "in progress", "status": -2}).to_string()),
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
            serde_json::json!({"records": get(&m.records)}),
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
            serde_json::json!({"proc_records": get(&m.proc_records), "errors": get(&m.errors), "retries": get(&m.retries), "retries_failed": get(&m.retries_failed), "dropped_records": get(&m.dropped_records), "retried_records": get(&m.retried_records)}),
        );
    }
    serde_json::json!({"input": input, "filter": filter, "output": output})
}

/// Prometheus text format 0.0.4; v1 adds Fluent Bit's millisecond timestamps. The
/// fluentbit_metrics input sends the same set (`Registry::metric_set`).
fn prometheus(m: &Monitor, timestamps: bool) -> String {
    let set = m.registry().metric_set(&m.hostname, SystemTime::now());
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
