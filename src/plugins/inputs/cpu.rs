//! `cpu` input: CPU usage in percent between two samples of `/proc/stat` (or of one
//! process's `/proc/PID/stat`), one record per interval.
//! Fluent Bit: plugins/in_cpu/cpu.c, cpu.h
//!
//! System record: `cpu_p`, `user_p`, `system_p` (the average over all CPUs, 0-100),
//! then `cpuN.p_cpu`, `cpuN.p_user`, `cpuN.p_system` per online CPU (each 0-100), all
//! doubles. With `pid`: only `cpu_p`, `user_p`, `system_p` of that process, averaged
//! over the CPUs. "user" counts user + nice time; "cpu" is user + nice + system.

use std::sync::Arc;
use std::time::Duration;

use super::{collect_every, sysconf};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Record, Str, Value};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "pid",
        PropKind::Int,
        Some("-1"),
        "Measure the CPU usage of this process only (-1: the whole system).",
    ),
    super::INTERVAL_SEC,
    super::INTERVAL_NSEC,
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "cpu",
    description: "CPU Usage",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

struct CpuInput {
    pid: Option<u32>,
    interval: Duration,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let pid = props.int("pid").unwrap_or(-1);
    if pid == 0 || pid > i64::from(i32::MAX) {
        return Err(props.error(
            "pid",
            "a process id (1 or more), or -1 for the whole system",
        ));
    }
    Ok(Box::new(CpuInput {
        pid: u32::try_from(pid).ok(),
        interval: super::interval_or_1s(props)?,
    }))
}

/// Clock ticks of one CPU line of `/proc/stat` (or a process's user/system ticks).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Ticks {
    user: u64,
    nice: u64,
    system: u64,
}

/// Reads the aggregate `cpu` line and the next `cpus` lines of `/proc/stat` text into
/// `out` (as Fluent Bit, the per-CPU lines are taken in order, whatever their number).
/// `None` when the text is not a `/proc/stat`.
fn parse_stat(text: &str, cpus: usize, out: &mut Vec<Ticks>) -> Option<()> {
    out.clear();
    for (i, line) in text.lines().take(cpus + 1).enumerate() {
        let mut fields = line.split_ascii_whitespace();
        let label = fields.next()?;
        if (i == 0 && label != "cpu") || (i > 0 && !label.starts_with("cpu")) {
            return None;
        }
        let mut n = fields.map(|f| f.parse::<u64>().ok());
        let (user, nice, system) = (n.next()??, n.next()??, n.next()??);
        // idle and iowait must be there too (Fluent Bit's sscanf wants five numbers).
        n.next()??;
        n.next()??;
        out.push(Ticks { user, nice, system });
    }
    (!out.is_empty()).then_some(())
}

/// utime and stime of a `/proc/PID/stat` line: the 12th and 13th fields after the
/// command name (which may hold spaces and parentheses, so it ends at the last `)`).
fn parse_pid_stat(text: &str) -> Option<Ticks> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(Ticks {
        user,
        nice: 0,
        system,
    })
}

/// The two formulas of Fluent Bit's cpu.h, in its operation order so that the doubles
/// are bit-identical.
#[derive(Clone, Copy)]
struct Scale {
    ticks_per_sec: f64,
    cpus: f64,
    /// `interval_sec + 1e-9 * interval_nsec`.
    seconds: f64,
}

impl Scale {
    fn diff(pre: u64, now: u64) -> Option<f64> {
        (pre != now).then(|| pre.abs_diff(now) as f64)
    }

    /// `CPU_METRIC_SYS_AVERAGE`: percent of the whole machine (0-100).
    fn average(&self, pre: u64, now: u64) -> f64 {
        Self::diff(pre, now).map_or(0.0, |d| {
            (((d / self.ticks_per_sec) * 100.0) / self.cpus) / self.seconds
        })
    }

    /// `CPU_METRIC_USAGE`: percent of one CPU (0-100).
    fn usage(&self, pre: u64, now: u64) -> f64 {
        Self::diff(pre, now).map_or(0.0, |d| ((d * 100.0) / self.ticks_per_sec) / self.seconds)
    }
}

/// The keys of one record, made once.
struct Keys {
    total: [Str; 3],
    per_cpu: Vec<[Str; 3]>,
}

impl Keys {
    fn new(cpus: usize) -> Keys {
        Keys {
            total: ["cpu_p", "user_p", "system_p"].map(Arc::from),
            per_cpu: (0..cpus)
                .map(|i| ["cpu", "user", "system"].map(|k| Arc::from(format!("cpu{i}.p_{k}"))))
                .collect(),
        }
    }
}

/// `[cpu, user, system]` percents between two samples of one line.
fn percents(pre: &Ticks, now: &Ticks, f: impl Fn(u64, u64) -> f64) -> [f64; 3] {
    [
        f(
            pre.user + pre.nice + pre.system,
            now.user + now.nice + now.system,
        ),
        f(pre.user + pre.nice, now.user + now.nice),
        f(pre.system, now.system),
    ]
}

fn push(body: &mut Vec<(Str, Value)>, keys: &[Str; 3], values: [f64; 3]) {
    for (k, v) in keys.iter().zip(values) {
        body.push((k.clone(), Value::Float(v)));
    }
}

impl Input for CpuInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let cpus = sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
            let scale = Scale {
                ticks_per_sec: sysconf(libc::_SC_CLK_TCK).max(1) as f64,
                cpus: cpus as f64,
                seconds: self.interval.as_secs() as f64
                    + 1e-9 * f64::from(self.interval.subsec_nanos()),
            };
            let keys = Keys::new(cpus);
            let name = ctx.name.clone();
            let path = match self.pid {
                Some(pid) => format!("/proc/{pid}/stat"),
                None => "/proc/stat".to_string(),
            };
            let read = |out: &mut Vec<Ticks>| -> Result<(), String> {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("error opening stats file {path}: {e}"))?;
                let ok = match self.pid {
                    Some(_) => parse_pid_stat(&text).map(|t| {
                        out.clear();
                        out.push(t);
                    }),
                    None => parse_stat(&text, cpus, out),
                };
                ok.ok_or_else(|| format!("cannot read the CPU stats of {path}"))
            };
            let mut pre = Vec::with_capacity(cpus + 1);
            let mut now = Vec::with_capacity(cpus + 1);
            // Fluent Bit's init fails when the first sample cannot be taken.
            read(&mut pre)
                .map_err(|e| PluginError::Other(format!("Could not obtain CPU data: {e}")))?;
            collect_every(&mut ctx, self.interval, || {
                if let Err(e) = read(&mut now) {
                    crate::error!("[input:cpu:{name}] {e}");
                    return None;
                }
                let mut body = Vec::with_capacity(3 * now.len());
                match self.pid {
                    Some(_) => {
                        push(
                            &mut body,
                            &keys.total,
                            percents(&pre[0], &now[0], |a, b| scale.average(a, b)),
                        );
                    }
                    None => {
                        for (i, (p, n)) in pre.iter().zip(now.iter()).enumerate() {
                            let (keys, values) = match i {
                                0 => (&keys.total, percents(p, n, |a, b| scale.average(a, b))),
                                _ => (
                                    &keys.per_cpu[i - 1],
                                    percents(p, n, |a, b| scale.usage(a, b)),
                                ),
                            };
                            push(&mut body, keys, values);
                        }
                    }
                }
                std::mem::swap(&mut pre, &mut now);
                Some(Record::new(EventTime::now(), body))
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a 2-CPU Linux 6.18 machine.
    const STAT: &str = "cpu  3350409 1172 1078044 48207131 9349 0 36087 0 0 0
cpu0 1697234 577 540215 24101426 4622 0 19468 0 0 0
cpu1 1653175 595 537829 24105705 4727 0 16619 0 0 0
intr 402005185 0 9 0 0
ctxt 693315530
";

    #[test]
    fn reads_the_total_and_each_cpu_line() {
        let mut out = Vec::new();
        parse_stat(STAT, 2, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Ticks {
                    user: 3350409,
                    nice: 1172,
                    system: 1078044
                },
                Ticks {
                    user: 1697234,
                    nice: 577,
                    system: 540215
                },
                Ticks {
                    user: 1653175,
                    nice: 595,
                    system: 537829
                },
            ]
        );
        // More CPUs online than lines: what is there is read (Fluent Bit stops at EOF).
        parse_stat(STAT, 8, &mut out);
        assert!(parse_stat("intr 1 2 3\n", 2, &mut out).is_none());
        assert!(parse_stat("cpu 1 2\n", 0, &mut out).is_none());
    }

    #[test]
    fn a_process_line_with_parentheses_in_its_name() {
        let line = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 1433 0 0 0 250 75 0 0 20 0 1 0 1234 10000 500 18446744073709551615\n";
        assert_eq!(
            parse_pid_stat(line),
            Some(Ticks {
                user: 250,
                nice: 0,
                system: 75
            })
        );
        assert_eq!(parse_pid_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn percents_follow_fluent_bits_formulas() {
        let s = Scale {
            ticks_per_sec: 100.0,
            cpus: 2.0,
            seconds: 1.0,
        };
        let pre = Ticks {
            user: 100,
            nice: 10,
            system: 50,
        };
        let now = Ticks {
            user: 250,
            nice: 20,
            system: 80,
        };
        // 190 ticks in 1 s over 2 CPUs = 95 %; user+nice 160 = 80 %; system 30 = 15 %.
        assert_eq!(
            percents(&pre, &now, |a, b| s.average(a, b)),
            [95.0, 80.0, 15.0]
        );
        // One CPU: 190 ticks of 100/s = 190 % (Fluent Bit does not clamp).
        assert_eq!(
            percents(&pre, &now, |a, b| s.usage(a, b)),
            [190.0, 160.0, 30.0]
        );
        assert_eq!(percents(&pre, &pre, |a, b| s.usage(a, b)), [0.0, 0.0, 0.0]);
        // A half-second interval doubles the rate.
        let half = Scale { seconds: 0.5, ..s };
        assert_eq!(half.usage(0, 25), 50.0);
    }

    #[test]
    fn keys_are_numbered_from_zero() {
        let k = Keys::new(2);
        assert_eq!(&*k.per_cpu[1][2], "cpu1.p_system");
        assert_eq!(&*k.total[0], "cpu_p");
    }
}
