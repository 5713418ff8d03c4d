//! `expect` filter: checks that records have the keys and values a pipeline expects,
//! and warns, stops the agent, or marks each record with the result.
//! Fluent Bit: plugins/filter_expect/expect.c
//!
//! Fluent Bit's behaviour, kept as it is:
//! - Rules run in the order written; the first that fails is reported at error level
//!   with the record as JSON (`Record content:` and the JSON on the next line), and the
//!   record fails. Rules are numbered from 0, and an `action` line takes a number too.
//! - KEY is a record accessor (`color`, `$label['name']`); a key holding an array
//!   counts as missing, a key holding null exists. `key_val_eq KEY VALUE` compares
//!   strings only: a number or a boolean passes whatever VALUE says. A missing key in
//!   `key_val_eq` is reported under the name `key_val_is_null`, as Fluent Bit does.
//! - `action warn` (default) adds `expect check failed` per failed record; `exit` stops
//!   the agent at the first failed record (a graceful shutdown: what was read is still
//!   delivered) and it exits with status 255; `result_key` adds `result_key` (default
//!   `matched`) as the first key of every record, true or false.
//! - Difference on purpose: `key_val_eq` without a VALUE is a config error (Fluent Bit
//!   expects the key's own name as the value).

use std::sync::Arc;
use std::time::Instant;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::format::write_json_value;
use crate::event::template::Template;
use crate::event::{Map, Record, Str, Value};
use crate::pipeline::shutdown::ExitRequest;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

const RULES: &[&str] = &[
    "key_exists",
    "key_not_exists",
    "key_val_is_null",
    "key_val_is_not_null",
    "key_val_eq",
];

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "key_exists",
        PropKind::Multi,
        None,
        "check that the given key name exists in the record",
    ),
    PropSpec::new(
        "key_not_exists",
        PropKind::Multi,
        None,
        "check that the given key name do not exists in the record",
    ),
    PropSpec::new(
        "key_val_is_null",
        PropKind::Multi,
        None,
        "check that the value of the key is NULL",
    ),
    PropSpec::new(
        "key_val_is_not_null",
        PropKind::Multi,
        None,
        "check that the value of the key is NOT NULL",
    ),
    PropSpec::new(
        "key_val_eq",
        PropKind::Multi,
        None,
        "check that the value of the key equals the given value",
    ),
    PropSpec::new(
        "action",
        PropKind::Str,
        Some("warn"),
        "action to take when a rule does not match: 'warn', 'exit' or 'result_key'.",
    ),
    PropSpec::new(
        "result_key",
        PropKind::Str,
        Some("matched"),
        "specify the key name to append a boolean that indicates rule is matched or not. This key is to be used only when 'action' is 'result_key'.",
    ),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "expect",
    description: "Validate expected keys and values",
    props: PROPS,
    build,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Warn,
    Exit,
    ResultKey,
}

#[derive(Debug)]
enum Check {
    Exists,
    NotExists,
    IsNull,
    IsNotNull,
    Eq(String),
    /// An `action` line: Fluent Bit makes it a rule that checks nothing but takes a
    /// number.
    Action,
}

#[derive(Debug)]
struct Rule {
    check: Check,
    key: Option<Accessor>,
    /// The value as written (`key_val_eq`: KEY and VALUE), for the messages.
    value: String,
}

struct ExpectFilter {
    name: Arc<str>,
    rules: Vec<Rule>,
    action: Action,
    result_key: Str,
    escape_unicode: bool,
    exit: ExitRequest,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let name: Arc<str> = Arc::from(ctx.instance);
    let text = props.str("action").unwrap_or("warn");
    let action = match text.to_ascii_lowercase().as_str() {
        "warn" => Action::Warn,
        "exit" => Action::Exit,
        "result_key" => Action::ResultKey,
        _ => {
            return Err(ConfigError::invalid(
                props.span_of("action"),
                format!("[filter:expect:{name}] unexpected 'action' value '{text}'"),
                Some("action is warn, exit or result_key".into()),
            ))
        }
    };
    let mut names: Vec<&str> = RULES.to_vec();
    names.push("action");
    let mut rules = Vec::new();
    for (kind, e) in props.multi_entries_of(&names) {
        let value = e.value.clone();
        let (check, key_text) = match kind {
            "key_exists" => (Check::Exists, value.as_str()),
            "key_not_exists" => (Check::NotExists, value.as_str()),
            "key_val_is_null" => (Check::IsNull, value.as_str()),
            "key_val_is_not_null" => (Check::IsNotNull, value.as_str()),
            "key_val_eq" => {
                // flb_slist_split_string(value, ' ', 1): KEY, then the rest.
                let v = value.trim_start_matches(' ');
                match v.split_once(' ') {
                    Some((k, rest)) if !rest.trim_start_matches(' ').is_empty() => {
                        (Check::Eq(rest.trim_start_matches(' ').to_string()), k)
                    }
                    _ => {
                        return Err(ConfigError::invalid(
                            &e.span,
                            format!("[filter:expect:{name}] key_val_eq '{value}' has no value to compare with"),
                            Some("write 'key_val_eq KEY VALUE', e.g. 'key_val_eq $label['name'] abc'".into()),
                        ))
                    }
                }
            }
            _ => {
                rules.push(Rule {
                    check: Check::Action,
                    key: None,
                    value,
                });
                continue;
            }
        };
        let Some(key) = Template::parse(key_text).ok().and_then(|t| t.first_key()) else {
            return Err(ConfigError::invalid(
                &e.span,
                format!("[filter:expect:{name}] error processing accessor key '{key_text}'"),
                Some(
                    "a key is a name or a record accessor: color, $label['name'], $items[0]".into(),
                ),
            ));
        };
        rules.push(Rule {
            check,
            key: Some(key),
            value,
        });
    }
    if rules.is_empty() {
        crate::warn!("[filter:expect:{name}] no rules has been defined");
    }
    Ok(Box::new(ExpectFilter {
        name,
        rules,
        action,
        result_key: Str::from(props.str("result_key").unwrap_or("matched")),
        escape_unicode: ctx.service.escape_unicode,
        exit: ctx.exit.clone(),
    }))
}

/// `ra_value_type_to_str`: what Fluent Bit calls the type of a value (a map is a
/// boolean to it).
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) | Value::Map(_) => "boolean",
        Value::Int(_) | Value::UInt(_) => "integer",
        Value::Float(_) => "float / double",
        Value::Str(_) => "string",
        Value::Nil => "null",
        Value::Bin(_) | Value::Array(_) => "UNKNOWN",
    }
}

impl ExpectFilter {
    fn json(&self, body: &Map) -> String {
        let mut out = Vec::new();
        write_json_value(&mut out, &Value::Map(body.clone()), self.escape_unicode);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `rule_apply`: whether every rule holds; the first that does not is logged.
    fn check(&self, body: &Map) -> bool {
        for (n, r) in self.rules.iter().enumerate() {
            let val = r.key.as_ref().and_then(|k| k.ra_value(body));
            let failure = match (&r.check, val) {
                (Check::Action, _) => None,
                (Check::Exists, Some(_)) | (Check::NotExists, None) => None,
                (Check::Exists, None) => Some(format!("'key_exists', key '{}' not found", r.value)),
                (Check::NotExists, Some(_)) => {
                    Some(format!("'key_not_exists', key '{}' exists", r.value))
                }
                (Check::IsNull, None) => {
                    Some(format!("'key_val_is_null', key '{}' not found", r.value))
                }
                (Check::IsNull, Some(v)) if *v != Value::Nil => Some(format!(
                    "'key_val_is_null', key '{}' contains a value type '{}'",
                    r.value,
                    type_name(v)
                )),
                (Check::IsNotNull, None) => Some(format!(
                    "'key_val_is_not_null', key '{}' not found",
                    r.value
                )),
                (Check::IsNotNull, Some(Value::Nil)) => Some(format!(
                    "'key_val_is_not_null', key '{}' contains a value type 'null'",
                    r.value
                )),
                (Check::Eq(_), None) => {
                    Some(format!("'key_val_is_null', key '{}' not found", r.value))
                }
                (Check::Eq(want), Some(Value::Str(s))) if **s != **want => Some(format!(
                    "'key_val_eq', key value '{s}' is different than expected: '{want}'"
                )),
                _ => None,
            };
            if let Some(what) = failure {
                crate::error!(
                    "[filter:expect:{}] exception on rule #{n} {what}. Record content:\n{}",
                    self.name,
                    self.json(body)
                );
                return false;
            }
        }
        true
    }
}

impl Filter for ExpectFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        match self.action {
            Action::Warn => {
                for r in records.iter() {
                    if !self.check(&r.body) {
                        crate::warn!("[filter:expect:{}] expect check failed", self.name);
                    }
                }
                FilterResult::NoTouch
            }
            Action::Exit => {
                if let Some(_failed) = records.iter().find(|r| !self.check(&r.body)) {
                    self.exit.exit(255);
                }
                FilterResult::NoTouch
            }
            Action::ResultKey => {
                for r in records.iter_mut() {
                    let ok = self.check(&r.body);
                    r.body.insert(0, (self.result_key.clone(), Value::Bool(ok)));
                }
                FilterResult::Modified
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn filter(rules: &[(&str, &str)], action: Action) -> ExpectFilter {
        ExpectFilter {
            name: Arc::from("expect.0"),
            rules: rules
                .iter()
                .map(|(kind, v)| {
                    let (check, k) = match *kind {
                        "key_exists" => (Check::Exists, *v),
                        "key_not_exists" => (Check::NotExists, *v),
                        "key_val_is_null" => (Check::IsNull, *v),
                        "key_val_is_not_null" => (Check::IsNotNull, *v),
                        "key_val_eq" => {
                            let (k, want) = v.split_once(' ').unwrap();
                            (Check::Eq(want.to_string()), k)
                        }
                        _ => (Check::Action, ""),
                    };
                    Rule {
                        key: Template::parse(k).ok().and_then(|t| t.first_key()),
                        check,
                        value: v.to_string(),
                    }
                })
                .collect(),
            action,
            result_key: Str::from("matched"),
            escape_unicode: true,
            exit: ExitRequest::new(),
        }
    }

    fn body(json: &str) -> Map {
        match Value::from_json(&serde_json::from_str(json).unwrap()) {
            Value::Map(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn checks() {
        let f = filter(
            &[
                ("key_exists", "$label['name']"),
                ("key_not_exists", "nope"),
                ("key_val_is_not_null", "color"),
                ("key_val_eq", "color red"),
            ],
            Action::Warn,
        );
        assert!(f.check(&body(r#"{"color":"red","label":{"name":null}}"#)));
        assert!(!f.check(&body(r#"{"color":"blue","label":{"name":1}}"#)));
        assert!(!f.check(&body(r#"{"color":"red","label":{}}"#)));
        assert!(!f.check(&body(r#"{"color":null,"label":{"name":1}}"#)));
        // key_val_eq compares strings only.
        assert!(f.check(&body(r#"{"color":5,"label":{"name":1}}"#)));
        // An array is no value: it does not exist.
        let f = filter(&[("key_exists", "a")], Action::Warn);
        assert!(!f.check(&body(r#"{"a":[1]}"#)));
        assert_eq!(type_name(&Value::Map(vec![])), "boolean");
    }

    #[test]
    fn result_key_goes_first_and_exit_asks_for_255() {
        let mut f = filter(&[("key_exists", "a")], Action::ResultKey);
        let mut records = vec![
            Record::new(EventTime::new(1, 0), body(r#"{"a":1}"#)),
            Record::new(EventTime::new(1, 0), body(r#"{"b":1}"#)),
        ];
        assert_eq!(
            f.filter("t", &mut records, Instant::now()),
            FilterResult::Modified
        );
        assert_eq!(
            records[0].body[0],
            (Str::from("matched"), Value::Bool(true))
        );
        assert_eq!(
            records[1].body[0],
            (Str::from("matched"), Value::Bool(false))
        );
        let mut f = filter(&[("key_exists", "a")], Action::Exit);
        records.truncate(1);
        f.filter("t", &mut records, Instant::now());
        assert_eq!(f.exit.status(), None);
        let mut bad = vec![Record::new(EventTime::new(1, 0), body(r#"{"b":1}"#))];
        f.filter("t", &mut bad, Instant::now());
        assert_eq!(f.exit.status(), Some(255));
    }
}
