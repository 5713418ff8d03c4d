//! `es` output: records to Elasticsearch (or OpenSearch) with the Bulk API.
//! Fluent Bit: plugins/out_es/es.c, es_conf.c, es_bulk.c
//!
//! Each flush is one `POST {path}/_bulk[?pipeline=...]` of NDJSON (see [`bulk`]) with
//! Fluent Bit's headers in its order: `Content-Type: application/x-ndjson`,
//! `Authorization` (`http_user`/`http_passwd`, else `ApiKey http_api_key`, else
//! `cloud_auth`), `User-Agent: Fluent-Bit`, `Content-Encoding: gzip` (`compress gzip`).
//!
//! The reply: a whole-request status as every HTTP output reads it (2xx read on, 408,
//! 429 and 5xx retried, other 4xx dropped and counted); then the bulk reply item by
//! item ([`reply`]): delivered items are done, items refused for good (mapping errors)
//! are dropped, counted in `fluentbit_output_dropped_records_total` and logged with
//! their reasons (at once, then at most one summing line every 10 s), and only the items worth another try (429, 5xx)
//! are sent again, through the engine's partial retry ([`FlushResult::Partial`]).
//! Fluent Bit instead retries the whole chunk (duplicates of every accepted record
//! unless `generate_id` is on) until `retry_limit`, then drops all of it.

mod bulk;
mod murmur3;
mod reply;

use std::ffi::CString;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use super::pool_metrics;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::template::Template;
use crate::event::{Chunk, EventTime};
use crate::http_client::{self, Compression, HttpClient, Reply, Verdict};
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin, Partial};

pub(super) use bulk::IdHash;
use bulk::{Bulk, BulkConf, WriteOp};
use reply::Fate;

// Properties `opensearch` shares with `es`.
pub(super) const INDEX: PropSpec = PropSpec::new(
    "index",
    PropKind::Str,
    Some("fluent-bit"),
    "Index name (strftime patterns are expanded with the flush time).",
);
pub(super) const TYPE: PropSpec = PropSpec::new(
    "type",
    PropKind::Str,
    Some("_doc"),
    "Document type (_type).",
);
pub(super) const SUPPRESS_TYPE_NAME: PropSpec = PropSpec::new(
    "suppress_type_name",
    PropKind::Bool,
    Some("false"),
    "Leave _type out of action lines (Elasticsearch 7 and later).",
);
pub(super) const COMPRESS: PropSpec = PropSpec::new(
    "compress",
    PropKind::Enum(&["gzip"]),
    None,
    "Compress the payload: gzip.",
);
pub(super) const AWS_SERVICE_NAME: PropSpec = PropSpec::new(
    "aws_service_name",
    PropKind::Str,
    Some("es"),
    "AWS service the requests are signed for (es; aoss for OpenSearch Serverless).",
);
pub(super) const LOGSTASH_FORMAT: PropSpec = PropSpec::new(
    "logstash_format",
    PropKind::Bool,
    Some("false"),
    "Index PREFIX-DATE per record (Logstash style).",
);
pub(super) const LOGSTASH_PREFIX: PropSpec = PropSpec::new(
    "logstash_prefix",
    PropKind::Str,
    Some("logstash"),
    "Index prefix with logstash_format.",
);
pub(super) const LOGSTASH_PREFIX_SEPARATOR: PropSpec = PropSpec::new(
    "logstash_prefix_separator",
    PropKind::Str,
    Some("-"),
    "Between the prefix and the date.",
);
pub(super) const LOGSTASH_PREFIX_KEY: PropSpec = PropSpec::new(
    "logstash_prefix_key",
    PropKind::Str,
    None,
    "Record key (record accessor) whose value replaces logstash_prefix.",
);
pub(super) const LOGSTASH_DATEFORMAT: PropSpec = PropSpec::new(
    "logstash_dateformat",
    PropKind::Str,
    Some("%Y.%m.%d"),
    "strftime format of the index date.",
);
pub(super) const TIME_KEY: PropSpec = PropSpec::new(
    "time_key",
    PropKind::Str,
    Some("@timestamp"),
    "Key of the record time in each document.",
);
pub(super) const TIME_KEY_FORMAT: PropSpec = PropSpec::new(
    "time_key_format",
    PropKind::Str,
    Some("%Y-%m-%dT%H:%M:%S"),
    "strftime format of time_key (milliseconds and Z follow).",
);
pub(super) const TIME_KEY_NANOS: PropSpec = PropSpec::new(
    "time_key_nanos",
    PropKind::Bool,
    Some("false"),
    "Nanoseconds in time_key instead of milliseconds.",
);
pub(super) const INCLUDE_TAG_KEY: PropSpec = PropSpec::new(
    "include_tag_key",
    PropKind::Bool,
    Some("false"),
    "Add the tag to each document.",
);
pub(super) const TAG_KEY: PropSpec = PropSpec::new(
    "tag_key",
    PropKind::Str,
    Some("flb-key"),
    "Key of the tag with include_tag_key.",
);
pub(super) const BUFFER_SIZE: PropSpec = PropSpec::new(
    "buffer_size",
    PropKind::Str,
    Some("512k"),
    "Response buffer size, or false (agent reads whole bulk replies).",
);
pub(super) const PATH: PropSpec = PropSpec::new(
    "path",
    PropKind::Str,
    None,
    "Path prefix of the bulk URI (/path/_bulk).",
);
pub(super) const PIPELINE: PropSpec = PropSpec::new(
    "pipeline",
    PropKind::Str,
    None,
    "Ingest pipeline (/_bulk?pipeline=NAME).",
);
pub(super) const GENERATE_ID: PropSpec = PropSpec::new(
    "generate_id",
    PropKind::Bool,
    Some("false"),
    "Give each document an _id hashed from its content.",
);
pub(super) const WRITE_OPERATION: PropSpec = PropSpec::new(
    "write_operation",
    PropKind::Enum(&["create", "index", "update", "upsert"]),
    Some("create"),
    "Bulk operation: create, index, update or upsert.",
);
pub(super) const ID_KEY: PropSpec = PropSpec::new(
    "id_key",
    PropKind::Str,
    None,
    "Record key (record accessor) whose string value is the _id.",
);
pub(super) const REPLACE_DOTS: PropSpec = PropSpec::new(
    "replace_dots",
    PropKind::Bool,
    Some("false"),
    "Replace dots in key names with underscores.",
);
pub(super) const CURRENT_TIME_INDEX: PropSpec = PropSpec::new(
    "current_time_index",
    PropKind::Bool,
    Some("false"),
    "Date indices and time_key with the flush time, not the record's.",
);
pub(super) const TRACE_OUTPUT: PropSpec = PropSpec::new(
    "trace_output",
    PropKind::Bool,
    Some("false"),
    "Print each bulk body to stdout (diagnostics).",
);
pub(super) const TRACE_ERROR: PropSpec = PropSpec::new(
    "trace_error",
    PropKind::Bool,
    Some("false"),
    "Log the whole reply when items fail (diagnostics).",
);

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "host",
        PropKind::Str,
        Some("127.0.0.1"),
        "Elasticsearch host name or IP address.",
    ),
    PropSpec::new(
        "port",
        PropKind::Int,
        Some("9200"),
        "Elasticsearch TCP port.",
    ),
    INDEX,
    TYPE,
    SUPPRESS_TYPE_NAME,
    http_client::HTTP_USER,
    http_client::HTTP_PASSWD,
    PropSpec::new(
        "http_api_key",
        PropKind::Str,
        None,
        "Base64 API key: 'Authorization: ApiKey KEY'.",
    ),
    COMPRESS,
    PropSpec::new(
        "cloud_id",
        PropKind::Str,
        None,
        "Elastic Cloud ID (name:base64): sets host and port.",
    ),
    PropSpec::new(
        "cloud_auth",
        PropKind::Str,
        None,
        "Elastic Cloud credentials, user:password.",
    ),
    PropSpec::new(
        "upstream",
        PropKind::Str,
        None,
        "Upstream (HA) file of several nodes (not available in agent: a config error).",
    ),
    crate::aws::AUTH,
    crate::aws::REGION,
    crate::aws::STS_ENDPOINT,
    crate::aws::ROLE_ARN,
    crate::aws::EXTERNAL_ID,
    crate::aws::PROFILE,
    AWS_SERVICE_NAME,
    LOGSTASH_FORMAT,
    LOGSTASH_PREFIX,
    LOGSTASH_PREFIX_SEPARATOR,
    LOGSTASH_PREFIX_KEY,
    LOGSTASH_DATEFORMAT,
    TIME_KEY,
    TIME_KEY_FORMAT,
    TIME_KEY_NANOS,
    INCLUDE_TAG_KEY,
    TAG_KEY,
    BUFFER_SIZE,
    PATH,
    PIPELINE,
    GENERATE_ID,
    WRITE_OPERATION,
    ID_KEY,
    REPLACE_DOTS,
    CURRENT_TIME_INDEX,
    TRACE_OUTPUT,
    TRACE_ERROR,
    http_client::PROXY,
    http_client::RESPONSE_TIMEOUT,
    http_client::READ_IDLE_TIMEOUT,
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "es",
    description: "Elasticsearch",
    props: PROPS,
    workers: 2,
    net: true,
    build,
};

/// Where `es` and `opensearch` differ (Fluent Bit: out_es and out_opensearch).
pub(super) struct Flavor {
    /// The plugin's name, in log lines.
    pub name: &'static str,
    pub id_hash: IdHash,
    /// An `index` with `$` is a record accessor pattern.
    pub index_ra: bool,
    /// Between `_bulk` and `?pipeline=`: out_opensearch writes `/_bulk/?pipeline=`.
    pub pipeline_sep: &'static str,
    /// Has Elastic's `cloud_id`, `cloud_auth`, `http_api_key` and `upstream`.
    pub elastic: bool,
}

const ES: Flavor = Flavor {
    name: "es",
    id_hash: IdHash::Murmur3,
    index_ra: false,
    pipeline_sep: "",
    elastic: true,
};

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    build_flavor(props, ctx, &ES)
}

/// What the workers of an instance share.
#[derive(Clone)]
struct Setup {
    client: HttpClient,
    uri: String,
    conf: BulkConf,
    headers: Vec<(HeaderName, HeaderValue)>,
    gzip: bool,
    trace_output: bool,
    trace_error: bool,
    /// `host:port`, for log lines.
    dest: String,
    /// `es` or `opensearch`, in log lines.
    name: &'static str,
    drops: std::sync::Arc<DropLog>,
}

/// The log of dropped documents, shared by the workers: the first drop is logged at
/// once, later ones at most every [`DropLog::EVERY`], summed with their reasons (the
/// dropped-records metric counts every one as it happens).
#[derive(Default)]
struct DropLog(std::sync::Mutex<DropState>);

#[derive(Default)]
struct DropState {
    last: Option<std::time::Instant>,
    dropped: u64,
    /// Up to 5 distinct reasons, each with its count.
    reasons: Vec<(String, u64)>,
}

impl DropLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn report(&self, name: &str, dest: &str, dropped: u64, reasons: Vec<(String, u64)>) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.dropped += dropped;
        for (why, n) in reasons {
            if let Some((_, c)) = st.reasons.iter_mut().find(|(r, _)| *r == why) {
                *c += n;
            } else if st.reasons.len() < 5 {
                st.reasons.push((why, n));
            }
        }
        let now = std::time::Instant::now();
        if st.last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            return;
        }
        let list: Vec<String> = st
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} × {r}"))
            .collect();
        crate::error!(
            "[output:{name}] {dest}: {} document(s) refused for good and dropped{}: {}",
            st.dropped,
            if st.last.is_some() {
                format!(" in the last {} s", Self::EVERY.as_secs())
            } else {
                String::new()
            },
            list.join("; ")
        );
        *st = DropState {
            last: Some(now),
            ..DropState::default()
        };
    }
}

struct EsOutput {
    setup: Setup,
    bulk: Bulk,
}

/// `cloud_id`'s host and port: `name:base64("region$es_host[:port]$kibana_host")`
/// is `es_host.region`, port 443 unless given (Fluent Bit's `extract_cloud_host`).
fn cloud_host(cloud_id: &str) -> Option<(String, u16)> {
    use base64::Engine;
    let (_, b64) = cloud_id.split_once(':')?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    // strtok: empty fields are skipped.
    let mut parts = text.split('$').filter(|p| !p.is_empty());
    let region = parts.next()?;
    let host = parts.next()?;
    let (host, port) = match host.split_once(':') {
        Some((h, p)) => (h, p),
        None => (host, ""),
    };
    // strtol: leading digits; 0 (none) means 443.
    let digits: String = port.chars().take_while(char::is_ascii_digit).collect();
    let port = match digits.parse::<u32>().unwrap_or(0) {
        0 => 443,
        p => u16::try_from(p).ok()?,
    };
    Some((format!("{host}.{region}"), port))
}

fn strftime_format(props: &Props, name: &str) -> Result<CString, ConfigError> {
    CString::new(props.str(name).unwrap_or(""))
        .map_err(|_| props.error(name, "a strftime format without NUL characters"))
}

pub(super) fn build_flavor(
    props: &Props,
    ctx: &BuildContext,
    flavor: &Flavor,
) -> Result<Box<dyn Output>, ConfigError> {
    let name = flavor.name;
    // Elastic's own properties, none in opensearch's table.
    let elastic = |key: &str| flavor.elastic.then(|| props.str(key)).flatten();
    if let Some(_file) = elastic("upstream") {
        return Err(ConfigError::invalid(
            props.span_of("upstream"),
            "es: upstream: HA upstream files (several nodes) are not available in agent"
                .to_string(),
            Some("remove 'upstream' and set host and port of one node (or a load balancer)".into()),
        ));
    }
    let (host, port) = match elastic("cloud_id") {
        Some(id) => cloud_host(id).ok_or_else(|| {
            props.error(
                "cloud_id",
                "an Elastic Cloud ID, NAME:BASE64 of 'region$es_host$kibana_host'",
            )
        })?,
        None => (
            props.str("host").unwrap_or("127.0.0.1").to_string(),
            props
                .int("port")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p > 0)
                .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?,
        ),
    };
    if let Some(b) = props.str("buffer_size") {
        let ok = crate::config::values::parse_size(b).is_some()
            || crate::config::values::parse_bool(b) == Some(false);
        if !ok {
            return Err(props.error("buffer_size", "a size such as 512k, or false"));
        }
    }
    let path = props.str("path").unwrap_or("");
    let uri = match props.str("pipeline") {
        Some(p) if !p.is_empty() => format!("{path}/_bulk{}?pipeline={p}", flavor.pipeline_sep),
        _ => format!("{path}/_bulk"),
    };
    if uri.parse::<hyper::Uri>().is_err() || !uri.starts_with('/') {
        let key = if props.is_set("pipeline") {
            "pipeline"
        } else {
            "path"
        };
        return Err(props.error(key, "a path such as /es (no spaces), and a pipeline name"));
    }

    let write_op = WriteOp::parse(props.str("write_operation").unwrap_or("create"))
        .ok_or_else(|| props.error("write_operation", "create, index, update or upsert"))?;
    let id_key = match props.str("id_key") {
        Some(k) => Some(Accessor::parse(k).map_err(|e| props.error("id_key", e))?),
        None => None,
    };
    let mut generate_id = props.bool("generate_id") == Some(true);
    if id_key.is_some() && generate_id {
        crate::warn!(
            "{}: [output:{name}] Generate_ID is ignored when ID_key is set",
            props.span_of("generate_id")
        );
        generate_id = false;
    }
    if matches!(write_op, WriteOp::Update | WriteOp::Upsert) && id_key.is_none() && !generate_id {
        return Err(ConfigError::invalid(
            props.span_of("write_operation"),
            format!("{name}: write_operation update or upsert needs the documents' ids"),
            Some("set id_key (a record key holding the _id) or generate_id on".into()),
        ));
    }
    let prefix_key = match props.str("logstash_prefix_key") {
        Some(k) => {
            let text = if k.starts_with('$') {
                k.to_string()
            } else {
                format!("${k}")
            };
            Some(Template::parse(&text).map_err(|e| props.error("logstash_prefix_key", e))?)
        }
        None => None,
    };
    let index_ra = match props.str("index") {
        Some(i) if flavor.index_ra && i.contains('$') => {
            Some(Template::parse(i).map_err(|e| props.error("index", e))?)
        }
        _ => None,
    };
    let conf = BulkConf {
        index: strftime_format(props, "index")?,
        index_ra,
        id_hash: flavor.id_hash,
        type_name: (props.bool("suppress_type_name") != Some(true))
            .then(|| props.str("type").unwrap_or("_doc").to_string()),
        logstash_format: props.bool("logstash_format") == Some(true),
        logstash_prefix: props
            .str("logstash_prefix")
            .unwrap_or("logstash")
            .to_string(),
        logstash_prefix_separator: props
            .str("logstash_prefix_separator")
            .unwrap_or("-")
            .to_string(),
        logstash_dateformat: strftime_format(props, "logstash_dateformat")?,
        prefix_key,
        time_key: props.str("time_key").unwrap_or("@timestamp").to_string(),
        time_key_format: strftime_format(props, "time_key_format")?,
        time_key_nanos: props.bool("time_key_nanos") == Some(true),
        tag_key: (props.bool("include_tag_key") == Some(true))
            .then(|| props.str("tag_key").unwrap_or("flb-key").to_string()),
        generate_id,
        id_key,
        write_op,
        replace_dots: props.bool("replace_dots") == Some(true),
        current_time_index: props.bool("current_time_index") == Some(true),
        escape_unicode: ctx.service.escape_unicode,
    };

    let mut headers = vec![(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    )];
    let user = props.str("http_user").filter(|u| !u.is_empty());
    let api_key = elastic("http_api_key").filter(|k| !k.is_empty());
    // cloud_auth: the first two ':'-separated fields, both needed.
    let cloud = elastic("cloud_auth").and_then(|a| {
        let mut f = a.split(':').filter(|s| !s.is_empty());
        Some((f.next()?, f.next()?))
    });
    if let Some(user) = user {
        headers.push((
            hyper::header::AUTHORIZATION,
            http_client::basic_auth(user, props.str("http_passwd").unwrap_or("")),
        ));
    } else if let Some(key) = api_key {
        let v = HeaderValue::from_str(&format!("ApiKey {key}"))
            .map_err(|_| props.error("http_api_key", "a base64 API key"))?;
        headers.push((hyper::header::AUTHORIZATION, v));
    } else if let Some((u, p)) = cloud {
        headers.push((hyper::header::AUTHORIZATION, http_client::basic_auth(u, p)));
    }
    headers.push((
        hyper::header::USER_AGENT,
        HeaderValue::from_static("Fluent-Bit"),
    ));

    let mut client = HttpClient::from_props(props, &host, port)?.with_metrics(pool_metrics(ctx));
    if let Some(signer) = crate::aws::Signer::from_props(props, "aws_service_name")? {
        client = client.with_signer(std::sync::Arc::new(signer.for_opensearch()));
    }
    Ok(Box::new(EsOutput {
        setup: Setup {
            client,
            uri,
            conf,
            headers,
            gzip: props
                .str("compress")
                .is_some_and(|c| c.eq_ignore_ascii_case("gzip")),
            trace_output: props.bool("trace_output") == Some(true),
            trace_error: props.bool("trace_error") == Some(true),
            dest: format!("{host}:{port}"),
            name,
            drops: Default::default(),
        },
        bulk: Bulk::default(),
    }))
}

impl Setup {
    /// Sends the bulk body and reads what became of each document. `sent[j]` is the
    /// chunk position of document `j`; `skipped` records were never sent.
    async fn send(&self, body: &[u8], sent: &[usize], skipped: u64) -> FlushResult {
        let mut headers = self.headers.clone();
        let payload = if self.gzip {
            match Compression::Gzip.compress(body) {
                Ok(z) => {
                    headers.push((
                        hyper::header::CONTENT_ENCODING,
                        HeaderValue::from_static("gzip"),
                    ));
                    Bytes::from(z)
                }
                Err(e) => {
                    crate::error!(
                        "[output:{}] cannot gzip payload, disabling compression: {e}",
                        self.name
                    );
                    Bytes::copy_from_slice(body)
                }
            }
        } else {
            Bytes::copy_from_slice(body)
        };
        let reply = match self
            .client
            .send(Method::POST, &self.uri, &headers, payload)
            .await
        {
            Ok(r) => r,
            Err(e) => return FlushResult::Retry(format!("could not flush records: {e}")),
        };
        self.judge(&reply, body, sent, skipped)
    }

    fn judge(&self, reply: &Reply, body: &[u8], sent: &[usize], skipped: u64) -> FlushResult {
        let status = reply.status.as_u16();
        let line = || {
            if reply.body.is_empty() {
                format!("{}, HTTP status={status} URI={}", self.dest, self.uri)
            } else {
                format!(
                    "{}, HTTP status={status} URI={}, response:\n{}",
                    self.dest,
                    self.uri,
                    reply.body_text()
                )
            }
        };
        match reply.verdict() {
            Verdict::Done => {}
            Verdict::Retry => {
                return match reply.retry_after() {
                    Some(after) => FlushResult::RetryAfter(after, line()),
                    None => FlushResult::Retry(line()),
                }
            }
            Verdict::Drop => {
                return FlushResult::Error(format!(
                    "{}: the server refused the bulk request (4xx), it will not be retried",
                    line()
                ))
            }
        }
        let items = match reply::read(&reply.body, sent.len()) {
            reply::Verdict::AllDelivered => {
                crate::debug!(
                    "[output:{}] {}, HTTP status={status}: bulk accepted",
                    self.name,
                    self.dest
                );
                return if skipped == 0 {
                    FlushResult::Ok
                } else {
                    FlushResult::Partial(Partial {
                        dropped: skipped,
                        ..Partial::default()
                    })
                };
            }
            reply::Verdict::Unreadable(why) => {
                return FlushResult::Retry(format!("{}: {why}", line()));
            }
            reply::Verdict::Items(items) => items,
        };
        if self.trace_error {
            if body.len() < 4000 {
                crate::debug!(
                    "[output:{}] error caused by: Input\n{}",
                    self.name,
                    String::from_utf8_lossy(body)
                );
            }
            crate::error!(
                "[output:{}] error: Output\n{}",
                self.name,
                String::from_utf8_lossy(&reply.body)
            );
        }
        let mut retry = Vec::new();
        let mut dropped = 0u64;
        // Reasons of dropped items, each with how many: one log line per flush.
        let mut reasons: Vec<(String, u64)> = Vec::new();
        let mut retry_reason: Option<String> = None;
        for (&pos, (st, why)) in sent.iter().zip(&items) {
            match reply::fate(*st) {
                Fate::Delivered => {}
                Fate::Retry => {
                    retry.push(pos);
                    if retry_reason.is_none() {
                        retry_reason =
                            Some(format!("status {st}: {}", why.as_deref().unwrap_or("")));
                    }
                }
                Fate::Dropped => {
                    dropped += 1;
                    let why = format!(
                        "status {st}: {}",
                        why.as_deref().unwrap_or("no reason given")
                    );
                    if let Some((_, n)) = reasons.iter_mut().find(|(r, _)| *r == why) {
                        *n += 1;
                    } else if reasons.len() < 5 {
                        reasons.push((why, 1));
                    }
                }
            }
        }
        if dropped > 0 {
            self.drops.report(self.name, &self.dest, dropped, reasons);
        }
        let reason = match &retry_reason {
            Some(r) => format!(
                "{}: {} of {} documents to send again ({r})",
                self.dest,
                retry.len(),
                sent.len()
            ),
            None => String::new(),
        };
        FlushResult::Partial(Partial {
            retry,
            dropped: dropped + skipped,
            after: reply.retry_after(),
            reason,
        })
    }
}

impl Output for EsOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            let setup = &self.setup;
            setup
                .conf
                .format(&chunk.tag, &chunk.records, EventTime::now(), &mut self.bulk);
            if self.bulk.skipped > 0 {
                crate::warn!(
                    "[output:{}] skipping {} records with missing or unsafe Id_Key value",
                    self.setup.name,
                    self.bulk.skipped
                );
            }
            if setup.trace_output {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&self.bulk.body);
                let _ = out.flush();
            }
            if self.bulk.body.is_empty() {
                return FlushResult::Partial(Partial {
                    dropped: self.bulk.skipped,
                    ..Partial::default()
                });
            }
            setup
                .send(&self.bulk.body, &self.bulk.sent, self.bulk.skipped)
                .await
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(EsOutput {
            setup: self.setup.clone(),
            bulk: Bulk::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_logged_at_once_then_summed() {
        let log = DropLog::default();
        log.report("es", "h:1", 1, vec![("status 400: a".into(), 1)]);
        {
            let st = log.0.lock().unwrap();
            assert!(st.last.is_some());
            assert_eq!((st.dropped, st.reasons.len()), (0, 0), "logged and reset");
        }
        log.report("es", "h:1", 2, vec![("status 400: a".into(), 2)]);
        log.report("es", "h:1", 1, vec![("status 404: b".into(), 1)]);
        let st = log.0.lock().unwrap();
        assert_eq!(st.dropped, 3, "held for the next line");
        assert_eq!(
            st.reasons,
            vec![
                ("status 400: a".to_string(), 2),
                ("status 404: b".to_string(), 1)
            ]
        );
    }

    #[test]
    fn cloud_ids_as_fluent_bit_reads_them() {
        use base64::Engine;
        let id = |s: &str| {
            format!(
                "dep:{}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            cloud_host(&id("us-east-1.aws.found.io$abc123$kib456")),
            Some(("abc123.us-east-1.aws.found.io".into(), 443))
        );
        assert_eq!(
            cloud_host(&id("eu-west-1.aws.found.io$abc:9243$kib")),
            Some(("abc.eu-west-1.aws.found.io".into(), 9243))
        );
        assert_eq!(cloud_host("no-colon"), None);
        assert_eq!(cloud_host(&id("only-region")), None);
    }
}
