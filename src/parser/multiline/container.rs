//! Native readers for container runtime log lines, the hot path of every container log:
//! Docker's `json-file` lines and CRI lines, giving exactly the records Fluent Bit's
//! built-in `_ml_json_docker` (json, `time_keep on`) and `_ml_cri` (regex
//! `^(?<time>.+?) (?<stream>stdout|stderr) (?<_p>F|P) (?<log>.*)$`, `time_keep on`)
//! parsers give, without a general JSON parser or regex for the common case.
//! Also the raw-JSON scanning of tail's legacy `docker_mode` (tail_dockermode.c).
//!
//! Fluent Bit: src/multiline/flb_ml_parser_docker.c, flb_ml_parser_cri.c,
//! src/flb_parser_json.c, src/flb_parser_regex.c

use std::sync::{Arc, OnceLock};

use super::time::container_time;
use crate::event::{EventTime, Map, Str, Value};

/// Keys and values the container parsers emit, interned once.
pub struct Words {
    pub log: Str,
    pub stream: Str,
    pub time: Str,
    pub p: Str,
    pub stdout: Value,
    pub stderr: Value,
    pub full: Value,
    pub partial: Value,
}

pub fn words() -> &'static Words {
    static WORDS: OnceLock<Words> = OnceLock::new();
    WORDS.get_or_init(|| Words {
        log: Arc::from("log"),
        stream: Arc::from("stream"),
        time: Arc::from("time"),
        p: Arc::from("_p"),
        stdout: Value::Str(Arc::from("stdout")),
        stderr: Value::Str(Arc::from("stderr")),
        full: Value::Str(Arc::from("F")),
        partial: Value::Str(Arc::from("P")),
    })
}

/// A string value from bytes: `Str` when UTF-8, else `Bin` (as tail does), so no byte
/// is lost.
pub fn bytes_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::Str(Arc::from(s)),
        Err(_) => Value::Bin(Arc::from(b)),
    }
}

/// The bytes of a string value (`Str`, or `Bin` holding a non-UTF-8 string).
pub fn value_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Str(s) => Some(s.as_bytes()),
        Value::Bin(b) => Some(b),
        _ => None,
    }
}

/// One CRI line: `time`, `stream`, `_p`, `log` in that order (all strings, `time`
/// kept), and the time read from `time`. `None` when the line is not CRI.
pub fn parse_cri(line: &[u8]) -> Option<(Map, EventTime)> {
    // Onigmo's `^` matches at every line start and `.` never crosses a newline.
    let mut start = 0;
    loop {
        let seg_end = memchr::memchr(b'\n', &line[start..]).map_or(line.len(), |n| start + n);
        if let Some(found) = cri_segment(line, start, seg_end) {
            return Some(found);
        }
        if seg_end == line.len() {
            return None;
        }
        start = seg_end + 1;
    }
}

fn cri_segment(line: &[u8], start: usize, end: usize) -> Option<(Map, EventTime)> {
    let seg = &line[start..end];
    // The lazy `.+?`: the first space (after at least one byte) that the rest matches.
    for sp in memchr::memchr_iter(b' ', seg).filter(|&i| i >= 1) {
        let rest = &seg[sp + 1..];
        if rest.len() < 9 || rest[6] != b' ' || rest[8] != b' ' {
            continue;
        }
        let w = words();
        let stream = match &rest[..6] {
            b"stdout" => &w.stdout,
            b"stderr" => &w.stderr,
            _ => continue,
        };
        let p = match rest[7] {
            b'F' => &w.full,
            b'P' => &w.partial,
            _ => continue,
        };
        let time = &seg[..sp];
        let map = vec![
            (w.time.clone(), bytes_value(time)),
            (w.stream.clone(), stream.clone()),
            (w.p.clone(), p.clone()),
            (w.log.clone(), bytes_value(&rest[9..])),
        ];
        return Some((map, container_time(time, true)));
    }
    None
}

/// One Docker `json-file` line: the object's keys in order (values of any JSON type),
/// and the time read from its first `time` key when that is a string. `None` when
/// the line is not one JSON object.
pub fn parse_docker(line: &[u8], scratch: &mut Vec<u8>) -> Option<(Map, Option<EventTime>)> {
    let map = match fast_object(line, scratch) {
        Ok(map) => map,
        Err(Slow::Other) => slow_object(line)?,
        Err(Slow::Invalid) => return None,
    };
    let time = map
        .iter()
        .find(|(k, _)| &**k == "time")
        .and_then(|(_, v)| value_bytes(v))
        .map(|t| container_time(t, false));
    Some((map, time))
}

enum Slow {
    /// Not valid JSON (or not what the fast path reads exactly): not a Docker line.
    Invalid,
    /// Valid perhaps, but with values the fast path does not read: use serde_json.
    Other,
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// An object whose values are all strings, read without building a JSON tree.
fn fast_object(b: &[u8], scratch: &mut Vec<u8>) -> Result<Map, Slow> {
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(Slow::Invalid);
    }
    let mut map = Map::with_capacity(4);
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(Slow::Invalid);
            }
            let (key, next) = string(b, i + 1, scratch)?;
            let key = intern_key(key.bytes(b, scratch));
            i = ws(b, next);
            if b.get(i) != Some(&b':') {
                return Err(Slow::Invalid);
            }
            i = ws(b, i + 1);
            if b.get(i) != Some(&b'"') {
                return Err(Slow::Other);
            }
            let (val, next) = string(b, i + 1, scratch)?;
            map.push((key, bytes_value(val.bytes(b, scratch))));
            i = ws(b, next);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(Slow::Invalid),
            }
        }
    }
    if ws(b, i) != b.len() {
        return Err(Slow::Invalid);
    }
    Ok(map)
}

fn slow_object(b: &[u8]) -> Option<Map> {
    match serde_json::from_slice::<serde_json::Value>(b).ok()? {
        serde_json::Value::Object(o) => Some(
            o.iter()
                .map(|(k, v)| (intern_key(k.as_bytes()), Value::from_json(v)))
                .collect(),
        ),
        _ => None,
    }
}

fn intern_key(k: &[u8]) -> Str {
    let w = words();
    match k {
        b"log" => w.log.clone(),
        b"stream" => w.stream.clone(),
        b"time" => w.time.clone(),
        _ => Arc::from(String::from_utf8_lossy(k).as_ref()),
    }
}

/// Where a decoded string is: a slice of the line (no escapes) or the scratch buffer.
enum Decoded {
    Raw(usize, usize),
    Scratch,
}

impl Decoded {
    fn bytes<'a>(&self, line: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match *self {
            Decoded::Raw(a, z) => &line[a..z],
            Decoded::Scratch => scratch,
        }
    }
}

/// A JSON string whose content starts at `start`; returns it and the index after its
/// closing quote.
fn string(b: &[u8], start: usize, scratch: &mut Vec<u8>) -> Result<(Decoded, usize), Slow> {
    let n = memchr::memchr2(b'"', b'\\', &b[start..]).ok_or(Slow::Invalid)?;
    if b[start + n] == b'"' {
        return Ok((Decoded::Raw(start, start + n), start + n + 1));
    }
    scratch.clear();
    let mut i = start;
    loop {
        let n = memchr::memchr2(b'"', b'\\', &b[i..]).ok_or(Slow::Invalid)?;
        scratch.extend_from_slice(&b[i..i + n]);
        i += n;
        if b[i] == b'"' {
            return Ok((Decoded::Scratch, i + 1));
        }
        let c = *b.get(i + 1).ok_or(Slow::Invalid)?;
        i += 2;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hi = hex4(b, i)?;
                i += 4;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    if b.get(i..i + 2) != Some(b"\\u") {
                        return Err(Slow::Invalid);
                    }
                    let lo = hex4(b, i + 2)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(Slow::Invalid);
                    }
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                let ch = char::from_u32(cp).ok_or(Slow::Invalid)?;
                scratch.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return Err(Slow::Invalid),
        };
        scratch.push(byte);
    }
}

fn hex4(b: &[u8], i: usize) -> Result<u32, Slow> {
    let h = b.get(i..i + 4).ok_or(Slow::Invalid)?;
    let s = std::str::from_utf8(h).map_err(|_| Slow::Invalid)?;
    u32::from_str_radix(s, 16).map_err(|_| Slow::Invalid)
}

/// tail's `docker_mode`: the raw (still escaped) span of the first top-level `"log"`
/// string of a line that is one JSON object starting at its first byte, as
/// `modify_json_cond` finds it with jsmn. `None` for anything else.
pub fn docker_mode_log(line: &[u8]) -> Option<(usize, usize)> {
    if line.first() != Some(&b'{') || serde_json::from_slice::<serde_json::Value>(line).is_err() {
        return None;
    }
    // The line is valid JSON from here on, so the scan can be simple.
    let mut i = ws(line, 1);
    loop {
        if line.get(i) != Some(&b'"') {
            return None; // `}`: no "log" key
        }
        let key_end = raw_string_end(line, i + 1);
        let is_log = &line[i + 1..key_end] == b"log";
        i = ws(line, key_end + 1);
        i = ws(line, i + 1); // ':'
        if is_log {
            return (line[i] == b'"').then(|| (i + 1, raw_string_end(line, i + 1)));
        }
        i = ws(line, skip_value(line, i));
        if line[i] != b',' {
            return None;
        }
        i = ws(line, i + 1);
    }
}

/// The index of the closing quote of a valid JSON string whose content starts at `i`.
fn raw_string_end(b: &[u8], mut i: usize) -> usize {
    while b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i
}

fn skip_value(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' => raw_string_end(b, i + 1) + 1,
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b[j] {
                    b'"' => j = raw_string_end(b, j + 1),
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            j
        }
    }
}

/// Whether an escaped JSON string's text ends with a newline, as
/// `flb_unescape_string` decodes it (it drops escapes it does not know, `\u` included).
pub fn escaped_ends_with_newline(raw: &[u8]) -> bool {
    let mut last = None;
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            match raw.get(i + 1) {
                Some(b'n') => last = Some(b'\n'),
                Some(b'a' | b'b' | b't' | b'v' | b'f' | b'r' | b'\\') => last = Some(0),
                Some(_) => {}
                None => last = Some(0),
            }
            i += 2;
            continue;
        }
        last = Some(raw[i]);
        i += 1;
    }
    last == Some(b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &Value) -> &str {
        match v {
            Value::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn cri_lines() {
        let (m, t) = parse_cri(b"2019-05-07T18:57:50.904275087+00:00 stdout P part one, ").unwrap();
        let keys: Vec<_> = m.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["time", "stream", "_p", "log"]);
        assert_eq!(s(&m[0].1), "2019-05-07T18:57:50.904275087+00:00");
        assert_eq!(
            (s(&m[1].1), s(&m[2].1), s(&m[3].1)),
            ("stdout", "P", "part one, ")
        );
        assert_eq!(t, EventTime::new(1557255470, 904275087));
        // Empty log; a message that itself looks like CRI; the first match wins.
        let (m, _) = parse_cri(b"t stderr F ").unwrap();
        assert_eq!(s(&m[3].1), "");
        let (m, _) = parse_cri(b"t1 x stdout F a stderr P b").unwrap();
        assert_eq!((s(&m[0].1), s(&m[3].1)), ("t1 x", "a stderr P b"));
        for bad in [
            &b"t stdout F"[..],
            b" stdout F x",
            b"t stdout X x",
            b"t stdio F x",
            b"",
        ] {
            assert!(
                parse_cri(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // `^` after a newline; `.*` stops at the next one.
        let (m, _) = parse_cri(b"junk\nt stdout F a\nb").unwrap();
        assert_eq!(s(&m[3].1), "a");
        // Invalid UTF-8 is kept as bytes.
        let (m, _) = parse_cri(b"t stdout F \xff").unwrap();
        assert_eq!(m[3].1, Value::Bin(Arc::from(&b"\xff"[..])));
    }

    #[test]
    fn docker_lines() {
        let mut scratch = Vec::new();
        let line = br#"{"log":"hello \"x\" \u00e9\ud83d\ude00\n","stream":"stdout","time":"2019-05-07T18:57:52.53412Z"}"#;
        let (m, t) = parse_docker(line, &mut scratch).unwrap();
        assert_eq!(s(&m[0].1), "hello \"x\" é😀\n");
        assert_eq!(s(&m[1].1), "stdout");
        assert_eq!(t, Some(EventTime::new(1557255472, 534120000)));
        // Keys keep their order; other value types go through serde_json.
        let line = br#" {"stream":"stderr","attrs":{"tag":"a"},"n":-1,"log":"x"} "#;
        let (m, t) = parse_docker(line, &mut scratch).unwrap();
        let keys: Vec<_> = m.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["stream", "attrs", "n", "log"]);
        assert_eq!(m[2].1, Value::Int(-1));
        assert_eq!(t, None);
        assert_eq!(parse_docker(b"{}", &mut scratch).unwrap().0, Map::new());
        for bad in [
            &b"not json"[..],
            b"[1]",
            b"{\"log\":\"x\"",
            b"{\"log\":\"x\"} {}",
            b"{\"a\":\"\\q\"}",
        ] {
            assert!(parse_docker(bad, &mut scratch).is_none());
        }
    }

    #[test]
    fn docker_mode_spans() {
        let line = br#"{"stream":"stdout","log":"a\"b\\n","time":"x"}"#;
        let (a, z) = docker_mode_log(line).unwrap();
        assert_eq!(&line[a..z], br#"a\"b\\n"#);
        assert!(!escaped_ends_with_newline(&line[a..z]));
        assert!(escaped_ends_with_newline(br"abc\n"));
        assert!(!escaped_ends_with_newline(br"abc\u000a"));
        assert!(docker_mode_log(br#"{"a":{"log":"x"},"log":1}"#).is_none());
        assert!(docker_mode_log(br#" {"log":"x"}"#).is_none());
        assert!(docker_mode_log(br#"{"log":"x"#).is_none());
        let line = br#"{"a":[1,{"b":"}"}],"log":"y"}"#;
        let (a, z) = docker_mode_log(line).unwrap();
        assert_eq!(&line[a..z], b"y");
    }
}
