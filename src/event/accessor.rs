//! Fluent Bit's record accessor, the subset filters need: `$key`,
//! `$kubernetes['pod_name']`, `$a["b"]['c']`, array indexes `$items[0]['name']`, or a
//! bare top-level `key`.
//! Fluent Bit: src/flb_record_accessor.c, src/flb_ra_key.c

use super::{Map, Value};

/// A parsed accessor: the path of map keys from the record body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accessor {
    head: String,
    subkeys: Vec<Step>,
}

/// One `[...]` after the head key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

impl Accessor {
    pub fn parse(text: &str) -> Result<Accessor, String> {
        let t = text.trim();
        let Some(rest) = t.strip_prefix('$') else {
            if t.is_empty() || t.contains(['[', ']', '\'', '"']) {
                return Err(format!(
                    "'{text}' is not a key or a record accessor such as $kubernetes['pod_name']"
                ));
            }
            return Ok(Accessor {
                head: t.to_string(),
                subkeys: Vec::new(),
            });
        };
        let end = rest.find('[').unwrap_or(rest.len());
        let head = &rest[..end];
        if head.is_empty() {
            return Err(format!("'{text}': a record accessor starts with $name"));
        }
        let mut subkeys = Vec::new();
        let mut s = &rest[end..];
        while !s.is_empty() {
            let Some(body) = s.strip_prefix('[') else {
                return Err(format!(
                    "'{text}': expected ['key'] or [index] after {head}"
                ));
            };
            let (step, after) = match body.as_bytes().first() {
                Some(q @ (b'\'' | b'"')) => {
                    let body = &body[1..];
                    let close = body
                        .find(*q as char)
                        .ok_or_else(|| format!("'{text}': unterminated key"))?;
                    (Step::Key(body[..close].to_string()), &body[close + 1..])
                }
                _ => {
                    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
                    let index = body[..digits].parse().map_err(|_| {
                        format!("'{text}': expected ['key'] or [index] after {head}")
                    })?;
                    (Step::Index(index), &body[digits..])
                }
            };
            subkeys.push(step);
            s = after
                .strip_prefix(']')
                .ok_or_else(|| format!("'{text}': expected ']'"))?;
        }
        Ok(Accessor {
            head: head.to_string(),
            subkeys,
        })
    }

    /// The top-level key `name`, taken as it is (Fluent Bit reads a key without `$` so,
    /// brackets and all).
    pub fn key(name: &str) -> Accessor {
        Accessor {
            head: name.to_string(),
            subkeys: Vec::new(),
        }
    }

    /// The top-level key.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The keys from the record body down (`$a['b']` is `["a", "b"]`); `None` when a
    /// step is an array index.
    pub fn path(&self) -> Option<Vec<&str>> {
        let mut keys = vec![self.head.as_str()];
        for step in &self.subkeys {
            match step {
                Step::Key(k) => keys.push(k),
                Step::Index(_) => return None,
            }
        }
        Some(keys)
    }

    /// The value at the path, if every step is a map holding the key (the last one
    /// when a key repeats, as Fluent Bit looks it up) or an array long enough.
    pub fn get<'a>(&self, body: &'a Map) -> Option<&'a Value> {
        let mut cur = last(body, &self.head)?;
        for step in &self.subkeys {
            cur = step.get(cur)?;
        }
        Some(cur)
    }

    /// The string a regex is matched against, as Fluent Bit's `flb_ra_key_regex_match`
    /// picks it: the path's value when the head holds a map or an array, but the head's
    /// own value when it holds a string, whatever subkeys follow (`$log['x']` matches
    /// against `log` itself). Only strings are matched; numbers, booleans, null, maps,
    /// arrays and binaries never match.
    pub fn regex_subject<'a>(&self, body: &'a Map) -> Option<&'a str> {
        match self.ra_value(body)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value Fluent Bit's `flb_ra_key_to_value` finds: the path's value when the
    /// head holds a map or an array, the head's own value otherwise, whatever subkeys
    /// follow. An array is no value to it (`None`), wherever it is.
    pub fn ra_value<'a>(&self, body: &'a Map) -> Option<&'a Value> {
        let head = last(body, &self.head)?;
        let v = match head {
            Value::Map(_) | Value::Array(_) if !self.subkeys.is_empty() => {
                let mut cur = head;
                for step in &self.subkeys {
                    cur = step.get(cur)?;
                }
                cur
            }
            v => v,
        };
        (!matches!(v, Value::Array(_))).then_some(v)
    }
    /// Where `flb_ra_get_kv_pair` finds the pair, as indexes from the body down (each
    /// a map entry's or an array element's position): the last top-level key of the
    /// name; its subkeys only when it holds a map or an array, and then every step
    /// must match; otherwise the top-level key itself, whatever subkeys follow.
    /// Returns whether the last step is a map key (`false` for an array element).
    /// `path` is cleared first; `None` when nothing matches.
    pub fn kv_pair_path(&self, body: &Map, path: &mut Vec<usize>) -> Option<bool> {
        path.clear();
        let top = body.iter().rposition(|(k, _)| **k == *self.head)?;
        path.push(top);
        let v = &body[top].1;
        if self.subkeys.is_empty() || !matches!(v, Value::Map(_) | Value::Array(_)) {
            return Some(true);
        }
        let mut cur = v;
        let mut is_key = true;
        for step in &self.subkeys {
            match (step, cur) {
                (Step::Key(k), Value::Map(m)) => {
                    let i = m.iter().rposition(|(x, _)| **x == **k)?;
                    path.push(i);
                    cur = &m[i].1;
                    is_key = true;
                }
                (Step::Index(i), Value::Array(a)) if *i < a.len() => {
                    path.push(*i);
                    cur = &a[*i];
                    is_key = false;
                }
                _ => return None,
            }
        }
        Some(is_key)
    }

    /// The value at a path from [`Accessor::kv_pair_path`].
    pub fn at_path<'a>(body: &'a Map, path: &[usize]) -> Option<&'a Value> {
        let (first, rest) = path.split_first()?;
        let mut cur = &body.get(*first)?.1;
        for &i in rest {
            cur = match cur {
                Value::Map(m) => &m.get(i)?.1,
                Value::Array(a) => a.get(i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The head and the subkeys joined with `_` (indexes as numbers), as Fluent Bit's
    /// loki output names a label from `$kubernetes['pod_name']`: `kubernetes_pod_name`.
    pub fn joined_name(&self, out: &mut String) {
        out.push_str(&self.head);
        for step in &self.subkeys {
            out.push('_');
            match step {
                Step::Key(k) => out.push_str(k),
                Step::Index(i) => out.push_str(itoa::Buffer::new().format(*i)),
            }
        }
    }
}

fn last<'a>(map: &'a Map, key: &str) -> Option<&'a Value> {
    map.iter().rev().find(|(k, _)| **k == *key).map(|(_, v)| v)
}

impl Step {
    fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        match (self, v) {
            (Step::Key(k), Value::Map(m)) => last(m, k),
            (Step::Index(i), Value::Array(a)) => a.get(*i),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    #[test]
    fn forms_and_lookup() {
        let body: Map = vec![
            (Arc::from("log"), s("x")),
            (
                Arc::from("kubernetes"),
                Value::Map(vec![
                    (Arc::from("pod_name"), s("web-1")),
                    (
                        Arc::from("labels"),
                        Value::Map(vec![(Arc::from("app"), s("web"))]),
                    ),
                ]),
            ),
        ];
        assert_eq!(Accessor::parse("log").unwrap().get(&body), Some(&s("x")));
        assert_eq!(Accessor::parse("$log").unwrap().get(&body), Some(&s("x")));
        assert_eq!(
            Accessor::parse("$kubernetes['pod_name']")
                .unwrap()
                .get(&body),
            Some(&s("web-1"))
        );
        assert_eq!(
            Accessor::parse("$kubernetes[\"labels\"]['app']")
                .unwrap()
                .get(&body),
            Some(&s("web"))
        );
        assert_eq!(
            Accessor::parse("$kubernetes['nope']").unwrap().get(&body),
            None
        );
        assert_eq!(Accessor::parse("$log['deeper']").unwrap().get(&body), None);
        assert!(Accessor::parse("$").is_err());
        assert!(Accessor::parse("$a[b]").is_err());
        assert!(Accessor::parse("$a[1").is_err());
        assert!(Accessor::parse("$a['b'").is_err());
    }

    #[test]
    fn array_indexes_and_regex_subject() {
        let body: Map = vec![
            (
                Arc::from("arr"),
                Value::Array(vec![s("x"), Value::Array(vec![s("in")]), Value::Int(3)]),
            ),
            (Arc::from("log"), s("plain")),
            (Arc::from("log"), s("last")),
        ];
        let a = |t: &str| Accessor::parse(t).unwrap();
        assert_eq!(a("$arr[0]").get(&body), Some(&s("x")));
        assert_eq!(a("$arr[1][0]").get(&body), Some(&s("in")));
        assert_eq!(a("$arr[9]").get(&body), None);
        assert_eq!(a("$arr[2]").regex_subject(&body), None);
        assert_eq!(a("$arr[1][0]").regex_subject(&body), Some("in"));
        // A string head ignores the subkeys; the last duplicate key wins.
        assert_eq!(a("$log['x'][0]").regex_subject(&body), Some("last"));
        assert_eq!(a("$arr").regex_subject(&body), None);
    }
}
