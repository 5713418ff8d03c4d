//! A small HTTP/1.1 client for the Kubernetes API server and the kubelet: TLS with the
//! service account's CA, the bearer token re-read from its file as it rotates, a limit
//! on response size, and watch streams read line by line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

/// The service account's CA and token, where Kubernetes mounts them in a pod.
pub const KUBE_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
pub const KUBE_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// `https://host[:port][/...]` → (https, host, port); port 443 when absent.
pub fn parse_url(url: &str) -> Option<(bool, String, u16)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return None;
    };
    let rest = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => (rest, 443),
    };
    if host.is_empty() {
        return None;
    }
    Some((https, host.to_string(), port))
}

/// Where to connect and how to authenticate.
#[derive(Debug, Clone)]
pub struct ClientConf {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub verify: bool,
    pub verify_hostname: bool,
    /// SNI and the name verified, else `host`.
    pub vhost: Option<String>,
    pub token_file: Option<PathBuf>,
    /// A command (run by `sh -c`) whose output is the token; preferred to `token_file`
    /// (Fluent Bit's `kube_token_command`, e.g. `aws-iam-authenticator token --token-only`).
    pub token_command: Option<String>,
    /// How long a token read from `token_file` is used before the file is read again.
    pub token_ttl: Duration,
    /// The largest response body (or watch event) accepted; 0 = no limit.
    pub buffer_size: usize,
    /// Connect, TLS handshake and response headers, each request.
    pub timeout: Duration,
}

impl ClientConf {
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// Why a request failed; `hint` says what the user can do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The host name does not resolve (yet: DNS may start after the agent).
    Dns(String),
    Connect(String),
    Tls(String),
    /// A status other than 200 (and the API's `message`, if any).
    Status(u16, String),
    TooLarge(usize),
    Timeout,
    /// The body is not the JSON expected.
    BadBody(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Dns(e) => write!(f, "cannot resolve the host: {e}"),
            ApiError::Connect(e) => write!(f, "cannot connect: {e}"),
            ApiError::Tls(e) => write!(f, "TLS: {e}"),
            ApiError::Status(code, msg) if msg.is_empty() => write!(f, "HTTP status {code}"),
            ApiError::Status(code, msg) => write!(f, "HTTP status {code}: {msg}"),
            ApiError::TooLarge(n) => {
                write!(f, "the response is larger than buffer_size ({n} bytes)")
            }
            ApiError::Timeout => write!(f, "no response in time"),
            ApiError::BadBody(e) => write!(f, "unexpected response: {e}"),
        }
    }
}

impl ApiError {
    /// What to change, for the error log line.
    pub fn hint(&self) -> &'static str {
        match self {
            ApiError::Dns(_) => "check kube_url (in a pod, the cluster DNS must be up)",
            ApiError::Connect(_) | ApiError::Timeout => "check kube_url and that the API server is reachable from this node",
            ApiError::Tls(_) => "check kube_ca_file/kube_ca_path (or tls.verify)",
            ApiError::Status(401, _) => "the token in kube_token_file is not accepted: check the service account token mount",
            ApiError::Status(403, _) => "grant the service account get, list and watch on what it reads (ClusterRole): pods and namespaces; services and discovery.k8s.io endpointslices for flow logs",
            ApiError::Status(_, _) => "check kube_url",
            ApiError::TooLarge(_) => "raise buffer_size (0 = no limit)",
            ApiError::BadBody(_) => "check that kube_url is the Kubernetes API server (or the kubelet with use_kubelet)",
        }
    }
}

/// The largest token a command may print (Fluent Bit's FLB_KUBE_TOKEN_MAX_SIZE is 1 MiB).
const TOKEN_MAX: usize = 1 << 20;

/// Runs `cmd` with `sh -c` (as Fluent Bit's popen) and takes its output, trimmed, as
/// the token. It runs on the metadata thread, so a slow command delays lookups, never
/// records; a command that fails or prints nothing is an error with its stderr.
fn token_from_command(cmd: &str) -> Result<String, String> {
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("it exited with {}: {}", out.status, err.trim()));
    }
    if out.stdout.len() > TOKEN_MAX {
        return Err(format!("it printed more than {TOKEN_MAX} bytes"));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if token.is_empty() {
        return Err("it printed nothing".into());
    }
    Ok(token)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One client; used by the cache's worker only (not shared between threads).
pub struct Client {
    conf: ClientConf,
    tls: Option<TlsConnector>,
    token: Option<(String, Instant)>,
    token_warned: bool,
}

impl Client {
    pub fn new(conf: ClientConf) -> Client {
        Client {
            conf,
            tls: None,
            token: None,
            token_warned: false,
        }
    }

    pub fn conf(&self) -> &ClientConf {
        &self.conf
    }

    /// The bearer token: from `token_command`'s output, else `token_file`; got again
    /// when older than `token_ttl`, or when `force`d (after a 401: it may have rotated).
    /// A failure keeps the last token and is logged once until the next success.
    fn token(&mut self, force: bool) -> Option<String> {
        let fresh = |(_, at): &(String, Instant)| at.elapsed() < self.conf.token_ttl;
        if force || !self.token.as_ref().is_some_and(fresh) {
            let (got, from) = match (&self.conf.token_command, &self.conf.token_file) {
                (Some(cmd), _) => (
                    token_from_command(cmd),
                    format!("kube_token_command '{cmd}'"),
                ),
                (None, Some(path)) => (
                    std::fs::read_to_string(path)
                        .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
                        .map_err(|e| e.to_string()),
                    format!("kube_token_file {}", path.display()),
                ),
                (None, None) => return None,
            };
            match got {
                Ok(t) => {
                    if self.token.as_ref().is_some_and(|(old, _)| *old != t) {
                        crate::info!("[filter:kubernetes] token updated from {from}");
                    }
                    self.token = Some((t, Instant::now()));
                    self.token_warned = false;
                }
                Err(e) if !self.token_warned => {
                    self.token_warned = true;
                    let what = if self.token.is_some() {
                        "the last token is used"
                    } else {
                        "requests go without a token"
                    };
                    crate::warn!("[filter:kubernetes] cannot get a token from {from}: {e}; {what}");
                }
                Err(_) => {}
            }
        }
        self.token.as_ref().map(|(t, _)| t.clone())
    }

    fn connector(&mut self) -> Result<TlsConnector, ApiError> {
        if let Some(c) = &self.tls {
            return Ok(c.clone());
        }
        let c = &self.conf;
        let config = crate::net::tls::client_config_from_files(
            c.ca_file.as_deref(),
            c.ca_path.as_deref(),
            c.verify,
            c.verify_hostname,
        )
        .map_err(ApiError::Tls)?;
        let connector = TlsConnector::from(Arc::new(config));
        self.tls = Some(connector.clone());
        Ok(connector)
    }

    async fn connect(
        &mut self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, ApiError> {
        let addrs: Vec<_> = tokio::net::lookup_host((self.conf.host.as_str(), self.conf.port))
            .await
            .map_err(|e| ApiError::Dns(e.to_string()))?
            .collect();
        let mut last = ApiError::Dns("no address".into());
        let mut tcp = None;
        for a in addrs {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = ApiError::Connect(format!("{a}: {e}")),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if self.conf.https {
            let connector = self.connector()?;
            let name = self.conf.vhost.as_deref().unwrap_or(&self.conf.host);
            let name = ServerName::try_from(name.to_string())
                .map_err(|e| ApiError::Tls(format!("{name}: {e}")))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| ApiError::Tls(e.to_string()))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ApiError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends `GET path`; a 401 re-reads the token and tries once more.
    async fn send(&mut self, path: &str) -> Result<hyper::Response<Incoming>, ApiError> {
        let mut force = false;
        loop {
            let token = self.token(force);
            let mut sender = self.connect().await?;
            let mut req = Request::get(path)
                .header("Host", format!("{}:{}", self.conf.host, self.conf.port))
                .header("User-Agent", "Fluent-Bit")
                .header("Accept", "application/json");
            if let Some(t) = token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| ApiError::Connect(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| ApiError::Connect(e.to_string()))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !force && self.conf.token_file.is_some()
            {
                force = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// `GET path`, the whole body (at most `buffer_size` bytes, unless 0).
    pub async fn get(&mut self, path: &str) -> Result<Vec<u8>, ApiError> {
        self.get_limited(path, self.conf.buffer_size).await
    }

    /// `GET path` with an explicit body limit (0 = none).
    pub async fn get_limited(&mut self, path: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
        let timeout = self.conf.timeout;
        let fut = async {
            let resp = self.send(path).await?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut out = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ApiError::Connect(e.to_string()))?;
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                    if limit > 0 && out.len() > limit && status == 200 {
                        return Err(ApiError::TooLarge(limit));
                    }
                    if status != 200 && out.len() > 64 * 1024 {
                        break;
                    }
                }
            }
            if status != 200 {
                return Err(ApiError::Status(status, status_message(&out)));
            }
            Ok(out)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Err(ApiError::Timeout))
    }

    /// `GET path` whose body is a stream of JSON lines (a watch).
    pub async fn stream(&mut self, path: &str) -> Result<Lines, ApiError> {
        let resp = tokio::time::timeout(self.conf.timeout, self.send(path))
            .await
            .unwrap_or(Err(ApiError::Timeout))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let mut out = Vec::new();
            let mut body = resp.into_body();
            while let Ok(Some(Ok(frame))) =
                tokio::time::timeout(self.conf.timeout, body.frame()).await
            {
                if let Some(d) = frame.data_ref() {
                    out.extend_from_slice(d);
                }
                if out.len() > 64 * 1024 {
                    break;
                }
            }
            return Err(ApiError::Status(status, status_message(&out)));
        }
        Ok(Lines {
            body: resp.into_body(),
            buf: Vec::new(),
            limit: self.conf.buffer_size,
        })
    }
}

/// The `message` of a `Status` object, else the start of the body.
fn status_message(body: &[u8]) -> String {
    if let Some(m) = super::pod::parse_json(body) {
        if let Some((_, crate::event::Value::Str(s))) = m.iter().find(|(k, _)| &**k == "message") {
            return s.to_string();
        }
    }
    String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_string()
}

/// A body read one line at a time.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    limit: usize,
}

impl Lines {
    /// The next line (without its newline); None at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                let line: Vec<u8> = self.buf.drain(..=i).take(i).collect();
                return Ok(Some(line));
            }
            if self.limit > 0 && self.buf.len() > self.limit {
                return Err(ApiError::TooLarge(self.limit));
            }
            match self.body.frame().await {
                None => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(std::mem::take(&mut self.buf)));
                }
                Some(Err(e)) => return Err(ApiError::Connect(e.to_string())),
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
            }
        }
    }
}
