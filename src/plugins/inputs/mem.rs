//! `mem` input: memory and swap use from sysinfo(2), in KiB, one record per interval;
//! with `pid`, also that process's resident set size.
//! Fluent Bit: plugins/in_mem/mem.c, proc.c
//!
//! Record: `Mem.total`, `Mem.used`, `Mem.free`, `Swap.total`, `Swap.used`, `Swap.free`
//! (unsigned integers, KiB; "free" is sysinfo's `freeram`), then with `pid`
//! `proc_bytes` (RSS in bytes) and `proc_hr` (the same, human readable: `3.88M`).

use std::sync::Arc;
use std::time::Duration;

use super::collect_every;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Record, Str, Value};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    super::INTERVAL_SEC,
    super::INTERVAL_NSEC,
    PropSpec::new(
        "pid",
        PropKind::Int,
        Some("0"),
        "Set the PID of the process to measure (0: none).",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "mem",
    description: "Memory Usage",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

struct MemInput {
    pid: Option<i64>,
    interval: Duration,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let interval = props.interval("interval_sec", "interval_nsec")?;
    // Fluent Bit resets each half on its own: `interval_sec 0` is 1 s even with
    // nanoseconds set (so `0` + `500000000` runs every 1.5 s).
    let secs = match interval.as_secs() {
        0 => 1,
        s => s,
    };
    let pid = props.int("pid").unwrap_or(0);
    Ok(Box::new(MemInput {
        pid: (pid != 0).then_some(pid),
        interval: Duration::new(secs, interval.subsec_nanos()),
    }))
}

/// sysinfo(2) values in KiB.
#[derive(Debug, PartialEq)]
struct Usage {
    mem_total: u64,
    mem_free: u64,
    swap_total: u64,
    swap_free: u64,
}

fn kib(amount: u64, unit: u32) -> u64 {
    amount.wrapping_mul(u64::from(unit.max(1))) / 1024
}

fn sysinfo() -> std::io::Result<Usage> {
    // SAFETY: sysinfo fills the struct we own; all-zero is a valid `libc::sysinfo`.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut info) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = info.mem_unit;
    Ok(Usage {
        mem_total: kib(info.totalram as u64, unit),
        mem_free: kib(info.freeram as u64, unit),
        swap_total: kib(info.totalswap as u64, unit),
        swap_free: kib(info.freeswap as u64, unit),
    })
}

/// The resident set size in pages: the 22nd field after the command name of
/// `/proc/PID/stat`.
fn rss_pages(stat: &str) -> Option<i64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(21)?.parse().ok()
}

/// Fluent Bit's `human_readable_size`: `512 b`, `3.88M`, `1.50G` (binary units, the
/// value rounded through a C `float`).
fn human_readable(size: i64) -> String {
    const UNITS: [&str; 9] = ["b", "K", "M", "G", "T", "P", "E", "Z", "Y"];
    // The largest power of 1024 that fits in `size` at least once.
    let (mut divisor, mut i) = (1i64, 0);
    while i + 1 < UNITS.len() {
        match divisor.checked_mul(1024) {
            Some(next) if size / next != 0 => {
                divisor = next;
                i += 1;
            }
            _ => break,
        }
    }
    if i == 0 {
        format!("{size} {}", UNITS[0])
    } else {
        let f = (size as f64 / divisor as f64) as f32;
        format!("{f:.2}{}", UNITS[i])
    }
}

impl Input for MemInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let keys: [Str; 8] = [
                "Mem.total",
                "Mem.used",
                "Mem.free",
                "Swap.total",
                "Swap.used",
                "Swap.free",
                "proc_bytes",
                "proc_hr",
            ]
            .map(Arc::from);
            let page_size = super::sysconf(libc::_SC_PAGESIZE);
            let name = ctx.name.clone();
            let mut pid = self.pid;
            collect_every(&mut ctx, self.interval, || {
                let rss = pid.and_then(|p| {
                    let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok();
                    let pages = stat.as_deref().and_then(rss_pages);
                    if pages.is_none() {
                        // Fluent Bit stops measuring the process from then on.
                        crate::warn!("[input:mem:{name}] could not measure PID {p}");
                        pid = None;
                    }
                    pages.map(|p| p.wrapping_mul(page_size))
                });
                let m = match sysinfo() {
                    Ok(m) => m,
                    Err(e) => {
                        crate::error!("[input:mem:{name}] sysinfo: {e}");
                        return None;
                    }
                };
                let values = [
                    m.mem_total,
                    m.mem_total.wrapping_sub(m.mem_free),
                    m.mem_free,
                    m.swap_total,
                    m.swap_total.wrapping_sub(m.swap_free),
                    m.swap_free,
                ];
                let mut body = Vec::with_capacity(8);
                for (k, v) in keys.iter().zip(values) {
                    body.push((k.clone(), Value::UInt(v)));
                }
                if let Some(bytes) = rss {
                    body.push((keys[6].clone(), Value::UInt(bytes as u64)));
                    body.push((keys[7].clone(), Value::Str(human_readable(bytes).into())));
                }
                Some(Record::new(EventTime::now(), body))
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kib_applies_the_unit() {
        assert_eq!(kib(24684084 * 1024, 1), 24684084);
        assert_eq!(kib(6171021, 4096), 24684084);
        assert_eq!(kib(1023, 1), 0);
    }

    #[test]
    fn sysinfo_reads_this_machine() {
        let m = sysinfo().unwrap();
        assert!(m.mem_total > 0 && m.mem_free <= m.mem_total, "{m:?}");
        assert!(m.swap_free <= m.swap_total, "{m:?}");
    }

    #[test]
    fn rss_is_the_24th_field() {
        let line = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 1433 0 0 0 250 75 0 0 20 0 1 0 1234 10000 992 18446744073709551615\n";
        assert_eq!(rss_pages(line), Some(992));
        assert_eq!(rss_pages("1 (x) S 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(rss_pages(&own).unwrap() > 0);
    }

    #[test]
    fn human_readable_sizes_as_fluent_bit() {
        assert_eq!(human_readable(0), "0 b");
        assert_eq!(human_readable(1023), "1023 b");
        assert_eq!(human_readable(1024), "1.00K");
        assert_eq!(human_readable(4063232), "3.88M");
        assert_eq!(human_readable(1536 * 1024 * 1024), "1.50G");
        assert_eq!(human_readable(i64::MAX), "8.00E");
    }
}
