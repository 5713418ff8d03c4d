//! Harness for integration tests: runs the built `agent` binary on configs written to a
//! temp dir, captures stdout/stderr into files, waits on what it prints (never a fixed
//! sleep), stops it with a signal and returns what came out.
#![allow(dead_code)]

pub mod netns;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
        let out = dir.path().join("agent.stdout");
        let err = dir.path().join("agent.stderr");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .env_remove("FLB_LOG_LEVEL");
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
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
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

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
