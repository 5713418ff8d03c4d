//! The `[SERVICE]` section: its table and the typed settings the engine reads.
//! Fluent Bit: src/flb_config.c (`service_configs[]`)

use std::time::Duration;

use super::error::{closest, ConfigError};
use super::model::{Entry, Span};
use super::props::{PropKind, PropSpec};
use super::values;
use crate::log::Level;

/// The `[SERVICE]` keys `agent` honours.
pub const SERVICE_PROPS: &[PropSpec] = &[
    PropSpec::new("flush", PropKind::Double, Some("1"), "Interval in seconds between flushes of buffered records to outputs (fractions allowed)."),
    PropSpec::new("grace", PropKind::Int, Some("5"), "Seconds to wait on shutdown for outputs to deliver what is buffered; -1 waits until everything is delivered.").range(-1, 315_360_000),
    PropSpec::new("log_level", PropKind::Enum(&["off", "error", "warn", "warning", "info", "debug", "trace"]), Some("info"), "Minimum level of log messages printed."),
    PropSpec::new("log_file", PropKind::Str, None, "Write log messages to this file instead of stderr."),
    PropSpec::new("json.escape_unicode", PropKind::Bool, Some("on"), "Escape non-ASCII characters as \\uXXXX in JSON output."),
    PropSpec::new("json.convert_nan_to_null", PropKind::Bool, Some("off"), "Accepted: agent always writes NaN and infinities as null, so JSON output stays valid (Fluent Bit writes nan/inf unless this is on)."),
    PropSpec::new("scheduler.base", PropKind::Int, Some("5"), "Base in seconds of the exponential retry backoff.").range(1, 315_360_000),
    PropSpec::new("scheduler.cap", PropKind::Int, Some("2000"), "Maximum retry backoff in seconds.").range(1, 315_360_000),
    PropSpec::new("daemon", PropKind::Bool, Some("off"), "Fork to the background (not supported: run agent under a supervisor such as systemd)."),
    PropSpec::new("http_server", PropKind::Bool, Some("off"), "Serve Fluent Bit's monitoring HTTP API (metrics, health)."),
    PropSpec::new("http_listen", PropKind::Str, Some("0.0.0.0"), "Address the HTTP server listens on."),
    PropSpec::new("http_port", PropKind::Int, Some("2020"), "Port of the HTTP server."),
    PropSpec::new("health_check", PropKind::Bool, Some("off"), "Serve /api/v1/health: unhealthy after too many output errors or failed retries within hc_period."),
    PropSpec::new("hc_errors_count", PropKind::Int, Some("5"), "Output errors within hc_period above which the agent is unhealthy."),
    PropSpec::new("hc_retry_failure_count", PropKind::Int, Some("5"), "Failed retries within hc_period above which the agent is unhealthy."),
    PropSpec::new("hc_period", PropKind::Int, Some("60"), "Seconds over which health counts errors and failed retries."),
    PropSpec::new("hot_reload", PropKind::Bool, Some("off"), "Reload the configuration on SIGHUP or POST /api/v2/reload, keeping buffered records."),
    PropSpec::new("hot_reload.token", PropKind::Str, None, "A secret that POST/PUT /api/v2/reload must carry as 'Authorization: Bearer TOKEN'; without it, reloads are accepted only from loopback clients. Not in Fluent Bit."),
    PropSpec::new("hot_reload.ensure_thread_safety", PropKind::Bool, Some("on"), "Accepted for compatibility: a reload always stops the running pipeline gracefully first."),
    PropSpec::new("multiline_buffer_limit", PropKind::Size, Some("2MB"), "Longest text a multiline record may join; the rest is cut and the record marked multiline_truncated (0: no limit)."),
    PropSpec::new("dns.mode", PropKind::Str, None, "Default net.dns.mode of every output (UDP; TCP is refused: the system resolver is used)."),
    PropSpec::new("dns.resolver", PropKind::Str, None, "Default net.dns.resolver of every output (LEGACY or ASYNC)."),
    PropSpec::new("dns.prefer_ipv4", PropKind::Bool, None, "Default net.dns.prefer_ipv4 of every output."),
    PropSpec::new("dns.prefer_ipv6", PropKind::Bool, None, "Default net.dns.prefer_ipv6 of every output."),
    PropSpec::new("plugins_file", PropKind::Str, None, "Fluent Bit's file of external plugins: accepted when it loads none (agent cannot load .so plugins)."),
    PropSpec::new("streams_file", PropKind::Str, None, "Fluent Bit's stream processor tasks: accepted when it defines none (agent has no stream processor)."),
    PropSpec::new("parsers_file", PropKind::Multi, None, "A file of [PARSER] and [MULTILINE_PARSER] sections (repeatable); relative paths are tried from the working directory, then from the main config file's directory."),
    PropSpec::new("storage.path", PropKind::Str, None, "Directory of chunk files for inputs with storage.type filesystem; replayed at start."),
    PropSpec::new("storage.sync", PropKind::Enum(&["normal", "full"]), Some("normal"), "normal: fsync a chunk file when it goes to outputs; full: after every write."),
    PropSpec::new("storage.checksum", PropKind::Bool, Some("off"), "CRC-32 every frame of a chunk file, checked on replay."),
    PropSpec::new("storage.max_chunks_up", PropKind::Int, Some("128"), "Most filesystem chunks in memory (handed to outputs, not yet delivered); beyond it the engine waits (inputs pause)."),
    PropSpec::new("flush.adaptive", PropKind::Bool, Some("off"), "Adapt the flush interval to the filesystem backlog against storage.total_limit_size: flush x2 (no pressure) to x0.5 (high), within min/max."),
    PropSpec::new("flush.adaptive.min_interval", PropKind::Double, Some("0.5"), "Shortest adaptive flush interval, seconds."),
    PropSpec::new("flush.adaptive.max_interval", PropKind::Double, Some("2.0"), "Longest adaptive flush interval, seconds."),
    PropSpec::new("flush.adaptive.low_pressure", PropKind::Double, Some("25"), "Backlog percent at or below which the interval is flush x2."),
    PropSpec::new("flush.adaptive.medium_pressure", PropKind::Double, Some("50"), "Backlog percent from which the interval is flush x0.75."),
    PropSpec::new("flush.adaptive.high_pressure", PropKind::Double, Some("75"), "Backlog percent from which the interval is flush x0.5."),
    PropSpec::new("flush.adaptive.up_steps", PropKind::Int, Some("2"), "Flushes in a row at a higher pressure before the interval shortens a level."),
    PropSpec::new("flush.adaptive.down_steps", PropKind::Int, Some("3"), "Flushes in a row at a lower pressure before the interval lengthens a level."),
    PropSpec::new("storage.metrics", PropKind::Bool, None, "Storage metrics: fluentbit_storage_* and fluentbit_input_storage_* (unless off); on: also GET /api/v1/storage."),
    PropSpec::new("storage.backlog.mem_limit", PropKind::Size, Some("5M"), "Bytes of replayed chunks in memory at once while the backlog of a previous run is delivered."),
];

/// Fluent Bit `[SERVICE]` keys that `agent` does not implement yet: accepted with a
/// warning so that existing configs still load, and the user knows they have no effect.
const SERVICE_NOT_YET: &[&str] = &[
    "hot_reload.timeout",
    "storage.backlog.flush_on_shutdown",
    "storage.delete_irrecoverable_chunks",
    "storage.trim_files",
    "storage.type",
    "storage.inherit",
    "storage.keep.rejected",
    "storage.rejected.path",
    "storage.rejected.limit",
    "coro_stack_size",
    "sp.convert_from_str_to_num",
    "security.fips_mode",
    "enable_chunk_trace",
    "windows.maxstdio",
];

/// `flush.adaptive on`: Fluent Bit 5's adaptive flush settings, sanitised as its
/// `flb_engine_adaptive_flush_init` does.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveFlush {
    pub min_interval: f64,
    pub max_interval: f64,
    pub low: f64,
    pub medium: f64,
    pub high: f64,
    pub up_steps: u32,
    pub down_steps: u32,
}

/// Typed `[SERVICE]` settings.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub flush: Duration,
    /// `None` = `grace -1`: wait until everything is delivered.
    pub grace: Option<Duration>,
    pub log_level: Level,
    pub log_file: Option<String>,
    pub escape_unicode: bool,
    pub scheduler_base: u64,
    pub scheduler_cap: u64,
    /// `http_listen:http_port` when `http_server` is on.
    pub http: Option<(String, u16)>,
    /// (hc_errors_count, hc_retry_failure_count, hc_period) when `health_check` is on.
    pub health: Option<(u64, u64, u64)>,
    pub hot_reload: bool,
    /// `hot_reload.token`: what `POST /api/v2/reload` must carry; `None` = loopback only.
    pub reload_token: Option<String>,
    /// `storage.path`, `storage.sync full`, `storage.checksum`.
    pub storage: Option<(std::path::PathBuf, bool, bool)>,
    /// `storage.max_chunks_up`, `storage.backlog.mem_limit`.
    pub storage_limits: (u64, u64),
    /// `flush.adaptive on` and its settings.
    pub flush_adaptive: Option<AdaptiveFlush>,
    /// `storage.metrics`: `None` (unset: the families, not `/api/v1/storage`, as
    /// Fluent Bit 5.1.1), `Some(true)` both, `Some(false)` neither.
    pub storage_metrics: Option<bool>,
    /// `multiline_buffer_limit`: the longest joined text of a multiline record.
    pub multiline_buffer_limit: usize,
    /// Every `parsers_file` in order, each with the line that named it.
    pub parsers_files: Vec<(String, Span)>,
    /// `dns.*`: defaults of the outputs' `net.dns.*`, as `net.dns.*` entries at the
    /// service's lines.
    pub dns_defaults: Vec<Entry>,
}

impl ServiceConfig {
    /// Reads merged `[SERVICE]` entries (command-line flags first, so that the file's
    /// keys override them, as Fluent Bit does). Keys set twice: the last wins.
    pub fn from_entries(entries: &[Entry]) -> Result<ServiceConfig, ConfigError> {
        let mut last: Vec<&Entry> = Vec::new();
        for e in entries {
            if let Some(spec) = SERVICE_PROPS.iter().find(|s| s.name == e.key) {
                let checked = match e.value.is_empty() {
                    true => Ok(()),
                    false => spec.validate(&e.value),
                };
                if let Err(expected) = checked {
                    return Err(ConfigError::BadValue {
                        span: e.span.clone(),
                        plugin: "service",
                        key: e.key.clone(),
                        value: e.value.clone(),
                        expected,
                    });
                }
                if spec.kind != PropKind::Multi {
                    last.retain(|x| x.key != e.key);
                }
                last.push(e);
            } else if SERVICE_NOT_YET.contains(&e.key.as_str()) {
                crate::warn!(
                    "{}: [config] service: '{}' is a Fluent Bit setting that agent does not support yet; it is ignored",
                    e.span, e.key
                );
            } else {
                let all = SERVICE_PROPS
                    .iter()
                    .map(|s| s.name)
                    .chain(SERVICE_NOT_YET.iter().copied());
                let hint = closest(&e.key, all)
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                crate::warn!(
                    "{}: [config] service: unknown property '{}' is ignored{hint}",
                    e.span,
                    e.key
                );
            }
        }
        let get = |name: &str| -> Option<&Entry> {
            last.iter()
                .copied()
                .find(|e| e.key == name && !e.value.is_empty())
        };
        let text = |name: &str| -> &str {
            get(name).map(|e| e.value.as_str()).unwrap_or_else(|| {
                SERVICE_PROPS
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(|s| s.default)
                    .unwrap_or("")
            })
        };
        let span = |name: &str| {
            get(name)
                .map(|e| e.span.clone())
                .unwrap_or_else(|| Span::new("[SERVICE]", 0))
        };

        let flush = values::parse_double(text("flush")).unwrap_or(1.0);
        // From 1 ms to a day: 1e-10 made a zero timer period (a panic), 1e20 overflowed.
        if !(0.001..=86400.0).contains(&flush) {
            return Err(ConfigError::invalid(
                &span("flush"),
                format!("[config] invalid flush value '{}'", text("flush")),
                Some(
                    "set 'flush' to a number of seconds from 0.001 to 86400, e.g. 1 or 0.5".into(),
                ),
            ));
        }
        let grace = values::parse_int(text("grace")).unwrap_or(5);
        let grace = match grace {
            -1 => None,
            g if g >= 0 => Some(Duration::from_secs(g as u64)),
            _ => {
                return Err(ConfigError::invalid(
                    &span("grace"),
                    format!("[config] invalid grace value '{grace}'"),
                    Some("set 'grace' to a number of seconds >= 0, or -1 to wait until everything is delivered".into()),
                ))
            }
        };
        if values::parse_bool(text("daemon")) == Some(true) {
            return Err(ConfigError::invalid(
                &span("daemon"),
                "[config] service: 'daemon on' is not supported",
                Some("remove 'daemon' and run agent under a supervisor (systemd, a Kubernetes DaemonSet)".into()),
            ));
        }
        let base = values::parse_int(text("scheduler.base")).unwrap_or(5);
        let cap = values::parse_int(text("scheduler.cap")).unwrap_or(2000);
        if base < 1 || cap < base {
            return Err(ConfigError::invalid(
                &span("scheduler.cap"),
                format!("[config] service: invalid retry backoff scheduler.base={base} scheduler.cap={cap}"),
                Some("use scheduler.base >= 1 and scheduler.cap >= scheduler.base".into()),
            ));
        }
        let port = values::parse_int(text("http_port")).unwrap_or(2020);
        let port = u16::try_from(port).map_err(|_| {
            ConfigError::invalid(
                &span("http_port"),
                format!("[config] service: invalid http_port {port}"),
                Some("use a port from 0 to 65535".into()),
            )
        })?;
        let http = (values::parse_bool(text("http_server")) == Some(true))
            .then(|| (text("http_listen").to_string(), port));
        let count = |k: &str| values::parse_int(text(k)).unwrap_or(0).max(0) as u64;
        let health = (values::parse_bool(text("health_check")) == Some(true)).then(|| {
            (
                count("hc_errors_count"),
                count("hc_retry_failure_count"),
                count("hc_period").max(1),
            )
        });
        let dns_defaults = [
            "dns.mode",
            "dns.resolver",
            "dns.prefer_ipv4",
            "dns.prefer_ipv6",
        ]
        .iter()
        .filter_map(|k| get(k))
        .map(|e| Entry {
            key: format!("net.{}", e.key),
            value: e.value.clone(),
            span: e.span.clone(),
        })
        .collect();
        let double = |name: &str| text(name).trim().parse::<f64>().unwrap_or(0.0);
        let steps = |name: &str| values::parse_int(text(name)).unwrap_or(1).clamp(1, 1000) as u32;
        let flush_adaptive =
            (values::parse_bool(text("flush.adaptive")) == Some(true)).then(|| {
                let min_interval = match double("flush.adaptive.min_interval") {
                    m if m <= 0.0 => 0.1,
                    m => m,
                };
                let (low, high) = (
                    double("flush.adaptive.low_pressure").max(0.0),
                    double("flush.adaptive.high_pressure").min(100.0),
                );
                AdaptiveFlush {
                    min_interval,
                    max_interval: double("flush.adaptive.max_interval").max(min_interval),
                    low,
                    medium: double("flush.adaptive.medium_pressure").max(low).min(high),
                    high,
                    up_steps: steps("flush.adaptive.up_steps"),
                    down_steps: steps("flush.adaptive.down_steps"),
                }
            });
        Ok(ServiceConfig {
            dns_defaults,
            flush_adaptive,
            storage_metrics: get("storage.metrics").and_then(|e| values::parse_bool(&e.value)),
            multiline_buffer_limit: values::parse_size(text("multiline_buffer_limit"))
                .unwrap_or(2_000_000) as usize,
            parsers_files: last
                .iter()
                .filter(|e| e.key == "parsers_file" && !e.value.is_empty())
                .map(|e| (e.value.clone(), e.span.clone()))
                .collect(),
            storage_limits: (
                values::parse_int(text("storage.max_chunks_up"))
                    .unwrap_or(128)
                    .max(1) as u64,
                values::parse_size(text("storage.backlog.mem_limit"))
                    .unwrap_or(5_000_000)
                    .max(1),
            ),
            storage: get("storage.path").map(|e| {
                (
                    std::path::PathBuf::from(&e.value),
                    text("storage.sync").eq_ignore_ascii_case("full"),
                    values::parse_bool(text("storage.checksum")) == Some(true),
                )
            }),
            hot_reload: values::parse_bool(text("hot_reload")) == Some(true),
            reload_token: match get("hot_reload.token") {
                Some(e) if e.value.trim().is_empty() => {
                    return Err(ConfigError::BadValue {
                        span: e.span.clone(),
                        plugin: "service",
                        key: e.key.clone(),
                        value: e.value.clone(),
                        expected: "a secret of at least one character (or remove the key to accept reloads from loopback only)".into(),
                    })
                }
                Some(e) => Some(e.value.trim().to_string()),
                None => None,
            },
            http,
            health,
            flush: Duration::from_secs_f64(flush),
            grace,
            log_level: Level::parse(text("log_level")).unwrap_or(Level::Info),
            log_file: get("log_file").map(|e| e.value.clone()),
            escape_unicode: values::parse_bool(text("json.escape_unicode")).unwrap_or(true),
            scheduler_base: base as u64,
            scheduler_cap: cap as u64,
        })
    }
}

/// `plugins_file` and `streams_file` name files of things agent cannot run: external
/// `.so` plugins and stream processor tasks. A file that defines none is accepted (the
/// example configs ship one with everything commented out); one that defines any is
/// refused at the line that names it, so that a config never starts doing less than it
/// says. Relative paths are found as `parsers_file` ones.
pub fn check_unsupported_files(
    entries: &[Entry],
    main_dir: Option<&std::path::Path>,
) -> Result<(), ConfigError> {
    for e in entries {
        let (section, key, what) = match e.key.as_str() {
            "plugins_file" => ("plugins", "path", "external plugins (.so files)"),
            "streams_file" => ("stream_task", "exec", "stream processor tasks"),
            _ => continue,
        };
        let path = super::resolve_path(&e.value, main_dir).map_err(|tried| {
            ConfigError::invalid(
                &e.span,
                format!(
                    "[config] {} not found, aborting (tried {})",
                    e.key,
                    tried.join(", ")
                ),
                Some(format!("fix the path, or remove the {} line", e.key)),
            )
        })?;
        let text = super::read_config_text(&path).map_err(|err| {
            ConfigError::invalid(
                &e.span,
                format!("[config] cannot read {} {}: {err}", e.key, path.display()),
                None,
            )
        })?;
        let mut current = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = h.trim().to_ascii_lowercase();
                continue;
            }
            let k = line.split_whitespace().next().unwrap_or("");
            if current == section && k.eq_ignore_ascii_case(key) {
                return Err(ConfigError::invalid(
                    &e.span,
                    format!(
                        "[config] {} defines {what}, which agent cannot run: '{line}' in {}",
                        e.key,
                        path.display()
                    ),
                    Some(format!(
                        "remove the {} line (or the entries of {}); nothing of it would run",
                        e.key,
                        path.display()
                    )),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, v: &str) -> Entry {
        Entry {
            key: k.into(),
            value: v.into(),
            span: Span::new("s.conf", 2),
        }
    }

    #[test]
    fn defaults() {
        let s = ServiceConfig::from_entries(&[]).unwrap();
        assert_eq!(s.flush, Duration::from_secs(1));
        assert_eq!(s.grace, Some(Duration::from_secs(5)));
        assert_eq!(s.log_level, Level::Info);
        assert!(s.escape_unicode);
    }

    #[test]
    fn last_wins_and_fractional_flush() {
        let s =
            ServiceConfig::from_entries(&[e("flush", "5"), e("flush", "0.25"), e("grace", "-1")])
                .unwrap();
        assert_eq!(s.flush, Duration::from_millis(250));
        assert_eq!(s.grace, None);
    }

    #[test]
    fn bad_values() {
        let err = ServiceConfig::from_entries(&[e("flush", "0")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "s.conf:2: [config] invalid flush value '0'"
        );
        let err = ServiceConfig::from_entries(&[e("log_level", "loud")]).unwrap_err();
        assert!(
            err.to_string().contains("expected one of: off, error"),
            "{err}"
        );
        let err = ServiceConfig::from_entries(&[e("grace", "soon")]).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "s.conf:2: [config] service: invalid value 'soon' for property 'grace'"
            ),
            "{err}"
        );
    }
}
