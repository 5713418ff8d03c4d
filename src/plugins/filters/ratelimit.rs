//! Rate-limit algorithms, sans-IO (time is passed in): GCRA per key, as Vector's
//! `throttle` and OpenShift's flow control use it (a token bucket of `burst` tokens
//! refilled at `rate` per second), and Fluent Bit's `filter_throttle` sliding window of
//! panes. shared/spec/flows.md §4.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::event::accessor::Accessor;
use crate::event::{Map, Value};

/// One GCRA cell: the theoretical arrival time, in ns since the limiter's epoch.
#[derive(Clone, Copy, Debug)]
struct Gcra {
    tat: u64,
}

/// `rate` per second with bursts of `burst`; `rate` 0 lets nothing through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    /// ns between tokens (`u64::MAX` when the rate is 0).
    period: u64,
    /// How far the arrival time may run ahead of now: (burst - 1) periods.
    tolerance: u64,
}

impl Quota {
    pub fn new(rate: f64, burst: u64) -> Quota {
        if rate <= 0.0 {
            return Quota {
                period: u64::MAX,
                tolerance: 0,
            };
        }
        let period = (1e9 / rate).max(1.0) as u64;
        Quota {
            period,
            tolerance: period.saturating_mul(burst.max(1) - 1),
        }
    }

    /// The default burst for a rate: one second's worth, at least 1.
    pub fn default_burst(rate: f64) -> u64 {
        (rate.ceil() as u64).max(1)
    }

    fn check(&self, cell: &mut Gcra, now: u64) -> bool {
        if self.period == u64::MAX {
            return false;
        }
        let tat = cell.tat.max(now);
        if tat - now > self.tolerance {
            return false;
        }
        cell.tat = tat + self.period;
        true
    }
}

/// What a keyed limiter keys on: nothing (one bucket) or a record accessor.
#[derive(Clone, Debug)]
pub enum KeyBy {
    None,
    Field(Accessor),
}

impl KeyBy {
    pub fn parse(text: Option<&str>) -> Result<KeyBy, String> {
        match text.map(str::trim) {
            None | Some("") | Some("none") => Ok(KeyBy::None),
            Some(t) => Accessor::parse(t).map(KeyBy::Field),
        }
    }

    /// The bucket of a record; records without the key share the `None` bucket.
    pub fn key<'a>(&self, body: &'a Map, scratch: &'a mut String) -> Option<&'a str> {
        let KeyBy::Field(acc) = self else { return None };
        value_text(acc.get(body)?, scratch)
    }
}

/// A scalar as text for keys and conditions: strings as they are, numbers and booleans
/// written into `scratch`; other values have no text.
pub fn value_text<'a>(v: &'a Value, scratch: &'a mut String) -> Option<&'a str> {
    use std::fmt::Write;
    scratch.clear();
    match v {
        Value::Str(s) => return Some(s),
        Value::Int(i) => write!(scratch, "{i}"),
        Value::UInt(u) => write!(scratch, "{u}"),
        Value::Bool(b) => write!(scratch, "{b}"),
        Value::Float(f) => write!(scratch, "{f}"),
        _ => return None,
    }
    .ok()?;
    Some(scratch.as_str())
}

/// GCRA per key, bounded: idle keys (their bucket full again) are forgotten, and past
/// `max_keys` new keys share one overflow bucket.
pub struct KeyedLimiter {
    quota: Quota,
    key_by: KeyBy,
    epoch: Instant,
    unkeyed: Gcra,
    overflow: Gcra,
    keys: HashMap<Box<str>, Gcra>,
    max_keys: usize,
    /// Records dropped since the limiter was made.
    pub dropped: u64,
    /// Records of new keys that went to the overflow bucket.
    pub overflowed: u64,
    scratch: String,
}

impl KeyedLimiter {
    pub fn new(quota: Quota, key_by: KeyBy, max_keys: usize, epoch: Instant) -> KeyedLimiter {
        let fresh = Gcra { tat: 0 };
        KeyedLimiter {
            quota,
            key_by,
            epoch,
            unkeyed: fresh,
            overflow: fresh,
            keys: HashMap::new(),
            max_keys,
            dropped: 0,
            overflowed: 0,
            scratch: String::new(),
        }
    }

    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Whether a record passes at `now` (and takes a token if so).
    pub fn allow(&mut self, body: &Map, now: Instant) -> bool {
        let t = self.ns(now);
        let mut scratch = std::mem::take(&mut self.scratch);
        let quota = self.quota;
        let ok = match self.key_by.key(body, &mut scratch) {
            None => quota.check(&mut self.unkeyed, t),
            Some(k) => {
                if let Some(cell) = self.keys.get_mut(k) {
                    quota.check(cell, t)
                } else if self.keys.len() < self.max_keys {
                    let mut cell = Gcra { tat: t };
                    let ok = quota.check(&mut cell, t);
                    self.keys.insert(Box::from(k), cell);
                    ok
                } else {
                    self.overflowed += 1;
                    quota.check(&mut self.overflow, t)
                }
            }
        };
        self.scratch = scratch;
        if !ok {
            self.dropped += 1;
        }
        ok
    }

    /// Forgets keys whose bucket has refilled: they behave exactly like new keys.
    pub fn forget_idle(&mut self, now: Instant) {
        let t = self.ns(now);
        self.keys.retain(|_, c| c.tat > t);
    }

    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

/// Fluent Bit's `filter_throttle` window: `window` panes of `interval` each; a record
/// is dropped while the sum of the panes / `window` >= `rate`.
#[derive(Clone, Debug)]
pub struct SlidingWindow {
    rate: f64,
    panes: Vec<u64>,
    total: u64,
    interval: Duration,
    /// Index of the current pane since the epoch.
    current: u64,
    epoch: Instant,
}

impl SlidingWindow {
    pub fn new(rate: f64, window: usize, interval: Duration, epoch: Instant) -> SlidingWindow {
        SlidingWindow {
            rate,
            panes: vec![0; window],
            total: 0,
            interval,
            current: 0,
            epoch,
        }
    }

    /// Moves to the pane of `now`, clearing the panes it overwrites.
    pub fn advance(&mut self, now: Instant) {
        let pane = (now.saturating_duration_since(self.epoch).as_nanos()
            / self.interval.as_nanos().max(1)) as u64;
        let w = self.panes.len() as u64;
        for p in (self.current + 1)..=pane.min(self.current + w) {
            let slot = (p % w) as usize;
            self.total -= self.panes[slot];
            self.panes[slot] = 0;
        }
        self.current = self.current.max(pane);
    }

    pub fn allow(&mut self, now: Instant) -> bool {
        self.advance(now);
        if self.total as f64 / self.panes.len() as f64 >= self.rate {
            return false;
        }
        let slot = (self.current % self.panes.len() as u64) as usize;
        self.panes[slot] += 1;
        self.total += 1;
        true
    }

    /// Nothing counted in the window: the same as a fresh window.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Records per pane over the window, as `print_status` reports it.
    pub fn current_rate(&self) -> u64 {
        self.total / self.panes.len() as u64
    }

    pub fn pane(&self) -> u64 {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn at(epoch: Instant, ms: u64) -> Instant {
        epoch + Duration::from_millis(ms)
    }

    fn body(k: &str) -> Map {
        vec![(Arc::from("file"), Value::Str(Arc::from(k)))]
    }

    #[test]
    fn gcra_burst_then_steady_rate() {
        let e = Instant::now();
        let mut l = KeyedLimiter::new(Quota::new(10.0, 10), KeyBy::None, 10, e);
        let b = body("a");
        // A burst of 10 at t=0, the 11th is dropped.
        let burst: Vec<bool> = (0..11).map(|_| l.allow(&b, at(e, 0))).collect();
        assert_eq!(
            burst,
            [true, true, true, true, true, true, true, true, true, true, false]
        );
        // One token every 100 ms after that.
        assert!(!l.allow(&b, at(e, 99)));
        assert!(l.allow(&b, at(e, 100)));
        assert!(!l.allow(&b, at(e, 150)));
        assert!(l.allow(&b, at(e, 200)));
        // Idle for a second: the bucket is full again.
        let again: usize = (0..20).filter(|_| l.allow(&b, at(e, 1300))).count();
        assert_eq!(again, 10);
        assert_eq!(l.dropped, 1 + 1 + 1 + 10);
    }

    #[test]
    fn fractional_and_zero_rates() {
        let e = Instant::now();
        let mut half = KeyedLimiter::new(Quota::new(0.5, 1), KeyBy::None, 10, e);
        let b = body("a");
        assert!(half.allow(&b, at(e, 0)));
        assert!(!half.allow(&b, at(e, 1999)));
        assert!(half.allow(&b, at(e, 2000)));
        let mut zero = KeyedLimiter::new(Quota::new(0.0, 1), KeyBy::None, 10, e);
        assert!((0..100).all(|i| !zero.allow(&b, at(e, i * 100))));
    }

    #[test]
    fn keys_are_isolated_bounded_and_forgotten() {
        let e = Instant::now();
        let mut l = KeyedLimiter::new(
            Quota::new(2.0, 2),
            KeyBy::parse(Some("file")).unwrap(),
            2,
            e,
        );
        let (noisy, quiet) = (body("noisy"), body("quiet"));
        let passed_noisy = (0..100).filter(|_| l.allow(&noisy, at(e, 0))).count();
        assert_eq!(passed_noisy, 2);
        assert!(
            l.allow(&quiet, at(e, 0)),
            "a noisy key does not starve a quiet one"
        );
        // A third key exceeds max_keys: it shares the overflow bucket.
        assert!(l.allow(&body("third"), at(e, 0)));
        assert_eq!(l.overflowed, 1);
        assert_eq!(l.keys(), 2);
        l.forget_idle(at(e, 5000));
        assert_eq!(l.keys(), 0);
        // Records without the key share one bucket.
        let none: Map = vec![];
        assert_eq!((0..5).filter(|_| l.allow(&none, at(e, 6000))).count(), 2);
    }

    #[test]
    fn sliding_window_matches_fluent_bits_example() {
        // Rate 5, Window 5, Interval 1s: panes 1,3,5,7,3,4 then a burst of 7 in the next
        // pane: 6 pass (the docs' "7 becomes 6"), as filter_throttle computes it.
        let e = Instant::now();
        let mut w = SlidingWindow::new(5.0, 5, Duration::from_secs(1), e);
        for (sec, n) in [1u64, 3, 5, 7, 3, 4].iter().enumerate() {
            for _ in 0..*n {
                assert!(w.allow(at(e, sec as u64 * 1000 + 10)), "pane {sec}");
            }
        }
        let passed = (0..7).filter(|_| w.allow(at(e, 6010))).count();
        assert_eq!(passed, 6);
        // A fresh window lets Rate × Window through in its first pane (the code divides
        // by the window size, whatever the docs say about a slow start).
        let mut f = SlidingWindow::new(5.0, 5, Duration::from_secs(1), e);
        assert_eq!((0..100).filter(|_| f.allow(at(e, 0))).count(), 25);
        // Sub-second panes work (Fluent Bit truncates 0.5s to 0 and busy-loops).
        let mut h = SlidingWindow::new(2.0, 2, Duration::from_millis(500), e);
        assert_eq!((0..10).filter(|_| h.allow(at(e, 0))).count(), 4);
        assert_eq!(
            (0..10).filter(|_| h.allow(at(e, 500))).count(),
            0,
            "window still full"
        );
        assert_eq!(
            (0..10).filter(|_| h.allow(at(e, 1000))).count(),
            4,
            "both panes slid out"
        );
    }
}
