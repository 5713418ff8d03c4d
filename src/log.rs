//! Log lines in Fluent Bit's format on stderr (or `log_file`):
//! `[2026/11/22 21:22:38.759] [ info] [input:random:random.0] initializing`.
//! Fluent Bit: src/flb_log.c

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity, ordered: a message prints when its level <= the configured level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    /// Fluent Bit's `log_level` values (`warning` is accepted as `warn`).
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" => Level::Off,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Level::Off => "  off",
            Level::Error => "error",
            Level::Warn => " warn",
            Level::Info => " info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// The most verbose level anything prints at: the service level or an instance's.
static GATE: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// `None` = stderr. Set once at start-up from `log_file`.
static SINK: Mutex<Option<File>> = Mutex::new(None);

/// A plugin instance's own `log_level` and `log_suppress_interval`.
struct InstanceLog {
    name: String,
    level: Option<Level>,
    suppress: Option<std::time::Duration>,
    /// Messages printed within the suppression interval, with when.
    recent: std::collections::HashMap<String, std::time::Instant>,
}

static INSTANCES: Mutex<Vec<InstanceLog>> = Mutex::new(Vec::new());

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    update_gate();
}

fn update_gate() {
    let instances = INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
    let most = instances
        .iter()
        .filter_map(|i| i.level)
        .map(|l| l as u8)
        .chain([LEVEL.load(Ordering::Relaxed)])
        .max()
        .unwrap_or(Level::Info as u8);
    GATE.store(most, Ordering::Relaxed);
}

/// Sets the per-instance settings (`log_level`, `log_suppress_interval`) of every plugin
/// instance that has them, replacing earlier ones (a reload builds them again).
pub fn set_instances(settings: Vec<(String, Option<Level>, Option<std::time::Duration>)>) {
    *INSTANCES.lock().unwrap_or_else(|e| e.into_inner()) = settings
        .into_iter()
        .map(|(name, level, suppress)| InstanceLog {
            name,
            level,
            suppress,
            recent: Default::default(),
        })
        .collect();
    update_gate();
}

/// Whether anything may print at `level` (the service level, or a more verbose
/// instance level: the instance's own messages are checked in [`log`]).
pub fn enabled(level: Level) -> bool {
    level != Level::Off && level as u8 <= GATE.load(Ordering::Relaxed)
}

/// The instance a message is about: `[input:tail:tail.0] ...` → `tail.0`.
fn instance_of(msg: &str) -> Option<(&str, &str)> {
    let rest = msg.strip_prefix('[')?;
    let end = rest.find(']')?;
    let mut parts = rest[..end].splitn(3, ':');
    let kind = parts.next()?;
    if !matches!(kind, "input" | "filter" | "output") {
        return None;
    }
    parts.next()?;
    Some((parts.next()?, &rest[end + 1..]))
}

/// Whether a message at `level` prints, by its instance's settings when it has them
/// (and records it for `log_suppress_interval`).
fn admit(level: Level, text: &str) -> bool {
    let global = level as u8 <= LEVEL.load(Ordering::Relaxed);
    let mut instances = INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
    if instances.is_empty() {
        return global;
    }
    let Some((name, body)) = instance_of(text) else {
        return global;
    };
    let Some(i) = instances.iter_mut().find(|i| i.name == name) else {
        return global;
    };
    if !i.level.map_or(global, |l| level <= l) {
        return false;
    }
    if let Some(interval) = i.suppress {
        let now = std::time::Instant::now();
        if i.recent.len() > 1024 {
            i.recent.retain(|_, at| now.duration_since(*at) < interval);
        }
        if let Some(at) = i.recent.get(body) {
            if now.duration_since(*at) < interval {
                return false;
            }
        }
        i.recent.insert(body.to_string(), now);
    }
    true
}

/// Sends log lines to `path` (appending) instead of stderr.
pub fn set_file(path: &str) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}

/// Local time as `YYYY/MM/DD HH:MM:SS`, plus milliseconds.
fn timestamp() -> (String, u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r writes only into the tm we pass and reads the local zone.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    (
        format!(
            "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        now.subsec_millis(),
    )
}

fn write_line(line: &str) {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    match sink.as_mut() {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Writes one line at `level` if enabled: `[time] [level] msg`.
pub fn log(level: Level, msg: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let text = msg.to_string();
    if !admit(level, &text) {
        return;
    }
    let (ts, ms) = timestamp();
    write_line(&format!("[{ts}.{ms:03}] [{}] {text}\n", level.label()));
}

/// Fluent Bit's `[ help]` line, printed with errors.
pub fn help(msg: std::fmt::Arguments<'_>) {
    if !enabled(Level::Error) {
        return;
    }
    let (ts, ms) = timestamp();
    write_line(&format!("[{ts}.{ms:03}] [ help] {msg}\n"));
}

/// A line without level and milliseconds, as Fluent Bit's signal handler writes it:
/// `[2026/11/22 21:22:58] [engine] caught signal (SIGINT)`. Printed even with `-q`.
pub fn raw(msg: std::fmt::Arguments<'_>) {
    let (ts, _) = timestamp();
    write_line(&format!("[{ts}] {msg}\n"));
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { if $crate::log::enabled($crate::log::Level::Debug) { $crate::log::log($crate::log::Level::Debug, format_args!($($t)*)) } } }
#[macro_export]
macro_rules! trace { ($($t:tt)*) => { if $crate::log::enabled($crate::log::Level::Trace) { $crate::log::log($crate::log::Level::Trace, format_args!($($t)*)) } } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("nope"), None);
        assert!(Level::Error < Level::Debug);
        assert_eq!(Level::Info.label(), " info");
    }

    #[test]
    fn instances_are_found_in_their_messages() {
        assert_eq!(
            instance_of("[input:tail:tail.0] file=x"),
            Some(("tail.0", " file=x"))
        );
        assert_eq!(
            instance_of("[filter:lua:my:alias] x"),
            Some(("my:alias", " x"))
        );
        assert_eq!(instance_of("[engine] x"), None);
        assert_eq!(instance_of("no prefix"), None);
    }

    #[test]
    fn an_instance_has_its_own_level_and_suppression() {
        set_instances(vec![
            (
                "sup.0".into(),
                None,
                Some(std::time::Duration::from_secs(3600)),
            ),
            ("loud.0".into(), Some(Level::Trace), None),
            ("quiet.0".into(), Some(Level::Error), None),
        ]);
        assert!(enabled(Level::Trace), "an instance at trace opens the gate");
        assert!(admit(Level::Warn, "[input:x:sup.0] same"));
        assert!(
            !admit(Level::Warn, "[input:x:sup.0] same"),
            "repeated within the interval"
        );
        assert!(admit(Level::Warn, "[input:x:sup.0] other"));
        assert!(admit(Level::Trace, "[filter:x:loud.0] detail"));
        assert!(!admit(Level::Info, "[output:x:quiet.0] chatter"));
        assert!(admit(Level::Error, "[output:x:quiet.0] broken"));
        assert!(!admit(
            Level::Debug,
            "[engine] not an instance: the service level"
        ));
        set_instances(Vec::new());
        assert!(!enabled(Level::Trace));
    }

    #[test]
    fn timestamp_shape() {
        let (ts, ms) = timestamp();
        assert_eq!(ts.len(), 19, "{ts}");
        assert_eq!(&ts[4..5], "/");
        assert!(ms < 1000);
    }
}
