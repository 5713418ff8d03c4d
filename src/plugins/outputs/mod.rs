//! Outputs, one module per Fluent Bit name, and what their tables share.

pub mod cloudwatch_logs;
pub mod counter;
pub mod es;
pub mod file;
pub mod forward;
pub mod http;
pub mod kafka;
pub mod loki;
pub mod null;
pub mod opensearch;
pub mod opentelemetry;
pub mod prometheus_exporter;
pub mod prometheus_remote_write;
pub mod stdout;
pub mod tcp;

use std::sync::Arc;

use crate::config::{PropKind, PropSpec, Props};
use crate::event::format::{DateFormat, JsonOptions};

/// A retry of what `reply` answered, after its `Retry-After` when it gives one.
pub fn retry(reply: &crate::http_client::Reply, line: String) -> crate::plugins::FlushResult {
    match reply.retry_after() {
        Some(after) => crate::plugins::FlushResult::RetryAfter(after, line),
        None => crate::plugins::FlushResult::Retry(line),
    }
}

/// `json_date_format` values, Fluent Bit's spellings.
pub const DATE_FORMATS: &[&str] = &[
    "double",
    "epoch",
    "epoch_ms",
    "epoch_millis",
    "epoch_milliseconds",
    "iso8601",
    "java_sql_timestamp",
];

/// Reads `json_date_key` and `json_date_format` (every output with JSON formats has them).
/// `json_date_format`, shared by every output that writes JSON.
pub const JSON_DATE_FORMAT: PropSpec = PropSpec::new(
    "json_date_format",
    PropKind::Enum(DATE_FORMATS),
    Some("double"),
    "Date format in JSON: double, epoch, epoch_ms, iso8601 or java_sql_timestamp.",
);

/// `json_date_key`, shared by every output that writes JSON.
pub const JSON_DATE_KEY: PropSpec = PropSpec::new(
    "json_date_key",
    PropKind::Str,
    Some("date"),
    "Name of the date key in JSON; 'false' leaves it out.",
);

/// The `gelf_*_key` properties of the outputs with `format gelf`.
pub const GELF_TIMESTAMP_KEY: PropSpec = PropSpec::new(
    "gelf_timestamp_key",
    PropKind::Str,
    None,
    "GELF format: the record key used as 'timestamp'.",
);
pub const GELF_HOST_KEY: PropSpec = PropSpec::new(
    "gelf_host_key",
    PropKind::Str,
    None,
    "GELF format: the record key used as 'host'.",
);
pub const GELF_SHORT_MESSAGE_KEY: PropSpec = PropSpec::new(
    "gelf_short_message_key",
    PropKind::Str,
    None,
    "GELF format: the record key used as 'short_message'.",
);
pub const GELF_FULL_MESSAGE_KEY: PropSpec = PropSpec::new(
    "gelf_full_message_key",
    PropKind::Str,
    None,
    "GELF format: the record key used as 'full_message'.",
);
pub const GELF_LEVEL_KEY: PropSpec = PropSpec::new(
    "gelf_level_key",
    PropKind::Str,
    None,
    "GELF format: the record key used as 'level'.",
);

/// The `gelf_*_key` properties as the GELF writer takes them.
pub fn gelf_fields(props: &Props) -> crate::event::format::GelfFields {
    let key = |name: &str| props.str(name).map(crate::event::Str::from);
    crate::event::format::GelfFields {
        host_key: key("gelf_host_key"),
        short_message_key: key("gelf_short_message_key"),
        timestamp_key: key("gelf_timestamp_key"),
        level_key: key("gelf_level_key"),
        full_message_key: key("gelf_full_message_key"),
    }
}

pub fn json_options(props: &Props, escape_unicode: bool) -> JsonOptions {
    let key = props.str("json_date_key").unwrap_or("date");
    let date_key = match crate::config::values::parse_bool(key) {
        Some(false) => None,
        _ => Some(Arc::from(key)),
    };
    JsonOptions {
        date_key,
        date_format: DateFormat::parse(props.str("json_date_format").unwrap_or("double"))
            .unwrap_or(DateFormat::Double),
        escape_unicode,
    }
}

/// The connection counters of a networked output's pool
/// (`agent_output_connections_{opened,reused,closed}_total`).
pub fn pool_metrics(ctx: &crate::plugins::BuildContext) -> crate::net::upstream::PoolMetrics {
    crate::net::upstream::PoolMetrics {
        opened: ctx.metrics.counter(
            "agent_output_connections_opened_total",
            "Connections the output's pool opened.",
            ctx.instance,
        ),
        reused: ctx.metrics.counter(
            "agent_output_connections_reused_total",
            "Flushes that reused an idle pooled connection.",
            ctx.instance,
        ),
        closed: ctx.metrics.counter(
            "agent_output_connections_closed_total",
            "Connections the output's pool closed (idle timeout, recycle, errors, peer close).",
            ctx.instance,
        ),
    }
}
