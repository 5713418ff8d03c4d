//! MessagePack decoding into records: Fluent Bit's v2 event `[[time, {meta}], {body}]`
//! and the older `[time, {body}]`, time as EventTime (ext 0), integer or float. Used for
//! chunks read back from disk. Declared lengths are checked against the bytes present
//! before anything is allocated, so a hostile or truncated buffer is an error, never a
//! huge allocation or a panic.

use std::sync::Arc;

use rmp::Marker;

use super::super::{EventTime, Map, Record, Value};

/// Why bytes are not a record.
pub type DecodeError = String;

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(format!("truncated: {n} bytes declared, {} left", buf.len()));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn be(buf: &mut &[u8], n: usize) -> Result<u64, DecodeError> {
    Ok(take(buf, n)?
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | *b as u64))
}

/// At most this deep (arrays in maps in arrays ...).
const MAX_DEPTH: usize = 64;

/// Decodes one value from the front of `buf`.
pub fn read_value(buf: &mut &[u8]) -> Result<Value, DecodeError> {
    value(buf, 0)
}

fn value(buf: &mut &[u8], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err("nested too deep".into());
    }
    let marker = Marker::from_u8(*take(buf, 1)?.first().expect("took one byte"));
    let len = |buf: &mut &[u8], n: usize| be(buf, n).map(|l| l as usize);
    Ok(match marker {
        Marker::Null => Value::Nil,
        Marker::True => Value::Bool(true),
        Marker::False => Value::Bool(false),
        Marker::FixPos(n) => Value::UInt(n as u64),
        Marker::FixNeg(n) => Value::Int(n as i64),
        Marker::U8 => Value::UInt(be(buf, 1)?),
        Marker::U16 => Value::UInt(be(buf, 2)?),
        Marker::U32 => Value::UInt(be(buf, 4)?),
        Marker::U64 => Value::UInt(be(buf, 8)?),
        Marker::I8 => Value::Int(be(buf, 1)? as u8 as i8 as i64),
        Marker::I16 => Value::Int(be(buf, 2)? as u16 as i16 as i64),
        Marker::I32 => Value::Int(be(buf, 4)? as u32 as i32 as i64),
        Marker::I64 => Value::Int(be(buf, 8)? as i64),
        Marker::F32 => Value::Float(f32::from_bits(be(buf, 4)? as u32) as f64),
        Marker::F64 => Value::Float(f64::from_bits(be(buf, 8)?)),
        Marker::FixStr(n) => string(buf, n as usize)?,
        Marker::Str8 => {
            let n = len(buf, 1)?;
            string(buf, n)?
        }
        Marker::Str16 => {
            let n = len(buf, 2)?;
            string(buf, n)?
        }
        Marker::Str32 => {
            let n = len(buf, 4)?;
            string(buf, n)?
        }
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
            let n = len(
                buf,
                match marker {
                    Marker::Bin8 => 1,
                    Marker::Bin16 => 2,
                    _ => 4,
                },
            )?;
            Value::Bin(Arc::from(take(buf, n)?))
        }
        Marker::FixArray(n) => array(buf, n as usize, depth)?,
        Marker::Array16 => {
            let n = len(buf, 2)?;
            array(buf, n, depth)?
        }
        Marker::Array32 => {
            let n = len(buf, 4)?;
            array(buf, n, depth)?
        }
        Marker::FixMap(n) => Value::Map(map(buf, n as usize, depth)?),
        Marker::Map16 => {
            let n = len(buf, 2)?;
            Value::Map(map(buf, n, depth)?)
        }
        Marker::Map32 => {
            let n = len(buf, 4)?;
            Value::Map(map(buf, n, depth)?)
        }
        Marker::FixExt8 => {
            // An EventTime where a value is expected: keep it as a float of seconds.
            let _ty = take(buf, 1)?;
            let b = take(buf, 8)?;
            let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let nanos = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            Value::Float(secs as f64 + nanos as f64 / 1e9)
        }
        other => return Err(format!("unsupported msgpack marker {other:?}")),
    })
}

fn string(buf: &mut &[u8], n: usize) -> Result<Value, DecodeError> {
    let bytes = take(buf, n)?;
    Ok(match std::str::from_utf8(bytes) {
        Ok(s) => Value::Str(Arc::from(s)),
        Err(_) => Value::Bin(Arc::from(bytes)),
    })
}

fn array(buf: &mut &[u8], n: usize, depth: usize) -> Result<Value, DecodeError> {
    // Every element takes at least one byte: a larger count is a lie.
    if n > buf.len() {
        return Err(format!(
            "truncated: array of {n} declared, {} bytes left",
            buf.len()
        ));
    }
    (0..n)
        .map(|_| value(buf, depth + 1))
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

fn map(buf: &mut &[u8], n: usize, depth: usize) -> Result<Map, DecodeError> {
    if n.saturating_mul(2) > buf.len() {
        return Err(format!(
            "truncated: map of {n} declared, {} bytes left",
            buf.len()
        ));
    }
    let mut m = Map::with_capacity(n);
    for _ in 0..n {
        let k = match value(buf, depth + 1)? {
            Value::Str(s) => s,
            Value::Bin(b) => Arc::from(String::from_utf8_lossy(&b).as_ref()),
            other => Arc::from(format!("{other:?}").as_str()),
        };
        m.push((k, value(buf, depth + 1)?));
    }
    Ok(m)
}

fn time(v: &Value, raw: Option<(u32, u32)>) -> Result<EventTime, DecodeError> {
    if let Some((s, n)) = raw {
        return Ok(EventTime::new(s as i64, n));
    }
    match v {
        Value::UInt(s) => Ok(EventTime::new(*s as i64, 0)),
        Value::Int(s) => Ok(EventTime::new(*s, 0)),
        Value::Float(f) => Ok(EventTime::new(
            f.trunc() as i64,
            ((f.fract()) * 1e9).round() as u32,
        )),
        other => Err(format!("not an event time: {other:?}")),
    }
}

/// Reads an EventTime ext (fixext 8, type 0) if it is next in `buf`.
fn event_time(buf: &mut &[u8]) -> Option<(u32, u32)> {
    if buf.len() >= 10 && buf[0] == 0xd7 && buf[1] == 0x00 {
        let b = &buf[2..10];
        let t = (
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        );
        *buf = &buf[10..];
        Some(t)
    } else {
        None
    }
}

/// Decodes one record from the front of `buf`: `[[time, {meta}], {body}]` or
/// `[time, {body}]`.
pub fn read_record(buf: &mut &[u8]) -> Result<Record, DecodeError> {
    let Some(&first) = buf.first() else {
        return Err("empty".into());
    };
    if first != 0x92 {
        return Err(format!(
            "a record is a 2-element array, found byte {first:#04x}"
        ));
    }
    *buf = &buf[1..];
    let (t, metadata) = if buf.first() == Some(&0x92) {
        *buf = &buf[1..];
        let raw = event_time(buf);
        let tv = if raw.is_some() {
            Value::Nil
        } else {
            read_value(buf)?
        };
        let t = time(&tv, raw)?;
        match read_value(buf)? {
            Value::Map(m) => (t, m),
            other => return Err(format!("metadata is not a map: {other:?}")),
        }
    } else {
        let raw = event_time(buf);
        let tv = if raw.is_some() {
            Value::Nil
        } else {
            read_value(buf)?
        };
        (time(&tv, raw)?, Map::new())
    };
    match read_value(buf)? {
        Value::Map(body) => Ok(Record {
            time: t,
            metadata,
            body,
        }),
        other => Err(format!("body is not a map: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format::write_msgpack_record;

    #[test]
    fn round_trips_what_we_write() {
        let rec = Record {
            time: EventTime::new(1587769732, 572266000),
            metadata: vec![(Arc::from("m"), Value::Int(-3))],
            body: vec![
                (Arc::from("s"), Value::Str(Arc::from("é"))),
                (Arc::from("n"), Value::UInt(u64::MAX)),
                (Arc::from("f"), Value::Float(1.5)),
                (
                    Arc::from("a"),
                    Value::Array(vec![
                        Value::Nil,
                        Value::Bool(true),
                        Value::Bin(Arc::from(&b"\xff"[..])),
                    ]),
                ),
                (
                    Arc::from("nested"),
                    Value::Map(vec![(Arc::from("k"), Value::Str(Arc::from("v")))]),
                ),
            ],
        };
        let mut out = Vec::new();
        write_msgpack_record(&mut out, &rec);
        write_msgpack_record(&mut out, &rec);
        let mut buf = &out[..];
        assert_eq!(read_record(&mut buf).unwrap(), rec);
        assert_eq!(read_record(&mut buf).unwrap(), rec);
        assert!(buf.is_empty());
    }

    #[test]
    fn hostile_bytes_are_errors() {
        // A map declaring 2^32-1 entries with no bytes behind it: no allocation, an error.
        assert!(read_value(&mut &[0xdf, 0xff, 0xff, 0xff, 0xff][..]).is_err());
        assert!(read_value(&mut &[0xdb, 0x00, 0x00, 0xff, 0xff, b'a'][..]).is_err());
        assert!(read_value(&mut &[0xc1][..]).is_err());
        let deep = vec![0x91u8; 1000];
        assert!(read_value(&mut &deep[..]).is_err());
        let mut out = Vec::new();
        write_msgpack_record(
            &mut out,
            &Record::new(EventTime::new(1, 2), vec![(Arc::from("k"), Value::UInt(1))]),
        );
        for cut in 0..out.len() {
            assert!(read_record(&mut &out[..cut]).is_err(), "cut at {cut}");
        }
        // The older [time, {body}] form, integer time.
        let old = [0x92, 0x05, 0x81, 0xa1, b'k', 0x01];
        let r = read_record(&mut &old[..]).unwrap();
        assert_eq!((r.time, r.body.len()), (EventTime::new(5, 0), 1));
    }
}
