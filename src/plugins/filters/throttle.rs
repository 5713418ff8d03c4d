//! `throttle` filter, Fluent Bit-compatible: a sliding window of `window` panes of
//! `interval` each; a record is dropped while the window's average per pane is >= `rate`.
//! Beyond Fluent Bit: sub-second intervals work (humantime: `500ms`), and an optional
//! `key` (a top-level key or record accessor) gives each key its own window.
//! Fluent Bit: plugins/filter_throttle/{throttle.c, window.c}

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ratelimit::{KeyBy, SlidingWindow};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{Chunk, Record};
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("rate", PropKind::Double, Some("1"), "Records allowed per interval, on average over the window (values <= 1 mean 1, as in Fluent Bit)."),
    PropSpec::new("window", PropKind::Int, Some("5"), "Number of intervals (panes) the average is taken over (values <= 1 mean 5, as in Fluent Bit).").range(0, 1_000_000),
    PropSpec::new("interval", PropKind::Time, Some("1"), "Length of a pane: 1, 1s, 5m, or sub-second such as 500ms."),
    PropSpec::new("print_status", PropKind::Bool, Some("false"), "Log the limit and the current rate at every pane."),
    PropSpec::new("key", PropKind::Str, None, "Give each value of this key its own window (a top-level key or $a['b']); one window when unset."),
    PropSpec::new("max_keys", PropKind::Int, Some("10000"), "Most keys tracked at once; records of further keys share one window."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "throttle",
    description: "Throttle messages using sliding window algorithm",
    props: PROPS,
    build,
};

struct ThrottleFilter {
    rate: f64,
    window: usize,
    interval: Duration,
    interval_text: String,
    print_status: bool,
    /// The start's status line was logged.
    started: bool,
    key: KeyBy,
    scratch: String,
    max_keys: usize,
    epoch: Instant,
    global: SlidingWindow,
    keyed: HashMap<Box<str>, SlidingWindow>,
    last_status: u64,
    name: String,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    // Fluent Bit silently resets out-of-range values; we keep that for compatibility.
    let rate = props.double("rate").filter(|r| *r > 1.0).unwrap_or(1.0);
    let window = props.int("window").filter(|w| *w > 1).unwrap_or(5) as usize;
    let interval = props.time("interval").unwrap_or(Duration::from_secs(1));
    if interval.is_zero() {
        return Err(props.error(
            "interval",
            "an interval greater than 0, such as 1s or 500ms",
        ));
    }
    let key = KeyBy::parse(props.str("key").filter(|_| props.is_set("key")))
        .map_err(|e| props.error("key", e))?;
    let epoch = Instant::now();
    Ok(Box::new(ThrottleFilter {
        rate,
        window,
        interval,
        interval_text: props.str("interval").unwrap_or("1").to_string(),
        print_status: props.bool("print_status").unwrap_or(false),
        key,
        scratch: String::new(),
        max_keys: props.int("max_keys").unwrap_or(10_000).max(1) as usize,
        epoch,
        global: SlidingWindow::new(rate, window, interval, epoch),
        keyed: HashMap::new(),
        last_status: 0,
        started: false,
        name: ctx.instance.to_string(),
    }))
}

impl ThrottleFilter {
    /// The window of the record's key (records without it share the global window).
    fn allow(&mut self, r: &Record, now: Instant) -> bool {
        let mut scratch = std::mem::take(&mut self.scratch);
        let ok = match self.key.key(&r.body, &mut scratch) {
            None => self.global.allow(now),
            Some(k) => {
                if let Some(w) = self.keyed.get_mut(k) {
                    w.allow(now)
                } else if self.keyed.len() < self.max_keys {
                    let mut w =
                        SlidingWindow::new(self.rate, self.window, self.interval, self.epoch);
                    let ok = w.allow(now);
                    self.keyed.insert(Box::from(k), w);
                    ok
                } else {
                    self.global.allow(now)
                }
            }
        };
        self.scratch = scratch;
        ok
    }
}

impl ThrottleFilter {
    /// Fluent Bit's status line (its ticker logs one at start and one per interval).
    fn log_status(&self) {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        crate::info!(
            "[filter:throttle:{}] {ts}: limit is {:.2} per {} with window size of {}, current rate is: {} per interval",
            self.name,
            self.rate,
            self.interval_text,
            self.window,
            self.global.current_rate()
        );
    }

    /// The status line of the start, before the first record or tick.
    fn started(&mut self) {
        if self.print_status && !self.started {
            self.started = true;
            self.log_status();
        }
    }
}

impl Filter for ThrottleFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, now: Instant) -> FilterResult {
        self.started();
        let before = records.len();
        records.retain(|r| self.allow(r, now));
        if records.len() == before {
            FilterResult::NoTouch
        } else {
            FilterResult::Modified
        }
    }

    fn tick(&mut self, now: Instant, _out: &mut Vec<Chunk>) {
        self.started();
        self.global.advance(now);
        // Keyed windows that have slid empty are the same as new ones: forget them.
        self.keyed.retain(|_, w| {
            w.advance(now);
            !w.is_empty()
        });
        if self.print_status && self.global.pane() != self.last_status {
            self.last_status = self.global.pane();
            self.log_status();
        }
    }
}
