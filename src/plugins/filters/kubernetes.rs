//! `kubernetes` filter: names each container log record with its pod's metadata (pod,
//! namespace, labels, annotations, node, IP, container id and image), merges the JSON
//! (or parsed) text of `log` into the record, and honours the pods' `fluentbit.io/parser`
//! and `fluentbit.io/exclude` annotations. The metadata comes from the node-local cache
//! in src/kubernetes/.
//! Fluent Bit: plugins/filter_kubernetes/{kubernetes,kube_conf,kube_meta,kube_property}.c

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Map, Record, Str, Value};
use crate::kubernetes::{ClientConf, KubeMeta, MetaConfig, Namespace, Pod, Source, Stats};
use crate::parser::regex::OnigRegex;
use crate::parser::Parser;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

use crate::kubernetes::client::{parse_url, KUBE_CA, KUBE_TOKEN};
const KUBE_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Fluent Bit's KUBE_TAG_TO_REGEX: `<pod>_<namespace>_<container>-<64 hex id>.log`.
const TAG_REGEX: &str = r"(?<pod_name>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*)_(?<namespace_name>[^_]+)_(?<container_name>.+)-(?<docker_id>[a-z0-9]{64})\.log$";
/// Fluent Bit's KUBE_JOURNAL_TO_REGEX, matched against `CONTAINER_NAME`.
const JOURNAL_REGEX: &str = r"^(?<name_prefix>[^_]+)_(?<container_name>[^\._]+)(\.(?<container_hash>[^_]+))?_(?<pod_name>[^_]+)_(?<namespace_name>[^_]+)_[^_]+_[^_]+$";

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("buffer_size", PropKind::Size, Some("32K"), "Largest API server response (one pod, one watch event) accepted; 0 = no limit."),
    PropSpec::new("tls.debug", PropKind::Int, Some("0"), "TLS debug level, 0 to 4 (agent logs TLS errors at any level)."),
    PropSpec::new("tls.verify", PropKind::Bool, Some("true"), "Verify the API server's certificate chain."),
    PropSpec::new("tls.vhost", PropKind::Str, None, "Server name sent (SNI) and verified, instead of kube_url's host."),
    PropSpec::new("tls.verify_hostname", PropKind::Bool, Some("off"), "Also check that the certificate names the host."),
    PropSpec::new("merge_log", PropKind::Bool, Some("false"), "Merge the JSON (or merge_parser) content of 'log' into the record."),
    PropSpec::new("merge_parser", PropKind::Str, None, "A [PARSER] for the 'log' content instead of JSON."),
    PropSpec::new("merge_log_key", PropKind::Str, None, "Put the merged keys under this key instead of the record's top level."),
    PropSpec::new("merge_log_trim", PropKind::Bool, Some("true"), "Remove trailing newlines (and '\\n' '\\r' escapes) from merged string values."),
    PropSpec::new("keep_log", PropKind::Bool, Some("true"), "Keep 'log' after its content was merged."),
    PropSpec::new("kube_url", PropKind::Str, Some("https://kubernetes.default.svc"), "Kubernetes API server URL."),
    PropSpec::new("kube_meta_preload_cache_dir", PropKind::Str, None, "Directory of <namespace>_<pod>.meta (and <namespace>.namespace_meta) JSON files, read before the API."),
    PropSpec::new("kube_ca_file", PropKind::Str, Some(KUBE_CA), "CA certificate file of the API server."),
    PropSpec::new("kube_ca_path", PropKind::Str, None, "Directory of CA certificates."),
    PropSpec::new("kube_tag_prefix", PropKind::Str, Some("kube.var.log.containers."), "Tag prefix before the log file name (tail's tag)."),
    PropSpec::new("kube_namespace_file", PropKind::Str, Some(KUBE_NAMESPACE), "The agent's own namespace: when it exists, connectivity is tested at start."),
    PropSpec::new("kube_token_file", PropKind::Str, Some(KUBE_TOKEN), "Bearer token file, read again every kube_token_ttl and after a 401."),
    PropSpec::new("kube_token_command", PropKind::Str, None, "Command (run by sh -c) printing the token, run again every kube_token_ttl and after a 401; used instead of kube_token_file."),
    PropSpec::new("labels", PropKind::Bool, Some("true"), "Include the pod's labels."),
    PropSpec::new("annotations", PropKind::Bool, Some("true"), "Include the pod's annotations."),
    PropSpec::new("owner_references", PropKind::Bool, Some("false"), "Include the pod's ownerReferences."),
    PropSpec::new("namespace_labels", PropKind::Bool, Some("false"), "Add kubernetes_namespace with the namespace's labels."),
    PropSpec::new("namespace_annotations", PropKind::Bool, Some("false"), "Add kubernetes_namespace with the namespace's annotations."),
    PropSpec::new("namespace_metadata_only", PropKind::Bool, Some("false"), "Add only the namespace's metadata, no pod metadata."),
    PropSpec::new("k8s-logging.parser", PropKind::Bool, Some("false"), "Let pods name a parser with the fluentbit.io/parser annotation."),
    PropSpec::new("k8s-logging.exclude", PropKind::Bool, Some("false"), "Let pods exclude their logs with the fluentbit.io/exclude annotation."),
    PropSpec::new("use_journal", PropKind::Bool, Some("false"), "Records come from journald: names are read from CONTAINER_NAME."),
    PropSpec::new("regex_parser", PropKind::Str, None, "A regex [PARSER] reading pod_name, namespace_name, container_name, docker_id from the tag."),
    PropSpec::new("dummy_meta", PropKind::Bool, Some("false"), "Add {\"dummy\": <time>} instead of real metadata (tests only)."),
    PropSpec::new("dns_retries", PropKind::Int, Some("6"), "Times an unresolvable API host is tried again, dns_wait_time apart, before backing off."),
    PropSpec::new("dns_wait_time", PropKind::Time, Some("30"), "Wait between those DNS retries."),
    PropSpec::new("cache_use_docker_id", PropKind::Bool, Some("false"), "Fetch a pod again when the tag names a container id it does not know."),
    PropSpec::new("use_tag_for_meta", PropKind::Bool, Some("false"), "Only the tag's names, no API server."),
    PropSpec::new("use_kubelet", PropKind::Bool, Some("false"), "Read pods from the kubelet's /pods instead of the API server."),
    PropSpec::new("kubelet_host", PropKind::Str, Some("127.0.0.1"), "Kubelet host (use_kubelet)."),
    PropSpec::new("kubelet_port", PropKind::Int, Some("10250"), "Kubelet port (use_kubelet)."),
    PropSpec::new("kube_token_ttl", PropKind::Time, Some("10m"), "How long a token read from kube_token_file is used."),
    PropSpec::new("kube_meta_cache_ttl", PropKind::Time, Some("0"), "Fetched pods are fetched again after this; 0 = kept (watched pods are always current)."),
    PropSpec::new("kube_meta_namespace_cache_ttl", PropKind::Time, Some("15m"), "Fetched namespaces are fetched again after this; 0 = kept."),
    PropSpec::new("aws_use_pod_association", PropKind::Bool, Some("false"), "AWS pod to service association (not supported yet by agent)."),
    PropSpec::new("use_pod_association", PropKind::Bool, Some("false"), "Old name of aws_use_pod_association (not supported yet by agent)."),
    PropSpec::new("aws_pod_association_host", PropKind::Str, Some("cloudwatch-agent.amazon-cloudwatch"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_association_endpoint", PropKind::Str, Some("/kubernetes/pod-to-service-env-map"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_association_port", PropKind::Int, Some("4311"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_service_map_ttl", PropKind::Int, Some("0"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_service_map_refresh_interval", PropKind::Int, Some("60"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_service_preload_cache_dir", PropKind::Str, None, "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_association_host_server_ca_file", PropKind::Str, Some("/etc/amazon-cloudwatch-observability-agent-server-cert/tls-ca.crt"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_association_host_client_cert_file", PropKind::Str, Some("/etc/amazon-cloudwatch-observability-agent-client-cert/client.crt"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_association_host_client_key_file", PropKind::Str, Some("/etc/amazon-cloudwatch-observability-agent-client-cert/client.key"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_association_host_tls_debug", PropKind::Int, Some("0"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("aws_pod_association_host_tls_verify", PropKind::Bool, Some("true"), "AWS pod association (not supported yet by agent)."),
    PropSpec::new("set_platform", PropKind::Str, None, "AWS platform name (not supported yet by agent)."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "kubernetes",
    description: "Filter to append Kubernetes metadata",
    props: PROPS,
    build,
};

/// How long a record waits for the first lookup of its pod before it passes with the
/// tag's names (Fluent Bit waits for its blocking GET, without a limit).
const LOOKUP_WAIT: Duration = Duration::from_secs(3);
/// Most pods and namespaces kept by the cache (see src/kubernetes/mod.rs).
const MAX_PODS: usize = 4096;
const MAX_NAMESPACES: usize = 1024;
/// Rendered metadata kept by the filter (per pod and container); cleared when full.
const MAX_RENDERED: usize = 8192;

/// The names read from a tag (or a journald CONTAINER_NAME).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct TagMeta {
    pod_name: Option<Str>,
    namespace: Option<Str>,
    container_name: Option<Str>,
    docker_id: Option<Str>,
    container_hash: Option<Str>,
}

/// What a pod's `fluentbit.io/*` annotations ask for, per stream.
#[derive(Debug, Clone, Default)]
struct AnnotationProps {
    stdout_parser: Option<Arc<Parser>>,
    stderr_parser: Option<Arc<Parser>>,
    stdout_exclude: bool,
    stderr_exclude: bool,
}

/// The `kubernetes` value for one pod and container, and its annotation properties.
struct Rendered {
    /// Which pod it was rendered from (the cache gives a new `Arc` when it changes).
    pod: Option<Arc<Pod>>,
    ns: Option<Arc<Namespace>>,
    kube: Option<Value>,
    namespace: Option<Value>,
    props: AnnotationProps,
}

/// The regex that reads names from the tag: Fluent Bit's, or `regex_parser`'s.
enum TagRegex {
    Own(Box<OnigRegex>),
    Parser(Arc<Parser>),
}

impl TagRegex {
    fn get(&self) -> &OnigRegex {
        match self {
            TagRegex::Own(r) => r,
            TagRegex::Parser(p) => p.regex().expect("checked at build: a regex parser"),
        }
    }
}

enum MetaMode {
    /// `{"dummy": <asctime>}`.
    Dummy,
    /// The tag's names only.
    TagOnly,
    Cache(KubeMeta),
}

struct KubernetesFilter {
    name: String,
    mode: MetaMode,
    regex: TagRegex,
    use_journal: bool,
    tag_prefix: String,
    merge_log: bool,
    merge_parser: Option<Arc<Parser>>,
    merge_log_key: Option<Str>,
    merge_log_trim: bool,
    keep_log: bool,
    labels: bool,
    annotations: bool,
    owner_references: bool,
    namespace_meta: bool,
    namespace_labels: bool,
    namespace_annotations: bool,
    namespace_only: bool,
    allow_parser: bool,
    allow_exclude: bool,
    cache_use_docker_id: bool,
    /// Every parser by name, for `fluentbit.io/parser` (with `k8s-logging.parser`).
    parsers: HashMap<String, Arc<Parser>>,
    rendered: HashMap<TagMeta, Arc<Rendered>>,
    /// Whether the cache's watch was started (at the first records).
    started: bool,
    /// `kube_namespace_file`: the agent's own namespace, for the start-up test.
    namespace_file: Option<PathBuf>,
    use_kubelet: bool,
    bad_tags: AtomicU64,
    last_bad_tag_log: Option<Instant>,
}

const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "aws_use_pod_association",
        "remove it: the AWS pod to service association is not built",
    ),
    (
        "use_pod_association",
        "remove it: the AWS pod to service association is not built",
    ),
    (
        "set_platform",
        "remove it: it only serves the AWS pod association",
    ),
];

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    for (name, fix) in UNSUPPORTED {
        let set = match *name {
            "set_platform" => props.is_set(name),
            _ => props.bool(name) == Some(true),
        };
        if set {
            return Err(ConfigError::Invalid {
                span: props.span_of(name).clone(),
                message: format!(
                    "[config] kubernetes: property '{name}' is not supported yet by agent"
                ),
                hint: Some((*fix).to_string()),
            });
        }
    }
    if let Some(name) = PROPS
        .iter()
        .map(|s| s.name)
        .find(|n| n.starts_with("aws_pod_") && props.is_set(n))
    {
        return Err(ConfigError::Invalid {
            span: props.span_of(name).clone(),
            message: format!(
                "[config] kubernetes: property '{name}' is not supported yet by agent"
            ),
            hint: Some("remove it: the AWS pod to service association is not built".into()),
        });
    }
    let bool_of = |n: &str| props.bool(n).unwrap_or(false);
    let use_journal = bool_of("use_journal");
    let regex = match props.str("regex_parser") {
        Some(name) => {
            let p = ctx.parsers.parser(name).ok_or_else(|| {
                ctx.parsers.unknown(
                    props.span_of("regex_parser"),
                    "parser",
                    name,
                    ctx.parsers.parser_names(),
                )
            })?;
            if p.regex().is_none() {
                return Err(props.error("regex_parser", "a parser of 'format regex'"));
            }
            TagRegex::Parser(p)
        }
        None => {
            let re = if use_journal {
                JOURNAL_REGEX
            } else {
                TAG_REGEX
            };
            TagRegex::Own(Box::new(
                OnigRegex::new(re).expect("Fluent Bit's tag regex compiles"),
            ))
        }
    };
    let merge_parser = match props.str("merge_parser") {
        Some(name) => Some(ctx.parsers.parser(name).ok_or_else(|| {
            ctx.parsers.unknown(
                props.span_of("merge_parser"),
                "parser",
                name,
                ctx.parsers.parser_names(),
            )
        })?),
        None => None,
    };
    let allow_parser = bool_of("k8s-logging.parser");
    let parsers = if allow_parser {
        ctx.parsers
            .parser_names()
            .filter_map(|n| ctx.parsers.parser(n).map(|p| (n.to_string(), p)))
            .collect()
    } else {
        HashMap::new()
    };
    let tls_debug = props.int("tls.debug").unwrap_or(0);
    if !(0..=4).contains(&tls_debug) {
        return Err(props.error("tls.debug", "a level from 0 to 4"));
    }
    let dns_retries = props.int("dns_retries").unwrap_or(6);
    if dns_retries < 0 {
        return Err(props.error("dns_retries", "0 or more"));
    }
    let port = |n: &str| -> Result<u16, ConfigError> {
        props
            .int(n)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| props.error(n, "a TCP port from 1 to 65535"))
    };
    let ttl = |n: &str| props.time(n).filter(|d| !d.is_zero());
    let path = |n: &str| props.str(n).map(PathBuf::from);

    let mode = if bool_of("dummy_meta") {
        crate::warn!("[filter:kubernetes:{}] using Dummy Metadata", ctx.instance);
        MetaMode::Dummy
    } else if bool_of("use_tag_for_meta") {
        crate::info!(
            "[filter:kubernetes:{}] no network access required (OK)",
            ctx.instance
        );
        MetaMode::TagOnly
    } else {
        let url = props
            .str("kube_url")
            .unwrap_or("https://kubernetes.default.svc");
        let (https, host, api_port) = parse_url(url).ok_or_else(|| {
            props.error(
                "kube_url",
                "a URL such as https://kubernetes.default.svc or http://127.0.0.1:8001",
            )
        })?;
        let buffer_size = props.size("buffer_size").unwrap_or(32_000) as usize;
        let client = |https: bool, host: String, port: u16| ClientConf {
            https,
            host,
            port,
            ca_file: path("kube_ca_file"),
            ca_path: path("kube_ca_path"),
            verify: props.bool("tls.verify").unwrap_or(true),
            verify_hostname: bool_of("tls.verify_hostname"),
            vhost: props.str("tls.vhost").map(String::from),
            token_file: path("kube_token_file"),
            token_command: props.str("kube_token_command").map(String::from),
            token_ttl: props
                .time("kube_token_ttl")
                .unwrap_or(Duration::from_secs(600)),
            buffer_size,
            timeout: Duration::from_secs(10),
        };
        let api = client(https, host, api_port);
        let source = if bool_of("use_kubelet") {
            // Fluent Bit speaks plain HTTP to the kubelet when a preload dir is set.
            let kubelet_https = !props.is_set("kube_meta_preload_cache_dir");
            let host = props.str("kubelet_host").unwrap_or("127.0.0.1").to_string();
            Source::Kubelet {
                conf: client(kubelet_https, host, port("kubelet_port")?),
                api,
            }
        } else {
            let node_name = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty());
            Source::Api {
                conf: api,
                node_name,
            }
        };
        crate::info!(
            "[filter:kubernetes:{}] https={} host={} port={}",
            ctx.instance,
            u8::from(https),
            match &source {
                Source::Api { conf, .. } | Source::Kubelet { api: conf, .. } => conf.host.as_str(),
                Source::None => "",
            },
            api_port
        );
        let stats = stats(ctx);
        let meta = KubeMeta::new(
            MetaConfig {
                name: ctx.instance.to_string(),
                source,
                preload_dir: path("kube_meta_preload_cache_dir"),
                pod_ttl: ttl("kube_meta_cache_ttl"),
                namespace_ttl: ttl("kube_meta_namespace_cache_ttl"),
                wait: LOOKUP_WAIT,
                max_pods: MAX_PODS,
                max_namespaces: MAX_NAMESPACES,
                dns_retries: dns_retries as u32,
                dns_wait: props
                    .time("dns_wait_time")
                    .unwrap_or(Duration::from_secs(30)),
            },
            stats,
        );
        MetaMode::Cache(meta)
    };
    let namespace_labels = bool_of("namespace_labels");
    let namespace_annotations = bool_of("namespace_annotations");
    Ok(Box::new(KubernetesFilter {
        name: ctx.instance.to_string(),
        mode,
        regex,
        use_journal,
        tag_prefix: props.str("kube_tag_prefix").unwrap_or("").to_string(),
        merge_log: bool_of("merge_log"),
        merge_parser,
        merge_log_key: props.str("merge_log_key").map(Str::from),
        merge_log_trim: props.bool("merge_log_trim").unwrap_or(true),
        keep_log: props.bool("keep_log").unwrap_or(true),
        labels: props.bool("labels").unwrap_or(true),
        annotations: props.bool("annotations").unwrap_or(true),
        owner_references: bool_of("owner_references"),
        namespace_meta: namespace_labels || namespace_annotations,
        namespace_labels,
        namespace_annotations,
        namespace_only: bool_of("namespace_metadata_only"),
        allow_parser,
        allow_exclude: bool_of("k8s-logging.exclude"),
        cache_use_docker_id: bool_of("cache_use_docker_id"),
        parsers,
        rendered: HashMap::new(),
        started: false,
        namespace_file: path("kube_namespace_file"),
        use_kubelet: bool_of("use_kubelet"),
        bad_tags: AtomicU64::new(0),
        last_bad_tag_log: None,
    }))
}

fn stats(ctx: &BuildContext) -> Arc<Stats> {
    Arc::new(Stats {
        requests: ctx.metrics.counter(
            "agent_kubernetes_api_requests_total",
            "Requests sent to the Kubernetes API server or the kubelet.",
            ctx.instance,
        ),
        errors: ctx.metrics.counter(
            "agent_kubernetes_api_errors_total",
            "Failed Kubernetes metadata requests (records passed with the tag's names).",
            ctx.instance,
        ),
        pods: ctx.metrics.gauge(
            "agent_kubernetes_cached_pods",
            "Pods in the metadata cache.",
            ctx.instance,
        ),
    })
}

/// `http[s]://host[:port][/...]`; the port defaults to 443 for both (Fluent Bit).
/// Whether both are the same cached object (or both absent).
fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The `stream` of a record as Fluent Bit's `get_stream` reads it (its prefix
/// comparisons included: a key that starts `stream` compares on the key's length).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
    Other,
}

fn stream_of(body: &Map) -> Stream {
    for (k, v) in body {
        if k.len() <= 6 && b"stream".starts_with(k.as_bytes()) {
            return match v {
                Value::Str(s) if s.len() <= 6 && b"stdout".starts_with(s.as_bytes()) => {
                    Stream::Stdout
                }
                Value::Str(s) if s.len() <= 6 && b"stderr".starts_with(s.as_bytes()) => {
                    Stream::Stderr
                }
                _ => Stream::Other,
            };
        }
    }
    Stream::Other
}

/// Fluent Bit's `value_trim_size`: drops trailing newlines and trailing `\n`/`\r`
/// escapes (backslash + letter) from a merged string.
fn trim_value(s: &str) -> &str {
    let b = s.as_bytes();
    let mut size = b.len();
    let mut i = b.len() as isize - 1;
    while i > 0 {
        let u = i as usize;
        if b[u] == b'\n' {
            size -= 1;
            i -= 1;
            continue;
        }
        if b[u - 1] == b'\\' && (b[u] == b'n' || b[u] == b'r') {
            size -= 2;
            i -= 2;
        } else {
            break;
        }
    }
    // The cut is before an ASCII byte, so it is a char boundary.
    &s[..size]
}

/// `asctime()` of the local time without its newline (`dummy_meta`).
fn asctime_now() -> String {
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return String::new();
    }
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {}{:3} {:02}:{:02}:{:02} {}",
        DAYS[tm.tm_wday.clamp(0, 6) as usize],
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        1900 + tm.tm_year
    )
}

fn s(v: &str) -> Value {
    Value::Str(Str::from(v))
}

fn k(v: &str) -> Str {
    Str::from(v)
}

/// What `merge_log` made of the `log` value (Fluent Bit's merge status).
enum Merge {
    /// `log` is neither a string nor a map: nothing merged (and `keep_log off` drops it).
    Skipped,
    /// Not parsed: `log` stays.
    None,
    Parsed(Map, Option<EventTime>),
    /// `log` already is a map.
    Map(Map),
}

impl KubernetesFilter {
    /// When running in a pod (its service account's namespace file exists), tests
    /// that the API answers for the agent's own pod (`HOSTNAME`), as Fluent Bit does at
    /// start; the answer is logged, nothing waits for it.
    fn probe(&self, cache: &KubeMeta) {
        let Some(file) = &self.namespace_file else {
            return;
        };
        let Ok(ns) = std::fs::read_to_string(file) else {
            crate::info!("[filter:kubernetes:{}] not running in a pod ({} cannot be read): no connectivity test", self.name, file.display());
            return;
        };
        let ns = ns.trim_end_matches(['\n', '\r']);
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        if !ns.is_empty() && !host.is_empty() && !self.use_kubelet {
            cache.probe(ns, &host);
        }
    }

    /// Reads the names in `text` (a tag without its prefix, or a CONTAINER_NAME).
    fn names(&self, text: &[u8]) -> Option<TagMeta> {
        let mut m = TagMeta::default();
        let found = self.regex.get().search(text, |name, range| {
            let Some((a, b)) = range else { return };
            if a == b {
                return;
            }
            let v = || Some(Str::from(String::from_utf8_lossy(&text[a..b]).as_ref()));
            match &**name {
                "pod_name" if m.pod_name.is_none() => m.pod_name = v(),
                "namespace_name" if m.namespace.is_none() => m.namespace = v(),
                "container_name" if m.container_name.is_none() => m.container_name = v(),
                "docker_id" if m.docker_id.is_none() => m.docker_id = v(),
                "container_hash" if m.container_hash.is_none() => m.container_hash = v(),
                _ => {}
            }
        });
        found.then_some(m)
    }

    fn bad_tag(&mut self, why: std::fmt::Arguments) {
        let n = self.bad_tags.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        if self
            .last_bad_tag_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_bad_tag_log = Some(now);
            crate::warn!(
                "[filter:kubernetes:{}] {why}: records pass unchanged ({n} so far; check kube_tag_prefix and the tail tag, e.g. 'tag kube.*')",
                self.name
            );
        }
    }

    fn tag_meta(&mut self, tag: &str) -> Option<TagMeta> {
        let plen = self.tag_prefix.len();
        if plen + 1 >= tag.len() {
            let prefix = self.tag_prefix.clone();
            self.bad_tag(format_args!(
                "incoming record tag ({tag}) is shorter than kube_tag_prefix value ({prefix}), skip filter"
            ));
            return None;
        }
        let m = self.names(&tag.as_bytes()[plen..]);
        if m.is_none() {
            self.bad_tag(format_args!("invalid pattern for given tag {tag}"));
        }
        m
    }

    fn journal_meta(&self, body: &Map) -> Option<TagMeta> {
        let name = body.iter().find_map(|(k, v)| match v {
            Value::Str(s) if &**k == "CONTAINER_NAME" => Some(s.clone()),
            _ => None,
        })?;
        self.names(name.as_bytes())
    }

    /// The metadata for these names: rendered once per pod version and container.
    fn rendered(&mut self, meta: &TagMeta) -> Arc<Rendered> {
        let (pod, ns) = match &self.mode {
            MetaMode::Cache(cache) => {
                let pod = match (&meta.namespace, &meta.pod_name) {
                    (Some(ns), Some(name)) if !self.namespace_only => {
                        let id = meta
                            .docker_id
                            .as_deref()
                            .filter(|_| self.cache_use_docker_id);
                        cache.pod(ns, name, id)
                    }
                    _ => None,
                };
                let ns = match &meta.namespace {
                    Some(ns) if self.namespace_meta => cache.namespace(ns),
                    _ => None,
                };
                (pod, ns)
            }
            _ => (None, None),
        };
        if let Some(r) = self.rendered.get(meta) {
            if same(&r.pod, &pod) && same(&r.ns, &ns) && !matches!(self.mode, MetaMode::Dummy) {
                return r.clone();
            }
        }
        let r = Arc::new(self.render(meta, pod, ns));
        if self.rendered.len() >= MAX_RENDERED {
            self.rendered.clear();
        }
        self.rendered.insert(meta.clone(), r.clone());
        r
    }

    fn render(
        &self,
        meta: &TagMeta,
        pod: Option<Arc<Pod>>,
        ns: Option<Arc<Namespace>>,
    ) -> Rendered {
        let mut props = AnnotationProps::default();
        let kube = match (&self.mode, &pod) {
            (MetaMode::Dummy, _) => Some(Value::Map(vec![(k("dummy"), s(&asctime_now()))])),
            (MetaMode::Cache(_), Some(p)) => Some(self.pod_value(meta, p, &mut props)),
            (MetaMode::Cache(_), None) if self.namespace_only => None,
            // Fluent Bit's use_tag_for_meta layout; also what a failed lookup gives
            // (Fluent Bit adds nothing then: see README, deliberate differences).
            _ => {
                let mut m = Map::new();
                let mut put = |key: &str, v: &Option<Str>| {
                    if let Some(v) = v {
                        m.push((k(key), Value::Str(v.clone())));
                    }
                };
                put("pod_name", &meta.pod_name);
                put("namespace_name", &meta.namespace);
                put("container_name", &meta.container_name);
                put("docker_id", &meta.docker_id);
                Some(Value::Map(m))
            }
        };
        let namespace = ns.as_ref().map(|n| {
            let mut m = vec![(
                k("name"),
                Value::Str(meta.namespace.clone().unwrap_or_else(|| n.name.clone())),
            )];
            if self.namespace_labels {
                if let Some(l) = &n.labels {
                    m.push((k("labels"), l.clone()));
                }
            }
            if self.namespace_annotations {
                if let Some(a) = &n.annotations {
                    m.push((k("annotations"), a.clone()));
                }
            }
            Value::Map(m)
        });
        Rendered {
            pod,
            ns,
            kube,
            namespace,
            props,
        }
    }

    /// Fluent Bit's `merge_pod_meta` layout.
    fn pod_value(&self, meta: &TagMeta, pod: &Pod, props: &mut AnnotationProps) -> Value {
        let mut m = Map::new();
        let put = |m: &mut Map, key: &str, v: Option<&Value>| {
            if let Some(v) = v {
                m.push((k(key), v.clone()));
            }
        };
        let put_str = |m: &mut Map, key: &str, v: &Option<Str>| {
            if let Some(v) = v {
                m.push((k(key), Value::Str(v.clone())));
            }
        };
        put_str(&mut m, "pod_name", &meta.pod_name);
        put_str(&mut m, "namespace_name", &meta.namespace);
        put(&mut m, "pod_id", pod.uid.as_ref());
        put(
            &mut m,
            "labels",
            pod.labels.as_ref().filter(|_| self.labels),
        );
        put(
            &mut m,
            "annotations",
            pod.annotations.as_ref().filter(|_| self.annotations),
        );
        put(
            &mut m,
            "ownerReferences",
            pod.owner_references
                .as_ref()
                .filter(|_| self.owner_references),
        );
        put(&mut m, "host", pod.node_name.as_ref());
        put(&mut m, "pod_ip", pod.pod_ip.as_ref());
        let status = meta
            .container_name
            .as_deref()
            .and_then(|c| pod.container(c));
        put_str(&mut m, "container_name", &meta.container_name);
        let docker_id = meta
            .docker_id
            .clone()
            .or_else(|| status.and_then(|c| c.container_id.clone()));
        put_str(&mut m, "docker_id", &docker_id);
        let hash = meta
            .container_hash
            .clone()
            .or_else(|| status.and_then(|c| c.image_id.clone()));
        put_str(&mut m, "container_hash", &hash);
        put_str(
            &mut m,
            "container_image",
            &status.and_then(|c| c.image.clone()),
        );
        if let Some(Value::Map(ann)) = &pod.annotations {
            let mut p = PropsBuilder::default();
            for (key, v) in ann {
                if let Some(prop) = key.strip_prefix("fluentbit.io/").filter(|p| !p.is_empty()) {
                    let v = match v {
                        Value::Str(s) => s.as_ref(),
                        _ => "",
                    };
                    self.annotation(meta, prop, v, &mut p);
                }
            }
            *props = p.finish();
        }
        Value::Map(m)
    }

    /// Fluent Bit's `flb_kube_prop_set`: `parser|exclude[_stdout|_stderr][-container]`.
    fn annotation(&self, meta: &TagMeta, prop: &str, value: &str, p: &mut PropsBuilder) {
        let ns = meta.namespace.as_deref().unwrap_or("");
        let pod = meta.pod_name.as_deref().unwrap_or("");
        let (is_parser, rest) = if let Some(r) = prop.strip_prefix("parser") {
            (true, r)
        } else if let Some(r) = prop.strip_prefix("exclude") {
            (false, r)
        } else {
            crate::warn!("[filter:kubernetes:{}] unknown annotation 'fluentbit.io/{prop}' (ns='{ns}' pod_name='{pod}')", self.name);
            return;
        };
        let (stream, rest) = match rest.strip_prefix('_') {
            Some(r) => {
                if let Some(r) = r.strip_prefix("stdout") {
                    (Some(Stream::Stdout), r)
                } else if let Some(r) = r.strip_prefix("stderr") {
                    (Some(Stream::Stderr), r)
                } else {
                    crate::warn!("[filter:kubernetes:{}] invalid stream in annotation 'fluentbit.io/{prop}' (ns='{ns}' pod_name='{pod}')", self.name);
                    return;
                }
            }
            None => (None, rest),
        };
        let container = match rest.strip_prefix('-') {
            Some("") => {
                crate::warn!("[filter:kubernetes:{}] invalid container in annotation 'fluentbit.io/{prop}' (ns='{ns}' pod_name='{pod}')", self.name);
                return;
            }
            Some(c) => Some(c),
            None if rest.is_empty() => None,
            None => {
                crate::warn!("[filter:kubernetes:{}] invalid annotation 'fluentbit.io/{prop}' (ns='{ns}' pod_name='{pod}')", self.name);
                return;
            }
        };
        if let Some(c) = container {
            if meta.container_name.as_deref() != Some(c) {
                return;
            }
        }
        let specific = container.is_some();
        let stdout = stream != Some(Stream::Stderr);
        let stderr = stream != Some(Stream::Stdout);
        if is_parser {
            if !self.allow_parser {
                crate::warn!("[filter:kubernetes:{}] annotation 'fluentbit.io/parser' not allowed (ns='{ns}' pod_name='{pod}')", self.name);
                return;
            }
            let Some(parser) = self.parsers.get(value) else {
                crate::warn!(
                    "[filter:kubernetes:{}] annotation parser '{value}' not found (ns='{ns}' pod_name='{pod}', container_name='{}')",
                    self.name,
                    meta.container_name.as_deref().unwrap_or("")
                );
                return;
            };
            if stdout && (specific || p.stdout_parser.is_none()) {
                p.stdout_parser = Some(parser.clone());
            }
            if stderr && (specific || p.stderr_parser.is_none()) {
                p.stderr_parser = Some(parser.clone());
            }
        } else {
            if !self.allow_exclude {
                crate::warn!("[filter:kubernetes:{}] annotation 'fluentbit.io/exclude' not allowed (ns='{ns}' pod_name='{pod}')", self.name);
                return;
            }
            let exclude = crate::config::values::parse_bool(value) == Some(true);
            if stdout && (specific || p.stdout_exclude.is_none()) {
                p.stdout_exclude = Some(exclude);
            }
            if stderr && (specific || p.stderr_exclude.is_none()) {
                p.stderr_exclude = Some(exclude);
            }
        }
    }

    /// What `merge_log` makes of `v`, the value of `log`.
    fn merge(&self, v: &Value, parser: Option<&Arc<Parser>>) -> Merge {
        let text = match v {
            Value::Map(m) => return Merge::Map(m.clone()),
            Value::Str(s) => s,
            _ => return Merge::Skipped,
        };
        let mut out = Map::new();
        if let Some(p) = parser.or(self.merge_parser.as_ref()) {
            return match p.parse(text.as_bytes(), &mut out) {
                // A parser that gives no time stamps the record now (Fluent Bit).
                Ok(t) => Merge::Parsed(out, Some(t.unwrap_or_else(EventTime::now))),
                Err(_) => Merge::None,
            };
        }
        match crate::parser::json::parse_values(text.as_bytes()) {
            Ok((Value::Map(m), false)) => Merge::Parsed(m, None),
            _ => Merge::None,
        }
    }

    /// Filters one record; false when it is excluded.
    fn apply(&self, rec: &mut Record, r: &Rendered) -> bool {
        let parser = match stream_of(&rec.body) {
            Stream::Stdout if r.props.stdout_exclude => return false,
            Stream::Stdout => r.props.stdout_parser.as_ref(),
            Stream::Stderr if r.props.stderr_exclude => return false,
            Stream::Stderr => r.props.stderr_parser.as_ref(),
            // Fluent Bit compares the two parser names by pointer here: never equal.
            Stream::Other if r.props.stdout_exclude && r.props.stderr_exclude => return false,
            Stream::Other => None,
        };
        if self.merge_log {
            if let Some(i) = rec.body.iter().position(|(k, _)| &**k == "log") {
                let merged = self.merge(&rec.body[i].1, parser);
                let drop_log = !self.keep_log && !matches!(merged, Merge::None);
                if drop_log {
                    rec.body.remove(i);
                }
                let (entries, trim) = match merged {
                    Merge::Parsed(m, t) => {
                        if let Some(t) = t {
                            rec.time = t;
                        }
                        (m, self.merge_log_trim)
                    }
                    Merge::Map(m) => (m, false),
                    Merge::None | Merge::Skipped => (Map::new(), false),
                };
                let entries: Map = entries
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::Str(s) if trim => {
                            let t = trim_value(&s);
                            let v = if t.len() == s.len() {
                                Value::Str(s)
                            } else {
                                Value::Str(Str::from(t))
                            };
                            (k, v)
                        }
                        v => (k, v),
                    })
                    .collect();
                match &self.merge_log_key {
                    Some(key) if !entries.is_empty() => {
                        rec.body.push((key.clone(), Value::Map(entries)))
                    }
                    Some(_) => {}
                    None => rec.body.extend(entries),
                }
            }
        }
        if let Some(kube) = &r.kube {
            rec.body.push((k("kubernetes"), kube.clone()));
        }
        if let Some(ns) = &r.namespace {
            rec.body.push((k("kubernetes_namespace"), ns.clone()));
        }
        true
    }
}

/// Annotation properties while they are read (unset differs from false until the end).
#[derive(Default)]
struct PropsBuilder {
    stdout_parser: Option<Arc<Parser>>,
    stderr_parser: Option<Arc<Parser>>,
    stdout_exclude: Option<bool>,
    stderr_exclude: Option<bool>,
}

impl PropsBuilder {
    fn finish(self) -> AnnotationProps {
        AnnotationProps {
            stdout_parser: self.stdout_parser,
            stderr_parser: self.stderr_parser,
            stdout_exclude: self.stdout_exclude == Some(true),
            stderr_exclude: self.stderr_exclude == Some(true),
        }
    }
}

impl Filter for KubernetesFilter {
    fn filter(&mut self, tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        if !self.started {
            // Not at build time: `--dry-run` builds filters too and must not connect.
            self.started = true;
            if let MetaMode::Cache(cache) = &self.mode {
                cache.start();
                self.probe(cache);
            }
        }
        if self.use_journal && !matches!(self.mode, MetaMode::Dummy) {
            // Journal records of one chunk come from many pods: one lookup each.
            let mut out = Vec::with_capacity(records.len());
            for mut rec in records.drain(..) {
                match self.journal_meta(&rec.body) {
                    Some(meta) => {
                        let r = self.rendered(&meta);
                        if self.apply(&mut rec, &r) {
                            out.push(rec);
                        }
                    }
                    // Fluent Bit drops a journal record without a container name;
                    // agent passes it unchanged (see README).
                    None => out.push(rec),
                }
            }
            *records = out;
            return FilterResult::Modified;
        }
        let meta = match self.mode {
            MetaMode::Dummy => TagMeta::default(),
            _ => match self.tag_meta(tag) {
                Some(m) => m,
                None => return FilterResult::NoTouch,
            },
        };
        let r = self.rendered(&meta);
        records.retain_mut(|rec| self.apply(rec, &r));
        FilterResult::Modified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_read_as_fluent_bit_reads_it() {
        assert_eq!(
            parse_url("https://kubernetes.default.svc"),
            Some((true, "kubernetes.default.svc".into(), 443))
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8001"),
            Some((false, "127.0.0.1".into(), 8001))
        );
        assert_eq!(parse_url("https://k:6443/"), Some((true, "k".into(), 6443)));
        assert_eq!(parse_url("ftp://k"), None);
        assert_eq!(parse_url("https://k:x"), None);
    }

    #[test]
    fn merged_values_are_trimmed_as_fluent_bit_trims_them() {
        assert_eq!(trim_value("a\n\n"), "a");
        assert_eq!(trim_value("a\\n"), "a");
        assert_eq!(trim_value("a\\r\\n\n"), "a");
        assert_eq!(trim_value("a\r"), "a\r");
        assert_eq!(trim_value("\n"), "\n", "the first byte is never trimmed");
        assert_eq!(trim_value("é\n"), "é");
    }

    #[test]
    fn stream_is_read_with_fluent_bit_prefix_rules() {
        let m = |k: &str, v: &str| vec![(Str::from(k), Value::Str(Str::from(v)))];
        assert!(stream_of(&m("stream", "stdout")) == Stream::Stdout);
        assert!(stream_of(&m("stream", "stderr")) == Stream::Stderr);
        assert!(stream_of(&m("stream", "other")) == Stream::Other);
        assert!(stream_of(&m("log", "x")) == Stream::Other);
    }

    #[test]
    fn asctime_has_its_fixed_layout() {
        let t = asctime_now();
        assert_eq!(t.len(), 24, "{t}");
        assert_eq!(&t[3..4], " ");
    }
}
