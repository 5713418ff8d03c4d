//! `netif` input: traffic of one network interface during each interval, from
//! `/proc/net/dev`.
//! Fluent Bit: plugins/in_netif/in_netif.c
//!
//! Record: `<interface>.rx.bytes`, `.rx.packets`, `.rx.errors`, `.tx.bytes`,
//! `.tx.packets`, `.tx.errors` (unsigned, growth since the previous tick); `verbose`
//! adds every counter of the line, in the kernel's order (Fluent Bit's names, including
//! its `tx.compressepd`). The first record comes at the second tick. An interface is
//! matched by prefix, as Fluent Bit (`eth` reads the last `eth*` line).

use std::time::Duration;

use super::collect_every;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Record, Str, Value};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "interface",
        PropKind::Str,
        None,
        "Set the interface, eg: eth0 or enp1s0.",
    ),
    super::INTERVAL_SEC,
    super::INTERVAL_NSEC,
    PropSpec::new(
        "verbose",
        PropKind::Bool,
        Some("false"),
        "Enable verbosity: every counter of the interface.",
    ),
    PropSpec::new(
        "test_at_init",
        PropKind::Bool,
        Some("false"),
        "Testing interface at initialization.",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "netif",
    description: "Network Interface Usage",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

const NET_DEV: &str = "/proc/net/dev";

/// The counters of a `/proc/net/dev` line, in order, and whether they are reported
/// without `verbose`.
const ENTRIES: [(&str, bool); 16] = [
    ("rx.bytes", true),
    ("rx.packets", true),
    ("rx.errors", true),
    ("rx.drop", false),
    ("rx.fifo", false),
    ("rx.frame", false),
    ("rx.compressed", false),
    ("rx.multicast", false),
    ("tx.bytes", true),
    ("tx.packets", true),
    ("tx.errors", true),
    ("tx.drop", false),
    ("tx.fifo", false),
    ("tx.collisions", false),
    ("tx.carrier", false),
    ("tx.compressepd", false),
];

struct NetifInput {
    interface: String,
    verbose: bool,
    test_at_init: bool,
    interval: Duration,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let Some(interface) = props.str("interface").filter(|i| !i.is_empty()) else {
        return Err(ConfigError::invalid(
            props.span(),
            "[input:netif] 'interface' is not set",
            Some("set 'interface' to a name listed in /proc/net/dev, e.g. 'interface eth0'".into()),
        ));
    };
    Ok(Box::new(NetifInput {
        interface: interface.to_string(),
        verbose: props.bool("verbose").unwrap_or(false),
        test_at_init: props.bool("test_at_init").unwrap_or(false),
        interval: super::interval_or_1s(props)?,
    }))
}

/// Fluent Bit's `strtoul`: the leading digits, 0 without any.
fn leading_u64(s: &str) -> u64 {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s[..end].parse().unwrap_or(0)
}

/// Reads the counters of the (last) line whose name starts with `interface` into
/// `now`; `false` when there is none.
fn read_counters(text: &str, interface: &str, now: &mut [u64; 16]) -> bool {
    let mut found = false;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if !name.trim_start().starts_with(interface) {
            continue;
        }
        let mut values = [0u64; 16];
        let mut n = 0;
        for (slot, field) in values.iter_mut().zip(rest.split_ascii_whitespace()) {
            *slot = leading_u64(field);
            n += 1;
        }
        if n == 16 && rest.split_ascii_whitespace().nth(16).is_none() {
            *now = values;
            found = true;
        }
    }
    found
}

/// The growth of a counter; one that went down is taken as wrapped.
fn growth(pre: u64, now: u64) -> u64 {
    if pre <= now {
        now - pre
    } else {
        now.wrapping_add(u64::MAX - pre)
    }
}

impl Input for NetifInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let name = ctx.name.clone();
            let read = |now: &mut [u64; 16]| -> std::io::Result<bool> {
                Ok(read_counters(
                    &std::fs::read_to_string(NET_DEV)?,
                    &self.interface,
                    now,
                ))
            };
            let (mut pre, mut now) = ([0u64; 16], [0u64; 16]);
            if self.test_at_init {
                match read(&mut now) {
                    Ok(true) => {
                        crate::info!("[input:netif:{name}] {}: init test passed", self.interface)
                    }
                    _ => {
                        return Err(PluginError::Other(format!(
                            "{}: init test failed (no such interface in {NET_DEV})",
                            self.interface
                        )))
                    }
                }
            }
            let keys: Vec<(usize, Str)> = ENTRIES
                .iter()
                .enumerate()
                .filter(|(_, (_, default))| self.verbose || *default)
                .map(|(i, (n, _))| (i, Str::from(format!("{}.{n}", self.interface))))
                .collect();
            let mut first = true;
            let mut missing_logged = false;
            collect_every(&mut ctx, self.interval, || {
                match read(&mut now) {
                    Ok(true) => missing_logged = false,
                    // Fluent Bit keeps the last values: a vanished interface reads 0.
                    Ok(false) if !missing_logged => {
                        crate::warn!(
                            "[input:netif:{name}] no interface '{}' in {NET_DEV}",
                            self.interface
                        );
                        missing_logged = true;
                    }
                    Ok(false) => {}
                    Err(e) => crate::error!("[input:netif:{name}] cannot open {NET_DEV}: {e}"),
                }
                if std::mem::take(&mut first) {
                    pre = now;
                    return None;
                }
                let body = keys
                    .iter()
                    .map(|(i, k)| (k.clone(), Value::UInt(growth(pre[*i], now[*i]))))
                    .collect();
                pre = now;
                Some(Record::new(EventTime::now(), body))
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 16833395155  440082    0    0    0     0          0         0 16833395155  440082    0    0    0     0       0          0
  eth0: 177547017    8445    1    2    3     4          5         6   533206    5458    7    8    9    10      11         12
";

    #[test]
    fn reads_the_interfaces_line() {
        let mut now = [0u64; 16];
        assert!(read_counters(DEV, "eth0", &mut now));
        assert_eq!(
            now,
            [177547017, 8445, 1, 2, 3, 4, 5, 6, 533206, 5458, 7, 8, 9, 10, 11, 12]
        );
        assert!(read_counters(DEV, "lo", &mut now));
        assert_eq!(now[0], 16833395155);
        assert!(!read_counters(DEV, "wlan0", &mut now));
        // Old kernels glue a wide first counter to the colon.
        assert!(read_counters(
            "  eth1:1234567890 1 0 0 0 0 0 0 2 3 0 0 0 0 0 0\n",
            "eth1",
            &mut now
        ));
        assert_eq!(now[0], 1234567890);
    }

    #[test]
    fn growth_wraps() {
        assert_eq!(growth(5, 7), 2);
        assert_eq!(growth(u64::MAX, 0), 0);
        assert_eq!(growth(u64::MAX - 2, 1), 3);
    }
}
