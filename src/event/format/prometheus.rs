//! Metrics as text: the Prometheus exposition format 0.0.4 (Fluent Bit:
//! lib/cmetrics/src/cmt_encode_prometheus.c) and cmetrics' own text format that Fluent
//! Bit's `stdout` output prints for metrics (lib/cmetrics/src/cmt_encode_text.c).
//! Numbers are written as C's `%.17g` / `%g`, byte for byte.

use std::io::Write;

use super::json::{write_padded, write_utc_datetime};
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
            write_utc_datetime(out, t, b'T');
            out.truncate(out.len() - 6); // the microseconds: nanoseconds are written
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
}
