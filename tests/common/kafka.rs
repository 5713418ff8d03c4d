//! A real Kafka-protocol broker for the kafka tests: `tansu` (crates.io; scripts/test-deps.sh
//! installs it), storing in a SQLite file so that a killed and restarted broker keeps
//! what it acknowledged; and an independent client (Python confluent-kafka, librdkafka
//! 2.x: tests/common/kafka_client.py) to produce and read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::Pki;
use super::{free_port, Dir};

/// The tansu binary: on PATH or in cargo's bin dir; `None` when not installed. While
/// scripts/test-deps.sh builds it in the background (CI: `AGENT_TANSU_BUILD` names
/// its state file), waits for that build; a failed build fails the test.
pub fn tansu() -> Option<PathBuf> {
    if let Some(state) = std::env::var_os("AGENT_TANSU_BUILD") {
        let state = PathBuf::from(state);
        let start = Instant::now();
        let mut said = false;
        loop {
            let text = std::fs::read_to_string(&state).unwrap_or_default();
            match text.trim() {
                "building" if start.elapsed() < Duration::from_secs(40 * 60) => {
                    if !said {
                        eprintln!("waiting for the tansu broker's build ({})", state.display());
                        said = true;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
                "" | "done 0" => break,
                other => panic!(
                    "the tansu broker's background build: {other} (log: {}.log)",
                    state.display()
                ),
            }
        }
    }
    installed_tansu()
}

fn installed_tansu() -> Option<PathBuf> {
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
    /// The port clients connect to (the TLS front's when there is one).
    pub port: u16,
    /// The port tansu listens on (plain TCP: its own `topic`/`user` commands use it).
    inner_port: u16,
    /// `127.0.0.1`, or `localhost` (the test certificate's name) with TLS.
    host: &'static str,
    /// Whether tansu requires SASL (`--authentication`).
    auth: bool,
    /// What the independent client sets to reach it (TLS, SASL).
    client_conf: Vec<(String, String)>,
    dir: Dir,
    child: Option<Child>,
    _tls: Option<TlsFront>,
}

/// What a secured broker asks of its clients.
#[derive(Default)]
pub struct Security<'a> {
    /// TLS with this CA's `localhost` certificate. tansu 0.6.0 accepts `--cert`/`--key`
    /// but never uses them (tansu-broker 0.6.0 src/broker.rs:268 builds a TlsAcceptor,
    /// `_acceptor`, and serves the plain stream), so a TLS front terminates TLS and
    /// forwards to tansu, which advertises the front's address in its metadata.
    pub tls: Option<&'a Pki>,
    /// SCRAM users `(mechanism, name, password)`, mechanism `SCRAM-SHA-256` or
    /// `SCRAM-SHA-512`; with any, tansu requires authentication and the independent
    /// client logs in as the first.
    pub users: &'a [(&'a str, &'a str, &'a str)],
    /// Topics `(name, partitions)`, created before authentication is turned on (tansu's
    /// own admin client cannot log in).
    pub topics: &'a [(&'a str, u32)],
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
            inner_port: port,
            host: "127.0.0.1",
            auth: false,
            client_conf: Vec::new(),
            dir: Dir::new(),
            child: None,
            _tls: None,
        };
        b.restart();
        b
    }

    /// A broker behind TLS and/or requiring SCRAM logins, with its topics and users.
    pub fn start_secure(bin: &Path, sec: &Security<'_>) -> Broker {
        let inner_port = free_port();
        let mut b = Broker::start_on(bin, inner_port);
        if let Some(pki) = sec.tls {
            let front = TlsFront::start(pki, inner_port);
            b.port = front.port;
            b.host = "localhost";
            b._tls = Some(front);
            b.client_conf.extend([
                ("security.protocol".into(), "ssl".into()),
                ("ssl.ca.location".into(), pki.path("ca.pem")),
            ]);
        }
        for (name, partitions) in sec.topics {
            b.create_topic(name, *partitions);
        }
        for (mechanism, name, password) in sec.users {
            b.create_user(mechanism, name, password);
        }
        if let Some((mechanism, name, password)) = sec.users.first() {
            b.client_conf.retain(|(k, _)| k != "security.protocol");
            b.client_conf.extend([
                (
                    "security.protocol".into(),
                    format!(
                        "sasl_{}",
                        if sec.tls.is_some() {
                            "ssl"
                        } else {
                            "plaintext"
                        }
                    ),
                ),
                ("sasl.mechanism".into(), mechanism.to_string()),
                ("sasl.username".into(), name.to_string()),
                ("sasl.password".into(), password.to_string()),
            ]);
            b.auth = true;
        }
        // Again, advertising the front (and requiring logins).
        b.kill();
        b.restart();
        b
    }

    /// `127.0.0.1:PORT` (`localhost:PORT` behind TLS).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Starts the broker (again) on the same port and storage file.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://127.0.0.1:{}", self.inner_port);
        let advertised = format!("tcp://{}:{}", self.host, self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args([
                "--storage-engine",
                // Relative to the working directory (tansu joins it to the cwd).
                "sqlite://tansu.db",
            ])
            .args(self.auth.then_some("--authentication"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.inner_port)).is_err() {
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

    /// A SCRAM user (`SCRAM-SHA-256` or `SCRAM-SHA-512`), before authentication is on.
    pub fn create_user(&self, mechanism: &str, name: &str, password: &str) {
        let mechanism = match mechanism {
            "SCRAM-SHA-256" => "scram256",
            "SCRAM-SHA-512" => "scram512",
            other => panic!("tansu has no SASL mechanism {other}"),
        };
        self.admin(&["user", "create", name, password, "--mechanism", mechanism]);
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.admin(&[
            "topic",
            "create",
            name,
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    /// A `tansu` admin command (`topic create`, `user create`) to this broker.
    fn admin(&self, args: &[&str]) {
        assert!(
            !self.auth,
            "tansu's admin client cannot log in: {args:?} before auth"
        );
        let out = Command::new(&self.bin)
            .args(args)
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.inner_port)])
            .current_dir(self.dir.path())
            .output()
            .expect("tansu");
        assert!(
            out.status.success(),
            "tansu {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces one message per line (`KEY\tVALUE` lines have a key), all acknowledged.
    pub fn produce(&self, topic: &str, lines: &str) {
        let d = Dir::new();
        let f = d.file("messages", lines);
        let out = self
            .client()
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
        let out = self
            .client()
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

impl Broker {
    /// The independent client, with this broker's TLS and SASL settings.
    fn client(&self) -> Command {
        let mut c = Command::new("python3");
        c.arg(client());
        let conf: serde_json::Map<String, serde_json::Value> = self
            .client_conf
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        c.env(
            "KAFKA_CLIENT_CONF",
            serde_json::Value::Object(conf).to_string(),
        );
        c
    }

    /// The settings the independent client uses, as `rdkafka.*` lines of a section.
    pub fn rdkafka_lines(&self) -> String {
        self.client_conf
            .iter()
            .map(|(k, v)| format!("    rdkafka.{k} {v}\n"))
            .collect()
    }
}

/// TLS in front of tansu: terminates each connection with the test certificate and
/// relays the bytes to tansu's plain listener (what a TLS-terminating proxy in front of
/// a Kafka broker does; the Kafka protocol inside is untouched).
struct TlsFront {
    port: u16,
    _rt: tokio::runtime::Runtime,
}

impl TlsFront {
    fn start(pki: &Pki, to: u16) -> TlsFront {
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A handshake the client refuses (a CA that does not match) ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { port, _rt: rt }
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
