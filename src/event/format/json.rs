//! JSON formatting of records, byte-compatible with Fluent Bit's
//! `flb_pack_msgpack_to_json_format` / `msgpack2json` (`src/flb_pack.c`) and its string
//! escaper `flb_utils_write_str` (`flb_utils_write_str_escaped` / `flb_utils_write_str_raw`
//! in `src/flb_utils.c`), as used by `stdout`'s `format json|json_lines|json_stream`.

use std::fmt::Write as _;

use super::super::{EventTime, Map, Record, Str, Value};

/// `json_date_format`: how the date key's value is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DateFormat {
    /// `secs + nanos/1e9` as a JSON number (`%.16g`, or `%.1f` when integral).
    #[default]
    Double,
    /// Unsigned integer seconds.
    Epoch,
    /// Unsigned integer milliseconds.
    EpochMs,
    /// `"%Y-%m-%dT%H:%M:%S.%06luZ"` (UTC, microseconds).
    Iso8601,
    /// `"%Y-%m-%d %H:%M:%S.%06lu"` (UTC, microseconds).
    JavaSqlTimestamp,
    /// `"%Y-%m-%dT%H:%M:%S.%09luZ"` (UTC, nanoseconds): the `kafka` output's
    /// `timestamp_format iso8601_ns`; not a `json_date_format` value.
    Iso8601Ns,
}

impl DateFormat {
    /// `flb_pack_to_json_date_type`: case-insensitive; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<DateFormat> {
        let s = s.as_bytes();
        let is = |name: &str| s.eq_ignore_ascii_case(name.as_bytes());
        if is("double") {
            Some(DateFormat::Double)
        } else if is("java_sql_timestamp") {
            Some(DateFormat::JavaSqlTimestamp)
        } else if is("iso8601") {
            Some(DateFormat::Iso8601)
        } else if is("epoch") {
            Some(DateFormat::Epoch)
        } else if is("epoch_ms") || is("epoch_millis") || is("epoch_milliseconds") {
            Some(DateFormat::EpochMs)
        } else {
            None
        }
    }
}

/// How a record becomes a JSON object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonOptions {
    /// `json_date_key`; `None` when disabled (`json_date_key false`).
    pub date_key: Option<Str>,
    /// `json_date_format`.
    pub date_format: DateFormat,
    /// The service's `json.escape_unicode`: non-ASCII as `\uXXXX` (true) or raw UTF-8.
    pub escape_unicode: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            date_key: Some(Str::from("date")),
            date_format: DateFormat::Double,
            escape_unicode: true,
        }
    }
}

/// `format` of a whole flush (`flb_pack_to_json_format_type`, minus `msgpack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonMode {
    /// `[{...},{...}]` then `\n`.
    Json,
    /// `{...}\n` per record.
    JsonLines,
    /// `{...}{...}` then `\n`.
    JsonStream,
}

impl JsonMode {
    /// Case-insensitive `json`, `json_lines`, `json_stream`; `None` otherwise (including
    /// `msgpack`, which is the print format, not a JSON mode).
    pub fn parse(s: &str) -> Option<JsonMode> {
        let s = s.as_bytes();
        if s.eq_ignore_ascii_case(b"json") {
            Some(JsonMode::Json)
        } else if s.eq_ignore_ascii_case(b"json_lines") {
            Some(JsonMode::JsonLines)
        } else if s.eq_ignore_ascii_case(b"json_stream") {
            Some(JsonMode::JsonStream)
        } else {
            None
        }
    }
}

/// The key Fluent Bit nests non-empty record metadata under.
const INTERNAL_KEY: &str = "__internal__";
const LOG_METADATA_KEY: &str = "log_metadata";

/// A whole flush as `stdout` writes it for `format json|json_lines|json_stream`,
/// including the trailing newline(s).
pub fn write_json_chunk(out: &mut Vec<u8>, records: &[Record], mode: JsonMode, opts: &JsonOptions) {
    match mode {
        JsonMode::Json => {
            out.push(b'[');
            for (i, rec) in records.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_record(out, rec, opts);
            }
            out.extend_from_slice(b"]\n");
        }
        JsonMode::JsonLines => {
            for rec in records {
                write_json_record(out, rec, opts);
                out.push(b'\n');
            }
        }
        JsonMode::JsonStream => {
            if records.is_empty() {
                return;
            }
            for rec in records {
                write_json_record(out, rec, opts);
            }
            out.push(b'\n');
        }
    }
}

/// One record as one JSON object (no newline): the date key first (unless disabled), then
/// `"__internal__":{"log_metadata":{...}}` when the metadata is non-empty, then the body.
/// As in Fluent Bit, when a key occurs more than once only its last occurrence is written,
/// so a body key equal to the date key replaces the date.
pub fn write_json_record(out: &mut Vec<u8>, rec: &Record, opts: &JsonOptions) {
    write_json_object(out, rec.time, &rec.metadata, &rec.body, opts)
}

/// [`write_json_record`] from its parts: outputs that send the body alone (the `kafka`
/// output's messages) pass empty `metadata`.
pub fn write_json_object(
    out: &mut Vec<u8>,
    time: EventTime,
    metadata: &Map,
    body: &Map,
    opts: &JsonOptions,
) {
    let esc = opts.escape_unicode;
    let has_meta = !metadata.is_empty();
    let mut first = true;
    out.push(b'{');

    if let Some(date_key) = &opts.date_key {
        let dup = (has_meta && &**date_key == INTERNAL_KEY) || map_has_key(body, date_key);
        if !dup {
            first = false;
            write_json_str(out, date_key.as_bytes(), esc);
            out.push(b':');
            write_date(out, time, opts.date_format);
        }
    }

    if has_meta && !map_has_key(body, INTERNAL_KEY) {
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(out, INTERNAL_KEY.as_bytes(), esc);
        out.extend_from_slice(b":{");
        write_json_str(out, LOG_METADATA_KEY.as_bytes(), esc);
        out.push(b':');
        write_json_map(out, metadata, esc);
        out.push(b'}');
    }

    write_map_entries(out, body, &mut first, esc);
    out.push(b'}');
}

/// `msgpack2json` for one value.
pub fn write_json_value(out: &mut Vec<u8>, v: &Value, escape_unicode: bool) {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        Value::Float(f) => write_double(out, *f),
        Value::Str(s) => write_json_str(out, s.as_bytes(), escape_unicode),
        Value::Bin(b) => write_json_str(out, b, escape_unicode),
        Value::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_value(out, item, escape_unicode);
            }
            out.push(b']');
        }
        Value::Map(m) => write_json_map(out, m, escape_unicode),
    }
}

/// `msgpack2json` for a map (the last of a repeated key wins).
pub fn write_json_map(out: &mut Vec<u8>, m: &Map, escape_unicode: bool) {
    out.push(b'{');
    let mut first = true;
    write_map_entries(out, m, &mut first, escape_unicode);
    out.push(b'}');
}

#[inline]
fn map_has_key(m: &Map, key: &str) -> bool {
    m.iter().any(|(k, _)| k.as_bytes() == key.as_bytes())
}

/// True when `m[i]`'s key occurs again after position `i`.
#[inline]
fn key_occurs_later(m: &Map, i: usize) -> bool {
    let key = m[i].0.as_bytes();
    m[i + 1..].iter().any(|(k, _)| k.as_bytes() == key)
}

/// Writes `"k":v` pairs separated by `,`, skipping every key that occurs again later in the
/// map (`key_exists_in_map` in `msgpack2json`: the last occurrence wins).
pub fn write_map_entries(out: &mut Vec<u8>, m: &Map, first: &mut bool, esc: bool) {
    let mut emit = |out: &mut Vec<u8>, k: &Str, v: &Value| {
        if !*first {
            out.push(b',');
        }
        *first = false;
        write_json_str(out, k.as_bytes(), esc);
        out.push(b':');
        write_json_value(out, v, esc);
    };
    if m.len() <= 16 {
        for (i, (k, v)) in m.iter().enumerate() {
            if !key_occurs_later(m, i) {
                emit(out, k, v);
            }
        }
    } else {
        // Linear for any size (a 200,000-key record took 32 s with a scan per key): the
        // position of each key's last occurrence, then one pass. SipHash: the keys come
        // from clients, which must not be able to make the table degrade.
        let mut last: std::collections::HashMap<&[u8], usize> =
            std::collections::HashMap::with_capacity(m.len());
        for (i, (k, _)) in m.iter().enumerate() {
            last.insert(k.as_bytes(), i);
        }
        for (i, (k, v)) in m.iter().enumerate() {
            if last.get(k.as_bytes()) == Some(&i) {
                emit(out, k, v);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------

pub fn write_date(out: &mut Vec<u8>, t: EventTime, fmt: DateFormat) {
    match fmt {
        DateFormat::Double => write_double(out, t.as_f64()),
        // `(long long unsigned) tv_sec`
        DateFormat::Epoch => {
            out.extend_from_slice(itoa::Buffer::new().format(t.secs as u64).as_bytes())
        }
        // `flb_time_to_millisec`: `(uint64_t) sec * 1000 + nsec / 1000000`
        DateFormat::EpochMs => {
            let ms = (t.secs as u64)
                .wrapping_mul(1000)
                .wrapping_add(t.nanos as u64 / 1_000_000);
            out.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes())
        }
        DateFormat::Iso8601 | DateFormat::Iso8601Ns | DateFormat::JavaSqlTimestamp => {
            out.push(b'"');
            write_date_text(out, t, fmt);
            out.push(b'"');
        }
    }
}

/// The text of a date written as a string (no quotes): `iso8601`, `iso8601_ns`,
/// `java_sql_timestamp`; nothing for the numeric formats.
pub fn write_date_text(out: &mut Vec<u8>, t: EventTime, fmt: DateFormat) {
    match fmt {
        DateFormat::Iso8601 => {
            write_utc_datetime(out, t, b'T');
            out.push(b'Z');
        }
        DateFormat::Iso8601Ns => {
            write_utc_seconds(out, t, b'T');
            out.push(b'.');
            write_padded(out, t.nanos as u64, 9);
            out.push(b'Z');
        }
        DateFormat::JavaSqlTimestamp => write_utc_datetime(out, t, b' '),
        DateFormat::Double | DateFormat::Epoch | DateFormat::EpochMs => {}
    }
}

/// `2020-04-24T23:08:52.572266Z`: UTC, microseconds, the `iso8601` date format.
pub fn iso8601(t: EventTime) -> String {
    let mut out = Vec::with_capacity(28);
    write_utc_datetime(&mut out, t, b'T');
    out.push(b'Z');
    String::from_utf8(out).expect("digits and separators are ASCII")
}

/// `gmtime_r` + `strftime("%Y-%m-%d?%H:%M:%S")` + `".%06" PRIu64` of `nsec / 1000`.
fn write_utc_datetime(out: &mut Vec<u8>, t: EventTime, sep: u8) {
    write_utc_seconds(out, t, sep);
    out.push(b'.');
    write_padded(out, (t.nanos / 1000) as u64, 6);
}

/// `gmtime_r` + `strftime("%Y-%m-%d?%H:%M:%S")`.
pub(super) fn write_utc_seconds(out: &mut Vec<u8>, t: EventTime, sep: u8) {
    let days = t.secs.div_euclid(86_400);
    let sod = t.secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    if y < 0 {
        out.push(b'-');
    }
    write_padded(out, y.unsigned_abs(), 4);
    out.push(b'-');
    write_padded(out, m as u64, 2);
    out.push(b'-');
    write_padded(out, d as u64, 2);
    out.push(sep);
    write_padded(out, (sod / 3600) as u64, 2);
    out.push(b':');
    write_padded(out, (sod / 60 % 60) as u64, 2);
    out.push(b':');
    write_padded(out, (sod % 60) as u64, 2);
}

/// Decimal `v` zero-padded to at least `width` digits (`%0*lu`).
#[inline]
pub(super) fn write_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v).as_bytes();
    for _ in s.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(s);
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic Gregorian
/// (year, month 1..=12, day 1..=31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------

/// A float as `msgpack2json` writes it: `%.1f` when `f == (double)(long long)f` (integral
/// and inside the `long long` range), otherwise `%.16g`.
///
/// Non-finite values: Fluent Bit writes `nan`/`inf` (invalid JSON) unless
/// `json.convert_nan_to_null` is set; we always write `null` so the output stays valid JSON.
pub fn write_double(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    // In range of i64 (out-of-range casts give INT64_MIN on x86, which never compares
    // equal except for -2^63 itself, which is in range).
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) && f.trunc() == f {
        let i = f as i64;
        if i == 0 && f.is_sign_negative() {
            out.extend_from_slice(b"-0.0");
        } else {
            out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            out.extend_from_slice(b".0");
        }
        return;
    }
    write_g16(out, f);
}

/// A small stack buffer for `core::fmt` output.
struct StackBuf {
    buf: [u8; 40],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        let end = self.len + b.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

/// C's `%.16g` for a finite, non-zero `f`: 16 significant digits correctly rounded
/// (round-half-even on the exact binary value, like glibc), trailing zeros removed,
/// exponent form when the decimal exponent is < -4 or >= 16.
fn write_g16(out: &mut Vec<u8>, f: f64) {
    let (digits, exp) = match g16_digits_fast(f) {
        Some(d) => d,
        None => match g16_digits_fmt(f) {
            Some(d) => d,
            None => {
                out.extend_from_slice(b"null");
                return;
            }
        },
    };
    let mut nd = 16;
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }

    if f.is_sign_negative() {
        out.push(b'-');
    }
    if !(-4..16).contains(&exp) {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..nd]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        write_padded(out, exp.unsigned_abs() as u64, 2);
    } else if exp >= 0 {
        let int_digits = exp as usize + 1;
        out.extend_from_slice(&digits[..int_digits]);
        if nd > int_digits {
            out.push(b'.');
            out.extend_from_slice(&digits[int_digits..nd]);
        }
    } else {
        out.extend_from_slice(b"0.");
        for _ in 0..(-exp - 1) {
            out.push(b'0');
        }
        out.extend_from_slice(&digits[..nd]);
    }
}

const POW5: [u64; 28] = {
    let mut t = [1u64; 28];
    let mut i = 1;
    while i < 28 {
        t[i] = t[i - 1] * 5;
        i += 1;
    }
    t
};

const TEN15: u64 = 1_000_000_000_000_000;
const TEN16: u64 = 10_000_000_000_000_000;

/// `round_half_even(m * 2^e2 * 10^k)` computed exactly in 128-bit integers, for `0 <= k < 28`.
#[inline]
fn scaled_round(m: u64, e2: i32, k: i32) -> Option<u64> {
    if !(0..28).contains(&k) {
        return None;
    }
    let n = m as u128 * POW5[k as usize] as u128; // < 2^116
    let shift = e2 + k; // value = n * 2^shift
    if shift >= 0 {
        if shift > 10 {
            return None;
        }
        return u64::try_from(n << shift).ok();
    }
    let s = (-shift) as u32;
    if s >= 127 {
        return None;
    }
    let q = n >> s;
    let r = n & ((1u128 << s) - 1);
    let half = 1u128 << (s - 1);
    let q = if r > half || (r == half && q & 1 == 1) {
        q + 1
    } else {
        q
    };
    u64::try_from(q).ok()
}

/// The 16 significant digits and the decimal exponent of `|f|` (as `%.15e` would print
/// them), exactly, for normal numbers from about 1e-12 to 1e16; `None` elsewhere.
#[inline]
fn g16_digits_fast(f: f64) -> Option<([u8; 16], i32)> {
    let bits = f.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 || biased == 0x7ff {
        return None; // zero, subnormal, non-finite
    }
    let m = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let e2 = biased - 1075; // |f| = m * 2^e2
    let log2 = biased - 1023; // floor(log2 |f|)
                              // floor(log2 * log10(2)): a lower bound of the decimal exponent, off by at most one.
    let e10 = (log2 * 78_913) >> 18;
    let mut k = 15 - e10;
    let mut r = scaled_round(m, e2, k)?;
    if r >= TEN16 {
        k -= 1;
        r = scaled_round(m, e2, k)?;
    }
    if r == TEN16 {
        // rounding carried into a new digit: 9.999...e(x) -> 1.000...e(x+1)
        r = TEN15;
        k -= 1;
    }
    if !(TEN15..TEN16).contains(&r) {
        return None;
    }
    let mut digits = [b'0'; 16];
    digits.copy_from_slice(itoa::Buffer::new().format(r).as_bytes());
    Some((digits, 15 - k))
}

/// The same from `core::fmt`'s exact `{:.15e}` (slower; any finite value).
fn g16_digits_fmt(f: f64) -> Option<([u8; 16], i32)> {
    let mut sb = StackBuf {
        buf: [0; 40],
        len: 0,
    };
    write!(sb, "{:.15e}", f.abs()).ok()?;
    // `d.ddddddddddddddde<exp>`
    let s = &sb.buf[..sb.len];
    if s.len() < 19 || s[1] != b'.' || s[17] != b'e' {
        return None;
    }
    let mut digits = [b'0'; 16];
    digits[0] = s[0];
    digits[1..16].copy_from_slice(&s[2..17]);
    let exp_bytes = &s[18..];
    let (eneg, eb) = match exp_bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, exp_bytes),
    };
    let mut exp: i32 = 0;
    for &c in eb {
        exp = exp * 10 + (c - b'0') as i32;
    }
    Some((digits, if eneg { -exp } else { exp }))
}

// ---------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------

/// Escape class of each ASCII byte (`json_escape_table` in `src/flb_utils.c`): 0 = copy,
/// `b'u'` = `\u00xx`, otherwise the character after the backslash.
const ESCAPES: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x7f] = b'u';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `flb_utf8_len`: `trailingBytesForUTF8[c] + 1` for a byte >= 0x80.
#[inline]
fn utf8_len(c: u8) -> usize {
    match c {
        0x00..=0xbf => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        0xf8..=0xfb => 5,
        0xfc..=0xff => 6,
    }
}

/// A string as `"..."`, escaped like `flb_utils_write_str`.
///
/// Fluent Bit escapes `"` `\` `\n` `\r` `\t` `\b` `\f` as two-character escapes and the
/// other control bytes and DEL as `\u00xx` (lowercase); `/` is not escaped. With
/// `escape_unicode` every valid UTF-8 sequence becomes `\uxxxx` (surrogate pairs above
/// U+FFFF); without it, valid UTF-8 is copied raw. Invalid input is handled exactly as the
/// x86-64 Fluent Bit build does (see [`write_str_body`]).
pub fn write_json_str(out: &mut Vec<u8>, s: &[u8], escape_unicode: bool) {
    out.push(b'"');
    write_str_body(out, s, escape_unicode);
    out.push(b'"');
}

/// Bytes that the byte-by-byte path would change (control, DEL, quote, backslash, >= 0x80).
#[inline]
fn needs_care(c: u8) -> bool {
    !(0x20..0x7f).contains(&c) || c == b'"' || c == b'\\'
}

/// The SIMD pre-scan's test (`flb_vector8_has_le(0x1F)`, `"`, `\`, high bit): DEL is not
/// in it, so a DEL inside a 16-byte chunk that is otherwise clean is copied raw.
#[inline]
fn chunk_is_clean(chunk: &[u8]) -> bool {
    !chunk.iter().fold(false, |acc, &c| {
        acc | !(0x20..0x80).contains(&c) | (c == b'"') | (c == b'\\')
    })
}

#[inline]
fn push_ascii_escaped(out: &mut Vec<u8>, c: u8) {
    match ESCAPES[c as usize] {
        0 => out.push(c),
        b'u' => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(c >> 4) as usize],
            HEX[(c & 0xf) as usize],
        ]),
        e => out.extend_from_slice(&[b'\\', e]),
    }
}

#[inline]
fn push_u4(out: &mut Vec<u8>, cp: u32) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[(cp >> 12 & 0xf) as usize],
        HEX[(cp >> 8 & 0xf) as usize],
        HEX[(cp >> 4 & 0xf) as usize],
        HEX[(cp & 0xf) as usize],
    ]);
}

/// Strict UTF-8 decoding (Hoehrmann's DFA, as `flb_utf8_decode`) of exactly `seq.len()`
/// bytes: `Ok(codepoint)`, or `Err(n)` where `n` is the index of the rejected byte.
#[inline]
fn decode_strict(seq: &[u8]) -> Result<u32, usize> {
    let c0 = seq[0];
    let (lo, hi, mut cp) = match c0 {
        0xc2..=0xdf => (0x80, 0xbf, (c0 & 0x1f) as u32),
        0xe0 => (0xa0, 0xbf, 0),
        0xe1..=0xec | 0xee..=0xef => (0x80, 0xbf, (c0 & 0x0f) as u32),
        0xed => (0x80, 0x9f, 0x0d),
        0xf0 => (0x90, 0xbf, 0),
        0xf1..=0xf3 => (0x80, 0xbf, (c0 & 0x07) as u32),
        0xf4 => (0x80, 0x8f, 4),
        _ => return Err(0),
    };
    let expect = utf8_len(c0);
    debug_assert_eq!(expect, seq.len());
    for (n, &c) in seq.iter().enumerate().skip(1) {
        let (l, h) = if n == 1 { (lo, hi) } else { (0x80, 0xbf) };
        if c < l || c > h {
            return Err(n);
        }
        cp = (cp << 6) | (c & 0x3f) as u32;
    }
    Ok(cp)
}

/// `flb_utf8_validate_char`: length of the valid sequence at `s[0]` (>= 0x80), 0 if invalid
/// or truncated.
#[inline]
fn validate_char(s: &[u8]) -> usize {
    let c = s[0];
    let len = match c {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return 0,
    };
    if s.len() < len {
        return 0;
    }
    let (lo, hi) = match c {
        0xe0 => (0xa0, 0xbf),
        0xed => (0x80, 0x9f),
        0xf0 => (0x90, 0xbf),
        0xf4 => (0x80, 0x8f),
        _ => (0x80, 0xbf),
    };
    if s[1] < lo || s[1] > hi {
        return 0;
    }
    if s[2..len].iter().all(|&b| b & 0xc0 == 0x80) {
        len
    } else {
        0
    }
}

/// The body of a JSON string (no quotes), a port of `flb_utils_write_str_escaped` /
/// `flb_utils_write_str_raw` as built for x86-64 with SSE2 (`FLB_HAVE_SIMD`, `char` signed):
///
/// * Clean 16-byte chunks are copied as they are, so a DEL (0x7f) is only escaped when it
///   falls in a chunk that also holds another special byte.
/// * Escaped mode, at a byte >= 0x80: the sequence length comes from the lead byte; a
///   sequence that runs past the end drops its lead byte; an invalid sequence maps each of
///   its bytes `b` to U+E000+`b`, written as raw UTF-8 (Fluent Bit's "private block"); a
///   valid one becomes `\uxxxx` (surrogate pair above U+FFFF).
/// * Raw mode: a valid sequence is copied; each byte that does not start one becomes U+FFFD
///   (raw `EF BF BD`).
///
/// A string with none of those bytes is copied in one go (the result is the same).
pub fn write_str_body(out: &mut Vec<u8>, s: &[u8], escape_unicode: bool) {
    const W: usize = 16;
    if !s
        .chunks(W)
        .any(|ch| ch.iter().fold(false, |acc, &c| acc | needs_care(c)))
    {
        out.extend_from_slice(s);
        return;
    }

    let len = s.len();
    let vlen = len & !(W - 1);
    let mut i = 0usize;
    let mut copypos = 0usize;
    loop {
        // Fluent Bit loads 16 bytes here even when fewer remain (reading past the string);
        // we treat such a short chunk as not clean.
        while i < vlen && i + W <= len && chunk_is_clean(&s[i..i + W]) {
            i += W;
        }
        if copypos < i {
            out.extend_from_slice(&s[copypos..i]);
        }

        // Byte by byte, for `W` iterations of `b` (which the invalid-UTF-8 path clobbers).
        let mut b = 0usize;
        'bytes: while b < W {
            if i >= len {
                return;
            }
            let c = s[i];
            if c < 0x80 {
                // Copy a run of plain bytes at once, staying inside the iteration budget.
                let end = len.min(i + (W - b));
                let run = s[i..end]
                    .iter()
                    .position(|&c| needs_care(c))
                    .unwrap_or(end - i);
                if run > 0 {
                    out.extend_from_slice(&s[i..i + run]);
                    i += run;
                    b += run;
                    continue 'bytes;
                }
                push_ascii_escaped(out, c);
                i += 1;
                b += 1;
            } else if escape_unicode {
                let l = utf8_len(c);
                if i + l > len {
                    // truncated: skip the lead byte, leave the byte loop
                    i += 1;
                    break 'bytes;
                }
                match decode_strict(&s[i..i + l]) {
                    Ok(cp) => {
                        if cp > 0xffff {
                            let v = cp - 0x10000;
                            push_u4(out, 0xd800 + (v >> 10));
                            push_u4(out, 0xdc00 + (v & 0x3ff));
                        } else {
                            push_u4(out, cp);
                        }
                        i += l;
                        b += 1;
                    }
                    Err(n) => {
                        let n = n.max(1);
                        for &x in &s[i..i + n] {
                            // U+E000 + x as UTF-8
                            out.extend_from_slice(&[0xee, 0x80 | (x >> 6), 0x80 | (x & 0x3f)]);
                        }
                        i += n;
                        b = n + 1;
                    }
                }
            } else {
                let l = validate_char(&s[i..]);
                if l == 0 {
                    out.extend_from_slice("\u{fffd}".as_bytes());
                    i += 1;
                } else {
                    out.extend_from_slice(&s[i..i + l]);
                    i += l;
                }
                b += 1;
            }
        }
        copypos = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn s(x: &str) -> Str {
        Str::from(x)
    }

    fn vs(x: &str) -> Value {
        Value::Str(s(x))
    }

    fn rec(secs: i64, nanos: u32, body: Map) -> Record {
        Record::new(EventTime::new(secs, nanos), body)
    }

    fn json(r: &Record, opts: &JsonOptions) -> String {
        let mut out = Vec::new();
        write_json_record(&mut out, r, opts);
        String::from_utf8(out).unwrap()
    }

    fn dbl(f: f64) -> String {
        let mut out = Vec::new();
        write_double(&mut out, f);
        String::from_utf8(out).unwrap()
    }

    fn jstr(b: &[u8], esc: bool) -> Vec<u8> {
        let mut out = Vec::new();
        write_json_str(&mut out, b, esc);
        out
    }

    fn opts(fmt: DateFormat) -> JsonOptions {
        JsonOptions {
            date_format: fmt,
            ..JsonOptions::default()
        }
    }

    #[test]
    fn date_format_parse() {
        assert_eq!(DateFormat::parse("double"), Some(DateFormat::Double));
        assert_eq!(DateFormat::parse("DOUBLE"), Some(DateFormat::Double));
        assert_eq!(DateFormat::parse("epoch"), Some(DateFormat::Epoch));
        assert_eq!(DateFormat::parse("epoch_ms"), Some(DateFormat::EpochMs));
        assert_eq!(DateFormat::parse("Epoch_Millis"), Some(DateFormat::EpochMs));
        assert_eq!(
            DateFormat::parse("epoch_milliseconds"),
            Some(DateFormat::EpochMs)
        );
        assert_eq!(DateFormat::parse("iso8601"), Some(DateFormat::Iso8601));
        assert_eq!(
            DateFormat::parse("Java_SQL_Timestamp"),
            Some(DateFormat::JavaSqlTimestamp)
        );
        assert_eq!(DateFormat::parse("epoch_s"), None);
        assert_eq!(DateFormat::parse(""), None);
        assert_eq!(JsonMode::parse("JSON"), Some(JsonMode::Json));
        assert_eq!(JsonMode::parse("json_lines"), Some(JsonMode::JsonLines));
        assert_eq!(JsonMode::parse("json_stream"), Some(JsonMode::JsonStream));
        assert_eq!(JsonMode::parse("msgpack"), None);
        let d = JsonOptions::default();
        assert_eq!(d.date_key.as_deref(), Some("date"));
        assert_eq!(d.date_format, DateFormat::Double);
        assert!(d.escape_unicode);
    }

    #[test]
    fn every_date_format() {
        let r = rec(
            1587769732,
            572266000,
            vec![(s("rand_value"), Value::UInt(12345))],
        );
        let cases = [
            (
                DateFormat::Double,
                r#"{"date":1587769732.572266,"rand_value":12345}"#,
            ),
            (
                DateFormat::Epoch,
                r#"{"date":1587769732,"rand_value":12345}"#,
            ),
            (
                DateFormat::EpochMs,
                r#"{"date":1587769732572,"rand_value":12345}"#,
            ),
            (
                DateFormat::Iso8601,
                r#"{"date":"2020-04-24T23:08:52.572266Z","rand_value":12345}"#,
            ),
            (
                DateFormat::JavaSqlTimestamp,
                r#"{"date":"2020-04-24 23:08:52.572266","rand_value":12345}"#,
            ),
        ];
        for (fmt, want) in cases {
            assert_eq!(json(&r, &opts(fmt)), want, "{fmt:?}");
        }
    }

    #[test]
    fn observed_outputs() {
        // `{"date":1795382559.029988,...}`: %.16g keeps 6 decimals of a 10-digit second.
        let r = rec(
            1795382559,
            29988000,
            vec![(s("rand_value"), Value::UInt(211527192927369349))],
        );
        assert_eq!(
            json(&r, &JsonOptions::default()),
            r#"{"date":1795382559.029988,"rand_value":211527192927369349}"#
        );
        let r = rec(1795382659, 29990000, vec![(s("message"), vs("dummy"))]);
        assert_eq!(
            json(&r, &JsonOptions::default()),
            r#"{"date":1795382659.02999,"message":"dummy"}"#
        );
        // Nanosecond time: rounded to 16 significant digits.
        let r = rec(1795383341, 29952394, vec![(s("message"), vs("dummy"))]);
        assert_eq!(
            json(&r, &JsonOptions::default()),
            r#"{"date":1795383341.029952,"message":"dummy"}"#
        );
        // Whole second: `%.1f`.
        let r = rec(1795382559, 0, vec![]);
        assert_eq!(
            json(&r, &JsonOptions::default()),
            r#"{"date":1795382559.0}"#
        );
    }

    #[test]
    fn dates_edge_cases() {
        let o = opts(DateFormat::Iso8601);
        assert_eq!(
            json(&rec(0, 0, vec![]), &o),
            r#"{"date":"1970-01-01T00:00:00.000000Z"}"#
        );
        assert_eq!(
            json(&rec(-1, 999_999_999, vec![]), &o),
            r#"{"date":"1969-12-31T23:59:59.999999Z"}"#
        );
        assert_eq!(
            json(&rec(951_782_400, 1_000, vec![]), &o), // leap day 2000
            r#"{"date":"2000-02-29T00:00:00.000001Z"}"#
        );
        assert_eq!(
            json(&rec(4_107_542_399, 0, vec![]), &o),
            r#"{"date":"2100-02-28T23:59:59.000000Z"}"#
        );
        assert_eq!(
            json(&rec(253_402_300_799, 0, vec![]), &o),
            r#"{"date":"9999-12-31T23:59:59.000000Z"}"#
        );
        assert_eq!(
            json(
                &rec(1_700_000_000, 123_456_789, vec![]),
                &opts(DateFormat::EpochMs)
            ),
            r#"{"date":1700000000123}"#
        );
        // civil_from_days against a day-by-day walk.
        let (mut y, mut m, mut d) = (1900i64, 1u32, 1u32);
        let mdays = |y: i64, m: u32| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for days in -25567..200_000i64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > mdays(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn date_key_none_and_renamed() {
        let r = rec(1, 500_000_000, vec![(s("a"), Value::Int(-1))]);
        let o = JsonOptions {
            date_key: None,
            ..JsonOptions::default()
        };
        assert_eq!(json(&r, &o), r#"{"a":-1}"#);
        assert_eq!(json(&rec(1, 0, vec![]), &o), "{}");
        let o = JsonOptions {
            date_key: Some(s("@timestamp")),
            ..JsonOptions::default()
        };
        assert_eq!(json(&r, &o), r#"{"@timestamp":1.5,"a":-1}"#);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        // A body key equal to the date key replaces the date.
        let r = rec(1, 0, vec![(s("x"), Value::Int(1)), (s("date"), vs("mine"))]);
        assert_eq!(
            json(&r, &JsonOptions::default()),
            r#"{"x":1,"date":"mine"}"#
        );
        // Duplicates inside the body: only the last occurrence, in its position.
        let r = rec(
            1,
            0,
            vec![
                (s("a"), Value::Int(1)),
                (s("b"), Value::Int(2)),
                (s("a"), Value::Int(3)),
            ],
        );
        assert_eq!(
            json(&r, &JsonOptions::default()),
            r#"{"date":1.0,"b":2,"a":3}"#
        );
        // Nested maps too.
        let v = Value::Map(vec![
            (s("k"), Value::Nil),
            (s("k"), Value::Bool(true)),
            (s("j"), Value::Bool(false)),
        ]);
        let mut out = Vec::new();
        write_json_value(&mut out, &v, true);
        assert_eq!(out, br#"{"k":true,"j":false}"#);
        // Large maps take the table path.
        let mut m: Map = (0..40)
            .map(|i| (Str::from(format!("k{i}")), Value::Int(i)))
            .collect();
        m.push((s("k7"), vs("last")));
        m.push((s("k39"), vs("end")));
        let mut out = Vec::new();
        write_json_value(&mut out, &Value::Map(m), true);
        let got = String::from_utf8(out).unwrap();
        let mut want = String::from("{");
        for i in (0..40).filter(|&i| i != 7 && i != 39) {
            want.push_str(&format!("\"k{i}\":{i},"));
        }
        want.push_str(r#""k7":"last","k39":"end"}"#);
        assert_eq!(got, want);
        // 200,000 keys, every tenth repeated at the end: one pass (a scan per key took
        // 32 s in a release build, far longer here).
        let n = 200_000;
        let mut m: Map = (0..n)
            .map(|i| (Str::from(format!("k{i}")), Value::Int(i)))
            .collect();
        m.extend(
            (0..n)
                .step_by(10)
                .map(|i| (Str::from(format!("k{i}")), Value::Nil)),
        );
        let mut out = Vec::new();
        write_json_value(&mut out, &Value::Map(m), true);
        let got: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out).unwrap();
        assert_eq!(got.len(), n as usize);
        assert_eq!(got["k10"], serde_json::Value::Null);
        assert_eq!(got["k11"], 11);
        let keys: Vec<&String> = got.keys().collect();
        assert_eq!((keys[0], keys[1]), (&"k1".to_string(), &"k2".to_string()));
    }

    #[test]
    fn metadata_goes_under_internal() {
        let mut r = rec(1, 0, vec![(s("msg"), vs("hi"))]);
        assert_eq!(
            json(&r, &JsonOptions::default()),
            r#"{"date":1.0,"msg":"hi"}"#
        );
        r.metadata = vec![(s("otel"), Value::UInt(1))];
        assert_eq!(
            json(&r, &JsonOptions::default()),
            r#"{"date":1.0,"__internal__":{"log_metadata":{"otel":1}},"msg":"hi"}"#
        );
    }

    #[test]
    fn values() {
        let v = Value::Array(vec![
            Value::Nil,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(-9223372036854775808),
            Value::UInt(18446744073709551615),
            Value::Float(0.5),
            Value::Float(3.0),
            Value::Array(vec![]),
            Value::Map(vec![]),
            Value::Bin(Arc::from(&b"ab"[..])),
            Value::Map(vec![(
                s("a"),
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
            )]),
        ]);
        let mut out = Vec::new();
        write_json_value(&mut out, &v, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[null,true,false,-9223372036854775808,18446744073709551615,0.5,3.0,[],{},"ab",{"a":[1,2]}]"#
        );
    }

    #[test]
    fn double_format() {
        let cases: &[(f64, &str)] = &[
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e16, "10000000000000000.0"),
            (1.5e16, "15000000000000000.0"),
            (123456789012345678.0, "123456789012345680.0"),
            (9_223_372_036_854_775_808.0, "9.223372036854776e+18"),
            (-9_223_372_036_854_775_808.0, "-9223372036854775808.0"),
            (1e20, "1e+20"),
            (1.5e20, "1.5e+20"),
            (1e300, "1e+300"),
            (-0.5, "-0.5"),
            (3.0, "3.0"),
            (-3.0, "-3.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0 / 3.0, "0.6666666666666666"),
            (123.456, "123.456"),
            (1234567890123.5, "1234567890123.5"),
            (1234567890123456.5, "1234567890123456"),
            (1125899906842624.5, "1125899906842624"),
            (1125899906842625.5, "1125899906842626"),
            (0.1 + 0.2, "0.3"),
            (1e15 + 0.3, "1000000000000000"),
            (5e-324, "4.940656458412465e-324"),
            (f64::MAX, "1.797693134862316e+308"),
            (f64::MIN_POSITIVE, "2.225073858507201e-308"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
            (f64::NEG_INFINITY, "null"),
        ];
        for &(f, want) in cases {
            assert_eq!(dbl(f), want, "{f:e}");
        }
    }

    #[cfg(target_os = "linux")]
    mod libc_check {
        use std::ffi::{c_char, c_int};
        extern "C" {
            fn snprintf(buf: *mut c_char, n: usize, fmt: *const c_char, ...) -> c_int;
        }

        /// C's `printf(fmt, f)` for a format taking one double.
        pub fn c_fmt(fmt: &str, f: f64) -> String {
            let mut buf = vec![0u8; 512];
            let fmt = std::ffi::CString::new(fmt).unwrap();
            let n =
                unsafe { snprintf(buf.as_mut_ptr() as *mut c_char, buf.len(), fmt.as_ptr(), f) };
            buf.truncate(n as usize);
            String::from_utf8(buf).unwrap()
        }
    }

    /// The C rule: `%.1f` when `f == (double)(long long)f`, else `%.16g`.
    #[cfg(target_os = "linux")]
    fn c_double(f: f64) -> String {
        let in_range = (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f);
        if in_range && f.trunc() == f {
            libc_check::c_fmt("%.1f", f)
        } else {
            libc_check::c_fmt("%.16g", f)
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn double_matches_libc() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut vals: Vec<f64> = vec![
            0.5,
            0.25,
            0.125,
            2.5,
            1e-4,
            9.99999999999999e-5,
            0.00009999999999999999,
            1e15,
            f64::from_bits(1e16f64.to_bits() - 1),
            f64::from_bits(1e15f64.to_bits() - 1),
            1e16 + 2.0,
            4503599627370496.5,
            1125899906842624.5,
            0.30000000000000004,
            1e-310,
            12345.678,
        ];
        for _ in 0..50_000 {
            let bits = next();
            let f = f64::from_bits(bits);
            if f.is_finite() {
                vals.push(f);
            }
            // timestamps with nanoseconds
            let secs = (next() % 4_000_000_000) as f64;
            let nanos = (next() % 1_000_000_000) as f64;
            vals.push(secs + nanos / 1e9);
            // decimal-ish values around each magnitude
            let e = (next() % 40) as i32 - 20;
            vals.push((next() % 100_000) as f64 * 10f64.powi(e));
        }
        for f in vals {
            assert_eq!(dbl(f), c_double(f), "{f:e} bits {:#x}", f.to_bits());
        }
    }

    #[test]
    fn g16_fast_path_matches_fmt() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut checked = 0;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = match i % 3 {
                0 => f64::from_bits(x),
                1 => (x % 4_000_000_000) as f64 + (x >> 34) as f64 / 1e9 % 1.0,
                _ => (x % 1_000_000_007) as f64 * 10f64.powi((x >> 40) as i32 % 30 - 20),
            };
            if !f.is_finite() || f == 0.0 {
                continue;
            }
            if let Some(fast) = g16_digits_fast(f) {
                assert_eq!(Some(fast), g16_digits_fmt(f), "{f:e}");
                checked += 1;
            }
        }
        assert!(checked > 100_000, "{checked}");
        // carries and exact ties
        for f in [
            f64::from_bits(1e-4f64.to_bits() - 1),
            f64::from_bits(1e-3f64.to_bits() - 1),
            f64::from_bits(1e-12f64.to_bits() - 1),
            f64::from_bits(0.5f64.to_bits() - 1),
            9999999999999999.0,
            99999999999999.99,
            1125899906842624.5,
            1125899906842625.5,
            4503599627370495.5,
            1e-12,
            9.99e-13,
            1e15,
        ] {
            if let Some(fast) = g16_digits_fast(f) {
                assert_eq!(Some(fast), g16_digits_fmt(f), "{f:e}");
            }
        }
    }

    #[test]
    fn string_escapes() {
        let esc = |b: &[u8]| String::from_utf8(jstr(b, true)).unwrap();
        assert_eq!(esc(b""), r#""""#);
        assert_eq!(esc(b"plain"), r#""plain""#);
        assert_eq!(esc(b"a\"b\\c/d"), r#""a\"b\\c/d""#);
        assert_eq!(esc(b"\n\r\t\x08\x0c"), r#""\n\r\t\b\f""#);
        assert_eq!(
            esc(b"\x00\x01\x0b\x1b\x1f"),
            r#""\u0000\u0001\u000b\u001b\u001f""#
        );
        assert_eq!(esc(b"x\x7f"), r#""x\u007f""#);
        assert_eq!(esc("é".as_bytes()), r#""\u00e9""#);
        assert_eq!(
            esc("caf\u{e9} \u{20ac}".as_bytes()),
            r#""caf\u00e9 \u20ac""#
        );
        assert_eq!(esc("😀".as_bytes()), r#""\ud83d\ude00""#);
        assert_eq!(esc("\u{10ffff}".as_bytes()), r#""\udbff\udfff""#);
        // Raw mode: valid UTF-8 as is, ASCII escapes the same.
        let raw = |b: &[u8]| jstr(b, false);
        assert_eq!(raw("é😀\n\"".as_bytes()), "\"é😀\\n\\\"\"".as_bytes());
        assert_eq!(raw(b"\x1b[0m\x7f"), br#""\u001b[0m\u007f""#);
    }

    #[test]
    fn long_strings_and_del_chunks() {
        // A 16-byte chunk with no special byte is copied as is, DEL included (SSE2 pre-scan).
        let mut s = b"0123456789abcde\x7f".to_vec(); // clean chunk
        s.extend_from_slice(b"\"23456789abcde\x7f"); // dirty chunk: DEL escaped
        s.extend_from_slice(b"tail\x7f"); // short tail: byte by byte
        assert_eq!(
            jstr(&s, true),
            b"\"0123456789abcde\x7f\\\"23456789abcde\\u007ftail\\u007f\"".to_vec()
        );
        // Long plain and long mixed strings.
        let long = "x".repeat(1000);
        assert_eq!(
            jstr(long.as_bytes(), true),
            format!("\"{long}\"").into_bytes()
        );
        let mixed = format!("{}é{}\n{}", "a".repeat(33), "b".repeat(20), "c".repeat(40));
        assert_eq!(
            String::from_utf8(jstr(mixed.as_bytes(), true)).unwrap(),
            format!(
                "\"{}\\u00e9{}\\n{}\"",
                "a".repeat(33),
                "b".repeat(20),
                "c".repeat(40)
            )
        );
        // Escaped output is what serde_json reads back.
        let tricky = format!("{}\u{1}\u{7f}é😀\"\\/{}", "q".repeat(17), "z".repeat(15));
        for esc in [true, false] {
            let out = jstr(tricky.as_bytes(), esc);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, tricky);
        }
    }

    #[test]
    fn invalid_utf8() {
        // Escaped mode (x86-64 Fluent Bit): each byte of an invalid sequence becomes
        // U+E000+byte as raw UTF-8; a sequence cut by the end of the string drops its lead.
        assert_eq!(jstr(b"\xffabcdef", true), "\"\u{e0ff}abcdef\"".as_bytes());
        // 0xff claims a 6-byte sequence: in a short string it is cut, so dropped.
        assert_eq!(jstr(b"a\xffb", true), b"\"ab\"".to_vec());
        assert_eq!(jstr(b"\x80", true), "\"\u{e080}\"".as_bytes());
        assert_eq!(jstr(b"\xc3(", true), "\"\u{e0c3}(\"".as_bytes());
        assert_eq!(
            jstr(b"\xe2\x82(x", true),
            "\"\u{e0e2}\u{e082}(x\"".as_bytes()
        );
        assert_eq!(jstr(b"\xc0\xafz", true), "\"\u{e0c0}\u{e0af}z\"".as_bytes());
        assert_eq!(
            jstr(b"\xed\xa0\x80", true),
            "\"\u{e0ed}\u{e0a0}\u{e080}\"".as_bytes()
        );
        assert_eq!(jstr(b"ab\xc3", true), b"\"ab\"".to_vec());
        assert_eq!(jstr(b"ab\xe2\x82", true), "\"ab\u{e082}\"".as_bytes());
        assert_eq!(jstr(b"\xc3\xa9\xff", true), b"\"\\u00e9\"".to_vec());
        // Raw mode: U+FFFD (raw) per byte that does not start a valid sequence.
        assert_eq!(jstr(b"a\xffb", false), "\"a\u{fffd}b\"".as_bytes());
        assert_eq!(
            jstr(b"\xe2\x82(", false),
            "\"\u{fffd}\u{fffd}(\"".as_bytes()
        );
        assert_eq!(jstr(b"ok\xc3", false), "\"ok\u{fffd}\"".as_bytes());
        // Bin values go through the same writer.
        let mut out = Vec::new();
        write_json_value(
            &mut out,
            &Value::Bin(Arc::from(&b"\x01\xfe123456"[..])),
            true,
        );
        assert_eq!(out, "\"\\u0001\u{e0fe}123456\"".as_bytes());
    }

    #[test]
    fn chunk_modes() {
        let recs = vec![
            rec(1, 0, vec![(s("message"), vs("dummy"))]),
            rec(2, 500_000_000, vec![(s("message"), vs("two"))]),
        ];
        let o = JsonOptions::default();
        let run = |mode| {
            let mut out = Vec::new();
            write_json_chunk(&mut out, &recs, mode, &o);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            run(JsonMode::Json),
            "[{\"date\":1.0,\"message\":\"dummy\"},{\"date\":2.5,\"message\":\"two\"}]\n"
        );
        assert_eq!(
            run(JsonMode::JsonLines),
            "{\"date\":1.0,\"message\":\"dummy\"}\n{\"date\":2.5,\"message\":\"two\"}\n"
        );
        assert_eq!(
            run(JsonMode::JsonStream),
            "{\"date\":1.0,\"message\":\"dummy\"}{\"date\":2.5,\"message\":\"two\"}\n"
        );
        let mut out = Vec::new();
        write_json_chunk(&mut out, &recs[..1], JsonMode::Json, &o);
        assert_eq!(out, b"[{\"date\":1.0,\"message\":\"dummy\"}]\n");
        for (mode, want) in [
            (JsonMode::Json, "[]\n"),
            (JsonMode::JsonLines, ""),
            (JsonMode::JsonStream, ""),
        ] {
            let mut out = Vec::new();
            write_json_chunk(&mut out, &[], mode, &o);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn output_is_valid_json() {
        let r = rec(
            1795383319,
            29988923,
            vec![
                (s("a\"b"), vs("line\nnext\u{1}é😀")),
                (s("n"), Value::Float(-1.25e-7)),
                (
                    s("arr"),
                    Value::Array(vec![Value::Nil, Value::Float(1e300)]),
                ),
            ],
        );
        for esc in [true, false] {
            let o = JsonOptions {
                escape_unicode: esc,
                ..JsonOptions::default()
            };
            let text = json(&r, &o);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["a\"b"], "line\nnext\u{1}é😀");
            assert_eq!(v["n"], -1.25e-7);
            assert_eq!(v["date"], 1795383319.029989);
        }
    }

    #[test]
    fn appends_without_clearing() {
        let mut out = b"prefix".to_vec();
        write_json_record(&mut out, &rec(1, 0, vec![]), &JsonOptions::default());
        assert_eq!(out, b"prefix{\"date\":1.0}");
    }
}
