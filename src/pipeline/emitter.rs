//! The emitter: how a filter hands out records under new tags (rewrite_tag). The engine
//! takes what a filter emitted right after each `filter` call and ingests it again,
//! from the first filter that matches the new tag to the outputs, as records of an
//! input of the filter's own (named `emitter_for_<filter>` unless `emitter_name` says
//! otherwise, with its own chunks and input metrics).
//! Fluent Bit: plugins/in_emitter/emitter.c
//!
//! Like Fluent Bit's, an emitter refuses the records it emitted itself (a filter that
//! matches its own output would rewrite them forever): the record goes on under the tag
//! it has. Fluent Bit has no bound on a cycle through several filters (A emits to what B
//! matches and B to what A matches); we refuse a record's emission once it has been
//! re-emitted `MAX_HOPS` times in a chain, the same way, and count it.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::metrics::{self, InputMetrics};
use super::MemBuf;
use crate::event::{Chunk, Record};

/// Re-emissions of one record in a chain after which the next one is refused.
pub const MAX_HOPS: u32 = 10;

/// Why the engine refuses a filter's emissions for the batch it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The batch came out of this very emitter.
    Cycle,
    /// The batch was re-emitted `MAX_HOPS` times already.
    TooDeep,
}

/// A filter's emitter input. Owned by the filter; the engine reads its name and
/// metrics when the pipeline is built and takes its chunks after every `filter` call.
pub struct Emitter {
    /// `emitter_name`: this input's name in logs and metrics.
    pub name: Arc<str>,
    /// Its input counters (records it emitted into the pipeline).
    pub metrics: Arc<InputMetrics>,
    /// `emitter_storage.type filesystem`: its chunks are written to `storage.path`.
    pub filesystem: bool,
    /// `emitter_mem_buf_limit`: its records not yet delivered over it pause the
    /// pipeline (the engine waits for them).
    pub membuf: Option<Arc<MemBuf>>,
    /// Emitted records not taken by the engine yet, one chunk per tag in the order the
    /// tags first appeared (Fluent Bit's em_chunk list).
    chunks: Vec<Chunk>,
    refusal: Option<Refusal>,
    cycle_reported: bool,
    deep_reported: bool,
    refused: Arc<AtomicU64>,
}

/// What the engine needs of an emitter beside its records: its name, storage, counts
/// and `emitter_mem_buf_limit`.
#[derive(Clone)]
pub struct EmitterInfo {
    pub name: Arc<str>,
    pub filesystem: bool,
    pub metrics: Arc<InputMetrics>,
    pub membuf: Option<Arc<MemBuf>>,
}

impl Emitter {
    pub fn info(&self) -> EmitterInfo {
        EmitterInfo {
            name: self.name.clone(),
            filesystem: self.filesystem,
            metrics: self.metrics.clone(),
            membuf: self.membuf.clone(),
        }
    }

    pub fn new(
        name: Arc<str>,
        filesystem: bool,
        mem_buf_limit: u64,
        metrics: &metrics::PluginMetrics,
    ) -> Emitter {
        let refused = metrics.counter(
            "agent_emitter_refused_records_total",
            "Records an emitter refused to re-emit: its own output, or re-emitted too many times in a chain; they went on under their tag.",
            &name,
        );
        let input_metrics: Arc<InputMetrics> = Arc::default();
        Emitter {
            membuf: (mem_buf_limit > 0).then(|| {
                Arc::new(MemBuf::new(
                    mem_buf_limit,
                    name.clone(),
                    input_metrics.clone(),
                ))
            }),
            name,
            metrics: input_metrics,
            filesystem,
            chunks: Vec::new(),
            refusal: None,
            cycle_reported: false,
            deep_reported: false,
            refused,
        }
    }

    /// Emits `rec` under `tag`; gives it back when the emission is refused (the
    /// caller keeps it under its current tag, as Fluent Bit does).
    pub fn emit(&mut self, tag: &str, rec: Record) -> Result<(), Record> {
        if let Some(why) = self.refusal {
            metrics::add(&self.refused, 1);
            match why {
                Refusal::Cycle if !self.cycle_reported => {
                    self.cycle_reported = true;
                    crate::error!("[input:emitter:{}] emitter cycle detected: the filter attached to this emitter matches the records it emits (tag={tag}), the emission is rejected. Adjust the filter 'Match' or its rules so emitted records are not processed again", self.name);
                }
                Refusal::TooDeep if !self.deep_reported => {
                    self.deep_reported = true;
                    crate::warn!("[input:emitter:{}] a record re-emitted {MAX_HOPS} times in a chain would be re-emitted again (tag={tag}): the emission is refused and the record goes on under its tag (counted in agent_emitter_refused_records_total). Filters rewrite each other's output in a cycle; adjust their 'Match' or rules", self.name);
                }
                _ => {}
            }
            return Err(rec);
        }
        match self.chunks.iter_mut().find(|c| &*c.tag == tag) {
            Some(c) => c.records.push(rec),
            None => self.chunks.push(Chunk::new(Arc::from(tag), vec![rec])),
        }
        Ok(())
    }

    /// Set by the engine before each `filter` call.
    pub(crate) fn set_refusal(&mut self, refusal: Option<Refusal>) {
        self.refusal = refusal;
    }

    /// What was emitted since the last call.
    pub(crate) fn take(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn rec(n: i64) -> Record {
        Record::new(
            EventTime::new(n, 0),
            vec![(Arc::from("n"), crate::event::Value::Int(n))],
        )
    }

    #[test]
    fn groups_per_tag_in_first_seen_order_and_refuses_when_told() {
        let m = metrics::PluginMetrics::default();
        let mut e = Emitter::new(Arc::from("em"), false, 0, &m);
        e.emit("b", rec(1)).unwrap();
        e.emit("a", rec(2)).unwrap();
        e.emit("b", rec(3)).unwrap();
        let chunks = e.take();
        let tags: Vec<(&str, usize)> = chunks.iter().map(|c| (&*c.tag, c.records.len())).collect();
        assert_eq!(tags, [("b", 2), ("a", 1)]);
        assert!(e.take().is_empty());
        e.set_refusal(Some(Refusal::Cycle));
        assert_eq!(e.emit("x", rec(4)).unwrap_err(), rec(4));
        e.set_refusal(Some(Refusal::TooDeep));
        assert!(e.emit("x", rec(5)).is_err());
        assert!(e.take().is_empty());
        assert_eq!(metrics::get(&m.all()[0].value), 2);
    }
}
