//! Fluent Bit's YAML config format, a second front end to the same model: `service`,
//! `pipeline` (`inputs`, `filters`, `outputs`; several merge), `env` (map or list),
//! `includes` (relative to the including file). camelCase keys become snake_case and
//! YAML scalars become the text the classic parser would see, so validation, property
//! tables, `--dry-run` and errors are shared. Errors carry file:line:column.
//! Fluent Bit: src/config_format/flb_cf_yaml.c; docs administration/configuring-fluent-bit/yaml.
//!
//! YAML crate: `saphyr`, the maintained YAML 1.2 parser of the yaml-rust lineage, because
//! its `MarkedYamlOwned` keeps every node's position (serde_yaml is deprecated, and its
//! successors lose positions after deserialising).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use saphyr::{MarkedYamlOwned, ScalarOwned, YamlDataOwned, YamlLoader};
use saphyr_parser::{Event, ScanError, SpannedEventReceiver};

use super::error::{closest, ConfigError};
use super::model::{
    ConditionSpec, Document, Entry, ProcessorUnit, RuleSpec, Section, SectionKind, Span,
};

/// Top-level sections Fluent Bit's YAML has and agent does not support yet.
const NOT_YET: &[&str] = &[
    "plugins",
    "customs",
    "processors",
    "stream_processor",
    "extensions",
];
const KNOWN: &[&str] = &[
    "env",
    "includes",
    "service",
    "pipeline",
    "parsers",
    "multiline_parsers",
    "upstream_servers",
];

/// Whether `path` names a YAML config (`.yaml`/`.yml`, any case), as Fluent Bit decides.
pub fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Loads a YAML config and its includes into the shared model, `${VAR}` expanded.
pub fn load(path: &Path) -> Result<Document, ConfigError> {
    let mut l = Loader {
        doc: Document::default(),
        service_at: None,
        vars: HashMap::new(),
        seen: HashSet::new(),
        texts: HashMap::new(),
    };
    l.file(path, &Span::new(path.display().to_string(), 0))?;
    let Loader { mut doc, vars, .. } = l;
    super::parser::expand_values(&mut doc, &vars);
    doc.vars = super::parser::sorted_vars(&vars);
    Ok(doc)
}

struct Loader {
    doc: Document,
    /// Where `service:` was defined: a second one is an error, as in Fluent Bit.
    service_at: Option<Span>,
    vars: HashMap<String, String>,
    seen: HashSet<PathBuf>,
    /// Each file's text, by label: a null scalar's value is its text as written.
    texts: HashMap<String, Vec<char>>,
}

type Node = MarkedYamlOwned;

/// Marks the nth repeat of a key in one mapping: `pipeline\0 2`.
const REPEAT: char = '\0';

/// Parses YAML documents keeping every repeated key of a mapping, in order. Fluent Bit
/// reads YAML as a stream of events: `pipeline:` twice is merged, `add:` twice under a
/// `modify` is a repeated property. saphyr's loader keeps one value per key, so a
/// repeated key is renamed `key\0n` on its way in and [`Loader::key`] drops the suffix.
fn load_keeping_repeats(text: &str) -> Result<Vec<Node>, LoadError> {
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let mut rx = KeepRepeats {
        inner: YamlLoader::default(),
        stack: Vec::new(),
        too_deep: None,
    };
    // Events one by one, not `Parser::load`: that walks nested collections by
    // recursion, and a document 20,000 levels deep overflowed the stack.
    for item in &mut parser {
        let (ev, span) = item.map_err(LoadError::Scan)?;
        rx.on_event(ev, span);
        if rx.too_deep.is_some() {
            break;
        }
    }
    if let Some(at) = rx.too_deep {
        return Err(LoadError::TooDeep(at));
    }
    if let Some(e) = rx.inner.error() {
        return Err(LoadError::Scan(e.clone()));
    }
    Ok(rx.inner.into_documents())
}

/// Deepest nesting of mappings and sequences a config may have. Fluent Bit's deepest
/// is 5 (`pipeline` → `inputs` → a plugin → `processors` → `logs` → a processor → a
/// `condition`'s rules); a document 20,000 levels deep would overflow the stack of
/// anything that walks it.
const MAX_DEPTH: usize = 64;

/// Why a YAML text could not be loaded.
enum LoadError {
    Scan(ScanError),
    /// Nested deeper than [`MAX_DEPTH`]: where the first too-deep collection starts.
    TooDeep(saphyr_parser::Marker),
}

/// Where the event stream is: in a sequence, or in a mapping expecting a key (with the
/// keys seen so far) or a value.
enum Open {
    Sequence,
    Mapping {
        expect_key: bool,
        seen: HashMap<String, usize>,
    },
}

struct KeepRepeats<'a> {
    inner: YamlLoader<'a, Node>,
    stack: Vec<Open>,
    /// Set once the nesting passes [`MAX_DEPTH`]; later events are not kept.
    too_deep: Option<saphyr_parser::Marker>,
}

impl<'a> SpannedEventReceiver<'a> for KeepRepeats<'a> {
    fn on_event(&mut self, ev: Event<'a>, span: saphyr_parser::Span) {
        if self.too_deep.is_some() {
            return;
        }
        if matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..))
            && self.stack.len() >= MAX_DEPTH
        {
            self.too_deep = Some(span.start);
            return;
        }
        let node = matches!(
            ev,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
        );
        let mut ev = ev;
        if let (true, Some(Open::Mapping { expect_key, seen })) = (node, self.stack.last_mut()) {
            if *expect_key {
                if let Event::Scalar(text, style, anchor, tag) = &ev {
                    let n = seen.entry(text.to_string()).or_insert(0);
                    *n += 1;
                    if *n > 1 {
                        let renamed = format!("{text}{REPEAT}{n}");
                        ev = Event::Scalar(renamed.into(), *style, *anchor, tag.clone());
                    }
                }
            }
            *expect_key = !*expect_key;
        }
        match &ev {
            Event::SequenceStart(..) => self.stack.push(Open::Sequence),
            Event::MappingStart(..) => self.stack.push(Open::Mapping {
                expect_key: true,
                seen: HashMap::new(),
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
        self.inner.on_event(ev, span);
    }
}

fn err(span: Span, message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        span,
        message: message.into(),
        hint: Some(hint.into()),
    }
}

/// Fluent Bit's key translation: camelCase → snake_case when the key starts lower-case
/// and has no `_`; then lower-case, as the classic format's keys are.
pub fn snake_case(key: &str) -> String {
    if key.starts_with(|c: char| c.is_ascii_lowercase()) && !key.contains('_') {
        let mut out = String::with_capacity(key.len() + 4);
        for c in key.chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    } else {
        key.to_ascii_lowercase()
    }
}

impl Loader {
    fn span(&self, file: &str, n: &Node) -> Span {
        Span::at(
            file,
            n.span.start.line() as u32,
            n.span.start.col() as u32 + 1,
        )
    }

    fn file(&mut self, path: &Path, from: &Span) -> Result<(), ConfigError> {
        let label = path.display().to_string();
        let text = super::read_config_text(path).map_err(|e| {
            err(
                from.clone(),
                format!("could not open configuration file {label}: {e}"),
                "check the path (includes are relative to the file that includes them)",
            )
        })?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if !self.seen.insert(canonical) {
            return Err(err(
                from.clone(),
                format!("[config] file already included {label}"),
                "include a file only once",
            ));
        }
        self.texts.insert(label.clone(), text.chars().collect());
        let docs = load_keeping_repeats(&text).map_err(|e| match e {
            LoadError::Scan(e) => {
                let m = e.marker();
                err(Span::at(label.as_str(), m.line() as u32, m.col() as u32 + 1), format!("[config] invalid YAML: {}", e.info()), "indent with spaces only, children deeper than their parent, and write 'key: value' with a space after ':'")
            }
            LoadError::TooDeep(m) => err(
                Span::at(label.as_str(), m.line() as u32, m.col() as u32 + 1),
                format!("[config] YAML nested more than {MAX_DEPTH} levels deep"),
                "a Fluent Bit config needs a handful of levels: check the indentation or the brackets",
            ),
        })?;
        let Some(root) = docs.first() else {
            return Ok(());
        };
        let YamlDataOwned::Mapping(map) = &root.data else {
            if matches!(root.data, YamlDataOwned::Value(ScalarOwned::Null)) {
                return Ok(());
            }
            return Err(err(
                self.span(&label, root),
                "[config] a YAML config is a mapping of sections",
                "start with sections such as 'service:' and 'pipeline:'",
            ));
        };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for (k, v) in map {
            let key = self.key(&label, k)?;
            match key.as_str() {
                "env" => self.env(&label, v)?,
                "includes" => {
                    for inc in self.list(&label, v, "includes")? {
                        let name = self.scalar(&label, inc, "includes")?;
                        let p = if Path::new(&name).is_absolute() {
                            PathBuf::from(&name)
                        } else {
                            dir.join(&name)
                        };
                        self.file(&p, &self.span(&label, inc))?;
                    }
                }
                "service" => {
                    if let Some(first) = &self.service_at {
                        return Err(err(
                            self.span(&label, k),
                            format!("[config] duplicated definition of 'service' (the first is at {first})"),
                            "merge the two 'service:' sections into one (Fluent Bit refuses a second one, also in an included file)",
                        ));
                    }
                    self.service_at = Some(self.span(&label, k));
                    let entries = self.entries(&label, v, "service")?;
                    self.doc.sections.push(Section {
                        kind: SectionKind::Service,
                        header: "service".into(),
                        span: self.span(&label, k),
                        entries,
                        processors: Vec::new(),
                    });
                }
                "pipeline" => self.pipeline(&label, v)?,
                "parsers" | "multiline_parsers" => self.parsers(&label, &key, v)?,
                "upstream_servers" => self.upstream_servers(&label, v)?,
                // Empty lists are what charts emit when nothing is configured.
                s if NOT_YET.contains(&s)
                    && match &v.data {
                        YamlDataOwned::Sequence(items) => items.is_empty(),
                        YamlDataOwned::Mapping(m) => m.is_empty(),
                        YamlDataOwned::Value(ScalarOwned::Null) => true,
                        _ => false,
                    } => {}
                s if NOT_YET.contains(&s) => {
                    return Err(err(
                        self.span(&label, k),
                        format!("[config] section '{s}' is not supported by agent yet"),
                        format!("remove the '{s}' section"),
                    ));
                }
                s => {
                    let hint = match closest(s, KNOWN.iter().chain(NOT_YET).copied()) {
                        Some(c) => {
                            format!("did you mean '{c}'? the sections are: {}", KNOWN.join(", "))
                        }
                        None => format!("the sections are: {}", KNOWN.join(", ")),
                    };
                    return Err(err(
                        self.span(&label, k),
                        format!("[config] unknown section '{s}'"),
                        hint,
                    ));
                }
            }
        }
        Ok(())
    }

    fn key(&self, file: &str, k: &Node) -> Result<String, ConfigError> {
        match &k.data {
            YamlDataOwned::Value(ScalarOwned::String(s)) => {
                Ok(s.split(REPEAT).next().unwrap_or_default().to_string())
            }
            _ => Err(err(
                self.span(file, k),
                "[config] a key must be a string",
                "write keys as plain words, e.g. 'name:'",
            )),
        }
    }

    /// A scalar as the text the classic format would hold.
    fn scalar(&self, file: &str, n: &Node, what: &str) -> Result<String, ConfigError> {
        Ok(match &n.data {
            YamlDataOwned::Value(ScalarOwned::String(s)) => s.clone(),
            YamlDataOwned::Value(ScalarOwned::Boolean(b)) => b.to_string(),
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => i.to_string(),
            YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => f.to_string(),
            // Fluent Bit reads every scalar as its text: `name: null` is the null
            // output, `key: ~` the text "~"; an empty value is "".
            YamlDataOwned::Value(ScalarOwned::Null) => self
                .texts
                .get(file)
                .and_then(|t| t.get(n.span.start.index()..n.span.end.index()))
                .map(|t| t.iter().collect::<String>().trim().to_string())
                .unwrap_or_default(),
            YamlDataOwned::Mapping(_) | YamlDataOwned::Sequence(_) => {
                return Err(err(
                    self.span(file, n),
                    format!(
                        "[config] '{what}' must be a single value, not a {}",
                        if matches!(n.data, YamlDataOwned::Mapping(_)) {
                            "mapping"
                        } else {
                            "list"
                        }
                    ),
                    format!("write '{what}: value' on one line"),
                ));
            }
            _ => {
                return Err(err(
                    self.span(file, n),
                    format!("[config] unsupported YAML value for '{what}'"),
                    "use a plain string, number or boolean",
                ))
            }
        })
    }

    fn list<'a>(&self, file: &str, n: &'a Node, what: &str) -> Result<&'a [Node], ConfigError> {
        match &n.data {
            YamlDataOwned::Sequence(s) => Ok(s),
            YamlDataOwned::Value(ScalarOwned::Null) => Ok(&[]),
            _ => Err(err(
                self.span(file, n),
                format!("[config] '{what}' must be a list"),
                format!("write each item of '{what}' on its own line starting with '- '"),
            )),
        }
    }

    fn mapping<'a>(
        &self,
        file: &str,
        n: &'a Node,
        what: &str,
    ) -> Result<Vec<(&'a Node, &'a Node)>, ConfigError> {
        match &n.data {
            YamlDataOwned::Mapping(m) => Ok(m.iter().collect()),
            YamlDataOwned::Value(ScalarOwned::Null) => Ok(Vec::new()),
            _ => Err(err(
                self.span(file, n),
                format!("[config] '{what}' must be a mapping of keys to values"),
                format!("indent 'key: value' lines under '{what}:'"),
            )),
        }
    }

    /// `env:` as a map (`NAME: value`) or a list of `{name, value}`.
    fn env(&mut self, file: &str, v: &Node) -> Result<(), ConfigError> {
        if let YamlDataOwned::Sequence(items) = &v.data {
            for item in items {
                let mut name = None;
                let mut value = None;
                for (k, x) in self.mapping(file, item, "env")? {
                    match self.key(file, k)?.as_str() {
                        "name" => name = Some(self.scalar(file, x, "name")?),
                        "value" => value = Some(self.scalar(file, x, "value")?),
                        other => {
                            return Err(err(
                                self.span(file, k),
                                format!("[config] env: '{other}' is not supported"),
                                "each env item has 'name' and 'value'",
                            ))
                        }
                    }
                }
                let name = name.ok_or_else(|| {
                    err(
                        self.span(file, item),
                        "[config] env item without 'name'",
                        "write '- name: VAR' and 'value: ...'",
                    )
                })?;
                self.vars.insert(name, value.unwrap_or_default());
            }
            return Ok(());
        }
        for (k, x) in self.mapping(file, v, "env")? {
            let name = self.key(file, k)?;
            let value = self.scalar(file, x, &name)?;
            self.vars.insert(name, value);
        }
        Ok(())
    }

    fn pipeline(&mut self, file: &str, v: &Node) -> Result<(), ConfigError> {
        for (k, list) in self.mapping(file, v, "pipeline")? {
            let key = self.key(file, k)?;
            let kind = match key.as_str() {
                "inputs" => SectionKind::Input,
                "filters" => SectionKind::Filter,
                "outputs" => SectionKind::Output,
                other => {
                    return Err(err(
                        self.span(file, k),
                        format!("[config] pipeline: unknown list '{other}'"),
                        "a pipeline has 'inputs', 'filters' and 'outputs'",
                    ));
                }
            };
            for item in self.list(file, list, &key)? {
                // `processors:` of an input or output is read apart from its properties.
                let mut procs = None;
                let rest = match &item.data {
                    YamlDataOwned::Mapping(m) if kind != SectionKind::Filter => {
                        let mut rest = m.clone();
                        rest.retain(|k, v| {
                            let is = matches!(&k.data, YamlDataOwned::Value(ScalarOwned::String(s)) if s == "processors");
                            if is {
                                procs = Some(v.clone());
                            }
                            !is
                        });
                        Some(Node {
                            span: item.span,
                            data: YamlDataOwned::Mapping(rest),
                        })
                    }
                    _ => None,
                };
                let entries = self.entries(file, rest.as_ref().unwrap_or(item), &key)?;
                let processors = match &procs {
                    Some(p) => self.processors(file, p)?,
                    None => Vec::new(),
                };
                if !entries.iter().any(|e| e.key == "name") {
                    return Err(err(
                        self.span(file, item),
                        format!("[config] an item of '{key}' has no 'name'"),
                        format!(
                            "add 'name: <plugin>' to the item, e.g. '- name: {}'",
                            if kind == SectionKind::Output {
                                "stdout"
                            } else {
                                "random"
                            }
                        ),
                    ));
                }
                let header = key.trim_end_matches('s').to_ascii_uppercase();
                self.doc.sections.push(Section {
                    kind,
                    header,
                    span: self.span(file, item),
                    entries,
                    processors,
                });
            }
        }
        Ok(())
    }

    /// `parsers:` and `multiline_parsers:`: lists of definitions, each becoming a
    /// `[PARSER]`/`[MULTILINE_PARSER]` section. A multiline parser's `rules` (a list of
    /// `state`/`regex`/`next_state`) become classic `rule "state" "regex" "next"` lines.
    fn parsers(&mut self, file: &str, key: &str, v: &Node) -> Result<(), ConfigError> {
        let (kind, header) = match key {
            "parsers" => (SectionKind::Parser, "parser"),
            _ => (SectionKind::MultilineParser, "multiline_parser"),
        };
        for item in self.list(file, v, key)? {
            let mut entries = Vec::new();
            for (k, x) in self.mapping(file, item, key)? {
                let name = snake_case(&self.key(file, k)?);
                if name == "rules" && kind == SectionKind::MultilineParser {
                    for rule in self.list(file, x, "rules")? {
                        entries.push(self.rule(file, rule)?);
                    }
                    continue;
                }
                match &x.data {
                    YamlDataOwned::Sequence(items) => {
                        for i in items {
                            entries.push(Entry {
                                key: name.clone(),
                                value: self.scalar(file, i, &name)?,
                                span: self.span(file, i),
                            });
                        }
                    }
                    _ => entries.push(Entry {
                        value: self.scalar(file, x, &name)?,
                        key: name,
                        span: self.span(file, k),
                    }),
                }
            }
            if !entries.iter().any(|e| e.key == "name") {
                return Err(err(
                    self.span(file, item),
                    format!("[config] an item of '{key}' has no 'name'"),
                    "add 'name: <parser name>' to the item",
                ));
            }
            self.doc.sections.push(Section {
                kind,
                header: header.into(),
                span: self.span(file, item),
                entries,
                processors: Vec::new(),
            });
        }
        Ok(())
    }

    /// `upstream_servers:`: each group becomes an `[UPSTREAM]` section (its `name` and
    /// other keys) followed by one `[NODE]` section per item of its `nodes:`, as a
    /// classic upstream file has them (read by [`super::upstream`]).
    fn upstream_servers(&mut self, file: &str, v: &Node) -> Result<(), ConfigError> {
        if matches!(v.data, YamlDataOwned::Value(ScalarOwned::Null)) {
            return Ok(());
        }
        for group in self.list(file, v, "upstream_servers")? {
            let mut entries = Vec::new();
            let mut nodes = Vec::new();
            for (k, x) in self.mapping(file, group, "upstream_servers")? {
                let key = snake_case(&self.key(file, k)?);
                if key == "nodes" {
                    for node in self.list(file, x, "nodes")? {
                        nodes.push(Section {
                            kind: SectionKind::Other,
                            header: "node".into(),
                            span: self.span(file, node),
                            entries: self.entries(file, node, "nodes")?,
                            processors: Vec::new(),
                        });
                    }
                    continue;
                }
                entries.push(Entry {
                    value: self.scalar(file, x, &key)?,
                    key,
                    span: self.span(file, k),
                });
            }
            self.doc.sections.push(Section {
                kind: SectionKind::Other,
                header: "upstream".into(),
                span: self.span(file, group),
                entries,
                processors: Vec::new(),
            });
            self.doc.sections.extend(nodes);
        }
        Ok(())
    }

    /// `processors:` of an input or output: `logs:` (and `metrics:`, `traces:`,
    /// `profiles:`), each a list of units with `name`, properties and an optional
    /// `condition`.
    fn processors(&self, file: &str, v: &Node) -> Result<Vec<ProcessorUnit>, ConfigError> {
        let mut out = Vec::new();
        for (k, list) in self.mapping(file, v, "processors")? {
            let signal = self.key(file, k)?;
            if !["logs", "metrics", "traces", "profiles"].contains(&signal.as_str()) {
                return Err(err(
                    self.span(file, k),
                    format!("[config] processors: unknown signal '{signal}'"),
                    "processors are listed under 'logs:', 'metrics:', 'traces:' or 'profiles:'",
                ));
            }
            for item in self.list(file, list, &signal)? {
                let mut entries = Vec::new();
                let mut condition = None;
                for (pk, pv) in self.mapping(file, item, &signal)? {
                    let key = snake_case(&self.key(file, pk)?);
                    if key == "condition" {
                        condition = Some(self.condition(file, pk, pv)?);
                        continue;
                    }
                    match &pv.data {
                        YamlDataOwned::Sequence(items) => {
                            for i in items {
                                entries.push(Entry {
                                    key: key.clone(),
                                    value: self.scalar(file, i, &key)?,
                                    span: self.span(file, i),
                                });
                            }
                        }
                        _ => entries.push(Entry {
                            value: self.scalar(file, pv, &key)?,
                            key,
                            span: self.span(file, pk),
                        }),
                    }
                }
                if !entries.iter().any(|e| e.key == "name") {
                    return Err(err(
                        self.span(file, item),
                        "[config] a processor has no 'name'",
                        "add 'name: <processor or filter>' to the item, e.g. '- name: content_modifier'",
                    ));
                }
                out.push(ProcessorUnit {
                    signal: signal.clone(),
                    span: self.span(file, item),
                    entries,
                    condition,
                });
            }
        }
        Ok(out)
    }

    /// A processor's `condition:`: `op` and `rules` (`field`, `op`, `value`, `context`).
    fn condition(&self, file: &str, k: &Node, v: &Node) -> Result<ConditionSpec, ConfigError> {
        let mut spec = ConditionSpec {
            span: self.span(file, k),
            op: None,
            rules: Vec::new(),
        };
        let mut has_rules = false;
        for (ck, cv) in self.mapping(file, v, "condition")? {
            match self.key(file, ck)?.as_str() {
                "op" => {
                    spec.op = Some(Entry {
                        key: "op".into(),
                        value: self.scalar(file, cv, "op")?,
                        span: self.span(file, ck),
                    })
                }
                "rules" => {
                    has_rules = true;
                    for rule in self.list(file, cv, "rules")? {
                        let mut r = RuleSpec {
                            span: self.span(file, rule),
                            entries: Vec::new(),
                            value_is_list: false,
                        };
                        for (rk, rv) in self.mapping(file, rule, "rules")? {
                            let key = self.key(file, rk)?;
                            if !["field", "op", "value", "context"].contains(&key.as_str()) {
                                return Err(err(
                                    self.span(file, rk),
                                    format!("[config] condition rule: unknown key '{key}'"),
                                    "a rule has 'field', 'op', 'value' and optionally 'context'",
                                ));
                            }
                            if key == "value"
                                && matches!(
                                    rv.data,
                                    YamlDataOwned::Value(
                                        ScalarOwned::Boolean(_) | ScalarOwned::Null
                                    )
                                )
                            {
                                return Err(err(
                                    self.span(file, rv),
                                    "[processor] unsupported value type for rule (a YAML boolean or null)",
                                    "quote the value to compare the field's text with, e.g. 'value: \"true\"' or 'value: \"null\"'",
                                ));
                            }
                            if let YamlDataOwned::Sequence(items) = &rv.data {
                                r.value_is_list = key == "value";
                                for i in items {
                                    r.entries.push(Entry {
                                        key: key.clone(),
                                        value: self.scalar(file, i, &key)?,
                                        span: self.span(file, i),
                                    });
                                }
                            } else {
                                r.entries.push(Entry {
                                    value: self.scalar(file, rv, &key)?,
                                    key,
                                    span: self.span(file, rk),
                                });
                            }
                        }
                        spec.rules.push(r);
                    }
                }
                other => {
                    return Err(err(
                        self.span(file, ck),
                        format!("[config] condition: unknown key '{other}'"),
                        "a condition has 'op' (and|or) and 'rules'",
                    ))
                }
            }
        }
        if !has_rules || spec.rules.is_empty() {
            return Err(err(
                spec.span.clone(),
                "[config] a condition needs a non-empty 'rules' list",
                "write 'rules:' with items such as '- {field: \"$level\", op: eq, value: error}'",
            ));
        }
        Ok(spec)
    }

    /// One item of a multiline parser's `rules` as the classic `rule` line.
    fn rule(&self, file: &str, n: &Node) -> Result<Entry, ConfigError> {
        let (mut state, mut regex, mut next) = (None, None, None);
        for (k, x) in self.mapping(file, n, "rules")? {
            let slot = match self.key(file, k)?.as_str() {
                "state" => &mut state,
                "regex" => &mut regex,
                "next_state" => &mut next,
                other => {
                    return Err(err(
                        self.span(file, k),
                        format!("[config] multiline parser rule: unknown key '{other}'"),
                        "a rule has 'state', 'regex' and 'next_state'",
                    ))
                }
            };
            *slot = Some(self.scalar(file, x, "rules")?);
        }
        let (Some(state), Some(regex), Some(next)) = (state, regex, next) else {
            return Err(err(
                self.span(file, n),
                "[config] a multiline parser rule needs 'state', 'regex' and 'next_state'",
                "write e.g. '- state: start_state' with 'regex: \'/^\\d/\'' and 'next_state: cont'",
            ));
        };
        let quote = |t: &str| format!("\"{}\"", t.replace('"', "\\\""));
        Ok(Entry {
            key: "rule".into(),
            value: format!("{} {} {}", quote(&state), quote(&regex), quote(&next)),
            span: self.span(file, n),
        })
    }

    /// A mapping of properties: scalars, or lists of scalars for repeatable properties.
    fn entries(&self, file: &str, n: &Node, what: &str) -> Result<Vec<Entry>, ConfigError> {
        let mut out = Vec::new();
        for (k, v) in self.mapping(file, n, what)? {
            let key = snake_case(&self.key(file, k)?);
            let span = self.span(file, k);
            if key == "processors" {
                return Err(err(
                    span,
                    format!("[config] 'processors' cannot be used in '{what}'"),
                    "attach processors to an item of 'inputs' or 'outputs'",
                ));
            }
            match &v.data {
                YamlDataOwned::Sequence(items) => {
                    for item in items {
                        out.push(Entry {
                            key: key.clone(),
                            value: self.scalar(file, item, &key)?,
                            span: self.span(file, item),
                        });
                    }
                }
                _ => out.push(Entry {
                    value: self.scalar(file, v, &key)?,
                    key,
                    span,
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Document, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, text).unwrap();
        load(&p).map_err(|e| {
            // Make spans independent of the temp dir.
            let s = e.to_string().replace(&p.display().to_string(), "c.yaml");
            ConfigError::Usage(s)
        })
    }

    #[test]
    fn parsers_and_multiline_parsers_become_sections() {
        let doc = load_text(concat!(
            "parsers:\n",
            "  - name: p1\n    format: regex\n    regex: '^(?<a>x)$'\n    decode_field: [json a, escaped b]\n",
            "multiline_parsers:\n",
            "  - name: m1\n    type: regex\n    flushTimeout: 1000\n    rules:\n",
            "      - state: start_state\n        regex: '/^\"a\"/'\n        next_state: cont\n",
            "      - {state: cont, regex: '/^ /', next_state: cont}\n",
        ))
        .unwrap();
        let kinds: Vec<_> = doc
            .sections
            .iter()
            .map(|s| (s.kind, s.header.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (SectionKind::Parser, "parser"),
                (SectionKind::MultilineParser, "multiline_parser")
            ]
        );
        let kv = |i: usize| -> Vec<(String, String)> {
            doc.sections[i]
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            kv(0),
            [
                s("name", "p1"),
                s("format", "regex"),
                s("regex", "^(?<a>x)$"),
                s("decode_field", "json a"),
                s("decode_field", "escaped b")
            ]
        );
        assert_eq!(
            kv(1),
            [
                s("name", "m1"),
                s("type", "regex"),
                s("flush_timeout", "1000"),
                s("rule", r#""start_state" "/^\"a\"/" "cont""#),
                s("rule", r#""cont" "/^ /" "cont""#),
            ]
        );
        assert_eq!(doc.sections[1].entries[3].span.line, 11);
    }

    #[test]
    fn snake_case_rules() {
        assert_eq!(snake_case("logLevel"), "log_level");
        assert_eq!(snake_case("log_level"), "log_level");
        assert_eq!(snake_case("Match"), "match");
        assert_eq!(
            snake_case("net.keepaliveIdleTimeout"),
            "net.keepalive_idle_timeout"
        );
    }

    /// Each section's (key, value) entries, in order.
    fn entries(doc: &Document) -> Vec<Vec<(String, String)>> {
        doc.sections
            .iter()
            .map(|s| {
                s.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .collect()
    }

    /// Fluent Bit 5.1.1 reads `name: null` as the null output (measured: it starts
    /// `output:null:null.0`); every null-looking scalar is its text, an empty one "".
    #[test]
    fn null_scalars_are_their_text() {
        let doc = load_text(
            "pipeline:\n  inputs:\n    - name: dummy\n      tag: ~\n      alias:\n  outputs:\n    - name: null\n      match: '*'\n    - name: NULL\n      match: \"*\"\n",
        )
        .unwrap();
        let values = entries(&doc);
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            values,
            [
                vec![kv("name", "dummy"), kv("tag", "~"), kv("alias", "")],
                vec![kv("name", "null"), kv("match", "*")],
                vec![kv("name", "NULL"), kv("match", "*")],
            ]
        );
    }

    #[test]
    fn sections_scalars_and_lists() {
        let doc = load_text(
            "env:\n  FMT: json_lines\nservice:\n  flush: 0.5\n  logLevel: debug\npipeline:\n  inputs:\n    - name: random\n      samples: 5\n  filters:\n    - name: record_modifier\n      match: '*'\n      record:\n        - a 1\n        - b 2\n  outputs:\n    - name: stdout\n      match: '*'\n      format: ${FMT}\n      json_date_key: false\n",
        )
        .unwrap();
        let kinds: Vec<SectionKind> = doc.sections.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SectionKind::Service,
                SectionKind::Input,
                SectionKind::Filter,
                SectionKind::Output
            ]
        );
        let kv = |i: usize| {
            doc.sections[i]
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kv(0),
            [
                ("flush".to_string(), "0.5".to_string()),
                ("log_level".into(), "debug".into())
            ]
        );
        assert_eq!(
            kv(1),
            [
                ("name".to_string(), "random".to_string()),
                ("samples".into(), "5".into())
            ]
        );
        assert_eq!(
            kv(2)[2..],
            [
                ("record".to_string(), "a 1".to_string()),
                ("record".into(), "b 2".into())
            ]
        );
        assert_eq!(kv(3)[2], ("format".to_string(), "json_lines".to_string()));
        assert_eq!(kv(3)[3], ("json_date_key".to_string(), "false".to_string()));
        assert_eq!(
            doc.sections[1].span.to_string().rsplit('/').next().unwrap(),
            "c.yaml:8:7"
        );
    }

    #[test]
    fn errors_name_file_line_column_and_a_fix() {
        let e = load_text("pipeline:\n  inputs:\n    - name: random\n   samples: 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml:4:") && e.contains("invalid YAML"), "{e}");
        let e = load_text("pipeline:\n  inputs:\n    - samples: 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml:3:7: [config] an item of 'inputs' has no 'name'"),
            "{e}"
        );
        let e = load_text("parsers:\n  - format: json\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "c.yaml:2:5: [config] an item of 'parsers' has no 'name'");
        let e = load_text("multiline_parsers:\n  - name: m\n    rules:\n      - state: start_state\n        regex: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml:4:9: [config] a multiline parser rule needs"),
            "{e}"
        );
        let e = load_text("plugins:\n  - a\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "c.yaml:1:1: [config] section 'plugins' is not supported by agent yet"
        );
        let e = load_text("pipline:\n  inputs: []\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "c.yaml:1:1: [config] unknown section 'pipline'");
        let e =
            load_text("pipeline:\n  inputs:\n    - name: random\n      samples:\n        a: 1\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            e,
            "c.yaml:5:9: [config] 'samples' must be a single value, not a mapping"
        );
        let e = load_text("service: 5\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "c.yaml:1:10: [config] 'service' must be a mapping of keys to values"
        );
    }

    #[test]
    fn repeated_keys_merge_as_in_fluent_bit() {
        let doc = load_text(concat!(
            "pipeline:\n  inputs:\n    - name: dummy\n      tag: a\n",
            "  outputs:\n    - name: stdout\n      match: '*'\n",
            "pipeline:\n  inputs:\n    - name: dummy\n      tag: b\n",
            "  filters:\n    - name: modify\n      match: '*'\n      add: x 1\n      add: y 2\n",
            "plugins: []\nupstream_servers: []\ncustoms:\n",
        ))
        .unwrap();
        let got = entries(&doc);
        let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            got,
            [
                kv(&[("name", "dummy"), ("tag", "a")]),
                kv(&[("name", "stdout"), ("match", "*")]),
                kv(&[("name", "dummy"), ("tag", "b")]),
                kv(&[
                    ("name", "modify"),
                    ("match", "*"),
                    ("add", "x 1"),
                    ("add", "y 2")
                ]),
            ]
        );
    }

    #[test]
    fn a_second_service_is_refused_as_in_fluent_bit() {
        let e = load_text("service:\n  flush: 1\nservice:\n  flush: 2\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("c.yaml:3:1") && text.contains("duplicated definition of 'service'"),
            "{text}"
        );
        // A non-empty section agent does not run is still refused.
        let e = load_text("plugins:\n  - x.so\n").unwrap_err();
        assert!(e.to_string().contains("'plugins' is not supported"), "{e}");
    }
}
