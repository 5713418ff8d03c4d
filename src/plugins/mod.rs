//! Plugin traits and the static registry of every plugin, by its Fluent Bit name.

pub mod filters;
pub mod inputs;
pub mod outputs;
pub mod processors;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ConfigError, PropSpec, Props, ServiceConfig};
use crate::event::{Chunk, Record, Tag};
use crate::pipeline::{InputSender, Shutdown};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a plugin failed at run time.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A system call failed (a server input that cannot listen, say).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The engine stopped accepting records (shutdown).
    #[error("the engine is shutting down")]
    Closed,
    #[error("{0}")]
    Other(String),
}

/// What plugins may read at build time besides their own properties.
pub struct BuildContext<'a> {
    pub service: &'a ServiceConfig,
    /// The instance name, e.g. `random.0`.
    pub instance: &'a str,
    /// Where the plugin registers its own metrics.
    pub metrics: &'a crate::pipeline::metrics::PluginMetrics,
    /// Tags that a `limit` of 0 drops entirely: an input need not even read them
    /// (tail does not open such files).
    pub dropped_tags: &'a [crate::pipeline::router::Matcher],
    /// Every parser and multiline parser of the configuration.
    pub parsers: &'a crate::parser::Parsers,
    /// Stops the agent with an exit status (the expect filter's `action exit`).
    pub exit: &'a crate::pipeline::shutdown::ExitRequest,
    /// The main config file's directory (relative files are tried there second).
    pub main_dir: Option<&'a std::path::Path>,
    /// `@SET` and YAML `env:` variables, by name.
    pub vars: &'a [(String, String)],
    /// Every instance's counters, set once the whole pipeline is built (the
    /// fluentbit_metrics input reads them at run time).
    pub registry: &'a Arc<std::sync::OnceLock<Arc<crate::pipeline::metrics::Registry>>>,
}

impl BuildContext<'_> {
    /// The parser named by property `key` (if set). A name defined nowhere is an error
    /// at that property's line, naming the files searched and the nearest name.
    pub fn parser(
        &self,
        props: &Props,
        key: &str,
    ) -> Result<Option<Arc<crate::parser::Parser>>, ConfigError> {
        match props.str(key) {
            None => Ok(None),
            Some(name) => self.parser_named(props, key, name).map(Some),
        }
    }

    /// The parser `name`, given in property `key` (one of several names of a list).
    pub fn parser_named(
        &self,
        props: &Props,
        key: &str,
        name: &str,
    ) -> Result<Arc<crate::parser::Parser>, ConfigError> {
        self.parsers.parser(name).ok_or_else(|| {
            self.parsers.unknown(
                props.span_of(key),
                "parser",
                name,
                self.parsers.parser_names(),
            )
        })
    }

    /// The multiline parser `name` (a `[MULTILINE_PARSER]` or a built-in one).
    pub fn multiline_named(
        &self,
        props: &Props,
        key: &str,
        name: &str,
    ) -> Result<Arc<crate::parser::multiline::MlParser>, ConfigError> {
        self.parsers.multiline(name).ok_or_else(|| {
            self.parsers.unknown(
                props.span_of(key),
                "multiline parser",
                name,
                self.parsers.multiline_names(),
            )
        })
    }
}

/// Everything an input needs to run.
pub struct InputContext {
    /// `random.0` (or the alias), for logs.
    pub name: Arc<str>,
    pub tag: Tag,
    /// Bounded: a slow pipeline makes `send` wait (backpressure), never drops.
    pub out: InputSender,
    pub shutdown: Shutdown,
}

/// A source of records. Runs until `ctx.shutdown` fires or the source is exhausted.
pub trait Input: Send + 'static {
    fn run(self: Box<Self>, ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>>;
    /// The signals it makes: log records unless it says otherwise.
    fn signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::LOGS
    }
    /// Threads its tasks can use at once (the forward input's `workers`); a thread of
    /// its own (processors, `threaded true`) gets that many.
    fn threads(&self) -> usize {
        1
    }
}

/// Fluent Bit's FLB_FILTER_NOTOUCH / FLB_FILTER_MODIFIED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterResult {
    NoTouch,
    Modified,
    /// Modified, and the records' [`Record::encoded_len`] sum changed by this much (a
    /// filter that knows saves the engine a walk over the records to measure them).
    Resized(i64),
}

impl FilterResult {
    /// What two filters in a row did.
    pub fn then(self, next: FilterResult) -> FilterResult {
        match (self, next) {
            (FilterResult::NoTouch, r) | (r, FilterResult::NoTouch) => r,
            (FilterResult::Resized(a), FilterResult::Resized(b)) => FilterResult::Resized(a + b),
            _ => FilterResult::Modified,
        }
    }

    /// `Modified` when any record changed.
    pub fn modified_if(changed: bool) -> FilterResult {
        if changed {
            FilterResult::Modified
        } else {
            FilterResult::NoTouch
        }
    }
}

/// Runs inline on the engine task for every batch whose tag matches. Never blocks; time
/// comes in as an argument so tests can pass any `Instant`.
pub trait Filter: Send + 'static {
    fn filter(&mut self, tag: &str, records: &mut Vec<Record>, now: Instant) -> FilterResult;
    /// Called every flush tick and once at shutdown; time-windowed filters emit here.
    fn tick(&mut self, _now: Instant, _out: &mut Vec<Chunk>) {}
    /// Called once when the agent stops, after the last batch: emit what is held
    /// (a partial aggregation interval) so that nothing accepted is lost.
    fn shutdown(&mut self, now: Instant, out: &mut Vec<Chunk>) {
        self.tick(now, out)
    }
    /// The emitter of a filter that re-emits records under new tags (rewrite_tag):
    /// what `filter` emits there is taken by the engine right after and ingested again
    /// from the first filter matching the new tag.
    fn emitter(&mut self) -> Option<&mut crate::pipeline::emitter::Emitter> {
        None
    }
}

/// Fluent Bit's FLB_OK / FLB_RETRY / FLB_ERROR.
#[derive(Debug)]
pub enum FlushResult {
    Ok,
    Retry(String),
    /// A retry the destination asked to wait for (HTTP `Retry-After`): not sooner than
    /// this, nor later than the scheduler's cap.
    RetryAfter(std::time::Duration, String),
    Error(String),
    /// Some records were delivered, some given up on, and the rest should be sent again
    /// (an Elasticsearch bulk reply that accepted most items): the next attempt flushes
    /// a chunk of only the records in `retry`.
    Partial(Partial),
}

/// What [`FlushResult::Partial`] reports about the chunk just flushed.
#[derive(Debug, Default)]
pub struct Partial {
    /// Indexes into the flushed chunk's records of those to send again, ascending.
    /// Empty: nothing left to retry (the chunk is done).
    pub retry: Vec<usize>,
    /// Records given up on (counted in `dropped_records`; the output logs why).
    pub dropped: u64,
    /// The destination asked to wait at least this long before the retry.
    pub after: Option<std::time::Duration>,
    /// Why the rest is retried, for the engine's log line.
    pub reason: String,
}

/// A destination. The engine owns retries and backoff; the output reports what happened.
pub trait Output: Send + 'static {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult>;
    /// Another worker of the same instance (`workers N`). Workers may share state such
    /// as a connection pool; each owns its buffers.
    fn fork(&self) -> Box<dyn Output>;
    /// The signals it takes (Fluent Bit's `event_type`): logs unless it says otherwise.
    fn signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::LOGS
    }
    /// Signals Fluent Bit's plugin of this name takes and this one does not: a chunk of
    /// one routed here is not skipped in silence but logged (once per tag) and counted
    /// as dropped.
    fn unsupported_signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::NONE
    }
    /// Chunks must reach the destination in the order they were routed (Prometheus
    /// refuses a series' older samples after newer ones): while a chunk waits for a
    /// retry, the worker takes no newer one.
    fn ordered(&self) -> bool {
        false
    }
    /// Called once on the first worker when the pipeline starts, before any flush
    /// (a server output binds its port here). An error stops the pipeline's start.
    fn start(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// How a plugin is built from its validated properties.
pub type BuildFn<T> = fn(&Props, &BuildContext) -> Result<Box<T>, ConfigError>;

pub struct InputPlugin {
    /// What users type: `random`.
    pub name: &'static str,
    pub description: &'static str,
    pub props: &'static [PropSpec],
    /// A server: the downstream `net.*` table and the `tls.*` tables (with
    /// `tls.verify_client_cert`) are merged into its own.
    pub net: bool,
    /// A client of a server (prometheus_scrape): the upstream `net.*` and `tls.*`
    /// tables are merged into its own, as for a networked output.
    pub upstream: bool,
    pub build: BuildFn<dyn Input>,
}

pub struct FilterPlugin {
    pub name: &'static str,
    pub description: &'static str,
    pub props: &'static [PropSpec],
    pub build: BuildFn<dyn Filter>,
}

pub struct OutputPlugin {
    pub name: &'static str,
    pub description: &'static str,
    pub props: &'static [PropSpec],
    /// Fluent Bit's default `workers` for this plugin.
    pub workers: usize,
    /// Connects to a destination: the `net.*` and `tls.*` tables are merged into its own
    /// (Fluent Bit's `FLB_OUTPUT_NET | FLB_IO_OPT_TLS`).
    pub net: bool,
    /// Builds the first worker; the others are `fork`ed from it.
    pub build: BuildFn<dyn Output>,
}

pub static INPUTS: &[&InputPlugin] = &[
    &inputs::conntrack::PLUGIN,
    &inputs::cpu::PLUGIN,
    &inputs::disk::PLUGIN,
    &inputs::dummy::PLUGIN,
    &inputs::exec::PLUGIN,
    &inputs::fluentbit_metrics::PLUGIN,
    &inputs::forward::PLUGIN,
    &inputs::head::PLUGIN,
    &inputs::http::PLUGIN,
    &inputs::kafka::PLUGIN,
    &inputs::kmsg::PLUGIN,
    &inputs::mem::PLUGIN,
    &inputs::netif::PLUGIN,
    &inputs::nflog::PLUGIN,
    &inputs::node_exporter_metrics::PLUGIN,
    &inputs::proc::PLUGIN,
    &inputs::prometheus_scrape::PLUGIN,
    &inputs::random::PLUGIN,
    &inputs::stdin::PLUGIN,
    &inputs::syslog::PLUGIN,
    &inputs::systemd::PLUGIN,
    &inputs::tail::PLUGIN,
    &inputs::tcp::PLUGIN,
    &inputs::udp::PLUGIN,
];
pub static FILTERS: &[&FilterPlugin] = &[
    &filters::aws::PLUGIN,
    &filters::expect::PLUGIN,
    &filters::flow_aggregate::PLUGIN,
    &filters::grep::PLUGIN,
    &filters::kubernetes::PLUGIN,
    &filters::limit::PLUGIN,
    &filters::lua::PLUGIN,
    &filters::modify::PLUGIN,
    &filters::multiline::PLUGIN,
    &filters::nest::PLUGIN,
    &filters::parser::PLUGIN,
    &filters::record_modifier::PLUGIN,
    &filters::rewrite_tag::PLUGIN,
    &filters::stdout::PLUGIN,
    &filters::throttle::PLUGIN,
];
pub static OUTPUTS: &[&OutputPlugin] = &[
    &outputs::cloudwatch_logs::PLUGIN,
    &outputs::counter::PLUGIN,
    &outputs::es::PLUGIN,
    &outputs::file::PLUGIN,
    &outputs::forward::PLUGIN,
    &outputs::http::PLUGIN,
    &outputs::kafka::PLUGIN,
    &outputs::loki::PLUGIN,
    &outputs::null::PLUGIN,
    &outputs::opensearch::PLUGIN,
    &outputs::opentelemetry::PLUGIN,
    &outputs::prometheus_exporter::PLUGIN,
    &outputs::prometheus_remote_write::PLUGIN,
    &outputs::stdout::PLUGIN,
    &outputs::tcp::PLUGIN,
];

pub fn input(name: &str) -> Option<&'static InputPlugin> {
    INPUTS
        .iter()
        .copied()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}
pub fn filter(name: &str) -> Option<&'static FilterPlugin> {
    FILTERS
        .iter()
        .copied()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}
pub fn output(name: &str) -> Option<&'static OutputPlugin> {
    OUTPUTS
        .iter()
        .copied()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PropKind;
    use crate::pipeline::{
        CORE_COMMON_PROPS, CORE_INPUT_PROPS, CORE_MATCH_PROPS, CORE_OUTPUT_PROPS,
    };

    /// Every table of every plugin: defaults parse with their kind, names are unique,
    /// lower-case, and never shadow a core key (`net.*`/`tls.*` included).
    #[test]
    fn every_property_table_is_sound() {
        // The core keys each kind of section has (what a plugin key must not shadow).
        let merged = |tables: &[&[PropSpec]]| -> Vec<PropSpec> {
            tables
                .iter()
                .flat_map(|t| t.iter())
                .map(|s| PropSpec::new(s.name, s.kind, s.default, s.desc))
                .collect()
        };
        let input_core = merged(&[
            CORE_COMMON_PROPS,
            CORE_INPUT_PROPS,
            crate::net::DOWNSTREAM_NET_PROPS,
            crate::net::TLS_PROPS,
            crate::net::DOWNSTREAM_TLS_PROPS,
        ]);
        let filter_core = merged(&[CORE_COMMON_PROPS, CORE_MATCH_PROPS]);
        let processor_core = merged(&[CORE_COMMON_PROPS]);
        let output_core = merged(&[
            CORE_COMMON_PROPS,
            CORE_MATCH_PROPS,
            CORE_OUTPUT_PROPS,
            crate::net::NET_PROPS,
            crate::net::TLS_PROPS,
        ]);
        let tables: Vec<(&str, &[PropSpec], &[PropSpec])> = INPUTS
            .iter()
            .map(|p| (p.name, p.props, &input_core[..]))
            .chain(FILTERS.iter().map(|p| (p.name, p.props, &filter_core[..])))
            .chain(OUTPUTS.iter().map(|p| (p.name, p.props, &output_core[..])))
            .chain(
                processors::PROCESSORS
                    .iter()
                    .map(|p| (p.name, p.props, &processor_core[..])),
            )
            .chain(
                processors::METRICS_PROCESSORS
                    .iter()
                    .map(|p| (p.name, p.props, &processor_core[..])),
            )
            .chain([
                ("core input", &input_core[..], &[][..]),
                ("core filter", &filter_core[..], &[][..]),
                ("core output", &output_core[..], &[][..]),
                ("service", crate::config::service::SERVICE_PROPS, &[][..]),
                ("downstream", crate::net::DOWNSTREAM_NET_PROPS, &[][..]),
            ])
            .collect();
        for (plugin, own, core) in tables {
            for (i, spec) in own.iter().enumerate() {
                assert_eq!(
                    spec.name,
                    spec.name.to_ascii_lowercase(),
                    "{plugin}: {}",
                    spec.name
                );
                assert!(
                    !own[..i].iter().any(|s| s.name == spec.name),
                    "{plugin}: {} twice",
                    spec.name
                );
                assert!(
                    !core.iter().any(|s| s.name == spec.name),
                    "{plugin}: {} shadows a core key",
                    spec.name
                );
                assert!(
                    !spec.desc.is_empty(),
                    "{plugin}: {} has no description",
                    spec.name
                );
                if let Some(d) = spec.default {
                    assert!(
                        spec.kind.check(d),
                        "{plugin}: default '{d}' of {} is not a valid {:?}",
                        spec.name,
                        spec.kind
                    );
                }
                if spec.kind == PropKind::Multi {
                    assert!(
                        spec.default.is_none(),
                        "{plugin}: multi property {} with a default",
                        spec.name
                    );
                }
            }
        }
    }

    #[test]
    fn plugin_names_are_unique_and_found_case_insensitively() {
        let mut names: Vec<&str> = INPUTS.iter().map(|p| p.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), INPUTS.len());
        assert!(input("RANDOM").is_some());
        assert!(output("Stdout").is_some());
        assert!(filter("record_modifier").is_some());
        assert!(input("nope").is_none());
    }
}
