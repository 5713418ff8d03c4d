//! `disk` input: bytes read and written by the block devices during each interval,
//! from `/proc/diskstats`.
//! Fluent Bit: plugins/in_disk/in_disk.c
//!
//! Record: `read_size`, `write_size` (unsigned, bytes: sectors × 512, summed over the
//! devices whose name contains `dev_name`, or all of them). As Fluent Bit, the first
//! record comes at the second tick (the first only takes a sample), a counter that went
//! down is taken as wrapped, and devices are matched by their line in the file (the
//! lines present at start).

use std::time::Duration;

use super::collect_every;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Record, Str, Value};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    super::INTERVAL_SEC,
    super::INTERVAL_NSEC,
    PropSpec::new(
        "dev_name",
        PropKind::Str,
        None,
        "Set the device name (devices whose name contains it are counted).",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "disk",
    description: "Diskstats",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

const DISKSTATS: &str = "/proc/diskstats";

struct DiskInput {
    dev_name: Option<String>,
    interval: Duration,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(DiskInput {
        dev_name: props.str("dev_name").map(str::to_string),
        interval: super::interval_or_1s(props)?,
    }))
}

/// Sector counters of one line: (previous, latest).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counters {
    read: (u64, u64),
    write: (u64, u64),
}

/// Fluent Bit's `strtoull`: the leading digits, 0 without any.
fn leading_u64(s: &str) -> u64 {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s[..end].parse().unwrap_or(0)
}

/// Takes a sample of `/proc/diskstats` text into `lines` (one slot per line known).
fn update(text: &str, dev_name: Option<&str>, lines: &mut [Counters]) {
    for (line, c) in text.lines().zip(lines.iter_mut()) {
        let fields: Vec<&str> = line.split(' ').filter(|f| !f.is_empty()).take(10).collect();
        if let (Some(dev), Some(filter)) = (fields.get(2), dev_name) {
            if !dev.contains(filter) {
                continue;
            }
        }
        if let Some(f) = fields.get(5) {
            c.read = (c.read.1, leading_u64(f));
        }
        if let Some(f) = fields.get(9) {
            c.write = (c.write.1, leading_u64(f));
        }
    }
}

/// The growth of a counter; one that went down is taken as wrapped (Fluent Bit's
/// `ULONG_MAX` arithmetic).
fn growth((pre, now): (u64, u64)) -> u64 {
    if now >= pre {
        now - pre
    } else {
        now.wrapping_add(u64::MAX - pre)
    }
}

/// (read, write) bytes since the previous sample.
fn sizes(lines: &[Counters]) -> (u64, u64) {
    let (r, w) = lines.iter().fold((0u64, 0u64), |(r, w), c| {
        (
            r.wrapping_add(growth(c.read)),
            w.wrapping_add(growth(c.write)),
        )
    });
    (r.wrapping_mul(512), w.wrapping_mul(512))
}

impl Input for DiskInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let io = |e| PluginError::Io {
                context: format!("cannot read {DISKSTATS}"),
                source: e,
            };
            let text = std::fs::read_to_string(DISKSTATS).map_err(io)?;
            let entries = text.lines().count();
            if entries == 0 {
                return Err(PluginError::Other(format!("{DISKSTATS} lists no device")));
            }
            let mut lines = vec![Counters::default(); entries];
            let dev_name = self.dev_name.as_deref();
            update(&text, dev_name, &mut lines);
            let keys: [Str; 2] = ["read_size", "write_size"].map(Str::from);
            let name = ctx.name.clone();
            let mut first = true;
            let mut text = String::new();
            collect_every(&mut ctx, self.interval, || {
                text.clear();
                let read = std::fs::File::open(DISKSTATS)
                    .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut text));
                if let Err(e) = read {
                    crate::error!("[input:disk:{name}] cannot read {DISKSTATS}: {e}");
                    return None;
                }
                update(&text, dev_name, &mut lines);
                if std::mem::take(&mut first) {
                    return None;
                }
                let (read, write) = sizes(&lines);
                Some(Record::new(
                    EventTime::now(),
                    vec![
                        (keys[0].clone(), Value::UInt(read)),
                        (keys[1].clone(), Value::UInt(write)),
                    ],
                ))
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a Linux 6.18 machine (fields: major minor name reads merged
    // sectors-read ms writes merged sectors-written ...).
    const A: &str = "   7       0 loop0 12 0 2080 3 0 0 0 0 0 12 3 0 0 0 0 0 0
 254       0 vda 21016 5861 1812330 9561 180223 107457 6350688 125712 0 153648 147126 0 0 0 0 2760 11852
 254       1 vda1 20822 5861 1799298 9481 180223 107457 6350688 125712 0 153584 135194 0 0 0 0 0 0
";
    const B: &str = "   7       0 loop0 12 0 2080 3 0 0 0 0 0 12 3 0 0 0 0 0 0
 254       0 vda 21020 5861 1812362 9561 180230 107457 6350788 125712 0 153648 147126 0 0 0 0 2760 11852
 254       1 vda1 20826 5861 1799330 9481 180230 107457 6350788 125712 0 153584 135194 0 0 0 0 0 0
";

    #[test]
    fn bytes_are_sector_growth_times_512() {
        let mut lines = vec![Counters::default(); 3];
        update(A, None, &mut lines);
        update(B, None, &mut lines);
        // vda and vda1 each read 32 sectors and wrote 100.
        assert_eq!(sizes(&lines), (2 * 32 * 512, 2 * 100 * 512));

        let mut lines = vec![Counters::default(); 3];
        update(A, Some("vda1"), &mut lines);
        update(B, Some("vda1"), &mut lines);
        assert_eq!(sizes(&lines), (32 * 512, 100 * 512));
        // A name matches as a substring, as Fluent Bit's strstr.
        let mut lines = vec![Counters::default(); 3];
        update(A, Some("vd"), &mut lines);
        update(B, Some("vd"), &mut lines);
        assert_eq!(sizes(&lines), (2 * 32 * 512, 2 * 100 * 512));
    }

    #[test]
    fn a_counter_that_went_down_wrapped() {
        assert_eq!(growth((10, 15)), 5);
        assert_eq!(growth((u64::MAX - 1, 3)), 4);
    }

    #[test]
    fn reads_this_machines_diskstats() {
        let text = std::fs::read_to_string(DISKSTATS).unwrap();
        let mut lines = vec![Counters::default(); text.lines().count()];
        update(&text, None, &mut lines);
        update(&text, None, &mut lines);
        assert_eq!(sizes(&lines), (0, 0));
    }
}
