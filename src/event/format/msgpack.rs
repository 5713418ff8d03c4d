//! MessagePack encoding of records in Fluent Bit's v2 event format,
//! `[[EventTime, {metadata}], {body}]`, as `flb_log_event_encoder` (`src/flb_log_event_encoder.c`)
//! produces it, with values packed like msgpack-c's `msgpack_pack_object`
//! (`lib/msgpack-c/src/objectc.c`): the smallest encoding of each integer, string, array
//! and map header, float64 for floats.
//!
//! Reading ([`msgpack_value_len`], [`read_msgpack_value`], [`read_event_time`]) is for
//! bytes from the network: lengths a peer declares are compared with the bytes present
//! and never allocated ahead of them, nesting is limited, and "not all here yet" is told
//! apart from "not msgpack".

use std::sync::Arc;

use rmp::{encode, Marker};

use super::super::{EventTime, Map, Record, Value};

/// One record: `[[EventTime, {metadata}], {body}]`.
///
/// EventTime is ext type 0 with 8 bytes (fixext 8, `d7 00`): big-endian `u32` seconds
/// then big-endian `u32` nanoseconds (`flb_time_append_to_msgpack`, which casts the seconds
/// to `uint32_t`).
pub fn write_msgpack_record(out: &mut Vec<u8>, rec: &Record) {
    // fixarray(2), fixarray(2), fixext8 type 0
    out.extend_from_slice(&[0x92, 0x92, 0xd7, 0x00]);
    out.extend_from_slice(&(rec.time.secs as u32).to_be_bytes());
    out.extend_from_slice(&rec.time.nanos.to_be_bytes());
    write_map(out, &rec.metadata);
    write_map(out, &rec.body);
}

/// One value in its smallest msgpack form (`rmp::encode`, which matches msgpack-c).
pub fn write_msgpack_value(out: &mut Vec<u8>, v: &Value) {
    // Writing into a Vec cannot fail.
    match v {
        Value::Nil => {
            let _ = encode::write_nil(out);
        }
        Value::Bool(b) => {
            let _ = encode::write_bool(out, *b);
        }
        Value::Int(i) => {
            let _ = encode::write_sint(out, *i);
        }
        Value::UInt(u) => {
            let _ = encode::write_uint(out, *u);
        }
        Value::Float(f) => {
            let _ = encode::write_f64(out, *f);
        }
        Value::Str(s) => {
            let _ = encode::write_str(out, s);
        }
        Value::Bin(b) => {
            let _ = encode::write_bin(out, b);
        }
        Value::Array(a) => {
            let _ = encode::write_array_len(out, a.len() as u32);
            for item in a {
                write_msgpack_value(out, item);
            }
        }
        Value::Map(m) => write_map(out, m),
    }
}

fn write_map(out: &mut Vec<u8>, m: &Map) {
    let _ = encode::write_map_len(out, m.len() as u32);
    for (k, v) in m {
        let _ = encode::write_str(out, k);
        write_msgpack_value(out, v);
    }
}

/// Why bytes are not (yet) one msgpack value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value continues past the bytes given.
    #[error("truncated: the value continues past the bytes given")]
    Incomplete,
    /// Not msgpack, or not what was expected here.
    #[error("{0}")]
    Invalid(String),
}

/// Deepest nesting of arrays and maps accepted from a peer.
pub const MAX_DEPTH: usize = 64;

fn invalid<T>(why: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError::Invalid(why.into()))
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], DecodeError> {
    let end = pos.checked_add(n).ok_or(DecodeError::Incomplete)?;
    let bytes = buf.get(*pos..end).ok_or(DecodeError::Incomplete)?;
    *pos = end;
    Ok(bytes)
}

fn be(buf: &[u8], pos: &mut usize, n: usize) -> Result<u64, DecodeError> {
    Ok(take(buf, pos, n)?
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

/// What one marker announces.
enum Head {
    /// A scalar whose payload is `skip` bytes.
    Scalar {
        skip: usize,
    },
    Array(u64),
    Map(u64),
}

fn head(buf: &[u8], pos: &mut usize) -> Result<(Marker, Head), DecodeError> {
    let m = Marker::from_u8(take(buf, pos, 1)?[0]);
    let h = match m {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
            Head::Scalar { skip: 0 }
        }
        Marker::U8 | Marker::I8 => Head::Scalar { skip: 1 },
        Marker::U16 | Marker::I16 => Head::Scalar { skip: 2 },
        Marker::U32 | Marker::I32 | Marker::F32 => Head::Scalar { skip: 4 },
        Marker::U64 | Marker::I64 | Marker::F64 => Head::Scalar { skip: 8 },
        Marker::FixStr(n) => Head::Scalar { skip: n as usize },
        Marker::Str8 | Marker::Bin8 => Head::Scalar {
            skip: be(buf, pos, 1)? as usize,
        },
        Marker::Str16 | Marker::Bin16 => Head::Scalar {
            skip: be(buf, pos, 2)? as usize,
        },
        Marker::Str32 | Marker::Bin32 => Head::Scalar {
            skip: be(buf, pos, 4)? as usize,
        },
        Marker::FixArray(n) => Head::Array(n as u64),
        Marker::Array16 => Head::Array(be(buf, pos, 2)?),
        Marker::Array32 => Head::Array(be(buf, pos, 4)?),
        Marker::FixMap(n) => Head::Map(n as u64),
        Marker::Map16 => Head::Map(be(buf, pos, 2)?),
        Marker::Map32 => Head::Map(be(buf, pos, 4)?),
        Marker::FixExt1 => Head::Scalar { skip: 2 },
        Marker::FixExt2 => Head::Scalar { skip: 3 },
        Marker::FixExt4 => Head::Scalar { skip: 5 },
        Marker::FixExt8 => Head::Scalar { skip: 9 },
        Marker::FixExt16 => Head::Scalar { skip: 17 },
        Marker::Ext8 => Head::Scalar {
            skip: be(buf, pos, 1)? as usize + 1,
        },
        Marker::Ext16 => Head::Scalar {
            skip: be(buf, pos, 2)? as usize + 1,
        },
        Marker::Ext32 => Head::Scalar {
            skip: be(buf, pos, 4)? as usize + 1,
        },
        Marker::Reserved => return invalid("byte 0xc1 is not msgpack"),
    };
    Ok((m, h))
}

/// The length of the msgpack value at the start of `buf`, found without building it or
/// allocating anything but a stack of [`MAX_DEPTH`] counters.
pub fn msgpack_value_len(buf: &[u8]) -> Result<usize, DecodeError> {
    ValueLen::default()
        .advance(buf)?
        .ok_or(DecodeError::Incomplete)
}

/// [`msgpack_value_len`] that resumes where it stopped: a server reading a large value in
/// small pieces measures each byte once, not the whole buffer again on every read (a
/// 3 MB frame in 1 KB pieces cost the forward input 5.7 s of CPU).
#[derive(Debug, Default)]
pub struct ValueLen {
    /// Bytes of the value measured so far (whole elements only).
    pos: usize,
    /// Values still to read at each open level; empty between values.
    open: Vec<u64>,
    /// Elements measured (tests check that nothing is measured twice).
    #[cfg(test)]
    steps: u64,
}

impl ValueLen {
    /// Measures on from where the last call stopped. `buf` holds the value from its
    /// first byte, as last time plus what arrived since. `Some(len)` once the value is
    /// complete (the next call starts a new value); `None` until then.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if self.open.is_empty() {
            self.open.push(1);
            self.pos = 0;
        }
        while let Some(&left) = self.open.last() {
            if left == 0 {
                self.open.pop();
                continue;
            }
            // An element cut short is measured again, whole, once more bytes are here.
            let mut pos = self.pos;
            let step = head(buf, &mut pos).and_then(|(_, h)| match h {
                Head::Scalar { skip } => take(buf, &mut pos, skip).map(|_| None),
                Head::Array(n) | Head::Map(n) if n == 0 => Ok(None),
                Head::Array(n) => Ok(Some(n)),
                Head::Map(n) => Ok(Some(n.saturating_mul(2))),
            });
            let nested = match step {
                Ok(nested) => nested,
                Err(DecodeError::Incomplete) => return Ok(None),
                Err(e) => {
                    self.open.clear();
                    return Err(e);
                }
            };
            #[cfg(test)]
            {
                self.steps += 1;
            }
            self.pos = pos;
            if let Some(top) = self.open.last_mut() {
                *top -= 1;
            }
            if let Some(n) = nested {
                self.open.push(n);
                if self.open.len() > MAX_DEPTH {
                    self.open.clear();
                    return invalid(format!("nested deeper than {MAX_DEPTH} levels"));
                }
            }
        }
        Ok(Some(std::mem::take(&mut self.pos)))
    }
}

/// Reads one value at `*pos` (a map key must be a string). Ext values other than an
/// EventTime, which has no `Value` form, become their data bytes; an EventTime becomes
/// a float of seconds.
pub fn read_msgpack_value(buf: &[u8], pos: &mut usize) -> Result<Value, DecodeError> {
    read_value(buf, pos, 0, &mut KeyCache::disabled())
}

/// Map keys already seen, shared rather than allocated again: records from one client
/// repeat the same few keys, and an allocation per key is most of the cost of decoding.
/// Holds at most [`KeyCache::MAX`] keys; others are allocated as usual.
#[derive(Debug)]
pub struct KeyCache {
    keys: Vec<Arc<str>>,
    max: usize,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            keys: Vec::new(),
            max: Self::MAX,
        }
    }
}

impl KeyCache {
    /// Keys kept: lookups are linear, and a record rarely has more distinct keys.
    pub const MAX: usize = 64;

    fn disabled() -> Self {
        KeyCache {
            keys: Vec::new(),
            max: 0,
        }
    }

    fn key(&mut self, bytes: &[u8]) -> Result<Arc<str>, DecodeError> {
        if let Some(k) = self.keys.iter().find(|k| k.as_bytes() == bytes) {
            return Ok(k.clone());
        }
        let k = text(bytes)?;
        if self.keys.len() < self.max {
            self.keys.push(k.clone());
        }
        Ok(k)
    }
}

fn text(bytes: &[u8]) -> Result<Arc<str>, DecodeError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Arc::from(s)),
        Err(_) => Ok(Arc::from(String::from_utf8_lossy(bytes).as_ref())),
    }
}

fn read_value(
    buf: &[u8],
    pos: &mut usize,
    depth: usize,
    keys: &mut KeyCache,
) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return invalid(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let (m, h) = head(buf, pos)?;
    let v = match (m, h) {
        (Marker::Null, _) => Value::Nil,
        (Marker::True, _) => Value::Bool(true),
        (Marker::False, _) => Value::Bool(false),
        (Marker::FixPos(n), _) => Value::UInt(n as u64),
        (Marker::FixNeg(n), _) => Value::Int(n as i64),
        (Marker::U8, _) => Value::UInt(be(buf, pos, 1)?),
        (Marker::U16, _) => Value::UInt(be(buf, pos, 2)?),
        (Marker::U32, _) => Value::UInt(be(buf, pos, 4)?),
        (Marker::U64, _) => Value::UInt(be(buf, pos, 8)?),
        (Marker::I8, _) => Value::Int(be(buf, pos, 1)? as u8 as i8 as i64),
        (Marker::I16, _) => Value::Int(be(buf, pos, 2)? as u16 as i16 as i64),
        (Marker::I32, _) => Value::Int(be(buf, pos, 4)? as u32 as i32 as i64),
        (Marker::I64, _) => Value::Int(be(buf, pos, 8)? as i64),
        (Marker::F32, _) => Value::Float(f32::from_bits(be(buf, pos, 4)? as u32) as f64),
        (Marker::F64, _) => Value::Float(f64::from_bits(be(buf, pos, 8)?)),
        (
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32,
            Head::Scalar { skip },
        ) => Value::Str(text(take(buf, pos, skip)?)?),
        (Marker::Bin8 | Marker::Bin16 | Marker::Bin32, Head::Scalar { skip }) => {
            Value::Bin(Arc::from(take(buf, pos, skip)?))
        }
        (_, Head::Array(n)) => {
            // Never trust n for the allocation: each element takes at least a byte.
            let mut items = Vec::with_capacity((n as usize).min(buf.len() - *pos));
            for _ in 0..n {
                items.push(read_value(buf, pos, depth + 1, keys)?);
            }
            Value::Array(items)
        }
        (_, Head::Map(n)) => Value::Map(read_map_body(buf, pos, n, depth, keys)?),
        (_, Head::Scalar { skip }) => {
            // Ext: a type byte, then the data.
            let data = take(buf, pos, skip)?;
            match data {
                [0, t @ ..] if t.len() == 8 => {
                    let secs = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
                    let nanos = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
                    Value::Float(EventTime::new(secs as i64, nanos).as_f64())
                }
                [_, data @ ..] => Value::Bin(Arc::from(data)),
                [] => return invalid("an ext value without its type"),
            }
        }
    };
    Ok(v)
}

fn read_map_body(
    buf: &[u8],
    pos: &mut usize,
    n: u64,
    depth: usize,
    keys: &mut KeyCache,
) -> Result<Map, DecodeError> {
    let mut map = Vec::with_capacity((n as usize).min(buf.len() - *pos));
    for _ in 0..n {
        let at = *pos;
        let key = match head(buf, pos)? {
            (
                Marker::FixStr(_)
                | Marker::Str8
                | Marker::Str16
                | Marker::Str32
                | Marker::Bin8
                | Marker::Bin16
                | Marker::Bin32,
                Head::Scalar { skip },
            ) => keys.key(take(buf, pos, skip)?)?,
            _ => {
                *pos = at;
                let other = read_value(buf, pos, depth + 1, keys)?;
                return invalid(format!("a map key that is not a string: {other:?}"));
            }
        };
        let v = read_value(buf, pos, depth + 1, keys)?;
        map.push((key, v));
    }
    Ok(map)
}

/// Reads an array header: the number of elements that follow.
pub fn read_array_len(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    match head(buf, pos)? {
        (_, Head::Array(n)) => Ok(n),
        _ => invalid("an array"),
    }
}

/// Whether the value at `pos` is an array (without consuming it).
pub fn peek_is_array(buf: &[u8], pos: usize) -> bool {
    buf.get(pos).is_some_and(|&b| {
        matches!(
            Marker::from_u8(b),
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32
        )
    })
}

/// Reads a map (a record body, metadata, options).
pub fn read_msgpack_map(buf: &[u8], pos: &mut usize) -> Result<Map, DecodeError> {
    read_msgpack_map_cached(buf, pos, &mut KeyCache::disabled())
}

/// [`read_msgpack_map`] sharing keys through `keys`.
pub fn read_msgpack_map_cached(
    buf: &[u8],
    pos: &mut usize,
    keys: &mut KeyCache,
) -> Result<Map, DecodeError> {
    match read_value(buf, pos, 0, keys)? {
        Value::Map(m) => Ok(m),
        other => invalid(format!("a map, found {}", kind(&other))),
    }
}

/// The name of a value's type, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bin(_) => "binary",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
    }
}

/// One record, `[[time, {metadata}], {body}]` (Fluent Bit v2) or `[time, {body}]`: a
/// Forward entry, and what chunk files hold. `keys` interns record keys per connection.
pub fn read_msgpack_record(
    buf: &[u8],
    pos: &mut usize,
    keys: &mut KeyCache,
) -> Result<Record, DecodeError> {
    if read_array_len(buf, pos)? != 2 {
        return invalid("an entry [time, record]");
    }
    let mut rec = Record::new(Default::default(), Map::new());
    if peek_is_array(buf, *pos) {
        if read_array_len(buf, pos)? != 2 {
            return invalid("an entry header [time, metadata]");
        }
        rec.time = read_event_time(buf, pos)?;
        rec.metadata = read_msgpack_map_cached(buf, pos, keys)?;
    } else {
        rec.time = read_event_time(buf, pos)?;
    }
    rec.body = read_msgpack_map_cached(buf, pos, keys)?;
    Ok(rec)
}

/// An event time as the Forward protocol allows it: EventTime (ext type 0, 8 bytes:
/// big-endian u32 seconds and nanoseconds), an integer of seconds, or a float.
pub fn read_event_time(buf: &[u8], pos: &mut usize) -> Result<EventTime, DecodeError> {
    let at = *pos;
    let m = Marker::from_u8(take(buf, pos, 1)?[0]);
    let ext_len = match m {
        Marker::FixExt8 => Some(8),
        Marker::Ext8 => Some(be(buf, pos, 1)?),
        _ => None,
    };
    if let Some(len) = ext_len {
        let ty = take(buf, pos, 1)?[0];
        if ty != 0 || len != 8 {
            return invalid(format!(
                "an EventTime (ext type 0, 8 bytes), found ext type {ty} of {len} bytes"
            ));
        }
        let secs = be(buf, pos, 4)? as i64;
        let nanos = (be(buf, pos, 4)? as u32).min(999_999_999);
        return Ok(EventTime::new(secs, nanos));
    }
    *pos = at;
    match read_value(buf, pos, MAX_DEPTH, &mut KeyCache::disabled())? {
        Value::UInt(u) => Ok(EventTime::new(u.min(i64::MAX as u64) as i64, 0)),
        Value::Int(i) => Ok(EventTime::new(i, 0)),
        Value::Float(f) if f.is_finite() => {
            let secs = f.floor();
            Ok(EventTime::new(
                secs as i64,
                (((f - secs) * 1e9).round() as u32).min(999_999_999),
            ))
        }
        other => invalid(format!("an event time, found {}", kind(&other))),
    }
}

/// Writes an EventTime (`d7 00`, seconds, nanoseconds).
pub fn write_event_time(out: &mut Vec<u8>, t: EventTime) {
    out.extend_from_slice(&[0xd7, 0x00]);
    out.extend_from_slice(&(t.secs as u32).to_be_bytes());
    out.extend_from_slice(&t.nanos.to_be_bytes());
}

/// Writes a map of string keys.
pub fn write_msgpack_map(out: &mut Vec<u8>, m: &Map) {
    write_map(out, m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Str;
    use std::sync::Arc;

    fn s(x: &str) -> Str {
        Str::from(x)
    }

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_msgpack_value(&mut out, v);
        out
    }

    /// A 3 MB frame read 1 KB at a time is measured once overall, not once per read.
    #[test]
    fn value_len_resumes_where_it_stopped() {
        let items: Vec<Value> = (0..300_000)
            .map(|i| Value::Str(Arc::from(format!("item{i:06}"))))
            .collect();
        let n_items = items.len() as u64;
        let frame = enc(&Value::Array(vec![
            Value::Str(Arc::from("tag")),
            Value::Array(items),
        ]));
        assert!(frame.len() > 3_000_000);
        let mut len = ValueLen::default();
        let mut reads = 0u64;
        let mut got = None;
        for end in (1024..frame.len()).step_by(1024).chain([frame.len()]) {
            reads += 1;
            if let Some(n) = len.advance(&frame[..end]).unwrap() {
                got = Some((n, end));
                break;
            }
        }
        assert_eq!(got, Some((frame.len(), frame.len())));
        // Every element once (1 outer array + tag + inner array + items), plus at most
        // one element cut short per read measured again.
        let elements = 3 + n_items;
        assert!(
            len.steps >= elements && len.steps <= elements + reads,
            "{} steps for {elements} elements in {reads} reads",
            len.steps
        );
        // The same value followed by the start of another: the first is found whole.
        let mut two = frame.clone();
        two.extend_from_slice(&[0x92, 0xa1]);
        assert_eq!(ValueLen::default().advance(&two), Ok(Some(frame.len())));
        assert_eq!(
            msgpack_value_len(&frame[..100]),
            Err(DecodeError::Incomplete)
        );
    }

    #[test]
    fn record_bytes() {
        let r = Record::new(
            EventTime::new(1587769732, 572266000),
            vec![(s("rand_value"), Value::UInt(12345))],
        );
        let mut out = Vec::new();
        write_msgpack_record(&mut out, &r);
        let mut want = vec![0x92, 0x92, 0xd7, 0x00];
        want.extend_from_slice(&1587769732u32.to_be_bytes()); // 5e a3 71 84
        want.extend_from_slice(&572266000u32.to_be_bytes()); // 22 1c 16 10
        want.push(0x80); // {}
        want.push(0x81); // {"rand_value": 12345}
        want.push(0xaa);
        want.extend_from_slice(b"rand_value");
        want.extend_from_slice(&[0xcd, 0x30, 0x39]);
        assert_eq!(out, want);
        assert_eq!(
            &out[..12],
            &[0x92, 0x92, 0xd7, 0x00, 0x5e, 0xa3, 0x71, 0x84, 0x22, 0x1c, 0x16, 0x10]
        );
    }

    #[test]
    fn record_with_metadata() {
        let mut r = Record::new(EventTime::new(1, 2), vec![]);
        r.metadata = vec![(s("k"), Value::Bool(true))];
        let mut out = Vec::new();
        write_msgpack_record(&mut out, &r);
        assert_eq!(
            out,
            [0x92, 0x92, 0xd7, 0x00, 0, 0, 0, 1, 0, 0, 0, 2, 0x81, 0xa1, b'k', 0xc3, 0x80]
        );
    }

    #[test]
    fn smallest_forms() {
        assert_eq!(enc(&Value::Nil), [0xc0]);
        assert_eq!(enc(&Value::Bool(false)), [0xc2]);
        assert_eq!(enc(&Value::Int(0)), [0x00]);
        assert_eq!(enc(&Value::Int(127)), [0x7f]);
        assert_eq!(enc(&Value::Int(128)), [0xcc, 0x80]);
        assert_eq!(enc(&Value::Int(-1)), [0xff]);
        assert_eq!(enc(&Value::Int(-32)), [0xe0]);
        assert_eq!(enc(&Value::Int(-33)), [0xd0, 0xdf]);
        assert_eq!(enc(&Value::Int(-129)), [0xd1, 0xff, 0x7f]);
        assert_eq!(enc(&Value::Int(70000)), [0xce, 0x00, 0x01, 0x11, 0x70]);
        assert_eq!(
            enc(&Value::Int(i64::MIN)),
            [0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            enc(&Value::UInt(u64::MAX)),
            [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(enc(&Value::UInt(65535)), [0xcd, 0xff, 0xff]);
        assert_eq!(
            enc(&Value::Float(0.5)),
            [0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(enc(&Value::Str(s(""))), [0xa0]);
        let long = "x".repeat(32);
        let mut want = vec![0xd9, 32];
        want.extend_from_slice(long.as_bytes());
        assert_eq!(enc(&Value::Str(Str::from(long.as_str()))), want);
        assert_eq!(
            enc(&Value::Bin(Arc::from(&b"\x01\x02"[..]))),
            [0xc4, 0x02, 0x01, 0x02]
        );
        assert_eq!(
            enc(&Value::Array(vec![Value::Int(1), Value::Nil])),
            [0x92, 0x01, 0xc0]
        );
        let arr16 = Value::Array(vec![Value::Nil; 16]);
        let mut want = vec![0xdc, 0x00, 0x10];
        want.extend_from_slice(&[0xc0; 16]);
        assert_eq!(enc(&arr16), want);
        assert_eq!(
            enc(&Value::Map(vec![(s("a"), Value::Map(vec![]))])),
            [0x81, 0xa1, b'a', 0x80]
        );
    }

    #[test]
    fn read_back_what_is_written() {
        let v = Value::Map(vec![
            (
                s("a"),
                Value::Array(vec![Value::Int(-33), Value::UInt(70000), Value::Nil]),
            ),
            (s("b"), Value::Float(0.5)),
            (s("c"), Value::Bin(Arc::from(&b"\x00\xff"[..]))),
            (s("d"), Value::Str(s(&"x".repeat(300)))),
            (s("e"), Value::Bool(true)),
        ]);
        let bytes = enc(&v);
        assert_eq!(msgpack_value_len(&bytes), Ok(bytes.len()));
        let mut pos = 0;
        // Integers come back in msgpack's form: non-negative ones are unsigned.
        let Value::Map(m) = read_msgpack_value(&bytes, &mut pos).unwrap() else {
            panic!()
        };
        assert_eq!(pos, bytes.len());
        assert_eq!(
            m[0].1,
            Value::Array(vec![Value::Int(-33), Value::UInt(70000), Value::Nil])
        );
        assert_eq!(
            &m[1..],
            &{
                let Value::Map(want) = &v else { panic!() };
                want[1..].to_vec()
            }[..]
        );
        for cut in 0..bytes.len() {
            assert_eq!(
                msgpack_value_len(&bytes[..cut]),
                Err(DecodeError::Incomplete),
                "{cut}"
            );
        }
    }

    #[test]
    fn hostile_lengths_and_nesting() {
        // A map32 declaring 4 billion pairs: incomplete, nothing allocated up front.
        assert_eq!(
            msgpack_value_len(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::Incomplete)
        );
        let deep = vec![0x91; MAX_DEPTH + 1];
        assert!(matches!(
            msgpack_value_len(&deep),
            Err(DecodeError::Invalid(w)) if w.contains("nested deeper")
        ));
        assert!(matches!(
            msgpack_value_len(&[0xc1]),
            Err(DecodeError::Invalid(_))
        ));
        // A map key that is not a string.
        let mut pos = 0;
        assert!(read_msgpack_map(&[0x81, 0x01, 0x02], &mut pos).is_err());
    }

    #[test]
    fn event_times_in_every_form() {
        let t = |b: &[u8]| read_event_time(b, &mut 0);
        let mut ext = Vec::new();
        write_event_time(&mut ext, EventTime::new(1_700_000_000, 5));
        assert_eq!(t(&ext), Ok(EventTime::new(1_700_000_000, 5)));
        assert_eq!(
            t(&[0xce, 0x65, 0x53, 0xf1, 0x00]),
            Ok(EventTime::new(1_700_000_000, 0))
        );
        let mut f = vec![0xcb];
        f.extend_from_slice(&2.25f64.to_bits().to_be_bytes());
        assert_eq!(t(&f), Ok(EventTime::new(2, 250_000_000)));
        assert!(
            t(&[0xd7, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
            "ext type 1"
        );
        assert!(t(&[0xa1, b'x']).is_err());
    }

    #[test]
    fn the_key_cache_shares_keys_up_to_its_size() {
        let mut keys = KeyCache::default();
        let map = enc(&Value::Map(vec![(s("k"), Value::Nil)]));
        let a = read_msgpack_map_cached(&map, &mut 0, &mut keys).unwrap();
        let b = read_msgpack_map_cached(&map, &mut 0, &mut keys).unwrap();
        assert!(Arc::ptr_eq(&a[0].0, &b[0].0));
        for i in 0..KeyCache::MAX + 10 {
            keys.key(format!("k{i}").as_bytes()).unwrap();
        }
        assert_eq!(keys.keys.len(), KeyCache::MAX);
    }
}
