//! Per-instance counters (Fluent Bit's `fluentbit_input_records_total{name="random.0"}`
//! and friends), shared by the tasks that update them and the shutdown report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::metrics::{Family, MetricSet, MetricType};

#[derive(Debug, Default)]
pub struct InputMetrics {
    pub records: AtomicU64,
    /// The records' bytes as Fluent Bit events (`fluentbit_input_bytes_total`).
    pub bytes: AtomicU64,
    /// Bytes (estimated) of records not yet finished by outputs; kept with mem_buf_limit.
    pub buffered_bytes: AtomicU64,
    /// 1 while paused by mem_buf_limit.
    pub paused: AtomicU64,
    /// Batches held against mem_buf_limit (agent's chunks: `fluentbit_input_storage_chunks`).
    pub chunks: AtomicU64,
    /// The input's mem_buf_limit (0: none), for `/api/v1/storage`.
    pub mem_limit: AtomicU64,
    /// 1 with `storage.type filesystem`.
    pub filesystem: AtomicU64,
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
    /// Their bytes as Fluent Bit events (`proc_bytes`).
    pub proc_bytes: AtomicU64,
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
    /// `storage.metrics`: unset, the storage families are in the set; on, also
    /// `/api/v1/storage`; off, neither (as Fluent Bit 5.1.1).
    pub storage_metrics: Option<bool>,
}

pub fn set(c: &AtomicU64, n: u64) {
    c.store(n, Relaxed);
}

/// A metric family read off each instance's counters: (name, help, kind, read).
type Counters<T> = (&'static str, &'static str, MetricKind, fn(&T) -> u64);

impl MetricKind {
    fn metric_type(self) -> MetricType {
        match self {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        }
    }
}

/// Fluent Bit's storage gauges for one input (`/api/v1/storage`, `fluentbit_input_storage_*`).
/// Agent keeps every batch in memory until its outputs are done (filesystem chunk
/// files are a crash copy), so every chunk is "up", none "down", and every chunk is
/// "busy" (queued for or being flushed by an output: no record is appended to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputStorage {
    pub overlimit: bool,
    pub mem_size: u64,
    pub mem_limit: u64,
    pub chunks: u64,
    pub filesystem: bool,
}

impl InputMetrics {
    pub fn storage(&self) -> InputStorage {
        let mem_limit = get(&self.mem_limit);
        let mem_size = get(&self.buffered_bytes);
        InputStorage {
            overlimit: mem_limit > 0 && mem_size >= mem_limit,
            mem_size,
            mem_limit,
            chunks: get(&self.chunks),
            filesystem: get(&self.filesystem) == 1,
        }
    }
}

impl Registry {
    /// The storage layer's chunk counts: (total, memory, filesystem).
    pub fn storage_chunks(&self) -> (u64, u64, u64) {
        self.inputs
            .iter()
            .map(|(_, m)| m.storage())
            .fold((0, 0, 0), |(t, m, f), s| {
                if s.filesystem {
                    (t + s.chunks, m, f + s.chunks)
                } else {
                    (t + s.chunks, m + s.chunks, f)
                }
            })
    }

    fn storage_families(
        &self,
        family: &mut impl FnMut(&str, &str, MetricKind, &[&str], Vec<(Vec<&str>, u64)>),
    ) {
        use MetricKind::Gauge;
        let (total, mem, fs) = self.storage_chunks();
        for (name, help, v) in [
            (
                "fluentbit_storage_chunks",
                "Total number of chunks in the storage layer.",
                total,
            ),
            (
                "fluentbit_storage_mem_chunks",
                "Total number of memory chunks.",
                mem,
            ),
            (
                "fluentbit_storage_fs_chunks",
                "Total number of filesystem chunks.",
                fs,
            ),
            (
                "fluentbit_storage_fs_chunks_up",
                "Total number of filesystem chunks up in memory.",
                fs,
            ),
            (
                "fluentbit_storage_fs_chunks_down",
                "Total number of filesystem chunks down.",
                0,
            ),
        ] {
            family(name, help, Gauge, &[], vec![(vec![], v)]);
        }
        let per: Vec<(&str, InputStorage)> = self
            .inputs
            .iter()
            .map(|(n, m)| (&**n, m.storage()))
            .collect();
        type PerInput = (&'static str, &'static str, fn(&InputStorage) -> u64);
        let gauges: [PerInput; 7] = [
            (
                "fluentbit_input_storage_overlimit",
                "Is the input memory usage overlimit ?.",
                |s| s.overlimit as u64,
            ),
            (
                "fluentbit_input_storage_memory_bytes",
                "Memory bytes used by the chunks.",
                |s| s.mem_size,
            ),
            (
                "fluentbit_input_storage_chunks",
                "Total number of chunks.",
                |s| s.chunks,
            ),
            (
                "fluentbit_input_storage_chunks_up",
                "Total number of chunks up in memory.",
                |s| s.chunks,
            ),
            (
                "fluentbit_input_storage_chunks_down",
                "Total number of chunks down.",
                |_| 0,
            ),
            (
                "fluentbit_input_storage_chunks_busy",
                "Total number of chunks in a busy state.",
                |s| s.chunks,
            ),
            (
                "fluentbit_input_storage_chunks_busy_bytes",
                "Total number of bytes used by chunks in a busy state.",
                |s| s.mem_size,
            ),
        ];
        for (name, help, f) in gauges {
            family(
                name,
                help,
                Gauge,
                &["name"],
                per.iter().map(|(n, s)| (vec![*n], f(s))).collect(),
            );
        }
    }

    /// Every counter of the pipeline as one metric set, in Fluent Bit's names: what the
    /// monitoring endpoint `/api/v1/metrics/prometheus` serves and the
    /// fluentbit_metrics input sends. Samples are stamped `now`.
    pub fn metric_set(&self, hostname: &str, now: SystemTime) -> MetricSet {
        let ts = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let r = self;
        let mut set = MetricSet::default();
        let mut family = |name: &str,
                          help: &str,
                          kind: MetricKind,
                          keys: &[&str],
                          samples: Vec<(Vec<&str>, u64)>| {
            let mut f = Family::new(name, help, kind.metric_type(), keys);
            for (labels, v) in samples {
                f.push(&labels, ts, v as f64);
            }
            set.families.push(f);
        };
        let uptime = now
            .duration_since(r.start)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        use MetricKind::{Counter, Gauge};
        family(
            "fluentbit_uptime",
            "Number of seconds that Fluent Bit has been running.",
            Counter,
            &["hostname"],
            vec![(vec![hostname], uptime)],
        );
        family(
            "fluentbit_input_records_total",
            "Number of input records.",
            Counter,
            &["name"],
            r.inputs
                .iter()
                .map(|(n, x)| (vec![&**n], get(&x.records)))
                .collect(),
        );
        family(
            "fluentbit_input_bytes_total",
            "Number of input bytes.",
            Counter,
            &["name"],
            r.inputs
                .iter()
                .map(|(n, x)| (vec![&**n], get(&x.bytes)))
                .collect(),
        );
        family(
            "fluentbit_input_ingestion_paused",
            "Whether the input is paused by mem_buf_limit (1) or not (0).",
            Gauge,
            &["name"],
            r.inputs
                .iter()
                .map(|(n, x)| (vec![&**n], get(&x.paused)))
                .collect(),
        );
        family(
            "agent_input_buffered_bytes",
            "Bytes (estimated) of the input's records not yet delivered; kept with mem_buf_limit.",
            Gauge,
            &["name"],
            r.inputs
                .iter()
                .map(|(n, x)| (vec![&**n], get(&x.buffered_bytes)))
                .collect(),
        );
        let filters: [Counters<FilterMetrics>; 3] = [
            (
                "fluentbit_filter_records_total",
                "Total number of new records processed.",
                Counter,
                |x| get(&x.records),
            ),
            (
                "fluentbit_filter_drop_records_total",
                "Total number of dropped records.",
                Counter,
                |x| get(&x.drop_records),
            ),
            (
                // Fluent Bit's name (it was `added` here before: no series matched).
                "fluentbit_filter_add_records_total",
                "Total number of new added records.",
                Counter,
                |x| get(&x.add_records),
            ),
        ];
        for (name, help, kind, f) in filters {
            family(
                name,
                help,
                kind,
                &["name"],
                r.filters.iter().map(|(n, x)| (vec![&**n], f(x))).collect(),
            );
        }
        let outputs: [Counters<OutputMetrics>; 9] = [
            (
                "fluentbit_output_proc_records_total",
                "Number of processed output records.",
                Counter,
                |x| get(&x.proc_records),
            ),
            (
                "fluentbit_output_proc_bytes_total",
                "Number of processed output bytes.",
                Counter,
                |x| get(&x.proc_bytes),
            ),
            (
                "fluentbit_output_errors_total",
                "Number of output errors.",
                Counter,
                |x| get(&x.errors),
            ),
            (
                "fluentbit_output_retries_total",
                "Number of output retries.",
                Counter,
                |x| get(&x.retries),
            ),
            (
                "fluentbit_output_retries_failed_total",
                "Number of abandoned batches because the maximum number of re-tries was reached.",
                Counter,
                |x| get(&x.retries_failed),
            ),
            (
                "fluentbit_output_dropped_records_total",
                "Number of dropped records.",
                Counter,
                |x| get(&x.dropped_records),
            ),
            (
                "fluentbit_output_retried_records_total",
                "Number of retried records.",
                Counter,
                |x| get(&x.retried_records),
            ),
            (
                "agent_output_limit_dropped_records_total",
                "Records the output's limit.max_records_per_second dropped.",
                Counter,
                |x| get(&x.limit_dropped_records),
            ),
            (
                "agent_output_pending_records",
                "Records routed to the output and not yet delivered or given up.",
                Gauge,
                |x| x.pending_records(),
            ),
        ];
        for (name, help, kind, f) in outputs {
            family(
                name,
                help,
                kind,
                &["name"],
                r.outputs.iter().map(|(n, x)| (vec![&**n], f(x))).collect(),
            );
        }
        // Plugins' own metrics, one family per metric name.
        let mut plugin = r.plugins.all();
        plugin.sort_by(|a, b| a.metric.cmp(b.metric));
        for group in plugin.chunk_by(|a, b| a.metric == b.metric) {
            family(
                group[0].metric,
                group[0].help,
                group[0].kind,
                &["name"],
                group
                    .iter()
                    .map(|p| (vec![&*p.instance], get(&p.value)))
                    .collect(),
            );
        }
        let start = r
            .start
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if r.storage_metrics != Some(false) {
            r.storage_families(&mut family);
        }
        family(
            "fluentbit_process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            Gauge,
            &["hostname"],
            vec![(vec![hostname], start)],
        );
        family(
            "fluentbit_build_info",
            "Build version information.",
            Gauge,
            // Fluent Bit's v2 label set (its fluentbit_metrics input sends these).
            &["hostname", "version", "os"],
            vec![(vec![hostname, crate::app::VERSION, std::env::consts::OS], 1)],
        );
        set
    }
}
