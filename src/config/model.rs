//! The configuration model every front end (classic `.conf`, command line, later YAML)
//! produces: ordered sections of `key value` entries, each with the place it came from.

use std::fmt;
use std::sync::Arc;

/// Where a config item came from: `file:line` (`file:line:column` in YAML), or a
/// label such as `command line` (line 0 = no line, column 0 = no column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Span {
    pub fn new(file: impl Into<Arc<str>>, line: u32) -> Self {
        Span {
            file: file.into(),
            line,
            col: 0,
        }
    }

    /// A position with a column (1-based).
    pub fn at(file: impl Into<Arc<str>>, line: u32, col: u32) -> Self {
        Span {
            file: file.into(),
            line,
            col,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (0, _) => write!(f, "{}", self.file),
            (l, 0) => write!(f, "{}:{l}", self.file),
            (l, c) => write!(f, "{}:{l}:{c}", self.file),
        }
    }
}

/// The kind of a section, chosen from its header as Fluent Bit does
/// (case-insensitive; `[INPUT]`, `[inputs]` both mean Input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Service,
    Input,
    Filter,
    Output,
    Parser,
    MultilineParser,
    /// Other known Fluent Bit kinds we do not run (`stream_processor`, `plugins`,
    /// `upstream_servers`, `custom`), and unknown headers (Fluent Bit ignores those).
    Other,
}

/// One `key value` line. `key` is lower-cased; `value` is trimmed and `${VAR}`-expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub span: Span,
}

/// One `[SECTION]` with its entries in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    /// The header text as written between `[` and `]`.
    pub header: String,
    pub span: Span,
    pub entries: Vec<Entry>,
    /// YAML `processors:` of an input or output, in order (empty elsewhere).
    pub processors: Vec<ProcessorUnit>,
}

impl Section {
    /// Every entry, those of its processors and their conditions included (for `${VAR}`).
    pub fn all_entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.entries
            .iter_mut()
            .chain(self.processors.iter_mut().flat_map(|p| {
                p.entries
                    .iter_mut()
                    .chain(p.condition.iter_mut().flat_map(|c| {
                        c.op.iter_mut()
                            .chain(c.rules.iter_mut().flat_map(|r| r.entries.iter_mut()))
                    }))
            }))
    }
}

/// One unit of a YAML `processors:` block (Fluent Bit 3+): a filter or a native
/// processor such as `content_modifier`, run on one input's or output's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessorUnit {
    /// `logs`, `metrics`, `traces` or `profiles`: the list it was written in.
    pub signal: String,
    pub span: Span,
    /// Its properties, `name` included, as a section's entries.
    pub entries: Vec<Entry>,
    pub condition: Option<ConditionSpec>,
}

/// A processor's `condition:` (`op: and|or`, `rules:`), as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionSpec {
    pub span: Span,
    /// `op`, when given.
    pub op: Option<Entry>,
    pub rules: Vec<RuleSpec>,
}

/// One rule of a condition: entries `field`, `op`, `value` (one per item when the
/// value is a list) and `context`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub span: Span,
    pub entries: Vec<Entry>,
    /// `value` was written as a list (what `in`/`not_in` take).
    pub value_is_list: bool,
}

/// A warning found while loading (unset variable, empty section, ...), printed before start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub span: Span,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.span, self.message)
    }
}

/// A whole loaded configuration: the main file with its includes inlined.
/// Several `[SERVICE]` sections are kept as written; the consumer merges them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Document {
    pub sections: Vec<Section>,
    pub warnings: Vec<Warning>,
    /// The configuration's own variables (`@SET`, YAML `env:`), by name: the lua filter
    /// gives them to scripts as `FLB_ENV`, as Fluent Bit does.
    pub vars: Vec<(String, String)>,
}
