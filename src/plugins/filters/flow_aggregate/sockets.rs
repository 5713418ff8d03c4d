//! `include_process` / `include_tcp_stats`: the local sockets of a flow, sampled with
//! sock_diag (crate::sockdiag) once per `sample_interval` by a thread, matched to
//! conntrack's tuples (original direction: the client's socket; reply direction: the
//! server's), and Calico Enterprise's per-process and TCP statistics of an aggregated
//! flow (felix/collector/flowlog/types.go: FlowStatsByProcess, FlowReportedTCPStats).

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::event::{Record, Value};
use crate::pipeline::metrics;
use crate::sockdiag::process::{Process, ProcessIndex};
use crate::sockdiag::{Reader, Socket, TcpStats};

/// One TCP sample of a local socket, as a metric update carries it to Calico's
/// aggregation: the gauges as read, the counters as deltas since the socket's previous
/// sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSample {
    pub cwnd: u64,
    pub srtt: u64,
    pub min_rtt: u64,
    pub mss: u64,
    pub retrans: u64,
    pub lost: u64,
    pub unrecovered_rto: u64,
}

/// What the sampler knows of one end's socket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Side {
    pub process: Option<Arc<Process>>,
    pub tcp: Option<TcpSample>,
}

/// The local sockets of an update's two ends (reporter src: the client's; dst: the
/// server's); `None` when not on this node or not sampled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalSockets {
    pub src: Option<Side>,
    pub dst: Option<Side>,
}

type Tuple = (u8, SocketAddr, SocketAddr);

/// Counters of a socket at its last reported sample (for deltas) and that sample's
/// generation (a sample is reported once, as Calico's "dirty" TCP stats).
#[derive(Clone, Copy, Default)]
struct Reported {
    generation: u64,
    retrans: u32,
    lost: u32,
    rto: u32,
}

/// One dump: the sockets, their processes (when asked for) and the lookup maps.
#[derive(Default)]
struct Snapshot {
    generation: u64,
    socks: Vec<Socket>,
    /// Aligned with `socks`; empty without include_process.
    procs: Vec<Option<Arc<Process>>>,
    by_tuple: HashMap<Tuple, usize>,
    /// Unconnected (UDP) sockets by local address (wildcard binds by the unspecified
    /// address).
    by_local: HashMap<(u8, SocketAddr), usize>,
}

/// The sampler's counters (`agent_flow_aggregate_sockdiag_*`, `..._process_*`).
#[derive(Clone, Default)]
pub struct Counters {
    pub dumps: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
    pub scans: Arc<AtomicU64>,
    pub misses: Arc<AtomicU64>,
}

/// The filter's side: the latest snapshot, published by a thread of its own that dumps
/// the sockets (and scans /proc) every `sample_interval`, so that a dump (1.7 µs per
/// socket) never holds up the pipeline; the filter swaps the new snapshot in (one
/// atomic load per record, the lock only to take a new one).
pub struct Sampler {
    snap: Snapshot,
    published: Arc<AtomicU64>,
    latest: Arc<Mutex<Option<Snapshot>>>,
    reported: HashMap<Tuple, Reported>,
    counters: Counters,
    /// Dropped to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Sampler settings from the filter's properties.
pub struct Options {
    pub netns: Option<PathBuf>,
    pub process: bool,
    pub tcp: bool,
    pub interval: Duration,
}

/// At most this many socket inodes are resolved to processes (one dump's worth).
const MAX_PROCESS_INODES: usize = 262_144;

impl Sampler {
    /// Opens the sock_diag socket (in `netns` when set; an error here is a
    /// configuration error: no such namespace, no permission) and starts the thread.
    pub fn open(o: Options, name: Arc<str>, counters: Counters) -> std::io::Result<Sampler> {
        let reader = Reader::open(o.netns.as_deref())?;
        let published = Arc::new(AtomicU64::new(0));
        let latest = Arc::new(Mutex::new(None));
        let (stop, stopped) = mpsc::channel();
        let dumper = Dumper {
            netns: o.netns,
            reader: Some(reader),
            tcp: o.tcp,
            index: o
                .process
                .then(|| ProcessIndex::new(o.interval, MAX_PROCESS_INODES)),
            interval: o.interval,
            generation: 0,
            published: published.clone(),
            latest: latest.clone(),
            counters: counters.clone(),
            name: name.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("sockdiag.{name}"))
            .spawn(move || dumper.run(stopped))?;
        Ok(Sampler {
            snap: Snapshot::default(),
            published,
            latest,
            reported: HashMap::new(),
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Takes the thread's newest snapshot, if there is one.
    fn refresh(&mut self) {
        if self.published.load(Ordering::Acquire) == self.snap.generation {
            return;
        }
        let Some(snap) = self.latest.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        self.snap = snap;
        let by_tuple = &self.snap.by_tuple;
        self.reported.retain(|t, _| by_tuple.contains_key(t));
    }

    fn find(&self, proto: u8, local: SocketAddr, remote: SocketAddr) -> Option<usize> {
        let snap = &self.snap;
        if let Some(i) = snap.by_tuple.get(&(proto, local, remote)) {
            return Some(*i);
        }
        let any = |ip: IpAddr| match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let by_local = |a: SocketAddr| snap.by_local.get(&(proto, a)).copied();
        by_local(local)
            .or_else(|| by_local(SocketAddr::new(any(local.ip()), local.port())))
            // A dual-stack wildcard socket ([::]:port) receives IPv4 too.
            .or_else(|| {
                by_local(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    local.port(),
                ))
            })
    }

    fn side(&mut self, proto: u8, local: SocketAddr, remote: SocketAddr) -> Option<Side> {
        let i = self.find(proto, local, remote)?;
        let s = &self.snap.socks[i];
        let process = match self.snap.procs.get(i) {
            Some(p) => {
                if p.is_none() && s.inode != 0 {
                    metrics::add(&self.counters.misses, 1);
                }
                p.clone()
            }
            None => None,
        };
        let tcp = match s.tcp {
            // A measured RTT: not a connection still in its handshake.
            Some(t) if t.srtt_us > 0 => {
                let key = (s.proto, s.local, s.remote);
                let r = self.reported.entry(key).or_default();
                (r.generation != self.snap.generation).then(|| {
                    let sample = sample(&t, r);
                    *r = Reported {
                        generation: self.snap.generation,
                        retrans: t.total_retrans,
                        lost: t.lost,
                        rto: t.unrecovered_rto,
                    };
                    sample
                })
            }
            _ => None,
        };
        Some(Side { process, tcp })
    }

    /// The local sockets of a conntrack record's update: the client's by the original
    /// tuple, the server's by the reply tuple (after NAT).
    pub fn annotate(&mut self, r: &Record) -> LocalSockets {
        let proto = match field(r, "proto_num") {
            Some(Value::UInt(p)) => *p as u8,
            _ => return LocalSockets::default(),
        };
        if proto != 6 && proto != 17 {
            return LocalSockets::default();
        }
        self.refresh();
        let addr = |ip: &str, port: &str| -> Option<SocketAddr> {
            let ip = match field(r, ip) {
                Some(Value::Str(s)) => s.parse().ok()?,
                _ => return None,
            };
            match field(r, port) {
                Some(Value::UInt(p)) => Some(SocketAddr::new(ip, *p as u16)),
                _ => None,
            }
        };
        let mut out = LocalSockets::default();
        if let (Some(l), Some(rm)) = (addr("src_ip", "src_port"), addr("dst_ip", "dst_port")) {
            out.src = self.side(proto, l, rm);
        }
        if let (Some(l), Some(rm)) = (
            addr("reply_src_ip", "reply_src_port"),
            addr("reply_dst_ip", "reply_dst_port"),
        ) {
            out.dst = self.side(proto, l, rm);
        }
        out
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread's side: dumps every `sample_interval` and publishes each snapshot.
struct Dumper {
    netns: Option<PathBuf>,
    reader: Option<Reader>,
    tcp: bool,
    index: Option<ProcessIndex>,
    interval: Duration,
    generation: u64,
    published: Arc<AtomicU64>,
    latest: Arc<Mutex<Option<Snapshot>>>,
    counters: Counters,
    name: Arc<str>,
}

impl Dumper {
    fn run(mut self, stopped: mpsc::Receiver<()>) {
        loop {
            let start = Instant::now();
            if let Some(snap) = self.dump(start) {
                let generation = snap.generation;
                if let Ok(mut l) = self.latest.lock() {
                    *l = Some(snap);
                }
                self.published.store(generation, Ordering::Release);
            }
            let wait = self.interval.saturating_sub(start.elapsed());
            if stopped.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout) {
                return; // the filter is gone
            }
        }
    }

    fn dump(&mut self, now: Instant) -> Option<Snapshot> {
        if self.reader.is_none() {
            // Reopened after an error (the namespace may have been recreated).
            self.reader = Reader::open(self.netns.as_deref()).ok();
        }
        let Some(reader) = &mut self.reader else {
            metrics::add(&self.counters.errors, 1);
            return None;
        };
        let mut socks = Vec::new();
        if let Err(e) = reader.dump_all(self.tcp, &mut socks) {
            metrics::add(&self.counters.errors, 1);
            crate::warn!(
                "[filter:flow_aggregate:{}] sock_diag dump failed, no new process or TCP data until the next sample: {e}",
                self.name
            );
            self.reader = None;
            return None;
        }
        metrics::add(&self.counters.dumps, 1);
        self.generation += 1;
        let mut snap = Snapshot {
            generation: self.generation,
            ..Snapshot::default()
        };
        for (i, s) in socks.iter().enumerate() {
            snap.by_tuple.insert((s.proto, s.local, s.remote), i);
            if s.remote.port() == 0 {
                snap.by_local.insert((s.proto, s.local), i);
            }
        }
        if let Some(index) = &mut self.index {
            let scans = index.stats.scans;
            let inodes: HashSet<u32> = socks.iter().map(|s| s.inode).collect();
            index.refresh(&inodes, now);
            metrics::add(&self.counters.scans, index.stats.scans - scans);
            snap.procs = socks.iter().map(|s| index.peek(s.inode)).collect();
        }
        snap.socks = socks;
        Some(snap)
    }
}

fn delta(now: u32, before: u32) -> u64 {
    // A gauge-like counter that went down (unrecovered RTOs reset on an ACK) counts
    // from zero again.
    if now >= before {
        (now - before) as u64
    } else {
        now as u64
    }
}

fn sample(t: &TcpStats, r: &Reported) -> TcpSample {
    TcpSample {
        cwnd: t.snd_cwnd as u64,
        srtt: t.srtt_us as u64,
        min_rtt: t.min_rtt_us as u64,
        mss: t.snd_mss as u64,
        retrans: delta(t.total_retrans, r.retrans),
        lost: delta(t.lost, r.lost),
        unrecovered_rto: delta(t.unrecovered_rto, r.rto),
    }
}

fn field<'a>(r: &'a Record, k: &str) -> Option<&'a Value> {
    r.body.iter().find(|(x, _)| &**x == k).map(|(_, v)| v)
}

/// Calico's FlowReportedTCPStats of one aggregated flow: integer means and min/max over
/// the samples, summed counter deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpAgg {
    pub count: u64,
    pub cwnd_mean: u64,
    pub cwnd_min: u64,
    pub srtt_mean: u64,
    pub srtt_max: u64,
    pub min_rtt_mean: u64,
    pub min_rtt_max: u64,
    pub mss_mean: u64,
    pub mss_min: u64,
    pub retrans: u64,
    pub lost: u64,
    pub unrecovered_rto: u64,
}

impl TcpAgg {
    /// FlowStats.aggregateFlowTCPStats: one sample.
    pub fn add(&mut self, s: &TcpSample) {
        self.merge(&TcpAgg {
            count: 1,
            cwnd_mean: s.cwnd,
            cwnd_min: s.cwnd,
            srtt_mean: s.srtt,
            srtt_max: s.srtt,
            min_rtt_mean: s.min_rtt,
            min_rtt_max: s.min_rtt,
            mss_mean: s.mss,
            mss_min: s.mss,
            retrans: s.retrans,
            lost: s.lost,
            unrecovered_rto: s.unrecovered_rto,
        });
    }

    /// FlowReportedTCPStats.Add: means weighted by sample counts.
    pub fn merge(&mut self, o: &TcpAgg) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let (n, m) = (self.count, o.count);
        let mean = |a: u64, b: u64| (a * n + b * m) / (n + m);
        self.cwnd_mean = mean(self.cwnd_mean, o.cwnd_mean);
        self.cwnd_min = self.cwnd_min.min(o.cwnd_min);
        self.srtt_mean = mean(self.srtt_mean, o.srtt_mean);
        self.srtt_max = self.srtt_max.max(o.srtt_max);
        self.min_rtt_mean = mean(self.min_rtt_mean, o.min_rtt_mean);
        self.min_rtt_max = self.min_rtt_max.max(o.min_rtt_max);
        self.mss_mean = mean(self.mss_mean, o.mss_mean);
        self.mss_min = self.mss_min.min(o.mss_min);
        self.retrans += o.retrans;
        self.lost += o.lost;
        self.unrecovered_rto += o.unrecovered_rto;
        self.count = n + m;
    }

    /// tcp_mean_send_congestion_window … tcp_unrecovered_to, in the record's order.
    pub fn values(&self) -> [Value; 11] {
        [
            self.cwnd_mean,
            self.cwnd_min,
            self.srtt_mean,
            self.srtt_max,
            self.min_rtt_mean,
            self.min_rtt_max,
            self.mss_mean,
            self.mss_min,
            self.retrans,
            self.lost,
            self.unrecovered_rto,
        ]
        .map(Value::UInt)
    }
}

/// The process side of an aggregated flow: Calico's FlowStats.processIDs/processArgs
/// (reset each interval) and its TCP statistics; `seq` orders process names by first
/// appearance (Calico's insertion order, which decides who is within process_limit).
#[derive(Clone, Debug, Default)]
pub struct ProcStats {
    pub seq: u64,
    pub pids: BTreeSet<u32>,
    pub args: BTreeSet<Arc<str>>,
    pub tcp: TcpAgg,
    /// Pids and args are cleared by the next update after a flush, not by the flush
    /// (Calico's resetProcessIDs): an idle interval still names the processes.
    stale: bool,
}

impl ProcStats {
    pub fn new(seq: u64) -> ProcStats {
        ProcStats {
            seq,
            ..ProcStats::default()
        }
    }

    /// The next interval's start: TCP statistics reset, processes kept until an update.
    pub fn next_interval(&self) -> ProcStats {
        ProcStats {
            seq: self.seq,
            pids: self.pids.clone(),
            args: self.args.clone(),
            tcp: TcpAgg::default(),
            stale: true,
        }
    }

    pub fn add(&mut self, side: &Side, include_process: bool) {
        if std::mem::take(&mut self.stale) {
            self.pids.clear();
            self.args.clear();
        }
        if include_process {
            if let Some(p) = &side.process {
                self.pids.insert(p.pid);
                if !p.args.is_empty() {
                    self.args.insert(p.args.clone());
                }
            }
        }
        if let Some(t) = &side.tcp {
            self.tcp.add(t);
        }
    }

    pub fn merge(&mut self, o: &ProcStats) {
        self.pids.extend(o.pids.iter().copied());
        self.args.extend(o.args.iter().cloned());
        self.tcp.merge(&o.tcp);
    }

    /// process_name … num_process_args of a record for `name` ("-": not included or
    /// unknown; "*": the aggregate of `names` process names past process_limit).
    pub fn values(&self, name: &Arc<str>, names: u64, args_limit: usize) -> [Value; 6] {
        let s = |v: &str| Value::Str(Arc::from(v));
        if &**name == "-" {
            return [
                s("-"),
                Value::UInt(0),
                s("-"),
                Value::UInt(0),
                Value::Array(vec![s("-")]),
                Value::UInt(0),
            ];
        }
        let pid = match self.pids.len() {
            0 => s("-"),
            1 if &**name != "*" => s(&self.pids.first().unwrap().to_string()),
            _ => s("*"),
        };
        let (args, n_args) = if self.args.is_empty() {
            (vec![s("-")], 0)
        } else if self.pids.len() == 1 {
            // One process, several argument strings seen: Calico shows the longest.
            let longest = self.args.iter().max_by_key(|a| a.len()).unwrap();
            (vec![Value::Str(longest.clone())], 1)
        } else {
            let list = self
                .args
                .iter()
                .take(args_limit.max(1))
                .map(|a| Value::Str(a.clone()))
                .collect();
            (list, self.args.len() as u64)
        };
        [
            Value::Str(name.clone()),
            Value::UInt(names),
            pid,
            Value::UInt(self.pids.len() as u64),
            Value::Array(args),
            Value::UInt(n_args),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cwnd: u64, srtt: u64, retrans: u64) -> TcpSample {
        TcpSample {
            cwnd,
            srtt,
            min_rtt: srtt / 2,
            mss: 1448,
            retrans,
            lost: 1,
            unrecovered_rto: 0,
        }
    }

    /// Calico's arithmetic: integer means, min of cwnd and mss, max of RTTs, summed
    /// deltas; merging two aggregates weighs their means by their counts.
    #[test]
    fn tcp_stats_aggregate_as_calicos_flow_stats() {
        let mut a = TcpAgg::default();
        a.add(&sample(10, 1000, 2));
        a.add(&sample(20, 3000, 1));
        a.add(&sample(31, 2000, 0));
        assert_eq!(
            (a.count, a.cwnd_mean, a.cwnd_min, a.srtt_mean, a.srtt_max),
            (3, 20, 10, 2000, 3000)
        );
        assert_eq!((a.min_rtt_mean, a.min_rtt_max), (1000, 1500));
        assert_eq!(
            (a.retrans, a.lost, a.mss_min, a.mss_mean),
            (3, 3, 1448, 1448)
        );
        let mut b = TcpAgg::default();
        b.add(&sample(40, 6000, 5));
        a.merge(&b);
        assert_eq!(
            (a.count, a.cwnd_mean, a.srtt_mean, a.srtt_max),
            (4, 25, 3000, 6000)
        );
        assert_eq!(a.retrans, 8);
        let mut empty = TcpAgg::default();
        empty.merge(&TcpAgg::default());
        assert_eq!(empty.values(), [0; 11].map(Value::UInt), "off: all zero");
    }

    #[test]
    fn counters_are_deltas_since_the_previous_sample() {
        let t = TcpStats {
            srtt_us: 100,
            min_rtt_us: 50,
            snd_mss: 1448,
            snd_cwnd: 10,
            total_retrans: 7,
            lost: 2,
            unrecovered_rto: 1,
        };
        let first = super::sample(&t, &Reported::default());
        assert_eq!(
            (first.retrans, first.lost, first.unrecovered_rto),
            (7, 2, 1)
        );
        let prev = Reported {
            generation: 1,
            retrans: 5,
            lost: 3,
            rto: 1,
        };
        let s = super::sample(&t, &prev);
        assert_eq!((s.retrans, s.lost, s.unrecovered_rto), (2, 2, 0));
    }

    fn p(pid: u32, args: &str) -> Side {
        Side {
            process: Some(Arc::new(Process {
                pid,
                name: Arc::from("curl"),
                args: Arc::from(args),
            })),
            tcp: None,
        }
    }

    /// process_id is the pid, or "*" with several; with one pid the longest argument
    /// string; past one, up to process_args_limit of them; "-" when not included.
    #[test]
    fn process_fields_as_calicos_to_flow_process_reported_stats() {
        let name: Arc<str> = Arc::from("curl");
        let mut one = ProcStats::default();
        one.add(&p(42, "a"), true);
        one.add(&p(42, "example.com"), true);
        let v = one.values(&name, 1, 5);
        assert_eq!(v[0], Value::Str(name.clone()));
        assert_eq!(v[2], Value::Str(Arc::from("42")));
        assert_eq!(v[3], Value::UInt(1));
        assert_eq!(
            v[4],
            Value::Array(vec![Value::Str(Arc::from("example.com"))])
        );
        assert_eq!(v[5], Value::UInt(1));
        let mut many = ProcStats::default();
        for (pid, a) in [(1, "x"), (2, "y"), (3, "z")] {
            many.add(&p(pid, a), true);
        }
        let v = many.values(&name, 1, 2);
        assert_eq!(v[2], Value::Str(Arc::from("*")));
        assert_eq!(v[3], Value::UInt(3));
        assert_eq!(
            v[4],
            Value::Array(vec![Value::Str(Arc::from("x")), Value::Str(Arc::from("y"))])
        );
        assert_eq!(v[5], Value::UInt(3));
        let mut off = ProcStats::default();
        off.add(&p(1, "x"), false);
        assert!(off.pids.is_empty());
        let v = off.values(&Arc::from("-"), 0, 5);
        assert_eq!(v[1], Value::UInt(0));
        assert_eq!(v[4], Value::Array(vec![Value::Str(Arc::from("-"))]));
    }
}
