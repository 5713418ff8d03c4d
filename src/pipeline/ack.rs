//! Delivery acknowledgements back to inputs: an input that must not lose data (tail's
//! offsets, later acked protocols) attaches an ack to a batch; it runs once every output
//! the records were routed to has finished with them — delivered, or given up on after
//! an error or the last retry (counted as dropped). It never runs for records still
//! buffered when the agent exits, so those are read again on the next start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::event::Chunk;

/// Runs when the records it was attached to are finished with.
pub type AckFn = Box<dyn FnOnce() + Send>;

/// A chunk on its way to outputs, with what to run once all of them are done.
pub struct Routed {
    pub chunk: Chunk,
    completion: Option<Arc<Completion>>,
    /// Given up before delivery (`storage.total_limit_size` dropped it as the oldest).
    cancelled: std::sync::atomic::AtomicBool,
    /// For an output with processors: what its worker runs them on before sending
    /// (then `chunk` holds the tag, and metric sets when it carries metrics).
    pub process: Option<Process>,
}

/// A chunk an output's worker runs through that output's processors (from stage
/// `from`) before it sends what is left.
pub struct Process {
    pub from: usize,
    /// The engine input index the records came from (an output processor's own
    /// emitter is not re-emitted into again), and how often they were re-emitted.
    pub origin: usize,
    pub hops: u32,
    /// The records (taken once by the worker) with their count and encoded bytes.
    pub records: Mutex<Vec<crate::event::Record>>,
    pub events: usize,
    pub bytes: u64,
    /// Runs once the chunk is processed, or dropped unprocessed (its worker gone):
    /// the engine waits for every queued chunk to be one or the other.
    pub queued: Mutex<Option<OnDrop>>,
}

/// Runs its function once, when dropped.
pub struct OnDrop(Option<Box<dyn FnOnce() + Send>>);

impl OnDrop {
    pub fn new(f: impl FnOnce() + Send + 'static) -> OnDrop {
        OnDrop(Some(Box::new(f)))
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Counts the routes of one dispatched batch; the last to finish runs the acks.
pub struct Completion {
    remaining: AtomicUsize,
    acks: Mutex<Vec<AckFn>>,
}

impl Completion {
    /// `None` when there is nothing to run (no acks): finishing is then free.
    pub fn new(routes: usize, acks: Vec<AckFn>) -> Option<Arc<Completion>> {
        (!acks.is_empty()).then(|| {
            Arc::new(Completion {
                remaining: AtomicUsize::new(routes),
                acks: Mutex::new(acks),
            })
        })
    }

    /// One more part to wait for (records an output's processor re-emitted from this
    /// chunk): the acks run once it has run too. Call while a route is still open.
    pub fn hold(self: &Arc<Self>) -> AckFn {
        self.remaining.fetch_add(1, Ordering::AcqRel);
        let c = self.clone();
        Box::new(move || c.finish())
    }

    /// One route is done. Call exactly once per route.
    pub fn finish(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let acks = std::mem::take(&mut *self.acks.lock().unwrap_or_else(|e| e.into_inner()));
            acks.into_iter().for_each(|ack| ack());
        }
    }
}

impl Routed {
    /// A chunk for one or more routes sharing `completion` (several routes may get
    /// different chunks, e.g. an output limit passes a subset, with one completion).
    pub fn new(chunk: Chunk, completion: Option<Arc<Completion>>) -> Arc<Routed> {
        Arc::new(Routed {
            chunk,
            completion,
            cancelled: Default::default(),
            process: None,
        })
    }

    /// A chunk its output's worker runs through the output's processors first.
    pub fn to_process(
        chunk: Chunk,
        completion: Option<Arc<Completion>>,
        process: Process,
    ) -> Arc<Routed> {
        Arc::new(Routed {
            chunk,
            completion,
            cancelled: Default::default(),
            process: Some(process),
        })
    }

    /// Its events (records or metric sets), before any output processor.
    pub fn events(&self) -> usize {
        match &self.process {
            Some(p) if !self.chunk.is_metrics() => p.events,
            _ => self.chunk.events(),
        }
    }

    /// Its encoded bytes, before any output processor.
    pub fn bytes(&self) -> u64 {
        match &self.process {
            Some(p) if !self.chunk.is_metrics() => p.bytes,
            _ => self.chunk.encoded_len(),
        }
    }

    /// One more part for the acks to wait for: records an output processor
    /// re-emitted from this chunk. Call while this route is still open.
    pub fn hold(&self) -> Option<AckFn> {
        self.completion.as_ref().map(Completion::hold)
    }

    /// Drops the chunk for its route: the worker gives up on it instead of sending it.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// One output is done with the chunk (delivered or gave up). Call once per route.
    pub fn finish(&self) {
        if let Some(c) = &self.completion {
            c.finish();
        }
    }
}

/// Runs acks now (records with no route, or all removed by a filter).
pub fn run_now(acks: Vec<AckFn>) {
    acks.into_iter().for_each(|ack| ack());
}

/// Splits `ack` into `n` parts (n >= 1); it runs once every part has run. A batch
/// whose records a filter re-emitted under new tags is done when the records kept and
/// every re-emitted chunk are.
pub fn split(ack: AckFn, n: usize) -> Vec<AckFn> {
    if n <= 1 {
        return vec![ack];
    }
    let shared = Completion::new(n, vec![ack]).expect("one ack");
    (0..n)
        .map(|_| {
            let c = shared.clone();
            Box::new(move || c.finish()) as AckFn
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk queued for an output's processors counts as done when its worker takes
    /// the guard, or when the chunk is dropped unprocessed: the engine's wait at
    /// shutdown never hangs on a worker that is gone.
    #[test]
    fn a_queued_chunk_is_done_once_taken_or_dropped() {
        let done = Arc::new(AtomicUsize::new(0));
        let guard = |d: &Arc<AtomicUsize>| {
            let d = d.clone();
            Mutex::new(Some(OnDrop::new(move || {
                d.fetch_add(1, Ordering::SeqCst);
            })))
        };
        let taken = guard(&done);
        drop(taken.lock().unwrap().take());
        assert_eq!(done.load(Ordering::SeqCst), 1);
        drop(taken);
        assert_eq!(done.load(Ordering::SeqCst), 1);
        drop(guard(&done));
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }
    use std::sync::atomic::AtomicU32;

    #[test]
    fn acks_run_once_after_the_last_route() {
        let hits = Arc::new(AtomicU32::new(0));
        let acks: Vec<AckFn> = (0..2)
            .map(|_| {
                let h = hits.clone();
                Box::new(move || {
                    h.fetch_add(1, Ordering::SeqCst);
                }) as AckFn
            })
            .collect();
        let r = Routed::new(Chunk::new(Arc::from("t"), vec![]), Completion::new(3, acks));
        r.finish();
        r.finish();
        assert_eq!(hits.load(Ordering::SeqCst), 0, "one route still busy");
        r.finish();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        drop(r);
        assert_eq!(hits.load(Ordering::SeqCst), 2, "dropping does not ack");
    }

    #[test]
    fn a_held_part_keeps_the_acks_until_it_runs() {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let c = Completion::new(
            1,
            vec![Box::new(move || {
                h.fetch_add(1, Ordering::SeqCst);
            }) as AckFn],
        )
        .unwrap();
        let reemitted = c.hold();
        c.finish();
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "the re-emitted records are not done"
        );
        reemitted();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_split_ack_runs_after_its_last_part() {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let mut parts = split(
            Box::new(move || {
                h.fetch_add(1, Ordering::SeqCst);
            }),
            3,
        );
        let last = parts.pop().unwrap();
        // Parts split again (a re-emitted chunk re-emitted once more) nest.
        let mut inner = split(parts.pop().unwrap(), 2);
        parts.pop().unwrap()();
        inner.pop().unwrap()();
        last();
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        inner.pop().unwrap()();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
