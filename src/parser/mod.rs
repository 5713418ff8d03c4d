//! Parsers: turn one line of text into a record, as Fluent Bit's `[PARSER]` sections do
//! (`regex`, `json`, `logfmt`, `ltsv`, with times, types and decoders), and join lines
//! into records as its `[MULTILINE_PARSER]`s do ([`multiline`]).
//!
//! Shared machinery: used by `tail`, `tcp`, the `parser` and `multiline` filters and
//! others; it knows none of them. [`Parsers`] holds every definition of a configuration,
//! loaded from `parsers_file`s and YAML `parsers:`/`multiline_parsers:`.
//! Fluent Bit: src/flb_parser*.c, src/multiline/

pub mod multiline;
mod registry;

pub use registry::Parsers;

use std::sync::Arc;

use crate::config::{ConfigError, Section};
use crate::event::{EventTime, Map};

/// The line did not match the parser (a regex that does not match, invalid JSON):
/// Fluent Bit keeps such a line unparsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoMatch;

/// One `[PARSER]` definition, compiled.
#[derive(Debug)]
pub struct Parser {
    pub name: Arc<str>,
}

impl Parser {
    /// Compiles one `[PARSER]` section (`name`, `format`, `regex`, `time_*`, `types`,
    /// `decode_field*`, `skip_empty_values`). Errors name the section's file:line: a
    /// regex that does not compile, an unknown format, a time format that cannot work.
    pub fn from_section(section: &Section) -> Result<Parser, ConfigError> {
        Err(ConfigError::invalid(&section.span, "parsers are not built yet".to_string(), None))
    }

    /// Parses `input`, appending its keys to `out` in Fluent Bit's order (and types).
    /// Returns the record time when the parser has a `time_key` that was found and read,
    /// `None` when the caller keeps its own time.
    pub fn parse(&self, _input: &[u8], _out: &mut Map) -> Result<Option<EventTime>, NoMatch> {
        Err(NoMatch)
    }
}
