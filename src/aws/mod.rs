//! AWS SigV4 request signing (`aws_auth`) for the HTTP outputs, and the credential
//! chain it signs with. Fluent Bit: src/flb_signv4.c, src/aws/flb_aws_credentials*.c.
//!
//! A section with `aws_auth on` gets a [`Signer`], which the output hands to its
//! [`crate::http_client::HttpClient`]: every request is signed just before it is sent,
//! after compression (the payload hash is of the body as sent). As Fluent Bit, every
//! header of the request is signed (`host`, `content-length`, `content-type`,
//! `user-agent`, the `header` entries...) except `Authorization`, and the request gets
//! `x-amz-date`, `x-amz-security-token` (session credentials) and `Authorization`; no
//! `x-amz-content-sha256` (Fluent Bit sends it only to S3).
//!
//! The signing itself is AWS's own signer (the `aws-sigv4` crate of the Rust SDK).
//! Credentials: see [`credentials`]. This module knows no plugin: an output calls
//! [`Signer::from_props`] with the name of its service property.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::http_client::RequestSigner;

pub mod credentials;
pub mod imds;

pub use credentials::{Chain, Credentials};

/// `aws_auth`.
pub const AUTH: PropSpec = PropSpec::new(
    "aws_auth",
    PropKind::Bool,
    Some("false"),
    "Sign each request with AWS SigV4 (needs aws_region).",
);
/// `aws_region`.
pub const REGION: PropSpec = PropSpec::new(
    "aws_region",
    PropKind::Str,
    None,
    "AWS region of the service (required with aws_auth).",
);
/// `aws_sts_endpoint`.
pub const STS_ENDPOINT: PropSpec = PropSpec::new(
    "aws_sts_endpoint",
    PropKind::Str,
    None,
    "Custom STS endpoint, used with aws_role_arn and web identity (https://host[:port]).",
);
/// `aws_role_arn`.
pub const ROLE_ARN: PropSpec = PropSpec::new(
    "aws_role_arn",
    PropKind::Str,
    None,
    "ARN of an IAM role to assume (STS AssumeRole) with the chain's credentials.",
);
/// `aws_external_id`.
pub const EXTERNAL_ID: PropSpec = PropSpec::new(
    "aws_external_id",
    PropKind::Str,
    None,
    "External ID for STS AssumeRole, with aws_role_arn.",
);
/// `aws_profile`.
pub const PROFILE: PropSpec = PropSpec::new(
    "aws_profile",
    PropKind::Str,
    None,
    "Profile of the shared credentials/config files (else AWS_PROFILE, else default).",
);

/// `SERVICE.REGION.<suffix>`, the suffix of the region's partition (Fluent Bit's
/// `flb_aws_endpoint`: `amazonaws.com`, `.com.cn` in China, the isolated regions').
pub fn service_host(service: &str, region: &str) -> String {
    const SUFFIXES: &[(&str, &str)] = &[
        ("us-isob-", "sc2s.sgov.gov"),
        ("us-isof-", "csp.hci.ic.gov"),
        ("us-iso-", "c2s.ic.gov"),
        ("eu-isoe-", "cloud.adc-e.uk"),
        ("eusc-", "amazonaws.eu"),
        ("cn-", "amazonaws.com.cn"),
    ];
    let suffix = SUFFIXES
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or("amazonaws.com", |(_, s)| s);
    format!("{service}.{region}.{suffix}")
}

/// A future boxed for the credential providers.
pub type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Signs requests for one service in one region with the credentials of a chain.
pub struct Signer {
    region: String,
    service: String,
    creds: Arc<dyn credentials::Provide>,
    /// Amazon OpenSearch's rules (Fluent Bit's `es`): `Host` without its port,
    /// `User-Agent: aws-fluent-bit-plugin`, a signed `x-amz-content-sha256`, and
    /// `Content-Length` left unsigned.
    opensearch: bool,
}

impl Signer {
    pub fn new(region: &str, service: &str, creds: Arc<dyn credentials::Provide>) -> Signer {
        Signer {
            region: region.to_string(),
            service: service.to_string(),
            creds,
            opensearch: false,
        }
    }

    /// Signs as Fluent Bit's `es` output does for Amazon OpenSearch (see the field).
    pub fn for_opensearch(mut self) -> Signer {
        self.opensearch = true;
        self
    }

    /// The signer of a section, `None` when `aws_auth` is off. `service_prop` is the
    /// plugin's property naming the service (`aws_service`, `aws_service_name`); a
    /// missing region or service is a config error (Fluent Bit refuses to start).
    pub fn from_props(props: &Props, service_prop: &str) -> Result<Option<Signer>, ConfigError> {
        if props.bool("aws_auth") != Some(true) {
            return Ok(None);
        }
        let required = |name: &str, example: &str| {
            props.str(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::invalid(
                    props.span_of("aws_auth"),
                    format!("{}: aws_auth enabled but {name} not set", props.plugin()),
                    Some(format!("add '{name} {example}' to the section")),
                )
            })
        };
        let region = required("aws_region", "us-east-1")?;
        let service = required(service_prop, "es")?;
        let sts = match props.str("aws_sts_endpoint") {
            Some(e) => Some(
                credentials::Endpoint::parse(e)
                    .map_err(|why| props.error("aws_sts_endpoint", why))?,
            ),
            None => None,
        };
        let chain = Chain::standard(credentials::Setup {
            region: region.to_string(),
            sts,
            profile: props.str("aws_profile").map(str::to_string),
            role_arn: props.str("aws_role_arn").map(str::to_string),
            external_id: props.str("aws_external_id").map(str::to_string),
        })
        .map_err(|why| props.error("aws_sts_endpoint", why))?;
        Ok(Some(Signer::new(region, service, Arc::new(chain))))
    }

    /// Adds `x-amz-date`, `x-amz-security-token` and `Authorization` to `req` for `body`
    /// at `time` with `creds`.
    pub fn sign_with(
        &self,
        req: &mut Request<Full<Bytes>>,
        body: &[u8],
        creds: &Credentials,
        time: SystemTime,
    ) -> Result<(), String> {
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new(
                &creds.access_key_id,
                &creds.secret_access_key,
                creds.session_token.clone(),
                creds.expires,
                "agent",
            )
            .into();
        let mut settings = SigningSettings::default();
        // Fluent Bit signs every header but Authorization (User-Agent included).
        settings.excluded_headers = Some(vec![Cow::Borrowed("authorization")]);
        if self.opensearch {
            let h = req.headers_mut();
            if let Some(host) = h.get(hyper::header::HOST).and_then(|v| v.to_str().ok()) {
                let bare = match host.rsplit_once(':') {
                    Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                    _ => host,
                };
                if let Ok(v) = hyper::header::HeaderValue::from_str(bare) {
                    h.insert(hyper::header::HOST, v);
                }
            }
            h.insert(
                hyper::header::USER_AGENT,
                hyper::header::HeaderValue::from_static("aws-fluent-bit-plugin"),
            );
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            if let Some(excluded) = settings.excluded_headers.as_mut() {
                excluded.push(Cow::Borrowed("content-length"));
            }
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| format!("cannot sign: {e}"))?
            .into();
        let instructions = {
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let url = format!("http://{host}{path}");
            let headers = req.headers().iter().filter_map(|(name, value)| {
                if name == hyper::header::CONNECTION || name == hyper::header::PROXY_AUTHORIZATION {
                    return None;
                }
                Some((name.as_str(), value.to_str().ok()?))
            });
            let signable = SignableRequest::new(
                req.method().as_str(),
                url,
                headers,
                SignableBody::Bytes(body),
            )
            .map_err(|e| format!("cannot sign: {e}"))?;
            sign(signable, &params)
                .map_err(|e| format!("cannot sign: {e}"))?
                .into_parts()
                .0
        };
        instructions.apply_to_request_http1x(req);
        // Fluent Bit's order: x-amz-date, x-amz-security-token, x-amz-content-sha256,
        // then Authorization last (HeaderMap::remove would reorder: rebuild instead).
        let old = std::mem::take(req.headers_mut());
        let mut auth = None;
        let mut last: Option<hyper::header::HeaderName> = None;
        for (name, value) in old {
            let name = name
                .or_else(|| last.clone())
                .expect("a first header has its name");
            last = Some(name.clone());
            if name == hyper::header::AUTHORIZATION {
                auth = Some(value);
            } else {
                req.headers_mut().append(name, value);
            }
        }
        if let Some(auth) = auth {
            req.headers_mut().append(hyper::header::AUTHORIZATION, auth);
        }
        Ok(())
    }
}

impl RequestSigner for Signer {
    fn sign<'a>(
        &'a self,
        req: &'a mut Request<Full<Bytes>>,
        body: &'a [u8],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let creds = self.creds.credentials().await?;
            self.sign_with(req, body, &creds, SystemTime::now())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fluent Bit's `flb_aws_endpoint` suffixes, the most specific prefix first.
    #[test]
    fn service_hosts_by_partition() {
        assert_eq!(
            service_host("logs", "us-east-1"),
            "logs.us-east-1.amazonaws.com"
        );
        assert_eq!(
            service_host("logs", "cn-north-1"),
            "logs.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            service_host("logs", "us-isob-east-1"),
            "logs.us-isob-east-1.sc2s.sgov.gov"
        );
        assert_eq!(
            service_host("sts", "us-iso-east-1"),
            "sts.us-iso-east-1.c2s.ic.gov"
        );
        assert_eq!(
            service_host("logs", "eusc-de-east-1"),
            "logs.eusc-de-east-1.amazonaws.eu"
        );
    }

    /// AWS's published example (sigv4 test suite `get-vanilla`): the signature of a
    /// known request, credentials and time.
    #[test]
    fn signs_aws_example() {
        struct None_;
        impl credentials::Provide for None_ {
            fn credentials(&self) -> BoxFuture<'_, Result<Credentials, String>> {
                Box::pin(async { Err("none".into()) })
            }
        }
        let signer = Signer::new("us-east-1", "service", Arc::new(None_));
        let mut req = Request::builder()
            .method("GET")
            .uri("/")
            .header("host", "example.amazonaws.com")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires: None,
        };
        let time = humantime::parse_rfc3339("2015-08-30T12:36:00Z").unwrap();
        signer.sign_with(&mut req, b"", &creds, time).unwrap();
        assert_eq!(req.headers()["x-amz-date"], "20150830T123600Z");
        assert_eq!(
            req.headers()["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }
}
