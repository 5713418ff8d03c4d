//! `nest` filter: move top-level keys into a map (`nest`), or a map's keys up to the top
//! level (`lift`), optionally adding or removing a key prefix on the moved keys.
//! Fluent Bit: plugins/filter_nest/nest.c
//!
//! Key order is Fluent Bit's: `nest` writes the keys it keeps in record order, then the
//! `nest_under` key holding the nested keys in record order (not wildcard order); a
//! `nest_under` key that already exists and is not nested stays, so the key repeats.
//! `lift` writes the keys it keeps, then the contents of every map under `nested_under`
//! (each one when the key repeats). A `nested_under` key that holds no map is kept as it
//! is, with Fluent Bit's warning. A record with nothing to move is left untouched.

use std::time::Instant;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{Map, Record, Str, Value};
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "operation",
        PropKind::Str,
        None,
        "Select the operation nest or lift",
    ),
    PropSpec::new(
        "wildcard",
        PropKind::Multi,
        None,
        "Nest records which field matches the wildcard",
    ),
    PropSpec::new(
        "nest_under",
        PropKind::Str,
        None,
        "Nest records matching the Wildcard under this key",
    ),
    PropSpec::new(
        "nested_under",
        PropKind::Str,
        None,
        "Lift records nested under the Nested_under key",
    ),
    PropSpec::new(
        "add_prefix",
        PropKind::Str,
        None,
        "Prefix affected keys with this string",
    ),
    PropSpec::new(
        "remove_prefix",
        PropKind::Str,
        None,
        "Remove prefix from affected keys if it matches this string",
    ),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "nest",
    description: "nest events by specified field values",
    props: PROPS,
    build,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Nest,
    Lift,
}

/// One `wildcard`: a key, or a key prefix when it ended in `*`.
#[derive(Debug, PartialEq, Eq)]
struct Wildcard {
    key: String,
    prefix: bool,
}

impl Wildcard {
    fn new(text: &str) -> Wildcard {
        match text.strip_suffix('*') {
            Some(p) => Wildcard {
                key: p.to_string(),
                prefix: true,
            },
            None => Wildcard {
                key: text.to_string(),
                prefix: false,
            },
        }
    }
    fn matches(&self, key: &str) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Rename {
    Keep,
    Add(String),
    Remove(String),
}

struct NestFilter {
    /// The instance name for warnings (`nest.0`, or the alias).
    name: String,
    operation: Operation,
    wildcards: Vec<Wildcard>,
    /// `nest_under` or `nested_under`: Fluent Bit keeps one key for both.
    key: Str,
    rename: Rename,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let name = ctx.instance;
    // Fluent Bit compares the first four bytes, case-sensitively; a missing operation
    // runs as nest.
    let operation = match props.str("operation") {
        None => Operation::Nest,
        Some(t) if t.starts_with("nest") => Operation::Nest,
        Some(t) if t.starts_with("lift") => Operation::Lift,
        Some(t) => {
            return Err(ConfigError::invalid(
                props.span_of("operation"),
                format!(
                    "[filter:nest:{name}] Key \"operation\" has invalid value '{t}'. Expected 'nest' or 'lift'"
                ),
                Some("write 'operation nest' or 'operation lift' (lowercase)".into()),
            ))
        }
    };
    if props.is_set("add_prefix") && props.is_set("remove_prefix") {
        return Err(ConfigError::invalid(
            props.span_of("remove_prefix"),
            format!("[filter:nest:{name}] Add_prefix and Remove_prefix are exclusive"),
            Some(format!(
                "keep either 'add_prefix' (line {}) or 'remove_prefix'",
                props.span_of("add_prefix").line
            )),
        ));
    }
    let rename = match (props.str("add_prefix"), props.str("remove_prefix")) {
        (Some(p), _) => Rename::Add(p.to_string()),
        (_, Some(p)) => Rename::Remove(p.to_string()),
        _ => Rename::Keep,
    };
    // Both properties set the same key in Fluent Bit; the one written last wins.
    let key = props
        .multi_entries_of(&["nest_under", "nested_under"])
        .last()
        .map(|(_, e)| e.value.as_str());
    let key = match (key, operation) {
        (Some(k), _) => k,
        (None, Operation::Nest) => {
            // Fluent Bit packs a record it cannot finish here and loses it.
            return Err(ConfigError::invalid(
                props.span(),
                format!("[filter:nest:{name}] operation nest needs 'nest_under'"),
                Some("add 'nest_under KEY', the key that will hold the nested map".into()),
            ));
        }
        (None, Operation::Lift) => {
            crate::warn!(
                "{}: [filter:nest:{name}] operation lift without 'nested_under' lifts nothing; add 'nested_under KEY'",
                props.span()
            );
            ""
        }
    };
    let wildcards = props
        .multi("wildcard")
        .into_iter()
        .map(Wildcard::new)
        .collect();
    Ok(Box::new(NestFilter {
        name: name.to_string(),
        operation,
        wildcards,
        key: Str::from(key),
        rename,
    }))
}

impl NestFilter {
    fn to_nest(&self, key: &str) -> bool {
        self.wildcards.iter().any(|w| w.matches(key))
    }

    fn renamed(&self, key: Str) -> Str {
        match &self.rename {
            Rename::Keep => key,
            Rename::Add(p) => {
                let mut s = String::with_capacity(p.len() + key.len());
                s.push_str(p);
                s.push_str(&key);
                Str::from(s)
            }
            Rename::Remove(p) => match key.strip_prefix(p.as_str()) {
                Some(rest) => Str::from(rest),
                None => key,
            },
        }
    }

    /// Whether the record changed.
    fn nest(&self, body: &mut Map) -> bool {
        let n = body.iter().filter(|(k, _)| self.to_nest(k)).count();
        if n == 0 {
            return false;
        }
        let old = std::mem::replace(body, Vec::with_capacity(body.len() - n + 1));
        let mut nested = Vec::with_capacity(n);
        for (k, v) in old {
            if self.to_nest(&k) {
                nested.push((self.renamed(k), v));
            } else {
                body.push((k, v));
            }
        }
        body.push((self.key.clone(), Value::Map(nested)));
        true
    }

    fn is_lift_key(&self, key: &str) -> bool {
        *key == *self.key
    }

    /// Whether the record changed.
    fn lift(&self, body: &mut Map) -> bool {
        let mut maps = 0;
        let mut inner = 0;
        for (k, v) in body.iter() {
            if self.is_lift_key(k) {
                match v {
                    Value::Map(m) => {
                        maps += 1;
                        inner += m.len();
                    }
                    _ => crate::warn!(
                        "[filter:nest:{}] Value of key '{}' is not a map. Will not attempt to lift from here",
                        self.name,
                        k
                    ),
                }
            }
        }
        if maps == 0 {
            return false;
        }
        let old = std::mem::replace(body, Vec::with_capacity(body.len() - maps + inner));
        let mut lifted = Vec::with_capacity(maps);
        for (k, v) in old {
            match v {
                Value::Map(m) if self.is_lift_key(&k) => lifted.push(m),
                v => body.push((k, v)),
            }
        }
        for m in lifted {
            body.extend(m.into_iter().map(|(k, v)| (self.renamed(k), v)));
        }
        true
    }
}

impl Filter for NestFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        let mut changed = false;
        for r in records.iter_mut() {
            changed |= match self.operation {
                Operation::Nest => self.nest(&mut r.body),
                Operation::Lift => self.lift(&mut r.body),
            };
        }
        FilterResult::modified_if(changed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }
    fn kv(k: &str, v: Value) -> (Str, Value) {
        (Arc::from(k), v)
    }
    fn keys(m: &Map) -> Vec<&str> {
        m.iter().map(|(k, _)| &**k).collect()
    }
    fn filter(op: Operation, wildcards: &[&str], key: &str, rename: Rename) -> NestFilter {
        NestFilter {
            name: "nest.0".into(),
            operation: op,
            wildcards: wildcards.iter().map(|w| Wildcard::new(w)).collect(),
            key: Str::from(key),
            rename,
        }
    }

    #[test]
    fn wildcards() {
        assert!(Wildcard::new("k_*").matches("k_one"));
        assert!(Wildcard::new("k_*").matches("k_"));
        assert!(!Wildcard::new("k_*").matches("k"));
        assert!(Wildcard::new("*").matches("anything"));
        assert!(Wildcard::new("log").matches("log"));
        assert!(!Wildcard::new("log").matches("logs"));
    }

    #[test]
    fn nest_keeps_record_order_and_appends_the_map() {
        let f = filter(Operation::Nest, &["other", "k*"], "z", Rename::Keep);
        let mut body = vec![
            kv("k1", s("1")),
            kv("log", s("a")),
            kv("other", s("x")),
            kv("z", s("old")),
        ];
        assert!(f.nest(&mut body));
        assert_eq!(keys(&body), ["log", "z", "z"]);
        let Value::Map(m) = &body[2].1 else { panic!() };
        assert_eq!(keys(m), ["k1", "other"]);
        let mut none = vec![kv("log", s("a"))];
        assert!(!f.nest(&mut none));
    }

    #[test]
    fn lift_with_prefixes_and_non_maps() {
        let f = filter(Operation::Lift, &[], "kube", Rename::Add("kube.".into()));
        let mut body = vec![
            kv("kube", Value::Map(vec![kv("pod", s("p"))])),
            kv("log", s("a")),
            kv("kube", Value::Map(vec![kv("ns", s("n"))])),
        ];
        assert!(f.lift(&mut body));
        assert_eq!(keys(&body), ["log", "kube.pod", "kube.ns"]);
        let f = filter(Operation::Lift, &[], "kube", Rename::Remove("k_".into()));
        let mut body = vec![kv(
            "kube",
            Value::Map(vec![kv("k_a", s("A")), kv("b", s("B"))]),
        )];
        assert!(f.lift(&mut body));
        assert_eq!(keys(&body), ["a", "b"]);
        let mut plain = vec![kv("kube", s("not a map"))];
        assert!(!f.lift(&mut plain));
        assert_eq!(keys(&plain), ["kube"]);
    }
}
