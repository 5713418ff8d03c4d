//! The HTTP/1.1 client every HTTP output shares (`http`, `es`, `loki`, ...), on the
//! networking layer's pool ([`crate::net::Upstream`]: every `net.*` and `tls.*`
//! property, keepalive, recycling, connect timeouts) with hyper for the protocol.
//! Fluent Bit: src/flb_http_client.c, src/flb_upstream.c (proxies).
//!
//! One request per pooled connection at a time. The connection goes back to the pool
//! only after a whole response was read and the server did not ask to close it; a
//! request that fails, times out or is cancelled half way closes its connection, so a
//! late response can never be read as the answer to the next request.
//!
//! The request carries Fluent Bit's headers in its order: `Host` (`host:port`),
//! `Content-Length`, the output's own headers, then `Connection: keep-alive` when the
//! pool keeps connections. Header names are written title-cased (`Content-Type`);
//! Fluent Bit writes a user's header name as given (`FLB-Tag` here is `Flb-Tag`), which
//! no HTTP server tells apart.
//!
//! Proxies as Fluent Bit's: the `proxy` property of an output, else `HTTP_PROXY` (or
//! `http_proxy`) unless the host is listed in `NO_PROXY` (exact names, or `*`) or
//! `net.proxy_env_ignore` is on. A plain HTTP destination is reached through the proxy
//! with absolute request URIs and `Proxy-Authorization` from the proxy URL's user and
//! password.
//!
//! This module knows no pipeline: an output maps a [`Reply`]'s [`Verdict`] to its
//! flush result.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::net::upstream::Stream;
use crate::net::{NetError, NetSetup, TlsSetup, Upstream};

mod compress;
pub use compress::Compression;

/// `http_user`, shared by the HTTP outputs.
pub const HTTP_USER: PropSpec = PropSpec::new(
    "http_user",
    PropKind::Str,
    None,
    "User name for HTTP basic authentication.",
);
/// `http_passwd`, shared by the HTTP outputs.
pub const HTTP_PASSWD: PropSpec = PropSpec::new(
    "http_passwd",
    PropKind::Str,
    Some(""),
    "Password for HTTP basic authentication.",
);
/// `header`, repeatable: `header X-Key value`.
pub const HEADER: PropSpec = PropSpec::new(
    "header",
    PropKind::Multi,
    None,
    "An HTTP header to add to each request: 'header NAME VALUE' (repeatable).",
);
/// `proxy`: `http://[user:password@]host:port`.
pub const PROXY: PropSpec = PropSpec::new(
    "proxy",
    PropKind::Str,
    None,
    "HTTP proxy, http://host:port (overrides HTTP_PROXY).",
);
/// `http.response_timeout`.
pub const RESPONSE_TIMEOUT: PropSpec = PropSpec::new(
    "http.response_timeout",
    PropKind::Time,
    Some("60s"),
    "Most time a whole request and response may take (0 = no limit).",
);
/// `http.read_idle_timeout`.
pub const READ_IDLE_TIMEOUT: PropSpec = PropSpec::new(
    "http.read_idle_timeout",
    PropKind::Time,
    Some("0s"),
    "Fail a response that sends nothing for this long (0 = net.io_timeout).",
);

/// `bearer_token`, for the plugins that offer it beside basic authentication.
pub const BEARER_TOKEN: PropSpec = PropSpec::new(
    "bearer_token",
    PropKind::Str,
    None,
    "Send 'Authorization: Bearer TOKEN' (when http_user is not set).",
);

/// `Authorization` from `http_user`/`http_passwd`, else from `bearer_token` (when the
/// plugin's table has it).
pub fn authorization(props: &Props, bearer: bool) -> Result<Option<HeaderValue>, ConfigError> {
    if let Some(user) = props.str("http_user") {
        return Ok(Some(basic_auth(
            user,
            props.str("http_passwd").unwrap_or(""),
        )));
    }
    match bearer.then(|| props.str("bearer_token")).flatten() {
        Some(token) => HeaderValue::from_str(&format!("Bearer {token}"))
            .map(Some)
            .map_err(|_| props.error("bearer_token", "a token of printable characters")),
        None => Ok(None),
    }
}

/// `log_response_payload`: the response body in the log line of a response.
pub const LOG_RESPONSE_PAYLOAD: PropSpec = PropSpec::new(
    "log_response_payload",
    PropKind::Bool,
    Some("true"),
    "Include the response body in the log line of each response.",
);

/// Most of a response body kept (the rest is read and thrown away): enough for any
/// error message and for an Elasticsearch bulk reply of thousands of items.
pub const MAX_KEPT_BODY: usize = 64 << 20;

/// What a response status means for the chunk, as Fluent Bit's outputs read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 200 to 205.
    Done,
    /// 408, 429, 5xx and everything else that is not a 4xx: worth another try.
    Retry,
    /// Any other 4xx: the same request would be refused again.
    Drop,
}

impl Verdict {
    pub fn of(status: StatusCode) -> Verdict {
        match status.as_u16() {
            200..=205 => Verdict::Done,
            408 | 429 => Verdict::Retry,
            400..=499 => Verdict::Drop,
            _ => Verdict::Retry,
        }
    }
}

/// A response: status, headers and (up to [`MAX_KEPT_BODY`] of) the body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.status)
    }

    /// `Retry-After` in seconds (the HTTP-date form is not used by log receivers).
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self
            .headers
            .get(hyper::header::RETRY_AFTER)?
            .to_str()
            .ok()?;
        v.trim().parse::<u64>().ok().map(Duration::from_secs)
    }

    /// Fluent Bit's log line of a response: `host:port, HTTP status=N`, then the body
    /// on the next line when `with_body` and there is one.
    pub fn status_line(&self, dest: &str, with_body: bool) -> String {
        let status = self.status.as_u16();
        if with_body && !self.body.is_empty() {
            format!("{dest}, HTTP status={status}\n{}", self.body_text())
        } else {
            format!("{dest}, HTTP status={status}")
        }
    }

    /// The body as text for a log line, cut at 1,024 bytes.
    pub fn body_text(&self) -> String {
        let cut = self.body.len().min(1024);
        let mut s = String::from_utf8_lossy(&self.body[..cut]).into_owned();
        if cut < self.body.len() {
            s.push_str("...");
        }
        s
    }
}

/// Why no response was had.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("HTTP exchange with {addr} failed: {msg}")]
    Exchange { addr: String, msg: String },
    #[error("request to {addr} not sent: {msg}")]
    Sign { addr: String, msg: String },
    #[error("no complete response from {addr} within {} seconds ({what})", .after.as_secs_f64())]
    Timeout {
        addr: String,
        after: Duration,
        what: &'static str,
    },
}

/// Signs a request just before it is sent (after compression: the body is the body as
/// sent), adding its headers: AWS SigV4 (`crate::aws`) is one. An error means the
/// request is not sent (never sent unsigned) and the flush is retried.
pub trait RequestSigner: Send + Sync {
    fn sign<'a>(
        &'a self,
        req: &'a mut Request<Full<Bytes>>,
        body: &'a [u8],
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
}

/// A proxy in front of the destination.
#[derive(Clone, Debug)]
struct Proxy {
    /// `Proxy-Authorization`, when the proxy URL has a user.
    auth: Option<HeaderValue>,
}

/// Where requests go and how: one per output instance, shared by its workers.
#[derive(Clone)]
pub struct HttpClient {
    upstream: Upstream,
    /// `http://host:port` when requests go through a proxy (absolute URIs).
    absolute_prefix: Option<String>,
    proxy: Option<Proxy>,
    host_header: HeaderValue,
    keepalive: bool,
    response_timeout: Option<Duration>,
    read_idle_timeout: Option<Duration>,
    addr: String,
    signer: Option<std::sync::Arc<dyn RequestSigner>>,
}

/// A URL's parts: scheme (lower-cased), user and password, host, port.
#[derive(Debug, PartialEq)]
struct UrlParts {
    scheme: String,
    creds: Option<(String, String)>,
    host: String,
    port: u16,
}

/// `scheme://[user:password@]host[:port][/...]` split; the port defaults by scheme.
fn split_url(url: &str) -> Option<UrlParts> {
    let (scheme, rest) = url.split_once("://")?;
    let rest = rest.split('/').next()?;
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let creds = userinfo.map(|u| match u.split_once(':') {
        Some((user, pass)) => (user.to_string(), pass.to_string()),
        None => (u.to_string(), String::new()),
    });
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, p.parse::<u16>().ok().filter(|&p| p > 0)?)
        }
        _ => (hostport, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        creds,
        host: host.to_string(),
        port,
    })
}

/// `Authorization: Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> HeaderValue {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value")
}

/// Whether `NO_PROXY` exempts `host`: `*`, or `host` itself in the comma list.
fn no_proxy_covers(no_proxy: Option<&str>, host: &str) -> bool {
    match no_proxy {
        None => false,
        Some("*") => true,
        Some(list) => list.split(',').any(|h| h.trim() == host),
    }
}

fn env_nonempty(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .find(|v| !v.is_empty())
}

impl HttpClient {
    /// The client of one output section: `host`/`port` as already read by the plugin,
    /// `net.*`, `tls.*`, `proxy`, `http.response_timeout`, `http.read_idle_timeout`
    /// (the last three where the plugin's table has them).
    pub fn from_props(props: &Props, host: &str, port: u16) -> Result<HttpClient, ConfigError> {
        let tls = TlsSetup::from_props(props, host)?;
        HttpClient::with_tls(props, host, port, tls)
    }

    /// As [`HttpClient::from_props`], with TLS decided by the plugin.
    pub fn with_tls(
        props: &Props,
        host: &str,
        port: u16,
        tls: Option<TlsSetup>,
    ) -> Result<HttpClient, ConfigError> {
        let net = NetSetup::from_props(props)?;
        let explicit = props.has("proxy").then(|| props.str("proxy")).flatten();
        let env = if explicit.is_none() && !net.proxy_env_ignore {
            env_nonempty(&["HTTP_PROXY", "http_proxy"]).filter(|_| {
                !no_proxy_covers(env_nonempty(&["NO_PROXY", "no_proxy"]).as_deref(), host)
            })
        } else {
            None
        };
        let proxy_url = explicit.map(str::to_string).or(env);
        let mut upstream_host = host.to_string();
        let mut upstream_port = port;
        let mut proxy = None;
        let mut absolute_prefix = None;
        if let Some(url) = proxy_url {
            let bad = || {
                if explicit.is_some() {
                    props.error("proxy", "an HTTP proxy URL such as http://proxy:3128")
                } else {
                    ConfigError::invalid(
                        props.span(),
                        format!(
                            "{}: HTTP_PROXY '{url}' is not an HTTP proxy URL such as http://proxy:3128",
                            props.plugin()
                        ),
                        Some("fix HTTP_PROXY, or set net.proxy_env_ignore on".into()),
                    )
                }
            };
            let UrlParts {
                scheme,
                creds,
                host: phost,
                port: pport,
            } = split_url(&url).ok_or_else(bad)?;
            if scheme != "http" {
                return Err(bad());
            }
            if tls.is_some() {
                // An HTTPS destination needs a CONNECT tunnel through the proxy.
                let msg = format!(
                    "{}: a TLS destination through the proxy {url} needs a CONNECT tunnel, which agent does not open yet",
                    props.plugin()
                );
                if explicit.is_some() {
                    return Err(ConfigError::invalid(
                        props.span_of("proxy"),
                        msg,
                        Some("remove 'proxy', or 'tls on'".into()),
                    ));
                }
                crate::warn!(
                    "{}: [config] {msg}: connecting to {host}:{port} directly (set net.proxy_env_ignore on to silence this)",
                    props.span()
                );
            } else {
                upstream_host = phost;
                upstream_port = pport;
                absolute_prefix = Some(format!("http://{host}:{port}"));
                proxy = Some(Proxy {
                    auth: creds.map(|(u, p)| basic_auth(&u, &p)),
                });
            }
        }
        let keepalive = net.keepalive;
        let read_idle_timeout = props
            .has("http.read_idle_timeout")
            .then(|| props.time("http.read_idle_timeout"))
            .flatten()
            .filter(|d| !d.is_zero())
            .or(net.io_timeout);
        let response_timeout = props
            .has("http.response_timeout")
            .then(|| props.time("http.response_timeout"))
            .flatten()
            .or(Some(Duration::from_secs(60)))
            .filter(|d| !d.is_zero());
        let host_header = HeaderValue::from_str(&format!("{host}:{port}"))
            .map_err(|_| props.error("host", "a host name or IP address"))?;
        let upstream = Upstream::new(&upstream_host, upstream_port, net, tls);
        Ok(HttpClient {
            addr: upstream.addr().to_string(),
            upstream,
            absolute_prefix,
            proxy,
            host_header,
            keepalive,
            response_timeout,
            read_idle_timeout,
            signer: None,
        })
    }

    /// A client of a side endpoint (credential sources: STS, instance metadata), no
    /// keepalive, no proxy: `timeout` bounds the connect and the whole exchange.
    pub fn endpoint(host: &str, port: u16, tls: Option<TlsSetup>, timeout: Duration) -> HttpClient {
        let net = NetSetup {
            keepalive: false,
            keepalive_idle_timeout: Duration::from_secs(30),
            keepalive_max_recycle: None,
            max_connections: None,
            tcp_keepalive: None,
            io_timeout: Some(timeout),
            connect_timeout: timeout,
            connect_timeout_log_error: false,
            source_address: None,
            prefer: crate::net::props::Prefer::None,
            proxy_env_ignore: true,
        };
        let host_header = HeaderValue::from_str(&format!("{host}:{port}"))
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let upstream = Upstream::new(host, port, net, tls);
        HttpClient {
            addr: upstream.addr().to_string(),
            upstream,
            absolute_prefix: None,
            proxy: None,
            host_header,
            keepalive: false,
            response_timeout: Some(timeout),
            read_idle_timeout: Some(timeout),
            signer: None,
        }
    }

    /// `Host: host` without the port (Fluent Bit's for HTTPS on port 443).
    pub fn with_host_header(mut self, host: &str) -> HttpClient {
        if let Ok(v) = HeaderValue::from_str(host) {
            self.host_header = v;
        }
        self
    }

    /// Every request is signed by `signer` before it is sent.
    pub fn with_signer(mut self, signer: std::sync::Arc<dyn RequestSigner>) -> HttpClient {
        self.signer = Some(signer);
        self
    }

    /// Counts the pool's connections into `metrics` (see [`Upstream::with_metrics`]).
    pub fn with_metrics(mut self, metrics: crate::net::upstream::PoolMetrics) -> HttpClient {
        self.upstream = self.upstream.with_metrics(metrics);
        self
    }

    /// `host:port` of the server (or proxy) connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and reads the whole response. `headers` come after `Host` and
    /// `Content-Length`, in the order given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Reply, HttpError> {
        let uri = match &self.absolute_prefix {
            Some(prefix) => format!("{prefix}{path}"),
            None => path.to_string(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body.clone()))
            .map_err(|e| self.exchange(format!("cannot build the request: {e}")))?;
        let h = req.headers_mut();
        h.insert(hyper::header::HOST, self.host_header.clone());
        h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        for (name, value) in headers {
            h.append(name.clone(), value.clone());
        }
        if let Some(signer) = &self.signer {
            signer
                .sign(&mut req, &body)
                .await
                .map_err(|msg| HttpError::Sign {
                    addr: self.addr.clone(),
                    msg,
                })?;
        }
        let h = req.headers_mut();
        if let Some(auth) = self.proxy.as_ref().and_then(|p| p.auth.clone()) {
            h.insert(hyper::header::PROXY_AUTHORIZATION, auth);
        }
        if self.keepalive {
            h.insert(
                hyper::header::CONNECTION,
                HeaderValue::from_static("keep-alive"),
            );
        }
        let mut conn = self.upstream.get().await?;
        let exchange = self.exchange_on(&mut conn, req);
        let reply = match self.response_timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| HttpError::Timeout {
                    addr: self.addr.clone(),
                    after: t,
                    what: "http.response_timeout",
                })?,
            None => exchange.await,
        };
        let (reply, reusable) = reply?;
        // Back to the pool only when the whole response was read and the server keeps
        // the connection; otherwise it is closed as `conn` drops.
        conn.awaiting_reply(!reusable);
        Ok(reply)
    }

    fn exchange(&self, msg: String) -> HttpError {
        HttpError::Exchange {
            addr: self.addr.clone(),
            msg,
        }
    }

    /// One request and its response on `conn`; also whether the connection may be
    /// reused.
    async fn exchange_on(
        &self,
        conn: &mut crate::net::PooledConn,
        req: Request<Full<Bytes>>,
    ) -> Result<(Reply, bool), HttpError> {
        let Some(stream) = conn.io() else {
            return Err(self.exchange("connection lost".into()));
        };
        let io = hyper_util::rt::TokioIo::new(IdleGuard::new(stream, self.read_idle_timeout));
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake::<_, Full<Bytes>>(io)
            .await
            .map_err(|e| self.exchange(e.to_string()))?;
        let request = async {
            let resp = sender.send_request(req).await?;
            let (parts, mut body) = resp.into_parts();
            let mut kept = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    let room = MAX_KEPT_BODY.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            drop(sender);
            Ok::<_, hyper::Error>((parts, kept))
        };
        let (response, driven) = tokio::join!(request, connection.without_shutdown());
        let (parts, body) = response.map_err(|e| self.exchange(describe(&e)))?;
        let closes = parts
            .headers
            .get(hyper::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || parts.version != hyper::Version::HTTP_11;
        let reusable = match driven {
            Ok(p) => p.read_buf.is_empty() && !closes && self.keepalive,
            Err(_) => false,
        };
        Ok((
            Reply {
                status: parts.status,
                headers: parts.headers,
                body: Bytes::from(body),
            },
            reusable,
        ))
    }
}

/// hyper's error with its cause (`connection closed before message completed`, ...).
fn describe(e: &hyper::Error) -> String {
    use std::error::Error;
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A connection whose reads fail once nothing arrived for `idle` (and whose writes
/// fail once they make no progress for as long): `http.read_idle_timeout`, else
/// `net.io_timeout`.
struct IdleGuard<'a> {
    inner: &'a mut Stream,
    idle: Option<Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a> IdleGuard<'a> {
    fn new(inner: &'a mut Stream, idle: Option<Duration>) -> Self {
        IdleGuard {
            inner,
            idle,
            timer: None,
        }
    }

    /// On `Pending`: starts (or checks) the idle timer. On progress: stops it.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let Some(idle) = self.idle else { return poll };
        match poll {
            Poll::Pending => {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "nothing for {} seconds (read idle timeout)",
                            idle.as_secs_f64()
                        ),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.timer = None;
                ready
            }
        }
    }
}

use std::future::Future;

impl AsyncRead for IdleGuard<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut *this.inner).poll_read(cx, buf);
        this.watch(cx, poll)
    }
}

impl AsyncWrite for IdleGuard<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut *this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut *this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// `header NAME VALUE` entries of a section, checked (names and values HTTP allows).
/// The headers Fluent Bit's HTTP outputs send after their own: `Authorization`
/// (`http_user`/`http_passwd`), `User-Agent: Fluent-Bit`, then each `header`.
pub fn tail_headers(props: &Props) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    let mut out = Vec::new();
    if let Some(auth) = authorization(props, false)? {
        out.push((hyper::header::AUTHORIZATION, auth));
    }
    out.push((
        hyper::header::USER_AGENT,
        HeaderValue::from_static("Fluent-Bit"),
    ));
    out.extend(headers_from_props(props)?);
    Ok(out)
}

pub fn headers_from_props(props: &Props) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    let mut out = Vec::new();
    for entry in props.multi_entries("header") {
        let text = entry.value.trim();
        let (name, value) = match text.split_once(char::is_whitespace) {
            Some((n, v)) => (n, v.trim()),
            None => (text, ""),
        };
        let bad = |what: &str| {
            ConfigError::invalid(
                &entry.span,
                format!("{}: invalid header '{text}': {what}", props.plugin()),
                Some("write it as 'header X-Name value'".into()),
            )
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a header name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| bad("not a header value"))?;
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_as_fluent_bit() {
        let v = |s: u16| Verdict::of(StatusCode::from_u16(s).unwrap());
        for s in [200, 201, 202, 203, 204, 205] {
            assert_eq!(v(s), Verdict::Done, "{s}");
        }
        for s in [206, 301, 408, 429, 500, 502, 503] {
            assert_eq!(v(s), Verdict::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 413] {
            assert_eq!(v(s), Verdict::Drop, "{s}");
        }
    }

    #[test]
    fn urls_split() {
        let parts = |s: &str, c: Option<(&str, &str)>, h: &str, p| UrlParts {
            scheme: s.into(),
            creds: c.map(|(u, p)| (u.into(), p.into())),
            host: h.into(),
            port: p,
        };
        assert_eq!(
            split_url("http://proxy:3128"),
            Some(parts("http", None, "proxy", 3128))
        );
        assert_eq!(
            split_url("http://u:p@10.0.0.1/x"),
            Some(parts("http", Some(("u", "p")), "10.0.0.1", 80))
        );
        assert_eq!(
            split_url("http://[::1]:8080"),
            Some(parts("http", None, "::1", 8080))
        );
        assert_eq!(split_url("proxy:3128"), None);
        assert_eq!(split_url("http://:3128"), None);
        assert_eq!(split_url("http://h:99999"), None);
    }

    #[test]
    fn no_proxy_lists() {
        assert!(no_proxy_covers(Some("*"), "a"));
        assert!(no_proxy_covers(Some("x, a,b"), "a"));
        assert!(!no_proxy_covers(Some("x,b"), "a"));
        assert!(!no_proxy_covers(None, "a"));
    }

    #[test]
    fn basic_auth_header() {
        // RFC 7617 §2's example.
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
