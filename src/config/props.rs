//! One property table per plugin: it drives validation (unknown keys, duplicates, bad
//! values), typed reads with defaults, and `agent -i NAME -h`.
//! Fluent Bit: src/flb_config_map.c

use std::time::Duration;

use super::error::{closest, ConfigError, PluginKind};
use super::model::{Entry, Span};
use super::values;

/// How a property's text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropKind {
    Str,
    Int,
    Bool,
    Double,
    /// `5M`, `32k` (decimal).
    Size,
    /// `10`, `5m`, `500ms`.
    Time,
    /// Comma-separated list.
    CList,
    /// A JSON object (`dummy`, `metadata`).
    Json,
    /// One of these words, case-insensitive.
    Enum(&'static [&'static str]),
    /// A Kubernetes quantity (`10`, `1k`, `10M`, `500m`).
    Quantity,
    /// A string that may be given several times; every value is kept, in order
    /// (Fluent Bit's FLB_CONFIG_MAP_MULT: `record`, `regex`, ...).
    Multi,
    /// Any key that starts with this spec's name (Fluent Bit's FLB_CONFIG_MAP_STR_PREFIX:
    /// tail's `parser_1`, `parser_2`, ...); each such key may be set once.
    Prefix,
}

impl PropKind {
    /// What a valid value looks like, for error messages.
    pub fn expected(self) -> String {
        match self {
            PropKind::Str | PropKind::CList | PropKind::Multi | PropKind::Prefix => {
                "a string".into()
            }
            PropKind::Int => "an integer such as 5 or -1".into(),
            PropKind::Bool => "a boolean: on, off, true, false, yes or no".into(),
            PropKind::Double => "a number such as 1 or 0.5".into(),
            PropKind::Size => "a size such as 512, 32k, 5M or 1G (decimal units)".into(),
            PropKind::Time => {
                "a duration such as 10 (seconds), 5m, 2h, 1d or 500ms, at most 10 years".into()
            }
            PropKind::Json => "a JSON object such as {\"message\":\"dummy\"}".into(),
            PropKind::Enum(words) => format!("one of: {}", words.join(", ")),
            PropKind::Quantity => {
                "a rate such as 100, 1k, 10M (= 10,000,000) or 500m (= 0.5)".into()
            }
        }
    }

    /// The type column of `-h`.
    pub fn label(self) -> &'static str {
        match self {
            PropKind::Str => "string",
            PropKind::Int => "integer",
            PropKind::Bool => "boolean",
            PropKind::Double => "double",
            PropKind::Size => "size",
            PropKind::Time => "time",
            PropKind::CList => "list",
            PropKind::Json => "json",
            PropKind::Enum(_) => "string",
            PropKind::Multi => "multiple",
            PropKind::Prefix => "prefix",
            PropKind::Quantity => "quantity",
        }
    }

    /// Whether `text` is a valid value of this kind.
    pub fn check(self, text: &str) -> bool {
        match self {
            PropKind::Str | PropKind::CList | PropKind::Multi | PropKind::Prefix => true,
            PropKind::Int => values::parse_int(text).is_some(),
            PropKind::Bool => values::parse_bool(text).is_some(),
            PropKind::Double => values::parse_double(text).is_some(),
            PropKind::Size => values::parse_size(text).is_some(),
            PropKind::Time => values::parse_time(text).is_some(),
            PropKind::Json => matches!(
                serde_json::from_str::<serde_json::Value>(text),
                Ok(serde_json::Value::Object(_))
            ),
            PropKind::Enum(words) => words.iter().any(|w| w.eq_ignore_ascii_case(text)),
            PropKind::Quantity => values::parse_quantity(text).is_some(),
        }
    }
}

/// One row of a property table.
#[derive(Debug)]
pub struct PropSpec {
    /// Exactly Fluent Bit's spelling, lower-case, including dots: `net.connect_timeout`.
    pub name: &'static str,
    pub kind: PropKind,
    /// Fluent Bit's default, as text; parsed by the same code as user input.
    pub default: Option<&'static str>,
    /// One sentence for `agent -i NAME -h`.
    pub desc: &'static str,
    /// For `Int` and `Size`: the values allowed, inclusive (a size in bytes). Absurd
    /// values (a copy count or a buffer that cannot be allocated) are refused at their
    /// line instead of crashing the plugin.
    pub range: Option<(i64, i64)>,
}

impl PropSpec {
    pub const fn new(
        name: &'static str,
        kind: PropKind,
        default: Option<&'static str>,
        desc: &'static str,
    ) -> Self {
        PropSpec {
            name,
            kind,
            default,
            desc,
            range: None,
        }
    }

    /// The same row with the values allowed (inclusive).
    pub const fn range(mut self, min: i64, max: i64) -> Self {
        self.range = Some((min, max));
        self
    }

    /// Checks a value against this row's kind and range: `Err(what was expected)`.
    pub fn validate(&self, text: &str) -> Result<(), String> {
        if !self.kind.check(text) {
            return Err(self.kind.expected());
        }
        match self.out_of_range(text) {
            Some(expected) => Err(expected),
            None => Ok(()),
        }
    }

    /// Whether a value that is of this row's kind is also within its range; the
    /// expected text when it is not.
    fn out_of_range(&self, text: &str) -> Option<String> {
        let (min, max) = self.range?;
        let (value, unit) = match self.kind {
            PropKind::Int => (values::parse_int(text).map(i128::from), ""),
            PropKind::Size => (values::parse_size(text).map(i128::from), " bytes"),
            _ => return None,
        };
        let value = value?;
        (value < i128::from(min) || value > i128::from(max))
            .then(|| format!("a value from {min} to {max}{unit}"))
    }
}

/// The validated properties of one section: every key known, no plugin key twice,
/// every value of its kind. Reads return the user's value or the table's default.
#[derive(Debug)]
pub struct Props {
    kind: PluginKind,
    plugin: &'static str,
    span: Span,
    /// (spec, the entry that set it). Core keys set twice keep the last (Fluent Bit).
    set: Vec<(&'static PropSpec, Entry)>,
    tables: Vec<&'static [PropSpec]>,
}

impl Props {
    /// Validates `entries` (without `name`) against the plugin's own table and the
    /// core tables. Unknown keys list only the plugin's own table, as Fluent Bit does.
    pub fn new(
        kind: PluginKind,
        plugin: &'static str,
        span: Span,
        own: &'static [PropSpec],
        core: &[&'static [PropSpec]],
        entries: Vec<Entry>,
    ) -> Result<Props, ConfigError> {
        let mut tables = vec![own];
        tables.extend_from_slice(core);
        let mut set: Vec<(&'static PropSpec, Entry)> = Vec::new();
        for entry in entries {
            let spec = tables.iter().flat_map(|t| t.iter()).find(|s| {
                s.name == entry.key
                    || (s.kind == PropKind::Prefix
                        && entry.key.len() > s.name.len()
                        && entry.key.starts_with(s.name))
            });
            let Some(spec) = spec else {
                let all = tables.iter().flat_map(|t| t.iter()).map(|s| s.name);
                return Err(ConfigError::UnknownProperty {
                    suggestion: closest(&entry.key, all),
                    span: entry.span,
                    kind,
                    plugin,
                    key: entry.key,
                    allowed: own.iter().map(|s| s.name).collect(),
                });
            };
            if entry.value.is_empty() {
                // Fluent Bit: a value that expands to nothing leaves the default.
                continue;
            }
            if let Err(expected) = spec.validate(&entry.value) {
                return Err(ConfigError::BadValue {
                    span: entry.span,
                    plugin,
                    key: entry.key,
                    value: entry.value,
                    expected,
                });
            }
            let is_own = own.iter().any(|s| std::ptr::eq(s, spec));
            let repeated = set
                .iter()
                .position(|(s, e)| std::ptr::eq(*s, spec) && e.key == entry.key);
            if let Some(pos) = repeated.filter(|_| spec.kind != PropKind::Multi) {
                if is_own {
                    return Err(ConfigError::Duplicate {
                        span: entry.span,
                        plugin,
                        key: entry.key,
                        first: set[pos].1.span.clone(),
                    });
                }
                crate::warn!(
                    "{}: [config] {plugin}: '{}' is set 2 times, the last value '{}' wins (first at {})",
                    entry.span,
                    entry.key,
                    entry.value,
                    set[pos].1.span
                );
                set.remove(pos);
            }
            set.push((spec, entry));
        }
        Ok(Props {
            kind,
            plugin,
            span,
            set,
            tables,
        })
    }

    /// These properties with `entries` laid over them (an upstream `[NODE]`'s own keys,
    /// located at `span`): a key set in `entries` replaces the one set here, the rest
    /// are kept; `entries` are validated against the same tables.
    pub fn overlaid(&self, span: Span, entries: &[Entry]) -> Result<Props, ConfigError> {
        let core: Vec<&'static [PropSpec]> = self.tables[1..].to_vec();
        let kept = self
            .set
            .iter()
            .filter(|(spec, e)| {
                !entries.iter().any(|n| {
                    n.key == e.key || (spec.kind != PropKind::Prefix && n.key == spec.name)
                })
            })
            .map(|(_, e)| e.clone());
        Props::new(
            self.kind,
            self.plugin,
            span,
            self.tables[0],
            &core,
            kept.chain(entries.iter().cloned()).collect(),
        )
    }

    /// The section's own location (its `[INPUT]` line).
    pub fn span(&self) -> &Span {
        &self.span
    }

    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// Whether `name` is in the section's tables (shared code reading a property only
    /// some plugins have).
    pub fn has(&self, name: &str) -> bool {
        self.tables
            .iter()
            .flat_map(|t| t.iter())
            .any(|s| s.name == name)
    }

    fn spec(&self, name: &str) -> &'static PropSpec {
        self.tables
            .iter()
            .flat_map(|t| t.iter())
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("property '{name}' is not in {}'s tables", self.plugin))
    }

    /// The user's text, or the default text, or None.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.set.iter().find(|(s, _)| s.name == name) {
            Some((_, e)) => Some(e.value.as_str()),
            None => self.spec(name).default,
        }
    }

    /// Whether the user set `name` (to a non-empty value).
    pub fn is_set(&self, name: &str) -> bool {
        self.set.iter().any(|(s, _)| s.name == name)
    }

    /// Where `name` was set, else the section's location.
    pub fn span_of(&self, name: &str) -> &Span {
        self.set
            .iter()
            .find(|(s, e)| s.name == name || e.key == name)
            .map(|(_, e)| &e.span)
            .unwrap_or(&self.span)
    }

    /// An error about the value of `name`, located where it was set.
    pub fn error(&self, name: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            span: self.span_of(name).clone(),
            plugin: self.plugin,
            key: name.to_string(),
            value: self.text(name).unwrap_or("").to_string(),
            expected: expected.into(),
        }
    }

    // Values were checked against their kind in `new`, and every default is checked by
    // the registry test, so a parse failure below is a bug in a table.
    fn parsed<T>(&self, name: &str, f: impl Fn(&str) -> Option<T>) -> Option<T> {
        self.text(name).map(|t| {
            f(t).unwrap_or_else(|| panic!("{}: '{name}' = '{t}' passed validation", self.plugin))
        })
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.text(name)
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.parsed(name, values::parse_int)
    }
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.parsed(name, values::parse_bool)
    }
    pub fn double(&self, name: &str) -> Option<f64> {
        self.parsed(name, values::parse_double)
    }
    pub fn quantity(&self, name: &str) -> Option<f64> {
        self.parsed(name, values::parse_quantity)
    }
    pub fn size(&self, name: &str) -> Option<u64> {
        self.parsed(name, values::parse_size)
    }
    pub fn time(&self, name: &str) -> Option<Duration> {
        self.parsed(name, values::parse_time)
    }
    pub fn clist(&self, name: &str) -> Vec<String> {
        self.text(name).map(values::parse_clist).unwrap_or_default()
    }
    /// Every value of a `Multi` property, in order.
    pub fn multi(&self, name: &str) -> Vec<&str> {
        self.set
            .iter()
            .filter(|(s, _)| s.name == name)
            .map(|(_, e)| e.value.as_str())
            .collect()
    }
    /// Every entry of a `Multi` property, in order, with where each was set.
    pub fn multi_entries(&self, name: &str) -> Vec<&Entry> {
        self.set
            .iter()
            .filter(|(s, _)| s.name == name)
            .map(|(_, e)| e)
            .collect()
    }

    /// Every entry of any of the `Multi` properties `names`, in the order they were
    /// written, each with the table name it was set through.
    pub fn multi_entries_of(&self, names: &[&str]) -> Vec<(&'static str, &Entry)> {
        self.set
            .iter()
            .filter(|(s, _)| names.contains(&s.name))
            .map(|(s, e)| (s.name, e))
            .collect()
    }

    /// Every `(key, value)` set through a `Prefix` property, in order.
    pub fn prefixed(&self, name: &str) -> Vec<(&str, &str)> {
        self.set
            .iter()
            .filter(|(s, _)| s.name == name)
            .map(|(_, e)| (e.key.as_str(), e.value.as_str()))
            .collect()
    }
    pub fn json(&self, name: &str) -> Option<serde_json::Value> {
        self.parsed(name, |t| serde_json::from_str(t).ok())
    }

    /// Fluent Bit's `interval_sec` + `interval_nsec` pair.
    pub fn interval(&self, sec: &str, nsec: &str) -> Result<Duration, ConfigError> {
        let s = self.int(sec).unwrap_or(0);
        let n = self.int(nsec).unwrap_or(0);
        if s < 0 {
            return Err(self.error(sec, "a number of seconds >= 0"));
        }
        if !(0..1_000_000_000).contains(&n) {
            return Err(self.error(nsec, "a number of nanoseconds from 0 to 999999999"));
        }
        Ok(Duration::new(s as u64, n as u32))
    }
}

/// The rows of one property table: name, type, description, default.
pub fn render_table(table: &[PropSpec]) -> String {
    let mut out = String::new();
    let width = table.iter().map(|s| s.name.len()).max().unwrap_or(0).max(4);
    for s in table {
        out.push_str(&format!(
            "{:width$}  {:8}  {}\n{:width$}  {:8}  default: {}\n",
            s.name,
            s.kind.label(),
            s.desc,
            "",
            "",
            s.default.unwrap_or("(none)"),
        ));
    }
    out
}

/// `agent -i NAME -h`: the plugin's table as a help page.
pub fn render_help(kind: PluginKind, name: &str, description: &str, own: &[PropSpec]) -> String {
    let mut out = format!(
        "{}: {name}\n{description}\n\n",
        match kind {
            PluginKind::Input => "INPUT",
            PluginKind::Filter => "FILTER",
            PluginKind::Output => "OUTPUT",
        }
    );
    out.push_str(&render_table(own));
    if own.is_empty() {
        out.push_str("(no plugin-specific properties)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &[PropSpec] = &[
        PropSpec::new("samples", PropKind::Int, Some("-1"), "Samples."),
        PropSpec::new("interval_sec", PropKind::Int, Some("1"), "Seconds."),
        PropSpec::new("rate", PropKind::Size, None, "Size."),
    ];
    const CORE: &[PropSpec] = &[PropSpec::new("tag", PropKind::Str, None, "Tag.")];

    fn entry(key: &str, value: &str, line: u32) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            span: Span::new("t.conf", line),
        }
    }

    fn props(entries: Vec<Entry>) -> Result<Props, ConfigError> {
        Props::new(
            PluginKind::Input,
            "random",
            Span::new("t.conf", 1),
            OWN,
            &[CORE],
            entries,
        )
    }

    #[test]
    fn defaults_and_values() {
        let p = props(vec![entry("samples", "3", 2)]).unwrap();
        assert_eq!(p.int("samples"), Some(3));
        assert_eq!(p.int("interval_sec"), Some(1));
        assert_eq!(p.size("rate"), None);
        assert!(p.is_set("samples"));
        assert!(!p.is_set("interval_sec"));
    }

    #[test]
    fn unknown_key_error_text() {
        let e = props(vec![entry("sample", "3", 4)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:4: [config] random: unknown configuration property 'sample'. The following properties are allowed: samples, interval_sec, and rate."
        );
        assert_eq!(
            e.help().unwrap(),
            "did you mean 'samples'? try the command: agent -i random -h"
        );
    }

    #[test]
    fn duplicate_plugin_key_is_an_error_core_key_last_wins() {
        let e = props(vec![entry("samples", "3", 2), entry("samples", "4", 3)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:3: [config] random: configuration property 'samples' is set 2 times (first at t.conf:2)"
        );
        let p = props(vec![entry("tag", "a", 2), entry("tag", "b", 3)]).unwrap();
        assert_eq!(p.str("tag"), Some("b"));
    }

    #[test]
    fn bad_value() {
        let e = props(vec![entry("rate", "2MiB", 5)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:5: [config] random: invalid value '2MiB' for property 'rate': expected a size such as 512, 32k, 5M or 1G (decimal units)"
        );
    }

    #[test]
    fn empty_value_keeps_default() {
        let p = props(vec![entry("samples", "", 2)]).unwrap();
        assert_eq!(p.int("samples"), Some(-1));
    }
}
