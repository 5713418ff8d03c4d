//! Byte-exact record formatters shared by the outputs (`stdout`, later `tcp`/`forward`).
//!
//! Fluent Bit counterparts:
//! * [`write_print_record`]: the default (`format msgpack`) line of `plugins/out_stdout/stdout.c`,
//!   which prints values with `msgpack_object_print` (`lib/msgpack-c/src/objectc.c`).
//! * [`write_json_record`] / [`write_json_chunk`]: `flb_pack_msgpack_to_json_format` and
//!   `msgpack2json` in `src/flb_pack.c`, strings through `flb_utils_write_str` (`src/flb_utils.c`).
//! * [`write_msgpack_record`]: the Fluent Bit v2 event encoding (`flb_log_event_encoder`),
//!   `[[EventTime, {metadata}], {body}]`.
//!
//! Every function appends to a caller-owned `Vec<u8>` and allocates nothing else, so an
//! output can format a whole flush into one reused buffer.

mod gelf;
mod json;
mod msgpack;
mod print;
mod prometheus;

pub use gelf::{write_gelf_record, GelfError, GelfFields};
pub use json::{
    iso8601, write_date, write_date_text, write_double, write_json_chunk, write_json_map,
    write_json_object, write_json_record, write_json_str, write_json_value, write_map_entries,
    write_str_body, DateFormat, JsonMode, JsonOptions,
};
pub use msgpack::{
    kind, msgpack_value_len, peek_is_array, read_array_len, read_event_time, read_msgpack_map,
    read_msgpack_map_cached, read_msgpack_record, read_msgpack_value, write_event_time,
    write_msgpack_map, write_msgpack_record, write_msgpack_value, DecodeError, KeyCache, ValueLen,
};
pub use print::{write_print_map, write_print_record, write_print_value};
pub use prometheus::{
    parse_prometheus, write_g, write_metrics_text, write_prometheus, PromOptions,
};

/// C's `snprintf(fmt, f)` of the platform's libc, the reference the number writers are
/// tested against.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn libc_format(fmt: &std::ffi::CStr, f: f64) -> String {
    use std::ffi::{c_char, c_int};
    extern "C" {
        fn snprintf(buf: *mut c_char, n: usize, fmt: *const c_char, ...) -> c_int;
    }
    let mut buf = vec![0u8; 400];
    // SAFETY: the buffer's length is passed; the format takes exactly one double.
    let n = unsafe { snprintf(buf.as_mut_ptr() as *mut c_char, buf.len(), fmt.as_ptr(), f) };
    buf.truncate(n as usize);
    String::from_utf8(buf).expect("printf writes ASCII for numbers")
}

/// Pseudo-random doubles for comparing number writers with libc: any bit pattern,
/// and decimals of a few digits.
#[cfg(test)]
pub(crate) fn test_doubles(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut vals = Vec::with_capacity(3 * n);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            vals.push(f);
        }
        vals.push((x % 100_000_000) as f64 / 1e7 * if x & 1 == 1 { -1.0 } else { 1.0 });
        vals.push((x % 10_000_000) as f64 / 2f64.powi((x % 30) as i32));
    }
    vals
}
