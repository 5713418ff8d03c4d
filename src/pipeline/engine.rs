//! The engine task: receives every input's records, runs the matching filters in config
//! order, groups records per (input, tag) and hands chunks to the matching outputs on
//! every flush tick (or as soon as a chunk is full). Fluent Bit: src/flb_engine.c,
//! src/flb_input_chunk.c, src/flb_filter.c

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::ack::{self, AckFn, Completion, Routed};
use super::emitter::{EmitterInfo, Refusal, MAX_HOPS};
use super::metrics::{self, FilterMetrics, OutputMetrics};
use super::router::Matcher;
use super::storage::{ChunkFile, Gate, Store};
use crate::event::metrics::{MetricSet, Signals};
use crate::event::{Chunk, Record, Tag};
use crate::plugins::filters::ratelimit::KeyedLimiter;
use crate::plugins::{Filter, FilterResult};

/// Records from one input, as sent through the engine's channel.
pub struct InputBatch {
    pub input: usize,
    pub tag: Tag,
    pub records: Vec<Record>,
    /// Metric sets (then `records` is empty): routed by tag to the outputs that take
    /// metrics, past filters (which work on records), through the `metrics:`
    /// processors of the input and of each output.
    pub metrics: Vec<Arc<MetricSet>>,
    /// Runs once every output is done with these records (see `ack`).
    pub ack: Option<AckFn>,
    /// The records' [`Record::encoded_len`] sum when the input measured it: a chunk of
    /// untouched records need not be measured again for `proc_bytes`.
    pub bytes: Option<u64>,
}

/// A chunk is handed to outputs early once it holds this many records, which bounds
/// memory at high rates without changing what low-rate inputs see.
pub const CHUNK_MAX_RECORDS: usize = 4096;

/// The input index of chunks replayed from storage.
const REPLAY: usize = usize::MAX - 1;
/// The input index of records a filter or processor emits on its tick.
const TICK: usize = usize::MAX;
/// The input index of filter i's emitter is `EMITTER + i`.
const EMITTER: usize = usize::MAX / 2;
/// The input index of the emitter of output o's processor j is
/// `OUT_EMITTER + (o << 16) + j`.
const OUT_EMITTER: usize = EMITTER + (1 << 40);

/// The input index of the emitter of output `o`'s processor `j`.
pub fn out_emitter(o: usize, j: usize) -> usize {
    OUT_EMITTER + (o << 16) + j
}

pub struct FilterInstance {
    pub name: Arc<str>,
    pub matcher: Matcher,
    pub filter: Box<dyn Filter>,
    pub metrics: Arc<FilterMetrics>,
}

/// One unit of a `metrics:` processors chain.
pub struct MetricsUnit {
    pub name: Arc<str>,
    pub unit: Box<dyn crate::plugins::processors::MetricsProcessor>,
}

/// An input's YAML `processors:` (logs): run by the input's own task as it sends
/// (every clone of its sender shares them), and by the engine for what they release
/// at flush ticks and at shutdown. The lock is held only while records are processed,
/// never across an await.
pub type InputChain = Arc<std::sync::Mutex<Vec<FilterInstance>>>;
/// An input's YAML `processors: metrics:`, run by the input's task on each set it sends.
pub type InputMetricsChain = Arc<std::sync::Mutex<Vec<MetricsUnit>>>;

/// Locks a processors chain; a chain whose lock was poisoned (a processor panicked in
/// another task) is still used: the panic ended that task, not the chain.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A processors chain for the engine's flush: `None` while its input or worker is
/// running it (left to the next tick); at shutdown (`last`) it waits for the lock.
fn lock_unless_busy<T>(
    m: &std::sync::Mutex<T>,
    last: bool,
) -> Option<std::sync::MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(c) => Some(c),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) if !last => None,
        Err(std::sync::TryLockError::WouldBlock) => Some(lock(m)),
    }
}

/// Runs records of `tag` through an input's processors from `stage` on. What a
/// processor re-emits (rewrite_tag) continues at the chain's next stage under its new
/// tag, after the batch, as in Fluent Bit's `flb_input_log_append_skip_processor_stages`.
/// Returns the batches that are left, in the order the engine takes them.
pub fn run_input_chain(
    chain: &mut [FilterInstance],
    stage: usize,
    tag: Tag,
    records: Vec<Record>,
) -> Vec<(Tag, Vec<Record>)> {
    let now = Instant::now();
    let mut queue = std::collections::VecDeque::from([(stage, tag, records)]);
    let mut out = Vec::new();
    while let Some((stage, tag, mut records)) = queue.pop_front() {
        for (j, f) in chain.iter_mut().enumerate().skip(stage) {
            if records.is_empty() {
                break;
            }
            run_filter(f, &tag, &mut records, now);
            if let Some(e) = f.filter.emitter() {
                queue.extend(e.take().into_iter().map(|c| (j + 1, c.tag, c.records)));
            }
        }
        if !records.is_empty() {
            out.push((tag, records));
        }
    }
    out
}

/// Runs `set` through a chain of metrics processors in order; `None` when a unit
/// failed on it (Fluent Bit's processor failure: the set goes no further; logged).
pub fn run_metrics_chain(
    chain: &mut [MetricsUnit],
    tag: &str,
    set: MetricSet,
) -> Option<MetricSet> {
    let mut set = set;
    for u in chain {
        set = match u.unit.process(tag, set) {
            Ok(s) => s,
            Err(e) => {
                crate::warn!(
                    "[processor:{}] a metrics set of tag '{tag}' is dropped: {e}",
                    u.name
                );
                return None;
            }
        };
    }
    Some(set)
}

/// Each set of `sets` through `chain` (a set that is not shared is not copied).
pub fn process_sets(
    chain: &mut [MetricsUnit],
    tag: &str,
    sets: impl IntoIterator<Item = Arc<MetricSet>>,
) -> Vec<Arc<MetricSet>> {
    sets.into_iter()
        .filter_map(|set| run_metrics_chain(chain, tag, Arc::unwrap_or_clone(set)).map(Arc::new))
        .collect()
}

pub struct OutputRoute {
    pub name: Arc<str>,
    /// `None`: the output has no Match and receives nothing (warned at start).
    pub matcher: Option<Matcher>,
    /// One bounded queue per worker; chunks go round-robin, as Fluent Bit assigns tasks.
    pub workers: Vec<mpsc::Sender<Arc<Routed>>>,
    pub next: usize,
    pub metrics: Arc<OutputMetrics>,
    /// `limit.max_records_per_second`: caps this output's whole flow, whatever its
    /// Match shares with other outputs. (With log processors it is in the chain,
    /// applied after them by the workers.)
    pub limiter: Option<KeyedLimiter>,
    /// `storage.total_limit_size`: bytes of filesystem chunks queued for this output
    /// above which the oldest are dropped.
    pub total_limit: Option<u64>,
    /// Filesystem chunks queued here, oldest first, with their bytes.
    pub held: std::collections::VecDeque<(u64, Arc<Routed>)>,
    /// YAML `processors:` of this output (logs and metrics), run by its workers on
    /// its copy of each chunk.
    pub chain: Option<Arc<OutputChain>>,
    /// The signals the output takes: a log output never sees metrics, nor the reverse.
    pub signals: Signals,
    /// Signals Fluent Bit's plugin takes and this one does not (dropped, counted, logged).
    pub unsupported: Signals,
}

/// An output's YAML processors, run by its workers: each chunk once, by the worker
/// that takes it, under the chain's lock, as Fluent Bit runs them in
/// `flb_output_flush_create` in the output's worker thread under the processor's lock.
pub struct OutputChain {
    /// The output's index: its processors' emitter inputs are numbered from it.
    pub output: usize,
    pub processors: std::sync::Mutex<Vec<FilterInstance>>,
    pub metric_processors: std::sync::Mutex<Vec<MetricsUnit>>,
    /// The output's `limit`, applied after its log processors.
    pub limiter: std::sync::Mutex<Option<KeyedLimiter>>,
    /// Where records the processors re-emit (rewrite_tag) go: the engine, which
    /// ingests them as batches of the processor's emitter input.
    pub reemit: mpsc::UnboundedSender<(InputBatch, u32)>,
    /// Chunks queued for processing and not processed yet: the engine waits for none
    /// to be left before it releases the processors' last records and stops.
    in_flight: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
    /// Whether it has log processors, metrics processors (known without the locks,
    /// which a worker may hold for long).
    logs: bool,
    metrics: bool,
}

impl OutputChain {
    pub fn new(
        output: usize,
        processors: Vec<FilterInstance>,
        metric_processors: Vec<MetricsUnit>,
        limiter: Option<KeyedLimiter>,
        reemit: mpsc::UnboundedSender<(InputBatch, u32)>,
    ) -> OutputChain {
        OutputChain {
            output,
            logs: !processors.is_empty(),
            metrics: !metric_processors.is_empty(),
            processors: std::sync::Mutex::new(processors),
            metric_processors: std::sync::Mutex::new(metric_processors),
            limiter: std::sync::Mutex::new(limiter),
            reemit,
            in_flight: Default::default(),
            settled: tokio::sync::Notify::new(),
        }
    }

    /// Whether log records go through processors (then through the chain's limit).
    pub fn has_logs(&self) -> bool {
        self.logs
    }

    pub fn has_metrics(&self) -> bool {
        self.metrics
    }

    /// One more chunk queued for processing: done when what this returns is dropped
    /// (by the worker once it processed the chunk, or with the chunk if it never is).
    fn queued(self: &Arc<Self>) -> super::ack::OnDrop {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let chain = self.clone();
        super::ack::OnDrop::new(move || chain.done())
    }

    /// A queued chunk was processed (or will never be).
    fn done(&self) {
        if self
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.settled.notify_waiters();
        }
    }

    /// Waits until every queued chunk is processed.
    async fn settle(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Runs a chunk queued with [`Routed::to_process`] through the processors (from
    /// its stage on) and the output's limit, in the calling worker; what is left to
    /// send, or `None` when nothing is. Records a processor re-emits go to the engine,
    /// and the chunk's acks wait for them too. `routed_records` follows what is left.
    pub fn process(&self, routed: &Routed, metrics: &OutputMetrics) -> Option<Chunk> {
        let p = routed.process.as_ref()?;
        let tag = routed.chunk.tag.clone();
        let before = routed.events() as u64;
        let left = if routed.chunk.is_metrics() {
            let sets = process_sets(
                &mut lock(&self.metric_processors),
                &tag,
                routed.chunk.metrics.iter().cloned(),
            );
            let mut chunk = Chunk::new(tag, Vec::new());
            chunk.metrics = sets;
            chunk
        } else {
            let now = Instant::now();
            let mut records = std::mem::take(&mut *lock(&p.records));
            {
                let mut chain = lock(&self.processors);
                let from = p.from.min(chain.len());
                let chain = &mut chain[from..];
                // A processor's own emissions, or records re-emitted too often, are
                // not re-emitted again (no loop through the outputs).
                for (j, f) in chain.iter_mut().enumerate() {
                    if let Some(e) = f.filter.emitter() {
                        e.set_refusal(
                            if p.origin == OUT_EMITTER + (self.output << 16) + from + j {
                                Some(Refusal::Cycle)
                            } else if p.hops >= MAX_HOPS {
                                Some(Refusal::TooDeep)
                            } else {
                                None
                            },
                        );
                    }
                }
                run_chain(chain, &tag, &mut records, now);
                for (j, f) in chain.iter_mut().enumerate() {
                    let Some(e) = f.filter.emitter() else {
                        continue;
                    };
                    for c in e.take() {
                        let batch = InputBatch {
                            input: OUT_EMITTER + (self.output << 16) + from + j,
                            tag: c.tag,
                            records: c.records,
                            metrics: Vec::new(),
                            ack: routed.hold(),
                            bytes: None,
                        };
                        // The engine is gone only once every input stopped and it
                        // waited for this chunk: nothing is sent after that. (Were it
                        // gone, the held ack never runs: the input keeps the records.)
                        let _ = self.reemit.send((batch, p.hops + 1));
                    }
                }
            }
            if let Some(limiter) = lock(&self.limiter).as_mut() {
                let n = records.len();
                records.retain(|r| limiter.allow(&r.body, now));
                metrics::add(&metrics.limit_dropped_records, (n - records.len()) as u64);
            }
            Chunk::new(tag, records)
        };
        let after = left.events() as u64;
        if after >= before {
            metrics::add(&metrics.routed_records, after - before);
        } else {
            metrics
                .routed_records
                .fetch_sub(before - after, std::sync::atomic::Ordering::Relaxed);
        }
        (after > 0).then_some(left)
    }
}

impl OutputRoute {
    /// Bytes of the filesystem chunks still queued here; chunks the workers are done
    /// with (only this list holds them) leave the count.
    fn held_bytes(&mut self) -> u64 {
        self.held.retain(|(_, r)| Arc::strong_count(r) > 1);
        self.held.iter().map(|(b, _)| b).sum()
    }
}

/// Which filters and outputs a tag goes to, computed once per tag.
struct Route {
    filters: Vec<usize>,
    /// Outputs that take this tag's log records.
    outputs: Vec<usize>,
    /// Outputs that take this tag's metrics.
    metric_outputs: Vec<usize>,
    /// Outputs whose Fluent Bit namesake would take this tag's metrics and which do
    /// not: the metrics are counted as dropped there.
    refused_metrics: Vec<usize>,
    /// The drop of `refused_metrics` was logged (once per tag).
    refused_warned: bool,
}

struct Pending {
    input: usize,
    tag: Tag,
    records: Vec<Record>,
    /// A metrics chunk's sets (its `records` stay empty).
    metrics: Vec<Arc<MetricSet>>,
    acks: Vec<AckFn>,
    /// The chunk's file, for filesystem-buffered inputs.
    file: Option<ChunkFile>,
    /// The records' encoded size when every batch in it was measured and untouched.
    bytes: Option<u64>,
    /// Times its records were re-emitted (the most of its batches).
    hops: u32,
}

impl Pending {
    fn new(input: usize, tag: Tag, records: Vec<Record>, acks: Vec<AckFn>) -> Pending {
        Pending {
            input,
            tag,
            metrics: Vec::new(),
            bytes: records.is_empty().then_some(0),
            records,
            acks,
            file: None,
            hops: 0,
        }
    }
}

pub struct Engine {
    pub filters: Vec<FilterInstance>,
    pub outputs: Vec<OutputRoute>,
    pub flush: Duration,
    /// `flush.adaptive on`: the flush interval follows the filesystem backlog.
    pub adaptive: Option<Adaptive>,
    /// `storage.path`: where filesystem-buffered inputs' chunks are written.
    pub storage: Option<Store>,
    /// Per input index: its name when its `storage.type` is filesystem.
    pub fs_inputs: Vec<Option<Arc<str>>>,
    /// Reused frame buffer for chunk files.
    pub frame: Vec<u8>,
    /// `storage.max_chunks_up`: filesystem chunks in memory at once.
    pub chunks_up: Option<Arc<Gate>>,
    /// `storage.backlog.mem_limit`: bytes of replayed chunks in memory at once.
    pub backlog_mem: Option<Arc<Gate>>,
    /// Per input index: its YAML `processors:` when it has some. They run in the
    /// input's own task ([`super::InputSender`]); the engine runs what they release at
    /// flush ticks and at shutdown.
    pub input_processors: Vec<Option<InputChain>>,
    /// Some filter re-emits records (has an emitter).
    pub has_emitters: bool,
    /// What output processors re-emitted (rewrite_tag), with its hops: ingested as
    /// batches of their emitter inputs once the dispatch that made them is done.
    pub reemitted: Vec<(InputBatch, u32)>,
    /// Where output processors, in the workers, send what they re-emit.
    pub reemit_rx: mpsc::UnboundedReceiver<(InputBatch, u32)>,
    /// The emitters of output processors, by input index: their records count and
    /// `emitter_mem_buf_limit`.
    pub out_emitters: Vec<(usize, EmitterInfo)>,
    /// Chunks queued for output processors so far.
    pub jobs: u64,
}

/// Fluent Bit 5's adaptive flush (`flb_engine_adaptive_flush_update`): after each
/// flush, the backlog pressure (the fullest output's filesystem chunk bytes against its
/// `storage.total_limit_size`, in percent; outputs without that limit do not count)
/// picks a level, reached after `up_steps`/`down_steps` flushes in a row, and the
/// interval becomes `flush` x 2, 1, 0.75 or 0.5, kept within min/max.
pub struct Adaptive {
    config: crate::config::service::AdaptiveFlush,
    flush: f64,
    level: usize,
    hits: u32,
    direction: i8,
    pub current: f64,
}

impl Adaptive {
    pub fn new(config: crate::config::service::AdaptiveFlush, flush: Duration) -> Adaptive {
        let mut a = Adaptive {
            config,
            flush: flush.as_secs_f64(),
            level: 1,
            hits: 0,
            direction: 0,
            current: 0.0,
        };
        a.current = a.interval(1);
        a
    }

    fn interval(&self, level: usize) -> f64 {
        const MULTIPLIERS: [f64; 4] = [2.0, 1.0, 0.75, 0.5];
        (self.flush * MULTIPLIERS[level.min(3)])
            .clamp(self.config.min_interval, self.config.max_interval)
    }

    /// The new interval after a flush at `pressure` percent, if it changed.
    pub fn update(&mut self, pressure: f64) -> Option<f64> {
        let c = &self.config;
        let target = if pressure >= c.high {
            3
        } else if pressure >= c.medium {
            2
        } else if pressure <= c.low {
            0
        } else {
            1
        };
        let (dir, steps) = match target.cmp(&self.level) {
            std::cmp::Ordering::Greater => (1, c.up_steps),
            std::cmp::Ordering::Less => (-1, c.down_steps),
            std::cmp::Ordering::Equal => {
                self.direction = 0;
                self.hits = 0;
                (0, 0)
            }
        };
        if dir != 0 {
            if self.direction != dir {
                self.direction = dir;
                self.hits = 0;
            }
            self.hits += 1;
            if self.hits >= steps {
                self.level = if dir > 0 {
                    self.level + 1
                } else {
                    self.level - 1
                };
                self.hits = 0;
            }
        }
        let interval = self.interval(self.level);
        if (interval - self.current).abs() <= f64::EPSILON * interval.max(self.current) {
            return None;
        }
        crate::debug!(
            "[engine] adaptive flush interval {interval:.3} sec (pressure={pressure:.2}%, level={})",
            self.level
        );
        self.current = interval;
        Some(interval)
    }
}

/// Runs one filter on `records`, counting what it takes, drops and adds; what it did.
fn run_filter(
    f: &mut FilterInstance,
    tag: &Tag,
    records: &mut Vec<Record>,
    now: Instant,
) -> FilterResult {
    let before = records.len() as u64;
    let result = f.filter.filter(tag, records, now);
    let after = records.len() as u64;
    metrics::add(&f.metrics.records, before);
    metrics::add(&f.metrics.drop_records, before.saturating_sub(after));
    metrics::add(&f.metrics.add_records, after.saturating_sub(before));
    result
}

/// The records' size after a filter did `result` to records of `bytes` (None: not
/// known, they are measured when needed).
fn resized(bytes: Option<u64>, result: FilterResult) -> Option<u64> {
    match result {
        FilterResult::NoTouch => bytes,
        FilterResult::Modified => None,
        FilterResult::Resized(d) => bytes.and_then(|b| b.checked_add_signed(d)),
    }
}

/// What a filter releases at a flush tick, or at shutdown when `last`.
fn released(f: &mut dyn Filter, now: Instant, last: bool) -> Vec<Chunk> {
    let mut out = Vec::new();
    if last {
        f.shutdown(now, &mut out);
    } else {
        f.tick(now, &mut out);
    }
    out
}

/// Runs a chain of filters (processors) in order; stops once nothing is left.
fn run_chain(chain: &mut [FilterInstance], tag: &Tag, records: &mut Vec<Record>, now: Instant) {
    for f in chain {
        if records.is_empty() {
            return;
        }
        run_filter(f, tag, records, now);
    }
}

/// Where a chunk goes: every output its tag matches, or one output only (records
/// released by that output's processor `from - 1` at a tick), skipping its processors
/// before `from`.
#[derive(Clone, Copy)]
enum Target {
    Routed,
    Output { index: usize, from: usize },
}

impl Engine {
    /// Runs until every input sender is dropped, then flushes what is left and closes
    /// the output queues (which lets the output workers drain and stop).
    pub async fn run(mut self, mut rx: mpsc::Receiver<InputBatch>) {
        let mut routes: HashMap<Tag, Route> = HashMap::new();
        let mut pending: Vec<Pending> = Vec::new();
        self.replay(&mut routes).await;
        let every = |secs: f64| {
            let d = Duration::from_secs_f64(secs);
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        };
        let mut tick = every(match &self.adaptive {
            Some(a) => a.current,
            None => self.flush.as_secs_f64(),
        });
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some(batch) = batch else { break };
                    for p in self.ingest(batch, 0, &mut routes, &mut pending) {
                        self.dispatch(p, &mut routes).await;
                    }
                    if self.has_emitters {
                        self.wait_emitters(&mut routes, &mut pending).await;
                    }
                }
                Some(r) = self.reemit_rx.recv() => self.reemitted.push(r),
                _ = tick.tick() => {
                    self.flush_all(&mut routes, &mut pending, false).await;
                    let pressure = self.backlog_pressure();
                    if let Some(secs) = self.adaptive.as_mut().and_then(|a| a.update(pressure)) {
                        tick = every(secs);
                    }
                }
            }
            if !self.reemitted.is_empty() {
                self.ingest_reemitted(&mut routes, &mut pending).await;
            }
        }
        // The last flush, then until output processors (in the workers) have nothing
        // left: each round waits for them to process what was queued. What they
        // re-emitted is ingested and flushed as before; otherwise, if chunks reached
        // them since they last released, they release what they still hold. Rounds
        // are bounded: each re-emission adds a hop, each release empties a processor.
        let mut jobs = self.jobs;
        self.flush_all(&mut routes, &mut pending, true).await;
        loop {
            for o in &self.outputs {
                if let Some(chain) = &o.chain {
                    chain.settle().await;
                }
            }
            while let Ok(r) = self.reemit_rx.try_recv() {
                self.reemitted.push(r);
            }
            if !self.reemitted.is_empty() {
                jobs = self.jobs;
                self.ingest_reemitted(&mut routes, &mut pending).await;
                self.flush_all(&mut routes, &mut pending, true).await;
                continue;
            }
            if self.jobs == jobs {
                break;
            }
            jobs = self.jobs;
            for (chunk, target) in self.released_by_outputs(Instant::now(), true) {
                self.dispatch_released(chunk, &mut routes, target).await;
            }
        }
        // Dropping the queues' senders ends the output workers once they drain.
        self.outputs.iter_mut().for_each(|o| o.workers.clear());
    }

    /// The fullest output's filesystem backlog against its `storage.total_limit_size`,
    /// in percent (0 without such outputs).
    fn backlog_pressure(&mut self) -> f64 {
        if self.adaptive.is_none() {
            return 0.0;
        }
        let mut max: f64 = 0.0;
        for o in &mut self.outputs {
            let Some(limit) = o.total_limit.filter(|&l| l > 0) else {
                continue;
            };
            let held = o.held_bytes();
            max = max.max((held as f64 * 100.0 / limit as f64).clamp(0.0, 100.0));
        }
        max
    }

    fn route<'a>(&self, routes: &'a mut HashMap<Tag, Route>, tag: &Tag) -> &'a Route {
        routes.entry(tag.clone()).or_insert_with(|| {
            let matching = (0..self.outputs.len()).filter(|&i| {
                self.outputs[i]
                    .matcher
                    .as_ref()
                    .is_some_and(|m| m.matches(tag))
            });
            Route {
                filters: (0..self.filters.len())
                    .filter(|&i| self.filters[i].matcher.matches(tag))
                    .collect(),
                outputs: matching
                    .clone()
                    .filter(|&i| self.outputs[i].signals.logs)
                    .collect(),
                metric_outputs: matching
                    .clone()
                    .filter(|&i| self.outputs[i].signals.metrics)
                    .collect(),
                refused_metrics: matching
                    .filter(|&i| {
                        let o = &self.outputs[i];
                        !o.signals.metrics && o.unsupported.metrics
                    })
                    .collect(),
                refused_warned: false,
            }
        })
    }

    /// Runs a batch of metric sets through its input's metrics processors and appends
    /// them to its pending metrics chunk (one per input and tag, beside its log chunk);
    /// returns it when full. Filters work on records only, so metrics skip them (as in
    /// Fluent Bit, whose filters take logs).
    fn ingest_metrics(&mut self, batch: InputBatch, pending: &mut Vec<Pending>) -> Option<Pending> {
        let InputBatch {
            input,
            tag,
            mut metrics,
            ack,
            ..
        } = batch;
        let i = match pending
            .iter()
            .position(|p| p.input == input && p.tag == tag && !p.metrics.is_empty())
        {
            Some(i) => i,
            None => {
                pending.push(Pending::new(input, tag, Vec::new(), Vec::new()));
                pending.len() - 1
            }
        };
        if self.storage.is_some() {
            // A filesystem-buffered input's sets go to its chunk file, one record each.
            let stored: Vec<Record> = metrics.iter().map(|s| s.to_record()).collect();
            self.persist(&mut pending[i], &stored);
        }
        pending[i].metrics.append(&mut metrics);
        pending[i].acks.extend(ack);
        (pending[i].metrics.len() >= CHUNK_MAX_RECORDS).then(|| pending.swap_remove(i))
    }

    /// Filters a batch and appends it to its pending chunk; returns the chunks that
    /// are full. Records a filter re-emits under a new tag are filtered again from the
    /// first filter matching that tag, as a batch of the filter's emitter input
    /// (`EMITTER + filter index`), after the batch; `hops` counts such re-emissions.
    /// The batch's ack waits for the re-emitted records too.
    fn ingest(
        &mut self,
        batch: InputBatch,
        hops: u32,
        routes: &mut HashMap<Tag, Route>,
        pending: &mut Vec<Pending>,
    ) -> Vec<Pending> {
        let mut queue = std::collections::VecDeque::from([(batch, hops)]);
        let mut full = Vec::new();
        while let Some((batch, hops)) = queue.pop_front() {
            if !batch.metrics.is_empty() {
                full.extend(self.ingest_metrics(batch, pending));
                continue;
            }
            let InputBatch {
                input,
                tag,
                mut records,
                mut ack,
                mut bytes,
                ..
            } = batch;
            if let Some(e) = self.emitter(input) {
                let bytes: u64 = records.iter().map(Record::encoded_len).sum();
                metrics::add(&e.metrics.records, records.len() as u64);
                metrics::add(&e.metrics.bytes, bytes);
                if let Some(m) = &e.membuf {
                    ack = Some(m.hold_bytes(bytes, ack));
                }
            }
            let filters = self.route(routes, &tag).filters.clone();
            let mut emitted = Vec::new();
            let done = self.run_filters(&filters, input, hops, &tag, &mut records, &mut emitted);
            bytes = resized(bytes, done);
            debug_assert!(
                bytes.is_none_or(|b| b == records.iter().map(Record::encoded_len).sum::<u64>()),
                "a filter's Resized is not the records' size"
            );
            // Re-emitted chunks, each with a share of the batch's ack, continue at their
            // filter's emitter.
            let again: Vec<(usize, u32, Chunk)> = emitted
                .into_iter()
                .map(|(i, c)| (EMITTER + i, hops + 1, c))
                .collect();
            if !again.is_empty() {
                let mut parts = match ack.take() {
                    Some(a) => ack::split(a, again.len() + 1)
                        .into_iter()
                        .map(Some)
                        .collect(),
                    None => Vec::new(),
                };
                ack = parts.pop().flatten();
                for (input, hops, chunk) in again {
                    let batch = InputBatch {
                        input,
                        tag: chunk.tag,
                        records: chunk.records,
                        metrics: Vec::new(),
                        ack: parts.pop().flatten(),
                        bytes: None,
                    };
                    queue.push_back((batch, hops));
                }
            }
            if records.is_empty() {
                ack::run_now(ack.into_iter().collect());
                continue;
            }
            let i = match pending
                .iter()
                .position(|p| p.input == input && p.tag == tag && p.metrics.is_empty())
            {
                Some(i) => i,
                None => {
                    pending.push(Pending::new(input, tag, Vec::new(), Vec::new()));
                    pending.len() - 1
                }
            };
            self.persist(&mut pending[i], &records);
            pending[i].hops = pending[i].hops.max(hops);
            pending[i].bytes = pending[i].bytes.zip(bytes).map(|(a, b)| a + b);
            pending[i].records.append(&mut records);
            pending[i].acks.extend(ack);
            if pending[i].records.len() >= CHUNK_MAX_RECORDS {
                full.push(pending.swap_remove(i));
            }
        }
        full
    }

    /// The emitter whose input index is `input`, if it is one.
    fn emitter(&mut self, input: usize) -> Option<EmitterInfo> {
        if (OUT_EMITTER..REPLAY).contains(&input) {
            return self
                .out_emitters
                .iter()
                .find(|(i, _)| *i == input)
                .map(|(_, e)| e.clone());
        }
        let i = input.checked_sub(EMITTER)?;
        Some(self.filters.get_mut(i)?.filter.emitter()?.info())
    }

    /// Ingests what output processors re-emitted (each batch from the first filter
    /// matching its tag, as Fluent Bit's emitter input), dispatching what is full.
    async fn ingest_reemitted(
        &mut self,
        routes: &mut HashMap<Tag, Route>,
        pending: &mut Vec<Pending>,
    ) {
        while !self.reemitted.is_empty() {
            for (batch, hops) in std::mem::take(&mut self.reemitted) {
                for p in self.ingest(batch, hops, routes, pending) {
                    self.dispatch(p, routes).await;
                }
            }
        }
    }

    /// `emitter_mem_buf_limit`: while an emitter's records not yet delivered are over
    /// its limit, its chunks go out now and the engine waits for them, which pauses
    /// every input (Fluent Bit pauses the inputs that feed that emitter).
    async fn wait_emitters(
        &mut self,
        routes: &mut HashMap<Tag, Route>,
        pending: &mut Vec<Pending>,
    ) {
        let outputs = self.out_emitters.iter().map(|(i, _)| *i);
        let inputs: Vec<usize> = (0..self.filters.len())
            .map(|i| EMITTER + i)
            .chain(outputs)
            .collect();
        for input in inputs {
            let Some(m) = self.emitter(input).and_then(|e| e.membuf) else {
                continue;
            };
            if !m.over() {
                continue;
            }
            let (mine, rest) = std::mem::take(pending)
                .into_iter()
                .partition(|p| p.input == input);
            *pending = rest;
            for p in mine {
                self.dispatch(p, routes).await;
            }
            m.wait_below(None).await;
        }
    }

    /// Runs `filters` in order on records of `input`; collects what they re-emit,
    /// with the index of the filter that did. Whether any filter changed the records.
    fn run_filters(
        &mut self,
        filters: &[usize],
        input: usize,
        hops: u32,
        tag: &Tag,
        records: &mut Vec<Record>,
        emitted: &mut Vec<(usize, Chunk)>,
    ) -> FilterResult {
        let now = Instant::now();
        let mut all = FilterResult::NoTouch;
        for &i in filters {
            if records.is_empty() {
                return all;
            }
            let f = &mut self.filters[i];
            if let Some(e) = f.filter.emitter() {
                e.set_refusal(if input == EMITTER + i {
                    Some(Refusal::Cycle)
                } else if hops >= MAX_HOPS {
                    Some(Refusal::TooDeep)
                } else {
                    None
                });
            }
            all = all.then(run_filter(f, tag, records, now));
            if let Some(e) = f.filter.emitter() {
                emitted.extend(e.take().into_iter().map(|c| (i, c)));
            }
        }
        all
    }

    /// Ingests what filters re-emitted outside of a batch (from records a tick
    /// released); returns the chunks that are full.
    fn reingest(
        &mut self,
        emitted: Vec<(usize, Chunk)>,
        routes: &mut HashMap<Tag, Route>,
        pending: &mut Vec<Pending>,
    ) -> Vec<Pending> {
        let mut full = Vec::new();
        for (i, c) in emitted {
            let batch = InputBatch {
                input: EMITTER + i,
                tag: c.tag,
                records: c.records,
                metrics: Vec::new(),
                ack: None,
                bytes: None,
            };
            full.extend(self.ingest(batch, 1, routes, pending));
        }
        full
    }

    async fn flush_all(
        &mut self,
        routes: &mut HashMap<Tag, Route>,
        pending: &mut Vec<Pending>,
        last: bool,
    ) {
        let now = Instant::now();
        let mut emitted: Vec<(Chunk, Target)> = Vec::new();
        let mut full = Vec::new();
        // Input processors first: what one releases passes the rest of its chain, then
        // every filter matching its tag.
        for input in 0..self.input_processors.len() {
            let Some(chain) = self.input_processors[input].clone() else {
                continue;
            };
            let mut out = Vec::new();
            {
                // A chain its input is running now is left to the next tick: the engine
                // never waits behind an input's processors (at shutdown the inputs have
                // stopped, so the lock is free).
                let Some(mut chain) = lock_unless_busy(&chain, last) else {
                    continue;
                };
                for j in 0..chain.len() {
                    for chunk in released(&mut *chain[j].filter, now, last) {
                        out.extend(run_input_chain(&mut chain, j + 1, chunk.tag, chunk.records));
                    }
                }
            }
            for (tag, mut records) in out {
                let filters = self.route(routes, &tag).filters.clone();
                let mut again = Vec::new();
                self.run_filters(&filters, TICK, 0, &tag, &mut records, &mut again);
                full.extend(self.reingest(again, routes, pending));
                if !records.is_empty() {
                    emitted.push((Chunk::new(tag, records), Target::Routed));
                }
            }
        }
        for i in 0..self.filters.len() {
            let extra = released(&mut *self.filters[i].filter, now, last);
            // What filter i emits passes the filters after it that match its tag, as
            // records of Fluent Bit's emitter input do.
            for mut chunk in extra {
                let later: Vec<usize> = self
                    .route(routes, &chunk.tag)
                    .filters
                    .iter()
                    .copied()
                    .filter(|&j| j > i)
                    .collect();
                if chunk.is_metrics() {
                    // A filter's metrics (flow_aggregate's) pass no filter: they go
                    // to the outputs that take metrics.
                    emitted.push((chunk, Target::Routed));
                    continue;
                }
                let mut again = Vec::new();
                self.run_filters(&later, TICK, 0, &chunk.tag, &mut chunk.records, &mut again);
                full.extend(self.reingest(again, routes, pending));
                if !chunk.records.is_empty() {
                    emitted.push((chunk, Target::Routed));
                }
            }
        }
        emitted.extend(self.released_by_outputs(now, last));
        for p in full {
            self.dispatch(p, routes).await;
        }
        // Records held by a filter (a multiline record completed by its timeout) are
        // newer than what is pending: they go after it. Emitters' chunks go after the
        // inputs', as Fluent Bit flushes its inputs in order (emitters are the last).
        pending.sort_by_key(|p| (EMITTER..REPLAY).contains(&p.input).then_some(p.input));
        for p in pending.drain(..) {
            self.dispatch(p, routes).await;
        }
        for (chunk, target) in emitted {
            self.dispatch_released(chunk, routes, target).await;
        }
    }

    /// Dispatches what a filter or processor released at a tick (or at shutdown): to
    /// outputs only, past the filters.
    async fn dispatch_released(
        &mut self,
        chunk: Chunk,
        routes: &mut HashMap<Tag, Route>,
        target: Target,
    ) {
        let mut p = Pending::new(TICK, chunk.tag, chunk.records, Vec::new());
        p.metrics = chunk.metrics;
        self.dispatch_to(p, routes, target).await;
    }

    /// What output processors release (at a tick, or at shutdown when `last`), each
    /// for its own output only, from the processor after the one that released it. A
    /// chain a worker is running now is left to the next tick (at shutdown the engine
    /// waits for it).
    fn released_by_outputs(&mut self, now: Instant, last: bool) -> Vec<(Chunk, Target)> {
        let mut out = Vec::new();
        for o in 0..self.outputs.len() {
            let Some(chain) = &self.outputs[o].chain else {
                continue;
            };
            let Some(mut chain) = lock_unless_busy(&chain.processors, last) else {
                continue;
            };
            for j in 0..chain.len() {
                let extra = released(&mut *chain[j].filter, now, last);
                out.extend(extra.into_iter().map(|c| {
                    (
                        c,
                        Target::Output {
                            index: o,
                            from: j + 1,
                        },
                    )
                }));
            }
        }
        out
    }

    /// Sends one chunk to every matching output; waits when a queue is full
    /// (backpressure reaches the inputs through the bounded input channel).
    /// Writes accepted records of a filesystem-buffered input to the chunk's file. A
    /// write error keeps the records in memory (logged): they are still delivered.
    fn persist(&mut self, p: &mut Pending, records: &[Record]) {
        if self.storage.is_none() {
            return;
        }
        let input = match self.emitter(p.input) {
            Some(e) => e.filesystem.then(|| e.name.clone()),
            None => self.fs_inputs.get(p.input).cloned().flatten(),
        };
        let (Some(store), Some(input)) = (&self.storage, input) else {
            return;
        };
        if p.file.is_none() {
            match store.create(&input, &p.tag) {
                Ok(f) => p.file = Some(f),
                Err(e) => {
                    crate::error!("[storage] cannot create a chunk file in {}: {e}; records stay in memory only", store.dir.display());
                    return;
                }
            }
        }
        let mut buf = std::mem::take(&mut self.frame);
        if let Some(f) = &mut p.file {
            if let Err(e) = store.append(f, records, &mut buf) {
                crate::error!(
                    "[storage] cannot write {}: {e}; records stay in memory only",
                    f.path.display()
                );
            }
        }
        self.frame = buf;
    }

    /// Replays chunk files a previous run left (a crash, or grace ending first).
    async fn replay(&mut self, routes: &mut HashMap<Tag, Route>) {
        let Some(store) = self.storage.clone() else {
            return;
        };
        let files = store.backlog();
        if files.is_empty() {
            return;
        }
        crate::info!(
            "[storage] replaying {} chunk files from {}",
            files.len(),
            store.dir.display()
        );
        let mut replayed = 0usize;
        let mut kept = 0usize;
        let mut replayed_sets = 0usize;
        for path in files {
            let loaded = store.load(&path).map(|mut l| {
                // A chunk file of metric sets holds one record per set.
                let sets: Vec<Arc<MetricSet>> = l
                    .records
                    .iter()
                    .map_while(MetricSet::from_record)
                    .map(Arc::new)
                    .collect();
                let metrics = !sets.is_empty() && sets.len() == l.records.len();
                if metrics {
                    l.records.clear();
                }
                (l, metrics.then_some(sets))
            });
            match loaded {
                Ok((loaded, Some(sets))) => {
                    let route = self.route(routes, &loaded.tag);
                    if route.metric_outputs.is_empty() {
                        crate::warn!(
                            "[storage] {}: {} metric sets with tag '{}' match no output that takes metrics; the file is kept for a later start (delete it to drop them)",
                            path.display(),
                            sets.len(),
                            loaded.tag
                        );
                        continue;
                    }
                    replayed_sets += sets.len();
                    if let Some(problem) = &loaded.problem {
                        crate::warn!(
                            "[storage] {}: {problem}; {} metric sets recovered",
                            path.display(),
                            sets.len()
                        );
                    }
                    let delete: AckFn = Box::new(move || {
                        let _ = std::fs::remove_file(&path);
                    });
                    let mut p = Pending::new(REPLAY, loaded.tag, Vec::new(), vec![delete]);
                    p.metrics = sets;
                    self.dispatch(p, routes).await;
                }
                Ok((loaded, None)) if self.route(routes, &loaded.tag).outputs.is_empty() => {
                    // No output takes this tag any more (the config changed): the file
                    // stays for a start whose config does, never deleted unsent.
                    kept += loaded.records.len();
                    crate::warn!(
                        "[storage] {}: {} records with tag '{}' match no output; the file is kept for a later start (delete it to drop them)",
                        path.display(),
                        loaded.records.len(),
                        loaded.tag
                    );
                }
                Ok((loaded, None)) => {
                    replayed += loaded.records.len();
                    if let Some(problem) = &loaded.problem {
                        crate::warn!(
                            "[storage] {}: {problem}; {} records recovered",
                            path.display(),
                            loaded.records.len()
                        );
                    }
                    let delete: AckFn = Box::new(move || {
                        let _ = std::fs::remove_file(&path);
                    });
                    let p = Pending::new(REPLAY, loaded.tag, loaded.records, vec![delete]);
                    self.dispatch(p, routes).await;
                }
                Err(e) => crate::error!("[storage] cannot read {}: {e}", path.display()),
            }
        }
        // At-least-once: records of chunks in flight at the failure may have been
        // delivered already and arrive again; this is the most that can repeat.
        crate::info!("[storage] replayed {replayed} records (at most these can arrive twice)");
        if replayed_sets > 0 {
            crate::info!(
                "[storage] replayed {replayed_sets} metric sets (at most these can arrive twice)"
            );
        }
        if kept > 0 {
            crate::warn!("[storage] {kept} records matching no output were kept on disk");
        }
    }

    async fn dispatch(&mut self, p: Pending, routes: &mut HashMap<Tag, Route>) {
        self.dispatch_to(p, routes, Target::Routed).await
    }

    async fn dispatch_to(
        &mut self,
        mut p: Pending,
        routes: &mut HashMap<Tag, Route>,
        target: Target,
    ) {
        let on_disk = p.file.is_some() || p.input == REPLAY;
        // A filesystem chunk is made durable, then deleted once every output is done.
        if let (Some(store), Some(f)) = (&self.storage, p.file.take()) {
            if let Some(gate) = &self.chunks_up {
                p.acks.push(gate.acquire(1).await);
            }
            match store.seal(f) {
                Ok(path) => p.acks.push(Box::new(move || {
                    let _ = std::fs::remove_file(&path);
                })),
                Err(e) => crate::error!("[storage] cannot sync a chunk file: {e}"),
            }
        }
        if p.records.is_empty() && p.metrics.is_empty() {
            ack::run_now(p.acks);
            return;
        }
        let is_metrics = !p.metrics.is_empty();
        if is_metrics && matches!(target, Target::Routed) {
            self.route(routes, &p.tag);
            let route = routes.get_mut(&p.tag).expect("routed just above");
            for &i in &route.refused_metrics {
                let o = &self.outputs[i];
                metrics::add(&o.metrics.dropped_records, p.metrics.len() as u64);
                if !route.refused_warned {
                    crate::warn!(
                        "[output:{}] metrics of tag '{}' are routed here but this output sends \
                         logs only in agent: they are dropped and counted in \
                         fluentbit_output_dropped_records_total",
                        o.name,
                        p.tag
                    );
                }
            }
            route.refused_warned = true;
        }
        let outputs: Vec<usize> = match target {
            Target::Routed if is_metrics => self.route(routes, &p.tag).metric_outputs.clone(),
            Target::Routed => self.route(routes, &p.tag).outputs.clone(),
            Target::Output { index, .. } => vec![index],
        }
        .into_iter()
        .filter(|&i| !self.outputs[i].workers.is_empty())
        .collect();
        if outputs.is_empty() {
            // No output takes this tag: nothing to deliver (Fluent Bit drops it too).
            ack::run_now(p.acks);
            return;
        }
        let completion = Completion::new(outputs.len(), p.acks);
        let mut chunk = Chunk::new(p.tag, p.records);
        if let (Some(bytes), true) = (p.bytes, p.metrics.is_empty()) {
            chunk.set_encoded_len(bytes);
        }
        chunk.metrics = p.metrics;
        let full = Routed::new(chunk, completion.clone());
        let now = Instant::now();
        for i in outputs {
            let o = &mut self.outputs[i];
            let own_copy = o.total_limit.is_some() && on_disk && !is_metrics;
            // This output's processors work on its own copy, in its worker.
            let chain = o.chain.clone().filter(|c| {
                if is_metrics {
                    c.has_metrics()
                } else {
                    c.has_logs()
                }
            });
            let routed = if let Some(chain) = chain {
                let from = match target {
                    Target::Output { from, .. } => from,
                    Target::Routed => 0,
                };
                let mut chunk = Chunk::new(full.chunk.tag.clone(), Vec::new());
                let records = if is_metrics {
                    chunk.metrics = full.chunk.metrics.clone();
                    Vec::new()
                } else {
                    full.chunk.records.clone()
                };
                let process = super::ack::Process {
                    from,
                    origin: p.input,
                    hops: p.hops,
                    events: records.len(),
                    bytes: if own_copy {
                        full.chunk.encoded_len()
                    } else {
                        0
                    },
                    records: std::sync::Mutex::new(records),
                    queued: std::sync::Mutex::new(Some(chain.queued())),
                };
                self.jobs += 1;
                Routed::to_process(chunk, completion.clone(), process)
            } else if is_metrics {
                // Metrics pass no record limit.
                full.clone()
            } else {
                match &mut o.limiter {
                    None if own_copy => Routed::new(full.chunk.clone(), completion.clone()),
                    None => full.clone(),
                    Some(limiter) => {
                        let kept: Vec<Record> = full
                            .chunk
                            .records
                            .iter()
                            .filter(|r| limiter.allow(&r.body, now))
                            .cloned()
                            .collect();
                        let dropped = (full.chunk.records.len() - kept.len()) as u64;
                        metrics::add(&o.metrics.limit_dropped_records, dropped);
                        if kept.is_empty() {
                            full.finish(); // this route is done: nothing passes its limit
                            continue;
                        }
                        Routed::new(Chunk::new(full.chunk.tag.clone(), kept), completion.clone())
                    }
                }
            };
            if let (true, Some(limit)) = (own_copy, o.total_limit) {
                o.held.push_back((routed.bytes(), routed.clone()));
                let mut held = o.held_bytes();
                while held > limit && o.held.len() > 1 {
                    let (bytes, old) = o.held.pop_front().expect("more than one held");
                    held -= bytes;
                    old.cancel();
                    let dropped = old.events() as u64;
                    metrics::add(&o.metrics.dropped_records, dropped);
                    crate::warn!("[storage] {}: storage.total_limit_size reached: the oldest chunk ({dropped} records, ~{bytes} bytes) is dropped", o.name);
                }
            }
            Self::send(o, routed).await;
        }
    }

    /// Queues a chunk to the output's next worker (round-robin), counting it routed.
    async fn send(o: &mut OutputRoute, routed: Arc<Routed>) {
        let n = routed.events() as u64;
        let w = o.next % o.workers.len();
        o.next = o.next.wrapping_add(1);
        metrics::add(&o.metrics.routed_records, n);
        if o.workers[w].send(routed.clone()).await.is_err() {
            metrics::add(&o.metrics.dropped_records, n);
            routed.finish();
            crate::error!(
                "[engine] output {} has stopped: {n} records for it are dropped",
                o.name
            );
        }
    }
}

/// Runs `f`, which blocks (a filter waiting on a thread of its own, a write to a
/// pipe): on the multi-thread runtime the runtime is told, so its other tasks move on;
/// on a plugin's own thread (a current-thread runtime, where `block_in_place` would
/// panic) it simply runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let in_multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if in_multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::service::AdaptiveFlush;

    fn adaptive(flush: f64) -> Adaptive {
        Adaptive::new(
            AdaptiveFlush {
                min_interval: 0.5,
                max_interval: 2.0,
                low: 25.0,
                medium: 50.0,
                high: 75.0,
                up_steps: 2,
                down_steps: 3,
            },
            Duration::from_secs_f64(flush),
        )
    }

    /// Fluent Bit's steps: a level is reached after up_steps (down_steps) flushes in a
    /// row above (below) it; a change of direction starts the count again.
    #[test]
    fn adaptive_flush_moves_a_level_after_its_steps() {
        let mut a = adaptive(1.0);
        assert_eq!(a.current, 1.0);
        assert_eq!(a.update(0.0), None);
        assert_eq!(a.update(0.0), None);
        assert_eq!(a.update(0.0), Some(2.0)); // level 0: flush x2
        assert_eq!(a.update(90.0), None);
        assert_eq!(a.update(90.0), Some(1.0)); // level 1
        assert_eq!(a.update(90.0), None);
        assert_eq!(a.update(0.0), None); // direction changed: count again
        assert_eq!(a.update(90.0), None);
        assert_eq!(a.update(90.0), Some(0.75)); // level 2
        assert_eq!(a.update(90.0), None);
        assert_eq!(a.update(90.0), Some(0.5)); // level 3
        assert_eq!(a.update(90.0), None);
        assert_eq!(a.update(90.0), None); // stays at the top
        assert_eq!(a.update(60.0), None); // medium: level 2 after 3
        assert_eq!(a.update(60.0), None);
        assert_eq!(a.update(60.0), Some(0.75));
        assert_eq!(a.update(30.0), None); // between low and medium: level 1
                                          // Kept within min/max: flush 0.2 x 0.5 is 0.1, raised to the minimum 0.5.
        let b = adaptive(0.2);
        assert_eq!(b.current, 0.5);
        assert_eq!(adaptive(5.0).current, 2.0);
    }
}
