//! A network namespace per test (`ip netns add`), with conntrack active (an nft rule
//! that matches `ct state`), accounting and timestamps on and short timeouts; deleted
//! on drop. Needs root, as the conntrack tests do.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct NetNs {
    pub name: String,
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl NetNs {
    pub fn new(prefix: &str) -> NetNs {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns.exec(&["nft", "add table inet ct_test"]);
        ns.exec(&[
            "nft",
            "add chain inet ct_test out { type filter hook output priority 0; }",
        ]);
        ns.exec(&["nft", "add rule inet ct_test out ct state new counter"]);
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.netfilter.nf_conntrack_acct=1",
            "net.netfilter.nf_conntrack_timestamp=1",
            "net.netfilter.nf_conntrack_udp_timeout=1",
            "net.netfilter.nf_conntrack_udp_timeout_stream=2",
            "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1",
            "net.netfilter.nf_conntrack_tcp_timeout_close=1",
            "net.netfilter.nf_conntrack_tcp_timeout_fin_wait=1",
            "net.netfilter.nf_conntrack_tcp_timeout_last_ack=1",
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait=1",
        ]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace; panics if it fails. `args[1..]` may hold a
    /// whole nft command line as one string.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        let split: Vec<&str>;
        if args[0] == "nft" && args.len() == 2 {
            split = args[1].split(' ').collect();
            full.push("nft");
            full.extend(split.iter().copied());
        } else {
            full.extend_from_slice(args);
        }
        String::from_utf8_lossy(&run(&full).stdout).into_owned()
    }

    /// Starts the kernel's own view of TCP flow ends in the namespace
    /// (`conntrack -E -e DESTROY -o extended -p tcp`), once it has subscribed.
    pub fn watch_tcp_destroys(&self) -> DestroyWatch {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "conntrack",
                "-E",
                "-e",
                "DESTROY",
            ])
            .args(["-o", "extended", "-p", "tcp"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300)); // let the tool subscribe
        DestroyWatch(child)
    }

    /// Moves the calling thread into the namespace (sockets it opens then live there).
    pub fn enter(&self) {
        let f = std::fs::File::open(self.path()).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace fd, for this thread only.
        assert_eq!(
            unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: as in `enter`.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns"
            );
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running `conntrack -E` (see [`NetNs::watch_tcp_destroys`]); killed on drop.
pub struct DestroyWatch(Child);

impl DestroyWatch {
    /// Everything the tool printed, read until `done(text)` holds or `timeout` passes
    /// (checked between reads); then the tool is stopped.
    pub fn read_until(mut self, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        let mut out = self.0.stdout.take().unwrap();
        let end = Instant::now() + timeout;
        while !done(&text) && Instant::now() < end {
            let mut b = [0u8; 4096];
            let n = out.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&b[..n]));
        }
        text
    }
}

impl Drop for DestroyWatch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `packets=N bytes=M` pairs (orig, reply) of one `conntrack -o extended` line.
pub fn conntrack_counters(line: &str) -> Option<[u64; 4]> {
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| {
            w.strip_prefix("packets=")
                .or_else(|| w.strip_prefix("bytes="))
        })
        .map(|n| n.parse().unwrap())
        .collect();
    (nums.len() == 4).then(|| [nums[0], nums[1], nums[2], nums[3]])
}

/// A TCP connection from the address `src` (a workload's, on `lo`) to `dst:port`, given
/// up after 500 ms (a dropped SYN is an error, not a hang).
#[allow(dead_code)]
pub fn connect_from(src: &str, dst: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
    use std::net::SocketAddr;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(src.parse().unwrap(), 0).into())?;
    s.connect_timeout(
        &SocketAddr::new(dst.parse().unwrap(), port).into(),
        std::time::Duration::from_millis(500),
    )?;
    Ok(s.into())
}
