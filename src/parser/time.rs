//! Record times: `time_format` read as Fluent Bit reads it, quirks included.
//!
//! Fluent Bit parses times with its own `strptime` (a BSD one, src/flb_strptime.c)
//! plus three additions made around it in src/flb_parser.c (`flb_parser_time_lookup`):
//! - `%L` (fractional seconds): the format is cut at its first `%L`; up to 9 characters
//!   after the first part are read as the digits of `0.<digits>` (C `strtod`), then the
//!   rest of the format is parsed on what follows;
//! - a format without a year (`%Y`, `%y`, or `%s`) gets `"%Y "` in front and the text
//!   the current year (UTC, or local with `time_system_timezone`, or `time_zone`'s), and
//!   the day and month default to today's;
//! - the zone: `%z`/`%Z` (or a literal `Z` after `%S`/`%L`) give the offset, otherwise
//!   `time_offset` does; `time_system_timezone` converts with `mktime` (and ignores any
//!   parsed offset, as Fluent Bit does); `time_zone` converts with an IANA zone.
//!
//! Like `strptime`, the text may go on after the format ends (`2020-01-01 junk` matches
//! `%Y-%m-%d`). With `time_strict off`, a text that stops matching half way still
//! gives a time: the fields read so far, the others zero (Fluent Bit's behaviour).

use std::ffi::{c_char, c_long};

use crate::event::EventTime;

/// The broken-down time `strptime` fills (C's `struct tm` plus `tm_gmtoff`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tm {
    pub sec: i32,
    pub min: i32,
    pub hour: i32,
    pub mday: i32,
    /// 0-11
    pub mon: i32,
    /// years since 1900
    pub year: i32,
    pub wday: i32,
    pub yday: i32,
    pub isdst: i32,
    /// seconds east of UTC
    pub gmtoff: i64,
}

const DAY: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const ABDAY: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MON: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const ABMON: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

const HOUR: i64 = 3600;

/// `%Z` names Fluent Bit knows, tried in this order (a name matches when the character
/// after it is not alphanumeric): (name, seconds east of UTC, is DST).
const ZONE_NAMES: &[(&str, i64, i32)] = &[
    ("GMT", 0, 0),
    ("UTC", 0, 0),
    ("Z", 0, 0),
    ("UT", 0, 0),
    ("EST", -5 * HOUR, 0),
    ("EDT", -4 * HOUR, 1),
    ("CST", -6 * HOUR, 0),
    ("CDT", -5 * HOUR, 1),
    ("MST", -7 * HOUR, 0),
    ("MDT", -6 * HOUR, 1),
    ("PST", -8 * HOUR, 0),
    ("PDT", -7 * HOUR, 1),
    ("AKST", -9 * HOUR, 0),
    ("AKDT", -8 * HOUR, 1),
    ("HST", -10 * HOUR, 0),
    ("HADT", -9 * HOUR, 1),
    ("AST", -4 * HOUR, 0),
    ("ADT", -3 * HOUR, 1),
    ("NST", -(7 * HOUR) / 2, 0),
    ("NDT", -(5 * HOUR) / 2, 1),
    ("WET", 0, 0),
    ("WEST", HOUR, 1),
    ("CET", HOUR, 0),
    ("CEST", 2 * HOUR, 1),
    ("EET", 2 * HOUR, 0),
    ("EEST", 3 * HOUR, 1),
    ("MSK", 3 * HOUR, 0),
    ("ART", -3 * HOUR, 0),
    ("BRT", -3 * HOUR, 0),
    ("BRST", -2 * HOUR, 1),
    ("CLT", -4 * HOUR, 0),
    ("CLST", -3 * HOUR, 1),
    ("AEST", 10 * HOUR, 0),
    ("AEDT", 11 * HOUR, 1),
    ("ACST", (19 * HOUR) / 2, 0),
    ("ACDT", (21 * HOUR) / 2, 1),
    ("AWST", 8 * HOUR, 0),
    ("NZST", 12 * HOUR, 0),
    ("NZDT", 13 * HOUR, 1),
    ("JST", 9 * HOUR, 0),
    ("KST", 9 * HOUR, 0),
    ("SGT", 8 * HOUR, 0),
    ("IST", (11 * HOUR) / 2, 0),
    ("GST", 4 * HOUR, 0),
    ("ICT", 7 * HOUR, 0),
    ("WIB", 7 * HOUR, 0),
    ("WITA", 8 * HOUR, 0),
    ("WIT", 9 * HOUR, 0),
    ("MYT", 8 * HOUR, 0),
    ("BDT", 6 * HOUR, 0),
    ("NPT", (23 * HOUR) / 4, 0),
    ("WAT", HOUR, 0),
    ("CAT", 2 * HOUR, 0),
    ("EAT", 3 * HOUR, 0),
    ("SAST", 2 * HOUR, 0),
    // Military zones (J, the observer's local time, is not one).
    ("A", HOUR, 0),
    ("B", 2 * HOUR, 0),
    ("C", 3 * HOUR, 0),
    ("D", 4 * HOUR, 0),
    ("E", 5 * HOUR, 0),
    ("F", 6 * HOUR, 0),
    ("G", 7 * HOUR, 0),
    ("H", 8 * HOUR, 0),
    ("I", 9 * HOUR, 0),
    ("K", 10 * HOUR, 0),
    ("L", 11 * HOUR, 0),
    ("M", 12 * HOUR, 0),
    ("N", -HOUR, 0),
    ("O", -2 * HOUR, 0),
    ("P", -3 * HOUR, 0),
    ("Q", -4 * HOUR, 0),
    ("R", -5 * HOUR, 0),
    ("S", -6 * HOUR, 0),
    ("T", -7 * HOUR, 0),
    ("U", -8 * HOUR, 0),
    ("V", -9 * HOUR, 0),
    ("W", -10 * HOUR, 0),
    ("X", -11 * HOUR, 0),
    ("Y", -12 * HOUR, 0),
];

const FIELD_MON: u32 = 1;
const FIELD_MDAY: u32 = 2;
const FIELD_WDAY: u32 = 4;
const FIELD_YDAY: u32 = 8;
const FIELD_YEAR: u32 = 16;

/// What one `strptime` call carries between its conversions (the C code keeps these in
/// statics, reset when a call starts "initialized").
struct State {
    century: i32,
    relyear: i32,
    fields: u32,
}

/// The conversions `strptime` knows (after `%`, `%E` or `%O`).
const KNOWN: &[u8] = b"%cDFRrTXxAabBhCedkHlIjMmpSsUWwugGVYyZznt";

/// Why a `time_format` can never match anything: the first conversion `strptime` does
/// not know (`%Q`), or a `%` that ends the format.
pub fn check_format(fmt: &str) -> Result<(), String> {
    let b = fmt.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'E' | b'O')) {
            j += 1;
        }
        match b.get(j) {
            None => return Err(format!("'%' at the end of '{fmt}' has no conversion")),
            // %L is Fluent Bit's own (fractional seconds), handled around strptime.
            Some(b'L') => {}
            Some(c) if KNOWN.contains(c) => {}
            Some(_) => {
                let conv = String::from_utf8_lossy(&b[i..=j]);
                return Err(format!("unknown conversion '{conv}' in '{fmt}'"));
            }
        }
        i = j + 1;
    }
    Ok(())
}

fn byte(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// C `strncasecmp(name, s + i, name.len()) == 0` on a NUL-terminated `s`.
fn starts_with_nocase(s: &[u8], i: usize, name: &str) -> bool {
    let n = name.as_bytes();
    s.len() >= i + n.len() && s[i..i + n.len()].eq_ignore_ascii_case(n)
}

/// `_conv_num`: at least one digit, more while the value stays within `ulim`'s digits.
fn conv_num(s: &[u8], i: &mut usize, llim: i32, ulim: i32) -> Option<i32> {
    if !byte(s, *i).is_ascii_digit() {
        return None;
    }
    let mut result: i32 = 0;
    let mut rulim = ulim;
    loop {
        result = result * 10 + (byte(s, *i) - b'0') as i32;
        *i += 1;
        rulim /= 10;
        if !(result * 10 <= ulim && rulim != 0 && byte(s, *i).is_ascii_digit()) {
            break;
        }
    }
    if result < llim || result > ulim {
        return None;
    }
    Some(result)
}

/// `_conv_num64` for `%s`, with its overflow limits.
fn conv_num64(s: &[u8], i: &mut usize) -> Option<i64> {
    if !byte(s, *i).is_ascii_digit() {
        return None;
    }
    let ulim = i64::MAX;
    let mut result: i64 = 0;
    let mut rulim = ulim;
    loop {
        if result > 922_337_203_685_477_580 {
            return None;
        }
        result *= 10;
        if result > 9_223_372_036_854_775_760 {
            return None;
        }
        result += (byte(s, *i) - b'0') as i64;
        *i += 1;
        rulim /= 10;
        if result >= 922_337_203_685_477_580 {
            return None;
        }
        if !(result.saturating_mul(10) <= ulim && rulim != 0 && byte(s, *i).is_ascii_digit()) {
            break;
        }
    }
    Some(result)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

const MON_LEN: [[i32; 12]; 2] = [
    [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
    [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
];

fn leaps_thru_end_of(y: i32) -> i32 {
    if y >= 0 {
        y / 4 - y / 100 + y / 400
    } else {
        -(leaps_thru_end_of(-(y + 1)) + 1)
    }
}

extern "C" {
    static tzname: [*const c_char; 2];
    static timezone: c_long;
    fn tzset();
}

/// The system's zone names (`tzname`) and offset, for `%Z` names Fluent Bit's table lacks.
fn system_zone_names() -> ([String; 2], i64) {
    // SAFETY: tzset initialises the C library's zone globals, which are then only read.
    unsafe {
        tzset();
        let name = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let names = [name(tzname[0]), name(tzname[1])];
        (names, -timezone)
    }
}

/// Fluent Bit's `strptime` on `s` from `i` (`s` ends where the C string would: at its
/// end). Returns where it stopped, or `None` where it fails; `tm` keeps what was read.
fn strptime(
    s: &[u8],
    mut i: usize,
    fmt: &[u8],
    tm: &mut Tm,
    st: &mut State,
    init: bool,
) -> Option<usize> {
    if init {
        st.century = 1900;
        st.relyear = -1;
        st.fields = 0;
        tm.gmtoff = 0;
        tm.isdst = -1;
    }
    let mut f = 0;
    while f < fmt.len() {
        let c = fmt[f];
        let mut alt = 0u8;
        if is_space(c) {
            while is_space(byte(s, i)) {
                i += 1;
            }
            f += 1;
            continue;
        }
        if byte(s, i) == 0 {
            return None;
        }
        f += 1;
        if c != b'%' {
            if c != byte(s, i) {
                return None;
            }
            i += 1;
            continue;
        }
        let legal = |alt: u8, allowed: u8| alt & !allowed == 0;
        loop {
            let c = byte(fmt, f);
            f += 1;
            match c {
                b'%' => {
                    if byte(s, i) != b'%' {
                        return None;
                    }
                    i += 1;
                }
                b'E' => {
                    if !legal(alt, 0) {
                        return None;
                    }
                    alt |= 1;
                    continue;
                }
                b'O' => {
                    if !legal(alt, 0) {
                        return None;
                    }
                    alt |= 2;
                    continue;
                }
                b'c' | b'D' | b'F' | b'R' | b'r' | b'T' | b'X' | b'x' => {
                    let allowed = if matches!(c, b'c' | b'X' | b'x') {
                        1
                    } else {
                        0
                    };
                    if !legal(alt, allowed) {
                        return None;
                    }
                    let sub: &[u8] = match c {
                        b'c' => b"%a %b %e %H:%M:%S %Y",
                        b'D' | b'x' => b"%m/%d/%y",
                        b'F' => b"%Y-%m-%d",
                        b'R' => b"%H:%M",
                        b'r' => b"%I:%M:%S %p",
                        _ => b"%H:%M:%S",
                    };
                    i = strptime(s, i, sub, tm, st, false)?;
                }
                b'A' | b'a' => {
                    if !legal(alt, 0) {
                        return None;
                    }
                    let mut found = None;
                    for d in 0..7 {
                        if starts_with_nocase(s, i, DAY[d]) {
                            found = Some((d, DAY[d].len()));
                            break;
                        }
                        if starts_with_nocase(s, i, ABDAY[d]) {
                            found = Some((d, ABDAY[d].len()));
                            break;
                        }
                    }
                    let (d, len) = found?;
                    tm.wday = d as i32;
                    i += len;
                    st.fields |= FIELD_WDAY;
                }
                b'B' | b'b' | b'h' => {
                    if !legal(alt, 0) {
                        return None;
                    }
                    let mut found = None;
                    for m in 0..12 {
                        if starts_with_nocase(s, i, MON[m]) {
                            found = Some((m, MON[m].len()));
                            break;
                        }
                        if starts_with_nocase(s, i, ABMON[m]) {
                            found = Some((m, ABMON[m].len()));
                            break;
                        }
                    }
                    let (m, len) = found?;
                    tm.mon = m as i32;
                    i += len;
                    st.fields |= FIELD_MON;
                }
                b'C' => {
                    if !legal(alt, 1) {
                        return None;
                    }
                    st.century = conv_num(s, &mut i, 0, 99)? * 100;
                }
                b'e' | b'd' => {
                    if c == b'e' && is_space(byte(s, i)) {
                        i += 1;
                    }
                    if !legal(alt, 2) {
                        return None;
                    }
                    tm.mday = conv_num(s, &mut i, 1, 31)?;
                    st.fields |= FIELD_MDAY;
                }
                b'k' | b'H' => {
                    if (c == b'k' && !legal(alt, 0)) || !legal(alt, 2) {
                        return None;
                    }
                    tm.hour = conv_num(s, &mut i, 0, 23)?;
                }
                b'l' | b'I' => {
                    if (c == b'l' && !legal(alt, 0)) || !legal(alt, 2) {
                        return None;
                    }
                    tm.hour = conv_num(s, &mut i, 1, 12)?;
                }
                b'j' => {
                    if !legal(alt, 0) {
                        return None;
                    }
                    tm.yday = conv_num(s, &mut i, 1, 366)? - 1;
                    st.fields |= FIELD_YDAY;
                }
                b'M' => {
                    if !legal(alt, 2) {
                        return None;
                    }
                    tm.min = conv_num(s, &mut i, 0, 59)?;
                }
                b'm' => {
                    if !legal(alt, 2) {
                        return None;
                    }
                    tm.mon = conv_num(s, &mut i, 1, 12)? - 1;
                    st.fields |= FIELD_MON;
                }
                b'p' => {
                    if !legal(alt, 0) {
                        return None;
                    }
                    if starts_with_nocase(s, i, "AM") {
                        if tm.hour > 12 {
                            return None;
                        } else if tm.hour == 12 {
                            tm.hour = 0;
                        }
                        i += 2;
                    } else if starts_with_nocase(s, i, "PM") {
                        if tm.hour > 12 {
                            return None;
                        } else if tm.hour < 12 {
                            tm.hour += 12;
                        }
                        i += 2;
                    } else {
                        return None;
                    }
                }
                b'S' => {
                    if !legal(alt, 2) {
                        return None;
                    }
                    tm.sec = conv_num(s, &mut i, 0, 60)?;
                }
                b's' => {
                    let secs = conv_num64(s, &mut i)?;
                    *tm = gmtime(secs)?;
                    tm.gmtoff = 0;
                    tm.isdst = 0;
                    st.fields = 0xffff;
                }
                b'U' | b'W' => {
                    if !legal(alt, 2) {
                        return None;
                    }
                    conv_num(s, &mut i, 0, 53)?;
                }
                b'w' => {
                    if !legal(alt, 2) {
                        return None;
                    }
                    tm.wday = conv_num(s, &mut i, 0, 6)?;
                    st.fields |= FIELD_WDAY;
                }
                b'u' => {
                    if !legal(alt, 2) {
                        return None;
                    }
                    tm.wday = conv_num(s, &mut i, 1, 7)? % 7;
                    st.fields |= FIELD_WDAY;
                }
                b'g' => {
                    conv_num(s, &mut i, 0, 99)?;
                }
                b'G' => {
                    i += 1;
                    while byte(s, i).is_ascii_digit() {
                        i += 1;
                    }
                }
                b'V' => {
                    conv_num(s, &mut i, 0, 53)?;
                }
                b'Y' => {
                    if !legal(alt, 1) {
                        return None;
                    }
                    let y = conv_num(s, &mut i, 0, 9999)?;
                    st.relyear = -1;
                    tm.year = y - 1900;
                    st.fields |= FIELD_YEAR;
                }
                b'y' => {
                    if !legal(alt, 3) {
                        return None;
                    }
                    st.relyear = conv_num(s, &mut i, 0, 99)?;
                }
                b'Z' => i = zone_name(s, i, tm)?,
                b'z' => i = zone_offset(s, i, tm)?,
                b'n' | b't' => {
                    if !legal(alt, 0) {
                        return None;
                    }
                    while is_space(byte(s, i)) {
                        i += 1;
                    }
                }
                _ => return None,
            }
            break;
        }
    }

    if st.relyear != -1 {
        tm.year = if st.century == 1900 {
            if st.relyear <= 68 {
                st.relyear + 100
            } else {
                st.relyear
            }
        } else {
            st.relyear + st.century - 1900
        };
        st.fields |= FIELD_YEAR;
    }
    if st.fields & FIELD_YEAR != 0 {
        let year = tm.year + 1900;
        let lens = &MON_LEN[is_leap(year as i64) as usize];
        if st.fields & FIELD_YDAY == 0 && st.fields & FIELD_MON != 0 && st.fields & FIELD_MDAY != 0
        {
            tm.yday = tm.mday - 1;
            tm.yday += lens.iter().take(tm.mon.clamp(0, 12) as usize).sum::<i32>();
            st.fields |= FIELD_YDAY;
        }
        if st.fields & FIELD_YDAY != 0 {
            let mut days = tm.yday;
            if st.fields & FIELD_WDAY == 0 {
                // EPOCH_WDAY + years * (365 % 7) + leap days
                let w = 4 + (year - 1970) % 7 + leaps_thru_end_of(year - 1)
                    - leaps_thru_end_of(1969)
                    + tm.yday;
                tm.wday = w.rem_euclid(7);
            }
            if st.fields & FIELD_MON == 0 {
                tm.mon = 0;
                while tm.mon < 12 && days >= lens[tm.mon as usize] {
                    days -= lens[tm.mon as usize];
                    tm.mon += 1;
                }
            }
            if st.fields & FIELD_MDAY == 0 {
                tm.mday = days + 1;
            }
        }
    }
    Some(i)
}

/// `%Z`: Fluent Bit's names, then `GMT`/`UTC`, then the system's zone names.
fn zone_name(s: &[u8], i: usize, tm: &mut Tm) -> Option<usize> {
    for &(name, off, dst) in ZONE_NAMES {
        if starts_with_nocase(s, i, name) && !byte(s, i + name.len()).is_ascii_alphanumeric() {
            tm.isdst = dst;
            tm.gmtoff = off;
            return Some(i + name.len());
        }
    }
    let (names, offset) = system_zone_names();
    if s[i..].starts_with(b"GMT") || s[i..].starts_with(b"UTC") {
        tm.isdst = 0;
        tm.gmtoff = 0;
        return Some(i + 3);
    }
    for (k, name) in names.iter().enumerate() {
        if starts_with_nocase(s, i, name) {
            tm.isdst = k as i32;
            tm.gmtoff = offset;
            return Some(i + name.len());
        }
    }
    None
}

/// `%z`: `Z`, `GMT`, `UT`/`UTC`, `[+-]hh[[:]mm]`, or the North American `[ECMP][SD]T`.
fn zone_offset(s: &[u8], mut i: usize, tm: &mut Tm) -> Option<usize> {
    while is_space(byte(s, i)) {
        i += 1;
    }
    let c = byte(s, i);
    i += 1;
    let neg = match c {
        b'G' => {
            if byte(s, i) != b'M' || byte(s, i + 1) != b'T' {
                return None;
            }
            tm.isdst = 0;
            tm.gmtoff = 0;
            return Some(i + 2);
        }
        b'U' => {
            if byte(s, i) != b'T' {
                return None;
            }
            i += 1;
            if byte(s, i) == b'C' {
                i += 1;
            }
            tm.isdst = 0;
            tm.gmtoff = 0;
            return Some(i);
        }
        b'Z' => {
            tm.isdst = 0;
            tm.gmtoff = 0;
            return Some(i);
        }
        b'+' => false,
        b'-' => true,
        _ => {
            i -= 1;
            for (k, name) in ["EST", "CST", "MST", "PST"].iter().enumerate() {
                if starts_with_nocase(s, i, name) {
                    tm.gmtoff = (-5 - k as i64) * HOUR;
                    tm.isdst = 0;
                    return Some(i + 3);
                }
            }
            // The C table ends with an empty name, which matches anything.
            if byte(s, i) != 0 || s.len() > i {
                // fallthrough to the DST names below
            }
            for (k, name) in ["EDT", "CDT", "MDT", "PDT"].iter().enumerate() {
                if starts_with_nocase(s, i, name) {
                    tm.isdst = 1;
                    tm.gmtoff = (-4 - k as i64) * HOUR;
                    return Some(i + 3);
                }
            }
            return None;
        }
    };
    if !byte(s, i).is_ascii_digit() || !byte(s, i + 1).is_ascii_digit() {
        return None;
    }
    let mut offs = ((byte(s, i) - b'0') as i64 * 10 + (byte(s, i + 1) - b'0') as i64) * HOUR;
    i += 2;
    if byte(s, i) == b':' {
        i += 1;
    }
    if byte(s, i).is_ascii_digit() {
        offs += (byte(s, i) - b'0') as i64 * 600;
        i += 1;
        if !byte(s, i).is_ascii_digit() {
            return None;
        }
        offs += (byte(s, i) - b'0') as i64 * 60;
        i += 1;
    }
    tm.isdst = 0;
    tm.gmtoff = if neg { -offs } else { offs };
    Some(i)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (month 1-12).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// C `timegm`: out-of-range fields carry over (day 0 is the last day of the month before).
pub fn timegm(tm: &Tm) -> i64 {
    let mon = tm.mon as i64;
    let year = tm.year as i64 + 1900 + mon.div_euclid(12);
    let days = days_from_civil(year, mon.rem_euclid(12) + 1, 1) + tm.mday as i64 - 1;
    ((days * 24 + tm.hour as i64) * 60 + tm.min as i64) * 60 + tm.sec as i64
}

/// C `gmtime_r`, `None` where the year does not fit.
fn gmtime(t: i64) -> Option<Tm> {
    let days = t.div_euclid(86_400);
    let rem = t.rem_euclid(86_400);
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let year = i32::try_from(y - 1900).ok()?;
    let jan1 = days_from_civil(y, 1, 1);
    Some(Tm {
        sec: (rem % 60) as i32,
        min: (rem / 60 % 60) as i32,
        hour: (rem / 3600) as i32,
        mday: d as i32,
        mon: (m - 1) as i32,
        year,
        wday: (days + 4).rem_euclid(7) as i32,
        yday: (days - jan1) as i32,
        isdst: 0,
        gmtoff: 0,
    })
}

fn libc_tm(tm: &Tm) -> libc::tm {
    // SAFETY: libc::tm is plain data; all-zero is a valid value.
    let mut t: libc::tm = unsafe { std::mem::zeroed() };
    t.tm_sec = tm.sec;
    t.tm_min = tm.min;
    t.tm_hour = tm.hour;
    t.tm_mday = tm.mday;
    t.tm_mon = tm.mon;
    t.tm_year = tm.year;
    t.tm_wday = tm.wday;
    t.tm_yday = tm.yday;
    t.tm_isdst = tm.isdst;
    t
}

/// C `mktime` with `tm_isdst = -1`: the system time zone decides.
fn mktime_local(tm: &Tm) -> i64 {
    let mut t = libc_tm(tm);
    t.tm_isdst = -1;
    // SAFETY: t is a valid, initialised struct tm.
    unsafe { libc::mktime(&mut t) as i64 }
}

/// C `localtime_r`: the broken-down local time of `t`.
fn localtime(t: i64) -> Tm {
    // SAFETY: both pointers are valid for the call.
    let mut out: libc::tm = unsafe { std::mem::zeroed() };
    let tt = t as libc::time_t;
    unsafe { libc::localtime_r(&tt, &mut out) };
    Tm {
        sec: out.tm_sec,
        min: out.tm_min,
        hour: out.tm_hour,
        mday: out.tm_mday,
        mon: out.tm_mon,
        year: out.tm_year,
        wday: out.tm_wday,
        yday: out.tm_yday,
        isdst: out.tm_isdst,
        gmtoff: out.tm_gmtoff,
    }
}

/// Fluent Bit's `time_offset` (`flb_parser_tzone_offset`): `Z`, or `+hhmm`, `-hh:mm`.
/// Its digit arithmetic is kept: `+9:00` fails because `:` is read as a digit.
pub fn parse_offset(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    match b.first() {
        Some(b'Z') => return Some(0),
        Some(b'+' | b'-') if b.len() >= 4 => {}
        _ => return None,
    }
    let neg = b[0] == b'-';
    let p = &b[1..];
    let d = |c: u8| c as i64 - b'0' as i64;
    let hour = d(p[0]) * 10 + d(p[1]);
    let min = if p.len() == 5 && p[2] == b':' {
        d(p[3]) * 10 + d(p[4])
    } else {
        d(p[2]) * 10 + d(p[3])
    };
    if !(0..=59).contains(&hour) || !(0..=59).contains(&min) {
        return None;
    }
    let off = hour * 3600 + min * 60;
    Some(if neg { -off } else { off })
}

/// An IANA zone read from the system's zoneinfo (`time_zone`), as Fluent Bit reads it:
/// transitions and their offsets, no POSIX rule for the years after the last one.
#[derive(Debug, Clone)]
pub struct Zone {
    transitions: Vec<i64>,
    kinds: Vec<u8>,
    /// seconds east of UTC per local time type
    offsets: Vec<i64>,
    default_kind: usize,
}

impl Zone {
    /// Loads `name` from `$TZDIR` (else /usr/share/zoneinfo).
    pub fn load(name: &str) -> Option<Zone> {
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|p| p == "..") {
            return None;
        }
        let dir = std::env::var("TZDIR").ok().filter(|d| !d.is_empty());
        let dir = dir.as_deref().unwrap_or("/usr/share/zoneinfo");
        let data = std::fs::read(format!("{dir}/{name}")).ok()?;
        Zone::from_tzif(&data)
    }

    fn from_tzif(buf: &[u8]) -> Option<Zone> {
        if buf.len() < 44 || &buf[..4] != b"TZif" {
            return None;
        }
        let be32 = |b: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let version = buf[4];
        let (data, size) = if matches!(version, b'2' | b'3' | b'4') {
            let counts = |h: &[u8]| -> Option<[usize; 6]> {
                let mut c = [0usize; 6];
                for (k, v) in c.iter_mut().enumerate() {
                    *v = be32(h, 20 + 4 * k)? as usize;
                }
                Some(c)
            };
            let [isut, isstd, leap, time, typ, chr] = counts(buf)?;
            let block = time * 4 + time + typ * 6 + chr + leap * 8 + isstd + isut;
            let second = 44 + block;
            if second + 44 > buf.len() || &buf[second..second + 4] != b"TZif" {
                return None;
            }
            (&buf[second..], 8)
        } else {
            (buf, 4)
        };
        let timecnt = be32(data, 32)? as usize;
        let typecnt = be32(data, 36)? as usize;
        if typecnt == 0 {
            return None;
        }
        let mut off = 44;
        let mut transitions = Vec::with_capacity(timecnt);
        for _ in 0..timecnt {
            let t = if size == 8 {
                i64::from_be_bytes(data.get(off..off + 8)?.try_into().ok()?)
            } else {
                be32(data, off)? as i32 as i64
            };
            transitions.push(t);
            off += size;
        }
        let kinds = data.get(off..off + timecnt)?.to_vec();
        off += timecnt;
        let mut offsets = Vec::with_capacity(typecnt);
        let mut dst = Vec::with_capacity(typecnt);
        for _ in 0..typecnt {
            offsets.push(be32(data, off)? as i32 as i64);
            dst.push(*data.get(off + 4)?);
            off += 6;
        }
        if kinds.iter().any(|&k| k as usize >= typecnt) {
            return None;
        }
        let default_kind = dst.iter().position(|&d| d == 0).unwrap_or(0);
        Some(Zone {
            transitions,
            kinds,
            offsets,
            default_kind,
        })
    }

    fn kind_at(&self, utc: i64) -> usize {
        match self.transitions.first() {
            None => return self.default_kind,
            Some(&first) if utc < first => return self.default_kind,
            _ => {}
        }
        let idx = self.transitions.partition_point(|&t| t <= utc) - 1;
        self.kinds[idx] as usize
    }

    /// Seconds east of UTC at `utc`.
    pub fn offset_at(&self, utc: i64) -> i64 {
        self.offsets[self.kind_at(utc)]
    }

    /// A local wall time to UTC: the first local time type whose offset holds at the
    /// result wins (so an ambiguous time takes the zone's first type that fits).
    fn to_utc(&self, tm: &Tm) -> i64 {
        let local = timegm(tm);
        for &off in &self.offsets {
            let candidate = local - off;
            if self.offset_at(candidate) == off {
                return candidate;
            }
        }
        local - self.offset_at(local)
    }

    fn local(&self, t: i64) -> Option<Tm> {
        gmtime(t + self.offset_at(t))
    }
}

/// A compiled `time_format` with the parser's zone settings.
#[derive(Debug, Clone)]
pub struct TimeFormat {
    /// The format as written (for messages).
    pub full: String,
    with_year: bool,
    with_tz: bool,
    /// The format up to `%L` (with `"%Y "` in front when it has no year).
    head: Vec<u8>,
    /// The format after `%L`, when it has one.
    frac: Option<Vec<u8>>,
    /// `time_offset`, seconds east of UTC.
    offset: i64,
    system_tz: bool,
    zone: Option<Zone>,
    strict: bool,
}

/// A time that could not be read (`time_strict`), or a text too long for a format
/// without a year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTime;

impl TimeFormat {
    /// A format read in UTC (`time_offset 0`), strictly.
    pub fn new(fmt: &str) -> TimeFormat {
        let with_year = fmt.contains("%Y") || fmt.contains("%y") || fmt.contains("%s");
        let with_tz = fmt.contains("%z")
            || fmt.contains("%Z")
            || fmt.contains("%SZ")
            || fmt.contains("%S.%LZ");
        let mut head = Vec::with_capacity(fmt.len() + 3);
        if !with_year {
            head.extend_from_slice(b"%Y ");
        }
        head.extend_from_slice(fmt.as_bytes());
        let frac = head.windows(2).position(|w| w == b"%L").map(|at| {
            let rest = head[at + 2..].to_vec();
            head.truncate(at);
            rest
        });
        TimeFormat {
            full: fmt.to_string(),
            with_year,
            with_tz,
            head,
            frac,
            offset: 0,
            system_tz: false,
            zone: None,
            strict: true,
        }
    }

    /// `time_offset` (ignored with a zone in the format, `time_system_timezone` or
    /// `time_zone`).
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// `time_system_timezone`.
    pub fn with_system_timezone(mut self, on: bool) -> Self {
        self.system_tz = on;
        self
    }

    /// `time_zone`.
    pub fn with_zone(mut self, zone: Option<Zone>) -> Self {
        self.zone = zone;
        self
    }

    /// `time_strict`.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Reads `text` (`flb_parser_time_lookup` then the conversion to seconds). `now`
    /// gives the year (and default day) to formats without one.
    pub fn parse_at(&self, text: &[u8], now: i64) -> Result<EventTime, BadTime> {
        let (tm, frac) = self.lookup(text, now)?;
        let secs = self.to_secs(&tm);
        Ok(EventTime {
            secs,
            nanos: nanos_of(frac),
        })
    }

    fn lookup(&self, text: &[u8], now: i64) -> Result<(Tm, f64), BadTime> {
        let mut tm = Tm::default();
        let mut frac = 0.0;
        // The C code copies the text into a NUL-terminated buffer of 64 bytes (or the
        // text's length + 8), and a format without a year needs 6 more.
        let text = match text.iter().position(|&b| b == 0) {
            Some(n) => &text[..n],
            None => text,
        };
        let buf_size = if text.len() > 63 { text.len() + 8 } else { 64 };
        let mut owned;
        let s: &[u8] = if self.with_year {
            text
        } else {
            if text.len() + 6 >= buf_size {
                return Err(BadTime);
            }
            let today = if let (Some(zone), false) = (&self.zone, self.with_tz) {
                zone.local(now).ok_or(BadTime)?
            } else if self.system_tz {
                localtime(now)
            } else {
                gmtime(now).ok_or(BadTime)?
            };
            tm.mon = today.mon;
            tm.mday = today.mday;
            owned = Vec::with_capacity(text.len() + 5);
            owned.extend_from_slice(
                itoa::Buffer::new()
                    .format(today.year as i64 + 1900)
                    .as_bytes(),
            );
            owned.push(b' ');
            owned.extend_from_slice(text);
            &owned
        };
        let mut st = State {
            century: 1900,
            relyear: -1,
            fields: 0,
        };
        let Some(mut p) = strptime(s, 0, &self.head, &mut tm, &mut st, true) else {
            return if self.strict {
                Err(BadTime)
            } else {
                Ok((tm, frac))
            };
        };
        if let Some(rest_fmt) = &self.frac {
            match parse_subseconds(&s[p..]) {
                Some((f, used)) => {
                    frac = f;
                    p += used;
                }
                None => {
                    return if self.strict {
                        Err(BadTime)
                    } else {
                        Ok((tm, frac))
                    }
                }
            }
            if strptime(s, p, rest_fmt, &mut tm, &mut st, true).is_none() {
                return if self.strict {
                    Err(BadTime)
                } else {
                    Ok((tm, frac))
                };
            }
        }
        if !self.with_tz && self.zone.is_none() {
            tm.gmtoff = self.offset;
        }
        owned = Vec::new();
        drop(owned);
        Ok((tm, frac))
    }

    /// `flb_parser_tm2time_parser`.
    fn to_secs(&self, tm: &Tm) -> i64 {
        match &self.zone {
            Some(zone) if !self.with_tz => zone.to_utc(tm),
            _ if self.system_tz => mktime_local(tm),
            _ => timegm(tm) - tm.gmtoff,
        }
    }
}

/// Whether Fluent Bit's event encoder accepts `t` (`flb_time_is_valid_eventtime`:
/// 0 <= secs <= u32::MAX, nanos < 1e9). Fluent Bit drops a record whose parsed time is
/// outside ("error packing event"), e.g. a `time_strict off` time that did not parse at
/// all (year 1900); callers of [`super::Parser::parse`] should do the same.
pub fn is_event_time(t: EventTime) -> bool {
    (0..=u32::MAX as i64).contains(&t.secs) && t.nanos < 1_000_000_000
}

/// `tv_nsec = frac * 1e9` in C: a double product truncated toward zero.
fn nanos_of(frac: f64) -> u32 {
    let n = frac * 1_000_000_000.0;
    if n <= 0.0 {
        0
    } else {
        n as u32
    }
}

/// `parse_subseconds`: C `strtod` on `"0."` followed by at most 9 characters of `s`.
/// Returns the fraction and how many of those characters it used (at least one).
fn parse_subseconds(s: &[u8]) -> Option<(f64, usize)> {
    let s = &s[..s.len().min(9)];
    let s = match s.iter().position(|&b| b == 0) {
        Some(n) => &s[..n],
        None => s,
    };
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    let digits = i;
    // strtod also takes an exponent: "0.5e3"; "0.e5" is a valid (zero) number.
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        let mut j = i + 1;
        if j < s.len() && (s[j] == b'+' || s[j] == b'-') {
            j += 1;
        }
        let start = j;
        while j < s.len() && s[j].is_ascii_digit() {
            j += 1;
        }
        if j > start {
            i = j;
        }
    }
    if i == 0 {
        return None;
    }
    let mut text = String::with_capacity(i + 3);
    text.push_str("0.");
    if digits == 0 {
        text.push('0');
    }
    text.push_str(std::str::from_utf8(&s[..digits]).ok()?);
    text.push_str(std::str::from_utf8(&s[digits..i]).ok()?);
    Some((text.parse().ok()?, i))
}

/// Reads `text` with a strptime `format` (plus `%L`), in UTC, strictly; a format
/// without a year takes the current one. `None` when the text does not match.
/// For callers outside parsers (the multiline engine); parsers keep a [`TimeFormat`].
pub fn parse(format: &str, text: &str) -> Option<EventTime> {
    TimeFormat::new(format)
        .parse_at(text.as_bytes(), EventTime::now().secs)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(fmt: &str, text: &str) -> Option<(i64, u32)> {
        // 2024-03-15 12:00:00 UTC
        TimeFormat::new(fmt)
            .parse_at(text.as_bytes(), 1_710_504_000)
            .ok()
            .map(|t| (t.secs, t.nanos))
    }

    #[test]
    fn common_formats() {
        assert_eq!(
            at("%d/%b/%Y:%H:%M:%S %z", "28/Jul/2006:10:27:10 -0300"),
            Some((1_154_093_230, 0))
        );
        assert_eq!(
            at(
                "%Y-%m-%dT%H:%M:%S.%L%z",
                "2019-05-07T18:57:50.904275087+00:00"
            ),
            Some((1_557_255_470, 904_275_087))
        );
        assert_eq!(
            at("%Y-%m-%dT%H:%M:%S.%L%z", "2003-10-11T22:14:15.003Z"),
            Some((1_065_910_455, 3_000_000))
        );
        assert_eq!(
            at("%Y-%m-%dT%H:%M:%S.%L", "2017-03-02T14:43:03.160158521Z"),
            Some((1_488_465_783, 160_158_521))
        );
        assert_eq!(at("%s", "1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            at("%s.%L", "1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(at("%FT%T", "2024-02-29T23:59:60"), Some((1_709_251_200, 0)));
        assert_eq!(
            at("%a, %d %b %Y %H:%M:%S %Z", "Fri, 15 Mar 2024 10:00:00 CET"),
            Some((1_710_493_200, 0))
        );
        assert_eq!(
            at("%m/%d/%y %I:%M %p", "03/15/24 01:30 PM"),
            Some((1_710_509_400, 0))
        );
        // no day given: day 0 of January, as C's timegm reads it
        assert_eq!(at("%y", "69"), Some((-31_622_400, 0)));
    }

    #[test]
    fn missing_year_takes_the_current_one_and_today() {
        assert_eq!(
            at("%b %d %H:%M:%S", "Oct 11 22:14:15"),
            Some((1_728_684_855, 0))
        );
        // no day in the format: today's (the 15th)
        assert_eq!(at("%H:%M", "10:00"), Some((1_710_496_800, 0)));
        // such texts must leave room for the year in Fluent Bit's 64-byte buffer
        let long = format!("10:00{}", " ".repeat(53));
        assert_eq!(at("%H:%M", &long), None);
    }

    #[test]
    fn trailing_text_is_accepted_and_strict_failures_are_errors() {
        assert_eq!(
            at("%Y-%m-%d", "2024-03-15 and more"),
            Some((1_710_460_800, 0))
        );
        assert_eq!(at("%Y-%m-%d", "2024-3"), None);
        assert_eq!(at("%Y-%m-%dT%H:%M:%S.%L", "2024-03-15T01:02:03"), None);
        let lax = TimeFormat::new("%Y-%m-%d %H").with_strict(false);
        // the year and month were read; the day (0) carries back to Feb 29
        assert_eq!(
            lax.parse_at(b"2024-03-xx", 0).map(|t| t.secs),
            Ok(1_709_164_800)
        );
    }

    #[test]
    fn offsets() {
        let f = TimeFormat::new("%Y-%m-%d %H:%M:%S").with_offset(parse_offset("+09:00").unwrap());
        assert_eq!(
            f.parse_at(b"2024-03-15 09:00:00", 0).map(|t| t.secs),
            Ok(1_710_460_800)
        );
        // an offset in the text wins over time_offset
        let f = TimeFormat::new("%Y-%m-%d %H:%M:%S %z").with_offset(3600);
        assert_eq!(
            f.parse_at(b"2024-03-15 00:00:00 +0000", 0).map(|t| t.secs),
            Ok(1_710_460_800)
        );
        assert_eq!(parse_offset("-0530"), Some(-19_800));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("+9:00"), None);
        assert_eq!(parse_offset("+09"), None);
        assert_eq!(parse_offset("0900"), None);
    }

    #[test]
    fn zone_offsets_in_the_text() {
        for (z, off) in [
            ("+0100", 3600),
            ("-01:30", -5400),
            ("+05", 18_000),
            ("Z", 0),
            ("UTC", 0),
            ("GMT", 0),
            ("EST", -18_000),
            ("PDT", -25_200),
        ] {
            assert_eq!(
                at("%Y-%m-%d %H:%M %z", &format!("2024-03-15 00:00 {z}")),
                Some((1_710_460_800 - off, 0)),
                "{z}"
            );
        }
        assert_eq!(
            at("%Y-%m-%d %H:%M %z", "2024-03-15 00:00 +01x"),
            Some((1_710_457_200, 0))
        );
        assert_eq!(at("%Y-%m-%d %H:%M %z", "2024-03-15 00:00 +013"), None);
    }

    #[test]
    fn fractions_are_truncated_like_c() {
        assert_eq!(at("%S.%L", "01.123"), Some((1_710_460_801, 123_000_000)));
        assert_eq!(
            at("%S.%L", "01.1234567891"),
            Some((1_710_460_801, 123_456_789))
        );
        assert_eq!(at("%S.%L", "01.x"), None);
        assert_eq!(parse_subseconds(b"999999999"), Some((0.999999999, 9)));
        assert_eq!(nanos_of(0.999999999), 999_999_999);
    }

    #[test]
    fn unknown_conversions_are_reported() {
        assert!(check_format("%Y-%m-%dT%H:%M:%S.%L%z").is_ok());
        assert!(check_format("%Ey %OH %%").is_ok());
        assert_eq!(
            check_format("%Y %Q").unwrap_err(),
            "unknown conversion '%Q' in '%Y %Q'"
        );
        assert!(check_format("%Y %").is_err());
        assert_eq!(at("%Y %Q", "2024 x"), None);
    }

    #[test]
    fn timegm_and_gmtime_agree() {
        for t in [-86_401, -1, 0, 1, 951_782_400, 1_709_251_199, 4_102_444_800] {
            let tm = gmtime(t).unwrap();
            assert_eq!(timegm(&tm), t);
        }
        let tm = gmtime(1_710_504_000).unwrap();
        assert_eq!(
            (tm.year, tm.mon, tm.mday, tm.wday, tm.yday),
            (124, 2, 15, 5, 74)
        );
    }

    #[test]
    fn zones_from_zoneinfo() {
        let Some(zone) = Zone::load("Europe/Berlin") else {
            return;
        };
        let f = TimeFormat::new("%Y-%m-%d %H:%M:%S").with_zone(Some(zone));
        // winter (+1) and summer (+2)
        assert_eq!(
            f.parse_at(b"2024-01-15 12:00:00", 0).map(|t| t.secs),
            Ok(1_705_316_400)
        );
        assert_eq!(
            f.parse_at(b"2024-07-15 12:00:00", 0).map(|t| t.secs),
            Ok(1_721_037_600)
        );
        assert!(Zone::load("No/Such_Zone").is_none());
        assert!(Zone::load("../etc/passwd").is_none());
    }
}
