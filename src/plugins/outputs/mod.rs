//! Outputs, one module per Fluent Bit name, and what their tables share.

pub mod forward;
pub mod stdout;
pub mod tcp;

use std::sync::Arc;

use crate::config::Props;
use crate::event::format::{DateFormat, JsonOptions};

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
