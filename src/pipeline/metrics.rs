//! Per-instance counters (Fluent Bit's `fluentbit_input_records_total{name="random.0"}`
//! and friends), shared by the tasks that update them and the shutdown report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct InputMetrics {
    pub records: AtomicU64,
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
