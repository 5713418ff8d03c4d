//! `modify` filter: rename, copy, set, add, remove and reorder keys, optionally only
//! when every `Condition` holds.
//! Fluent Bit: plugins/filter_modify/modify.c
//!
//! Semantics follow Fluent Bit 5.1.1 byte for byte (pinned in tests/filter_modify.rs):
//! - Conditions are evaluated once, on the record as it arrived; all must hold.
//! - Rules run in config order, each on the result of the previous one.
//! - Key comparison is exact and case-sensitive; `Remove_wildcard`, `Move_to_start` and
//!   `Move_to_end` match keys that *start with* the rule's key (a `*` is a literal).
//! - Values are compared as strings only: `Key_value_equals` never matches a number;
//!   regexes see booleans as `true`/`false` and never match numbers, nil, maps or arrays.
//! - A value splits on spaces into at most 3 arguments, `"..."` / `'...'` quoting one.
//!   Any rule with 3 arguments is a `Rename` of the first to the last (Fluent Bit's
//!   zero-initialised rule type).
//! - Every rule's key and value must compile as a regex, as Fluent Bit requires.

use std::time::Instant;

use crate::config::{ConfigError, Entry, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::{Map, Record, Str, Value};
use crate::parser::regex::OnigRegex;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

const PROPS: &[PropSpec] = &[
    PropSpec::new("set", PropKind::Multi, None, "Add a key/value pair with key KEY and value VALUE. If KEY already exists, this field is overwritten."),
    PropSpec::new("add", PropKind::Multi, None, "Add a key/value pair with key KEY and value VALUE if KEY does not exist."),
    PropSpec::new("remove", PropKind::Multi, None, "Remove a key/value pair with key KEY if it exists."),
    PropSpec::new("remove_wildcard", PropKind::Multi, None, "Remove all key/value pairs with key matching wildcard KEY."),
    PropSpec::new("remove_regex", PropKind::Multi, None, "Remove all key/value pairs with key matching regexp KEY."),
    PropSpec::new("move_to_start", PropKind::Multi, None, "Move key/value pairs with keys matching KEY to the start of the message."),
    PropSpec::new("move_to_end", PropKind::Multi, None, "Move key/value pairs with keys matching KEY to the end of the message."),
    PropSpec::new("rename", PropKind::Multi, None, "Rename a key/value pair with key KEY to RENAMED_KEY if KEY exists AND RENAMED_KEY does not exist."),
    PropSpec::new("hard_rename", PropKind::Multi, None, "Rename a key/value pair with key KEY to RENAMED_KEY if KEY exists. If RENAMED_KEY already exists, this field is overwritten."),
    PropSpec::new("copy", PropKind::Multi, None, "Copy a key/value pair with key KEY to COPIED_KEY if KEY exists AND COPIED_KEY does not exist."),
    PropSpec::new("hard_copy", PropKind::Multi, None, "Copy a key/value pair with key KEY to COPIED_KEY if KEY exists. If COPIED_KEY already exists, this field is overwritten."),
    PropSpec::new("condition", PropKind::Multi, None, "Set the condition to modify. Key_exists, Key_does_not_exist, A_key_matches, No_key_matches, Key_value_equals, Key_value_does_not_equal, Key_value_matches, Key_value_does_not_match, Matching_keys_have_matching_values and Matching_keys_do_not_have_matching_values are supported."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "modify",
    description: "modify records by applying rules",
    props: PROPS,
    build,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Rename,
    HardRename,
    Add,
    Set,
    Remove,
    RemoveWildcard,
    RemoveRegex,
    Copy,
    HardCopy,
    MoveToStart,
    MoveToEnd,
}

struct Rule {
    op: Op,
    key: Str,
    /// The rule's second argument (the first again for one-argument rules).
    val: Str,
    /// `Remove_regex` only.
    regex: Option<OnigRegex>,
}

/// A record accessor lookup the way `flb_ra_get_kv_pair` does it: the last top-level
/// key of that name; subkeys are followed only when its value is a map, otherwise
/// the top-level value itself is the answer.
struct KeyRef(Option<Vec<Str>>);

impl KeyRef {
    fn parse(text: &str) -> KeyRef {
        // Fluent Bit accepts any text here; one it cannot resolve never matches.
        KeyRef(
            Accessor::parse(text)
                .ok()
                .and_then(|a| a.path().map(|p| p.iter().map(|s| Str::from(*s)).collect())),
        )
    }

    fn get<'a>(&self, body: &'a Map) -> Option<&'a Value> {
        let path = self.0.as_deref()?;
        let (first, subkeys) = path.split_first()?;
        let top = &body.iter().rev().find(|(k, _)| k == first)?.1;
        let Value::Map(top_map) = top else {
            return Some(top);
        };
        if subkeys.is_empty() {
            return Some(top);
        }
        let (last, init) = subkeys.split_last()?;
        let mut map = top_map;
        for k in init {
            match map.iter().rev().find(|(x, _)| x == k) {
                Some((_, Value::Map(m))) => map = m,
                _ => return None,
            }
        }
        map.iter().rev().find(|(x, _)| x == last).map(|(_, v)| v)
    }
}

enum Cond {
    KeyExists(KeyRef),
    KeyDoesNotExist(KeyRef),
    AKeyMatches(OnigRegex),
    NoKeyMatches(OnigRegex),
    /// `None`: no value given, which Fluent Bit compares as the empty string.
    KeyValueEquals(KeyRef, Option<Str>),
    KeyValueDoesNotEqual(KeyRef, Option<Str>),
    KeyValueMatches(KeyRef, OnigRegex),
    KeyValueDoesNotMatch(KeyRef, OnigRegex),
    MatchingKeysHaveMatchingValues(OnigRegex, OnigRegex),
    MatchingKeysDoNotHaveMatchingValues(OnigRegex, OnigRegex),
}

struct ModifyFilter {
    conditions: Vec<Cond>,
    rules: Vec<Rule>,
}

/// Fluent Bit's `flb_utils_split_quoted(value, ' ', max)`: space-separated tokens,
/// `"..."` or `'...'` quote one (with `\"`, `\'`, `\\` escapes); past `max` tokens the
/// rest of the line is one more token. `None` for an unterminated quote.
fn split_quoted(line: &str, max: usize) -> Option<Vec<String>> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let mut p = i;
        while p < b.len() && b[p] == b' ' {
            p += 1;
        }
        if p < b.len() && (b[p] == b'"' || b[p] == b'\'') {
            let quote = b[p];
            let mut tok = Vec::new();
            let mut q = p + 1;
            loop {
                match b.get(q) {
                    None => return None,
                    Some(&c) if c == quote => break,
                    Some(b'\\') if matches!(b.get(q + 1), Some(&n) if n == quote || n == b'\\') => {
                        tok.push(b[q + 1]);
                        q += 2;
                    }
                    Some(&c) => {
                        tok.push(c);
                        q += 1;
                    }
                }
            }
            // Only ASCII bytes were dropped, so this is still UTF-8.
            out.push(String::from_utf8_lossy(&tok).into_owned());
            i = q; // at the closing quote, skipped below
        } else {
            let end = b[p..]
                .iter()
                .position(|&c| c == b' ')
                .map_or(b.len(), |n| p + n);
            out.push(line[p..end].to_string());
            i = end;
        }
        i += 1;
        if out.len() >= max && i < b.len() {
            out.push(line[i..].to_string());
            break;
        }
    }
    Some(out)
}

const RULES: &[(&str, Op, usize)] = &[
    ("set", Op::Set, 2),
    ("add", Op::Add, 2),
    ("remove", Op::Remove, 1),
    ("remove_wildcard", Op::RemoveWildcard, 1),
    ("remove_regex", Op::RemoveRegex, 1),
    ("move_to_start", Op::MoveToStart, 1),
    ("move_to_end", Op::MoveToEnd, 1),
    ("rename", Op::Rename, 2),
    ("hard_rename", Op::HardRename, 2),
    ("copy", Op::Copy, 2),
    ("hard_copy", Op::HardCopy, 2),
];

fn usage(name: &str) -> &'static str {
    match name {
        "set" | "add" => {
            "KEY VALUE, e.g. 'set env prod' (quote a value with spaces: 'set msg \"a b\"')"
        }
        "rename" | "hard_rename" => "KEY RENAMED_KEY, e.g. 'rename log message'",
        "copy" | "hard_copy" => "KEY COPIED_KEY, e.g. 'copy log message'",
        "condition" => {
            "a condition type and its arguments, e.g. 'condition key_value_equals level error'"
        }
        _ => "one KEY, e.g. 'remove password'",
    }
}

fn invalid(e: &Entry, what: impl std::fmt::Display, hint: impl Into<String>) -> ConfigError {
    ConfigError::invalid(
        &e.span,
        format!("[filter] modify: '{} {}': {what}", e.key, e.value),
        Some(hint.into()),
    )
}

fn regex(e: &Entry, pattern: &str) -> Result<OnigRegex, ConfigError> {
    OnigRegex::new(pattern).map_err(|err| {
        invalid(
            e,
            format_args!("'{pattern}' is not a valid regex: {err}"),
            "Fluent Bit compiles this argument as a regex and refuses the config too; escape the special characters",
        )
    })
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    // Fluent Bit walks the section's properties in file order, whatever their names.
    let mut entries: Vec<&Entry> = PROPS
        .iter()
        .flat_map(|s| props.multi_entries(s.name))
        .collect();
    entries.sort_by_key(|e| (e.span.line, e.span.col));

    let mut conditions = Vec::new();
    let mut rules = Vec::new();
    for e in entries {
        let Some(args) = split_quoted(&e.value, 3) else {
            return Err(invalid(
                e,
                "unterminated quote",
                "close the quote, or escape it as \\\"",
            ));
        };
        if args.is_empty() || args.len() > 3 {
            return Err(invalid(
                e,
                format_args!("{} arguments, at most 3 are allowed", args.len()),
                format!("write {}", usage(&e.key)),
            ));
        }
        if e.key == "condition" {
            conditions.push(condition(e, &args)?);
        } else {
            rules.push(rule(e, &args)?);
        }
    }
    Ok(Box::new(ModifyFilter { conditions, rules }))
}

fn rule(e: &Entry, args: &[String]) -> Result<Rule, ConfigError> {
    let &(_, op, arity) = RULES
        .iter()
        .find(|(n, _, _)| *n == e.key)
        .expect("every table name but condition is in RULES");
    let op = match args.len() {
        n if n == arity => op,
        // Fluent Bit leaves a three-argument rule's type at zero, which is RENAME.
        3 => Op::Rename,
        n => {
            return Err(invalid(
                e,
                format_args!(
                    "{} takes {arity} argument{}, got {n}",
                    e.key,
                    if arity == 1 { "" } else { "s" }
                ),
                format!("write {}", usage(&e.key)),
            ))
        }
    };
    let key = &args[0];
    let val = &args[args.len() - 1];
    if op == Op::RemoveRegex && key.is_empty() {
        return Err(invalid(
            e,
            "empty regex",
            "give a regex, e.g. 'remove_regex ^tmp_'",
        ));
    }
    // Fluent Bit compiles both arguments of every rule, so a key like `(x` is refused.
    let key_re = regex(e, key)?;
    regex(e, val)?;
    Ok(Rule {
        op,
        key: Str::from(key.as_str()),
        val: Str::from(val.as_str()),
        regex: (op == Op::RemoveRegex).then_some(key_re),
    })
}

fn condition(e: &Entry, args: &[String]) -> Result<Cond, ConfigError> {
    // With one argument Fluent Bit's list walk wraps around: A is the type's own name.
    let a = args.get(1).unwrap_or(&args[0]).as_str();
    let b = args.get(2).map(|s| s.as_str());
    let re = |text: Option<&str>| match text {
        Some(t) if !t.is_empty() => regex(e, t),
        _ => Err(invalid(
            e,
            "missing regex",
            format!(
                "write {}, e.g. 'condition {} level ^err'",
                usage("condition"),
                args[0]
            ),
        )),
    };
    let str_b = || b.map(Str::from);
    let kind = args[0].to_ascii_lowercase();
    Ok(match kind.as_str() {
        "key_exists" => Cond::KeyExists(KeyRef::parse(a)),
        "key_does_not_exist" => Cond::KeyDoesNotExist(KeyRef::parse(a)),
        "a_key_matches" => Cond::AKeyMatches(re(Some(a))?),
        "no_key_matches" => Cond::NoKeyMatches(re(Some(a))?),
        "key_value_equals" => Cond::KeyValueEquals(KeyRef::parse(a), str_b()),
        "key_value_does_not_equal" => Cond::KeyValueDoesNotEqual(KeyRef::parse(a), str_b()),
        "key_value_matches" => Cond::KeyValueMatches(KeyRef::parse(a), re(b)?),
        "key_value_does_not_match" => Cond::KeyValueDoesNotMatch(KeyRef::parse(a), re(b)?),
        "matching_keys_have_matching_values" => {
            Cond::MatchingKeysHaveMatchingValues(re(Some(a))?, re(b)?)
        }
        "matching_keys_do_not_have_matching_values" => {
            Cond::MatchingKeysDoNotHaveMatchingValues(re(Some(a))?, re(b)?)
        }
        _ => {
            return Err(invalid(
                e,
                format_args!("unknown condition '{}'", args[0]),
                "use one of Key_exists, Key_does_not_exist, A_key_matches, No_key_matches, \
                 Key_value_equals, Key_value_does_not_equal, Key_value_matches, \
                 Key_value_does_not_match, Matching_keys_have_matching_values, \
                 Matching_keys_do_not_have_matching_values",
            ))
        }
    })
}

/// The text a regex sees for a value: strings as they are, booleans as
/// `true`/`false`; anything else never matches.
fn regex_text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Str(s) => Some(s.as_bytes()),
        Value::Bool(true) => Some(b"true"),
        Value::Bool(false) => Some(b"false"),
        _ => None,
    }
}

fn value_matches(re: &OnigRegex, v: &Value) -> bool {
    regex_text(v).is_some_and(|t| re.is_match(t))
}

/// Fluent Bit's string equality: only strings (and binaries) can equal.
fn value_equals(v: &Value, b: Option<&Str>) -> bool {
    let b = b.map_or(&b""[..], |s| s.as_bytes());
    match v {
        Value::Str(s) => s.as_bytes() == b,
        Value::Bin(x) => &x[..] == b,
        _ => false,
    }
}

fn all_matching_keys_match(body: &Map, k: &OnigRegex, v: &OnigRegex) -> bool {
    body.iter()
        .filter(|(key, _)| k.is_match(key.as_bytes()))
        .all(|(_, val)| value_matches(v, val))
}

impl Cond {
    fn holds(&self, body: &Map) -> bool {
        match self {
            Cond::KeyExists(a) => a.get(body).is_some(),
            Cond::KeyDoesNotExist(a) => a.get(body).is_none(),
            Cond::AKeyMatches(re) => body.iter().any(|(k, _)| re.is_match(k.as_bytes())),
            Cond::NoKeyMatches(re) => !body.iter().any(|(k, _)| re.is_match(k.as_bytes())),
            Cond::KeyValueEquals(a, b) => a.get(body).is_some_and(|v| value_equals(v, b.as_ref())),
            Cond::KeyValueDoesNotEqual(a, b) => {
                a.get(body).is_some_and(|v| !value_equals(v, b.as_ref()))
            }
            Cond::KeyValueMatches(a, re) => a.get(body).is_some_and(|v| value_matches(re, v)),
            Cond::KeyValueDoesNotMatch(a, re) => a.get(body).is_some_and(|v| !value_matches(re, v)),
            Cond::MatchingKeysHaveMatchingValues(k, v) => all_matching_keys_match(body, k, v),
            Cond::MatchingKeysDoNotHaveMatchingValues(k, v) => !all_matching_keys_match(body, k, v),
        }
    }
}

impl Rule {
    /// Applies the rule; true if the body changed (Fluent Bit's FLB_FILTER_MODIFIED).
    fn apply(&self, body: &mut Map) -> bool {
        let key = &*self.key;
        let val = &*self.val;
        let is = |k: &Str, s: &str| **k == *s;
        let count = |body: &Map, s: &str| body.iter().filter(|(k, _)| is(k, s)).count();
        let prefixed = |k: &Str| k.starts_with(key);
        match self.op {
            Op::Rename | Op::HardRename => {
                if count(body, key) == 0 {
                    return false;
                }
                if count(body, val) > 0 {
                    if self.op == Op::Rename {
                        return false;
                    }
                    // Hard_rename drops every existing target first (all of `a` for
                    // `hard_rename a a`).
                    body.retain(|(k, _)| !is(k, val));
                }
                for (k, _) in body.iter_mut().filter(|(k, _)| is(k, key)) {
                    *k = self.val.clone();
                }
                true
            }
            Op::Copy | Op::HardCopy => {
                if count(body, key) != 1 {
                    return false;
                }
                match count(body, val) {
                    0 => {}
                    1 if self.op == Op::HardCopy => body.retain(|(k, _)| !is(k, val)),
                    _ => return false,
                }
                // Gone when KEY is VALUE: Fluent Bit drops it and copies nothing.
                if let Some(i) = body.iter().position(|(k, _)| is(k, key)) {
                    let v = body[i].1.clone();
                    body.insert(i + 1, (self.val.clone(), v));
                }
                true
            }
            Op::Add => {
                if count(body, key) > 0 {
                    return false;
                }
                body.push((self.key.clone(), Value::Str(self.val.clone())));
                true
            }
            Op::Set => {
                body.retain(|(k, _)| !is(k, key));
                body.push((self.key.clone(), Value::Str(self.val.clone())));
                true
            }
            Op::Remove => retain_changed(body, |k| !is(k, key)),
            Op::RemoveWildcard => retain_changed(body, |k| !prefixed(k)),
            Op::RemoveRegex => {
                let re = self.regex.as_ref().expect("remove_regex has a regex");
                retain_changed(body, |k| !re.is_match(k.as_bytes()))
            }
            Op::MoveToStart | Op::MoveToEnd => {
                if !body.iter().any(|(k, _)| prefixed(k)) {
                    return false;
                }
                let front = self.op == Op::MoveToStart;
                // Stable partition; sort_by_key is stable and allocates only a buffer
                // for records that have a match.
                body.sort_by_key(|(k, _)| prefixed(k) != front);
                true
            }
        }
    }
}

fn retain_changed(body: &mut Map, keep: impl Fn(&Str) -> bool) -> bool {
    let before = body.len();
    body.retain(|(k, _)| keep(k));
    body.len() != before
}

impl ModifyFilter {
    fn apply(&self, body: &mut Map) -> bool {
        if !self.conditions.iter().all(|c| c.holds(body)) {
            return false;
        }
        let mut changed = false;
        for r in &self.rules {
            changed |= r.apply(body);
        }
        changed
    }
}

impl Filter for ModifyFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        let mut changed = false;
        for r in records.iter_mut() {
            changed |= self.apply(&mut r.body);
        }
        FilterResult::modified_if(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Span;
    use crate::event::EventTime;

    fn s(v: &str) -> Value {
        Value::Str(Str::from(v))
    }

    fn body(pairs: &[(&str, Value)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (Str::from(*k), v.clone()))
            .collect()
    }

    fn keys(m: &Map) -> Vec<&str> {
        m.iter().map(|(k, _)| &**k).collect()
    }

    fn entry(key: &str, value: &str) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            span: Span {
                file: "t.conf".into(),
                line: 1,
                col: 1,
            },
        }
    }

    fn filter(lines: &[(&str, &str)]) -> ModifyFilter {
        let mut conditions = Vec::new();
        let mut rules = Vec::new();
        for (k, v) in lines {
            let e = entry(k, v);
            let args = split_quoted(v, 3).unwrap();
            if *k == "condition" {
                conditions.push(condition(&e, &args).unwrap_or_else(|e| panic!("{e}")));
            } else {
                rules.push(rule(&e, &args).unwrap_or_else(|e| panic!("{e}")));
            }
        }
        ModifyFilter { conditions, rules }
    }

    fn apply(lines: &[(&str, &str)], mut m: Map) -> (bool, Map) {
        let changed = filter(lines).apply(&mut m);
        (changed, m)
    }

    #[test]
    fn split_like_flb_utils_split_quoted() {
        let sp = |t: &str| split_quoted(t, 3).unwrap();
        assert_eq!(sp("a b"), ["a", "b"]);
        assert_eq!(sp("a   b"), ["a", "b"]);
        assert_eq!(sp(r#"a "b c""#), ["a", "b c"]);
        assert_eq!(sp(r#"a 'it\'s' "\\x""#), ["a", "it's", r"\x"]);
        assert_eq!(sp("a b c"), ["a", "b", "c"]);
        // Past three tokens the rest is one more token (then refused as 4 arguments).
        assert_eq!(sp("a b c d e"), ["a", "b", "c", "d e"]);
        // Text glued to a closing quote starts the next token.
        assert_eq!(sp(r#""a"xb c"#), ["a", "xb", "c"]);
        assert_eq!(split_quoted(r#"a "b"#, 3), None);
        assert!(sp("").is_empty());
    }

    #[test]
    fn duplicates_are_all_renamed_removed_or_replaced() {
        let dup = || body(&[("a", s("1")), ("b", s("2")), ("a", s("3"))]);
        let (_, m) = apply(&[("rename", "a z")], dup());
        assert_eq!(keys(&m), ["z", "b", "z"]);
        let (_, m) = apply(&[("remove", "a")], dup());
        assert_eq!(keys(&m), ["b"]);
        let (_, m) = apply(&[("set", "a x")], dup());
        assert_eq!(m, body(&[("b", s("2")), ("a", s("x"))]));
        // Copy and Hard_copy refuse an ambiguous source.
        assert!(!apply(&[("copy", "a z")], dup()).0);
        assert!(!apply(&[("hard_copy", "a z")], dup()).0);
        // Hard_copy refuses two targets; Hard_rename drops them all.
        assert!(!apply(&[("hard_copy", "b a")], dup()).0);
        let (_, m) = apply(&[("hard_rename", "b a")], dup());
        assert_eq!(m, body(&[("a", s("2"))]));
        // A record accessor sees the last duplicate.
        let (changed, _) = apply(
            &[("condition", "key_value_equals a 3"), ("set", "x y")],
            dup(),
        );
        assert!(changed);
    }

    #[test]
    fn same_source_and_target_deletes_with_hard_rules() {
        let m = body(&[("a", s("1")), ("b", s("2"))]);
        assert_eq!(
            apply(&[("hard_rename", "a a")], m.clone()).1,
            body(&[("b", s("2"))])
        );
        assert_eq!(
            apply(&[("hard_copy", "a a")], m.clone()).1,
            body(&[("b", s("2"))])
        );
        assert_eq!(apply(&[("rename", "a a")], m.clone()), (false, m.clone()));
        assert_eq!(apply(&[("copy", "a a")], m.clone()), (false, m));
    }

    #[test]
    fn copies_land_after_the_source_and_hard_copy_replaces_in_place_order() {
        let m = body(&[("a", s("1")), ("t", s("old")), ("b", s("2"))]);
        let (_, got) = apply(&[("hard_copy", "b t")], m.clone());
        assert_eq!(got, body(&[("a", s("1")), ("b", s("2")), ("t", s("2"))]));
        let (_, got) = apply(&[("copy", "a c")], m);
        assert_eq!(keys(&got), ["a", "c", "t", "b"]);
    }

    #[test]
    fn wildcards_are_prefixes_and_moves_are_stable() {
        let m = body(&[("x1", s("")), ("y", s("")), ("x2", s("")), ("z", s(""))]);
        assert_eq!(
            keys(&apply(&[("move_to_start", "x")], m.clone()).1),
            ["x1", "x2", "y", "z"]
        );
        assert_eq!(
            keys(&apply(&[("move_to_end", "x")], m.clone()).1),
            ["y", "z", "x1", "x2"]
        );
        assert_eq!(
            keys(&apply(&[("remove_wildcard", "x")], m.clone()).1),
            ["y", "z"]
        );
        assert_eq!(
            apply(&[("remove_wildcard", "x*")], m.clone()),
            (false, m.clone())
        );
        assert_eq!(apply(&[("move_to_end", "q")], m.clone()), (false, m));
    }

    #[test]
    fn values_compare_as_strings_only() {
        let m = body(&[
            ("n", Value::Int(500)),
            ("s", s("500")),
            ("t", Value::Bool(true)),
            ("e", s("")),
            ("nil", Value::Nil),
        ]);
        let holds = |c: &str| filter(&[("condition", c)]).conditions[0].holds(&m);
        assert!(!holds("key_value_equals n 500"));
        assert!(holds("key_value_equals s 500"));
        assert!(holds("key_value_does_not_equal n 500"));
        assert!(!holds("key_value_does_not_equal missing 500"));
        assert!(holds("key_value_equals e"));
        assert!(holds("key_value_matches t ^true$"));
        assert!(!holds("key_value_matches n 5"));
        assert!(!holds("key_value_matches nil .*"));
        assert!(holds("key_value_does_not_match n 5"));
        assert!(!holds("key_value_does_not_match missing 5"));
        assert!(holds("matching_keys_have_matching_values ^zz$ ^x$"));
        assert!(!holds("matching_keys_have_matching_values ^[ns]$ ^500$"));
        assert!(holds(
            "matching_keys_do_not_have_matching_values ^[ns]$ ^500$"
        ));
        assert!(holds("a_key_matches ^ni"));
        assert!(holds("no_key_matches ^N"));
        // One argument: the condition's own name is the key.
        assert!(holds("key_does_not_exist"));
        assert!(holds("KEY_EXISTS n"));
    }

    #[test]
    fn accessor_ignores_subkeys_of_a_non_map() {
        let m = body(&[("k", s("flat")), ("m", Value::Map(body(&[("p", s("v"))])))]);
        let holds = |c: &str| filter(&[("condition", c)]).conditions[0].holds(&m);
        assert!(holds("key_value_equals $k['x'] flat"));
        assert!(holds("key_value_equals $m['p'] v"));
        assert!(!holds("key_exists $m['q']"));
    }

    #[test]
    fn conditions_gate_and_rules_chain_in_order() {
        let mut f = filter(&[
            ("condition", "key_exists log"),
            ("rename", "log message"),
            ("copy", "message log"),
            ("set", "stage 2"),
        ]);
        let mut recs = vec![
            Record::new(EventTime::new(1, 0), body(&[("log", s("hi"))])),
            Record::new(EventTime::new(1, 0), body(&[("other", s("x"))])),
        ];
        assert!(matches!(
            f.filter("t", &mut recs, Instant::now()),
            FilterResult::Modified
        ));
        assert_eq!(
            recs[0].body,
            body(&[("message", s("hi")), ("log", s("hi")), ("stage", s("2"))])
        );
        assert_eq!(recs[1].body, body(&[("other", s("x"))]));
        assert!(matches!(
            f.filter("t", &mut recs[1..].to_vec(), Instant::now()),
            FilterResult::NoTouch
        ));
    }

    #[test]
    fn three_arguments_make_any_rule_a_rename() {
        let (_, m) = apply(&[("set", "a x b")], body(&[("a", s("1"))]));
        assert_eq!(m, body(&[("b", s("1"))]));
    }

    #[test]
    fn config_errors() {
        let err = |k: &str, v: &str| {
            let e = entry(k, v);
            let args = split_quoted(v, 3).unwrap();
            match if k == "condition" {
                condition(&e, &args).err()
            } else {
                rule(&e, &args).err()
            } {
                Some(e) => e.to_string(),
                None => panic!("{k} {v} accepted"),
            }
        };
        assert!(err("set", "a").contains("t.conf:1"));
        assert!(err("set", "a").contains("set takes 2 arguments, got 1"));
        assert!(err("remove", "a b").contains("remove takes 1 argument, got 2"));
        assert!(err("set", "a [").contains("not a valid regex"));
        assert!(err("rename", "( b").contains("not a valid regex"));
        assert!(err("condition", "nope a").contains("unknown condition 'nope'"));
        assert!(err("condition", "key_value_matches a").contains("missing regex"));
        assert!(err("condition", "a_key_matches \"\"").contains("missing regex"));
        assert!(err("remove_regex", "\"\"").contains("empty regex"));
    }
}
