//! `rewrite_tag` filter: re-emits records under a new tag, built from the record, the
//! regex captures and the old tag; the original is kept or dropped.
//! Fluent Bit: plugins/filter_rewrite_tag/rewrite_tag.c
//!
//! - `rule KEY REGEX NEW_TAG KEEP`, repeatable, tried in order; the first whose REGEX
//!   matches KEY's string value (a record accessor, as grep's) applies. NEW_TAG is a
//!   record accessor template (`$TAG`, `$TAG[n]`, `$1`, `$key['sub']`, see
//!   `event::template`); `${VAR}` is the environment, replaced when the file is read.
//!   Fields are split on spaces; a field in double quotes may hold spaces.
//! - The re-emitted record (same time, metadata and body) enters the pipeline again
//!   through this filter's emitter input (`emitter_name`, default
//!   `emitter_for_<filter name>`): every filter matching the new tag, then the outputs.
//!   The emitter refuses the records it emitted itself (see `pipeline::emitter`): they go
//!   on under their tag, kept even with KEEP false, as Fluent Bit does.
//! - Differences on purpose: a rule with more than four fields or a KEEP that is not a
//!   boolean is a config error (Fluent Bit ignores the extra fields and drops the
//!   record); a record whose new tag comes out empty is not re-emitted and goes on
//!   under its tag (Fluent Bit keeps it in a chunk that never leaves).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{values, ConfigError, PropKind, PropSpec, Props, Span};
use crate::event::accessor::Accessor;
use crate::event::template::Template;
use crate::event::Record;
use crate::parser::regex::OnigRegex;
use crate::pipeline::emitter::Emitter;
use crate::pipeline::metrics;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "rule",
        PropKind::Multi,
        None,
        "KEY REGEX NEW_TAG KEEP: re-emit records whose KEY matches REGEX under NEW_TAG; KEEP (true/false) keeps the original.",
    ),
    PropSpec::new(
        "emitter_name",
        PropKind::Str,
        None,
        "Name of the emitter input that re-emits the records (default emitter_for_<filter name>).",
    ),
    PropSpec::new(
        "emitter_storage.type",
        PropKind::Enum(&["memory", "filesystem"]),
        Some("memory"),
        "Buffering of the re-emitted records: memory, or filesystem (needs storage.path).",
    ),
    PropSpec::new(
        "emitter_mem_buf_limit",
        PropKind::Size,
        Some("10M"),
        "set a memory buffer limit to restrict memory usage of emitter",
    ),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "rewrite_tag",
    description: "Rewrite records tags",
    props: PROPS,
    build,
};

struct Rule {
    key: Accessor,
    regex: OnigRegex,
    tag: Template,
    /// NEW_TAG as written, for the log.
    tag_text: String,
    keep: bool,
    /// Whether an empty new tag was reported already.
    empty_reported: bool,
}

struct RewriteTagFilter {
    name: Arc<str>,
    rules: Vec<Rule>,
    emitter: Emitter,
    /// `fluentbit_filter_emit_records_total`.
    emitted: Arc<AtomicU64>,
}

/// Fluent Bit's `flb_slist_split_tokens(value, 4)`: fields split on spaces, a field
/// that starts with `"` runs to the next unescaped `"` (`\"` inside is a quote); after
/// four fields the rest, if any, is a fifth.
fn split_fields(value: &str) -> Vec<String> {
    let b = value.as_bytes();
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        while p < b.len() && b[p] == b' ' {
            p += 1;
        }
        if p == b.len() {
            break;
        }
        if out.len() == 4 {
            out.push(value[p..].to_string());
            break;
        }
        if b[p] == b'"' {
            let start = p + 1;
            let mut q = start;
            while q < b.len() && !(b[q] == b'"' && b[q - 1] != b'\\') {
                q += 1;
            }
            out.push(value[start..q].replace("\\\"", "\""));
            p = q + 1;
        } else {
            let start = p;
            while p < b.len() && b[p] != b' ' {
                p += 1;
            }
            out.push(value[start..p].to_string());
        }
    }
    out
}

const EXAMPLE: &str = "e.g. 'rule $level ^(error|warn)$ alert.$1 false'";

fn rule(span: &Span, instance: &str, value: &str) -> Result<Rule, ConfigError> {
    let err = |message: String, hint: String| {
        Err(ConfigError::invalid(
            span,
            format!("[filter:rewrite_tag:{instance}] {message}"),
            Some(hint),
        ))
    };
    let fields = split_fields(value);
    if fields.len() < 4 {
        return Err(ConfigError::invalid(
            span,
            format!(
                "[config map] property 'rule' expects 4 values (only {} were found)",
                fields.len()
            ),
            Some(format!("write 'rule KEY REGEX NEW_TAG KEEP', {EXAMPLE}")),
        ));
    }
    if fields.len() > 4 {
        return err(
            format!("rule has more than 4 fields: '{}' is left over", fields[4]),
            "a REGEX with spaces goes in double quotes: rule $log \"^a b\" newtag true".into(),
        );
    }
    let Some(key) = Template::parse(&fields[0]).ok().and_then(|t| t.first_key()) else {
        return err(
            format!("invalid record accessor key ? '{}'", fields[0]),
            "KEY is a record key: $log, $kubernetes['labels']['app'] or $items[0]".into(),
        );
    };
    let regex = match OnigRegex::new(&fields[1]) {
        Ok(r) => r,
        Err(e) => {
            return err(
                format!("could not compile regex pattern '{}'", fields[1]),
                e,
            )
        }
    };
    let tag = match Template::parse(&fields[2]) {
        Ok(t) => t,
        Err(e) => return err(format!("could not compose tag: {}", fields[2]), e),
    };
    if fields[2].is_empty() {
        return err(
            "NEW_TAG is empty".into(),
            format!("give the new tag, {EXAMPLE}"),
        );
    }
    let Some(keep) = values::parse_bool(&fields[3]) else {
        return err(
            format!("KEEP '{}' is not a boolean", fields[3]),
            "KEEP is true (re-emit a copy and keep the record) or false (move it to the new tag)"
                .into(),
        );
    };
    Ok(Rule {
        key,
        regex,
        tag,
        tag_text: fields[2].clone(),
        keep,
        empty_reported: false,
    })
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let name: Arc<str> = Arc::from(ctx.instance);
    if props
        .str("match")
        .is_some_and(|m| !m.is_empty() && m.bytes().all(|c| c == b'*'))
    {
        crate::warn!("[filter:rewrite_tag:{name}] 'Match' may cause infinite loop.");
    }
    let mut rules = Vec::new();
    for e in props
        .multi_entries_of(&["rule"])
        .into_iter()
        .map(|(_, e)| e)
    {
        rules.push(rule(&e.span, &name, &e.value)?);
    }
    if rules.is_empty() {
        crate::warn!("[filter:rewrite_tag:{name}] no rules have defined");
    }
    let emitter_name: Arc<str> = match props.str("emitter_name") {
        Some(n) => Arc::from(n),
        None => Arc::from(format!("emitter_for_{name}")),
    };
    let filesystem = props
        .str("emitter_storage.type")
        .is_some_and(|t| t.eq_ignore_ascii_case("filesystem"));
    let limit = props.size("emitter_mem_buf_limit").unwrap_or(0);
    Ok(Box::new(RewriteTagFilter {
        emitter: Emitter::new(emitter_name, filesystem, limit, ctx.metrics),
        emitted: ctx.metrics.counter(
            "fluentbit_filter_emit_records_total",
            "Total number of emitted records",
            &name,
        ),
        name,
        rules,
    }))
}

impl RewriteTagFilter {
    /// The first rule that matches and the tag it composes.
    fn new_tag(&mut self, tag: &str, rec: &Record) -> Option<(String, bool)> {
        for r in &mut self.rules {
            let Some(subject) = r.key.regex_subject(&rec.body) else {
                continue;
            };
            let Some(captures) = r.regex.captures(subject.as_bytes()) else {
                continue;
            };
            // Fluent Bit keeps no captures, not even $0, when the regex has no group.
            let captures = if r.regex.groups() == 0 {
                &[][..]
            } else {
                &captures[..]
            };
            let new = r.tag.render(tag, &rec.body, subject, captures);
            if new.is_empty() && !r.empty_reported {
                r.empty_reported = true;
                crate::warn!("[filter:rewrite_tag:{}] the new tag '{}' came out empty for a record of tag '{tag}': such records are not re-emitted and go on under their tag", self.name, r.tag_text);
            }
            return Some((new, r.keep));
        }
        None
    }
}

impl Filter for RewriteTagFilter {
    fn filter(&mut self, tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        if self.rules.is_empty() {
            return FilterResult::NoTouch;
        }
        let mut emitted = 0u64;
        let all = std::mem::take(records);
        records.reserve(all.len());
        for rec in all {
            let Some((new_tag, keep)) = self.new_tag(tag, &rec) else {
                records.push(rec);
                continue;
            };
            if new_tag.is_empty() {
                records.push(rec);
                continue;
            }
            let copy = keep.then(|| rec.clone());
            match self.emitter.emit(&new_tag, rec) {
                Ok(()) => {
                    emitted += 1;
                    records.extend(copy);
                }
                // Refused: the record goes on under its tag, whatever KEEP says.
                Err(rec) => records.push(rec),
            }
        }
        metrics::add(&self.emitted, emitted);
        FilterResult::modified_if(emitted > 0)
    }

    fn emitter(&mut self) -> Option<&mut Emitter> {
        Some(&mut self.emitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Value};

    fn span() -> Span {
        Span::new("t.conf", 3)
    }

    fn filter(rules: &[&str]) -> RewriteTagFilter {
        let m = metrics::PluginMetrics::default();
        RewriteTagFilter {
            name: Arc::from("rewrite_tag.0"),
            rules: rules
                .iter()
                .map(|r| rule(&span(), "rewrite_tag.0", r).unwrap())
                .collect(),
            emitter: Emitter::new(Arc::from("em"), false, 0, &m),
            emitted: Arc::default(),
        }
    }

    fn rec(level: &str, n: i64) -> Record {
        Record::new(
            EventTime::new(n, 0),
            vec![
                (Arc::from("level"), Value::Str(Arc::from(level))),
                (Arc::from("n"), Value::Int(n)),
            ],
        )
    }

    #[test]
    fn fields_split_as_fluent_bit_splits_them() {
        assert_eq!(
            split_fields("  $a  ^x$ t  true "),
            ["$a", "^x$", "t", "true"]
        );
        assert_eq!(
            split_fields(r#"$a "^a \"b\" c$" t true"#),
            ["$a", r#"^a "b" c$"#, "t", "true"]
        );
        assert_eq!(split_fields("a b c d e  f"), ["a", "b", "c", "d", "e  f"]);
        assert_eq!(split_fields("a b"), ["a", "b"]);
    }

    #[test]
    fn bad_rules_are_errors() {
        let e = |v: &str| rule(&span(), "rewrite_tag.0", v).err().unwrap().to_string();
        assert!(e("$a ^x$ t").contains("expects 4 values (only 3 were found)"));
        assert!(e("$a ^x$ t true more").contains("more than 4 fields"));
        assert!(e("$a ^(x$ t true").contains("could not compile regex pattern '^(x$'"));
        assert!(e("$a ^x$ t.$b[c] true").contains("could not compose tag: t.$b[c]"));
        assert!(e("$a ^x$ \"\" true").contains("NEW_TAG is empty"));
        assert!(e("$a ^x$ t maybe").contains("KEEP 'maybe' is not a boolean"));
        assert!(e("$1 ^x$ t true").contains("invalid record accessor key ? '$1'"));
    }

    #[test]
    fn first_matching_rule_emits_and_keep_decides_the_original() {
        let mut f = filter(&[
            "$level ^(error)$ alert.$1.$TAG[1] false",
            "$level ^warn$ w true",
        ]);
        let mut records = vec![rec("error", 1), rec("info", 2), rec("warn", 3)];
        let r = f.filter("app.log", &mut records, Instant::now());
        assert_eq!(r, FilterResult::Modified);
        assert_eq!(records, [rec("info", 2), rec("warn", 3)]);
        let out = f.emitter.take();
        assert_eq!(out.len(), 2);
        assert_eq!(
            (&*out[0].tag, &out[0].records[..]),
            ("alert.error.log", &[rec("error", 1)][..])
        );
        assert_eq!(
            (&*out[1].tag, &out[1].records[..]),
            ("w", &[rec("warn", 3)][..])
        );
        assert_eq!(metrics::get(&f.emitted), 2);
    }

    #[test]
    fn refused_or_empty_tags_keep_the_record() {
        let mut f = filter(&["$level ^(error)|(x)$ $2 false"]);
        let mut records = vec![rec("error", 1)];
        assert_eq!(
            f.filter("t", &mut records, Instant::now()),
            FilterResult::NoTouch
        );
        assert_eq!(records, [rec("error", 1)]);
        let mut f = filter(&["$level ^error$ new false"]);
        f.emitter
            .set_refusal(Some(crate::pipeline::emitter::Refusal::Cycle));
        let mut records = vec![rec("error", 1)];
        f.filter("t", &mut records, Instant::now());
        assert_eq!(records, [rec("error", 1)]);
        assert!(f.emitter.take().is_empty());
    }

    #[test]
    fn a_regex_without_groups_has_no_captures() {
        let mut f = filter(&["$level ^error$ x.$0.y false"]);
        let mut records = vec![rec("error", 1)];
        f.filter("t", &mut records, Instant::now());
        assert_eq!(&*f.emitter.take()[0].tag, "x..y");
    }
}
