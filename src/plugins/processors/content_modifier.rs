//! `content_modifier` processor, for logs: one action on one key of the record body
//! (or of its metadata) — insert, upsert, delete, rename, hash (SHA-256, hex),
//! extract (named regex captures become keys) or convert (string, int, double,
//! boolean). Keys are plain top-level keys, as in Fluent Bit.
//! Fluent Bit: plugins/processor_content_modifier/{cm_config.c,cm_logs.c,cm_utils.c}
//!
//! Key order is Fluent Bit's: insert, upsert, extract and convert append the key at
//! the end (upsert and convert remove the old pair first); rename and hash change the
//! pair in place. When an action cannot apply to a record (extract on a missing or
//! non-string key, a value that does not convert), that record is left as it is and
//! the next records are still processed; Fluent Bit stops processing the chunk there
//! (and later units see a mix), which only shapes records by their chunk neighbours.

use std::sync::Arc;
use std::time::Instant;

use super::position;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{Map, Record, Str, Value};
use crate::parser::regex::OnigRegex;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("context", PropKind::Str, None, "Context where the action will be applied: body (also message, record; the default) or metadata (also attributes)."),
    PropSpec::new("action", PropKind::Str, None, "Action to perform over the content: insert, upsert, delete, rename, hash, extract or convert."),
    PropSpec::new("key", PropKind::Str, None, "Key to apply the action."),
    PropSpec::new("value", PropKind::Str, None, "Value to apply the action (insert, upsert: the value; rename: the new key)."),
    PropSpec::new("pattern", PropKind::Str, None, "Pattern used to create a regular expression (extract: named groups become keys)."),
    PropSpec::new("converted_type", PropKind::Str, None, "Specify the data type to convert to, allowed values are: string, int, double or boolean."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "content_modifier",
    description: "Modify the content of Logs, Metrics and Traces",
    props: PROPS,
    build,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    String,
    Bool,
    Int,
    Double,
}

enum Action {
    Insert(Value),
    Upsert(Value),
    Delete,
    Rename(Str),
    Hash,
    Extract(OnigRegex),
    Convert(Type),
}

struct ContentModifier {
    metadata: bool,
    key: Str,
    action: Action,
}

fn build(p: &Props, _: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let Some(action) = p.str("action") else {
        return Err(p.error(
            "action",
            "an action: insert, upsert, delete, rename, hash, extract or convert (none is set)",
        ));
    };
    let action = action.to_ascii_lowercase();
    let metadata = match p.str("context").map(str::to_ascii_lowercase).as_deref() {
        None | Some("body" | "message" | "record") => false,
        Some("metadata" | "attributes") => true,
        Some(c) if c.starts_with("otel_") => {
            return Err(p.error(
                "context",
                "body or metadata: agent carries no OpenTelemetry groups yet",
            ))
        }
        Some(_) => {
            return Err(p.error(
                "context",
                "body (or message, record) or metadata (or attributes)",
            ))
        }
    };
    let Some(key) = p.str("key") else {
        return Err(p.error("key", format!("the key to apply action '{action}' to")));
    };
    let need = |name: &str, what: &str| {
        p.str(name)
            .map(str::to_string)
            .ok_or_else(|| p.error(name, format!("{what} (required for action '{action}')")))
    };
    let string = |s: String| Value::Str(Arc::from(s));
    let regex = |pattern: String| {
        OnigRegex::new(&pattern)
            .map_err(|e| p.error("pattern", format!("a valid regular expression ({e})")))
    };
    // A pattern is compiled whatever the action, as Fluent Bit does.
    let compiled = match p.str("pattern") {
        Some(pat) => Some(regex(pat.to_string())?),
        None => None,
    };
    let action = match action.as_str() {
        "insert" => Action::Insert(string(need("value", "the value to insert")?)),
        "upsert" => Action::Upsert(string(need("value", "the value to set")?)),
        "delete" => Action::Delete,
        "rename" => Action::Rename(Arc::from(need("value", "the new name of the key")?)),
        "hash" => Action::Hash,
        "extract" => match compiled {
            Some(re) => Action::Extract(re),
            None => {
                return Err(p.error(
                    "pattern",
                    "a regular expression with named groups (required for action 'extract')",
                ))
            }
        },
        "convert" => {
            let t = need("converted_type", "string, int, double or boolean")?;
            Action::Convert(match t.to_ascii_lowercase().as_str() {
                "string" => Type::String,
                "boolean" => Type::Bool,
                "int" => Type::Int,
                "double" => Type::Double,
                _ => return Err(p.error("converted_type", "string, int, double or boolean")),
            })
        }
        _ => {
            return Err(p.error(
                "action",
                "insert, upsert, delete, rename, hash, extract or convert",
            ))
        }
    };
    Ok(Box::new(ContentModifier {
        metadata,
        key: Arc::from(key),
        action,
    }))
}

impl Filter for ContentModifier {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        let mut changed = false;
        for rec in records.iter_mut() {
            let map = if self.metadata {
                &mut rec.metadata
            } else {
                &mut rec.body
            };
            changed |= self.apply(map);
        }
        FilterResult::modified_if(changed)
    }
}

impl ContentModifier {
    /// Applies the action to one map; whether it changed.
    fn apply(&self, map: &mut Map) -> bool {
        let at = position(map, &self.key);
        match (&self.action, at) {
            (Action::Insert(_), Some(_)) => false,
            (Action::Insert(v), None) => {
                map.push((self.key.clone(), v.clone()));
                true
            }
            (Action::Upsert(v), at) => {
                if let Some(i) = at {
                    map.remove(i);
                }
                map.push((self.key.clone(), v.clone()));
                true
            }
            (Action::Delete, Some(i)) => {
                map.remove(i);
                true
            }
            (Action::Rename(to), Some(i)) => {
                map[i].0 = to.clone();
                true
            }
            (Action::Hash, Some(i)) => match hash(&map[i].1) {
                Some(v) => {
                    map[i].1 = v;
                    true
                }
                None => false,
            },
            (Action::Extract(re), Some(i)) => {
                let Value::Str(text) = &map[i].1 else {
                    return false;
                };
                let text = text.clone();
                let mut found: Vec<(Str, Value)> = Vec::new();
                let matched = re.search(text.as_bytes(), |name, span| {
                    let v = span.map_or("", |(a, b)| &text[a..b]);
                    found.push((name.clone(), Value::Str(Arc::from(v))));
                });
                if !matched || found.is_empty() {
                    return false;
                }
                for (name, v) in found {
                    if let Some(j) = position(map, &name) {
                        map.remove(j);
                    }
                    map.push((name, v));
                }
                true
            }
            (Action::Convert(t), Some(i)) => match convert(&map[i].1, *t) {
                Some(v) => {
                    let (k, _) = map.remove(i);
                    map.push((k, v));
                    true
                }
                None => false,
            },
            (_, None) => false,
        }
    }
}

/// The value as the string Fluent Bit's converter gives (`None`: maps and arrays).
fn as_string(v: &Value) -> Option<String> {
    Some(match v {
        Value::Str(s) => s.to_string(),
        Value::Bin(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => g17(*f),
        Value::Bool(b) => b.to_string(),
        Value::Nil => "null".into(),
        Value::Map(_) | Value::Array(_) => return None,
    })
}

/// C's `%.17g`.
fn g17(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    if !f.is_finite() {
        return if f.is_nan() {
            "nan".into()
        } else if f > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let exp = f.abs().log10().floor() as i32;
    // %g: scientific when the exponent is < -4 or >= the precision.
    let sci = format!("{f:.16e}");
    let (mantissa, e) = sci.split_once('e').unwrap_or((&sci, "0"));
    let e: i32 = e.parse().unwrap_or(exp);
    if !(-4..17).contains(&e) {
        let m = trim_zeros(mantissa);
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let decimals = (16 - e).max(0) as usize;
        trim_zeros(&format!("{f:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// SHA-256 of the value's string form, hex; an empty string stays as it is.
fn hash(v: &Value) -> Option<Value> {
    let s = as_string(v)?;
    if s.is_empty() {
        return Some(v.clone());
    }
    Some(Value::Str(Arc::from(super::sha256_hex(&s))))
}

/// Fluent Bit's `cm_utils_variant_convert`.
fn convert(v: &Value, t: Type) -> Option<Value> {
    let text = match v {
        Value::Str(s) => Some(std::borrow::Cow::Borrowed(&**s)),
        Value::Bin(b) => Some(String::from_utf8_lossy(b)),
        _ => None,
    };
    if let Some(s) = text {
        return match t {
            Type::String => Some(Value::Str(Arc::from(s.as_ref()))),
            Type::Bool => Some(Value::Bool(s.eq_ignore_ascii_case("true"))),
            Type::Int => str_to_int(&s).map(Value::Int),
            Type::Double => strtod(&s).map(Value::Float),
        };
    }
    Some(match (v, t) {
        (Value::Map(_) | Value::Array(_), _) => return None,
        (_, Type::String) => Value::Str(Arc::from(as_string(v)?)),
        (Value::Int(i), Type::Bool) => Value::Bool(*i != 0),
        (Value::Int(i), Type::Int) => Value::Int(*i),
        (Value::Int(i), Type::Double) => Value::Float(*i as f64),
        (Value::UInt(u), Type::Bool) => Value::Bool(*u != 0),
        (Value::UInt(u), Type::Int) => Value::UInt(*u),
        (Value::UInt(u), Type::Double) => Value::Float(*u as i64 as f64),
        (Value::Float(f), Type::Bool) => Value::Bool(*f != 0.0),
        (Value::Float(f), Type::Int) => Value::Int(f.round() as i64),
        (Value::Float(f), Type::Double) => Value::Float(*f),
        (Value::Nil, Type::Bool) => Value::Bool(false),
        (Value::Nil, Type::Int) => Value::Int(0),
        (Value::Nil, Type::Double) => Value::Float(0.0),
        (Value::Bool(b), Type::Bool) => Value::Bool(*b),
        (Value::Bool(b), Type::Int) => Value::Int(*b as i64),
        (Value::Bool(b), Type::Double) => Value::Float(*b as u8 as f64),
        _ => return None,
    })
}

/// A string to an integer as Fluent Bit converts it: a negative number must fit a C
/// `int`, a non-negative one an `unsigned int`; the whole string must be the number
/// (leading blanks and a `+` allowed, as `strtoumax` does; an empty string is 0).
fn str_to_int(s: &str) -> Option<i64> {
    if let Some(rest) = s.strip_prefix('-') {
        let n: i64 = format!("-{rest}").trim().parse().ok()?;
        return (n >= i32::MIN as i64
            && n <= i32::MAX as i64
            && !rest.starts_with([' ', '+', '-']))
        .then_some(n);
    }
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() {
        return (s.is_empty()).then_some(0);
    }
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = t.parse().ok()?;
    (n <= u32::MAX as u64).then_some(n as i64)
}

/// C's `strtod` as Fluent Bit uses it: the longest leading number (trailing text is
/// ignored); no number at all, or out of range, fails.
fn strtod(s: &str) -> Option<f64> {
    let t = s.trim_start();
    let b = t.as_bytes();
    let mut best = None;
    let mut end = 0;
    while end < b.len() && (b[end].is_ascii_alphanumeric() || b"+-.".contains(&b[end])) {
        end += 1;
        if let Ok(v) = t[..end].parse::<f64>() {
            // Rust parses "inf"/"nan" words as C does; hex floats are left out.
            best = Some(v);
        }
    }
    match best {
        Some(v) if v.is_infinite() && !t[..end].to_ascii_lowercase().contains("inf") => None,
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g17_is_c_percent_17g() {
        assert_eq!(g17(1.5), "1.5");
        assert_eq!(g17(0.1), "0.10000000000000001");
        assert_eq!(g17(100.0), "100");
        assert_eq!(g17(1e20), "1e+20");
        assert_eq!(g17(1.25e-7), "1.2499999999999999e-07");
        assert_eq!(g17(-3.0), "-3");
    }

    #[test]
    fn strings_convert_as_fluent_bit() {
        assert_eq!(str_to_int("42"), Some(42));
        assert_eq!(str_to_int("-7"), Some(-7));
        assert_eq!(str_to_int("4294967295"), Some(4294967295));
        assert_eq!(str_to_int("4294967296"), None);
        assert_eq!(str_to_int("-2147483649"), None);
        assert_eq!(str_to_int("12a"), None);
        assert_eq!(str_to_int(" 12"), Some(12));
        assert_eq!(str_to_int(""), Some(0));
        assert_eq!(strtod("3.5abc"), Some(3.5));
        assert_eq!(strtod("abc"), None);
        assert_eq!(strtod("0"), Some(0.0));
        assert_eq!(strtod("1e999"), None);
    }
}
