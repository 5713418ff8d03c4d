//! Configuration errors. Each names where (`file:line`), what was wrong and how to fix
//! it; Fluent Bit's own wording is kept where users already grep for it.

use std::fmt;

use super::model::Span;
use super::parser::ParseError;

/// Which kind of section a plugin instance came from; picks the `-i/-F/-o` flag in hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    Input,
    Filter,
    Output,
}

impl PluginKind {
    /// The lower-case section name: `input`, `filter`, `output`.
    pub fn section(self) -> &'static str {
        match self {
            PluginKind::Input => "input",
            PluginKind::Filter => "filter",
            PluginKind::Output => "output",
        }
    }

    /// The command-line flag that adds such a plugin.
    pub fn flag(self) -> &'static str {
        match self {
            PluginKind::Input => "-i",
            PluginKind::Filter => "-F",
            PluginKind::Output => "-o",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Parse(#[from] ParseError),

    #[error(
        "{span}: [config] section '{name}' tried to instance a plugin name that doesn't exist"
    )]
    UnknownPlugin {
        span: Span,
        kind: PluginKind,
        name: String,
        known: Vec<&'static str>,
        suggestion: Option<&'static str>,
    },

    #[error("{span}: [config] section '{}' is missing the 'name' property", kind.section())]
    MissingName { span: Span, kind: PluginKind },

    #[error("{span}: [config] {plugin}: unknown configuration property '{key}'. The following properties are allowed: {}.", AllowedList(allowed))]
    UnknownProperty {
        span: Span,
        kind: PluginKind,
        plugin: &'static str,
        key: String,
        allowed: Vec<&'static str>,
        suggestion: Option<&'static str>,
    },

    #[error("{span}: [config] {plugin}: configuration property '{key}' is set 2 times (first at {first})")]
    Duplicate {
        span: Span,
        plugin: &'static str,
        key: String,
        first: Span,
    },

    #[error("{span}: [config] {plugin}: invalid value '{value}' for property '{key}': expected {expected}")]
    BadValue {
        span: Span,
        plugin: &'static str,
        key: String,
        value: String,
        expected: String,
    },

    #[error("{span}: [filter] NO match rule for {instance} filter instance")]
    NoMatch { span: Span, instance: String },

    /// A plugin- or service-specific problem (bad JSON in `dummy`, `flush 0`, ...).
    #[error("{span}: {message}")]
    Invalid {
        span: Span,
        message: String,
        hint: Option<String>,
    },

    /// A command-line usage error (unknown flag, missing argument).
    #[error("{0}")]
    Usage(String),
}

impl ConfigError {
    /// A second line saying how to fix it, printed as Fluent Bit's `[ help]` line.
    pub fn help(&self) -> Option<String> {
        match self {
            ConfigError::UnknownPlugin {
                kind,
                known,
                suggestion,
                ..
            } => Some(format!(
                "{}available {} plugins: {}; list them with: agent -h",
                did_you_mean(*suggestion),
                kind.section(),
                known.join(", ")
            )),
            ConfigError::MissingName { kind, .. } => Some(format!(
                "add a line such as 'Name random' to the [{}] section",
                kind.section().to_uppercase()
            )),
            ConfigError::UnknownProperty {
                kind,
                plugin,
                suggestion,
                ..
            } => Some(format!(
                "{}try the command: agent {} {} -h",
                did_you_mean(*suggestion),
                kind.flag(),
                plugin
            )),
            ConfigError::Duplicate { key, .. } => {
                Some(format!("remove one of the two '{key}' lines"))
            }
            ConfigError::NoMatch { .. } => Some(
                "add 'Match *' (or a tag pattern, or 'Match_Regex') to the [FILTER] section"
                    .to_string(),
            ),
            ConfigError::Invalid { hint, .. } => hint.clone(),
            ConfigError::Usage(_) => Some("see: agent --help".to_string()),
            ConfigError::Parse(_) | ConfigError::BadValue { .. } => None,
        }
    }

    /// A plugin- or service-specific error at `span`.
    pub fn invalid(span: &Span, message: impl Into<String>, hint: Option<String>) -> Self {
        ConfigError::Invalid {
            span: span.clone(),
            message: message.into(),
            hint,
        }
    }
}

fn did_you_mean(s: Option<&str>) -> String {
    s.map(|s| format!("did you mean '{s}'? "))
        .unwrap_or_default()
}

/// Fluent Bit's list style: `a`, `a and b`, `a, b, and c`.
struct AllowedList<'a>(&'a [&'static str]);

impl fmt::Display for AllowedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(if n == 2 { " " } else { ", " })?;
            }
            if n > 1 && i == n - 1 {
                f.write_str("and ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// The closest candidate by edit distance, if close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    let len = word.chars().count();
    for c in candidates {
        // The distance is at least the difference in length: skip what cannot be close
        // (a 16 MB key is not compared character by character with every name).
        if len.abs_diff(c.chars().count()) > 2.max(c.len() / 3) {
            continue;
        }
        let d = edit_distance(word, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_list_matches_fluent_bit() {
        assert_eq!(AllowedList(&["a"]).to_string(), "a");
        assert_eq!(AllowedList(&["a", "b"]).to_string(), "a and b");
        assert_eq!(
            AllowedList(&["samples", "interval_sec", "interval_nsec"]).to_string(),
            "samples, interval_sec, and interval_nsec"
        );
    }

    #[test]
    fn suggestions() {
        let c = ["samples", "interval_sec", "interval_nsec"];
        assert_eq!(closest("sample", c), Some("samples"));
        assert_eq!(closest("interval_secs", c), Some("interval_sec"));
        assert_eq!(closest("zzzzzzzz", c), None);
    }
}
