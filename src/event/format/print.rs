//! The `stdout` output's default (`format msgpack`) line, byte-compatible with
//! `cb_stdout_flush` in Fluent Bit's `plugins/out_stdout/stdout.c`, which prints values
//! with `msgpack_object_print` (`lib/msgpack-c/src/objectc.c`).

use std::io::Write as _;

use super::super::{Record, Value};
use super::json::write_padded;

/// One record as `stdout` prints it, newline included:
/// `[{index}] {tag}: [[{sec}.{nsec:09}, {metadata}], {body}]\n`.
///
/// As in Fluent Bit 5.1.1 (`printf("%"PRId64".%09lu, ", sec, nsec)`; older versions cast
/// the seconds to 32 bits). The index restarts at 0 with every flush; the caller counts.
pub fn write_print_record(out: &mut Vec<u8>, index: usize, tag: &str, rec: &Record) {
    out.push(b'[');
    out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
    out.extend_from_slice(b"] ");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b": [[");
    out.extend_from_slice(itoa::Buffer::new().format(rec.time.secs).as_bytes());
    out.push(b'.');
    write_padded(out, rec.time.nanos as u64, 9);
    out.extend_from_slice(b", ");
    write_print_map(out, &rec.metadata);
    out.extend_from_slice(b"], ");
    write_print_map(out, &rec.body);
    out.extend_from_slice(b"]\n");
}

/// `msgpack_object_print` for one value: strings `"..."` unescaped, maps `{k=>v, k2=>v2}`,
/// arrays `[a, b]`, `nil`, `true`/`false`, integers in decimal, floats as `%f`, binaries
/// `"..."` with `"` as `\"` and non-printable bytes as `\xNN`.
pub fn write_print_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        Value::Float(f) => write_c_f(out, *f),
        Value::Str(s) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        Value::Bin(b) => {
            out.push(b'"');
            write_bin(out, b);
            out.push(b'"');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_print_value(out, item);
            }
            out.push(b']');
        }
        Value::Map(m) => write_print_map(out, m),
    }
}

pub fn write_print_map(out: &mut Vec<u8>, m: &[(super::super::Str, Value)]) {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.push(b'"');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\"=>");
        write_print_value(out, v);
    }
    out.push(b'}');
}

/// `msgpack_object_bin_print`: `"` as `\"`, `isprint` bytes (C locale) as they are, the
/// rest as `\x%02x`.
fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &c in b {
        if c == b'"' {
            out.extend_from_slice(b"\\\"");
        } else if (0x20..0x7f).contains(&c) {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'\\', b'x', HEX[(c >> 4) as usize], HEX[(c & 0xf) as usize]]);
        }
    }
}

/// C's `%f` (glibc): six decimals, exact rounding; `nan`/`-nan`, `inf`/`-inf`.
pub(super) fn write_c_f(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(if f.is_sign_negative() {
            b"-nan"
        } else {
            b"nan"
        });
    } else if f.is_infinite() {
        out.extend_from_slice(if f < 0.0 { b"-inf" } else { b"inf" });
    } else {
        // `io::Write` for `Vec<u8>` formats straight into the buffer.
        let _ = write!(out, "{f:.6}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Map, Str};
    use std::sync::Arc;

    fn s(x: &str) -> Str {
        Str::from(x)
    }

    fn line(index: usize, tag: &str, r: &Record) -> String {
        let mut out = Vec::new();
        write_print_record(&mut out, index, tag, r);
        String::from_utf8(out).unwrap()
    }

    fn pv(v: &Value) -> String {
        let mut out = Vec::new();
        write_print_value(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    fn rec(secs: i64, nanos: u32, body: Map) -> Record {
        Record::new(EventTime::new(secs, nanos), body)
    }

    #[test]
    fn documented_lines() {
        let r = rec(
            1587769732,
            572266000,
            vec![(s("rand_value"), Value::UInt(12345))],
        );
        assert_eq!(
            line(0, "random.0", &r),
            "[0] random.0: [[1587769732.572266000, {}], {\"rand_value\"=>12345}]\n"
        );
        let r = rec(
            1795383319,
            29988923,
            vec![(s("rand_value"), Value::UInt(7221167263947537671))],
        );
        assert_eq!(
            line(0, "random.0", &r),
            "[0] random.0: [[1795383319.029988923, {}], {\"rand_value\"=>7221167263947537671}]\n"
        );
        let r = rec(
            1795383338,
            29920394,
            vec![(s("message"), Value::Str(s("dummy")))],
        );
        assert_eq!(
            line(12, "dummy.0", &r),
            "[12] dummy.0: [[1795383338.029920394, {}], {\"message\"=>\"dummy\"}]\n"
        );
    }

    #[test]
    fn time_edges() {
        assert_eq!(
            line(0, "t", &rec(0, 0, vec![])),
            "[0] t: [[0.000000000, {}], {}]\n"
        );
        assert_eq!(
            line(0, "t", &rec(5, 7, vec![])),
            "[0] t: [[5.000000007, {}], {}]\n"
        );
        // 64-bit seconds: no 2038 wrap.
        assert_eq!(
            line(0, "t", &rec(2_147_483_648, 1, vec![])),
            "[0] t: [[2147483648.000000001, {}], {}]\n"
        );
        assert_eq!(
            line(0, "t", &rec(-1, 0, vec![])),
            "[0] t: [[-1.000000000, {}], {}]\n"
        );
    }

    #[test]
    fn metadata_and_nested_values() {
        let mut r = rec(
            1,
            0,
            vec![
                (
                    s("a"),
                    Value::Array(vec![
                        Value::Int(1),
                        Value::Int(-2),
                        Value::Float(0.5),
                        Value::Nil,
                        Value::Bool(true),
                        Value::Bool(false),
                        Value::Map(vec![(s("b"), Value::Str(s("c")))]),
                    ]),
                ),
                (s("e"), Value::Map(vec![])),
                (s("f"), Value::Array(vec![])),
                (s("g"), Value::Float(3.0)),
                (s("h"), Value::Int(-9223372036854775808)),
                (s("i"), Value::UInt(18446744073709551615)),
                (s("a"), Value::Int(0)),
            ],
        );
        r.metadata = vec![(s("m"), Value::Str(s("x\"y\n")))];
        assert_eq!(
            line(3, "in.x", &r),
            "[3] in.x: [[1.000000000, {\"m\"=>\"x\"y\n\"}], {\"a\"=>[1, -2, 0.500000, nil, true, \
             false, {\"b\"=>\"c\"}], \"e\"=>{}, \"f\"=>[], \"g\"=>3.000000, \
             \"h\"=>-9223372036854775808, \"i\"=>18446744073709551615, \"a\"=>0}]\n"
        );
    }

    #[test]
    fn floats_like_printf() {
        let cases: &[(f64, &str)] = &[
            (0.5, "0.500000"),
            (3.0, "3.000000"),
            (-0.0, "-0.000000"),
            (0.0, "0.000000"),
            (1e-7, "0.000000"),
            (5e-7, "0.000000"),
            (6e-7, "0.000001"),
            (0.0000005, "0.000000"),
            (-1.5, "-1.500000"),
            (1e20, "100000000000000000000.000000"),
            (1587769732.572266, "1587769732.572266"),
            (f64::NAN, "nan"),
            (-f64::NAN, "-nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for &(f, want) in cases {
            assert_eq!(pv(&Value::Float(f)), want, "{f:e}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn floats_match_libc() {
        let c_f = |f: f64| crate::event::format::libc_format(c"%f", f);
        let mut vals = vec![0.0000005, 0.0000015, 0.0000025, 2.5e-6, 1.0000005, f64::MAX];
        vals.extend(crate::event::format::test_doubles(20_000));
        for f in vals {
            assert_eq!(pv(&Value::Float(f)), c_f(f), "{f:e}");
        }
    }

    #[test]
    fn strings_and_binaries() {
        // Strings are printed raw.
        assert_eq!(pv(&Value::Str(s("é \"q\" \\ \t"))), "\"é \"q\" \\ \t\"");
        assert_eq!(
            pv(&Value::Bin(Arc::from(&b"a\"b\x00\x7f\xff ~"[..]))),
            "\"a\\\"b\\x00\\x7f\\xff ~\""
        );
        assert_eq!(pv(&Value::Bin(Arc::from(&b""[..]))), "\"\"");
    }

    #[test]
    fn appends() {
        let mut out = b"x".to_vec();
        write_print_record(&mut out, 0, "t", &rec(1, 0, vec![]));
        write_print_record(&mut out, 1, "t", &rec(2, 0, vec![]));
        assert_eq!(
            out,
            b"x[0] t: [[1.000000000, {}], {}]\n[1] t: [[2.000000000, {}], {}]\n"
        );
    }
}
