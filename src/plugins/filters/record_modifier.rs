//! `record_modifier` filter: append fixed keys, remove keys, or keep only some keys.
//! Fluent Bit: plugins/filter_record_modifier/filter_modifier.c

use std::sync::Arc;
use std::time::Instant;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{Record, Str, Value};
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "record",
        PropKind::Multi,
        None,
        "Append a key and a value, written 'KEY VALUE'; may be repeated.",
    ),
    PropSpec::new(
        "remove_key",
        PropKind::Multi,
        None,
        "Remove this key when it exists; may be repeated.",
    ),
    PropSpec::new(
        "allowlist_key",
        PropKind::Multi,
        None,
        "Keep only the listed keys; may be repeated.",
    ),
    PropSpec::new(
        "whitelist_key",
        PropKind::Multi,
        None,
        "Alias of allowlist_key.",
    ),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "record_modifier",
    description: "modify record",
    props: PROPS,
    build,
};

struct RecordModifierFilter {
    add: Vec<(Str, Value)>,
    remove: Vec<String>,
    allow: Vec<String>,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let mut add = Vec::new();
    for rule in props.multi("record") {
        let Some((k, v)) = rule.split_once(' ') else {
            return Err(props.error("record", "'KEY VALUE', e.g. 'record hostname ${HOSTNAME}'"));
        };
        add.push((Arc::from(k), Value::Str(Arc::from(v.trim()))));
    }
    let own = |n: &str| {
        props
            .multi(n)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut allow = own("allowlist_key");
    allow.extend(own("whitelist_key"));
    let remove = own("remove_key");
    if !allow.is_empty() && !remove.is_empty() {
        return Err(props.error("remove_key", "either remove_key or allowlist_key, not both"));
    }
    Ok(Box::new(RecordModifierFilter { add, remove, allow }))
}

impl RecordModifierFilter {
    fn apply(&self, rec: &mut Record) {
        if !self.allow.is_empty() {
            rec.body
                .retain(|(k, _)| self.allow.iter().any(|a| **a == **k));
        }
        if !self.remove.is_empty() {
            rec.body
                .retain(|(k, _)| !self.remove.iter().any(|r| **r == **k));
        }
        for (k, v) in &self.add {
            // Fluent Bit appends only keys the record does not have yet.
            if !rec.body.iter().any(|(x, _)| x == k) {
                rec.body.push((k.clone(), v.clone()));
            }
        }
    }
}

impl Filter for RecordModifierFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        records.iter_mut().for_each(|r| self.apply(r));
        FilterResult::Modified
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn rec(pairs: &[(&str, &str)]) -> Record {
        Record::new(
            EventTime::new(1, 0),
            pairs
                .iter()
                .map(|(k, v)| (Arc::from(*k), Value::Str(Arc::from(*v))))
                .collect(),
        )
    }

    fn keys(r: &Record) -> Vec<&str> {
        r.body.iter().map(|(k, _)| &**k).collect()
    }

    #[test]
    fn add_remove_allow() {
        let f = RecordModifierFilter {
            add: vec![
                (Arc::from("host"), Value::Str(Arc::from("n1"))),
                (Arc::from("a"), Value::Nil),
            ],
            remove: vec!["b".into()],
            allow: vec![],
        };
        let mut r = rec(&[("a", "1"), ("b", "2")]);
        f.apply(&mut r);
        assert_eq!(keys(&r), ["a", "host"]);
        let f = RecordModifierFilter {
            add: vec![],
            remove: vec![],
            allow: vec!["b".into()],
        };
        let mut r = rec(&[("a", "1"), ("b", "2")]);
        f.apply(&mut r);
        assert_eq!(keys(&r), ["b"]);
    }
}
