//! Configuration: the classic Fluent Bit format (and command-line sections) loaded into
//! one model, then validated against the plugins' property tables by the pipeline.

pub mod error;
pub mod model;
pub mod parser;
pub mod props;
pub mod service;
pub mod upstream;
pub mod values;
pub mod yaml;

pub use error::{ConfigError, PluginKind};
pub use model::{
    ConditionSpec, Document, Entry, ProcessorUnit, RuleSpec, Section, SectionKind, Span,
};
pub use props::{PropKind, PropSpec, Props};
pub use service::ServiceConfig;

/// Most bytes a file named by the configuration may hold (configs, includes, parsers
/// files, scripts, certificates, a tail db): far above any real one, far below what
/// would hang or exhaust the agent.
pub const MAX_CONFIG_FILE: u64 = 64 << 20;

/// Reads a file the configuration names, refusing what is not a regular file (a FIFO,
/// `/dev/zero`, a directory: reading them would block or never end) and files larger
/// than `max` bytes, with the reason in the error.
pub fn read_regular_file(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // Checked before opening: opening a FIFO for reading blocks until a writer comes.
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(out)
}

/// [`read_regular_file`] with [`MAX_CONFIG_FILE`], as UTF-8 text.
pub fn read_config_text(path: &std::path::Path) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path, MAX_CONFIG_FILE)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A file named in the configuration (`parsers_file`, a lua `script`) as Fluent Bit finds
/// it: as given (from the working directory), else, for a relative path, under the main
/// config file's directory. Err lists what was tried.
pub fn resolve_path(
    file: &str,
    main_dir: Option<&std::path::Path>,
) -> Result<std::path::PathBuf, Vec<String>> {
    let given = std::path::PathBuf::from(file);
    if given.exists() {
        return Ok(given);
    }
    let mut tried = vec![file.to_string()];
    if given.is_relative() {
        if let Some(dir) = main_dir {
            let p = dir.join(file);
            if p.exists() {
                return Ok(p);
            }
            tried.push(p.display().to_string());
        }
    }
    Err(tried)
}

/// One `[INPUT]`/`[FILTER]`/`[OUTPUT]` section, before its plugin validates it.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    pub kind: PluginKind,
    /// The plugin name as written (`Name random`).
    pub plugin: String,
    /// The `[INPUT]` line (or `command line`).
    pub span: Span,
    /// Every entry but `name`, in order.
    pub entries: Vec<Entry>,
    /// YAML `processors:` of an input or output, in order.
    pub processors: Vec<ProcessorUnit>,
}

/// A whole configuration, sections in order (command-line ones first).
#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    pub inputs: Vec<InstanceConfig>,
    pub filters: Vec<InstanceConfig>,
    pub outputs: Vec<InstanceConfig>,
    /// Every parser definition (parsers files, YAML `parsers:`), loaded by
    /// [`crate::parser::Parsers::load`]; empty until then.
    pub parsers: std::sync::Arc<crate::parser::Parsers>,
    /// The main config file's directory, where relative files (`parsers_file`, a lua
    /// `script`) are looked for when the working directory does not have them.
    pub main_dir: Option<std::path::PathBuf>,
    /// `@SET` and YAML `env:` variables, by name.
    pub vars: Vec<(String, String)>,
}

impl Config {
    /// Splits a document into service settings and plugin sections. Several `[SERVICE]`
    /// sections are merged; sections Fluent Bit ignores were already warned about.
    pub fn from_document(doc: &Document) -> Result<Config, ConfigError> {
        let mut service = Vec::new();
        let (mut inputs, mut filters, mut outputs) = (Vec::new(), Vec::new(), Vec::new());
        for section in &doc.sections {
            let kind = match section.kind {
                SectionKind::Service => {
                    service.extend(section.entries.iter().cloned());
                    continue;
                }
                SectionKind::Input => PluginKind::Input,
                SectionKind::Filter => PluginKind::Filter,
                SectionKind::Output => PluginKind::Output,
                _ => continue,
            };
            let mut plugin = None;
            let mut entries = Vec::with_capacity(section.entries.len());
            for e in &section.entries {
                if e.key == "name" {
                    plugin = Some(e.value.clone());
                } else {
                    entries.push(e.clone());
                }
            }
            let plugin = match plugin {
                Some(p) if !p.is_empty() => p,
                _ => {
                    return Err(ConfigError::MissingName {
                        span: section.span.clone(),
                        kind,
                    })
                }
            };
            let inst = InstanceConfig {
                kind,
                plugin,
                span: section.span.clone(),
                entries,
                processors: section.processors.clone(),
            };
            match kind {
                PluginKind::Input => inputs.push(inst),
                PluginKind::Filter => filters.push(inst),
                PluginKind::Output => outputs.push(inst),
            }
        }
        // Upstream definitions are read from the file an output's `upstream` names (as
        // Fluent Bit reads them); in the main config without such an output they do
        // nothing, which is said rather than left silent.
        let used = outputs
            .iter()
            .any(|o| o.entries.iter().any(|e| e.key == "upstream"));
        for s in doc
            .sections
            .iter()
            .filter(|s| s.kind == SectionKind::Other && s.header.eq_ignore_ascii_case("upstream"))
            .filter(|_| !used)
        {
            crate::warn!(
                "{}: [config] upstream '{}' is used by no output: an output sends to its nodes when its 'upstream' property names this file",
                s.span,
                s.entries.iter().find(|e| e.key == "name").map_or("", |e| e.value.as_str())
            );
        }
        Ok(Config {
            service: ServiceConfig::from_entries(&service)?,
            inputs,
            filters,
            outputs,
            parsers: Default::default(),
            main_dir: None,
            vars: doc.vars.clone(),
        })
    }
}
