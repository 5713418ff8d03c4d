//! One output worker: flushes chunks in order, owns retries and their backoff.
//! Fluent Bit: src/flb_output_thread.c, src/flb_scheduler.c, src/flb_task.c

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ack::Routed;
use super::metrics::{self, OutputMetrics};
use super::Shutdown;
use crate::event::Chunk;
use crate::plugins::{FlushResult, Output};

/// `retry_limit` and the backoff scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries allowed per chunk; `None` = no limit.
    pub limit: Option<u32>,
    pub base: u64,
    pub cap: u64,
}

impl RetryPolicy {
    /// Fluent Bit's `retry_limit`: `N` (>0), `no_limits`/`false`/`off`, `no_retries`.
    pub fn parse_limit(text: &str) -> Option<Option<u32>> {
        match text.trim().to_ascii_lowercase().as_str() {
            "no_limits" | "false" | "off" => Some(None),
            "no_retries" => Some(Some(0)),
            n => n.parse::<u32>().ok().filter(|&n| n > 0).map(Some),
        }
    }

    /// Fluent Bit's backoff: `random_uniform(base, min(cap, base * 2^attempt)) + 1` s.
    pub fn backoff(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let hi = self
            .base
            .saturating_mul(1u64 << attempt.min(40))
            .min(self.cap)
            .max(self.base);
        Duration::from_secs(rng.u64(self.base..=hi) + 1)
    }
}

/// Chunks a worker holds for retry before it stops taking new ones.
pub const MAX_RETRIES_HELD: usize = 8;

struct Retry {
    at: Instant,
    chunk: Arc<Routed>,
    /// After a partial delivery: only the records still to send (`chunk` is kept for
    /// its completion and accounting).
    rest: Option<Chunk>,
    attempts: u32,
}

pub struct OutputWorker {
    /// `stdout.0`
    pub name: Arc<str>,
    pub plugin: &'static str,
    pub id: usize,
    pub output: Box<dyn Output>,
    pub retry: RetryPolicy,
    pub metrics: Arc<OutputMetrics>,
    /// The output's processors, when it has some: run here on each chunk queued for
    /// them, before its first attempt.
    pub chain: Option<Arc<super::engine::OutputChain>>,
}

impl OutputWorker {
    /// Runs until its queue is closed and no retry is left. Once shutdown starts,
    /// pending retries are attempted at once (then every second), as Fluent Bit does.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Arc<Routed>>, mut shutdown: Shutdown) {
        crate::info!(
            "[output:{}:{}] worker #{} started",
            self.plugin,
            self.name,
            self.id
        );
        let mut retries: Vec<Retry> = Vec::new();
        let mut rng = fastrand::Rng::new();
        let mut open = true;
        let mut stopping = shutdown.is_set();
        // An ordered output sends nothing newer while a chunk waits for its retry.
        let held_max = if self.output.ordered() {
            1
        } else {
            MAX_RETRIES_HELD
        };
        while open || !retries.is_empty() {
            let next = retries.iter().map(|r| r.at).min();
            tokio::select! {
                // While retries pile up (a destination down), take no new chunks: the
                // queues fill and the inputs wait, so memory stays bounded.
                chunk = rx.recv(), if open && retries.len() < held_max => match chunk {
                    Some(chunk) => {
                        let rest = match (&chunk.process, &self.chain) {
                            (Some(p), Some(chain)) => {
                                let left = (!chunk.is_cancelled())
                                    .then(|| chain.process(&chunk, &self.metrics));
                                // Processed: the engine may now release what the
                                // processors hold (at shutdown).
                                drop(super::engine::lock(&p.queued).take());
                                match left {
                                    // Its processors (or the output's limit) left nothing.
                                    Some(None) => {
                                        chunk.finish();
                                        continue;
                                    }
                                    Some(rest) => rest,
                                    None => None, // cancelled: attempt() gives it up
                                }
                            }
                            _ => None,
                        };
                        self.attempt(chunk, rest, 0, &mut retries, &mut rng, stopping).await
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let now = Instant::now();
                    let due = retries.iter().position(|r| r.at <= now);
                    if let Some(i) = due {
                        let r = retries.swap_remove(i);
                        self.attempt(r.chunk, r.rest, r.attempts, &mut retries, &mut rng, stopping).await;
                    }
                }
                _ = shutdown.wait(), if !stopping => {
                    stopping = true;
                    let now = Instant::now();
                    retries.iter_mut().for_each(|r| r.at = now);
                }
            }
        }
        crate::info!(
            "[output:{}:{}] thread worker #{} stopped",
            self.plugin,
            self.name,
            self.id
        );
    }

    async fn attempt(
        &mut self,
        routed: Arc<Routed>,
        rest: Option<Chunk>,
        attempts: u32,
        retries: &mut Vec<Retry>,
        rng: &mut fastrand::Rng,
        stopping: bool,
    ) {
        let chunk = rest.as_ref().unwrap_or(&routed.chunk);
        let mut n = chunk.events() as u64;
        if routed.is_cancelled() {
            // Dropped as the oldest by storage.total_limit_size (counted when dropped).
            routed.finish();
            return;
        }
        let mut rest_next = None;
        let (asked, e) = match self.output.flush(chunk).await {
            FlushResult::Ok => {
                metrics::add(&self.metrics.proc_records, n);
                metrics::add(&self.metrics.proc_bytes, chunk.encoded_len());
                if attempts > 0 {
                    crate::info!(
                        "[engine] flush chunk for {} succeeded at retry {attempts}: {n} records",
                        self.name
                    );
                }
                routed.finish();
                return;
            }
            FlushResult::Error(e) => {
                metrics::add(&self.metrics.errors, 1);
                metrics::add(&self.metrics.dropped_records, n);
                crate::error!(
                    "[output:{}:{}] {e}; {n} records dropped",
                    self.plugin,
                    self.name
                );
                routed.finish();
                return;
            }
            FlushResult::Retry(e) => (None, e),
            FlushResult::RetryAfter(d, e) => (Some(d), e),
            FlushResult::Partial(p) => {
                let again = p.retry.len() as u64;
                let delivered = n.saturating_sub(again + p.dropped);
                metrics::add(&self.metrics.proc_records, delivered);
                // The delivered share of the chunk's bytes (which records were dropped
                // is not said, only how many).
                metrics::add(
                    &self.metrics.proc_bytes,
                    chunk.encoded_len() * delivered / n.max(1),
                );
                metrics::add(&self.metrics.dropped_records, p.dropped);
                if again == 0 {
                    routed.finish();
                    return;
                }
                rest_next = Some(Chunk::new(
                    chunk.tag.clone(),
                    p.retry
                        .iter()
                        .filter_map(|&i| chunk.records.get(i).cloned())
                        .collect(),
                ));
                n = again;
                (p.after, p.reason)
            }
        };
        let rest = rest_next.or(rest);
        if self.retry.limit.is_some_and(|l| attempts >= l) {
            metrics::add(&self.metrics.retries_failed, 1);
            metrics::add(&self.metrics.dropped_records, n);
            crate::error!(
                    "[engine] chunk for {} cannot be retried after {attempts} retries ({e}): {n} records dropped (raise retry_limit to keep retrying)",
                    self.name
                );
            routed.finish();
            return;
        }
        let wait = if stopping {
            Duration::from_secs(1)
        } else {
            let backoff = self.retry.backoff(attempts + 1, rng);
            // The destination's own wait, within the scheduler's cap.
            match asked {
                Some(d) => backoff.max(d.min(Duration::from_secs(self.retry.cap.max(1)))),
                None => backoff,
            }
        };
        metrics::add(&self.metrics.retries, 1);
        metrics::add(&self.metrics.retried_records, n);
        crate::warn!(
            "[engine] failed to flush chunk for {} ({e}), retry in {} seconds: {n} records",
            self.name,
            wait.as_secs()
        );
        retries.push(Retry {
            at: Instant::now() + wait,
            chunk: routed,
            rest,
            attempts: attempts + 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that reports a partial delivery once, then records what it is given.
    struct PartlyRefusing {
        seen: Arc<std::sync::Mutex<Vec<Vec<i64>>>>,
    }

    impl Output for PartlyRefusing {
        fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> crate::plugins::BoxFuture<'a, FlushResult> {
            Box::pin(async move {
                let ids: Vec<i64> = chunk
                    .records
                    .iter()
                    .map(|r| match r.body[0].1 {
                        crate::event::Value::Int(i) => i,
                        _ => -1,
                    })
                    .collect();
                let first = {
                    let mut seen = self.seen.lock().unwrap();
                    seen.push(ids);
                    seen.len() == 1
                };
                if first {
                    // Of 5: positions 1 and 3 again, one dropped, two delivered.
                    FlushResult::Partial(crate::plugins::Partial {
                        retry: vec![1, 3],
                        dropped: 1,
                        after: None,
                        reason: "2 items busy".into(),
                    })
                } else {
                    FlushResult::Ok
                }
            })
        }
        fn fork(&self) -> Box<dyn Output> {
            unreachable!()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_delivery_retries_only_the_rest_and_counts_the_others() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let metrics = Arc::new(OutputMetrics::default());
        let worker = OutputWorker {
            name: Arc::from("es.0"),
            plugin: "es",
            id: 0,
            output: Box::new(PartlyRefusing { seen: seen.clone() }),
            retry: RetryPolicy {
                limit: None,
                base: 1,
                cap: 2,
            },
            metrics: metrics.clone(),
            chain: None,
        };
        let records = (0..5)
            .map(|i| {
                crate::event::Record::new(
                    crate::event::EventTime::new(1, 0),
                    vec![(Arc::from("i"), crate::event::Value::Int(i))],
                )
            })
            .collect();
        let (tx, rx) = mpsc::channel(4);
        tx.send(Routed::new(Chunk::new(Arc::from("t"), records), None))
            .await
            .unwrap();
        drop(tx);
        let (_trigger, shutdown) = crate::pipeline::shutdown::channel();
        worker.run(rx, shutdown).await;
        assert_eq!(*seen.lock().unwrap(), vec![vec![0, 1, 2, 3, 4], vec![1, 3]]);
        assert_eq!(metrics::get(&metrics.proc_records), 4);
        assert_eq!(metrics::get(&metrics.dropped_records), 1);
        assert_eq!(metrics::get(&metrics.retried_records), 2);
    }

    /// Fails its first flush, then delivers; records the tag of every attempt.
    struct FailsOnce {
        ordered: bool,
        seen: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Output for FailsOnce {
        fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> crate::plugins::BoxFuture<'a, FlushResult> {
            Box::pin(async move {
                let mut seen = self.seen.lock().unwrap();
                seen.push(chunk.tag.to_string());
                if seen.len() == 1 {
                    FlushResult::Retry("down".into())
                } else {
                    FlushResult::Ok
                }
            })
        }
        fn fork(&self) -> Box<dyn Output> {
            unreachable!()
        }
        fn ordered(&self) -> bool {
            self.ordered
        }
    }

    async fn attempts(ordered: bool) -> Vec<String> {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let worker = OutputWorker {
            name: Arc::from("out.0"),
            plugin: "out",
            id: 0,
            output: Box::new(FailsOnce {
                ordered,
                seen: seen.clone(),
            }),
            retry: RetryPolicy {
                limit: None,
                base: 1,
                cap: 2,
            },
            metrics: Arc::default(),
            chain: None,
        };
        let (tx, rx) = mpsc::channel(4);
        for tag in ["a", "b"] {
            tx.send(Routed::new(Chunk::new(Arc::from(tag), Vec::new()), None))
                .await
                .unwrap();
        }
        drop(tx);
        let (_trigger, shutdown) = crate::pipeline::shutdown::channel();
        worker.run(rx, shutdown).await;
        let seen = seen.lock().unwrap().clone();
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn an_ordered_output_sends_nothing_newer_while_a_chunk_waits_for_its_retry() {
        // Prometheus refuses a series' older samples after newer ones.
        assert_eq!(attempts(true).await, ["a", "a", "b"]);
        // Other outputs keep sending while a chunk waits.
        assert_eq!(attempts(false).await, ["a", "b", "a"]);
    }

    #[test]
    fn retry_limit_values() {
        assert_eq!(RetryPolicy::parse_limit("3"), Some(Some(3)));
        assert_eq!(RetryPolicy::parse_limit("no_limits"), Some(None));
        assert_eq!(RetryPolicy::parse_limit("False"), Some(None));
        assert_eq!(RetryPolicy::parse_limit("no_retries"), Some(Some(0)));
        assert_eq!(RetryPolicy::parse_limit("0"), None);
        assert_eq!(RetryPolicy::parse_limit("x"), None);
    }

    #[test]
    fn backoff_bounds_match_fluent_bit() {
        let p = RetryPolicy {
            limit: None,
            base: 5,
            cap: 2000,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let first = p.backoff(1, &mut rng).as_secs();
            assert!((6..=11).contains(&first), "{first}");
            let second = p.backoff(2, &mut rng).as_secs();
            assert!((6..=21).contains(&second), "{second}");
            let late = p.backoff(30, &mut rng).as_secs();
            assert!((6..=2001).contains(&late), "{late}");
        }
    }
}
