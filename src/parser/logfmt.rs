//! `format logfmt`: `key=value key2="quoted \"value\"" bare`, as Fluent Bit's
//! src/flb_parser_logfmt.c reads it.
//!
//! A key is a run of bytes above space other than `=` and `"`; anything else between
//! pairs is skipped. `key=` and a bare `key` give `true` (`key=""` gives `""`); quoted
//! values are unescaped (`\"`, `\\`, `\n`, `\uXXXX`, ... up to a NUL they make). The
//! first line ends the text, but only where a newline follows a pair directly. With
//! `types` set, values are packed raw (no unescaping) and bare keys give `""`, as in
//! Fluent Bit. `logfmt_no_bare_keys on` rejects a line with a bare key.

use super::decode::unescape_utf8;
use super::types::text_value;
use super::{NoMatch, Parser, TimeResult};
use crate::event::{Map, Str, Value};

#[inline]
fn ident(c: u8) -> bool {
    c > b' ' && c != b'=' && c != b'"'
}

struct Pair<'a> {
    key: &'a [u8],
    value: &'a [u8],
    /// `key=...` rather than a bare key.
    set: bool,
    quoted: bool,
    escaped: bool,
}

/// Walks the pairs of `input` as the C parser does; `f` returns false to stop.
fn pairs<'a>(input: &'a [u8], mut f: impl FnMut(Pair<'a>) -> bool) {
    let end = input.len();
    let mut c = 0;
    while c < end {
        while c < end && !ident(input[c]) {
            c += 1;
        }
        if c == end {
            break;
        }
        let k = c;
        while c < end && ident(input[c]) {
            c += 1;
        }
        let key = &input[k..c];
        let mut pair = Pair {
            key,
            value: &[],
            set: false,
            quoted: false,
            escaped: false,
        };
        if c < end && input[c] == b'=' {
            pair.set = true;
            c += 1;
            if c < end {
                if input[c] == b'"' {
                    c += 1;
                    let v = c;
                    pair.quoted = true;
                    while c < end {
                        match input[c] {
                            b'\\' => {
                                pair.escaped = true;
                                c += 1;
                                if c == end {
                                    break;
                                }
                                c += 1;
                            }
                            b'"' => break,
                            _ => c += 1,
                        }
                    }
                    pair.value = &input[v..c];
                    if c < end && input[c] == b'"' {
                        c += 1;
                    }
                } else {
                    let v = c;
                    while c < end && ident(input[c]) {
                        c += 1;
                    }
                    pair.value = &input[v..c];
                }
            }
        }
        if !key.is_empty() && !f(pair) {
            return;
        }
        if c == end {
            break;
        }
        if input[c] == b'\r' || input[c] == b'\n' {
            break;
        }
    }
}

pub(super) fn parse(
    p: &Parser,
    input: &[u8],
    now: i64,
    out: &mut Map,
) -> Result<TimeResult, NoMatch> {
    // Fluent Bit counts the pairs it will pack first (a time field it drops does not
    // count): none, or a bare key with logfmt_no_bare_keys, means no match.
    let mut count = 0;
    let mut bare = false;
    pairs(input, |pair| {
        if p.no_bare_keys && pair.value.is_empty() && !pair.set {
            bare = true;
            return false;
        }
        if !p.drops_time_field(pair.key, pair.value) {
            count += 1;
        }
        true
    });
    if bare || count == 0 {
        return Err(NoMatch);
    }
    let mut time = TimeResult::default();
    let mut failed = false;
    pairs(input, |pair| {
        let Ok(is_time) = p.time_field(pair.key, pair.value, now, &mut time) else {
            failed = true;
            return false;
        };
        if is_time && !p.time_keep {
            return true;
        }
        let key: Str = match std::str::from_utf8(pair.key) {
            Ok(k) => Str::from(k),
            Err(_) => Str::from(String::from_utf8_lossy(pair.key).as_ref()),
        };
        let value = if p.types.is_set() {
            p.types.cast(&key, pair.value)
        } else if pair.value.is_empty() {
            if pair.quoted {
                text_value(b"")
            } else {
                Value::Bool(true)
            }
        } else if pair.escaped {
            let mut v = unescape_utf8(pair.value);
            // Fluent Bit measures the result with strlen.
            if let Some(n) = v.iter().position(|&b| b == 0) {
                v.truncate(n);
            }
            text_value(&v)
        } else {
            text_value(pair.value)
        };
        out.push((key, value));
        true
    });
    if failed {
        return Err(NoMatch);
    }
    Ok(time)
}
