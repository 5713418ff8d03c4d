//! `random` input: one `{"rand_value": <u64>}` record per interval.
//! Fluent Bit: plugins/in_random/random.c

use std::sync::Arc;
use std::time::Duration;

use super::{Ticker, MAX_BATCH};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Record, Str, Value};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "samples",
        PropKind::Int,
        Some("-1"),
        "Number of samples to send, -1 for infinite.",
    ),
    PropSpec::new(
        "interval_sec",
        PropKind::Int,
        Some("1"),
        "Interval in seconds.",
    ),
    PropSpec::new(
        "interval_nsec",
        PropKind::Int,
        Some("0"),
        "Interval in nanoseconds.",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "random",
    description: "Random",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

struct RandomInput {
    /// `None` = forever.
    samples: Option<u64>,
    interval: Duration,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let samples = props.int("samples").unwrap_or(-1);
    let mut interval = props.interval("interval_sec", "interval_nsec")?;
    if interval.is_zero() {
        // Fluent Bit: both <= 0 resets to 1 s.
        interval = Duration::from_secs(1);
    }
    Ok(Box::new(RandomInput {
        samples: u64::try_from(samples).ok(),
        interval,
    }))
}

impl Input for RandomInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let key: Str = Arc::from("rand_value");
            let mut left = self.samples.unwrap_or(u64::MAX);
            let mut ticker = Ticker::new(self.interval);
            let mut rng = fastrand::Rng::new();
            while left > 0 {
                let n = tokio::select! {
                    _ = ctx.shutdown.wait() => return Ok(()),
                    n = ticker.next(MAX_BATCH.min(left)) => n,
                };
                let time = EventTime::now();
                let records = (0..n)
                    .map(|_| Record::new(time, vec![(key.clone(), Value::UInt(rng.u64(..)))]))
                    .collect();
                left -= n;
                let began = tokio::time::Instant::now();
                ctx.out.send(records).await?;
                ticker.skip_pause(began.elapsed());
            }
            // Like Fluent Bit, the input goes quiet after its samples; the agent keeps running.
            crate::debug!("[input:random:{}] all samples sent", ctx.name);
            ctx.shutdown.wait().await;
            Ok(())
        })
    }
}
