//! JSON text to record values, as Fluent Bit packs it (src/flb_pack.c with yyjson,
//! `flb_pack_json_recs`): keys keep their order and duplicates, integers are unsigned
//! when not negative and signed when negative, other numbers (and integers beyond 64
//! bits) are doubles; `\u` escapes that are not valid UTF-16 become U+FFFD.
//!
//! A text is taken as one record only when it holds exactly one JSON value: values are
//! read one after another (separated by whitespace) until one fails to parse, so
//! `{"a":1} trailing` is one record and `{"a":1} {"b":2}` is two (rejected).
//! Differences: nesting deeper than 10 000 levels is refused; raw bytes that are not UTF-8 inside strings are replaced with U+FFFD
//! (yyjson keeps some of them as they are, which a record string cannot hold).

use std::sync::Arc;

use crate::event::{Map, Str, Value};

/// Deeper texts are refused: records are dropped and printed recursively, so a
/// hostile line must not be able to exhaust the stack (yyjson itself has no limit).
const MAX_DEPTH: usize = 10_000;

/// Why a text is not a single JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

/// The text's values, as `flb_pack_json_recs` counts them: the first one and whether a
/// second one follows.
pub fn parse_values(input: &[u8]) -> Result<(Value, bool), NotJson> {
    let mut r = Reader { s: input, i: 0 };
    r.skip_ws();
    let first = r.value()?;
    r.skip_ws();
    if r.i >= r.s.len() {
        return Ok((first, false));
    }
    // A second value counts even with junk after it ("5x" reads as 5).
    let more = r.value().is_ok();
    Ok((first, more))
}

/// A text holding exactly one JSON object, as a map. What `format json` and the `json`
/// decoder accept.
pub fn parse_object(input: &[u8]) -> Result<Map, NotJson> {
    match parse_values(input)? {
        (Value::Map(m), false) => Ok(m),
        _ => Err(NotJson),
    }
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

/// A container being filled, for the iterative reader.
enum Frame {
    Array(Vec<Value>),
    Object(Map, Option<Str>),
}

impl Reader<'_> {
    fn skip_ws(&mut self) {
        while let Some(&c) = self.s.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// One value; nesting is handled with an explicit stack (yyjson has no depth limit).
    fn value(&mut self) -> Result<Value, NotJson> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            if stack.len() > MAX_DEPTH {
                return Err(NotJson);
            }
            // Read a value, or open a container.
            self.skip_ws();
            let mut v = match self.peek().ok_or(NotJson)? {
                b'{' => {
                    self.i += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        Value::Map(Map::new())
                    } else {
                        let key = self.key()?;
                        stack.push(Frame::Object(Map::new(), Some(key)));
                        continue;
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        Value::Array(Vec::new())
                    } else {
                        stack.push(Frame::Array(Vec::new()));
                        continue;
                    }
                }
                _ => self.scalar()?,
            };
            // Put it in its container; close the containers that end here.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(v);
                };
                self.skip_ws();
                match top {
                    Frame::Array(items) => {
                        items.push(v);
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                break;
                            }
                            Some(b']') => {
                                self.i += 1;
                                let Some(Frame::Array(items)) = stack.pop() else {
                                    unreachable!()
                                };
                                v = Value::Array(items);
                            }
                            _ => return Err(NotJson),
                        }
                    }
                    Frame::Object(map, key) => {
                        map.push((key.take().ok_or(NotJson)?, v));
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                self.skip_ws();
                                *key = Some(self.key()?);
                                break;
                            }
                            Some(b'}') => {
                                self.i += 1;
                                let Some(Frame::Object(map, _)) = stack.pop() else {
                                    unreachable!()
                                };
                                v = Value::Map(map);
                            }
                            _ => return Err(NotJson),
                        }
                    }
                }
            }
        }
    }

    /// `"key" :`
    fn key(&mut self) -> Result<Str, NotJson> {
        if self.peek() != Some(b'"') {
            return Err(NotJson);
        }
        let k = self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(NotJson);
        }
        self.i += 1;
        Ok(k)
    }

    fn scalar(&mut self) -> Result<Value, NotJson> {
        let rest = &self.s[self.i..];
        match rest[0] {
            b'"' => Ok(Value::Str(self.string()?)),
            b't' if rest.starts_with(b"true") => {
                self.i += 4;
                Ok(Value::Bool(true))
            }
            b'f' if rest.starts_with(b"false") => {
                self.i += 5;
                Ok(Value::Bool(false))
            }
            b'n' if rest.starts_with(b"null") => {
                self.i += 4;
                Ok(Value::Nil)
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(NotJson),
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<Value, NotJson> {
        let s = self.s;
        let start = self.i;
        let mut i = start;
        let neg = s[i] == b'-';
        if neg {
            i += 1;
        }
        let digits_start = i;
        match s.get(i) {
            Some(b'0') => {
                i += 1;
                if s.get(i).is_some_and(u8::is_ascii_digit) {
                    return Err(NotJson);
                }
            }
            Some(b'1'..=b'9') => {
                while s.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Err(NotJson),
        }
        let int_end = i;
        let mut real = false;
        if s.get(i) == Some(&b'.') {
            i += 1;
            if !s.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(NotJson);
            }
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            real = true;
        }
        if matches!(s.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(s.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !s.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(NotJson);
            }
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            real = true;
        }
        self.i = i;
        // SAFETY of the unwraps below: the bytes are ASCII digits, signs, '.', 'e'.
        let text = std::str::from_utf8(&s[start..i]).map_err(|_| NotJson)?;
        if !real {
            let digits = std::str::from_utf8(&s[digits_start..int_end]).map_err(|_| NotJson)?;
            if let Ok(u) = digits.parse::<u64>() {
                if !neg {
                    return Ok(Value::UInt(u));
                }
                if u <= 1u64 << 63 {
                    return Ok(Value::Int((u as i64).wrapping_neg()));
                }
            }
            // Beyond 64 bits: a double.
        }
        let f: f64 = text.parse().map_err(|_| NotJson)?;
        if f.is_infinite() {
            return Err(NotJson);
        }
        Ok(Value::Float(f))
    }

    /// A string at the cursor (on its opening quote).
    fn string(&mut self) -> Result<Str, NotJson> {
        let s = self.s;
        let start = self.i + 1;
        let mut i = start;
        // Fast path: no escapes.
        match memchr::memchr2(b'"', b'\\', &s[i..]) {
            None => return Err(NotJson),
            Some(k) if s[i + k] == b'"' => {
                let end = i + k;
                self.i = end + 1;
                return Ok(text_of(&s[start..end]));
            }
            Some(k) => i += k,
        }
        let mut out: Vec<u8> = Vec::with_capacity(i - start + 16);
        out.extend_from_slice(&s[start..i]);
        loop {
            // s[i] is a backslash or a quote here.
            if s[i] == b'"' {
                self.i = i + 1;
                return Ok(text_of(&out));
            }
            let e = *s.get(i + 1).ok_or(NotJson)?;
            i += 2;
            match e {
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'/' => out.push(b'/'),
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => i = unicode_escape(s, i, &mut out),
                _ => return Err(NotJson),
            }
            match memchr::memchr2(b'"', b'\\', &s[i..]) {
                None => return Err(NotJson),
                Some(k) => {
                    out.extend_from_slice(&s[i..i + k]);
                    i += k;
                }
            }
        }
    }
}

fn hex4(s: &[u8], i: usize) -> Option<u16> {
    let h = s.get(i..i + 4)?;
    if !h.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
}

fn push_char(out: &mut Vec<u8>, c: u32) {
    let ch = char::from_u32(c).unwrap_or('\u{FFFD}');
    let mut b = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
}

/// `\uXXXX` after its `\u` (at `i`), with yyjson's replacements
/// (`YYJSON_READ_REPLACE_INVALID_UNICODE`). Returns where reading goes on.
fn unicode_escape(s: &[u8], mut i: usize, out: &mut Vec<u8>) -> usize {
    let Some(hi) = hex4(s, i) else {
        // Fewer than 4 hex digits: kept as written, and the character after them is
        // dropped unless it ends the string.
        let mut n = 0;
        while n < 4 && s.get(i + n).is_some_and(u8::is_ascii_hexdigit) {
            n += 1;
        }
        out.extend_from_slice(b"\\u");
        out.extend_from_slice(&s[i..i + n]);
        i += n;
        if let Some(&c) = s.get(i) {
            if c != b'"' && c != b'\'' {
                i += 1;
            }
        }
        return i;
    };
    i += 4;
    match hi & 0xFC00 {
        0xD800 => {
            if s.get(i..i + 2) != Some(b"\\u") {
                push_char(out, 0xFFFD);
                return i;
            }
            let Some(lo) = hex4(s, i + 2) else {
                let mut n = 0;
                while n < 4 && s.get(i + 2 + n).is_some_and(u8::is_ascii_hexdigit) {
                    n += 1;
                }
                push_char(out, 0xFFFD);
                return i + 2 + n;
            };
            if lo & 0xFC00 != 0xDC00 {
                push_char(out, 0xFFFD);
                return i + 6;
            }
            let c = (((hi as u32 - 0xD800) << 10) | (lo as u32 - 0xDC00)) + 0x10000;
            push_char(out, c);
            i + 6
        }
        0xDC00 => {
            push_char(out, 0xFFFD);
            i
        }
        _ => {
            push_char(out, hi as u32);
            i
        }
    }
}

fn text_of(b: &[u8]) -> Str {
    match std::str::from_utf8(b) {
        Ok(t) => Arc::from(t),
        Err(_) => Arc::from(String::from_utf8_lossy(b).as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    fn k(v: &str) -> Str {
        Arc::from(v)
    }

    #[test]
    fn objects_keep_order_duplicates_and_number_kinds() {
        let m = parse_object(br#" {"b":1,"a":-2,"b":1.5,"c":[true,false,null,{}],"d":"x\ty","e":18446744073709551616,"f":-0,"g":0.0,"h":1E2}"#).unwrap();
        assert_eq!(
            m,
            vec![
                (k("b"), Value::UInt(1)),
                (k("a"), Value::Int(-2)),
                (k("b"), Value::Float(1.5)),
                (
                    k("c"),
                    Value::Array(vec![
                        Value::Bool(true),
                        Value::Bool(false),
                        Value::Nil,
                        Value::Map(vec![])
                    ])
                ),
                (k("d"), s("x\ty")),
                (k("e"), Value::Float(18446744073709551616.0)),
                (k("f"), Value::Int(0)),
                (k("g"), Value::Float(0.0)),
                (k("h"), Value::Float(100.0)),
            ]
        );
        assert_eq!(
            parse_object(br#"{"n":-9223372036854775808}"#).unwrap()[0].1,
            Value::Int(i64::MIN)
        );
    }

    #[test]
    fn exactly_one_value() {
        assert!(parse_object(br#"{"a":1} trailing junk"#).is_ok());
        assert!(parse_object(b"{\"a\":1}\n").is_ok());
        assert!(parse_object(br#"{"a":1} {"b":2}"#).is_err());
        assert!(parse_object(br#"{"a":1} 5x"#).is_err());
        assert!(parse_object(br#"{"a":1}{"#).is_ok());
        assert!(parse_object(br#"[1,2]"#).is_err());
        assert!(parse_object(br#""text""#).is_err());
        assert!(parse_object(b"").is_err());
        assert!(parse_object(br#"{"a":01}"#).is_err());
        assert!(parse_object(br#"{"a":1.}"#).is_err());
        assert!(parse_object(br#"{"a":1e999}"#).is_err());
        assert!(parse_object(br#"{"a":1,}"#).is_err());
        assert!(parse_object(br#"{"a":"\q"}"#).is_err());
    }

    #[test]
    fn unicode_escapes_like_yyjson() {
        let one = |t: &str| match &parse_object(t.as_bytes()).unwrap()[0].1 {
            Value::Str(v) => v.to_string(),
            v => panic!("{v:?}"),
        };
        assert_eq!(one(r#"{"a":"\u00e9\ud83d\ude00"}"#), "é😀");
        assert_eq!(one(r#"{"a":"x\ud800y"}"#), "x\u{FFFD}y");
        assert_eq!(one(r#"{"a":"\udc00"}"#), "\u{FFFD}");
        assert_eq!(one(r#"{"a":"\ud800\u0041"}"#), "\u{FFFD}");
        assert_eq!(one(r#"{"a":"\u12x5"}"#), "\\u125");
        assert_eq!(one(r#"{"a":"\u12"}"#), "\\u12");
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let nest = |depth: usize| format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse_object(nest(5_000).as_bytes()).is_ok());
        assert!(parse_object(nest(20_000).as_bytes()).is_err());
    }
}
