//! Harness for integration tests: runs the built `agent` binary on configs written to a
//! temp dir, captures stdout/stderr into files, waits on what it prints (never a fixed
//! sleep), stops it with a signal and returns what came out.
#![allow(dead_code)]

pub mod http_sink;
pub mod imds;
pub mod kafka;
pub mod kube_api;
pub mod netns;
pub mod pki;
pub mod prometheus;
pub mod sigv4;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agent");

/// What a finished run printed.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A temp dir holding configs and captured output.
pub struct Dir(pub tempfile::TempDir);

impl Dir {
    pub fn new() -> Dir {
        Dir(tempfile::tempdir().expect("temp dir"))
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    /// Writes `text` to `name` in the dir; returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, text).unwrap();
        p
    }
}

/// Runs `agent args...` to completion (it must exit by itself within 20 s).
pub fn run(args: &[&str], cwd: Option<&Path>) -> Output {
    let dir = Dir::new();
    let mut agent = Agent::spawn_in(&dir, args, cwd);
    let code = agent.wait(Duration::from_secs(20));
    let out = agent.output(code);
    drop(dir);
    out
}

/// Strips the `[YYYY/MM/DD HH:MM:SS.mmm] ` prefix from every log line.
pub fn log_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(|l| match l.find("] [") {
            Some(i) if l.starts_with('[') && i < 30 => l[i + 2..].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

/// Runs the agent on `conf` (written as `fluent-bit.conf` in a temp dir), which must
/// not start (exit 1); returns its log lines without the `[time]` prefix.
pub fn refused_config(conf: &str) -> Vec<String> {
    let d = Dir::new();
    d.file("fluent-bit.conf", conf);
    let o = run(&["-c", "fluent-bit.conf"], Some(d.path()));
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    log_lines(&o.stderr)
}

/// A running agent whose stdout and stderr go to files.
pub struct Agent {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _own: Option<Dir>,
}

impl Agent {
    /// Starts `agent -c <conf>` with `conf` written to a temp dir.
    pub fn start(conf: &str) -> Agent {
        let dir = Dir::new();
        let path = dir.file("fluent-bit.conf", conf);
        let mut a = Agent::spawn_in(&dir, &["-c", path.to_str().unwrap()], None);
        a._own = Some(dir);
        a
    }

    pub fn spawn_in(dir: &Dir, args: &[&str], cwd: Option<&Path>) -> Agent {
        Agent::spawn_wrapped(dir, &[], args, cwd, &[])
    }

    /// As [`Agent::spawn_in`], with these environment variables set (for `${VAR}` in
    /// configs).
    pub fn spawn_in_env(
        dir: &Dir,
        args: &[&str],
        cwd: Option<&Path>,
        env: &[(&str, &Path)],
    ) -> Agent {
        Agent::spawn_wrapped(dir, &[], args, cwd, env)
    }

    /// Starts `agent -c <conf>` with these environment variables set.
    pub fn start_with_env(conf: &str, env: &[(&str, &str)]) -> Agent {
        let dir = Dir::new();
        let path = dir.file("fluent-bit.conf", conf);
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, Path::new(*v))).collect();
        let mut a = Agent::spawn_wrapped(&dir, &[], &["-c", path.to_str().unwrap()], None, &env);
        a._own = Some(dir);
        a
    }

    /// Starts `agent -c <conf>` through `wrapper` (a command that execs its arguments,
    /// such as `prlimit --nofile=200:200`).
    pub fn start_wrapped(conf: &str, wrapper: &[&str]) -> Agent {
        let dir = Dir::new();
        let path = dir.file("fluent-bit.conf", conf);
        let mut a = Agent::spawn_wrapped(&dir, wrapper, &["-c", path.to_str().unwrap()], None, &[]);
        a._own = Some(dir);
        a
    }

    /// Starts `agent -c <conf>` inside the network namespace `ns`.
    pub fn start_in_netns(conf: &str, ns: &netns::NetNs) -> Agent {
        let dir = Dir::new();
        let path = dir.file("fluent-bit.conf", conf);
        let wrapper = ["ip", "netns", "exec", ns.name.as_str()];
        let mut a =
            Agent::spawn_wrapped(&dir, &wrapper, &["-c", path.to_str().unwrap()], None, &[]);
        a._own = Some(dir);
        a
    }

    /// As [`Agent::start_in_netns`], with environment variables (paths).
    pub fn start_in_netns_env(conf: &str, ns: &netns::NetNs, env: &[(&str, &Path)]) -> Agent {
        let dir = Dir::new();
        let path = dir.file("fluent-bit.conf", conf);
        let wrapper = ["ip", "netns", "exec", ns.name.as_str()];
        let mut a =
            Agent::spawn_wrapped(&dir, &wrapper, &["-c", path.to_str().unwrap()], None, env);
        a._own = Some(dir);
        a
    }

    /// Runs the agent through `wrapper` (a command that execs its arguments, so the pid
    /// is still the agent's), or directly when `wrapper` is empty.
    fn spawn_wrapped(
        dir: &Dir,
        wrapper: &[&str],
        args: &[&str],
        cwd: Option<&Path>,
        env: &[(&str, &Path)],
    ) -> Agent {
        let out = dir.path().join("agent.stdout");
        let err = dir.path().join("agent.stderr");
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .env_remove("FLB_LOG_LEVEL")
            // HTTP outputs honour these: a test's proxy is set by the test only.
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            // The aws_auth credential chain: a test's credentials are set by the test only.
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_PROFILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .env_remove("AWS_CONFIG_FILE")
            .env_remove("AWS_ROLE_ARN")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .envs(env.iter().copied());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        Agent {
            child: cmd.spawn().expect("spawn agent"),
            out,
            err,
            _own: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until `cond(stdout, stderr)` holds; panics with both after `timeout`.
    pub fn wait_until(&mut self, timeout: Duration, what: &str, cond: impl Fn(&str, &str) -> bool) {
        let end = Instant::now() + timeout;
        loop {
            let (o, e) = (self.stdout(), self.stderr());
            if cond(&o, &e) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited ({status}) before {what}\nstdout:\n{o}\nstderr:\n{e}");
            }
            if Instant::now() > end {
                panic!("timed out waiting for {what}\nstdout:\n{o}\nstderr:\n{e}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stdout has at least `n` lines.
    pub fn wait_lines(&mut self, n: usize, timeout: Duration) {
        self.wait_until(timeout, &format!("{n} stdout lines"), |o, _| {
            o.lines().count() >= n
        });
    }

    /// Waits until stderr contains `text`.
    pub fn wait_log(&mut self, text: &str, timeout: Duration) {
        self.wait_until(timeout, &format!("log '{text}'"), |_, e| e.contains(text));
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for exit; kills and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "agent did not exit within {timeout:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then wait for exit (at most `timeout`).
    pub fn stop(mut self, timeout: Duration) -> Output {
        self.signal(libc::SIGTERM);
        let code = self.wait(timeout);
        self.output(code)
    }

    fn output(&self, code: Option<i32>) -> Output {
        Output {
            code,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_request(port, "GET", path)
}

/// A plain HTTP/1.0 request without a body on loopback: (status code, body).
pub fn http_request(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The port a server input bound (`port 0` lets the kernel choose, so parallel tests
/// never race for one): from its last `listening on 127.0.0.1:PORT` line.
pub fn bound_port(a: &Agent) -> u16 {
    bound_port_of(a, "")
}

/// As [`bound_port`], from the last such line that also contains `prefix` (a log
/// prefix such as `[input:tcp:`, when several inputs listen).
pub fn bound_port_of(a: &Agent, prefix: &str) -> u16 {
    let err = a.stderr();
    let line = err
        .lines()
        .rev()
        .find(|l| l.contains("listening on 127.0.0.1:") && l.contains(prefix))
        .unwrap_or_else(|| panic!("no {prefix} listening line\n{err}"));
    let rest = &line[line.find("127.0.0.1:").unwrap() + 10..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A free TCP port on loopback (bound, then released).
/// Runs `tests/common/<script>` with Python, `stdin` on its standard input; what it
/// printed and how it exited (the independent decoders and verifiers of the tests).
pub fn python_script(script: &str, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/common")
        .join(script);
    let mut child = Command::new("python3")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One connection a [`TcpCollector`] accepted.
#[derive(Clone, Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    pub opened: Instant,
    /// When the peer closed (EOF or reset); `None` while open.
    pub closed: Option<Instant>,
    pub bytes: Vec<u8>,
    pub last_data: Option<Instant>,
}

impl Conn {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// How a [`TcpCollector`] treats the connections it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reads everything until the peer closes.
    Read,
    /// Never reads (a stuck peer); the listener's receive buffer is small so that the
    /// sender stalls soon.
    Stalled,
    /// Reads the first bytes, then closes the connection itself.
    CloseAfterFirstRead,
}

/// A loopback sink on 127.0.0.1:0 that records every connection: open and close times,
/// peer address and bytes.
pub struct TcpCollector {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
    stop: Arc<AtomicBool>,
    /// Connections held open without reading (Mode::Stalled).
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpCollector {
    pub fn start() -> TcpCollector {
        TcpCollector::with_mode(Mode::Read)
    }

    pub fn with_mode(mode: Mode) -> TcpCollector {
        TcpCollector::bind(mode, 0)
    }

    /// A reading collector on 127.0.0.1:`port` (a destination that comes back).
    pub fn on_port(port: u16) -> TcpCollector {
        TcpCollector::bind(Mode::Read, port)
    }

    fn bind(mode: Mode, port: u16) -> TcpCollector {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if mode == Mode::Stalled {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        socket.listen(128).unwrap();
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        let c = TcpCollector {
            addr,
            conns: Arc::default(),
            stop: Arc::default(),
            held: Arc::default(),
        };
        let (conns, stop, held) = (c.conns.clone(), c.stop.clone(), c.held.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let index = {
                    let mut all = conns.lock().unwrap();
                    all.push(Conn {
                        peer: stream.peer_addr().unwrap(),
                        opened: Instant::now(),
                        closed: None,
                        bytes: Vec::new(),
                        last_data: None,
                    });
                    all.len() - 1
                };
                if mode == Mode::Stalled {
                    held.lock().unwrap().push(stream);
                    continue;
                }
                let conns = conns.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = stream.read(&mut buf).unwrap_or(0);
                        let mut all = conns.lock().unwrap();
                        let c = &mut all[index];
                        if n == 0 {
                            c.closed = Some(Instant::now());
                            return;
                        }
                        c.bytes.extend_from_slice(&buf[..n]);
                        c.last_data = Some(Instant::now());
                        if mode == Mode::CloseAfterFirstRead {
                            c.closed = Some(Instant::now());
                            return;
                        }
                    }
                });
            }
        });
        c
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A snapshot of every connection so far, in accept order.
    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    /// Everything received, connections concatenated in accept order.
    pub fn bytes(&self) -> Vec<u8> {
        self.conns().iter().flat_map(|c| c.bytes.clone()).collect()
    }

    /// Waits until `cond` holds on the connections; panics after `timeout`.
    pub fn wait(&self, timeout: Duration, what: &str, cond: impl Fn(&[Conn]) -> bool) -> Vec<Conn> {
        let end = Instant::now() + timeout;
        loop {
            let conns = self.conns();
            if cond(&conns) {
                return conns;
            }
            if Instant::now() > end {
                panic!("timed out waiting for {what}; connections: {conns:#?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `n` newline-terminated lines arrived (all connections).
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<Conn> {
        self.wait(timeout, &format!("{n} lines"), |c| {
            c.iter()
                .map(|c| c.bytes.iter().filter(|&&b| b == b'\n').count())
                .sum::<usize>()
                >= n
        })
    }
}

impl Drop for TcpCollector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblocks accept() so the thread sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// The sockets of process `pid` whose peer is `peer`, duplicated into this process with
/// pidfd_getfd(2) so their options can be read with getsockopt. Needs root (ptrace rights).
pub fn sockets_of(pid: u32, peer: SocketAddr) -> Vec<socket2::Socket> {
    // SAFETY: plain syscalls; the returned fds are owned by the Sockets we build.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let mut found = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let is_socket = fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !is_socket {
            continue;
        }
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) } as i32;
        if dup < 0 {
            continue;
        }
        let s = unsafe { socket2::Socket::from_raw_fd(dup) };
        if s.peer_addr().ok().and_then(|a| a.as_socket()) == Some(peer) {
            found.push(s);
        }
    }
    unsafe { libc::close(pidfd) };
    found
}

/// Runs every case of `dir` — `<case>.expected` (Fluent Bit's stdout) with its config
/// `<case>.conf` or `<case>.yaml` — and compares stdout byte for byte; returns how many
/// ran.
pub fn run_oracle_cases(dir: &Path) -> usize {
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let case = name.strip_suffix(".expected")?;
            ["conf", "yaml"]
                .iter()
                .map(|ext| format!("{case}.{ext}"))
                .find(|conf| dir.join(conf).exists())
        })
        .collect();
    cases.sort();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .chunks(cases.len().div_ceil(4).max(1))
            .map(|chunk| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for conf in chunk {
                        let case = conf.rsplit_once('.').map_or(conf.as_str(), |(c, _)| c);
                        let o = run(&["-c", conf], Some(dir));
                        let want =
                            std::fs::read_to_string(dir.join(format!("{case}.expected"))).unwrap();
                        if o.code != Some(0) || o.stdout != want {
                            bad.push(format!(
                                "{case}: exit {:?}\n--- agent\n{}--- fluent-bit\n{}--- stderr\n{}",
                                o.code, o.stdout, want, o.stderr
                            ));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cases.len()
}

/// A counter of the monitoring endpoint (`http_server on`) for one instance (`""`: a
/// counter without labels).
pub fn metric(http: u16, name: &str, instance: &str) -> u64 {
    let (status, body) = http_get(http, "/api/v2/metrics/prometheus")
        .unwrap_or_else(|e| panic!("the monitoring server did not answer: {e}"));
    assert_eq!(status, 200, "{body}");
    let prefix = match instance {
        "" => format!("{name} "),
        _ => format!("{name}{{name=\"{instance}\"}} "),
    };
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in\n{body}"))
}

/// The resident memory of a process, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
