//! YAML `processors:` (Fluent Bit 3+): chains of units attached to one input or one
//! output. A unit is any filter (looked up first, as Fluent Bit does) or a native
//! processor of this module; an optional `condition` limits it to the records that
//! match. Fluent Bit: src/flb_processor.c, src/flb_conditionals.c

pub mod content_modifier;
pub mod labels;
pub mod metrics_selector;

use std::time::Instant;

use crate::config::{ConditionSpec, ConfigError, Entry, PropSpec, RuleSpec};
use crate::event::accessor::Accessor;
use crate::event::format::write_json_value;
use crate::event::metrics::MetricSet;
use crate::event::{Chunk, Map, Record, Value};
use crate::parser::regex::OnigRegex;
use crate::plugins::{BuildFn, Filter, FilterPlugin, FilterResult};

/// Native processors, by Fluent Bit's names (filters are processors too).
pub static PROCESSORS: &[&FilterPlugin] = &[&content_modifier::PLUGIN];

/// The native processor named `name` (case-insensitive).
pub fn processor(name: &str) -> Option<&'static FilterPlugin> {
    PROCESSORS
        .iter()
        .copied()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}

/// A processor of metric sets (Fluent Bit's `cb_process_metrics`), run on each set of
/// its input (before routing) or its output (on that output's copy), in order.
pub trait MetricsProcessor: Send {
    /// The set after this unit. `Err` is Fluent Bit's `FLB_PROCESSOR_FAILURE`: the set
    /// goes no further.
    fn process(&mut self, tag: &str, set: MetricSet) -> Result<MetricSet, String>;
}

pub struct MetricsProcessorPlugin {
    pub name: &'static str,
    pub description: &'static str,
    pub props: &'static [PropSpec],
    pub build: BuildFn<dyn MetricsProcessor>,
}

/// Native processors of metrics, by Fluent Bit's names.
pub static METRICS_PROCESSORS: &[&MetricsProcessorPlugin] =
    &[&labels::PLUGIN, &metrics_selector::PLUGIN];

/// The metrics processor named `name` (case-insensitive).
pub fn metrics_processor(name: &str) -> Option<&'static MetricsProcessorPlugin> {
    METRICS_PROCESSORS
        .iter()
        .copied()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Fluent Bit's `condition`: `op and|or` over rules on the body or the metadata.
pub struct Condition {
    any: bool,
    rules: Vec<Rule>,
}

struct Rule {
    field: Accessor,
    metadata: bool,
    op: Op,
}

enum Op {
    Eq(String),
    Neq(String),
    Gt(f64),
    Lt(f64),
    Gte(f64),
    Lte(f64),
    Regex(OnigRegex),
    NotRegex(OnigRegex),
    In(Vec<String>),
    NotIn(Vec<String>),
}

fn bad(span: &crate::config::Span, message: String, hint: &str) -> ConfigError {
    ConfigError::Invalid {
        span: span.clone(),
        message: format!("[processor] {message}"),
        hint: Some(hint.into()),
    }
}

impl Condition {
    pub fn from_spec(spec: &ConditionSpec) -> Result<Condition, ConfigError> {
        let any = match &spec.op {
            None => false,
            Some(e) if e.value.eq_ignore_ascii_case("and") => false,
            Some(e) if e.value.eq_ignore_ascii_case("or") => true,
            Some(e) => {
                return Err(bad(
                    &e.span,
                    format!("invalid condition operator '{}'", e.value),
                    "write 'op: and' (every rule) or 'op: or' (any rule)",
                ))
            }
        };
        let rules = spec
            .rules
            .iter()
            .map(Rule::from_spec)
            .collect::<Result<_, _>>()?;
        Ok(Condition { any, rules })
    }

    /// Whether `rec` matches: every rule (`and`) or any rule (`or`).
    /// `scratch` holds each rule's rendered field (reused across records).
    pub fn matches(&self, rec: &Record, scratch: &mut String) -> bool {
        let mut eval = |r: &Rule| r.matches(rec, scratch);
        if self.any {
            self.rules.iter().any(&mut eval)
        } else {
            self.rules.iter().all(&mut eval)
        }
    }
}

impl Rule {
    fn from_spec(spec: &RuleSpec) -> Result<Rule, ConfigError> {
        let one = |key: &str| spec.entries.iter().find(|e| e.key == key);
        let need = |key: &str| {
            one(key).ok_or_else(|| {
                bad(
                    &spec.span,
                    format!("condition rule missing '{key}' property"),
                    "a rule has 'field', 'op' and 'value', e.g. {field: \"$level\", op: eq, value: error}",
                )
            })
        };
        let field: &Entry = need("field")?;
        if !field.value.trim_start().starts_with('$') {
            return Err(bad(
                &field.span,
                format!("condition field '{}' is not a record accessor", field.value),
                "write the key with a '$', e.g. '$level' or \"$kubernetes['namespace_name']\"",
            ));
        }
        let field_acc = Accessor::parse(&field.value)
            .map_err(|e| bad(&field.span, e, "write e.g. '$level' or \"$a['b']\""))?;
        let op_entry = need("op")?;
        let value = need("value")?;
        let values: Vec<String> = spec
            .entries
            .iter()
            .filter(|e| e.key == "value")
            .map(|e| e.value.clone())
            .collect();
        let op_name = op_entry.value.to_ascii_lowercase();
        let list_op = op_name == "in" || op_name == "not_in";
        if list_op && !spec.value_is_list {
            return Err(bad(
                &value.span,
                format!("'{op_name}' requires a list of values"),
                "write 'value: [a, b]'",
            ));
        }
        if !list_op && spec.value_is_list {
            return Err(bad(
                &value.span,
                "array values can only be used with 'in' or 'not_in' operators".into(),
                "write one value, or use 'op: in'",
            ));
        }
        let number = || {
            value.value.trim().parse::<f64>().map_err(|_| {
                bad(
                    &value.span,
                    format!("'{op_name}' compares numbers; '{}' is not one", value.value),
                    "write a number, e.g. 'value: 100'",
                )
            })
        };
        let regex = || {
            OnigRegex::new(&value.value).map_err(|e| {
                bad(
                    &value.span,
                    format!("invalid regex '{}': {e}", value.value),
                    "fix the regular expression",
                )
            })
        };
        let nonempty = || {
            if value.value.is_empty() {
                Err(bad(
                    &value.span,
                    format!("'{op_name}' needs a non-empty value"),
                    "write the value to compare with",
                ))
            } else {
                Ok(value.value.clone())
            }
        };
        let op = match op_name.as_str() {
            "eq" => Op::Eq(nonempty()?),
            "neq" => Op::Neq(nonempty()?),
            "gt" => Op::Gt(number()?),
            "lt" => Op::Lt(number()?),
            "gte" => Op::Gte(number()?),
            "lte" => Op::Lte(number()?),
            "regex" => Op::Regex(regex()?),
            "not_regex" => Op::NotRegex(regex()?),
            "in" => Op::In(values),
            "not_in" => Op::NotIn(values),
            other => {
                return Err(bad(
                    &op_entry.span,
                    format!("invalid rule operator '{other}'"),
                    "use eq, neq, gt, lt, gte, lte, regex, not_regex, in or not_in",
                ))
            }
        };
        let metadata = match one("context") {
            None => false,
            Some(c) if c.value.eq_ignore_ascii_case("body") => false,
            Some(c) if c.value.eq_ignore_ascii_case("metadata") => true,
            Some(c) => {
                return Err(bad(
                    &c.span,
                    format!("unknown rule context '{}'", c.value),
                    "use 'context: body' (the default) or 'context: metadata'",
                ))
            }
        };
        Ok(Rule {
            field: field_acc,
            metadata,
            op,
        })
    }

    fn matches(&self, rec: &Record, s: &mut String) -> bool {
        let map = if self.metadata {
            &rec.metadata
        } else {
            &rec.body
        };
        // The field as Fluent Bit's record accessor renders it: a missing key is "",
        // an array cannot be rendered (the rule is false).
        if !render(self.field.get(map), s) {
            return false;
        }
        let num = || atof(s);
        match &self.op {
            Op::Eq(v) => s == v,
            Op::Neq(v) => s != v,
            Op::Gt(n) => num() > *n,
            Op::Lt(n) => num() < *n,
            Op::Gte(n) => num() >= *n,
            Op::Lte(n) => num() <= *n,
            Op::Regex(r) => r.is_match(s.as_bytes()),
            Op::NotRegex(r) => !r.is_match(s.as_bytes()),
            Op::In(vs) => vs.iter().any(|v| v == s),
            Op::NotIn(vs) => !vs.iter().any(|v| v == s),
        }
    }
}

/// `v` as text the way Fluent Bit's cfl record accessor translates it; `false` when it
/// cannot (an array).
fn render(v: Option<&Value>, s: &mut String) -> bool {
    use std::fmt::Write as _;
    s.clear();
    match v {
        None => {}
        Some(Value::Str(x)) => s.push_str(x),
        Some(Value::Bin(b)) => s.push_str(&String::from_utf8_lossy(b)),
        Some(Value::Int(i)) => {
            let _ = write!(s, "{i}");
        }
        Some(Value::UInt(u)) => {
            let _ = write!(s, "{}", *u as i64);
        }
        Some(Value::Float(f)) => {
            let _ = write!(s, "{f:.6}");
        }
        Some(Value::Bool(b)) => s.push_str(if *b { "true" } else { "false" }),
        Some(Value::Nil) => s.push_str("null"),
        Some(m @ Value::Map(_)) => {
            let mut out = Vec::new();
            write_json_value(&mut out, m, false);
            s.push_str(&String::from_utf8_lossy(&out));
        }
        Some(Value::Array(_)) => return false,
    }
    true
}

/// C's `atof`: the longest leading number, 0 when there is none.
fn atof(s: &str) -> f64 {
    let t = s.trim_start();
    let b = t.as_bytes();
    let mut end = 0;
    let mut best = 0.0;
    // Try every prefix that could be a number and keep the longest that parses.
    while end < b.len() && (b[end].is_ascii_digit() || b"+-.eE".contains(&b[end])) {
        end += 1;
        if let Ok(v) = t[..end].parse::<f64>() {
            best = v;
        }
    }
    best
}

/// A unit with a `condition`: records that do not match pass it untouched, in place.
pub struct Conditional {
    condition: Condition,
    inner: Box<dyn Filter>,
    scratch: String,
}

impl Conditional {
    pub fn new(condition: Condition, inner: Box<dyn Filter>) -> Conditional {
        Conditional {
            condition,
            inner,
            scratch: String::new(),
        }
    }
}

impl Filter for Conditional {
    fn filter(&mut self, tag: &str, records: &mut Vec<Record>, now: Instant) -> FilterResult {
        let scratch = &mut self.scratch;
        let hits: Vec<bool> = records
            .iter()
            .map(|r| self.condition.matches(r, scratch))
            .collect();
        if !hits.contains(&true) {
            return FilterResult::NoTouch;
        }
        if !hits.contains(&false) {
            return self.inner.filter(tag, records, now);
        }
        // Runs of matching records go through the unit together; the rest keep their
        // places between them.
        let mut out = Vec::with_capacity(records.len());
        let mut run = Vec::new();
        let mut result = FilterResult::NoTouch;
        for (rec, hit) in records.drain(..).zip(hits) {
            if hit {
                run.push(rec);
                continue;
            }
            if !run.is_empty() {
                result = result.then(self.inner.filter(tag, &mut run, now));
                out.append(&mut run);
            }
            out.push(rec);
        }
        if !run.is_empty() {
            result = result.then(self.inner.filter(tag, &mut run, now));
            out.append(&mut run);
        }
        *records = out;
        result
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Chunk>) {
        self.inner.tick(now, out)
    }

    fn shutdown(&mut self, now: Instant, out: &mut Vec<Chunk>) {
        self.inner.shutdown(now, out)
    }

    fn emitter(&mut self) -> Option<&mut crate::pipeline::emitter::Emitter> {
        self.inner.emitter()
    }
}

/// SHA-256 of `s` in lowercase hex (Fluent Bit's `hash` actions: `flb_hash_simple`
/// then `hex_encode`).
pub(crate) fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(s.as_bytes()) {
        hex.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        hex.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    hex
}

/// The first pair of `map` whose key is `key` (cfl's kvlist lookup).
pub(crate) fn position(map: &Map, key: &str) -> Option<usize> {
    map.iter().position(|(k, _)| **k == *key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Span;
    use crate::event::EventTime;
    use std::sync::Arc;

    fn entry(k: &str, v: &str) -> Entry {
        Entry {
            key: k.into(),
            value: v.into(),
            span: Span::new("c.yaml", 1),
        }
    }

    fn rule(field: &str, op: &str, values: &[&str], list: bool) -> RuleSpec {
        let mut entries = vec![entry("field", field), entry("op", op)];
        entries.extend(values.iter().map(|v| entry("value", v)));
        RuleSpec {
            span: Span::new("c.yaml", 1),
            entries,
            value_is_list: list,
        }
    }

    fn cond(op: &str, rules: Vec<RuleSpec>) -> Result<Condition, ConfigError> {
        Condition::from_spec(&ConditionSpec {
            span: Span::new("c.yaml", 1),
            op: Some(entry("op", op)),
            rules,
        })
    }

    fn rec(pairs: &[(&str, Value)]) -> Record {
        Record::new(
            EventTime::new(1, 0),
            pairs
                .iter()
                .map(|(k, v)| (Arc::from(*k), v.clone()))
                .collect(),
        )
    }

    fn s(x: &str) -> Value {
        Value::Str(Arc::from(x))
    }

    #[test]
    fn rules_compare_the_rendered_field() {
        let r = rec(&[
            ("level", s("error")),
            ("n", Value::UInt(150)),
            ("f", Value::Float(1.5)),
        ]);
        let yes = |c: Condition| assert!(c.matches(&r, &mut String::new()));
        let no = |c: Condition| assert!(!c.matches(&r, &mut String::new()));
        yes(cond("and", vec![rule("$level", "eq", &["error"], false)]).unwrap());
        no(cond("and", vec![rule("$level", "neq", &["error"], false)]).unwrap());
        yes(cond("and", vec![rule("$n", "gt", &["100"], false)]).unwrap());
        no(cond("and", vec![rule("$n", "lte", &["100"], false)]).unwrap());
        yes(cond("and", vec![rule("$f", "eq", &["1.500000"], false)]).unwrap());
        yes(cond("and", vec![rule("$level", "regex", &["^err"], false)]).unwrap());
        yes(cond("and", vec![rule("$level", "in", &["warn", "error"], true)]).unwrap());
        yes(cond("and", vec![rule("$level", "not_in", &["warn"], true)]).unwrap());
        // A missing key renders as "": neq is true, eq is false.
        yes(cond("and", vec![rule("$nope", "neq", &["x"], false)]).unwrap());
        no(cond(
            "and",
            vec![
                rule("$level", "eq", &["error"], false),
                rule("$nope", "eq", &["x"], false),
            ],
        )
        .unwrap());
        yes(cond(
            "or",
            vec![
                rule("$level", "eq", &["info"], false),
                rule("$n", "gte", &["150"], false),
            ],
        )
        .unwrap());
    }

    #[test]
    fn bad_conditions_are_config_errors() {
        let msg = |c: Result<Condition, ConfigError>| c.err().unwrap().to_string();
        assert!(msg(cond("xor", vec![rule("$a", "eq", &["1"], false)])).contains("'xor'"));
        assert!(msg(cond("and", vec![rule("$a", "like", &["1"], false)])).contains("'like'"));
        assert!(msg(cond("and", vec![rule("a", "eq", &["1"], false)]))
            .contains("not a record accessor"));
        assert!(msg(cond("and", vec![rule("$a", "in", &["1"], false)])).contains("list"));
        assert!(msg(cond("and", vec![rule("$a", "eq", &["1", "2"], true)])).contains("array"));
        assert!(msg(cond("and", vec![rule("$a", "gt", &["lots"], false)])).contains("number"));
        assert!(msg(cond("and", vec![rule("$a", "regex", &["("], false)])).contains("regex"));
    }

    #[test]
    fn atof_reads_a_leading_number() {
        assert_eq!(atof("12abc"), 12.0);
        assert_eq!(atof(" -1.5e2x"), -150.0);
        assert_eq!(atof("abc"), 0.0);
        assert_eq!(atof(""), 0.0);
    }
}
