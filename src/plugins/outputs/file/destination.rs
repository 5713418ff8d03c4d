//! Where a record goes: `path`/`file` or the sanitized tag, and, in Fluent Bit 5.1.1,
//! per-record destinations from record accessors (`$key`, `$TAG`) and `strftime`
//! placeholders of the event time (`enable_strftime`), checked for unsafe values, capped
//! by `max_dynamic_files`, with `on_missing_field`/`on_limit_reached` actions and a
//! `fallback_path`/`fallback_file`.
//! Fluent Bit: plugins/out_file/file.c (`sanitize_tag_name`, `resolve_dynamic_destination`,
//! `validate_dynamic_path`, `validate_dynamic_file`, `format_event_timestamp`).

use std::collections::HashSet;
use std::ffi::CString;
use std::sync::{Arc, Mutex};

use crate::event::template::Template;
use crate::event::Record;

/// `on_missing_field` and `on_limit_reached`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The chunk fails (Fluent Bit's FLB_ERROR: not retried).
    Error,
    /// The record is skipped with a warning.
    Drop,
    /// The record goes to `fallback_path`/`fallback_file`.
    Fallback,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        [
            ("error", Action::Error),
            ("drop", Action::Drop),
            ("fallback", Action::Fallback),
        ]
        .into_iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(s))
        .map(|(_, a)| a)
    }
}

/// One of `path` and `file` as configured.
#[derive(Clone, Debug)]
pub struct Part {
    /// The text as given.
    pub text: String,
    /// `$...` in it: a record accessor (`flb_ra_create`).
    pub accessor: Option<Template>,
    /// `enable_strftime` and a `%` in it: expanded with the event time (UTC) first.
    pub strftime: Option<CString>,
}

impl Part {
    pub fn is_dynamic(&self) -> bool {
        self.accessor.is_some() || self.strftime.is_some()
    }
}

/// What a record's destination resolved to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Write to the path left in the caller's buffer.
    Write,
    /// Skip the record (already logged).
    Drop,
    /// Fail the chunk with this reason.
    Error(String),
}

/// Per-record destinations (only built when `path` or `file` is dynamic).
pub struct Dynamic {
    pub path: Option<Part>,
    pub file: Option<Part>,
    /// `fallback_path`/`fallback_file` composed; `None` without `fallback_file`.
    pub fallback: Option<String>,
    pub on_missing_field: Action,
    pub on_limit_reached: Action,
    /// `max_dynamic_files`; 0 is unlimited (and nothing is tracked).
    pub max_files: usize,
    /// Every destination seen, shared by the workers (Fluent Bit's `dynamic_files`;
    /// never shrinks, as there).
    pub seen: Arc<Mutex<HashSet<String>>>,
    /// Scratch for the file part's text, and the accessor re-parsed from a strftime
    /// expansion (kept while the expansion stays the same, i.e. within the second).
    scratch: String,
    path_cache: Option<(String, Template)>,
    file_cache: Option<(String, Template)>,
}

impl Dynamic {
    pub fn new(
        path: Option<Part>,
        file: Option<Part>,
        fallback: Option<String>,
        on_missing_field: Action,
        on_limit_reached: Action,
        max_files: usize,
    ) -> Dynamic {
        Dynamic {
            path,
            file,
            fallback,
            on_missing_field,
            on_limit_reached,
            max_files,
            seen: Arc::default(),
            scratch: String::new(),
            path_cache: None,
            file_cache: None,
        }
    }

    /// Another worker's view: the same parts and the same shared `seen` set.
    pub fn fork(&self) -> Dynamic {
        Dynamic {
            path: self.path.clone(),
            file: self.file.clone(),
            fallback: self.fallback.clone(),
            on_missing_field: self.on_missing_field,
            on_limit_reached: self.on_limit_reached,
            max_files: self.max_files,
            seen: self.seen.clone(),
            scratch: String::new(),
            path_cache: None,
            file_cache: None,
        }
    }

    /// The destination of `rec` into `out` (cleared first). As in Fluent Bit, a missing
    /// key is reported before an unsafe value, the path's before the file's.
    pub fn resolve(&mut self, prefix: &str, tag: &str, rec: &Record, out: &mut String) -> Resolved {
        out.clear();
        // `out` gets the path, `scratch` the file; both are checked once expanded.
        let mut path_len = None;
        if let Some(part) = &self.path {
            if let Err(e) = expand(part, &mut self.path_cache, out, tag, rec, "path") {
                return self.failed(prefix, e, out);
            }
            path_len = Some(out.len());
        }
        self.scratch.clear();
        match &self.file {
            Some(part) => {
                if let Err(e) = expand(
                    part,
                    &mut self.file_cache,
                    &mut self.scratch,
                    tag,
                    rec,
                    "file",
                ) {
                    return self.failed(prefix, e, out);
                }
            }
            None => sanitize_tag(tag, &mut self.scratch),
        }
        let unsafe_path = path_len.is_some()
            && self.path.as_ref().is_some_and(Part::is_dynamic)
            && !safe_path(out);
        let unsafe_file =
            self.file.as_ref().is_some_and(Part::is_dynamic) && !safe_file(&self.scratch);
        if unsafe_path || unsafe_file {
            return self.act(
                prefix,
                self.on_missing_field,
                "unsafe dynamic output destination",
                out,
            );
        }
        if path_len.is_some() {
            out.push('/');
        }
        out.push_str(&self.scratch);
        if self.max_files == 0 {
            return Resolved::Write;
        }
        let mut seen = self.seen.lock().expect("no panics while holding the set");
        if seen.contains(out.as_str()) {
            return Resolved::Write;
        }
        if seen.len() >= self.max_files {
            drop(seen);
            return self.act(
                prefix,
                self.on_limit_reached,
                "max_dynamic_files limit reached",
                out,
            );
        }
        seen.insert(out.clone());
        Resolved::Write
    }

    fn failed(&self, prefix: &str, e: Expand, out: &mut String) -> Resolved {
        match e {
            Expand::Missing(reason) => self.act(prefix, self.on_missing_field, &reason, out),
            Expand::Failed(reason) => Resolved::Error(reason),
        }
    }

    /// `apply_destination_action`.
    fn act(&self, prefix: &str, action: Action, reason: &str, out: &mut String) -> Resolved {
        match action {
            Action::Drop => {
                crate::warn!("{prefix} dropping record: {reason}");
                Resolved::Drop
            }
            Action::Fallback => match &self.fallback {
                Some(f) => {
                    out.clear();
                    out.push_str(f);
                    Resolved::Write
                }
                // `build` refuses a fallback action without `fallback_file`.
                None => Resolved::Error(format!("cannot apply fallback destination: {reason}")),
            },
            Action::Error => Resolved::Error(reason.to_string()),
        }
    }
}

enum Expand {
    /// A record accessor key is missing: the configured action applies.
    Missing(String),
    /// The chunk fails.
    Failed(String),
}

/// One part's text for `rec` appended to `out`: strftime first (as Fluent Bit does), then
/// the record accessor, re-parsed from the expansion when both are used.
fn expand(
    part: &Part,
    cache: &mut Option<(String, Template)>,
    out: &mut String,
    tag: &str,
    rec: &Record,
    what: &str,
) -> Result<(), Expand> {
    let accessor = match (&part.strftime, &part.accessor) {
        (None, None) => {
            out.push_str(&part.text);
            return Ok(());
        }
        (None, Some(ra)) => ra,
        (Some(fmt), ra) => {
            let start = out.len();
            if !strftime_utc(fmt, rec.time.secs, out) {
                return Err(Expand::Failed(format!(
                    "could not format timestamp placeholders in {what}"
                )));
            }
            if ra.is_none() {
                return Ok(());
            }
            let expanded = &out[start..];
            if cache.as_ref().is_none_or(|(text, _)| text != expanded) {
                let t = Template::parse(expanded).map_err(|_| {
                    Expand::Failed(format!(
                        "could not parse timestamp-expanded record accessor {what}"
                    ))
                })?;
                *cache = Some((expanded.to_string(), t));
            }
            out.truncate(start);
            &cache.as_ref().expect("set just above").1
        }
    };
    accessor.render_checked(tag, &rec.body, out).map_err(|key| {
        crate::warn!("[record accessor] translation failed, root key={key}");
        Expand::Missing(format!("record accessor field missing from {what}"))
    })
}

/// `strftime` of `gmtime_r(secs)` into `out`; false when the result is empty or too
/// long (Fluent Bit's "could not format timestamp placeholders").
fn strftime_utc(fmt: &CString, secs: i64, out: &mut String) -> bool {
    let mut buf = [0u8; 8192];
    // SAFETY: `tm` is written by gmtime_r before strftime reads it; `buf` is valid for
    // its length and `fmt` is NUL-terminated.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t = secs as libc::time_t;
        if libc::gmtime_r(&t, &mut tm).is_null() {
            return false;
        }
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm)
    };
    if n == 0 {
        return false;
    }
    out.push_str(&String::from_utf8_lossy(&buf[..n]));
    true
}

/// `validate_dynamic_path`: not empty, no control characters, no `.` or `..` component.
fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && !p.bytes().any(|c| c < 0x20 || c == 0x7f)
        && !p.split(['/', '\\']).any(|c| c == "." || c == "..")
}

/// `validate_dynamic_file`: not empty, `.` or `..`, no separator, no control
/// characters and none of `:*?"<>|`.
fn safe_file(f: &str) -> bool {
    !f.is_empty()
        && f != "."
        && f != ".."
        && !f
            .bytes()
            .any(|c| c < 0x20 || c == 0x7f || b"/\\:*?\"<>|".contains(&c))
}

/// `path/file` of a static destination; the tag (made safe) when `file` is not set.
pub fn static_dest(path: &Option<String>, file: &Option<String>, tag: &str) -> String {
    let mut dest = String::new();
    if let Some(p) = path {
        dest.push_str(p);
        dest.push('/');
    }
    match file {
        Some(f) => dest.push_str(f),
        None => sanitize_tag(tag, &mut dest),
    }
    dest
}

/// `sanitize_tag_name`: the tag as a relative path that stays under `path`. Each
/// `/`- or `\`-separated component keeps `[A-Za-z0-9._-]` (every other byte becomes
/// `_`), `.` and `..` components become `_`, empty components vanish; an empty result
/// is `_`.
pub fn sanitize_tag(tag: &str, out: &mut String) {
    let start = out.len();
    for comp in tag.split(['/', '\\']).filter(|c| !c.is_empty()) {
        if out.len() > start {
            out.push('/');
        }
        if comp == "." || comp == ".." {
            out.push('_');
            continue;
        }
        out.extend(comp.bytes().map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                b as char
            } else {
                '_'
            }
        }));
    }
    if out.len() == start {
        out.push('_');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Value};

    fn san(tag: &str) -> String {
        let mut s = String::new();
        sanitize_tag(tag, &mut s);
        s
    }

    #[test]
    fn tags_become_safe_relative_paths() {
        assert_eq!(san("app.log"), "app.log");
        assert_eq!(san("../../etc/passwd"), "_/_/etc/passwd");
        assert_eq!(san("/abs//x y\\z"), "abs/x_y/z");
        assert_eq!(san("é*"), "___");
        assert_eq!(san("//"), "_");
        assert_eq!(san(""), "_");
        assert_eq!(san("..."), "...");
    }

    #[test]
    fn unsafe_values_are_refused() {
        assert!(safe_path("/tmp/a/b"));
        assert!(!safe_path("/tmp/../b"));
        assert!(!safe_path("/tmp/./b"));
        assert!(!safe_path("/tmp/a\nb"));
        assert!(!safe_path(""));
        assert!(safe_file("a.log"));
        for f in [
            "", ".", "..", "a/b", "a\\b", "a:b", "a*", "a?", "a\"", "a<", "a>", "a|", "a\t",
        ] {
            assert!(!safe_file(f), "{f:?}");
        }
    }

    fn part(text: &str, strftime: bool) -> Part {
        Part {
            text: text.into(),
            accessor: text.contains('$').then(|| Template::parse(text).unwrap()),
            strftime: (strftime && text.contains('%')).then(|| CString::new(text).unwrap()),
        }
    }

    fn rec(body: Vec<(&str, Value)>) -> Record {
        // 2024-03-14T10:00:00Z
        Record::new(
            EventTime::new(1_710_410_400, 0),
            body.into_iter().map(|(k, v)| (Arc::from(k), v)).collect(),
        )
    }

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    #[test]
    fn accessors_strftime_actions_and_limits() {
        let mut d = Dynamic::new(
            Some(part("/out/%Y-%m-%d/$ns", true)),
            Some(part("$app.log", false)),
            Some("/out/fallback.log".into()),
            Action::Fallback,
            Action::Drop,
            2,
        );
        let mut out = String::new();
        let r = rec(vec![("ns", s("prod")), ("app", s("web"))]);
        assert_eq!(d.resolve("[p]", "t", &r, &mut out), Resolved::Write);
        assert_eq!(out, "/out/2024-03-14/prod/web.log");
        // Missing key: fallback, not counted.
        let r = rec(vec![("app", s("web"))]);
        assert_eq!(d.resolve("[p]", "t", &r, &mut out), Resolved::Write);
        assert_eq!(out, "/out/fallback.log");
        // Unsafe values take the missing-field action too.
        let r = rec(vec![("ns", s("..")), ("app", s("web"))]);
        assert_eq!(d.resolve("[p]", "t", &r, &mut out), Resolved::Write);
        assert_eq!(out, "/out/fallback.log");
        let r = rec(vec![("ns", s("a")), ("app", s("x/y"))]);
        assert_eq!(d.resolve("[p]", "t", &r, &mut out), Resolved::Write);
        assert_eq!(out, "/out/fallback.log");
        // A number is a value; the second distinct destination fills the limit.
        let r = rec(vec![("ns", Value::Int(7)), ("app", s("web"))]);
        assert_eq!(d.resolve("[p]", "t", &r, &mut out), Resolved::Write);
        assert_eq!(out, "/out/2024-03-14/7/web.log");
        let r = rec(vec![("ns", s("third")), ("app", s("web"))]);
        assert_eq!(d.resolve("[p]", "t", &r, &mut out), Resolved::Drop);
        // A known one is still written.
        let r = rec(vec![("ns", s("prod")), ("app", s("web"))]);
        assert_eq!(d.resolve("[p]", "t", &r, &mut out), Resolved::Write);
        assert_eq!(d.seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn errors_and_the_tag() {
        let mut d = Dynamic::new(
            Some(part("/out/$TAG[1]", false)),
            None,
            None,
            Action::Error,
            Action::Error,
            0,
        );
        let mut out = String::new();
        assert_eq!(
            d.resolve("[p]", "a.b/c", &rec(vec![]), &mut out),
            Resolved::Write
        );
        // `$TAG[1]` is `b/c`: a path may hold separators; the file is the sanitized tag.
        assert_eq!(out, "/out/b/c/a.b/c");
        let mut d = Dynamic::new(
            None,
            Some(part("$x", false)),
            None,
            Action::Error,
            Action::Error,
            0,
        );
        assert_eq!(
            d.resolve("[p]", "t", &rec(vec![]), &mut out),
            Resolved::Error("record accessor field missing from file".into())
        );
        let mut d = Dynamic::new(
            None,
            Some(part("%Y.log", true)),
            None,
            Action::Error,
            Action::Error,
            0,
        );
        assert_eq!(
            d.resolve("[p]", "t", &rec(vec![]), &mut out),
            Resolved::Write
        );
        assert_eq!(out, "2024.log");
    }
}
