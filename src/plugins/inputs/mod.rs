//! Inputs, one module per Fluent Bit name.

pub mod conntrack;
pub mod dummy;
pub mod forward;
pub mod nflog;
pub mod random;
pub mod tail;
pub mod tcp;

use std::time::Duration;

use tokio::time::Instant;

/// A kernel reader's receive that found nothing this time (its timeout passed, or a
/// signal interrupted it): read again.
pub(crate) fn nothing_yet(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// What a kernel reader thread's [`hand_off`] did with its batch.
pub(crate) enum HandOff {
    /// Sent, or kept for the next try (the channel was full).
    Done,
    /// More than the backlog bound was held: that many items were dropped.
    Dropped(u64),
    /// The input task is gone.
    Closed,
}

/// Hands `batch` to the input task without ever waiting on the pipeline (netlink
/// readers must keep reading): when the channel is full the batch is kept for the next
/// try, and once more than `max` items are held they are dropped and counted.
pub(crate) fn hand_off<T, M>(
    tx: &tokio::sync::mpsc::Sender<M>,
    batch: &mut Vec<T>,
    max: usize,
    wrap: fn(Vec<T>) -> M,
    unwrap: fn(M) -> Option<Vec<T>>,
) -> HandOff {
    use tokio::sync::mpsc::error::TrySendError;
    if batch.is_empty() {
        return HandOff::Done;
    }
    match tx.try_send(wrap(std::mem::take(batch))) {
        Ok(()) => HandOff::Done,
        Err(TrySendError::Full(m)) => {
            *batch = unwrap(m).unwrap_or_default();
            if batch.len() > max {
                let lost = batch.len() as u64;
                batch.clear();
                return HandOff::Dropped(lost);
            }
            HandOff::Done
        }
        Err(TrySendError::Closed(_)) => HandOff::Closed,
    }
}

/// Upper bound on records produced per wake-up, so that a fast timer yields bounded batches.
pub(crate) const MAX_BATCH: u64 = 1024;

/// A collector timer that never falls behind: each wake-up reports how many ticks are
/// due since the last one, so a 1 µs interval produces ~1M records/s in batches
/// instead of being limited by the timer's resolution.
///
/// Phase as Fluent Bit's collectors (monkey's `mk_event_timeout_create`): the first
/// tick is at the monotonic clock's whole second plus the interval's whole seconds, so
/// within the first interval (at once for sub-second intervals), then every interval.
pub(crate) struct Ticker {
    first: Instant,
    interval: Duration,
    done: u64,
}

impl Ticker {
    pub(crate) fn new(interval: Duration) -> Self {
        let now = Instant::now();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        let into_second = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
            Duration::from_nanos(ts.tv_nsec as u64)
        } else {
            Duration::ZERO
        };
        let wait = Duration::from_secs(interval.as_secs()).saturating_sub(into_second);
        Ticker {
            first: now + wait,
            interval: interval.max(Duration::from_nanos(1)),
            done: 0,
        }
    }

    /// Forgets the ticks missed while the input was paused (a rate gate or
    /// `mem_buf_limit` holding its sends for longer than `PAUSED`): Fluent Bit's paused
    /// collectors do not fire, so nothing is made up for afterwards.
    pub(crate) fn skip_pause(&mut self, waited: Duration) {
        const PAUSED: Duration = Duration::from_millis(100);
        if waited >= PAUSED && waited >= self.interval * 2 {
            let elapsed = Instant::now().saturating_duration_since(self.first);
            let due = (elapsed.as_nanos() / self.interval.as_nanos()) as u64 + 1;
            self.done = self.done.max(due);
        }
    }

    /// Sleeps until the next tick is due, then returns how many are due (1..=max).
    pub(crate) async fn next(&mut self, max: u64) -> u64 {
        let due_at = self.interval.as_nanos() * self.done as u128;
        let next = self.first + Duration::from_nanos(u64::try_from(due_at).unwrap_or(u64::MAX));
        tokio::time::sleep_until(next).await;
        let elapsed = Instant::now().saturating_duration_since(self.first);
        let due = (elapsed.as_nanos() / self.interval.as_nanos()) as u64 + 1;
        let n = due.saturating_sub(self.done).clamp(1, max);
        self.done += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticker_catches_up_in_batches() {
        // Sub-second: the first tick is at once, then one every 10 ms.
        let start = Instant::now();
        let mut t = Ticker::new(Duration::from_millis(10));
        assert_eq!(t.next(100).await, 1);
        assert_eq!(Instant::now(), start);
        tokio::time::advance(Duration::from_millis(55)).await;
        // Ticks at 10..50 ms are due by 55 ms (5), capped by max.
        assert_eq!(t.next(3).await, 3);
        assert_eq!(t.next(100).await, 2);
        assert_eq!(t.next(100).await, 1);
        assert_eq!(Instant::now(), start + Duration::from_millis(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_second_interval_first_fires_within_it() {
        let start = Instant::now();
        let mut t = Ticker::new(Duration::from_secs(1));
        assert_eq!(t.next(100).await, 1);
        let first = Instant::now() - start;
        assert!(first < Duration::from_secs(1), "{first:?}");
        assert_eq!(t.next(100).await, 1);
        assert_eq!(Instant::now() - start, first + Duration::from_secs(1));
    }
}
