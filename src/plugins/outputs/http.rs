//! `http` output: each flush's records POSTed (or PUT) to an HTTP endpoint.
//! Fluent Bit: plugins/out_http/http.c, http_conf.c
//!
//! Formats: `json` (the default: one array of records), `json_lines`, `json_stream`
//! (as `stdout` writes them, `json_date_key`/`json_date_format` included), `msgpack`
//! (Fluent Bit's event bytes, `[[time, {metadata}], {body}]` per record), `gelf` (one
//! GELF object per line, `gelf_*_key`; a record without a short message is dropped and
//! counted, where Fluent Bit drops the whole chunk). With
//! `body_key` and `headers_key` each record is its own request: the body is that
//! key's string, the headers that key's map of strings.
//!
//! Headers in Fluent Bit's order: `Content-Type` for the format (`application/json`,
//! `application/x-ndjson`, `application/msgpack`), `header_tag`, `Content-Encoding`,
//! `Authorization` (`http_user`/`http_passwd`), `User-Agent: Fluent-Bit`, then each
//! `header` as written. A status from 200 to 205 delivers the chunk; 408, 429 (waiting
//! its `Retry-After` if longer than the backoff), 5xx, other statuses and connection
//! failures retry it; any other 4xx drops it, logged with the response body and counted
//! (`fluentbit_output_dropped_records_total`).
//!
//! `aws_auth on` signs each request last, over the body as sent (AWS SigV4,
//! [`crate::aws`]): `aws_region` and `aws_service` are required.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use super::{
    gelf_fields, json_options, pool_metrics, GELF_FULL_MESSAGE_KEY, GELF_HOST_KEY, GELF_LEVEL_KEY,
    GELF_SHORT_MESSAGE_KEY, GELF_TIMESTAMP_KEY, JSON_DATE_FORMAT, JSON_DATE_KEY,
};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::format::{self, JsonMode, JsonOptions};
use crate::event::{Chunk, Record, Value};
use crate::http_client::{self, Compression, HttpClient, HttpError, Reply, Verdict};
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin, Partial};

const PROPS: &[PropSpec] = &[
    PropSpec::new("host", PropKind::Str, Some("127.0.0.1"), "Destination host name or IP address."),
    PropSpec::new("port", PropKind::Int, Some("80"), "Destination TCP port."),
    PropSpec::new("uri", PropKind::Str, Some("/"), "Request path, e.g. /something."),
    PropSpec::new(
        "http_method",
        PropKind::Enum(&["POST", "PUT"]),
        Some("POST"),
        "HTTP method: POST or PUT.",
    ),
    PropSpec::new(
        "format",
        PropKind::Enum(&["json", "json_lines", "json_stream", "msgpack", "gelf"]),
        Some("json"),
        "Payload format: json, json_lines, json_stream, msgpack or gelf.",
    ),
    JSON_DATE_FORMAT,
    JSON_DATE_KEY,
    PropSpec::new(
        "compress",
        PropKind::Enum(&["gzip", "snappy", "zstd"]),
        None,
        "Compress the payload: gzip, snappy or zstd.",
    ),
    http_client::HEADER,
    PropSpec::new(
        "header_tag",
        PropKind::Str,
        None,
        "A header whose value is the chunk's tag, e.g. FLB-Tag.",
    ),
    PropSpec::new(
        "allow_duplicated_headers",
        PropKind::Bool,
        Some("true"),
        "Keep every 'header' of the same name; off keeps the last one.",
    ),
    http_client::LOG_RESPONSE_PAYLOAD,
    http_client::HTTP_USER,
    http_client::HTTP_PASSWD,
    http_client::PROXY,
    http_client::RESPONSE_TIMEOUT,
    http_client::READ_IDLE_TIMEOUT,
    PropSpec::new(
        "body_key",
        PropKind::Str,
        None,
        "Send each record as its own request, with this key's value as the body (needs headers_key).",
    ),
    PropSpec::new(
        "headers_key",
        PropKind::Str,
        None,
        "With body_key: the key whose map of strings are the request's headers.",
    ),
    GELF_TIMESTAMP_KEY,
    GELF_HOST_KEY,
    GELF_SHORT_MESSAGE_KEY,
    GELF_FULL_MESSAGE_KEY,
    GELF_LEVEL_KEY,
    PropSpec::new(
        "oauth2.enable",
        PropKind::Bool,
        Some("false"),
        "OAuth2 client credentials (not available in agent: 'on' is a config error).",
    ),
    PropSpec::new("oauth2.token_url", PropKind::Str, None, "OAuth2 token endpoint (with oauth2.enable)."),
    PropSpec::new("oauth2.client_id", PropKind::Str, None, "OAuth2 client id (with oauth2.enable)."),
    PropSpec::new("oauth2.client_secret", PropKind::Str, None, "OAuth2 client secret (with oauth2.enable)."),
    PropSpec::new("oauth2.user_agent", PropKind::Str, None, "OAuth2 User-Agent (with oauth2.enable)."),
    PropSpec::new("oauth2.scope", PropKind::Str, None, "OAuth2 scope (with oauth2.enable)."),
    PropSpec::new("oauth2.audience", PropKind::Str, None, "OAuth2 audience (with oauth2.enable)."),
    PropSpec::new("oauth2.resource", PropKind::Str, None, "OAuth2 resource (with oauth2.enable)."),
    PropSpec::new("oauth2.auth_method", PropKind::Str, Some("basic"), "OAuth2 client authentication (with oauth2.enable)."),
    PropSpec::new("oauth2.jwt_key_file", PropKind::Str, None, "OAuth2 private_key_jwt key (with oauth2.enable)."),
    PropSpec::new("oauth2.jwt_cert_file", PropKind::Str, None, "OAuth2 private_key_jwt certificate (with oauth2.enable)."),
    PropSpec::new("oauth2.jwt_aud", PropKind::Str, None, "OAuth2 private_key_jwt audience (with oauth2.enable)."),
    PropSpec::new("oauth2.jwt_header", PropKind::Str, Some("kid"), "OAuth2 private_key_jwt header (with oauth2.enable)."),
    PropSpec::new("oauth2.jwt_ttl_seconds", PropKind::Int, Some("300"), "OAuth2 JWT lifetime (with oauth2.enable)."),
    PropSpec::new("oauth2.refresh_skew_seconds", PropKind::Int, Some("60"), "OAuth2 token refresh skew (with oauth2.enable)."),
    PropSpec::new("oauth2.timeout", PropKind::Time, Some("0s"), "OAuth2 token request timeout (with oauth2.enable)."),
    PropSpec::new("oauth2.connect_timeout", PropKind::Time, Some("0s"), "OAuth2 connect timeout (with oauth2.enable)."),
    crate::aws::AUTH,
    crate::aws::REGION,
    crate::aws::STS_ENDPOINT,
    crate::aws::ROLE_ARN,
    crate::aws::EXTERNAL_ID,
    crate::aws::PROFILE,
    PropSpec::new(
        "aws_service",
        PropKind::Str,
        None,
        "AWS service code the requests are signed for (required with aws_auth).",
    ),
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "http",
    description: "HTTP Output",
    props: PROPS,
    workers: 2,
    net: true,
    build,
};

#[derive(Clone, Debug)]
enum Payload {
    Json(JsonMode, JsonOptions),
    Msgpack,
    /// One GELF object per record, each followed by a newline.
    Gelf(format::GelfFields),
    /// One request per record: `body_key`'s value, `headers_key`'s headers.
    PerRecord {
        body: Accessor,
        headers: Accessor,
    },
}

/// What every worker of the instance shares.
#[derive(Clone)]
struct Setup {
    client: HttpClient,
    method: Method,
    uri: String,
    payload: Payload,
    compress: Option<Compression>,
    /// Content-Type (for the chunk formats), then `header_tag` is inserted, then these.
    content_type: Option<HeaderValue>,
    header_tag: Option<HeaderName>,
    /// Authorization, User-Agent and the `header` entries, in Fluent Bit's order.
    tail_headers: Vec<(HeaderName, HeaderValue)>,
    log_response_payload: bool,
    /// Off: a header replaces an earlier one of the same name (which is removed, and the
    /// new one goes last), as Fluent Bit's `flb_http_add_header` does.
    allow_duplicated_headers: bool,
    /// `host:port` for log lines (the destination, also behind a proxy).
    dest: String,
}

struct HttpOutput {
    setup: Setup,
    buf: Vec<u8>,
}

fn refuse_if_on(props: &Props, name: &str, what: &str) -> Result<(), ConfigError> {
    if props.bool(name) == Some(true) {
        return Err(ConfigError::invalid(
            props.span_of(name),
            format!(
                "{}: {name}: {what} is not available in agent",
                props.plugin()
            ),
            Some(format!(
                "remove '{name}', or send through a proxy that adds it"
            )),
        ));
    }
    Ok(())
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    refuse_if_on(props, "oauth2.enable", "OAuth2 token fetching")?;
    let host = props.str("host").unwrap_or("127.0.0.1");
    let port = props
        .int("port")
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?;
    let uri = match props.str("uri").unwrap_or("/") {
        u if u.starts_with('/') => u.to_string(),
        u => format!("/{u}"),
    };
    if uri.parse::<hyper::Uri>().is_err() {
        return Err(props.error("uri", "a request path such as /logs?x=1 (no spaces)"));
    }
    let payload = match (props.str("body_key"), props.str("headers_key")) {
        (Some(b), Some(h)) => Payload::PerRecord {
            body: Accessor::parse(b).map_err(|e| props.error("body_key", e))?,
            headers: Accessor::parse(h).map_err(|e| props.error("headers_key", e))?,
        },
        (Some(_), None) => {
            return Err(props.error(
                "body_key",
                "body_key together with headers_key (Fluent Bit needs both)",
            ))
        }
        (None, Some(_)) => {
            return Err(props.error(
                "headers_key",
                "headers_key together with body_key (Fluent Bit needs both)",
            ))
        }
        (None, None) => match props.str("format").unwrap_or("json") {
            f if f.eq_ignore_ascii_case("msgpack") => Payload::Msgpack,
            f if f.eq_ignore_ascii_case("gelf") => Payload::Gelf(gelf_fields(props)),
            f => Payload::Json(
                JsonMode::parse(f).unwrap_or(JsonMode::Json),
                json_options(props, ctx.service.escape_unicode),
            ),
        },
    };
    let content_type = match &payload {
        Payload::Json(JsonMode::JsonLines, _) => Some("application/x-ndjson"),
        Payload::Json(_, _) | Payload::Gelf(_) => Some("application/json"),
        Payload::Msgpack => Some("application/msgpack"),
        Payload::PerRecord { .. } => None,
    }
    .map(HeaderValue::from_static);
    let header_tag = match props.str("header_tag") {
        Some(h) => Some(
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| props.error("header_tag", "a header name such as FLB-Tag"))?,
        ),
        None => None,
    };
    let tail_headers = http_client::tail_headers(props)?;
    let mut client = HttpClient::from_props(props, host, port)?.with_metrics(pool_metrics(ctx));
    if let Some(signer) = crate::aws::Signer::from_props(props, "aws_service")? {
        client = client.with_signer(std::sync::Arc::new(signer));
    }
    Ok(Box::new(HttpOutput {
        setup: Setup {
            client,
            method: if props
                .str("http_method")
                .is_some_and(|m| m.eq_ignore_ascii_case("PUT"))
            {
                Method::PUT
            } else {
                Method::POST
            },
            uri,
            payload,
            compress: props.str("compress").and_then(Compression::parse),
            content_type,
            header_tag,
            tail_headers,
            log_response_payload: props.bool("log_response_payload") != Some(false),
            allow_duplicated_headers: props.bool("allow_duplicated_headers") != Some(false),
            dest: format!("{host}:{port}"),
        },
        buf: Vec::with_capacity(64 * 1024),
    }))
}

impl Setup {
    /// Sends `body` with the chunk's headers (or `own` headers, for body_key requests).
    async fn request(
        &self,
        tag: &str,
        body: &[u8],
        own: Option<Vec<(HeaderName, HeaderValue)>>,
    ) -> FlushResult {
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(8);
        match own {
            Some(own) => headers.extend(own),
            None => {
                if let Some(ct) = &self.content_type {
                    headers.push((hyper::header::CONTENT_TYPE, ct.clone()));
                }
            }
        }
        if let Some(name) = &self.header_tag {
            match HeaderValue::from_str(tag) {
                Ok(v) => headers.push((name.clone(), v)),
                Err(_) => crate::warn!(
                    "[output:http] tag '{tag}' cannot be a header value: {name} left out"
                ),
            }
        }
        let body = match self.compress {
            Some(c) => match c.compress(body) {
                Ok(z) => {
                    headers.push((
                        hyper::header::CONTENT_ENCODING,
                        HeaderValue::from_static(c.encoding()),
                    ));
                    Bytes::from(z)
                }
                Err(e) => {
                    crate::warn!("[output:http] could not compress payload, sending as it is: {e}");
                    Bytes::copy_from_slice(body)
                }
            },
            None => Bytes::copy_from_slice(body),
        };
        headers.extend(self.tail_headers.iter().cloned());
        if !self.allow_duplicated_headers {
            headers = without_duplicates(headers);
        }
        match self
            .client
            .send(self.method.clone(), &self.uri, &headers, body)
            .await
        {
            Ok(reply) => self.judge(&reply),
            Err(e) => FlushResult::Retry(describe(&e)),
        }
    }

    fn judge(&self, reply: &Reply) -> FlushResult {
        let line = reply.status_line(&self.dest, self.log_response_payload);
        match reply.verdict() {
            Verdict::Done => {
                crate::info!("[output:http] {line}");
                FlushResult::Ok
            }
            Verdict::Drop => FlushResult::Error(format!(
                "{line}: the server refused the chunk (4xx), it will not be retried"
            )),
            Verdict::Retry => super::retry(reply, line),
        }
    }
}

/// Each header replaces any earlier one of its name, going last: Fluent Bit's order
/// with `allow_duplicated_headers off`.
fn without_duplicates(headers: Vec<(HeaderName, HeaderValue)>) -> Vec<(HeaderName, HeaderValue)> {
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        out.retain(|(n, _)| *n != name);
        out.push((name, value));
    }
    out
}

fn describe(e: &HttpError) -> String {
    format!("could not flush records: {e}")
}

/// `headers_key`'s value as request headers: string keys with string values (others
/// are skipped, as Fluent Bit does).
fn record_headers(v: &Value) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let Value::Map(m) = v else { return None };
    Some(
        m.iter()
            .filter_map(|(k, v)| match v {
                Value::Str(s) => Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(s).ok()?,
                )),
                _ => None,
            })
            .collect(),
    )
}

impl HttpOutput {
    /// body_key mode: one request per record; the first failure decides the chunk
    /// (records before it were sent; a retry sends the whole chunk again, as Fluent Bit).
    async fn per_record(
        &mut self,
        chunk: &Chunk,
        body_ra: &Accessor,
        headers_ra: &Accessor,
    ) -> FlushResult {
        let mut skipped = 0usize;
        for rec in &chunk.records {
            let body = match body_ra.get(&rec.body) {
                Some(Value::Str(s)) => s.as_bytes(),
                Some(Value::Bin(b)) => &b[..],
                _ => {
                    skipped += 1;
                    continue;
                }
            };
            let Some(headers) = headers_ra.get(&rec.body).and_then(record_headers) else {
                skipped += 1;
                continue;
            };
            match self.setup.request(&chunk.tag, body, Some(headers)).await {
                FlushResult::Ok => {}
                other => return other,
            }
        }
        if skipped > 0 {
            crate::warn!(
                "[output:http] {skipped} records without a string body_key or a map headers_key were not sent"
            );
        }
        FlushResult::Ok
    }
}

/// The chunk's body; returns how many records had no form in it (GELF without a
/// short message), which are left out.
fn render(payload: &Payload, records: &[Record], buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    let mut skipped = 0;
    match payload {
        Payload::Json(mode, opts) => {
            format::write_json_chunk(buf, records, *mode, opts);
            // Fluent Bit's `json` and `json_stream` bodies end with the last record (stdout
            // and tcp add a newline).
            if *mode != JsonMode::JsonLines && buf.last() == Some(&b'\n') {
                buf.pop();
            }
        }
        Payload::Msgpack => records
            .iter()
            .for_each(|r| format::write_msgpack_record(buf, r)),
        Payload::Gelf(fields) => {
            for r in records {
                match format::write_gelf_record(buf, r.time, &r.body, fields) {
                    Ok(()) => buf.push(b'\n'),
                    Err(e) => {
                        skipped += 1;
                        crate::debug!("[output:http] a record has no GELF form: {e}");
                    }
                }
            }
        }
        Payload::PerRecord { .. } => {}
    }
    skipped
}

impl Output for HttpOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            if let Payload::PerRecord { body, headers } = &self.setup.payload {
                let (body, headers) = (body.clone(), headers.clone());
                return self.per_record(chunk, &body, &headers).await;
            }
            let skipped = render(&self.setup.payload, &chunk.records, &mut self.buf);
            if skipped == 0 {
                return self.setup.request(&chunk.tag, &self.buf, None).await;
            }
            crate::warn!(
                "[output:http] {skipped} record(s) without a GELF form (no short_message key, \
                 or a level that is not a number or a string) dropped; set gelf_short_message_key"
            );
            if self.buf.is_empty() {
                return FlushResult::Partial(Partial {
                    dropped: skipped,
                    ..Partial::default()
                });
            }
            match self.setup.request(&chunk.tag, &self.buf, None).await {
                FlushResult::Ok => FlushResult::Partial(Partial {
                    dropped: skipped,
                    ..Partial::default()
                }),
                other => other,
            }
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(HttpOutput {
            setup: self.setup.clone(),
            buf: Vec::with_capacity(64 * 1024),
        })
    }
}
