//! `decode_field` / `decode_field_as`: second passes over values of a parsed record,
//! as Fluent Bit's src/flb_parser_decoder.c runs them.
//!
//! `decode_field_as <decoder> <key> [try_next|do_next]` replaces the value of `key`;
//! `decode_field json <key>` keeps it and appends the keys of the decoded JSON object
//! at the end of the record. Rules of one key run in the order written: a failed rule
//! stops unless it says `try_next`/`do_next`; a successful one stops unless it says
//! `do_next`. Fluent Bit's quirks are kept: only one object of extra keys survives
//! (that of the last key in the record that has `decode_field` rules, even if its
//! decoding failed), and keys before the first decodable one are never looked at twice.
//! Decoders: `json` (an object, after leading spaces), `escaped` (`\n`, `\t`, ...;
//! other escapes lose their backslash), `escaped_utf8` (also `\uXXXX`, `\xHH`, octal),
//! `mysql_quoted` (a quoted MySQL literal).

use crate::event::{Map, Value};

use super::json;
use super::types::text_value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Json,
    Escaped,
    EscapedUtf8,
    MysqlQuoted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    None,
    TryNext,
    DoNext,
}

#[derive(Debug, Clone)]
struct Rule {
    /// `decode_field_as` (replace) rather than `decode_field` (extra keys).
    replace: bool,
    backend: Backend,
    action: Action,
}

#[derive(Debug, Clone)]
struct KeyRules {
    key: String,
    rules: Vec<Rule>,
    /// Has a `decode_field` rule.
    extra: bool,
}

/// The decoders of one parser, grouped by key in the order keys first appear.
#[derive(Debug, Clone, Default)]
pub struct Decoders {
    keys: Vec<KeyRules>,
}

/// What a decoder made of a value.
enum Decoded {
    Text(Vec<u8>),
    Object(Map),
}

impl Decoders {
    /// Adds one `decode_field` (`replace` false) or `decode_field_as` line.
    pub fn add(&mut self, replace: bool, value: &str) -> Result<(), String> {
        // flb_utils_split(value, ' ', 3)
        let words: Vec<&str> = value.split(' ').filter(|w| !w.is_empty()).collect();
        if words.len() < 2 {
            return Err("invalid number of parameters in decoder".to_string());
        }
        let backend = match words[0].to_ascii_lowercase().as_str() {
            "json" => Backend::Json,
            "escaped" => Backend::Escaped,
            "escaped_utf8" => Backend::EscapedUtf8,
            "mysql_quoted" => Backend::MysqlQuoted,
            other => return Err(format!("field decoder '{other}' unknown (known: json, escaped, escaped_utf8, mysql_quoted)")),
        };
        let action = match words.get(2).map(|a| a.to_ascii_lowercase()) {
            Some(a) if a == "try_next" => Action::TryNext,
            Some(a) if a == "do_next" => Action::DoNext,
            _ => Action::None,
        };
        let key = words[1];
        let idx = match self.keys.iter().position(|k| k.key == key) {
            Some(i) => i,
            None => {
                self.keys.push(KeyRules {
                    key: key.to_string(),
                    rules: Vec::new(),
                    extra: false,
                });
                self.keys.len() - 1
            }
        };
        let k = &mut self.keys[idx];
        k.extra |= !replace;
        k.rules.push(Rule {
            replace,
            backend,
            action,
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Runs the decoders on `map[from..]` (the record being built).
    pub fn apply(&self, map: &mut Map, from: usize) {
        let find = |k: &str| self.keys.iter().find(|d| d.key == k);
        let Some(first) = map[from..].iter().position(|(k, _)| find(k).is_some()) else {
            return;
        };
        let mut extra_keys = false;
        let mut extra: Option<Map> = None;
        for (k, v) in map[from + first..].iter_mut() {
            let Some(dec) = find(k) else { continue };
            let mut data: Vec<u8> = match &*v {
                Value::Str(t) => t.as_bytes().to_vec(),
                Value::Bin(b) => b.to_vec(),
                _ => continue,
            };
            if dec.extra {
                extra_keys = true;
                extra = None;
            }
            let mut replaced: Option<Decoded> = None;
            let mut decoded: Option<Decoded> = None;
            for rule in &dec.rules {
                if !rule.replace && rule.action == Action::DoNext && decoded.is_some() {
                    continue;
                }
                if matches!(replaced, Some(Decoded::Object(_))) {
                    continue;
                }
                let Some(out) = run(rule.backend, &data) else {
                    if rule.action == Action::None {
                        break;
                    }
                    continue;
                };
                if rule.replace {
                    if let Decoded::Text(t) = &out {
                        data.clone_from(t);
                    }
                    replaced = Some(out);
                } else {
                    decoded = Some(out);
                }
                if rule.action != Action::DoNext {
                    break;
                }
            }
            match replaced {
                Some(Decoded::Text(t)) => *v = text_value(&t),
                Some(Decoded::Object(m)) => *v = Value::Map(m),
                None => {}
            }
            match decoded {
                Some(Decoded::Object(m)) => extra = Some(m),
                Some(Decoded::Text(_)) => {
                    crate::error!("[parser_decoder] string type is not allowed")
                }
                None => {}
            }
        }
        if extra_keys {
            if let Some(m) = extra {
                map.extend(m);
            }
        }
    }
}

fn run(backend: Backend, data: &[u8]) -> Option<Decoded> {
    match backend {
        Backend::Json => {
            let start = data.iter().take_while(|&&c| c == b' ').count();
            let p = &data[start..];
            if !matches!(p.first(), Some(b'{' | b'[')) {
                return None;
            }
            json::parse_object(p).ok().map(Decoded::Object)
        }
        Backend::Escaped => Some(Decoded::Text(unescape(data))),
        Backend::EscapedUtf8 => Some(Decoded::Text(unescape_utf8(data))),
        Backend::MysqlQuoted => Some(Decoded::Text(mysql_unquote(data))),
    }
}

/// `flb_unescape_string`: `\n \a \b \t \v \f \r \\` decode, any other escaped
/// character loses its backslash; a trailing backslash becomes a NUL byte (the C
/// code reads the string's terminator).
pub fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if i + 1 < b.len() {
                let c = match b[i + 1] {
                    b'n' => Some(b'\n'),
                    b'a' => Some(0x07),
                    b'b' => Some(0x08),
                    b't' => Some(b'\t'),
                    b'v' => Some(0x0b),
                    b'f' => Some(0x0c),
                    b'r' => Some(b'\r'),
                    b'\\' => Some(b'\\'),
                    _ => None,
                };
                match c {
                    Some(c) => {
                        out.push(c);
                        i += 2;
                    }
                    None => {
                        out.push(b[i + 1]);
                        i += 2;
                    }
                }
                continue;
            }
            out.push(0);
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn encode_utf8_like_c(out: &mut Vec<u8>, ch: u32) {
    // u8_wc_toutf8: code points past U+10FFFF are written as their low byte.
    match ch {
        0..=0x7f => out.push(ch as u8),
        0x80..=0x7ff => out.extend_from_slice(&[(ch >> 6) as u8 | 0xc0, (ch & 0x3f) as u8 | 0x80]),
        0x800..=0xffff => out.extend_from_slice(&[
            (ch >> 12) as u8 | 0xe0,
            ((ch >> 6) & 0x3f) as u8 | 0x80,
            (ch & 0x3f) as u8 | 0x80,
        ]),
        0x1_0000..=0x10_ffff => out.extend_from_slice(&[
            (ch >> 18) as u8 | 0xf0,
            ((ch >> 12) & 0x3f) as u8 | 0x80,
            ((ch >> 6) & 0x3f) as u8 | 0x80,
            (ch & 0x3f) as u8 | 0x80,
        ]),
        _ => out.push(ch as u8),
    }
}

fn hex_val(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |v, &c| {
        v.wrapping_mul(16)
            .wrapping_add((c as char).to_digit(16).unwrap_or(0))
    })
}

/// `u8_read_escape_sequence` on `s` (after the backslash): the character and how many
/// bytes of `s` it used.
fn read_escape(s: &[u8]) -> (u32, usize) {
    let is_hex = |c: &u8| c.is_ascii_hexdigit();
    let c0 = s[0];
    // The C code reads a plain `char` (signed): bytes >= 0x80 become huge values,
    // which are then written back as themselves.
    let literal = if c0 >= 0x80 {
        0xffff_ff00 | c0 as u32
    } else {
        c0 as u32
    };
    match c0 {
        b'n' => (b'\n' as u32, 1),
        b't' => (b'\t' as u32, 1),
        b'r' => (b'\r' as u32, 1),
        b'b' => (0x08, 1),
        b'f' => (0x0c, 1),
        b'v' => (0x0b, 1),
        b'a' => (0x07, 1),
        b'0'..=b'7' => {
            let n = s
                .iter()
                .take(3)
                .take_while(|c| (b'0'..=b'7').contains(*c))
                .count();
            let v = s[..n].iter().fold(0u32, |v, &c| v * 8 + (c - b'0') as u32);
            (v, n)
        }
        b'x' => {
            let n = s[1..].iter().take(2).take_while(|c| is_hex(c)).count();
            if n == 0 {
                (literal, 1)
            } else {
                (hex_val(&s[1..1 + n]), 1 + n)
            }
        }
        b'u' => {
            let n = s[1..].iter().take(4).take_while(|c| is_hex(c)).count();
            let mut i = 1 + n;
            if n != 4 && n > 0 {
                return (0xfffd, i);
            }
            let hi = hex_val(&s[1..1 + n]);
            if (0xdc00..=0xdfff).contains(&hi) {
                return (0xfffd, i);
            }
            if (0xd800..=0xdbff).contains(&hi) {
                if i + 2 < s.len() && s[i] == b'\\' && s[i + 1] == b'u' {
                    i += 2;
                    let m = s[i..].iter().take(4).take_while(|c| is_hex(c)).count();
                    let lo = hex_val(&s[i..i + m]);
                    i += m;
                    if m != 4 && m > 0 {
                        return (0xfffd, i);
                    }
                    if (0xdc00..=0xdfff).contains(&lo) {
                        return (0x10000 + (((hi - 0xd800) << 10) | (lo - 0xdc00)), i);
                    }
                    return (0xfffd, i);
                }
                return (0xfffd, i);
            }
            (hi, i)
        }
        b'U' => {
            let n = s[1..].iter().take(8).take_while(|c| is_hex(c)).count();
            if n == 0 {
                (literal, 1)
            } else {
                (hex_val(&s[1..1 + n]), 1 + n)
            }
        }
        _ => (literal, 1),
    }
}

/// `flb_unescape_string_utf8`: JSON-style and C-style escapes, `\uXXXX` (with
/// surrogate pairs; broken ones become U+FFFD) and `\UXXXXXXXX`, written as UTF-8.
/// The text ends at a NUL byte.
pub fn unescape_utf8(b: &[u8]) -> Vec<u8> {
    let sz = b.len();
    let mut out = Vec::with_capacity(sz);
    let mut i = 0;
    while i < sz && b[i] != 0 {
        let (ch, used) = if b[i] == b'\\' && i + 1 < sz {
            match b[i + 1] {
                b'"' => (b'"' as u32, 2),
                b'\'' => (b'\'' as u32, 2),
                b'\\' => (b'\\' as u32, 2),
                b'/' => (b'/' as u32, 2),
                b'n' => (b'\n' as u32, 2),
                b'b' => (0x08, 2),
                b't' => (b'\t' as u32, 2),
                b'f' => (0x0c, 2),
                b'r' => (b'\r' as u32, 2),
                _ => {
                    let (ch, n) = read_escape(&b[i + 1..]);
                    (ch, n + 1)
                }
            }
        } else if b[i] >= 0x80 {
            (0xffff_ff00 | b[i] as u32, 1)
        } else {
            (b[i] as u32, 1)
        };
        i += used;
        let before = out.len();
        encode_utf8_like_c(&mut out, ch);
        // The output may not outgrow the input.
        if out.len() > sz {
            out.truncate(before);
            crate::error!("Crossing over string boundary");
            break;
        }
    }
    out
}

/// `flb_mysql_unquote_string` on a value quoted with `'` or `"` (else as it is).
pub fn mysql_unquote(b: &[u8]) -> Vec<u8> {
    if b.len() < 2 {
        return b.to_vec();
    }
    let q = b[0];
    if !((q == b'\'' || q == b'"') && b[b.len() - 1] == q) {
        return b.to_vec();
    }
    let inner = &b[1..b.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        i += 1;
        if c != b'\\' || i >= inner.len() {
            out.push(c);
            continue;
        }
        let n = inner[i];
        i += 1;
        match n {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'0' => out.push(0),
            b'Z' => out.push(0x1a),
            _ => {
                out.push(b'\\');
                out.push(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    fn rec(pairs: &[(&str, Value)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (Arc::from(*k), v.clone()))
            .collect()
    }

    fn decoders(lines: &[(bool, &str)]) -> Decoders {
        let mut d = Decoders::default();
        for (replace, l) in lines {
            d.add(*replace, l).unwrap();
        }
        d
    }

    #[test]
    fn unescapers() {
        assert_eq!(unescape(br#"a\nb\"c\\d\x"#), b"a\nb\"c\\dx");
        assert_eq!(unescape(b"end\\"), b"end\0");
        assert_eq!(
            unescape_utf8(br#"\u00e9\t\"\/\x41\101\q"#),
            "é\t\"/AAq".as_bytes()
        );
        assert_eq!(unescape_utf8(br#"\ud83d\ude00"#), "😀".as_bytes());
        assert_eq!(unescape_utf8(br#"\ud83dx"#), "\u{FFFD}x".as_bytes());
        assert_eq!(unescape_utf8(br#"\udc00"#), "\u{FFFD}".as_bytes());
        assert_eq!(unescape_utf8(br#"\uZZ"#), b"\0ZZ");
        assert_eq!(unescape_utf8("é\\é".as_bytes()), "éé".as_bytes());
        assert_eq!(unescape_utf8(b"a\0b"), b"a");
        assert_eq!(mysql_unquote(br#"'it\'s\n'"#), b"it's\n");
        assert_eq!(mysql_unquote(br#""a\qb""#), b"a\\qb");
        assert_eq!(mysql_unquote(b"plain"), b"plain");
    }

    #[test]
    fn decode_field_as_json_replaces_and_escaped_then_json_chains() {
        let d = decoders(&[(true, "escaped_utf8 log do_next"), (true, "json log")]);
        let mut m = rec(&[("log", s(r#"{\"a\":1}"#)), ("stream", s("stdout"))]);
        d.apply(&mut m, 0);
        assert_eq!(
            m,
            rec(&[
                ("log", Value::Map(rec(&[("a", Value::UInt(1))]))),
                ("stream", s("stdout"))
            ])
        );
        // not JSON after unescaping: the unescaped text stays
        let mut m = rec(&[("log", s(r"line\tx"))]);
        d.apply(&mut m, 0);
        assert_eq!(m, rec(&[("log", s("line\tx"))]));
    }

    #[test]
    fn decode_field_json_appends_keys_of_the_last_such_key_only() {
        let d = decoders(&[(false, "json a"), (false, "json b")]);
        let mut m = rec(&[
            ("a", s(r#"{"x":1}"#)),
            ("b", s(r#"  {"y":2}"#)),
            ("c", s("z")),
        ]);
        d.apply(&mut m, 0);
        assert_eq!(
            m,
            rec(&[
                ("a", s(r#"{"x":1}"#)),
                ("b", s(r#"  {"y":2}"#)),
                ("c", s("z")),
                ("y", Value::UInt(2))
            ])
        );
        // the last key's decoding failed: no extra keys at all
        let mut m = rec(&[("a", s(r#"{"x":1}"#)), ("b", s("nope"))]);
        d.apply(&mut m, 0);
        assert_eq!(m, rec(&[("a", s(r#"{"x":1}"#)), ("b", s("nope"))]));
    }

    #[test]
    fn actions() {
        // a failure stops without try_next
        let d = decoders(&[(true, "json log"), (true, "escaped log")]);
        let mut m = rec(&[("log", s(r"a\nb"))]);
        d.apply(&mut m, 0);
        assert_eq!(m, rec(&[("log", s(r"a\nb"))]));
        let d = decoders(&[(true, "json log try_next"), (true, "escaped log")]);
        d.apply(&mut m, 0);
        assert_eq!(m, rec(&[("log", s("a\nb"))]));
        // non-string values are left alone
        let mut m = rec(&[("log", Value::UInt(1))]);
        d.apply(&mut m, 0);
        assert_eq!(m, rec(&[("log", Value::UInt(1))]));
    }

    #[test]
    fn bad_lines() {
        let mut d = Decoders::default();
        assert!(d.add(true, "json").is_err());
        assert!(d.add(true, "yaml log").unwrap_err().contains("unknown"));
    }
}
