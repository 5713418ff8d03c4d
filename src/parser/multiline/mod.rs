//! Multiline: join lines into records, as Fluent Bit's multiline engine does
//! (built-in `docker`, `cri`, `go`, `python`, `java`, `ruby`; custom `[MULTILINE_PARSER]`s),
//! plus tail's older `multiline on`/`parser_firstline` and `docker_mode`.
//! Fluent Bit: src/multiline/, plugins/in_tail/tail_multiline.c, tail_dockermode.c

use std::sync::Arc;
use std::time::Instant;

use crate::config::{ConfigError, Section};
use crate::event::{EventTime, Map, Str};

use super::Parsers;

/// One multiline parser definition, compiled.
#[derive(Debug)]
pub struct MlParser {
    pub name: Arc<str>,
}

impl MlParser {
    /// Compiles one `[MULTILINE_PARSER]` section; its `parser` is looked up in `parsers`
    /// (defined earlier). Errors name the section's file:line.
    pub fn from_section(section: &Section, _parsers: &Parsers) -> Result<MlParser, ConfigError> {
        Err(ConfigError::invalid(
            &section.span,
            "multiline parsers are not built yet".to_string(),
            None,
        ))
    }
}

/// The names of the built-in multiline parsers.
pub const BUILTINS: &[&str] = &["docker", "cri", "go", "python", "java", "ruby"];

/// A built-in multiline parser by name (`docker`, `cri`, `go`, `python`, `java`, `ruby`).
pub fn builtin(_name: &str) -> Option<Arc<MlParser>> {
    None
}

/// One joined record. `first`/`end` are the positions the caller gave with the first and
/// the last line it is made of (tail: byte offsets), so a caller can commit only what
/// was emitted.
#[derive(Debug, Clone, PartialEq)]
pub struct MlRecord {
    pub time: EventTime,
    pub body: Map,
    pub first: u64,
    pub end: u64,
}

/// The state of one stream (a file, a tag): lines held until their record is complete.
#[derive(Debug)]
pub struct MlStream {
    _parsers: Vec<Arc<MlParser>>,
    _key_content: Option<Str>,
}

impl MlStream {
    /// A stream joined by `parsers`, tried in order as Fluent Bit does; `key_content`
    /// overrides each parser's own.
    pub fn new(parsers: Vec<Arc<MlParser>>, key_content: Option<Str>) -> MlStream {
        MlStream {
            _parsers: parsers,
            _key_content: key_content,
        }
    }

    /// A line of raw text (tail), without its newline. `first` is the position of its
    /// first byte and `end` the position after it. Completed records go to `out`.
    pub fn append_text(
        &mut self,
        _line: &[u8],
        _time: EventTime,
        _first: u64,
        _end: u64,
        _now: Instant,
        _out: &mut Vec<MlRecord>,
    ) {
    }

    /// A record whose `key_content` holds the text (the multiline filter).
    pub fn append_record(
        &mut self,
        _time: EventTime,
        _body: Map,
        _first: u64,
        _end: u64,
        _now: Instant,
        _out: &mut Vec<MlRecord>,
    ) {
    }

    /// Emits records held longer than their parser's `flush_timeout`.
    pub fn flush_expired(&mut self, _now: Instant, _out: &mut Vec<MlRecord>) {}

    /// Emits everything held (end of file, shutdown).
    pub fn flush(&mut self, _out: &mut Vec<MlRecord>) {}

    /// `first` of the oldest line held and not yet emitted: what a caller must not
    /// commit past.
    pub fn pending_from(&self) -> Option<u64> {
        None
    }

    /// When `flush_expired` next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        None
    }
}
