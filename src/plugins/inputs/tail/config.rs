//! `tail`'s property table and the validated settings built from it.
//! Fluent Bit: plugins/in_tail/tail.c (config_map), plugins/in_tail/tail_config.c

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, PropKind, PropSpec, Props};

#[rustfmt::skip]
pub(super) const PROPS: &[PropSpec] = &[
    PropSpec::new("path", PropKind::CList, None, "Comma-separated list of glob patterns of the files to read (required)."),
    PropSpec::new("exclude_path", PropKind::CList, None, "Comma-separated list of patterns of files to leave out; * also matches /."),
    PropSpec::new("key", PropKind::Str, Some("log"), "Name of the key that holds the line."),
    PropSpec::new("path_key", PropKind::Str, None, "When set, add the file's name under this key."),
    PropSpec::new("offset_key", PropKind::Str, None, "When set, add the byte offset of the line's start under this key."),
    PropSpec::new("read_from_head", PropKind::Bool, Some("false"), "Read files found at start-up (and not in the db) from their start instead of their end."),
    PropSpec::new("read_newly_discovered_files_from_head", PropKind::Bool, Some("true"), "Read files that appear after start-up from their start."),
    PropSpec::new("refresh_interval", PropKind::Time, Some("60"), "How often the patterns are expanded again to find new files."),
    PropSpec::new("rotate_wait", PropKind::Time, Some("5"), "How long a rotated file stays open once read to its end, for late writes."),
    PropSpec::new("watcher_interval", PropKind::Time, Some("2s"), "How often every file is checked for rotation, truncation and deletion."),
    PropSpec::new("buffer_chunk_size", PropKind::Size, Some("32768"), "Read size per file; agent reads at least 128 KiB at a time.").range(1, 1 << 30),
    PropSpec::new("buffer_max_size", PropKind::Size, Some("32768"), "Longest line; longer lines follow skip_long_lines and truncate_long_lines.").range(1, 1 << 30),
    PropSpec::new("skip_long_lines", PropKind::Bool, Some("false"), "Skip lines longer than buffer_max_size (else reading the file stops at such a line)."),
    PropSpec::new("truncate_long_lines", PropKind::Bool, Some("false"), "Emit the first buffer_max_size bytes of a longer line and skip the rest."),
    PropSpec::new("skip_empty_lines", PropKind::Bool, Some("false"), "Do not emit empty lines."),
    PropSpec::new("ignore_older", PropKind::Time, Some("0"), "Leave out files last modified longer ago than this; 0 keeps every file."),
    PropSpec::new("db", PropKind::Str, None, "File where read offsets are kept across restarts (agent's own crash-safe format)."),
    PropSpec::new("db.sync", PropKind::Enum(&["extra", "full", "normal", "off"]), Some("normal"), "off: no fsync; normal: fsync the db before replacing it; full/extra: also fsync its directory."),
    PropSpec::new("db.locking", PropKind::Bool, Some("false"), "Hold an exclusive lock on the db so that no other process uses it."),
    PropSpec::new("db.journal_mode", PropKind::Enum(&["delete", "truncate", "persist", "memory", "wal", "off"]), Some("wal"), "SQLite journal mode in Fluent Bit; accepted with a warning, agent's db is always replaced atomically."),
    PropSpec::new("db.compare_filename", PropKind::Bool, Some("false"), "Match a db entry by inode and file name instead of inode only."),
    PropSpec::new("inotify_watcher", PropKind::Bool, Some("true"), "Watch files with inotify; false polls them every 250ms."),
    PropSpec::new("exit_on_eof", PropKind::Bool, Some("false"), "Stop the agent (exit status 0) once every file is read to its end."),
    PropSpec::new("limit_per_file", PropKind::Quantity, None, "Lines per second forwarded per file (per container): 100, 1k, 500m; over it lines are dropped (counted); 0 = files are not read at all."),
    PropSpec::new("parser", PropKind::Str, None, "Name of a [PARSER] applied to each line; a line it does not match is kept as it is, under 'key'."),
    PropSpec::new("tag_regex", PropKind::Str, None, "Regex with named groups matched against the file's path; <name> in the tag is replaced by the group's text (e.g. kube.<namespace_name>.<pod_name>)."),
    PropSpec::new("docker_mode", PropKind::Bool, Some("false"), "Join Docker JSON log lines that were split at 16 KiB (a 'log' without a trailing newline) before any parser."),
    PropSpec::new("docker_mode_flush", PropKind::Int, Some("4"), "Seconds to wait for the rest of a split Docker line before emitting what is held."),
    PropSpec::new("docker_mode_parser", PropKind::Str, None, "Name of a [PARSER] matching the first line of a multiline Docker message (docker_mode)."),
    PropSpec::new("multiline", PropKind::Bool, Some("false"), "Old-style multiline: join lines from one matching parser_firstline to the next (use multiline.parser instead where possible)."),
    PropSpec::new("multiline_flush", PropKind::Time, Some("4"), "Old-style multiline: how long to wait for more lines of a message before emitting it."),
    PropSpec::new("parser_firstline", PropKind::Str, None, "Old-style multiline: name of the [PARSER] whose regex matches the first line of a message."),
    PropSpec::new("parser_", PropKind::Prefix, None, "Old-style multiline: parser_1, parser_2, ... name extra parsers tried on the other lines of a message."),
    PropSpec::new("multiline.parser", PropKind::Multi, None, "Comma-separated multiline parsers tried in order (docker, cri, go, python, java, ruby or a [MULTILINE_PARSER]); repeatable."),
    PropSpec::new("multiline.key_content", PropKind::Str, None, "Key whose text the multiline parsers join, overriding each parser's key_content."),
    PropSpec::new("unicode.encoding", PropKind::Str, None, "Not supported yet."),
    PropSpec::new("generic.encoding", PropKind::Str, None, "Not supported yet."),
    PropSpec::new("static_batch_size", PropKind::Str, None, "Not supported yet."),
    PropSpec::new("event_batch_size", PropKind::Str, None, "Not supported yet."),
    PropSpec::new("progress_check_interval", PropKind::Time, Some("2s"), "How often files are checked for data that no inotify event announced (the check also runs every watcher_interval)."),
    PropSpec::new("progress_check_interval_nsec", PropKind::Str, None, "Not supported yet."),
    PropSpec::new("ignore_active_older_files", PropKind::Str, None, "Not supported yet."),
    PropSpec::new("file_cache_advise", PropKind::Str, None, "Not supported yet."),
];

/// Reads are at least this large, whatever `buffer_chunk_size` says: fewer syscalls
/// (`../shared/spec/performance.md` B2) at the cost of 128 KiB per open file.
pub(super) const MIN_READ: usize = 128 * 1024;

/// What to do with a line longer than `buffer_max_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongLines {
    /// Stop reading the file at that line, its offset kept (Fluent Bit drops the file).
    Stop,
    Skip,
    Truncate,
}

/// How a file's lines are joined into records (Fluent Bit tries them in this order).
#[derive(Clone, Debug, Default)]
pub enum Joiner {
    /// Each line is a record.
    #[default]
    Lines,
    /// `multiline.parser`: multiline parsers tried in order, `multiline.key_content`.
    Multiline(
        Vec<Arc<crate::parser::multiline::MlParser>>,
        Option<Arc<str>>,
    ),
    /// `docker_mode`: split Docker lines joined, flushed after `docker_mode_flush`,
    /// `docker_mode_parser` matching a first line.
    Docker(Duration, Option<Arc<crate::parser::Parser>>),
    /// `multiline on`: `parser_firstline`, `parser_N`s, `multiline_flush`.
    Legacy(
        Arc<crate::parser::Parser>,
        Vec<Arc<crate::parser::Parser>>,
        Duration,
    ),
}

pub use crate::plugins::inputs::state_file::DbSync;

/// The `db` settings.
#[derive(Clone, Debug)]
pub struct DbConfig {
    pub path: PathBuf,
    pub sync: DbSync,
    pub locking: bool,
    pub compare_filename: bool,
}

/// Validated settings of one `tail` instance.
#[derive(Debug)]
pub struct TailConfig {
    pub paths: Vec<String>,
    pub exclude: Vec<glob::Pattern>,
    pub key: Arc<str>,
    pub path_key: Option<Arc<str>>,
    pub offset_key: Option<Arc<str>>,
    pub read_from_head: bool,
    pub read_new_from_head: bool,
    pub refresh_interval: Duration,
    pub rotate_wait: Duration,
    pub watcher_interval: Duration,
    pub read_size: usize,
    pub max_line: usize,
    pub long_lines: LongLines,
    pub skip_empty_lines: bool,
    /// `None`: every file, whatever its age.
    pub ignore_older: Option<Duration>,
    pub db: Option<DbConfig>,
    pub inotify: bool,
    pub exit_on_eof: bool,
    /// `mem_buf_limit`: bytes read and not yet delivered above which reading pauses.
    pub mem_buf_limit: Option<u64>,
    /// `limit_per_file`: a token bucket per file; `Some(0.0)` rate = read nothing.
    pub limit_per_file: Option<(f64, crate::plugins::filters::ratelimit::Quota)>,
    /// Tags a `limit` of 0 drops entirely: such files are never opened.
    pub never_read: Vec<crate::pipeline::router::Matcher>,
    /// `parser`: applied to each line (or to what docker_mode joined).
    pub parser: Option<Arc<crate::parser::Parser>>,
    /// How lines are joined into records before that.
    pub joiner: Joiner,
    /// `[SERVICE] multiline_buffer_limit`.
    pub ml_buffer_limit: usize,
    /// `agent_tail_multiline_truncated_total`.
    pub ml_truncated: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `tag_regex`: named groups of the path fill `<name>`s of the tag.
    pub tag_regex: Option<crate::parser::regex::OnigRegex>,
    /// `agent_tail_limit_dropped_records_total`: lines dropped by `limit_per_file`.
    pub limit_dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

const UNSUPPORTED: &[&str] = &[
    "unicode.encoding",
    "generic.encoding",
    "static_batch_size",
    "event_batch_size",
    "progress_check_interval_nsec",
    "ignore_active_older_files",
    "file_cache_advise",
];

fn positive(props: &Props, name: &str) -> Result<Duration, ConfigError> {
    let d = props.time(name).unwrap_or_default();
    if d.is_zero() {
        return Err(props.error(name, "a duration greater than 0"));
    }
    Ok(d)
}

fn optional_key(props: &Props, name: &str) -> Option<Arc<str>> {
    props.str(name).map(Arc::from)
}

impl TailConfig {
    pub fn from_props(props: &Props) -> Result<TailConfig, ConfigError> {
        if let Some(name) = UNSUPPORTED.iter().find(|n| props.is_set(n)) {
            return Err(ConfigError::Invalid {
                span: props.span_of(name).clone(),
                message: format!("[config] tail: property '{name}' is not supported yet by agent"),
                hint: Some(format!(
                    "remove '{name}': agent's tail emits each line as it is, under 'key'"
                )),
            });
        }
        let paths = props.clist("path");
        if paths.is_empty() {
            return Err(ConfigError::Invalid {
                span: props.span().clone(),
                message: "[config] tail: no input 'path' was given".into(),
                hint: Some("add 'path /var/log/*.log' (a comma-separated list of globs)".into()),
            });
        }
        for p in &paths {
            glob::Pattern::new(p)
                .map_err(|e| props.error("path", format!("valid glob patterns ({e})")))?;
        }
        let exclude = props
            .clist("exclude_path")
            .iter()
            .map(|p| glob::Pattern::new(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| props.error("exclude_path", format!("valid glob patterns ({e})")))?;
        let chunk = props.size("buffer_chunk_size").unwrap_or(0);
        let max = props.size("buffer_max_size").unwrap_or(0);
        if chunk == 0 {
            return Err(props.error("buffer_chunk_size", "a size greater than 0"));
        }
        if max < chunk {
            return Err(props.error(
                "buffer_max_size",
                format!("a size of at least buffer_chunk_size ({chunk})"),
            ));
        }
        let long_lines = if props.bool("truncate_long_lines").unwrap_or(false) {
            LongLines::Truncate
        } else if props.bool("skip_long_lines").unwrap_or(false) {
            LongLines::Skip
        } else {
            LongLines::Stop
        };
        let db = match props.str("db") {
            None => None,
            Some(path) => {
                if props.is_set("db.journal_mode") {
                    crate::warn!(
                        "{}: [config] tail: 'db.journal_mode' has no effect: agent replaces its db atomically",
                        props.span_of("db.journal_mode")
                    );
                }
                Some(DbConfig {
                    path: PathBuf::from(path),
                    sync: DbSync::parse(props.str("db.sync").unwrap_or("normal"))
                        .unwrap_or(DbSync::Full),
                    locking: props.bool("db.locking").unwrap_or(false),
                    compare_filename: props.bool("db.compare_filename").unwrap_or(false),
                })
            }
        };
        let ignore_older = props.time("ignore_older").filter(|d| !d.is_zero());
        Ok(TailConfig {
            paths,
            exclude,
            key: optional_key(props, "key").unwrap_or_else(|| Arc::from("log")),
            path_key: optional_key(props, "path_key"),
            offset_key: optional_key(props, "offset_key"),
            read_from_head: props.bool("read_from_head").unwrap_or(false),
            read_new_from_head: props
                .bool("read_newly_discovered_files_from_head")
                .unwrap_or(true),
            refresh_interval: positive(props, "refresh_interval")?,
            rotate_wait: positive(props, "rotate_wait")?,
            watcher_interval: positive(props, "watcher_interval")?
                .min(positive(props, "progress_check_interval")?),
            read_size: (chunk as usize).max(MIN_READ),
            max_line: usize::try_from(max).unwrap_or(usize::MAX),
            long_lines,
            skip_empty_lines: props.bool("skip_empty_lines").unwrap_or(false),
            ignore_older,
            db,
            inotify: props.bool("inotify_watcher").unwrap_or(true),
            exit_on_eof: props.bool("exit_on_eof").unwrap_or(false),
            limit_per_file: props.quantity("limit_per_file").map(|rate| {
                (
                    rate,
                    crate::plugins::filters::ratelimit::Quota::new(
                        rate,
                        crate::plugins::filters::ratelimit::Quota::default_burst(rate),
                    ),
                )
            }),
            never_read: Vec::new(),
            parser: None,
            joiner: Joiner::Lines,
            ml_buffer_limit: 2_000_000,
            ml_truncated: Default::default(),
            tag_regex: match props.str("tag_regex") {
                None => None,
                Some(r) => Some(crate::parser::regex::OnigRegex::new(r).map_err(|e| {
                    props.error("tag_regex", format!("a regular expression ({e})"))
                })?),
            },
            limit_dropped: Default::default(),
            // Set by the user only: unset, tail's own window applies (the table's
            // default is the engine's byte bound for inputs).
            mem_buf_limit: props
                .is_set("mem_buf_limit")
                .then(|| props.size("mem_buf_limit"))
                .flatten()
                .filter(|&l| l > 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Entry, PluginKind, Span};
    use crate::pipeline::{CORE_COMMON_PROPS, CORE_INPUT_PROPS};

    fn config(entries: &[(&str, &str)]) -> Result<TailConfig, ConfigError> {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Entry {
                key: k.to_string(),
                value: v.to_string(),
                span: Span::new("t.conf", i as u32 + 2),
            })
            .collect();
        let props = Props::new(
            PluginKind::Input,
            "tail",
            Span::new("t.conf", 1),
            PROPS,
            &[CORE_COMMON_PROPS, CORE_INPUT_PROPS],
            entries,
        )?;
        TailConfig::from_props(&props)
    }

    #[test]
    fn defaults_are_fluent_bits() {
        let c = config(&[("path", "/var/log/*.log, /tmp/x")]).unwrap();
        assert_eq!(c.paths, ["/var/log/*.log", "/tmp/x"]);
        assert_eq!(&*c.key, "log");
        assert_eq!((c.path_key.is_none(), c.offset_key.is_none()), (true, true));
        assert!(!c.read_from_head && c.read_new_from_head);
        assert_eq!(c.refresh_interval, Duration::from_secs(60));
        assert_eq!(c.rotate_wait, Duration::from_secs(5));
        assert_eq!(c.watcher_interval, Duration::from_secs(2));
        assert_eq!((c.read_size, c.max_line), (MIN_READ, 32768));
        assert_eq!(c.long_lines, LongLines::Stop);
        assert!(c.db.is_none() && c.inotify && !c.exit_on_eof);
        assert_eq!((c.ignore_older, c.mem_buf_limit), (None, None));
    }

    #[test]
    fn options() {
        let c = config(&[
            ("path", "/x"),
            ("buffer_chunk_size", "1M"),
            ("buffer_max_size", "2M"),
            ("skip_long_lines", "on"),
            ("db", "/tmp/t.db"),
            ("db.sync", "FULL"),
            ("mem_buf_limit", "5M"),
        ])
        .unwrap();
        assert_eq!((c.read_size, c.max_line), (1_000_000, 2_000_000));
        assert_eq!(c.long_lines, LongLines::Skip);
        assert_eq!(c.db.unwrap().sync, DbSync::Full);
        assert_eq!(c.mem_buf_limit, Some(5_000_000));
        let both = [
            ("path", "/x"),
            ("skip_long_lines", "on"),
            ("truncate_long_lines", "on"),
        ];
        assert_eq!(config(&both).unwrap().long_lines, LongLines::Truncate);
    }

    #[test]
    fn errors_name_the_property() {
        let err = |e: &[(&str, &str)]| config(e).err().unwrap().to_string();
        assert_eq!(
            err(&[("path", "/x"), ("unicode.encoding", "utf-16le")]),
            "t.conf:3: [config] tail: property 'unicode.encoding' is not supported yet by agent"
        );
        assert_eq!(
            err(&[("key", "msg")]),
            "t.conf:1: [config] tail: no input 'path' was given"
        );
        assert_eq!(
            err(&[("path", "/x"), ("buffer_chunk_size", "64k"), ("buffer_max_size", "32k")]),
            "t.conf:4: [config] tail: invalid value '32k' for property 'buffer_max_size': expected a size of at least buffer_chunk_size (64000)"
        );
        assert_eq!(
            err(&[("path", "/x"), ("rotate_wait", "0")]),
            "t.conf:3: [config] tail: invalid value '0' for property 'rotate_wait': expected a duration greater than 0"
        );
        assert!(err(&[("path", "/x["), ("key", "k")]).contains("valid glob patterns"));
    }
}
