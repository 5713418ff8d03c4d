//! `grep` filter: keep or drop records by matching a key's value against a regex.
//! Fluent Bit: plugins/filter_grep/grep.c
//!
//! Fluent Bit's rules, kept as they are:
//! - `regex KEY REGEX` / `exclude KEY REGEX`: KEY is a record accessor (`log`, `$log`,
//!   `$kubernetes['labels']['app']`, `$items[0]`); the rest of the value after the first
//!   space is the regex, extra spaces included.
//! - Only string values match. A missing key, a number, a boolean, null, a map or an
//!   array never matches (so `regex` drops such records and `exclude` keeps them). A
//!   subkey path on a key that holds a string matches the string itself.
//! - `logical_op legacy` (default) walks the rules in the order written: a `regex` that
//!   does not match drops the record, an `exclude` that matches drops it, and the first
//!   `regex` that matches keeps it without looking at the rules after it.
//! - `logical_op and|or` combine rules of one kind only (all `regex` or all `exclude`);
//!   any other `logical_op` value runs as legacy.

use std::time::Instant;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::Record;
use crate::parser::regex::OnigRegex;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "regex",
        PropKind::Multi,
        None,
        "Keep records in which the content of KEY matches the regular expression.",
    ),
    PropSpec::new(
        "exclude",
        PropKind::Multi,
        None,
        "Exclude records in which the content of KEY matches the regular expression.",
    ),
    PropSpec::new(
        "logical_op",
        PropKind::Str,
        Some("legacy"),
        "Specify whether to use logical conjuciton or disjunction. legacy, AND and OR are allowed.",
    ),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "grep",
    description: "grep events by specified field values",
    props: PROPS,
    build,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Regex,
    Exclude,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogicalOp {
    Legacy,
    And,
    Or,
}

struct Rule {
    kind: Kind,
    key: Accessor,
    regex: OnigRegex,
}

impl Rule {
    fn matches(&self, rec: &Record) -> bool {
        self.key
            .regex_subject(&rec.body)
            .is_some_and(|s| self.regex.is_match(s.as_bytes()))
    }
}

struct GrepFilter {
    rules: Vec<Rule>,
    op: LogicalOp,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let text = props.str("logical_op").unwrap_or("legacy");
    let op = if text.eq_ignore_ascii_case("and") {
        LogicalOp::And
    } else if text.eq_ignore_ascii_case("or") {
        LogicalOp::Or
    } else {
        if !text.eq_ignore_ascii_case("legacy") {
            // Fluent Bit runs any other value as legacy without a word; keep running
            // such configs, but say so.
            crate::warn!(
                "{}: [filter:grep:{}] logical_op '{text}' is not legacy, and or or; running as legacy",
                props.span_of("logical_op"),
                ctx.instance
            );
        }
        LogicalOp::Legacy
    };
    if op != LogicalOp::Legacy {
        crate::info!(
            "[filter:grep:{}] {} mode",
            ctx.instance,
            if op == LogicalOp::And { "AND" } else { "OR" }
        );
    }
    let mut rules: Vec<Rule> = Vec::new();
    for (name, e) in props.multi_entries_of(&["regex", "exclude"]) {
        let kind = if name == "regex" {
            Kind::Regex
        } else {
            Kind::Exclude
        };
        if op != LogicalOp::Legacy {
            if let Some(first) = rules.first().filter(|r| r.kind != kind) {
                let (have, other) = match first.kind {
                    Kind::Regex => ("regex", "exclude"),
                    Kind::Exclude => ("exclude", "regex"),
                };
                return Err(ConfigError::invalid(
                    &e.span,
                    format!(
                        "[filter:grep:{}] Both 'regex' and 'exclude' are set.",
                        ctx.instance
                    ),
                    Some(format!(
                        "with logical_op {text} every rule must be a '{have}'; drop this '{other}' or use logical_op legacy"
                    )),
                ));
            }
        }
        let (field, pattern) = split_rule(&e.value).ok_or_else(|| {
            ConfigError::invalid(
                &e.span,
                format!(
                    "[filter:grep:{}] invalid regex, expected field and regular expression",
                    ctx.instance
                ),
                Some(format!(
                    "write '{name} KEY REGEX', e.g. '{name} log ^error'"
                )),
            )
        })?;
        // Fluent Bit reads a KEY without '$' as the accessor `$KEY`.
        let accessor = if field.starts_with('$') {
            field.to_string()
        } else {
            format!("${field}")
        };
        let key = Accessor::parse(&accessor).map_err(|err| {
            ConfigError::invalid(
                &e.span,
                format!(
                    "[filter:grep:{}] invalid record accessor? '{accessor}'",
                    ctx.instance
                ),
                Some(err),
            )
        })?;
        let regex = OnigRegex::new(pattern).map_err(|err| {
            ConfigError::invalid(
                &e.span,
                format!(
                    "[filter:grep:{}] could not compile regex pattern '{pattern}'",
                    ctx.instance
                ),
                Some(err),
            )
        })?;
        rules.push(Rule { kind, key, regex });
    }
    Ok(Box::new(GrepFilter { rules, op }))
}

/// Splits `KEY REGEX` as Fluent Bit's `flb_utils_split(value, ' ', 1)` does: leading
/// spaces skipped, KEY up to the next space, REGEX everything after that one space.
fn split_rule(value: &str) -> Option<(&str, &str)> {
    let v = value.trim_start_matches(' ');
    let (field, rest) = v.split_once(' ')?;
    (!rest.is_empty()).then_some((field, rest))
}

impl GrepFilter {
    fn keep(&self, rec: &Record) -> bool {
        match self.op {
            LogicalOp::Legacy => {
                for r in &self.rules {
                    match (r.kind, r.matches(rec)) {
                        (Kind::Regex, false) | (Kind::Exclude, true) => return false,
                        (Kind::Regex, true) => return true,
                        (Kind::Exclude, false) => {}
                    }
                }
                true
            }
            LogicalOp::And | LogicalOp::Or => {
                let Some(first) = self.rules.first() else {
                    return true;
                };
                let found = if self.op == LogicalOp::And {
                    self.rules.iter().all(|r| r.matches(rec))
                } else {
                    self.rules.iter().any(|r| r.matches(rec))
                };
                // Every rule has the kind of the first (checked at build).
                match first.kind {
                    Kind::Regex => found,
                    Kind::Exclude => !found,
                }
            }
        }
    }
}

impl Filter for GrepFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        let before = records.len();
        records.retain(|r| self.keep(r));
        if records.len() == before {
            FilterResult::NoTouch
        } else {
            FilterResult::Modified
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{EventTime, Map, Value};

    fn rec(body: Map) -> Record {
        Record::new(EventTime::new(1, 0), body)
    }
    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }
    fn kv(k: &str, v: Value) -> (Arc<str>, Value) {
        (Arc::from(k), v)
    }
    fn rule(kind: Kind, spec: &str) -> Rule {
        let (k, p) = split_rule(spec).unwrap();
        Rule {
            kind,
            key: Accessor::parse(&format!("${}", k.trim_start_matches('$'))).unwrap(),
            regex: OnigRegex::new(p).unwrap(),
        }
    }
    fn filter(op: LogicalOp, rules: Vec<Rule>) -> GrepFilter {
        GrepFilter { rules, op }
    }

    #[test]
    fn split_keeps_extra_spaces_in_the_regex() {
        assert_eq!(split_rule("log ^a"), Some(("log", "^a")));
        assert_eq!(split_rule("log  ^ b"), Some(("log", " ^ b")));
        assert_eq!(split_rule("log"), None);
        assert_eq!(split_rule("log "), None);
    }

    #[test]
    fn only_strings_match() {
        let f = filter(LogicalOp::Legacy, vec![rule(Kind::Regex, "v .")]);
        assert!(f.keep(&rec(vec![kv("v", s("x"))])));
        for v in [
            Value::Int(5),
            Value::Nil,
            Value::Bool(true),
            Value::Map(vec![kv("a", s("x"))]),
            Value::Array(vec![s("x")]),
        ] {
            assert!(!f.keep(&rec(vec![kv("v", v)])));
        }
        assert!(!f.keep(&rec(vec![])));
        let f = filter(LogicalOp::Legacy, vec![rule(Kind::Exclude, "v .")]);
        assert!(f.keep(&rec(vec![kv("v", Value::Int(5))])));
    }

    #[test]
    fn legacy_first_matching_regex_keeps() {
        let f = filter(
            LogicalOp::Legacy,
            vec![rule(Kind::Regex, "a ^x"), rule(Kind::Exclude, "b ^y")],
        );
        assert!(f.keep(&rec(vec![kv("a", s("x")), kv("b", s("y"))])));
        let f = filter(
            LogicalOp::Legacy,
            vec![rule(Kind::Exclude, "b ^y"), rule(Kind::Regex, "a ^x")],
        );
        assert!(!f.keep(&rec(vec![kv("a", s("x")), kv("b", s("y"))])));
    }

    #[test]
    fn and_or() {
        let r = || vec![rule(Kind::Regex, "a ^x"), rule(Kind::Regex, "b ^y")];
        let one = rec(vec![kv("a", s("x")), kv("b", s("n"))]);
        let both = rec(vec![kv("a", s("x")), kv("b", s("y"))]);
        assert!(!filter(LogicalOp::And, r()).keep(&one));
        assert!(filter(LogicalOp::And, r()).keep(&both));
        assert!(filter(LogicalOp::Or, r()).keep(&one));
        let e = || vec![rule(Kind::Exclude, "a ^x"), rule(Kind::Exclude, "b ^y")];
        assert!(filter(LogicalOp::And, e()).keep(&one));
        assert!(!filter(LogicalOp::And, e()).keep(&both));
        assert!(!filter(LogicalOp::Or, e()).keep(&one));
    }
}
