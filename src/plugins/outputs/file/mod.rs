//! `file` output: records appended to files, one per tag by default, in Fluent Bit's
//! formats. Fluent Bit: plugins/out_file/file.c, file_rotate.c
//!
//! A flush formats the chunk into one reused buffer per destination, then opens each
//! file in append mode (creating missing directories with `mkdir`), writes it and
//! closes it again, as Fluent Bit does, so that a file moved away by logrotate is
//! recreated at the next flush. A file or directory that cannot be opened is a retry
//! of the whole chunk with the reason in the engine's one log line; nothing was
//! written, so nothing is duplicated (Fluent Bit drops the chunk).
//!
//! Split by concern: [`format`] renders records, [`destination`] resolves per-record
//! destinations (record accessors, strftime, limits), [`rotate`] rotates by size.

mod destination;
mod format;
mod rotate;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::Chunk;
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

use destination::{static_dest, Action, Dynamic, Part, Resolved};
use format::{FileFormat, Template};
use rotate::Rotation;

const FORMATS: &[&str] = &["out_file", "plain", "csv", "ltsv", "template", "msgpack"];
const ACTIONS: &[&str] = &["error", "drop", "fallback"];

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "path",
        PropKind::Str,
        None,
        "Directory of the files. Record accessors ($key, $TAG) make it per record; it \
         must then start with a static prefix. With enable_strftime, strftime \
         placeholders use the event time (UTC).",
    ),
    PropSpec::new(
        "file",
        PropKind::Str,
        None,
        "File name (under path if set); the tag by default. Record accessors and, with \
         enable_strftime, strftime placeholders are supported.",
    ),
    PropSpec::new(
        "enable_strftime",
        PropKind::Bool,
        Some("false"),
        "Expand strftime placeholders (%Y, %m, ...) in path and file with the event \
         time (UTC); off keeps a literal % as it is.",
    ),
    PropSpec::new(
        "max_dynamic_files",
        PropKind::Int,
        Some("1024"),
        "Maximum number of distinct per-record destinations; 0 for unlimited.",
    ),
    PropSpec::new(
        "on_missing_field",
        PropKind::Enum(ACTIONS),
        Some("error"),
        "When a record lacks a key of a dynamic path or file, or its value is unsafe: \
         error (the chunk fails), drop (the record) or fallback.",
    ),
    PropSpec::new(
        "on_limit_reached",
        PropKind::Enum(ACTIONS),
        Some("error"),
        "When max_dynamic_files would be exceeded: error, drop or fallback.",
    ),
    PropSpec::new(
        "fallback_path",
        PropKind::Str,
        None,
        "Directory used by the fallback action.",
    ),
    PropSpec::new(
        "fallback_file",
        PropKind::Str,
        None,
        "File used by the fallback action; required with a dynamic path or file.",
    ),
    PropSpec::new(
        "format",
        PropKind::Enum(FORMATS),
        None,
        "Output format: out_file (the default, 'tag: [time, {record}]'), plain (JSON), \
         csv, ltsv, template or msgpack.",
    ),
    PropSpec::new(
        "delimiter",
        PropKind::Str,
        None,
        "Field delimiter of csv and ltsv: '\\t' or tab, space, comma.",
    ),
    PropSpec::new(
        "label_delimiter",
        PropKind::Str,
        None,
        "Label delimiter of ltsv: '\\t' or tab, space, comma.",
    ),
    PropSpec::new(
        "template",
        PropKind::Str,
        Some("{time} {message}"),
        "Line of the template format: {time} is the event time, {key} a record value.",
    ),
    PropSpec::new(
        "csv_column_names",
        PropKind::Bool,
        Some("false"),
        "Write the keys as a header line before the records of each file write (csv).",
    ),
    PropSpec::new(
        "mkdir",
        PropKind::Bool,
        Some("false"),
        "Create the directory (recursively, mode 0755) if it does not exist.",
    ),
    PropSpec::new(
        "rotate",
        PropKind::Bool,
        Some("false"),
        "Rotate each file by size.",
    ),
    PropSpec::new(
        "rotate_max_size",
        PropKind::Size,
        Some("100M"),
        "Rotate a file once it has reached this size.",
    ),
    PropSpec::new(
        "rotate_max_files",
        PropKind::Int,
        Some("7"),
        "Number of rotated files to keep per file.",
    ),
    PropSpec::new(
        "rotate_gzip",
        PropKind::Bool,
        Some("true"),
        "Compress rotated files with gzip.",
    ),
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "file",
    description: "Generate log file",
    props: PROPS,
    workers: 1,
    net: false,
    build,
};

/// Where a flush goes.
enum Target {
    /// `path/file`, `path/<tag>`, `file` or `<tag>`: one destination per chunk.
    Static {
        path: Option<String>,
        file: Option<String>,
    },
    Dynamic(Box<Dynamic>),
}

/// One destination's records of the flush being written.
struct Pending {
    path: String,
    buf: Vec<u8>,
}

pub struct FileOutput {
    /// `[output:file:file.0]`, for log lines.
    prefix: Arc<str>,
    format: FileFormat,
    target: Target,
    mkdir: bool,
    /// Shared by the workers (sizes per destination).
    rotation: Option<Arc<Rotation>>,
    /// This flush's destinations, in order of first record; the buffers are kept for
    /// the next flush (`spare`), so a steady flow allocates nothing.
    pending: Vec<Pending>,
    index: HashMap<String, usize>,
    spare: Vec<Vec<u8>>,
    scratch: String,
}

/// `check_delimiter`: the words Fluent Bit knows.
fn delimiter(props: &Props, key: &str) -> Result<Option<&'static str>, ConfigError> {
    let Some(text) = props.str(key) else {
        return Ok(None);
    };
    match text.to_ascii_lowercase().as_str() {
        "\\t" | "tab" => Ok(Some("\t")),
        "space" => Ok(Some(" ")),
        "comma" => Ok(Some(",")),
        // Fluent Bit ignores any other value and keeps the format's default.
        _ => Err(props.error(key, "'\\t', tab, space or comma")),
    }
}

/// `path` or `file` as given: static, or with record accessors and/or strftime.
fn part(props: &Props, key: &str, strftime: bool) -> Result<Option<Part>, ConfigError> {
    let Some(text) = props.str(key) else {
        return Ok(None);
    };
    let accessor = if text.contains('$') {
        if key == "path" && text.starts_with('$') {
            return Err(props.error(
                key,
                "a path with a static prefix before record accessors (dynamic 'path' must \
                 include a static prefix before record accessors)",
            ));
        }
        Some(
            crate::event::template::Template::parse(text)
                .map_err(|e| props.error(key, format!("a valid record accessor pattern: {e}")))?,
        )
    } else {
        None
    };
    let strftime = if strftime && text.contains('%') {
        Some(CString::new(text).map_err(|_| props.error(key, "text without NUL bytes"))?)
    } else {
        None
    };
    Ok(Some(Part {
        text: text.to_string(),
        accessor,
        strftime,
    }))
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let prefix: Arc<str> = Arc::from(format!("[output:file:{}]", ctx.instance));
    let escape_unicode = ctx.service.escape_unicode;
    let format_name = props
        .str("format")
        .unwrap_or("out_file")
        .to_ascii_lowercase();
    let delim = delimiter(props, "delimiter")?;
    let label_delim = delimiter(props, "label_delimiter")?;
    let format = match format_name.as_str() {
        "plain" => FileFormat::Plain { escape_unicode },
        "csv" => FileFormat::Csv {
            delimiter: delim.unwrap_or(",").to_string(),
            column_names: props.bool("csv_column_names").unwrap_or(false),
        },
        "ltsv" => FileFormat::Ltsv {
            delimiter: delim.unwrap_or("\t").to_string(),
            label_delimiter: label_delim.unwrap_or(":").to_string(),
        },
        "template" => FileFormat::Template(Template::parse(
            props.str("template").unwrap_or("{time} {message}"),
        )),
        "msgpack" => FileFormat::Msgpack,
        _ => FileFormat::OutFile { escape_unicode },
    };
    for (key, used) in [
        (
            "delimiter",
            matches!(format, FileFormat::Csv { .. } | FileFormat::Ltsv { .. }),
        ),
        ("label_delimiter", matches!(format, FileFormat::Ltsv { .. })),
        ("csv_column_names", matches!(format, FileFormat::Csv { .. })),
        ("template", matches!(format, FileFormat::Template(_))),
    ] {
        if props.is_set(key) && !used {
            crate::warn!("{prefix} '{key}' has no effect with format {format_name}");
        }
    }

    let strftime = props.bool("enable_strftime").unwrap_or(false);
    let path = part(props, "path", strftime)?;
    let file = part(props, "file", strftime)?;
    let action = |key| Action::parse(props.str(key).unwrap_or("error")).unwrap_or(Action::Error);
    let (on_missing, on_limit) = (action("on_missing_field"), action("on_limit_reached"));
    let max_files = props.int("max_dynamic_files").unwrap_or(1024);
    let max_files =
        usize::try_from(max_files).map_err(|_| props.error("max_dynamic_files", "0 or more"))?;
    let fallback_file = props.str("fallback_file");
    if fallback_file.is_none() {
        for (key, a) in [
            ("on_missing_field", on_missing),
            ("on_limit_reached", on_limit),
        ] {
            if a == Action::Fallback {
                return Err(props.error(
                    key,
                    "error or drop, or set fallback_file (fallback_file is required for \
                     fallback actions)",
                ));
            }
        }
    }
    let dynamic =
        path.as_ref().is_some_and(Part::is_dynamic) || file.as_ref().is_some_and(Part::is_dynamic);
    let target = if dynamic {
        let Some(fallback_file) = fallback_file else {
            let key = if path.as_ref().is_some_and(Part::is_dynamic) {
                "path"
            } else {
                "file"
            };
            return Err(props.error(
                key,
                "a static value, or set fallback_file (fallback_file is required when \
                 dynamic destinations are configured)",
            ));
        };
        let fallback = match props.str("fallback_path") {
            Some(dir) => format!("{dir}/{fallback_file}"),
            None => fallback_file.to_string(),
        };
        Target::Dynamic(Box::new(Dynamic::new(
            path,
            file,
            Some(fallback),
            on_missing,
            on_limit,
            max_files,
        )))
    } else {
        Target::Static {
            path: path.map(|p| p.text),
            file: file.map(|f| f.text),
        }
    };

    let rotation = if props.bool("rotate").unwrap_or(false) {
        let max_size = props.size("rotate_max_size").unwrap_or(100_000_000);
        if max_size == 0 {
            return Err(props.error("rotate_max_size", "a size greater than zero"));
        }
        let max_files = props
            .int("rotate_max_files")
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| props.error("rotate_max_files", "1 or more"))?;
        let gzip = props.bool("rotate_gzip").unwrap_or(true);
        crate::info!(
            "{prefix} file rotation enabled: rotate_max_size={max_size}, \
             rotate_max_files={max_files}, rotate_gzip={gzip}"
        );
        Some(Arc::new(Rotation::new(
            max_size,
            max_files,
            gzip,
            prefix.to_string(),
        )))
    } else {
        None
    };

    Ok(Box::new(FileOutput {
        prefix,
        format,
        target,
        mkdir: props.bool("mkdir").unwrap_or(false),
        rotation,
        pending: Vec::new(),
        index: HashMap::new(),
        spare: Vec::new(),
        scratch: String::new(),
    }))
}

impl FileOutput {
    /// A new destination of this flush, with a buffer from the spares.
    fn push_pending(&mut self, path: &str) -> usize {
        let buf = self.spare.pop().unwrap_or_default();
        self.pending.push(Pending {
            path: path.to_string(),
            buf,
        });
        self.pending.len() - 1
    }

    /// Formats the chunk into `pending`. `Err` is the reason a dynamic destination
    /// failed the chunk; the records before it are in `pending` and are written all
    /// the same (Fluent Bit has written them by then).
    /// A metrics chunk in cmetrics' text form (what `stdout` prints for metrics),
    /// whatever `format`, to the static destination; with a dynamic one, to
    /// `fallback_path`/`fallback_file` (a set has no record to resolve it from).
    fn render_metrics(&mut self, chunk: &Chunk) -> Result<(), String> {
        let dest = match &self.target {
            Target::Static { path, file } => static_dest(path, file, &chunk.tag),
            Target::Dynamic(d) => d.fallback.clone().ok_or_else(|| {
                "dynamic path and file placeholders are unsupported for metrics (set fallback_file)"
                    .to_string()
            })?,
        };
        let i = self.push_pending(&dest);
        for set in &chunk.metrics {
            crate::event::format::write_metrics_text(&mut self.pending[i].buf, set);
        }
        Ok(())
    }

    fn render(&mut self, chunk: &Chunk) -> Result<(), String> {
        if !chunk.metrics.is_empty() {
            return self.render_metrics(chunk);
        }
        match &mut self.target {
            Target::Static { path, file } => {
                let dest = static_dest(path, file, &chunk.tag);
                let i = self.push_pending(&dest);
                let buf = &mut self.pending[i].buf;
                for (n, rec) in chunk.records.iter().enumerate() {
                    // Fluent Bit's `ftell` on a file just opened for append is 0, so
                    // the CSV header precedes every flush's first record.
                    self.format.write(buf, &chunk.tag, rec, n == 0);
                }
                Ok(())
            }
            Target::Dynamic(_) => {
                for rec in &chunk.records {
                    let Target::Dynamic(d) = &mut self.target else {
                        unreachable!("matched above")
                    };
                    match d.resolve(&self.prefix, &chunk.tag, rec, &mut self.scratch) {
                        Resolved::Write => {}
                        Resolved::Drop => continue,
                        Resolved::Error(e) => return Err(e),
                    }
                    let i = match self.index.get(self.scratch.as_str()) {
                        Some(&i) => i,
                        None => {
                            let path = std::mem::take(&mut self.scratch);
                            let i = self.push_pending(&path);
                            self.index.insert(path, i);
                            i
                        }
                    };
                    // Fluent Bit opens the file again for every record, and with it
                    // comes the CSV header.
                    self.format
                        .write(&mut self.pending[i].buf, &chunk.tag, rec, true);
                }
                Ok(())
            }
        }
    }

    /// Opens every pending destination (rotating first), then writes them. A failure
    /// to open means nothing was written.
    fn write_pending(&self) -> Result<(), String> {
        let mut files = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            if let Some(rot) = &self.rotation {
                rot.before_write(&p.path);
            }
            let f = open(&p.path, self.mkdir, &self.prefix)
                .map_err(|e| format!("error opening: {}: {e}", p.path))?;
            files.push(f);
        }
        for (p, mut f) in self.pending.iter().zip(files) {
            let written = f.write_all(&p.buf);
            drop(f);
            if let Some(rot) = &self.rotation {
                rot.after_write(&p.path);
            }
            written.map_err(|e| format!("error writing: {}: {e}", p.path))?;
        }
        Ok(())
    }
}

/// `fopen(path, "ab+")`, and with `mkdir` on a missing directory, `mkpath` (0755) then
/// a second try.
fn open(path: &str, mkdir: bool, prefix: &str) -> io::Result<File> {
    let open = || OpenOptions::new().append(true).create(true).open(path);
    match open() {
        Err(e) if mkdir && e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                crate::debug!("{prefix} creating directory {}", dir.display());
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)?;
            }
            open()
        }
        r => r,
    }
}

impl Output for FileOutput {
    /// Metric sets too, written in cmetrics' text form (Fluent Bit's file takes both).
    fn signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::LOGS_AND_METRICS
    }

    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            for mut p in self.pending.drain(..) {
                p.buf.clear();
                self.spare.push(p.buf);
            }
            self.index.clear();
            let rendered = self.render(chunk);
            // Disk writes block: let this worker's other tasks run elsewhere meanwhile.
            let written = crate::pipeline::engine::blocking(|| self.write_pending());
            match (written, rendered) {
                (Err(e), _) => FlushResult::Retry(e),
                (Ok(()), Err(e)) => FlushResult::Error(e),
                (Ok(()), Ok(())) => FlushResult::Ok,
            }
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(FileOutput {
            prefix: self.prefix.clone(),
            format: self.format.clone(),
            target: match &self.target {
                Target::Static { path, file } => Target::Static {
                    path: path.clone(),
                    file: file.clone(),
                },
                Target::Dynamic(d) => Target::Dynamic(Box::new(d.fork())),
            },
            mkdir: self.mkdir,
            rotation: self.rotation.clone(),
            pending: Vec::new(),
            index: HashMap::new(),
            spare: Vec::new(),
            scratch: String::new(),
        })
    }
}
