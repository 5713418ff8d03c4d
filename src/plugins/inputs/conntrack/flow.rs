//! Per-connection state for deltas, and the record schema. Sans-IO: events and dumps
//! go in, records come out; tested without a kernel.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::decode::{Counters, Flow, Kind, Tuple5};
use crate::event::format::iso8601;
use crate::event::{EventTime, Map, Record, Str, Value};

/// A connection's identity: the kernel id can be reused, so with its tuple and zone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    id: u32,
    orig: Tuple5,
    zone: u16,
}

#[derive(Clone, Copy, Debug, Default)]
struct Last {
    orig: Counters,
    reply: Counters,
    /// The dump generation that last saw it.
    seen: u64,
}

/// Counter deltas since the previous report of the same connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    pub orig: Counters,
    pub reply: Counters,
}

/// The last counters of every live connection, bounded by `max`.
pub struct FlowTable {
    flows: HashMap<Key, Last>,
    /// Connections whose DESTROY was reported, with the dump generation then: a dump
    /// read before the DESTROY may still list them, and must not bring them back.
    destroyed: HashMap<Key, u64>,
    max: usize,
    generation: u64,
    /// Connections not tracked because the table was full (their deltas are cumulative).
    pub untracked: u64,
}

fn key(f: &Flow) -> Option<Key> {
    f.id.map(|id| Key {
        id,
        orig: f.orig.clone(),
        zone: f.zone,
    })
}

/// Calico's rule: a counter below the last one means the kernel reset it.
fn delta(now: Counters, prev: Counters) -> Counters {
    let d = |a: u64, b: u64| if a >= b { a - b } else { a };
    Counters {
        packets: d(now.packets, prev.packets),
        bytes: d(now.bytes, prev.bytes),
    }
}

impl FlowTable {
    pub fn new(max: usize) -> FlowTable {
        FlowTable {
            flows: HashMap::new(),
            destroyed: HashMap::new(),
            max,
            generation: 0,
            untracked: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    fn insert(&mut self, k: Key, last: Last) {
        if self.flows.len() >= self.max && !self.flows.contains_key(&k) {
            self.untracked += 1;
            return;
        }
        self.flows.insert(k, last);
    }

    /// An event: NEW starts tracking, DESTROY reports the final delta and forgets.
    pub fn on_event(&mut self, kind: Kind, f: &Flow) -> Option<Deltas> {
        let k = key(f)?;
        match kind {
            Kind::New => {
                if !self.flows.contains_key(&k) {
                    let seen = self.generation;
                    self.insert(
                        k,
                        Last {
                            seen,
                            ..Last::default()
                        },
                    );
                }
                None
            }
            Kind::Destroy => {
                let prev = self.flows.remove(&k).unwrap_or_default();
                if self.destroyed.len() < self.max {
                    self.destroyed.insert(k, self.generation);
                }
                let (o, r) = (f.orig_counters?, f.reply_counters.unwrap_or_default());
                Some(Deltas {
                    orig: delta(o, prev.orig),
                    reply: delta(r, prev.reply),
                })
            }
            Kind::Update | Kind::Sample => None,
        }
    }

    /// A whole dump: deltas for every entry (and whether it was unknown, i.e. its NEW
    /// was missed), `None` for entries already over (dying, or their DESTROY already
    /// reported); connections the dump no longer shows are forgotten.
    pub fn on_dump(&mut self, flows: &[Flow]) -> Vec<Option<(Deltas, bool)>> {
        self.generation += 1;
        let generation = self.generation;
        // A tombstone outlives the dump that may have raced with its DESTROY.
        self.destroyed.retain(|_, g| *g + 2 > generation);
        let mut out = Vec::with_capacity(flows.len());
        for f in flows {
            if f.status & STATUS_DYING != 0
                || key(f).is_some_and(|k| self.destroyed.contains_key(&k))
            {
                out.push(None);
                continue;
            }
            let (o, r) = (
                f.orig_counters.unwrap_or_default(),
                f.reply_counters.unwrap_or_default(),
            );
            let Some(k) = key(f) else {
                out.push(Some((Deltas { orig: o, reply: r }, false)));
                continue;
            };
            match self.flows.get_mut(&k) {
                Some(last) => {
                    out.push(Some((
                        Deltas {
                            orig: delta(o, last.orig),
                            reply: delta(r, last.reply),
                        },
                        false,
                    )));
                    *last = Last {
                        orig: o,
                        reply: r,
                        seen: generation,
                    };
                }
                None => {
                    out.push(Some((Deltas { orig: o, reply: r }, true)));
                    self.insert(
                        k,
                        Last {
                            orig: o,
                            reply: r,
                            seen: generation,
                        },
                    );
                }
            }
        }
        // Gone from the table without a DESTROY we saw (lost, or filtered): forget them,
        // one dump later. A dump reaps expired entries itself, so their DESTROY events
        // may reach us just after it: they still need the last counters.
        self.flows.retain(|_, last| last.seen + 1 >= generation);
        out
    }
}

/// `IPS_DYING`: the entry is being destroyed; its DESTROY event carries the final counters.
const STATUS_DYING: u32 = 1 << 9;

const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

const STATUS_BITS: [&str; 15] = [
    "EXPECTED",
    "SEEN_REPLY",
    "ASSURED",
    "CONFIRMED",
    "SRC_NAT",
    "DST_NAT",
    "SEQ_ADJUST",
    "SRC_NAT_DONE",
    "DST_NAT_DONE",
    "DYING",
    "FIXED_TIMEOUT",
    "TEMPLATE",
    "UNTRACKED",
    "HELPER",
    "OFFLOAD",
];

/// Protocol name for a number, as `/etc/protocols` spells the common ones.
pub fn proto_name(n: u8) -> Option<&'static str> {
    Some(match n {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

/// Interned field names: records are built at event rate, keys are refcounted.
pub struct Schema {
    keys: Vec<Str>,
    host: Value,
    /// Interned words (event kinds, families, protocols, TCP states, status flags): a
    /// clone is a refcount, not an allocation per record.
    words: std::collections::HashMap<&'static str, Value>,
}

const FIELDS: [&str; 35] = [
    "event",
    "ct_id",
    "family",
    "proto",
    "proto_num",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "reply_src_ip",
    "reply_src_port",
    "reply_dst_ip",
    "reply_dst_port",
    "snat",
    "dnat",
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "tcp_state",
    "status",
    "mark",
    "zone",
    "flow_start",
    "flow_end",
    "orig_packets",
    "orig_bytes",
    "reply_packets",
    "reply_bytes",
    "delta_orig_packets",
    "delta_orig_bytes",
    "delta_reply_packets",
    "delta_reply_bytes",
    "timeout",
    "new_flow",
    "host",
];

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map(f).unwrap_or(Value::Nil)
}

fn ip(a: Option<IpAddr>) -> Value {
    opt(a, |a| Value::Str(Arc::from(a.to_string())))
}

fn ns_time(ns: u64) -> EventTime {
    EventTime::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
}

impl Schema {
    pub fn new(host: &str) -> Schema {
        let kinds = [
            "new", "update", "destroy", "sample", "ipv4", "ipv6", "other", "UNKNOWN",
        ];
        let protos = (0..=255u8).filter_map(proto_name);
        let words = kinds
            .into_iter()
            .chain(protos)
            .chain(TCP_STATES)
            .chain(STATUS_BITS)
            .map(|w| (w, Value::Str(Arc::from(w))))
            .collect();
        Schema {
            keys: FIELDS.iter().map(|k| Arc::from(*k)).collect(),
            host: Value::Str(Arc::from(host)),
            words,
        }
    }

    fn word(&self, w: &'static str) -> Value {
        self.words
            .get(w)
            .cloned()
            .unwrap_or_else(|| Value::Str(Arc::from(w)))
    }

    /// One record, fields in `FIELDS` order. `new_flow`: a sample of a connection whose
    /// NEW event was not seen (started before the agent, or lost).
    pub fn record(
        &self,
        kind: Kind,
        f: &Flow,
        deltas: Option<Deltas>,
        new_flow: bool,
        now: EventTime,
    ) -> Record {
        let ports = matches!(f.orig.proto, 6 | 17 | 33 | 132 | 136);
        let port = |p: Option<u16>| {
            if ports {
                opt(p, |p| Value::UInt(p as u64))
            } else {
                Value::Nil
            }
        };
        let ctr = |c: Option<Counters>, pick: fn(Counters) -> u64| opt(c, |c| Value::UInt(pick(c)));
        let status: Vec<Value> = STATUS_BITS
            .iter()
            .enumerate()
            .filter(|(i, _)| f.status & (1 << i) != 0)
            .map(|(_, s)| self.word(s))
            .collect();
        let values = [
            self.word(kind.as_str()),
            opt(f.id, |v| Value::UInt(v as u64)),
            self.word(match f.family {
                2 => "ipv4",
                10 => "ipv6",
                _ => "other",
            }),
            opt(proto_name(f.orig.proto), |s| self.word(s)),
            Value::UInt(f.orig.proto as u64),
            ip(f.orig.src),
            port(f.orig.sport),
            ip(f.orig.dst),
            port(f.orig.dport),
            ip(f.reply.src),
            port(f.reply.sport),
            ip(f.reply.dst),
            port(f.reply.dport),
            // Source NAT: the reply goes to another address than the original source.
            Value::Bool(f.reply.dst != f.orig.src || (ports && f.reply.dport != f.orig.sport)),
            Value::Bool(f.reply.src != f.orig.dst || (ports && f.reply.sport != f.orig.dport)),
            opt(f.orig.icmp_type, |v| Value::UInt(v as u64)),
            opt(f.orig.icmp_code, |v| Value::UInt(v as u64)),
            opt(f.orig.icmp_id, |v| Value::UInt(v as u64)),
            opt(f.tcp_state, |s| {
                self.word(TCP_STATES.get(s as usize).copied().unwrap_or("UNKNOWN"))
            }),
            Value::Array(status),
            Value::UInt(f.mark.unwrap_or(0) as u64),
            Value::UInt(f.zone as u64),
            opt(f.start_ns, |ns| Value::Str(Arc::from(iso8601(ns_time(ns))))),
            opt(f.stop_ns, |ns| Value::Str(Arc::from(iso8601(ns_time(ns))))),
            ctr(f.orig_counters, |c| c.packets),
            ctr(f.orig_counters, |c| c.bytes),
            ctr(f.reply_counters, |c| c.packets),
            ctr(f.reply_counters, |c| c.bytes),
            opt(deltas, |d| Value::UInt(d.orig.packets)),
            opt(deltas, |d| Value::UInt(d.orig.bytes)),
            opt(deltas, |d| Value::UInt(d.reply.packets)),
            opt(deltas, |d| Value::UInt(d.reply.bytes)),
            opt(f.timeout, |v| Value::UInt(v as u64)),
            Value::Bool(new_flow),
            self.host.clone(),
        ];
        let body: Map = self.keys.iter().cloned().zip(values).collect();
        let time = match (kind, f.event_ns) {
            (Kind::Sample, _) | (_, None) => now,
            (_, Some(ns)) => ns_time(ns),
        };
        Record::new(time, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(id: u32, sport: u16, o: (u64, u64), r: (u64, u64)) -> Flow {
        Flow {
            family: 2,
            id: Some(id),
            orig: Tuple5 {
                src: Some("10.0.0.1".parse().unwrap()),
                dst: Some("10.0.0.2".parse().unwrap()),
                proto: 6,
                sport: Some(sport),
                dport: Some(80),
                ..Tuple5::default()
            },
            orig_counters: Some(Counters {
                packets: o.0,
                bytes: o.1,
            }),
            reply_counters: Some(Counters {
                packets: r.0,
                bytes: r.1,
            }),
            ..Flow::default()
        }
    }

    fn d(o: (u64, u64), r: (u64, u64)) -> Deltas {
        Deltas {
            orig: Counters {
                packets: o.0,
                bytes: o.1,
            },
            reply: Counters {
                packets: r.0,
                bytes: r.1,
            },
        }
    }

    #[test]
    fn samples_and_destroy_report_deltas() {
        let mut t = FlowTable::new(100);
        assert_eq!(t.on_event(Kind::New, &flow(1, 1000, (0, 0), (0, 0))), None);
        assert_eq!(
            t.on_dump(&[flow(1, 1000, (3, 300), (2, 200))]),
            vec![Some((d((3, 300), (2, 200)), false))]
        );
        assert_eq!(
            t.on_dump(&[flow(1, 1000, (5, 500), (2, 200))]),
            vec![Some((d((2, 200), (0, 0)), false))]
        );
        assert_eq!(
            t.on_event(Kind::Destroy, &flow(1, 1000, (6, 560), (3, 260))),
            Some(d((1, 60), (1, 60)))
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn missed_new_reset_and_eviction() {
        let mut t = FlowTable::new(100);
        // First seen in a dump: reported whole, marked as new.
        assert_eq!(
            t.on_dump(&[flow(7, 1, (4, 40), (0, 0))]),
            vec![Some((d((4, 40), (0, 0)), true))]
        );
        // A counter that went down was reset: the delta is the new value.
        assert_eq!(
            t.on_dump(&[flow(7, 1, (1, 10), (0, 0))]),
            vec![Some((d((1, 10), (0, 0)), false))]
        );
        // Not in the next dump: kept one more dump for a late DESTROY, then forgotten.
        assert_eq!(t.on_dump(&[]), vec![]);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.on_event(Kind::Destroy, &flow(7, 1, (2, 20), (0, 0))),
            Some(d((1, 10), (0, 0))),
            "a late DESTROY still gets its delta"
        );
        t.on_event(Kind::New, &flow(8, 1, (0, 0), (0, 0)));
        t.on_dump(&[]);
        t.on_dump(&[]);
        assert_eq!(t.len(), 0);
        // Same id, other tuple: another connection.
        t.on_event(Kind::New, &flow(9, 1, (0, 0), (0, 0)));
        t.on_event(Kind::New, &flow(9, 2, (0, 0), (0, 0)));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_dump_racing_a_destroy_does_not_bring_the_connection_back() {
        let mut t = FlowTable::new(100);
        t.on_event(Kind::New, &flow(3, 5, (0, 0), (0, 0)));
        t.on_event(Kind::Destroy, &flow(3, 5, (4, 400), (1, 100)));
        // A dump read just before the DESTROY still lists the entry: skipped.
        assert_eq!(t.on_dump(&[flow(3, 5, (4, 400), (1, 100))]), vec![None]);
        let mut dying = flow(4, 6, (1, 1), (0, 0));
        dying.status = STATUS_DYING;
        assert_eq!(
            t.on_dump(&[dying]),
            vec![None],
            "a dying entry's DESTROY has its counters"
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn bounded() {
        let mut t = FlowTable::new(2);
        for i in 0..5 {
            t.on_event(Kind::New, &flow(i, 1, (0, 0), (0, 0)));
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.untracked, 3);
    }

    #[test]
    fn record_fields() {
        let s = Schema::new("node-1");
        let mut f = flow(42, 41734, (12, 80632), (10, 528));
        f.reply.src = Some("10.0.1.7".parse().unwrap());
        f.reply.dst = Some("10.0.0.1".parse().unwrap());
        f.reply.sport = Some(80);
        f.reply.dport = Some(41734);
        f.status = 0b1110;
        f.tcp_state = Some(3);
        let r = s.record(
            Kind::Sample,
            &f,
            Some(d((3, 10156), (2, 104))),
            false,
            EventTime::new(5, 0),
        );
        let get = |k: &str| {
            r.body
                .iter()
                .find(|(x, _)| &**x == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("event"), Value::Str(Arc::from("sample")));
        assert_eq!(get("proto"), Value::Str(Arc::from("tcp")));
        assert_eq!(get("dst_port"), Value::UInt(80));
        assert_eq!(get("dnat"), Value::Bool(true));
        assert_eq!(get("snat"), Value::Bool(false));
        assert_eq!(get("tcp_state"), Value::Str(Arc::from("ESTABLISHED")));
        assert_eq!(
            get("status"),
            Value::Array(vec![
                Value::Str(Arc::from("SEEN_REPLY")),
                Value::Str(Arc::from("ASSURED")),
                Value::Str(Arc::from("CONFIRMED"))
            ])
        );
        assert_eq!(get("delta_orig_bytes"), Value::UInt(10156));
        assert_eq!(get("orig_bytes"), Value::UInt(80632));
        assert_eq!(get("icmp_type"), Value::Nil);
        assert_eq!(get("host"), Value::Str(Arc::from("node-1")));
        assert_eq!(r.body.len(), FIELDS.len());
    }
}
