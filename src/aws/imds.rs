//! The EC2 instance metadata service (IMDS) at 169.254.169.254:80, for the `aws`
//! filter and the credential chain's instance role. Fluent Bit: src/aws/flb_aws_imds.c
//!
//! IMDSv2: a session token from `PUT /latest/api/token`
//! (`X-aws-ec2-metadata-token-ttl-seconds: 21600`), sent as `X-aws-ec2-metadata-token`
//! with every request; a 401 (the token expired) fetches a new one and asks again
//! once. IMDSv1: plain GETs. [`Version::Detect`] (the credential chain's): v2, else v1
//! when the token request is answered with an error status. Each request has a
//! one-second connect and exchange limit (Fluent Bit's FLB_AWS_IMDS_TIMEOUT).
//! Fluent Bit's v2 client first asks with the token `INVALID_TOKEN` and fetches a real
//! one on the 401; agent fetches the token first (the request AWS's SDKs make).

use std::sync::Mutex;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use crate::http_client::HttpClient;

/// Where the service listens.
pub const HOST: &str = "169.254.169.254";
pub const PORT: u16 = 80;
const TIMEOUT: Duration = Duration::from_secs(1);
const TOKEN_PATH: &str = "/latest/api/token";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// Which protocol to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
    /// v2 when the service gives tokens, else v1.
    Detect,
}

/// Why a request got no metadata.
#[derive(Debug, PartialEq)]
pub enum ImdsError {
    /// No answer (not on EC2, or the hop limit stops the token request).
    Unreachable(String),
    /// 404: the item does not exist (no tags, no role).
    NotFound,
    /// Another status.
    Status(u16, String),
}

impl std::fmt::Display for ImdsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImdsError::Unreachable(e) => write!(f, "instance metadata unreachable: {e}"),
            ImdsError::NotFound => write!(f, "instance metadata: not found (404)"),
            ImdsError::Status(s, body) => write!(f, "instance metadata answered HTTP {s}: {body}"),
        }
    }
}

/// A client of the service; its token is kept for the next requests.
pub struct Imds {
    client: HttpClient,
    version: Mutex<Version>,
    token: Mutex<Option<HeaderValue>>,
}

impl Imds {
    pub fn new(version: Version) -> Imds {
        Imds {
            client: HttpClient::endpoint(HOST, PORT, None, TIMEOUT),
            version: Mutex::new(version),
            token: Mutex::new(None),
        }
    }

    /// A new session token (v2), or `None` when the service gives none and `Detect`
    /// falls back to v1.
    async fn refresh_token(&self) -> Result<Option<HeaderValue>, ImdsError> {
        let ttl = [(
            HeaderName::from_static(TTL_HEADER),
            HeaderValue::from_static("21600"),
        )];
        let reply = self
            .client
            .send(Method::PUT, TOKEN_PATH, &ttl, bytes::Bytes::new())
            .await
            .map_err(|e| ImdsError::Unreachable(e.to_string()))?;
        let status = reply.status.as_u16();
        let detect = *self.version.lock().expect("imds lock") == Version::Detect;
        if status != 200 || reply.body.is_empty() {
            if detect {
                *self.version.lock().expect("imds lock") = Version::V1;
                return Ok(None);
            }
            return Err(ImdsError::Status(status, reply.body_text()));
        }
        let token = HeaderValue::from_bytes(reply.body.trim_ascii())
            .map_err(|_| ImdsError::Status(status, "a token that is no header value".into()))?;
        if detect {
            *self.version.lock().expect("imds lock") = Version::V2;
        }
        *self.token.lock().expect("imds lock") = Some(token.clone());
        Ok(Some(token))
    }

    /// The text at `path`.
    pub async fn get(&self, path: &str) -> Result<String, ImdsError> {
        let version = *self.version.lock().expect("imds lock");
        let mut token = match version {
            Version::V1 => None,
            _ => {
                let kept = self.token.lock().expect("imds lock").clone();
                match kept {
                    Some(t) => Some(t),
                    None => self.refresh_token().await?,
                }
            }
        };
        for refreshed in [false, true] {
            let headers: Vec<(HeaderName, HeaderValue)> = token
                .iter()
                .map(|t| (HeaderName::from_static(TOKEN_HEADER), t.clone()))
                .collect();
            let reply = self
                .client
                .send(Method::GET, path, &headers, bytes::Bytes::new())
                .await
                .map_err(|e| ImdsError::Unreachable(e.to_string()))?;
            match reply.status.as_u16() {
                200 => return Ok(String::from_utf8_lossy(&reply.body).into_owned()),
                401 if token.is_some() && !refreshed => {
                    token = self.refresh_token().await?;
                }
                404 => return Err(ImdsError::NotFound),
                s => return Err(ImdsError::Status(s, reply.body_text())),
            }
        }
        Err(ImdsError::Status(401, "the token was refused".into()))
    }
}
