//! Metrics as text: the Prometheus exposition format 0.0.4 (Fluent Bit:
//! lib/cmetrics/src/cmt_encode_prometheus.c) and cmetrics' own text format that Fluent
//! Bit's `stdout` output prints for metrics (lib/cmetrics/src/cmt_encode_text.c).
//! Numbers are written as C's `%.17g` / `%g`, byte for byte.

use std::io::Write;

use super::json::{write_padded, write_utc_seconds};
use crate::event::metrics::{Family, MetricSet, MetricType, Sample, SampleValue};
use crate::event::{EventTime, Str};

/// How [`write_prometheus`] writes a set.
#[derive(Clone, Copy, Default)]
pub struct PromOptions<'a> {
    /// Each sample's timestamp in milliseconds after its value (`add_timestamp`).
    pub timestamps: bool,
    /// Labels added to every sample after the set's own static labels (`add_label`).
    pub extra_labels: &'a [(Str, Str)],
    /// The monitoring endpoint's text: families in the set's order, and the HELP/TYPE
    /// lines of a family without samples too. Otherwise as cmetrics writes a context:
    /// counters, gauges, summaries, histograms then untyped, empty families left out.
    pub endpoint: bool,
}

/// cmetrics' order of families in a context: by type, then as created.
fn in_cmetrics_order(set: &MetricSet) -> impl Iterator<Item = &Family> {
    [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Summary,
        MetricType::Histogram,
        MetricType::Untyped,
    ]
    .into_iter()
    .flat_map(move |k| set.families.iter().filter(move |f| f.kind == k))
}

/// Appends `set` in the Prometheus text exposition format.
pub fn write_prometheus(out: &mut Vec<u8>, set: &MetricSet, opts: PromOptions) {
    let families: Box<dyn Iterator<Item = &Family>> = if opts.endpoint {
        Box::new(set.families.iter())
    } else {
        Box::new(in_cmetrics_order(set))
    };
    let statics: Vec<&(Str, Str)> = set
        .static_labels
        .iter()
        .chain(opts.extra_labels.iter())
        .collect();
    for f in families {
        if f.samples.is_empty() && !opts.endpoint {
            continue;
        }
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(f.name.as_bytes());
        if !f.help.is_empty() {
            out.push(b' ');
            escape(out, &f.help, false);
        }
        out.extend_from_slice(b"\n# TYPE ");
        out.extend_from_slice(f.name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(f.kind.as_str().as_bytes());
        out.push(b'\n');
        for s in &f.samples {
            let line = Line {
                family: f,
                sample: s,
                statics: &statics,
                timestamps: opts.timestamps,
            };
            s.for_each_series(f, |suffix, first, v| line.write(out, suffix, first, v));
        }
    }
}

/// One exposition line of a sample.
struct Line<'a> {
    family: &'a Family,
    sample: &'a Sample,
    statics: &'a [&'a (Str, Str)],
    timestamps: bool,
}

impl Line<'_> {
    /// `name{suffix}{first,static…,labels…} value [ms]`; `first` is a bucket's `le` or
    /// a quantile (`None` bound: `+Inf`).
    fn write(&self, out: &mut Vec<u8>, suffix: &str, first: Option<(&str, Option<f64>)>, v: f64) {
        out.extend_from_slice(self.family.name.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        let mut n = 0;
        let mut sep = |out: &mut Vec<u8>| {
            out.push(if n == 0 { b'{' } else { b',' });
            n += 1;
        };
        if let Some((key, bound)) = first {
            sep(out);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"=\"");
            match bound {
                Some(b) => write_bound(out, b),
                None => out.extend_from_slice(b"+Inf"),
            }
            out.push(b'"');
        }
        let own = self.family.label_keys.iter().zip(&self.sample.labels);
        for (k, v) in self.statics.iter().map(|(k, v)| (k, v)).chain(own) {
            if v.is_empty() {
                continue; // an empty value is no label (Prometheus reads it so)
            }
            sep(out);
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            escape(out, v, true);
            out.push(b'"');
        }
        if n > 0 {
            out.push(b'}');
        }
        out.push(b' ');
        write_g(out, v, 17);
        if self.timestamps {
            out.push(b' ');
            out.extend_from_slice(
                itoa::Buffer::new()
                    .format(self.sample.timestamp / 1_000_000)
                    .as_bytes(),
            );
        }
        out.push(b'\n');
    }
}

/// cmetrics' `metric_escape`: `\` and newline always, `"` in label values.
fn escape(out: &mut Vec<u8>, s: &str, quote: bool) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

/// cmetrics' `bucket_value_to_string`: `%g`, or `%.17g` when that loses the value or
/// is in exponent form; `.0` appended to a finite integral result.
fn write_bound(out: &mut Vec<u8>, v: f64) {
    let start = out.len();
    write_g(out, v, 6);
    let short = &out[start..];
    let lossy = std::str::from_utf8(short)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        != Some(v);
    if lossy || short.contains(&b'e') {
        out.truncate(start);
        write_g(out, v, 17);
    }
    let s = &out[start..];
    if v.is_finite() && !s.contains(&b'.') && !s.contains(&b'e') {
        out.extend_from_slice(b".0");
    }
}

/// C's `%.<precision>g` (glibc): `precision` significant digits, trailing zeros
/// removed, exponent form below 1e-4 or from 10^precision; `nan`, `inf`.
pub fn write_g(out: &mut Vec<u8>, v: f64, precision: usize) {
    if v.is_nan() {
        out.extend_from_slice(if v.is_sign_negative() {
            b"-nan"
        } else {
            b"nan"
        });
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v < 0.0 { b"-inf" } else { b"inf" });
        return;
    }
    if v == 0.0 {
        out.extend_from_slice(if v.is_sign_negative() { b"-0" } else { b"0" });
        return;
    }
    let p = precision.max(1);
    // Integers that fit are exact in fewer digits: the common case, without formatting
    // through the exponent form.
    if v.fract() == 0.0 && v.abs() < 1e15 && p >= 15 {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
        return;
    }
    let e_form = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = e_form.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is a number");
    if exp < -4 || exp >= p as i32 {
        out.extend_from_slice(trim_zeros(mantissa).as_bytes());
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        if exp.abs() < 10 {
            out.push(b'0');
        }
        out.extend_from_slice(itoa::Buffer::new().format(exp.abs()).as_bytes());
    } else {
        let fixed = format!("{:.*}", (p as i32 - 1 - exp) as usize, v);
        out.extend_from_slice(trim_zeros(&fixed).as_bytes());
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Appends `set` as cmetrics' text format (`cmt_encode_text_create`): one line per
/// sample, `2024-01-01T00:00:00.000000000Z name{labels} = value`; what Fluent Bit's
/// stdout output prints for metrics.
pub fn write_metrics_text(out: &mut Vec<u8>, set: &MetricSet) {
    for f in in_cmetrics_order(set) {
        for s in &f.samples {
            let t = EventTime::new(
                (s.timestamp / 1_000_000_000) as i64,
                (s.timestamp % 1_000_000_000) as u32,
            );
            write_utc_seconds(out, t, b'T');
            out.push(b'.');
            write_padded(out, t.nanos as u64, 9);
            out.extend_from_slice(b"Z ");
            out.extend_from_slice(f.name.as_bytes());
            // Labels are written raw, as cmetrics does here.
            let labels: Vec<(&Str, &Str)> = set
                .static_labels
                .iter()
                .map(|(k, v)| (k, v))
                .chain(f.label_keys.iter().zip(&s.labels))
                .collect();
            for (i, (k, v)) in labels.iter().enumerate() {
                out.push(if i == 0 { b'{' } else { b',' });
                let _ = write!(out, "{k}=\"{v}\"");
            }
            if !labels.is_empty() {
                out.push(b'}');
            }
            match &s.value {
                SampleValue::Number(v) => {
                    out.extend_from_slice(b" = ");
                    write_g(out, *v, 17);
                }
                SampleValue::Histogram {
                    buckets,
                    sum,
                    count,
                } => {
                    out.extend_from_slice(b" = { buckets = { ");
                    for (i, n) in buckets.iter().enumerate() {
                        match f.bounds.get(i) {
                            Some(b) => write_g(out, *b, 6),
                            None => out.extend_from_slice(b"+Inf"),
                        }
                        let _ = write!(out, "={n}");
                        out.extend_from_slice(if i + 1 < buckets.len() { b", " } else { b" " });
                    }
                    out.extend_from_slice(b"}, sum=");
                    write_g(out, *sum, 6);
                    let _ = write!(out, ", count={count} }}");
                }
                SampleValue::Summary {
                    quantiles,
                    sum,
                    count,
                } => {
                    out.extend_from_slice(b" = { quantiles = { ");
                    let n = f.bounds.len().min(quantiles.len());
                    for (i, (q, v)) in f.bounds.iter().zip(quantiles).enumerate() {
                        write_g(out, *q, 6);
                        out.push(b'=');
                        write_g(out, *v, 6);
                        out.extend_from_slice(if i + 1 < n { b", " } else { b" " });
                    }
                    out.extend_from_slice(b"}, sum=");
                    write_g(out, *sum, 6);
                    let _ = write!(out, ", count={count} }}");
                }
            }
            out.push(b'\n');
        }
    }
}

/// A family while its text is read: its series by label set.
struct Reading {
    family: Family,
    series: Vec<ReadSeries>,
    by_labels: std::collections::HashMap<Vec<(Str, Str)>, usize>,
}

/// One series of a family while read: a histogram's or summary's parts gather here.
struct ReadSeries {
    labels: Vec<(Str, Str)>,
    timestamp: u64,
    value: f64,
    /// `le` or `quantile` and its value.
    parts: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// Reads the Prometheus text exposition format (what a `/metrics` endpoint serves)
/// into a set, samples without a timestamp stamped `now` (nanoseconds). Lines that are
/// not valid are skipped and counted: the second value.
/// Fluent Bit: lib/cmetrics/src/cmt_decode_prometheus.c
pub fn parse_prometheus(text: &str, now: u64) -> (MetricSet, usize) {
    let mut fams: Vec<Reading> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut skipped = 0;
    let family_at = |fams: &mut Vec<Reading>,
                     index: &mut std::collections::HashMap<String, usize>,
                     name: &str|
     -> usize {
        *index.entry(name.to_string()).or_insert_with(|| {
            fams.push(Reading {
                family: Family::new(name, "", MetricType::Untyped, &[]),
                series: Vec::new(),
                by_labels: Default::default(),
            });
            fams.len() - 1
        })
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), help) => {
                    let i = family_at(&mut fams, &mut index, name);
                    fams[i].family.help = Str::from(unescape(help.unwrap_or(""), false).as_str());
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    let kind = match kind.trim() {
                        "counter" => MetricType::Counter,
                        "gauge" => MetricType::Gauge,
                        "histogram" => MetricType::Histogram,
                        "summary" => MetricType::Summary,
                        "untyped" => MetricType::Untyped,
                        _ => {
                            skipped += 1;
                            continue;
                        }
                    };
                    let i = family_at(&mut fams, &mut index, name);
                    fams[i].family.kind = kind;
                }
                _ => {} // another comment
            }
            continue;
        }
        let Some((name, mut labels, value, ts)) = sample_line(line) else {
            skipped += 1;
            continue;
        };
        // `x_bucket`, `x_sum`, `x_count` of a histogram or summary `x`.
        let (i, suffix) = match ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            let i = *index.get(base)?;
            matches!(
                fams[i].family.kind,
                MetricType::Histogram | MetricType::Summary
            )
            .then_some((i, *suffix))
        }) {
            Some(found) => found,
            None => (family_at(&mut fams, &mut index, name), ""),
        };
        let kind = fams[i].family.kind;
        let part_key = match (kind, suffix) {
            (MetricType::Histogram, "_bucket") => Some("le"),
            (MetricType::Summary, "") => Some("quantile"),
            (MetricType::Histogram, "") => {
                skipped += 1; // a histogram has no plain series
                continue;
            }
            _ => None,
        };
        let part = match part_key {
            Some(key) => {
                let Some(at) = labels.iter().position(|(k, _)| &**k == key) else {
                    skipped += 1;
                    continue;
                };
                let (_, v) = labels.remove(at);
                match parse_value(&v) {
                    Some(b) => Some(b),
                    None => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            None => None,
        };
        let r = &mut fams[i];
        for (k, _) in &labels {
            if !r.family.label_keys.contains(k) {
                r.family.label_keys.push(k.clone());
            }
        }
        let timestamp = ts.map_or(now, |ms| ms.max(0) as u64 * 1_000_000);
        let at = match r.by_labels.get(&labels) {
            Some(at) => *at,
            None => {
                r.series.push(ReadSeries {
                    labels: labels.clone(),
                    timestamp,
                    value: 0.0,
                    parts: Vec::new(),
                    sum: 0.0,
                    count: 0.0,
                });
                r.by_labels.insert(labels, r.series.len() - 1);
                r.series.len() - 1
            }
        };
        let s = &mut r.series[at];
        s.timestamp = timestamp;
        match (part, suffix) {
            (Some(bound), _) => s.parts.push((bound, value)),
            (None, "_sum") => s.sum = value,
            (None, "_count") => s.count = value,
            _ => s.value = value,
        }
    }
    let families = fams
        .into_iter()
        .filter(|r| !r.series.is_empty())
        .map(|r| {
            let mut f = r.family;
            // Bounds: every finite `le` (or quantile) seen, ascending.
            let mut bounds: Vec<f64> = r
                .series
                .iter()
                .flat_map(|s| s.parts.iter().map(|p| p.0))
                .filter(|b| b.is_finite())
                .collect();
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            let keys = f.label_keys.clone();
            f.samples = r
                .series
                .into_iter()
                .map(|s| {
                    let part = |b: f64| s.parts.iter().find(|p| p.0 == b).map(|p| p.1);
                    let value = match f.kind {
                        MetricType::Histogram => SampleValue::Histogram {
                            buckets: bounds
                                .iter()
                                .map(|b| part(*b).unwrap_or(0.0) as u64)
                                .chain([part(f64::INFINITY).unwrap_or(s.count) as u64])
                                .collect(),
                            sum: s.sum,
                            count: s.count as u64,
                        },
                        MetricType::Summary => SampleValue::Summary {
                            quantiles: bounds
                                .iter()
                                .map(|b| part(*b).unwrap_or(f64::NAN))
                                .collect(),
                            sum: s.sum,
                            count: s.count as u64,
                        },
                        _ => SampleValue::Number(s.value),
                    };
                    Sample {
                        // In the family's key order; a key this series lacks is empty
                        // (what Prometheus reads as no label).
                        labels: keys
                            .iter()
                            .map(|k| {
                                s.labels
                                    .iter()
                                    .find(|(sk, _)| sk == k)
                                    .map_or_else(|| Str::from(""), |(_, v)| v.clone())
                            })
                            .collect(),
                        timestamp: s.timestamp,
                        value,
                    }
                })
                .collect();
            if matches!(f.kind, MetricType::Histogram | MetricType::Summary) {
                f.bounds = bounds;
            }
            f
        })
        .collect();
    (
        MetricSet {
            families,
            ..MetricSet::default()
        },
        skipped,
    )
}

/// A sample line read: name, labels, value, timestamp in milliseconds.
type SampleLine<'a> = (&'a str, Vec<(Str, Str)>, f64, Option<i64>);

/// `name{labels} value [timestamp]`.
fn sample_line(line: &str) -> Option<SampleLine<'_>> {
    let end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..end];
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if !valid_name(name) {
        return None;
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut r = after.trim_start();
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=')?;
            let key = r[..eq].trim();
            if !valid_name(key) || key.contains(':') {
                return None;
            }
            r = r[eq + 1..].trim_start().strip_prefix('"')?;
            // The value ends at the first quote not escaped.
            let mut close = None;
            let mut escaped = false;
            for (i, c) in r.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        close = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let close = close?;
            labels.push((
                Str::from(key),
                Str::from(unescape(&r[..close], true).as_str()),
            ));
            r = r[close + 1..].trim_start();
            r = r.strip_prefix(',').unwrap_or(r).trim_start();
        }
    }
    let mut words = rest.split_ascii_whitespace();
    let value = parse_value(words.next()?)?;
    let ts = match words.next() {
        Some(t) => Some(t.parse::<i64>().ok()?),
        None => None,
    };
    if words.next().is_some() {
        return None;
    }
    Some((name, labels, value, ts))
}

/// A sample value: a float, `NaN`, `+Inf`, `-Inf`.
fn parse_value(v: &str) -> Option<f64> {
    v.parse::<f64>().ok()
}

/// Undoes the format's escapes: `\\` and `\n`, and `\"` in label values.
fn unescape(s: &str, quote: bool) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if quote => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn g(v: f64, p: usize) -> String {
        let mut out = Vec::new();
        write_g(&mut out, v, p);
        String::from_utf8(out).unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn g_matches_libc() {
        let c = |f: f64, p: usize| {
            crate::event::format::libc_format(if p == 17 { c"%.17g" } else { c"%g" }, f)
        };
        let mut vals = vec![
            0.1,
            1.0,
            10.0,
            1e15,
            1e16,
            1e17,
            1e21,
            0.0001,
            0.00001,
            123456.5,
            1234567.0,
            0.005,
            2.5,
            -3.25,
            1796083039.0,
            0.5,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            999_999_999_999_999.0,
            1_000_000_000_000_001.0,
            123_456_789_012_345_680.0,
            -42.0,
        ];
        vals.extend(crate::event::format::test_doubles(20_000));
        vals.extend((0..20_000u64).map(|i| (i * 7919 % 1_000_000_000_000) as f64));
        for f in vals {
            assert_eq!(g(f, 17), c(f, 17), "{f:e}");
            assert_eq!(g(f, 6), c(f, 6), "{f:e}");
        }
    }

    fn set() -> MetricSet {
        let mut c = Family::new(
            "fluentbit_input_records_total",
            "Number of input records.",
            MetricType::Counter,
            &["name"],
        );
        c.push(&["dummy.0"], 1_700_000_000_123_456_789, 10.0);
        let mut gauge = Family::new("node_load1", "1m load average.", MetricType::Gauge, &[]);
        gauge.push(&[], 1_700_000_000_000_000_000, 0.25);
        let mut h = Family::new(
            "lat_seconds",
            "Latency \"q\"\\n",
            MetricType::Histogram,
            &["name"],
        );
        h.bounds = vec![0.5, 1.0, 2.5];
        h.samples.push(Sample {
            labels: vec![Arc::from("a\"b")],
            timestamp: 1_700_000_000_000_000_000,
            value: SampleValue::Histogram {
                buckets: vec![1, 2, 3, 4],
                sum: 7.5,
                count: 4,
            },
        });
        let mut s = Family::new("rpc", "", MetricType::Summary, &[]);
        s.bounds = vec![0.5, 0.9];
        s.samples.push(Sample {
            labels: vec![],
            timestamp: 1_700_000_000_000_000_000,
            value: SampleValue::Summary {
                quantiles: vec![1.0, 2.0],
                sum: 3.0,
                count: 2,
            },
        });
        let empty = Family::new("empty_total", "none", MetricType::Counter, &[]);
        MetricSet {
            static_labels: vec![],
            families: vec![gauge, h, c, s, empty],
            source: Arc::from("x.0"),
        }
    }

    #[test]
    fn exposition_as_cmetrics_writes_it() {
        let mut out = Vec::new();
        let extra = [(Arc::from("env"), Arc::from("dev"))];
        write_prometheus(
            &mut out,
            &set(),
            PromOptions {
                timestamps: false,
                extra_labels: &extra,
                endpoint: false,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP fluentbit_input_records_total Number of input records.\n\
             # TYPE fluentbit_input_records_total counter\n\
             fluentbit_input_records_total{env=\"dev\",name=\"dummy.0\"} 10\n\
             # HELP node_load1 1m load average.\n\
             # TYPE node_load1 gauge\n\
             node_load1{env=\"dev\"} 0.25\n\
             # HELP rpc\n\
             # TYPE rpc summary\n\
             rpc{quantile=\"0.5\",env=\"dev\"} 1\n\
             rpc{quantile=\"0.9\",env=\"dev\"} 2\n\
             rpc_sum{env=\"dev\"} 3\n\
             rpc_count{env=\"dev\"} 2\n\
             # HELP lat_seconds Latency \"q\"\\\\n\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"0.5\",env=\"dev\",name=\"a\\\"b\"} 1\n\
             lat_seconds_bucket{le=\"1.0\",env=\"dev\",name=\"a\\\"b\"} 2\n\
             lat_seconds_bucket{le=\"2.5\",env=\"dev\",name=\"a\\\"b\"} 3\n\
             lat_seconds_bucket{le=\"+Inf\",env=\"dev\",name=\"a\\\"b\"} 4\n\
             lat_seconds_sum{env=\"dev\",name=\"a\\\"b\"} 7.5\n\
             lat_seconds_count{env=\"dev\",name=\"a\\\"b\"} 4\n"
        );
    }

    #[test]
    fn endpoint_order_keeps_empty_families_and_timestamps_are_milliseconds() {
        let mut out = Vec::new();
        write_prometheus(
            &mut out,
            &set(),
            PromOptions {
                timestamps: true,
                extra_labels: &[],
                endpoint: true,
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.25 1700000000000\n"), "{text}");
        assert!(text.contains("fluentbit_input_records_total{name=\"dummy.0\"} 10 1700000000123\n"));
        assert!(
            text.ends_with("# HELP empty_total none\n# TYPE empty_total counter\n"),
            "{text}"
        );
    }

    #[test]
    fn text_as_fluent_bit_stdout_prints_it() {
        let mut out = Vec::new();
        let mut s = set();
        s.static_labels.push((Arc::from("host"), Arc::from("vm")));
        write_metrics_text(&mut out, &s);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2023-11-14T22:13:20.123456789Z fluentbit_input_records_total{host=\"vm\",name=\"dummy.0\"} = 10\n\
             2023-11-14T22:13:20.000000000Z node_load1{host=\"vm\"} = 0.25\n\
             2023-11-14T22:13:20.000000000Z rpc{host=\"vm\"} = { quantiles = { 0.5=1, 0.9=2 }, sum=3, count=2 }\n\
             2023-11-14T22:13:20.000000000Z lat_seconds{host=\"vm\",name=\"a\"b\"} = { buckets = { 0.5=1, 1=2, 2.5=3, +Inf=4 }, sum=7.5, count=4 }\n"
        );
    }

    #[test]
    fn exposition_text_reads_back_into_the_same_set() {
        let mut original = set();
        original.families.retain(|f| !f.samples.is_empty());
        let mut text = Vec::new();
        write_prometheus(
            &mut text,
            &original,
            PromOptions {
                timestamps: true,
                extra_labels: &[],
                endpoint: false,
            },
        );
        let text = String::from_utf8(text).unwrap();
        let (read, skipped) = parse_prometheus(&text, 0);
        assert_eq!(skipped, 0);
        // Timestamps go through milliseconds.
        let mut want = original.clone();
        for f in &mut want.families {
            for s in &mut f.samples {
                s.timestamp = s.timestamp / 1_000_000 * 1_000_000;
            }
        }
        let mut text2 = Vec::new();
        write_prometheus(
            &mut text2,
            &read,
            PromOptions {
                timestamps: true,
                extra_labels: &[],
                endpoint: false,
            },
        );
        assert_eq!(String::from_utf8(text2).unwrap(), text);
        for f in &want.families {
            let got = read.family(&f.name).unwrap_or_else(|| panic!("{}", f.name));
            assert_eq!(
                (got.kind, &got.help, &got.label_keys, &got.bounds),
                (f.kind, &f.help, &f.label_keys, &f.bounds)
            );
            assert_eq!(got.samples, f.samples, "{}", f.name);
        }
    }

    #[test]
    fn what_a_scrape_can_hold() {
        let text = "# A comment\n\
            # HELP up Whether up.\n\
            # TYPE up gauge\n\
            up{job=\"a\",path=\"C:\\\\x\\n\\\"q\\\"\"} 1 1700000000000\n\
            up{job=\"b\",} NaN\n\
            no_type_total +Inf\n\
            up{job=\"c\" 1\n\
            2bad 1\n\
            up{job=\"d\"} one\n\
            mixed{a=\"1\"} 1\n\
            mixed{b=\"2\"} 2\n";
        let (set, skipped) = parse_prometheus(text, 42);
        assert_eq!(skipped, 3);
        let up = set.family("up").unwrap();
        assert_eq!(up.kind, MetricType::Gauge);
        assert_eq!(&*up.help, "Whether up.");
        assert_eq!(up.samples.len(), 2);
        assert_eq!(&*up.samples[0].labels[1], "C:\\x\n\"q\"");
        assert_eq!(up.samples[0].timestamp, 1_700_000_000_000_000_000);
        assert_eq!(up.samples[1].timestamp, 42);
        assert!(matches!(up.samples[1].value, SampleValue::Number(v) if v.is_nan()));
        assert_eq!(
            set.family("no_type_total").unwrap().kind,
            MetricType::Untyped
        );
        let mixed = set.family("mixed").unwrap();
        assert_eq!(mixed.label_keys.len(), 2);
        assert_eq!(
            mixed.samples[0]
                .labels
                .iter()
                .map(|l| &**l)
                .collect::<Vec<_>>(),
            ["1", ""]
        );
        // Empty label values are absent labels: not written.
        let mut out = Vec::new();
        write_prometheus(&mut out, &set, PromOptions::default());
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("mixed{a=\"1\"} 1\nmixed{b=\"2\"} 2\n"),
            "{out}"
        );
    }
}
