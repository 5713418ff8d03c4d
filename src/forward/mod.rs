//! The Fluentd Forward protocol v1, sans-IO: decoding the event frames a `forward`
//! input receives (Message, Forward, PackedForward and CompressedPackedForward modes),
//! encoding entries and options for the `forward` output, and the HELO/PING/PONG
//! handshake of `shared_key` and user authentication ([`auth`]).
//! Spec: fluent/fluentd wiki "Forward Protocol Specification v1".
//! Fluent Bit: plugins/in_forward/fw_prot.c, plugins/out_forward/forward_format.c.
//!
//! ```text
//! Message          [tag, time, record, option?]
//! Forward          [tag, [[time, record], ...], option?]
//! PackedForward    [tag, bin|str (concatenated msgpack entries), option?]
//! Compressed...    the same, gzip'd, with option {"compressed": "gzip"}
//! option           {"size": n, "chunk": id, "compressed": "gzip"}; ack {"ack": id}
//! ```
//! Times are EventTime (ext type 0), integers or floats; an entry may also be Fluent Bit
//! v2's `[[time, metadata], record]`.

pub mod auth;

use std::io::Read;
use std::sync::Arc;

use crate::event::format::{
    kind, peek_is_array, read_array_len, read_event_time, read_msgpack_map,
    read_msgpack_map_cached, read_msgpack_record, read_msgpack_value, write_event_time,
    write_msgpack_map, DecodeError, KeyCache,
};
use crate::event::{Map, Record, Value};

/// The events of one frame.
#[derive(Debug, PartialEq)]
pub struct Events {
    pub tag: String,
    pub records: Vec<Record>,
    /// The `chunk` option: the client wants `{"ack": chunk}` back.
    pub chunk: Option<Value>,
}

fn invalid<T>(why: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError::Invalid(why.into()))
}

fn need(r: Result<(), DecodeError>) -> Result<(), DecodeError> {
    // A frame is decoded only once complete, so running out of bytes inside it means
    // its parts disagree with its length.
    r.map_err(|e| match e {
        DecodeError::Incomplete => DecodeError::Invalid("truncated entry".into()),
        other => other,
    })
}

/// Entries back to back (PackedForward's payload).
fn read_packed(
    bytes: &[u8],
    out: &mut Vec<Record>,
    keys: &mut KeyCache,
) -> Result<(), DecodeError> {
    let mut pos = 0;
    while pos < bytes.len() {
        out.push(read_msgpack_record(bytes, &mut pos, keys)?);
    }
    Ok(())
}

/// Gunzips a CompressedPackedForward payload, refusing to grow past `max` bytes (a small
/// frame may decompress to gigabytes). Concatenated gzip members are allowed.
fn gunzip(bytes: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Invalid(format!("bad gzip payload: {e}")))?;
    if out.len() > max {
        return invalid(format!(
            "gzip payload inflates past {max} bytes (buffer_max_size)"
        ));
    }
    Ok(out)
}

fn option<'a>(opts: &'a Map, key: &str) -> Option<&'a Value> {
    opts.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
}

/// Decodes one complete event frame (its exact bytes). `max` bounds what a compressed
/// payload may inflate to; `keys` is the connection's cache of record keys.
pub fn decode_events(frame: &[u8], max: usize, keys: &mut KeyCache) -> Result<Events, DecodeError> {
    let mut pos = 0;
    let n = read_array_len(frame, &mut pos)?;
    if !(2..=4).contains(&n) {
        return invalid(format!("a frame [tag, ...] of 2 to 4 elements, not {n}"));
    }
    let tag = match read_msgpack_value(frame, &mut pos)? {
        Value::Str(s) => s.to_string(),
        other => return invalid(format!("a tag string, found {}", kind(&other))),
    };
    let mut records = Vec::new();
    let second = pos;
    let mut packed: Option<Arc<[u8]>> = None;
    let rest = if peek_is_array(frame, pos) {
        // Forward: an array of entries.
        let entries = read_array_len(frame, &mut pos)?;
        for _ in 0..entries {
            need(read_msgpack_record(frame, &mut pos, keys).map(|r| records.push(r)))?;
        }
        n - 2
    } else {
        match read_msgpack_value(frame, &mut pos)? {
            Value::Bin(b) => {
                packed = Some(b);
                n - 2
            }
            Value::Str(s) => {
                packed = Some(Arc::from(s.as_bytes()));
                n - 2
            }
            _ => {
                // Message: [tag, time, record, option?].
                pos = second;
                let time = read_event_time(frame, &mut pos)?;
                if n < 3 {
                    return invalid("a message [tag, time, record]");
                }
                records.push(Record::new(
                    time,
                    read_msgpack_map_cached(frame, &mut pos, keys)?,
                ));
                n - 3
            }
        }
    };
    let opts = match rest {
        0 => Map::new(),
        1 => read_msgpack_map(frame, &mut pos)?,
        _ => return invalid("at most one option map"),
    };
    if pos != frame.len() {
        return invalid("bytes after the frame");
    }
    if let Some(bytes) = packed {
        match option(&opts, "compressed") {
            None => need(read_packed(&bytes, &mut records, keys))?,
            Some(Value::Str(c)) if &**c == "gzip" => {
                need(read_packed(&gunzip(&bytes, max)?, &mut records, keys))?
            }
            Some(other) => return invalid(format!("unknown compression {other:?}")),
        }
    }
    Ok(Events {
        tag,
        records,
        chunk: option(&opts, "chunk").cloned(),
    })
}

/// `{"ack": chunk}`, the answer to a frame with a `chunk` option.
pub fn write_ack(out: &mut Vec<u8>, chunk: &Value) {
    write_msgpack_map(out, &vec![(Arc::from("ack"), chunk.clone())]);
}

/// The `chunk` id of an ack response, if `frame` is one.
pub fn read_ack(frame: &[u8]) -> Option<Value> {
    let mut pos = 0;
    let map = read_msgpack_map(frame, &mut pos).ok()?;
    option(&map, "ack").cloned()
}

/// How the output writes each entry's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// EventTime, ext type 0 (nanoseconds kept).
    EventTime,
    /// `time_as_integer`: whole seconds, for Fluentd v0.12.
    Integer,
}

/// Writes one entry: `[time, record]`, or `[[time, metadata], record]` with `metadata`.
pub fn write_entry(out: &mut Vec<u8>, rec: &Record, time: TimeFormat, metadata: bool) {
    out.push(0x92);
    if metadata {
        out.push(0x92);
    }
    match time {
        TimeFormat::EventTime => write_event_time(out, rec.time),
        TimeFormat::Integer => {
            let _ = rmp::encode::write_uint(out, rec.time.secs.max(0) as u64);
        }
    }
    if metadata {
        write_msgpack_map(out, &rec.metadata);
    }
    write_msgpack_map(out, &rec.body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;
    use std::io::Write;

    fn s(x: &str) -> Value {
        Value::Str(Arc::from(x))
    }

    fn rec(secs: i64, nanos: u32, k: &str, v: Value) -> Record {
        Record::new(EventTime::new(secs, nanos), vec![(Arc::from(k), v)])
    }

    fn entries(recs: &[Record], time: TimeFormat) -> Vec<u8> {
        let mut out = Vec::new();
        for r in recs {
            write_entry(&mut out, r, time, false);
        }
        out
    }

    #[test]
    fn message_mode_with_integer_float_and_event_time() {
        // ["app", 1700000000, {"a": 1}]
        let mut f = vec![0x93, 0xa3, b'a', b'p', b'p', 0xce];
        f.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        f.extend_from_slice(&[0x81, 0xa1, b'a', 0x01]);
        let e = decode_events(&f, 1 << 20, &mut KeyCache::default()).unwrap();
        assert_eq!(e.tag, "app");
        assert_eq!(e.records, [rec(1_700_000_000, 0, "a", Value::UInt(1))]);
        assert_eq!(e.chunk, None);
        // Float time, and an option map with a chunk.
        let mut f = vec![0x94, 0xa1, b't', 0xcb];
        f.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        f.extend_from_slice(&[0x80, 0x81, 0xa5]);
        f.extend_from_slice(b"chunk");
        f.extend_from_slice(&[0xa2, b'i', b'd']);
        let e = decode_events(&f, 1 << 20, &mut KeyCache::default()).unwrap();
        assert_eq!(e.records[0].time, EventTime::new(1, 500_000_000));
        assert_eq!(e.chunk, Some(s("id")));
    }

    #[test]
    fn forward_mode_with_fluent_bit_v2_entries() {
        let r = rec(5, 6, "k", s("v"));
        let mut f = vec![0x92, 0xa1, b't', 0x92];
        write_entry(&mut f, &r, TimeFormat::EventTime, false);
        let mut with_meta = r.clone();
        with_meta.metadata = vec![(Arc::from("m"), Value::Bool(true))];
        write_entry(&mut f, &with_meta, TimeFormat::EventTime, true);
        let e = decode_events(&f, 1 << 20, &mut KeyCache::default()).unwrap();
        assert_eq!(e.records, [r, with_meta]);
    }

    #[test]
    fn packed_and_compressed_packed_forward() {
        let recs = vec![rec(1, 0, "a", Value::Int(-1)), rec(2, 0, "b", Value::Nil)];
        let packed = entries(&recs, TimeFormat::Integer);
        let mut f = vec![0x92, 0xa1, b't', 0xc4, packed.len() as u8];
        f.extend_from_slice(&packed);
        assert_eq!(
            decode_events(&f, 1 << 20, &mut KeyCache::default())
                .unwrap()
                .records,
            recs
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&packed).unwrap();
        let gz = gz.finish().unwrap();
        let mut f = vec![0x93, 0xa1, b't', 0xc4, gz.len() as u8];
        f.extend_from_slice(&gz);
        f.extend_from_slice(&[0x81, 0xaa]);
        f.extend_from_slice(b"compressed");
        f.extend_from_slice(&[0xa4]);
        f.extend_from_slice(b"gzip");
        assert_eq!(
            decode_events(&f, 1 << 20, &mut KeyCache::default())
                .unwrap()
                .records,
            recs
        );
        // The same frame whose payload inflates past the limit.
        let e = decode_events(&f, packed.len() - 1, &mut KeyCache::default()).unwrap_err();
        assert!(matches!(e, DecodeError::Invalid(w) if w.contains("buffer_max_size")));
    }

    #[test]
    fn malformed_frames_are_invalid_not_panics() {
        let cases: &[&[u8]] = &[
            &[0x91, 0xa1, b't'],                // one element
            &[0x92, 0x01, 0x90],                // tag not a string
            &[0x92, 0xa1, b't', 0x91, 0x01],    // entry not an array
            &[0x92, 0xa1, b't', 0xc4, 1, 0x01], // packed garbage
            &[0x93, 0xa1, b't', 0x01, 0x01],    // record not a map
            &[0x92, 0xa1, b't', 0x90, 0xc0],    // trailing bytes
        ];
        for c in cases {
            assert!(
                matches!(
                    decode_events(c, 1 << 20, &mut KeyCache::default()),
                    Err(DecodeError::Invalid(_))
                ),
                "{c:x?}"
            );
        }
    }

    #[test]
    fn acks_round_trip() {
        let mut out = Vec::new();
        write_ack(&mut out, &s("abc"));
        assert_eq!(out, [0x81, 0xa3, b'a', b'c', b'k', 0xa3, b'a', b'b', b'c']);
        assert_eq!(read_ack(&out), Some(s("abc")));
        assert_eq!(read_ack(&[0x80]), None);
    }

    /// `Record::encoded_len` is the length of the event as written, for every size
    /// class of every msgpack type (the bytes Fluent Bit counts).
    #[test]
    fn encoded_len_is_the_written_length() {
        let mut values = vec![
            Value::Nil,
            Value::Bool(true),
            Value::Float(1.5),
            Value::Array(vec![]),
            Value::Map(vec![]),
        ];
        for i in [
            0i64,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i32::MIN as i64,
            i32::MIN as i64 - 1,
            i64::MIN,
        ] {
            values.push(Value::Int(i));
            if i >= 0 {
                values.push(Value::UInt(i as u64));
            }
        }
        values.push(Value::UInt(u64::MAX));
        for n in [0, 31, 32, 255, 256, 65535, 65536] {
            values.push(s(&"x".repeat(n)));
            values.push(Value::Bin(vec![0; n].into()));
            values.push(Value::Array(vec![Value::Nil; n.min(70000)]));
        }
        values.push(Value::Map(
            (0..20)
                .map(|i| (Arc::from(format!("k{i}")), Value::Int(i)))
                .collect(),
        ));
        for v in values {
            let mut r = rec(1_700_000_000, 5, "key", v.clone());
            r.metadata = vec![(Arc::from("m"), Value::Int(1))];
            let mut out = Vec::new();
            write_entry(&mut out, &r, TimeFormat::EventTime, true);
            assert_eq!(r.encoded_len(), out.len() as u64, "{v:?}");
        }
        // Fluent Bit 5.1.1 counts 28 bytes for dummy's {"message":"dummy"}.
        assert_eq!(rec(1, 0, "message", s("dummy")).encoded_len(), 28);
    }
}
