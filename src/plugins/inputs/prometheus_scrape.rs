//! `prometheus_scrape` input: GETs `http://host:port/metrics_path` every
//! `scrape_interval` (as Prometheus scrapes a target) and sends what it reads as one
//! metric set. Lines that are not the exposition format are skipped and counted (Fluent
//! Bit drops the whole scrape); a failed request or a status other than 200 is logged
//! and the next scrape tried. The upstream `net.*` and `tls.*` properties apply.
//! Fluent Bit: plugins/in_prometheus_scrape/prom_scrape.c

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::format::parse_prometheus;
use crate::event::metrics::MetricSet;
use crate::http_client::{self, HttpClient};
use crate::pipeline::metrics;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "host",
        PropKind::Str,
        Some("127.0.0.1"),
        "Host name or IP address of the target.",
    ),
    PropSpec::new("port", PropKind::Int, Some("80"), "TCP port of the target."),
    PropSpec::new(
        "metrics_path",
        PropKind::Str,
        Some("/metrics"),
        "Path of the metrics endpoint; it must start with a slash.",
    ),
    super::scrape_interval("10s"),
    PropSpec::new(
        "buffer_max_size",
        PropKind::Size,
        Some("10M"),
        "Largest response read; a larger one fails the scrape.",
    ),
    http_client::HTTP_USER,
    http_client::HTTP_PASSWD,
    http_client::BEARER_TOKEN,
    http_client::PROXY,
    http_client::RESPONSE_TIMEOUT,
    http_client::READ_IDLE_TIMEOUT,
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "prometheus_scrape",
    description: "Scrape metrics from Prometheus Endpoint",
    props: PROPS,
    net: false,
    upstream: true,
    build,
};

struct PrometheusScrape {
    name: String,
    client: HttpClient,
    path: String,
    headers: Arc<[(HeaderName, HeaderValue)]>,
    max_size: usize,
    interval: Duration,
    /// Lines of scrapes that were not the exposition format.
    skipped: Arc<AtomicU64>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let host = props.str("host").unwrap_or("127.0.0.1");
    let port = u16::try_from(props.int("port").unwrap_or(80))
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?;
    let path = props.str("metrics_path").unwrap_or("/metrics");
    if !path.starts_with('/') {
        return Err(props.error(
            "metrics_path",
            "a path that starts with /, such as /metrics",
        ));
    }
    let mut headers = Vec::new();
    if let Some(auth) = http_client::authorization(props, true)? {
        headers.push((hyper::header::AUTHORIZATION, auth));
    }
    headers.push((
        hyper::header::USER_AGENT,
        HeaderValue::from_static("Fluent-Bit"),
    ));
    Ok(Box::new(PrometheusScrape {
        name: ctx.instance.to_string(),
        client: HttpClient::from_props(props, host, port)?,
        path: path.to_string(),
        headers: headers.into(),
        max_size: props.size("buffer_max_size").unwrap_or(10_000_000) as usize,
        interval: super::scrape_interval_of(props)?,
        skipped: ctx.metrics.counter(
            "agent_input_scrape_skipped_lines_total",
            "Lines of scraped metrics that were not the exposition format.",
            ctx.instance,
        ),
    }))
}

impl PrometheusScrape {
    async fn scrape(&self) -> Option<MetricSet> {
        let reply = match self
            .client
            .send(Method::GET, &self.path, &self.headers, bytes::Bytes::new())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                crate::error!("[input:prometheus_scrape:{}] {e}", self.name);
                return None;
            }
        };
        if reply.status.as_u16() != 200 {
            crate::error!(
                "[input:prometheus_scrape:{}] http status code error: [{}] {}",
                self.name,
                self.path,
                reply.status.as_u16()
            );
            return None;
        }
        if reply.body.len() > self.max_size {
            crate::error!(
                "[input:prometheus_scrape:{}] the response ({} bytes) is over buffer_max_size ({}): raise buffer_max_size",
                self.name,
                reply.body.len(),
                self.max_size
            );
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let (set, skipped) = parse_prometheus(&String::from_utf8_lossy(&reply.body), now);
        if skipped > 0 {
            metrics::add(&self.skipped, skipped as u64);
            crate::warn!(
                "[input:prometheus_scrape:{}] {skipped} lines of {} are not the Prometheus text format and were skipped",
                self.name,
                self.path
            );
        }
        (!set.families.is_empty()).then_some(set)
    }
}

impl Input for PrometheusScrape {
    fn signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::METRICS
    }

    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let me = Arc::new(*self);
            let interval = me.interval;
            // Fluent Bit scrapes once an interval has passed.
            super::scrape_every(&mut ctx, interval, false, move || {
                let me = me.clone();
                async move { me.scrape().await }
            })
            .await
        })
    }
}
