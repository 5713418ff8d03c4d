//! `dummy` input: a fixed JSON record (and metadata) at a rate.
//! Fluent Bit: plugins/in_dummy/in_dummy.c

use std::time::Duration;

use super::{Ticker, MAX_BATCH};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Map, Record, Value};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "samples",
        PropKind::Int,
        Some("0"),
        "Number of times to generate events; 0 means no limit.",
    ),
    PropSpec::new(
        "dummy",
        PropKind::Json,
        Some("{\"message\":\"dummy\"}"),
        "The record to generate, as a JSON object.",
    ),
    PropSpec::new(
        "metadata",
        PropKind::Json,
        Some("{}"),
        "The metadata to generate, as a JSON object.",
    ),
    PropSpec::new(
        "rate",
        PropKind::Int,
        Some("1"),
        "Number of events per second (ignored when an interval is set).",
    ),
    PropSpec::new(
        "interval_sec",
        PropKind::Int,
        Some("0"),
        "Interval in seconds between events; overrides rate.",
    ),
    PropSpec::new(
        "interval_nsec",
        PropKind::Int,
        Some("0"),
        "Interval in nanoseconds between events; overrides rate.",
    ),
    PropSpec::new(
        "copies",
        PropKind::Int,
        Some("1"),
        "Number of copies of the record generated per event.",
    )
    .range(1, 1_000_000),
    PropSpec::new(
        "start_time_sec",
        PropKind::Int,
        Some("-1"),
        "Base timestamp, seconds part; -1 means now.",
    ),
    PropSpec::new(
        "start_time_nsec",
        PropKind::Int,
        Some("-1"),
        "Base timestamp, nanoseconds part; -1 means now.",
    ),
    PropSpec::new(
        "fixed_timestamp",
        PropKind::Bool,
        Some("off"),
        "Give every record the same timestamp (the start time).",
    ),
    PropSpec::new(
        "flush_on_startup",
        PropKind::Bool,
        Some("false"),
        "Generate the first event at start-up instead of after one interval.",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "dummy",
    description: "Generate dummy data",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

struct DummyInput {
    body: Map,
    metadata: Map,
    /// Events (each of `copies` records); `None` = forever.
    samples: Option<u64>,
    copies: u64,
    interval: Duration,
    /// Fixed base timestamp (`start_time_*`), advanced by the time since start.
    start: Option<EventTime>,
    fixed: bool,
    flush_on_startup: bool,
}

fn object(props: &Props, name: &str) -> Map {
    match props.json(name).map(|j| Value::from_json(&j)) {
        Some(Value::Map(m)) => m,
        // Validated as an object by PropKind::Json.
        _ => Map::new(),
    }
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let samples = props.int("samples").unwrap_or(0);
    let copies = props.int("copies").unwrap_or(1);
    if copies < 1 {
        return Err(props.error("copies", "a number of copies >= 1"));
    }
    let rate = props.int("rate").unwrap_or(1);
    let mut interval = props.interval("interval_sec", "interval_nsec")?;
    if interval.is_zero() {
        interval = if rate > 1 {
            Duration::from_nanos(1_000_000_000 / rate as u64)
        } else {
            Duration::from_secs(1)
        };
    }
    let (ss, sn) = (
        props.int("start_time_sec").unwrap_or(-1),
        props.int("start_time_nsec").unwrap_or(-1),
    );
    let start =
        (ss >= 0 || sn >= 0).then(|| EventTime::new(ss.max(0), sn.clamp(0, 999_999_999) as u32));
    Ok(Box::new(DummyInput {
        body: object(props, "dummy"),
        metadata: object(props, "metadata"),
        samples: (samples > 0).then_some(samples as u64),
        copies: copies as u64,
        interval,
        start,
        fixed: props.bool("fixed_timestamp").unwrap_or(false),
        flush_on_startup: props.bool("flush_on_startup").unwrap_or(false),
    }))
}

impl DummyInput {
    fn timestamp(&self, began: std::time::Instant, first: EventTime) -> EventTime {
        if self.fixed {
            return first;
        }
        match self.start {
            Some(base) => {
                let d = began.elapsed();
                let nanos = base.nanos as u64 + d.subsec_nanos() as u64;
                EventTime::new(
                    base.secs + d.as_secs() as i64 + (nanos / 1_000_000_000) as i64,
                    (nanos % 1_000_000_000) as u32,
                )
            }
            None => EventTime::now(),
        }
    }

    /// `events` events of `copies` records each, every record stamped when it is made,
    /// as Fluent Bit's dummy does (one time for all with `fixed_timestamp`).
    /// With their size: copies of one record, they all measure the same.
    fn records(
        &self,
        events: u64,
        began: std::time::Instant,
        first: EventTime,
    ) -> (Vec<Record>, u64) {
        let n = (events * self.copies) as usize;
        let mut out = Vec::with_capacity(n);
        // Each batch clones its own copy: the records of a batch share reference
        // counts with each other only, not with the next batch being made while the
        // engine drops this one (a shared count bouncing between cores cost half the
        // CPU of dummy -> stdout).
        let (body, metadata) = (
            crate::event::unshared(&self.body),
            crate::event::unshared(&self.metadata),
        );
        for _ in 0..n {
            out.push(Record {
                time: self.timestamp(began, first),
                metadata: metadata.clone(),
                body: body.clone(),
            });
        }
        let each = out.first().map_or(0, Record::encoded_len);
        (out, each * n as u64)
    }
}

impl Input for DummyInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let began = std::time::Instant::now();
            let first = self.start.unwrap_or_else(EventTime::now);
            let mut left = self.samples.unwrap_or(u64::MAX);
            if self.flush_on_startup && left > 0 {
                let (records, bytes) = self.records(1, began, first);
                ctx.out.send_measured(records, bytes).await?;
                left -= 1;
            }
            let mut ticker = Ticker::new(self.interval);
            let max_events = (MAX_BATCH / self.copies).max(1);
            while left > 0 {
                let n = tokio::select! {
                    _ = ctx.shutdown.wait() => return Ok(()),
                    n = ticker.next(max_events.min(left)) => n,
                };
                left -= n;
                let sent = tokio::time::Instant::now();
                let (records, bytes) = self.records(n, began, first);
                ctx.out.send_measured(records, bytes).await?;
                ticker.skip_pause(sent.elapsed());
            }
            crate::debug!("[input:dummy:{}] all samples sent", ctx.name);
            ctx.shutdown.wait().await;
            Ok(())
        })
    }
}
