//! `kmsg` input: the kernel log, read from `/dev/kmsg` (every message still in the
//! kernel's buffer, then new ones as they come). Needs read access to `/dev/kmsg`
//! (root, or CAP_SYSLOG when `kernel.dmesg_restrict` is set).
//! Fluent Bit: plugins/in_kmsg/in_kmsg.c
//!
//! Record: `priority` (the syslog level, 0-7), `sequence`, `sec` and `usec` (the time
//! since boot the kernel stamped), `msg` (the text after `;`, with the `KEY=value`
//! continuation lines some drivers add). The record time is the boot time plus `sec`
//! (plus `usec`), the boot time computed as Fluent Bit does it. Messages whose level
//! is above `prio_level` are dropped.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;

use super::MAX_BATCH;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Record, Str, Value};
use crate::parser::types::text_value;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[PropSpec::new(
    "prio_level",
    PropKind::Int,
    Some("8"),
    "The log level to filter. The kernel log is dropped if its priority is more than prio_level. Allowed values are 0-8. Default is 8.",
)];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "kmsg",
    description: "Kernel Log Buffer",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

const DEV: &str = "/dev/kmsg";

/// Larger than any record the kernel writes (a read shorter than the record fails).
const BUF_SIZE: usize = 8192;

struct KmsgInput {
    prio_level: i64,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let prio_level = props.int("prio_level").unwrap_or(8);
    if !(0..=8).contains(&prio_level) {
        return Err(props.error("prio_level", "a level from 0 (emerg) to 8 (everything)"));
    }
    Ok(Box::new(KmsgInput { prio_level }))
}

/// Fluent Bit's boot time, in whole seconds since the epoch: now minus the uptime of
/// `/proc/uptime`, whose hundredths are read as microseconds (as Fluent Bit does; the
/// result can be a second later than the true boot time).
fn boot_secs(uptime: &str, now_usec: u64) -> Option<i64> {
    let first = uptime.split_ascii_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, ""));
    let secs: u64 = secs.parse().ok()?;
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let up = secs.checked_mul(1_000_000)?.checked_add(frac)?;
    Some((now_usec.wrapping_sub(up) / 1_000_000) as i64)
}

/// `(value, rest)` of C's `strtoull` / `strtol` on the leading digits (an optional
/// sign for `strtol`).
fn leading_int(s: &[u8]) -> Option<(i64, &[u8])> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    let v: i64 = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    Some((if neg { -v } else { v }, &digits[end..]))
}

/// One `/dev/kmsg` record: `PRI,SEQ,USEC,FLAGS[,..];TEXT\n[ KEY=value\n]...`.
#[derive(Debug, PartialEq)]
struct Message<'a> {
    priority: i64,
    sequence: u64,
    usec_since_boot: u64,
    msg: &'a [u8],
}

fn parse(rec: &[u8]) -> Option<Message<'_>> {
    let (pri, _) = leading_int(rec)?;
    let after_pri = &rec[rec.iter().position(|&b| b == b',')? + 1..];
    let (seq, rest) = leading_int(after_pri)?;
    let (usec, rest) = leading_int(rest.get(1..)?)?;
    let text = &rest[rest.iter().position(|&b| b == b';')? + 1..];
    Some(Message {
        priority: pri & 7,
        sequence: seq as u64,
        usec_since_boot: usec as u64,
        // Fluent Bit drops the last byte, the record's final newline.
        msg: &text[..text.len().saturating_sub(1)],
    })
}

impl Input for KmsgInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let name = ctx.name.clone();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(DEV)
                .map_err(|e| PluginError::Io {
                    context: format!("cannot open {DEV}"),
                    source: e,
                })?;
            let now_usec = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros() as u64;
            let boot = std::fs::read_to_string("/proc/uptime")
                .ok()
                .and_then(|u| boot_secs(&u, now_usec))
                .ok_or_else(|| {
                    PluginError::Other(
                        "could not get system boot time for kmsg input plugin".into(),
                    )
                })?;
            // SAFETY: the `File` owns its descriptor and closes it only when dropped,
            // which happens with the `AsyncFd`; `as_raw_fd` always returns that one.
            let fd = unsafe { AsyncFd::register(file) }.map_err(|e| PluginError::Io {
                context: format!("cannot poll {DEV}"),
                source: e.into_parts().1,
            })?;
            let keys: [Str; 5] = ["priority", "sequence", "sec", "usec", "msg"].map(Str::from);
            let mut buf = vec![0u8; BUF_SIZE];
            let mut lost_logged = false;
            loop {
                let mut guard = tokio::select! {
                    _ = ctx.shutdown.wait() => return Ok(()),
                    g = fd.readable() => g.map_err(|e| PluginError::Io { context: format!("poll {DEV}"), source: e })?,
                };
                let mut records = Vec::new();
                while (records.len() as u64) < MAX_BATCH {
                    let n = match guard.try_io(|f| f.get_ref().read(&mut buf)) {
                        Err(_would_block) => break,
                        Ok(Ok(n)) => n,
                        // Messages were overwritten before being read: go on with the
                        // oldest still there.
                        Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                            if !lost_logged {
                                crate::warn!("[input:kmsg:{name}] kernel messages were overwritten before being read");
                                lost_logged = true;
                            }
                            continue;
                        }
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Ok(Err(e)) => {
                            return Err(PluginError::Io {
                                context: format!("read {DEV}"),
                                source: e,
                            })
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    let Some(m) = parse(&buf[..n]) else {
                        crate::debug!("[input:kmsg:{name}] unreadable record skipped");
                        continue;
                    };
                    if m.priority > self.prio_level {
                        continue;
                    }
                    let (sec, usec) =
                        (m.usec_since_boot / 1_000_000, m.usec_since_boot % 1_000_000);
                    let time = EventTime::new(boot + sec as i64, (usec * 1000) as u32);
                    records.push(Record::new(
                        time,
                        vec![
                            (keys[0].clone(), Value::Int(m.priority)),
                            (keys[1].clone(), Value::UInt(m.sequence)),
                            (keys[2].clone(), Value::UInt(sec)),
                            (keys[3].clone(), Value::UInt(usec)),
                            (keys[4].clone(), text_value(m.msg)),
                        ],
                    ));
                }
                if !records.is_empty() {
                    ctx.out.send(records).await?;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_record() {
        let m = parse(b"6,1234,5678901234,-;usb 1-1: new device\n").unwrap();
        assert_eq!(
            m,
            Message {
                priority: 6,
                sequence: 1234,
                usec_since_boot: 5678901234,
                msg: b"usb 1-1: new device",
            }
        );
        // The facility is masked off; continuation lines stay in the text.
        let m = parse(b"30,7,100,c;line\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:01.0\n").unwrap();
        assert_eq!(m.priority, 6);
        assert_eq!(m.msg, b"line\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:01.0");
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"6,1,2,-no text"), None);
    }

    #[test]
    fn boot_time_as_fluent_bit_computes_it() {
        // 23069.50 s up: Fluent Bit subtracts 23069 s and 50 µs.
        assert_eq!(
            boot_secs("23069.50 20909.79\n", 1_700_000_000_000_000),
            Some(1_699_976_930)
        );
        assert_eq!(
            boot_secs("23069.50 20909.79\n", 1_700_000_000_000_049),
            Some(1_699_976_930)
        );
        assert_eq!(
            boot_secs("23069.50 20909.79\n", 1_700_000_000_000_051),
            Some(1_699_976_931)
        );
        assert_eq!(boot_secs("x", 0), None);
    }
}
