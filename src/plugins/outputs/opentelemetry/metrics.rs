//! Metric sets as an OTLP `ExportMetricsServiceRequest`, as cmetrics'
//! `cmt_encode_opentelemetry_create` writes one context, the encodings of a chunk's sets
//! concatenated into one body as Fluent Bit's `process_metrics` does (which protobuf
//! reads as one request with a `ResourceMetrics` per set).
//! Fluent Bit: lib/cmetrics/src/cmt_encode_opentelemetry.c,
//! plugins/out_opentelemetry/opentelemetry.c (`process_metrics`, `append_labels`)
//!
//! The layout, as Fluent Bit 5.1.1 sends the sets of agent's inputs (which carry no
//! OTLP resource or scope): per set one `ResourceMetrics` without `resource`, holding
//! one `ScopeMetrics` without `scope`; its metrics counters first, then gauges,
//! untyped, summaries and histograms, each in the set's order, a metric without
//! samples left out.
//! - counter: `sum`, `AGGREGATION_TEMPORALITY_CUMULATIVE`, `is_monotonic`;
//! - gauge and untyped: `gauge`;
//! - summary: `summary` (`count`, `sum`, one `quantile_values` per quantile);
//! - histogram: `histogram` without aggregation temporality (cmetrics leaves it unset
//!   for histograms it did not get from OTLP), `count`, `sum`, `bucket_counts` as
//!   cmetrics keeps them (cumulative, `+Inf` last), `explicit_bounds`;
//! - every data point: `time_unix_nano` the sample's time, no start time (agent's
//!   inputs have none, as Fluent Bit's), values as `as_double`; attributes: the set's
//!   static labels, then `add_label`s, then the sample's labels, all strings.
//!
//! Fields are declared in field-number order: prost writes them as declared, and
//! protobuf-c (Fluent Bit) in field-number order, so the bytes are the same.

use prost::Message;

use crate::event::metrics::{Family, MetricSet, MetricType, SampleValue};
use crate::event::Str;

#[derive(Clone, PartialEq, Message)]
pub struct ExportMetricsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceMetrics {
    #[prost(message, repeated, tag = "2")]
    pub scope_metrics: Vec<ScopeMetrics>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeMetrics {
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(oneof = "Data", tags = "5, 7, 9, 11")]
    pub data: Option<Data>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Data {
    #[prost(message, tag = "5")]
    Gauge(Gauge),
    #[prost(message, tag = "7")]
    Sum(Sum),
    #[prost(message, tag = "9")]
    Histogram(Histogram),
    #[prost(message, tag = "11")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
}

/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct Sum {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
    #[prost(bool, tag = "3")]
    pub is_monotonic: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<HistogramDataPoint>,
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<SummaryDataPoint>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NumberDataPoint {
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(oneof = "NumberValue", tags = "4, 6")]
    pub value: Option<NumberValue>,
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum NumberValue {
    #[prost(double, tag = "4")]
    AsDouble(f64),
    #[prost(sfixed64, tag = "6")]
    AsInt(i64),
}

#[derive(Clone, PartialEq, Message)]
pub struct HistogramDataPoint {
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    #[prost(double, optional, tag = "5")]
    pub sum: Option<f64>,
    #[prost(fixed64, repeated, tag = "6")]
    pub bucket_counts: Vec<u64>,
    #[prost(double, repeated, tag = "7")]
    pub explicit_bounds: Vec<f64>,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SummaryDataPoint {
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    #[prost(double, tag = "5")]
    pub sum: f64,
    #[prost(message, repeated, tag = "6")]
    pub quantile_values: Vec<ValueAtQuantile>,
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueAtQuantile {
    #[prost(double, tag = "1")]
    pub quantile: f64,
    #[prost(double, tag = "2")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(string, tag = "1")]
    pub string_value: String,
}

use crate::event::metrics::CMT_ORDER as ORDER;

fn attributes(statics: &[(&Str, &Str)], f: &Family, labels: &[Str]) -> Vec<KeyValue> {
    statics
        .iter()
        .copied()
        .chain(f.label_keys.iter().zip(labels))
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                string_value: v.to_string(),
            }),
        })
        .collect()
}

/// The `ResourceMetrics` of one set; `extra` are the output's `add_label`s.
pub fn resource_metrics(set: &MetricSet, extra: &[(Str, Str)]) -> ResourceMetrics {
    let statics: Vec<(&Str, &Str)> = set
        .static_labels
        .iter()
        .chain(extra)
        .map(|(k, v)| (k, v))
        .collect();
    let mut metrics = Vec::new();
    for kind in ORDER {
        for f in set
            .families
            .iter()
            .filter(|f| f.kind == kind && !f.samples.is_empty())
        {
            let numbers = || {
                f.samples
                    .iter()
                    .map(|s| NumberDataPoint {
                        start_time_unix_nano: 0,
                        time_unix_nano: s.timestamp,
                        value: Some(NumberValue::AsDouble(match s.value {
                            SampleValue::Number(v) => v,
                            _ => 0.0,
                        })),
                        attributes: attributes(&statics, f, &s.labels),
                    })
                    .collect()
            };
            let data = match kind {
                MetricType::Counter => Data::Sum(Sum {
                    data_points: numbers(),
                    aggregation_temporality: CUMULATIVE,
                    is_monotonic: true,
                }),
                MetricType::Gauge | MetricType::Untyped => Data::Gauge(Gauge {
                    data_points: numbers(),
                }),
                MetricType::Summary => Data::Summary(Summary {
                    data_points: f
                        .samples
                        .iter()
                        .map(|s| {
                            let (quantiles, sum, count) = match &s.value {
                                SampleValue::Summary {
                                    quantiles,
                                    sum,
                                    count,
                                } => (quantiles.as_slice(), *sum, *count),
                                _ => (&[][..], 0.0, 0),
                            };
                            SummaryDataPoint {
                                start_time_unix_nano: 0,
                                time_unix_nano: s.timestamp,
                                count,
                                sum,
                                quantile_values: f
                                    .bounds
                                    .iter()
                                    .zip(quantiles)
                                    .map(|(q, v)| ValueAtQuantile {
                                        quantile: *q,
                                        value: *v,
                                    })
                                    .collect(),
                                attributes: attributes(&statics, f, &s.labels),
                            }
                        })
                        .collect(),
                }),
                MetricType::Histogram => Data::Histogram(Histogram {
                    data_points: f
                        .samples
                        .iter()
                        .map(|s| {
                            let (buckets, sum, count) = match &s.value {
                                SampleValue::Histogram {
                                    buckets,
                                    sum,
                                    count,
                                } => (buckets.clone(), *sum, *count),
                                _ => (Vec::new(), 0.0, 0),
                            };
                            HistogramDataPoint {
                                start_time_unix_nano: 0,
                                time_unix_nano: s.timestamp,
                                count,
                                sum: Some(sum),
                                bucket_counts: buckets,
                                explicit_bounds: f.bounds.clone(),
                                attributes: attributes(&statics, f, &s.labels),
                            }
                        })
                        .collect(),
                    aggregation_temporality: 0,
                }),
            };
            metrics.push(Metric {
                name: f.name.to_string(),
                description: f.help.to_string(),
                data: Some(data),
            });
        }
    }
    ResourceMetrics {
        scope_metrics: vec![ScopeMetrics { metrics }],
    }
}

/// Appends the request body of `sets` to `out`.
pub fn encode(sets: &[std::sync::Arc<MetricSet>], extra: &[(Str, Str)], out: &mut Vec<u8>) {
    let req = ExportMetricsServiceRequest {
        resource_metrics: sets.iter().map(|s| resource_metrics(s, extra)).collect(),
    };
    req.encode(out).expect("a Vec grows as needed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::metrics::Sample;

    #[test]
    fn counters_come_first_and_carry_static_labels_first() {
        let mut g = Family::new("g", "G.", MetricType::Gauge, &["a"]);
        g.push(&["1"], 5, 2.0);
        let mut c = Family::new("c_total", "C.", MetricType::Counter, &[]);
        c.push(&[], 7, 3.0);
        let mut h = Family::new("h", "", MetricType::Histogram, &[]);
        h.bounds = vec![0.5];
        h.samples.push(Sample {
            labels: Vec::new(),
            timestamp: 9,
            value: SampleValue::Histogram {
                buckets: vec![1, 2],
                sum: 0.0,
                count: 2,
            },
        });
        let set = MetricSet {
            static_labels: vec![("s".into(), "v".into())],
            families: vec![g, h, c, Family::new("empty", "", MetricType::Gauge, &[])],
            ..MetricSet::default()
        };
        let rm = resource_metrics(&set, &[("x".into(), "y".into())]);
        let m = &rm.scope_metrics[0].metrics;
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c_total", "g", "h"]);
        let Some(Data::Sum(sum)) = &m[0].data else {
            panic!("{m:?}")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, CUMULATIVE);
        assert_eq!(sum.data_points[0].time_unix_nano, 7);
        let Some(Data::Gauge(g)) = &m[1].data else {
            panic!("{m:?}")
        };
        let keys: Vec<&str> = g.data_points[0]
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect();
        assert_eq!(keys, ["s", "x", "a"]);
        let Some(Data::Histogram(h)) = &m[2].data else {
            panic!("{m:?}")
        };
        // A zero sum is still written (cmetrics sets has_sum).
        assert_eq!(h.data_points[0].sum, Some(0.0));
        assert_eq!(h.data_points[0].bucket_counts, [1, 2]);
    }
}
