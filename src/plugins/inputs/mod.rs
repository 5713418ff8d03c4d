//! Inputs, one module per Fluent Bit name.

pub mod conntrack;
pub mod cpu;
pub mod disk;
pub mod dummy;
pub mod exec;
pub mod fluentbit_metrics;
pub mod forward;
pub mod head;
pub mod http;
pub mod kafka;
pub mod kmsg;
pub mod mem;
pub mod netif;
pub mod nflog;
pub mod node_exporter_metrics;
pub mod proc;
pub mod prometheus_scrape;
pub mod random;
pub mod server;
pub mod state_file;
pub mod stdin;
pub mod syslog;
pub mod systemd;
pub mod tail;
pub mod tcp;
pub mod udp;

use std::time::Duration;

use tokio::time::Instant;

use crate::event::Record;
use crate::plugins::{InputContext, PluginError};

/// `interval_sec` of Fluent Bit's time collectors (cpu, mem, disk, netif, proc, head,
/// exec): with `interval_nsec`, the time between two samples; both 0 mean 1 second.
pub(crate) const INTERVAL_SEC: crate::config::PropSpec = crate::config::PropSpec::new(
    "interval_sec",
    crate::config::PropKind::Int,
    Some("1"),
    "Set the collector interval.",
);

/// `interval_nsec`, the sub-second part of [`INTERVAL_SEC`].
pub(crate) const INTERVAL_NSEC: crate::config::PropSpec = crate::config::PropSpec::new(
    "interval_nsec",
    crate::config::PropKind::Int,
    Some("0"),
    "Set the collector interval (nanoseconds).",
);

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

    /// Sleeps until the next tick is due and forgets any others already due (a timer
    /// whose expirations fire one callback, as Fluent Bit's metric collectors).
    pub(crate) async fn next_one(&mut self) {
        self.next(1).await;
        let elapsed = Instant::now().saturating_duration_since(self.first);
        self.done = self
            .done
            .max((elapsed.as_nanos() / self.interval.as_nanos()) as u64 + 1);
    }
}

/// One step of C's `fgets` over buffered bytes: takes from `buf` up to `room` bytes,
/// stopping after a `\n`; keeps them in `out` unless a NUL was met (a C string ends
/// there: what follows is read but not kept). Returns (bytes taken, line ended).
pub(crate) fn fgets_step(
    buf: &[u8],
    room: usize,
    out: &mut Vec<u8>,
    nul: &mut bool,
) -> (usize, bool) {
    let room = room.min(buf.len());
    let (take, ended) = match buf[..room].iter().position(|&b| b == b'\n') {
        Some(i) => (i + 1, true),
        None => (room, false),
    };
    if !*nul {
        let part = &buf[..take];
        match part.iter().position(|&b| b == 0) {
            Some(i) => {
                out.extend_from_slice(&part[..i]);
                *nul = true;
            }
            None => out.extend_from_slice(part),
        }
    }
    (take, ended)
}

/// A system configuration value (`_SC_CLK_TCK`, `_SC_PAGESIZE`, ...).
pub(crate) fn sysconf(name: libc::c_int) -> i64 {
    // SAFETY: sysconf only reads a configuration value.
    #[allow(clippy::useless_conversion)] // c_long is i32 on 32-bit targets
    i64::from(unsafe { libc::sysconf(name) })
}

/// Fluent Bit's `interval_sec`/`interval_nsec` pair as most collectors read it: both
/// zero (or less) means the plugin's default of one second.
pub(crate) fn interval_or_1s(
    props: &crate::config::Props,
) -> Result<Duration, crate::config::ConfigError> {
    let interval = props.interval("interval_sec", "interval_nsec")?;
    Ok(if interval.is_zero() {
        Duration::from_secs(1)
    } else {
        interval
    })
}

/// Runs a Fluent Bit time collector: `collect` at every tick of `interval`, its record
/// (if any) sent on, until shutdown. As Fluent Bit's timer collectors, ticks missed
/// while the pipeline held a send are not made up: one sample per wake-up.
pub(crate) async fn collect_every(
    ctx: &mut InputContext,
    interval: Duration,
    mut collect: impl FnMut() -> Option<Record>,
) -> Result<(), PluginError> {
    let mut ticker = Ticker::new(interval);
    loop {
        tokio::select! {
            _ = ctx.shutdown.wait() => return Ok(()),
            _ = ticker.next_one() => {}
        }
        if let Some(record) = collect() {
            ctx.out.send(vec![record]).await?;
        }
    }
}

/// `scrape_interval` of the metrics inputs (Fluent Bit's default is theirs: 2s for
/// fluentbit_metrics, 5s for node_exporter_metrics).
pub(crate) const fn scrape_interval(default: &'static str) -> crate::config::PropSpec {
    crate::config::PropSpec::new(
        "scrape_interval",
        crate::config::PropKind::Time,
        Some(default),
        "Time between two scrapes (e.g. 2s, 1m).",
    )
}

/// The scrape interval of a metrics input: more than zero.
pub(crate) fn scrape_interval_of(
    props: &crate::config::Props,
) -> Result<Duration, crate::config::ConfigError> {
    match props.time("scrape_interval") {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(props.error("scrape_interval", "a duration above zero, such as 2s")),
    }
}

/// A metrics input's loop: one set every `interval` (the first at once when
/// `on_start`), until shutdown. A scrape that yields nothing sends nothing.
pub(crate) async fn scrape_every<F>(
    ctx: &mut InputContext,
    interval: Duration,
    on_start: bool,
    mut scrape: impl FnMut() -> F,
) -> Result<(), PluginError>
where
    F: std::future::Future<Output = Option<crate::event::metrics::MetricSet>>,
{
    let mut ticker = Ticker::new(interval);
    if !on_start {
        ticker.next_one().await; // the immediate first tick
    }
    loop {
        tokio::select! {
            _ = ctx.shutdown.wait() => return Ok(()),
            _ = ticker.next_one() => {}
        }
        if let Some(set) = scrape().await {
            ctx.out.send_metrics(set).await?;
        }
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
    async fn next_one_drops_the_ticks_missed() {
        let start = Instant::now();
        let mut t = Ticker::new(Duration::from_millis(10));
        t.next_one().await;
        tokio::time::advance(Duration::from_millis(35)).await;
        // Ticks at 10, 20 and 30 ms were missed: one wake-up, then the next is at 40 ms.
        t.next_one().await;
        assert_eq!(Instant::now(), start + Duration::from_millis(35));
        t.next_one().await;
        assert_eq!(Instant::now(), start + Duration::from_millis(40));
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
