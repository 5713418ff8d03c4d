//! A real Prometheus (Debian's `prometheus` package) on loopback in a temp dir, and
//! PromQL queries through its HTTP API. `Prometheus::start` returns `None` (the caller
//! prints `skipped: ...` and returns) when the binary is not installed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_get, Dir};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    pub dir: Dir,
}

impl Prometheus {
    /// Starts Prometheus with `config` (its YAML) and `extra` flags, and waits until
    /// it is ready. `None` when `prometheus` is not installed.
    pub fn start(config: &str, extra: &[&str]) -> Option<Prometheus> {
        Prometheus::start_on(free_port(), config, extra)
    }

    /// Whether the `prometheus` binary is installed (prints why a test skips if not).
    pub fn installed() -> bool {
        let ok = Command::new("prometheus").arg("--version").output().is_ok();
        if !ok {
            eprintln!("skipped: needs prometheus (Debian package prometheus)");
        }
        ok
    }

    /// As [`Prometheus::start`], listening on `port`.
    pub fn start_on(port: u16, config: &str, extra: &[&str]) -> Option<Prometheus> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: needs prometheus (Debian package prometheus)");
            return None;
        }
        let dir = Dir::new();
        let cfg = dir.file("prometheus.yml", config);
        let child = Command::new("prometheus")
            .args([
                &format!("--config.file={}", cfg.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, port, dir };
        let end = Instant::now() + Duration::from_secs(60);
        while !matches!(http_get(port, "/-/ready"), Ok((200, _))) {
            assert!(Instant::now() < end, "prometheus never got ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(p)
    }

    /// The result vector of an instant PromQL query (empty when nothing matches).
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let Ok((200, body)) = http_get(self.port, &format!("/api/v1/query?query={q}")) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Queries until `ok` holds for the result (or panics after `timeout`).
    pub fn wait_query(
        &self,
        promql: &str,
        timeout: Duration,
        ok: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            let r = self.query(promql);
            if ok(&r) {
                return r;
            }
            assert!(Instant::now() < end, "{promql}: last result {r:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A sample's value as a number.
pub fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on `text`: (exit code, what it printed); `None` (said on
/// stderr) when promtool is not installed.
pub fn promtool(text: &str) -> Option<(Option<i32>, String)> {
    let Ok(mut p) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("skipped promtool: needs promtool (Debian package prometheus)");
        return None;
    };
    use std::io::Write;
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    Some((
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    ))
}
