//! Metrics as a signal beside log records, modelled on Fluent Bit's cmetrics context:
//! a [`MetricSet`] holds metric families (counter, gauge, untyped, histogram, summary),
//! each with its label keys and one sample per label-value combination. An input sends
//! a set with [`crate::pipeline::InputSender::send_metrics`]; it is routed by tag like
//! records, and only outputs that take metrics receive it.
//! Fluent Bit: lib/cmetrics/include/cmetrics/*.h

use std::sync::Arc;

use super::{EventTime, Map, Record, Str, Value};

/// Fluent Bit's CMT_COUNTER, CMT_GAUGE, CMT_UNTYPED, CMT_HISTOGRAM, CMT_SUMMARY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Untyped,
    Histogram,
    Summary,
}

impl MetricType {
    /// The type named by [`MetricType::as_str`].
    pub fn parse(name: &str) -> Option<MetricType> {
        [
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Untyped,
            MetricType::Histogram,
            MetricType::Summary,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }

    /// The name in Prometheus' `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Untyped => "untyped",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
        }
    }
}

/// The order in which cmetrics' OpenTelemetry encoder (and Fluent Bit's EMF conversion
/// of cloudwatch_logs) walks a context's metrics: counters, gauges, untyped, summaries,
/// histograms. (Its Prometheus text encoder has an order of its own.)
pub const CMT_ORDER: [MetricType; 5] = [
    MetricType::Counter,
    MetricType::Gauge,
    MetricType::Untyped,
    MetricType::Summary,
    MetricType::Histogram,
];

/// A sample's value: a number, or a histogram's or a summary's distribution.
#[derive(Clone, Debug, PartialEq)]
pub enum SampleValue {
    Number(f64),
    /// Cumulative bucket counts, one per bound of the family then `+Inf` (== count).
    Histogram {
        buckets: Vec<u64>,
        sum: f64,
        count: u64,
    },
    /// One value per quantile of the family (empty when no quantile is known).
    Summary {
        quantiles: Vec<f64>,
        sum: f64,
        count: u64,
    },
}

/// One time series point of a family: its label values (in the family's key order).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<Str>,
    /// Nanoseconds since the epoch.
    pub timestamp: u64,
    pub value: SampleValue,
}

impl Sample {
    /// The series Prometheus knows this sample as, each given to `out` as (name
    /// suffix, first label, value): a number is one series; a histogram one `_bucket`
    /// per bound (`le`; `None`: `+Inf`), `_sum` and `_count`; a summary one per quantile
    /// (`quantile`), `_sum` and `_count`. Shared by the text and remote write encoders.
    pub fn for_each_series(
        &self,
        family: &Family,
        mut out: impl FnMut(&'static str, Option<(&'static str, Option<f64>)>, f64),
    ) {
        match &self.value {
            SampleValue::Number(v) => out("", None, *v),
            SampleValue::Histogram {
                buckets,
                sum,
                count,
            } => {
                for (i, n) in buckets.iter().enumerate() {
                    out(
                        "_bucket",
                        Some(("le", family.bounds.get(i).copied())),
                        *n as f64,
                    );
                }
                out("_sum", None, *sum);
                out("_count", None, *count as f64);
            }
            SampleValue::Summary {
                quantiles,
                sum,
                count,
            } => {
                for (q, v) in family.bounds.iter().zip(quantiles) {
                    out("", Some(("quantile", Some(*q))), *v);
                }
                out("_sum", None, *sum);
                out("_count", None, *count as f64);
            }
        }
    }
}

/// A metric family: `node_cpu_seconds_total{cpu,mode}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The full name (Fluent Bit's `fqname`: namespace_subsystem_name).
    pub name: Str,
    pub help: Str,
    pub kind: MetricType,
    pub label_keys: Vec<Str>,
    /// Histogram bucket upper bounds, or summary quantiles; empty otherwise.
    pub bounds: Vec<f64>,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &str, help: &str, kind: MetricType, label_keys: &[&str]) -> Family {
        Family {
            name: Arc::from(name),
            help: Arc::from(help),
            kind,
            label_keys: label_keys.iter().map(|k| Arc::from(*k)).collect(),
            bounds: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// Adds a number sample; `labels` are the values, one per label key.
    pub fn push(&mut self, labels: &[&str], timestamp: u64, value: f64) {
        debug_assert_eq!(labels.len(), self.label_keys.len());
        self.samples.push(Sample {
            labels: labels.iter().map(|v| Arc::from(*v)).collect(),
            timestamp,
            value: SampleValue::Number(value),
        });
    }

    /// The number of the sample with these label values, if there is one.
    pub fn value(&self, labels: &[&str]) -> Option<f64> {
        self.samples.iter().find_map(|s| match &s.value {
            SampleValue::Number(v)
                if s.labels.len() == labels.len()
                    && s.labels.iter().zip(labels).all(|(a, b)| &**a == *b) =>
            {
                Some(*v)
            }
            _ => None,
        })
    }
}

/// One context of metrics (Fluent Bit's `struct cmt`), as one input scrape makes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricSet {
    /// Labels every sample carries (cmetrics' static labels; `add_label` adds here),
    /// written before the samples' own labels.
    pub static_labels: Vec<(Str, Str)>,
    pub families: Vec<Family>,
    /// The input instance that made the set (`node_exporter_metrics.0`); set by the
    /// pipeline. prometheus_exporter keeps the latest set of each source.
    pub source: Str,
}

impl MetricSet {
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| &*f.name == name)
    }

    /// Samples in the set (a histogram or summary sample counts once).
    pub fn samples(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    /// cmetrics' `cmt_cat` of the set into a new context, which Fluent Bit's metrics
    /// processors start from: families of one type with the same name and help become
    /// one (the first's place), a sample whose label values repeat in its family is
    /// merged into the first (a number takes the later value, histogram buckets, sums
    /// and counts add up, a summary takes the later one), and the static labels are
    /// not carried over (`cmt_cat` copies none). `Err` when two histograms of one name
    /// have different bucket bounds (cmetrics refuses to merge them).
    /// Fluent Bit: lib/cmetrics/src/cmt_cat.c
    pub fn recomposed(self) -> Result<MetricSet, String> {
        let mut families: Vec<Family> = Vec::with_capacity(self.families.len());
        for f in self.families {
            let at = families
                .iter()
                .position(|g| g.kind == f.kind && g.name == f.name && g.help == f.help);
            let dst = match at {
                Some(i) => {
                    if f.kind == MetricType::Histogram && families[i].bounds != f.bounds {
                        return Err(format!(
                            "histogram '{}' appears twice with different buckets",
                            f.name
                        ));
                    }
                    &mut families[i]
                }
                None => {
                    families.push(Family {
                        name: f.name.clone(),
                        help: f.help.clone(),
                        kind: f.kind,
                        label_keys: f.label_keys.clone(),
                        bounds: f.bounds.clone(),
                        samples: Vec::with_capacity(f.samples.len()),
                    });
                    families.last_mut().expect("pushed just above")
                }
            };
            for s in f.samples {
                match dst.samples.iter_mut().find(|d| d.labels == s.labels) {
                    None => dst.samples.push(s),
                    Some(d) => {
                        d.timestamp = s.timestamp;
                        match (&mut d.value, s.value) {
                            (
                                SampleValue::Histogram {
                                    buckets,
                                    sum,
                                    count,
                                },
                                SampleValue::Histogram {
                                    buckets: b,
                                    sum: s2,
                                    count: c,
                                },
                            ) => {
                                for (x, y) in buckets.iter_mut().zip(b) {
                                    *x += y;
                                }
                                *sum += s2;
                                *count += c;
                            }
                            (v, new) => *v = new,
                        }
                    }
                }
            }
        }
        Ok(MetricSet {
            static_labels: Vec::new(),
            families,
            source: self.source,
        })
    }

    /// About the bytes the set takes, for buffer accounting (mem_buf_limit).
    pub fn approx_size(&self) -> u64 {
        let labels = |l: &[Str]| l.iter().map(|v| v.len() as u64 + 2).sum::<u64>();
        self.families
            .iter()
            .map(|f| {
                (f.name.len() + f.help.len()) as u64
                    + labels(&f.label_keys)
                    + f.samples
                        .iter()
                        .map(|s| {
                            16 + labels(&s.labels)
                                + match &s.value {
                                    SampleValue::Number(_) => 8,
                                    SampleValue::Histogram { buckets, .. } => {
                                        16 + 8 * buckets.len() as u64
                                    }
                                    SampleValue::Summary { quantiles, .. } => {
                                        16 + 8 * quantiles.len() as u64
                                    }
                                }
                        })
                        .sum::<u64>()
            })
            .sum()
    }
}

/// The metadata key marking a record that holds a metric set ([`MetricSet::to_record`]).
pub const STORED_SET_KEY: &str = "agent.metric_set";

fn text(s: &Str) -> Value {
    Value::Str(s.clone())
}

fn texts(v: &[Str]) -> Value {
    Value::Array(v.iter().map(text).collect())
}

fn floats(v: &[f64]) -> Value {
    Value::Array(v.iter().map(|f| Value::Float(*f)).collect())
}

fn get<'a>(m: &'a Map, key: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
}

fn as_str(v: &Value) -> Option<Str> {
    match v {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::UInt(u) => Some(*u),
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn array<T>(v: Option<&Value>, f: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    match v? {
        Value::Array(a) => a.iter().map(f).collect(),
        _ => None,
    }
}

impl MetricSet {
    /// The set as one record, for a chunk file (`storage.type filesystem`): its metadata
    /// holds [`STORED_SET_KEY`], its body the source, static labels and families (each
    /// sample as `[labels, timestamp, value]`, a histogram's or summary's value a map).
    pub fn to_record(&self) -> Record {
        let families = self
            .families
            .iter()
            .map(|f| {
                let samples = f
                    .samples
                    .iter()
                    .map(|s| {
                        let value = match &s.value {
                            SampleValue::Number(v) => Value::Float(*v),
                            SampleValue::Histogram {
                                buckets,
                                sum,
                                count,
                            } => Value::Map(vec![
                                (
                                    "buckets".into(),
                                    Value::Array(buckets.iter().map(|b| Value::UInt(*b)).collect()),
                                ),
                                ("sum".into(), Value::Float(*sum)),
                                ("count".into(), Value::UInt(*count)),
                            ]),
                            SampleValue::Summary {
                                quantiles,
                                sum,
                                count,
                            } => Value::Map(vec![
                                ("quantiles".into(), floats(quantiles)),
                                ("sum".into(), Value::Float(*sum)),
                                ("count".into(), Value::UInt(*count)),
                            ]),
                        };
                        Value::Array(vec![texts(&s.labels), Value::UInt(s.timestamp), value])
                    })
                    .collect();
                Value::Map(vec![
                    ("name".into(), text(&f.name)),
                    ("help".into(), text(&f.help)),
                    ("type".into(), Value::Str(f.kind.as_str().into())),
                    ("keys".into(), texts(&f.label_keys)),
                    ("bounds".into(), floats(&f.bounds)),
                    ("samples".into(), Value::Array(samples)),
                ])
            })
            .collect();
        let statics = self
            .static_labels
            .iter()
            .map(|(k, v)| Value::Array(vec![text(k), text(v)]))
            .collect();
        Record {
            time: EventTime::default(),
            metadata: vec![(STORED_SET_KEY.into(), Value::UInt(1))],
            body: vec![
                ("source".into(), text(&self.source)),
                ("static".into(), Value::Array(statics)),
                ("families".into(), Value::Array(families)),
            ],
        }
    }

    /// The set a record of [`MetricSet::to_record`] holds; `None` when the record is
    /// not one, or not whole.
    pub fn from_record(r: &Record) -> Option<MetricSet> {
        get(&r.metadata, STORED_SET_KEY)?;
        let b = &r.body;
        let static_labels = array(get(b, "static"), |v| match v {
            Value::Array(kv) if kv.len() == 2 => Some((as_str(&kv[0])?, as_str(&kv[1])?)),
            _ => None,
        })?;
        let families = array(get(b, "families"), |v| {
            let Value::Map(f) = v else { return None };
            let kind = MetricType::parse(&as_str(get(f, "type")?)?)?;
            let samples = array(get(f, "samples"), |v| {
                let Value::Array(s) = v else { return None };
                let [labels, ts, value] = s.as_slice() else {
                    return None;
                };
                let value = match (kind, value) {
                    (MetricType::Histogram, Value::Map(m)) => SampleValue::Histogram {
                        buckets: array(get(m, "buckets"), as_u64)?,
                        sum: as_f64(get(m, "sum")?)?,
                        count: as_u64(get(m, "count")?)?,
                    },
                    (MetricType::Summary, Value::Map(m)) => SampleValue::Summary {
                        quantiles: array(get(m, "quantiles"), as_f64)?,
                        sum: as_f64(get(m, "sum")?)?,
                        count: as_u64(get(m, "count")?)?,
                    },
                    (_, v) => SampleValue::Number(as_f64(v)?),
                };
                Some(Sample {
                    labels: array(Some(labels), as_str)?,
                    timestamp: as_u64(ts)?,
                    value,
                })
            })?;
            Some(Family {
                name: as_str(get(f, "name")?)?,
                help: as_str(get(f, "help")?)?,
                kind,
                label_keys: array(get(f, "keys"), as_str)?,
                bounds: array(get(f, "bounds"), as_f64)?,
                samples,
            })
        })?;
        Some(MetricSet {
            static_labels,
            families,
            source: as_str(get(b, "source")?)?,
        })
    }
}

/// Which signals an output takes (Fluent Bit's `event_type` flags of a plugin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    pub logs: bool,
    pub metrics: bool,
}

impl Signals {
    pub const NONE: Signals = Signals {
        logs: false,
        metrics: false,
    };
    pub const LOGS: Signals = Signals {
        logs: true,
        metrics: false,
    };
    pub const METRICS: Signals = Signals {
        logs: false,
        metrics: true,
    };
    pub const LOGS_AND_METRICS: Signals = Signals {
        logs: true,
        metrics: true,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format::{read_msgpack_record, write_msgpack_record, KeyCache};

    #[test]
    fn a_set_survives_a_chunk_file_record() {
        let mut c = Family::new("c_total", "C.", MetricType::Counter, &["a"]);
        c.push(&["x"], 12, 1.5);
        let mut h = Family::new("h", "H.", MetricType::Histogram, &[]);
        h.bounds = vec![0.1, 1.0];
        h.samples.push(Sample {
            labels: Vec::new(),
            timestamp: 13,
            value: SampleValue::Histogram {
                buckets: vec![1, 3, 4],
                sum: 2.5,
                count: 4,
            },
        });
        let mut s = Family::new("s", "", MetricType::Summary, &["p"]);
        s.bounds = vec![0.5];
        s.samples.push(Sample {
            labels: vec!["/a".into()],
            timestamp: 14,
            value: SampleValue::Summary {
                quantiles: vec![100.0],
                sum: 1000.0,
                count: 7,
            },
        });
        let set = MetricSet {
            static_labels: vec![("k".into(), "v".into())],
            families: vec![c, h, s],
            source: "node_exporter_metrics.0".into(),
        };
        let mut buf = Vec::new();
        write_msgpack_record(&mut buf, &set.to_record());
        let back = read_msgpack_record(&buf, &mut 0, &mut KeyCache::default()).unwrap();
        assert_eq!(MetricSet::from_record(&back), Some(set));
        assert_eq!(
            MetricSet::from_record(&Record::new(EventTime::default(), Map::new())),
            None
        );
    }
}
