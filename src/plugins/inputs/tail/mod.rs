//! `tail` input: follows files named by glob patterns and emits one record per line,
//! `{path_key?, offset_key?, key: "<line>"}`, tagged per file (`*` in `Tag` expands to
//! the file's path). Fluent Bit: plugins/in_tail/
//!
//! What it keeps from Fluent Bit: the properties, the record layout, `\n` lines with a
//! trailing `\r` removed, the unterminated last line held until its newline, rotation
//! by rename (the old file is read to its end, the new one from its start),
//! copytruncate (a file smaller than what was read is read again from 0), deleted
//! files read to their end, symlinks followed.
//!
//! What it does not lose, unlike Fluent Bit:
//! - offsets reach the `db` only once every output is done with the lines before them
//!   (Fluent Bit saves them when lines enter its buffer), so a crash re-reads what was
//!   in flight instead of skipping it;
//! - a rotated file is closed only once read to its end and quiet for `rotate_wait`,
//!   never while the agent is behind;
//! - a saved offset applies to an inode only if the file's first bytes still match the
//!   fingerprint saved with it (inode reuse reads the new file from its start);
//! - a file that replaced a db entry's path while the agent was stopped is read from
//!   its start, whatever `read_from_head` says, and the db entry's own file, rotated
//!   to a name outside the patterns meanwhile, is found by inode in its directory and
//!   read from its saved offset to its end (Fluent Bit drops that entry);
//! - a file created and renamed out of the patterns before any scan saw it (rotation
//!   faster than discovery) is found through the directory's rename event and read
//!   from its start (inotify only; polling cannot see it);
//! - a line longer than `buffer_max_size`, with neither `skip_long_lines` nor
//!   `truncate_long_lines`, stops that file at the line (its offset kept: raise the
//!   limit and restart) instead of dropping the rest of the file.
//!
//! Lines that are not valid UTF-8 are kept byte for byte as binary values (msgpack
//! `bin`); JSON outputs print them the way Fluent Bit prints invalid bytes.
//!
//! I/O: reads of at least 128 KiB at a time into a per-file buffer, lines found with
//! `memchr` and handed out as slices (one allocation per line, for its value), one
//! `fstat` per read to catch truncation, inotify to wake up (polling every 250ms with
//! `inotify_watcher false`), and a check of every file each `watcher_interval`.
//! Sends wait while the pipeline is full, and reading pauses while more than
//! `mem_buf_limit` bytes (16 MiB when unset) are read and not delivered, so memory stays
//! bounded.

mod config;
mod db;
mod file;
mod scan;
mod watch;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::{ConfigError, Props};
use crate::event::{EventTime, Map, Record, Tag, Value};
use crate::parser::multiline::{MlRecord, MlStream};
use crate::pipeline::AckFn;
use crate::plugins::filters::ratelimit::{KeyBy, KeyedLimiter};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};
use config::{Joiner, TailConfig};
use db::{Db, Row};
use file::{Change, Fingerprint, Inflight, Lifecycle, LineBuf, Observed, FINGERPRINT_LEN};
use watch::{Event, InotifyWatcher};

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "tail",
    description: "Tail files",
    props: config::PROPS,
    net: false,
    upstream: false,
    build,
};

/// Fluent Bit's stat watcher period (`inotify_watcher false`).
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes read and not delivered above which reading pauses when `mem_buf_limit` is not
/// set. The pipeline's queues bound records by count, so long lines across many files
/// could otherwise hold gigabytes; at 200-byte lines the queues fill well before this.
const DEFAULT_INFLIGHT: u64 = 16 << 20;
/// Delivered offsets are written at most this often (and at exit): a crash re-reads at
/// most this much more than what was in flight.
const DB_SAVE_INTERVAL: Duration = Duration::from_secs(1);

struct TailInput {
    config: TailConfig,
    /// `exit_on_eof` stops the whole agent, as Fluent Bit's `flb_engine_exit`.
    exit: crate::pipeline::shutdown::ExitRequest,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let mut config = TailConfig::from_props(props)?;
    config.parser = ctx.parser(props, "parser")?;
    config.joiner = joiner(props, ctx)?;
    config.ml_buffer_limit = ctx.service.multiline_buffer_limit;
    config.ml_truncated = ctx.metrics.counter(
        "agent_tail_multiline_truncated_total",
        "Multiline records cut at multiline_buffer_limit.",
        ctx.instance,
    );
    config.never_read = ctx.dropped_tags.to_vec();
    config.limit_dropped = ctx.metrics.counter(
        "agent_tail_limit_dropped_records_total",
        "Lines dropped by the tail input's limit_per_file.",
        ctx.instance,
    );
    // The db is opened (and locked) when the input starts, not here: --dry-run must not
    // create or lock anything.
    Ok(Box::new(TailInput {
        config,
        exit: ctx.exit.clone(),
    }))
}

/// How lines are joined, from `multiline.parser`, `docker_mode` or `multiline on`
/// (Fluent Bit uses the first of these that is set).
fn joiner(props: &Props, ctx: &BuildContext) -> Result<config::Joiner, ConfigError> {
    let names: Vec<&str> = props
        .multi("multiline.parser")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if !names.is_empty() {
        let parsers = names
            .iter()
            .map(|n| ctx.multiline_named(props, "multiline.parser", n))
            .collect::<Result<Vec<_>, _>>()?;
        let key = props.str("multiline.key_content").map(Arc::from);
        return Ok(config::Joiner::Multiline(parsers, key));
    }
    if props.bool("docker_mode") == Some(true) {
        let secs = props.int("docker_mode_flush").unwrap_or(4);
        if secs <= 0 {
            return Err(props.error("docker_mode_flush", "a number of seconds greater than 0"));
        }
        let first = ctx.parser(props, "docker_mode_parser")?;
        return Ok(config::Joiner::Docker(
            Duration::from_secs(secs as u64),
            first,
        ));
    }
    if props.bool("multiline") == Some(true) {
        let Some(first) = ctx.parser(props, "parser_firstline")? else {
            return Err(ConfigError::invalid(
                props.span_of("multiline"),
                "[config] tail: 'multiline on' needs 'parser_firstline'",
                Some("add 'parser_firstline <a [PARSER] whose regex matches the first line of a message>', or use 'multiline.parser'".into()),
            ));
        };
        let mut extra = props.prefixed("parser_");
        // parser_1, parser_2, ... in their number's order, as Fluent Bit sorts them.
        extra.sort_by_key(|(k, _)| k["parser_".len()..].parse::<u64>().unwrap_or(u64::MAX));
        let extra = extra
            .into_iter()
            .filter(|(k, _)| *k != "parser_firstline")
            .map(|(k, v)| ctx.parser_named(props, k, v))
            .collect::<Result<Vec<_>, _>>()?;
        let flush = props
            .time("multiline_flush")
            .unwrap_or(Duration::from_secs(4));
        return Ok(config::Joiner::Legacy(first, extra, flush));
    }
    Ok(config::Joiner::Lines)
}

impl Input for TailInput {
    fn run(self: Box<Self>, ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let TailInput { config, exit } = *self;
            let (db, saved) = match config.db.clone().map(Db::open).transpose() {
                Ok(Some((db, rows))) => (Some(db), rows),
                Ok(None) => (None, Vec::new()),
                Err(e) => return Err(PluginError::Other(format!("db {e}"))),
            };
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            let watcher = if config.inotify {
                match InotifyWatcher::new() {
                    Ok(w) => Some(w),
                    Err(e) => {
                        crate::warn!(
                            "[input:tail:{}] inotify is not available ({e}): polling files every 250ms",
                            ctx.name
                        );
                        None
                    }
                }
            } else {
                None
            };
            let tail = Tail {
                exit,
                name: ctx.name.clone(),
                tag: ctx.tag.clone(),
                config,
                db,
                saved,
                files: BTreeMap::new(),
                next_id: 0,
                ack_tx: Some(ack_tx),
                watcher,
                watched_dirs: HashSet::new(),
                rotated_paths: HashSet::new(),
                db_dirty: false,
                db_failing: false,
                inflight_bytes: 0,
                paused: false,
                pause_logged: false,
                rescan: false,
                never_read: HashSet::new(),
            };
            tail.run(ctx, ack_rx).await
        })
    }
}

/// Batch `seq` of file `file` is finished with by every output.
struct Ack {
    file: u64,
    seq: u64,
}

/// One followed file.
struct TailFile {
    /// Where it was found (its new name after a rotation that stays inside `path`).
    path: PathBuf,
    /// `path` as a record value, for `path_key`.
    name: Value,
    tag: Tag,
    /// The open file; `None` once closed while some of its batches are in flight.
    file: Option<File>,
    ino: u64,
    lines: LineBuf,
    inflight: Inflight,
    state: Lifecycle,
    /// The last read found nothing new; an event or a check clears it.
    at_eof: bool,
    /// Reading stopped at a line longer than `buffer_max_size` (no skip or truncate).
    stalled: bool,
    warned_long: bool,
    /// The first bytes changed under us: read again from 0 (copytruncate that grew
    /// back past our offset before we saw it smaller).
    rewritten: bool,
    last_data: Instant,
    fingerprint: Fingerprint,
    /// `limit_per_file`: this file's token bucket.
    limit: Option<KeyedLimiter>,
    /// Lines held until their multiline record is complete (`multiline.parser`,
    /// `docker_mode`, `multiline on`).
    ml: Option<MlStream>,
}

/// Lines of one file ready to send, covering the file up to `end`.
struct Batch {
    file: u64,
    tag: Tag,
    records: Vec<Record>,
    end: u64,
    bytes: u64,
    /// Already in the file's in-flight list (a batch sent across a truncation).
    seq: Option<u64>,
}

struct Tail {
    exit: crate::pipeline::shutdown::ExitRequest,
    /// `tail.0`, for logs.
    name: Arc<str>,
    /// The configured tag (may contain `*`).
    tag: Tag,
    config: TailConfig,
    db: Option<Db>,
    /// Rows read from the db at start, matched by the first scan, then dropped.
    saved: Vec<Row>,
    files: BTreeMap<u64, TailFile>,
    next_id: u64,
    /// Cloned into every batch's ack; dropped at exit so that the receiver ends once
    /// every batch is acked or dropped by the pipeline.
    ack_tx: Option<mpsc::UnboundedSender<Ack>>,
    /// `None`: polling.
    watcher: Option<InotifyWatcher>,
    watched_dirs: HashSet<PathBuf>,
    /// Paths whose file was rotated away: a new file there is read from its start.
    rotated_paths: HashSet<PathBuf>,
    db_dirty: bool,
    /// A db save failed and was logged; logged again only after a success.
    db_failing: bool,
    /// Bytes of every file sent and not yet acked (what `mem_buf_limit` bounds).
    inflight_bytes: u64,
    /// Reading is paused by `mem_buf_limit`.
    paused: bool,
    pause_logged: bool,
    rescan: bool,
    /// Files not read because a limit of 0 applies to them (logged once each).
    never_read: HashSet<PathBuf>,
}

/// What woke the idle loop.
enum Wake {
    Shutdown,
    Ack(Option<Ack>),
    Events(io::Result<()>),
    Timer,
}

/// How a file was found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Discovery<'a> {
    /// By the first scan.
    Startup,
    /// By a later scan.
    Later,
    /// Renamed from this path, matched by `path`, to one that is not, before any scan
    /// saw it, or while the agent was stopped.
    RotatedAway(&'a Path),
}

/// Why the loop ended.
#[derive(PartialEq, Eq)]
enum Stop {
    Shutdown,
    Eof,
}

/// The first `len` bytes of `file` (fewer if it is shorter).
fn read_head(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Whether a file's held multiline lines may be flushed by their timeout: only once
/// the file is read to its end (or closed). While it has unread bytes (reading paused by
/// `mem_buf_limit`, or simply not read yet) the rest of the record is most likely in
/// them; Fluent Bit's periodic flush would cut the record in two there.
fn ml_may_flush(f: &TailFile) -> bool {
    f.at_eof || f.file.is_none() || f.stalled
}

/// Where a file's committed offset may go: what is consumed, but not past the first
/// line its multiline parser still holds (that line is read again after a crash).
fn held_end(f: &TailFile) -> u64 {
    let consumed = f.lines.consumed();
    match f.ml.as_ref().and_then(MlStream::pending_from) {
        Some(p) => p.min(consumed),
        None => consumed,
    }
}

/// A line as a record: parsed by `parser` (its keys, then `path_key` and
/// `offset_key`), or as it is under `key` (after `path_key` and `offset_key`) when there
/// is no parser or the line does not match, as Fluent Bit's tail packs them.
fn line_record(c: &TailConfig, name: &Value, offset: u64, bytes: &[u8], time: EventTime) -> Record {
    if let Some(p) = &c.parser {
        let mut body = Vec::with_capacity(8);
        if let Ok(t) = p.parse(bytes, &mut body) {
            push_file_keys(c, name, offset, &mut body);
            return Record::new(t.unwrap_or(time), body);
        }
    }
    let mut body = Vec::with_capacity(3);
    push_file_keys(c, name, offset, &mut body);
    body.push((c.key.clone(), line_value(bytes)));
    Record::new(time, body)
}

/// A record joined by the multiline stream. docker_mode joins text (one `key`) that
/// `parser` then reads as a line; the others give the record's keys, to which
/// `path_key` and `offset_key` (the end of its last line, as Fluent Bit reports it) are
/// added.
fn joined_record(c: &TailConfig, name: &Value, r: MlRecord) -> Record {
    if let Joiner::Docker(..) = c.joiner {
        if let [(k, Value::Str(text))] = r.body.as_slice() {
            if *k == c.key {
                return line_record(c, name, r.first, text.as_bytes(), r.time);
            }
        }
    }
    if r.truncated {
        if c.ml_truncated.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            crate::warn!("[input:tail] multiline message truncated due to buffer limit (multiline_buffer_limit in [SERVICE]); counted in agent_tail_multiline_truncated_total");
        }
        crate::pipeline::metrics::add(&c.ml_truncated, 1);
    }
    let mut body = r.body;
    push_file_keys(c, name, r.end, &mut body);
    Record {
        time: r.time,
        metadata: r.metadata,
        body,
    }
}

fn push_file_keys(c: &TailConfig, name: &Value, offset: u64, body: &mut Map) {
    if let Some(k) = &c.path_key {
        body.push((k.clone(), name.clone()));
    }
    if let Some(k) = &c.offset_key {
        body.push((k.clone(), Value::UInt(offset)));
    }
}

fn line_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::Str(Arc::from(s)),
        Err(_) => Value::Bin(Arc::from(bytes)),
    }
}

impl Tail {
    async fn run(
        mut self,
        mut ctx: InputContext,
        mut ack_rx: mpsc::UnboundedReceiver<Ack>,
    ) -> Result<(), PluginError> {
        let now = Instant::now();
        for dir in scan::pattern_dirs(&self.config.paths) {
            self.watch_dir(&dir);
        }
        self.scan(now, true);
        self.find_rotated_while_stopped(now);
        self.saved.clear();
        let check_every = self.config.watcher_interval;
        let mut next_refresh = now + self.config.refresh_interval;
        let mut next_check = now + check_every;
        let mut next_poll = now + POLL_INTERVAL;
        let mut next_save = now + DB_SAVE_INTERVAL;
        let mut events = Vec::new();
        let stop = 'run: loop {
            while let Ok(a) = ack_rx.try_recv() {
                self.ack(a);
            }
            if let Some(w) = &mut self.watcher {
                if let Err(e) = w.try_events(&mut events) {
                    crate::error!("[input:tail:{}] inotify: {e}", self.name);
                }
            }
            let now = Instant::now();
            self.apply(&mut events, now);
            if now >= next_refresh {
                self.rescan = true;
                next_refresh = now + self.config.refresh_interval;
            }
            if now >= next_check {
                self.check_all(now, true);
                next_check = now + check_every;
            }
            if self.watcher.is_none() && now >= next_poll {
                self.check_all(now, false);
                next_poll = now + POLL_INTERVAL;
            }
            if self.rescan {
                self.rescan = false;
                self.scan(now, false);
            }
            if now >= next_save {
                self.save_db();
                next_save = now + DB_SAVE_INTERVAL;
            }

            let mut progressed = false;
            for batch in self.ml_expired(now) {
                if !self.send(&mut ctx, batch).await {
                    break 'run Stop::Shutdown;
                }
            }
            for batch in self.close_done(now) {
                progressed = true;
                if !self.send(&mut ctx, batch).await {
                    break 'run Stop::Shutdown;
                }
            }
            let ids: Vec<u64> = self.files.keys().copied().collect();
            for id in ids {
                if ctx.shutdown.is_set() {
                    break 'run Stop::Shutdown;
                }
                if !self.may_read() {
                    break;
                }
                let (read, batch) = self.read_file(id, now);
                progressed |= read;
                if let Some(batch) = batch {
                    if !self.send(&mut ctx, batch).await {
                        break 'run Stop::Shutdown;
                    }
                }
            }
            if ctx.shutdown.is_set() {
                break Stop::Shutdown;
            }
            if self.config.exit_on_eof && self.all_read() {
                break Stop::Eof;
            }
            if progressed {
                continue;
            }

            let mut deadline = next_refresh.min(next_check).min(next_save);
            if self.watcher.is_none() {
                deadline = deadline.min(next_poll);
            }
            if let Some(t) = self.next_close() {
                deadline = deadline.min(t);
            }
            if let Some(t) = self.ml_deadline() {
                deadline = deadline.min(t);
            }
            let wake = {
                let watcher = self.watcher.as_mut();
                tokio::select! {
                    _ = ctx.shutdown.wait() => Wake::Shutdown,
                    a = ack_rx.recv() => Wake::Ack(a),
                    r = async {
                        match watcher {
                            Some(w) => w.events(&mut events).await,
                            None => std::future::pending().await,
                        }
                    } => Wake::Events(r),
                    _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
                }
            };
            match wake {
                Wake::Shutdown => break Stop::Shutdown,
                Wake::Ack(Some(a)) => self.ack(a),
                Wake::Ack(None) | Wake::Timer | Wake::Events(Ok(())) => {}
                Wake::Events(Err(e)) => {
                    crate::error!(
                        "[input:tail:{}] inotify failed ({e}): polling files every 250ms",
                        self.name
                    );
                    self.watcher = None;
                }
            }
        };
        self.finish(ctx, ack_rx, stop).await
    }

    /// Stops reading, sends held partial lines when nothing will read them again, waits
    /// until the pipeline is done with every batch, and saves the db.
    async fn finish(
        mut self,
        mut ctx: InputContext,
        mut ack_rx: mpsc::UnboundedReceiver<Ack>,
        stop: Stop,
    ) -> Result<(), PluginError> {
        // With a db and a shutdown, a held line is read again, whole, on the next start.
        if self.db.is_none() || stop == Stop::Eof {
            // A stalled file's held bytes are a long line, not a last line.
            let ids: Vec<u64> = self
                .files
                .iter()
                .filter(|(_, f)| !f.stalled)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if let Some(batch) = self.partial(id) {
                    if !self.send(&mut ctx, batch).await {
                        break;
                    }
                }
            }
        }
        if stop == Stop::Eof {
            crate::info!(
                "[input:tail:{}] every file is read to its end (exit_on_eof): stopping",
                self.name
            );
            // Fluent Bit stops the engine (every input), exit status 0; what was read
            // is delivered within the grace period as on SIGTERM.
            self.exit.exit(0);
        }
        // The engine ends once every input's sender is gone; acks then come as outputs
        // finish, and the channel closes once the last batch is acked or dropped.
        drop(ctx.out);
        self.ack_tx = None;
        let mut next_save = Instant::now() + DB_SAVE_INTERVAL;
        while let Some(a) = ack_rx.recv().await {
            self.ack(a);
            while let Ok(a) = ack_rx.try_recv() {
                self.ack(a);
            }
            if Instant::now() >= next_save {
                self.save_db();
                next_save = Instant::now() + DB_SAVE_INTERVAL;
            }
        }
        self.save_db();
        Ok(())
    }

    /// Sends a batch, its ack tied to the file's in-flight list. Waits while the
    /// pipeline is full, also during shutdown: a batch read is a batch delivered (within
    /// the grace period), never dropped between reading and sending. Returns false if
    /// the engine is gone.
    async fn send(&mut self, ctx: &mut InputContext, b: Batch) -> bool {
        let Some(f) = self.files.get_mut(&b.file) else {
            return true;
        };
        let seq = match b.seq {
            Some(seq) => seq,
            None => {
                self.inflight_bytes += b.bytes;
                f.inflight.push(b.end, b.bytes)
            }
        };
        let Some(tx) = self.ack_tx.clone() else {
            return false;
        };
        let file = b.file;
        let ack: AckFn = Box::new(move || {
            let _ = tx.send(Ack { file, seq });
        });
        ctx.out.send_acked(b.tag, b.records, ack).await.is_ok()
    }

    fn ack(&mut self, a: Ack) {
        if let Some(f) = self.files.get_mut(&a.file) {
            let before = f.inflight.bytes();
            if f.inflight.ack(a.seq) {
                self.db_dirty = true;
            }
            self.inflight_bytes -= before - f.inflight.bytes();
        }
    }

    fn may_read(&mut self) -> bool {
        let limit = self.config.mem_buf_limit.unwrap_or(DEFAULT_INFLIGHT);
        let over = self.inflight_bytes >= limit;
        if over != self.paused {
            self.paused = over;
            let what = if over { "paused" } else { "resume" };
            // Under a steady backlog this flips with every delivery: say it once, and
            // only for the user's limit.
            if over && !self.pause_logged && self.config.mem_buf_limit.is_some() {
                self.pause_logged = true;
                crate::info!(
                    "[input] {} paused (mem buf overlimit); later pauses and resumes are logged at debug level",
                    self.name
                );
            } else {
                crate::debug!("[input] {} {what} (mem buf overlimit)", self.name);
            }
        }
        !over
    }

    fn all_read(&self) -> bool {
        self.files
            .values()
            .all(|f| f.file.is_none() || f.at_eof || f.stalled)
    }

    fn watch_dir(&mut self, dir: &Path) {
        let Some(w) = &mut self.watcher else { return };
        if self.watched_dirs.contains(dir) || !dir.is_dir() {
            return;
        }
        match w.watch_dir(dir) {
            Ok(()) => {
                self.watched_dirs.insert(dir.to_path_buf());
            }
            Err(e) => crate::debug!(
                "[input:tail:{}] cannot watch directory {}: {e}",
                self.name,
                dir.display()
            ),
        }
    }

    /// Expands the patterns and starts following every file not followed yet.
    fn scan(&mut self, now: Instant, at_startup: bool) {
        for path in scan::expand(&self.config.paths, &self.config.exclude) {
            let how = if at_startup {
                Discovery::Startup
            } else {
                Discovery::Later
            };
            if let Err(e) = self.open(&path, now, how) {
                crate::error!(
                    "[input:tail:{}] cannot read {}: {e}",
                    self.name,
                    path.display()
                );
            }
        }
    }

    /// Db rows whose file the patterns no longer name: rotated while the agent was
    /// stopped (or killed while draining it). Looked up by inode in the directory the
    /// file was in; if its first bytes still match, the rest is read from the saved
    /// offset, then it is closed as a rotated file (Fluent Bit drops such rows).
    fn find_rotated_while_stopped(&mut self, now: Instant) {
        let lost: Vec<(u64, Fingerprint, PathBuf)> = self
            .saved
            .iter()
            .filter(|r| !self.files.values().any(|f| f.ino == r.ino))
            .map(|r| (r.ino, r.fingerprint, PathBuf::from(&r.name)))
            .collect();
        for (ino, fingerprint, was) in lost {
            let Some(entries) = was.parent().and_then(|d| std::fs::read_dir(d).ok()) else {
                continue;
            };
            let found = entries
                .flatten()
                .find(|e| e.metadata().is_ok_and(|m| m.is_file() && m.ino() == ino));
            // Only the same file: a deleted file's inode may now be another file's.
            let same = |path: &Path| {
                File::open(path)
                    .and_then(|f| read_head(&f, fingerprint.len as usize))
                    .is_ok_and(|head| Fingerprint::of(&head) == fingerprint)
            };
            if let Some(entry) = found.filter(|e| same(&e.path())) {
                let path = entry.path();
                crate::info!(
                    "[input:tail:{}] inode={ino} {} was rotated to {} while stopped: reading the rest of it",
                    self.name,
                    was.display(),
                    path.display()
                );
                if let Err(e) = self.open(&path, now, Discovery::RotatedAway(&was)) {
                    crate::error!(
                        "[input:tail:{}] cannot read {}: {e}",
                        self.name,
                        path.display()
                    );
                }
            }
        }
    }

    fn open(&mut self, path: &Path, now: Instant, how: Discovery) -> io::Result<()> {
        let at_startup = how == Discovery::Startup;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            // Gone between the glob and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !meta.is_file() || self.following(meta.ino()) {
            return Ok(());
        }
        if let Some(age) = self.config.ignore_older {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            if old {
                return Ok(());
            }
        }
        // A limit of 0 on this file (limit_per_file 0, or a limit filter of 0 on its
        // tag): its lines would all be dropped, so it is not even opened.
        let tag = scan::compose_tag(&self.tag, &path.to_string_lossy());
        let zero = self
            .config
            .limit_per_file
            .is_some_and(|(rate, _)| rate <= 0.0);
        if zero || self.config.never_read.iter().any(|m| m.matches(&tag)) {
            if self.never_read.insert(path.to_path_buf()) {
                crate::info!(
                    "[input:tail:{}] {} is not read: a limit of 0 applies to it (tag {tag})",
                    self.name,
                    path.display()
                );
            }
            return Ok(());
        }
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let (ino, size) = (meta.ino(), meta.len());
        if self.following(ino) {
            return Ok(());
        }
        let name = path.to_string_lossy();
        let compare_filename = self.db.as_ref().is_some_and(|d| d.compare_filename());
        let row = self
            .saved
            .iter()
            .find(|r| r.ino == ino && (!compare_filename || r.name == name));
        let head = match row {
            Some(r) if size >= r.fingerprint.len as u64 => {
                let bytes = read_head(&file, r.fingerprint.len as usize)?;
                (bytes.len() == r.fingerprint.len as usize).then(|| Fingerprint::of(&bytes))
            }
            _ => None,
        };
        // Another file at the path of one we follow (renamed or a symlink retargeted,
        // not yet seen by a check), or at a db entry's path while we were stopped: the
        // new file of a rotation, read from its start.
        let replaces_rotated = matches!(how, Discovery::RotatedAway(_))
            || self.rotated_paths.remove(path)
            || self
                .files
                .values()
                .any(|f| f.path == path && f.file.is_some())
            || (at_startup && row.is_none() && self.saved.iter().any(|r| r.name == name));
        let found = scan::Found {
            size,
            row,
            head,
            at_startup,
            replaces_rotated,
        };
        let start = scan::start(
            &found,
            self.config.read_from_head,
            self.config.read_new_from_head,
        );
        let offset = start.offset();
        match start {
            scan::Start::Replaced => crate::info!(
                "[input:tail:{}] inode={ino} {name}: the db's offset is for another file (inode reused or rewritten): reading it from the start",
                self.name
            ),
            _ => crate::debug!(
                "[input:tail:{}] inode={ino} {name}: following from offset {offset} ({start:?})",
                self.name
            ),
        }
        // A file rotated before we saw it is tagged by the path it had.
        let tag_path = match how {
            Discovery::RotatedAway(from) => from.to_string_lossy(),
            _ => name.clone(),
        };
        let tag = match &self.config.tag_regex {
            None => scan::compose_tag(&self.tag, &tag_path),
            Some(re) => match scan::compose_tag_regex(&self.tag, re, &tag_path) {
                Some(t) => t,
                None => {
                    crate::error!(
                        "[input:tail:{}] invalid tag_regex pattern for file {tag_path}: the regex does not match its path (or a '<' in the tag is not closed); the file is not read",
                        self.name
                    );
                    return Ok(());
                }
            },
        };
        let fingerprint = Fingerprint::of(&read_head(&file, FINGERPRINT_LEN)?);
        let id = self.next_id;
        self.next_id += 1;
        if let Some(w) = &mut self.watcher {
            if let Err(e) = w.watch_file(path, id) {
                crate::warn!(
                    "[input:tail:{}] cannot watch {name} ({e}): it is checked every watcher_interval",
                    self.name
                );
            }
        }
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            self.watch_dir(dir);
        }
        let c = &self.config;
        self.files.insert(
            id,
            TailFile {
                tag: Arc::from(tag),
                name: Value::Str(Arc::from(name.as_ref())),
                path: path.to_path_buf(),
                file: Some(file),
                ino,
                lines: LineBuf::new(
                    offset,
                    c.read_size,
                    c.max_line,
                    c.long_lines,
                    c.skip_empty_lines,
                ),
                inflight: Inflight::new(offset),
                state: match how {
                    Discovery::RotatedAway(_) => Lifecycle::Rotated(now),
                    _ => Lifecycle::Active,
                },
                at_eof: false,
                stalled: false,
                warned_long: false,
                rewritten: false,
                last_data: now,
                fingerprint,
                limit: c
                    .limit_per_file
                    .map(|(_, q)| KeyedLimiter::new(q, KeyBy::None, 1, now)),
                ml: match &c.joiner {
                    Joiner::Lines => None,
                    Joiner::Multiline(parsers, key) => {
                        let mut ml = MlStream::new(parsers.clone(), key.clone());
                        ml.set_buffer_limit(c.ml_buffer_limit);
                        Some(ml)
                    }
                    Joiner::Docker(flush, first) => {
                        Some(MlStream::docker_mode(*flush, first.clone(), c.key.clone()))
                    }
                    Joiner::Legacy(first, parsers, flush) => Some(MlStream::firstline(
                        first.clone(),
                        parsers.clone(),
                        *flush,
                        c.key.clone(),
                    )),
                },
            },
        );
        self.db_dirty = true;
        Ok(())
    }

    fn following(&self, ino: u64) -> bool {
        self.files
            .values()
            .any(|f| f.ino == ino && f.file.is_some())
    }

    fn apply(&mut self, events: &mut Vec<Event>, now: Instant) {
        for e in events.drain(..) {
            match e {
                Event::Modified(id) => {
                    if let Some(f) = self.files.get_mut(&id) {
                        f.at_eof = false;
                    }
                }
                Event::Changed(id) => self.check(id, now, false),
                Event::NewEntry => self.rescan = true,
                Event::Renamed { from, to } => self.renamed(&from, &to, now),
                Event::Overflow => {
                    self.check_all(now, true);
                    self.rescan = true;
                }
            }
        }
    }

    /// A file was renamed from a path we follow to one we do not. If it is not a file
    /// we follow, it was created and rotated before we saw it: read it all, then close
    /// it as a rotated file (Fluent Bit never sees it).
    fn renamed(&mut self, from: &Path, to: &Path, now: Instant) {
        let (paths, exclude) = (&self.config.paths, &self.config.exclude);
        if !scan::matches(from, paths, exclude) || scan::matches(to, paths, exclude) {
            return;
        }
        let followed =
            std::fs::metadata(to).is_ok_and(|m| self.files.values().any(|f| f.ino == m.ino()));
        if followed {
            return;
        }
        crate::info!(
            "[input:tail:{}] {} was rotated to {} before it was followed: reading it from the start",
            self.name,
            from.display(),
            to.display()
        );
        if let Err(e) = self.open(to, now, Discovery::RotatedAway(from)) {
            crate::error!(
                "[input:tail:{}] cannot read {}: {e}",
                self.name,
                to.display()
            );
        }
    }

    fn check_all(&mut self, now: Instant, verify_head: bool) {
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            self.check(id, now, verify_head);
        }
    }

    /// Looks at one file's state on disk: deleted, renamed, rewritten.
    fn check(&mut self, id: u64, now: Instant, verify_head: bool) {
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        let Some(file) = &f.file else { return };
        f.at_eof = false;
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                crate::error!(
                    "[input:tail:{}] cannot stat {}: {e}",
                    self.name,
                    f.path.display()
                );
                return;
            }
        };
        if verify_head && f.fingerprint.len > 0 && meta.len() >= f.fingerprint.len as u64 {
            if let Ok(head) = read_head(file, f.fingerprint.len as usize) {
                if Fingerprint::of(&head) != f.fingerprint {
                    f.rewritten = true;
                }
            }
        }
        let observed = Observed {
            size: meta.len(),
            nlink: meta.nlink(),
            ino: f.ino,
            path_ino: std::fs::metadata(&f.path).ok().map(|m| m.ino()),
        };
        match (file::detect(f.lines.read_pos(), observed), f.state) {
            (Change::Deleted, Lifecycle::Active | Lifecycle::Rotated(_)) => {
                crate::debug!(
                    "[input:tail:{}] inode={} file deleted: {}",
                    self.name,
                    f.ino,
                    f.path.display()
                );
                f.state = Lifecycle::Deleted;
            }
            (Change::Moved, Lifecycle::Active) => {
                let fd = file.as_raw_fd();
                let new = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
                let old = f.path.clone();
                crate::info!(
                    "[input:tail:{}] inode={} handle rotation(): {} => {}",
                    self.name,
                    f.ino,
                    old.display(),
                    new.as_deref().unwrap_or(Path::new("?")).display()
                );
                match new {
                    Some(new) if scan::matches(&new, &self.config.paths, &self.config.exclude) => {
                        // Still one of ours under its new name: keep following it.
                        f.name = Value::Str(Arc::from(new.to_string_lossy().as_ref()));
                        f.path = new;
                    }
                    _ => f.state = Lifecycle::Rotated(now),
                }
                self.rotated_paths.insert(old);
                self.rescan = true;
            }
            _ => {}
        }
    }

    /// Reads once from file `id`. Returns whether bytes were read, and the lines.
    fn read_file(&mut self, id: u64, now: Instant) -> (bool, Option<Batch>) {
        let Some(f) = self.files.get_mut(&id) else {
            return (false, None);
        };
        let Some(file) = &f.file else {
            return (false, None);
        };
        if f.at_eof || f.stalled {
            return (false, None);
        }
        let size = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                crate::error!(
                    "[input:tail:{}] cannot stat {}: {e}",
                    self.name,
                    f.path.display()
                );
                f.at_eof = true;
                return (false, None);
            }
        };
        if size < f.lines.read_pos() || f.rewritten {
            return (true, self.truncated(id));
        }
        let pos = f.lines.read_pos();
        let n = match file.read_at(f.lines.space(), pos) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return (true, None),
            Err(e) => {
                crate::error!(
                    "[input:tail:{}] cannot read {}: {e}",
                    self.name,
                    f.path.display()
                );
                f.at_eof = true;
                return (false, None);
            }
        };
        if n == 0 {
            f.at_eof = true;
            return (false, None);
        }
        f.lines.filled(n);
        f.last_data = now;
        if !f.fingerprint.is_full() && f.lines.read_pos() > f.fingerprint.len as u64 {
            if let Ok(head) = read_head(file, FINGERPRINT_LEN) {
                f.fingerprint = Fingerprint::of(&head);
            }
        }
        let c = &self.config;
        let mut records = Vec::with_capacity(n / 64);
        let name = &f.name;
        let limit = &mut f.limit;
        let ml = &mut f.ml;
        let mut joined = Vec::new();
        let mut limited = 0u64;
        let split = f.lines.split(|line| {
            // Over limit_per_file: the line is consumed (its offset commits) but dropped.
            if let Some(l) = limit.as_mut() {
                if !l.allow(&Vec::new(), now) {
                    limited += 1;
                    return;
                }
            }
            // Each line is stamped when it is read, as Fluent Bit stamps each record.
            let time = EventTime::now();
            match ml {
                Some(ml) => {
                    ml.append_text(line.bytes, time, line.offset, line.end, now, &mut joined)
                }
                None => records.push(line_record(c, name, line.offset, line.bytes, time)),
            }
        });
        for r in joined {
            records.push(joined_record(c, name, r));
        }
        crate::pipeline::metrics::add(&c.limit_dropped, limited);
        if split.long_lines > 0 && !f.warned_long {
            f.warned_long = true;
            crate::warn!(
                "[input:tail:{}] file={} have long lines. {} long lines.",
                self.name,
                f.path.display(),
                if c.long_lines == config::LongLines::Truncate {
                    "Truncating"
                } else {
                    "Skipping"
                }
            );
        }
        if let Some(at) = split.stalled_at {
            f.stalled = true;
            crate::error!(
                "[input:tail:{}] file={} requires a larger buffer size, lines are too long. Stopped at offset {at}: raise buffer_max_size, or set skip_long_lines or truncate_long_lines, and restart.",
                self.name,
                f.path.display()
            );
        }
        let end = held_end(f);
        if records.is_empty() {
            // Only skipped lines or a partial one: nothing to deliver, but the skipped
            // bytes count as done once everything before them is.
            let seq = f.inflight.push(end, 0);
            if f.inflight.ack(seq) {
                self.db_dirty = true;
            }
            return (true, None);
        }
        (
            true,
            Some(Batch {
                file: id,
                tag: f.tag.clone(),
                records,
                end,
                bytes: n as u64,
                seq: None,
            }),
        )
    }

    /// The file got smaller than what was read (or its first bytes changed): what is
    /// held is sent, and reading starts again at 0.
    fn truncated(&mut self, id: u64) -> Option<Batch> {
        let mut batch = self.partial(id);
        let f = self.files.get_mut(&id)?;
        crate::info!(
            "[input:tail:{}] inode={} file truncated {}",
            self.name,
            f.ino,
            f.path.display()
        );
        if let Some(b) = &mut batch {
            // Pushed before the reset, so that its ack does not move the new offset.
            b.seq = Some(f.inflight.push(b.end, b.bytes));
            self.inflight_bytes += b.bytes;
        }
        f.inflight.reset(0);
        f.lines.reset(0);
        f.rewritten = false;
        f.stalled = false;
        f.fingerprint = Fingerprint::of(&[]);
        self.db_dirty = true;
        batch
    }

    /// The held unterminated line of a file that is done, and every record its
    /// multiline parser still holds, as a batch.
    fn partial(&mut self, id: u64) -> Option<Batch> {
        let f = self.files.get_mut(&id)?;
        let c = &self.config;
        let now = Instant::now();
        let time = EventTime::now();
        let last = f.lines.take_partial();
        let mut records = Vec::new();
        let mut bytes = 0;
        match &mut f.ml {
            Some(ml) => {
                let mut joined = Vec::new();
                if let Some((offset, line)) = &last {
                    bytes = line.len() as u64;
                    let end = offset + bytes;
                    ml.append_text(line, time, *offset, end, now, &mut joined);
                }
                ml.flush(&mut joined);
                records.extend(joined.into_iter().map(|r| joined_record(c, &f.name, r)));
            }
            None => {
                let (offset, line) = last?;
                bytes = line.len() as u64;
                records.push(line_record(c, &f.name, offset, &line, time));
            }
        }
        if records.is_empty() {
            return None;
        }
        Some(Batch {
            file: id,
            tag: f.tag.clone(),
            records,
            end: f.lines.consumed(),
            bytes,
            seq: None,
        })
    }

    /// Records of every file held longer than their multiline parser's flush timeout.
    fn ml_expired(&mut self, now: Instant) -> Vec<Batch> {
        let c = &self.config;
        let mut out = Vec::new();
        for (id, f) in self.files.iter_mut() {
            if !ml_may_flush(f) {
                continue;
            }
            let Some(ml) = &mut f.ml else { continue };
            if ml.deadline().is_none_or(|d| d > now) {
                continue;
            }
            let mut joined = Vec::new();
            ml.flush_expired(now, &mut joined);
            if joined.is_empty() {
                continue;
            }
            let records: Vec<Record> = joined
                .into_iter()
                .map(|r| joined_record(c, &f.name, r))
                .collect();
            out.push(Batch {
                file: *id,
                tag: f.tag.clone(),
                records,
                end: held_end(f),
                bytes: 0,
                seq: None,
            });
        }
        out
    }

    /// When a multiline parser of some file next has records to flush.
    fn ml_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter(|f| ml_may_flush(f))
            .filter_map(|f| f.ml.as_ref()?.deadline())
            .min()
    }

    /// Closes files that are done (rotated and drained, deleted) and forgets those
    /// with nothing in flight. Returns their last partial lines.
    fn close_done(&mut self, now: Instant) -> Vec<Batch> {
        let wait = self.config.rotate_wait;
        let done: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, f)| {
                f.file.is_some()
                    && !f.stalled
                    && file::may_close(f.state, f.at_eof, f.last_data, now, wait)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in done {
            out.extend(self.partial(id));
            if let Some(w) = &mut self.watcher {
                w.unwatch_file(id);
            }
            if let Some(f) = self.files.get_mut(&id) {
                crate::debug!(
                    "[input:tail:{}] inode={} closed {}",
                    self.name,
                    f.ino,
                    f.path.display()
                );
                f.file = None;
            }
        }
        let before = self.files.len();
        // A closed file with a batch still queued below stays until it is acked.
        let queued: HashSet<u64> = out.iter().map(|b| b.file).collect();
        self.files
            .retain(|id, f| f.file.is_some() || !f.inflight.is_empty() || queued.contains(id));
        if self.files.len() != before {
            self.db_dirty = true;
        }
        out
    }

    /// When the next rotated file may be closed.
    fn next_close(&self) -> Option<Instant> {
        self.files
            .values()
            .filter_map(|f| match f.state {
                Lifecycle::Rotated(at) if f.file.is_some() => {
                    Some(at.max(f.last_data) + self.config.rotate_wait)
                }
                _ => None,
            })
            .min()
    }

    fn save_db(&mut self) {
        let Some(db) = &self.db else { return };
        if !self.db_dirty {
            return;
        }
        let rows: Vec<Row> = self
            .files
            .values()
            .map(|f| Row {
                ino: f.ino,
                offset: f.inflight.committed(),
                fingerprint: f.fingerprint,
                name: f.path.to_string_lossy().into_owned(),
            })
            .collect();
        match db.save(&rows) {
            Ok(()) => {
                self.db_dirty = false;
                self.db_failing = false;
            }
            Err(e) => {
                if !self.db_failing {
                    crate::error!("[input:tail:{}] cannot save offsets: {e}", self.name);
                }
                self.db_failing = true;
            }
        }
    }
}
