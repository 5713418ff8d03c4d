//! Fluent Bit's value grammar: booleans, sizes, times, numbers.
//! Fluent Bit: src/flb_utils.c (`flb_utils_bool`, `flb_utils_size_to_bytes`,
//! `flb_utils_time_to_seconds`).

use std::time::Duration;

/// `true|on|yes` / `false|off|no`, case-insensitive. Fluent Bit rejects `1`/`0` too.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" => Some(true),
        "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// A size: number (decimals allowed) with an optional `K|M|G` and optional `B`,
/// case-insensitive, **decimal** as Fluent Bit computes it (`5M` = 5,000,000).
/// `false` (and `off`, as `storage.total_limit_size` takes it) mean 0. `2MiB` and other
/// suffixes are rejected.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("off") {
        return Some(0);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// A duration. Fluent Bit's forms first: a number with an optional `s|m|h|d` suffix
/// (`10`, `5m`, `2h`, `1d`; decimals are honoured, where Fluent Bit truncates `1.5m`
/// to 60 s). Then humantime forms (`500ms`, `1h 30m`, `250us`), which Fluent Bit
/// silently misreads (`500ms` as 500 seconds). `false` and `off` are 0, the "not
/// set" of every time property (Fluent Bit reads any word as 0; real configs write
/// `ignore_older false`); other words are errors.
/// The longest duration a property may be: every timer and deadline stays far from
/// overflowing the clock (`net.connect_timeout 18000000000000000000` panicked).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86400);

/// A duration as Fluent Bit writes them (see [`parse_time_unbounded`]), at most
/// [`MAX_DURATION`].
pub fn parse_time(s: &str) -> Option<Duration> {
    parse_time_unbounded(s).filter(|d| *d <= MAX_DURATION)
}

fn parse_time_unbounded(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("off") {
        return Some(Duration::ZERO);
    }
    let (num, mult) = match s.as_bytes()[s.len() - 1].to_ascii_lowercase() {
        b's' => (&s[..s.len() - 1], 1.0),
        b'm' => (&s[..s.len() - 1], 60.0),
        b'h' => (&s[..s.len() - 1], 3600.0),
        b'd' => (&s[..s.len() - 1], 86400.0),
        _ => (s, 1.0),
    };
    if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let n: f64 = num.parse().ok()?;
        return Duration::try_from_secs_f64(n * mult).ok();
    }
    humantime::parse_duration(s).ok()
}

/// A signed integer; unlike Fluent Bit's `atoi`, garbage is an error.
pub fn parse_int(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

/// A floating-point number (`0.5`, `1`, `1e3`).
pub fn parse_double(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

/// A Kubernetes quantity, as flow-control limits take them: `10`, `1.5k`, `10M`
/// (= 10,000,000), `500m` (= 0.5), `1Ki` (= 1024). Negative values are rejected.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult)
}

/// A comma-separated list, items trimmed, empty items dropped.
pub fn parse_clist(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools() {
        for t in ["on", "ON", "true", "Yes"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["off", "False", "no"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("1"), None);
        assert_eq!(parse_bool("0"), None);
    }

    #[test]
    fn sizes_are_decimal() {
        assert_eq!(parse_size("5M"), Some(5_000_000));
        assert_eq!(parse_size("32k"), Some(32_000));
        assert_eq!(parse_size("2MB"), Some(2_000_000));
        assert_eq!(parse_size("1.5K"), Some(1_500));
        assert_eq!(parse_size("1g"), Some(1_000_000_000));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("false"), Some(0));
        assert_eq!(parse_size("2MiB"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_time("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_time("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_time("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_time("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_time("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_time("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_time("soon"), None);
        assert_eq!(parse_time("false"), Some(Duration::ZERO));
        assert_eq!(parse_time("Off"), Some(Duration::ZERO));
        assert_eq!(parse_time("-1"), None);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10"), Some(10.0));
        assert_eq!(parse_quantity("1k"), Some(1000.0));
        assert_eq!(parse_quantity("10M"), Some(10_000_000.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1Ki"), Some(1024.0));
        assert_eq!(parse_quantity("0"), Some(0.0));
        assert_eq!(parse_quantity("-1"), None);
        assert_eq!(parse_quantity("10 rps"), None);
    }

    #[test]
    fn numbers_and_lists() {
        assert_eq!(parse_int(" -1 "), Some(-1));
        assert_eq!(parse_int("5x"), None);
        assert_eq!(parse_double("0.5"), Some(0.5));
        assert_eq!(parse_double("nan"), None);
        assert_eq!(parse_clist("a, b,,c "), vec!["a", "b", "c"]);
    }
}
