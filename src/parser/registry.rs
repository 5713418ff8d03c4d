//! Every parser definition of one configuration, by name.

use std::collections::HashMap;
use std::sync::Arc;

use super::multiline::{self, MlParser};
use super::Parser;
use crate::config::{ConfigError, Section, SectionKind};

/// The `[PARSER]`s and `[MULTILINE_PARSER]`s of a configuration, plus the built-in
/// multiline parsers. Built once at start (and at each reload), shared read-only.
#[derive(Debug, Default)]
pub struct Parsers {
    parsers: HashMap<String, Arc<Parser>>,
    multiline: HashMap<String, Arc<MlParser>>,
    /// Where definitions were read from (parsers files, YAML files), for errors.
    sources: Vec<String>,
}

impl Parsers {
    /// Adds the `[PARSER]` then the `[MULTILINE_PARSER]` sections of one source (a
    /// parsers file, or the YAML `parsers:`/`multiline_parsers:` lists), as Fluent Bit
    /// loads a parsers file; other sections are ignored. A later definition of a name
    /// replaces an earlier one. Errors name the section's file:line.
    pub fn add_sections(&mut self, source: &str, sections: &[Section]) -> Result<(), ConfigError> {
        self.sources.push(source.to_string());
        for s in sections.iter().filter(|s| s.kind == SectionKind::Parser) {
            let p = Parser::from_section(s)?;
            self.parsers.insert(p.name.to_string(), Arc::new(p));
        }
        for s in sections
            .iter()
            .filter(|s| s.kind == SectionKind::MultilineParser)
        {
            let p = MlParser::from_section(s, self)?;
            self.multiline.insert(p.name.to_string(), Arc::new(p));
        }
        Ok(())
    }

    pub fn parser(&self, name: &str) -> Option<Arc<Parser>> {
        self.parsers.get(name).cloned()
    }

    /// A `[MULTILINE_PARSER]` by name, else a built-in one.
    pub fn multiline(&self, name: &str) -> Option<Arc<MlParser>> {
        self.multiline
            .get(name)
            .cloned()
            .or_else(|| multiline::builtin(name))
    }

    /// Names of every parser, for "did you mean".
    pub fn parser_names(&self) -> impl Iterator<Item = &str> {
        self.parsers.keys().map(String::as_str)
    }

    /// Names of every multiline parser, built-in ones included.
    pub fn multiline_names(&self) -> impl Iterator<Item = &str> {
        self.multiline
            .keys()
            .map(String::as_str)
            .chain(multiline::BUILTINS.iter().copied())
    }

    /// The sources definitions were read from, for errors ("searched: ...").
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}
