//! A real Kafka-protocol broker for the kafka tests: `tansu` (crates.io; scripts/test-deps.sh
//! installs it), storing in a SQLite file so that a killed and restarted broker keeps
//! what it acknowledged; and an independent client (Python confluent-kafka, librdkafka
//! 2.x: tests/common/kafka_client.py) to produce and read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Dir};

/// The tansu binary: on PATH or in cargo's bin dir; `None` when not installed.
pub fn tansu() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
}

/// Whether the independent client can run.
pub fn have_client() -> bool {
    Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Prints why a test is skipped and returns `None`, or the broker binary.
pub fn needs() -> Option<PathBuf> {
    let Some(t) = tansu() else {
        eprintln!(
            "skipped: needs the tansu broker (scripts/test-deps.sh --install: cargo install tansu)"
        );
        return None;
    };
    if !have_client() {
        eprintln!("skipped: needs Python confluent-kafka (scripts/test-deps.sh --install)");
        return None;
    }
    Some(t)
}

pub struct Broker {
    bin: PathBuf,
    pub port: u16,
    dir: Dir,
    child: Option<Child>,
}

impl Broker {
    pub fn start(bin: &Path) -> Broker {
        Broker::start_on(bin, free_port())
    }

    /// On a given port (a test that started clients before the broker).
    pub fn start_on(bin: &Path, port: u16) -> Broker {
        let mut b = Broker {
            bin: bin.to_path_buf(),
            port,
            dir: Dir::new(),
            child: None,
        };
        b.restart();
        b
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) on the same port and storage file.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args([
                "--storage-engine",
                // Relative to the working directory (tansu joins it to the cwd).
                "sqlite://tansu.db",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "tansu exited ({exited:?}): {}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "tansu did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush anything it has not stored.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", name])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .current_dir(self.dir.path())
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "topic create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces one message per line (`KEY\tVALUE` lines have a key), all acknowledged.
    pub fn produce(&self, topic: &str, lines: &str) {
        let d = Dir::new();
        let f = d.file("messages", lines);
        let out = Command::new("python3")
            .arg(client())
            .args(["produce", &self.addr(), topic, f.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "produce: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Reads `topic` from the beginning with a fresh group until `count` messages or
    /// `quiet` of silence.
    pub fn consume(&self, topic: &str, count: usize, quiet: Duration) -> Vec<Message> {
        let out = Command::new("python3")
            .arg(client())
            .args([
                "consume",
                &self.addr(),
                topic,
                &count.to_string(),
                &quiet.as_secs_f64().to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "consume: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                use base64::Engine;
                Message {
                    topic: v["topic"].as_str().unwrap().to_string(),
                    partition: v["partition"].as_i64().unwrap() as i32,
                    offset: v["offset"].as_i64().unwrap(),
                    key: v["key"].as_str().map(str::to_string),
                    value: base64::engine::general_purpose::STANDARD
                        .decode(v["value"].as_str().unwrap())
                        .unwrap(),
                }
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/kafka_client.py")
}

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}
