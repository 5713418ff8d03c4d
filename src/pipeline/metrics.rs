//! Per-instance counters (Fluent Bit's `fluentbit_input_records_total{name="random.0"}`
//! and friends), shared by the tasks that update them and the shutdown report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct InputMetrics {
    pub records: AtomicU64,
    /// Bytes (estimated) of records not yet finished by outputs; kept with mem_buf_limit.
    pub buffered_bytes: AtomicU64,
    /// 1 while paused by mem_buf_limit.
    pub paused: AtomicU64,
}

#[derive(Debug, Default)]
pub struct FilterMetrics {
    pub records: AtomicU64,
    pub drop_records: AtomicU64,
    pub add_records: AtomicU64,
}

#[derive(Debug, Default)]
pub struct OutputMetrics {
    /// Records routed to this output (accepted into its queue).
    pub routed_records: AtomicU64,
    /// Records delivered (`proc_records`).
    pub proc_records: AtomicU64,
    /// Records given up on: error, retries exhausted, or the output stopped.
    pub dropped_records: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
    pub retries_failed: AtomicU64,
    pub retried_records: AtomicU64,
    /// Records the output's own rate limit (`limit.max_records_per_second`) dropped.
    pub limit_dropped_records: AtomicU64,
}

impl OutputMetrics {
    /// Records routed here that are neither delivered nor dropped yet.
    pub fn pending_records(&self) -> u64 {
        let routed = self.routed_records.load(Relaxed);
        routed.saturating_sub(self.proc_records.load(Relaxed) + self.dropped_records.load(Relaxed))
    }
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

pub fn get(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}

/// Counter (only goes up) or gauge (a current value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// A plugin's own metric (`agent_conntrack_events_total{name="conntrack.0"}`).
#[derive(Clone, Debug)]
pub struct PluginMetric {
    pub metric: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub instance: Arc<str>,
    pub value: Arc<AtomicU64>,
}

/// Where plugins register their metrics at build time; read by the HTTP server.
#[derive(Debug, Default)]
pub struct PluginMetrics(std::sync::Mutex<Vec<PluginMetric>>);

impl PluginMetrics {
    fn register(
        &self,
        metric: &'static str,
        help: &'static str,
        kind: MetricKind,
        instance: &str,
    ) -> Arc<AtomicU64> {
        let value = Arc::new(AtomicU64::new(0));
        let m = PluginMetric {
            metric,
            help,
            kind,
            instance: Arc::from(instance),
            value: value.clone(),
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(m);
        value
    }

    pub fn counter(
        &self,
        metric: &'static str,
        help: &'static str,
        instance: &str,
    ) -> Arc<AtomicU64> {
        self.register(metric, help, MetricKind::Counter, instance)
    }

    pub fn gauge(
        &self,
        metric: &'static str,
        help: &'static str,
        instance: &str,
    ) -> Arc<AtomicU64> {
        self.register(metric, help, MetricKind::Gauge, instance)
    }

    pub fn all(&self) -> Vec<PluginMetric> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Every instance's metrics, by name, for the monitoring endpoints.
#[derive(Debug)]
pub struct Registry {
    pub start: std::time::SystemTime,
    pub inputs: Vec<(Arc<str>, Arc<InputMetrics>)>,
    pub filters: Vec<(Arc<str>, Arc<FilterMetrics>)>,
    pub outputs: Vec<(Arc<str>, Arc<OutputMetrics>)>,
    pub plugins: Arc<PluginMetrics>,
}

pub fn set(c: &AtomicU64, n: u64) {
    c.store(n, Relaxed);
}
