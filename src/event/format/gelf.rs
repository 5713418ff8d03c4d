//! GELF 1.1 (Graylog Extended Log Format) of one record, byte-compatible with Fluent
//! Bit's `flb_msgpack_to_gelf` (`src/flb_pack_gelf.c`), used by the `http` and `kafka`
//! outputs' `format gelf`.
//!
//! `{"version":"1.1", "short_message":…, …}` with `, ` between members (Fluent Bit's
//! spacing). The configured keys become `host`, `short_message`, `timestamp`, `level`
//! and `full_message` (the first occurrence of each); `id` is left out; other keys get
//! a `_` prefix, and nested maps are flattened into `_outer_inner` keys. Key bytes
//! outside `[A-Za-z0-9._-]` become `_`. A string `level` of `0`–`7` or a syslog keyword
//! becomes its number. Nulls are left out at the top and kept inside maps; arrays become
//! one string of their items joined by `, ` (inner strings unescaped, inner maps as
//! `k=v` pairs), as Fluent Bit writes them. Without a `timestamp` key the record's time
//! is added last with milliseconds.

use super::super::{EventTime, Map, Str, Value};
use super::json::write_json_str;

/// The `gelf_*_key` properties: which record keys are GELF's fields.
#[derive(Clone, Debug, Default)]
pub struct GelfFields {
    pub host_key: Option<Str>,
    pub short_message_key: Option<Str>,
    pub timestamp_key: Option<Str>,
    pub level_key: Option<Str>,
    pub full_message_key: Option<Str>,
}

/// Why a record has no GELF form (Fluent Bit: "error encoding to GELF").
#[derive(Debug, PartialEq, Eq)]
pub enum GelfError {
    /// No `short_message` (nor the configured key).
    MissingShortMessage,
    /// `level` is neither a non-negative integer nor a string.
    BadLevel,
}

impl std::fmt::Display for GelfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GelfError::MissingShortMessage => f.write_str("missing short_message key"),
            GelfError::BadLevel => f.write_str("level must be a non-negative integer or a string"),
        }
    }
}

const SYSLOG_LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Fluent Bit's `valid_char` table: `-`, `.`, digits, letters and `_`.
fn key_byte(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
        b
    } else {
        b'_'
    }
}

/// `flb_msgpack_gelf_key`: `, "` (outside arrays) + prefix + (`_` when `concat`) + key,
/// then `":` (outside arrays) or `=` (inside).
fn write_key(out: &mut Vec<u8>, in_array: bool, prefix: &[u8], concat: bool, key: &[u8]) {
    if !in_array {
        out.extend_from_slice(b", \"");
    }
    out.extend(prefix.iter().map(|&b| key_byte(b)));
    if concat {
        out.push(b'_');
    }
    out.extend(key.iter().map(|&b| key_byte(b)));
    out.extend_from_slice(if in_array { b"=" } else { b"\":" });
}

/// `flb_msgpack_gelf_value`: quoted and escaped, or as it is.
fn write_text(out: &mut Vec<u8>, quote: bool, text: &[u8]) {
    if quote {
        out.push(b'"');
        write_json_str_body(out, text);
        out.push(b'"');
    } else {
        out.extend_from_slice(text);
    }
}

/// `flb_sds_cat_utf8`: `flb_utils_write_str` with unicode escaping on, without quotes.
fn write_json_str_body(out: &mut Vec<u8>, text: &[u8]) {
    let start = out.len();
    write_json_str(out, text, true);
    // write_json_str quotes; drop them.
    out.remove(start);
    out.pop();
}

/// C's `%f`.
fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(if f.is_sign_negative() {
            b"-nan"
        } else {
            b"nan"
        });
    } else if f.is_infinite() {
        out.extend_from_slice(if f < 0.0 { b"-inf" } else { b"inf" });
    } else {
        out.extend_from_slice(format!("{f:.6}").as_bytes());
    }
}

fn write_int(out: &mut Vec<u8>, v: &Value) {
    let mut b = itoa::Buffer::new();
    match v {
        Value::Int(i) => out.extend_from_slice(b.format(*i).as_bytes()),
        Value::UInt(u) => out.extend_from_slice(b.format(*u).as_bytes()),
        _ => {}
    }
}

/// `flb_msgpack_gelf_flatten`.
fn flatten(out: &mut Vec<u8>, v: &Value, prefix: &[u8], in_array: bool) {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Bool(b) => write_text(out, !in_array, if *b { b"true" } else { b"false" }),
        Value::Int(_) | Value::UInt(_) => write_int(out, v),
        Value::Float(f) => write_float(out, *f),
        Value::Str(s) => write_text(out, !in_array, s.as_bytes()),
        Value::Bin(b) => write_text(out, !in_array, b),
        Value::Array(items) => {
            if !in_array {
                out.push(b'"');
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                flatten(out, item, prefix, true);
            }
            if !in_array {
                out.push(b'"');
            }
        }
        Value::Map(m) => {
            for (i, (k, v)) in m.iter().enumerate() {
                if let Value::Map(_) = v {
                    let mut inner = Vec::with_capacity(prefix.len() + 1 + k.len());
                    if !prefix.is_empty() {
                        inner.extend_from_slice(prefix);
                        inner.push(b'_');
                    }
                    inner.extend_from_slice(k.as_bytes());
                    flatten(out, v, &inner, in_array);
                } else {
                    if in_array && i > 0 {
                        out.push(b' ');
                    }
                    if in_array && prefix.is_empty() {
                        write_key(out, in_array, b"", false, k.as_bytes());
                    } else {
                        write_key(out, in_array, prefix, true, k.as_bytes());
                    }
                    flatten(out, v, b"", in_array);
                }
            }
        }
    }
}

fn is(key: &str, configured: &Option<Str>, default: &str) -> bool {
    key == configured.as_deref().unwrap_or(default)
}

/// One record as a GELF object (no newline). On an error `out` is left as it was.
pub fn write_gelf_record(
    out: &mut Vec<u8>,
    time: EventTime,
    body: &Map,
    fields: &GelfFields,
) -> Result<(), GelfError> {
    let start = out.len();
    let r = write_gelf(out, time, body, fields);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn write_gelf(
    out: &mut Vec<u8>,
    time: EventTime,
    body: &Map,
    fields: &GelfFields,
) -> Result<(), GelfError> {
    let (mut host, mut short, mut ts, mut level, mut full) = (false, false, false, false, false);
    out.extend_from_slice(b"{\"version\":\"1.1\"");
    for (k, v) in body {
        let mut value = std::borrow::Cow::Borrowed(v);
        let (key, custom): (&str, bool) = if is(k, &fields.host_key, "host") {
            if host {
                continue;
            }
            host = true;
            ("host", false)
        } else if is(k, &fields.short_message_key, "short_message") {
            if short {
                continue;
            }
            short = true;
            ("short_message", false)
        } else if is(k, &fields.timestamp_key, "timestamp") {
            if ts {
                continue;
            }
            ts = true;
            ("timestamp", false)
        } else if is(k, &fields.level_key, "level") {
            if level {
                continue;
            }
            level = true;
            match v {
                Value::UInt(_) | Value::Int(_) if !matches!(v, Value::Int(i) if *i < 0) => {}
                Value::Str(s) => {
                    let b = s.as_bytes();
                    if b.len() == 1 && (b'0'..=b'7').contains(&b[0]) {
                        value = std::borrow::Cow::Owned(Value::UInt((b[0] - b'0') as u64));
                    } else if let Some(n) =
                        SYSLOG_LEVELS.iter().position(|l| l.eq_ignore_ascii_case(s))
                    {
                        value = std::borrow::Cow::Owned(Value::UInt(n as u64));
                    }
                }
                _ => return Err(GelfError::BadLevel),
            }
            ("level", false)
        } else if is(k, &fields.full_message_key, "full_message") {
            if full {
                continue;
            }
            full = true;
            ("full_message", false)
        } else if &**k == "id" {
            continue;
        } else {
            (&**k, true)
        };
        let prefix: &[u8] = if custom { b"_" } else { b"" };
        match &*value {
            Value::Map(_) => {
                let mut p = Vec::with_capacity(key.len() + 1);
                p.push(b'_');
                p.extend_from_slice(key.as_bytes());
                flatten(out, &value, &p, false);
            }
            Value::Array(_) => {
                write_key(out, false, prefix, false, key.as_bytes());
                flatten(out, &value, b"", false);
            }
            Value::Nil => {}
            Value::Bool(b) => {
                write_key(out, false, prefix, false, key.as_bytes());
                write_text(out, true, if *b { b"true" } else { b"false" });
            }
            Value::Int(_) | Value::UInt(_) => {
                write_key(out, false, prefix, false, key.as_bytes());
                write_int(out, &value);
            }
            Value::Float(f) => {
                write_key(out, false, prefix, false, key.as_bytes());
                write_float(out, *f);
            }
            Value::Str(s) => {
                write_key(out, false, prefix, false, key.as_bytes());
                write_text(out, true, s.as_bytes());
            }
            Value::Bin(b) => {
                write_key(out, false, prefix, false, key.as_bytes());
                write_text(out, true, b);
            }
        }
    }
    if !ts {
        write_key(out, false, b"", false, b"timestamp");
        out.extend_from_slice(itoa::Buffer::new().format(time.secs).as_bytes());
        out.push(b'.');
        let ms = time.nanos / 1_000_000;
        out.extend_from_slice(format!("{ms:03}").as_bytes());
    }
    if !short {
        return Err(GelfError::MissingShortMessage);
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> Map {
        match Value::from_json(&serde_json::from_str(json).unwrap()) {
            Value::Map(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn fluent_bits_bytes() {
        // Captured from Fluent Bit 5.1.1 (tests/data/fluent-bit/http/gelf.expected).
        let body = rec(
            r#"{"short_message":"héllo \"q\"","host":"node-1","level":"warning","n":-1,"big":18446744073709551615,"f":2.5,"ok":true,"none":null,"id":"x","m":{"a":[1,"x y",{"k":"v","k2":2}],"b":{"c":"d"},"nil":null},"weird key/é":"w","arr":["p","q"],"level2":3}"#,
        );
        let mut out = Vec::new();
        write_gelf_record(
            &mut out,
            EventTime::new(1_700_000_000, 123_456_789),
            &body,
            &GelfFields::default(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"version":"1.1", "short_message":"h\u00e9llo \"q\"", "host":"node-1", "level":4, "_n":-1, "_big":18446744073709551615, "_f":2.500000, "_ok":"true", "_m_a":"1, x y, k=v k2=2", "_m_b_c":"d", "_m_nil":null, "_weird_key___":"w", "_arr":"p, q", "_level2":3, "timestamp":1700000000.123}"#
        );
    }

    #[test]
    fn a_record_without_short_message_leaves_nothing() {
        let mut out = b"before".to_vec();
        let e = write_gelf_record(
            &mut out,
            EventTime::new(1, 0),
            &rec(r#"{"log":"x"}"#),
            &GelfFields::default(),
        );
        assert_eq!(e, Err(GelfError::MissingShortMessage));
        assert_eq!(out, b"before");
        let e = write_gelf_record(
            &mut out,
            EventTime::new(1, 0),
            &rec(r#"{"short_message":"x","level":1.5}"#),
            &GelfFields::default(),
        );
        assert_eq!(e, Err(GelfError::BadLevel));
    }
}
