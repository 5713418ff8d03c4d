//! `opentelemetry` output: log records and metric sets as OTLP/HTTP protobuf
//! (`ExportLogsServiceRequest` POSTed to `logs_uri`, default `/v1/logs`;
//! `ExportMetricsServiceRequest` to `metrics_uri`, default `/v1/metrics`;
//! `Content-Type: application/x-protobuf`) on the shared HTTP client (`net.*`,
//! `tls.*`, `proxy`, keepalive pool), with the same headers, compression, signing and
//! status handling for both.
//! Fluent Bit: plugins/out_opentelemetry/opentelemetry.c, opentelemetry_conf.c
//!
//! Headers in Fluent Bit's order: `Content-Type`, `Authorization` (`http_user`/
//! `http_passwd`), `User-Agent: Fluent-Bit`, each `header`, then `Content-Encoding`
//! (`compress gzip|zstd`). Up to `batch_size` records per request. A status from 200 to
//! 205 delivers the records; 429, 502, 503 and 504 (OTLP's retryable codes) and
//! connection failures retry them; any other status drops them, logged with the
//! response body and counted (`fluentbit_output_dropped_records_total`). When one
//! batch of a chunk fails, the batches already delivered are not sent again (Fluent Bit
//! keeps only the last batch's result).
//!
//! A metrics chunk is one request (every set of it, `add_label`s on each sample; see
//! [`metrics`]); a refused one is dropped and counted, one set per record. Traces and
//! profiles: agent carries none.
//! OTLP/gRPC (`grpc on`) and `http2 force` are refused at their line: agent speaks
//! OTLP/HTTP over HTTP/1.1, which every OTLP/HTTP receiver takes; `http2 on` (which
//! Fluent Bit negotiates down to HTTP/1.1 too) is accepted with a warning.

mod logs;
pub mod metrics;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use super::pool_metrics;
use super::prometheus_exporter::ADD_LABEL;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::metrics::Signals;
use crate::event::{Chunk, Str};
use crate::http_client::{self, Compression, HttpClient, Reply};
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin, Partial};
pub use logs::{LogsEncoder, Mapping, Skipped};

const PROPS: &[PropSpec] = &[
    PropSpec::new("host", PropKind::Str, Some("127.0.0.1"), "Destination host name or IP address."),
    PropSpec::new("port", PropKind::Int, Some("4318"), "Destination TCP port."),
    PropSpec::new("logs_uri", PropKind::Str, Some("/v1/logs"), "Request path for logs."),
    PropSpec::new(
        "compress",
        PropKind::Enum(&["gzip", "zstd"]),
        None,
        "Compress the payload: gzip or zstd.",
    ),
    http_client::HEADER,
    http_client::HTTP_USER,
    http_client::HTTP_PASSWD,
    http_client::PROXY,
    http_client::RESPONSE_TIMEOUT,
    http_client::READ_IDLE_TIMEOUT,
    http_client::LOG_RESPONSE_PAYLOAD,
    PropSpec::new(
        "batch_size",
        PropKind::Int,
        Some("1000"),
        "Most log records in one request.",
    ),
    PropSpec::new(
        "logs_body_key",
        PropKind::Multi,
        None,
        "Record key whose value is the log body (repeatable, first found wins; default $log, then $message).",
    ),
    PropSpec::new(
        "logs_body_key_attributes",
        PropKind::Bool,
        Some("false"),
        "When a logs_body_key matched, send the rest of the record as attributes.",
    ),
    PropSpec::new(
        "logs_observed_timestamp_metadata_key",
        PropKind::Str,
        Some("$ObservedTimestamp"),
        "Metadata key of the ObservedTimestamp (nanoseconds).",
    ),
    PropSpec::new(
        "logs_timestamp_metadata_key",
        PropKind::Str,
        Some("$Timestamp"),
        "Metadata key of the Timestamp (nanoseconds); default: the record's time.",
    ),
    PropSpec::new(
        "logs_severity_text_metadata_key",
        PropKind::Str,
        Some("$SeverityText"),
        "Metadata key of the SeverityText.",
    ),
    PropSpec::new(
        "logs_severity_number_metadata_key",
        PropKind::Str,
        Some("$SeverityNumber"),
        "Metadata key of the SeverityNumber (1 to 24).",
    ),
    PropSpec::new(
        "logs_trace_flags_metadata_key",
        PropKind::Str,
        Some("$TraceFlags"),
        "Metadata key of the TraceFlags.",
    ),
    PropSpec::new(
        "logs_span_id_metadata_key",
        PropKind::Str,
        Some("$SpanId"),
        "Metadata key of the SpanId (8 bytes, or 16 hex digits).",
    ),
    PropSpec::new(
        "logs_trace_id_metadata_key",
        PropKind::Str,
        Some("$TraceId"),
        "Metadata key of the TraceId (16 bytes, or 32 hex digits).",
    ),
    PropSpec::new(
        "logs_attributes_metadata_key",
        PropKind::Str,
        Some("$Attributes"),
        "Metadata key of a map added to the Attributes.",
    ),
    PropSpec::new(
        "logs_span_id_message_key",
        PropKind::Str,
        Some("$SpanId"),
        "Record key of the SpanId, when the metadata has none.",
    ),
    PropSpec::new(
        "logs_trace_id_message_key",
        PropKind::Str,
        Some("$TraceId"),
        "Record key of the TraceId, when the metadata has none.",
    ),
    PropSpec::new(
        "logs_severity_text_message_key",
        PropKind::Str,
        Some("$SeverityText"),
        "Record key of the SeverityText, when the metadata has none.",
    ),
    PropSpec::new(
        "logs_severity_number_message_key",
        PropKind::Str,
        Some("$SeverityNumber"),
        "Record key of the SeverityNumber, when the metadata has none.",
    ),
    PropSpec::new(
        "logs_metadata_key",
        PropKind::Str,
        Some("otlp"),
        "Accepted for compatibility; unused for logs (as in Fluent Bit).",
    ),
    PropSpec::new(
        "logs_instrumentation_scope_metadata_key",
        PropKind::Str,
        Some("InstrumentationScope"),
        "Accepted for compatibility; unused for logs (as in Fluent Bit).",
    ),
    PropSpec::new(
        "logs_resource_metadata_key",
        PropKind::Str,
        Some("Resource"),
        "Accepted for compatibility; unused for logs (as in Fluent Bit).",
    ),
    PropSpec::new(
        "logs_max_resources",
        PropKind::Int,
        Some("0"),
        "Most resources per request (0 = no limit); agent sends one per request.",
    ),
    PropSpec::new(
        "logs_max_scopes",
        PropKind::Int,
        Some("0"),
        "Most scopes per resource (0 = no limit); agent sends one per resource.",
    ),
    ADD_LABEL,
    PropSpec::new(
        "metrics_uri",
        PropKind::Str,
        Some("/v1/metrics"),
        "Request path for metrics.",
    ),
    PropSpec::new(
        "traces_uri",
        PropKind::Str,
        Some("/v1/traces"),
        "Request path for traces (agent carries no traces).",
    ),
    PropSpec::new(
        "profiles_uri",
        PropKind::Str,
        Some("/v1development/profiles"),
        "Request path for profiles (agent carries no profiles).",
    ),
    PropSpec::new(
        "http2",
        PropKind::Enum(&["on", "off", "force", "true", "false", "yes", "no"]),
        Some("off"),
        "HTTP/2: agent sends HTTP/1.1 ('on' warns, 'force' is a config error).",
    ),
    PropSpec::new(
        "grpc",
        PropKind::Bool,
        Some("off"),
        "OTLP/gRPC (not available in agent: only 'off').",
    ),
    PropSpec::new(
        "grpc_logs_uri",
        PropKind::Str,
        Some("/opentelemetry.proto.collector.logs.v1.LogsService/Export"),
        "gRPC method path for logs (with grpc on).",
    ),
    PropSpec::new(
        "grpc_metrics_uri",
        PropKind::Str,
        Some("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"),
        "gRPC method path for metrics (with grpc on).",
    ),
    PropSpec::new(
        "grpc_traces_uri",
        PropKind::Str,
        Some("/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
        "gRPC method path for traces (with grpc on).",
    ),
    PropSpec::new(
        "grpc_profiles_uri",
        PropKind::Str,
        Some("/opentelemetry.proto.collector.profiles.v1experimental.ProfilesService/Export"),
        "gRPC method path for profiles (with grpc on).",
    ),
    crate::aws::AUTH,
    crate::aws::REGION,
    crate::aws::STS_ENDPOINT,
    crate::aws::ROLE_ARN,
    crate::aws::EXTERNAL_ID,
    crate::aws::PROFILE,
    PropSpec::new("aws_service", PropKind::Str, Some("logs"), "AWS service code the requests are signed for."),
    PropSpec::new(
        "oauth2.enable",
        PropKind::Bool,
        Some("false"),
        "OAuth2 client credentials (not available in agent: 'on' is a config error).",
    ),
    PropSpec::new("oauth2.token_url", PropKind::Str, None, "OAuth2 token endpoint (with oauth2.enable)."),
    PropSpec::new("oauth2.client_id", PropKind::Str, None, "OAuth2 client id (with oauth2.enable)."),
    PropSpec::new("oauth2.client_secret", PropKind::Str, None, "OAuth2 client secret (with oauth2.enable)."),
    PropSpec::new("oauth2.scope", PropKind::Str, None, "OAuth2 scope (with oauth2.enable)."),
    PropSpec::new("oauth2.audience", PropKind::Str, None, "OAuth2 audience (with oauth2.enable)."),
    PropSpec::new("oauth2.resource", PropKind::Str, None, "OAuth2 resource (with oauth2.enable)."),
    PropSpec::new("oauth2.auth_method", PropKind::Str, Some("basic"), "OAuth2 client authentication (with oauth2.enable)."),
    PropSpec::new("oauth2.timeout", PropKind::Time, Some("0s"), "OAuth2 token request timeout (with oauth2.enable)."),
    PropSpec::new("oauth2.connect_timeout", PropKind::Time, Some("0s"), "OAuth2 connect timeout (with oauth2.enable)."),
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "opentelemetry",
    description: "OpenTelemetry",
    props: PROPS,
    workers: 1,
    net: true,
    build,
};

/// What every worker of the instance shares.
#[derive(Clone)]
struct Setup {
    client: HttpClient,
    uri: String,
    metrics_uri: String,
    /// `add_label`: added to every metric sample after the set's static labels.
    labels: std::sync::Arc<[(Str, Str)]>,
    /// Content-Type, Authorization, User-Agent, `header`s, Content-Encoding.
    headers: std::sync::Arc<[(HeaderName, HeaderValue)]>,
    compress: Option<Compression>,
    batch_size: usize,
    mapping: Mapping,
    log_response_payload: bool,
    /// `host:port` for log lines.
    dest: String,
}

struct OtelOutput {
    setup: Setup,
    encoder: LogsEncoder,
    buf: Vec<u8>,
}

fn accessor(props: &Props, name: &str, default: &str) -> Result<Accessor, ConfigError> {
    let text = props.str(name).unwrap_or(default);
    Accessor::parse(text)
        .map_err(|e| props.error(name, format!("a record accessor such as $key ({e})")))
}

fn refuse(props: &Props, name: &str, what: &str, fix: &str) -> ConfigError {
    ConfigError::invalid(
        props.span_of(name),
        format!(
            "{}: {name}: {what} is not available in agent",
            props.plugin()
        ),
        Some(fix.to_string()),
    )
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    if props.bool("grpc") == Some(true) {
        return Err(refuse(
            props,
            "grpc",
            "OTLP/gRPC",
            "remove 'grpc on' and point port/logs_uri at the receiver's OTLP/HTTP endpoint (4318, /v1/logs)",
        ));
    }
    match props.str("http2") {
        Some(v) if v.eq_ignore_ascii_case("force") => return Err(refuse(
            props,
            "http2",
            "HTTP/2 without TLS (force)",
            "remove 'http2' (agent sends OTLP/HTTP over HTTP/1.1, which OTLP/HTTP receivers take)",
        )),
        // Fluent Bit negotiates HTTP/2 or HTTP/1.1; the receiver gets the same requests
        // either way, so this is said, not refused.
        Some(v) if crate::config::values::parse_bool(v) == Some(true) => crate::warn!(
            "{}: opentelemetry: http2 on: agent sends these OTLP/HTTP requests over \
             HTTP/1.1 (set 'http2 off' to silence this)",
            props.span_of("http2")
        ),
        _ => {}
    }
    if props.bool("oauth2.enable") == Some(true) {
        return Err(refuse(
            props,
            "oauth2.enable",
            "OAuth2 token fetching",
            "remove 'oauth2.enable', or send through a proxy that adds the token",
        ));
    }
    for name in ["logs_max_resources", "logs_max_scopes"] {
        if props.int(name).unwrap_or(0) < 0 {
            return Err(props.error(name, "0 (no limit) or more"));
        }
    }
    let batch_size = props
        .int("batch_size")
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| props.error("batch_size", "a number of records, 1 or more"))?;
    let host = props.str("host").unwrap_or("127.0.0.1");
    let port = props
        .int("port")
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?;
    // Fluent Bit's sanitize_uri: a path without its leading '/' gets one.
    let path = |name: &str, default: &str| {
        let uri = match props.str(name).unwrap_or(default) {
            u if u.starts_with('/') => u.to_string(),
            u => format!("/{u}"),
        };
        match uri.parse::<hyper::Uri>() {
            Ok(_) => Ok(uri),
            Err(_) => Err(props.error(
                name,
                format!("a request path such as {default} (no spaces)"),
            )),
        }
    };
    let uri = path("logs_uri", "/v1/logs")?;
    let metrics_uri = path("metrics_uri", "/v1/metrics")?;
    let labels = super::prometheus_exporter::add_labels(props)?;
    let body_keys = match props.multi_entries("logs_body_key") {
        entries if entries.is_empty() => vec![Accessor::key("log"), Accessor::key("message")],
        entries => entries
            .iter()
            .map(|e| {
                Accessor::parse(e.value.trim()).map_err(|err| {
                    ConfigError::invalid(
                        &e.span,
                        format!(
                            "{}: logs_body_key '{}' is not a record accessor: {err}",
                            props.plugin(),
                            e.value
                        ),
                        Some("write it as $key or $key['sub']".into()),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mapping = Mapping {
        body_keys,
        body_key_attributes: props.bool("logs_body_key_attributes") == Some(true),
        observed_timestamp: accessor(
            props,
            "logs_observed_timestamp_metadata_key",
            "$ObservedTimestamp",
        )?,
        timestamp: accessor(props, "logs_timestamp_metadata_key", "$Timestamp")?,
        severity_text: accessor(props, "logs_severity_text_metadata_key", "$SeverityText")?,
        severity_number: accessor(
            props,
            "logs_severity_number_metadata_key",
            "$SeverityNumber",
        )?,
        trace_flags: accessor(props, "logs_trace_flags_metadata_key", "$TraceFlags")?,
        span_id: accessor(props, "logs_span_id_metadata_key", "$SpanId")?,
        trace_id: accessor(props, "logs_trace_id_metadata_key", "$TraceId")?,
        attributes: accessor(props, "logs_attributes_metadata_key", "$Attributes")?,
        span_id_message: accessor(props, "logs_span_id_message_key", "$SpanId")?,
        trace_id_message: accessor(props, "logs_trace_id_message_key", "$TraceId")?,
        severity_text_message: accessor(props, "logs_severity_text_message_key", "$SeverityText")?,
        severity_number_message: accessor(
            props,
            "logs_severity_number_message_key",
            "$SeverityNumber",
        )?,
    };
    let compress = props.str("compress").and_then(Compression::parse);
    let mut headers = vec![(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    )];
    headers.extend(http_client::tail_headers(props)?);
    if let Some(c) = compress {
        headers.push((
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static(c.encoding()),
        ));
    }
    let mut client = HttpClient::from_props(props, host, port)?.with_metrics(pool_metrics(ctx));
    if let Some(signer) = crate::aws::Signer::from_props(props, "aws_service")? {
        client = client.with_signer(std::sync::Arc::new(signer));
    }
    Ok(Box::new(OtelOutput {
        encoder: LogsEncoder::new(mapping.clone()),
        setup: Setup {
            client,
            uri,
            metrics_uri,
            labels: labels.into(),
            headers: headers.into(),
            compress,
            batch_size,
            mapping,
            log_response_payload: props.bool("log_response_payload") != Some(false),
            dest: format!("{host}:{port}"),
        },
        buf: Vec::with_capacity(64 * 1024),
    }))
}

/// What one request's answer means for its records.
enum Sent {
    Done,
    Retry(FlushResult),
    Dropped(String),
}

impl OtelOutput {
    /// Sends `buf`, given back for the next request: uncompressed, its bytes go to the
    /// client without a copy and the allocation comes back once the client let go.
    async fn send(&self, uri: &str, buf: &mut Vec<u8>) -> Sent {
        let s = &self.setup;
        let body = match s.compress {
            Some(c) => match c.compress(buf) {
                Ok(z) => Bytes::from(z),
                Err(e) => {
                    return Sent::Retry(FlushResult::Retry(format!(
                        "cannot compress the request: {e}"
                    )))
                }
            },
            None => Bytes::from(std::mem::take(buf)),
        };
        let kept = s.compress.is_none().then(|| body.clone());
        let sent = match s.client.send(Method::POST, uri, &s.headers, body).await {
            Ok(reply) => self.judge(&reply),
            Err(e) => Sent::Retry(FlushResult::Retry(format!("could not flush records: {e}"))),
        };
        if let Some(Ok(back)) = kept.map(Bytes::try_into_mut) {
            *buf = back.into();
        }
        sent
    }

    fn judge(&self, reply: &Reply) -> Sent {
        let line = reply.status_line(&self.setup.dest, self.setup.log_response_payload);
        match reply.status.as_u16() {
            200..=205 => {
                // Fluent Bit's line: the body right after the status, when it has more
                // than 2 bytes (an empty ExportLogsServiceResponse has none).
                let status = reply.status.as_u16();
                if self.setup.log_response_payload && reply.body.len() > 2 {
                    crate::info!(
                        "[output:opentelemetry] {}, HTTP status={status}{}",
                        self.setup.dest,
                        reply.body_text()
                    );
                } else {
                    crate::info!(
                        "[output:opentelemetry] {}, HTTP status={status}",
                        self.setup.dest
                    );
                }
                Sent::Done
            }
            // OTLP's retryable statuses (opentelemetry.io/docs/specs/otlp/#retryable-response-codes).
            429 | 502 | 503 | 504 => Sent::Retry(super::retry(reply, line)),
            _ => Sent::Dropped(line),
        }
    }
}

impl OtelOutput {
    /// A metrics chunk: one request with every set.
    async fn flush_metrics(&mut self, chunk: &Chunk) -> FlushResult {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        metrics::encode(&chunk.metrics, &self.setup.labels, &mut buf);
        let sent = self.send(&self.setup.metrics_uri, &mut buf).await;
        self.buf = buf;
        match sent {
            Sent::Done => FlushResult::Ok,
            Sent::Retry(r) => r,
            Sent::Dropped(line) => FlushResult::Error(format!(
                "{line}: the receiver refused the metrics, they will not be retried"
            )),
        }
    }
}

impl Output for OtelOutput {
    fn signals(&self) -> Signals {
        Signals::LOGS_AND_METRICS
    }

    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            if !chunk.metrics.is_empty() {
                return self.flush_metrics(chunk).await;
            }
            let mut skipped = Skipped::default();
            let mut dropped = 0u64;
            let mut reasons = Vec::new();
            let total = chunk.records.len();
            let mut start = 0;
            while start < total {
                let end = (start + self.setup.batch_size).min(total);
                let mut buf = std::mem::take(&mut self.buf);
                self.encoder
                    .encode(&chunk.records[start..end], &mut buf, &mut skipped);
                let sent = self.send(&self.setup.uri, &mut buf).await;
                self.buf = buf;
                match sent {
                    Sent::Done => {}
                    Sent::Dropped(line) => {
                        dropped += (end - start) as u64;
                        reasons.push(line);
                    }
                    Sent::Retry(r) if start == 0 && dropped == 0 => return r,
                    Sent::Retry(r) => {
                        // Earlier batches were delivered (or dropped): only the rest again.
                        let (after, reason) = match r {
                            FlushResult::RetryAfter(d, e) => (Some(d), e),
                            FlushResult::Retry(e) => (None, e),
                            _ => (None, String::new()),
                        };
                        log_drops(&reasons, dropped);
                        return FlushResult::Partial(Partial {
                            retry: (start..total).collect(),
                            dropped,
                            after,
                            reason,
                        });
                    }
                }
                start = end;
            }
            if skipped.trace_id + skipped.span_id > 0 {
                crate::warn!(
                    "[output:opentelemetry] {} invalid trace_id and {} invalid span_id left out \
                     (a trace id is 16 bytes or 32 hex digits, a span id 8 bytes or 16 hex digits)",
                    skipped.trace_id,
                    skipped.span_id
                );
            }
            if dropped == 0 {
                return FlushResult::Ok;
            }
            if dropped == total as u64 {
                return FlushResult::Error(format!(
                    "{}: the receiver refused the records, they will not be retried",
                    reasons.join("; ")
                ));
            }
            log_drops(&reasons, dropped);
            FlushResult::Partial(Partial {
                dropped,
                ..Partial::default()
            })
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(OtelOutput {
            encoder: LogsEncoder::new(self.setup.mapping.clone()),
            setup: self.setup.clone(),
            buf: Vec::with_capacity(64 * 1024),
        })
    }
}

fn log_drops(reasons: &[String], dropped: u64) {
    if dropped > 0 {
        crate::error!(
            "[output:opentelemetry] {}: the receiver refused the records, they will not be retried; {dropped} records dropped",
            reasons.join("; ")
        );
    }
}
