//! `flow_aggregate` filter: Calico-style flow logs from `conntrack` (and `nflog`)
//! records. It consumes those records and, every `flush_interval`, emits one record per
//! aggregated flow with Calico Enterprise's field names, tagged `tag`. Other records
//! pass through untouched. Calico: felix/collector/flowlog (shared/spec/flows.md §2, §5).

mod aggregate;
mod endpoints;
mod sockets;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{Chunk, EventTime, Record, Tag, Value};
use crate::pipeline::metrics;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};
use aggregate::{Action, Aggregator, Conn, ProcessOptions, Update};
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
    PropSpec::new("max_flows", PropKind::Int, Some("100000"), "Most aggregated flows held in one interval; updates beyond it are counted and dropped."),
    PropSpec::new("metrics_tag", PropKind::Str, None, "Also emit, every flush_interval, cumulative traffic counters between workloads (agent_flow_*) as metrics with this tag, for prometheus_exporter or prometheus_remote_write."),
    PropSpec::new("metrics_max_series", PropKind::Int, Some("10000"), "Most label sets (source, destination, proto, action, reporter) the flow metrics keep; flows of new ones beyond it are counted in agent_flow_aggregate_metrics_overflow_total."),
    PropSpec::new("include_process", PropKind::Bool, Some("false"), "Name the process of a flow's local socket (process_name, process_id, process_args): sockets listed with sock_diag each sample_interval, their processes found through /proc; one record per process name."),
    PropSpec::new("include_tcp_stats", PropKind::Bool, Some("false"), "TCP statistics of a flow's local sockets (tcp_* fields: RTT, MSS, congestion window, retransmissions) from sock_diag's tcp_info, sampled each sample_interval."),
    PropSpec::new("sample_interval", PropKind::Time, Some("5s"), "How often the local sockets are listed for include_process/include_tcp_stats (one sock_diag dump per interval, taken when conntrack records arrive; at least 100ms)."),
    PropSpec::new("netns", PropKind::Str, None, "List the sockets of the network namespace at this path (as the conntrack input's netns) instead of the agent's own."),
    PropSpec::new("process_limit", PropKind::Int, Some("2"), "Process names with a record of their own per aggregated flow; the others share one record with process_name \"*\" (Calico's flowLogsFilePerFlowProcessLimit)."),
    PropSpec::new("process_args_limit", PropKind::Int, Some("5"), "Most argument strings listed in process_args when a record covers several processes (Calico's flowLogsFilePerFlowProcessArgsLimit)."),
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

struct FlowAggregateFilter {
    agg: Aggregator,
    endpoints: Endpoints,
    any_local: bool,
    source: Option<EndpointsSource>,
    local: Vec<(IpAddr, u8)>,
    interval: Duration,
    last: Option<Instant>,
    tag: Tag,
    name: Arc<str>,
    /// `agent_flow_aggregate_active_flows`, `..._records_total`, `..._overflow_total`.
    active: Arc<AtomicU64>,
    emitted: Arc<AtomicU64>,
    overflow: Arc<AtomicU64>,
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
    fn add(&mut self, records: &[Record]) {
        for r in records {
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
    let processes = ProcessOptions {
        include: props.bool("include_process").unwrap_or(false),
        limit: match props.int("process_limit").unwrap_or(2) {
            n @ 1.. => n as usize,
            _ => return Err(props.error("process_limit", "a number of process names >= 1")),
        },
        args_limit: match props.int("process_args_limit").unwrap_or(5) {
            n @ 1.. => n as usize,
            _ => return Err(props.error("process_args_limit", "a number of arguments >= 1")),
        },
    };
    let sampler = sampler(props, ctx, processes.include)?;
    let mut f = FlowAggregateFilter {
        agg: Aggregator::new(
            level(props, "aggregation_kind_for_allowed")?,
            level(props, "aggregation_kind_for_denied")?,
            max as usize,
            &node,
            unix_now(),
        ),
        endpoints: Endpoints::new(),
        any_local: false,
        source: None,
        local: local.clone(),
        interval,
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
    f.agg.processes = processes;
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
            node,
            local,
        });
        f.install(eps);
    } else {
        let mut eps = Endpoints::new();
        eps.mark_local(&f.local);
        f.install(eps);
    }
    Ok(Box::new(f))
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
    let mut s = Sampler::open(opts, Arc::from(ctx.instance)).map_err(|e| {
        let key = if props.is_set("netns") {
            "netns"
        } else if process {
            "include_process"
        } else {
            "include_tcp_stats"
        };
        props.error(key, format!("a sock_diag socket that opens ({e})"))
    })?;
    s.dumps = ctx.metrics.counter(
        "agent_flow_aggregate_sockdiag_dumps_total",
        "sock_diag dumps of the local sockets (include_process/include_tcp_stats).",
        ctx.instance,
    );
    s.errors = ctx.metrics.counter(
        "agent_flow_aggregate_sockdiag_errors_total",
        "sock_diag dumps that failed (no process or TCP data until the next one).",
        ctx.instance,
    );
    s.scans = ctx.metrics.counter(
        "agent_flow_aggregate_process_scans_total",
        "Scans of /proc/*/fd for the processes of sockets not known yet (at most one per sample_interval).",
        ctx.instance,
    );
    s.misses = ctx.metrics.counter(
        "agent_flow_aggregate_process_misses_total",
        "Local sockets of flows whose process was not found (gone, or not scanned yet).",
        ctx.instance,
    );
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

/// A conntrack or nflog record as an update; `None` for any other record.
fn update(r: &Record) -> Option<Update> {
    let event = text(r, "event")?;
    let proto = uint(r, "proto_num") as u8;
    let has_ports = matches!(field(r, "src_port"), Some(Value::UInt(_)));
    let src: IpAddr = text(r, "src_ip")?.parse().ok()?;
    if event == "packet" {
        let action = match text(r, "action") {
            Some("allow") => Action::Allow,
            _ => Action::Deny,
        };
        return Some(Update {
            conn: Conn {
                proto,
                src,
                sport: uint(r, "src_port") as u16,
                dst: text(r, "dst_ip")?.parse().ok()?,
                dport: uint(r, "dst_port") as u16,
            },
            has_ports,
            orig_packets: uint(r, "packets").max(1),
            orig_bytes: uint(r, "bytes"),
            reply_packets: 0,
            reply_bytes: 0,
            expired: false,
            packet: true,
            action,
            policies: text(r, "policy")
                .map(|p| vec![p.to_string()])
                .unwrap_or_default(),
            sockets: LocalSockets::default(),
        });
    }
    if !matches!(event, "new" | "update" | "sample" | "destroy") {
        return None;
    }
    // The post-DNAT destination is where the reply comes from.
    let dst: IpAddr = text(r, "reply_src_ip")
        .or_else(|| text(r, "dst_ip"))?
        .parse()
        .ok()?;
    let dport = if has_ports {
        uint(r, "reply_src_port") as u16
    } else {
        0
    };
    Some(Update {
        conn: Conn {
            proto,
            src,
            sport: uint(r, "src_port") as u16,
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
        packet: false,
        action: Action::Allow,
        policies: Vec::new(),
        sockets: LocalSockets::default(),
    })
}

impl FlowAggregateFilter {
    fn install(&mut self, mut eps: Endpoints) {
        eps.mark_local(&self.local);
        self.any_local = eps.any_local();
        if !self.any_local {
            crate::warn!(
                "[filter:flow_aggregate:{}] no endpoint is marked local (local_endpoints, or \"local\": true in the endpoints file): every flow is reported by its source",
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
                    "[filter:flow_aggregate:{}] reloaded {} endpoints from {}",
                    self.name,
                    eps.len(),
                    src.path.display()
                );
                self.local = src.local.clone();
                self.install(eps);
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
        let now = EventTime::now();
        let records = self.agg.flush(unix_now(), now);
        metrics::add(&self.emitted, records.len() as u64);
        metrics::set(&self.active, self.agg.len() as u64);
        if let Some(m) = &mut self.flow_metrics {
            m.add(&records);
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
        let sampler = &mut self.sampler;
        records.retain(|r| match update(r) {
            Some(mut u) => {
                if let Some(s) = sampler.as_mut().filter(|_| !u.packet) {
                    u.sockets = s.annotate(r, now);
                }
                agg.add(&u, eps, any_local);
                false
            }
            None => true,
        });
        if records.len() == before {
            FilterResult::NoTouch
        } else {
            FilterResult::Modified
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Chunk>) {
        self.reload_if_changed();
        let last = *self.last.get_or_insert(now);
        if now.duration_since(last) >= self.interval {
            self.last = Some(now);
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
            agg: Aggregator::new(2, 1, 10, "h", 0),
            endpoints: Endpoints::new(),
            any_local: false,
            source: Some(EndpointsSource {
                path: path.clone(),
                node: "n".into(),
                local: vec![],
                modified: None,
            }),
            local: vec![],
            interval: Duration::from_secs(1),
            last: None,
            tag: Arc::from("flowlogs"),
            name: Arc::from("flow_aggregate.0"),
            active: Arc::default(),
            emitted: Arc::default(),
            overflow: Arc::default(),
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
            ("policy", s("default/deny-db")),
        ]);
        let u = update(&r).unwrap();
        assert_eq!((u.action, u.packet, u.orig_bytes), (Action::Deny, true, 60));
        assert_eq!(u.policies, ["default/deny-db"]);
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
        m.add(&[flow("web-*", 10)]);
        m.add(&[flow("web-*", 5), flow("api-*", 7)]);
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
