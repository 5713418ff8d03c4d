//! `node_exporter_metrics` input: the host's metrics under Prometheus node exporter's
//! names, read from `path.procfs` and `path.sysfs` every `scrape_interval`, one set per
//! scrape with every collector of `metrics`, in that order (as Fluent Bit creates them).
//! Fluent Bit: plugins/in_node_exporter_metrics/ne.c, ne_*_linux.c
//!
//! Collectors: cpu, cpufreq, meminfo, diskstats, filesystem, uname, stat, time, loadavg,
//! vmstat, netdev, filefd, textfile (`collector.textfile.path`). Fluent Bit's other
//! collector names (timex, netstat, sockstat, ...) are accepted and warned about at
//! their line: they collect nothing here yet.
//! Differences kept on purpose: netdev makes one family per counter with a sample per
//! device (Fluent Bit repeats a family per device, which Prometheus refuses), and the
//! filesystem mount table is read under `path.procfs` (Fluent Bit reads /proc).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::metrics::{Family, MetricSet, MetricType};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

/// The collectors done here, in Fluent Bit's order.
const COLLECTORS: &[&str] = &[
    "cpu",
    "cpufreq",
    "meminfo",
    "diskstats",
    "filesystem",
    "uname",
    "stat",
    "time",
    "loadavg",
    "vmstat",
    "netdev",
    "filefd",
    "textfile",
];

/// Fluent Bit's collectors not done here: accepted, warned about.
const NOT_YET: &[&str] = &[
    "timex",
    "netstat",
    "sockstat",
    "systemd",
    "processes",
    "nvme",
    "thermal_zone",
    "hwmon",
    "powersupplyclass",
];

const PROPS: &[PropSpec] = &[
    super::scrape_interval("5s"),
    PropSpec::new(
        "metrics",
        PropKind::CList,
        Some("cpu,cpufreq,meminfo,diskstats,filesystem,uname,stat,time,loadavg,vmstat,netdev,filefd"),
        "Collectors to run, comma separated: cpu, cpufreq, meminfo, diskstats, filesystem, uname, stat, time, loadavg, vmstat, netdev, filefd, textfile.",
    ),
    PropSpec::new(
        "collector.textfile.path",
        PropKind::Str,
        None,
        "The textfile collector's .prom file, or a directory whose *.prom files it reads.",
    ),
    PropSpec::new("path.procfs", PropKind::Str, Some("/proc"), "procfs mount point."),
    PropSpec::new("path.sysfs", PropKind::Str, Some("/sys"), "sysfs mount point."),
    PropSpec::new(
        "diskstats.ignore_device_regex",
        PropKind::Str,
        Some(IGNORED_DEVICES),
        "Disk devices to leave out (regular expression).",
    ),
    PropSpec::new(
        "filesystem.ignore_mount_point_regex",
        PropKind::Str,
        Some(IGNORED_MOUNT_POINTS),
        "Mount points to leave out (regular expression).",
    ),
    PropSpec::new(
        "filesystem.ignore_filesystem_type_regex",
        PropKind::Str,
        Some(IGNORED_FS_TYPES),
        "Filesystem types to leave out (regular expression).",
    ),
];

const IGNORED_DEVICES: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";
const IGNORED_MOUNT_POINTS: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
const IGNORED_FS_TYPES: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "node_exporter_metrics",
    description: "Node Exporter Metrics (Prometheus Compatible)",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

pub(crate) struct NodeExporter {
    interval: Duration,
    collectors: Vec<&'static str>,
    procfs: String,
    sysfs: String,
    skip_devices: regex::Regex,
    skip_mounts: regex::Regex,
    skip_fs_types: regex::Regex,
    clock_ticks: f64,
    textfile: Option<String>,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(NodeExporter::from_props(props)?))
}

impl NodeExporter {
    pub(crate) fn from_props(props: &Props) -> Result<NodeExporter, ConfigError> {
        let mut collectors = Vec::new();
        for name in props.clist("metrics") {
            match COLLECTORS.iter().find(|c| **c == name) {
                Some(c) if !collectors.contains(c) => collectors.push(*c),
                Some(_) => {}
                None if NOT_YET.contains(&name.as_str()) => crate::warn!(
                    "{}: [node_exporter_metrics] collector '{name}' is not available in this agent yet: it collects nothing",
                    props.span_of("metrics")
                ),
                None => {
                    return Err(props.error(
                        "metrics",
                        format!("collectors among: {}", COLLECTORS.join(", ")),
                    ))
                }
            }
        }
        let regex = |key: &str| {
            regex::Regex::new(props.str(key).unwrap_or_default())
                .map_err(|e| props.error(key, format!("a valid regular expression ({e})")))
        };
        Ok(NodeExporter {
            interval: super::scrape_interval_of(props)?,
            collectors,
            procfs: props.str("path.procfs").unwrap_or("/proc").to_string(),
            sysfs: props.str("path.sysfs").unwrap_or("/sys").to_string(),
            skip_devices: regex("diskstats.ignore_device_regex")?,
            skip_mounts: regex("filesystem.ignore_mount_point_regex")?,
            skip_fs_types: regex("filesystem.ignore_filesystem_type_regex")?,
            clock_ticks: match super::sysconf(libc::_SC_CLK_TCK) {
                t if t > 0 => t as f64,
                _ => 100.0,
            },
            textfile: props.str("collector.textfile.path").map(str::to_string),
        })
    }

    /// `path.sysfs`/devices/system/cpu/cpuN directories, with N, by N.
    fn cpu_dirs(&self) -> Vec<(String, std::path::PathBuf)> {
        let mut cpus: Vec<(u64, String, std::path::PathBuf)> =
            std::fs::read_dir(format!("{}/devices/system/cpu", self.sysfs))
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| {
                    let id = p.file_name()?.to_str()?.strip_prefix("cpu")?.to_string();
                    Some((id.parse().ok()?, id, p))
                })
                .collect();
        cpus.sort();
        cpus.into_iter().map(|(_, id, p)| (id, p)).collect()
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(format!("{}{rel}", self.procfs)).ok()
    }

    /// One scrape: every collector's families, stamped now.
    pub(crate) fn scrape(&self) -> MetricSet {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut set = MetricSet::default();
        for c in &self.collectors {
            let f = &mut set.families;
            match *c {
                "cpu" => self.cpu(f, now),
                "meminfo" => self.meminfo(f, now),
                "diskstats" => self.diskstats(f, now),
                "filesystem" => self.filesystem(f, now),
                "uname" => uname(f, now),
                "stat" => self.stat(f, now),
                "time" => {
                    let mut g = gauge(
                        "node_time_seconds",
                        "System time in seconds since epoch (1970).",
                        &[],
                    );
                    g.push(&[], now, now as f64 / 1e9);
                    f.push(g);
                }
                "loadavg" => self.loadavg(f, now),
                "vmstat" => self.vmstat(f, now),
                "netdev" => self.netdev(f, now),
                "filefd" => self.filefd(f, now),
                "cpufreq" => self.cpufreq(f, now),
                "textfile" => self.textfile(f, now),
                _ => {}
            }
        }
        set
    }

    fn cpu(&self, out: &mut Vec<Family>, now: u64) {
        let mut core = counter(
            "node_cpu_core_throttles_total",
            "Number of times this CPU core has been throttled.",
            &["core", "package"],
        );
        let mut package = counter(
            "node_cpu_package_throttles_total",
            "Number of times this CPU package has been throttled.",
            &["package"],
        );
        for (_, dir) in self.cpu_dirs() {
            let (Some(core_id), Some(pkg)) = (
                num(dir.join("topology/core_id")),
                num(dir.join("topology/physical_package_id")),
            ) else {
                continue;
            };
            let (c, p) = (core_id.to_string(), pkg.to_string());
            if let Some(n) = num(dir.join("thermal_throttle/core_throttle_count")) {
                core.push(&[&c, &p], now, n as f64);
            }
            if let Some(n) = num(dir.join("thermal_throttle/package_throttle_count")) {
                package.push(&[&p], now, n as f64);
            }
        }
        let mut seconds = counter(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            &["cpu", "mode"],
        );
        let mut guest = counter(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            &["cpu", "mode"],
        );
        for line in self.read("/stat").unwrap_or_default().lines() {
            let Some(rest) = line.strip_prefix("cpu") else {
                continue;
            };
            let Some((id, values)) = rest.split_once(' ') else {
                continue;
            };
            if id.is_empty() {
                continue; // the all-CPUs line
            }
            let v: Vec<f64> = values
                .split_ascii_whitespace()
                .map_while(|x| x.parse::<f64>().ok())
                .map(|x| x / self.clock_ticks)
                .collect();
            if v.len() < 9 {
                continue;
            }
            // user nice system idle iowait irq softirq steal guest guest_nice
            for (mode, i) in [
                ("idle", 3),
                ("iowait", 4),
                ("irq", 5),
                ("nice", 1),
                ("softirq", 6),
                ("steal", 7),
                ("system", 2),
                ("user", 0),
            ] {
                seconds.push(&[id, mode], now, v[i]);
            }
            guest.push(&[id, "user"], now, v[8]);
            guest.push(&[id, "nice"], now, v.get(9).copied().unwrap_or(0.0));
        }
        out.extend([core, package, seconds, guest]);
    }

    fn meminfo(&self, out: &mut Vec<Family>, now: u64) {
        for line in self.read("/meminfo").unwrap_or_default().lines() {
            let parts: Vec<&str> = line.split_ascii_whitespace().collect();
            let Some(key) = parts.first().and_then(|k| k.strip_suffix(':')) else {
                continue;
            };
            // Fluent Bit registers `Active(anon)` and the like under a mangled name
            // it never sets: they are not in its output.
            if key.contains('(') {
                continue;
            }
            let Some(v) = parts.get(1).and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let (name, v) = match parts.len() {
                2 => (format!("node_memory_{key}"), v),
                3 => (format!("node_memory_{key}_bytes"), v * 1024.0),
                _ => continue,
            };
            let short = &name["node_memory_".len()..];
            let mut g = gauge(&name, &format!("Memory information field {short}."), &[]);
            g.push(&[], now, v);
            out.push(g);
        }
    }

    fn diskstats(&self, out: &mut Vec<Family>, now: u64) {
        const MS: f64 = 0.001;
        const SECTOR: f64 = 512.0;
        // (name, help, factor, gauge) for each field after major, minor and device.
        #[rustfmt::skip]
        const FIELDS: [(&str, &str, f64, bool); 17] = [
            ("node_disk_reads_completed_total", "The total number of reads completed successfully.", 1.0, false),
            ("node_disk_reads_merged_total", "The total number of reads merged.", 1.0, false),
            ("node_disk_read_bytes_total", "The total number of bytes read successfully.", SECTOR, false),
            ("node_disk_read_time_seconds_total", "The total number of seconds spent by all reads.", MS, false),
            ("node_disk_writes_completed_total", "The total number of writes completed successfully.", 1.0, false),
            ("node_disk_writes_merged_total", "The number of writes merged.", 1.0, false),
            ("node_disk_written_bytes_total", "The total number of bytes written successfully.", SECTOR, false),
            ("node_disk_write_time_seconds_total", "This is the total number of seconds spent by all writes.", MS, false),
            ("node_disk_io_now", "The number of I/Os currently in progress.", 1.0, true),
            ("node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", MS, false),
            ("node_disk_io_time_weighted_seconds_total", "The weighted # of seconds spent doing I/Os.", MS, false),
            ("node_disk_discards_completed_total", "The total number of discards completed successfully.", 1.0, false),
            ("node_disk_discards_merged_total", "The total number of discards merged.", 1.0, false),
            ("node_disk_discarded_sectors_total", "The total number of sectors discarded successfully.", 1.0, false),
            ("node_disk_discard_time_seconds_total", "This is the total number of seconds spent by all discards.", MS, false),
            ("node_disk_flush_requests_total", "The total number of flush requests completed successfully", 1.0, false),
            ("node_disk_flush_requests_time_seconds_total", "This is the total number of seconds spent by all flush requests.", MS, false),
        ];
        let mut families: Vec<Family> = FIELDS
            .iter()
            .map(|(n, h, _, g)| {
                if *g {
                    gauge(n, h, &["device"])
                } else {
                    counter(n, h, &["device"])
                }
            })
            .collect();
        for line in self.read("/diskstats").unwrap_or_default().lines() {
            let mut parts = line.split_ascii_whitespace().skip(2);
            let Some(dev) = parts.next() else { continue };
            if self.skip_devices.is_match(dev) {
                continue;
            }
            for (i, v) in parts.take(FIELDS.len()).enumerate() {
                if let Ok(v) = v.parse::<f64>() {
                    families[i].push(&[dev], now, v * FIELDS[i].2);
                }
            }
        }
        out.extend(families);
    }

    fn filesystem(&self, out: &mut Vec<Family>, now: u64) {
        const KEYS: &[&str] = &["device", "fstype", "mountpoint"];
        let mut avail = gauge(
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
            KEYS,
        );
        let mut error = gauge(
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
            KEYS,
        );
        let mut files = gauge(
            "node_filesystem_files",
            "Filesystem total file nodes.",
            KEYS,
        );
        let mut files_free = gauge(
            "node_filesystem_files_free",
            "Filesystem total free file nodes.",
            KEYS,
        );
        let mut free = gauge(
            "node_filesystem_free_bytes",
            "Filesystem free space in bytes.",
            KEYS,
        );
        let mut readonly = gauge(
            "node_filesystem_readonly",
            "Filesystem read-only status.",
            KEYS,
        );
        let mut size = gauge(
            "node_filesystem_size_bytes",
            "Filesystem size in bytes.",
            KEYS,
        );
        let mounts = self
            .read("/1/mounts")
            .or_else(|| self.read("/self/mounts"))
            .unwrap_or_default();
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let [dev, mnt, fstype, ..] = f[..] else {
                continue;
            };
            if self.skip_fs_types.is_match(fstype) || self.skip_mounts.is_match(mnt) {
                continue;
            }
            let labels = [dev, fstype, mnt];
            let Some(st) = statvfs(mnt) else {
                error.push(&labels, now, 1.0);
                continue;
            };
            let bsize = st.f_bsize as f64;
            avail.push(&labels, now, st.f_bavail as f64 * bsize);
            error.push(&labels, now, 0.0);
            files.push(&labels, now, st.f_files as f64);
            files_free.push(&labels, now, st.f_ffree as f64);
            free.push(&labels, now, st.f_bfree as f64 * bsize);
            readonly.push(
                &labels,
                now,
                if st.f_flag & libc::ST_RDONLY != 0 {
                    1.0
                } else {
                    0.0
                },
            );
            size.push(&labels, now, st.f_blocks as f64 * bsize);
        }
        out.extend([avail, error, files, files_free, free, readonly, size]);
    }

    fn stat(&self, out: &mut Vec<Family>, now: u64) {
        let mut intr = counter(
            "node_intr_total",
            "Total number of interrupts serviced.",
            &[],
        );
        let mut ctxt = counter(
            "node_context_switches_total",
            "Total number of context switches.",
            &[],
        );
        let mut forks = counter("node_forks_total", "Total number of forks.", &[]);
        let mut btime = gauge(
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            &[],
        );
        let mut running = gauge(
            "node_procs_running",
            "Number of processes in runnable state.",
            &[],
        );
        let mut blocked = gauge(
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
            &[],
        );
        for line in self.read("/stat").unwrap_or_default().lines() {
            let mut p = line.split_ascii_whitespace();
            let (Some(key), Some(v)) = (p.next(), p.next().and_then(|v| v.parse::<f64>().ok()))
            else {
                continue;
            };
            let family = match key {
                "intr" => &mut intr,
                "ctxt" => &mut ctxt,
                "btime" => &mut btime,
                "processes" => &mut forks,
                "procs_running" => &mut running,
                "procs_blocked" => &mut blocked,
                _ => continue,
            };
            family.push(&[], now, v);
        }
        out.extend([intr, ctxt, forks, btime, running, blocked]);
    }

    fn loadavg(&self, out: &mut Vec<Family>, now: u64) {
        let text = self.read("/loadavg").unwrap_or_default();
        let v: Vec<f64> = text
            .split_ascii_whitespace()
            .take(3)
            .map_while(|x| x.parse().ok())
            .collect();
        for (i, (name, help)) in [
            ("node_load1", "1m load average."),
            ("node_load5", "5m load average."),
            ("node_load15", "15m load average."),
        ]
        .into_iter()
        .enumerate()
        {
            let mut g = gauge(name, help, &[]);
            if let Some(x) = v.get(i) {
                g.push(&[], now, *x);
            }
            out.push(g);
        }
    }

    fn vmstat(&self, out: &mut Vec<Family>, now: u64) {
        for line in self.read("/vmstat").unwrap_or_default().lines() {
            let Some((key, v)) = line.split_once(' ') else {
                continue;
            };
            let kept = ["oom_kill", "pgpg", "pswp"]
                .iter()
                .any(|p| key.starts_with(p))
                || (key.starts_with("pg") && key.contains("fault"));
            let Ok(v) = v.trim().parse::<f64>() else {
                continue;
            };
            if kept {
                let mut c = counter(
                    &format!("node_vmstat_{key}"),
                    &format!("/proc/vmstat information field {key}."),
                    &[],
                );
                c.push(&[], now, v);
                out.push(c);
            }
        }
    }

    fn netdev(&self, out: &mut Vec<Family>, now: u64) {
        let text = self.read("/net/dev").unwrap_or_default();
        let mut lines = text.lines();
        let Some(header) = lines.nth(1) else { return };
        let cols: Vec<&str> = header.split('|').collect();
        let [_, rx, tx] = cols[..] else { return };
        let names: Vec<(String, String)> = rx
            .split_ascii_whitespace()
            .map(|p| ("receive", p))
            .chain(tx.split_ascii_whitespace().map(|p| ("transmit", p)))
            .map(|(dir, p)| {
                (
                    format!("node_network_{dir}_{p}_total"),
                    format!("Network device statistic {p}."),
                )
            })
            .collect();
        let mut families: Vec<Family> = names
            .iter()
            .map(|(n, h)| counter(n, h, &["device"]))
            .collect();
        for line in lines {
            let Some((dev, values)) = line.split_once(':') else {
                continue;
            };
            let dev = dev.trim();
            for (i, v) in values
                .split_ascii_whitespace()
                .take(families.len())
                .enumerate()
            {
                if let Ok(v) = v.parse::<f64>() {
                    families[i].push(&[dev], now, v);
                }
            }
        }
        out.extend(families);
    }

    fn cpufreq(&self, out: &mut Vec<Family>, now: u64) {
        // (name, help, file under cpufreq/), kHz in the files.
        #[rustfmt::skip]
        const FILES: [(&str, &str, &str); 6] = [
            ("node_cpu_frequency_hertz", "Current cpu thread frequency in hertz.", "cpuinfo_cur_freq"),
            ("node_cpu_frequency_max_hertz", "Maximum cpu thread frequency in hertz.", "cpuinfo_max_freq"),
            ("node_cpu_frequency_min_hertz", "Minimum cpu thread frequency in hertz.", "cpuinfo_min_freq"),
            ("node_cpu_scaling_frequency_hertz", "Current scaled CPU thread frequency in hertz.", "scaling_cur_freq"),
            ("node_cpu_scaling_frequency_max_hertz", "Maximum scaled CPU thread frequency in hertz.", "scaling_max_freq"),
            ("node_cpu_scaling_frequency_min_hertz", "Minimum scaled CPU thread frequency in hertz.", "scaling_min_freq"),
        ];
        let mut families: Vec<Family> = FILES
            .iter()
            .map(|(n, h, _)| gauge(n, h, &["cpu"]))
            .collect();
        for (id, dir) in self.cpu_dirs() {
            for (i, (_, _, file)) in FILES.iter().enumerate() {
                if let Some(khz) = num(dir.join("cpufreq").join(file)) {
                    families[i].push(&[&id], now, khz as f64 * 1000.0);
                }
            }
        }
        out.extend(families);
    }

    /// The `.prom` file, or every `*.prom` file of the directory, of
    /// `collector.textfile.path`, read as the Prometheus text format.
    fn textfile(&self, out: &mut Vec<Family>, now: u64) {
        let mut errors = counter(
            // Fluent Bit's name (its namespace and subsystem are prefixed twice).
            "node_textfile_node_textfile_scrape_error",
            "Greater equal than 1 if there was an error opening, reading, or parsing a file, 0 otherwise.",
            &["reason"],
        );
        let Some(path) = &self.textfile else {
            out.push(errors);
            return;
        };
        let files: Vec<std::path::PathBuf> = if path.ends_with(".prom") {
            vec![path.into()]
        } else {
            let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(path)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            v.retain(|p| p.extension().is_some_and(|e| e == "prom"));
            v.sort();
            v
        };
        let mut failed = None;
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                failed = Some("could not read file");
                continue;
            };
            let (set, skipped) = crate::event::format::parse_prometheus(&text, now);
            if skipped > 0 {
                failed = Some("parse value failed");
            }
            for f in set.families {
                match out.iter_mut().find(|o| o.name == f.name) {
                    Some(o) if o.kind == f.kind && o.label_keys == f.label_keys => {
                        o.samples.extend(f.samples)
                    }
                    Some(_) => failed = Some("cmt set error"),
                    None => out.push(f),
                }
            }
        }
        if let Some(reason) = failed {
            errors.push(&[reason], now, 1.0);
        }
        out.push(errors);
    }

    fn filefd(&self, out: &mut Vec<Family>, now: u64) {
        let mut allocated = gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            &[],
        );
        let mut maximum = gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            &[],
        );
        let text = self.read("/sys/fs/file-nr").unwrap_or_default();
        let v: Vec<f64> = text
            .split_ascii_whitespace()
            .map_while(|x| x.parse().ok())
            .collect();
        if let [a, _, m] = v[..] {
            allocated.push(&[], now, a);
            maximum.push(&[], now, m);
        }
        out.extend([allocated, maximum]);
    }
}

fn uname(out: &mut Vec<Family>, now: u64) {
    let mut g = gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
        &[
            "sysname",
            "release",
            "version",
            "machine",
            "nodename",
            "domainname",
        ],
    );
    // SAFETY: uname fills the zeroed struct; each field is NUL-terminated.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } == 0 {
        let s = |f: &[libc::c_char]| {
            let bytes: Vec<u8> = f
                .iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let v = [
            s(&u.sysname),
            s(&u.release),
            s(&u.version),
            s(&u.machine),
            s(&u.nodename),
            s(&u.domainname),
        ];
        let labels: Vec<&str> = v.iter().map(String::as_str).collect();
        g.push(&labels, now, 1.0);
    }
    out.push(g);
}

/// A file's number (sysfs values).
fn num(p: std::path::PathBuf) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn statvfs(path: &str) -> Option<libc::statvfs> {
    let c = std::ffi::CString::new(path).ok()?;
    // SAFETY: a valid C string and a zeroed out-struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then_some(st)
}

fn gauge(name: &str, help: &str, keys: &[&str]) -> Family {
    Family::new(name, help, MetricType::Gauge, keys)
}

fn counter(name: &str, help: &str, keys: &[&str]) -> Family {
    Family::new(name, help, MetricType::Counter, keys)
}

impl Input for NodeExporter {
    fn signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::METRICS
    }

    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let interval = self.interval;
            // Fluent Bit's node exporter scrapes once an interval has passed.
            super::scrape_every(&mut ctx, interval, false, move || {
                std::future::ready(Some(self.scrape()))
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A procfs/sysfs tree with the files each collector reads.
    fn fixture() -> (tempfile::TempDir, NodeExporter) {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("proc/loadavg", "0.42 0.17 0.05 2/345 6789\n");
        w(
            "proc/stat",
            "cpu  10 20 30 40 50 60 70 80 90 100\ncpu0 100 200 300 400 500 600 700 800 900\n\
             intr 12345 0 1\nctxt 999\nbtime 1700000000\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\n",
        );
        w(
            "proc/meminfo",
            "MemTotal:        2000 kB\nActive(anon):     10 kB\nHugePages_Total:       4\n",
        );
        w(
            "proc/diskstats",
            "   8       0 sda 10 20 30 40 50 60 70 80 1 90 100 0 0 0 0 5 6\n   8       1 sda1 1 2 3 4 5 6 7 8 9 10 11\n   7       0 loop0 1 1 1 1 1 1 1 1 1 1 1\n",
        );
        w(
            "proc/net/dev",
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
             \x20   lo:    1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0\n\
             \x20 eth0:    3000      30    1    2    0     0          0         7     4000      40    0    0    0     0       0          0\n",
        );
        w(
            "proc/vmstat",
            "nr_free_pages 5\npgpgin 11\npgfault 22\npgmajfault 3\noom_kill 0\npswpin 1\n",
        );
        w("proc/sys/fs/file-nr", "1024\t0\t9223372036854775807\n");
        w(
            "proc/1/mounts",
            "/dev/root / ext4 rw 0 0\nproc /proc proc rw 0 0\n",
        );
        w("sys/devices/system/cpu/cpu0/topology/core_id", "0\n");
        w(
            "sys/devices/system/cpu/cpu0/topology/physical_package_id",
            "0\n",
        );
        w(
            "sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count",
            "7\n",
        );
        w(
            "sys/devices/system/cpu/cpu0/thermal_throttle/package_throttle_count",
            "8\n",
        );
        w(
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "2400000\n",
        );
        w(
            "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
            "3000000\n",
        );
        w("sys/devices/system/cpu/cpufreq/ondemand/x", "not a cpu\n");
        w(
            "textfile/a.prom",
            "# HELP job_last_success Last success.\n# TYPE job_last_success gauge\njob_last_success{job=\"backup\"} 1700000000\n",
        );
        w(
            "textfile/b.prom",
            "# TYPE job_last_success gauge\njob_last_success{job=\"sync\"} 1700000100\nbroken line here\n",
        );
        w("textfile/c.txt", "ignored 1\n");
        let ne = NodeExporter {
            interval: Duration::from_secs(5),
            collectors: COLLECTORS.to_vec(),
            procfs: dir.path().join("proc").display().to_string(),
            sysfs: dir.path().join("sys").display().to_string(),
            skip_devices: regex::Regex::new(IGNORED_DEVICES).unwrap(),
            skip_mounts: regex::Regex::new(IGNORED_MOUNT_POINTS).unwrap(),
            skip_fs_types: regex::Regex::new(IGNORED_FS_TYPES).unwrap(),
            clock_ticks: 100.0,
            textfile: Some(dir.path().join("textfile").display().to_string()),
        };
        (dir, ne)
    }

    #[test]
    fn collectors_read_procfs_into_fluent_bits_names_labels_and_units() {
        let (_dir, ne) = fixture();
        let set = ne.scrape();
        let v = |name: &str, labels: &[&str]| {
            set.family(name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .value(labels)
                .unwrap_or_else(|| panic!("{name}{labels:?} has no sample"))
        };
        let keys = |name: &str| -> Vec<&str> {
            set.family(name)
                .unwrap()
                .label_keys
                .iter()
                .map(|k| &**k)
                .collect()
        };
        assert_eq!(v("node_load1", &[]), 0.42);
        assert_eq!(v("node_load5", &[]), 0.17);
        assert_eq!(v("node_load15", &[]), 0.05);
        // cpu: ticks / USER_HZ per mode; the all-CPUs line is left out.
        assert_eq!(keys("node_cpu_seconds_total"), ["cpu", "mode"]);
        assert_eq!(v("node_cpu_seconds_total", &["0", "user"]), 1.0);
        assert_eq!(v("node_cpu_seconds_total", &["0", "idle"]), 4.0);
        assert_eq!(v("node_cpu_seconds_total", &["0", "steal"]), 8.0);
        assert_eq!(v("node_cpu_guest_seconds_total", &["0", "user"]), 9.0);
        assert_eq!(v("node_cpu_guest_seconds_total", &["0", "nice"]), 0.0);
        assert_eq!(
            set.family("node_cpu_seconds_total").unwrap().samples.len(),
            8
        );
        assert_eq!(v("node_cpu_core_throttles_total", &["0", "0"]), 7.0);
        assert_eq!(v("node_cpu_package_throttles_total", &["0"]), 8.0);
        // meminfo: kB lines in bytes with _bytes, plain counts as they are.
        assert_eq!(v("node_memory_MemTotal_bytes", &[]), 2_048_000.0);
        assert_eq!(v("node_memory_HugePages_Total", &[]), 4.0);
        assert_eq!(
            &*set.family("node_memory_MemTotal_bytes").unwrap().help,
            "Memory information field MemTotal_bytes."
        );
        assert!(!set.families.iter().any(|f| f.name.contains('(')));
        // diskstats: sectors in bytes, milliseconds in seconds; partitions and loop
        // devices left out by the default regex.
        assert_eq!(v("node_disk_reads_completed_total", &["sda"]), 10.0);
        assert_eq!(v("node_disk_read_bytes_total", &["sda"]), 30.0 * 512.0);
        assert_eq!(v("node_disk_read_time_seconds_total", &["sda"]), 0.04);
        assert_eq!(v("node_disk_io_now", &["sda"]), 1.0);
        assert_eq!(v("node_disk_flush_requests_total", &["sda"]), 5.0);
        assert_eq!(
            set.family("node_disk_io_now").unwrap().kind,
            MetricType::Gauge
        );
        assert_eq!(
            set.family("node_disk_reads_completed_total")
                .unwrap()
                .samples
                .len(),
            1
        );
        // netdev: one family per column, a sample per device.
        assert_eq!(v("node_network_receive_bytes_total", &["eth0"]), 3000.0);
        assert_eq!(v("node_network_receive_multicast_total", &["eth0"]), 7.0);
        assert_eq!(v("node_network_transmit_packets_total", &["lo"]), 20.0);
        assert_eq!(keys("node_network_transmit_colls_total"), ["device"]);
        // stat, vmstat (only Fluent Bit's fields), filefd, uname, time.
        assert_eq!(v("node_intr_total", &[]), 12345.0);
        assert_eq!(v("node_context_switches_total", &[]), 999.0);
        assert_eq!(v("node_forks_total", &[]), 4242.0);
        assert_eq!(v("node_boot_time_seconds", &[]), 1.7e9);
        assert_eq!(v("node_procs_running", &[]), 3.0);
        assert_eq!(v("node_procs_blocked", &[]), 1.0);
        assert_eq!(v("node_vmstat_pgpgin", &[]), 11.0);
        assert_eq!(v("node_vmstat_pgmajfault", &[]), 3.0);
        assert_eq!(v("node_vmstat_oom_kill", &[]), 0.0);
        assert!(set.family("node_vmstat_nr_free_pages").is_none());
        assert_eq!(v("node_filefd_allocated", &[]), 1024.0);
        assert_eq!(v("node_filefd_maximum", &[]), 9223372036854775807.0);
        assert_eq!(
            keys("node_uname_info"),
            [
                "sysname",
                "release",
                "version",
                "machine",
                "nodename",
                "domainname"
            ]
        );
        assert_eq!(
            set.family("node_uname_info").unwrap().samples[0].labels[0].as_ref(),
            "Linux"
        );
        assert!(v("node_time_seconds", &[]) > 1.7e9);
        // cpufreq: kHz in hertz; textfile: the .prom files' samples, a bad line counted.
        assert_eq!(v("node_cpu_scaling_frequency_hertz", &["0"]), 2.4e9);
        assert_eq!(v("node_cpu_frequency_max_hertz", &["0"]), 3e9);
        assert!(set
            .family("node_cpu_frequency_hertz")
            .unwrap()
            .samples
            .is_empty());
        assert_eq!(v("job_last_success", &["backup"]), 1.7e9);
        assert_eq!(v("job_last_success", &["sync"]), 1_700_000_100.0);
        assert!(set.family("ignored").is_none());
        assert_eq!(
            v(
                "node_textfile_node_textfile_scrape_error",
                &["parse value failed"]
            ),
            1.0
        );
        // filesystem: the root mount (statvfs of the real /), /proc left out.
        let fs = set.family("node_filesystem_size_bytes").unwrap();
        assert_eq!(
            keys("node_filesystem_size_bytes"),
            ["device", "fstype", "mountpoint"]
        );
        assert_eq!(fs.samples.len(), 1);
        assert!(v("node_filesystem_size_bytes", &["/dev/root", "ext4", "/"]) > 0.0);
        assert_eq!(
            v("node_filesystem_device_error", &["/dev/root", "ext4", "/"]),
            0.0
        );
    }

    #[test]
    fn every_name_is_one_of_fluent_bits() {
        // Fluent Bit's names (plugins/in_node_exporter_metrics/ne_*_linux.c): a family
        // outside these would be an invented name.
        let fixed = [
            "node_cpu_core_throttles_total",
            "node_cpu_package_throttles_total",
            "node_cpu_seconds_total",
            "node_cpu_guest_seconds_total",
            "node_disk_reads_completed_total",
            "node_disk_reads_merged_total",
            "node_disk_read_bytes_total",
            "node_disk_read_time_seconds_total",
            "node_disk_writes_completed_total",
            "node_disk_writes_merged_total",
            "node_disk_written_bytes_total",
            "node_disk_write_time_seconds_total",
            "node_disk_io_now",
            "node_disk_io_time_seconds_total",
            "node_disk_io_time_weighted_seconds_total",
            "node_disk_discards_completed_total",
            "node_disk_discards_merged_total",
            "node_disk_discarded_sectors_total",
            "node_disk_discard_time_seconds_total",
            "node_disk_flush_requests_total",
            "node_disk_flush_requests_time_seconds_total",
            "node_filesystem_avail_bytes",
            "node_filesystem_device_error",
            "node_filesystem_files",
            "node_filesystem_files_free",
            "node_filesystem_free_bytes",
            "node_filesystem_readonly",
            "node_filesystem_size_bytes",
            "node_uname_info",
            "node_intr_total",
            "node_context_switches_total",
            "node_forks_total",
            "node_boot_time_seconds",
            "node_procs_running",
            "node_procs_blocked",
            "node_time_seconds",
            "node_load1",
            "node_load5",
            "node_load15",
            "node_filefd_allocated",
            "node_filefd_maximum",
            "node_cpu_frequency_hertz",
            "node_cpu_frequency_max_hertz",
            "node_cpu_frequency_min_hertz",
            "node_cpu_scaling_frequency_hertz",
            "node_cpu_scaling_frequency_max_hertz",
            "node_cpu_scaling_frequency_min_hertz",
            "node_textfile_node_textfile_scrape_error",
            // from the fixture's textfile
            "job_last_success",
        ];
        let (_dir, ne) = fixture();
        for f in ne.scrape().families {
            let name = &*f.name;
            let derived = name.starts_with("node_memory_")
                || name.starts_with("node_vmstat_")
                || (name.starts_with("node_network_") && name.ends_with("_total"));
            assert!(fixed.contains(&name) || derived, "{name}");
        }
    }
}
