//! `fluentbit_metrics` input: the agent's own counters as metrics, every
//! `scrape_interval`: the same set, names and labels the monitoring endpoint
//! `/api/v1/metrics/prometheus` serves (both come from `Registry::metric_set`).
//! Fluent Bit: plugins/in_fluentbit_metrics/metrics.c

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::pipeline::metrics::Registry;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    super::scrape_interval("2s"),
    PropSpec::new(
        "scrape_on_start",
        PropKind::Bool,
        Some("false"),
        "Scrape once at start instead of waiting for the first scrape_interval.",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "fluentbit_metrics",
    description: "Fluent Bit internal metrics",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

struct FluentbitMetrics {
    interval: Duration,
    on_start: bool,
    registry: Arc<OnceLock<Arc<Registry>>>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(FluentbitMetrics {
        interval: super::scrape_interval_of(props)?,
        on_start: props.bool("scrape_on_start").unwrap_or(false),
        registry: ctx.registry.clone(),
    }))
}

impl Input for FluentbitMetrics {
    fn signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::METRICS
    }

    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let hostname = crate::config::parser::hostname().unwrap_or_default();
            let registry = self.registry.clone();
            super::scrape_every(&mut ctx, self.interval, self.on_start, move || {
                let set = registry
                    .get()
                    .map(|r| r.metric_set(&hostname, std::time::SystemTime::now()));
                std::future::ready(set)
            })
            .await
        })
    }
}
