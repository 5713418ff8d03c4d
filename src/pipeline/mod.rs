//! Builds the running pipeline from a validated configuration and runs it until
//! shutdown: inputs → engine (filters, chunks, routing) → output workers.

pub mod ack;
pub mod emitter;
pub mod engine;
pub mod metrics;
pub mod output;
pub mod router;
pub mod shutdown;
pub mod storage;

use std::sync::Arc;
use tokio::sync::mpsc;

pub use ack::AckFn;
pub use engine::InputBatch;
pub use shutdown::{Shutdown, ShutdownTrigger};

use crate::config::{Config, ConfigError, InstanceConfig, PropKind, PropSpec, Props};
use crate::event::{Record, Tag};
use crate::net::{DOWNSTREAM_NET_PROPS, DOWNSTREAM_TLS_PROPS, NET_PROPS, TLS_PROPS};
use crate::plugins::{self, BuildContext, Input, InputContext, PluginError};
use engine::{Engine, FilterInstance, OutputRoute};
use metrics::{FilterMetrics, InputMetrics, OutputMetrics};
use output::{OutputWorker, RetryPolicy};
use router::Matcher;

/// Properties of every input, filter and output (Fluent Bit: src/flb_input.c,
/// src/flb_filter.c, src/flb_output.c).
#[rustfmt::skip]
pub const CORE_COMMON_PROPS: &[PropSpec] = &[
    PropSpec::new("alias", PropKind::Str, None, "Name of the instance in logs and metrics."),
    PropSpec::new("log_level", PropKind::Enum(&["off", "error", "warn", "warning", "info", "debug", "trace"]), None, "Log level of this instance's messages (default: the service log_level)."),
    PropSpec::new("log_suppress_interval", PropKind::Time, Some("0"), "Print a message of this instance again only after this long (0: always)."),
];

/// Properties of every input.
#[rustfmt::skip]
pub const CORE_INPUT_PROPS: &[PropSpec] = &[
    PropSpec::new("tag", PropKind::Str, None, "Tag of the records; default is the instance name (random.0)."),
    PropSpec::new("mem_buf_limit", PropKind::Size, Some("64M"), "Pause the input while this many bytes of its records are not yet delivered; 0 = no limit (Fluent Bit's default, which agent does not share: a stalled output would grow memory without bound)."),
    PropSpec::new("storage.type", PropKind::Enum(&["memory", "filesystem"]), Some("memory"), "Buffering of this input: memory, or filesystem (chunks in storage.path survive a crash)."),
    PropSpec::new("threaded", PropKind::Bool, Some("false"), "Run the input (and its processors) in a thread of its own; an input with processors always has one."),
    PropSpec::new("routable", PropKind::Bool, Some("true"), "false: the records of this input are discarded instead of routed."),
    PropSpec::new("rate_window", PropKind::Time, Some("1s"), "Window over which the input's rate is measured (rate_gate)."),
    PropSpec::new("rate_gate", PropKind::Bool, Some("false"), "Pause the input while its rate over rate_window is above rate_gate.max_records or rate_gate.max_bytes per second."),
    PropSpec::new("rate_gate.max_bytes", PropKind::Size, Some("0"), "Bytes per second above which the rate gate pauses the input (0: no byte limit)."),
    PropSpec::new("rate_gate.max_records", PropKind::Int, Some("0"), "Records per second above which the rate gate pauses the input (0: no record limit)."),
    PropSpec::new("rate_gate.backpressure", PropKind::Bool, Some("true"), "Accepted: agent's bounded queues always slow an input whose records are not delivered."),
    PropSpec::new("rate_gate.resume_ratio", PropKind::Double, Some("0.80"), "The gate resumes the input once its rate is below this fraction of the limit."),
];

/// Properties of every filter and output: which tags they take.
#[rustfmt::skip]
pub const CORE_MATCH_PROPS: &[PropSpec] = &[
    PropSpec::new("match", PropKind::Str, None, "Tag pattern of the records to take (* wildcard, case-sensitive)."),
    PropSpec::new("match_regex", PropKind::Str, None, "Regular expression on the tag, anchored at the start."),
];

/// Properties of every output.
#[rustfmt::skip]
pub const CORE_OUTPUT_PROPS: &[PropSpec] = &[
    PropSpec::new("retry_limit", PropKind::Str, Some("1"), "Retries per chunk: a number > 0, no_limits (or false), or no_retries."),
    PropSpec::new("workers", PropKind::Int, None, "Number of workers; the default depends on the plugin."),
    PropSpec::new("storage.total_limit_size", PropKind::Size, None, "Bytes of filesystem chunks queued for this output above which the oldest are dropped (counted); off/0 = no limit."),
    PropSpec::new("limit.max_records_per_second", PropKind::Quantity, None, "Cap on records per second this output receives, whatever its Match shares: 100, 1k, 500m; 0 sends nothing."),
    PropSpec::new("limit.burst", PropKind::Int, None, "Records the output limit lets through at once after being idle; default one second's worth."),
];

/// The tags of `limit` filters with `max_records_per_second 0` and no condition: their
/// records are never forwarded, so inputs need not read them.
fn zero_limits(config: &Config) -> Vec<Matcher> {
    config
        .filters
        .iter()
        .filter(|f| f.plugin.eq_ignore_ascii_case("limit"))
        .filter_map(|f| {
            let get = |k: &str| {
                f.entries
                    .iter()
                    .rev()
                    .find(|e| e.key == k)
                    .map(|e| e.value.as_str())
            };
            let zero = get("max_records_per_second")
                .and_then(crate::config::values::parse_quantity)
                == Some(0.0);
            (zero && get("when_key").is_none())
                .then(|| {
                    Matcher::new(get("match"), get("match_regex"))
                        .ok()
                        .flatten()
                })
                .flatten()
        })
        .collect()
}

/// `mem_buf_limit` of an input that does not set it (issue 21 item 5): the chunk and
/// queue bounds count chunks, and a chunk of 5 MB records is gigabytes, so bytes are
/// bounded too, for every input. Fluent Bit's default is no limit.
pub const DEFAULT_MEM_BUF_LIMIT: u64 = 64 * 1000 * 1000;

/// Bounded queues: a slow stage makes the previous one wait instead of growing memory.
const INPUT_QUEUE: usize = 16;
const OUTPUT_QUEUE: usize = 4;

/// Threads the runtime should have: at least 2, more when an input asks for them (the
/// forward input's `workers`). Read once, when the runtime starts.
static RUNTIME_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(2);

/// Asks for at least `n` runtime threads (see [`runtime_threads`]).
pub fn request_runtime_threads(n: usize) {
    RUNTIME_THREADS.fetch_max(n.min(256), std::sync::atomic::Ordering::Relaxed);
}

/// The runtime's thread count: 2, or what an input asked for.
pub fn runtime_threads() -> usize {
    RUNTIME_THREADS.load(std::sync::atomic::Ordering::Relaxed)
}

/// How an input hands records to the engine. Dropping every clone tells the engine the
/// input is done (server inputs hold one per connection).
#[derive(Clone)]
pub struct InputSender {
    input: usize,
    tag: Tag,
    tx: mpsc::Sender<InputBatch>,
    metrics: Arc<InputMetrics>,
    /// `mem_buf_limit`, when set: sends wait while the input's undelivered bytes are over it.
    membuf: Option<Arc<MemBuf>>,
    /// `rate_gate`, when on.
    gate: Option<Arc<RateGate>>,
    /// `routable false`: records are discarded.
    routable: bool,
    shutdown: Shutdown,
    /// The input's name, the `source` of the metric sets it sends.
    metrics_source: Arc<str>,
    /// The input's YAML `processors:`, run here, in the input's own task, before its
    /// records reach the engine (as Fluent Bit runs them in the input's thread).
    processors: Option<engine::InputChain>,
    /// The input's YAML `processors: metrics:`, run here on each set it sends.
    metric_processors: Option<engine::InputMetricsChain>,
}

/// `mem_buf_limit`: the bytes of an input's records that outputs have not finished
/// with. Over the limit the input is paused (its `send` waits; tail stops reading,
/// network inputs stop reading their sockets) and resumed below it, logged once per
/// transition. Permissive like Fluent Bit's: the batch that crosses the limit passes.
pub struct MemBuf {
    limit: u64,
    name: Arc<str>,
    metrics: Arc<InputMetrics>,
    resumed: tokio::sync::Notify,
}

impl MemBuf {
    pub(crate) fn new(limit: u64, name: Arc<str>, metrics: Arc<InputMetrics>) -> MemBuf {
        MemBuf {
            limit,
            name,
            metrics,
            resumed: tokio::sync::Notify::new(),
        }
    }

    fn buffered(&self) -> u64 {
        metrics::get(&self.metrics.buffered_bytes)
    }

    /// The undelivered bytes are at the limit or over.
    pub(crate) fn over(&self) -> bool {
        self.buffered() >= self.limit
    }

    fn release(&self, bytes: u64) {
        self.metrics
            .chunks
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let left = self
            .metrics
            .buffered_bytes
            .fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel)
            - bytes;
        if left < self.limit && metrics::get(&self.metrics.paused) == 1 {
            metrics::set(&self.metrics.paused, 0);
            crate::info!(
                "[input] {} resume (mem buf overlimit - buffered {left} bytes, limit {})",
                self.name,
                self.limit
            );
            self.resumed.notify_waiters();
        }
    }

    /// Counts `bytes` as buffered until the returned ack runs (then `ack` runs too).
    pub(crate) fn hold_bytes(self: &Arc<Self>, bytes: u64, ack: Option<AckFn>) -> AckFn {
        metrics::add(&self.metrics.buffered_bytes, bytes);
        metrics::add(&self.metrics.chunks, 1);
        let m = self.clone();
        Box::new(move || {
            m.release(bytes);
            if let Some(a) = ack {
                a();
            }
        })
    }

    /// Waits until below the limit, then counts a batch of `bytes` as buffered until
    /// the returned ack runs (then `ack` runs too). Of senders that wait together (a server input's
    /// connections) only one crosses the limit: the limit is exceeded by one batch at
    /// most, not one per sender.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        bytes: u64,
        ack: Option<AckFn>,
        shutdown: &mut Shutdown,
    ) -> AckFn {
        loop {
            self.wait_below(Some(&mut *shutdown)).await;
            let before = self
                .metrics
                .buffered_bytes
                .fetch_add(bytes, std::sync::atomic::Ordering::AcqRel);
            if before < self.limit || shutdown.is_set() {
                break;
            }
            // Another sender crossed first: give the bytes back and wait again.
            self.metrics
                .buffered_bytes
                .fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
        }
        metrics::add(&self.metrics.chunks, 1);
        let m = self.clone();
        Box::new(move || {
            m.release(bytes);
            if let Some(a) = ack {
                a();
            }
        })
    }

    /// Waits (paused, logged once) until the undelivered bytes are below the limit, or
    /// until `shutdown`, which must not hang on it.
    pub(crate) async fn wait_below(&self, mut shutdown: Option<&mut Shutdown>) {
        while self.over() && !shutdown.as_ref().is_some_and(|s| s.is_set()) {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if metrics::get(&self.metrics.paused) == 0 && self.over() {
                metrics::set(&self.metrics.paused, 1);
                crate::warn!(
                    "[input] {} paused (mem buf overlimit - buffered {} bytes, limit {})",
                    self.name,
                    self.buffered(),
                    self.limit
                );
            }
            if !self.over() {
                break;
            }
            match shutdown.as_mut() {
                Some(s) => tokio::select! {
                    _ = resumed => {}
                    _ = s.wait() => {}
                },
                None => resumed.await,
            }
        }
    }
}

impl InputSender {
    /// Whether the input is paused by `mem_buf_limit`: a send would wait until outputs
    /// catch up (the http input answers 503 instead of holding the client).
    pub fn paused(&self) -> bool {
        self.membuf.as_ref().is_some_and(|m| m.over())
    }

    /// Sends records with the input's tag; waits while the engine is behind.
    pub async fn send(&mut self, records: Vec<Record>) -> Result<(), PluginError> {
        let tag = self.tag.clone();
        self.send_tagged(tag, records).await
    }

    /// Sends records with another tag (tail's per-file tags, for example).
    pub async fn send_tagged(&mut self, tag: Tag, records: Vec<Record>) -> Result<(), PluginError> {
        self.send_batch(tag, records, None, None).await
    }

    /// [`InputSender::send`] for an input that knows the records' [`Record::encoded_len`]
    /// sum (`dummy`'s copies of one record), which then need not be walked again.
    pub async fn send_measured(
        &mut self,
        records: Vec<Record>,
        bytes: u64,
    ) -> Result<(), PluginError> {
        debug_assert_eq!(bytes, records.iter().map(Record::encoded_len).sum::<u64>());
        let tag = self.tag.clone();
        self.send_batch(tag, records, None, Some(bytes)).await
    }

    /// Sends one scrape of metrics (routed like records with the input's tag, to the
    /// outputs that take metrics). The set's `source` becomes the input's name.
    pub async fn send_metrics(
        &mut self,
        set: crate::event::metrics::MetricSet,
    ) -> Result<(), PluginError> {
        let mut set = match &self.metric_processors {
            None => set,
            Some(chain) => {
                let tag = self.tag.clone();
                match engine::run_metrics_chain(&mut engine::lock(chain), &tag, set) {
                    Some(set) => set,
                    None => return Ok(()), // a processor failed on it (logged)
                }
            }
        };
        let bytes = set.approx_size();
        let ack = match self.membuf.clone() {
            None => None,
            Some(m) => {
                m.wait_below(Some(&mut self.shutdown)).await;
                Some(m.hold_bytes(bytes, None))
            }
        };
        // One event per set, as Fluent Bit counts a metrics context.
        metrics::add(&self.metrics.records, 1);
        metrics::add(&self.metrics.bytes, bytes);
        if !self.routable {
            ack::run_now(ack.into_iter().collect());
            return Ok(());
        }
        if let Some(g) = self.gate.clone() {
            g.pass(1, bytes, &self.shutdown).await;
        }
        set.source = self.metrics_source.clone();
        self.tx
            .send(InputBatch {
                input: self.input,
                tag: self.tag.clone(),
                records: Vec::new(),
                metrics: vec![Arc::new(set)],
                ack,
                bytes: None,
            })
            .await
            .map_err(|_| PluginError::Closed)
    }

    /// Sends records and runs `ack` once every output is done with them.
    pub async fn send_acked(
        &mut self,
        tag: Tag,
        records: Vec<Record>,
        ack: AckFn,
    ) -> Result<(), PluginError> {
        self.send_batch(tag, records, Some(ack), None).await
    }

    /// `bytes`: the records' size when the input measured it.
    async fn send_batch(
        &mut self,
        tag: Tag,
        records: Vec<Record>,
        ack: Option<AckFn>,
        bytes: Option<u64>,
    ) -> Result<(), PluginError> {
        if records.is_empty() {
            ack::run_now(ack.into_iter().collect());
            return Ok(());
        }
        let Some(chain) = &self.processors else {
            return self.send_processed(tag, records, ack, bytes).await;
        };
        // What the processors leave: the batch and what they re-emitted, each with a
        // share of the ack (all of it runs once every part is delivered).
        let mut batches = engine::run_input_chain(&mut engine::lock(chain), 0, tag, records);
        let mut acks: Vec<Option<AckFn>> = match ack {
            None => Vec::new(),
            Some(a) if batches.is_empty() => {
                ack::run_now(vec![a]);
                Vec::new()
            }
            Some(a) => ack::split(a, batches.len()).into_iter().map(Some).collect(),
        };
        acks.reverse();
        for (tag, records) in batches.drain(..) {
            self.send_processed(tag, records, acks.pop().flatten(), None)
                .await?;
        }
        Ok(())
    }

    /// Sends records past the input's processors: counted, held against
    /// `mem_buf_limit` and the rate gate, then queued to the engine.
    async fn send_processed(
        &mut self,
        tag: Tag,
        records: Vec<Record>,
        ack: Option<AckFn>,
        bytes: Option<u64>,
    ) -> Result<(), PluginError> {
        // One walk over the records (unless the input measured them): their bytes serve
        // mem_buf_limit, the rate gate and fluentbit_input_bytes_total.
        let bytes = bytes.unwrap_or_else(|| records.iter().map(Record::encoded_len).sum());
        let ack = match self.membuf.clone() {
            None => ack,
            Some(m) => Some(m.admit(bytes, ack, &mut self.shutdown).await),
        };
        metrics::add(&self.metrics.records, records.len() as u64);
        metrics::add(&self.metrics.bytes, bytes);
        if !self.routable {
            ack::run_now(ack.into_iter().collect());
            return Ok(());
        }
        if let Some(g) = self.gate.clone() {
            g.pass(records.len() as u64, bytes, &self.shutdown).await;
        }
        self.tx
            .send(InputBatch {
                input: self.input,
                tag,
                records,
                metrics: Vec::new(),
                ack,
                bytes: Some(bytes),
            })
            .await
            .map_err(|_| PluginError::Closed)
    }
}

/// Fluent Bit 5's input rate gate: the input's records and bytes per second over
/// `rate_window`; above a limit the input is paused (its sends wait) until the rate is
/// below `resume_ratio` of it, logged once per transition as Fluent Bit logs it.
pub struct RateGate {
    max_records: f64,
    max_bytes: f64,
    window: std::time::Duration,
    resume_ratio: f64,
    name: Arc<str>,
    /// (when, records, bytes) of the batches within the window.
    seen: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64, u64)>>,
}

impl RateGate {
    /// Whether the rate over the window is above `ratio` of a limit.
    fn over(&self, ratio: f64, now: std::time::Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while seen
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) >= self.window)
        {
            seen.pop_front();
        }
        let secs = self.window.as_secs_f64().max(1e-3);
        let (r, b) = seen
            .iter()
            .fold((0u64, 0u64), |(r, b), (_, n, m)| (r + n, b + m));
        (self.max_records > 0.0 && r as f64 / secs > self.max_records * ratio)
            || (self.max_bytes > 0.0 && b as f64 / secs > self.max_bytes * ratio)
    }

    /// Counts a batch; waits while the input is over its limit (or until shutdown).
    async fn pass(&self, events: u64, bytes: u64, shutdown: &Shutdown) {
        let now = std::time::Instant::now();
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((now, events, bytes));
        if !self.over(1.0, now) {
            return;
        }
        crate::warn!("[input] {} paused (rate gate limit exceeded)", self.name);
        let step = (self.window / 20).max(std::time::Duration::from_millis(5));
        while !shutdown.is_set() && self.over(self.resume_ratio, std::time::Instant::now()) {
            let mut stop = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = stop.wait() => {}
            }
        }
        crate::info!("[input] {} resume (rate gate)", self.name);
    }
}

struct InputInstance {
    /// `storage.type filesystem`.
    filesystem: bool,
    /// `mem_buf_limit` in bytes, when set (> 0).
    mem_buf_limit: Option<u64>,
    gate: Option<Arc<RateGate>>,
    routable: bool,
    /// `threaded true`: the input runs in a thread of its own.
    threaded: bool,
    name: Arc<str>,
    plugin: &'static str,
    tag: Tag,
    input: Box<dyn Input>,
    metrics: Arc<InputMetrics>,
    processors: Vec<FilterInstance>,
    metric_processors: Vec<engine::MetricsUnit>,
}

struct OutputInstance {
    total_limit: Option<u64>,
    limit: Option<crate::plugins::filters::ratelimit::Quota>,
    name: Arc<str>,
    plugin: &'static str,
    matcher: Option<Matcher>,
    workers: Vec<Box<dyn plugins::Output>>,
    retry: RetryPolicy,
    metrics: Arc<OutputMetrics>,
    processors: Vec<FilterInstance>,
    metric_processors: Vec<engine::MetricsUnit>,
    signals: crate::event::metrics::Signals,
    unsupported: crate::event::metrics::Signals,
}

/// A validated, built pipeline, ready to run. Building it is what `--dry-run` checks.
pub struct Pipeline {
    pub config: Config,
    inputs: Vec<InputInstance>,
    filters: Vec<FilterInstance>,
    outputs: Vec<OutputInstance>,
    registry: Arc<metrics::Registry>,
    /// Instances' own `log_level`/`log_suppress_interval`, applied when the run starts.
    log_settings: Vec<LogSetting>,
    /// A plugin's request to stop the agent with an exit status.
    exit: shutdown::ExitRequest,
}

fn props(
    inst: &InstanceConfig,
    plugin: &'static str,
    own: &'static [PropSpec],
    core: &[&'static [PropSpec]],
) -> Result<Props, ConfigError> {
    Props::new(
        inst.kind,
        plugin,
        inst.span.clone(),
        own,
        core,
        inst.entries.clone(),
    )
}

/// An instance's own `log_level` / `log_suppress_interval`, when it sets either.
type LogSetting = (
    String,
    Option<crate::log::Level>,
    Option<std::time::Duration>,
);

fn log_setting(name: &str, p: &Props) -> Option<LogSetting> {
    let level = p
        .is_set("log_level")
        .then(|| p.str("log_level").and_then(crate::log::Level::parse))
        .flatten();
    let suppress = p.time("log_suppress_interval").filter(|d| !d.is_zero());
    (level.is_some() || suppress.is_some()).then(|| (name.to_string(), level, suppress))
}

fn unknown_plugin(inst: &InstanceConfig, known: Vec<&'static str>) -> ConfigError {
    ConfigError::UnknownPlugin {
        span: inst.span.clone(),
        kind: inst.kind,
        name: inst.plugin.clone(),
        suggestion: crate::config::error::closest(
            &inst.plugin.to_ascii_lowercase(),
            known.iter().copied(),
        ),
        known,
    }
}

/// The YAML `processors:` of one input or output, by signal.
#[derive(Default)]
struct Processors {
    logs: Vec<FilterInstance>,
    metrics: Vec<engine::MetricsUnit>,
}

/// Builds the YAML `processors:` of one input or output. A `logs:` unit is a filter
/// (looked up first, as Fluent Bit does) or a native processor of records; a
/// `metrics:` unit a native processor of metrics (`labels`, `metrics_selector`).
/// `traces:` and `profiles:` units are checked, then left out with a warning (agent
/// carries neither).
fn build_processors(
    owner: &InstanceConfig,
    ctx: &BuildContext,
    next_id: &mut usize,
    log_settings: &mut Vec<LogSetting>,
    mut emitter_inputs: Option<EmitterInputs>,
) -> Result<Processors, ConfigError> {
    let mut chain = Processors::default();
    for unit in &owner.processors {
        let name = unit
            .entries
            .iter()
            .find(|e| e.key == "name")
            .map(|e| e.value.clone())
            .unwrap_or_default();
        let inst = InstanceConfig {
            kind: crate::config::PluginKind::Filter,
            plugin: name,
            span: unit.span.clone(),
            entries: unit
                .entries
                .iter()
                .filter(|e| e.key != "name")
                .cloned()
                .collect(),
            processors: Vec::new(),
        };
        let metrics_unit = plugins::processors::metrics_processor(&inst.plugin);
        let logs_unit = plugins::filter(&inst.plugin)
            .map(|f| (f, true))
            .or_else(|| plugins::processors::processor(&inst.plugin).map(|p| (p, false)));
        if metrics_unit.is_none() && logs_unit.is_none() {
            let mut known: Vec<&'static str> = plugins::FILTERS.iter().map(|p| p.name).collect();
            known.extend(plugins::processors::PROCESSORS.iter().map(|p| p.name));
            known.extend(
                plugins::processors::METRICS_PROCESSORS
                    .iter()
                    .map(|p| p.name),
            );
            return Err(unknown_plugin(&inst, known));
        }
        let id = *next_id;
        *next_id += 1;
        match unit.signal.as_str() {
            "metrics" => {
                let Some(plugin) = metrics_unit else {
                    let (plugin, is_filter) = logs_unit.expect("one of them was found");
                    return Err(ConfigError::invalid(
                        &unit.span,
                        format!(
                            "[config] processor {} cannot process metrics: {}",
                            plugin.name,
                            if is_filter {
                                "it is a filter, and filters take log records"
                            } else {
                                "Fluent Bit's content_modifier edits only the OpenTelemetry resource and scope of metrics, which agent's metric inputs never carry (Fluent Bit drops every set it fails on)"
                            }
                        ),
                        Some(format!(
                            "under 'metrics:' use {}; move {} under 'logs:'",
                            plugins::processors::METRICS_PROCESSORS
                                .iter()
                                .map(|p| p.name)
                                .collect::<Vec<_>>()
                                .join(" or "),
                            plugin.name
                        )),
                    ));
                };
                if let Some(spec) = &unit.condition {
                    return Err(ConfigError::invalid(
                        &spec.span,
                        format!(
                            "[config] processor {}: a condition selects log records; a metrics processor takes whole metric sets",
                            plugin.name
                        ),
                        Some("remove the condition, or select metrics with metrics_selector".into()),
                    ));
                }
                let p = props(&inst, plugin.name, plugin.props, &[CORE_COMMON_PROPS])?;
                let alias: Arc<str> =
                    Arc::from(p.str("alias").unwrap_or(&format!("{}.{id}", plugin.name)));
                log_settings.extend(log_setting(&alias, &p));
                let unit = (plugin.build)(
                    &p,
                    &BuildContext {
                        instance: &alias,
                        ..*ctx
                    },
                )?;
                chain
                    .metrics
                    .push(engine::MetricsUnit { name: alias, unit });
                continue;
            }
            "logs" => {}
            other => {
                crate::warn!(
                    "{}: [config] processor {} under '{other}' never runs: agent carries logs and metrics only, no {other}",
                    unit.span,
                    inst.plugin,
                );
                continue;
            }
        }
        let Some((plugin, is_filter)) = logs_unit else {
            let plugin = metrics_unit.expect("one of them was found");
            return Err(ConfigError::invalid(
                &unit.span,
                format!(
                    "[config] processor {} processes metrics only: under 'logs:' it would never run",
                    plugin.name
                ),
                Some(format!("move {} under 'metrics:'", plugin.name)),
            ));
        };
        let core: &[&'static [PropSpec]] = if is_filter {
            &[CORE_COMMON_PROPS, CORE_MATCH_PROPS]
        } else {
            &[CORE_COMMON_PROPS]
        };
        let p = props(&inst, plugin.name, plugin.props, core)?;
        for key in ["match", "match_regex"].iter().filter(|k| p.is_set(k)) {
            crate::warn!(
                "{}: [config] processor {}: '{key}' is ignored: a processor takes every record of its {}",
                p.span_of(key),
                plugin.name,
                owner.plugin
            );
        }
        let instance = format!("{}.{id}", plugin.name);
        let alias: Arc<str> = Arc::from(p.str("alias").unwrap_or(&instance));
        log_settings.extend(log_setting(&alias, &p));
        let mut filter = (plugin.build)(
            &p,
            &BuildContext {
                instance: &alias,
                ..*ctx
            },
        )?;
        // An output processor's emitter is an input of its own (an input processor's
        // records continue at its next stage instead).
        if let (Some(e), Some(reg)) = (filter.emitter(), emitter_inputs.as_mut()) {
            register_emitter(e, &p, plugin.name, &alias, reg)?;
        }
        if let Some(spec) = &unit.condition {
            filter = Box::new(plugins::processors::Conditional::new(
                plugins::processors::Condition::from_spec(spec)?,
                filter,
            ));
        }
        chain.logs.push(FilterInstance {
            name: alias,
            matcher: Matcher::new(Some("*"), None)
                .ok()
                .flatten()
                .expect("'*' is a valid match"),
            filter,
            metrics: Arc::<FilterMetrics>::default(),
        });
    }
    Ok(chain)
}

/// Registers a filter's or an output processor's emitter as an input: its name must
/// be unique among inputs and emitters; `emitter_storage.type filesystem` needs
/// `storage.path` (without it, memory, said once as for an input).
struct EmitterInputs<'a> {
    inputs: &'a [InputInstance],
    /// The emitters registered so far: name and metrics.
    emitters: &'a mut Vec<(Arc<str>, Arc<InputMetrics>)>,
    /// `storage.path` is set.
    storage: bool,
}

fn register_emitter(
    e: &mut emitter::Emitter,
    p: &Props,
    plugin: &str,
    name: &str,
    reg: &mut EmitterInputs,
) -> Result<(), ConfigError> {
    let taken = reg.inputs.iter().any(|i| i.name == e.name)
        || reg.emitters.iter().any(|(n, _)| *n == e.name);
    if taken {
        return Err(ConfigError::invalid(
            p.span_of("emitter_name"),
            format!(
                "[filter:{plugin}:{name}] emitter_name '{}' already exists",
                e.name
            ),
            Some("give this filter an emitter_name that no input or other emitter has".into()),
        ));
    }
    if e.filesystem && !reg.storage {
        crate::warn!(
            "{}: [storage] {}: emitter_storage.type filesystem needs [SERVICE] storage.path; without it the emitter buffers in memory only (a crash loses what is not delivered)",
            p.span_of("emitter_storage.type"),
            e.name
        );
        e.filesystem = false;
    }
    reg.emitters.push((e.name.clone(), e.metrics.clone()));
    Ok(())
}

fn matcher(p: &Props) -> Result<Option<Matcher>, ConfigError> {
    Matcher::new(p.str("match"), p.str("match_regex"))
        .map_err(|e| p.error("match_regex", format!("a valid regular expression ({e})")))
}

impl Pipeline {
    /// Validates every section against its plugin's table and builds the plugins.
    pub fn build(config: Config) -> Result<Pipeline, ConfigError> {
        let plugin_metrics = Arc::new(metrics::PluginMetrics::default());
        let dropped_tags = zero_limits(&config);
        let exit = shutdown::ExitRequest::new();
        // Processor instances are numbered after the pipeline's filters.
        let mut processor_id = config.filters.len();
        let mut log_settings = Vec::new();
        let registry_slot = Arc::new(std::sync::OnceLock::new());
        // What every plugin may read at build time; each gets its own instance name.
        let shared = BuildContext {
            service: &config.service,
            instance: "",
            metrics: &plugin_metrics,
            dropped_tags: &dropped_tags,
            parsers: &config.parsers,
            exit: &exit,
            main_dir: config.main_dir.as_deref(),
            vars: &config.vars,
            registry: &registry_slot,
        };
        let mut inputs = Vec::new();
        for (id, inst) in config.inputs.iter().enumerate() {
            let plugin = plugins::input(&inst.plugin).ok_or_else(|| {
                unknown_plugin(inst, plugins::INPUTS.iter().map(|p| p.name).collect())
            })?;
            let core: &[&'static [PropSpec]] = if plugin.net {
                &[
                    CORE_COMMON_PROPS,
                    CORE_INPUT_PROPS,
                    DOWNSTREAM_NET_PROPS,
                    TLS_PROPS,
                    DOWNSTREAM_TLS_PROPS,
                ]
            } else if plugin.upstream {
                &[CORE_COMMON_PROPS, CORE_INPUT_PROPS, NET_PROPS, TLS_PROPS]
            } else {
                &[CORE_COMMON_PROPS, CORE_INPUT_PROPS]
            };
            let p = props(inst, plugin.name, plugin.props, core)?;
            // Input ids are global across inputs, as Fluent Bit numbers them.
            let instance = format!("{}.{id}", plugin.name);
            let name: Arc<str> = Arc::from(p.str("alias").unwrap_or(&instance));
            let ctx = BuildContext {
                instance: &name,
                ..shared
            };
            log_settings.extend(log_setting(&name, &p));
            let input = (plugin.build)(&p, &ctx)?;
            let processors =
                build_processors(inst, &ctx, &mut processor_id, &mut log_settings, None)?;
            let makes = input.signals();
            for (signal, units, made) in [
                ("logs", processors.logs.len(), makes.logs),
                ("metrics", processors.metrics.len(), makes.metrics),
            ] {
                if units > 0 && !made {
                    crate::warn!(
                        "{}: [config] {name}: its '{signal}:' processors never run: {} makes no {signal}",
                        inst.span,
                        plugin.name
                    );
                }
            }
            let mut filesystem = p
                .str("storage.type")
                .is_some_and(|t| t.eq_ignore_ascii_case("filesystem"));
            if filesystem && config.service.storage.is_none() {
                // Fluent Bit accepts it and buffers in memory; say what is missing.
                crate::warn!(
                    "{}: [storage] {name}: storage.type filesystem needs [SERVICE] storage.path; without it this input buffers in memory only (a crash loses what is not delivered)",
                    p.span_of("storage.type")
                );
                filesystem = false;
            }
            inputs.push(InputInstance {
                filesystem,
                mem_buf_limit: match p.size("mem_buf_limit") {
                    Some(0) => {
                        crate::warn!(
                            "{}: [config] {name}: mem_buf_limit 0: nothing bounds the memory of this input's undelivered records, and a stalled output can exhaust the host's memory (remove the line for the default 64M, or set a size)",
                            p.span_of("mem_buf_limit")
                        );
                        None
                    }
                    limit => Some(limit.unwrap_or(DEFAULT_MEM_BUF_LIMIT)),
                },
                routable: p.bool("routable").unwrap_or(true),
                threaded: p.bool("threaded").unwrap_or(false),
                gate: match p.bool("rate_gate") {
                    Some(true) => {
                        let ratio = p.double("rate_gate.resume_ratio").unwrap_or(0.8);
                        if !(ratio > 0.0 && ratio <= 1.0) {
                            return Err(p.error(
                                "rate_gate.resume_ratio",
                                "a fraction > 0 and <= 1, such as 0.8",
                            ));
                        }
                        let window = p
                            .time("rate_window")
                            .unwrap_or(std::time::Duration::from_secs(1));
                        if window.is_zero() {
                            return Err(p.error("rate_window", "a duration > 0, such as 1s"));
                        }
                        Some(Arc::new(RateGate {
                            max_records: p.int("rate_gate.max_records").unwrap_or(0).max(0) as f64,
                            max_bytes: p.size("rate_gate.max_bytes").unwrap_or(0) as f64,
                            window,
                            resume_ratio: ratio,
                            name: name.clone(),
                            seen: Default::default(),
                        }))
                    }
                    _ => None,
                },
                tag: Arc::from(p.str("tag").unwrap_or(&instance)),
                name,
                plugin: plugin.name,
                input,
                metrics: Arc::default(),
                processors: processors.logs,
                metric_processors: processors.metrics,
            });
            if let Some(i) = inputs.last() {
                metrics::set(&i.metrics.mem_limit, i.mem_buf_limit.unwrap_or(0));
                metrics::set(&i.metrics.filesystem, i.filesystem as u64);
            }
        }
        let mut filters = Vec::new();
        let storage = config.service.storage.is_some();
        // Filters' and output processors' emitter inputs (rewrite_tag): name and metrics.
        let mut emitters: Vec<(Arc<str>, Arc<InputMetrics>)> = Vec::new();
        for (id, inst) in config.filters.iter().enumerate() {
            let plugin = plugins::filter(&inst.plugin).ok_or_else(|| {
                unknown_plugin(inst, plugins::FILTERS.iter().map(|p| p.name).collect())
            })?;
            let p = props(
                inst,
                plugin.name,
                plugin.props,
                &[CORE_COMMON_PROPS, CORE_MATCH_PROPS],
            )?;
            let instance = format!("{}.{id}", plugin.name);
            let name: Arc<str> = Arc::from(p.str("alias").unwrap_or(&instance));
            log_settings.extend(log_setting(&name, &p));
            let Some(matcher) = matcher(&p)? else {
                return Err(ConfigError::NoMatch {
                    span: inst.span.clone(),
                    instance: name.to_string(),
                });
            };
            let filter = (plugin.build)(
                &p,
                &BuildContext {
                    instance: &name,
                    ..shared
                },
            )?;
            let mut filter = filter;
            if let Some(e) = filter.emitter() {
                let mut reg = EmitterInputs {
                    inputs: &inputs,
                    emitters: &mut emitters,
                    storage,
                };
                register_emitter(e, &p, plugin.name, &name, &mut reg)?;
            }
            filters.push(FilterInstance {
                name,
                matcher,
                filter,
                metrics: Arc::<FilterMetrics>::default(),
            });
        }
        let mut outputs = Vec::new();
        for (id, inst) in config.outputs.iter().enumerate() {
            let plugin = plugins::output(&inst.plugin).ok_or_else(|| {
                unknown_plugin(inst, plugins::OUTPUTS.iter().map(|p| p.name).collect())
            })?;
            let core: &[&'static [PropSpec]] = if plugin.net {
                &[
                    CORE_COMMON_PROPS,
                    CORE_MATCH_PROPS,
                    CORE_OUTPUT_PROPS,
                    NET_PROPS,
                    TLS_PROPS,
                ]
            } else {
                &[CORE_COMMON_PROPS, CORE_MATCH_PROPS, CORE_OUTPUT_PROPS]
            };
            // [SERVICE] dns.* are the defaults of a networked output's net.dns.*.
            let with_dns;
            let inst = if plugin.net && !config.service.dns_defaults.is_empty() {
                let mut i = inst.clone();
                for d in &config.service.dns_defaults {
                    if !i.entries.iter().any(|e| e.key == d.key) {
                        i.entries.push(d.clone());
                    }
                }
                with_dns = i;
                &with_dns
            } else {
                inst
            };
            let p = props(inst, plugin.name, plugin.props, core)?;
            let instance = format!("{}.{id}", plugin.name);
            let name: Arc<str> = Arc::from(p.str("alias").unwrap_or(&instance));
            let limit =
                RetryPolicy::parse_limit(p.str("retry_limit").unwrap_or("1")).ok_or_else(|| {
                    p.error(
                        "retry_limit",
                        "a number > 0, no_limits, false or no_retries",
                    )
                })?;
            let n_workers = match p.int("workers") {
                Some(w) if w < 1 => return Err(p.error("workers", "a number of workers >= 1")),
                Some(w) => w as usize,
                None => plugin.workers,
            };
            let ctx = BuildContext {
                instance: &name,
                ..shared
            };
            log_settings.extend(log_setting(&name, &p));
            let first = (plugin.build)(&p, &ctx)?;
            let processors = build_processors(
                inst,
                &ctx,
                &mut processor_id,
                &mut log_settings,
                Some(EmitterInputs {
                    inputs: &inputs,
                    emitters: &mut emitters,
                    storage,
                }),
            )?;
            if !processors.metrics.is_empty() && !first.signals().metrics {
                crate::warn!(
                    "{}: [config] {name}: its 'metrics:' processors never run: {} takes no metrics",
                    inst.span,
                    plugin.name
                );
            }
            let mut workers: Vec<_> = (1..n_workers).map(|_| first.fork()).collect();
            workers.insert(0, first);
            outputs.push(OutputInstance {
                signals: workers[0].signals(),
                unsupported: workers[0].unsupported_signals(),
                total_limit: p.size("storage.total_limit_size").filter(|l| *l > 0),
                limit: crate::plugins::filters::limit::quota(
                    &p,
                    "limit.max_records_per_second",
                    "limit.burst",
                )?,
                // One input and one output: the output takes everything when it has
                // no Match (Fluent Bit's 1:1 quick setup, `fluent-bit -i dummy -o stdout`).
                matcher: match matcher(&p)? {
                    None if config.inputs.len() == 1 && config.outputs.len() == 1 => {
                        Matcher::new(Some("*"), None).ok().flatten()
                    }
                    m => m,
                },
                name,
                plugin: plugin.name,
                workers,
                retry: RetryPolicy {
                    limit,
                    base: config.service.scheduler_base,
                    cap: config.service.scheduler_cap,
                },
                metrics: Arc::default(),
                processors: processors.logs,
                metric_processors: processors.metrics,
            });
        }
        let registry = Arc::new(metrics::Registry {
            start: std::time::SystemTime::now(),
            inputs: inputs
                .iter()
                .map(|i| (i.name.clone(), i.metrics.clone()))
                .chain(emitters)
                .collect(),
            filters: filters
                .iter()
                .chain(inputs.iter().flat_map(|i| &i.processors))
                .chain(outputs.iter().flat_map(|o| &o.processors))
                .map(|f| (f.name.clone(), f.metrics.clone()))
                .collect(),
            outputs: outputs
                .iter()
                .map(|o| (o.name.clone(), o.metrics.clone()))
                .collect(),
            plugins: plugin_metrics,
            storage_metrics: config.service.storage_metrics,
        });
        let _ = registry_slot.set(registry.clone());
        Ok(Pipeline {
            config,
            inputs,
            filters,
            outputs,
            registry,
            log_settings,
            exit,
        })
    }

    /// Every instance's metrics, for the monitoring server.
    pub fn registry(&self) -> Arc<metrics::Registry> {
        self.registry.clone()
    }

    /// Runs until `trigger` fires and everything is delivered, or until the grace
    /// period ends. An input that fails stops the agent (as a plugin that cannot start
    /// stops Fluent Bit).
    pub async fn run(self, trigger: Arc<ShutdownTrigger>) -> RunReport {
        let shutdown = trigger.subscribe();
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let Pipeline {
            config,
            inputs,
            mut filters,
            outputs,
            log_settings,
            exit,
            registry,
        } = self;
        crate::log::set_instances(log_settings);
        // Opened before anything runs: an input that asks for filesystem buffering
        // never runs without it (a read-only or unwritable storage.path stops the start).
        let storage = match &config.service.storage {
            Some((dir, full, checksum)) => match storage::Store::open(dir, *full, *checksum) {
                Ok(mut s) => {
                    s.counters = storage::StorageCounters::register(&registry.plugins);
                    Ok(Some(s))
                }
                Err(e) if inputs.iter().any(|i| i.filesystem) => {
                    crate::error!(
                        "[storage] cannot use storage.path {}: {e}; inputs with storage.type filesystem need it (fix storage.path, or use storage.type memory)",
                        dir.display()
                    );
                    Err(RunReport {
                        pending: 0,
                        input_failed: true,
                        exit_status: None,
                    })
                }
                Err(e) => {
                    crate::warn!(
                        "[storage] cannot use storage.path {}: {e}; no input uses storage.type filesystem",
                        dir.display()
                    );
                    Ok(None)
                }
            },
            None => Ok(None),
        };
        exit.connect(trigger.clone());
        let grace = config.service.grace;
        crate::info!(
            "[engine] Shutdown Grace Period={}, Shutdown Input Grace Period={}",
            grace.map_or(-1, |g| g.as_secs() as i64),
            grace.map_or(-1, |g| (g.as_secs() / 2) as i64)
        );
        for o in &outputs {
            if o.matcher.is_none() {
                crate::warn!("[router] NO match for {} output instance", o.name);
            }
        }
        let mut outputs = outputs;
        for o in &mut outputs {
            if let Some(first) = o.workers.first_mut() {
                if let Err(e) = first.start().await {
                    crate::error!("[output:{}:{}] {e}", o.plugin, o.name);
                    return RunReport {
                        pending: 0,
                        input_failed: true,
                        exit_status: None,
                    };
                }
            }
        }
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let mut tasks = tokio::task::JoinSet::new();
        let mut routes = Vec::new();
        let mut output_metrics = Vec::new();
        let (reemit_tx, reemit_rx) = mpsc::unbounded_channel();
        let mut out_emitters = Vec::new();
        let mut has_emitters = false;
        for (index, mut o) in outputs.into_iter().enumerate() {
            let limiter = o.limit.map(|q| {
                crate::plugins::filters::ratelimit::KeyedLimiter::new(
                    q,
                    crate::plugins::filters::ratelimit::KeyBy::None,
                    1,
                    std::time::Instant::now(),
                )
            });
            for (j, f) in o.processors.iter_mut().enumerate() {
                if let Some(e) = f.filter.emitter() {
                    crate::info!("[input:emitter:{}] initializing", e.name);
                    has_emitters = true;
                    out_emitters.push((engine::out_emitter(index, j), e.info()));
                }
            }
            // With log processors the output's limit comes after them, in the chain.
            let (chain, limiter) = if o.processors.is_empty() && o.metric_processors.is_empty() {
                (None, limiter)
            } else {
                let logs = !o.processors.is_empty();
                let (in_chain, in_engine) = if logs {
                    (limiter, None)
                } else {
                    (None, limiter)
                };
                let chain = engine::OutputChain::new(
                    index,
                    std::mem::take(&mut o.processors),
                    std::mem::take(&mut o.metric_processors),
                    in_chain,
                    reemit_tx.clone(),
                );
                (Some(Arc::new(chain)), in_engine)
            };
            let mut queues = Vec::new();
            for (id, output) in o.workers.into_iter().enumerate() {
                let (qtx, qrx) = mpsc::channel(OUTPUT_QUEUE);
                queues.push(qtx);
                let worker = OutputWorker {
                    name: o.name.clone(),
                    plugin: o.plugin,
                    id,
                    output,
                    retry: o.retry,
                    metrics: o.metrics.clone(),
                    chain: chain.clone(),
                };
                let run = worker.run(qrx, shutdown.clone());
                // An output with processors runs each worker, with the processors, in
                // a thread of its own (as Fluent Bit's output worker threads do): a
                // slow chain holds that output only.
                if chain.is_none() {
                    tasks.spawn(run);
                    continue;
                }
                let run: crate::plugins::BoxFuture<'static, Result<(), PluginError>> =
                    Box::pin(async move {
                        run.await;
                        Ok(())
                    });
                match own_thread(&format!("out:{}.{id}", o.name), 1, run) {
                    Ok(run) => {
                        tasks.spawn(async move {
                            let _ = run.await;
                        });
                    }
                    Err(e) => {
                        crate::error!(
                            "[output:{}:{}] cannot start its thread: {e}",
                            o.plugin,
                            o.name
                        );
                        return RunReport {
                            pending: 0,
                            input_failed: true,
                            exit_status: None,
                        };
                    }
                }
            }
            output_metrics.push(o.metrics.clone());
            routes.push(OutputRoute {
                name: o.name,
                matcher: o.matcher,
                workers: queues,
                next: 0,
                metrics: o.metrics,
                total_limit: o.total_limit,
                held: Default::default(),
                chain,
                signals: o.signals,
                unsupported: o.unsupported,
                limiter,
            });
        }
        let mut input_names = Vec::new();
        let storage = match storage {
            Ok(s) => s,
            Err(report) => return report,
        };
        let fs_inputs = inputs
            .iter()
            .map(|i| i.filesystem.then(|| i.name.clone()))
            .collect();
        let mut inputs = inputs;
        // Input processors run in their input's task; the engine keeps a handle for
        // what they release at flush ticks and at shutdown.
        let input_chains: Vec<Option<engine::InputChain>> = inputs
            .iter_mut()
            .map(|i| {
                let chain = std::mem::take(&mut i.processors);
                (!chain.is_empty()).then(|| Arc::new(std::sync::Mutex::new(chain)))
            })
            .collect();
        let input_metric_chains: Vec<Option<engine::InputMetricsChain>> = inputs
            .iter_mut()
            .map(|i| {
                let chain = std::mem::take(&mut i.metric_processors);
                (!chain.is_empty()).then(|| Arc::new(std::sync::Mutex::new(chain)))
            })
            .collect();
        let (chunks_up, backlog_mem) = config.service.storage_limits;
        for f in filters.iter_mut() {
            if let Some(e) = f.filter.emitter() {
                crate::info!("[input:emitter:{}] initializing", e.name);
                has_emitters = true;
            }
        }
        let engine = Engine {
            has_emitters,
            reemitted: Vec::new(),
            reemit_rx,
            out_emitters,
            jobs: 0,
            chunks_up: storage.as_ref().map(|_| storage::Gate::new(chunks_up)),
            backlog_mem: storage.as_ref().map(|_| storage::Gate::new(backlog_mem)),
            storage,
            fs_inputs,
            frame: Vec::new(),
            filters,
            outputs: routes,
            flush: config.service.flush,
            adaptive: config
                .service
                .flush_adaptive
                .clone()
                .map(|c| engine::Adaptive::new(c, config.service.flush)),
            input_processors: input_chains.clone(),
        };
        tasks.spawn(engine.run(rx));
        let chains = input_chains.into_iter().zip(input_metric_chains);
        for (i, (inp, (processors, metric_processors))) in
            inputs.into_iter().zip(chains).enumerate()
        {
            // An input with processors runs them in a thread of its own (as Fluent Bit
            // runs processors in the input's thread), so a slow chain holds that input
            // only: not the engine, the outputs nor the runtime's other inputs.
            let threaded = inp.threaded || processors.is_some() || metric_processors.is_some();
            crate::info!("[input:{}:{}] initializing", inp.plugin, inp.name);
            let ctx = InputContext {
                name: inp.name.clone(),
                tag: inp.tag.clone(),
                out: InputSender {
                    input: i,
                    tag: inp.tag,
                    tx: tx.clone(),
                    gate: inp.gate,
                    routable: inp.routable,
                    metrics_source: inp.name.clone(),
                    membuf: inp.mem_buf_limit.map(|limit| {
                        Arc::new(MemBuf::new(limit, inp.name.clone(), inp.metrics.clone()))
                    }),
                    metrics: inp.metrics,
                    shutdown: shutdown.clone(),
                    processors,
                    metric_processors,
                },
                shutdown: shutdown.clone(),
            };
            let (name, plugin) = (inp.name, inp.plugin);
            input_names.push(name.clone());
            let threads = inp.input.threads();
            let run = inp.input.run(ctx);
            let run = if threaded {
                match own_thread(&format!("in:{name}"), threads, run) {
                    Ok(run) => run,
                    Err(e) => {
                        crate::error!("[input:{plugin}:{name}] cannot start its thread: {e}");
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        trigger.trigger();
                        continue;
                    }
                }
            } else {
                run
            };
            let (trigger, failed) = (trigger.clone(), failed.clone());
            tasks.spawn(async move {
                if let Err(e) = run.await {
                    crate::error!("[input:{plugin}:{name}] {e}");
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    trigger.trigger();
                }
            });
        }
        if input_names.is_empty() {
            // No input: the engine would stop at once; it waits for the stop signal, as
            // Fluent Bit keeps running without inputs.
            let mut stop = shutdown.clone();
            tasks.spawn(async move {
                stop.wait().await;
                drop(tx);
            });
        } else {
            drop(tx);
        }
        let input_names = input_names;

        let mut waiting = shutdown.clone();
        let all_done = join_all(&mut tasks, &failed, &trigger);
        tokio::pin!(all_done);
        tokio::select! {
            // A shutdown whose tasks all end at once (an expect filter's exit) is still
            // a shutdown, and says so.
            biased;
            _ = waiting.wait() => {
                crate::warn!("[engine] service will shutdown in max {} seconds", grace.map_or(-1, |g| g.as_secs() as i64));
                crate::info!("[engine] pausing all inputs..");
                for name in &input_names {
                    crate::info!("[input] pausing {name}");
                }
                match grace {
                    Some(g) => { let _ = tokio::time::timeout(g, &mut all_done).await; }
                    None => all_done.await,
                }
            }
            _ = &mut all_done => {}
        }
        let pending: u64 = output_metrics.iter().map(|m| m.pending_records()).sum();
        if let (true, Some((dir, _, _))) = (pending > 0, &config.service.storage) {
            crate::warn!("[storage] undelivered filesystem chunks stay in {} and are replayed at the next start", dir.display());
        }
        RunReport {
            pending,
            input_failed: failed.load(std::sync::atomic::Ordering::Relaxed),
            exit_status: exit.status(),
        }
    }
}

/// Runs a plugin's future (an input, an output worker) on a thread of its own named
/// `name`, on a current-thread runtime (or, for a plugin that uses several threads at
/// once, a runtime of `threads` threads); returns a future that ends as it does, for
/// the pipeline's task set. A panic on that thread is raised again in that future, so
/// the pipeline reports it as any task's panic.
fn own_thread(
    name: &str,
    threads: usize,
    run: crate::plugins::BoxFuture<'static, Result<(), PluginError>>,
) -> std::io::Result<crate::plugins::BoxFuture<'static, Result<(), PluginError>>> {
    let (done, ended) = tokio::sync::oneshot::channel();
    let rt = if threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name.to_string())
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(run)));
            let _ = done.send(result);
        })?;
    Ok(Box::pin(async move {
        match ended.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(PluginError::Closed),
        }
    }))
}

/// Waits for every task. One that panicked (a plugin's bug) is logged, marks the run
/// failed and starts the shutdown: the agent then exits 255, never quietly with 0.
async fn join_all(
    tasks: &mut tokio::task::JoinSet<()>,
    failed: &std::sync::atomic::AtomicBool,
    trigger: &ShutdownTrigger,
) {
    while let Some(ended) = tasks.join_next().await {
        if let Err(e) = ended {
            if e.is_panic() {
                crate::error!("[engine] a pipeline task panicked: {}", panic_text(e));
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                trigger.trigger();
            }
        }
    }
}

/// The message a panic carried.
fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// How a run ended.
pub struct RunReport {
    /// Records routed to outputs and neither delivered nor given up on.
    pub pending: u64,
    /// An input stopped with an error, or a pipeline task panicked.
    pub input_failed: bool,
    /// A plugin stopped the agent with this exit status (expect's `action exit`).
    pub exit_status: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_fails_the_run_and_starts_the_shutdown() {
        let (trigger, mut shutdown) = shutdown::channel();
        let failed = std::sync::atomic::AtomicBool::new(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async {});
        tasks.spawn(async { panic!("a plugin bug") });
        join_all(&mut tasks, &failed, &trigger).await;
        assert!(failed.load(std::sync::atomic::Ordering::Relaxed));
        shutdown.wait().await;

        let (trigger, shutdown) = shutdown::channel();
        let failed = std::sync::atomic::AtomicBool::new(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async {});
        join_all(&mut tasks, &failed, &trigger).await;
        assert!(!failed.load(std::sync::atomic::Ordering::Relaxed));
        assert!(!shutdown.is_set());
    }

    /// An input on a thread of its own ends as its future does, on that thread; its
    /// panic reaches the pipeline's task set as a panic with its text.
    #[tokio::test]
    async fn an_input_thread_reports_its_result_and_its_panic() {
        let here = std::thread::current().id();
        let run: crate::plugins::BoxFuture<'static, Result<(), PluginError>> =
            Box::pin(async move {
                assert_ne!(std::thread::current().id(), here);
                assert_eq!(std::thread::current().name(), Some("in:dummy.0"));
                Err(PluginError::Closed)
            });
        assert!(matches!(
            own_thread("in:dummy.0", 1, run).unwrap().await,
            Err(PluginError::Closed)
        ));
        // An input that uses several threads at once (forward's `workers`) keeps them.
        let run: crate::plugins::BoxFuture<'static, Result<(), PluginError>> =
            Box::pin(async move {
                assert_eq!(
                    tokio::runtime::Handle::current().runtime_flavor(),
                    tokio::runtime::RuntimeFlavor::MultiThread
                );
                let worker =
                    tokio::spawn(async { std::thread::current().name().map(str::to_string) });
                assert_eq!(worker.await.unwrap().as_deref(), Some("in:forward.0"));
                Ok(())
            });
        assert!(own_thread("in:forward.0", 2, run).unwrap().await.is_ok());
        let run: crate::plugins::BoxFuture<'static, Result<(), PluginError>> =
            Box::pin(async { panic!("a processor bug") });
        let mut tasks = tokio::task::JoinSet::new();
        let run = own_thread("in:dummy.1", 1, run).unwrap();
        tasks.spawn(async move { run.await.map(|_| ()).unwrap_or(()) });
        let e = tasks.join_next().await.unwrap().unwrap_err();
        assert!(e.is_panic());
        assert_eq!(panic_text(e), "a processor bug");
    }
}
