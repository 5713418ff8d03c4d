//! `[MULTILINE_PARSER]` sections, read as `flb_parser_load_multiline_parser_definitions`
//! reads them: `name`, `type` (`regex`, `endswith`, `equal`/`eq`), `match_string`,
//! `negate`, `key_content`, `key_pattern`, `key_group`, `parser`, `flush_timeout` (ms)
//! and, for `regex`, `rule <state> <regex> [<next_state>]` lines in order.
//!
//! Stricter than Fluent Bit on purpose, like the rest of agent: an unknown or repeated
//! key, a `flush_timeout` or `negate` that does not read, a `parser` that is not
//! defined (Fluent Bit also fails, later, at start) and `endswith`/`equal` without a
//! `match_string` (Fluent Bit crashes) are errors naming file:line.
//!
//! Fluent Bit: src/flb_parser.c

use std::sync::Arc;

use super::rules::{split_tokens, RuleDef, RuleError, Rules};
use super::{Kind, LineParser, MlParser, DEFAULT_FLUSH_MS};
use crate::config::error::closest;
use crate::config::values::parse_bool;
use crate::config::{ConfigError, Entry, Section};
use crate::parser::Parsers;

const KEYS: &[&str] = &[
    "name",
    "type",
    "match_string",
    "negate",
    "key_content",
    "key_pattern",
    "key_group",
    "parser",
    "flush_timeout",
    "rule",
];

pub fn from_section(section: &Section, parsers: &Parsers) -> Result<MlParser, ConfigError> {
    let mut props: Vec<&Entry> = Vec::new();
    let mut rules: Vec<&Entry> = Vec::new();
    for e in &section.entries {
        if e.key == "rule" {
            rules.push(e);
            continue;
        }
        if !KEYS.contains(&e.key.as_str()) {
            let hint = closest(&e.key, KEYS.iter().copied())
                .map(|s| format!("did you mean '{s}'?"))
                .unwrap_or_else(|| format!("the properties are: {}", KEYS.join(", ")));
            return Err(ConfigError::invalid(
                &e.span,
                format!("[multiline_parser] unknown property '{}'", e.key),
                Some(hint),
            ));
        }
        if let Some(first) = props.iter().find(|p| p.key == e.key) {
            return Err(ConfigError::invalid(
                &e.span,
                format!(
                    "[multiline_parser] property '{}' is set 2 times (first at {})",
                    e.key, first.span
                ),
                Some(format!("remove one of the two '{}' lines", e.key)),
            ));
        }
        props.push(e);
    }
    let get = |k: &str| props.iter().find(|p| p.key == k).copied();
    let text = |k: &str| get(k).map(|e| e.value.as_str());

    let name = text("name").filter(|n| !n.is_empty()).ok_or_else(|| {
        ConfigError::invalid(
            &section.span,
            "[multiline_parser] no 'name' defined",
            Some("add a line such as 'name multiline-regex-test'".to_string()),
        )
    })?;
    let who = format!("[multiline parser: {name}]");
    let ty = get("type").ok_or_else(|| {
        ConfigError::invalid(
            &section.span,
            format!("{who} no 'type' defined"),
            Some("add 'type regex' (or endswith, equal)".to_string()),
        )
    })?;

    let negate = match get("negate") {
        None => false,
        Some(e) => parse_bool(&e.value).ok_or_else(|| {
            ConfigError::invalid(
                &e.span,
                format!("{who} invalid 'negate' value '{}'", e.value),
                Some("use on or off".to_string()),
            )
        })?,
    };
    let flush_ms = match get("flush_timeout") {
        None => DEFAULT_FLUSH_MS,
        Some(e) => match e.value.trim().parse::<i64>() {
            // Fluent Bit: 0 or less means the default.
            Ok(ms) if ms > 0 => ms as u64,
            Ok(_) => DEFAULT_FLUSH_MS,
            Err(_) => {
                return Err(ConfigError::invalid(
                    &e.span,
                    format!("{who} invalid 'flush_timeout' value '{}'", e.value),
                    Some("give milliseconds as an integer, e.g. 'flush_timeout 1000'".to_string()),
                ))
            }
        },
    };
    let line = match get("parser") {
        None => LineParser::None,
        Some(e) => LineParser::Custom(parsers.parser(&e.value).ok_or_else(|| {
            let hint = closest(&e.value, parsers.parser_names())
                .map(|s| format!("did you mean '{s}'? "))
                .unwrap_or_default();
            ConfigError::invalid(
                &e.span,
                format!(
                    "multiline parser '{name}' points to an undefined parser '{}'",
                    e.value
                ),
                Some(format!(
                    "{hint}define it in a [PARSER] section before this one"
                )),
            )
        })?),
    };
    let match_string = |kind: &str| {
        get("match_string")
            .map(|e| Box::from(e.value.as_bytes()))
            .ok_or_else(|| {
                ConfigError::invalid(
                    &ty.span,
                    format!("{who} type '{kind}' needs a 'match_string'"),
                    Some("add a line such as 'match_string \\'".to_string()),
                )
            })
    };
    let kind = match ty.value.to_ascii_lowercase().as_str() {
        "regex" => Kind::Regex(rule_set(&who, &rules)?),
        "endswith" => Kind::EndsWith(match_string("endswith")?),
        "equal" | "eq" => Kind::Equal(match_string("equal")?),
        _ => {
            return Err(ConfigError::invalid(
                &ty.span,
                format!("[multiline_parser] invalid type '{}'", ty.value),
                Some("use regex, endswith or equal".to_string()),
            ))
        }
    };
    let key = |k: &str| text(k).map(Arc::from);
    Ok(MlParser {
        name: Arc::from(name),
        kind,
        negate,
        flush_ms,
        key_content: key("key_content"),
        key_pattern: key("key_pattern"),
        key_group: key("key_group"),
        line,
    })
}

/// The `rule` lines of a `regex` parser.
fn rule_set(who: &str, entries: &[&Entry]) -> Result<Rules, ConfigError> {
    let tokens: Vec<Vec<String>> = entries.iter().map(|e| split_tokens(&e.value)).collect();
    for (e, t) in entries.iter().zip(&tokens) {
        if t.len() < 2 {
            let missing = if t.is_empty() {
                "from_state"
            } else {
                "regex_pattern"
            };
            return Err(ConfigError::invalid(
                &e.span,
                format!("{who} '{missing}' is mandatory"),
                Some("write rules as: rule \"state\" \"/regex/\" \"next_state\"".to_string()),
            ));
        }
    }
    let defs: Vec<RuleDef> = tokens
        .iter()
        .map(|t| RuleDef {
            from: &t[0],
            regex: &t[1],
            to: t.get(2).map(String::as_str),
        })
        .collect();
    Rules::build(&defs).map_err(|err| {
        let (i, message, hint) = match err {
            RuleError::EmptyFrom(i) => (
                i,
                "rule is empty or has invalid 'from_states' tokens".to_string(),
                None,
            ),
            RuleError::NoStart(i) => (
                i,
                "rule don't contain a 'start_state'".to_string(),
                Some("the first rule must start from \"start_state\"".to_string()),
            ),
            RuleError::Regex(i, e) => (i, format!("invalid regex {}: {e}", defs[i].regex), None),
            RuleError::UnknownTo(i, to) => {
                let states: Vec<&str> = tokens
                    .iter()
                    .flat_map(|t| t[0].split(','))
                    .map(|s| s.trim_matches(' '))
                    .filter(|s| !s.is_empty())
                    .collect();
                let hint = match closest(&to, states.iter().copied()) {
                    Some(s) => format!("did you mean '{s}'? no rule starts from state '{to}'"),
                    None => format!(
                        "no rule starts from state '{to}'; the states are: {}",
                        states.join(", ")
                    ),
                };
                (i, format!("to_state='{to}' is not registered"), Some(hint))
            }
        };
        ConfigError::invalid(&entries[i].span, format!("{who} {message}"), hint)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SectionKind, Span};

    fn section(lines: &[(&str, &str)]) -> Section {
        Section {
            kind: SectionKind::MultilineParser,
            header: "MULTILINE_PARSER".into(),
            span: Span::new("p.conf", 1),
            entries: lines
                .iter()
                .enumerate()
                .map(|(i, (k, v))| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                    span: Span::new("p.conf", i as u32 + 2),
                })
                .collect(),
            processors: Vec::new(),
        }
    }

    fn err(lines: &[(&str, &str)]) -> (String, Option<String>) {
        let e = from_section(&section(lines), &Parsers::default()).unwrap_err();
        (e.to_string(), e.help())
    }

    #[test]
    fn reads_a_regex_parser() {
        let p = from_section(
            &section(&[
                ("name", "multiline-regex-test"),
                ("type", "Regex"),
                ("flush_timeout", "1000"),
                ("key_content", "message"),
                (
                    "rule",
                    r#""start_state"   "/([a-zA-Z]+ \d+ \d+\:\d+\:\d+)(.*)/"  "cont""#,
                ),
                (
                    "rule",
                    r#""cont"          "/^\s+at.*/"                     "cont""#,
                ),
            ]),
            &Parsers::default(),
        )
        .unwrap();
        assert_eq!(&*p.name, "multiline-regex-test");
        assert_eq!(p.flush_ms, 1000);
        assert_eq!(p.key_content.as_deref(), Some("message"));
        let Kind::Regex(r) = &p.kind else { panic!() };
        assert_eq!(r.rules.len(), 2);
        assert_eq!(r.rules[0].next, [1]);
    }

    #[test]
    fn reads_endswith_and_equal() {
        let p = from_section(
            &section(&[
                ("name", "e"),
                ("type", "endswith"),
                ("match_string", "\\"),
                ("negate", "on"),
                ("flush_timeout", "0"),
            ]),
            &Parsers::default(),
        )
        .unwrap();
        assert!(matches!(&p.kind, Kind::EndsWith(s) if &**s == b"\\"));
        assert!(p.negate);
        assert_eq!(p.flush_ms, DEFAULT_FLUSH_MS);
        let p = from_section(
            &section(&[("name", "q"), ("type", "eq"), ("match_string", "F")]),
            &Parsers::default(),
        )
        .unwrap();
        assert!(matches!(&p.kind, Kind::Equal(s) if &**s == b"F"));
    }

    #[test]
    fn errors_name_the_line() {
        let (e, h) = err(&[("type", "regex")]);
        assert_eq!(e, "p.conf:1: [multiline_parser] no 'name' defined");
        assert!(h.unwrap().contains("name"));
        let (e, h) = err(&[("name", "x"), ("type", "regexp")]);
        assert_eq!(e, "p.conf:3: [multiline_parser] invalid type 'regexp'");
        assert_eq!(h.as_deref(), Some("use regex, endswith or equal"));
        let (e, _) = err(&[("name", "x")]);
        assert_eq!(e, "p.conf:1: [multiline parser: x] no 'type' defined");
        let (e, h) = err(&[("name", "x"), ("type", "regex"), ("flush_timout", "5")]);
        assert_eq!(
            e,
            "p.conf:4: [multiline_parser] unknown property 'flush_timout'"
        );
        assert_eq!(h.as_deref(), Some("did you mean 'flush_timeout'?"));
        let (e, _) = err(&[("name", "x"), ("type", "regex"), ("name", "y")]);
        assert_eq!(
            e,
            "p.conf:4: [multiline_parser] property 'name' is set 2 times (first at p.conf:2)"
        );
        let (e, _) = err(&[("name", "x"), ("type", "regex"), ("flush_timeout", "1s")]);
        assert_eq!(
            e,
            "p.conf:4: [multiline parser: x] invalid 'flush_timeout' value '1s'"
        );
        let (e, _) = err(&[("name", "x"), ("type", "endswith")]);
        assert_eq!(
            e,
            "p.conf:3: [multiline parser: x] type 'endswith' needs a 'match_string'"
        );
        let (e, h) = err(&[("name", "x"), ("type", "regex"), ("parser", "nope")]);
        assert_eq!(
            e,
            "p.conf:4: multiline parser 'x' points to an undefined parser 'nope'"
        );
        assert!(h.unwrap().contains("[PARSER]"));
    }

    #[test]
    fn rule_errors_name_the_rule_line() {
        let base = [("name", "x"), ("type", "regex")];
        let with = |rules: &[&str]| {
            let mut lines = base.to_vec();
            lines.extend(rules.iter().map(|r| ("rule", *r)));
            err(&lines)
        };
        let (e, _) = with(&[r#""start_state" "/a/" "cont""#, r#""cont" "/(b/" "cont""#]);
        assert!(
            e.starts_with("p.conf:5: [multiline parser: x] invalid regex /(b/: "),
            "{e}"
        );
        let (e, h) = with(&[r#""start_state" "/a/" "cnt""#, r#""cont" "/b/" "cont""#]);
        assert_eq!(
            e,
            "p.conf:4: [multiline parser: x] to_state='cnt' is not registered"
        );
        assert_eq!(
            h.unwrap(),
            "did you mean 'cont'? no rule starts from state 'cnt'"
        );
        let (e, _) = with(&[r#""cont" "/a/" "cont""#]);
        assert_eq!(
            e,
            "p.conf:4: [multiline parser: x] rule don't contain a 'start_state'"
        );
        let (e, _) = with(&[r#""start_state""#]);
        assert_eq!(
            e,
            "p.conf:4: [multiline parser: x] 'regex_pattern' is mandatory"
        );
        // Look-around runs (on fancy-regex, as in [PARSER]s); what no engine here has
        // is an error that names it.
        from_section(
            &section(&[
                ("name", "x"),
                ("type", "regex"),
                ("rule", r#""start_state" "/a(?=b)/" "start_state""#),
            ]),
            &Parsers::default(),
        )
        .unwrap();
        let (e, _) = with(&[r#""start_state" "/a\Kb/" "start_state""#]);
        assert!(
            e.starts_with("p.conf:4: [multiline parser: x] invalid regex /a\\Kb/: "),
            "{e}"
        );
    }
}
