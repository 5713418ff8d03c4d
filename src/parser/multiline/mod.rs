//! Multiline: join lines into records, as Fluent Bit's multiline engine does
//! (built-in `docker`, `cri`, `go`, `python`, `java`, `ruby`; custom `[MULTILINE_PARSER]`s),
//! plus tail's older `multiline on`/`parser_firstline` and `docker_mode`.
//! Fluent Bit: src/multiline/, plugins/in_tail/tail_multiline.c, tail_dockermode.c
//!
//! Layout:
//! - [`MlParser`] definitions: `config.rs` reads `[MULTILINE_PARSER]` sections,
//!   `builtin.rs` holds the built-ins, `rules.rs` the regex state machine and
//!   `regex.rs` the Onigmo-to-`regex` translation.
//! - [`MlStream`]: `engine.rs` is `flb_ml_append_text`/`_object` and their flushes;
//!   `legacy.rs` the two tail modes.
//! - `container.rs` and `time.rs` read Docker and CRI lines natively, the hot path.
//!
//! Positions: every line comes with `first` (its first byte) and `end` (after it). A
//! record carries `first` of its first line and `end` of its last; [`MlStream::pending_from`]
//! is the `first` of the oldest line still held, so a caller that commits offsets only
//! up to it never loses half a record after a crash (lines are re-read, at least once).

mod builtin;
mod config;
mod container;
mod engine;
#[cfg(test)]
mod golden;
mod legacy;
mod rules;
#[cfg(test)]
mod tests;
mod time;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, Section};
use crate::event::{EventTime, Map, Record, Str};

use super::{Parser, Parsers};

pub use builtin::{builtin, BUILTINS};

/// Fluent Bit's default `flush_timeout` (`FLB_ML_FLUSH_TIMEOUT`), milliseconds.
pub const DEFAULT_FLUSH_MS: u64 = 4000;

/// Fluent Bit's default `multiline_buffer_limit` (2MB): a joined regex record is cut
/// there and marked truncated.
pub const DEFAULT_BUFFER_LIMIT: usize = 2 * 1024 * 1024;

/// One multiline parser definition, compiled.
#[derive(Debug)]
pub struct MlParser {
    pub name: Arc<str>,
    kind: Kind,
    negate: bool,
    /// `flush_timeout`, milliseconds.
    flush_ms: u64,
    key_content: Option<Str>,
    key_pattern: Option<Str>,
    key_group: Option<Str>,
    line: LineParser,
}

/// How a line is recognised (Fluent Bit's `FLB_ML_REGEX`, `_ENDSWITH`, `_EQ`).
#[derive(Debug)]
enum Kind {
    Regex(rules::Rules),
    /// The content (or `key_pattern`) ends with this: the record is complete.
    EndsWith(Box<[u8]>),
    /// The content (or `key_pattern`) equals this: the record is complete.
    Equal(Box<[u8]>),
}

/// What turns a line of text into a map first (the `parser` property).
#[derive(Debug)]
enum LineParser {
    None,
    /// Built-in `_ml_json_docker`, read natively.
    Docker,
    /// Built-in `_ml_cri`, read natively.
    Cri,
    Custom(Arc<Parser>),
}

impl MlParser {
    /// Compiles one `[MULTILINE_PARSER]` section; its `parser` is looked up in `parsers`
    /// (defined earlier). Errors name the section's file:line.
    pub fn from_section(section: &Section, parsers: &Parsers) -> Result<MlParser, ConfigError> {
        config::from_section(section, parsers)
    }

    /// `flush_timeout`.
    pub fn flush_timeout(&self) -> Duration {
        Duration::from_millis(self.flush_ms)
    }
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
    /// The metadata of the records joined ([`MlStream::append_event`]), each key/value
    /// once, then `multiline_truncated: true` when the text was cut; empty for text.
    pub metadata: Map,
    /// Cut at the buffer limit (tail warns "multiline message truncated due to buffer
    /// limit" and counts it).
    pub truncated: bool,
}

impl MlRecord {
    /// A record of one line, nothing joined, no metadata.
    pub fn new(time: EventTime, body: Map, first: u64, end: u64) -> MlRecord {
        MlRecord {
            time,
            body,
            first,
            end,
            metadata: Map::new(),
            truncated: false,
        }
    }

    /// The record as the pipeline carries it.
    pub fn into_record(self) -> Record {
        Record {
            time: self.time,
            metadata: self.metadata,
            body: self.body,
        }
    }
}

/// The state of one stream (a file, a tag): lines held until their record is complete.
#[derive(Debug)]
pub struct MlStream {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Engine(Box<engine::Engine>),
    Firstline(Box<legacy::Firstline>),
    DockerMode(Box<legacy::DockerMode>),
}

impl MlStream {
    /// A stream joined by `parsers`, tried in order as Fluent Bit does; `key_content`
    /// overrides each parser's own.
    ///
    /// The parser that took the previous line is tried first; when none takes a line,
    /// everything held is flushed and the line goes out alone (as `{"log": line}` for
    /// text, unchanged for a record).
    pub fn new(parsers: Vec<Arc<MlParser>>, key_content: Option<Str>) -> MlStream {
        MlStream {
            inner: Inner::Engine(Box::new(engine::Engine::new(parsers, key_content))),
        }
    }

    /// tail's `multiline on`: a line that `firstline` parses starts a record; a line one
    /// of `parsers` (`parser_1`, ...) parses adds its keys; other lines are appended to
    /// the record's last string value (after `\n`) or go out alone as `{key: line}`.
    /// Held records go out `flush` after their first line (`multiline_flush`).
    pub fn firstline(
        firstline: Arc<Parser>,
        parsers: Vec<Arc<Parser>>,
        flush: Duration,
        key: Str,
    ) -> MlStream {
        let inner = legacy::Firstline::new(firstline, parsers, flush, key);
        MlStream {
            inner: Inner::Firstline(Box::new(inner)),
        }
    }

    /// tail's `docker_mode`: Docker JSON lines whose `log` does not end with a newline
    /// are joined with the next ones; each result is the last line's JSON with `log`
    /// replaced by the joined text, as `{key: json_text}` — the caller applies its
    /// `parser` to it as to any line, and lines that are not Docker JSON come out as
    /// `{key: line}` the same way. With `firstline` (`docker_mode_parser`), complete lines
    /// are joined too until a line the parser matches. `flush` is `docker_mode_flush`.
    pub fn docker_mode(flush: Duration, firstline: Option<Arc<Parser>>, key: Str) -> MlStream {
        let inner = legacy::DockerMode::new(flush, firstline, key);
        MlStream {
            inner: Inner::DockerMode(Box::new(inner)),
        }
    }

    /// A line of raw text (tail), without its newline. `first` is the position of its
    /// first byte and `end` the position after it. Completed records go to `out`.
    pub fn append_text(
        &mut self,
        line: &[u8],
        time: EventTime,
        first: u64,
        end: u64,
        now: Instant,
        out: &mut Vec<MlRecord>,
    ) {
        let at = engine::At { first, end, now };
        match &mut self.inner {
            Inner::Engine(e) => e.append(engine::Input::Text(line), time, at, out),
            Inner::Firstline(f) => f.append(line, time, at, out),
            Inner::DockerMode(d) => d.append(line, time, at, out),
        }
    }

    /// A record whose `key_content` holds the text (the multiline filter).
    pub fn append_record(
        &mut self,
        time: EventTime,
        body: Map,
        first: u64,
        end: u64,
        now: Instant,
        out: &mut Vec<MlRecord>,
    ) {
        self.append_event(time, Map::new(), body, first, end, now, out);
    }

    /// A record with its metadata. Fluent Bit keeps each line's metadata (binary values
    /// turned into hex strings) and gives a record those of the lines added since the
    /// previous flush — a line that completes a record is added after that flush, so its
    /// metadata goes to the next record.
    #[allow(clippy::too_many_arguments)]
    pub fn append_event(
        &mut self,
        time: EventTime,
        metadata: Map,
        body: Map,
        first: u64,
        end: u64,
        now: Instant,
        out: &mut Vec<MlRecord>,
    ) {
        let at = engine::At { first, end, now };
        match &mut self.inner {
            Inner::Engine(e) => e.append(engine::Input::Record { body, metadata }, time, at, out),
            // The legacy modes read text only: a record passes unchanged.
            Inner::Firstline(_) | Inner::DockerMode(_) => {
                out.push(MlRecord {
                    metadata,
                    ..MlRecord::new(time, body, first, end)
                });
            }
        }
    }

    /// Emits records held longer than their parser's `flush_timeout`.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<MlRecord>) {
        match &mut self.inner {
            Inner::Engine(e) => e.flush_expired(now, out),
            Inner::Firstline(f) => f.flush_expired(now, out),
            Inner::DockerMode(d) => d.flush_expired(now, out),
        }
    }

    /// Emits everything held (end of file, shutdown).
    pub fn flush(&mut self, out: &mut Vec<MlRecord>) {
        match &mut self.inner {
            Inner::Engine(e) => e.flush_all(out),
            Inner::Firstline(f) => f.flush(out),
            Inner::DockerMode(d) => d.flush(out),
        }
    }

    /// `first` of the oldest line held and not yet emitted: what a caller must not
    /// commit past.
    pub fn pending_from(&self) -> Option<u64> {
        match &self.inner {
            Inner::Engine(e) => e.pending_from(),
            Inner::Firstline(f) => f.pending_from(),
            Inner::DockerMode(d) => d.pending_from(),
        }
    }

    /// When `flush_expired` next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.inner {
            Inner::Engine(e) => e.deadline(),
            Inner::Firstline(f) => f.deadline(),
            Inner::DockerMode(d) => d.deadline(),
        }
    }

    /// The flush period: the largest `flush_timeout` of the parsers (Fluent Bit's
    /// `ml->flush_ms`); `multiline_flush`/`docker_mode_flush` in the legacy modes. Fluent
    /// Bit refuses to start a multiline context whose period is under 500 ms
    /// ("flush timeout '%i' is too low").
    pub fn flush_timeout(&self) -> Duration {
        match &self.inner {
            Inner::Engine(e) => e.period(),
            Inner::Firstline(f) => f.period(),
            Inner::DockerMode(d) => d.period(),
        }
    }

    /// Overrides the flush period (the multiline filter's `flush_ms` in buffered mode).
    pub fn set_flush_timeout(&mut self, period: Duration) {
        if let Inner::Engine(e) = &mut self.inner {
            e.set_period(period);
        }
    }

    /// Sets the largest joined text of a regex record (`[SERVICE] multiline_buffer_limit`,
    /// default 2MB; 0 means no limit).
    pub fn set_buffer_limit(&mut self, limit: usize) {
        if let Inner::Engine(e) = &mut self.inner {
            e.set_buffer_limit(limit);
        }
    }
}
