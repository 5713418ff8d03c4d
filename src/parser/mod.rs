//! Parsers: turn one line of text into a record, as Fluent Bit's `[PARSER]` sections do
//! (`regex`, `json`, `logfmt`, `ltsv`, with times, types and decoders), and join lines
//! into records as its `[MULTILINE_PARSER]`s do ([`multiline`]).
//!
//! Shared machinery: used by `tail`, `tcp`, the `parser` and `multiline` filters and
//! others; it knows none of them. [`Parsers`] holds every definition of a configuration,
//! loaded from `parsers_file`s and YAML `parsers:`/`multiline_parsers:`.
//! Fluent Bit: src/flb_parser*.c, src/multiline/
//!
//! What a parser gives, format by format (Fluent Bit's behaviour, kept):
//! - `regex`: one key per named group, in the order names first appear, values as
//!   strings (`types` casts them); empty captures are dropped unless
//!   `skip_empty_values off`. A line the regex does not match is not parsed.
//! - `json`: the object as it is (types kept; `types` does not apply), when the line
//!   holds exactly one JSON object.
//! - `logfmt`, `ltsv`: see their modules.
//!
//! Times (`time_format`, `time_key` default `time`): the key is removed unless
//! `time_keep on`. A value that does not match the format (with `time_strict`, the
//! default) is logged as a warning and then: `regex` drops the key, `json` keeps it,
//! and the record keeps the caller's time ("now" for `tail`); `logfmt` and `ltsv`
//! reject the whole line. The record time is returned only when it is not 0
//! (Fluent Bit's callers treat a zero time as "no time").
//!
//! Where we differ on purpose: a boolean property that is not `on/off/true/false/
//! yes/no`, a `time_offset` Fluent Bit cannot read, and a `time_format` with a
//! conversion `strptime` does not know are errors at load time (Fluent Bit accepts
//! them and misbehaves on every record).

pub mod multiline;
mod registry;

pub mod decode;
pub mod json;
mod logfmt;
mod ltsv;
pub mod regex;
pub mod time;
pub mod types;

pub use registry::Parsers;

use std::sync::Arc;

use crate::config::values::parse_bool;
use crate::config::{ConfigError, Entry, Section};
use crate::event::{EventTime, Map, Str, Value};

use self::decode::Decoders;
use self::regex::OnigRegex;
use self::time::{TimeFormat, Zone};
use self::types::{text_value, Types};

/// The line did not match the parser (a regex that does not match, invalid JSON):
/// Fluent Bit keeps such a line unparsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoMatch;

/// The formats a `[PARSER]` may have.
pub const FORMATS: &[&str] = &["regex", "json", "ltsv", "logfmt"];

/// One `[PARSER]` definition, compiled.
#[derive(Debug)]
pub struct Parser {
    pub name: Arc<str>,
    kind: Kind,
    /// `skip_empty_values` (regex only): empty captures are left out.
    skip_empty: bool,
    /// `time_format` with the zone settings, when set.
    time: Option<TimeFormat>,
    /// `time_key`, `time` by default.
    time_key: Str,
    time_keep: bool,
    /// `logfmt_no_bare_keys`.
    no_bare_keys: bool,
    types: Types,
    decoders: Decoders,
    /// A time outside what an event can hold was logged once.
    warned_time: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
enum Kind {
    Regex(Box<OnigRegex>),
    Json,
    Logfmt,
    Ltsv,
}

/// The record time a parse found, as Fluent Bit tracks it (the last one read wins).
#[derive(Debug, Default, Clone, Copy)]
struct TimeResult(Option<EventTime>);

impl TimeResult {
    fn set(&mut self, t: EventTime) {
        self.0 = Some(t);
    }

    /// `None` for a zero time, which Fluent Bit's callers read as "not parsed".
    fn get(self) -> Option<EventTime> {
        self.0.filter(|t| t.secs != 0 || t.nanos != 0)
    }
}

/// The entries of one `[PARSER]` section; the first of a repeated key wins, as Fluent
/// Bit reads them, and empty values count as unset.
struct Keys<'a> {
    entries: &'a [Entry],
}

impl<'a> Keys<'a> {
    fn get(&self, key: &str) -> Option<&'a Entry> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .filter(|e| !e.value.is_empty())
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        self.get(key).map(|e| e.value.as_str())
    }

    fn bool(&self, key: &str, default: bool, name: &str) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(e) => parse_bool(&e.value).ok_or_else(|| {
                ConfigError::invalid(
                    &e.span,
                    format!("[parser:{name}] invalid value '{}' for '{key}': expected on/off, true/false or yes/no", e.value),
                    None,
                )
            }),
        }
    }
}

impl Parser {
    /// Compiles one `[PARSER]` section (`name`, `format`, `regex`, `time_*`, `types`,
    /// `decode_field*`, `skip_empty_values`). Errors name the section's file:line: a
    /// regex that does not compile, an unknown format, a time format that cannot work.
    pub fn from_section(section: &Section) -> Result<Parser, ConfigError> {
        let keys = Keys {
            entries: &section.entries,
        };
        let file = &section.span.file;
        let Some(name) = keys.text("name") else {
            return Err(ConfigError::invalid(
                &section.span,
                format!("[parser] no parser 'name' found in file '{file}'"),
                Some("add a line such as 'Name my_parser' to the [PARSER] section".to_string()),
            ));
        };
        let Some(format) = keys.get("format") else {
            return Err(ConfigError::invalid(
                &section.span,
                format!("[parser] no parser 'format' found for '{name}' in file '{file}'"),
                Some(format!("add a line 'Format <{}>'", FORMATS.join("|"))),
            ));
        };
        let kind = match format.value.to_ascii_lowercase().as_str() {
            "regex" => {
                let Some(re) = keys.get("regex") else {
                    return Err(ConfigError::invalid(
                        &section.span,
                        format!("[parser] no parser 'regex' found for '{name}' in file '{file}'"),
                        Some("format regex needs a 'Regex' line with named groups, such as (?<message>.*)".to_string()),
                    ));
                };
                let compiled = OnigRegex::new(&re.value).map_err(|e| {
                    ConfigError::invalid(
                        &re.span,
                        format!("[parser:{name}] Invalid regex pattern {}: {e}", re.value),
                        None,
                    )
                })?;
                Kind::Regex(Box::new(compiled))
            }
            "json" => Kind::Json,
            "ltsv" => Kind::Ltsv,
            "logfmt" => Kind::Logfmt,
            _ => {
                return Err(ConfigError::invalid(
                    &format.span,
                    format!("[parser:{name}] Invalid format {}", format.value),
                    Some(format!("known formats: {}", FORMATS.join(", "))),
                ))
            }
        };
        let time = Self::time_settings(&keys, name)?;
        let mut decoders = Decoders::default();
        for e in &section.entries {
            let replace = match e.key.as_str() {
                "decode_field" => false,
                "decode_field_as" => true,
                _ => continue,
            };
            decoders
                .add(replace, &e.value)
                .map_err(|m| ConfigError::invalid(&e.span, format!("[parser:{name}] {m}"), None))?;
        }
        Ok(Parser {
            warned_time: Default::default(),
            name: Arc::from(name),
            kind,
            skip_empty: keys.bool("skip_empty_values", true, name)?,
            time,
            time_key: Str::from(keys.text("time_key").unwrap_or("time")),
            time_keep: keys.bool("time_keep", false, name)?,
            no_bare_keys: keys.bool("logfmt_no_bare_keys", false, name)?,
            types: keys.text("types").map(Types::parse).unwrap_or_default(),
            decoders,
        })
    }

    fn time_settings(keys: &Keys<'_>, name: &str) -> Result<Option<TimeFormat>, ConfigError> {
        let zone = keys.get("time_zone");
        let Some(fmt) = keys.get("time_format") else {
            if let Some(z) = zone {
                return Err(ConfigError::invalid(
                    &z.span,
                    format!("[parser:{name}] time_zone requires time_format"),
                    None,
                ));
            }
            return Ok(None);
        };
        time::check_format(&fmt.value).map_err(|m| {
            ConfigError::invalid(
                &fmt.span,
                format!("[parser:{name}] invalid time_format: {m}"),
                Some("see strptime(3); Fluent Bit adds %L for fractional seconds".to_string()),
            )
        })?;
        let system_tz = keys.bool("time_system_timezone", false, name)?;
        let strict = keys.bool("time_strict", true, name)?;
        let offset = keys.get("time_offset");
        let mut tf = TimeFormat::new(&fmt.value)
            .with_system_timezone(system_tz)
            .with_strict(strict);
        if let Some(z) = zone {
            if system_tz {
                return Err(ConfigError::invalid(
                    &z.span,
                    format!(
                        "[parser:{name}] time_zone cannot be combined with time_system_timezone"
                    ),
                    None,
                ));
            }
            if offset.is_some() {
                return Err(ConfigError::invalid(
                    &z.span,
                    format!("[parser:{name}] time_zone cannot be combined with time_offset"),
                    None,
                ));
            }
            let loaded = Zone::load(&z.value).ok_or_else(|| {
                ConfigError::invalid(
                    &z.span,
                    format!(
                        "[parser:{name}] invalid or unavailable time_zone '{}'",
                        z.value
                    ),
                    Some(
                        "use an IANA name such as Europe/Berlin, present in /usr/share/zoneinfo"
                            .to_string(),
                    ),
                )
            })?;
            tf = tf.with_zone(Some(loaded));
        } else if let (Some(o), false) = (offset, system_tz) {
            let secs = time::parse_offset(&o.value).ok_or_else(|| {
                ConfigError::invalid(
                    &o.span,
                    format!("[parser:{name}] invalid time_offset '{}'", o.value),
                    Some("write it as +HHMM or -HH:MM, or Z".to_string()),
                )
            })?;
            tf = tf.with_offset(secs);
        }
        Ok(Some(tf))
    }

    /// The format name (`regex`, `json`, `logfmt`, `ltsv`).
    pub fn format(&self) -> &'static str {
        match self.kind {
            Kind::Regex(_) => "regex",
            Kind::Json => "json",
            Kind::Logfmt => "logfmt",
            Kind::Ltsv => "ltsv",
        }
    }

    /// The key the record time is read from, when the parser has a `time_format`.
    pub fn time_key(&self) -> Option<&str> {
        self.time.as_ref().map(|_| &*self.time_key)
    }

    /// The `time_format` as written, when set.
    pub fn time_format(&self) -> Option<&str> {
        self.time.as_ref().map(|t| t.full.as_str())
    }

    /// The compiled regex of a `format regex` parser (the multiline engine matches
    /// with it).
    pub fn regex(&self) -> Option<&OnigRegex> {
        match &self.kind {
            Kind::Regex(re) => Some(re),
            _ => None,
        }
    }

    /// Parses `input`, appending its keys to `out` in Fluent Bit's order (and types).
    /// Returns the record time when the parser has a `time_key` that was found and read,
    /// `None` when the caller keeps its own time. A time outside what an event can hold
    /// (see [`time::is_event_time`]: before 1970 or after 2106) makes Fluent Bit drop the
    /// record; agent keeps the record with the caller's time and says so once.
    pub fn parse(&self, input: &[u8], out: &mut Map) -> Result<Option<EventTime>, NoMatch> {
        let t = self.parse_at(input, EventTime::now().secs, out)?;
        match t {
            Some(t) if !time::is_event_time(t) => {
                if !self
                    .warned_time
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    crate::warn!(
                        "[parser:{}] time {} is outside what a record can carry (1970 to 2106): such records keep their ingestion time (logged once)",
                        self.name,
                        t.secs
                    );
                }
                Ok(None)
            }
            t => Ok(t),
        }
    }

    /// [`Parser::parse`] with the current time given (it gives the year to time formats
    /// without one).
    pub fn parse_at(
        &self,
        input: &[u8],
        now: i64,
        out: &mut Map,
    ) -> Result<Option<EventTime>, NoMatch> {
        let start = out.len();
        let result = match &self.kind {
            Kind::Regex(re) => self.parse_regex(re, input, now, out),
            Kind::Json => self.parse_json(input, now, out),
            Kind::Logfmt => {
                logfmt::parse(self, input, now, out).inspect(|_| self.decoders.apply(out, start))
            }
            Kind::Ltsv => {
                ltsv::parse(self, input, now, out).inspect(|_| self.decoders.apply(out, start))
            }
        };
        match result {
            Ok(t) => Ok(t.get()),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Whether a field is the time field and is dropped from the record
    /// (logfmt/ltsv count such fields out).
    fn drops_time_field(&self, key: &[u8], value: &[u8]) -> bool {
        self.time.is_some()
            && !self.time_keep
            && !value.is_empty()
            && key == self.time_key.as_bytes()
    }

    /// logfmt/ltsv: reads `value` into `time` when `key` is the time field. `Ok(true)`:
    /// it was the time field; `Err`: its time does not parse, which makes the whole
    /// line unparsed in Fluent Bit (logged).
    fn time_field(
        &self,
        key: &[u8],
        value: &[u8],
        now: i64,
        time: &mut TimeResult,
    ) -> Result<bool, NoMatch> {
        let Some(fmt) = &self.time else {
            return Ok(false);
        };
        if value.is_empty() || key != self.time_key.as_bytes() {
            return Ok(false);
        }
        match fmt.parse_at(value, now) {
            Ok(t) => {
                time.set(t);
                Ok(true)
            }
            Err(_) => {
                crate::error!("[parser:{}] Invalid time format {}", self.name, fmt.full);
                Err(NoMatch)
            }
        }
    }

    fn parse_regex(
        &self,
        re: &OnigRegex,
        input: &[u8],
        now: i64,
        out: &mut Map,
    ) -> Result<TimeResult, NoMatch> {
        if re.groups() == 0 {
            return Err(NoMatch);
        }
        let start = out.len();
        let mut time = TimeResult::default();
        // Fluent Bit reports no match when no named group took part.
        let mut any = false;
        let found = re.search(input, |name, span| {
            any |= span.is_some();
            let value = span.map(|(a, b)| &input[a..b]).unwrap_or_default();
            if value.is_empty() && self.skip_empty {
                return;
            }
            if let Some(fmt) = &self.time {
                if **name == *self.time_key {
                    match fmt.parse_at(value, now) {
                        Ok(t) => time.set(t),
                        Err(_) => {
                            let shown = String::from_utf8_lossy(&value[..value.len().min(254)]);
                            crate::warn!(
                                "[parser:{}] invalid time format {} for '{shown}'",
                                self.name,
                                fmt.full
                            );
                            return;
                        }
                    }
                    if !self.time_keep {
                        return;
                    }
                }
            }
            let v = if self.types.is_set() {
                self.types.cast(name, value)
            } else {
                text_value(value)
            };
            out.push((name.clone(), v));
        });
        if !found || !any {
            return Err(NoMatch);
        }
        self.decoders.apply(out, start);
        Ok(time)
    }

    fn parse_json(&self, input: &[u8], now: i64, out: &mut Map) -> Result<TimeResult, NoMatch> {
        let map = json::parse_object(input).map_err(|_| NoMatch)?;
        let start = out.len();
        out.extend(map);
        self.decoders.apply(out, start);
        let mut time = TimeResult::default();
        let Some(fmt) = &self.time else {
            return Ok(time);
        };
        let Some(at) = out[start..].iter().position(|(k, _)| *k == self.time_key) else {
            return Ok(time);
        };
        let value = match &out[start + at].1 {
            Value::Str(s) => s.as_bytes(),
            Value::Bin(b) => b,
            _ => return Ok(time),
        };
        match fmt.parse_at(value, now) {
            Ok(t) => {
                time.set(t);
                if !self.time_keep {
                    out.remove(start + at);
                }
            }
            Err(_) => {
                let shown = String::from_utf8_lossy(&value[..value.len().min(254)]).into_owned();
                crate::warn!(
                    "[parser:{}] invalid time format {} for '{shown}'",
                    self.name,
                    fmt.full
                );
            }
        }
        Ok(time)
    }
}

#[cfg(test)]
mod tests;
