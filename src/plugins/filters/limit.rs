//! `limit` filter: the flow-control API's record rate limit. `max_records_per_second`
//! (Kubernetes quantities: `10`, `1k`, `10M`, `500m`) per bucket, one bucket (`per
//! none`) or one per value of a key (`per $kubernetes['pod_name']`, or tail's path_key
//! field for one bucket per container log file). GCRA, burst `burst`; `policy drop`.
//! Design: shared/spec/flows.md §4 (OpenShift's rateLimitPerContainer, Vector throttle).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use super::ratelimit::{value_text, KeyBy, KeyedLimiter, Quota};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::{Chunk, Record};
use crate::pipeline::metrics;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("max_records_per_second", PropKind::Quantity, None, "Records per second allowed per bucket: 10, 1k, 10M (= 10,000,000), 500m (= 0.5); 0 forwards nothing."),
    PropSpec::new("per", PropKind::Str, Some("none"), "Buckets: none (one for all records) or a key / record accessor ($kubernetes['pod_name'], a path_key field)."),
    PropSpec::new("burst", PropKind::Int, None, "Records a bucket may pass at once after being idle; default one second's worth."),
    PropSpec::new("policy", PropKind::Enum(&["drop"]), Some("drop"), "What happens to records over the limit: drop (counted)."),
    PropSpec::new("max_keys", PropKind::Int, Some("10000"), "Most buckets tracked at once; records of further keys share one bucket."),
    PropSpec::new("when_key", PropKind::Str, None, "Limit only records whose value at this key / record accessor matches when_value; others pass untouched."),
    PropSpec::new("when_value", PropKind::Str, None, "Regular expression (unanchored) on the when_key value, e.g. ^debug$."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "limit",
    description: "Rate limit records per second, per key (flow control)",
    props: PROPS,
    build,
};

struct LimitFilter {
    limiter: KeyedLimiter,
    /// Only records matching this condition are limited.
    when: Option<(Accessor, regex::Regex)>,
    reported: u64,
    name: String,
    /// `agent_limit_dropped_records_total{name="limit.0"}`.
    dropped: Arc<AtomicU64>,
}

/// Reads `max_records_per_second` and `burst` from `props` under `prefix` (`""` for the
/// filter, `"limit."` for an output's limit).
pub fn quota(props: &Props, rate_key: &str, burst_key: &str) -> Result<Option<Quota>, ConfigError> {
    let Some(rate) = props.quantity(rate_key) else {
        return Ok(None);
    };
    let burst = match props.int(burst_key) {
        Some(b) if b < 1 => return Err(props.error(burst_key, "a burst of at least 1 record")),
        Some(b) => b as u64,
        None => Quota::default_burst(rate),
    };
    Ok(Some(Quota::new(rate, burst)))
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let quota = quota(props, "max_records_per_second", "burst")?.ok_or_else(|| {
        props.error(
            "max_records_per_second",
            "a rate such as 100 or 1k (it is required)",
        )
    })?;
    let key_by = KeyBy::parse(props.str("per")).map_err(|e| props.error("per", e))?;
    let max_keys = props.int("max_keys").unwrap_or(10_000).max(1) as usize;
    let when = match (
        props.str("when_key").filter(|_| props.is_set("when_key")),
        props
            .str("when_value")
            .filter(|_| props.is_set("when_value")),
    ) {
        (None, None) => None,
        (Some(k), Some(v)) => Some((
            Accessor::parse(k).map_err(|e| props.error("when_key", e))?,
            regex::Regex::new(v)
                .map_err(|e| props.error("when_value", format!("a regular expression ({e})")))?,
        )),
        (Some(_), None) => {
            return Err(props.error(
                "when_value",
                "a regular expression: when_key needs when_value",
            ))
        }
        (None, Some(_)) => {
            return Err(props.error(
                "when_key",
                "a key or record accessor: when_value needs when_key",
            ))
        }
    };
    Ok(Box::new(LimitFilter {
        when,
        limiter: KeyedLimiter::new(quota, key_by, max_keys, Instant::now()),
        reported: 0,
        name: ctx.instance.to_string(),
        dropped: ctx.metrics.counter(
            "agent_limit_dropped_records_total",
            "Records a limit filter dropped over its rate.",
            ctx.instance,
        ),
    }))
}

impl Filter for LimitFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, now: Instant) -> FilterResult {
        let before = records.len();
        let (when, limiter) = (&self.when, &mut self.limiter);
        let mut scratch = String::new();
        records.retain(|r| {
            let applies = when.as_ref().is_none_or(|(acc, re)| {
                acc.get(&r.body)
                    .and_then(|v| value_text(v, &mut scratch))
                    .is_some_and(|t| re.is_match(t))
            });
            !applies || limiter.allow(&r.body, now)
        });
        metrics::add(&self.dropped, (before - records.len()) as u64);
        if records.len() == before {
            FilterResult::NoTouch
        } else {
            FilterResult::Modified
        }
    }

    fn tick(&mut self, now: Instant, _out: &mut Vec<Chunk>) {
        self.limiter.forget_idle(now);
        let dropped = self.limiter.dropped;
        if dropped > self.reported {
            crate::info!(
                "[filter:limit:{}] {} records dropped over the limit ({} in total)",
                self.name,
                dropped - self.reported,
                dropped
            );
            self.reported = dropped;
        }
    }
}
