//! Regex rules: `state "/regex/" next_state` lines compiled into a state machine, as
//! `flb_ml_rule_create` and `flb_ml_rule_init` build it.
//!
//! Fluent Bit: src/multiline/flb_ml_rule.c

use crate::parser::regex::OnigRegex;

/// The state every record starts from.
pub const START_STATE: &str = "start_state";

/// One rule: from any of `from`, a line matching `regex` moves to `to`.
#[derive(Debug)]
pub struct Rule {
    pub from: Vec<String>,
    /// `from` holds `start_state`: the rule can begin a record.
    pub start: bool,
    pub regex: OnigRegex,
    pub to: Option<String>,
    /// The rules a line may match next (those whose `from` holds `to`), in definition
    /// order: Fluent Bit's `to_state_map`.
    pub next: Vec<usize>,
    /// One of `next` is a start rule: the record is complete after this line.
    pub next_has_start: bool,
}

/// A rule as written: `from` (comma-separated states), the pattern, `to`.
#[derive(Clone, Copy, Debug)]
pub struct RuleDef<'a> {
    pub from: &'a str,
    pub regex: &'a str,
    pub to: Option<&'a str>,
}

/// Why a rule set does not compile; the `usize` is the rule's index.
#[derive(Debug, PartialEq)]
pub enum RuleError {
    /// No state before the pattern (`from_states` empty).
    EmptyFrom(usize),
    /// The first rule does not start from `start_state`.
    NoStart(usize),
    Regex(usize, String),
    /// A `to` state that no rule starts from.
    UnknownTo(usize, String),
}

/// The compiled rules of one `regex` multiline parser.
#[derive(Debug)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

impl Rules {
    pub fn build(defs: &[RuleDef<'_>]) -> Result<Rules, RuleError> {
        let mut rules = Vec::with_capacity(defs.len());
        for (i, d) in defs.iter().enumerate() {
            let from = split_states(d.from);
            if from.is_empty() {
                return Err(RuleError::EmptyFrom(i));
            }
            let start = from.iter().any(|s| s == START_STATE);
            if !start && i == 0 {
                return Err(RuleError::NoStart(i));
            }
            let regex = OnigRegex::new(d.regex).map_err(|e| RuleError::Regex(i, e))?;
            rules.push(Rule {
                from,
                start,
                regex,
                to: d.to.map(str::to_string),
                next: Vec::new(),
                next_has_start: false,
            });
        }
        for i in 0..rules.len() {
            let Some(to) = rules[i].to.clone() else {
                continue;
            };
            let next: Vec<usize> = (0..rules.len())
                .filter(|&j| rules[j].from.contains(&to))
                .collect();
            if next.is_empty() {
                return Err(RuleError::UnknownTo(i, to));
            }
            rules[i].next_has_start = next.iter().any(|&j| rules[j].start);
            rules[i].next = next;
        }
        Ok(Rules { rules })
    }

    /// The rule a line continues with from `rule` (start rules excluded).
    pub fn continuation(&self, rule: usize, text: &[u8]) -> Option<usize> {
        self.rules[rule]
            .next
            .iter()
            .copied()
            .find(|&n| !self.rules[n].start && self.rules[n].regex.is_match(text))
    }

    /// The first start rule the line matches.
    pub fn start(&self, text: &[u8]) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.start && r.regex.is_match(text))
    }
}

/// `flb_slist_split_string(.., ',')`: tokens trimmed of spaces, empty ones dropped.
fn split_states(s: &str) -> Vec<String> {
    s.split(',')
        .map(|t| t.trim_matches(' '))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// `flb_slist_split_tokens(.., 3)`: a `rule` value split on spaces, `"quoted"` tokens
/// with `\"` inside, and after three tokens the rest as a fourth.
pub fn split_tokens(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut p = 0;
    loop {
        while b.get(p) == Some(&b' ') {
            p += 1;
        }
        let mut start = p;
        let mut quoted = false;
        if b.get(p) == Some(&b'"') {
            quoted = true;
            p += 1;
            start = p;
            loop {
                while p < b.len() && b[p] != b'"' {
                    p += 1;
                }
                if p < b.len() && b[p - 1] == b'\\' {
                    p += 1;
                    continue;
                }
                break;
            }
        } else {
            while p < b.len() && b[p] != b' ' {
                p += 1;
            }
        }
        if p < b.len() {
            let tok = &s[start..p];
            out.push(if quoted {
                tok.replace("\\\"", "\"")
            } else {
                tok.to_string()
            });
            p += 1;
        } else {
            if p > start {
                out.push(s[start..].to_string());
            }
            return out;
        }
        if out.len() >= 3 {
            while b.get(p) == Some(&b' ') {
                p += 1;
            }
            if p < b.len() {
                out.push(s[p..].to_string());
            }
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def<'a>(from: &'a str, regex: &'a str, to: &'a str) -> RuleDef<'a> {
        RuleDef {
            from,
            regex,
            to: Some(to),
        }
    }

    #[test]
    fn tokens_as_fluent_bit_splits_them() {
        let t = split_tokens(r#""start_state"   "/([a-zA-Z]+ \d+ \d+\:\d+\:\d+)(.*)/"  "cont""#);
        assert_eq!(
            t,
            [
                "start_state",
                r"/([a-zA-Z]+ \d+ \d+\:\d+\:\d+)(.*)/",
                "cont"
            ]
        );
        assert_eq!(
            split_tokens(r"cont /^\s+at.*/ cont"),
            ["cont", r"/^\s+at.*/", "cont"]
        );
        assert_eq!(
            split_tokens(r#""a" "/say \"hi\"/" "b""#),
            ["a", r#"/say "hi"/"#, "b"]
        );
        assert_eq!(split_tokens(r#"a "/x/" b c d"#), ["a", "/x/", "b", "c d"]);
        assert_eq!(split_tokens(r#"a "/x/"#), ["a", "/x/"]);
        assert_eq!(split_tokens("  "), Vec::<String>::new());
        assert_eq!(
            split_states(" start_state, cont ,,x"),
            ["start_state", "cont", "x"]
        );
    }

    #[test]
    fn state_machine() {
        let r = Rules::build(&[
            def("start_state", "/^Traceback/", "python"),
            def("python", r"/^\s+File/", "python_code"),
            def("python_code", "/./", "python"),
            def("python", "/^[A-Za-z]+Error:/", "start_state"),
        ])
        .unwrap();
        assert_eq!(r.rules[0].next, [1, 3]);
        assert!(!r.rules[0].next_has_start);
        assert!(r.rules[3].next_has_start);
        assert_eq!(r.start(b"Traceback (x)"), Some(0));
        assert_eq!(r.continuation(0, b"  File a"), Some(1));
        assert_eq!(r.continuation(0, b"KeyError: x"), Some(3));
        assert_eq!(r.continuation(0, b"other"), None);
    }

    #[test]
    fn errors() {
        let e = Rules::build(&[def("cont", "/a/", "cont")]).unwrap_err();
        assert_eq!(e, RuleError::NoStart(0));
        let e = Rules::build(&[def("start_state", "/a/", "nowhere")]).unwrap_err();
        assert_eq!(e, RuleError::UnknownTo(0, "nowhere".into()));
        let e = Rules::build(&[def(" , ", "/a/", "x")]).unwrap_err();
        assert_eq!(e, RuleError::EmptyFrom(0));
        let e = Rules::build(&[def("start_state", "/(a/", "start_state")]).unwrap_err();
        assert!(matches!(e, RuleError::Regex(0, _)));
        // Only the first rule must be a start rule; no `to` is allowed.
        let ok = Rules::build(&[
            def("start_state", "/a/", "c"),
            RuleDef {
                from: "c",
                regex: "/b/",
                to: None,
            },
        ]);
        assert!(ok.is_ok());
    }
}
