//! `parser` filter: parse the text of one key with the first of its parsers that
//! matches, and replace the record's keys with what it found.
//! Fluent Bit: plugins/filter_parser/filter_parser.c

use std::sync::Arc;
use std::time::Instant;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::{Map, Record, Value};
use crate::parser::Parser;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("key_name", PropKind::Str, None, "Key whose text is parsed (required); a record accessor such as $log['inner'] reads a nested key."),
    PropSpec::new("parser", PropKind::Multi, None, "Name of a [PARSER]; repeat the line to try several parsers in order until one matches."),
    PropSpec::new("preserve_key", PropKind::Bool, Some("false"), "Keep the parsed key (after the parsed keys) instead of dropping it."),
    PropSpec::new("reserve_data", PropKind::Bool, Some("false"), "Keep the record's other keys (after the parsed keys) instead of dropping them."),
    PropSpec::new("unescape_key", PropKind::Str, None, "Deprecated in Fluent Bit and ignored."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "parser",
    description: "Parse events",
    props: PROPS,
    build,
};

/// Where the text to parse is.
enum Key {
    /// A top-level key: it is the one dropped unless `preserve_key`.
    Top(String),
    /// `$a['b']`: read only; every key is kept with `reserve_data` (Fluent Bit).
    Accessor(Accessor),
}

struct ParserFilter {
    key: Key,
    parsers: Vec<Arc<Parser>>,
    preserve_key: bool,
    reserve_data: bool,
    /// Reused for each parse: the parsed keys.
    scratch: Map,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let Some(key) = props.str("key_name") else {
        return Err(ConfigError::invalid(
            props.span(),
            "[config] parser: missing 'key_name'",
            Some("add 'key_name log' (the key whose text is parsed)".into()),
        ));
    };
    let key = if key.starts_with('$') {
        Key::Accessor(
            Accessor::parse(key)
                .map_err(|e| props.error("key_name", format!("a key or a record accessor: {e}")))?,
        )
    } else {
        Key::Top(key.to_string())
    };
    if props.is_set("unescape_key") {
        crate::warn!(
            "{}: [config] parser: 'unescape_key' is deprecated and has no effect",
            props.span_of("unescape_key")
        );
    }
    let mut parsers = Vec::new();
    for e in props.multi_entries("parser") {
        let p = ctx.parsers.parser(&e.value).ok_or_else(|| {
            ctx.parsers
                .unknown(&e.span, "parser", &e.value, ctx.parsers.parser_names())
        })?;
        parsers.push(p);
    }
    if parsers.is_empty() {
        return Err(ConfigError::invalid(
            props.span(),
            "[config] parser: Invalid 'parser': no parser is named",
            Some("add 'parser NAME' naming a [PARSER] of a parsers_file".into()),
        ));
    }
    Ok(Box::new(ParserFilter {
        key,
        parsers,
        preserve_key: props.bool("preserve_key").unwrap_or(false),
        reserve_data: props.bool("reserve_data").unwrap_or(false),
        scratch: Map::new(),
    }))
}

/// The text of a string or binary value.
fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Str(s) => Some(s.as_bytes()),
        Value::Bin(b) => Some(b),
        _ => None,
    }
}

/// Runs `parsers` in order on `input` into `out`; the parsed time if one matched.
fn parse(
    parsers: &[Arc<Parser>],
    input: &[u8],
    out: &mut Map,
) -> Option<Option<crate::event::EventTime>> {
    for p in parsers {
        out.clear();
        if let Ok(t) = p.parse(input, out) {
            return Some(t);
        }
    }
    None
}

impl ParserFilter {
    /// Parses one record in place. Returns whether it changed.
    fn apply(&mut self, rec: &mut Record) -> bool {
        match &self.key {
            Key::Accessor(a) => {
                let Some(input) = a.get(&rec.body).and_then(text) else {
                    return false;
                };
                let Some(time) = parse(&self.parsers, input, &mut self.scratch) else {
                    return false;
                };
                let mut body = std::mem::take(&mut self.scratch);
                if self.reserve_data {
                    body.append(&mut rec.body);
                }
                rec.body = body;
                if let Some(t) = time {
                    rec.time = t;
                }
                true
            }
            Key::Top(name) => {
                // Fluent Bit tries every key of that name; the last that parses wins.
                let mut found: Option<(usize, Option<crate::event::EventTime>, Map)> = None;
                for i in 0..rec.body.len() {
                    let (k, v) = &rec.body[i];
                    if **k != **name {
                        continue;
                    }
                    let Some(input) = text(v) else { continue };
                    if let Some(t) = parse(&self.parsers, input, &mut self.scratch) {
                        found = Some((i, t, std::mem::take(&mut self.scratch)));
                    }
                }
                let Some((at, time, mut body)) = found else {
                    return false;
                };
                if self.reserve_data {
                    for (i, kv) in std::mem::take(&mut rec.body).into_iter().enumerate() {
                        if i != at || self.preserve_key {
                            body.push(kv);
                        }
                    }
                } else if self.preserve_key {
                    body.push(rec.body.swap_remove(at));
                }
                rec.body = body;
                if let Some(t) = time {
                    rec.time = t;
                }
                true
            }
        }
    }
}

impl Filter for ParserFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        let mut changed = false;
        for rec in records.iter_mut() {
            changed |= self.apply(rec);
        }
        FilterResult::modified_if(changed)
    }
}
