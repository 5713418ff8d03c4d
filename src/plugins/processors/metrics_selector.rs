//! `metrics_selector` processor: keeps or drops whole metrics by name, or drops the
//! samples carrying one label value.
//! Fluent Bit: plugins/processor_metrics_selector/selector.c, lib/cmetrics/src/cmt_filter.c
//!
//! Its rules, as Fluent Bit 5.1.1 applies them:
//! - `context metric_name` (the default): `metric_name` is required; `/.../` is a
//!   regular expression searched in the full name, otherwise `operation_type prefix`
//!   (the default: the name starts with it) or `substring` (the name contains it),
//!   compared with case. `action include` (the default) keeps the metrics that match,
//!   `exclude` the others.
//! - `context delete_label_value` with `label KEY VALUE`: every sample whose label
//!   KEY (compared with case) is exactly VALUE goes; the metrics stay.
//! - `context`, `action` and `operation_type` are read by their first letters, without
//!   case (`includes` is `include`), as Fluent Bit compares them.
//! - The result is a `cmt_cat` copy ([`MetricSet::recomposed`]): no static labels.

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::metrics::MetricSet;
use crate::parser::regex::OnigRegex;
use crate::plugins::BuildContext;

use super::{MetricsProcessor, MetricsProcessorPlugin};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("metric_name", PropKind::Str, None, "Keep metrics in which the metric of name matches with the actual name or the regular expression."),
    PropSpec::new("context", PropKind::Str, None, "Specify matching context. Currently, metric_name and delete_label_value are only supported."),
    PropSpec::new("action", PropKind::Str, None, "Specify the action for specified metrics. INCLUDE and EXCLUDE are allowed."),
    PropSpec::new("label", PropKind::Str, None, "Specify a label key and value pair."),
    PropSpec::new("operation_type", PropKind::Str, None, "Specify the operation type of action for metrics payloads. PREFIX and SUBSTRING are allowed."),
];

pub static PLUGIN: MetricsProcessorPlugin = MetricsProcessorPlugin {
    name: "metrics_selector",
    description: "select metrics by specified name",
    props: PROPS,
    build,
};

enum NameMatch {
    Regex(OnigRegex),
    Prefix(String),
    Substring(String),
}

enum Selector {
    Name { pattern: NameMatch, exclude: bool },
    DeleteLabelValue { key: String, value: String },
}

/// Whether `value` starts with `word`, without case (C's `strncasecmp(v, word, len)`).
fn reads_as(value: &str, word: &str) -> bool {
    value.len() >= word.len() && value[..word.len()].eq_ignore_ascii_case(word)
}

fn build(p: &Props, _: &BuildContext) -> Result<Box<dyn MetricsProcessor>, ConfigError> {
    let context = p.str("context");
    let selector = match context {
        None => None,
        Some(c) if reads_as(c, "metric_name") => None,
        Some(c) if reads_as(c, "delete_label_value") => {
            let Some(label) = p.str("label") else {
                // Fluent Bit starts, then drops every metric of every set.
                return Err(p.error(
                    "label",
                    "'label KEY VALUE': context delete_label_value needs the label to delete by",
                ));
            };
            // flb_utils_split(label, ' ', 1): the key, then the rest after one space.
            let (key, value) = label
                .trim_start_matches(' ')
                .split_once(' ')
                .filter(|(_, v)| !v.is_empty())
                .ok_or_else(|| p.error("label", "a key and a value, e.g. 'label mode idle'"))?;
            Some(Selector::DeleteLabelValue {
                key: key.to_string(),
                value: value.to_string(),
            })
        }
        Some(_) => {
            return Err(p.error("context", "metric_name (the default) or delete_label_value"))
        }
    };
    let selector = match selector {
        Some(s) => s,
        None => {
            let exclude = match p.str("action") {
                None => false,
                Some(a) if reads_as(a, "include") => false,
                Some(a) if reads_as(a, "exclude") => true,
                Some(_) => return Err(p.error("action", "include (the default) or exclude")),
            };
            let Some(name) = p.str("metric_name") else {
                return Err(p.error(
                    "metric_name",
                    "the name (prefix, substring or /regex/) of the metrics to select: metric_name is needed for selector",
                ));
            };
            let substring = match p.str("operation_type") {
                None => false,
                Some(o) if reads_as(o, "prefix") => false,
                Some(o) if reads_as(o, "substring") => true,
                Some(_) => {
                    return Err(p.error("operation_type", "prefix (the default) or substring"))
                }
            };
            let pattern = if name.starts_with('/') && name.ends_with('/') {
                NameMatch::Regex(OnigRegex::new(name).map_err(|e| {
                    p.error(
                        "metric_name",
                        format!("a valid regular expression between slashes ({e})"),
                    )
                })?)
            } else if substring {
                NameMatch::Substring(name.to_string())
            } else {
                NameMatch::Prefix(name.to_string())
            };
            Selector::Name { pattern, exclude }
        }
    };
    Ok(Box::new(selector))
}

impl MetricsProcessor for Selector {
    fn process(&mut self, _tag: &str, mut set: MetricSet) -> Result<MetricSet, String> {
        match self {
            Selector::Name { pattern, exclude } => set.families.retain(|f| {
                let hit = match pattern {
                    NameMatch::Regex(r) => r.is_match(f.name.as_bytes()),
                    NameMatch::Prefix(p) => f.name.starts_with(p.as_str()),
                    NameMatch::Substring(s) => f.name.contains(s.as_str()),
                };
                hit != *exclude
            }),
            Selector::DeleteLabelValue { key, value } => {
                for f in &mut set.families {
                    if let Some(i) = f.label_keys.iter().position(|k| **k == **key) {
                        f.samples
                            .retain(|s| s.labels.get(i).is_none_or(|v| **v != **value));
                    }
                }
            }
        }
        set.recomposed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::metrics::{Family, MetricType};

    fn set() -> MetricSet {
        let mut a = Family::new("node_cpu_seconds_total", "", MetricType::Counter, &["mode"]);
        a.push(&["idle"], 1, 1.0);
        a.push(&["user"], 1, 2.0);
        let b = Family::new("node_load1", "", MetricType::Gauge, &[]);
        let c = Family::new("process_cpu", "", MetricType::Gauge, &[]);
        MetricSet {
            families: vec![a, b, c],
            static_labels: vec![("s".into(), "v".into())],
            ..MetricSet::default()
        }
    }

    fn names(s: &MetricSet) -> Vec<&str> {
        s.families.iter().map(|f| &*f.name).collect()
    }

    fn run(sel: Selector) -> MetricSet {
        let mut sel = sel;
        sel.process("t", set()).unwrap()
    }

    #[test]
    fn names_by_prefix_substring_and_regex() {
        let name = |pattern, exclude| Selector::Name { pattern, exclude };
        let out = run(name(NameMatch::Prefix("node_".into()), false));
        assert_eq!(names(&out), ["node_cpu_seconds_total", "node_load1"]);
        assert!(
            out.static_labels.is_empty(),
            "cmt_cat carries no static labels"
        );
        let out = run(name(NameMatch::Prefix("node_".into()), true));
        assert_eq!(names(&out), ["process_cpu"]);
        let out = run(name(NameMatch::Substring("cpu".into()), false));
        assert_eq!(names(&out), ["node_cpu_seconds_total", "process_cpu"]);
        let re = OnigRegex::new("/load|process/").unwrap();
        let out = run(name(NameMatch::Regex(re), true));
        assert_eq!(names(&out), ["node_cpu_seconds_total"]);
    }

    #[test]
    fn delete_label_value_drops_samples_not_metrics() {
        let out = run(Selector::DeleteLabelValue {
            key: "mode".into(),
            value: "idle".into(),
        });
        assert_eq!(out.families.len(), 3);
        assert_eq!(out.families[0].samples.len(), 1);
        assert_eq!(&*out.families[0].samples[0].labels[0], "user");
    }

    #[test]
    fn words_are_read_by_their_first_letters() {
        assert!(reads_as("Includes", "include"));
        assert!(!reads_as("inc", "include"));
    }
}
