//! Parser for Fluent Bit's *classic* configuration format (`fluent-bit.conf`); the
//! counterpart of Fluent Bit's `src/config_format/flb_cf_fluentbit.c` (5.1.1).
//!
//! A file is read line by line. Lines ending in `\n` or `\r\n` (or nothing, at the end)
//! are, in this order: empty → skipped; `#` in column 0 → comment; `@INCLUDE path`,
//! `@SET NAME=VALUE` or another `@DIRECTIVE` in column 0; `[NAME]` in column 0 → section
//! header; otherwise an indented `key value` line. The first key line of each file sets
//! that file's indentation, and every later key line of the file must use exactly the
//! same blanks. `${NAME}` / `${NAME:-default}` in values are expanded after all files are
//! read, so every `@SET` applies to every value. The line grammar is written with `nom`;
//! walking files and includes is plain Rust.
//!
//! Where we deliberately differ from Fluent Bit (kinder, or deterministic):
//! * whitespace-only lines, a leading UTF-8 byte order mark, and indented comments before
//!   the file's indentation is known (they do not set it) are skipped;
//! * `@INCLUDE` paths and both sides of `@SET` are trimmed; glob matches are sorted and
//!   directories among them skipped; a glob without a match is an error;
//! * unknown `@DIRECTIVE`s and unknown `[SECTION]`s give a warning (Fluent Bit is silent);
//!   section kinds are matched case-insensitively on the whole (trimmed) header;
//! * a key line before any section, an unindented key line and an indented section header
//!   are errors. A key line indented exactly twice the file's indentation belongs to its
//!   section, as in Fluent Bit (which reads it as a group's content, and groups need an
//!   indented `[GROUP]` line that we refuse); other extra blanks are errors.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nom::branch::alt;
use nom::bytes::complete::{take_till, take_till1, take_until, take_while1};
use nom::character::complete::{char, space0};
use nom::combinator::{all_consuming, cut, map, rest};
use nom::sequence::{preceded, separated_pair, terminated};
use nom::{IResult, Parser};

use crate::config::model::{Document, Entry, Section, SectionKind, Span, Warning};

/// Fluent Bit's `FLB_CF_FILE_NUM_LIMIT`: the main file plus all included files.
const MAX_FILES: usize = 1000;

/// A configuration that cannot be loaded. Displays as `file:line: message`.
#[derive(Debug, thiserror::Error)]
#[error("{span}: {kind}")]
pub struct ParseError {
    pub span: Span,
    pub kind: ParseErrorKind,
}

impl ParseError {
    fn new(span: &Span, kind: ParseErrorKind) -> Self {
        let span = span.clone();
        ParseError { span, kind }
    }
}

/// What is wrong; each message keeps Fluent Bit's wording and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("could not open configuration file: {0}")]
    Open(io::Error),
    #[error("[config] line is not valid UTF-8 (save the file with UTF-8 encoding)")]
    NotUtf8,
    #[error("[config] bad header definition (a section header needs a closing ']', e.g. [INPUT])")]
    BadHeader,
    #[error("[config] invalid indentation level (a section header starts in column 0; remove the blanks before '[')")]
    IndentedHeader,
    #[error("[config] invalid indentation level (indent keys under their [SECTION], e.g. '    Name cpu')")]
    NotIndented,
    #[error("[config] {problem}: invalid indentation level (this file indents keys with {indent}, set by line {set_by}; indent every key line of a file the same way)")]
    Indentation {
        problem: IndentProblem,
        /// The file's indentation, described: `4 spaces`, `1 tab`, ...
        indent: String,
        set_by: u32,
    },
    #[error("[config] undefined value - check config is in valid classic format (a key needs a value after a space, e.g. 'Name random'; tabs do not separate a key from its value)")]
    UndefinedValue,
    #[error(
        "[config] key '{0}' has an empty value (write a value after the key, or remove the line)"
    )]
    EmptyValue(String),
    #[error("[config] key '{0}' is not inside a section (put a header such as [INPUT] above it; every file, included ones too, starts with a [SECTION] before its keys)")]
    KeyOutsideSection(String),
    #[error("Sections 'multiline_parser' and 'parser' are not valid in the main configuration file. It belongs to the 'parsers_file' configuration files. (move [{0}] into a file of its own and name that file with 'Parsers_File' in [SERVICE])")]
    ParserSection(String),
    #[error("[config] invalid @SET (write it as '@SET NAME=VALUE', e.g. '@SET env=prod')")]
    BadSet,
    #[error(
        "[config] @INCLUDE without a path (name the file to include, e.g. '@INCLUDE inputs.conf')"
    )]
    IncludeNoPath,
    #[error("[config] I cannot open {path} file: {error} (tried {tried}; a relative @INCLUDE path is looked up in the current directory, then next to the main config file)")]
    IncludeNotFound {
        path: String,
        tried: String,
        error: io::Error,
    },
    #[error("[config] I cannot read {path} file: {error} (@INCLUDE needs a readable file)")]
    IncludeRead { path: String, error: io::Error },
    #[error("[config] glob: [{0}] no match (@INCLUDE found no file; a relative pattern is resolved against the main config file's directory)")]
    GlobNoMatch(String),
    #[error("[config] glob: [{pattern}] {error} (fix the @INCLUDE pattern)")]
    GlobError { pattern: String, error: String },
    #[error("[config] file already included {0} (a file can be included only once; remove the repeated @INCLUDE)")]
    AlreadyIncluded(String),
    #[error("Too many config files. Limit = 1000 (the main file and all @INCLUDE'd files count; merge some of them)")]
    TooManyFiles,
}

/// How a key line's blanks differ from the file's indentation (Fluent Bit's wording).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndentProblem {
    #[error("indentation level is too low")]
    TooLow,
    #[error("inconsistent use of tab and space")]
    TabAndSpace,
    #[error("extra indentation level found")]
    Extra,
}

/// Loads the main configuration file with its includes, expanding `${VAR}` from `@SET`
/// and the process environment. `[PARSER]` sections are not allowed here.
pub fn load(path: &Path) -> Result<Document, ParseError> {
    load_with(path, Role::Main, &|name| std::env::var(name).ok())
}

/// Loads a `parsers_file`: the same format, but `[PARSER]` and `[MULTILINE_PARSER]`
/// sections are allowed.
pub fn load_parsers_file(path: &Path) -> Result<Document, ParseError> {
    load_with(path, Role::Parsers, &|name| std::env::var(name).ok())
}

/// Parses configuration text labelled `file_label` in spans. It has no directory of its
/// own, so `@INCLUDE` paths and patterns are relative to the current directory.
pub fn parse_str(file_label: &str, text: &str) -> Result<Document, ParseError> {
    parse_str_with(file_label, text, &|name| std::env::var(name).ok())
}

/// Where to look up a variable that `@SET` did not define.
type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn load_with(path: &Path, role: Role, env: EnvLookup<'_>) -> Result<Document, ParseError> {
    let label = path.display().to_string();
    let open_error =
        |error| ParseError::new(&Span::new(label.as_str(), 0), ParseErrorKind::Open(error));
    let meta = fs::metadata(path).map_err(open_error)?;
    let bytes = super::read_regular_file(path, super::MAX_CONFIG_FILE).map_err(open_error)?;
    let mut loader = Loader::new(role, path.parent().map(Path::to_path_buf));
    loader.seen.insert(file_id(&meta));
    loader.parse_file(&label, &bytes)?;
    Ok(loader.finish(env))
}

fn parse_str_with(label: &str, text: &str, env: EnvLookup<'_>) -> Result<Document, ParseError> {
    let mut loader = Loader::new(Role::Main, None);
    loader.parse_file(label, text.as_bytes())?;
    Ok(loader.finish(env))
}

/// Whether parser sections are allowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Main,
    Parsers,
}

/// State shared by the main file and all its includes.
struct Loader {
    role: Role,
    /// Directory of the main file: relative includes not found from the current
    /// directory, and relative glob patterns, are resolved against it.
    main_dir: Option<PathBuf>,
    /// `(device, inode)` of every file read, to refuse reading one twice.
    seen: HashSet<(u64, u64)>,
    /// Files read so far, the main one included.
    files: usize,
    /// `@SET` variables of all files; the last one of a name wins.
    vars: HashMap<String, String>,
    /// Sections with values not yet expanded.
    doc: Document,
}

impl Loader {
    fn new(role: Role, main_dir: Option<PathBuf>) -> Self {
        Loader {
            role,
            main_dir: main_dir.filter(|dir| !dir.as_os_str().is_empty()),
            seen: HashSet::new(),
            files: 1,
            vars: HashMap::new(),
            doc: Document::default(),
        }
    }

    fn warn(&mut self, span: &Span, message: String) {
        let span = span.clone();
        self.doc.warnings.push(Warning { span, message });
    }

    /// Parses one file's text. Each file has its own indentation and starts outside any
    /// section; sections of included files are added where their `@INCLUDE` stands, and
    /// key lines after an `@INCLUDE` still belong to the including file's section.
    fn parse_file(&mut self, label: &str, bytes: &[u8]) -> Result<(), ParseError> {
        let file: Arc<str> = Arc::from(label);
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        // The file's indentation and the line that set it.
        let mut indent: Option<(&str, u32)> = None;
        // Index in `doc.sections` of the section that key lines go to.
        let mut current: Option<usize> = None;

        for (number, raw) in (1u32..).zip(bytes.split(|&b| b == b'\n')) {
            let span = Span::new(file.clone(), number);
            let fail = |kind| ParseError::new(&span, kind);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.is_empty() || raw[0] == b'#' {
                continue;
            }
            let text = std::str::from_utf8(raw).map_err(|_| fail(ParseErrorKind::NotUtf8))?;
            // Kinder than Fluent Bit, which checks the indentation of blank lines too.
            if trim_blanks(text).is_empty() {
                continue;
            }
            let parsed = line(text).map(|(_, parsed)| parsed);
            match parsed.map_err(|_| fail(ParseErrorKind::BadHeader))? {
                Line::Header(name) => {
                    self.close_section(current);
                    let kind = match section_kind(name) {
                        Some(SectionKind::Parser | SectionKind::MultilineParser)
                            if self.role == Role::Main =>
                        {
                            return Err(fail(ParseErrorKind::ParserSection(name.to_string())));
                        }
                        Some(kind) => kind,
                        None => {
                            self.warn(&span, format!("unknown section [{name}] ignored"));
                            SectionKind::Other
                        }
                    };
                    let (header, entries) = (name.to_string(), Vec::new());
                    self.doc.sections.push(Section {
                        kind,
                        header,
                        span,
                        entries,
                        processors: Vec::new(),
                    });
                    current = Some(self.doc.sections.len() - 1);
                }
                Line::Directive(name, arg) if name.eq_ignore_ascii_case("include") => {
                    self.include(arg, &span)?;
                }
                Line::Directive(name, arg) if name.eq_ignore_ascii_case("set") => {
                    // Fluent Bit keeps blanks around the name and the value; we trim them.
                    let (var, value) = match set_assignment(arg) {
                        Ok((_, (var, value))) if !trim_blanks(var).is_empty() => (var, value),
                        _ => return Err(fail(ParseErrorKind::BadSet)),
                    };
                    let value = trim_blanks(value).to_string();
                    self.vars.insert(trim_blanks(var).to_string(), value);
                }
                Line::Directive(name, _) => {
                    self.warn(&span, format!("unknown directive @{name} ignored"));
                }
                Line::Bare(_) => return Err(fail(ParseErrorKind::NotIndented)),
                Line::Indented(blanks, body) => {
                    self.key_line(&mut indent, current, span, blanks, body)?;
                }
            }
        }
        self.close_section(current);
        Ok(())
    }

    /// An indented line: a comment, or a `key value` entry of the current section.
    fn key_line<'t>(
        &mut self,
        indent: &mut Option<(&'t str, u32)>,
        current: Option<usize>,
        span: Span,
        blanks: &'t str,
        body: &str,
    ) -> Result<(), ParseError> {
        let fail = |kind| ParseError::new(&span, kind);
        let comment = body.starts_with('#');
        if comment && indent.is_none() {
            return Ok(());
        }
        if body.starts_with('[') {
            return Err(fail(ParseErrorKind::IndentedHeader));
        }
        let (file_indent, set_by) = *indent.get_or_insert((blanks, span.line));
        check_indent(blanks, file_indent).map_err(|problem| {
            let indent = describe_blanks(file_indent);
            fail(ParseErrorKind::Indentation {
                problem,
                indent,
                set_by,
            })
        })?;
        if comment {
            return Ok(());
        }
        let (_, (key, value)) =
            key_value(body).map_err(|_| fail(ParseErrorKind::UndefinedValue))?;
        let key = trim_blanks(key).to_ascii_lowercase();
        let value = trim_blanks(value).to_string();
        if value.is_empty() {
            return Err(fail(ParseErrorKind::EmptyValue(key)));
        }
        let Some(index) = current else {
            return Err(fail(ParseErrorKind::KeyOutsideSection(key)));
        };
        let entries = &mut self.doc.sections[index].entries;
        entries.push(Entry { key, value, span });
        Ok(())
    }

    /// Fluent Bit warns when a section ends without keys.
    fn close_section(&mut self, current: Option<usize>) {
        if let Some(section) = current.map(|index| &self.doc.sections[index]) {
            if section.entries.is_empty() {
                let span = section.span.clone();
                self.warn(&span, "previous section did not have keys".to_string());
            }
        }
    }

    /// `@INCLUDE path-or-glob`, at the line `span`.
    fn include(&mut self, arg: &str, span: &Span) -> Result<(), ParseError> {
        let fail = |kind| ParseError::new(span, kind);
        if arg.is_empty() {
            return Err(fail(ParseErrorKind::IncludeNoPath));
        }
        let paths = if arg.contains(['*', '?', '[']) {
            self.glob(arg).map_err(fail)?
        } else {
            vec![self.resolve(arg).map_err(fail)?]
        };
        for path in paths {
            if self.files >= MAX_FILES {
                return Err(fail(ParseErrorKind::TooManyFiles));
            }
            let label = path.display().to_string();
            let unreadable = |error| {
                let path = label.clone();
                fail(ParseErrorKind::IncludeRead { path, error })
            };
            let meta = fs::metadata(&path).map_err(unreadable)?;
            if !self.seen.insert(file_id(&meta)) {
                return Err(fail(ParseErrorKind::AlreadyIncluded(label)));
            }
            let bytes =
                super::read_regular_file(&path, super::MAX_CONFIG_FILE).map_err(unreadable)?;
            self.files += 1;
            self.parse_file(&label, &bytes)?;
        }
        Ok(())
    }

    /// A plain include path: as given (relative to the current directory), else, when
    /// relative, next to the main config file.
    fn resolve(&self, arg: &str) -> Result<PathBuf, ParseErrorKind> {
        let given = PathBuf::from(arg);
        let mut error = match fs::metadata(&given) {
            Ok(_) => return Ok(given),
            Err(error) => error,
        };
        let mut tried = format!("'{arg}'");
        if let (io::ErrorKind::NotFound, true, Some(dir)) =
            (error.kind(), given.is_relative(), &self.main_dir)
        {
            let beside_main = dir.join(&given);
            match fs::metadata(&beside_main) {
                Ok(_) => return Ok(beside_main),
                Err(next) => error = next,
            }
            tried = format!("'{arg}' and '{}'", beside_main.display());
        }
        let path = arg.to_string();
        Err(ParseErrorKind::IncludeNotFound { path, tried, error })
    }

    /// A glob include: a relative pattern is resolved against the main file's directory.
    /// Matches are sorted; directories are skipped.
    fn glob(&self, arg: &str) -> Result<Vec<PathBuf>, ParseErrorKind> {
        let pattern = match &self.main_dir {
            Some(dir) if Path::new(arg).is_relative() => {
                let dir = glob::Pattern::escape(&dir.to_string_lossy());
                format!("{dir}/{arg}")
            }
            _ => arg.to_string(),
        };
        let bad = |error: String| ParseErrorKind::GlobError {
            pattern: pattern.clone(),
            error,
        };
        let mut files = Vec::new();
        for entry in glob::glob(&pattern).map_err(|e| bad(e.to_string()))? {
            let path = entry.map_err(|e| bad(e.to_string()))?;
            if path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(ParseErrorKind::GlobNoMatch(pattern));
        }
        files.sort();
        Ok(files)
    }

    /// Expands `${...}` in every value, now that every `@SET` is known.
    fn finish(self, env: EnvLookup<'_>) -> Document {
        let Loader { vars, mut doc, .. } = self;
        expand_values_with(&mut doc, &vars, env);
        doc.vars = sorted_vars(&vars);
        doc
    }
}

/// `vars` by name (a HashMap's order is not stable).
pub fn sorted_vars(vars: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    out.sort();
    out
}

/// Expands `${VAR}` / `${VAR:-default}` in every value of `doc`: `vars` (`@SET`, YAML
/// `env`) first, then the process environment, then `${HOSTNAME}`; unset variables
/// become warnings. Shared by every config front end.
pub fn expand_values(doc: &mut Document, vars: &HashMap<String, String>) {
    expand_values_with(doc, vars, &|name| std::env::var(name).ok());
}

fn expand_values_with(doc: &mut Document, vars: &HashMap<String, String>, env: EnvLookup<'_>) {
    // An empty value counts as unset, wherever it comes from.
    let lookup = |name: &str| -> Option<String> {
        let found = vars.get(name).cloned().filter(|v| !v.is_empty());
        let found = found.or_else(|| env(name).filter(|v| !v.is_empty()));
        match found {
            None if name == "HOSTNAME" => hostname(),
            found => found,
        }
    };
    let mut warnings = Vec::new();
    for entry in doc.sections.iter_mut().flat_map(|s| s.all_entries_mut()) {
        let mut unset = Vec::new();
        entry.value = expand(&entry.value, &lookup, &mut unset);
        warnings.extend(unset.into_iter().map(|name| Warning {
            span: entry.span.clone(),
            message: format!("[env] variable ${{{name}}} is used but not set"),
        }));
    }
    doc.warnings.extend(warnings);
}

/// Identifies a file whatever path reaches it (symlinks, hard links, `..`).
fn file_id(meta: &fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The section kind of a header, or `None` for a header Fluent Bit does not know.
fn section_kind(header: &str) -> Option<SectionKind> {
    use SectionKind::*;
    let kind = match trim_blanks(header).to_ascii_lowercase().as_str() {
        "service" => Service,
        "parser" => Parser,
        "multiline_parser" => MultilineParser,
        "stream_processor" | "plugins" | "upstream_servers" | "custom" | "customs" => Other,
        // An upstream file's sections (read by the outputs' `upstream` property).
        "upstream" | "node" => Other,
        "input" | "inputs" => Input,
        "filter" | "filters" => Filter,
        "output" | "outputs" => Output,
        _ => return None,
    };
    Some(kind)
}

/// Fluent Bit's `check_indent`: walk the line's blanks along the file's indentation; a
/// different blank where they differ is a tab/space mix, running out of blanks is too
/// low, and blanks left over are extra unless there are exactly as many as the
/// indentation has (a group's content in Fluent Bit: twice the indentation, any blanks).
fn check_indent(blanks: &str, indent: &str) -> Result<(), IndentProblem> {
    let same = blanks
        .bytes()
        .zip(indent.bytes())
        .take_while(|(a, b)| a == b);
    let common = same.count();
    match (common < indent.len(), common < blanks.len()) {
        (true, true) => Err(IndentProblem::TabAndSpace),
        (true, false) => Err(IndentProblem::TooLow),
        (false, true) if blanks.len() - common == indent.len() => Ok(()),
        (false, true) => Err(IndentProblem::Extra),
        (false, false) => Ok(()),
    }
}

/// `4 spaces`, `1 tab`, `1 tab and 2 spaces mixed`.
fn describe_blanks(blanks: &str) -> String {
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let spaces = blanks.bytes().filter(|&b| b == b' ').count();
    match (spaces, blanks.len() - spaces) {
        (n, 0) => count(n, "space"),
        (0, n) => count(n, "tab"),
        (s, t) => format!("{} and {} mixed", count(t, "tab"), count(s, "space")),
    }
}

/// gethostname(2), for `${HOSTNAME}` when neither `@SET` nor the environment has it.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8(buf[..end].to_vec()).ok()?;
    (!name.is_empty()).then_some(name)
}

// ---- line grammar (nom) ----

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn trim_blanks(text: &str) -> &str {
    text.trim_matches(is_blank)
}

/// One non-empty, non-comment line.
#[derive(Debug, PartialEq)]
enum Line<'a> {
    /// `[NAME]` in column 0; text after the first `]` is ignored, as in Fluent Bit.
    Header(&'a str),
    /// `@NAME argument` in column 0, argument trimmed.
    Directive(&'a str, &'a str),
    /// Leading blanks, then the rest (which starts with a non-blank).
    Indented(&'a str, &'a str),
    /// Anything else in column 0.
    Bare(&'a str),
}

/// Classifies a line. The only failure is a `[` without `]` (a `cut` error).
fn line(input: &str) -> IResult<&str, Line<'_>> {
    all_consuming(alt((
        map(header, Line::Header),
        directive,
        map((take_while1(is_blank), rest), |(blanks, body)| {
            Line::Indented(blanks, body)
        }),
        map(rest, Line::Bare),
    )))
    .parse(input)
}

fn header(input: &str) -> IResult<&str, &str> {
    let closing = (char(']'), rest);
    preceded(char('['), cut(terminated(take_until("]"), closing))).parse(input)
}

fn directive(input: &str) -> IResult<&str, Line<'_>> {
    let name = preceded(char('@'), take_till(is_blank));
    let arg = preceded(space0, map(rest, trim_blanks));
    map((name, arg), |(name, arg)| Line::Directive(name, arg)).parse(input)
}

/// `key value`: the key ends at the first space (a tab does not end it).
fn key_value(body: &str) -> IResult<&str, (&str, &str)> {
    all_consuming(separated_pair(take_till1(|c| c == ' '), char(' '), rest)).parse(body)
}

/// `NAME=VALUE` of `@SET`, split at the first `=`.
fn set_assignment(arg: &str) -> IResult<&str, (&str, &str)> {
    all_consuming(separated_pair(take_till(|c| c == '='), char('='), rest)).parse(arg)
}

/// A piece of a value: literal text, or `${NAME}` / `${NAME:-default}`.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str, Option<&'a str>),
}

/// Splits a value into pieces: `${NAME}` and `${NAME:-default}` (the name runs to the
/// first `}`), and literal text between; a `$` that does not start a complete `${...}`
/// is literal. Linear: once a `${` has no `}` after it, neither has any later one.
fn pieces(value: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            break;
        };
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let body = &after[..end];
        out.push(match body.split_once(":-") {
            Some((name, default)) => Piece::Var(name, Some(default)),
            None => Piece::Var(body, None),
        });
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

/// Expands a value; names of unset variables without a default go to `unset`.
fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>, unset: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(value.len());
    for piece in pieces(value) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name, default) => match (lookup(name), default) {
                (Some(found), _) => out.push_str(&found),
                (None, Some(default)) => out.push_str(default),
                (None, None) => unset.push(name.to_string()),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: EnvLookup<'static> = &|_| None;

    fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Document, ParseError> {
        let env: HashMap<_, _> = env.iter().copied().collect();
        parse_str_with("t.conf", text, &|name| env.get(name).map(|v| v.to_string()))
    }

    fn parse(text: &str) -> Document {
        parse_env(text, &[]).unwrap()
    }

    fn error(text: &str) -> String {
        parse_env(text, &[]).unwrap_err().to_string()
    }

    fn keys(section: &Section) -> Vec<(&str, &str, u32)> {
        let entries = section.entries.iter();
        entries.map(|e| (&*e.key, &*e.value, e.span.line)).collect()
    }

    /// The first value of each section.
    fn firsts(doc: &Document) -> Vec<&str> {
        doc.sections.iter().map(|s| &*s.entries[0].value).collect()
    }

    fn messages(doc: &Document) -> Vec<String> {
        doc.warnings.iter().map(ToString::to_string).collect()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        fs::write(dir.join(name), text).unwrap();
        dir.join(name)
    }

    fn load_error(path: &Path) -> String {
        let err = load_with(path, Role::Main, NO_ENV).unwrap_err();
        err.to_string()
    }

    #[test]
    fn sections_keys_spans_and_warnings() {
        use SectionKind::*;
        let doc = parse("[INPUT]\n    Name  random \n    Tag\tx\ty z\n\n[OUTPUT]\n    NAME Out\n");
        let input = &doc.sections[0];
        assert_eq!((input.kind, &*input.header), (Input, "INPUT"));
        assert_eq!(input.span, Span::new("t.conf", 1));
        assert_eq!(keys(input), [("name", "random", 2), ("tag\tx\ty", "z", 3)]);
        assert_eq!(keys(&doc.sections[1]), [("name", "Out", 6)]);
        assert_eq!((doc.sections.len(), doc.warnings.len()), (2, 0));
        let text = "[service]\n a 1\n[Inputs]\n a 1\n[FILTERS]\n a 1\n[Output] x\n a 1\n\
                    [SERVICE]\n a 2\n[STREAM_PROCESSOR]\n a 1\n[custom]\n a 1\n[ input ]\n a 1\n";
        let doc = parse(text);
        let kinds: Vec<_> = doc.sections.iter().map(|s| s.kind).collect();
        let want = [Service, Input, Filter, Output, Service, Other, Other, Input];
        assert_eq!(kinds, want);
        assert_eq!(doc.sections[3].header, "Output");
        assert!(doc.warnings.is_empty());
        assert_eq!(keys(&doc.sections[4]), [("a", "2", 10)]);
        let doc = parse("[SERVICE]\n[Foo]\n  a 1\n[INPUT]\n");
        assert_eq!(doc.sections[1].kind, Other);
        let expected = [
            "t.conf:1: previous section did not have keys",
            "t.conf:2: unknown section [Foo] ignored",
            "t.conf:4: previous section did not have keys",
        ];
        assert_eq!(messages(&doc), expected);
        // A parsers file may hold parser sections.
        let mut loader = Loader::new(Role::Parsers, None);
        let parsed = loader.parse_file("p", b"[PARSER]\n a 1\n[MULTILINE_PARSER]\n a 1\n");
        parsed.unwrap();
        let kinds: Vec<_> = loader.doc.sections.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [Parser, MultilineParser]);
    }

    #[test]
    fn comments_blank_lines_crlf_and_utf8() {
        let doc = parse("# top\n[INPUT]\n#col0\n    # indent\n   \n\t\n    Name a # b\n");
        assert_eq!(keys(&doc.sections[0]), [("name", "a # b", 7)]);
        // An indented comment before the indentation is known does not set it.
        assert_eq!(firsts(&parse("[INPUT]\n  # two\n    Name cpu\n")), ["cpu"]);
        let doc = parse("\u{feff}[INPUT]\r\n    Name dummy\r\n\r\n    Dummy {\"é\":\"✓\"}");
        assert_eq!(keys(&doc.sections[0])[1], ("dummy", "{\"é\":\"✓\"}", 4));
        let parse_bytes = |bytes| Loader::new(Role::Main, None).parse_file("t.conf", bytes);
        let err = parse_bytes(b"[INPUT]\n    Name du\xffmmy\n").unwrap_err();
        let want = format!("t.conf:2: {}", ParseErrorKind::NotUtf8);
        assert_eq!(err.to_string(), want);
        assert!(parse_bytes(b"# caf\xe9\n").is_ok(), "only a comment");
    }

    #[test]
    fn a_key_at_twice_the_indentation_belongs_to_its_section() {
        let doc = parse("[A]\n  a 1\n    b 2\n\n[B]\n  c 3\n");
        assert_eq!(keys(&doc.sections[0]), [("a", "1", 2), ("b", "2", 3)]);
        let doc = parse("[A]\n\ta 1\n\t\tb 2\n");
        assert_eq!(keys(&doc.sections[0]), [("a", "1", 2), ("b", "2", 3)]);
    }

    #[test]
    fn line_errors() {
        let indent = |what, indent, by| {
            format!("[config] {what}: invalid indentation level (this file indents keys with {indent}, set by line {by}; indent every key line of a file the same way)")
        };
        let (low, mix, extra) = (
            "indentation level is too low",
            "inconsistent use of tab and space",
            "extra indentation level found",
        );
        let value = "[config] undefined value - check config is in valid classic format (a key needs a value after a space, e.g. 'Name random'; tabs do not separate a key from its value)";
        let set = "[config] invalid @SET (write it as '@SET NAME=VALUE', e.g. '@SET env=prod')";
        let cases = [
            // 4 spaces in one section, then 6 in the next.
            ("[A]\n    a 1\n\n[B]\n      b 2\n", 5, indent(extra, "4 spaces", 2)),
            // Three times the indentation is extra (twice is a section key).
            ("[A]\n  a 1\n      b 2\n", 3, indent(extra, "2 spaces", 2)),
            ("[A]\n    a 1\n  b 2\n", 3, indent(low, "4 spaces", 2)),
            ("[A]\n    a 1\n  # c\n", 3, indent(low, "4 spaces", 2)),
            ("[A]\n\ta 1\n    b 2\n", 3, indent(mix, "1 tab", 2)),
            ("[A]\n    a 1\n\tb 2\n", 3, indent(mix, "4 spaces", 2)),
            ("[A]\n \ta 1\n\t b 2\n", 3, indent(mix, "1 tab and 1 space mixed", 2)),
            ("[A]\n    a 1\nb 2\n", 3, "[config] invalid indentation level (indent keys under their [SECTION], e.g. '    Name cpu')".into()),
            ("[A]\n    a 1\n    [B]\n", 3, "[config] invalid indentation level (a section header starts in column 0; remove the blanks before '[')".into()),
            ("[A]\n    a 1\n[B\n", 3, "[config] bad header definition (a section header needs a closing ']', e.g. [INPUT])".into()),
            ("[A]\n    a 1\n    Tag\n", 3, value.into()),
            ("[A]\n    Name\tcpu\n", 2, value.into()),
            ("[A]\n    a 1\n    Tag  \t\n", 3, "[config] key 'tag' has an empty value (write a value after the key, or remove the line)".into()),
            ("# x\n    Name cpu\n", 2, "[config] key 'name' is not inside a section (put a header such as [INPUT] above it; every file, included ones too, starts with a [SECTION] before its keys)".into()),
            ("[A]\n a 1\n[PARSER]\n", 3, "Sections 'multiline_parser' and 'parser' are not valid in the main configuration file. It belongs to the 'parsers_file' configuration files. (move [PARSER] into a file of its own and name that file with 'Parsers_File' in [SERVICE])".into()),
            ("[Multiline_Parser]\n", 1, ParseErrorKind::ParserSection("Multiline_Parser".into()).to_string()),
            ("[A]\n@SET novalue\n", 2, set.into()),
            ("[A]\n@SET =v\n", 2, set.into()),
            ("@INCLUDE   \n", 1, "[config] @INCLUDE without a path (name the file to include, e.g. '@INCLUDE inputs.conf')".into()),
        ];
        for (text, line, message) in cases {
            assert_eq!(error(text), format!("t.conf:{line}: {message}"), "{text:?}");
        }
    }

    #[test]
    fn set_applies_everywhere_and_last_wins() {
        let text = "@SET D=d\n[INPUT]\n  Name ${A}\n  Tag ${B}-${C}${D}\n@SET A = one \n\
                    @set B=x=y\n@SET C=c1\n@SET C=c2\n@FOO bar\n";
        let doc = parse_env(text, &[("A", "from-env")]).unwrap();
        let want = [("name", "one", 3), ("tag", "x=y-c2d", 4)];
        assert_eq!(keys(&doc.sections[0]), want);
        assert_eq!(messages(&doc), ["t.conf:9: unknown directive @FOO ignored"]);
    }

    #[test]
    fn variable_expansion() {
        let text = "[INPUT]\n  a ${EMPTY:-dflt}\n  b ${SET:-no}/${NOPE:-}\n\
                    \x20 c $HOME ${ $5 ${open\n  d ${MISSING}x${MISSING}\n  E ${E}\n\
                    \x20 f ${MISSING:-a:-b}\n";
        let doc = parse_env(text, &[("EMPTY", ""), ("SET", "yes"), ("E", "Mixed Case")]).unwrap();
        let expected = [
            ("a", "dflt", 2),
            ("b", "yes/", 3),
            ("c", "$HOME ${ $5 ${open", 4),
            ("d", "x", 5),
            ("e", "Mixed Case", 6),
            ("f", "a:-b", 7),
        ];
        assert_eq!(keys(&doc.sections[0]), expected);
        let warning = "t.conf:5: [env] variable ${MISSING} is used but not set";
        assert_eq!(messages(&doc), [warning, warning]);
        // Keys and headers are not expanded.
        let doc = parse_env("[${S}]\n  ${K} v\n", &[("S", "INPUT"), ("K", "k")]).unwrap();
        assert_eq!(doc.sections[0].header, "${S}");
        assert_eq!(doc.sections[0].entries[0].key, "${k}");
        // ${HOSTNAME} falls back to gethostname(2); the real entry points read the environment.
        let doc = parse("[SERVICE]\n  a ${HOSTNAME}\n");
        assert_eq!(firsts(&doc), [hostname().unwrap_or_default()]);
        let doc = parse("@SET HOSTNAME=box\n[SERVICE]\n  a ${HOSTNAME}\n");
        assert_eq!(firsts(&doc), ["box"]);
        std::env::set_var("CFGPARSE_TEST_VAR_91C2", "from process");
        let doc = parse_str("t.conf", "[SERVICE]\n  a ${CFGPARSE_TEST_VAR_91C2}\n").unwrap();
        assert_eq!(firsts(&doc), ["from process"]);
    }

    #[test]
    fn includes_keep_position_and_nest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "b", "[FILTER]\n\tName grep\n@include s/c\n");
        fs::create_dir(d.join("s")).unwrap();
        write(d, "s/c", "@SET V=from-c\n[OUTPUT]\n  Name stdout\n");
        let text = "[INPUT]\n    Name cpu\n@INCLUDE  b  \n    Tag ${V}\n[OUTPUT]\n    Name x\n";
        let main = write(d, "m", text);
        let doc = load_with(&main, Role::Main, NO_ENV).unwrap();
        let at = |name: &str, line: u32| format!("{}:{line}", d.join(name).display());
        let spans: Vec<_> = doc.sections.iter().map(|s| s.span.to_string()).collect();
        let expected = [at("m", 1), at("b", 1), at("s/c", 2), at("m", 5)];
        assert_eq!(spans, expected);
        // Keys after an @INCLUDE still belong to the including file's section.
        let want = [("name", "cpu", 2), ("tag", "from-c", 4)];
        assert_eq!(keys(&doc.sections[0]), want);
        // Keys before the first section of an included file are an error there.
        write(d, "b", "  Name grep\n");
        let expected = format!("{}: [config] key 'name' is not inside", at("b", 1));
        assert!(load_error(&main).starts_with(&expected));
    }

    #[test]
    fn include_resolution_cwd_then_main_dir() {
        let dir = tempfile::tempdir().unwrap();
        let in_cwd = tempfile::NamedTempFile::new_in(".").unwrap();
        fs::write(in_cwd.path(), "[INPUT]\n  Name from-cwd\n").unwrap();
        let name = in_cwd.path().file_name().unwrap().to_str().unwrap();
        write(dir.path(), name, "[INPUT]\n  Name from-main-dir\n");
        let only_here = write(dir.path(), "here.conf", "[INPUT]\n  Name only-here\n");
        let text = format!("@INCLUDE {name}\n@INCLUDE here.conf\n");
        let doc = load_with(&write(dir.path(), "m.conf", &text), Role::Main, NO_ENV).unwrap();
        assert_eq!(firsts(&doc), ["from-cwd", "only-here"]);
        assert_eq!(*doc.sections[0].span.file, *name);
        assert_eq!(*doc.sections[1].span.file, only_here.display().to_string());
    }

    #[test]
    fn file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let nope = d.join("nope.conf");
        let expected = "could not open configuration file: No such file or directory (os error 2)";
        let err = load(&nope).unwrap_err().to_string();
        assert_eq!(err, format!("{}: {expected}", nope.display()));
        let main = write(d, "main.conf", "[INPUT]\n  a 1\n@INCLUDE missing.conf\n");
        let (m, beside) = (main.display(), d.join("missing.conf"));
        let want = format!("{m}:3: [config] I cannot open missing.conf file: No such file or directory (os error 2) (tried 'missing.conf' and '{}'; a relative @INCLUDE path is looked up in the current directory, then next to the main config file)", beside.display());
        assert_eq!(load_error(&main), want);
        let included = write(d, "a.conf", "[OUTPUT]\n  Name null\n");
        write(d, "main.conf", "@INCLUDE a.conf\n@INCLUDE a.conf\n");
        let want = format!("{m}:2: [config] file already included {} (a file can be included only once; remove the repeated @INCLUDE)", included.display());
        assert_eq!(load_error(&main), want);
        write(d, "main.conf", "@INCLUDE main.conf\n");
        let expected = format!("{m}:1: [config] file already included");
        assert!(load_error(&main).starts_with(&expected));
        write(d, "main.conf", "[INPUT]\n  a 1\n@INCLUDE nothing-*.conf\n");
        let want = format!("{m}:3: [config] glob: [{}] no match (@INCLUDE found no file; a relative pattern is resolved against the main config file's directory)", d.join("nothing-*.conf").display());
        assert_eq!(load_error(&main), want);
    }

    #[test]
    fn glob_include_is_sorted_and_relative_to_main_dir() {
        let dir = tempfile::tempdir().unwrap();
        let conf_d = dir.path().join("conf.d");
        fs::create_dir_all(conf_d.join("dir.conf")).unwrap(); // directories are skipped
        for name in ["b", "c", "a"] {
            let text = format!("[B]\n  a {name}\n");
            write(&conf_d, &format!("{name}.conf"), &text);
        }
        let main = write(dir.path(), "m.conf", "[A]\n  a 1\n@INCLUDE conf.d/*.conf\n");
        let doc = load_with(&main, Role::Main, NO_ENV).unwrap();
        assert_eq!(firsts(&doc), ["1", "a", "b", "c"]);
        let expected = format!("{}:1", conf_d.join("a.conf").display());
        assert_eq!(doc.sections[1].span.to_string(), expected);
    }

    #[test]
    fn at_most_1000_files() {
        let dir = tempfile::tempdir().unwrap();
        let many = dir.path().join("many");
        fs::create_dir(&many).unwrap();
        for i in 0..MAX_FILES {
            write(&many, &format!("{i:04}.conf"), "[OUTPUT]\n  Name null\n");
        }
        let main = write(dir.path(), "main.conf", "@INCLUDE many/*.conf\n");
        let want = format!("{}:1: Too many config files. Limit = 1000 (the main file and all @INCLUDE'd files count; merge some of them)", main.display());
        assert_eq!(load_error(&main), want);
        fs::remove_file(many.join("0000.conf")).unwrap();
        let doc = load_with(&main, Role::Main, NO_ENV).unwrap();
        assert_eq!(doc.sections.len(), MAX_FILES - 1);
    }

    #[test]
    fn line_grammar() {
        use Piece::{Text, Var};
        assert_eq!(line("[A] trailing").unwrap().1, Line::Header("A"));
        let directive = Line::Directive("INCLUDE", "x y");
        assert_eq!(line("@INCLUDE\t x y ").unwrap().1, directive);
        assert_eq!(line(" \tk v").unwrap().1, Line::Indented(" \t", "k v"));
        assert_eq!(line("k v").unwrap().1, Line::Bare("k v"));
        assert!(line("[A").is_err());
        assert_eq!(key_value("k\tv w").unwrap().1, ("k\tv", "w"));
        let dollar = [Text("a$"), Var("B", Some("c")), Text("}}")];
        assert_eq!(pieces("a$${B:-c}}}"), dollar);
        let vars = [Var("A", None), Var("", None)];
        assert_eq!(pieces("${A}${}"), vars);
        // A name runs to the first `}`; a `${` without one is text, as is what follows.
        assert_eq!(
            pieces("x${a${b}y"),
            [Text("x"), Var("a${b", None), Text("y")]
        );
        assert_eq!(pieces("${a ${b"), [Text("${a ${b")]);
        // 200,000 unclosed `${` are read in one pass (they took minutes).
        let many = "${".repeat(200_000);
        assert_eq!(pieces(&many), [Text(many.as_str())]);
    }
}
