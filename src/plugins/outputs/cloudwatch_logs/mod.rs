//! `cloudwatch_logs` output: records as Amazon CloudWatch Logs events (PutLogEvents),
//! log streams created on first use, the log group too with `auto_create_group`.
//! Fluent Bit: plugins/out_cloudwatch_logs/{cloudwatch_logs,cloudwatch_api}.c
//!
//! Each record is one event: its JSON (or, with `log_key`, that key's value) as the
//! message, its time in milliseconds. The stream is `log_stream_name`, or
//! `log_stream_prefix` + the tag; `log_group_template`/`log_stream_template` (record
//! accessor templates) win when every key they name is in the record. Batches are cut
//! as Fluent Bit cuts them ([`batch`]). Requests are AWS JSON 1.1, signed (SigV4,
//! service `logs`) with Fluent Bit's credential chain ([`crate::aws`]), to
//! `logs.REGION.amazonaws.com` over TLS, or `endpoint` (`port`, `tls`).
//!
//! A stream not yet used is created (`CreateLogStream`; "already exists" is fine); a
//! group that does not exist is created with `auto_create_group` (`log_group_class`,
//! then `PutRetentionPolicy` with `log_retention_days`). Known streams are forgotten
//! after 4 hours unused.
//!
//! Answers: throttling, 5xx, no answer and auth errors (expired or invalid
//! credentials, which are then fetched again) retry (the engine's backoff) the events
//! not yet delivered; a PutLogEvents whose stream is gone
//! (ResourceNotFoundException) creates it again and resends once. Other refusals
//! (InvalidParameterException, DataAlreadyAccepted...) drop that request's events, counted
//! and logged with AWS's message; so do events CloudWatch reports rejected (too old,
//! too new, expired) in a 200 answer. Metrics go as embedded metric format events
//! (emf.rs). Fluent Bit retries the whole chunk on every
//! failure (duplicating what was delivered) and drops it on a missing stream.

mod api;
pub mod batch;
mod emf;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderValue;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::format::{write_json_map, write_json_value, write_str_body};
use crate::event::metrics::Signals;
use crate::event::template::Template;
use crate::event::{Chunk, Record, Value};
use crate::http_client::HttpClient;
use crate::net::TlsSetup;
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin, Partial};
use api::{Api, Outcome};
use batch::{Added, Batch};

/// Unused streams are forgotten (and checked again on next use) after this.
const STREAM_TTL: Duration = Duration::from_secs(4 * 3600);

/// CloudWatch's accepted retention periods, in days.
const RETENTION_DAYS: &[i64] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("region", PropKind::Str, None, "The AWS region to send logs to (required)."),
    PropSpec::new("log_group_name", PropKind::Str, None, "CloudWatch log group name (required)."),
    PropSpec::new("log_stream_name", PropKind::Str, None, "CloudWatch log stream name; not with log_stream_prefix."),
    PropSpec::new("log_stream_prefix", PropKind::Str, None, "Prefix of the log stream name; the tag is appended to it."),
    PropSpec::new("log_group_template", PropKind::Str, None, "Record accessor template of the group name; log_group_name when a key is missing."),
    PropSpec::new("log_stream_template", PropKind::Str, None, "Record accessor template of the stream name; log_stream_name/prefix when a key is missing."),
    PropSpec::new("log_key", PropKind::Str, None, "Send only this key's value as the message, not the whole record."),
    PropSpec::new("extra_user_agent", PropKind::Str, None, "Appended to the User-Agent (reserved for AWS's vended configurations)."),
    PropSpec::new("log_format", PropKind::Str, None, "x-amzn-logs-format header of PutLogEvents, e.g. json/emf for embedded metrics."),
    PropSpec::new("role_arn", PropKind::Str, None, "ARN of an IAM role to assume (STS AssumeRole)."),
    PropSpec::new("auto_create_group", PropKind::Bool, Some("false"), "Create the log group when it does not exist (streams are always created)."),
    PropSpec::new("auto_retry_requests", PropKind::Bool, Some("true"), "Send a request that got no answer once more at once, before the engine's retry."),
    PropSpec::new("log_retention_days", PropKind::Int, Some("0"), "Retention (days) set on log groups the output creates; 0 leaves it unset."),
    PropSpec::new("endpoint", PropKind::Str, None, "Custom CloudWatch Logs endpoint host (https:// prefix allowed; http://HOST for plain HTTP)."),
    PropSpec::new("port", PropKind::Int, None, "Port of the endpoint (default 443)."),
    PropSpec::new("sts_endpoint", PropKind::Str, None, "Custom STS endpoint, used with role_arn and web identity."),
    PropSpec::new("external_id", PropKind::Str, None, "External ID for STS AssumeRole, with role_arn."),
    PropSpec::new("metric_namespace", PropKind::Str, None, "Namespace of Fluent Bit's EMF conversion of cpu/mem records (not done by agent: a warning)."),
    PropSpec::new("metric_dimensions", PropKind::Str, None, "Dimensions of that EMF conversion, 'd1,d2;d3' (not done by agent: a warning)."),
    PropSpec::new("profile", PropKind::Str, None, "Profile of the shared credentials/config files (else AWS_PROFILE, else default)."),
    PropSpec::new("log_group_class", PropKind::Str, Some(""), "Storage class of created log groups: STANDARD or INFREQUENT_ACCESS."),
    PropSpec::new("add_entity", PropKind::Bool, Some("false"), "Add an entity (from kubernetes metadata) to PutLogEvents (not available in agent)."),
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "cloudwatch_logs",
    description: "Send logs to Amazon CloudWatch",
    props: PROPS,
    workers: 1,
    net: true,
    build,
};

/// A log group and stream, as named (not escaped); shared, as every record of a chunk
/// usually has the same.
type StreamKey = Arc<(String, String)>;

/// What every worker of the instance shares.
struct Setup {
    api: Api,
    group: String,
    stream_name: Option<String>,
    stream_prefix: String,
    group_template: Option<Template>,
    stream_template: Option<Template>,
    log_key: Option<String>,
    logs_format: Option<HeaderValue>,
    create_group: bool,
    /// `log_group_class` when set: sent with CreateLogGroup (Fluent Bit sends it only
    /// when it is set).
    group_class: Option<String>,
    retention_days: i64,
    escape_unicode: bool,
    /// Streams known to exist, with when they are forgotten.
    streams: Mutex<HashMap<StreamKey, Instant>>,
    who: String,
}

struct CloudwatchOutput {
    setup: Arc<Setup>,
    batch: Batch,
    json: Vec<u8>,
    msg: Vec<u8>,
    payload: Vec<u8>,
}

fn required<'a>(props: &'a Props, name: &str, example: &str) -> Result<&'a str, ConfigError> {
    props.str(name).filter(|v| !v.is_empty()).ok_or_else(|| {
        ConfigError::invalid(
            props.span(),
            format!("cloudwatch_logs: '{name}' is a required field"),
            Some(format!("add '{name} {example}' to the section")),
        )
    })
}

fn template(props: &Props, name: &str) -> Result<Option<Template>, ConfigError> {
    props
        .str(name)
        .map(|t| Template::parse(t).map_err(|e| props.error(name, e)))
        .transpose()
}

/// Host, port and TLS of the API: `logs.REGION.<partition suffix>`, or `endpoint`
/// (Fluent Bit strips `https://`), on `port` (443). As Fluent Bit, always TLS (`tls.*`
/// apply; `tls off` does not turn it off); agent also takes `http://HOST` for plain
/// HTTP (a local stand-in such as LocalStack).
fn endpoint(props: &Props, region: &str) -> Result<(String, u16, Option<TlsSetup>), ConfigError> {
    let port = match props.int("port") {
        None => 443,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?,
    };
    let (host, tls) = match props.str("endpoint") {
        None => (crate::aws::service_host("logs", region), true),
        Some(e) => match e.strip_prefix("http://") {
            Some(h) => (h.to_string(), false),
            None => (e.strip_prefix("https://").unwrap_or(e).to_string(), true),
        },
    };
    let host = host.trim_end_matches('/').to_string();
    if host.is_empty() || host.contains('/') || (host.contains(':') && !host.starts_with('[')) {
        return Err(props.error(
            "endpoint",
            "a host name such as logs.us-east-1.amazonaws.com (the port goes in 'port')",
        ));
    }
    let tls = if tls {
        Some(TlsSetup::always(props, &host)?)
    } else {
        None
    };
    Ok((host, port, tls))
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let group = required(props, "log_group_name", "my-group")?.to_string();
    let stream_name = props.str("log_stream_name").map(str::to_string);
    let stream_prefix = props.str("log_stream_prefix").map(str::to_string);
    if stream_name.is_some() == stream_prefix.is_some() {
        return Err(ConfigError::invalid(
            props.span(),
            "cloudwatch_logs: Either 'log_stream_name' or 'log_stream_prefix' is required",
            Some("set one of them, not both".into()),
        ));
    }
    let region = required(props, "region", "us-east-1")?.to_string();
    let create_group = props.bool("auto_create_group") == Some(true);
    // As Fluent Bit, the class is checked (and used) only with auto_create_group.
    let group_class = match props.str("log_group_class").unwrap_or("") {
        _ if !create_group => None,
        "" => None,
        c @ ("STANDARD" | "INFREQUENT_ACCESS") => Some(c.to_string()),
        _ => return Err(props.error("log_group_class", "STANDARD or INFREQUENT_ACCESS")),
    };
    if group_class.as_deref() == Some("INFREQUENT_ACCESS") && create_group {
        crate::warn!(
            "[output:cloudwatch_logs:{}] Configured `log_group_class INFREQUENT_ACCESS` will only apply to log groups created by Fluent Bit. \
             Look for the `Created log group` info level message emitted when a group does not already exist and is created.",
            ctx.instance
        );
    }
    let retention_days = props.int("log_retention_days").unwrap_or(0);
    if retention_days > 0 && !RETENTION_DAYS.contains(&retention_days) {
        return Err(props.error(
            "log_retention_days",
            format!(
                "0 (unset) or one of CloudWatch's periods: {}",
                RETENTION_DAYS
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if props.bool("add_entity") == Some(true) {
        return Err(ConfigError::invalid(
            props.span_of("add_entity"),
            "cloudwatch_logs: add_entity: entities (from the kubernetes filter's aws_entity_* keys) are not available in agent",
            Some("remove 'add_entity'".into()),
        ));
    }
    for key in ["metric_namespace", "metric_dimensions"] {
        if props.is_set(key) {
            crate::warn!(
                "{}: [output:cloudwatch_logs:{}] {key}: agent does not convert cpu/mem records to embedded metrics (EMF) as Fluent Bit does; they are sent as JSON events",
                props.span_of(key),
                ctx.instance
            );
        }
    }
    let logs_format = match props.str("log_format") {
        Some(f) => Some(
            HeaderValue::from_str(f)
                .map_err(|_| props.error("log_format", "a header value such as json/emf"))?,
        ),
        None => None,
    };
    let sts = match props.str("sts_endpoint") {
        Some(e) => Some(
            crate::aws::credentials::Endpoint::parse(e)
                .map_err(|why| props.error("sts_endpoint", why))?,
        ),
        None => None,
    };
    let chain = crate::aws::Chain::standard(crate::aws::credentials::Setup {
        region: region.clone(),
        sts,
        profile: props.str("profile").map(str::to_string),
        role_arn: props.str("role_arn").map(str::to_string),
        external_id: props.str("external_id").map(str::to_string),
    })
    .map_err(|why| props.error("sts_endpoint", why))?;
    let creds: Arc<dyn crate::aws::credentials::Provide> = Arc::new(chain);
    let signer = crate::aws::Signer::new(&region, "logs", creds.clone());
    let (host, port, tls) = endpoint(props, &region)?;
    let plain_https = tls.is_some() && port == 443;
    let mut client = HttpClient::with_tls(props, &host, port, tls)?
        .with_metrics(super::pool_metrics(ctx))
        .with_signer(Arc::new(signer));
    if plain_https {
        // Fluent Bit's Host: no port for HTTPS on 443.
        client = client.with_host_header(&host);
    }
    let user_agent = match props.str("extra_user_agent") {
        Some(x) if x.eq_ignore_ascii_case("none") => "aws-fluent-bit-plugin".to_string(),
        x => format!("aws-fluent-bit-plugin-{}", x.unwrap_or("")),
    };
    let who = format!("[output:cloudwatch_logs:{}]", ctx.instance);
    Ok(Box::new(CloudwatchOutput {
        setup: Arc::new(Setup {
            api: Api {
                client,
                creds,
                refreshed: Arc::new(Mutex::new(None)),
                user_agent: HeaderValue::from_str(&user_agent)
                    .map_err(|_| props.error("extra_user_agent", "printable characters"))?,
                auto_retry: props.bool("auto_retry_requests") != Some(false),
                who: who.clone(),
            },
            group,
            stream_name,
            stream_prefix: stream_prefix.unwrap_or_default(),
            group_template: template(props, "log_group_template")?,
            stream_template: template(props, "log_stream_template")?,
            log_key: props.str("log_key").map(str::to_string),
            logs_format,
            create_group,
            group_class,
            retention_days,
            escape_unicode: ctx.service.escape_unicode,
            streams: Mutex::new(HashMap::new()),
            who,
        }),
        batch: Batch::new(),
        json: Vec::with_capacity(4096),
        msg: Vec::with_capacity(4096),
        payload: Vec::with_capacity(64 * 1024),
    }))
}

/// A name JSON-escaped as Fluent Bit writes it in request bodies.
fn escaped(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    write_str_body(&mut out, name.as_bytes(), false);
    out
}

/// Why a stream could not be made ready.
enum StreamErr {
    /// Try the chunk's rest again later.
    Retry(String),
    /// Refused for good: the records for it are dropped.
    Refused(String),
}

impl Setup {
    /// The group and stream of a record.
    /// Whether every record of a chunk goes to the same stream (no templates).
    fn fixed_stream(&self) -> bool {
        self.stream_template.is_none() && self.group_template.is_none()
    }

    fn stream_of(&self, tag: &str, rec: &Record) -> StreamKey {
        let render = |t: &Option<Template>| {
            let t = t.as_ref()?;
            let mut out = String::new();
            t.render_checked(tag, &rec.body, &mut out)
                .ok()
                .map(|()| out)
        };
        let stream = render(&self.stream_template).unwrap_or_else(|| match &self.stream_name {
            Some(s) => s.clone(),
            None => format!("{}{tag}", self.stream_prefix),
        });
        let group = render(&self.group_template).unwrap_or_else(|| self.group.clone());
        Arc::new((group, stream))
    }

    fn known(&self, key: &StreamKey, now: Instant) -> bool {
        let mut streams = self.streams.lock().expect("stream map lock");
        streams.retain(|_, until| *until > now);
        streams.contains_key(key)
    }

    fn remember(&self, key: &StreamKey) {
        self.streams
            .lock()
            .expect("stream map lock")
            .insert(key.clone(), Instant::now() + STREAM_TTL);
    }

    fn forget(&self, key: &StreamKey) {
        self.streams.lock().expect("stream map lock").remove(key);
    }

    async fn create_stream(&self, key: &StreamKey) -> Result<(), StreamErr> {
        let (group, stream) = &**key;
        crate::info!(
            "{} Creating log stream {stream} in log group {group}",
            self.who
        );
        let body = stream_body(group, stream);
        for can_retry in [true, false] {
            match self.api.call("CreateLogStream", body.clone(), None).await {
                Outcome::Done(_) => {
                    crate::info!("{} Created log stream {stream}", self.who);
                    self.remember(key);
                    return Ok(());
                }
                Outcome::Refused(e, _) if e.code == "ResourceAlreadyExistsException" => {
                    crate::info!("{} Log Stream {stream} already exists", self.who);
                    self.remember(key);
                    return Ok(());
                }
                Outcome::Refused(e, _) if e.code == "ResourceNotFoundException" => {
                    if !self.create_group {
                        let why = format!(
                            "Log Group {group} not found and `auto_create_group` disabled."
                        );
                        crate::error!("{} {why}", self.who);
                        return Err(StreamErr::Retry(why));
                    }
                    if !can_retry {
                        break;
                    }
                    crate::info!(
                        "{} Log Group {group} not found. Will attempt to create it.",
                        self.who
                    );
                    self.create_group(group).await?;
                }
                Outcome::Refused(_, line) => {
                    crate::error!("{} {line}", self.who);
                    return Err(StreamErr::Refused(line));
                }
                Outcome::Retry(line) => {
                    crate::error!("{} {line}", self.who);
                    return Err(StreamErr::Retry(format!(
                        "Failed to create log stream: {line}"
                    )));
                }
            }
        }
        Err(StreamErr::Retry(format!(
            "Failed to create log stream {stream}"
        )))
    }

    async fn create_group(&self, group: &str) -> Result<(), StreamErr> {
        crate::info!("{} Creating log group {group}", self.who);
        let g = String::from_utf8_lossy(&escaped(group)).into_owned();
        let body = match self.group_class.as_deref() {
            Some(class) => format!("{{\"logGroupName\":\"{g}\", \"logGroupClass\":\"{class}\"}}"),
            None => format!("{{\"logGroupName\":\"{g}\"}}"),
        };
        let class = self.group_class.as_deref().unwrap_or("STANDARD");
        match self
            .api
            .call("CreateLogGroup", Bytes::from(body), None)
            .await
        {
            Outcome::Done(_) => crate::info!(
                "{} Created log group {group} with storage class {class}",
                self.who
            ),
            Outcome::Refused(e, _) if e.code == "ResourceAlreadyExistsException" => {
                crate::info!("{} Log Group {group} already exists", self.who)
            }
            Outcome::Refused(_, line) | Outcome::Retry(line) => {
                crate::error!("{} {line}", self.who);
                crate::error!("{} Failed to create log group", self.who);
                return Err(StreamErr::Retry(format!(
                    "Failed to create log group: {line}"
                )));
            }
        }
        self.set_retention(group).await
    }

    async fn set_retention(&self, group: &str) -> Result<(), StreamErr> {
        let days = self.retention_days;
        if days <= 0 {
            return Ok(());
        }
        crate::info!(
            "{} Setting retention policy on log group {group} to {days}d",
            self.who
        );
        let g = String::from_utf8_lossy(&escaped(group)).into_owned();
        let body = format!("{{\"logGroupName\":\"{g}\",\"retentionInDays\":{days}}}");
        match self
            .api
            .call("PutRetentionPolicy", Bytes::from(body), None)
            .await
        {
            Outcome::Done(_) => {
                crate::info!("{} Set retention policy to {days}", self.who);
                Ok(())
            }
            Outcome::Refused(_, line) | Outcome::Retry(line) => {
                crate::error!("{} {line}", self.who);
                crate::error!("{} Failed to putRetentionPolicy", self.who);
                Err(StreamErr::Retry(format!(
                    "Failed to putRetentionPolicy: {line}"
                )))
            }
        }
    }
}

fn stream_body(group: &str, stream: &str) -> Bytes {
    let mut b = Vec::with_capacity(40 + group.len() + stream.len());
    b.extend_from_slice(b"{\"logGroupName\":\"");
    b.extend_from_slice(&escaped(group));
    b.extend_from_slice(b"\",\"logStreamName\":\"");
    b.extend_from_slice(&escaped(stream));
    b.extend_from_slice(b"\"}");
    Bytes::from(b)
}

/// Where a flush stands: what is done with the chunk's records so far.
#[derive(Default)]
struct Tally {
    retry: Vec<usize>,
    dropped: u64,
    reason: String,
}

impl CloudwatchOutput {
    /// The escaped message of `rec` into `self.msg`; `false` when it has none (an empty
    /// record, `log_key` missing or empty).
    fn message(&mut self, rec: &Record) -> bool {
        let s = &self.setup;
        self.msg.clear();
        self.json.clear();
        match &s.log_key {
            None => {
                write_json_map(&mut self.json, &rec.body, s.escape_unicode);
                if self.json.len() <= 2 {
                    crate::debug!("{} Found empty log message", s.who);
                    return false;
                }
                write_str_body(&mut self.msg, &self.json, s.escape_unicode);
            }
            Some(key) => {
                let Some((_, v)) = rec.body.iter().find(|(k, _)| &**k == key.as_str()) else {
                    crate::error!("{} Could not find log_key '{key}' in record", s.who);
                    return false;
                };
                match v {
                    Value::Str(t) => write_str_body(&mut self.msg, t.as_bytes(), s.escape_unicode),
                    Value::Bin(b) => write_str_body(&mut self.msg, b, s.escape_unicode),
                    other => {
                        write_json_value(&mut self.json, other, s.escape_unicode);
                        write_str_body(&mut self.msg, &self.json, s.escape_unicode);
                    }
                }
                if self.msg.is_empty() {
                    crate::debug!("{} Found empty log message", s.who);
                    return false;
                }
            }
        }
        if self.msg.len() > batch::MAX_EVENT_LEN {
            crate::warn!(
                "{} [size={}] Truncating event which is larger than max size allowed by CloudWatch",
                s.who,
                self.msg.len()
            );
        }
        true
    }

    /// Sends the batch (for `key`). `Err` stops the flush: the batch's records (and
    /// the rest of the chunk) are to be retried.
    async fn send(&mut self, key: &StreamKey, tally: &mut Tally) -> Result<(), String> {
        let setup = self.setup.clone();
        let (group, stream) = &**key;
        self.batch
            .payload(&escaped(group), &escaped(stream), &mut self.payload);
        let n = self.batch.events.len();
        crate::debug!(
            "{} cloudwatch:PutLogEvents: events={n}, payload={} bytes",
            setup.who,
            self.payload.len()
        );
        let body = Bytes::copy_from_slice(&self.payload);
        let mut recreated = false;
        loop {
            match setup
                .api
                .call("PutLogEvents", body.clone(), setup.logs_format.as_ref())
                .await
            {
                Outcome::Done(answer) => {
                    setup.remember(key);
                    let rejected = api::rejected_events(&answer, n);
                    if rejected > 0 {
                        crate::warn!(
                            "{} CloudWatch rejected {rejected} of {n} events (too old, too new or expired): dropped",
                            setup.who
                        );
                        tally.dropped += rejected as u64;
                    }
                    return Ok(());
                }
                Outcome::Refused(e, line)
                    if e.code == "ResourceNotFoundException" && !recreated =>
                {
                    crate::warn!("{} {line}: creating log stream {stream} again", setup.who);
                    setup.forget(key);
                    recreated = true;
                    match setup.create_stream(key).await {
                        Ok(()) => continue,
                        Err(StreamErr::Retry(why) | StreamErr::Refused(why)) => return Err(why),
                    }
                }
                Outcome::Refused(_, line) => {
                    crate::error!(
                        "{} {line}: {n} events refused by CloudWatch, dropped",
                        setup.who
                    );
                    tally.dropped += n as u64;
                    return Ok(());
                }
                Outcome::Retry(line) => {
                    crate::error!("{} {line}", setup.who);
                    crate::error!("{} Failed to send log events", setup.who);
                    return Err(line);
                }
            }
        }
    }

    /// A metrics chunk: its samples as EMF events, stamped now (Fluent Bit's). A retry
    /// sends the whole chunk again (its samples are not records the engine can pick).
    async fn run_metrics(&mut self, chunk: &Chunk) -> FlushResult {
        let mut records = Vec::new();
        let now = crate::event::EventTime::now();
        for set in &chunk.metrics {
            emf::records(set, now, &mut records);
        }
        match self.run(&chunk.tag, &records).await {
            FlushResult::Partial(p) if !p.retry.is_empty() => FlushResult::Retry(p.reason),
            other => other,
        }
    }

    async fn run(&mut self, tag: &str, records: &[Record]) -> FlushResult {
        let setup = self.setup.clone();
        let mut tally = Tally::default();
        let mut cur: Option<StreamKey> = None;
        let n = records.len();
        let mut stop = None;
        // The stream of the previous record, known to exist (without templates, every
        // record's: worked out once).
        let mut ready: Option<StreamKey> = None;
        // Streams CloudWatch refused to create in this flush (not asked again).
        let mut refused: Vec<StreamKey> = Vec::new();
        'records: for (i, rec) in records.iter().enumerate() {
            let key = match &ready {
                Some(k) if setup.fixed_stream() => k.clone(),
                _ => setup.stream_of(tag, rec),
            };
            if ready.as_ref() != Some(&key) {
                crate::debug!("{} Using stream={}, group={}", setup.who, key.1, key.0);
            }
            if refused.contains(&key) {
                tally.dropped += 1;
                continue;
            }
            if ready.as_ref() != Some(&key) && !setup.known(&key, Instant::now()) {
                match setup.create_stream(&key).await {
                    Ok(()) => {}
                    Err(StreamErr::Refused(_)) => {
                        tally.dropped += 1;
                        refused.push(key);
                        continue;
                    }
                    Err(StreamErr::Retry(why)) => {
                        stop = Some((i, why));
                        break;
                    }
                }
            }
            ready = Some(key.clone());
            if !self.message(rec) {
                tally.dropped += 1;
                continue;
            }
            let ts = (rec.time.secs.max(0) as u64) * 1000 + u64::from(rec.time.nanos / 1_000_000);
            if cur.as_ref() != Some(&key) && !self.batch.is_empty() {
                let prev = cur.take().expect("a batch has its stream");
                if let Err(why) = self.send(&prev, &mut tally).await {
                    stop = Some((i, why));
                    break;
                }
                self.batch.reset(0);
            }
            if self.batch.is_empty() {
                let names = escaped(&key.0).len() + escaped(&key.1).len();
                self.batch.reset(names);
                cur = Some(key.clone());
            }
            let msg = std::mem::take(&mut self.msg);
            loop {
                match self.batch.add(ts, &msg, i, setup.log_key.is_some()) {
                    Added::In(due) => {
                        if due {
                            if let Err(why) = self.send(&key, &mut tally).await {
                                self.msg = msg;
                                stop = Some((i + 1, why));
                                break 'records;
                            }
                            self.batch.reset(0);
                        }
                        break;
                    }
                    Added::SendFirst => {
                        if let Err(why) = self.send(&key, &mut tally).await {
                            self.msg = msg;
                            stop = Some((i, why));
                            break 'records;
                        }
                        let names = escaped(&key.0).len() + escaped(&key.1).len();
                        self.batch.reset(names);
                    }
                    Added::Discard => {
                        crate::warn!("{} Discarding massive log record", setup.who);
                        tally.dropped += 1;
                        break;
                    }
                }
            }
            self.msg = msg;
        }
        if stop.is_none() && !self.batch.is_empty() {
            let key = cur.take().expect("a batch has its stream");
            if let Err(why) = self.send(&key, &mut tally).await {
                stop = Some((n, why));
            }
        }
        if let Some((next, why)) = stop {
            tally
                .retry
                .extend(self.batch.events.iter().map(|e| e.record));
            tally.retry.extend(next..n);
            tally.retry.sort_unstable();
            tally.retry.dedup();
            tally.reason = why;
        }
        self.batch.reset(0);
        if tally.retry.is_empty() && tally.dropped == 0 {
            return FlushResult::Ok;
        }
        if tally.retry.len() == n && tally.dropped == 0 {
            return FlushResult::Retry(tally.reason);
        }
        FlushResult::Partial(Partial {
            retry: tally.retry,
            dropped: tally.dropped,
            after: None,
            reason: tally.reason,
        })
    }
}

impl Output for CloudwatchOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            if chunk.metrics.is_empty() {
                self.run(&chunk.tag, &chunk.records).await
            } else {
                self.run_metrics(chunk).await
            }
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(CloudwatchOutput {
            setup: self.setup.clone(),
            batch: Batch::new(),
            json: Vec::with_capacity(4096),
            msg: Vec::with_capacity(4096),
            payload: Vec::with_capacity(64 * 1024),
        })
    }

    fn signals(&self) -> Signals {
        Signals::LOGS_AND_METRICS
    }
}
