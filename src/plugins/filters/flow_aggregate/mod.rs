//! `flow_aggregate` filter: Calico-style flow logs from `conntrack` (and `nflog`)
//! records. It consumes those records and, every `flush_interval`, emits one record per
//! aggregated flow with Calico Enterprise's field names, tagged `tag`. Other records
//! pass through untouched. Calico: felix/collector/flowlog (shared/spec/flows.md §2, §5).

mod aggregate;
mod domains;
mod endpoints;
mod sockets;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{Chunk, EventTime, Record, Tag, Value};
use crate::kubernetes::client::{parse_url, ClientConf, KUBE_CA, KUBE_TOKEN};
use crate::kubernetes::objects::{PodInfo, ServiceInfo, SliceInfo};
use crate::kubernetes::watch::{self, Store, StoreStatus};
use crate::pipeline::metrics;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};
use aggregate::{Action, Aggregator, Conn, Hit, Kind, Options, Reporter, Update};
use domains::DnsCache;
use endpoints::{parse_cidr, Endpoints};
use sockets::{LocalSockets, Sampler};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("flush_interval", PropKind::Time, Some("300s"), "Length of an aggregation interval: one record per aggregated flow is emitted at its end (at least 1s)."),
    PropSpec::new("aggregation_kind_for_allowed", PropKind::Int, Some("2"), "Aggregation level of allowed flows: 0 none, 1 source ports, 2 pod prefix (IPs nulled), 3 also destination ports."),
    PropSpec::new("aggregation_kind_for_denied", PropKind::Int, Some("1"), "Aggregation level of denied flows (0-3, as above)."),
    PropSpec::new("endpoints_file", PropKind::Str, None, "JSON file mapping IPs/CIDRs to workloads ({\"endpoints\": [...]}) or `kubectl get pods -A -o json` output; reloaded when it changes."),
    PropSpec::new("local_endpoints", PropKind::CList, None, "CIDRs of endpoints on this node (their side of a connection is reported); also \"local\": true in the file."),
    PropSpec::new("node_name", PropKind::Str, None, "This node's name: pods scheduled on it are local, and the 'host' field; default the hostname."),
    PropSpec::new("tag", PropKind::Str, Some("flowlogs"), "Tag of the emitted flow log records."),
    PropSpec::new("flush_jitter_percent", PropKind::Int, Some("10"), "Each interval lasts flush_interval plus a random part of up to this percentage of it (Calico's 10%), so that the nodes of a fleet do not all flush at once; 0 for exact intervals."),
    PropSpec::new("max_flows", PropKind::Int, Some("100000"), "Most aggregated flows held in one interval; updates beyond it are counted and dropped."),
    PropSpec::new("include_labels", PropKind::Bool, Some("false"), "Write the workloads' labels (source_labels, dest_labels); null otherwise, as Calico's FlowLogsFileIncludeLabels."),
    PropSpec::new("include_policies", PropKind::Bool, Some("false"), "Write the policies NFLOG named (policies.all_policies, enforced_policies, pending_policies) and split a flow per policy trace; null otherwise, as Calico's FlowLogsFileIncludePolicies."),
    PropSpec::new("include_service", PropKind::Bool, Some("false"), "Write the destination's Kubernetes service (dest_service_*) from the services in endpoints_file; '-' otherwise, as Calico's FlowLogsFileIncludeService."),
    PropSpec::new("nat_outgoing_port_limit", PropKind::Int, Some("3"), "Most source-NAT ports listed in nat_outgoing_ports per flow log (Calico's FlowLogsFileNatOutgoingPortLimit)."),
    PropSpec::new("kubernetes", PropKind::Bool, Some("off"), "Name workloads and services from the Kubernetes API: list + watch of the cluster's pods, services and endpoint slices (pods on node_name are local); with endpoints_file too, the API's pods win for the same address."),
    PropSpec::new("kube_url", PropKind::Str, Some("https://kubernetes.default.svc"), "Kubernetes API server URL (with kubernetes on)."),
    PropSpec::new("kube_ca_file", PropKind::Str, Some(KUBE_CA), "CA certificate file of the API server."),
    PropSpec::new("kube_ca_path", PropKind::Str, None, "Directory of CA certificates of the API server."),
    PropSpec::new("kube_token_file", PropKind::Str, Some(KUBE_TOKEN), "Bearer token file, read again every kube_token_ttl and after a 401."),
    PropSpec::new("kube_token_command", PropKind::Str, None, "Command (run by sh -c) printing the token, instead of kube_token_file."),
    PropSpec::new("kube_token_ttl", PropKind::Time, Some("10m"), "How long a token read from kube_token_file (or kube_token_command) is used."),
    PropSpec::new("kube_max_objects", PropKind::Int, Some("100000"), "Most pods (and services, and endpoints) kept from the API; further ones are left out and counted in the log."),
    PropSpec::new("tls.verify", PropKind::Bool, Some("on"), "Verify the API server's certificate chain."),
    PropSpec::new("tls.vhost", PropKind::Str, None, "Server name sent (SNI) and verified, instead of kube_url's host."),
    PropSpec::new("metrics_tag", PropKind::Str, None, "Also emit, every flush_interval, cumulative traffic counters between workloads (agent_flow_*) as metrics with this tag, for prometheus_exporter or prometheus_remote_write."),
    PropSpec::new("dest_domains_limit", PropKind::Int, Some("5"), "Most names in a flow's dest_domains, and kept per address in the DNS cache (Calico's FlowLogsFileDomainsLimit)."),
    PropSpec::new("dns_cache_max", PropKind::Int, Some("100000"), "Most addresses (and CNAME targets) the DNS cache holds for dest_domains; answers for more are counted in agent_flow_aggregate_dns_overflow_total and dropped."),
    PropSpec::new("dns_extra_ttl", PropKind::Time, Some("0s"), "Added to each DNS answer's TTL (itself at least 2s) before its name is forgotten (Calico's DNSExtraTTL)."),
    PropSpec::new("metrics_max_series", PropKind::Int, Some("10000"), "Most label sets (source, destination, proto, action, reporter) the flow metrics keep; flows of new ones beyond it are counted in agent_flow_aggregate_metrics_overflow_total."),
    PropSpec::new("include_process", PropKind::Bool, Some("false"), "Name the process of a flow's local socket (process_name, process_id, process_args): sockets listed with sock_diag each sample_interval, their processes found through /proc; one record per process name, as Calico's flowLogsCollectProcessInfo."),
    PropSpec::new("include_tcp_stats", PropKind::Bool, Some("false"), "TCP statistics of a flow's local sockets (tcp_* fields: RTT, MSS, congestion window, retransmissions) from sock_diag's tcp_info, sampled each sample_interval (Calico's flowLogsCollectTcpStats)."),
    PropSpec::new("sample_interval", PropKind::Time, Some("5s"), "How often the local sockets are listed for include_process/include_tcp_stats (one sock_diag dump per interval, by a thread of its own; at least 100ms)."),
    PropSpec::new("netns", PropKind::Str, None, "List the sockets of the network namespace at this path (as the conntrack input's netns) instead of the agent's own."),
    PropSpec::new("process_limit", PropKind::Int, Some("2"), "Process names with a record of their own per aggregated flow; the others share one record with process_name \"*\" (Calico's FlowLogsFilePerFlowProcessLimit)."),
    PropSpec::new("process_args_limit", PropKind::Int, Some("5"), "Most argument strings listed in process_args when a record covers several processes (Calico's FlowLogsFilePerFlowProcessArgsLimit)."),
];

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "flow_aggregate",
    description: "Aggregate conntrack/nflog records into Calico-style flow logs",
    props: PROPS,
    build,
};

struct EndpointsSource {
    path: PathBuf,
    node: String,
    local: Vec<(IpAddr, u8)>,
    modified: Option<SystemTime>,
}

/// The cluster's pods, services and endpoint slices, watched (`kubernetes on`).
struct KubeSource {
    /// Where and how many; the watches start at the first tick (not in a dry run).
    conf: ClientConf,
    who: String,
    /// The watches' thread, once started; the stores they fill.
    runner: Option<watch::Runner>,
    pods: Arc<Store<PodInfo>>,
    services: Arc<Store<ServiceInfo>>,
    slices: Arc<Store<SliceInfo>>,
    /// The stores' generations when the table was last built.
    seen: [u64; 3],
    node: String,
    checked: Option<Instant>,
    synced: bool,
}

impl KubeSource {
    fn stores(&self) -> [&dyn StoreStatus; 3] {
        [&*self.pods, &*self.services, &*self.slices]
    }
}

struct FlowAggregateFilter {
    agg: Aggregator,
    endpoints: Endpoints,
    any_local: bool,
    source: Option<EndpointsSource>,
    /// The endpoints file's last good table (empty without one).
    file_eps: Endpoints,
    kube: Option<KubeSource>,
    local: Vec<(IpAddr, u8)>,
    interval: Duration,
    /// `flush_jitter_percent`, and this interval's length with its jitter.
    jitter: u32,
    next: Duration,
    last: Option<Instant>,
    tag: Tag,
    name: Arc<str>,
    /// `agent_flow_aggregate_active_flows`, `..._records_total`, `..._overflow_total`.
    active: Arc<AtomicU64>,
    emitted: Arc<AtomicU64>,
    overflow: Arc<AtomicU64>,
    /// `agent_flow_aggregate_dns_overflow_total`, `..._dns_cache_addresses`.
    dns_overflow: Arc<AtomicU64>,
    dns_addresses: Arc<AtomicU64>,
    /// `metrics_tag`: flow metrics, when asked for.
    flow_metrics: Option<FlowMetrics>,
    /// include_process/include_tcp_stats: none (no sock_diag socket) when both are off.
    sampler: Option<Sampler>,
}

/// The labels of a flow metric series, in [`SERIES_LABELS`] order.
type SeriesKey = [Arc<str>; 7];

const SERIES_LABELS: [&str; 7] = [
    "source_namespace",
    "source_name",
    "dest_namespace",
    "dest_name",
    "proto",
    "action",
    "reporter",
];

/// The flow record fields the labels come from (aggregated names: one series per
/// workload pair, whatever the pods' generated suffixes).
const SERIES_FIELDS: [&str; 7] = [
    "source_namespace",
    "source_name_aggr",
    "dest_namespace",
    "dest_name_aggr",
    "proto",
    "action",
    "reporter",
];

/// The counters of each series and the flow record field each adds up.
const FLOW_COUNTERS: [(&str, &str, &str); 6] = [
    (
        "agent_flow_bytes_in_total",
        "Bytes received by the reporting endpoint, from the flow logs.",
        "bytes_in",
    ),
    (
        "agent_flow_bytes_out_total",
        "Bytes sent by the reporting endpoint, from the flow logs.",
        "bytes_out",
    ),
    (
        "agent_flow_packets_in_total",
        "Packets received by the reporting endpoint, from the flow logs.",
        "packets_in",
    ),
    (
        "agent_flow_packets_out_total",
        "Packets sent by the reporting endpoint, from the flow logs.",
        "packets_out",
    ),
    (
        "agent_flow_started_total",
        "Connections started, from the flow logs.",
        "num_flows_started",
    ),
    (
        "agent_flow_completed_total",
        "Connections completed, from the flow logs.",
        "num_flows_completed",
    ),
];

/// Cumulative counters per workload pair, emitted as a metric set each interval.
struct FlowMetrics {
    tag: Tag,
    max_series: usize,
    series: std::collections::HashMap<SeriesKey, [u64; 6]>,
    /// `agent_flow_aggregate_metrics_overflow_total`.
    overflow: Arc<AtomicU64>,
}

impl FlowMetrics {
    /// Adds a flush's records; `copies` marks those repeating another's counters (a flow
    /// split per policy trace), which are not counted again.
    fn add(&mut self, records: &[Record], copies: &[bool]) {
        let copy = |i: usize| copies.get(i).copied().unwrap_or(false);
        for (_, r) in records.iter().enumerate().filter(|(i, _)| !copy(*i)) {
            let key: SeriesKey = SERIES_FIELDS.map(|f| match field(r, f) {
                Some(Value::Str(s)) => s.clone(),
                _ => Arc::from("-"),
            });
            let n = self.series.len();
            let counters = match self.series.get_mut(&key) {
                Some(c) => c,
                None if n >= self.max_series => {
                    metrics::add(&self.overflow, 1);
                    continue;
                }
                None => self.series.entry(key).or_insert([0; 6]),
            };
            for (c, (_, _, f)) in counters.iter_mut().zip(FLOW_COUNTERS) {
                *c += uint(r, f);
            }
        }
    }

    fn set(&self, now: EventTime) -> crate::event::metrics::MetricSet {
        use crate::event::metrics::{Family, MetricSet, MetricType};
        let ts = now.secs.max(0) as u64 * 1_000_000_000 + now.nanos as u64;
        let mut keys: Vec<&SeriesKey> = self.series.keys().collect();
        keys.sort();
        let mut set = MetricSet::default();
        for (i, (name, help, _)) in FLOW_COUNTERS.iter().enumerate() {
            let mut f = Family::new(name, help, MetricType::Counter, &SERIES_LABELS);
            for k in &keys {
                let labels: Vec<&str> = k.iter().map(|v| &**v).collect();
                f.push(&labels, ts, self.series[*k][i] as f64);
            }
            set.families.push(f);
        }
        set
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn level(props: &Props, name: &str) -> Result<u8, ConfigError> {
    match props.int(name) {
        Some(l @ 0..=3) => Ok(l as u8),
        _ => Err(props.error(name, "an aggregation level 0, 1, 2 or 3")),
    }
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    let interval = props
        .time("flush_interval")
        .unwrap_or(Duration::from_secs(300));
    if interval < Duration::from_secs(1) {
        return Err(props.error("flush_interval", "an interval of at least 1s"));
    }
    let mut local = Vec::new();
    for c in props.clist("local_endpoints") {
        local.push(
            parse_cidr(&c)
                .map_err(|e| props.error("local_endpoints", format!("a list of CIDRs ({e})")))?,
        );
    }
    let node = props
        .str("node_name")
        .filter(|_| props.is_set("node_name"))
        .map(str::to_string)
        .unwrap_or_else(|| crate::config::parser::hostname().unwrap_or_default());
    let max = props.int("max_flows").unwrap_or(100_000);
    if max < 1 {
        return Err(props.error("max_flows", "a number of flows >= 1"));
    }
    let jitter = match props.int("flush_jitter_percent").unwrap_or(10) {
        j @ 0..=100 => j as u32,
        _ => return Err(props.error("flush_jitter_percent", "a percentage from 0 to 100")),
    };
    let nat_port_limit = props.int("nat_outgoing_port_limit").unwrap_or(3);
    if nat_port_limit < 0 {
        return Err(props.error("nat_outgoing_port_limit", "a number of ports >= 0"));
    }
    let opts = Options {
        level_allowed: level(props, "aggregation_kind_for_allowed")?,
        level_denied: level(props, "aggregation_kind_for_denied")?,
        max_entries: max as usize,
        include_labels: props.bool("include_labels").unwrap_or(false),
        include_policies: props.bool("include_policies").unwrap_or(false),
        include_service: props.bool("include_service").unwrap_or(false),
        nat_port_limit: nat_port_limit as usize,
        include_process: props.bool("include_process").unwrap_or(false),
        process_limit: match props.int("process_limit").unwrap_or(2) {
            n @ 1.. => n as usize,
            _ => return Err(props.error("process_limit", "a number of process names >= 1")),
        },
        process_args_limit: match props.int("process_args_limit").unwrap_or(5) {
            n @ 1.. => n as usize,
            _ => return Err(props.error("process_args_limit", "a number of arguments >= 1")),
        },
    };
    let sampler = sampler(props, ctx, opts.include_process)?;
    let mut agg = Aggregator::new(opts, &node, unix_now());
    let limit = props.int("dest_domains_limit").unwrap_or(5);
    if !(1..=1000).contains(&limit) {
        return Err(props.error("dest_domains_limit", "a number of names from 1 to 1000"));
    }
    let cache_max = props.int("dns_cache_max").unwrap_or(100_000);
    if cache_max < 1 {
        return Err(props.error("dns_cache_max", "a number of addresses >= 1"));
    }
    let extra = props.time("dns_extra_ttl").unwrap_or_default();
    agg.dns = DnsCache::new(cache_max as usize, limit as usize, extra);
    let mut f = FlowAggregateFilter {
        agg,
        endpoints: Endpoints::new(),
        any_local: false,
        source: None,
        file_eps: Endpoints::new(),
        kube: None,
        local: local.clone(),
        interval,
        jitter,
        next: jittered(interval, jitter),
        last: None,
        tag: Arc::from(props.str("tag").unwrap_or("flowlogs")),
        name: Arc::from(ctx.instance),
        active: ctx.metrics.gauge(
            "agent_flow_aggregate_active_flows",
            "Aggregated flows held for the current interval.",
            ctx.instance,
        ),
        emitted: ctx.metrics.counter(
            "agent_flow_aggregate_records_total",
            "Flow log records emitted.",
            ctx.instance,
        ),
        overflow: ctx.metrics.counter(
            "agent_flow_aggregate_overflow_total",
            "Updates dropped because max_flows aggregated flows were held.",
            ctx.instance,
        ),
        dns_overflow: ctx.metrics.counter(
            "agent_flow_aggregate_dns_overflow_total",
            "DNS answers not learnt for dest_domains because dns_cache_max addresses or CNAME targets were held.",
            ctx.instance,
        ),
        dns_addresses: ctx.metrics.gauge(
            "agent_flow_aggregate_dns_cache_addresses",
            "Addresses held in the DNS cache for dest_domains.",
            ctx.instance,
        ),
        flow_metrics: match props.str("metrics_tag") {
            None => None,
            Some(tag) => {
                let max = props.int("metrics_max_series").unwrap_or(10_000);
                if max < 1 {
                    return Err(props.error("metrics_max_series", "a number of series >= 1"));
                }
                Some(FlowMetrics {
                    tag: Arc::from(tag),
                    max_series: max as usize,
                    series: Default::default(),
                    overflow: ctx.metrics.counter(
                        "agent_flow_aggregate_metrics_overflow_total",
                        "Flow records not counted in the flow metrics: metrics_max_series label sets were held.",
                        ctx.instance,
                    ),
                })
            }
        },
        sampler,
    };
    if props.is_set("endpoints_file") {
        let path = PathBuf::from(props.str("endpoints_file").unwrap_or_default());
        // A bad file at start is a configuration error; a bad reload keeps the old table.
        // A file not there yet (written by a sidecar, say) is loaded when it appears.
        let eps = if path.exists() {
            Endpoints::load(&path, &node).map_err(|e| {
                props.error("endpoints_file", format!("a readable endpoints file ({e})"))
            })?
        } else {
            crate::warn!(
                "{}: [filter:flow_aggregate:{}] endpoints file {} does not exist yet: workloads are unknown until it appears",
                props.span_of("endpoints_file"),
                ctx.instance,
                path.display()
            );
            Endpoints::new()
        };
        f.source = Some(EndpointsSource {
            modified: modified(&path),
            path,
            node: node.clone(),
            local,
        });
        f.file_eps = eps;
    }
    if props.bool("kubernetes").unwrap_or(false) {
        f.kube = Some(kube_source(props, ctx, node)?);
    }
    f.rebuild();
    Ok(Box::new(f))
}

/// Starts the watches of `kubernetes on`.
fn kube_source(props: &Props, ctx: &BuildContext, node: String) -> Result<KubeSource, ConfigError> {
    let url = props
        .str("kube_url")
        .unwrap_or("https://kubernetes.default.svc");
    let (https, host, port) = parse_url(url).ok_or_else(|| {
        props.error(
            "kube_url",
            "a URL such as https://kubernetes.default.svc or http://127.0.0.1:8001",
        )
    })?;
    let max = props.int("kube_max_objects").unwrap_or(100_000);
    if max < 1 {
        return Err(props.error("kube_max_objects", "a number of objects >= 1"));
    }
    let path = |n: &str| props.str(n).map(PathBuf::from);
    let conf = ClientConf {
        https,
        host,
        port,
        ca_file: path("kube_ca_file"),
        ca_path: path("kube_ca_path"),
        verify: props.bool("tls.verify").unwrap_or(true),
        verify_hostname: false,
        vhost: props.str("tls.vhost").map(String::from),
        token_file: path("kube_token_file"),
        token_command: props.str("kube_token_command").map(String::from),
        token_ttl: props
            .time("kube_token_ttl")
            .unwrap_or(Duration::from_secs(600)),
        buffer_size: 0,
        timeout: Duration::from_secs(10),
    };
    Ok(KubeSource {
        conf,
        who: format!("[filter:flow_aggregate:{}]", ctx.instance),
        runner: None,
        pods: Arc::new(Store::new("pods", max as usize)),
        services: Arc::new(Store::new("services", max as usize)),
        slices: Arc::new(Store::new("endpointslices", max as usize)),
        seen: [0; 3],
        node,
        checked: None,
        synced: false,
    })
}

/// An interval plus a random part of up to `percent` of it (Calico's jittered ticker).
fn jittered(interval: Duration, percent: u32) -> Duration {
    if percent == 0 {
        return interval;
    }
    let max = interval.as_millis() as u64 * percent as u64 / 100;
    interval + Duration::from_millis(fastrand::u64(0..=max))
}

/// The socket sampler when include_process or include_tcp_stats is on.
fn sampler(
    props: &Props,
    ctx: &BuildContext,
    process: bool,
) -> Result<Option<Sampler>, ConfigError> {
    let tcp = props.bool("include_tcp_stats").unwrap_or(false);
    if !process && !tcp {
        return Ok(None);
    }
    let interval = props
        .time("sample_interval")
        .unwrap_or(Duration::from_secs(5));
    if interval < Duration::from_millis(100) {
        return Err(props.error("sample_interval", "an interval of at least 100ms"));
    }
    let netns = props
        .str("netns")
        .filter(|_| props.is_set("netns"))
        .map(PathBuf::from);
    if let Some(p) = netns.as_ref().filter(|p| !p.exists()) {
        return Err(props.error("netns", format!("the path of a network namespace ({} does not exist; `ip netns add NAME` creates /var/run/netns/NAME)", p.display())));
    }
    let opts = sockets::Options {
        netns,
        process,
        tcp,
        interval,
    };
    let counters = sockets::Counters {
        dumps: ctx.metrics.counter(
            "agent_flow_aggregate_sockdiag_dumps_total",
            "sock_diag dumps of the local sockets (include_process/include_tcp_stats).",
            ctx.instance,
        ),
        errors: ctx.metrics.counter(
            "agent_flow_aggregate_sockdiag_errors_total",
            "sock_diag dumps that failed (no new process or TCP data until the next one).",
            ctx.instance,
        ),
        scans: ctx.metrics.counter(
            "agent_flow_aggregate_process_scans_total",
            "Scans of /proc/*/fd for the processes of sockets not known yet (at most one per sample_interval).",
            ctx.instance,
        ),
        misses: ctx.metrics.counter(
            "agent_flow_aggregate_process_misses_total",
            "Local sockets of flows whose process was not found (gone, or not scanned yet).",
            ctx.instance,
        ),
    };
    let s = Sampler::open(opts, Arc::from(ctx.instance), counters).map_err(|e| {
        let key = if props.is_set("netns") {
            "netns"
        } else if process {
            "include_process"
        } else {
            "include_tcp_stats"
        };
        props.error(key, format!("a sock_diag socket that opens ({e})"))
    })?;
    Ok(Some(s))
}

fn modified(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn field<'a>(r: &'a Record, k: &str) -> Option<&'a Value> {
    r.body.iter().find(|(x, _)| &**x == k).map(|(_, v)| v)
}

fn text<'a>(r: &'a Record, k: &str) -> Option<&'a str> {
    match field(r, k) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

fn uint(r: &Record, k: &str) -> u64 {
    match field(r, k) {
        Some(Value::UInt(n)) => *n,
        Some(Value::Int(n)) => (*n).max(0) as u64,
        _ => 0,
    }
}

fn int(r: &Record, k: &str) -> Option<i64> {
    match field(r, k) {
        Some(Value::Int(n)) => Some(*n),
        Some(Value::UInt(n)) => i64::try_from(*n).ok(),
        _ => None,
    }
}

fn ip(r: &Record, k: &str) -> Option<IpAddr> {
    text(r, k)?.parse().ok()
}

/// The rule an nflog record names, as a policy trace entry.
fn hit(r: &Record, action: Action) -> Option<Hit> {
    let policy = text(r, "policy")?;
    let tier = text(r, "tier").unwrap_or("default");
    Some(Hit::new(tier, policy, action, int(r, "rule").unwrap_or(0)))
}

/// A conntrack or nflog record as an update; `None` for any other record.
fn update(r: &Record) -> Option<Update> {
    let event = text(r, "event")?;
    let proto = uint(r, "proto_num") as u8;
    let has_ports = matches!(field(r, "src_port"), Some(Value::UInt(_)));
    let src = ip(r, "src_ip")?;
    // ICMP's flow key: the echo identifier and type << 8 | code (Calico's tuple).
    let icmp = |sport: u16, dport: u16| {
        if has_ports {
            (sport, dport)
        } else {
            (
                uint(r, "icmp_id") as u16,
                (uint(r, "icmp_type") as u16) << 8 | uint(r, "icmp_code") as u16,
            )
        }
    };
    if event == "packet" {
        let action = match text(r, "action") {
            Some("allow") => Action::Allow,
            Some("pass") => Action::Pass,
            _ => Action::Deny,
        };
        let side = match text(r, "direction") {
            Some("egress") => Some(Reporter::Src),
            Some("ingress") => Some(Reporter::Dst),
            _ => None,
        };
        let (sport, dport) = icmp(uint(r, "src_port") as u16, uint(r, "dst_port") as u16);
        return Some(Update {
            conn: Conn {
                proto,
                src,
                sport,
                dst: ip(r, "dst_ip")?,
                dport,
            },
            has_ports,
            orig_packets: uint(r, "packets").max(1),
            orig_bytes: uint(r, "bytes"),
            reply_packets: 0,
            reply_bytes: 0,
            expired: false,
            kind: Kind::Packet {
                action,
                side,
                hit: hit(r, action),
            },
            nat_port: 0,
            pre_dnat: None,
            sockets: LocalSockets::default(),
        });
    }
    if !matches!(event, "new" | "update" | "sample" | "destroy") {
        return None;
    }
    // The post-DNAT destination is where the reply comes from.
    let dst = ip(r, "reply_src_ip").or_else(|| ip(r, "dst_ip"))?;
    let (sport, dport) = icmp(uint(r, "src_port") as u16, uint(r, "reply_src_port") as u16);
    let orig_dst = ip(r, "dst_ip");
    let pre_dnat = match (orig_dst, has_ports) {
        (Some(d), true) if field(r, "dnat") == Some(&Value::Bool(true)) => {
            Some((d, uint(r, "dst_port") as u16))
        }
        _ => None,
    };
    // Source NAT: the port the connection leaves from is the reply's destination port.
    let nat_port = if has_ports && field(r, "snat") == Some(&Value::Bool(true)) {
        uint(r, "reply_dst_port") as u16
    } else {
        0
    };
    Some(Update {
        conn: Conn {
            proto,
            src,
            sport,
            dst,
            dport,
        },
        has_ports,
        orig_packets: uint(r, "delta_orig_packets"),
        orig_bytes: uint(r, "delta_orig_bytes"),
        reply_packets: uint(r, "delta_reply_packets"),
        reply_bytes: uint(r, "delta_reply_bytes"),
        // Only DESTROY ends a connection. (Calico's poller also ends TCP past TIME_WAIT;
        // with events, that would count the DESTROY that follows as a second flow.)
        expired: event == "destroy",
        kind: Kind::Conntrack,
        nat_port,
        pre_dnat,
        sockets: LocalSockets::default(),
    })
}

impl FlowAggregateFilter {
    /// The table from the file's and the API's endpoints.
    fn rebuild(&mut self) {
        // The old table goes first, so that two are never held at once (flows keep
        // the endpoints they name).
        self.endpoints = Endpoints::new();
        let mut eps = self.file_eps.clone();
        let mut waiting = false;
        if let Some(k) = &self.kube {
            let (pods, services, slices) = (
                k.pods.snapshot(),
                k.services.snapshot(),
                k.slices.snapshot(),
            );
            eps.add_kubernetes(&pods, &services, &slices, &k.node);
            waiting = !k.synced;
        }
        self.install(eps, !waiting);
    }

    /// Rebuilds the table when the API's objects changed (checked once a second).
    fn kube_check(&mut self, now: Instant) {
        let Some(k) = &mut self.kube else { return };
        if k.runner.is_none() {
            let r = watch::Runner::start("kube-watch");
            r.watch(&k.conf, "/api/v1/pods", &k.pods, PodInfo::decode, &k.who);
            r.watch(
                &k.conf,
                "/api/v1/services",
                &k.services,
                ServiceInfo::decode,
                &k.who,
            );
            r.watch(
                &k.conf,
                "/apis/discovery.k8s.io/v1/endpointslices",
                &k.slices,
                SliceInfo::decode,
                &k.who,
            );
            k.runner = Some(r);
        }
        if k.checked
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        k.checked = Some(now);
        let gens = k.stores().map(|s| s.generation());
        if gens == k.seen {
            return;
        }
        k.seen = gens;
        if !k.synced && k.stores().iter().all(|s| s.synced()) {
            k.synced = true;
            let n: Vec<String> = k
                .stores()
                .iter()
                .map(|s| format!("{} {}", s.held(), s.resource()))
                .collect();
            crate::info!(
                "[filter:flow_aggregate:{}] Kubernetes API listed: {}",
                self.name,
                n.join(", ")
            );
        }
        for s in k.stores() {
            let dropped = s.take_dropped();
            if dropped > 0 {
                crate::warn!(
                    "[filter:flow_aggregate:{}] {dropped} {} left out: kube_max_objects are held",
                    self.name,
                    s.resource()
                );
            }
        }
        self.rebuild();
    }

    fn install(&mut self, mut eps: Endpoints, warn: bool) {
        eps.mark_local(&self.local);
        self.any_local = eps.any_local();
        if !self.any_local && warn {
            crate::warn!(
                "[filter:flow_aggregate:{}] no endpoint is marked local (local_endpoints, \"local\": true in the endpoints file, or pods on node_name with kubernetes on): every flow is reported by its source",
                self.name
            );
        }
        self.endpoints = eps;
    }

    fn reload_if_changed(&mut self) {
        let Some(src) = &mut self.source else { return };
        let m = modified(&src.path);
        if m == src.modified {
            return;
        }
        src.modified = m;
        match Endpoints::load(&src.path, &src.node) {
            Ok(eps) => {
                crate::info!(
                    "[filter:flow_aggregate:{}] reloaded {} endpoints and {} service addresses from {}",
                    self.name,
                    eps.len(),
                    eps.services_len(),
                    src.path.display()
                );
                self.local = src.local.clone();
                self.file_eps = eps;
                self.rebuild();
            }
            Err(e) => crate::error!(
                "[filter:flow_aggregate:{}] keeping the previous endpoints: {e}",
                self.name
            ),
        }
    }

    fn emit(&mut self, out: &mut Vec<Chunk>) {
        if self.agg.overflow > 0 {
            crate::warn!("[filter:flow_aggregate:{}] {} updates dropped: more than max_flows aggregated flows in this interval", self.name, self.agg.overflow);
        }
        metrics::add(&self.overflow, self.agg.overflow);
        if self.agg.dns.overflow > 0 {
            crate::warn!("[filter:flow_aggregate:{}] {} DNS answers not learnt: dns_cache_max addresses held", self.name, self.agg.dns.overflow);
            metrics::add(
                &self.dns_overflow,
                std::mem::take(&mut self.agg.dns.overflow),
            );
        }
        metrics::set(&self.dns_addresses, self.agg.dns.len() as u64);
        let now = EventTime::now();
        let records = self.agg.flush(unix_now(), now);
        metrics::add(&self.emitted, records.len() as u64);
        metrics::set(&self.active, self.agg.len() as u64);
        if let Some(m) = &mut self.flow_metrics {
            m.add(&records, &self.agg.copies);
            if !m.series.is_empty() {
                let mut chunk = Chunk::new(m.tag.clone(), Vec::new());
                chunk.metrics.push(Arc::new(m.set(now)));
                out.push(chunk);
            }
        }
        if !records.is_empty() {
            out.push(Chunk::new(self.tag.clone(), records));
        }
    }
}

impl Filter for FlowAggregateFilter {
    fn filter(&mut self, _tag: &str, records: &mut Vec<Record>, now: Instant) -> FilterResult {
        let before = records.len();
        let (agg, eps, any_local) = (&mut self.agg, &self.endpoints, self.any_local);
        agg.dns.set_now(now);
        let sampler = &mut self.sampler;
        records.retain(|r| {
            if let Some(answers) = domains::answers(r) {
                agg.dns.learn(answers);
                return false;
            }
            match update(r) {
                Some(mut u) => {
                    if let Some(s) = sampler.as_mut().filter(|_| u.kind == Kind::Conntrack) {
                        u.sockets = s.annotate(r);
                    }
                    agg.add(&u, eps, any_local);
                    false
                }
                None => true,
            }
        });
        if records.len() == before {
            FilterResult::NoTouch
        } else {
            FilterResult::Modified
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Chunk>) {
        self.reload_if_changed();
        self.agg.dns.set_now(now);
        self.kube_check(now);
        let last = *self.last.get_or_insert(now);
        if now.duration_since(last) >= self.next {
            self.last = Some(now);
            self.next = jittered(self.interval, self.jitter);
            self.emit(out);
        }
    }

    fn shutdown(&mut self, _now: Instant, out: &mut Vec<Chunk>) {
        self.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, Value)]) -> Record {
        Record::new(
            EventTime::default(),
            pairs
                .iter()
                .map(|(k, v)| (Arc::from(*k), v.clone()))
                .collect(),
        )
    }

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    #[test]
    fn conntrack_records_become_updates_with_post_dnat_destination() {
        let r = rec(&[
            ("event", s("sample")),
            ("proto_num", Value::UInt(6)),
            ("src_ip", s("10.0.0.1")),
            ("src_port", Value::UInt(40000)),
            ("dst_ip", s("10.96.0.10")),
            ("dst_port", Value::UInt(80)),
            ("reply_src_ip", s("10.0.1.7")),
            ("reply_src_port", Value::UInt(8080)),
            ("tcp_state", s("ESTABLISHED")),
            ("delta_orig_bytes", Value::UInt(10)),
            ("delta_reply_bytes", Value::UInt(20)),
            ("delta_orig_packets", Value::Nil),
        ]);
        let u = update(&r).unwrap();
        assert_eq!(u.conn.dst, "10.0.1.7".parse::<IpAddr>().unwrap());
        assert_eq!(u.conn.dport, 8080);
        assert_eq!((u.orig_bytes, u.reply_bytes, u.orig_packets), (10, 20, 0));
        assert!(!u.expired);
        assert!(
            update(&rec(&[("message", s("x"))])).is_none(),
            "other records pass"
        );
    }

    #[test]
    fn endpoints_reload_on_change_and_a_bad_file_keeps_the_old_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.json");
        let write = |name: &str| {
            std::fs::write(
                &path,
                format!(r#"[{{"cidr": "10.0.0.1", "name": "{name}", "local": true}}]"#),
            )
            .unwrap();
        };
        write("first");
        let mut f = FlowAggregateFilter {
            agg: Aggregator::new(Options::default(), "h", 0),
            endpoints: Endpoints::new(),
            any_local: false,
            file_eps: Endpoints::new(),
            kube: None,
            source: Some(EndpointsSource {
                path: path.clone(),
                node: "n".into(),
                local: vec![],
                modified: None,
            }),
            local: vec![],
            interval: Duration::from_secs(1),
            jitter: 0,
            next: Duration::from_secs(1),
            last: None,
            tag: Arc::from("flowlogs"),
            name: Arc::from("flow_aggregate.0"),
            active: Arc::default(),
            emitted: Arc::default(),
            overflow: Arc::default(),
            dns_overflow: Arc::default(),
            dns_addresses: Arc::default(),
            flow_metrics: None,
            sampler: None,
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        f.reload_if_changed();
        assert_eq!(&*f.endpoints.lookup(ip).name, "first");
        assert!(f.any_local);
        write("second");
        f.source.as_mut().unwrap().modified = None; // mtime granularity: force "changed"
        f.reload_if_changed();
        assert_eq!(&*f.endpoints.lookup(ip).name, "second");
        std::fs::write(&path, "{ not json").unwrap();
        f.source.as_mut().unwrap().modified = None;
        f.reload_if_changed();
        assert_eq!(
            &*f.endpoints.lookup(ip).name,
            "second",
            "a bad file keeps the previous table"
        );
    }

    #[test]
    fn nflog_packets_become_denied_updates() {
        let r = rec(&[
            ("event", s("packet")),
            ("proto_num", Value::UInt(6)),
            ("src_ip", s("10.0.0.1")),
            ("src_port", Value::UInt(1)),
            ("dst_ip", s("10.0.0.2")),
            ("dst_port", Value::UInt(5432)),
            ("bytes", Value::UInt(60)),
            ("packets", Value::UInt(1)),
            ("action", s("deny")),
            ("direction", s("ingress")),
            ("policy", s("default/default.deny-db")),
            ("tier", s("default")),
            ("rule", Value::Int(3)),
        ]);
        let u = update(&r).unwrap();
        assert_eq!(u.orig_bytes, 60);
        assert_eq!(
            u.kind,
            Kind::Packet {
                action: Action::Deny,
                side: Some(Reporter::Dst),
                hit: Some(Hit::new(
                    "default",
                    "default/default.deny-db",
                    Action::Deny,
                    3
                )),
            }
        );
    }

    #[test]
    fn icmp_ids_snat_ports_and_the_pre_dnat_destination() {
        let icmp = rec(&[
            ("event", s("destroy")),
            ("proto_num", Value::UInt(1)),
            ("src_ip", s("10.0.0.1")),
            ("src_port", Value::Nil),
            ("dst_ip", s("10.0.0.2")),
            ("reply_src_ip", s("10.0.0.2")),
            ("icmp_type", Value::UInt(8)),
            ("icmp_code", Value::UInt(0)),
            ("icmp_id", Value::UInt(77)),
        ]);
        let u = update(&icmp).unwrap();
        assert_eq!(
            (u.conn.sport, u.conn.dport, u.has_ports),
            (77, 8 << 8, false)
        );
        let nat = rec(&[
            ("event", s("new")),
            ("proto_num", Value::UInt(6)),
            ("src_ip", s("10.0.0.1")),
            ("src_port", Value::UInt(40000)),
            ("dst_ip", s("10.96.0.10")),
            ("dst_port", Value::UInt(80)),
            ("reply_src_ip", s("10.0.1.7")),
            ("reply_src_port", Value::UInt(8080)),
            ("reply_dst_ip", s("192.0.2.1")),
            ("reply_dst_port", Value::UInt(61000)),
            ("snat", Value::Bool(true)),
            ("dnat", Value::Bool(true)),
        ]);
        let u = update(&nat).unwrap();
        assert_eq!(u.nat_port, 61000);
        assert_eq!(u.pre_dnat, Some(("10.96.0.10".parse().unwrap(), 80)));
        assert_eq!(u.conn.dport, 8080);
    }

    /// Series add up across intervals (Prometheus counters); past metrics_max_series a
    /// new label set is not created and its records are counted as overflow.
    #[test]
    fn flow_metrics_are_cumulative_and_bounded() {
        let flow = |src: &str, bytes: u64| {
            rec(&[
                ("source_namespace", s("ns")),
                ("source_name_aggr", s(src)),
                ("dest_namespace", s("ns")),
                ("dest_name_aggr", s("db-*")),
                ("proto", s("tcp")),
                ("action", s("allow")),
                ("reporter", s("src")),
                ("bytes_out", Value::UInt(bytes)),
            ])
        };
        let mut m = FlowMetrics {
            tag: Arc::from("m"),
            max_series: 1,
            series: Default::default(),
            overflow: Arc::default(),
        };
        m.add(&[flow("web-*", 10)], &[]);
        m.add(
            &[flow("web-*", 5), flow("web-*", 5), flow("api-*", 7)],
            &[false, true],
        );
        let set = m.set(EventTime::new(1, 0));
        let out = set.family("agent_flow_bytes_out_total").unwrap();
        assert_eq!(
            out.value(&["ns", "web-*", "ns", "db-*", "tcp", "allow", "src"]),
            Some(15.0)
        );
        assert_eq!(out.samples.len(), 1);
        assert_eq!(metrics::get(&m.overflow), 1);
        assert_eq!(set.families.len(), 6);
    }
}
