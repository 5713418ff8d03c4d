//! Calico's flow-log aggregation, sans-IO: updates in, one record per aggregated flow
//! out at each flush. Keys per level, counting, verdicts and calibration follow Calico
//! Enterprise's felix/collector/flowlog (shared/spec/flows.md §2.3–2.5).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::domains::{self, DnsCache};
use super::endpoints::{Endpoint, Endpoints, Service};
use crate::event::{EventTime, Map, Record, Str, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Deny,
    /// Calico's next-tier: part of a policy trace, never a flow's verdict.
    Pass,
}

/// The side reporting a flow: `src` for egress, `dst` for ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    Src,
    Dst,
}

/// A connection's identity within an interval (post-DNAT destination). For ICMP, as in
/// Calico's tuple, `sport` is the echo identifier and `dport` is type << 8 | code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conn {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// One policy rule that logged a packet: `tier|policy|action|rule`, the policy trace
/// entry of Calico's flow logs without its index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hit {
    pub text: Arc<str>,
    pub action: Action,
    /// A staged policy: in `all_policies` and `pending_policies`, not enforced.
    pub staged: bool,
}

impl Hit {
    pub fn new(tier: &str, policy: &str, action: Action, rule: i64) -> Hit {
        let a = match action {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Pass => "pass",
        };
        Hit {
            text: Arc::from(format!("{tier}|{policy}|{a}|{rule}")),
            action,
            staged: policy.contains("staged:"),
        }
    }
}

/// What an update is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Conntrack's counters for a connection (an event or a sample).
    Conntrack,
    /// A packet logged by NFLOG: a rule's verdict, and for a deny the packet itself.
    Packet {
        action: Action,
        /// The side whose policy acted (Calico prefixes); else by locality.
        side: Option<Reporter>,
        hit: Option<Hit>,
    },
}

/// One observation of a connection (a conntrack event or sample, or a logged packet).
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub conn: Conn,
    /// Port-less protocols (ICMP) have no ports in the record.
    pub has_ports: bool,
    pub orig_packets: u64,
    pub orig_bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// The connection ended (DESTROY).
    pub expired: bool,
    pub kind: Kind,
    /// Source NAT: the port the connection leaves the node from (conntrack's reply
    /// destination port), 0 when not SNAT'd.
    pub nat_port: u16,
    /// The destination before DNAT (a service's cluster IP and port), when DNAT'd.
    pub pre_dnat: Option<(IpAddr, u16)>,
}

/// What the filter's options ask of every record.
#[derive(Clone, Debug)]
pub struct Options {
    pub level_allowed: u8,
    pub level_denied: u8,
    pub max_entries: usize,
    pub include_labels: bool,
    pub include_policies: bool,
    pub include_service: bool,
    pub nat_port_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            level_allowed: 2,
            level_denied: 1,
            max_entries: 100_000,
            include_labels: false,
            include_policies: false,
            include_service: false,
            nat_port_limit: 3,
        }
    }
}

/// The "same flow" key: what is not masked at the entry's aggregation level.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    proto: u8,
    sport: Option<u16>,
    dport: Option<u16>,
    src: Side,
    dst: Side,
    service: Option<Arc<Service>>,
    action: Action,
    reporter: Reporter,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Side {
    kind: Arc<str>,
    namespace: Arc<str>,
    name: Arc<str>,
    name_aggr: Arc<str>,
}

type Trace = Arc<[Hit]>;

#[derive(Default)]
struct Entry {
    bytes_in: u64,
    bytes_out: u64,
    packets_in: u64,
    packets_out: u64,
    /// Every connection of the interval (`num_flows`), carried-over active ones included.
    conns: HashMap<Conn, ConnState>,
    src_labels: Option<BTreeMap<String, String>>,
    dst_labels: Option<BTreeMap<String, String>>,
    /// `dest_domains`: names the destination was resolved from (bounded).
    domains: Vec<Str>,
    /// The distinct policy traces seen: one record each.
    traces: Vec<Trace>,
    /// Labels and traces are reset by the first update after a flush (an idle entry
    /// carried over keeps showing the last ones), as Calico's `resetAggrData`.
    reset: bool,
    /// Updated since the last flush.
    touched: bool,
}

/// One connection of an entry, this interval.
#[derive(Clone, Copy, Default)]
struct ConnState {
    /// What it added to the entry's counters: packets out, bytes out, packets in, bytes in.
    counts: [u64; 4],
    /// Its source NAT port (0: none).
    nat_port: u16,
    started: bool,
    completed: bool,
    active: bool,
}

impl Entry {
    fn count(&self, f: impl Fn(&ConnState) -> bool) -> u64 {
        self.conns.values().filter(|c| f(c)).count() as u64
    }

    fn has_active(&self) -> bool {
        self.conns.values().any(|c| c.active)
    }
}

fn intersect(acc: &mut Option<BTreeMap<String, String>>, labels: &BTreeMap<String, String>) {
    match acc {
        None => *acc = Some(labels.clone()),
        Some(a) => a.retain(|k, v| labels.get(k) == Some(v)),
    }
}

/// What NFLOG said about one side of a connection.
#[derive(Default)]
struct SideVerdict {
    /// Hits of the packet being logged (a trace ends at an allow or deny).
    building: Vec<Hit>,
    /// The last complete trace.
    trace: Option<Trace>,
    denied: bool,
}

#[derive(Default)]
struct Verdict {
    sides: [SideVerdict; 2],
    /// The interval it was last updated in.
    seen: u64,
}

impl SideVerdict {
    /// Adds a rule hit; returns the trace when the hit completes it.
    fn hit(&mut self, hit: Hit) -> Option<Trace> {
        // A staged policy's verdict is not enforced: the trace goes on.
        let last = hit.action != Action::Pass && !hit.staged;
        if !self.building.contains(&hit) {
            self.building.push(hit);
        }
        if !last {
            return None;
        }
        let trace: Trace = Arc::from(std::mem::take(&mut self.building));
        if self.trace.as_ref() != Some(&trace) {
            self.trace = Some(trace);
        }
        self.trace.clone()
    }
}

/// Aggregation options, the entries of the current interval, the interval's start
/// (Unix seconds), and the policy verdicts NFLOG gave each connection.
pub struct Aggregator {
    opts: Options,
    entries: HashMap<Key, Entry>,
    verdicts: HashMap<Conn, Verdict>,
    interval: u64,
    /// Updates dropped because `max_entries` was reached (this interval).
    pub overflow: u64,
    /// Of the last flush's records, those that repeat a flow's counters for another of
    /// its policy traces (sums must skip them).
    pub copies: Vec<bool>,
    start: i64,
    host: Value,
    keys: Vec<Str>,
    dash: Value,
    /// Names of addresses learnt from DNS answers, for `dest_domains`.
    pub dns: DnsCache,
}

pub const FIELDS: [&str; 55] = [
    "start_time",
    "end_time",
    "source_ip",
    "source_name",
    "source_name_aggr",
    "source_namespace",
    "nat_outgoing_ports",
    "source_port",
    "source_type",
    "source_labels",
    "dest_ip",
    "dest_name",
    "dest_name_aggr",
    "dest_namespace",
    "dest_port",
    "dest_type",
    "dest_labels",
    "dest_service_namespace",
    "dest_service_name",
    "dest_service_port",
    "dest_service_port_num",
    "dest_domains",
    "proto",
    "action",
    "reporter",
    "policies",
    "bytes_in",
    "bytes_out",
    "num_flows",
    "num_flows_started",
    "num_flows_completed",
    "packets_in",
    "packets_out",
    "http_requests_allowed_in",
    "http_requests_denied_in",
    "process_name",
    "num_process_names",
    "process_id",
    "num_process_ids",
    "process_args",
    "num_process_args",
    "original_source_ips",
    "num_original_source_ips",
    "tcp_mean_send_congestion_window",
    "tcp_min_send_congestion_window",
    "tcp_mean_smooth_rtt",
    "tcp_max_smooth_rtt",
    "tcp_mean_min_rtt",
    "tcp_max_min_rtt",
    "tcp_mean_mss",
    "tcp_min_mss",
    "tcp_total_retransmissions",
    "tcp_lost_packets",
    "tcp_unrecovered_to",
    "host",
];

/// Protocol names as Calico's flow logs write them (felix/collector/flowlog
/// json_serializer.go); any other protocol is its number.
pub fn proto_name(n: u8) -> Option<&'static str> {
    Some(match n {
        1 => "icmp",
        4 => "ipip",
        6 => "tcp",
        17 => "udp",
        50 => "esp",
        58 => "icmp6",
        132 => "sctp",
        _ => return None,
    })
}

fn side(ep: &Endpoint, masked: bool) -> Side {
    Side {
        kind: ep.kind.clone(),
        namespace: ep.namespace.clone(),
        name: if masked {
            Arc::from("-")
        } else {
            ep.name.clone()
        },
        name_aggr: ep.name_aggr.clone(),
    }
}

fn str_value(s: &str) -> Value {
    Value::Str(Arc::from(s))
}

fn labels_value(l: &Option<BTreeMap<String, String>>) -> Value {
    let list = l
        .iter()
        .flatten()
        .map(|(k, v)| str_value(&format!("{k}={v}")))
        .collect();
    Value::Map(vec![(Arc::from("labels"), Value::Array(list))])
}

/// `policies` of one trace: every hit, the enforced ones (staged policies left out and
/// the others renumbered), the staged ones as pending.
fn policies_value(trace: Option<&Trace>) -> Value {
    let hits: &[Hit] = trace.map_or(&[], |t| t);
    let all = hits
        .iter()
        .enumerate()
        .map(|(i, h)| str_value(&format!("{i}|{}", h.text)))
        .collect();
    let enforced = hits
        .iter()
        .filter(|h| !h.staged)
        .enumerate()
        .map(|(i, h)| str_value(&format!("{i}|{}", h.text)))
        .collect();
    let pending = hits
        .iter()
        .filter(|h| h.staged)
        .enumerate()
        .map(|(i, h)| str_value(&format!("{i}|{}", h.text)))
        .collect();
    Value::Map(vec![
        (Arc::from("all_policies"), Value::Array(all)),
        (Arc::from("enforced_policies"), Value::Array(enforced)),
        (Arc::from("pending_policies"), Value::Array(pending)),
    ])
}

fn index(r: Reporter) -> usize {
    match r {
        Reporter::Src => 0,
        Reporter::Dst => 1,
    }
}

impl Aggregator {
    pub fn new(opts: Options, host: &str, now_unix: i64) -> Aggregator {
        Aggregator {
            opts,
            entries: HashMap::new(),
            verdicts: HashMap::new(),
            interval: 0,
            overflow: 0,
            copies: Vec::new(),
            start: now_unix,
            host: str_value(host),
            keys: FIELDS.iter().map(|k| Arc::from(*k)).collect(),
            dash: str_value("-"),
            dns: DnsCache::new(100_000, 5, std::time::Duration::ZERO),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds one update. Conntrack's counters go to each local side (when no endpoint is
    /// marked local at all, the source side), as allowed unless NFLOG said that side
    /// denied the connection. A logged packet records its rule for the side whose policy
    /// acted; a denied one is also counted there, and only there.
    pub fn add(&mut self, u: &Update, eps: &Endpoints, any_local: bool) {
        let (src_ep, dst_ep) = (eps.lookup(u.conn.src), eps.lookup(u.conn.dst));
        let service = if self.opts.include_service && u.has_ports {
            eps.service(u.conn.proto, u.pre_dnat, (u.conn.dst, u.conn.dport))
                .cloned()
        } else {
            None
        };
        let (src_ep, dst_ep) = (src_ep.clone(), dst_ep.clone());
        match &u.kind {
            Kind::Conntrack => {
                let verdict = self.verdicts.get_mut(&u.conn);
                let interval = self.interval;
                let sides = verdict.map(|v| {
                    v.seen = interval;
                    [0, 1].map(|i| (v.sides[i].denied, v.sides[i].trace.clone()))
                });
                for (reporter, local) in [
                    (Reporter::Src, src_ep.local || !any_local),
                    (Reporter::Dst, dst_ep.local),
                ] {
                    let (denied, trace) = sides
                        .clone()
                        .map(|s| s[index(reporter)].clone())
                        .unwrap_or_default();
                    if local && !denied {
                        self.add_side(
                            u,
                            &src_ep,
                            &dst_ep,
                            &service,
                            reporter,
                            Action::Allow,
                            trace,
                        );
                    }
                }
                if u.expired {
                    self.verdicts.remove(&u.conn);
                }
            }
            Kind::Packet { action, side, hit } => {
                // A staged policy's rule is logged, but does not decide.
                let action = match hit {
                    Some(h) if h.staged => &Action::Pass,
                    _ => action,
                };
                let reporter = side.unwrap_or(if src_ep.local || !any_local {
                    Reporter::Src
                } else {
                    Reporter::Dst
                });
                if !self.verdicts.contains_key(&u.conn)
                    && self.verdicts.len() >= self.opts.max_entries
                {
                    self.overflow += 1;
                    return;
                }
                let v = self.verdicts.entry(u.conn).or_default();
                v.seen = self.interval;
                let sv = &mut v.sides[index(reporter)];
                let trace = match hit {
                    Some(h) => sv.hit(h.clone()),
                    None => sv.trace.clone(),
                };
                if *action == Action::Deny {
                    let first = !std::mem::replace(&mut sv.denied, true);
                    if first {
                        self.retract(u, &src_ep, &dst_ep, &service, reporter);
                    }
                    self.add_side(u, &src_ep, &dst_ep, &service, reporter, Action::Deny, trace);
                }
            }
        }
    }

    /// The entry an update goes to, for one reporting side and verdict.
    fn key(
        &self,
        u: &Update,
        src_ep: &Endpoint,
        dst_ep: &Endpoint,
        service: &Option<Arc<Service>>,
        reporter: Reporter,
        action: Action,
    ) -> Key {
        let level = match action {
            Action::Deny => self.opts.level_denied,
            _ => self.opts.level_allowed,
        };
        let ports = |p: u16| u.has_ports.then_some(p);
        Key {
            src_ip: (level < 2).then_some(u.conn.src),
            dst_ip: (level < 2).then_some(u.conn.dst),
            proto: u.conn.proto,
            sport: if level >= 1 {
                None
            } else {
                ports(u.conn.sport)
            },
            dport: if level >= 3 {
                None
            } else {
                ports(u.conn.dport)
            },
            src: side(src_ep, level >= 2),
            dst: side(dst_ep, level >= 2),
            // Level 3 merges the ports of a service too (Calico: PortName "-").
            service: service.as_ref().map(|s| {
                if level >= 3 {
                    Arc::new(Service {
                        port_name: Arc::from("-"),
                        ..(**s).clone()
                    })
                } else {
                    s.clone()
                }
            }),
            action,
            reporter,
        }
    }

    /// Takes a connection back out of the allowed entry of one side: NFLOG said that side
    /// denied it after conntrack had already counted it (a connection confirmed on the
    /// way out, denied on the way in).
    fn retract(
        &mut self,
        u: &Update,
        src_ep: &Endpoint,
        dst_ep: &Endpoint,
        service: &Option<Arc<Service>>,
        reporter: Reporter,
    ) {
        let key = self.key(u, src_ep, dst_ep, service, reporter, Action::Allow);
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(c) = e.conns.remove(&u.conn) else {
            return;
        };
        e.packets_out -= c.counts[0];
        e.bytes_out -= c.counts[1];
        e.packets_in -= c.counts[2];
        e.bytes_in -= c.counts[3];
        if e.conns.is_empty() {
            self.entries.remove(&key);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_side(
        &mut self,
        u: &Update,
        src_ep: &Endpoint,
        dst_ep: &Endpoint,
        service: &Option<Arc<Service>>,
        reporter: Reporter,
        action: Action,
        trace: Option<Trace>,
    ) {
        let key = self.key(u, src_ep, dst_ep, service, reporter, action);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.opts.max_entries {
            self.overflow += 1;
            return;
        }
        let e = self.entries.entry(key).or_default();
        e.touched = true;
        if std::mem::take(&mut e.reset) {
            e.src_labels = None;
            e.dst_labels = None;
            e.traces.clear();
        }
        // Egress (src) sends the original direction; ingress (dst) receives it.
        let (p_out, b_out, p_in, b_in) = match reporter {
            Reporter::Src => (u.orig_packets, u.orig_bytes, u.reply_packets, u.reply_bytes),
            Reporter::Dst => (u.reply_packets, u.reply_bytes, u.orig_packets, u.orig_bytes),
        };
        e.packets_out += p_out;
        e.bytes_out += b_out;
        e.packets_in += p_in;
        e.bytes_in += b_in;
        let c = e.conns.entry(u.conn).or_default();
        for (n, d) in c.counts.iter_mut().zip([p_out, b_out, p_in, b_in]) {
            *n += d;
        }
        c.nat_port = u.nat_port;
        // Started in this interval unless carried over as active from the previous one
        // (a connection first seen at its end, or a logged packet, started here too).
        if !c.active && !c.completed {
            c.started = true;
        }
        if u.expired || matches!(u.kind, Kind::Packet { .. }) {
            c.completed = true;
            c.active = false;
        } else {
            c.active = true;
        }
        intersect(&mut e.src_labels, &src_ep.labels);
        intersect(&mut e.dst_labels, &dst_ep.labels);
        // No trace is "not known yet" (conntrack's record can come before the NFLOG
        // hits of the same packets): it gives way to the first real one.
        match trace.filter(|t| !t.is_empty()) {
            None if e.traces.is_empty() => e.traces.push(Arc::from(Vec::new())),
            None => {}
            Some(t) => {
                e.traces.retain(|x| !x.is_empty());
                if !e.traces.contains(&t) {
                    e.traces.push(t);
                }
            }
        }
        // As Calico: for flows reported by their source to a destination outside the
        // known workloads (a network or network set).
        if reporter == Reporter::Src && matches!(&*dst_ep.kind, "net" | "ns") {
            domains::add_to(&mut e.domains, &self.dns, u.conn.dst);
        }
    }

    /// Emits one record per entry touched or still active (one per policy trace when
    /// policies are included), then calibrates: entries with no active connection are
    /// dropped, the others start the next interval with zero counters and their active
    /// connections as `num_flows`.
    pub fn flush(&mut self, now_unix: i64, time: EventTime) -> Vec<Record> {
        let (start, end) = (self.start, now_unix);
        self.start = now_unix;
        self.overflow = 0;
        let mut out = Vec::with_capacity(self.entries.len());
        self.copies.clear();
        let mut keys: Vec<&Key> = self
            .entries
            .iter()
            .filter(|(_, e)| e.touched || e.has_active())
            .map(|(k, _)| k)
            .collect();
        // Stable output order: by names, then ports.
        keys.sort_by(|a, b| {
            (
                &a.src.namespace,
                &a.src.name_aggr,
                &a.dst.namespace,
                &a.dst.name_aggr,
                a.dport,
                a.sport,
                a.src_ip,
                a.dst_ip,
                a.action,
                a.reporter as u8,
            )
                .cmp(&(
                    &b.src.namespace,
                    &b.src.name_aggr,
                    &b.dst.namespace,
                    &b.dst.name_aggr,
                    b.dport,
                    b.sport,
                    b.src_ip,
                    b.dst_ip,
                    b.action,
                    b.reporter as u8,
                ))
        });
        for k in keys {
            let e = &self.entries[k];
            if self.opts.include_policies && e.traces.len() > 1 {
                // Calico splits a flow seen under several policy traces into one record
                // per trace, each with the flow's counters.
                for (i, t) in e.traces.iter().enumerate() {
                    out.push(self.record(k, e, Some(t), start, end, time));
                    self.copies.push(i > 0);
                }
            } else {
                out.push(self.record(k, e, e.traces.first(), start, end, time));
                self.copies.push(false);
            }
        }
        self.entries.retain(|_, e| e.has_active());
        for e in self.entries.values_mut() {
            e.conns.retain(|_, c| c.active);
            for c in e.conns.values_mut() {
                *c = ConnState {
                    active: true,
                    nat_port: c.nat_port,
                    ..ConnState::default()
                };
            }
            // Names stay with live connections (Calico keeps them per connection).
            *e = Entry {
                conns: std::mem::take(&mut e.conns),
                domains: std::mem::take(&mut e.domains),
                src_labels: e.src_labels.take(),
                dst_labels: e.dst_labels.take(),
                traces: std::mem::take(&mut e.traces),
                reset: true,
                ..Entry::default()
            };
        }
        // Verdicts of connections not heard of for two intervals are forgotten.
        self.interval += 1;
        let now = self.interval;
        self.verdicts.retain(|_, v| v.seen + 2 > now);
        out
    }

    /// Up to `nat_port_limit` SNAT ports, from active then completed connections, sorted.
    fn nat_ports(&self, e: &Entry) -> Value {
        let active = e.conns.values().filter(|c| c.active);
        let completed = e.conns.values().filter(|c| c.completed);
        let mut ports: Vec<u16> = active
            .chain(completed)
            .map(|c| c.nat_port)
            .filter(|&p| p != 0)
            .take(self.opts.nat_port_limit)
            .collect();
        if ports.is_empty() {
            return Value::Nil;
        }
        ports.sort_unstable();
        Value::Array(ports.into_iter().map(|p| Value::UInt(p as u64)).collect())
    }

    fn record(
        &self,
        k: &Key,
        e: &Entry,
        trace: Option<&Trace>,
        start: i64,
        end: i64,
        time: EventTime,
    ) -> Record {
        let opt_ip = |ip: Option<IpAddr>| ip.map_or(Value::Nil, |ip| str_value(&ip.to_string()));
        let opt_port = |p: Option<u16>| p.map_or(Value::Nil, |p| Value::UInt(p as u64));
        let proto = proto_name(k.proto).map_or_else(|| k.proto.to_string(), str::to_string);
        let labels = |l: &Option<BTreeMap<String, String>>| {
            if self.opts.include_labels {
                labels_value(l)
            } else {
                Value::Nil
            }
        };
        let svc = |f: fn(&Service) -> &Arc<str>| {
            k.service
                .as_ref()
                .map_or(self.dash.clone(), |s| Value::Str(f(s).clone()))
        };
        let zero = Value::UInt(0);
        let values = [
            Value::Int(start),
            Value::Int(end),
            opt_ip(k.src_ip),
            Value::Str(k.src.name.clone()),
            Value::Str(k.src.name_aggr.clone()),
            Value::Str(k.src.namespace.clone()),
            self.nat_ports(e),
            opt_port(k.sport),
            Value::Str(k.src.kind.clone()),
            labels(&e.src_labels),
            opt_ip(k.dst_ip),
            Value::Str(k.dst.name.clone()),
            Value::Str(k.dst.name_aggr.clone()),
            Value::Str(k.dst.namespace.clone()),
            opt_port(k.dport),
            Value::Str(k.dst.kind.clone()),
            labels(&e.dst_labels),
            svc(|s| &s.namespace),
            svc(|s| &s.name),
            svc(|s| &s.port_name),
            k.service
                .as_ref()
                .map_or(Value::Nil, |s| Value::UInt(s.port as u64)),
            domains::value(&e.domains),
            str_value(&proto),
            str_value(match k.action {
                Action::Allow | Action::Pass => "allow",
                Action::Deny => "deny",
            }),
            str_value(match k.reporter {
                Reporter::Src => "src",
                Reporter::Dst => "dst",
            }),
            if self.opts.include_policies {
                policies_value(trace)
            } else {
                Value::Nil
            },
            Value::UInt(e.bytes_in),
            Value::UInt(e.bytes_out),
            Value::UInt(e.conns.len() as u64),
            Value::UInt(e.count(|c| c.started)),
            Value::UInt(e.count(|c| c.completed)),
            Value::UInt(e.packets_in),
            Value::UInt(e.packets_out),
            zero.clone(),
            zero.clone(),
            // Process information (off): Calico's "not included" values.
            self.dash.clone(),
            zero.clone(),
            self.dash.clone(),
            zero.clone(),
            Value::Array(vec![self.dash.clone()]),
            zero.clone(),
            Value::Nil,
            zero.clone(),
            // TCP socket statistics (off).
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero,
            self.host.clone(),
        ];
        let body: Map = self.keys.iter().cloned().zip(values).collect();
        Record::new(time, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn eps() -> Endpoints {
        let mut e = Endpoints::new();
        let load = |name: &str, gen: &str, ns: &str, local: bool, labels: &[(&str, &str)]| {
            super::super::endpoints::Endpoint {
                kind: Arc::from("wep"),
                namespace: Arc::from(ns),
                name: Arc::from(name),
                name_aggr: Arc::from(format!("{gen}*")),
                labels: Arc::new(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                local,
            }
        };
        e.insert(
            "10.0.0.1",
            load(
                "access-6b687c8dcb-aaaaa",
                "access-6b687c8dcb-",
                "policy-demo",
                true,
                &[("run", "access"), ("pod", "a")],
            ),
        )
        .unwrap();
        e.insert(
            "10.0.0.2",
            load(
                "access-6b687c8dcb-bbbbb",
                "access-6b687c8dcb-",
                "policy-demo",
                true,
                &[("run", "access"), ("pod", "b")],
            ),
        )
        .unwrap();
        e.insert(
            "10.0.0.3",
            load(
                "nginx-86c57db685-ccccc",
                "nginx-86c57db685-",
                "policy-demo",
                false,
                &[("app", "nginx")],
            ),
        )
        .unwrap();
        e
    }

    fn update(
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        orig: u64,
        reply: u64,
        expired: bool,
    ) -> Update {
        Update {
            conn: Conn {
                proto: 6,
                src: ip(src),
                sport,
                dst: ip(dst),
                dport,
            },
            has_ports: true,
            orig_packets: orig / 100,
            orig_bytes: orig,
            reply_packets: reply / 100,
            reply_bytes: reply,
            expired,
            kind: Kind::Conntrack,
            nat_port: 0,
            pre_dnat: None,
        }
    }

    fn agg(level_allowed: u8, level_denied: u8, max: usize, host: &str, start: i64) -> Aggregator {
        Aggregator::new(
            Options {
                level_allowed,
                level_denied,
                max_entries: max,
                include_labels: true,
                include_policies: true,
                ..Options::default()
            },
            host,
            start,
        )
    }

    fn packet(
        src: &str,
        dst: &str,
        dport: u16,
        action: Action,
        side: Option<Reporter>,
        hit: Option<Hit>,
    ) -> Update {
        Update {
            kind: Kind::Packet { action, side, hit },
            orig_packets: 1,
            orig_bytes: 60,
            reply_packets: 0,
            reply_bytes: 0,
            ..update(src, 41000, dst, dport, 60, 0, false)
        }
    }

    fn get<'a>(r: &'a Record, k: &str) -> &'a Value {
        &r.body.iter().find(|(x, _)| &**x == k).unwrap().1
    }

    fn s(v: &str) -> Value {
        str_value(v)
    }

    fn sub<'a>(v: &'a Value, k: &str) -> &'a Value {
        match v {
            Value::Map(m) => &m.iter().find(|(x, _)| &**x == k).unwrap().1,
            _ => panic!("{v:?} is not a map"),
        }
    }

    #[test]
    fn pod_prefix_aggregation_matches_calicos_documented_record() {
        let e = eps();
        let mut a = agg(2, 1, 1000, "bz-n8kf-kadm-node-1", 1597086849);
        a.add(
            &update("10.0.0.1", 40000, "10.0.0.3", 80, 300, 900, false),
            &e,
            true,
        );
        a.add(
            &update("10.0.0.2", 40001, "10.0.0.3", 80, 200, 500, true),
            &e,
            true,
        );
        a.add(
            &update("10.0.0.1", 40002, "10.0.0.3", 80, 100, 100, true),
            &e,
            true,
        );
        let recs = a.flush(1597087167, EventTime::new(1597087167, 0));
        assert_eq!(recs.len(), 1, "one pod-prefix flow: {recs:#?}");
        let r = &recs[0];
        let keys: Vec<&str> = r.body.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, FIELDS);
        assert_eq!(get(r, "start_time"), &Value::Int(1597086849));
        assert_eq!(get(r, "end_time"), &Value::Int(1597087167));
        assert_eq!(get(r, "source_ip"), &Value::Nil);
        assert_eq!(get(r, "source_name"), &s("-"));
        assert_eq!(get(r, "source_name_aggr"), &s("access-6b687c8dcb-*"));
        assert_eq!(get(r, "source_namespace"), &s("policy-demo"));
        assert_eq!(get(r, "source_port"), &Value::Nil);
        assert_eq!(get(r, "source_type"), &s("wep"));
        assert_eq!(
            get(r, "source_labels"),
            &Value::Map(vec![(
                Arc::from("labels"),
                Value::Array(vec![s("run=access")])
            )]),
            "intersection"
        );
        assert_eq!(get(r, "dest_ip"), &Value::Nil);
        assert_eq!(get(r, "dest_name"), &s("-"));
        assert_eq!(get(r, "dest_name_aggr"), &s("nginx-86c57db685-*"));
        assert_eq!(get(r, "dest_port"), &Value::UInt(80));
        assert_eq!(get(r, "proto"), &s("tcp"));
        assert_eq!(get(r, "action"), &s("allow"));
        assert_eq!(get(r, "reporter"), &s("src"));
        assert_eq!(get(r, "bytes_out"), &Value::UInt(600));
        assert_eq!(get(r, "bytes_in"), &Value::UInt(1500));
        assert_eq!(get(r, "packets_out"), &Value::UInt(6));
        assert_eq!(get(r, "num_flows"), &Value::UInt(3));
        assert_eq!(get(r, "num_flows_started"), &Value::UInt(3));
        assert_eq!(get(r, "num_flows_completed"), &Value::UInt(2));
        assert_eq!(get(r, "original_source_ips"), &Value::Nil);
        assert_eq!(get(r, "num_original_source_ips"), &Value::UInt(0));
        assert_eq!(get(r, "http_requests_denied_in"), &Value::UInt(0));
        assert_eq!(get(r, "host"), &s("bz-n8kf-kadm-node-1"));
    }

    #[test]
    fn levels_mask_what_calicos_code_masks() {
        let e = eps();
        let flows = [
            update("10.0.0.1", 40000, "10.0.0.3", 80, 1, 1, false),
            update("10.0.0.1", 40001, "10.0.0.3", 80, 1, 1, false),
            update("10.0.0.2", 40002, "10.0.0.3", 80, 1, 1, false),
            update("10.0.0.2", 40003, "10.0.0.3", 443, 1, 1, false),
        ];
        let count = |level: u8| {
            let mut a = agg(level, level, 1000, "h", 0);
            flows.iter().for_each(|f| a.add(f, &e, true));
            a.flush(1, EventTime::default())
        };
        // 0: every 5-tuple; 1: source ports merged (pod .1:80, .2:80, .2:443);
        // 2: pods merged by prefix (access → nginx :80, :443); 3: ports merged too.
        assert_eq!(count(0).len(), 4);
        assert_eq!(count(1).len(), 3);
        let l1 = count(1);
        assert_eq!(get(&l1[0], "source_ip"), &s("10.0.0.1"));
        assert_eq!(get(&l1[0], "source_port"), &Value::Nil);
        assert_eq!(get(&l1[0], "source_name"), &s("access-6b687c8dcb-aaaaa"));
        assert_eq!(count(2).len(), 2);
        let l3 = count(3);
        assert_eq!(l3.len(), 1);
        assert_eq!(get(&l3[0], "dest_port"), &Value::Nil);
        assert_eq!(get(&l3[0], "num_flows"), &Value::UInt(4));
    }

    #[test]
    fn long_lived_connections_carry_over_and_idle_entries_go() {
        let e = eps();
        let mut a = agg(2, 1, 1000, "h", 0);
        a.add(
            &update("10.0.0.1", 40000, "10.0.0.3", 80, 100, 100, false),
            &e,
            true,
        );
        let r1 = a.flush(10, EventTime::default());
        assert_eq!(
            (get(&r1[0], "num_flows"), get(&r1[0], "num_flows_started")),
            (&Value::UInt(1), &Value::UInt(1))
        );
        // Idle but alive: reported again with zero bytes and num_flows 1.
        let r2 = a.flush(20, EventTime::default());
        assert_eq!(r2.len(), 1);
        assert_eq!(get(&r2[0], "start_time"), &Value::Int(10));
        assert_eq!(
            (
                get(&r2[0], "bytes_out"),
                get(&r2[0], "num_flows"),
                get(&r2[0], "num_flows_started")
            ),
            (&Value::UInt(0), &Value::UInt(1), &Value::UInt(0))
        );
        // Ends: completed in this interval, then the entry is gone.
        a.add(
            &update("10.0.0.1", 40000, "10.0.0.3", 80, 5, 0, true),
            &e,
            true,
        );
        let r3 = a.flush(30, EventTime::default());
        assert_eq!(
            (get(&r3[0], "num_flows_completed"), get(&r3[0], "bytes_out")),
            (&Value::UInt(1), &Value::UInt(5))
        );
        assert!(a.flush(40, EventTime::default()).is_empty());
        assert_eq!(a.len(), 0, "memory follows active flows");
    }

    #[test]
    fn reporters_by_locality() {
        let mut e = eps();
        e.mark_local(&[(ip("10.0.0.3"), 32)]);
        let mut a = agg(2, 1, 1000, "h", 0);
        // Local to local: both sides report, in/out swapped.
        a.add(
            &update("10.0.0.1", 40000, "10.0.0.3", 80, 100, 700, true),
            &e,
            true,
        );
        let recs = a.flush(1, EventTime::default());
        assert_eq!(recs.len(), 2);
        let src = recs
            .iter()
            .find(|r| get(r, "reporter") == &s("src"))
            .unwrap();
        let dst = recs
            .iter()
            .find(|r| get(r, "reporter") == &s("dst"))
            .unwrap();
        assert_eq!(
            (get(src, "bytes_out"), get(src, "bytes_in")),
            (&Value::UInt(100), &Value::UInt(700))
        );
        assert_eq!(
            (get(dst, "bytes_in"), get(dst, "bytes_out")),
            (&Value::UInt(100), &Value::UInt(700))
        );
    }

    fn deny_db(dir: char) -> Hit {
        Hit::new(
            "default",
            "policy-demo/default.deny-db",
            Action::Deny,
            if dir == 'E' { 0 } else { 1 },
        )
    }

    /// A verdict is reported by the side whose rule acted, once: egress by src,
    /// ingress by dst, though both ends are local.
    #[test]
    fn denied_traffic_is_reported_by_the_side_that_denied_it() {
        let mut e = eps();
        e.mark_local(&[(ip("10.0.0.3"), 32)]);
        let mut a = agg(2, 1, 1000, "h", 0);
        let egress = packet(
            "10.0.0.2",
            "10.0.0.3",
            5432,
            Action::Deny,
            Some(Reporter::Src),
            Some(deny_db('E')),
        );
        a.add(&egress, &e, true);
        a.add(&egress, &e, true);
        let recs = a.flush(1, EventTime::default());
        assert_eq!(recs.len(), 1, "{recs:#?}");
        let d = &recs[0];
        assert_eq!(
            (get(d, "action"), get(d, "reporter")),
            (&s("deny"), &s("src"))
        );
        // Denied level 1: source IP kept, source port masked.
        assert_eq!(
            (get(d, "source_ip"), get(d, "source_port")),
            (&s("10.0.0.2"), &Value::Nil)
        );
        assert_eq!(
            (
                get(d, "packets_out"),
                get(d, "bytes_out"),
                get(d, "bytes_in")
            ),
            (&Value::UInt(2), &Value::UInt(120), &Value::UInt(0))
        );
        assert_eq!(
            (
                get(d, "num_flows"),
                get(d, "num_flows_started"),
                get(d, "num_flows_completed")
            ),
            (&Value::UInt(1), &Value::UInt(1), &Value::UInt(1))
        );
        assert_eq!(
            get(d, "policies"),
            &Value::Map(vec![
                (
                    Arc::from("all_policies"),
                    Value::Array(vec![s("0|default|policy-demo/default.deny-db|deny|0")])
                ),
                (
                    Arc::from("enforced_policies"),
                    Value::Array(vec![s("0|default|policy-demo/default.deny-db|deny|0")])
                ),
                (Arc::from("pending_policies"), Value::Array(vec![])),
            ])
        );
        // Ingress: dst reports, bytes in; the conntrack entry such a connection may have
        // (its first packets were allowed) gives no allow record from dst after it.
        let mut a = agg(2, 1, 1000, "h", 0);
        let ingress = packet(
            "10.0.0.1",
            "10.0.0.3",
            5432,
            Action::Deny,
            Some(Reporter::Dst),
            Some(deny_db('I')),
        );
        let mut ct = update("10.0.0.1", 41000, "10.0.0.3", 5432, 60, 0, false);
        ct.orig_packets = 1;
        // Conntrack confirms the connection on the way out, before the ingress rule
        // drops it: its allow is taken back from dst when the deny arrives.
        a.add(&ct, &e, true);
        a.add(&ingress, &e, true);
        a.add(&ct, &e, true);
        let recs = a.flush(1, EventTime::default());
        let by = |action: &str, rep: &str| {
            recs.iter()
                .filter(|r| get(r, "action") == &s(action) && get(r, "reporter") == &s(rep))
                .count()
        };
        assert_eq!(
            (
                by("deny", "dst"),
                by("allow", "dst"),
                by("allow", "src"),
                by("deny", "src")
            ),
            (1, 0, 1, 0),
            "{recs:#?}"
        );
        let d = recs
            .iter()
            .find(|r| get(r, "action") == &s("deny"))
            .unwrap();
        assert_eq!(
            (get(d, "bytes_in"), get(d, "bytes_out")),
            (&Value::UInt(60), &Value::UInt(0))
        );
        // Without a direction (our `D|policy` prefixes): the source side if it is local.
        let mut a = agg(2, 1, 1000, "h", 0);
        a.add(
            &packet("10.0.0.1", "10.0.0.3", 5432, Action::Deny, None, None),
            &e,
            true,
        );
        let recs = a.flush(1, EventTime::default());
        assert_eq!((recs.len(), get(&recs[0], "reporter")), (1, &s("src")));
    }

    /// An allow that NFLOG logs counts nothing (conntrack does), and its policy trace
    /// goes with the connection's records, in this interval and the next.
    #[test]
    fn logged_allows_attach_policies_and_count_nothing() {
        let e = eps();
        let mut a = agg(2, 1, 1000, "h", 0);
        let pass = Hit::new("security", "security.pass-web", Action::Pass, 0);
        let allow = Hit::new("default", "policy-demo/default.allow-web", Action::Allow, 2);
        for h in [pass.clone(), allow.clone()] {
            let act = h.action;
            a.add(
                &packet(
                    "10.0.0.1",
                    "10.0.0.3",
                    80,
                    act,
                    Some(Reporter::Src),
                    Some(h),
                ),
                &e,
                true,
            );
        }
        a.add(
            &update("10.0.0.1", 41000, "10.0.0.3", 80, 300, 900, false),
            &e,
            true,
        );
        let recs = a.flush(1, EventTime::default());
        assert_eq!(recs.len(), 1, "{recs:#?}");
        let r = &recs[0];
        assert_eq!(
            (
                get(r, "bytes_out"),
                get(r, "bytes_in"),
                get(r, "num_flows_completed")
            ),
            (&Value::UInt(300), &Value::UInt(900), &Value::UInt(0))
        );
        let want = Value::Array(vec![
            s("0|security|security.pass-web|pass|0"),
            s("1|default|policy-demo/default.allow-web|allow|2"),
        ]);
        assert_eq!(Some(sub(get(r, "policies"), "all_policies")), Some(&want));
        // Next interval: a sample of the same connection keeps its policies.
        a.add(
            &update("10.0.0.1", 41000, "10.0.0.3", 80, 10, 10, false),
            &e,
            true,
        );
        let recs = a.flush(2, EventTime::default());
        assert_eq!(
            Some(sub(get(&recs[0], "policies"), "all_policies")),
            Some(&want)
        );
        // Another connection of the flow under another policy: one record per trace.
        let other = Hit::new("default", "policy-demo/default.allow-all", Action::Allow, 0);
        a.add(
            &packet(
                "10.0.0.2",
                "10.0.0.3",
                80,
                Action::Allow,
                Some(Reporter::Src),
                Some(other),
            ),
            &e,
            true,
        );
        a.add(
            &update("10.0.0.2", 41000, "10.0.0.3", 80, 10, 10, false),
            &e,
            true,
        );
        a.add(
            &update("10.0.0.1", 41000, "10.0.0.3", 80, 10, 10, false),
            &e,
            true,
        );
        let recs = a.flush(3, EventTime::default());
        assert_eq!(recs.len(), 2, "{recs:#?}");
        let traces: Vec<&Value> = recs
            .iter()
            .map(|r| sub(get(r, "policies"), "all_policies"))
            .collect();
        assert!(traces.contains(&&want), "{traces:?}");
        assert!(traces.contains(&&Value::Array(vec![s(
            "0|default|policy-demo/default.allow-all|allow|0"
        )])));
        for r in &recs {
            assert_eq!(
                get(r, "bytes_out"),
                &Value::UInt(20),
                "each record of a split flow has its counters, as Calico's"
            );
        }
    }

    /// Staged policies are in all_policies and pending, not enforced (renumbered).
    #[test]
    fn staged_policies_are_pending() {
        let e = eps();
        let mut a = agg(2, 1, 1000, "h", 0);
        for h in [
            Hit::new("default", "ns/default.staged:try", Action::Deny, 0),
            Hit::new("default", "ns/default.allow", Action::Allow, 0),
        ] {
            a.add(
                &packet(
                    "10.0.0.1",
                    "10.0.0.3",
                    80,
                    h.action,
                    Some(Reporter::Src),
                    Some(h),
                ),
                &e,
                true,
            );
        }
        a.add(
            &update("10.0.0.1", 41000, "10.0.0.3", 80, 1, 1, false),
            &e,
            true,
        );
        let r = &a.flush(1, EventTime::default())[0];
        let p = get(r, "policies");
        assert_eq!(
            sub(p, "enforced_policies"),
            &Value::Array(vec![s("0|default|ns/default.allow|allow|0")])
        );
        assert_eq!(
            sub(p, "pending_policies"),
            &Value::Array(vec![s("0|default|ns/default.staged:try|deny|0")])
        );
        assert!(matches!(sub(p, "all_policies"), Value::Array(a) if a.len() == 2));
    }

    #[test]
    fn calico_defaults_leave_labels_and_policies_null() {
        let e = eps();
        let mut a = Aggregator::new(Options::default(), "h", 0);
        a.add(
            &update("10.0.0.1", 40000, "10.0.0.3", 80, 1, 1, false),
            &e,
            true,
        );
        let r = &a.flush(1, EventTime::default())[0];
        for k in [
            "source_labels",
            "dest_labels",
            "policies",
            "nat_outgoing_ports",
            "dest_domains",
            "dest_service_port_num",
        ] {
            assert_eq!(get(r, k), &Value::Nil, "{k}");
        }
        assert_eq!(get(r, "dest_service_name"), &s("-"));
        assert_eq!(get(r, "process_name"), &s("-"));
        assert_eq!(get(r, "process_args"), &Value::Array(vec![s("-")]));
        assert_eq!(get(r, "tcp_mean_smooth_rtt"), &Value::UInt(0));
    }

    /// ICMP's echo identifier is part of the key: two pings are two flows.
    #[test]
    fn icmp_ids_are_distinct_flows() {
        let e = eps();
        let mut a = agg(2, 1, 1000, "h", 0);
        for id in [7, 8] {
            let mut u = update("10.0.0.1", id, "10.0.0.3", 8 << 8, 84, 84, true);
            u.conn.proto = 1;
            u.has_ports = false;
            a.add(&u, &e, true);
        }
        let recs = a.flush(1, EventTime::default());
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(
            (get(r, "proto"), get(r, "num_flows")),
            (&s("icmp"), &Value::UInt(2))
        );
        assert_eq!(
            (get(r, "source_port"), get(r, "dest_port")),
            (&Value::Nil, &Value::Nil)
        );
        assert_eq!(proto_name(58), Some("icmp6"));
        assert_eq!(
            (proto_name(4), proto_name(50), proto_name(47)),
            (Some("ipip"), Some("esp"), None)
        );
    }

    #[test]
    fn snat_ports_and_services() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.json");
        std::fs::write(&p, r#"{"endpoints": [{"cidr": "10.0.0.1", "name": "a-1", "generate_name": "a-", "namespace": "ns", "local": true},
            {"cidr": "10.0.0.3", "name": "db-0", "namespace": "ns", "labels": {"app": "db", "projectcalico.org/namespace": "ns"}}],
          "services": [{"namespace": "ns", "name": "db", "cluster_ip": "10.96.0.9", "ports": [{"name": "pg", "port": 5432, "target_port": 15432}], "endpoints": ["10.0.0.3"]}]}"#).unwrap();
        let e = Endpoints::load(&p, "n").unwrap();
        let mut a = Aggregator::new(
            Options {
                include_service: true,
                include_labels: true,
                nat_port_limit: 2,
                ..Options::default()
            },
            "h",
            0,
        );
        for (sport, nat) in [(40000, 61000), (40001, 61001), (40002, 61002)] {
            let mut u = update("10.0.0.1", sport, "10.0.0.3", 15432, 10, 10, false);
            u.nat_port = nat;
            u.pre_dnat = Some((ip("10.96.0.9"), 5432));
            a.add(&u, &e, true);
        }
        let r = &a.flush(1, EventTime::default())[0];
        let Value::Array(ports) = get(r, "nat_outgoing_ports") else {
            panic!("{r:?}")
        };
        let ports: Vec<u64> = ports
            .iter()
            .map(|p| if let Value::UInt(n) = p { *n } else { 0 })
            .collect();
        assert_eq!(ports.len(), 2, "nat_outgoing_port_limit");
        assert!(
            ports.windows(2).all(|w| w[0] < w[1])
                && ports.iter().all(|p| (61000..=61002).contains(p)),
            "{ports:?}"
        );
        assert_eq!(
            [
                get(r, "dest_service_namespace"),
                get(r, "dest_service_name"),
                get(r, "dest_service_port"),
                get(r, "dest_service_port_num")
            ],
            [&s("ns"), &s("db"), &s("pg"), &Value::UInt(5432)]
        );
        assert_eq!(
            get(r, "dest_labels"),
            &Value::Map(vec![(Arc::from("labels"), Value::Array(vec![s("app=db")]))]),
            "Calico's own labels are dropped"
        );
        // A pod behind the service, reached directly: the same service.
        assert_eq!(
            e.service(6, None, (ip("10.0.0.3"), 15432))
                .map(|s| &*s.name),
            Some("db")
        );
        assert!(
            e.service(17, None, (ip("10.0.0.3"), 15432)).is_none(),
            "TCP only"
        );
    }

    #[test]
    fn bounded_entries() {
        let e = eps();
        let mut a = agg(0, 0, 2, "h", 0);
        for p in 0..5 {
            a.add(
                &update("10.0.0.1", 40000 + p, "10.0.0.3", 80, 1, 1, false),
                &e,
                true,
            );
        }
        assert_eq!((a.len(), a.overflow), (2, 3));
    }
}
