//! Calico's flow-log aggregation, sans-IO: updates in, one record per aggregated flow
//! out at each flush. Keys per level, counting and calibration follow Calico
//! Enterprise's felix/collector/flowlog (shared/spec/flows.md §2.3–2.5).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::domains::{self, DnsCache};
use super::endpoints::{Endpoint, Endpoints};
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
    /// `dest_domains`: names the destination was resolved from (bounded).
    domains: Vec<Str>,
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
    /// Names of addresses learnt from DNS answers, for `dest_domains`.
    pub dns: DnsCache,
}

const FIELDS: [&str; 33] = [
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
    "original_source_ips",
    "num_original_source_ips",
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
            dns: DnsCache::new(100_000, 5, 0),
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
        };
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            self.overflow += 1;
            return;
        }
        let e = self.entries.entry(key).or_default();
        e.touched = true;
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
        // As Calico: for flows reported by their source to a destination outside the
        // known workloads (a network or network set).
        if reporter == Reporter::Src && matches!(&*dst_ep.kind, "net" | "ns") {
            domains::add_to(&mut e.domains, &self.dns, u.conn.dst);
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
        });
        for k in keys {
            let e = &self.entries[k];
            out.push(self.record(k, e, start, end, time));
        }
        self.entries.retain(|_, e| !e.active.is_empty());
        for e in self.entries.values_mut() {
            // Names stay with live connections (Calico keeps them per connection).
            *e = Entry {
                flows: e.active.clone(),
                active: std::mem::take(&mut e.active),
                domains: std::mem::take(&mut e.domains),
                ..Entry::default()
            };
        }
        out
    }

    fn record(&self, k: &Key, e: &Entry, start: i64, end: i64, time: EventTime) -> Record {
        let opt_ip = |ip: Option<IpAddr>| ip.map_or(Value::Nil, |ip| str_value(&ip.to_string()));
        let opt_port = |p: Option<u16>| p.map_or(Value::Nil, |p| Value::UInt(p as u64));
        let proto = proto_name(k.proto).map_or_else(|| k.proto.to_string(), str::to_string);
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
            domains::value(&e.domains),
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
            Value::Nil,
            Value::UInt(0),
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
            packet: false,
            action: Action::Allow,
            policies: vec![],
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
