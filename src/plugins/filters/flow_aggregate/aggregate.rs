//! Calico's flow-log aggregation, sans-IO: updates in, one record per aggregated flow
//! out at each flush. Keys per level, counting and calibration follow Calico
//! Enterprise's felix/collector/flowlog (shared/spec/flows.md §2.3–2.5).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::endpoints::{Endpoint, Endpoints};
use super::sockets::{LocalSockets, ProcStats};
use crate::event::{EventTime, Map, Record, Str, Value};
use crate::plugins::inputs::conntrack::proto_name;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    Src,
    Dst,
}

/// A connection's identity within an interval (post-DNAT destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conn {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
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
    /// A packet logged by NFLOG: not a connection, started and completed at once.
    pub packet: bool,
    pub action: Action,
    pub policies: Vec<String>,
    /// The local sockets of both ends (include_process/include_tcp_stats).
    pub sockets: LocalSockets,
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
    action: Action,
    reporter: Reporter,
    /// Calico splits an aggregated flow per process name ("-": not included/unknown).
    process: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Side {
    kind: Arc<str>,
    namespace: Arc<str>,
    name: Arc<str>,
    name_aggr: Arc<str>,
}

#[derive(Default)]
struct Entry {
    bytes_in: u64,
    bytes_out: u64,
    packets_in: u64,
    packets_out: u64,
    flows: HashSet<Conn>,
    started: HashSet<Conn>,
    completed: HashSet<Conn>,
    active: HashSet<Conn>,
    src_labels: Option<BTreeMap<String, String>>,
    dst_labels: Option<BTreeMap<String, String>>,
    policies: Vec<String>,
    proc: ProcStats,
    /// Updated since the last flush.
    touched: bool,
}

fn intersect(acc: &mut Option<BTreeMap<String, String>>, labels: &BTreeMap<String, String>) {
    match acc {
        None => *acc = Some(labels.clone()),
        Some(a) => a.retain(|k, v| labels.get(k) == Some(v)),
    }
}

/// Aggregation levels per action, the entries of the current interval, and the
/// interval's start (Unix seconds).
pub struct Aggregator {
    pub level_allowed: u8,
    pub level_denied: u8,
    entries: HashMap<Key, Entry>,
    max_entries: usize,
    /// Updates dropped because `max_entries` was reached (this interval).
    pub overflow: u64,
    start: i64,
    host: Value,
    keys: Vec<Str>,
    /// include_process, process_limit, process_args_limit.
    pub processes: ProcessOptions,
    seq: u64,
    dash: Arc<str>,
}

/// Calico's per-flow process settings (FlowLogsFilePerFlowProcessLimit and
/// ...ProcessArgsLimit, defaults 2 and 5).
#[derive(Clone, Copy, Debug)]
pub struct ProcessOptions {
    pub include: bool,
    pub limit: usize,
    pub args_limit: usize,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            include: false,
            limit: 2,
            args_limit: 5,
        }
    }
}

const FIELDS: [&str; 49] = [
    "start_time",
    "end_time",
    "source_ip",
    "source_name",
    "source_name_aggr",
    "source_namespace",
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

impl Aggregator {
    pub fn new(
        level_allowed: u8,
        level_denied: u8,
        max_entries: usize,
        host: &str,
        now_unix: i64,
    ) -> Aggregator {
        Aggregator {
            level_allowed,
            level_denied,
            entries: HashMap::new(),
            max_entries,
            overflow: 0,
            start: now_unix,
            host: str_value(host),
            keys: FIELDS.iter().map(|k| Arc::from(*k)).collect(),
            processes: ProcessOptions::default(),
            seq: 0,
            dash: Arc::from("-"),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds one update: an entry per local side (reporter src and/or dst). When no
    /// endpoint is marked local at all, the source side reports.
    pub fn add(&mut self, u: &Update, eps: &Endpoints, any_local: bool) {
        let (src_ep, dst_ep) = (
            eps.lookup(u.conn.src).clone(),
            eps.lookup(u.conn.dst).clone(),
        );
        let mut reporters = Vec::with_capacity(2);
        if src_ep.local || !any_local {
            reporters.push(Reporter::Src);
        }
        if dst_ep.local {
            reporters.push(Reporter::Dst);
        }
        for reporter in reporters {
            self.add_side(u, &src_ep, &dst_ep, reporter);
        }
    }

    fn add_side(&mut self, u: &Update, src_ep: &Endpoint, dst_ep: &Endpoint, reporter: Reporter) {
        let level = match u.action {
            Action::Allow => self.level_allowed,
            Action::Deny => self.level_denied,
        };
        let ports = |p: u16| u.has_ports.then_some(p);
        let local = match reporter {
            Reporter::Src => u.sockets.src.as_ref(),
            Reporter::Dst => u.sockets.dst.as_ref(),
        };
        let process = match local.and_then(|l| l.process.as_ref()) {
            Some(p) if self.processes.include => p.name.clone(),
            _ => self.dash.clone(),
        };
        let key = Key {
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
            action: u.action,
            reporter,
            process,
        };
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            self.overflow += 1;
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        let e = self.entries.entry(key).or_insert_with(|| Entry {
            proc: ProcStats::new(seq),
            ..Entry::default()
        });
        e.touched = true;
        if let Some(l) = local {
            e.proc.add(l, self.processes.include);
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
        let c = u.conn;
        // Started in this interval unless carried over as active from the previous one
        // (a connection first seen at its end, or a logged packet, started here too).
        if !e.active.contains(&c) && !e.completed.contains(&c) {
            e.started.insert(c);
        }
        if u.expired || u.packet {
            e.completed.insert(c);
            e.active.remove(&c);
        } else {
            e.active.insert(c);
        }
        e.flows.insert(c);
        intersect(&mut e.src_labels, &src_ep.labels);
        intersect(&mut e.dst_labels, &dst_ep.labels);
        for p in &u.policies {
            if !e.policies.contains(p) {
                e.policies.push(p.clone());
            }
        }
    }

    /// Emits one record per entry touched or still active, then calibrates: entries
    /// with no active connection are dropped, the others start the next interval with
    /// zero counters and their active connections as `num_flows`.
    pub fn flush(&mut self, now_unix: i64, time: EventTime) -> Vec<Record> {
        let (start, end) = (self.start, now_unix);
        self.start = now_unix;
        self.overflow = 0;
        let mut out = Vec::with_capacity(self.entries.len());
        let mut keys: Vec<&Key> = self
            .entries
            .iter()
            .filter(|(_, e)| e.touched || !e.active.is_empty())
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
                .then_with(|| self.entries[*a].proc.seq.cmp(&self.entries[*b].proc.seq))
        });
        // Per flow, the first process_limit process names (by first appearance) get
        // a record each, the others one "*" record together (Calico's
        // toFlowProcessReportedStats).
        let mut named: HashMap<Key, usize> = HashMap::new();
        let mut rest: Vec<(Key, Entry, u64)> = Vec::new();
        for k in keys {
            let e = &self.entries[k];
            if &*k.process != "-" && self.processes.include {
                let mut flow = k.clone();
                flow.process = Arc::from("*");
                let n = named.entry(flow.clone()).or_insert(0);
                *n += 1;
                if *n > self.processes.limit {
                    match rest.iter_mut().find(|(f, _, _)| *f == flow) {
                        Some((_, agg, names)) => {
                            merge(agg, e);
                            *names += 1;
                        }
                        None => {
                            let mut agg = Entry::default();
                            merge(&mut agg, e);
                            rest.push((flow, agg, 1));
                        }
                    }
                    continue;
                }
            }
            out.push(self.record(k, e, 1, start, end, time));
        }
        for (k, e, names) in &rest {
            out.push(self.record(k, e, *names, start, end, time));
        }
        self.hand_over_to_processes();
        self.entries.retain(|_, e| !e.active.is_empty());
        for e in self.entries.values_mut() {
            *e = Entry {
                flows: e.active.clone(),
                active: std::mem::take(&mut e.active),
                proc: e.proc.next_interval(),
                ..Entry::default()
            };
        }
        out
    }

    /// A connection whose process was found after its first updates (under "-") is
    /// carried on by its process' entry only, not also by "-". Done once per flush, not
    /// per update.
    fn hand_over_to_processes(&mut self) {
        if !self.processes.include {
            return;
        }
        let mut named: HashMap<Key, HashSet<Conn>> = HashMap::new();
        for (k, e) in &self.entries {
            if &*k.process != "-" && !e.active.is_empty() {
                let mut unknown = k.clone();
                unknown.process = self.dash.clone();
                named
                    .entry(unknown)
                    .or_default()
                    .extend(e.active.iter().copied());
            }
        }
        for (k, e) in self.entries.iter_mut() {
            if let Some(conns) = named.get(k) {
                e.active.retain(|c| !conns.contains(c));
            }
        }
    }

    fn record(
        &self,
        k: &Key,
        e: &Entry,
        names: u64,
        start: i64,
        end: i64,
        time: EventTime,
    ) -> Record {
        let opt_ip = |ip: Option<IpAddr>| ip.map_or(Value::Nil, |ip| str_value(&ip.to_string()));
        let opt_port = |p: Option<u16>| p.map_or(Value::Nil, |p| Value::UInt(p as u64));
        let proto = proto_name(k.proto).map_or_else(|| k.proto.to_string(), str::to_string);
        let [p_name, p_names, p_id, p_ids, p_args, p_nargs] =
            e.proc.values(&k.process, names, self.processes.args_limit);
        let [t_cwnd, t_cwnd_min, t_srtt, t_srtt_max, t_min_rtt, t_min_rtt_max, t_mss, t_mss_min, t_retrans, t_lost, t_rto] =
            e.proc.tcp.values();
        let values = [
            Value::Int(start),
            Value::Int(end),
            opt_ip(k.src_ip),
            Value::Str(k.src.name.clone()),
            Value::Str(k.src.name_aggr.clone()),
            Value::Str(k.src.namespace.clone()),
            opt_port(k.sport),
            Value::Str(k.src.kind.clone()),
            labels_value(&e.src_labels),
            opt_ip(k.dst_ip),
            Value::Str(k.dst.name.clone()),
            Value::Str(k.dst.name_aggr.clone()),
            Value::Str(k.dst.namespace.clone()),
            opt_port(k.dport),
            Value::Str(k.dst.kind.clone()),
            labels_value(&e.dst_labels),
            str_value(&proto),
            str_value(match k.action {
                Action::Allow => "allow",
                Action::Deny => "deny",
            }),
            str_value(match k.reporter {
                Reporter::Src => "src",
                Reporter::Dst => "dst",
            }),
            Value::Map(vec![(
                Arc::from("all_policies"),
                Value::Array(e.policies.iter().map(|p| str_value(p)).collect()),
            )]),
            Value::UInt(e.bytes_in),
            Value::UInt(e.bytes_out),
            Value::UInt(e.flows.len() as u64),
            Value::UInt(e.started.len() as u64),
            Value::UInt(e.completed.len() as u64),
            Value::UInt(e.packets_in),
            Value::UInt(e.packets_out),
            Value::UInt(0),
            Value::UInt(0),
            p_name,
            p_names,
            p_id,
            p_ids,
            p_args,
            p_nargs,
            Value::Nil,
            Value::UInt(0),
            t_cwnd,
            t_cwnd_min,
            t_srtt,
            t_srtt_max,
            t_min_rtt,
            t_min_rtt_max,
            t_mss,
            t_mss_min,
            t_retrans,
            t_lost,
            t_rto,
            self.host.clone(),
        ];
        let body: Map = self.keys.iter().cloned().zip(values).collect();
        Record::new(time, body)
    }
}

/// Adds `e` into `into` (the "*" record of process names past process_limit): Calico's
/// FlowReportedStats.Add and FlowReportedTCPStats.Add.
fn merge(into: &mut Entry, e: &Entry) {
    into.bytes_in += e.bytes_in;
    into.bytes_out += e.bytes_out;
    into.packets_in += e.packets_in;
    into.packets_out += e.packets_out;
    into.flows.extend(e.flows.iter().copied());
    into.started.extend(e.started.iter().copied());
    into.completed.extend(e.completed.iter().copied());
    for (acc, l) in [
        (&mut into.src_labels, &e.src_labels),
        (&mut into.dst_labels, &e.dst_labels),
    ] {
        if let Some(l) = l {
            intersect(acc, l);
        }
    }
    for p in &e.policies {
        if !into.policies.contains(p) {
            into.policies.push(p.clone());
        }
    }
    into.proc.merge(&e.proc);
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
            packet: false,
            action: Action::Allow,
            policies: vec![],
            sockets: LocalSockets::default(),
        }
    }

    fn get<'a>(r: &'a Record, k: &str) -> &'a Value {
        &r.body.iter().find(|(x, _)| &**x == k).unwrap().1
    }

    fn s(v: &str) -> Value {
        str_value(v)
    }

    #[test]
    fn pod_prefix_aggregation_matches_calicos_documented_record() {
        let e = eps();
        let mut a = Aggregator::new(2, 1, 1000, "bz-n8kf-kadm-node-1", 1597086849);
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
            let mut a = Aggregator::new(level, level, 1000, "h", 0);
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
        let mut a = Aggregator::new(2, 1, 1000, "h", 0);
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
    fn reporters_by_locality_and_denied_packets() {
        let mut e = eps();
        e.mark_local(&[(ip("10.0.0.3"), 32)]);
        let mut a = Aggregator::new(2, 1, 1000, "h", 0);
        // Local to local: both sides report, in/out swapped.
        a.add(
            &update("10.0.0.1", 40000, "10.0.0.3", 80, 100, 700, true),
            &e,
            true,
        );
        let mut deny = update("10.0.0.2", 41000, "10.0.0.3", 5432, 60, 0, false);
        deny.packet = true;
        deny.orig_packets = 1;
        deny.action = Action::Deny;
        deny.policies = vec!["0|default|default/deny-db|deny|0".into()];
        a.add(&deny, &e, true);
        a.add(&deny, &e, true);
        let recs = a.flush(1, EventTime::default());
        let allow: Vec<&Record> = recs
            .iter()
            .filter(|r| get(r, "action") == &s("allow"))
            .collect();
        assert_eq!(allow.len(), 2);
        let src = allow
            .iter()
            .find(|r| get(r, "reporter") == &s("src"))
            .unwrap();
        let dst = allow
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
        let denied: Vec<&Record> = recs
            .iter()
            .filter(|r| get(r, "action") == &s("deny") && get(r, "reporter") == &s("dst"))
            .collect();
        assert_eq!(denied.len(), 1);
        let d = denied[0];
        // Denied level 1: source IP kept, source port masked.
        assert_eq!(
            (get(d, "source_ip"), get(d, "source_port")),
            (&s("10.0.0.2"), &Value::Nil)
        );
        assert_eq!(
            (get(d, "packets_in"), get(d, "bytes_in")),
            (&Value::UInt(2), &Value::UInt(120))
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
            &Value::Map(vec![(
                Arc::from("all_policies"),
                Value::Array(vec![s("0|default|default/deny-db|deny|0")])
            )])
        );
    }

    fn with_process(mut u: Update, pid: u32, name: &str, srtt: u64, retrans: u64) -> Update {
        use super::super::sockets::{Side, TcpSample};
        use crate::sockdiag::process::Process;
        u.sockets.src = Some(Side {
            process: Some(Arc::new(Process {
                pid,
                name: Arc::from(name),
                args: Arc::from(format!("--id {pid}")),
            })),
            tcp: Some(TcpSample {
                cwnd: 10,
                srtt,
                min_rtt: srtt,
                mss: 1448,
                retrans,
                lost: 0,
                unrecovered_rto: 0,
            }),
        });
        u
    }

    /// include_process: one record per process name within an aggregated flow, up to
    /// process_limit, then one "*" record for the rest; a connection first seen without
    /// its process moves to its process' record; TCP stats stay with their process.
    #[test]
    fn records_split_per_process_name_up_to_the_limit() {
        let e = eps();
        let mut a = Aggregator::new(2, 1, 1000, "h", 0);
        a.processes = ProcessOptions {
            include: true,
            limit: 2,
            args_limit: 5,
        };
        let c = |sport| update("10.0.0.1", sport, "10.0.0.3", 80, 100, 100, false);
        a.add(&c(1), &e, true); // process not known yet
        a.add(&with_process(c(1), 10, "curl", 1000, 1), &e, true);
        a.add(&with_process(c(2), 11, "curl", 3000, 0), &e, true);
        a.add(&with_process(c(3), 20, "wget", 500, 0), &e, true);
        a.add(&with_process(c(4), 30, "nc", 500, 0), &e, true);
        a.add(&with_process(c(5), 40, "python3", 500, 2), &e, true);
        let recs = a.flush(1, EventTime::default());
        let by = |n: &str| {
            recs.iter()
                .find(|r| get(r, "process_name") == &s(n))
                .unwrap()
        };
        assert_eq!(
            recs.len(),
            4,
            "-, curl, wget, and * for nc+python3: {recs:#?}"
        );
        let dash = by("-");
        assert_eq!(get(dash, "num_process_names"), &Value::UInt(0));
        assert_eq!(get(dash, "tcp_mean_smooth_rtt"), &Value::UInt(0));
        let curl = by("curl");
        assert_eq!(get(curl, "process_id"), &s("*"));
        assert_eq!(get(curl, "num_process_ids"), &Value::UInt(2));
        assert_eq!(get(curl, "num_flows"), &Value::UInt(2));
        assert_eq!(get(curl, "bytes_out"), &Value::UInt(200));
        assert_eq!(get(curl, "tcp_mean_smooth_rtt"), &Value::UInt(2000));
        assert_eq!(get(curl, "tcp_max_smooth_rtt"), &Value::UInt(3000));
        assert_eq!(get(curl, "tcp_total_retransmissions"), &Value::UInt(1));
        assert_eq!(get(curl, "tcp_min_mss"), &Value::UInt(1448));
        let wget = by("wget");
        assert_eq!(get(wget, "process_id"), &s("20"));
        assert_eq!(get(wget, "process_args"), &Value::Array(vec![s("--id 20")]));
        let rest = by("*");
        assert_eq!(get(rest, "num_process_names"), &Value::UInt(2));
        assert_eq!(get(rest, "process_id"), &s("*"));
        assert_eq!(get(rest, "num_process_ids"), &Value::UInt(2));
        assert_eq!(get(rest, "num_flows"), &Value::UInt(2));
        assert_eq!(get(rest, "tcp_total_retransmissions"), &Value::UInt(2));
        // Next interval: connection 1 is carried by curl only, not by "-".
        let next = a.flush(2, EventTime::default());
        assert!(
            next.iter().all(|r| get(r, "process_name") != &s("-")),
            "{next:#?}"
        );
    }

    /// Off (the default): process fields carry Calico's "not included" values and TCP
    /// stats still aggregate (include_tcp_stats alone).
    #[test]
    fn without_include_process_one_record_with_calicos_off_values() {
        let e = eps();
        let mut a = Aggregator::new(2, 1, 1000, "h", 0);
        let c = |sport| update("10.0.0.1", sport, "10.0.0.3", 80, 100, 100, false);
        a.add(&with_process(c(1), 10, "curl", 1000, 1), &e, true);
        a.add(&with_process(c(2), 20, "wget", 3000, 2), &e, true);
        let recs = a.flush(1, EventTime::default());
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(
            [
                get(r, "process_name"),
                get(r, "num_process_names"),
                get(r, "process_id"),
                get(r, "num_process_ids"),
                get(r, "process_args"),
                get(r, "num_process_args"),
            ],
            [
                &s("-"),
                &Value::UInt(0),
                &s("-"),
                &Value::UInt(0),
                &Value::Array(vec![s("-")]),
                &Value::UInt(0)
            ]
        );
        assert_eq!(get(r, "tcp_mean_smooth_rtt"), &Value::UInt(2000));
        assert_eq!(get(r, "tcp_total_retransmissions"), &Value::UInt(3));
    }

    #[test]
    fn bounded_entries() {
        let e = eps();
        let mut a = Aggregator::new(0, 0, 2, "h", 0);
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
