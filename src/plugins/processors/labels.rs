//! `labels` processor, for metrics: deletes, updates, upserts, inserts and hashes
//! labels of every metric in a set, in that order whatever the order of the lines.
//! Fluent Bit: plugins/processor_labels/labels.c
//!
//! Its rules, as Fluent Bit 5.1.1 applies them (label names compared without case):
//! - The processor starts from a `cmt_cat` copy of the set ([`MetricSet::recomposed`]),
//!   which carries no static labels over.
//! - `delete NAME`: when some metric has the label, it is removed from every metric
//!   that has it (key and values); otherwise a static label of that name goes.
//! - `update NAME VALUE`: every metric having the label gets the value in every
//!   sample; a static label of that name gets it too. Nothing is added.
//! - `upsert NAME VALUE`: when some metric has the label, every metric gets it: set
//!   where it exists, appended as the last label where not; when no metric has it, it
//!   becomes (or updates) a static label, written before the metrics' own labels.
//! - `insert NAME VALUE`: when no metric has the label, every metric gets it, appended
//!   as the last label; when some metric has it, nothing changes. A static label of
//!   that name is added again (cmetrics then carries the name twice).
//! - `hash NAME`: the label's values become their SHA-256 in lowercase hex (an empty
//!   value stays empty) in every metric having it; otherwise a static label's value.
//! - A VALUE with `$` is a record accessor template rendered against the tag only
//!   (`$TAG`, `$TAG[n]`; a record key gives nothing): metrics carry no record.

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::metrics::MetricSet;
use crate::event::template::Template;
use crate::event::{Map, Str};
use crate::plugins::BuildContext;

use super::{sha256_hex, MetricsProcessor, MetricsProcessorPlugin};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("update", PropKind::Multi, None, "Updates a label. Usage : 'update label_name value'"),
    PropSpec::new("insert", PropKind::Multi, None, "Inserts a label. Usage : 'insert label_name value'"),
    PropSpec::new("upsert", PropKind::Multi, None, "Inserts or updates a label. Usage : 'upsert label_name value'"),
    PropSpec::new("delete", PropKind::Multi, None, "Deletes a label. Usage : 'delete label_name'"),
    PropSpec::new("hash", PropKind::Multi, None, "Replaces a label's value with its SHA256 hash. Usage : 'hash label_name'"),
];

pub static PLUGIN: MetricsProcessorPlugin = MetricsProcessorPlugin {
    name: "labels",
    description: "Modifies metrics labels",
    props: PROPS,
    build,
};

/// A label value: text, or a template of the tag (`$TAG`).
enum LabelValue {
    Text(Str),
    Template(Template),
}

impl LabelValue {
    fn render(&self, tag: &str) -> Str {
        match self {
            LabelValue::Text(t) => t.clone(),
            LabelValue::Template(t) => Str::from(t.render(tag, &Map::new(), "", &[]).as_str()),
        }
    }
}

struct Labels {
    delete: Vec<String>,
    update: Vec<(String, LabelValue)>,
    upsert: Vec<(String, LabelValue)>,
    insert: Vec<(String, LabelValue)>,
    hash: Vec<String>,
}

fn build(p: &Props, _: &BuildContext) -> Result<Box<dyn MetricsProcessor>, ConfigError> {
    let pairs = |name: &str| -> Result<Vec<(String, LabelValue)>, ConfigError> {
        p.multi_entries(name)
            .into_iter()
            .map(|e| {
                // FLB_CONFIG_MAP_SLIST_1: the name, then the rest of the line.
                let text = e.value.trim();
                let Some((key, value)) = text
                    .split_once(char::is_whitespace)
                    .map(|(k, v)| (k, v.trim()))
                else {
                    return Err(ConfigError::invalid(
                        &e.span,
                        format!("[processor] labels: '{name}' expects a key and a value, got '{text}'"),
                        Some(format!("write it as '{name} LABEL VALUE', e.g. '{name} version 1.8.0'")),
                    ));
                };
                let value = if value.contains('$') {
                    LabelValue::Template(Template::parse(value).map_err(|err| {
                        ConfigError::invalid(
                            &e.span,
                            format!("[processor] labels: '{name}': could not create record accessor for '{value}': {err}"),
                            Some("write '$TAG' or '$TAG[n]' for the tag or its n-th part".into()),
                        )
                    })?)
                } else {
                    LabelValue::Text(Str::from(value))
                };
                Ok((key.to_string(), value))
            })
            .collect()
    };
    let names = |name: &str| -> Vec<String> {
        p.multi(name)
            .into_iter()
            .map(|v| v.trim().to_string())
            .collect()
    };
    Ok(Box::new(Labels {
        update: pairs("update")?,
        insert: pairs("insert")?,
        upsert: pairs("upsert")?,
        delete: names("delete"),
        hash: names("hash"),
    }))
}

/// The index of label `name` in `keys` (case-insensitive, as `strcasecmp`).
fn key_index(keys: &[Str], name: &str) -> Option<usize> {
    keys.iter().position(|k| k.eq_ignore_ascii_case(name))
}

fn has_dynamic(set: &MetricSet, name: &str) -> bool {
    set.families
        .iter()
        .any(|f| key_index(&f.label_keys, name).is_some())
}

fn static_index(set: &MetricSet, name: &str) -> Option<usize> {
    set.static_labels
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case(name))
}

/// Sets label `i` of every sample of families having `name` (overwriting).
fn set_dynamic(set: &mut MetricSet, name: &str, value: &Str) {
    for f in &mut set.families {
        if let Some(i) = key_index(&f.label_keys, name) {
            for s in &mut f.samples {
                if let Some(v) = s.labels.get_mut(i) {
                    *v = value.clone();
                }
            }
        }
    }
}

/// Appends label `name` with `value` to every family lacking it (every sample).
fn append_dynamic(set: &mut MetricSet, name: &str, value: &Str) {
    for f in &mut set.families {
        if key_index(&f.label_keys, name).is_none() {
            f.label_keys.push(Str::from(name));
            for s in &mut f.samples {
                s.labels.push(value.clone());
            }
        }
    }
}

impl Labels {
    fn delete(set: &mut MetricSet, name: &str) {
        if has_dynamic(set, name) {
            for f in &mut set.families {
                if let Some(i) = key_index(&f.label_keys, name) {
                    f.label_keys.remove(i);
                    for s in &mut f.samples {
                        if i < s.labels.len() {
                            s.labels.remove(i);
                        }
                    }
                }
            }
        } else if let Some(i) = static_index(set, name) {
            set.static_labels.remove(i);
        }
    }

    fn update(set: &mut MetricSet, name: &str, value: Str) {
        if has_dynamic(set, name) {
            set_dynamic(set, name, &value);
        }
        if let Some(i) = static_index(set, name) {
            set.static_labels[i].1 = value;
        }
    }

    fn upsert(set: &mut MetricSet, name: &str, value: Str) {
        if has_dynamic(set, name) {
            set_dynamic(set, name, &value);
            append_dynamic(set, name, &value);
        } else if let Some(i) = static_index(set, name) {
            set.static_labels[i].1 = value;
        } else {
            set.static_labels.push((Str::from(name), value));
        }
    }

    fn insert(set: &mut MetricSet, name: &str, value: Str) {
        if !has_dynamic(set, name) {
            append_dynamic(set, name, &value);
        }
        if static_index(set, name).is_some() {
            set.static_labels.push((Str::from(name), value));
        }
    }

    fn hash(set: &mut MetricSet, name: &str) {
        let hashed = |v: &mut Str| {
            if !v.is_empty() {
                *v = Str::from(sha256_hex(v).as_str());
            }
        };
        if has_dynamic(set, name) {
            for f in &mut set.families {
                if let Some(i) = key_index(&f.label_keys, name) {
                    for s in &mut f.samples {
                        if let Some(v) = s.labels.get_mut(i) {
                            hashed(v);
                        }
                    }
                }
            }
        } else if let Some(i) = static_index(set, name) {
            hashed(&mut set.static_labels[i].1);
        }
    }
}

impl MetricsProcessor for Labels {
    fn process(&mut self, tag: &str, set: MetricSet) -> Result<MetricSet, String> {
        let mut set = set.recomposed()?;
        for name in &self.delete {
            Labels::delete(&mut set, name);
        }
        for (name, v) in &self.update {
            Labels::update(&mut set, name, v.render(tag));
        }
        for (name, v) in &self.upsert {
            Labels::upsert(&mut set, name, v.render(tag));
        }
        for (name, v) in &self.insert {
            Labels::insert(&mut set, name, v.render(tag));
        }
        for name in &self.hash {
            Labels::hash(&mut set, name);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::metrics::{Family, MetricType};

    fn set() -> MetricSet {
        let mut a = Family::new("a_total", "A.", MetricType::Counter, &["mode", "cpu"]);
        a.push(&["idle", "0"], 1, 1.0);
        a.push(&["user", "0"], 1, 2.0);
        let mut b = Family::new("b", "B.", MetricType::Gauge, &[]);
        b.push(&[], 1, 3.0);
        MetricSet {
            families: vec![a, b],
            ..MetricSet::default()
        }
    }

    fn labels(f: &Family) -> Vec<Vec<String>> {
        f.samples
            .iter()
            .map(|s| s.labels.iter().map(|l| l.to_string()).collect())
            .collect()
    }

    #[test]
    fn upsert_of_a_label_no_metric_has_becomes_static() {
        let mut s = set();
        Labels::upsert(&mut s, "env", "prod".into());
        assert_eq!(s.static_labels, vec![("env".into(), "prod".into())]);
        assert!(s
            .families
            .iter()
            .all(|f| !f.label_keys.iter().any(|k| &**k == "env")));
    }

    #[test]
    fn upsert_of_a_label_some_metric_has_reaches_every_metric() {
        let mut s = set();
        Labels::upsert(&mut s, "CPU", "9".into());
        assert_eq!(
            labels(&s.families[0]),
            vec![vec!["idle", "9"], vec!["user", "9"]]
        );
        assert_eq!(&*s.families[1].label_keys[0], "CPU");
        assert_eq!(labels(&s.families[1]), vec![vec!["9"]]);
    }

    #[test]
    fn insert_appends_only_when_no_metric_has_the_label() {
        let mut s = set();
        Labels::insert(&mut s, "cpu", "7".into());
        assert_eq!(
            labels(&s.families[0]),
            vec![vec!["idle", "0"], vec!["user", "0"]]
        );
        assert!(s.families[1].label_keys.is_empty());
        Labels::insert(&mut s, "host", "h".into());
        assert_eq!(labels(&s.families[0])[0], vec!["idle", "0", "h"]);
        assert_eq!(labels(&s.families[1]), vec![vec!["h"]]);
    }

    #[test]
    fn delete_update_and_hash() {
        let mut s = set();
        Labels::update(&mut s, "mode", "x".into());
        Labels::update(&mut s, "absent", "x".into());
        assert_eq!(labels(&s.families[0]), vec![vec!["x", "0"], vec!["x", "0"]]);
        Labels::hash(&mut s, "cpu");
        assert_eq!(
            &*s.families[0].samples[0].labels[1],
            "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9"
        );
        Labels::delete(&mut s, "MODE");
        assert_eq!(s.families[0].label_keys.len(), 1);
        assert_eq!(s.families[0].samples[0].labels.len(), 1);
    }

    #[test]
    fn a_value_with_a_dollar_is_rendered_from_the_tag() {
        let v = LabelValue::Template(Template::parse("$TAG[1]-x").unwrap());
        assert_eq!(&*v.render("metrics.node"), "node-x");
    }
}
