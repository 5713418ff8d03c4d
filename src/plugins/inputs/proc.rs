//! `proc` input: whether a process is running, found by name at every interval, with
//! its memory and open file count.
//! Fluent Bit: plugins/in_proc/in_proc.c
//!
//! Record: `alive` (bool), `proc_name`, `pid` (-1 when not found), then with `mem`
//! `mem.VmPeak`, `mem.VmSize`, `mem.VmLck`, `mem.VmHWM`, `mem.VmRSS`, `mem.VmData`,
//! `mem.VmStk`, `mem.VmExe`, `mem.VmLib`, `mem.VmPTE`, `mem.VmSwap` (from
//! `/proc/PID/status`, the kB figure × 1000 as Fluent Bit computes it), then with `fd`
//! `fd` (entries of `/proc/PID/fd`). With `alert`, records are made only while the
//! process is not running. The process is the first, in Fluent Bit's order (`/proc/*`
//! sorted as text), whose command's base name is `proc_name`.

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
        "alert",
        PropKind::Bool,
        Some("false"),
        "Only generate alerts if process is down.",
    ),
    PropSpec::new(
        "mem",
        PropKind::Bool,
        Some("true"),
        "Append memory usage to record.",
    ),
    PropSpec::new(
        "fd",
        PropKind::Bool,
        Some("true"),
        "Append fd count to record.",
    ),
    PropSpec::new(
        "proc_name",
        PropKind::Str,
        None,
        "Define process name to health check.",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "proc",
    description: "Check Process health",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

/// `/proc/PID/status` lines read, as `Vm<name>:`, and their record keys.
const MEM: [(&str, &str); 11] = [
    ("Peak", "mem.VmPeak"),
    ("Size", "mem.VmSize"),
    ("Lck", "mem.VmLck"),
    ("HWM", "mem.VmHWM"),
    ("RSS", "mem.VmRSS"),
    ("Data", "mem.VmData"),
    ("Stk", "mem.VmStk"),
    ("Exe", "mem.VmExe"),
    ("Lib", "mem.VmLib"),
    ("PTE", "mem.VmPTE"),
    ("Swap", "mem.VmSwap"),
];

/// Fluent Bit reads at most this much of `/proc/PID/cmdline`.
const CMD_LEN: usize = 256;

struct ProcInput {
    proc_name: Arc<str>,
    alert: bool,
    mem: bool,
    fd: bool,
    interval: Duration,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let Some(proc_name) = props.str("proc_name").filter(|p| !p.is_empty()) else {
        return Err(ConfigError::invalid(
            props.span(),
            "[input:proc] 'proc_name' is not set",
            Some("set 'proc_name' to the command name to watch, e.g. 'proc_name nginx'".into()),
        ));
    };
    Ok(Box::new(ProcInput {
        proc_name: Arc::from(proc_name),
        alert: props.bool("alert").unwrap_or(false),
        mem: props.bool("mem").unwrap_or(true),
        fd: props.bool("fd").unwrap_or(true),
        interval: super::interval_or_1s(props)?,
    }))
}

/// POSIX `basename` of the command's first argument (what precedes the first NUL).
fn command_base(cmdline: &[u8]) -> &[u8] {
    let arg = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let trimmed = match arg.iter().rposition(|&b| b != b'/') {
        Some(end) => &arg[..=end],
        None if arg.is_empty() => return b".",
        None => return b"/",
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

/// The pid of the first process named `name`, in the order of Fluent Bit's
/// `glob("/proc/*/cmdline")` (names sorted as text: 10 before 9).
fn find_pid(name: &str) -> Option<i64> {
    let mut pids: Vec<String> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    pids.sort_unstable();
    let mut buf = [0u8; CMD_LEN];
    pids.into_iter().find_map(|pid| {
        let n = std::io::Read::read(
            &mut std::fs::File::open(format!("/proc/{pid}/cmdline")).ok()?,
            &mut buf,
        )
        .ok()?;
        let cmd = &buf[..n.min(CMD_LEN - 1)];
        (n > 0 && command_base(cmd) == name.as_bytes()).then(|| pid.parse().ok())?
    })
}

/// `Vm*` figures of `/proc/PID/status`, in `MEM` order: every digit of the line, × 1000.
fn vm_sizes(status: &str) -> [u64; 11] {
    let mut out = [0u64; 11];
    for line in status.lines() {
        let Some(rest) = line.strip_prefix("Vm") else {
            continue;
        };
        let label = rest
            .split(|c: char| c == ':' || c.is_whitespace())
            .next()
            .unwrap_or("");
        if let Some(i) = MEM.iter().position(|(k, _)| *k == label) {
            let digits = line.bytes().filter(u8::is_ascii_digit).fold(0u64, |n, d| {
                n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
            });
            out[i] = digits.wrapping_mul(1000);
        }
    }
    out
}

impl Input for ProcInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let name = ctx.name.clone();
            let keys: [Str; 3] = ["alive", "proc_name", "pid"].map(Str::from);
            let mem_keys: Vec<Str> = MEM.iter().map(|(_, k)| Str::from(*k)).collect();
            let fd_key = Str::from("fd");
            let proc_name = Value::Str(self.proc_name.clone());
            // The last failure logged, so that one that lasts is reported once.
            let mut logged: Option<String> = None;
            collect_every(&mut ctx, self.interval, || {
                let pid = find_pid(&self.proc_name);
                if pid.is_some() && self.alert {
                    return None;
                }
                let mut failure = None;
                let mem = match pid.filter(|_| self.mem) {
                    Some(p) => match std::fs::read_to_string(format!("/proc/{p}/status")) {
                        Ok(s) => vm_sizes(&s),
                        Err(e) => {
                            failure = Some(format!("open error: /proc/{p}/status: {e}"));
                            [0; 11]
                        }
                    },
                    None => [0; 11],
                };
                let fds = match pid.filter(|_| self.fd) {
                    Some(p) => match std::fs::read_dir(format!("/proc/{p}/fd")) {
                        Ok(d) => d.count() as u64,
                        Err(e) => {
                            failure = Some(format!("opendir error /proc/{p}/fd: {e}"));
                            0
                        }
                    },
                    None => 0,
                };
                if failure != logged {
                    if let Some(f) = &failure {
                        crate::error!("[input:proc:{name}] {f}");
                    }
                    logged = failure;
                }
                let mut body = Vec::with_capacity(15);
                body.push((keys[0].clone(), Value::Bool(pid.is_some())));
                body.push((keys[1].clone(), proc_name.clone()));
                body.push((keys[2].clone(), Value::Int(pid.unwrap_or(-1))));
                if self.mem {
                    for (k, v) in mem_keys.iter().zip(mem) {
                        body.push((k.clone(), Value::UInt(v)));
                    }
                }
                if self.fd {
                    body.push((fd_key.clone(), Value::UInt(fds)));
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
    fn the_base_name_of_the_first_argument() {
        assert_eq!(
            command_base(b"/usr/sbin/nginx\0-g\0daemon off;\0"),
            b"nginx"
        );
        assert_eq!(command_base(b"sleep\0" as &[u8]), b"sleep");
        assert_eq!(command_base(b"/opt/app/\0"), b"app");
        assert_eq!(command_base(b"\0"), b".");
    }

    #[test]
    fn vm_lines_are_read_in_fluent_bits_units() {
        let status = "Name:\tsleep\nVmPeak:\t    8196 kB\nVmSize:\t    8196 kB\nVmLck:\t       0 kB\nVmHWM:\t    1024 kB\nVmRSS:\t    1024 kB\nVmData:\t     360 kB\nVmStk:\t     132 kB\nVmExe:\t      16 kB\nVmLib:\t    1664 kB\nVmPTE:\t      52 kB\nVmSwap:\t       0 kB\nThreads:\t1\n";
        assert_eq!(
            vm_sizes(status),
            [8196000, 8196000, 0, 1024000, 1024000, 360000, 132000, 16000, 1664000, 52000, 0]
        );
    }

    #[test]
    fn finds_a_running_process_by_name() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let cmdline = format!("/proc/{}/cmdline", child.id());
        // Until the child has exec'd, it is a copy of this test.
        while !std::fs::read(&cmdline).unwrap().starts_with(b"sleep\0") {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Any sleep may come first in /proc order; one is found.
        assert!(find_pid("sleep").is_some());
        assert_eq!(find_pid("no-such-process-name-x"), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
