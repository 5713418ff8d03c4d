//! The container runtimes' times, read exactly as Fluent Bit's built-in `docker`
//! (`%Y-%m-%dT%H:%M:%S.%L`) and `cri` (`%Y-%m-%dT%H:%M:%S.%L%z`) parsers read them.
//!
//! Fluent Bit: `flb_parser_time_lookup` (src/flb_parser.c), `flb_strptime`
//! (src/flb_strptime.c). Its quirks are kept: a time that stops matching the format
//! half way still gives the fields read so far (`2019-13-...` is 2018-12-31), `%L` reads
//! at most 9 digits through `strtod` and truncates `frac * 1e9`, `%z` takes `Z`, `UTC`,
//! `GMT`, `±hh`, `±hhmm`, `±hh:mm` and the North-American zone names, and anything after
//! the format is ignored.

use crate::event::EventTime;

/// The fields `timegm` reads, as `struct tm` holds them (zeroed: 1900-01-00).
struct Tm {
    year: i64,
    mon: i64,
    mday: i64,
    hour: i64,
    min: i64,
    sec: i64,
}

/// Reads `s` as Fluent Bit's container parsers do; `with_tz` adds `%z`. The seconds
/// may be negative (a time that did not parse at all is 1899-12-31).
pub fn container_time(s: &[u8], with_tz: bool) -> EventTime {
    // Fluent Bit copies the value into a C string: a NUL ends it.
    let s = match memchr::memchr(0, s) {
        Some(n) => &s[..n],
        None => s,
    };
    let mut tm = Tm {
        year: 1900,
        mon: 0,
        mday: 0,
        hour: 0,
        min: 0,
        sec: 0,
    };
    let mut p = 0;
    if date_time(s, &mut p, &mut tm).is_none() {
        return EventTime::new(timegm(&tm), 0);
    }
    // %L: up to 9 digits read by strtod("0.<digits>").
    let rest = &s[p..];
    let k = rest[..rest.len().min(9)]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if k == 0 {
        return EventTime::new(timegm(&tm), 0);
    }
    let n = rest[..k]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    // n and 10^k are exact doubles, so this is the correctly rounded value strtod gives.
    let frac = n as f64 / 10u64.pow(k as u32) as f64;
    let nanos = (frac * 1_000_000_000.0) as u32;
    p += k;
    let gmtoff = if with_tz { zone(s, p).unwrap_or(0) } else { 0 };
    EventTime::new(timegm(&tm) - gmtoff, nanos)
}

/// `%Y-%m-%dT%H:%M:%S.`, filling `tm` as far as it matches.
fn date_time(s: &[u8], p: &mut usize, tm: &mut Tm) -> Option<()> {
    tm.year = conv(s, p, 0, 9999)?;
    lit(s, p, b'-')?;
    tm.mon = conv(s, p, 1, 12)? - 1;
    lit(s, p, b'-')?;
    tm.mday = conv(s, p, 1, 31)?;
    lit(s, p, b'T')?;
    tm.hour = conv(s, p, 0, 23)?;
    lit(s, p, b':')?;
    tm.min = conv(s, p, 0, 59)?;
    lit(s, p, b':')?;
    tm.sec = conv(s, p, 0, 60)?;
    lit(s, p, b'.')
}

fn lit(s: &[u8], p: &mut usize, c: u8) -> Option<()> {
    (s.get(*p) == Some(&c)).then(|| *p += 1)
}

/// `_conv_num`: at least one digit, as many as can stay within `hi`.
fn conv(s: &[u8], p: &mut usize, lo: i64, hi: i64) -> Option<i64> {
    let digit = |i: usize| {
        s.get(i)
            .filter(|b| b.is_ascii_digit())
            .map(|b| i64::from(b - b'0'))
    };
    let mut result = digit(*p)?;
    let mut i = *p + 1;
    let mut rulim = hi / 10;
    while result * 10 <= hi && rulim != 0 {
        let Some(d) = digit(i) else { break };
        result = result * 10 + d;
        rulim /= 10;
        i += 1;
    }
    if result < lo || result > hi {
        return None;
    }
    *p = i;
    Some(result)
}

/// `%z` at `p`: the offset east of UTC in seconds.
fn zone(s: &[u8], mut p: usize) -> Option<i64> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    if p >= s.len() {
        return None;
    }
    while matches!(at(p), b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        p += 1;
    }
    let c = at(p);
    p += 1;
    match c {
        b'G' => (at(p) == b'M' && at(p + 1) == b'T').then_some(0),
        b'U' => (at(p) == b'T').then_some(0),
        b'Z' => Some(0),
        b'+' | b'-' => {
            if !at(p).is_ascii_digit() || !at(p + 1).is_ascii_digit() {
                return None;
            }
            let mut offs = i64::from((at(p) - b'0') * 10 + (at(p + 1) - b'0')) * 3600;
            p += 2;
            if at(p) == b':' {
                p += 1;
            }
            if at(p).is_ascii_digit() {
                if !at(p + 1).is_ascii_digit() {
                    return None;
                }
                offs += i64::from(at(p) - b'0') * 600 + i64::from(at(p + 1) - b'0') * 60;
            }
            Some(if c == b'-' { -offs } else { offs })
        }
        _ => {
            let name = s.get(p - 1..p + 2)?;
            let find = |names: [&[u8]; 4]| names.iter().position(|n| n.eq_ignore_ascii_case(name));
            if let Some(i) = find([b"EST", b"CST", b"MST", b"PST"]) {
                return Some((-5 - i as i64) * 3600);
            }
            find([b"EDT", b"CDT", b"MDT", b"PDT"]).map(|i| (-4 - i as i64) * 3600)
        }
    }
}

/// `timegm`: out-of-range days and seconds roll over as the C library does.
fn timegm(tm: &Tm) -> i64 {
    let days = days_from_civil(tm.year, tm.mon + 1) + tm.mday - 1;
    days * 86_400 + tm.hour * 3600 + tm.min * 60 + tm.sec
}

/// Days from 1970-01-01 to the first of month `m` (1-12) of year `y` (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri(s: &str) -> (i64, u32) {
        let t = container_time(s.as_bytes(), true);
        (t.secs, t.nanos)
    }

    fn docker(s: &str) -> (i64, u32) {
        let t = container_time(s.as_bytes(), false);
        (t.secs, t.nanos)
    }

    // Expected values printed by Fluent Bit 5.1.1 for these lines (tail + cri/docker).
    #[test]
    fn as_fluent_bit_reads_them() {
        assert_eq!(
            cri("2019-05-07T18:57:50.904275087+00:00"),
            (1557255470, 904275087)
        );
        assert_eq!(cri("2019-05-07T18:57:51.0Z"), (1557255471, 0));
        assert_eq!(
            cri("2019-05-07T18:57:52.5-02:00"),
            (1557255472 + 7200, 500_000_000)
        );
        // No fraction: the fields read before the failing `.`.
        assert_eq!(cri("2019-05-07T18:57:50Z"), (1557255470, 0));
        // Month 13 fails: year 2019, month 0, day 0 = 2018-12-31.
        assert_eq!(cri("2019-13-07T18:57:50.1Z"), (1546214400, 0));
        // A tenth digit stops %z; the 9 digits count.
        assert_eq!(
            cri("2019-05-07T18:57:50.1234567891Z"),
            (1557255470, 123456789)
        );
        assert_eq!(cri("2019-05-07T18:57:50.1"), (1557255470, 100_000_000));
        assert_eq!(
            docker("2019-05-07T18:57:52.53412Z"),
            (1557255472, 534120000)
        );
        assert_eq!(
            docker("2019-05-07T18:57:50.904275087Z"),
            (1557255470, 904275087)
        );
        // Nothing matches: 1900-01-00 = 1899-12-31.
        assert_eq!(cri("garbage").0, -2209075200);
    }

    #[test]
    fn zones() {
        let base = 1557255470;
        assert_eq!(cri("2019-05-07T18:57:50.0+0530").0, base - 19800);
        assert_eq!(cri("2019-05-07T18:57:50.0+05").0, base - 18000);
        assert_eq!(cri("2019-05-07T18:57:50.0 UTC").0, base);
        assert_eq!(cri("2019-05-07T18:57:50.0GMT").0, base);
        assert_eq!(cri("2019-05-07T18:57:50.0pst").0, base + 8 * 3600);
        assert_eq!(cri("2019-05-07T18:57:50.0EDT").0, base + 4 * 3600);
        assert_eq!(cri("2019-05-07T18:57:50.0+05:3").0, base);
        // Docker's format has no %z: an offset is ignored.
        assert_eq!(docker("2019-05-07T18:57:50.0+05:00").0, base);
    }

    #[test]
    fn rollover_and_digits() {
        // Second 60 rolls into the next minute, Feb 30 into March.
        assert_eq!(docker("2019-05-07T18:57:60.0Z").0, 1557255480);
        assert_eq!(
            docker("2019-02-30T00:00:00.0Z").0,
            docker("2019-03-02T00:00:00.0Z").0
        );
        // One-digit fields are accepted, as strptime does.
        assert_eq!(docker("2019-5-7T18:57:50.0Z").0, 1557255470);
        // Nanoseconds truncate frac * 1e9 as C does.
        for (s, n) in [
            ("0.1", 100_000_000),
            ("0.000000001", 1),
            ("0.999999999", 999_999_999),
        ] {
            let t = docker(&format!("2019-05-07T18:57:50.{}Z", &s[2..]));
            assert_eq!(t.1, n);
        }
        assert_eq!(docker("1970-01-01T00:00:00.0Z"), (0, 0));
    }
}
