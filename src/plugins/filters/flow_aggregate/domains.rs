//! `dest_domains`: which names an address was resolved from, learnt from the `dns`
//! records of `nflog` (`dns on`), as Calico's felix domain info store does
//! (felix/dataplane/dns/domain_info_store.go, one store for all clients):
//! - an A/AAAA answer maps its address to the *top* of its CNAME chain, the name the
//!   client asked for (`www.example.com` → CNAME `lb.example.net` → A 1.2.3.4 gives
//!   1.2.3.4 → `www.example.com`), across responses too (a CNAME learnt earlier);
//! - names are kept per address most recent first, at most `limit`
//!   (Calico's FlowLogsFileDomainsLimit, 5);
//! - each expires after its TTL (at least 2 s, as Calico) plus `extra_ttl`
//!   (Calico's DNSExtraTTL);
//! - at most `max` addresses and `max` CNAME targets; answers for more are counted
//!   in `overflow` and dropped. Expired entries are purged every few seconds.
//!
//! Sans-IO: time comes in through [`DnsCache::set_now`] (milliseconds).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::event::{Str, Value};

/// Calico's minimum TTL of a learnt name (a TTL of 0 or 1 would be gone before the
/// connection that follows the lookup is seen).
const MIN_TTL_MS: u64 = 2_000;
/// Longest CNAME chain walked back to the name the client asked for.
const MAX_CHAIN: usize = 16;
/// Milliseconds between purges of expired entries.
const PURGE_EVERY_MS: u64 = 5_000;

#[derive(Clone, Debug)]
struct Named {
    name: Str,
    /// Cache time (see `now`) at which it is forgotten.
    expires: u64,
}

pub struct DnsCache {
    /// Address → the names it was resolved from, most recent first, at most `limit`.
    ips: HashMap<IpAddr, Vec<Named>>,
    /// CNAME target → the names that are aliases of it.
    aliases: HashMap<Str, Vec<Named>>,
    pub limit: usize,
    max: usize,
    extra_ttl_ms: u64,
    /// Milliseconds since `base`.
    now: u64,
    base: Option<Instant>,
    next_purge: u64,
    /// Answers dropped because `max` addresses or CNAME targets were held.
    pub overflow: u64,
}

/// Adds `n` to the front of `list` (or moves it there with the later expiry), keeping
/// at most `limit`.
fn push_front(list: &mut Vec<Named>, n: Named, limit: usize) {
    if let Some(i) = list.iter().position(|x| x.name == n.name) {
        let old = list.remove(i);
        list.insert(
            0,
            Named {
                expires: old.expires.max(n.expires),
                ..n
            },
        );
    } else {
        list.insert(0, n);
        list.truncate(limit);
    }
}

fn get<'a>(m: &'a [(Str, Value)], k: &str) -> Option<&'a Value> {
    m.iter().find(|(x, _)| &**x == k).map(|(_, v)| v)
}

fn text<'a>(m: &'a [(Str, Value)], k: &str) -> Option<&'a Str> {
    match get(m, k) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

impl DnsCache {
    pub fn new(max: usize, limit: usize, extra_ttl: Duration) -> DnsCache {
        DnsCache {
            ips: HashMap::new(),
            aliases: HashMap::new(),
            limit,
            max,
            extra_ttl_ms: extra_ttl.as_millis().min(u64::MAX as u128 / 4) as u64,
            now: 0,
            base: None,
            next_purge: PURGE_EVERY_MS,
            overflow: 0,
        }
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// Sets the clock; purges expired entries every few seconds.
    pub fn set_now(&mut self, now: Instant) {
        let base = *self.base.get_or_insert(now);
        self.advance(now.saturating_duration_since(base).as_millis() as u64);
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now.max(ms);
        if self.now >= self.next_purge {
            self.next_purge = self.now.saturating_add(PURGE_EVERY_MS);
            purge(&mut self.aliases, self.now);
            purge(&mut self.ips, self.now);
        }
    }

    /// The live names `ip` was resolved from, most recent first. No allocation; O(1).
    pub fn names(&self, ip: IpAddr) -> impl Iterator<Item = &Str> {
        let now = self.now;
        self.ips
            .get(&ip)
            .into_iter()
            .flatten()
            .filter(move |n| n.expires > now)
            .map(|n| &n.name)
    }

    /// Learns the `answers` of one `dns` record (`{name, type, ttl, address|cname}`
    /// maps): the CNAMEs first, so that a chain listed in any order resolves.
    pub fn learn(&mut self, answers: &[Value]) {
        let maps = || {
            answers.iter().filter_map(|a| match a {
                Value::Map(m) => Some(m),
                _ => None,
            })
        };
        let ttl = |m: &[(Str, Value)]| match get(m, "ttl") {
            Some(Value::UInt(t)) => *t,
            Some(Value::Int(t)) => (*t).max(0) as u64,
            _ => 0,
        };
        for m in maps() {
            if let (Some(name), Some(target)) = (text(m, "name"), text(m, "cname")) {
                let expires = self.expiry(ttl(m));
                self.alias(name, target, expires);
            }
        }
        let mut tops = Vec::new();
        for m in maps() {
            let (Some(name), Some(addr)) = (text(m, "name"), text(m, "address")) else {
                continue;
            };
            let Ok(ip) = addr.parse::<IpAddr>() else {
                continue;
            };
            // Calico ignores 0.0.0.0 (blocklists answer it); `::` likewise.
            if ip.is_unspecified() {
                continue;
            }
            let expires = self.expiry(ttl(m));
            tops.clear();
            self.tops(name, &mut tops);
            self.address(ip, &tops, expires);
        }
    }

    fn expiry(&self, ttl: u64) -> u64 {
        let ttl_ms = ttl.saturating_mul(1000).max(MIN_TTL_MS);
        self.now
            .saturating_add(ttl_ms)
            .saturating_add(self.extra_ttl_ms)
    }

    fn alias(&mut self, name: &Str, target: &Str, expires: u64) {
        if name == target {
            return;
        }
        let n = self.aliases.len();
        let list = match self.aliases.get_mut(target) {
            Some(l) => l,
            None if n >= self.max => {
                self.overflow += 1;
                return;
            }
            None => self.aliases.entry(target.clone()).or_default(),
        };
        push_front(
            list,
            Named {
                name: name.clone(),
                expires,
            },
            self.limit,
        );
    }

    /// The names at the top of `name`'s CNAME chains (`name` itself when nothing
    /// aliases it), at most `limit`.
    fn tops(&self, name: &Str, out: &mut Vec<Str>) {
        let mut stack = vec![(name.clone(), 0usize)];
        let mut seen: Vec<Str> = Vec::new();
        while let Some((n, depth)) = stack.pop() {
            if seen.contains(&n) {
                continue;
            }
            seen.push(n.clone());
            let before = stack.len();
            if depth < MAX_CHAIN {
                let parents = self.aliases.get(&n).into_iter().flatten();
                for p in parents.filter(|p| p.expires > self.now && !seen.contains(&p.name)) {
                    stack.push((p.name.clone(), depth + 1));
                }
            }
            if stack.len() == before && !out.contains(&n) {
                out.push(n);
                if out.len() >= self.limit {
                    return;
                }
            }
        }
    }

    fn address(&mut self, ip: IpAddr, names: &[Str], expires: u64) {
        let n = self.ips.len();
        let list = match self.ips.get_mut(&ip) {
            Some(l) => l,
            None if n >= self.max => {
                self.overflow += 1;
                return;
            }
            None => self.ips.entry(ip).or_default(),
        };
        // The first top is the most relevant: add it last so it ends up in front.
        for name in names.iter().rev() {
            push_front(
                list,
                Named {
                    name: name.clone(),
                    expires,
                },
                self.limit,
            );
        }
    }
}

/// Drops expired names, and keys left with none.
fn purge<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<Named>>, now: u64) {
    map.retain(|_, l| {
        l.retain(|n| n.expires > now);
        !l.is_empty()
    });
}

/// The `dest_domains` of a flow: its names sorted (Calico writes a Go map's keys, in
/// no set order), `null` when there are none (as Calico).
pub fn value(domains: &[Str]) -> Value {
    if domains.is_empty() {
        return Value::Nil;
    }
    let mut d: Vec<&Str> = domains.iter().collect();
    d.sort();
    Value::Array(d.into_iter().map(|s| Value::Str(s.clone())).collect())
}

/// Adds `ip`'s names to a flow's set of at most `limit` (Calico's
/// aggregateFlowDestDomains: names past the limit are not added).
pub fn add_to(flow: &mut Vec<Str>, cache: &DnsCache, ip: IpAddr) {
    for n in cache.names(ip) {
        if flow.len() >= cache.limit {
            return;
        }
        if !flow.contains(n) {
            flow.push(n.clone());
        }
    }
}

/// Reads a `dns` record's answers: `Some` for a `dns` record (consumed by the
/// filter), `None` for any other.
pub fn answers(r: &crate::event::Record) -> Option<&[Value]> {
    let f = |k: &str| r.body.iter().find(|(x, _)| &**x == k).map(|(_, v)| v);
    match f("event") {
        Some(Value::Str(e)) if &**e == "dns" => match f("answers") {
            Some(Value::Array(a)) => Some(a),
            _ => Some(&[]),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn arc(s: &str) -> Str {
        Arc::from(s)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn a(name: &str, ttl: u64, addr: &str) -> Value {
        Value::Map(vec![
            (arc("name"), Value::Str(Arc::from(name))),
            (arc("type"), Value::Str(Arc::from("A"))),
            (arc("ttl"), Value::UInt(ttl)),
            (arc("address"), Value::Str(Arc::from(addr))),
        ])
    }

    fn cname(name: &str, ttl: u64, target: &str) -> Value {
        Value::Map(vec![
            (arc("name"), Value::Str(Arc::from(name))),
            (arc("type"), Value::Str(Arc::from("CNAME"))),
            (arc("ttl"), Value::UInt(ttl)),
            (arc("cname"), Value::Str(Arc::from(target))),
        ])
    }

    fn names(c: &DnsCache, addr: &str) -> Vec<String> {
        c.names(ip(addr)).map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_cname_chain_maps_the_address_to_the_name_asked_for() {
        let mut c = DnsCache::new(100, 5, Duration::ZERO);
        // In the order a resolver answers, and reversed: the same result.
        c.learn(&[
            cname("www.example.com", 300, "lb.example.net"),
            cname("lb.example.net", 60, "edge.cdn.test"),
            a("edge.cdn.test", 20, "192.0.2.7"),
        ]);
        assert_eq!(names(&c, "192.0.2.7"), ["www.example.com"]);
        let mut r = DnsCache::new(100, 5, Duration::ZERO);
        r.learn(&[
            a("edge.cdn.test", 20, "192.0.2.7"),
            cname("lb.example.net", 60, "edge.cdn.test"),
            cname("www.example.com", 300, "lb.example.net"),
        ]);
        assert_eq!(names(&r, "192.0.2.7"), ["www.example.com"]);
        // Across responses: a CNAME learnt first, the address in a later answer.
        let mut x = DnsCache::new(100, 5, Duration::ZERO);
        x.learn(&[cname("api.example.com", 300, "api.lb.test")]);
        x.learn(&[a("api.lb.test", 300, "192.0.2.8")]);
        assert_eq!(names(&x, "192.0.2.8"), ["api.example.com"]);
        // A second name for the same address goes in front; a loop ends.
        x.learn(&[a("other.test", 300, "192.0.2.8")]);
        assert_eq!(names(&x, "192.0.2.8"), ["other.test", "api.example.com"]);
        x.learn(&[
            cname("p.test", 300, "q.test"),
            cname("q.test", 300, "p.test"),
        ]);
        x.learn(&[a("p.test", 300, "192.0.2.9")]);
        assert_eq!(names(&x, "192.0.2.9").len(), 1);
        assert!(names(&x, "192.0.2.10").is_empty());
    }

    #[test]
    fn names_expire_after_their_ttl_at_least_two_seconds_plus_extra() {
        let mut c = DnsCache::new(100, 5, Duration::ZERO);
        c.learn(&[
            a("short.test", 0, "192.0.2.1"),
            a("long.test", 30, "192.0.2.2"),
        ]);
        c.advance(1_999);
        assert_eq!(
            names(&c, "192.0.2.1"),
            ["short.test"],
            "Calico's 2 s minimum"
        );
        c.advance(2_000);
        assert!(names(&c, "192.0.2.1").is_empty());
        assert_eq!(names(&c, "192.0.2.2"), ["long.test"]);
        c.advance(30_000);
        assert!(names(&c, "192.0.2.2").is_empty());
        c.advance(40_000);
        assert_eq!(c.len(), 0, "purged");
        // A CNAME that expired no longer leads back to its alias.
        let mut e = DnsCache::new(100, 5, Duration::from_secs(10));
        e.learn(&[cname("w.test", 5, "t.test")]);
        e.advance(14_000);
        e.learn(&[a("t.test", 5, "192.0.2.3")]);
        assert_eq!(names(&e, "192.0.2.3"), ["w.test"], "5 s + extra 10 s");
        e.advance(16_000);
        e.learn(&[a("t.test", 5, "192.0.2.4")]);
        assert_eq!(names(&e, "192.0.2.4"), ["t.test"]);
    }

    #[test]
    fn bounded_in_addresses_aliases_and_names_per_address() {
        let mut c = DnsCache::new(2, 3, Duration::ZERO);
        c.learn(&[
            a("a.test", 60, "192.0.2.1"),
            a("b.test", 60, "192.0.2.2"),
            a("c.test", 60, "192.0.2.3"),
        ]);
        assert_eq!((c.len(), c.overflow), (2, 1));
        assert!(names(&c, "192.0.2.3").is_empty());
        for n in ["d", "e", "f", "g"] {
            c.learn(&[a(&format!("{n}.test"), 60, "192.0.2.1")]);
        }
        assert_eq!(names(&c, "192.0.2.1"), ["g.test", "f.test", "e.test"]);
        c.learn(&[
            cname("x.test", 60, "t1.test"),
            cname("y.test", 60, "t2.test"),
            cname("z.test", 60, "t3.test"),
        ]);
        assert_eq!(c.overflow, 2);
        // The flow's set stops at the limit too.
        let mut flow = vec![arc("one.test")];
        add_to(&mut flow, &c, ip("192.0.2.1"));
        assert_eq!(flow.len(), 3);
        add_to(&mut flow, &c, ip("192.0.2.2"));
        assert_eq!(flow.len(), 3);
        assert_eq!(
            value(&flow),
            Value::Array(
                ["f.test", "g.test", "one.test"]
                    .iter()
                    .map(|s| Value::Str(arc(s)))
                    .collect()
            )
        );
        assert_eq!(value(&[]), Value::Nil);
    }

    #[test]
    fn unspecified_unparsable_and_absurd_answers_are_harmless() {
        let mut c = DnsCache::new(10, 5, Duration::ZERO);
        c.learn(&[a("huge.test", u64::MAX, "192.0.2.1")]);
        c.advance(u64::MAX - 1);
        assert_eq!(
            names(&c, "192.0.2.1"),
            ["huge.test"],
            "saturates, no overflow"
        );
        let mut c = DnsCache::new(10, 5, Duration::ZERO);
        c.learn(&[
            a("blocked.test", 60, "0.0.0.0"),
            a("bad.test", 60, "not an ip"),
            Value::Str(arc("not a map")),
        ]);
        assert_eq!(c.len(), 0);
    }

    /// Wired into the aggregator: a flow its source reports to an address outside the
    /// workloads lists the names (sorted); to a workload, or with no answer, `null`.
    /// Names stay with a live connection into the next interval.
    #[test]
    fn flows_to_resolved_addresses_carry_dest_domains() {
        use super::super::aggregate::{Aggregator, Conn, Kind, Options, Update};
        use super::super::endpoints::{Endpoint, Endpoints};
        use crate::event::EventTime;
        let wep = |n: &str, local: bool| Endpoint {
            kind: arc("wep"),
            namespace: arc("ns"),
            name: arc(n),
            name_aggr: arc(n),
            labels: Arc::default(),
            local,
        };
        let mut eps = Endpoints::new();
        eps.insert("10.0.0.1", wep("client", true)).unwrap();
        eps.insert("192.0.2.8", wep("pod", false)).unwrap();
        let mut agg = Aggregator::new(Options::default(), "h", 0);
        agg.dns = DnsCache::new(100, 5, Duration::ZERO);
        agg.dns.learn(&[
            cname("www.example.com", 300, "lb.example.net"),
            a("lb.example.net", 300, "192.0.2.7"),
            a("api.example.com", 300, "192.0.2.7"),
        ]);
        let flow = |dst: &str, dport: u16, expired: bool| Update {
            conn: Conn {
                proto: 6,
                src: ip("10.0.0.1"),
                sport: 40000,
                dst: ip(dst),
                dport,
            },
            has_ports: true,
            orig_packets: 1,
            orig_bytes: 60,
            reply_packets: 1,
            reply_bytes: 60,
            expired,
            kind: Kind::Conntrack,
            nat_port: 0,
            pre_dnat: None,
        };
        agg.add(&flow("192.0.2.7", 443, false), &eps, true);
        agg.add(&flow("192.0.2.99", 8443, true), &eps, true);
        let recs = agg.flush(10, EventTime::default());
        let get = |r: &crate::event::Record, k: &str| {
            r.body.iter().find(|(x, _)| &**x == k).unwrap().1.clone()
        };
        let named = Value::Array(vec![
            Value::Str(arc("api.example.com")),
            Value::Str(arc("www.example.com")),
        ]);
        let port = |p: u64| recs.iter().find(|r| get(r, "dest_port") == Value::UInt(p));
        assert_eq!(get(port(443).unwrap(), "dest_domains"), named, "{recs:#?}");
        assert_eq!(get(port(8443).unwrap(), "dest_domains"), Value::Nil);
        // The next interval: the live connection still names its destination, even
        // once the answer expired.
        agg.dns.advance(1_000_000);
        let recs = agg.flush(20, EventTime::default());
        assert_eq!(recs.len(), 1);
        assert_eq!(get(&recs[0], "dest_domains"), named);
        // A workload destination gets no names even when its address was resolved.
        agg.dns.learn(&[a("pod.test", 300, "192.0.2.8")]);
        agg.add(&flow("192.0.2.8", 80, true), &eps, true);
        let recs = agg.flush(30, EventTime::default());
        let pod = recs.iter().find(|r| get(r, "dest_port") == Value::UInt(80));
        assert_eq!(get(pod.unwrap(), "dest_domains"), Value::Nil);
    }

    /// What the lookup costs an update: 200,000 conntrack updates of 1,000 connections
    /// to outside addresses, with no cache, with 100,000 other addresses cached, and with
    /// the destinations cached (2 names each). Prints ns per update, per lookup, and the
    /// resident memory of 100,000 cached addresses. Run optimised:
    /// `cargo test --config 'profile.dev.package.agent.opt-level=3' --lib
    /// dest_domains_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn dest_domains_cost_per_update() {
        use super::super::aggregate::{Aggregator, Conn, Kind, Options, Update};
        use super::super::endpoints::Endpoints;
        use crate::event::EventTime;
        use std::net::Ipv4Addr;
        let eps = Endpoints::new();
        let conns: Vec<Update> = (0..1000u32)
            .map(|i| Update {
                conn: Conn {
                    proto: 6,
                    src: ip("10.0.0.1"),
                    sport: 10_000 + i as u16,
                    dst: IpAddr::V4(Ipv4Addr::from(0xC000_0200 + i)),
                    dport: 443,
                },
                has_ports: true,
                orig_packets: 1,
                orig_bytes: 60,
                reply_packets: 1,
                reply_bytes: 60,
                expired: false,
                kind: Kind::Conntrack,
                nat_port: 0,
                pre_dnat: None,
            })
            .collect();
        let run = |cache: DnsCache| {
            let mut agg = Aggregator::new(Options::default(), "h", 0);
            agg.dns = cache;
            let t = Instant::now();
            for _ in 0..200 {
                for u in &conns {
                    agg.add(u, &eps, false);
                }
            }
            let ns = t.elapsed().as_nanos() as f64 / (200.0 * conns.len() as f64);
            (ns, agg.flush(1, EventTime::default()))
        };
        let rss_kib = || {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap()
        };
        // The answers are built first, so that the RSS difference is the cache's.
        let answers: Vec<Value> = (0..100_000u32)
            .map(|i| {
                let addr = Ipv4Addr::from(0x0B00_0000 + i).to_string();
                a(&format!("host-{i:06}.example.com"), 300, &addr)
            })
            .collect();
        let before = rss_kib();
        let mut other = DnsCache::new(200_000, 5, Duration::ZERO);
        for answer in &answers {
            other.learn(std::slice::from_ref(answer));
        }
        let cache_kib = rss_kib().saturating_sub(before);
        let mut named = DnsCache::new(200_000, 5, Duration::ZERO);
        for (i, u) in conns.iter().enumerate() {
            let addr = u.conn.dst.to_string();
            named.learn(&[
                a(&format!("a{i}.test"), 300, &addr),
                a("cdn.test", 300, &addr),
            ]);
        }
        // The lookup alone, in the 100k-address cache: a miss and a hit.
        let lookups = |c: &DnsCache, ips: &[IpAddr]| {
            let t = Instant::now();
            let mut n = 0;
            for _ in 0..1000 {
                for ip in ips {
                    n += std::hint::black_box(c.names(*ip)).count();
                }
            }
            (
                t.elapsed().as_nanos() as f64 / (1000.0 * ips.len() as f64),
                n,
            )
        };
        let dsts: Vec<IpAddr> = conns.iter().map(|u| u.conn.dst).collect();
        let cached: Vec<IpAddr> = (0..1000u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0B00_0000 + i * 97)))
            .collect();
        let (miss_ns, none) = lookups(&other, &dsts);
        let (hit_ns, some) = lookups(&other, &cached);
        assert_eq!((none, some), (0, 1_000_000));
        let (empty, _) = run(DnsCache::new(100_000, 5, Duration::ZERO));
        let (miss, _) = run(other);
        let (hit, recs) = run(named);
        assert_eq!(recs.len(), 1);
        let Value::Array(d) = recs[0]
            .body
            .iter()
            .find(|(k, _)| &**k == "dest_domains")
            .unwrap()
            .1
            .clone()
        else {
            panic!("no names");
        };
        assert_eq!(d.len(), 5, "bounded by dest_domains_limit");
        println!(
            "ns per update: no cache {empty:.0}, 100k other addresses cached {miss:.0}, destination cached {hit:.0}; \
             ns per lookup in 100k addresses: miss {miss_ns:.0}, hit {hit_ns:.0}; \
             RSS of 100k addresses with a 24-byte name each: {cache_kib} KiB"
        );
    }
}
