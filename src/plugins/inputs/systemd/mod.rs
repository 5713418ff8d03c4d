//! `systemd` input: entries of the systemd journal as records.
//! Fluent Bit: plugins/in_systemd/systemd.c, systemd_config.c, systemd_db.c
//!
//! The journal is read through libsystemd's `sd_journal_*` API, from `libsystemd.so.0`
//! loaded at run time (see [`journal`]): `path` opens every journal file of a
//! directory (`sd_journal_open_directory`), no `path` the machine's journal
//! (`sd_journal_open(SD_JOURNAL_LOCAL_ONLY)`).
//!
//! Records as Fluent Bit's: the time is the entry's realtime timestamp (when journald
//! received it, `__REALTIME_TIMESTAMP`, not the `_SOURCE_REALTIME_TIMESTAMP` field);
//! the body has every field in the journal's order, values as strings (a value that is
//! not UTF-8 is kept byte for byte as a binary value, as tail's lines). A field that
//! appears several times becomes an array of its values, moved to where its second
//! value was met (Fluent Bit's kvlist removes and re-appends the key). `strip_underscores`
//! drops one leading `_` of a key, then `lowercase` lowercases it (ASCII). At most
//! `max_fields` fields are kept per entry.
//!
//! A `*` in the tag is replaced by the entry's `_SYSTEMD_UNIT` (`unknown` without one),
//! the unit name kept as it is (no `/` → `.` as tail's file names).
//!
//! Filters: each `systemd_filter FIELD=value` is an `sd_journal_add_match`, followed by
//! `sd_journal_add_conjunction` (`systemd_filter_type and`) or
//! `sd_journal_add_disjunction` (`or`, the default), in the order given, as Fluent Bit.
//!
//! Reading: a thread owns the journal; it reads up to `max_entries` entries at a time
//! (less once they pass about 1 MB), in batches of one tag each, hands each batch to
//! the input task and, at the end of the journal, waits on it (inotify, `sd_journal_wait`). The
//! input task sends the batches with an acknowledgement: with `db`, the cursor of a
//! batch's last entry is saved once every output is done with that batch and every
//! batch before it, at most once a second and at exit. A restart, even after
//! `kill -9`, reads from the entry after the saved cursor: nothing is skipped, and what
//! is read again is bounded by what was in flight. (Fluent Bit saves the cursor as soon
//! as the entries are read, so a crash can skip what was buffered.)

mod db;
mod journal;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;

use crate::config::{ConfigError, PropKind, PropSpec, Props, Span};
use crate::event::{EventTime, Map, Record, Str, Tag, Value};
use crate::parser::types::text_value;
use crate::pipeline::AckFn;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

use db::{Db, DbSync};
use journal::{Journal, OpenError, Wake};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "path",
        PropKind::Str,
        None,
        "Set the systemd journal path (a directory of journal files).",
    ),
    PropSpec::new(
        "max_fields",
        PropKind::Int,
        Some("8000"),
        "Set the maximum fields per notification.",
    ),
    PropSpec::new(
        "max_entries",
        PropKind::Int,
        Some("5000"),
        "Set the maximum entries per notification.",
    ),
    PropSpec::new(
        "systemd_filter_type",
        PropKind::Enum(&["and", "or"]),
        Some("or"),
        "Set the systemd filter type to either 'and' or 'or'.",
    ),
    PropSpec::new(
        "systemd_filter",
        PropKind::Multi,
        None,
        "Add a systemd filter (FIELD=value), can be set multiple times.",
    ),
    PropSpec::new(
        "read_from_tail",
        PropKind::Bool,
        Some("false"),
        "Read the journal from the end (tail).",
    ),
    PropSpec::new(
        "lowercase",
        PropKind::Bool,
        Some("false"),
        "Lowercase the fields.",
    ),
    PropSpec::new(
        "strip_underscores",
        PropKind::Bool,
        Some("false"),
        "Strip underscores from fields.",
    ),
    PropSpec::new(
        "db.sync",
        PropKind::Enum(&["extra", "full", "normal", "off"]),
        Some("normal"),
        "Set the database sync mode: extra, full, normal or off.",
    ),
    PropSpec::new(
        "db",
        PropKind::Str,
        None,
        "Set the database path (the cursor of the last delivered entry).",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "systemd",
    description: "Systemd (Journal) reader",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

/// A batch is handed over once its records pass this many bytes (Fluent Bit appends
/// its encoder's buffer once it is over 1024000 bytes).
const BATCH_BYTES: u64 = 1_024_000;

/// Delivered cursors are written at most this often (and at exit).
const DB_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// How long the reader waits on the journal before looking at the stop flag.
const WAIT_US: u64 = 250_000;

/// What one entry becomes; the settings that shape records.
#[derive(Clone, Debug)]
struct Shape {
    /// The configured tag, when it has a `*`: (before, after) the first one.
    dynamic_tag: Option<(String, String)>,
    tag: Tag,
    max_fields: usize,
    max_entries: usize,
    strip_underscores: bool,
    lowercase: bool,
}

struct SystemdInput {
    setup: Setup,
    shape: Shape,
}

/// What opening the journal needs, with the config lines its errors name.
struct Setup {
    path: Option<PathBuf>,
    path_span: Span,
    section: Span,
    filters: Vec<String>,
    filter_span: Span,
    and: bool,
    read_from_tail: bool,
    db: Option<(PathBuf, DbSync, Span)>,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let int = |key: &str, default: i64, min: i64| -> Result<usize, ConfigError> {
        let v = props.int(key).unwrap_or(default);
        if v < min || v > i32::MAX as i64 {
            return Err(props.error(key, format!("a number from {min} to {}", i32::MAX)));
        }
        Ok(v as usize)
    };
    let max_fields = int("max_fields", 8000, 0)?;
    let max_entries = int("max_entries", 5000, 1)?;
    let setup = Setup {
        path: props.str("path").map(PathBuf::from),
        path_span: props.span_of("path").clone(),
        section: props.span().clone(),
        filters: props
            .multi("systemd_filter")
            .into_iter()
            .map(str::to_string)
            .collect(),
        filter_span: props.span_of("systemd_filter").clone(),
        and: props
            .str("systemd_filter_type")
            .is_some_and(|t| t.eq_ignore_ascii_case("and")),
        read_from_tail: props.bool("read_from_tail").unwrap_or(false),
        db: props.str("db").map(|p| {
            let sync =
                DbSync::parse(props.str("db.sync").unwrap_or("normal")).unwrap_or(DbSync::Normal);
            (PathBuf::from(p), sync, props.span_of("db").clone())
        }),
    };
    Ok(Box::new(SystemdInput {
        setup,
        shape: Shape {
            // Set from the input's context when it runs.
            dynamic_tag: None,
            tag: Tag::from(""),
            max_fields,
            max_entries,
            strip_underscores: props.bool("strip_underscores").unwrap_or(false),
            lowercase: props.bool("lowercase").unwrap_or(false),
        },
    }))
}

/// Opens the journal as the config says: path, filters, start position, saved cursor.
///
/// Done when the input starts, as Fluent Bit's init, not when the config is read: so
/// `--dry-run` checks the config alone (a node's config validates on a machine without
/// its journal or libsystemd, as with Fluent Bit), and a failure stops the agent with
/// the config line and a fix.
fn open(s: &Setup, name: &str) -> Result<(Journal, Option<Db>), String> {
    let err = |span: &Span, msg: String, hint: &str| format!("{span}: {msg}; {hint}");
    if let Some(p) = &s.path {
        match std::fs::metadata(p) {
            Err(e) => {
                return Err(err(
                    &s.path_span,
                    format!("given path {} is invalid: {e}", p.display()),
                    "set 'path' to a directory of journal files, e.g. /var/log/journal, or remove it to read this machine's journal",
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(err(
                    &s.path_span,
                    format!("given path is not a directory: {}", p.display()),
                    "set 'path' to the directory that holds the *.journal files",
                ))
            }
            Ok(_) => warn_unreadable_files(p, name),
        }
    }
    let mut journal = Journal::open(s.path.as_deref()).map_err(|e| match e {
        OpenError::Library(why) => err(
            &s.section,
            format!(
                "cannot load {} ({why}): the systemd input reads the journal through libsystemd",
                journal::LIBRARY
            ),
            "install the libsystemd0 package (Debian, Ubuntu: apt-get install libsystemd0; Fedora, RHEL: systemd-libs), or remove this input",
        ),
        OpenError::Open(r) => err(
            match &s.path {
                Some(_) => &s.path_span,
                None => &s.section,
            },
            format!(
                "could not open the Journal{}: {}",
                s.path
                    .as_ref()
                    .map(|p| format!(" in {}", p.display()))
                    .unwrap_or_default(),
                journal::errno_text(r)
            ),
            "check that the agent may read the journal (root, or the systemd-journal group)",
        ),
    })?;
    for f in &s.filters {
        let added = journal.add_match(f.as_bytes()).and_then(|()| {
            if s.and {
                journal.add_conjunction()
            } else {
                journal.add_disjunction()
            }
        });
        if let Err(r) = added {
            let why = if r == -libc::EINVAL {
                format!("invalid input '{f}'")
            } else {
                format!("status={r} ({}) input '{f}'", journal::errno_text(r))
            };
            return Err(err(
                &s.filter_span,
                format!("systemd_filter error: {why}"),
                "write a filter as FIELD=value, the field in capitals, digits and '_', e.g. 'systemd_filter _SYSTEMD_UNIT=kubelet.service'",
            ));
        }
    }
    let seek = if s.read_from_tail {
        // As Fluent Bit: past the last entry, skipping up to 350 more (libsystemd could
        // return the last entries of each file again, systemd issue 9934).
        journal
            .seek_tail()
            .and_then(|()| journal.previous())
            .and_then(|_| journal.next_skip(350))
            .map(drop)
    } else {
        journal.seek_head()
    };
    if let Err(r) = seek {
        return Err(format!(
            "{}: cannot seek in the journal: {}",
            s.section,
            journal::errno_text(r)
        ));
    }
    let db = match &s.db {
        None => None,
        Some((p, sync, span)) => {
            let (db, cursor) = db::open(p, *sync).map_err(|e| format!("{span}: db {e}"))?;
            if let Some(c) = cursor {
                seek_after(&mut journal, &c, name);
            }
            Some(db)
        }
    };
    Ok((journal, db))
}

/// Logs the files of `dir` named as journal files that are not (libsystemd skips them
/// silently: a damaged or foreign file would otherwise look like an empty journal).
fn warn_unreadable_files(dir: &std::path::Path, name: &str) {
    use std::io::Read;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let n = e.file_name();
        let n = n.to_string_lossy();
        if !(n.ends_with(".journal") || n.ends_with(".journal~")) {
            continue;
        }
        let mut magic = [0u8; 8];
        let ok = std::fs::File::open(&p)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok_and(|()| &magic == b"LPKSHHRH");
        if !ok {
            crate::warn!(
                "[input:systemd:{name}] {} is not a readable journal file (damaged, or not a journal): its entries are skipped",
                p.display()
            );
        }
    }
}

/// Positions the journal so that the next entry read is the one after `cursor`.
///
/// As Fluent Bit: seek to the cursor and step onto its entry. When that entry is gone
/// (the journal was rotated or vacuumed), the seek lands on the first entry after where
/// it was, which is unread: step back so that it is read (Fluent Bit skips it).
fn seek_after(j: &mut Journal, cursor: &str, name: &str) {
    if j.seek_cursor(cursor).is_err() {
        crate::warn!("[input:systemd:{name}] seek_cursor failed");
        return;
    }
    let short: String = cursor.chars().take(40).collect();
    match j.next() {
        Ok(true) if j.test_cursor(cursor) => {
            crate::info!("[input:systemd:{name}] seek_cursor={short}... OK");
        }
        Ok(true) => {
            crate::warn!("[input:systemd:{name}] the entry of cursor {short}... is no longer in the journal: reading from the first entry after it");
            if !matches!(j.previous(), Ok(true)) {
                let _ = j.seek_head();
            }
        }
        // At the end (the cursor's entry was the last one and it is gone), or an error:
        // the next read starts there.
        _ => {
            crate::info!("[input:systemd:{name}] seek_cursor={short}... OK");
        }
    }
}

/// A run of entries with one tag, up to the entry whose cursor it carries.
struct Batch {
    tag: Tag,
    records: Vec<Record>,
    cursor: Option<String>,
    /// The entries' fields that could not be read (damaged journal objects).
    broken: u64,
}

/// Builds a record of the current entry.
fn entry_record(j: &mut Journal, shape: &Shape, broken: &mut u64) -> Result<Record, i32> {
    let usec = j.realtime_usec()?;
    let time = EventTime::new(
        (usec / 1_000_000) as i64,
        ((usec % 1_000_000) * 1000) as u32,
    );
    let mut body: Map = Vec::with_capacity(32);
    j.restart_data();
    let mut stored = 0usize;
    loop {
        if stored >= shape.max_fields {
            break;
        }
        let data = match j.enumerate() {
            Ok(Some(d)) => d,
            Ok(None) => break,
            // A field that cannot be read (compressed data that does not decompress, a
            // damaged object): libsystemd stops the enumeration there, as Fluent Bit's
            // loop does; the fields read so far are kept.
            Err(_) => {
                *broken += 1;
                break;
            }
        };
        let data = if shape.strip_underscores && data.first() == Some(&b'_') {
            &data[1..]
        } else {
            data
        };
        let Some(eq) = data.iter().position(|&c| c == b'=') else {
            *broken += 1;
            continue;
        };
        let key = if shape.lowercase {
            String::from_utf8_lossy(&data[..eq]).to_ascii_lowercase()
        } else {
            String::from_utf8_lossy(&data[..eq]).into_owned()
        };
        store(&mut body, key, &data[eq + 1..]);
        stored += 1;
    }
    Ok(Record::new(time, body))
}

/// Adds a field as Fluent Bit's kvlist does: a second value of a key makes an array of
/// both, re-appended at the end; later values join that array where it is.
fn store(body: &mut Map, key: String, value: &[u8]) {
    let Some(i) = body.iter().position(|(k, _)| **k == *key) else {
        body.push((Str::from(key), text_value(value)));
        return;
    };
    if let Value::Array(a) = &mut body[i].1 {
        a.push(text_value(value));
        return;
    }
    let (k, first) = body.remove(i);
    // The first value is copied as a C string (cfl_variant_create_from_string):
    // it ends at its first NUL.
    let first = match first {
        Value::Str(s) => match s.find('\0') {
            Some(n) => Value::Str(Str::from(&s[..n])),
            None => Value::Str(s),
        },
        Value::Bin(b) => text_value(b.split(|&c| c == 0).next().unwrap_or(&[])),
        other => other,
    };
    body.push((k, Value::Array(vec![first, text_value(value)])));
}

/// The tag of the current entry.
fn entry_tag(j: &mut Journal, shape: &Shape) -> Tag {
    let Some((before, after)) = &shape.dynamic_tag else {
        return shape.tag.clone();
    };
    j.restart_data();
    let unit = j
        .data(c"_SYSTEMD_UNIT")
        .and_then(|d| d.get(b"_SYSTEMD_UNIT=".len()..))
        .map(|u| String::from_utf8_lossy(u).into_owned());
    let unit = unit.as_deref().unwrap_or("unknown");
    Tag::from(format!("{before}{unit}{after}"))
}

/// Messages from the reader thread.
enum Read {
    Batch(Batch),
    /// The journal failed in a way reading cannot go on from.
    Failed(String),
}

/// The reader thread: reads batches until `stop` or the receiver is gone.
fn reader(
    mut j: Journal,
    shape: Shape,
    name: Arc<str>,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Read>,
) {
    let mut at_end = false;
    let mut read = 0u64;
    let mut end_logged = false;
    while !stop.load(Ordering::Relaxed) {
        if at_end {
            match j.wait(WAIT_US) {
                Ok(Wake::Nop) => continue,
                Ok(Wake::Changed) => {}
                Err(r) => {
                    let _ = tx.blocking_send(Read::Failed(format!(
                        "sd_journal_wait() failed: {}",
                        journal::errno_text(r)
                    )));
                    return;
                }
            }
        }
        let mut batches: Vec<Batch> = Vec::new();
        let mut rows = 0usize;
        let mut bytes = 0u64;
        at_end = loop {
            if rows >= shape.max_entries || bytes > BATCH_BYTES {
                break false;
            }
            match j.next() {
                Ok(true) => {}
                Ok(false) => break true,
                Err(r) => {
                    // As Fluent Bit: the current file was likely deleted under us
                    // (rotated); start again from the head (what was read may be read
                    // again).
                    let s = j.seek_head();
                    crate::error!(
                        "[input:systemd:{name}] sd_journal_next() returned error {r}; journal is re-read from its head; sd_journal_seek_head() returned {}",
                        s.err().unwrap_or(0)
                    );
                    break false;
                }
            }
            let tag = entry_tag(&mut j, &shape);
            let mut broken = 0;
            let rec = match entry_record(&mut j, &shape, &mut broken) {
                Ok(r) => r,
                Err(r) => {
                    crate::error!(
                        "[input:systemd:{name}] error reading from systemd journal. sd_journal_get_realtime_usec() return value '{r}': entry skipped"
                    );
                    continue;
                }
            };
            rows += 1;
            bytes += rec.encoded_len();
            let cursor = j.cursor().ok();
            match batches.last_mut() {
                Some(b) if b.tag == tag => {
                    b.records.push(rec);
                    b.cursor = cursor.or(b.cursor.take());
                    b.broken += broken;
                }
                _ => batches.push(Batch {
                    tag,
                    records: vec![rec],
                    cursor,
                    broken,
                }),
            }
        };
        if !batches.is_empty() {
            crate::debug!(
                "[input:systemd:{name}] read {rows} entries ({} batches)",
                batches.len()
            );
        }
        for b in batches {
            if tx.blocking_send(Read::Batch(b)).is_err() {
                return;
            }
        }
        // Said once every entry read so far is handed to the input task.
        read += rows as u64;
        if at_end && (!end_logged || rows > 0) {
            end_logged = true;
            crate::debug!("[input:systemd:{name}] at the end of the journal ({read} entries read)");
        }
    }
}

/// Batches sent and not yet acknowledged, in order: the cursor of the last batch of
/// the acknowledged prefix is the one to save.
#[derive(Default)]
struct Inflight {
    queue: VecDeque<(Option<String>, bool)>,
    /// Sequence number of `queue[0]`.
    first: u64,
    committed: Option<String>,
}

impl Inflight {
    fn push(&mut self, cursor: Option<String>) -> u64 {
        self.queue.push_back((cursor, false));
        self.first + self.queue.len() as u64 - 1
    }

    /// Batch `seq` is done with; whether the committed cursor moved.
    fn ack(&mut self, seq: u64) -> bool {
        let Some(i) = seq.checked_sub(self.first) else {
            return false;
        };
        match self.queue.get_mut(i as usize) {
            Some(b) if !b.1 => b.1 = true,
            _ => return false,
        }
        let mut moved = false;
        while self.queue.front().is_some_and(|b| b.1) {
            let (c, _) = self.queue.pop_front().expect("front exists");
            self.first += 1;
            if c.is_some() {
                self.committed = c;
                moved = true;
            }
        }
        moved
    }
}

struct Saver {
    db: Option<Db>,
    dirty: bool,
    failing: bool,
    name: Arc<str>,
}

impl Saver {
    fn save(&mut self, inflight: &Inflight) {
        let (Some(db), Some(c)) = (&self.db, &inflight.committed) else {
            return;
        };
        if !self.dirty {
            return;
        }
        match db.save(c) {
            Ok(()) => {
                self.dirty = false;
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    crate::error!("[input:systemd:{}] db: {e}", self.name);
                }
                self.failing = true;
            }
        }
    }
}

/// Sends a batch, its acknowledgement tied to its place in `inflight`; false once the
/// engine is gone.
async fn send(
    ctx: &mut InputContext,
    inflight: &mut Inflight,
    ack_tx: &mpsc::UnboundedSender<u64>,
    b: Batch,
) -> bool {
    if b.broken > 0 {
        crate::error!(
            "[input:systemd:{}] Skip {} broken entries",
            ctx.name,
            b.broken
        );
    }
    let seq = inflight.push(b.cursor);
    let tx = ack_tx.clone();
    let ack: AckFn = Box::new(move || {
        let _ = tx.send(seq);
    });
    ctx.out.send_acked(b.tag, b.records, ack).await.is_ok()
}

impl Input for SystemdInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let SystemdInput { setup, mut shape } = *self;
            let name = ctx.name.clone();
            shape.tag = ctx.tag.clone();
            shape.dynamic_tag = ctx
                .tag
                .split_once('*')
                .map(|(a, b)| (a.to_string(), b.to_string()));
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, mut rx) = mpsc::channel::<Read>(2);
            // The journal is opened on the reader thread (opening reads every file's
            // header: blocking work), which hands back the db or the error.
            let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
            let thread = {
                let (stop, name) = (stop.clone(), name.clone());
                std::thread::Builder::new()
                    .name("systemd-journal".into())
                    .spawn(move || match open(&setup, &name) {
                        Ok((journal, db)) => {
                            let _ = opened_tx.send(Ok(db));
                            reader(journal, shape, name, stop, tx)
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                        }
                    })
                    .map_err(|e| {
                        PluginError::Other(format!("cannot start the journal reader: {e}"))
                    })?
            };
            let db = match opened_rx.await {
                Ok(Ok(db)) => db,
                Ok(Err(e)) => return Err(PluginError::Other(e)),
                Err(_) => return Err(PluginError::Other("the journal reader ended".into())),
            };
            let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u64>();
            let mut inflight = Inflight::default();
            let mut saver = Saver {
                db,
                dirty: false,
                failing: false,
                name: name.clone(),
            };
            let mut next_save = Instant::now() + DB_SAVE_INTERVAL;
            let mut failed = None;
            loop {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(Read::Batch(b)) => {
                            if !send(&mut ctx, &mut inflight, &ack_tx, b).await {
                                break;
                            }
                        }
                        Some(Read::Failed(e)) => {
                            failed = Some(e);
                            break;
                        }
                        None => break,
                    },
                    Some(seq) = ack_rx.recv() => {
                        saver.dirty |= inflight.ack(seq);
                        while let Ok(seq) = ack_rx.try_recv() {
                            saver.dirty |= inflight.ack(seq);
                        }
                        if Instant::now() >= next_save {
                            saver.save(&inflight);
                            next_save = Instant::now() + DB_SAVE_INTERVAL;
                        }
                    }
                    _ = tokio::time::sleep_until(next_save), if saver.dirty => {
                        saver.save(&inflight);
                        next_save = Instant::now() + DB_SAVE_INTERVAL;
                    }
                    _ = ctx.shutdown.wait() => break,
                }
            }
            // What the reader already read is sent (it stops after the batches of its
            // current round): a shutdown delivers every entry read, within the grace
            // period, as tail's lines.
            stop.store(true, Ordering::Relaxed);
            if failed.is_none() {
                while let Some(Read::Batch(b)) = rx.recv().await {
                    if !send(&mut ctx, &mut inflight, &ack_tx, b).await {
                        break;
                    }
                }
            }
            drop(rx);
            drop(ctx.out);
            drop(ack_tx);
            while let Some(seq) = ack_rx.recv().await {
                saver.dirty |= inflight.ack(seq);
                if Instant::now() >= next_save {
                    saver.save(&inflight);
                    next_save = Instant::now() + DB_SAVE_INTERVAL;
                }
            }
            saver.save(&inflight);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            match failed {
                Some(e) => Err(PluginError::Other(e)),
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(Str::from(v))
    }

    #[test]
    fn repeated_fields_become_arrays_moved_to_the_end() {
        let mut body = Map::new();
        store(&mut body, "A".into(), b"1");
        store(&mut body, "B".into(), b"x\0y");
        store(&mut body, "C".into(), b"3");
        store(&mut body, "B".into(), b"z\0w");
        store(&mut body, "A".into(), b"2");
        store(&mut body, "B".into(), b"q");
        let want: Map = vec![
            (Str::from("C"), s("3")),
            (
                Str::from("B"),
                Value::Array(vec![s("x"), s("z\0w"), s("q")]),
            ),
            (Str::from("A"), Value::Array(vec![s("1"), s("2")])),
        ];
        assert_eq!(body, want);
        let mut body = Map::new();
        store(&mut body, "K".into(), b"\xff");
        assert_eq!(body[0].1, Value::Bin(Arc::from(&b"\xff"[..])));
    }

    #[test]
    fn only_an_acknowledged_prefix_commits() {
        let mut f = Inflight::default();
        let a = f.push(Some("a".into()));
        let b = f.push(Some("b".into()));
        let c = f.push(Some("c".into()));
        assert!(!f.ack(b), "b is delivered but a is not");
        assert_eq!(f.committed, None);
        assert!(f.ack(a));
        assert_eq!(f.committed.as_deref(), Some("b"));
        assert!(!f.ack(a), "a second ack is ignored");
        assert!(f.ack(c));
        assert_eq!(f.committed.as_deref(), Some("c"));
        assert!(f.queue.is_empty());
        assert!(!f.ack(99));
    }
}
