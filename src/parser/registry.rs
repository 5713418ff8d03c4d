//! Every parser definition of one configuration, by name, and where they were read from.

use std::path::Path;
use std::sync::Arc;

use super::multiline::{self, MlParser};
use super::Parser;
use crate::config::{ConfigError, Section, SectionKind, ServiceConfig, Span};

/// The `[PARSER]`s and `[MULTILINE_PARSER]`s of a configuration, plus the built-in
/// multiline parsers. Built once at start (and at each reload), shared read-only.
#[derive(Debug, Default)]
pub struct Parsers {
    /// In definition order, each with the line of its section.
    parsers: Vec<(Arc<Parser>, Span)>,
    multiline: Vec<Arc<MlParser>>,
    /// Where definitions were read from (parsers files, YAML files), for errors.
    sources: Vec<String>,
}

impl Parsers {
    /// Loads every definition of a configuration, in Fluent Bit's order: each
    /// `parsers_file` of `[SERVICE]` (and `-R`), then the `parsers:`/`multiline_parsers:`
    /// of the YAML config itself. A relative `parsers_file` is tried from the working
    /// directory, then from `main_dir` (the main config file's directory).
    pub fn load(
        service: &ServiceConfig,
        sections: &[Section],
        main_dir: Option<&Path>,
    ) -> Result<Parsers, ConfigError> {
        let mut all = Parsers::default();
        for (file, span) in &service.parsers_files {
            let path = crate::config::resolve_path(file, main_dir).map_err(|searched| {
                ConfigError::invalid(
                    span,
                    format!("[config] could not open parsers file '{file}': no such file (searched: {})", searched.join(", ")),
                    Some("check the path in 'parsers_file' (relative paths are tried from the working directory, then from the main config file's directory)".into()),
                )
            })?;
            let doc = if crate::config::yaml::is_yaml(&path) {
                crate::config::yaml::load(&path)?
            } else {
                crate::config::parser::load_parsers_file(&path)?
            };
            for w in &doc.warnings {
                crate::warn!("{w}");
            }
            all.add_sections(&path.display().to_string(), &doc.sections)?;
        }
        // The YAML config's own definitions, named by the file of the first one.
        let own = sections
            .iter()
            .find(|s| matches!(s.kind, SectionKind::Parser | SectionKind::MultilineParser));
        if let Some(first) = own {
            all.add_sections(&first.span.file, sections)?;
        }
        Ok(all)
    }

    /// Adds the `[PARSER]` then the `[MULTILINE_PARSER]` sections of one source (a
    /// parsers file, or the YAML `parsers:`/`multiline_parsers:` lists), as Fluent Bit
    /// loads a parsers file; other sections are ignored. Errors name the section's
    /// file:line. Two parsers of one name are an error, as in Fluent Bit.
    pub fn add_sections(&mut self, source: &str, sections: &[Section]) -> Result<(), ConfigError> {
        if !self.sources.iter().any(|s| s == source) {
            self.sources.push(source.to_string());
        }
        for s in sections.iter().filter(|s| s.kind == SectionKind::Parser) {
            let p = Parser::from_section(s)?;
            if let Some((_, first)) = self.parsers.iter().find(|(q, _)| q.name == p.name) {
                return Err(ConfigError::invalid(
                    &s.span,
                    format!(
                        "[parser] parser named '{}' already exists (first defined at {first})",
                        p.name
                    ),
                    Some("give each [PARSER] its own name, or load each parsers file once".into()),
                ));
            }
            self.parsers.push((Arc::new(p), s.span.clone()));
        }
        for s in sections
            .iter()
            .filter(|s| s.kind == SectionKind::MultilineParser)
        {
            let p = MlParser::from_section(s, self)?;
            self.multiline.push(Arc::new(p));
        }
        Ok(())
    }

    /// A parser by its exact name (Fluent Bit compares parser names case-sensitively).
    pub fn parser(&self, name: &str) -> Option<Arc<Parser>> {
        self.parsers
            .iter()
            .find(|(p, _)| &*p.name == name)
            .map(|(p, _)| p.clone())
    }

    /// A multiline parser by name, any case: a built-in one first (Fluent Bit registers
    /// those before reading any file, so a `[MULTILINE_PARSER]` of the same name is
    /// never used), else the first `[MULTILINE_PARSER]` of that name.
    pub fn multiline(&self, name: &str) -> Option<Arc<MlParser>> {
        multiline::builtin(name).or_else(|| {
            self.multiline
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(name))
                .cloned()
        })
    }

    /// Names of every parser, for "did you mean".
    pub fn parser_names(&self) -> impl Iterator<Item = &str> {
        self.parsers.iter().map(|(p, _)| &*p.name)
    }

    /// Names of every multiline parser, built-in ones included.
    pub fn multiline_names(&self) -> impl Iterator<Item = &str> {
        multiline::BUILTINS
            .iter()
            .copied()
            .chain(self.multiline.iter().map(|p| &*p.name))
    }

    /// The sources definitions were read from.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The error for a `what` (`parser`, `multiline parser`) named `name` that is
    /// defined nowhere: which files were searched, and the nearest name.
    pub fn unknown<'a>(
        &self,
        span: &Span,
        what: &str,
        name: &str,
        names: impl Iterator<Item = &'a str>,
    ) -> ConfigError {
        let names: Vec<&str> = names.collect();
        let near = crate::config::error::closest(name, names.iter().copied());
        let searched = match (self.sources.is_empty(), what) {
            (true, "parser") => "no parsers file is loaded".to_string(),
            (true, _) => format!(
                "no parsers file is loaded; built-in: {}",
                multiline::BUILTINS.join(", ")
            ),
            (false, _) => format!("searched: {}", self.sources.join(", ")),
        };
        let hint = match near {
            Some(n) => format!("did you mean '{n}'? "),
            None => String::new(),
        };
        let fix = if self.sources.is_empty() {
            "add 'parsers_file parsers.conf' to [SERVICE] with a file that defines it"
        } else {
            "define it in one of those files, or fix the name"
        };
        ConfigError::invalid(
            span,
            format!("[config] {what} '{name}' is not defined ({searched})"),
            Some(format!("{hint}{fix}")),
        )
    }
}
