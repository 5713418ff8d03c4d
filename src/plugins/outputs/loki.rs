//! `loki` output: each flush's records POSTed to Loki's push API as JSON.
//! Fluent Bit: plugins/out_loki/loki.c, loki.h
//!
//! The body is Fluent Bit's, byte for byte:
//! `{"streams":[{"stream":{labels},"values":[["<ns>","<line>"(,{metadata})],...]}]}`.
//! With only static labels (`k=v`) the chunk is one stream; once a label or a
//! structured metadata entry reads the record (`k=$ra`, `$ra`, `label_keys`,
//! `label_map_path`, `structured_metadata_map_keys`) or `auto_kubernetes_labels` is on,
//! each record is its own stream, as Fluent Bit sends them (Loki groups streams by
//! their labels). A label that reads nothing (missing or empty) is left out; a stream
//! with no label at all gets `job=fluent-bit`.
//!
//! Label names from record accessors are the accessor's keys joined with `_`
//! (`$kubernetes['pod_name']` is `kubernetes_pod_name`) with every byte that is not
//! ASCII alphanumeric or `_` made `_`, and `_` before a leading digit; Kubernetes
//! labels and `structured_metadata_map_keys` names are normalised the same way. Names
//! written as `k=...` are kept as written.
//!
//! The line is the record as JSON (`line_format json`) or as Fluent Bit's `key=value`
//! text (`line_format key_value`), without `remove_keys` and without every key read by
//! a label or a structured metadata entry. `drop_single_key` on: a record left with one
//! key is that key's value (JSON-encoded; `raw`: a string as it is).
//!
//! `tenant_id` is `X-Scope-OrgID`; with `tenant_id_key` the chunk is one request per
//! tenant (the record's string value at that key, else `tenant_id`), in the order the
//! tenants first appear, and `tenant_id_key_error_handling` decides a chunk whose
//! requests partly failed.
//!
//! Statuses as Fluent Bit's loki: 200 to 205 deliver the chunk; 400 (Loki's answer to
//! a bad or out-of-order push) drops it, logged with the response body and counted;
//! every other status and connection failures retry it (waiting for `Retry-After`
//! when the server sends one).

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use super::pool_metrics;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::accessor::Accessor;
use crate::event::format::{write_double, write_json_str, write_json_value};
use crate::event::template::Template;
use crate::event::{Chunk, Map, Record, Value};
use crate::http_client::{self, Compression, HttpClient, HttpError, Reply};
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

const PROPS: &[PropSpec] = &[
    PropSpec::new("host", PropKind::Str, Some("127.0.0.1"), "Loki host name or IP address."),
    PropSpec::new("port", PropKind::Int, Some("3100"), "Loki TCP port."),
    PropSpec::new(
        "uri",
        PropKind::Str,
        Some("/loki/api/v1/push"),
        "Push API path; it must start with a slash.",
    ),
    PropSpec::new(
        "tenant_id",
        PropKind::Str,
        None,
        "Tenant ID sent as X-Scope-OrgID (none: Loki in single-tenant mode).",
    ),
    PropSpec::new(
        "tenant_id_key",
        PropKind::Str,
        None,
        "Record key whose string value is the X-Scope-OrgID (one request per tenant).",
    ),
    PropSpec::new(
        "tenant_id_key_error_handling",
        PropKind::Enum(&["partial_success", "partial_error"]),
        Some("partial_success"),
        "With tenant_id_key, a chunk whose requests partly failed: partial_success treats it as delivered, partial_error retries it.",
    ),
    PropSpec::new(
        "labels",
        PropKind::CList,
        None,
        "Stream labels: k=v, k=$record_accessor or $record_accessor (default job=fluent-bit).",
    ),
    PropSpec::new(
        "label_keys",
        PropKind::CList,
        None,
        "Record accessors ($key) whose values are stream labels.",
    ),
    PropSpec::new(
        "label_map_path",
        PropKind::Str,
        None,
        "A JSON file mapping record keys (nested as in the record) to label names.",
    ),
    PropSpec::new(
        "structured_metadata",
        PropKind::CList,
        None,
        "Structured metadata of each line: k=v, k=$record_accessor or $record_accessor.",
    ),
    PropSpec::new(
        "structured_metadata_map_keys",
        PropKind::CList,
        None,
        "Record accessors ($key) of maps whose entries become structured metadata.",
    ),
    PropSpec::new(
        "remove_keys",
        PropKind::CList,
        None,
        "Keys (or record accessors) left out of the line.",
    ),
    PropSpec::new(
        "drop_single_key",
        PropKind::Str,
        Some("off"),
        "A record with one key left is sent as that key's value: on, off or raw (a string unquoted).",
    ),
    PropSpec::new(
        "line_format",
        PropKind::Enum(&["json", "key_value"]),
        Some("json"),
        "The line: the record as JSON, or key=value pairs.",
    ),
    PropSpec::new(
        "auto_kubernetes_labels",
        PropKind::Bool,
        Some("false"),
        "Add every string label of $kubernetes['labels'] as a stream label.",
    ),
    http_client::HTTP_USER,
    http_client::HTTP_PASSWD,
    http_client::BEARER_TOKEN,
    http_client::HEADER,
    PropSpec::new(
        "compress",
        PropKind::Str,
        None,
        "Compress the payload: gzip.",
    ),
    PropSpec::new(
        "buffer_size",
        PropKind::Size,
        Some("512KB"),
        "Largest response body accepted; a larger one fails the request (0 = no limit).",
    ),
    http_client::PROXY,
    http_client::RESPONSE_TIMEOUT,
    http_client::READ_IDLE_TIMEOUT,
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "loki",
    description: "Loki",
    props: PROPS,
    workers: 1,
    net: true,
    build,
};

/// A label's or a structured metadata entry's value.
#[derive(Clone, Debug)]
enum Val {
    Static(String),
    /// `flb_ra_translate` of the record; left out when it gives nothing.
    Read(Template),
}

/// `name: value` in a label set or structured metadata.
#[derive(Clone, Debug)]
struct Pair {
    /// As written (`k=...`), or normalised (`$ra`).
    name: String,
    val: Val,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DropSingleKey {
    Off,
    On,
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineFormat {
    Json,
    KeyValue,
}

/// What every worker of the instance shares.
#[derive(Clone)]
struct Setup {
    client: HttpClient,
    uri: String,
    labels: Vec<Pair>,
    auto_kubernetes_labels: Option<Accessor>,
    metadata: Vec<Pair>,
    metadata_maps: Vec<Option<Accessor>>,
    /// `structured_metadata` or `structured_metadata_map_keys` set: values have a third
    /// element.
    has_metadata: bool,
    /// One stream per record (labels read the record).
    per_record: bool,
    /// Keys left out of lines: `remove_keys` and every key read by a label or a
    /// structured metadata entry (`None`: a pattern that names no record key).
    remove: Vec<Option<Accessor>>,
    drop_single_key: DropSingleKey,
    line_format: LineFormat,
    tenant_id: Option<String>,
    tenant_id_key: Option<Accessor>,
    partial_error: bool,
    compress: Option<Compression>,
    /// User-Agent, Authorization, `header`s, Content-Type (then Content-Encoding and
    /// X-Scope-OrgID per request).
    headers: Vec<(HeaderName, HeaderValue)>,
    buffer_size: u64,
    escape_unicode: bool,
    dest: String,
}

struct LokiOutput {
    setup: Setup,
    /// The request body, reused by every flush.
    body: Vec<u8>,
    /// A line or a JSON value before it is written as a JSON string.
    scratch: Vec<u8>,
    /// A label value or name.
    text: String,
    /// Removal targets of the current record: index paths, flat.
    paths: Vec<usize>,
    /// `(start, len)` of each target in `paths`.
    targets: Vec<(usize, usize)>,
    path: Vec<usize>,
}

fn clist_error(props: &Props, name: &str, entry: &str, what: &str) -> ConfigError {
    ConfigError::invalid(
        props.span_of(name),
        format!("{}: {name}: '{entry}': {what}", props.plugin()),
        Some(match name {
            "labels" | "structured_metadata" => {
                "write entries as key=value, key=$record['key'] or $record['key'], separated by commas".into()
            }
            _ => "write entries as $key or $key['sub'], separated by commas".into(),
        }),
    )
}

/// `$ra` label: its normalised name and its template.
fn accessor_pair(props: &Props, name: &str, entry: &str) -> Result<Pair, ConfigError> {
    if entry.as_bytes().get(1).is_some_and(u8::is_ascii_digit) {
        return Err(clist_error(
            props,
            name,
            entry,
            "a record accessor's key cannot start with a number",
        ));
    }
    let t = Template::parse(entry).map_err(|e| clist_error(props, name, entry, &e))?;
    Ok(Pair {
        name: label_name(&t.joined_name()),
        val: Val::Read(t),
    })
}

/// Fluent Bit's `pack_label_key`: `_` before a leading digit, `_` for every byte that
/// is not ASCII alphanumeric or `_`.
fn label_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    push_label_name(&mut out, raw);
    out
}

fn push_label_name(out: &mut String, raw: &str) {
    if raw.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        out.push('_');
    }
    for b in raw.bytes() {
        out.push(if b.is_ascii_alphanumeric() || b == b'_' {
            b as char
        } else {
            '_'
        });
    }
}

/// Reads `labels` or `structured_metadata` (Fluent Bit's `parse_kv`); every pattern
/// that reads the record goes to `derived` (keys removed from lines).
fn parse_pairs(
    props: &Props,
    name: &str,
    out: &mut Vec<Pair>,
    derived: &mut Vec<String>,
    reads: &mut usize,
) -> Result<(), ConfigError> {
    for entry in props.clist(name) {
        if entry.starts_with('$') {
            out.push(accessor_pair(props, name, &entry)?);
            derived.push(entry);
            *reads += 1;
            continue;
        }
        let Some((k, v)) = entry.split_once('=') else {
            return Err(clist_error(props, name, &entry, "not a key=value pair"));
        };
        if v.is_empty() {
            return Err(clist_error(props, name, &entry, "the value is empty"));
        }
        let val = if v.starts_with('$') {
            derived.push(v.to_string());
            *reads += 1;
            Val::Read(Template::parse(v).map_err(|e| clist_error(props, name, &entry, &e))?)
        } else {
            Val::Static(v.to_string())
        };
        out.push(Pair {
            name: k.to_string(),
            val,
        });
    }
    Ok(())
}

/// `label_map_path`: a JSON object whose string leaves are label names for the record
/// keys on their path (`{"kubernetes":{"pod_name":"pod"}}` is `pod=$kubernetes['pod_name']`).
fn label_map(
    props: &Props,
    ctx: &BuildContext,
    labels: &mut Vec<Pair>,
    derived: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(file) = props.str("label_map_path") else {
        return Ok(());
    };
    let bad = |what: String| {
        ConfigError::invalid(
            props.span_of("label_map_path"),
            format!("{}: label_map_path: {what}", props.plugin()),
            Some(
                "point it at a JSON object such as {\"kubernetes\": {\"pod_name\": \"pod\"}}"
                    .into(),
            ),
        )
    };
    let path = crate::config::resolve_path(file, ctx.main_dir)
        .map_err(|tried| bad(format!("no such file (tried {})", tried.join(", "))))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{} is not JSON: {e}", path.display())))?;
    let serde_json::Value::Object(top) = &json else {
        return Err(bad(format!("{} is not a JSON object", path.display())));
    };
    fn walk(
        keys: &mut Vec<String>,
        v: &serde_json::Value,
        labels: &mut Vec<Pair>,
        derived: &mut Vec<String>,
    ) -> Result<(), String> {
        match v {
            serde_json::Value::String(label) => {
                let mut ra = format!("${}", keys[0]);
                for k in &keys[1..] {
                    ra.push_str(&format!("['{k}']"));
                }
                let t = Template::parse(&ra).map_err(|e| format!("{ra}: {e}"))?;
                derived.push(ra);
                labels.push(Pair {
                    name: label.clone(),
                    val: Val::Read(t),
                });
                Ok(())
            }
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    keys.push(k.clone());
                    walk(keys, v, labels, derived)?;
                    keys.pop();
                }
                Ok(())
            }
            other => Err(format!(
                "the value at {} is {other}, not a label name or an object",
                keys.join(".")
            )),
        }
    }
    for (k, v) in top {
        walk(&mut vec![k.clone()], v, labels, derived).map_err(bad)?;
    }
    Ok(())
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let host = props.str("host").unwrap_or("127.0.0.1");
    let port = props
        .int("port")
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?;
    let uri = props.str("uri").unwrap_or("/loki/api/v1/push");
    if !uri.starts_with('/') || uri.parse::<hyper::Uri>().is_err() {
        return Err(props.error(
            "uri",
            "a request path starting with /, such as /loki/api/v1/push",
        ));
    }

    // Fluent Bit's order: structured metadata, its map keys, labels, label_keys,
    // label_map_path; the keys they read are removed from lines in that order.
    let mut derived = Vec::new();
    let mut reads = 0usize;
    let mut metadata = Vec::new();
    parse_pairs(
        props,
        "structured_metadata",
        &mut metadata,
        &mut derived,
        &mut reads,
    )?;
    let mut metadata_maps = Vec::new();
    for entry in props.clist("structured_metadata_map_keys") {
        if !entry.starts_with('$') {
            return Err(clist_error(
                props,
                "structured_metadata_map_keys",
                &entry,
                "the name must start with '$'",
            ));
        }
        let p = accessor_pair(props, "structured_metadata_map_keys", &entry)?;
        let Val::Read(t) = p.val else { unreachable!() };
        metadata_maps.push(t.first_record_key().cloned());
        derived.push(entry);
        reads += 1;
    }
    let mut labels = Vec::new();
    parse_pairs(props, "labels", &mut labels, &mut derived, &mut reads)?;
    for entry in props.clist("label_keys") {
        if !entry.starts_with('$') {
            return Err(clist_error(
                props,
                "label_keys",
                &entry,
                "the name must start with '$'",
            ));
        }
        labels.push(accessor_pair(props, "label_keys", &entry)?);
        derived.push(entry);
        reads += 1;
    }
    let before = labels.len();
    label_map(props, ctx, &mut labels, &mut derived)?;
    reads += labels.len() - before;
    for entry in props.clist("remove_keys") {
        let pattern = if entry.starts_with('$') {
            entry
        } else {
            format!("${entry}")
        };
        if !derived.contains(&pattern) {
            derived.push(pattern);
        }
    }
    let mut remove = Vec::with_capacity(derived.len());
    for pattern in &derived {
        let t =
            Template::parse(pattern).map_err(|e| clist_error(props, "remove_keys", pattern, &e))?;
        remove.push(t.first_record_key().cloned());
    }

    let auto_k8s = props.bool("auto_kubernetes_labels") == Some(true);
    let drop_single_key = match props.str("drop_single_key").unwrap_or("off") {
        v if v.eq_ignore_ascii_case("raw") => DropSingleKey::Raw,
        v => match crate::config::values::parse_bool(v) {
            Some(true) => DropSingleKey::On,
            Some(false) => DropSingleKey::Off,
            None => return Err(props.error("drop_single_key", "on, off or raw")),
        },
    };
    let line_format = match props.str("line_format") {
        Some(f) if f.eq_ignore_ascii_case("key_value") => LineFormat::KeyValue,
        _ => LineFormat::Json,
    };
    let tenant_id_key = match props.str("tenant_id_key") {
        Some(k) => Some(Accessor::parse(k).map_err(|e| props.error("tenant_id_key", e))?),
        None => None,
    };
    let compress = match props.str("compress") {
        None => None,
        Some(c) if c.eq_ignore_ascii_case("gzip") => Compression::parse("gzip"),
        Some(_) => {
            return Err(props.error(
                "compress",
                "gzip (the only compression Fluent Bit's loki output offers)",
            ))
        }
    };

    let mut headers = vec![(
        hyper::header::USER_AGENT,
        HeaderValue::from_static("Fluent-Bit"),
    )];
    if let Some(auth) = http_client::authorization(props, true)? {
        headers.push((hyper::header::AUTHORIZATION, auth));
    }
    headers.extend(http_client::headers_from_props(props)?);
    headers.push((
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    let tenant_id = props.str("tenant_id").map(str::to_string);
    if let Some(t) = &tenant_id {
        HeaderValue::from_str(t)
            .map_err(|_| props.error("tenant_id", "a tenant ID of printable characters"))?;
    }

    let client = HttpClient::from_props(props, host, port)?.with_metrics(pool_metrics(ctx));
    crate::info!("[output:loki] configured, hostname={host}:{port}");
    Ok(Box::new(LokiOutput::new(Setup {
        client,
        uri: uri.to_string(),
        has_metadata: !metadata.is_empty() || !metadata_maps.is_empty(),
        per_record: reads > 0 || auto_k8s,
        labels,
        auto_kubernetes_labels: auto_k8s
            .then(|| Accessor::parse("$kubernetes['labels']").expect("a valid accessor")),
        metadata,
        metadata_maps,
        remove,
        drop_single_key,
        line_format,
        tenant_id,
        tenant_id_key,
        partial_error: props
            .str("tenant_id_key_error_handling")
            .is_some_and(|v| v.eq_ignore_ascii_case("partial_error")),
        compress,
        headers,
        buffer_size: props.size("buffer_size").unwrap_or(0),
        escape_unicode: ctx.service.escape_unicode,
        dest: format!("{host}:{port}"),
    })))
}

/// What a request's status made of its records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ok,
    Retry,
    Error,
}

impl LokiOutput {
    fn new(setup: Setup) -> LokiOutput {
        LokiOutput {
            setup,
            body: Vec::with_capacity(64 * 1024),
            scratch: Vec::with_capacity(4096),
            text: String::with_capacity(256),
            paths: Vec::new(),
            targets: Vec::new(),
            path: Vec::new(),
        }
    }

    /// The push body for the records whose tenant is `tenant` (all records when
    /// `filter` is off).
    fn compose(&mut self, chunk: &Chunk, tenants: &[Option<&str>], filter: Option<Option<&str>>) {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        body.extend_from_slice(b"{\"streams\":[");
        let wanted = |i: usize| filter.is_none_or(|t| tenants.get(i).copied().flatten() == t);
        if !self.setup.per_record {
            body.extend_from_slice(b"{\"stream\":");
            self.write_labels(&mut body, &chunk.tag, None);
            body.extend_from_slice(b",\"values\":[");
            let mut first = true;
            for (i, rec) in chunk.records.iter().enumerate() {
                if !wanted(i) {
                    continue;
                }
                if !first {
                    body.push(b',');
                }
                first = false;
                self.write_entry(&mut body, &chunk.tag, rec, false);
            }
            body.extend_from_slice(b"]}");
        } else {
            let mut first = true;
            for (i, rec) in chunk.records.iter().enumerate() {
                if !wanted(i) {
                    continue;
                }
                if !first {
                    body.push(b',');
                }
                first = false;
                body.extend_from_slice(b"{\"stream\":");
                self.write_labels(&mut body, &chunk.tag, Some(&rec.body));
                body.extend_from_slice(b",\"values\":[");
                self.write_entry(&mut body, &chunk.tag, rec, true);
                body.extend_from_slice(b"]}");
            }
        }
        body.extend_from_slice(b"]}");
        self.body = body;
    }

    /// `{labels}`: the configured ones that give a value, then Kubernetes labels, else
    /// `job=fluent-bit`.
    fn write_labels(&mut self, out: &mut Vec<u8>, tag: &str, body: Option<&Map>) {
        out.push(b'{');
        let mut n = self.write_pairs(out, tag, body, true, 0);
        if let (Some(ra), Some(body)) = (&self.setup.auto_kubernetes_labels, body) {
            if let Some(Value::Map(m)) = ra.ra_value(body) {
                for (k, v) in m {
                    let Value::Str(v) = v else { continue };
                    if n > 0 {
                        out.push(b',');
                    }
                    n += 1;
                    self.text.clear();
                    push_label_name(&mut self.text, k);
                    write_json_str(out, self.text.as_bytes(), self.setup.escape_unicode);
                    out.push(b':');
                    write_json_str(out, v.as_bytes(), self.setup.escape_unicode);
                }
            }
        }
        if n == 0 {
            out.extend_from_slice(b"\"job\":\"fluent-bit\"");
        }
        out.push(b'}');
    }

    /// Labels (or structured metadata) entries after `n` entries already written,
    /// comma-separated; returns how many entries there are now.
    fn write_pairs(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        body: Option<&Map>,
        labels: bool,
        mut n: usize,
    ) -> usize {
        let esc = self.setup.escape_unicode;
        let pairs = if labels {
            &self.setup.labels
        } else {
            &self.setup.metadata
        };
        for p in pairs {
            let value: &str = match &p.val {
                Val::Static(s) => s,
                Val::Read(t) => {
                    let Some(body) = body else { continue };
                    self.text.clear();
                    t.render_into(&mut self.text, tag, body, "", &[]);
                    if self.text.is_empty() {
                        continue;
                    }
                    &self.text
                }
            };
            if n > 0 {
                out.push(b',');
            }
            n += 1;
            write_json_str(out, p.name.as_bytes(), esc);
            out.push(b':');
            write_json_str(out, value.as_bytes(), esc);
        }
        n
    }

    /// `["<ns>","<line>"(,{metadata})]`.
    fn write_entry(&mut self, out: &mut Vec<u8>, tag: &str, rec: &Record, per_record: bool) {
        let esc = self.setup.escape_unicode;
        let ns = (rec.time.secs as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(u64::from(rec.time.nanos));
        out.extend_from_slice(b"[\"");
        out.extend_from_slice(itoa::Buffer::new().format(ns).as_bytes());
        out.extend_from_slice(b"\",");
        self.find_targets(&rec.body);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        match self.render_line(&mut scratch, &rec.body) {
            Line::Scratch => write_json_str(out, &scratch, esc),
            Line::Raw(s) => write_json_str(out, s.as_bytes(), esc),
        }
        self.scratch = scratch;
        if self.setup.has_metadata {
            out.extend_from_slice(b",{");
            let body = per_record.then_some(&rec.body);
            let mut n = 0;
            if let Some(body) = body {
                n = self.write_metadata_maps(out, body);
            }
            // Explicit entries come after (and so override) the map keys' entries.
            self.write_pairs(out, tag, body, false, n);
            out.push(b'}');
        }
        out.push(b']');
    }

    /// `structured_metadata_map_keys`: each entry of each map, string values as they
    /// are and others as JSON.
    fn write_metadata_maps(&mut self, out: &mut Vec<u8>, body: &Map) -> usize {
        let esc = self.setup.escape_unicode;
        let mut n = 0;
        for ra in self.setup.metadata_maps.iter().flatten() {
            let Some(_) = ra.kv_pair_path(body, &mut self.path) else {
                continue;
            };
            let Some(Value::Map(m)) = Accessor::at_path(body, &self.path) else {
                continue;
            };
            for (k, v) in m {
                if n > 0 {
                    out.push(b',');
                }
                n += 1;
                self.text.clear();
                push_label_name(&mut self.text, k);
                write_json_str(out, self.text.as_bytes(), esc);
                out.push(b':');
                match v {
                    Value::Str(s) => write_json_str(out, s.as_bytes(), esc),
                    other => {
                        self.scratch.clear();
                        write_json_value(&mut self.scratch, other, esc);
                        write_json_str(out, &self.scratch, esc);
                    }
                }
            }
        }
        n
    }

    /// The removal targets of `body` (Fluent Bit's `flb_mp_accessor_keys_remove`):
    /// map entries only (a pattern ending at an array element removes nothing).
    fn find_targets(&mut self, body: &Map) {
        self.paths.clear();
        self.targets.clear();
        for ra in self.setup.remove.iter().flatten() {
            if ra.kv_pair_path(body, &mut self.path) == Some(true) {
                self.targets.push((self.paths.len(), self.path.len()));
                self.paths.extend_from_slice(&self.path);
            }
        }
    }

    fn render_line<'r>(&mut self, out: &mut Vec<u8>, body: &'r Map) -> Line<'r> {
        let t = Targets {
            paths: &self.paths,
            targets: &self.targets,
        };
        let esc = self.setup.escape_unicode;
        let mut prefix = std::mem::take(&mut self.path);
        prefix.clear();
        let line = self.line(out, body, &t, &mut prefix, esc);
        self.path = prefix;
        line
    }

    fn line<'r>(
        &self,
        out: &mut Vec<u8>,
        body: &'r Map,
        t: &Targets,
        prefix: &mut Vec<usize>,
        esc: bool,
    ) -> Line<'r> {
        if self.setup.drop_single_key != DropSingleKey::Off {
            let mut kept = (0..body.len()).filter(|&i| !t.removed_top(i));
            if let (Some(i), None) = (kept.next(), kept.next()) {
                let v = &body[i].1;
                prefix.push(i);
                match (self.setup.line_format, v) {
                    (LineFormat::Json, Value::Str(s))
                        if self.setup.drop_single_key == DropSingleKey::Raw =>
                    {
                        return Line::Raw(s)
                    }
                    (LineFormat::Json, _) => json_value(out, v, t, prefix, esc),
                    (LineFormat::KeyValue, Value::Str(s)) => return Line::Raw(s),
                    (LineFormat::KeyValue, _) => kv_value(out, v, t, prefix),
                }
                return Line::Scratch;
            }
        }
        match self.setup.line_format {
            LineFormat::Json => json_map(out, body, t, prefix, esc),
            LineFormat::KeyValue => kv_pairs(out, body, b'=', t, prefix),
        }
        Line::Scratch
    }

    /// Sends one body; what its status makes of the records.
    async fn send(&self, tenant: Option<&str>) -> (Sent, String, Option<std::time::Duration>) {
        let s = &self.setup;
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(s.headers.len() + 2);
        headers.extend(s.headers.iter().cloned());
        let body = match s.compress.map(|c| (c, c.compress(&self.body))) {
            Some((c, Ok(z))) => {
                headers.push((
                    hyper::header::CONTENT_ENCODING,
                    HeaderValue::from_static(c.encoding()),
                ));
                Bytes::from(z)
            }
            Some((_, Err(e))) => {
                crate::error!("[output:loki] cannot gzip payload, disabling compression: {e}");
                Bytes::copy_from_slice(&self.body)
            }
            None => Bytes::copy_from_slice(&self.body),
        };
        if let Some(t) = tenant {
            match HeaderValue::from_str(t) {
                Ok(v) => headers.push((HeaderName::from_static("x-scope-orgid"), v)),
                Err(_) => {
                    return (
                        Sent::Error,
                        format!("tenant ID '{t}' cannot be an X-Scope-OrgID header value"),
                        None,
                    )
                }
            }
        }
        match s.client.send(Method::POST, &s.uri, &headers, body).await {
            Ok(reply) => self.judge(&reply),
            Err(e) => (Sent::Retry, describe(&s.dest, &e), None),
        }
    }

    /// Fluent Bit's loki reading of a status: 400 is not retried, every other status
    /// outside 200..=205 is.
    fn judge(&self, reply: &Reply) -> (Sent, String, Option<std::time::Duration>) {
        let dest = &self.setup.dest;
        let status = reply.status.as_u16();
        let with_body = |line: String| {
            if reply.body.is_empty() {
                line
            } else {
                format!("{line}\n{}", reply.body_text())
            }
        };
        if self.setup.buffer_size > 0 && reply.body.len() as u64 > self.setup.buffer_size {
            return (
                Sent::Retry,
                format!(
                    "could not flush records to {dest}: the response ({} bytes) is larger than buffer_size ({})",
                    reply.body.len(),
                    self.setup.buffer_size
                ),
                None,
            );
        }
        match status {
            200..=205 => {
                crate::debug!(
                    "[output:loki] {}",
                    with_body(format!("{dest}, HTTP status={status}"))
                );
                (Sent::Ok, String::new(), None)
            }
            400 => (
                Sent::Error,
                with_body(format!("{dest}, HTTP status=400 Not retrying.")),
                None,
            ),
            500..=599 => (
                Sent::Retry,
                with_body(format!(
                    "could not flush records to {dest} HTTP status={status}"
                )),
                reply.retry_after(),
            ),
            _ => (
                Sent::Retry,
                with_body(format!("{dest}, HTTP status={status}")),
                reply.retry_after(),
            ),
        }
    }
}

fn describe(dest: &str, e: &HttpError) -> String {
    format!("could not flush records to {dest}: {e}")
}

/// Where a line ended up.
enum Line<'r> {
    /// In the scratch buffer.
    Scratch,
    /// A string of the record, as it is.
    Raw(&'r str),
}

/// The removal targets of one record.
struct Targets<'a> {
    paths: &'a [usize],
    targets: &'a [(usize, usize)],
}

#[derive(PartialEq, Eq)]
enum Status {
    Removed,
    /// Something under it is removed.
    Descend,
    Whole,
}

impl Targets<'_> {
    fn status(&self, prefix: &[usize]) -> Status {
        let mut st = Status::Whole;
        for &(start, len) in self.targets {
            let p = &self.paths[start..start + len];
            if p == prefix {
                return Status::Removed;
            }
            if p.len() > prefix.len() && p.starts_with(prefix) {
                st = Status::Descend;
            }
        }
        st
    }

    fn removed_top(&self, i: usize) -> bool {
        self.targets
            .iter()
            .any(|&(start, len)| len == 1 && self.paths[start] == i)
    }
}

/// A map as JSON without the removed entries (`prefix` is the map's own path).
fn json_map(out: &mut Vec<u8>, m: &Map, t: &Targets, prefix: &mut Vec<usize>, esc: bool) {
    out.push(b'{');
    let mut first = true;
    for (i, (k, v)) in m.iter().enumerate() {
        prefix.push(i);
        if t.status(prefix) != Status::Removed {
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_str(out, k.as_bytes(), esc);
            out.push(b':');
            json_value(out, v, t, prefix, esc);
        }
        prefix.pop();
    }
    out.push(b'}');
}

/// A value as JSON, descending only where something under it is removed.
fn json_value(out: &mut Vec<u8>, v: &Value, t: &Targets, prefix: &mut Vec<usize>, esc: bool) {
    if t.targets.is_empty() || t.status(prefix) != Status::Descend {
        write_json_value(out, v, esc);
        return;
    }
    match v {
        Value::Map(m) => json_map(out, m, t, prefix, esc),
        Value::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                prefix.push(i);
                json_value(out, item, t, prefix, esc);
                prefix.pop();
            }
            out.push(b']');
        }
        other => write_json_value(out, other, esc),
    }
}

/// Fluent Bit's `pack_format_line_value`: strings quoted (not escaped), arrays as
/// `"[a b]"`, maps as `"map[k:v ...]"`, floats `%.1f` when integral else `%.16g`;
/// binaries give nothing.
/// `k<sep>v` pairs of a map, space-separated, leaving out removed keys: the line's
/// top level (`=`) and nested maps (`:`) of `line_format key_value`.
fn kv_pairs(out: &mut Vec<u8>, m: &Map, sep: u8, t: &Targets, prefix: &mut Vec<usize>) {
    let mut first = true;
    for (i, (k, v)) in m.iter().enumerate() {
        prefix.push(i);
        if t.status(prefix) != Status::Removed {
            if !first {
                out.push(b' ');
            }
            first = false;
            out.extend_from_slice(k.as_bytes());
            out.push(sep);
            kv_value(out, v, t, prefix);
        }
        prefix.pop();
    }
}

fn kv_value(out: &mut Vec<u8>, v: &Value, t: &Targets, prefix: &mut Vec<usize>) {
    match v {
        Value::Str(s) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        Value::Float(f) if f.is_nan() => out.extend_from_slice(if f.is_sign_negative() {
            b"-nan"
        } else {
            b"nan"
        }),
        Value::Float(f) if f.is_infinite() => {
            out.extend_from_slice(if *f < 0.0 { b"-inf" } else { b"inf" })
        }
        Value::Float(f) => write_double(out, *f),
        Value::Bin(_) => {}
        Value::Array(a) => {
            out.extend_from_slice(b"\"[");
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                prefix.push(i);
                kv_value(out, item, t, prefix);
                prefix.pop();
            }
            out.extend_from_slice(b"]\"");
        }
        Value::Map(m) => {
            out.extend_from_slice(b"\"map[");
            kv_pairs(out, m, b':', t, prefix);
            out.extend_from_slice(b"]\"");
        }
    }
}

impl Output for LokiOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            let default = self.setup.tenant_id.clone();
            let Some(key) = self.setup.tenant_id_key.clone() else {
                self.compose(chunk, &[], None);
                let (sent, msg, after) = self.send(default.as_deref()).await;
                return result(sent, msg, after);
            };
            // One request per tenant, in the order tenants first appear.
            let mut missing = 0usize;
            let tenants: Vec<Option<&str>> = chunk
                .records
                .iter()
                .map(|r| match key.ra_value(&r.body) {
                    Some(Value::Str(s)) => Some(&**s),
                    _ => {
                        missing += 1;
                        default.as_deref()
                    }
                })
                .collect();
            if missing > 0 {
                crate::warn!(
                    "[output:loki] {missing} records without a string tenant_id_key value: {}",
                    match &default {
                        Some(t) => format!("sent with tenant_id {t}"),
                        None => "sent without X-Scope-OrgID".into(),
                    }
                );
            }
            let mut groups: Vec<Option<&str>> = Vec::new();
            for t in &tenants {
                if !groups.contains(t) {
                    groups.push(*t);
                }
            }
            let (mut ok, mut retry, mut error) = (false, false, false);
            let mut msgs = Vec::new();
            let mut wait = None;
            for g in groups {
                self.compose(chunk, &tenants, Some(g));
                let (sent, msg, after) = self.send(g).await;
                match sent {
                    Sent::Ok => ok = true,
                    Sent::Retry => retry = true,
                    Sent::Error => error = true,
                }
                if sent != Sent::Ok {
                    let n = tenants.iter().filter(|t| **t == g).count();
                    msgs.push(format!(
                        "tenant {}: {n} records: {msg}",
                        g.unwrap_or("(none)")
                    ));
                    wait = wait.max(after);
                }
            }
            let msg = msgs.join("; ");
            if !ok {
                return result(if retry { Sent::Retry } else { Sent::Error }, msg, wait);
            }
            if !retry && !error {
                return FlushResult::Ok;
            }
            if self.setup.partial_error {
                return result(Sent::Retry, msg, wait);
            }
            crate::error!(
                "[output:loki] tenant_id_key_error_handling partial_success: the chunk counts as delivered, these were not: {msg}"
            );
            FlushResult::Ok
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(LokiOutput::new(self.setup.clone()))
    }
}

fn result(sent: Sent, msg: String, after: Option<std::time::Duration>) -> FlushResult {
    match (sent, after) {
        (Sent::Ok, _) => FlushResult::Ok,
        (Sent::Error, _) => FlushResult::Error(msg),
        (Sent::Retry, Some(a)) => FlushResult::RetryAfter(a, msg),
        (Sent::Retry, None) => FlushResult::Retry(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_as_fluent_bit_packs_them() {
        assert_eq!(label_name("kubernetes_pod_name"), "kubernetes_pod_name");
        assert_eq!(label_name("tier.name"), "tier_name");
        assert_eq!(label_name("9lives"), "_9lives");
        assert_eq!(
            label_name("app.kubernetes.io/name"),
            "app_kubernetes_io_name"
        );
        assert_eq!(label_name("é"), "__");
        let t = Template::parse("$kubernetes['labels']['app']").unwrap();
        assert_eq!(t.joined_name(), "kubernetes_labels_app");
    }

    fn kv(v: Value) -> String {
        let t = Targets {
            paths: &[],
            targets: &[],
        };
        let mut out = Vec::new();
        kv_value(&mut out, &v, &t, &mut Vec::new());
        String::from_utf8(out).unwrap()
    }

    /// `pack_format_line_value`: `%.1f` for integral floats, `%.16g` otherwise (C's
    /// printf spellings of NaN and infinities), nested values quoted but not escaped.
    #[test]
    fn key_value_rendering() {
        assert_eq!(kv(Value::Float(3.0)), "3.0");
        assert_eq!(kv(Value::Float(-0.5)), "-0.5");
        assert_eq!(kv(Value::Float(0.1)), "0.1");
        assert_eq!(kv(Value::Float(1e20)), "1e+20");
        assert_eq!(kv(Value::Float(1.0 / 3.0)), "0.3333333333333333");
        assert_eq!(kv(Value::Float(f64::NAN)), "nan");
        assert_eq!(kv(Value::Float(f64::NEG_INFINITY)), "-inf");
        assert_eq!(kv(Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(kv(Value::Bin(std::sync::Arc::from(&b"x"[..]))), "");
        let s = |x: &str| Value::Str(std::sync::Arc::from(x));
        assert_eq!(
            kv(Value::Array(vec![
                s("a\"b"),
                Value::Nil,
                Value::Map(vec![(std::sync::Arc::from("k"), Value::Bool(false))])
            ])),
            "\"[\"a\"b\" null \"map[k:false]\"]\""
        );
    }
}
