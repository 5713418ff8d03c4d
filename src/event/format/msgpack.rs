//! MessagePack encoding of records in Fluent Bit's v2 event format,
//! `[[EventTime, {metadata}], {body}]`, as `flb_log_event_encoder` (`src/flb_log_event_encoder.c`)
//! produces it, with values packed like msgpack-c's `msgpack_pack_object`
//! (`lib/msgpack-c/src/objectc.c`): the smallest encoding of each integer, string, array
//! and map header, float64 for floats.

use rmp::encode;

use super::super::{Map, Record, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Str};
    use std::sync::Arc;

    fn s(x: &str) -> Str {
        Str::from(x)
    }

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_msgpack_value(&mut out, v);
        out
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
}
