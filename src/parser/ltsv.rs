//! `format ltsv`: `label:value<TAB>label2:value2`, as Fluent Bit's
//! src/flb_parser_ltsv.c reads it (http://ltsv.org).
//!
//! Labels are `[0-9A-Za-z_.-]+`; a value runs to a TAB, CR, LF or NUL. Reading stops
//! at the first field that is not `label:` and at the end of the first line; a field
//! with an empty label is skipped.

use super::types::text_value;
use super::{NoMatch, Parser, TimeResult};
use crate::event::{Map, Str};

#[inline]
fn label_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

#[inline]
fn field_byte(c: u8) -> bool {
    !matches!(c, 0 | b'\t' | b'\n' | b'\r')
}

/// Walks the fields of `input` as the C parser does; `f` returns false to stop.
fn fields<'a>(input: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool) {
    let end = input.len();
    let mut c = 0;
    while c < end {
        let l = c;
        while c < end && label_byte(input[c]) {
            c += 1;
        }
        let label = &input[l..c];
        if c == end || input[c] != b':' {
            break;
        }
        c += 1;
        let v = c;
        while c < end && field_byte(input[c]) {
            c += 1;
        }
        if !label.is_empty() && !f(label, &input[v..c]) {
            return;
        }
        if c == end {
            break;
        }
        if input[c] == b'\t' {
            c += 1;
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
    // Fluent Bit counts the fields it will pack first (a time field it drops does
    // not count): none means no match.
    let mut count = 0;
    fields(input, |label, value| {
        if !p.drops_time_field(label, value) {
            count += 1;
        }
        true
    });
    if count == 0 {
        return Err(NoMatch);
    }
    let mut time = TimeResult::default();
    let mut failed = false;
    fields(input, |label, value| {
        let Ok(is_time) = p.time_field(label, value, now, &mut time) else {
            failed = true;
            return false;
        };
        if is_time && !p.time_keep {
            return true;
        }
        // Labels are ASCII.
        let key = Str::from(std::str::from_utf8(label).unwrap_or_default());
        let value = if p.types.is_set() {
            p.types.cast(&key, value)
        } else {
            text_value(value)
        };
        out.push((key, value));
        true
    });
    if failed {
        return Err(NoMatch);
    }
    Ok(time)
}
