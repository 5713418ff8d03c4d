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
use super::metrics::{self, FilterMetrics, OutputMetrics};
use super::router::Matcher;
use super::storage::{ChunkFile, Gate, Store};
use crate::event::{Chunk, Record, Tag};
use crate::plugins::filters::ratelimit::KeyedLimiter;
use crate::plugins::Filter;

/// Records from one input, as sent through the engine's channel.
pub struct InputBatch {
    pub input: usize,
    pub tag: Tag,
    pub records: Vec<Record>,
    /// Runs once every output is done with these records (see `ack`).
    pub ack: Option<AckFn>,
}

/// A chunk is handed to outputs early once it holds this many records, which bounds
/// memory at high rates without changing what low-rate inputs see.
pub const CHUNK_MAX_RECORDS: usize = 4096;

/// The input index of chunks replayed from storage.
const REPLAY: usize = usize::MAX - 1;

pub struct FilterInstance {
    pub name: Arc<str>,
    pub matcher: Matcher,
    pub filter: Box<dyn Filter>,
    pub metrics: Arc<FilterMetrics>,
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
    /// Match shares with other outputs.
    pub limiter: Option<KeyedLimiter>,
    /// `storage.total_limit_size`: bytes of filesystem chunks queued for this output
    /// above which the oldest are dropped.
    pub total_limit: Option<u64>,
    /// Filesystem chunks queued here, oldest first, with their bytes.
    pub held: std::collections::VecDeque<(u64, Arc<Routed>)>,
    /// YAML `processors:` of this output: run on its copy of every chunk, in order.
    pub processors: Vec<FilterInstance>,
}

/// Which filters and outputs a tag goes to, computed once per tag.
struct Route {
    filters: Vec<usize>,
    outputs: Vec<usize>,
}

struct Pending {
    input: usize,
    tag: Tag,
    records: Vec<Record>,
    acks: Vec<AckFn>,
    /// The chunk's file, for filesystem-buffered inputs.
    file: Option<ChunkFile>,
}

pub struct Engine {
    pub filters: Vec<FilterInstance>,
    pub outputs: Vec<OutputRoute>,
    pub flush: Duration,
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
    /// Per input index: its YAML `processors:`, run on its records before any filter.
    pub input_processors: Vec<Vec<FilterInstance>>,
}

/// Runs one filter on `records`, counting what it takes, drops and adds.
fn run_filter(f: &mut FilterInstance, tag: &Tag, records: &mut Vec<Record>, now: Instant) {
    let before = records.len() as u64;
    f.filter.filter(tag, records, now);
    let after = records.len() as u64;
    metrics::add(&f.metrics.records, before);
    metrics::add(&f.metrics.drop_records, before.saturating_sub(after));
    metrics::add(&f.metrics.add_records, after.saturating_sub(before));
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
        let mut tick = tokio::time::interval(self.flush);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some(batch) = batch else { break };
                    if let Some(i) = self.ingest(batch, &mut routes, &mut pending) {
                        let p = pending.swap_remove(i);
                        self.dispatch(p, &mut routes).await;
                    }
                }
                _ = tick.tick() => self.flush_all(&mut routes, &mut pending, false).await,
            }
        }
        self.flush_all(&mut routes, &mut pending, true).await;
        // Dropping the queues' senders ends the output workers once they drain.
        self.outputs.iter_mut().for_each(|o| o.workers.clear());
    }

    fn route<'a>(&self, routes: &'a mut HashMap<Tag, Route>, tag: &Tag) -> &'a Route {
        routes.entry(tag.clone()).or_insert_with(|| Route {
            filters: (0..self.filters.len())
                .filter(|&i| self.filters[i].matcher.matches(tag))
                .collect(),
            outputs: (0..self.outputs.len())
                .filter(|&i| {
                    self.outputs[i]
                        .matcher
                        .as_ref()
                        .is_some_and(|m| m.matches(tag))
                })
                .collect(),
        })
    }

    /// Filters a batch and appends it to its pending chunk; returns that chunk's index
    /// when it is full.
    fn ingest(
        &mut self,
        batch: InputBatch,
        routes: &mut HashMap<Tag, Route>,
        pending: &mut Vec<Pending>,
    ) -> Option<usize> {
        let InputBatch {
            input,
            tag,
            mut records,
            ack,
        } = batch;
        let now = Instant::now();
        if let Some(chain) = self.input_processors.get_mut(input) {
            run_chain(chain, &tag, &mut records, now);
            if records.is_empty() {
                ack::run_now(ack.into_iter().collect());
                return None;
            }
        }
        let filters = self.route(routes, &tag).filters.clone();
        for i in filters {
            run_filter(&mut self.filters[i], &tag, &mut records, now);
            if records.is_empty() {
                ack::run_now(ack.into_iter().collect());
                return None;
            }
        }
        let i = match pending
            .iter()
            .position(|p| p.input == input && p.tag == tag)
        {
            Some(i) => i,
            None => {
                pending.push(Pending {
                    input,
                    tag,
                    records: Vec::new(),
                    acks: Vec::new(),
                    file: None,
                });
                pending.len() - 1
            }
        };
        self.persist(&mut pending[i], &records);
        pending[i].records.append(&mut records);
        pending[i].acks.extend(ack);
        (pending[i].records.len() >= CHUNK_MAX_RECORDS).then_some(i)
    }

    async fn flush_all(
        &mut self,
        routes: &mut HashMap<Tag, Route>,
        pending: &mut Vec<Pending>,
        last: bool,
    ) {
        let now = Instant::now();
        let mut emitted: Vec<(Chunk, Target)> = Vec::new();
        // Input processors first: what one releases passes the rest of its chain, then
        // every filter matching its tag.
        for input in 0..self.input_processors.len() {
            for j in 0..self.input_processors[input].len() {
                let mut extra = Vec::new();
                let f = &mut self.input_processors[input][j].filter;
                if last {
                    f.shutdown(now, &mut extra);
                } else {
                    f.tick(now, &mut extra);
                }
                for mut chunk in extra {
                    run_chain(
                        &mut self.input_processors[input][j + 1..],
                        &chunk.tag,
                        &mut chunk.records,
                        now,
                    );
                    let filters = self.route(routes, &chunk.tag).filters.clone();
                    for i in filters {
                        if chunk.records.is_empty() {
                            break;
                        }
                        run_filter(&mut self.filters[i], &chunk.tag, &mut chunk.records, now);
                    }
                    if !chunk.records.is_empty() {
                        emitted.push((chunk, Target::Routed));
                    }
                }
            }
        }
        for i in 0..self.filters.len() {
            let mut extra = Vec::new();
            let f = &mut self.filters[i];
            if last {
                f.filter.shutdown(now, &mut extra);
            } else {
                f.filter.tick(now, &mut extra);
            }
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
                for j in later {
                    if chunk.records.is_empty() {
                        break;
                    }
                    run_filter(&mut self.filters[j], &chunk.tag, &mut chunk.records, now);
                }
                if !chunk.records.is_empty() {
                    emitted.push((chunk, Target::Routed));
                }
            }
        }
        // Output processors: what one releases goes to its own output only.
        for o in 0..self.outputs.len() {
            for j in 0..self.outputs[o].processors.len() {
                let mut extra = Vec::new();
                let f = &mut self.outputs[o].processors[j].filter;
                if last {
                    f.shutdown(now, &mut extra);
                } else {
                    f.tick(now, &mut extra);
                }
                emitted.extend(extra.into_iter().map(|c| {
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
        // Records held by a filter (a multiline record completed by its timeout) are
        // newer than what is pending: they go after it.
        for p in pending.drain(..) {
            self.dispatch(p, routes).await;
        }
        for (chunk, target) in emitted {
            // Records emitted by a filter's tick go to outputs only (input index MAX).
            let p = Pending {
                input: usize::MAX,
                tag: chunk.tag,
                records: chunk.records,
                acks: Vec::new(),
                file: None,
            };
            self.dispatch_to(p, routes, target).await;
        }
    }

    /// Sends one chunk to every matching output; waits when a queue is full
    /// (backpressure reaches the inputs through the bounded input channel).
    /// Writes accepted records of a filesystem-buffered input to the chunk's file. A
    /// write error keeps the records in memory (logged): they are still delivered.
    fn persist(&mut self, p: &mut Pending, records: &[Record]) {
        let (Some(store), Some(Some(input))) = (&self.storage, self.fs_inputs.get(p.input)) else {
            return;
        };
        if p.file.is_none() {
            match store.create(input, &p.tag) {
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
        for path in files {
            match store.load(&path) {
                Ok(loaded) => {
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
                    let p = Pending {
                        input: REPLAY,
                        tag: loaded.tag,
                        records: loaded.records,
                        acks: vec![delete],
                        file: None,
                    };
                    self.dispatch(p, routes).await;
                }
                Err(e) => crate::error!("[storage] cannot read {}: {e}", path.display()),
            }
        }
        // At-least-once: records of chunks in flight at the failure may have been
        // delivered already and arrive again; this is the most that can repeat.
        crate::info!("[storage] replayed {replayed} records (at most these can arrive twice)");
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
        if p.records.is_empty() {
            ack::run_now(p.acks);
            return;
        }
        let outputs: Vec<usize> = match target {
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
        let full = Routed::new(
            Chunk {
                tag: p.tag,
                records: p.records,
            },
            completion.clone(),
        );
        let now = Instant::now();
        for i in outputs {
            let o = &mut self.outputs[i];
            // This output's processors work on its own copy of the records.
            let processed = match target {
                Target::Output { from, .. } => (from < o.processors.len()).then_some(from),
                Target::Routed => (!o.processors.is_empty()).then_some(0),
            }
            .map(|from| {
                let mut records = full.chunk.records.clone();
                run_chain(
                    &mut o.processors[from..],
                    &full.chunk.tag,
                    &mut records,
                    now,
                );
                records
            });
            if processed.as_ref().is_some_and(Vec::is_empty) {
                full.finish(); // its processors dropped everything: this route is done
                continue;
            }
            let own_copy = o.total_limit.is_some() && on_disk;
            let routed = match (&mut o.limiter, processed) {
                (None, Some(records)) => Routed::new(
                    Chunk {
                        tag: full.chunk.tag.clone(),
                        records,
                    },
                    completion.clone(),
                ),
                (None, None) if own_copy => Routed::new(full.chunk.clone(), completion.clone()),
                (None, None) => full.clone(),
                (Some(limiter), processed) => {
                    let kept: Vec<Record> = processed
                        .as_deref()
                        .unwrap_or(&full.chunk.records)
                        .iter()
                        .filter(|r| limiter.allow(&r.body, now))
                        .cloned()
                        .collect();
                    let dropped = (processed
                        .as_ref()
                        .map_or(full.chunk.records.len(), Vec::len)
                        - kept.len()) as u64;
                    metrics::add(&o.metrics.limit_dropped_records, dropped);
                    if kept.is_empty() {
                        full.finish(); // this route is done: nothing passes its limit
                        continue;
                    }
                    Routed::new(
                        Chunk {
                            tag: full.chunk.tag.clone(),
                            records: kept,
                        },
                        completion.clone(),
                    )
                }
            };
            let n = routed.chunk.records.len() as u64;
            if let (true, Some(limit)) = (own_copy, o.total_limit) {
                // Chunks the workers are done with (only we hold them) leave the count.
                o.held.retain(|(_, r)| Arc::strong_count(r) > 1);
                o.held.push_back((
                    routed.chunk.records.iter().map(Record::approx_size).sum(),
                    routed.clone(),
                ));
                while o.held.iter().map(|(b, _)| b).sum::<u64>() > limit && o.held.len() > 1 {
                    let (bytes, old) = o.held.pop_front().expect("more than one held");
                    old.cancel();
                    let dropped = old.chunk.records.len() as u64;
                    metrics::add(&o.metrics.dropped_records, dropped);
                    crate::warn!("[storage] {}: storage.total_limit_size reached: the oldest chunk ({dropped} records, ~{bytes} bytes) is dropped", o.name);
                }
            }
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
}
