//! Metrics as a signal beside log records, modelled on Fluent Bit's cmetrics context:
//! a [`MetricSet`] holds metric families (counter, gauge, untyped, histogram, summary),
//! each with its label keys and one sample per label-value combination. An input sends
//! a set with [`crate::pipeline::InputSender::send_metrics`]; it is routed by tag like
//! records, and only outputs that take metrics receive it.
//! Fluent Bit: lib/cmetrics/include/cmetrics/*.h

use std::sync::Arc;

use super::Str;

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
