//! Metrics as CloudWatch embedded metric format (EMF) events: one event per sample, as
//! Fluent Bit's cmetrics encoder writes them (lib/cmetrics/src/cmt_encode_cloudwatch_emf.c):
//!
//! `{"_aws":{"Timestamp":<sample ms>,"CloudWatchMetrics":[{"Namespace":<name up to its
//! first _>,"Dimensions":[[<label keys>,<static label keys>]],"Metrics":[{"Name":<name>,
//! ("Unit":"Counter",)"StorageResolution":60}]}]},<label>:<value>...,
//! "prom_metric_type":<type>,<name>:<value>}`
//!
//! Families go counters first, then gauges, untyped, summaries and histograms. A number
//! is a double; a summary `{"Min","Max","Sum","Count"}` from its first and last
//! quantiles; a histogram the same from its bucket counts sorted (Fluent Bit's "Max" is
//! the second largest count: the `+Inf` bucket's is left out).

use crate::event::metrics::{MetricSet, MetricType, Sample, SampleValue};
use crate::event::{EventTime, Map, Record, Str, Value};

use crate::event::metrics::CMT_ORDER as ORDER;

fn s(text: &str) -> Value {
    Value::Str(Str::from(text))
}

fn k(text: &str) -> Str {
    Str::from(text)
}

/// Each sample of `set` as an event record at `now` (Fluent Bit stamps them with the
/// time of the flush).
pub fn records(set: &MetricSet, now: EventTime, out: &mut Vec<Record>) {
    for kind in ORDER {
        for family in set.families.iter().filter(|f| f.kind == kind) {
            let ns = family.name.split_once('_').map_or("", |(ns, _)| ns);
            let mut dims: Vec<Value> = family
                .label_keys
                .iter()
                .map(|k| Value::Str(k.clone()))
                .collect();
            dims.extend(set.static_labels.iter().map(|(k, _)| Value::Str(k.clone())));
            let mut metric: Map = vec![(k("Name"), Value::Str(family.name.clone()))];
            if kind == MetricType::Counter {
                metric.push((k("Unit"), s("Counter")));
            }
            metric.push((k("StorageResolution"), Value::Int(60)));
            let directive: Map = vec![
                (k("Namespace"), s(ns)),
                (k("Dimensions"), Value::Array(vec![Value::Array(dims)])),
                (k("Metrics"), Value::Array(vec![Value::Map(metric)])),
            ];
            for sample in &family.samples {
                let aws: Map = vec![
                    (k("Timestamp"), Value::UInt(sample.timestamp / 1_000_000)),
                    (
                        k("CloudWatchMetrics"),
                        Value::Array(vec![Value::Map(directive.clone())]),
                    ),
                ];
                let mut body: Map = vec![(k("_aws"), Value::Map(aws))];
                for (key, v) in family.label_keys.iter().zip(&sample.labels) {
                    body.push((key.clone(), Value::Str(v.clone())));
                }
                for (key, v) in &set.static_labels {
                    body.push((key.clone(), Value::Str(v.clone())));
                }
                body.push((k("prom_metric_type"), s(kind.as_str())));
                body.push((family.name.clone(), value(sample)));
                out.push(Record::new(now, body));
            }
        }
    }
}

fn value(sample: &Sample) -> Value {
    let stats = |min: f64, max: f64, sum: f64, count: f64| {
        Value::Map(vec![
            (k("Min"), Value::Float(min)),
            (k("Max"), Value::Float(max)),
            (k("Sum"), Value::Float(sum)),
            (k("Count"), Value::Float(count)),
        ])
    };
    match &sample.value {
        SampleValue::Number(v) => Value::Float(*v),
        SampleValue::Summary {
            quantiles,
            sum,
            count,
        } => stats(
            quantiles.first().copied().unwrap_or(0.0),
            quantiles.last().copied().unwrap_or(0.0),
            *sum,
            *count as f64,
        ),
        SampleValue::Histogram {
            buckets,
            sum,
            count,
        } => {
            let mut sorted = buckets.clone();
            sorted.sort_unstable();
            let min = sorted.first().copied().unwrap_or(0);
            let max = sorted
                .get(sorted.len().saturating_sub(2))
                .copied()
                .unwrap_or(0);
            stats(min as f64, max as f64, *sum, *count as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format::write_json_map;
    use crate::event::metrics::Family;

    #[test]
    fn samples_become_fluent_bits_emf() {
        let mut gauge = Family::new("temperature_celsius", "", MetricType::Gauge, &[]);
        gauge.push(&[], 1_700_000_000_123_000_000, 21.5);
        let mut counter = Family::new("http_requests_total", "", MetricType::Counter, &["code"]);
        counter.push(&["200"], 1_700_000_000_123_000_000, 1027.0);
        let mut hist = Family::new("req_size_bytes", "", MetricType::Histogram, &[]);
        hist.bounds = vec![100.0, 1000.0];
        hist.samples.push(Sample {
            labels: vec![],
            timestamp: 1_700_000_000_123_000_000,
            value: SampleValue::Histogram {
                buckets: vec![5, 9, 10],
                sum: 4200.0,
                count: 10,
            },
        });
        let set = MetricSet {
            families: vec![gauge, hist, counter],
            ..MetricSet::default()
        };
        let mut out = Vec::new();
        records(&set, EventTime::new(1, 0), &mut out);
        let json: Vec<String> = out
            .iter()
            .map(|r| {
                let mut b = Vec::new();
                write_json_map(&mut b, &r.body, true);
                String::from_utf8(b).unwrap()
            })
            .collect();
        // The lines Fluent Bit 5.1.1 sent for the same metrics (prometheus_scrape).
        assert_eq!(
            json,
            [
                r#"{"_aws":{"Timestamp":1700000000123,"CloudWatchMetrics":[{"Namespace":"http","Dimensions":[["code"]],"Metrics":[{"Name":"http_requests_total","Unit":"Counter","StorageResolution":60}]}]},"code":"200","prom_metric_type":"counter","http_requests_total":1027.0}"#,
                r#"{"_aws":{"Timestamp":1700000000123,"CloudWatchMetrics":[{"Namespace":"temperature","Dimensions":[[]],"Metrics":[{"Name":"temperature_celsius","StorageResolution":60}]}]},"prom_metric_type":"gauge","temperature_celsius":21.5}"#,
                r#"{"_aws":{"Timestamp":1700000000123,"CloudWatchMetrics":[{"Namespace":"req","Dimensions":[[]],"Metrics":[{"Name":"req_size_bytes","StorageResolution":60}]}]},"prom_metric_type":"histogram","req_size_bytes":{"Min":5.0,"Max":9.0,"Sum":4200.0,"Count":10.0}}"#,
            ]
        );
    }
}
