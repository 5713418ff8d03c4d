//! Fluent Bit's record accessor templates (`flb_ra_create` + `flb_ra_translate`): a
//! string with `$key['sub'][0]` record values, `$0`..`$9` regex captures, `$TAG` and
//! `$TAG[n]` (the tag's n-th dot-separated part) in it, as rewrite_tag's NEW_TAG.
//! Fluent Bit: src/flb_record_accessor.c (ra_parse_buffer, ra_translate_*)
//!
//! The parse follows `ra_parse_buffer` step for step, quirks included, because users'
//! tags depend on them: a record key ends at `.`, space, `,` or `"` (a `.` inside
//! quotes does not end it); `$12` is capture 12 then the text `2`; the character right
//! after `$TAG`, `$TAG[n]` or a key is never the start of another reference
//! (`$TAG$TAG` is the tag then the text `$TAG`); a `.` that ends the template right
//! after a key is dropped.

use super::accessor::Accessor;
use super::format::write_json_value;
use super::{Map, Value};

/// One piece of a template.
#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Key(Accessor),
    /// `$N`: regex capture N.
    Capture(usize),
    /// `$TAG`.
    Tag,
    /// `$TAG[n]`.
    TagField(i64),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// C's `atoi`: leading spaces, a sign, then digits (saturating).
fn atoi(b: &[u8]) -> i64 {
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut n: i64 = 0;
    while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        i += 1;
    }
    if neg {
        -n
    } else {
        n
    }
}

/// Fluent Bit's record accessor grammar for one key: `$` IDENTIFIER then `['key']` or
/// `[N]` subkeys; IDENTIFIER is `[_A-Za-z][A-Za-z0-9_.\-/]*`.
fn key(text: &str) -> Result<Accessor, String> {
    let rest = text.strip_prefix('$').unwrap_or(text);
    let head_len = rest.find('[').unwrap_or(rest.len());
    let head = &rest[..head_len];
    let ok = head
        .bytes()
        .next()
        .is_some_and(|c| c == b'_' || c.is_ascii_alphabetic())
        && head
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/'));
    if !ok {
        return Err(format!(
            "'{text}' is not a record key: write $name, $name['sub'] or $name[0]"
        ));
    }
    Accessor::parse(text)
}

impl Template {
    /// Parses `text` as `ra_parse_buffer` does.
    pub fn parse(text: &str) -> Result<Template, String> {
        let b = text.as_bytes();
        let len = b.len() as isize;
        let mut parts = Vec::new();
        let lit = |from: isize, to: isize| Part::Text(text[from as usize..to as usize].to_string());
        // `end` is shared by the TAG and key branches and read by the final check,
        // as in C (where it is sometimes relative and sometimes -1).
        let (mut i, mut pre, mut end): (isize, isize, isize) = (0, 0, 0);
        while i < len {
            if b[i as usize] != b'$' {
                i += 1;
                continue;
            }
            if i > pre {
                parts.push(lit(pre, i));
            }
            pre = i;
            let n = i + 1;
            if n >= len {
                break;
            }
            let nu = n as usize;
            if b[nu].is_ascii_digit() {
                parts.push(Part::Capture(
                    atoi(&b[nu..]).try_into().unwrap_or(usize::MAX),
                ));
                i += 1;
                pre = i + 1;
                i += 1;
                continue;
            }
            if n + 2 < len && &b[nu..nu + 3] == b"TAG" {
                if n + 4 < len {
                    end = -1;
                    if b[nu + 3] == b'[' {
                        let t = n + 3;
                        end = b[t as usize..]
                            .iter()
                            .position(|&c| c == b']')
                            .map_or(-1, |p| p as isize);
                        if end == 0 {
                            end = -1;
                        }
                        parts.push(Part::TagField(atoi(&b[t as usize + 1..])));
                        i = t + end + 1;
                        pre = i;
                        i += 1;
                        continue;
                    }
                }
                parts.push(Part::Tag);
                i = n + 3;
                pre = n + 3;
                i += 1;
                continue;
            }
            let mut quotes = 0;
            end = i + 1;
            while end < len {
                match b[end as usize] {
                    b'\'' => quotes += 1,
                    b'.' if quotes % 2 == 1 => {}
                    b'.' | b' ' | b',' | b'"' => break,
                    _ => {}
                }
                end += 1;
            }
            parts.push(Part::Key(key(&text[i as usize..end as usize])?));
            pre = end;
            i = end + 1;
        }
        if ((i - 1 > end && pre < i) || i == 1) && pre < len {
            parts.push(lit(pre, len));
        }
        Ok(Template { parts })
    }

    /// The first piece as a record key, for a rule's KEY (`$log`, or `log` without
    /// `$`, which Fluent Bit reads as the key `log`). `None` when it is no key.
    pub fn first_key(&self) -> Option<Accessor> {
        match self.parts.first()? {
            Part::Key(a) => Some(a.clone()),
            Part::Text(t) => Some(Accessor::key(t)),
            _ => None,
        }
    }

    /// The text for a record: `subject` and `captures` are the regex match (group 0 the
    /// whole match), as `flb_ra_translate` composes it. A capture that took no part, a
    /// missing key or a key holding an array add nothing.
    pub fn render(
        &self,
        tag: &str,
        body: &Map,
        subject: &str,
        captures: &[Option<(usize, usize)>],
    ) -> String {
        let mut out = String::new();
        self.render_into(&mut out, tag, body, subject, captures);
        out
    }

    /// [`Template::render`] appended to `out` (no allocation of its own).
    pub fn render_into(
        &self,
        out: &mut String,
        tag: &str,
        body: &Map,
        subject: &str,
        captures: &[Option<(usize, usize)>],
    ) {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Key(a) => {
                    if let Some(v) = a.ra_value(body) {
                        push_value(out, v);
                    }
                }
                Part::Capture(n) => {
                    if let Some(Some((s, e))) = captures.get(*n) {
                        out.push_str(subject.get(*s..*e).unwrap_or(""));
                    }
                }
                Part::Tag => out.push_str(tag),
                Part::TagField(n) => out.push_str(tag_part(tag, *n)),
            }
        }
    }

    /// The first piece when it is a record key (`$a['b']`), as `flb_ra_get_kv_pair`
    /// and `flb_mp_accessor` use a pattern: `$TAG`, `$1` or text first match nothing.
    pub fn first_record_key(&self) -> Option<&Accessor> {
        match self.parts.first()? {
            Part::Key(a) => Some(a),
            _ => None,
        }
    }

    /// Fluent Bit's loki `normalize_ra_key_name`: each piece's name joined with `_`
    /// (a key as its head and subkeys joined with `_`, text as it is, `$TAG` and
    /// captures as nothing): `$kubernetes['pod_name']` is `kubernetes_pod_name`.
    pub fn joined_name(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push('_');
            }
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Key(a) => a.joined_name(&mut out),
                Part::Capture(_) | Part::Tag | Part::TagField(_) => {}
            }
        }
        out
    }
}

impl Template {
    /// `flb_ra_translate_check` without a regex result: the text for a record appended
    /// to `out`, or the top-level name of the first key the record lacks (a key holding
    /// an array counts as lacking). Captures (`$1`) add nothing.
    pub fn render_checked<'t>(
        &'t self,
        tag: &str,
        body: &Map,
        out: &mut String,
    ) -> Result<(), &'t str> {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Key(a) => match a.ra_value(body) {
                    Some(v) => push_value(out, v),
                    None => return Err(a.head()),
                },
                Part::Capture(_) => {}
                Part::Tag => out.push_str(tag),
                Part::TagField(n) => out.push_str(tag_part(tag, *n)),
            }
        }
        Ok(())
    }
}

/// `ra_translate_tag_part`: the n-th dot-separated part; a tag without dots is its
/// own part 0.
fn tag_part(tag: &str, n: i64) -> &str {
    if !tag.contains('.') {
        return if n == 0 { tag } else { "" };
    }
    usize::try_from(n)
        .ok()
        .and_then(|n| tag.split('.').nth(n))
        .unwrap_or("")
}

/// A value as `ra_translate_keymap` writes it.
fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        // msgpack's via.i64 of a positive integer: the same 64 bits, signed.
        Value::UInt(u) => out.push_str(itoa::Buffer::new().format(*u as i64)),
        Value::Float(f) => out.push_str(&c_fixed(*f)),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Nil => out.push_str("null"),
        Value::Bin(b) => b.iter().for_each(|c| {
            out.push_str(&format!("{c:02x}"));
        }),
        Value::Map(_) => {
            let mut buf = Vec::new();
            write_json_value(&mut buf, v, true);
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        Value::Array(_) => {}
    }
}

/// C's `%f`.
fn c_fixed(f: f64) -> String {
    if f.is_nan() {
        if f.is_sign_negative() { "-nan" } else { "nan" }.to_string()
    } else if f.is_infinite() {
        if f < 0.0 { "-inf" } else { "inf" }.to_string()
    } else {
        format!("{f:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn body() -> Map {
        let s = |v: &str| Value::Str(Arc::from(v));
        vec![
            (Arc::from("name"), s("abc-123")),
            (
                Arc::from("ss"),
                Value::Map(vec![(
                    Arc::from("s1"),
                    Value::Map(vec![(Arc::from("s2"), s("flb"))]),
                )]),
            ),
            (Arc::from("n"), Value::Int(-7)),
            (Arc::from("f"), Value::Float(1.5)),
            (Arc::from("b"), Value::Bool(true)),
            (Arc::from("z"), Value::Nil),
            (Arc::from("a"), Value::Array(vec![s("x")])),
        ]
    }

    fn render(t: &str, tag: &str) -> String {
        // `^([a-z]+)-([0-9]+)$` on "abc-123".
        let caps = [Some((0, 7)), Some((0, 3)), Some((4, 7))];
        Template::parse(t)
            .unwrap()
            .render(tag, &body(), "abc-123", &caps)
    }

    #[test]
    fn fluent_bits_documented_example() {
        assert_eq!(
            render(
                "newtag.$TAG.$TAG[1].$1.$ss['s1']['s2'].out.fluent",
                "aa.bb.cc"
            ),
            "newtag.aa.bb.cc.bb.abc.flb.out.fluent"
        );
    }

    #[test]
    fn values_captures_and_tag_parts() {
        assert_eq!(render("$0|$2|$3|$9", "t"), "abc-123|123||");
        assert_eq!(
            render("$n.$f.$b.$z.$a.$nope.x", "t"),
            "-7.1.500000.true.null...x"
        );
        assert_eq!(render("$ss", "t"), r#"{"s1":{"s2":"flb"}}"#);
        assert_eq!(render("$TAG[0]-$TAG[2]-$TAG[3]", "a.b.c"), "a-c-");
        assert_eq!(render("x$TAG[0]x$TAG[1]", "solo"), "xsolox");
        assert_eq!(render("$TAG[1]", "a..b"), "");
        assert_eq!(render("$TAG[2]", "a..b"), "b");
    }

    #[test]
    fn ra_parse_buffer_quirks() {
        assert_eq!(render("$12", "t"), "2");
        assert_eq!(render("$TAG$TAG", "t"), "t$TAG");
        assert_eq!(render("$TAG[0]$TAG[1]", "a.b"), "a$TAG[1]");
        assert_eq!(render("x.$name.", "t"), "x.abc-123");
        assert_eq!(render("x.$name.y", "t"), "x.abc-123.y");
        assert_eq!(render("a", "t"), "a");
        assert_eq!(render("ab$", "t"), "ab");
        assert_eq!(render("$TAG", "t.u"), "t.u");
        assert_eq!(render("$TAG[1", "a.b"), "b[1");
    }

    #[test]
    fn bad_keys_are_errors() {
        assert!(Template::parse("x.$-a").is_err());
        assert!(Template::parse("x.$a[b]").is_err());
        assert!(Template::parse("x.${HOME}").is_err());
        assert_eq!(
            Template::parse("log").unwrap().first_key(),
            Some(Accessor::key("log"))
        );
        assert_eq!(
            Template::parse("$log['a']").unwrap().first_key(),
            Some(Accessor::parse("$log['a']").unwrap())
        );
        assert_eq!(Template::parse("$1").unwrap().first_key(), None);
    }
}
