//! Fluent Bit's record accessor, the subset rate limits need: `$key`,
//! `$kubernetes['pod_name']`, `$a["b"]['c']`, or a bare top-level `key`.
//! Fluent Bit: src/flb_record_accessor.c

use super::{Map, Value};

/// A parsed accessor: the path of map keys from the record body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accessor {
    path: Vec<String>,
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
                path: vec![t.to_string()],
            });
        };
        let end = rest.find('[').unwrap_or(rest.len());
        let head = &rest[..end];
        if head.is_empty() {
            return Err(format!("'{text}': a record accessor starts with $name"));
        }
        let mut path = vec![head.to_string()];
        let mut s = &rest[end..];
        while !s.is_empty() {
            let quote = match s.as_bytes() {
                [b'[', q @ (b'\'' | b'"'), ..] => *q as char,
                _ => {
                    return Err(format!(
                        "'{text}': expected ['key'] after {}",
                        path.join(".")
                    ))
                }
            };
            let body = &s[2..];
            let close = body
                .find(quote)
                .ok_or_else(|| format!("'{text}': unterminated key"))?;
            path.push(body[..close].to_string());
            s = body[close + 1..]
                .strip_prefix(']')
                .ok_or_else(|| format!("'{text}': expected ']'"))?;
        }
        Ok(Accessor { path })
    }

    /// The keys from the record body down: `$a['b']` is `["a", "b"]`.
    pub fn path(&self) -> &[String] {
        &self.path
    }

    /// The value at the path, if every step is a map holding the key.
    pub fn get<'a>(&self, body: &'a Map) -> Option<&'a Value> {
        let mut map = body;
        let (last, init) = self.path.split_last()?;
        for k in init {
            match map.iter().rev().find(|(x, _)| **x == **k) {
                Some((_, Value::Map(m))) => map = m,
                _ => return None,
            }
        }
        map.iter()
            .rev()
            .find(|(x, _)| **x == **last)
            .map(|(_, v)| v)
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
        assert!(Accessor::parse("$a['b'").is_err());
    }
}
