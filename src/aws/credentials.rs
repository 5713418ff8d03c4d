//! Where the signing credentials come from, in Fluent Bit's order (its "standard
//! chain", src/aws/flb_aws_credentials.c):
//!
//! 1. environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! 2. the shared files, profile `aws_profile`, else `AWS_PROFILE`, else
//!    `AWS_DEFAULT_PROFILE`, else `default`: the `credential_process` of the profile in
//!    `AWS_CONFIG_FILE` (else `~/.aws/config`, `[profile NAME]`), else the keys in
//!    `AWS_SHARED_CREDENTIALS_FILE` (else `~/.aws/credentials`), else (as the AWS CLI)
//!    keys in the config file's profile;
//! 3. EKS web identity: `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` → STS
//!    `AssumeRoleWithWebIdentity` (`AWS_ROLE_SESSION_NAME` if set);
//! 4. ECS: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on 169.254.170.2) or
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` (http or https), with `AWS_CONTAINER_AUTHORIZATION_TOKEN`
//!    (or `_FILE`) as `Authorization`;
//! 5. EC2 instance metadata: an IMDSv2 token, else IMDSv1, the instance role's
//!    credentials.
//!
//! With `aws_role_arn`, STS `AssumeRole` (signed with the chain's credentials,
//! `aws_external_id`) gives the credentials used. STS is `sts.REGION.amazonaws.com`
//! over TLS, or `aws_sts_endpoint`.
//!
//! Credentials are cached and fetched again 60 seconds before they expire (Fluent Bit's
//! refresh window). A chain that yields none is an error that names what each source
//! said; the request is then not sent (never unsigned) and the flush is retried.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use super::{BoxFuture, Signer};
use crate::http_client::HttpClient;
use crate::net::TlsSetup;

/// Fetched again this long before they expire.
const REFRESH_WINDOW: Duration = Duration::from_secs(60);
/// Connect and exchange limit of each credential request (Fluent Bit's
/// FLB_AWS_CREDENTIAL_NET_TIMEOUT).
const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// A key pair, with its session token and expiry for temporary credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expires: Option<SystemTime>,
}

impl Credentials {
    fn fresh(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|e| e > now + REFRESH_WINDOW)
    }
}

/// What hands out credentials (the chain, a cached role).
pub trait Provide: Send + Sync {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, String>>;
    /// Forgets cached credentials: the service said they are expired or invalid
    /// (Fluent Bit's provider `refresh`), so the next request fetches them again.
    fn invalidate(&self) {}
}

/// One source of the chain: `Ok(None)` when it is not set up here (its variables
/// unset, no file), an error when it is set up and failed.
trait Source: Send + Sync {
    fn name(&self) -> &'static str;
    fn fetch(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>>;
}

/// An STS endpoint: `https://host[:port]` or `host` (TLS, port 443 as Fluent Bit), or
/// `http://host:port` (plain: a local STS stand-in; Fluent Bit always uses TLS).
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            (true, text)
        };
        let hostport = rest.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or("an endpoint such as https://sts.us-east-1.amazonaws.com")?,
            ),
            None => (hostport, if tls { 443 } else { 80 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err("an endpoint such as https://sts.us-east-1.amazonaws.com".into());
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// `sts.REGION.amazonaws.com` (`.amazonaws.com.cn` in China regions).
    fn sts(region: &str) -> Endpoint {
        Endpoint {
            host: super::service_host("sts", region),
            port: 443,
            tls: true,
        }
    }

    fn client(&self) -> Result<HttpClient, String> {
        let tls = if self.tls {
            Some(TlsSetup::system(&self.host)?)
        } else {
            None
        };
        Ok(HttpClient::endpoint(
            &self.host,
            self.port,
            tls,
            NET_TIMEOUT,
        ))
    }
}

/// What a section says about its credentials.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    pub region: String,
    pub sts: Option<Endpoint>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

/// Sources tried in order, the first credentials cached until they near expiry.
pub struct Chain {
    sources: Vec<Box<dyn Source>>,
    cached: Mutex<Option<Credentials>>,
}

impl Chain {
    fn new(sources: Vec<Box<dyn Source>>) -> Chain {
        Chain {
            sources,
            cached: Mutex::new(None),
        }
    }

    /// Fluent Bit's standard chain, under an `AssumeRole` when `role_arn` is set.
    pub fn standard(setup: Setup) -> Result<Chain, String> {
        let sts = setup
            .sts
            .clone()
            .unwrap_or_else(|| Endpoint::sts(&setup.region));
        let sts_client = sts.client()?;
        let session_name = session_name();
        let base = Chain::new(vec![
            Box::new(Env),
            Box::new(Profile {
                name: setup.profile.clone(),
            }),
            Box::new(WebIdentity {
                sts: sts_client.clone(),
                session_name: session_name.clone(),
            }),
            Box::new(Ecs),
            Box::new(Imds {
                client: super::imds::Imds::new(super::imds::Version::Detect),
            }),
        ]);
        let Some(role_arn) = setup.role_arn else {
            return Ok(base);
        };
        let signer = Signer::new(&setup.region, "sts", Arc::new(base));
        Ok(Chain::new(vec![Box::new(AssumeRole {
            sts: sts_client.with_signer(Arc::new(signer)),
            role_arn,
            external_id: setup.external_id,
            session_name,
        })]))
    }
}

impl Provide for Chain {
    fn invalidate(&self) {
        *self.cached.lock().unwrap() = None;
    }

    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, String>> {
        Box::pin(async move {
            let now = SystemTime::now();
            if let Some(c) = self.cached.lock().unwrap().as_ref() {
                if c.fresh(now) {
                    return Ok(c.clone());
                }
            }
            let mut tried = Vec::with_capacity(self.sources.len());
            for source in &self.sources {
                match source.fetch().await {
                    Ok(Some(c)) => {
                        crate::debug!("[aws_credentials] credentials from {}", source.name());
                        *self.cached.lock().unwrap() = Some(c.clone());
                        return Ok(c);
                    }
                    Ok(None) => tried.push(format!("{}: not set up", source.name())),
                    Err(e) => tried.push(format!("{}: {e}", source.name())),
                }
            }
            Err(format!("no AWS credentials ({})", tried.join("; ")))
        })
    }
}

/// Fluent Bit's role session names are random; so are agent's.
fn session_name() -> String {
    format!("agent-{:016x}", fastrand::u64(..))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
struct Env;

impl Source for Env {
    fn name(&self) -> &'static str {
        "environment (AWS_ACCESS_KEY_ID)"
    }
    fn fetch(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>> {
        Box::pin(async {
            let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
            else {
                return Ok(None);
            };
            Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: env("AWS_SESSION_TOKEN"),
                expires: None,
            }))
        })
    }
}

/// The shared credentials file, then the config file.
struct Profile {
    name: Option<String>,
}

/// The `key = value` pairs of section `[section]` of an INI text.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut found = None;
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            current = Some(name.clone());
            if name == section && found.is_none() {
                found = Some(Vec::new());
            }
            continue;
        }
        if current.as_deref() == Some(section) {
            if let (Some(pairs), Some((k, v))) = (found.as_mut(), line.split_once('=')) {
                let pairs: &mut Vec<(String, String)> = pairs;
                pairs.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    found
}

fn from_pairs(pairs: &[(String, String)]) -> Option<Credentials> {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    Some(Credentials {
        access_key_id: get("aws_access_key_id")?,
        secret_access_key: get("aws_secret_access_key")?,
        session_token: get("aws_session_token"),
        expires: None,
    })
}

/// A file's text, `None` when it does not exist.
fn read_optional(file: &str) -> Result<Option<String>, String> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {file}: {e}")),
    }
}

/// Runs a profile's `credential_process` (through `sh -c`, as the AWS CLI) and reads
/// its JSON (`AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`).
async fn credential_process(command: &str) -> Result<Credentials, String> {
    let run = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| format!("credential_process '{command}' ran 60 s without finishing"))?
        .map_err(|e| format!("credential_process '{command}' could not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "credential_process '{command}' failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_json(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("credential_process '{command}': {e}"))
}

impl Source for Profile {
    fn name(&self) -> &'static str {
        "shared credentials/config file"
    }
    /// Fluent Bit's order: the config file profile's `credential_process`, else the
    /// credentials file's keys; then (as the AWS CLI, not Fluent Bit) keys written in
    /// the config file's profile.
    fn fetch(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>> {
        Box::pin(async move {
            let profile = self
                .name
                .clone()
                .or_else(|| env("AWS_PROFILE"))
                .or_else(|| env("AWS_DEFAULT_PROFILE"))
                .unwrap_or_else(|| "default".into());
            let home = env("HOME");
            let path = |var: &str, file: &str| {
                env(var).or_else(|| home.as_ref().map(|h| format!("{h}/.aws/{file}")))
            };
            let config_sections = if profile == "default" {
                vec!["default".to_string(), "profile default".to_string()]
            } else {
                vec![format!("profile {profile}")]
            };
            let mut looked = Vec::new();
            let config_file = path("AWS_CONFIG_FILE", "config");
            let mut config_pairs = None;
            if let Some(file) = &config_file {
                if let Some(text) = read_optional(file)? {
                    config_pairs = config_sections
                        .iter()
                        .find_map(|s| ini_section(&text, s).map(|p| (s.clone(), p)));
                }
            }
            if let Some((_, pairs)) = &config_pairs {
                if let Some((_, cmd)) = pairs.iter().find(|(k, _)| k == "credential_process") {
                    return credential_process(cmd).await.map(Some);
                }
            }
            if let Some(file) = path("AWS_SHARED_CREDENTIALS_FILE", "credentials") {
                if let Some(text) = read_optional(&file)? {
                    if let Some(pairs) = ini_section(&text, &profile) {
                        match from_pairs(&pairs) {
                            Some(c) => return Ok(Some(c)),
                            None => looked.push(format!(
                                "[{profile}] of {file} has no aws_access_key_id/aws_secret_access_key"
                            )),
                        }
                    }
                }
            }
            if let (Some((section, pairs)), Some(file)) = (&config_pairs, &config_file) {
                match from_pairs(pairs) {
                    Some(c) => return Ok(Some(c)),
                    None => looked.push(format!(
                        "[{section}] of {file} has no aws_access_key_id/aws_secret_access_key or credential_process"
                    )),
                }
            }
            if looked.is_empty() {
                Ok(None)
            } else {
                Err(looked.join(", "))
            }
        })
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of `<tag>...</tag>` in an XML reply.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].trim())
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .map_err(|e| format!("expiration '{text}' is not a time: {e}"))
}

/// The credentials of an STS `AssumeRole`/`AssumeRoleWithWebIdentity` response.
fn parse_sts(body: &str) -> Result<Credentials, String> {
    let get = |tag: &str| {
        xml_text(body, tag)
            .map(str::to_string)
            .ok_or_else(|| format!("the STS response has no {tag}"))
    };
    Ok(Credentials {
        access_key_id: get("AccessKeyId")?,
        secret_access_key: get("SecretAccessKey")?,
        session_token: Some(get("SessionToken")?),
        expires: Some(parse_time(&get("Expiration")?)?),
    })
}

/// A GET whose 200 body is returned as text; other statuses are errors with the body.
async fn get_text(
    client: &HttpClient,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    method: Method,
) -> Result<String, String> {
    let reply = client
        .send(method, path, headers, bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    if reply.status.as_u16() != 200 {
        let code = xml_text(&text, "Code").unwrap_or("");
        return Err(format!(
            "{} answered HTTP {} {code}{}",
            client.addr(),
            reply.status.as_u16(),
            if code.is_empty() {
                format!(": {}", reply.body_text())
            } else {
                String::new()
            }
        ));
    }
    Ok(text)
}

/// STS `AssumeRole` with the credentials of the chain under it (the request is signed
/// by the STS client's signer).
struct AssumeRole {
    sts: HttpClient,
    role_arn: String,
    external_id: Option<String>,
    session_name: String,
}

impl Source for AssumeRole {
    fn name(&self) -> &'static str {
        "STS AssumeRole (aws_role_arn)"
    }
    fn fetch(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>> {
        Box::pin(async move {
            let mut path = format!(
                "/?Version=2011-06-15&Action=AssumeRole&RoleSessionName={}&RoleArn={}",
                encode(&self.session_name),
                encode(&self.role_arn)
            );
            if let Some(id) = &self.external_id {
                path.push_str(&format!("&ExternalId={}", encode(id)));
            }
            let body = get_text(&self.sts, &path, &[], Method::GET).await?;
            parse_sts(&body).map(Some)
        })
    }
}

/// EKS (IRSA): a web identity token file and a role.
struct WebIdentity {
    sts: HttpClient,
    session_name: String,
}

impl Source for WebIdentity {
    fn name(&self) -> &'static str {
        "EKS web identity (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE)"
    }
    fn fetch(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>> {
        Box::pin(async move {
            let (Some(role), Some(file)) =
                (env("AWS_ROLE_ARN"), env("AWS_WEB_IDENTITY_TOKEN_FILE"))
            else {
                return Ok(None);
            };
            let token = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read the token file {file}: {e}"))?;
            let session = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| self.session_name.clone());
            let path = format!(
                "/?Version=2011-06-15&Action=AssumeRoleWithWebIdentity&RoleSessionName={}&RoleArn={}&WebIdentityToken={}",
                encode(&session),
                encode(&role),
                encode(token.trim())
            );
            let body = get_text(&self.sts, &path, &[], Method::GET).await?;
            parse_sts(&body).map(Some)
        })
    }
}

/// The JSON credentials of the ECS endpoint and of instance metadata.
fn parse_json(text: &str) -> Result<Credentials, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("credentials are not JSON: {e}"))?;
    let get = |k: &str| {
        v.get(k)
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("the credentials have no {k}"))
    };
    Ok(Credentials {
        access_key_id: get("AccessKeyId")?,
        secret_access_key: get("SecretAccessKey")?,
        session_token: get("Token").or_else(|_| get("SessionToken")).ok(),
        expires: match get("Expiration") {
            Ok(t) => Some(parse_time(&t)?),
            Err(_) => None,
        },
    })
}

/// ECS task role (the container credentials endpoint).
struct Ecs;

impl Source for Ecs {
    fn name(&self) -> &'static str {
        "ECS (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/_FULL_URI)"
    }
    fn fetch(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>> {
        Box::pin(async move {
            let (endpoint, path) = if let Some(rel) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            {
                let ecs = Endpoint {
                    host: "169.254.170.2".into(),
                    port: 80,
                    tls: false,
                };
                (ecs, rel)
            } else if let Some(full) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
                let bad = || {
                    format!("AWS_CONTAINER_CREDENTIALS_FULL_URI '{full}' is not an http:// or https:// URL")
                };
                let (scheme, rest) = full.split_once("://").ok_or_else(bad)?;
                if scheme != "http" && scheme != "https" {
                    return Err(bad());
                }
                let (hostport, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], rest[i..].to_string()),
                    None => (rest, "/".to_string()),
                };
                let ep = Endpoint::parse(&format!("{scheme}://{hostport}")).map_err(|_| bad())?;
                (ep, path)
            } else {
                return Ok(None);
            };
            let token = match env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .map_err(|e| format!("cannot read {f}: {e}"))?
                        .trim()
                        .to_string(),
                ),
                None => env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            };
            let mut headers = Vec::new();
            if let Some(t) = token {
                headers.push((
                    hyper::header::AUTHORIZATION,
                    HeaderValue::from_str(&t)
                        .map_err(|_| "the authorization token is not a header value")?,
                ));
            }
            let client = endpoint.client()?;
            let text = get_text(&client, &path, &headers, Method::GET).await?;
            parse_json(&text).map(Some)
        })
    }
}

/// EC2 instance metadata (IMDSv2 token, else v1): the instance role's credentials.
struct Imds {
    client: super::imds::Imds,
}

const IMDS_ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";

impl Source for Imds {
    fn name(&self) -> &'static str {
        "EC2 instance metadata"
    }
    fn fetch(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>> {
        Box::pin(async move {
            let roles = self.client.get(IMDS_ROLE_PATH).await.map_err(|e| match e {
                super::imds::ImdsError::NotFound => "the instance has no IAM role".to_string(),
                e => e.to_string(),
            })?;
            let role = roles
                .lines()
                .next()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .ok_or("the instance has no IAM role")?;
            let text = self
                .client
                .get(&format!("{IMDS_ROLE_PATH}{role}"))
                .await
                .map_err(|e| e.to_string())?;
            parse_json(&text).map(Some)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_replies_parse() {
        let xml = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
            <AssumeRoleResult><Credentials><AccessKeyId>ASIAX</AccessKeyId>\
            <SecretAccessKey>sec/ret</SecretAccessKey><SessionToken>tok</SessionToken>\
            <Expiration>2030-01-02T03:04:05Z</Expiration></Credentials></AssumeRoleResult>\
            </AssumeRoleResponse>";
        let c = parse_sts(xml).unwrap();
        assert_eq!(c.access_key_id, "ASIAX");
        assert_eq!(c.secret_access_key, "sec/ret");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(
            c.expires,
            Some(humantime::parse_rfc3339("2030-01-02T03:04:05Z").unwrap())
        );
        assert!(parse_sts("<x/>").is_err());
    }

    #[test]
    fn profiles_read() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[profile  x]\naws_access_key_id=C\n";
        let d = from_pairs(&ini_section(text, "default").unwrap()).unwrap();
        assert_eq!(
            (d.access_key_id.as_str(), d.secret_access_key.as_str()),
            ("A", "B")
        );
        assert!(from_pairs(&ini_section(text, "profile x").unwrap()).is_none());
        assert!(ini_section(text, "y").is_none());
    }

    #[test]
    fn endpoints_parse() {
        let e = |h: &str, p, t| Endpoint {
            host: h.into(),
            port: p,
            tls: t,
        };
        assert_eq!(
            Endpoint::parse("https://sts.x.com"),
            Ok(e("sts.x.com", 443, true))
        );
        assert_eq!(Endpoint::parse("sts.x.com"), Ok(e("sts.x.com", 443, true)));
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8080/"),
            Ok(e("127.0.0.1", 8080, false))
        );
        assert!(Endpoint::parse("http://h:x").is_err());
        assert_eq!(
            Endpoint::sts("cn-north-1").host,
            "sts.cn-north-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn freshness() {
        let now = SystemTime::now();
        let mut c = Credentials {
            access_key_id: "a".into(),
            secret_access_key: "b".into(),
            session_token: None,
            expires: None,
        };
        assert!(c.fresh(now));
        c.expires = Some(now + Duration::from_secs(30));
        assert!(!c.fresh(now));
        c.expires = Some(now + Duration::from_secs(600));
        assert!(c.fresh(now));
    }
}
