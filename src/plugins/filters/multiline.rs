//! `multiline` filter: join records whose text was split across several records, by
//! multiline parsers (`mode parser`) or by the `partial_message` keys that Docker's
//! fluentd log driver and others add (`mode partial_message`).
//! Fluent Bit: plugins/filter_multiline/ml.c, ml_concat.c
//!
//! Fluent Bit re-emits buffered records through an "emitter" input; here a record
//! completed by a batch stays in that batch, and records completed by a timeout are
//! emitted at the next flush tick and then pass the filters after this one, as the
//! emitter's records do. Held records live in memory only (as in Fluent Bit): at most
//! `flush_ms` of them are lost if the process is killed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{Chunk, Map, Record, Str, Tag, Value};
use crate::parser::multiline::{MlParser, MlRecord, MlStream};
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("multiline.parser", PropKind::Multi, None, "Comma-separated multiline parsers tried in order (docker, cri, go, python, java, ruby or a [MULTILINE_PARSER]); repeatable."),
    PropSpec::new("multiline.key_content", PropKind::Str, None, "Key whose text is joined (required with mode partial_message)."),
    PropSpec::new("mode", PropKind::Enum(&["parser", "partial_message"]), Some("parser"), "parser: join by multiline parsers; partial_message: join records that carry partial_message/partial_id/partial_last keys."),
    PropSpec::new("buffer", PropKind::Bool, Some("true"), "Hold incomplete records across batches (needed for inputs that send one record at a time); off joins within each batch only."),
    PropSpec::new("flush_ms", PropKind::Int, Some("2000"), "Milliseconds a held record waits for more lines before it is emitted as it is."),
    PropSpec::new("emitter_name", PropKind::Str, None, "Name of Fluent Bit's emitter input; accepted, agent emits inline."),
    PropSpec::new("emitter_storage.type", PropKind::Enum(&["memory", "filesystem"]), Some("memory"), "Fluent Bit's emitter buffer; agent holds records in memory."),
    PropSpec::new("emitter_mem_buf_limit", PropKind::Size, Some("10M"), "Most bytes of held records; beyond it the oldest are emitted as they are."),
    PropSpec::new("debug_flush", PropKind::Bool, Some("false"), "Log each flush at debug level."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "multiline",
    description: "Concatenate multiline messages",
    props: PROPS,
    build,
};

/// Records joined by `partial_message` keys, by (tag, `partial_id`).
struct Partial {
    time: crate::event::EventTime,
    metadata: Map,
    /// The first record's keys but the content and `partial_*` keys, then the content.
    body: Map,
    text: String,
    since: Instant,
}

/// One multiline stream per tag (its flush period is `flush_ms`), with when it last got
/// a record.
struct TagStream {
    ml: MlStream,
    last: Instant,
}

struct MultilineFilter {
    parsers: Vec<Arc<MlParser>>,
    key: Option<Str>,
    buffer: bool,
    flush: Duration,
    partial_mode: bool,
    streams: HashMap<Tag, TagStream>,
    partials: HashMap<(Tag, String), Partial>,
    /// Bytes held (approximately), bounded by `emitter_mem_buf_limit`.
    limit: u64,
    /// `[SERVICE] multiline_buffer_limit`: the longest joined text.
    buffer_limit: usize,
    warned_truncated: bool,
    debug: bool,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let partial_mode = props
        .str("mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("partial_message"));
    let buffer = props.bool("buffer").unwrap_or(true);
    let key = props.str("multiline.key_content").map(Arc::<str>::from);
    let mut parsers = Vec::new();
    for e in props.multi_entries("multiline.parser") {
        for name in e.value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let p = ctx.parsers.multiline(name).ok_or_else(|| {
                ctx.parsers.unknown(
                    &e.span,
                    "multiline parser",
                    name,
                    ctx.parsers.multiline_names(),
                )
            })?;
            parsers.push(p);
        }
    }
    if partial_mode {
        if !buffer {
            return Err(props.error("buffer", "on: 'mode partial_message' requires 'buffer on'"));
        }
        if key.is_none() {
            return Err(ConfigError::invalid(
                props.span_of("mode"),
                "[config] multiline: 'mode partial_message' requires 'multiline.key_content'",
                Some("add 'multiline.key_content log' (the key whose text was split)".into()),
            ));
        }
    } else if parsers.is_empty() {
        return Err(ConfigError::invalid(
            props.span(),
            "[config] multiline: the default 'mode parser' requires at least one 'multiline.parser'",
            Some("add 'multiline.parser docker, cri' (or go, python, java, ruby, or a [MULTILINE_PARSER] name)".into()),
        ));
    }
    if props
        .str("emitter_storage.type")
        .is_some_and(|t| t.eq_ignore_ascii_case("filesystem"))
    {
        crate::warn!(
            "{}: [config] multiline: 'emitter_storage.type filesystem' is not supported: held records stay in memory (at most flush_ms of them)",
            props.span_of("emitter_storage.type")
        );
    }
    let flush_ms = props.int("flush_ms").unwrap_or(2000);
    if flush_ms <= 0 {
        return Err(props.error("flush_ms", "a number of milliseconds greater than 0"));
    }
    Ok(Box::new(MultilineFilter {
        parsers,
        key,
        buffer,
        flush: Duration::from_millis(flush_ms as u64),
        partial_mode,
        streams: HashMap::new(),
        partials: HashMap::new(),
        limit: props
            .size("emitter_mem_buf_limit")
            .unwrap_or(10_000_000)
            .max(1),
        buffer_limit: ctx.service.multiline_buffer_limit,
        warned_truncated: false,
        debug: props.bool("debug_flush").unwrap_or(false),
    }))
}

/// A string value's text (`"true"` checks are case-insensitive prefixes, as Fluent Bit's).
fn str_of(v: &Value) -> Option<&str> {
    match v {
        Value::Str(s) => Some(s),
        Value::Bin(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn is_true(body: &Map, key: &str) -> bool {
    body.iter()
        .find(|(k, _)| &**k == key)
        .and_then(|(_, v)| str_of(v))
        .is_some_and(|s| s.len() >= 4 && s[..4].eq_ignore_ascii_case("true"))
}

impl MultilineFilter {
    fn parser_mode(&mut self, tag: &str, records: &mut Vec<Record>, now: Instant) {
        let mut out = Vec::new();
        let input = std::mem::take(records);
        if !self.buffer {
            // Joined within this batch only; what is held at its end goes out with it.
            let mut ml = MlStream::new(self.parsers.clone(), self.key.clone());
            ml.set_buffer_limit(self.buffer_limit);
            for r in input {
                ml.append_event(r.time, r.metadata, r.body, 0, 0, now, &mut out);
            }
            ml.flush(&mut out);
        } else {
            let (parsers, key, flush, limit) =
                (&self.parsers, &self.key, self.flush, self.buffer_limit);
            let stream = self.streams.entry(Arc::from(tag)).or_insert_with(|| {
                let mut ml = MlStream::new(parsers.clone(), key.clone());
                ml.set_flush_timeout(flush);
                ml.set_buffer_limit(limit);
                TagStream { ml, last: now }
            });
            stream.last = now;
            for r in input {
                stream
                    .ml
                    .append_event(r.time, r.metadata, r.body, 0, 0, now, &mut out);
            }
        }
        self.warn_truncated(out.iter().any(|r| r.truncated));
        records.extend(out.into_iter().map(MlRecord::into_record));
    }

    /// Logs once that a record was cut at `multiline_buffer_limit`.
    fn warn_truncated(&mut self, truncated: bool) {
        if truncated && !self.warned_truncated {
            self.warned_truncated = true;
            crate::warn!("[filter:multiline] multiline message truncated due to buffer limit (multiline_buffer_limit in [SERVICE])");
        }
    }

    fn partial_mode(&mut self, tag: &str, records: &mut Vec<Record>, now: Instant) {
        let key = self.key.clone().expect("checked at build");
        let input = std::mem::take(records);
        for r in input {
            if !is_true(&r.body, "partial_message") {
                records.push(r);
                continue;
            }
            let id = r
                .body
                .iter()
                .find(|(k, _)| &**k == "partial_id")
                .and_then(|(_, v)| str_of(v))
                .map(str::to_string);
            let content = r.body.iter().position(|(k, _)| **k == *key);
            let (Some(id), Some(at)) = (id, content) else {
                crate::warn!("[filter:multiline] a record with partial_message true has no partial_id or no '{key}': passed on as it is (tag {tag})");
                records.push(r);
                continue;
            };
            let last = is_true(&r.body, "partial_last");
            let piece = str_of(&r.body[at].1).unwrap_or_default().to_string();
            let slot = (Arc::<str>::from(tag), id);
            let p = self.partials.entry(slot.clone()).or_insert_with(|| {
                let mut body: Map = r
                    .body
                    .iter()
                    .enumerate()
                    .filter(|(i, (k, _))| *i != at && !k.starts_with("partial_"))
                    .map(|(_, kv)| kv.clone())
                    .collect();
                body.push((r.body[at].0.clone(), Value::Nil));
                Partial {
                    time: r.time,
                    metadata: r.metadata.clone(),
                    body,
                    text: String::new(),
                    since: now,
                }
            });
            p.text.push_str(&piece);
            if last {
                let p = self.partials.remove(&slot).expect("just inserted");
                records.push(finish(p));
            }
        }
    }

    fn held_bytes(&self) -> u64 {
        self.partials.values().map(|p| p.text.len() as u64).sum()
    }

    /// Emits what waited `flush` or longer (everything with `all`), as chunks by tag.
    fn flush_held(&mut self, now: Instant, all: bool, out: &mut Vec<Chunk>) {
        let mut truncated = false;
        for (tag, s) in self.streams.iter_mut() {
            let mut recs = Vec::new();
            if all {
                s.ml.flush(&mut recs);
            } else {
                s.ml.flush_expired(now, &mut recs);
            }
            if !recs.is_empty() {
                if self.debug {
                    crate::debug!(
                        "[filter:multiline] flushing {} held records of {tag}",
                        recs.len()
                    );
                }
                truncated |= recs.iter().any(|r| r.truncated);
                out.push(Chunk::new(
                    tag.clone(),
                    recs.into_iter().map(MlRecord::into_record).collect(),
                ));
            }
        }
        self.warn_truncated(truncated);
        // Streams of tags that went quiet are forgotten once they hold nothing.
        let idle = self.flush * 30;
        self.streams
            .retain(|_, s| s.ml.pending_from().is_some() || now.duration_since(s.last) < idle);
        let over = self.held_bytes() > self.limit;
        let due: Vec<(Tag, String)> = self
            .partials
            .iter()
            .filter(|(_, p)| all || over || now.duration_since(p.since) >= self.flush)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(p) = self.partials.remove(&k) {
                out.push(Chunk::new(k.0, vec![finish(p)]));
            }
        }
    }
}

/// The joined record of a `partial_message` group.
fn finish(mut p: Partial) -> Record {
    if let Some(last) = p.body.last_mut() {
        last.1 = Value::Str(Arc::from(p.text.as_str()));
    }
    Record {
        time: p.time,
        metadata: p.metadata,
        body: p.body,
    }
}

impl Filter for MultilineFilter {
    fn filter(&mut self, tag: &str, records: &mut Vec<Record>, now: Instant) -> FilterResult {
        if self.partial_mode {
            self.partial_mode(tag, records, now);
        } else {
            self.parser_mode(tag, records, now);
        }
        FilterResult::Modified
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Chunk>) {
        self.flush_held(now, false, out);
    }

    fn shutdown(&mut self, now: Instant, out: &mut Vec<Chunk>) {
        self.flush_held(now, true, out);
    }
}
