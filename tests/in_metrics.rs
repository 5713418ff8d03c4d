//! The metric inputs (`cpu`, `mem`, `disk`, `netif`, `proc`, `kmsg`) read the real
//! /proc, sysinfo and /dev/kmsg of this machine and print records with Fluent Bit
//! 5.1.1's keys, key order and number types (captured in tests/data/fluent-bit/<input>);
//! the values agree with what the kernel says, or with traffic the test makes.

mod common;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;

fn data(p: &str) -> std::path::PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit"
    ))
    .join(p)
}

/// `(key, JSON number text)` of one json_lines record, in order, without `date`.
fn fields(line: &str) -> Vec<(String, serde_json::Value)> {
    match serde_json::from_str::<serde_json::Value>(line).unwrap() {
        serde_json::Value::Object(m) => m.into_iter().filter(|(k, _)| k != "date").collect(),
        v => panic!("not an object: {v}"),
    }
}

fn keys(f: &[(String, serde_json::Value)]) -> Vec<&str> {
    f.iter().map(|(k, _)| k.as_str()).collect()
}

fn is_double(v: &serde_json::Value) -> bool {
    v.as_number().is_some_and(|n| n.is_f64())
}

/// Records of `agent -i <args> -o stdout json_lines`, after `n` of them.
fn records(input: &[&str], n: usize) -> Vec<Vec<(String, serde_json::Value)>> {
    let dir = Dir::new();
    let mut args = vec!["-i"];
    args.extend_from_slice(input);
    args.extend_from_slice(&["-o", "stdout", "-p", "format=json_lines", "-f", "0.1"]);
    let mut a = Agent::spawn_in(&dir, &args, None);
    a.wait_lines(n, Duration::from_secs(20));
    let out = a.stop(Duration::from_secs(10));
    out.stdout.lines().map(fields).collect()
}

fn cpu_keys(cpus: usize) -> Vec<String> {
    let mut k: Vec<String> = ["cpu_p", "user_p", "system_p"].map(String::from).to_vec();
    for i in 0..cpus {
        for m in ["cpu", "user", "system"] {
            k.push(format!("cpu{i}.p_{m}"));
        }
    }
    k
}

fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as usize }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(script: &str) -> Kill {
    Kill(Command::new("sh").args(["-c", script]).spawn().unwrap())
}

#[test]
fn cpu_has_fluent_bits_keys_and_doubles() {
    let fb = fields(&std::fs::read_to_string(data("cpu/system.jsonl")).unwrap());
    assert_eq!(keys(&fb), cpu_keys(2), "the captured fact (2 CPUs)");
    assert!(fb.iter().all(|(_, v)| is_double(v)));

    let recs = records(
        &[
            "cpu",
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=250000000",
        ],
        3,
    );
    for r in &recs {
        assert_eq!(keys(r), cpu_keys(online_cpus()));
        for (k, v) in r {
            // A double, written as Fluent Bit writes one (%.16g): 14.000000000000002
            // prints as 14, which JSON reads back as an integer.
            assert!(v.is_number(), "{k}: {v}");
            let p = v.as_f64().unwrap();
            // Per interval, a CPU cannot be busier than 100 % (a 10 ms tick of slack).
            assert!((0.0..=104.0).contains(&p), "{k}: {p}");
        }
        let (cpu, user, system) = (
            r[0].1.as_f64().unwrap(),
            r[1].1.as_f64().unwrap(),
            r[2].1.as_f64().unwrap(),
        );
        assert!((cpu - (user + system)).abs() < 1e-9, "{r:?}");
    }
}

#[test]
fn cpu_of_one_process_sees_a_busy_loop_and_an_idle_sleep() {
    let fb = fields(&std::fs::read_to_string(data("cpu/pid.jsonl")).unwrap());
    assert_eq!(keys(&fb), ["cpu_p", "user_p", "system_p"]);
    assert!(fb.iter().all(|(_, v)| is_double(v)));

    let busy = spawn("while :; do :; done");
    let pid = format!("pid={}", busy.0.id());
    let recs = records(
        &[
            "cpu",
            "-p",
            &pid,
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=500000000",
        ],
        3,
    );
    let last = recs.last().unwrap();
    assert_eq!(keys(last), ["cpu_p", "user_p", "system_p"]);
    // One busy core of N, averaged over the machine; the other builders share it.
    let share = 100.0 / online_cpus() as f64;
    let cpu = last[0].1.as_f64().unwrap();
    assert!(cpu > share * 0.1 && cpu <= share * 1.05, "{last:?}");
    assert!(
        last[1].1.as_f64().unwrap() > last[2].1.as_f64().unwrap(),
        "{last:?}"
    );

    let idle = spawn("exec sleep 60");
    let pid = format!("pid={}", idle.0.id());
    let recs = records(
        &[
            "cpu",
            "-p",
            &pid,
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=200000000",
        ],
        3,
    );
    assert!(
        recs.iter()
            .all(|r| r.iter().all(|(_, v)| v.as_f64() == Some(0.0))),
        "{recs:?}"
    );
}

#[test]
fn cpu_of_a_process_that_is_not_there_stops_the_agent_as_fluent_bits_init() {
    let dir = Dir::new();
    let mut a = Agent::spawn_in(
        &dir,
        &["-i", "cpu", "-p", "pid=2147483000", "-o", "stdout"],
        None,
    );
    // Fluent Bit: "failed initialize input cpu.0", exit status 255.
    assert_eq!(a.wait(Duration::from_secs(10)), Some(255));
    assert!(
        a.stderr().contains("Could not obtain CPU data"),
        "{}",
        a.stderr()
    );
}

fn meminfo_kib(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const MEM_KEYS: [&str; 6] = [
    "Mem.total",
    "Mem.used",
    "Mem.free",
    "Swap.total",
    "Swap.used",
    "Swap.free",
];

#[test]
fn mem_has_fluent_bits_keys_in_kib() {
    let fb = fields(&std::fs::read_to_string(data("mem/system.jsonl")).unwrap());
    assert_eq!(keys(&fb), MEM_KEYS);
    assert!(fb.iter().all(|(_, v)| v.is_u64()));

    let recs = records(
        &[
            "mem",
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=200000000",
        ],
        2,
    );
    for r in &recs {
        assert_eq!(keys(r), MEM_KEYS);
        let v: Vec<u64> = r.iter().map(|(_, v)| v.as_u64().unwrap()).collect();
        assert_eq!(v[0], meminfo_kib("MemTotal:"));
        assert_eq!(v[3], meminfo_kib("SwapTotal:"));
        assert_eq!(v[1] + v[2], v[0]);
        assert_eq!(v[4] + v[5], v[3]);
    }
}

#[test]
fn mem_with_a_pid_adds_its_resident_size() {
    let fb = fields(&std::fs::read_to_string(data("mem/pid.jsonl")).unwrap());
    let mut want = MEM_KEYS.to_vec();
    want.extend(["proc_bytes", "proc_hr"]);
    assert_eq!(keys(&fb), want);

    let child = spawn("exec sleep 60");
    let pid = child.0.id();
    // What Fluent Bit reads: the rss field of /proc/PID/stat, in pages (status's VmRSS
    // is summed more precisely and may differ).
    let rss_bytes = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
        let pages: u64 = after_comm
            .split_whitespace()
            .nth(21)
            .unwrap()
            .parse()
            .unwrap();
        // SAFETY: sysconf only reads a configuration value.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
    };
    // Once sh has become sleep and sleeps, its resident size stays put.
    let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    while !stat().contains("(sleep) S") {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = rss_bytes();
    let recs = records(
        &[
            "mem",
            "-p",
            &format!("pid={pid}"),
            "-p",
            "interval_nsec=200000000",
            "-p",
            "interval_sec=0",
        ],
        1,
    );
    let r = &recs[0];
    assert_eq!(keys(r), want);
    // A sleeping process keeps its pages.
    assert_eq!(before, rss_bytes());
    assert_eq!(r[6].1.as_u64(), Some(before), "{r:?}");
    let hr = r[7].1.as_str().unwrap();
    assert!(hr.ends_with('M') || hr.ends_with('K'), "{hr}");
}

#[test]
fn mem_stops_measuring_a_process_that_ended() {
    let mut child = spawn("exec sleep 0.5");
    let pid = child.0.id();
    let dir = Dir::new();
    let mut a = Agent::spawn_in(
        &dir,
        &[
            "-i",
            "mem",
            "-p",
            &format!("pid={pid}"),
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=100000000",
            "-o",
            "stdout",
            "-p",
            "format=json_lines",
            "-f",
            "0.1",
        ],
        None,
    );
    a.wait_lines(1, Duration::from_secs(10));
    child.0.wait().unwrap();
    a.wait_log("could not measure PID", Duration::from_secs(10));
    let n = a.stdout().lines().count();
    a.wait_lines(n + 3, Duration::from_secs(10));
    let out = a.stop(Duration::from_secs(10));
    assert_eq!(
        out.stderr.matches("could not measure PID").count(),
        1,
        "{}",
        out.stderr
    );
    let last = fields(out.stdout.lines().last().unwrap());
    assert_eq!(keys(&last), MEM_KEYS);
}

fn fact(p: &str) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(data(p)).unwrap();
    fields(text.lines().next().unwrap())
}

#[test]
fn disk_counts_the_bytes_written_to_the_device() {
    let fb = fact("disk/record.jsonl");
    assert_eq!(keys(&fb), ["read_size", "write_size"]);
    assert!(fb.iter().all(|(_, v)| v.is_u64()));

    let dir = Dir::new();
    let mut a = Agent::spawn_in(
        &dir,
        &[
            "-i",
            "disk",
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=300000000",
            "-o",
            "stdout",
            "-p",
            "format=json_lines",
            "-f",
            "0.1",
        ],
        None,
    );
    a.wait_lines(1, Duration::from_secs(10));
    // 8 MiB written and synced to the disk under the build directory.
    let file =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("disk-input-{}", std::process::id()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        f.write_all(&vec![7u8; 8 << 20]).unwrap();
        f.sync_all().unwrap();
    }
    let n = a.stdout().lines().count();
    a.wait_lines(n + 2, Duration::from_secs(10));
    let out = a.stop(Duration::from_secs(10));
    std::fs::remove_file(&file).unwrap();
    let written: u64 = out
        .stdout
        .lines()
        .map(fields)
        .inspect(|r| assert_eq!(keys(r), ["read_size", "write_size"]))
        .map(|r| r[1].1.as_u64().unwrap())
        .sum();
    // Partitions count with their disk (Fluent Bit sums every line).
    assert!(written >= 8 << 20, "{written}\n{}", out.stdout);

    // A device name that matches nothing reads nothing.
    let recs = records(
        &[
            "disk",
            "-p",
            "dev_name=no-such-device",
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=200000000",
        ],
        2,
    );
    assert!(
        recs.iter()
            .all(|r| r.iter().all(|(_, v)| v.as_u64() == Some(0))),
        "{recs:?}"
    );
}

#[test]
fn netif_counts_loopback_traffic() {
    let fb = fact("netif/default.jsonl");
    let default = [
        "lo.rx.bytes",
        "lo.rx.packets",
        "lo.rx.errors",
        "lo.tx.bytes",
        "lo.tx.packets",
        "lo.tx.errors",
    ];
    assert_eq!(keys(&fb), default);
    let fb = fact("netif/verbose.jsonl");
    assert_eq!(keys(&fb).len(), 16);
    assert_eq!(keys(&fb)[15], "lo.tx.compressepd");

    let dir = Dir::new();
    let mut a = Agent::spawn_in(
        &dir,
        &[
            "-i",
            "netif",
            "-p",
            "interface=lo",
            "-p",
            "verbose=on",
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=300000000",
            "-o",
            "stdout",
            "-p",
            "format=json_lines",
            "-f",
            "0.1",
        ],
        None,
    );
    a.wait_lines(1, Duration::from_secs(10));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&vec![1u8; 4 << 20]).unwrap();
    });
    let (mut conn, _) = listener.accept().unwrap();
    std::io::copy(&mut conn, &mut std::io::sink()).unwrap();
    sender.join().unwrap();
    let n = a.stdout().lines().count();
    a.wait_lines(n + 2, Duration::from_secs(10));
    let out = a.stop(Duration::from_secs(10));
    let recs: Vec<_> = out.stdout.lines().map(fields).collect();
    assert!(recs
        .iter()
        .all(|r| keys(r) == keys(&fb) && r.iter().all(|(_, v)| v.is_u64())));
    let rx: u64 = recs.iter().map(|r| r[0].1.as_u64().unwrap()).sum();
    let tx: u64 = recs.iter().map(|r| r[8].1.as_u64().unwrap()).sum();
    assert!(rx >= 4 << 20 && tx >= 4 << 20, "rx {rx} tx {tx}");
}

#[test]
fn netif_without_an_interface_or_with_a_missing_one_is_refused() {
    let l = refused_config("[INPUT]\n    name netif\n[OUTPUT]\n    name stdout\n    match *\n");
    assert!(
        l[0].starts_with("[error] fluent-bit.conf:1: [input:netif] 'interface' is not set"),
        "{l:?}"
    );
    let dir = Dir::new();
    let mut a = Agent::spawn_in(
        &dir,
        &[
            "-i",
            "netif",
            "-p",
            "interface=nosuchif9",
            "-p",
            "test_at_init=on",
            "-o",
            "stdout",
        ],
        None,
    );
    assert_eq!(a.wait(Duration::from_secs(10)), Some(255));
    assert!(
        a.stderr().contains("nosuchif9: init test failed"),
        "{}",
        a.stderr()
    );
}

#[test]
fn proc_reports_a_process_by_name_and_its_end() {
    let fb = fact("proc/alive.jsonl");
    let mut want = vec!["alive", "proc_name", "pid"];
    want.extend([
        "mem.VmPeak",
        "mem.VmSize",
        "mem.VmLck",
        "mem.VmHWM",
        "mem.VmRSS",
        "mem.VmData",
        "mem.VmStk",
        "mem.VmExe",
        "mem.VmLib",
        "mem.VmPTE",
        "mem.VmSwap",
        "fd",
    ]);
    assert_eq!(keys(&fb), want);
    assert_eq!(
        keys(&fact("proc/dead_no_mem.jsonl")),
        ["alive", "proc_name", "pid", "fd"]
    );

    use std::os::unix::process::CommandExt;
    let name = format!("zzproc{}", std::process::id());
    let child = Kill(Command::new("sleep").arg0(&name).arg("60").spawn().unwrap());
    let pid = child.0.id();
    while !std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .starts_with(name.as_bytes())
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let recs = records(
        &[
            "proc",
            "-p",
            &format!("proc_name={name}"),
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=200000000",
        ],
        1,
    );
    let r = &recs[0];
    assert_eq!(keys(r), want);
    assert_eq!(r[0].1, serde_json::Value::Bool(true));
    assert_eq!(r[1].1.as_str(), Some(name.as_str()));
    assert_eq!(r[2].1.as_i64(), Some(i64::from(pid)));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let vm_exe: u64 = status
        .lines()
        .find(|l| l.starts_with("VmExe:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        r[10].1.as_u64(),
        Some(vm_exe * 1000),
        "kB x 1000, as Fluent Bit"
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    assert_eq!(r[14].1.as_u64(), Some(fds));
    drop(child);

    // Gone: alive false, pid -1, zeros; with alert, only such records.
    let recs = records(
        &[
            "proc",
            "-p",
            &format!("proc_name={name}"),
            "-p",
            "alert=on",
            "-p",
            "mem=off",
            "-p",
            "interval_sec=0",
            "-p",
            "interval_nsec=200000000",
        ],
        2,
    );
    for r in recs {
        assert_eq!(keys(&r), ["alive", "proc_name", "pid", "fd"]);
        assert_eq!(r[0].1, serde_json::Value::Bool(false));
        assert_eq!(r[2].1.as_i64(), Some(-1));
        assert_eq!(r[3].1.as_u64(), Some(0));
    }
}

#[test]
fn kmsg_reads_what_the_kernel_logs() {
    let fb = fact("kmsg/records.jsonl");
    assert_eq!(keys(&fb), ["priority", "sequence", "sec", "usec", "msg"]);
    let Ok(mut dev) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") else {
        eprintln!("skipped: /dev/kmsg is not writable here (needs root)");
        return;
    };
    let mark = format!("agent-kmsg-test-{}", std::process::id());
    {
        use std::io::Write;
        dev.write_all(format!("<3>{mark} err\n").as_bytes())
            .unwrap();
        dev.write_all(format!("<7>{mark} debug\n").as_bytes())
            .unwrap();
    }
    let run = |level: &str| -> Vec<Vec<(String, serde_json::Value)>> {
        let dir = Dir::new();
        let mut a = Agent::spawn_in(
            &dir,
            &[
                "-i",
                "kmsg",
                "-p",
                level,
                "-o",
                "stdout",
                "-p",
                "format=json_lines",
                "-f",
                "0.1",
            ],
            None,
        );
        a.wait_until(Duration::from_secs(10), "the marked message", |o, _| {
            o.contains(&format!("{mark} err"))
        });
        let out = a.stop(Duration::from_secs(10));
        out.stdout
            .lines()
            .map(fields)
            .filter(|r| r[4].1.as_str().is_some_and(|m| m.contains(&mark)))
            .collect()
    };
    let all = run("prio_level=8");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        keys(&all[0]),
        ["priority", "sequence", "sec", "usec", "msg"]
    );
    assert_eq!(all[0][0].1.as_i64(), Some(3));
    assert_eq!(all[0][4].1.as_str(), Some(format!("{mark} err").as_str()));
    assert_eq!(all[1][0].1.as_i64(), Some(7));
    assert_eq!(all[1][1].1.as_u64(), all[0][1].1.as_u64().map(|s| s + 1));
    // prio_level 4 keeps err (3), drops debug (7).
    let some = run("prio_level=4");
    assert_eq!(some.len(), 1, "{some:?}");
}
