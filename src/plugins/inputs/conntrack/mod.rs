//! `conntrack` input: every connection the kernel tracks, as records. Events (NEW,
//! DESTROY, optionally UPDATE) come from a ctnetlink subscription read by a dedicated
//! thread that never waits on the pipeline; a second socket dumps the table every
//! `sample_interval`, so live connections report their counters and deltas, expired
//! entries are reaped (their DESTROY goes out promptly) and lost events are recovered.
//! Design and measurements: shared/spec/flows.md §1 and §5.

mod decode;
mod flow;
pub(crate) mod netlink;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::pipeline::metrics;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::EventTime;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};
use decode::{Flow, Kind, Message};
use flow::{FlowTable, Schema};

pub use flow::proto_name;

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("events", PropKind::CList, Some("new,destroy"), "Conntrack events to report: new, update, destroy (update has no counters and is ~5x the volume)."),
    PropSpec::new("sample_interval", PropKind::Time, Some("10s"), "Dump the table this often and report live connections with counter deltas; 0 disables samples."),
    PropSpec::new("families", PropKind::CList, Some("ipv4,ipv6"), "Address families to report: ipv4, ipv6."),
    PropSpec::new("protocols", PropKind::CList, None, "Protocols to report (tcp, udp, icmp, icmpv6, sctp, or numbers); all when unset."),
    PropSpec::new("zone", PropKind::Int, None, "Report only this conntrack zone."),
    PropSpec::new("mark", PropKind::Str, None, "Report only connections whose mark, masked by mark_mask, equals this (decimal or 0x hex)."),
    PropSpec::new("mark_mask", PropKind::Str, Some("0xffffffff"), "Mask applied to the mark before comparing (decimal or 0x hex)."),
    PropSpec::new("rcvbuf", PropKind::Size, Some("16M"), "Receive buffer of the netlink sockets (SO_RCVBUFFORCE; a queued event takes ~1280 bytes)."),
    PropSpec::new("reliable", PropKind::Bool, Some("on"), "NETLINK_BROADCAST_ERROR + NO_ENOBUFS: the kernel redelivers DESTROY events it could not deliver."),
    PropSpec::new("netns", PropKind::Str, None, "Watch the network namespace at this path (e.g. /var/run/netns/x) instead of the agent's own."),
    PropSpec::new("enable_accounting", PropKind::Bool, Some("off"), "Turn on nf_conntrack_acct and nf_conntrack_timestamp when they are off (else warn)."),
    PropSpec::new("max_flows", PropKind::Int, Some("262144"), "Most connections whose counters are kept for deltas; beyond it deltas are cumulative."),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "conntrack",
    description: "Connection tracking events and samples (netlink)",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

/// Events the reader keeps while the pipeline is behind, before it counts them lost
/// and asks for a resynchronising dump.
const MAX_BACKLOG: usize = 65_536;

/// What the kernel-facing threads hand to the input task.
enum FromKernel {
    Events(Vec<(Kind, Flow)>),
    Dump(Vec<Flow>),
    /// Events lost (ENOBUFS, or the pipeline too far behind); a dump resyncs.
    Lost(&'static str, u64),
    Failed(String),
}

struct Settings {
    groups: Vec<u32>,
    sample: Option<Duration>,
    families: Vec<u8>,
    protocols: Option<Vec<u8>>,
    zone: Option<u16>,
    mark: Option<(u32, u32)>,
    rcvbuf: usize,
    reliable: bool,
    netns: Option<PathBuf>,
    enable_accounting: bool,
    max_flows: usize,
}

impl Settings {
    fn accepts(&self, f: &Flow) -> bool {
        self.families.contains(&f.family)
            && self
                .protocols
                .as_ref()
                .is_none_or(|p| p.contains(&f.orig.proto))
            && self.zone.is_none_or(|z| z == f.zone)
            && self
                .mark
                .is_none_or(|(m, mask)| f.mark.unwrap_or(0) & mask == m & mask)
    }
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let m = ctx.metrics;
    let metrics = CtMetrics {
        events: m.counter("agent_conntrack_events_total", "Conntrack events received (new, update, destroy).", ctx.instance),
        samples: m.counter("agent_conntrack_samples_total", "Live connections reported by table dumps.", ctx.instance),
        lost: m.counter("agent_conntrack_lost_events_total", "Conntrack events lost (ENOBUFS counts 1 per overflow, or the pipeline too far behind).", ctx.instance),
        resyncs: m.counter("agent_conntrack_resyncs_total", "Table dumps run to recover from lost events.", ctx.instance),
        tracked: m.gauge("agent_conntrack_tracked_connections", "Connections whose counters are kept for deltas.", ctx.instance),
    };
    let mut groups = Vec::new();
    for e in props.clist("events") {
        groups.push(match e.to_ascii_lowercase().as_str() {
            "new" => netlink::GROUP_NEW,
            "update" => netlink::GROUP_UPDATE,
            "destroy" => netlink::GROUP_DESTROY,
            _ => return Err(props.error("events", "a list of: new, update, destroy")),
        });
    }
    let mut families = Vec::new();
    for f in props.clist("families") {
        families.push(match f.to_ascii_lowercase().as_str() {
            "ipv4" | "inet" => 2,
            "ipv6" | "inet6" => 10,
            _ => return Err(props.error("families", "a list of: ipv4, ipv6")),
        });
    }
    let protocols = if props.is_set("protocols") {
        let mut v = Vec::new();
        for p in props.clist("protocols") {
            let n = (0..=255u8)
                .find(|&n| flow::proto_name(n) == Some(p.to_ascii_lowercase().as_str()))
                .or_else(|| p.parse().ok());
            v.push(n.ok_or_else(|| props.error("protocols", "protocol names (tcp, udp, icmp, icmpv6, sctp, dccp, gre, udplite) or numbers 0-255"))?);
        }
        Some(v)
    } else {
        None
    };
    let zone = match props.int("zone") {
        Some(z) => {
            Some(u16::try_from(z).map_err(|_| props.error("zone", "a zone from 0 to 65535"))?)
        }
        None => None,
    };
    let mask = parse_u32(props.str("mark_mask").unwrap_or("0xffffffff"))
        .ok_or_else(|| props.error("mark_mask", "a 32-bit number, decimal or 0x hex"))?;
    let mark = match props.str("mark").filter(|_| props.is_set("mark")) {
        Some(m) => Some((
            parse_u32(m)
                .ok_or_else(|| props.error("mark", "a 32-bit number, decimal or 0x hex"))?,
            mask,
        )),
        None => None,
    };
    let sample = props.time("sample_interval").filter(|d| !d.is_zero());
    if sample.is_some_and(|d| d < Duration::from_millis(100)) {
        return Err(props.error(
            "sample_interval",
            "an interval of at least 100ms, or 0 to disable samples",
        ));
    }
    let max_flows = props.int("max_flows").unwrap_or(262_144);
    if max_flows < 1 {
        return Err(props.error("max_flows", "a number of connections >= 1"));
    }
    let netns = props
        .str("netns")
        .filter(|_| props.is_set("netns"))
        .map(PathBuf::from);
    if let Some(p) = &netns {
        if !p.exists() {
            return Err(props.error("netns", format!("the path of a network namespace ({} does not exist; `ip netns add NAME` creates /var/run/netns/NAME)", p.display())));
        }
    }
    Ok(Box::new(ConntrackInput {
        metrics,
        settings: Arc::new(Settings {
            groups,
            sample,
            families,
            protocols,
            zone,
            mark,
            rcvbuf: props.size("rcvbuf").unwrap_or(16_000_000) as usize,
            reliable: props.bool("reliable").unwrap_or(true),
            netns,
            enable_accounting: props.bool("enable_accounting").unwrap_or(false),
            max_flows: max_flows as usize,
        }),
    }))
}

struct ConntrackInput {
    settings: Arc<Settings>,
    metrics: CtMetrics,
}

/// `agent_conntrack_*{name="conntrack.0"}`.
struct CtMetrics {
    events: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    resyncs: Arc<AtomicU64>,
    tracked: Arc<AtomicU64>,
}

/// Checks the sysctls that decide what records can carry, in the current namespace.
fn check_sysctls(s: &Settings, name: &str) {
    for (key, what) in [
        ("nf_conntrack_acct", "byte and packet counters"),
        ("nf_conntrack_timestamp", "flow start and end times"),
    ] {
        let path = format!("/proc/sys/net/netfilter/{key}");
        match std::fs::read_to_string(&path).map(|v| v.trim() == "1") {
            Ok(true) => {}
            Ok(false) if s.enable_accounting => match std::fs::write(&path, "1") {
                Ok(()) => crate::info!("[input:conntrack:{name}] enabled {key}"),
                Err(e) => crate::warn!("[input:conntrack:{name}] cannot enable {key}: {e}; records carry no {what}"),
            },
            Ok(false) => crate::warn!(
                "[input:conntrack:{name}] {key} is off: records carry no {what}; enable it with `sysctl -w net.netfilter.{key}=1` or set 'enable_accounting on'"
            ),
            Err(e) => crate::warn!(
                "[input:conntrack:{name}] cannot read {path} ({e}): is the nf_conntrack module loaded? Records may carry no {what}"
            ),
        }
    }
}

/// Runs a reader thread's `setup` and reports the outcome on `ready` (the input waits
/// for both threads before it says it is watching).
fn started<T>(
    ready: &std_mpsc::Sender<Result<(), String>>,
    setup: impl FnOnce() -> Result<T, String>,
) -> Option<T> {
    match setup() {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            Some(v)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            None
        }
    }
}

fn perm_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (the conntrack input needs CAP_NET_ADMIN: run as root or grant the capability)"
    } else {
        ""
    }
}

/// The event reader thread: recv → decode → filter → hand off, never waiting on the
/// pipeline; on loss it asks the dump thread to resynchronise.
fn event_thread(
    s: Arc<Settings>,
    name: Arc<str>,
    tx: mpsc::Sender<FromKernel>,
    ready: std_mpsc::Sender<Result<(), String>>,
    resync: std_mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
) {
    let setup = || -> Result<netlink_sys::Socket, String> {
        if let Some(ns) = &s.netns {
            netlink::enter_netns(ns)
                .map_err(|e| format!("cannot enter network namespace {}: {e}", ns.display()))?;
        }
        check_sysctls(&s, &name);
        let (sock, got) = netlink::event_socket(&s.groups, s.rcvbuf, s.reliable)
            .map_err(|e| format!("cannot subscribe to conntrack events: {e}{}", perm_hint(&e)))?;
        crate::debug!(
            "[input:conntrack:{name}] event socket rcvbuf={got} reliable={}",
            s.reliable
        );
        Ok(sock)
    };
    let Some(sock) = started(&ready, setup) else {
        return;
    };
    let mut buf = Vec::with_capacity(netlink::RECV_BUF);
    let mut msgs = Vec::new();
    let mut batch: Vec<(Kind, Flow)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        buf.clear();
        match sock.recv(&mut buf, 0) {
            Ok(n) => {
                msgs.clear();
                if let Err(e) = decode::decode_datagram(&buf[..n], false, &mut msgs) {
                    crate::warn!(
                        "[input:conntrack:{name}] skipped an undecodable netlink message: {e}"
                    );
                }
                for m in msgs.drain(..) {
                    if let Message::Flow(kind, f) = m {
                        if s.accepts(&f) {
                            batch.push((kind, f));
                        }
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                let _ = tx.try_send(FromKernel::Lost(
                    "the kernel's socket buffer overflowed (ENOBUFS)",
                    1,
                ));
                let _ = resync.send(());
            }
            Err(e) if super::nothing_yet(&e) => {}
            Err(e) => {
                let _ = tx.blocking_send(FromKernel::Failed(format!(
                    "conntrack event socket failed: {e}"
                )));
                return;
            }
        }
        let unwrap = |m| match m {
            FromKernel::Events(b) => Some(b),
            _ => None,
        };
        match super::hand_off(&tx, &mut batch, MAX_BACKLOG, FromKernel::Events, unwrap) {
            super::HandOff::Done => {}
            super::HandOff::Dropped(lost) => {
                let _ = tx.try_send(FromKernel::Lost("the pipeline is behind", lost));
                let _ = resync.send(());
            }
            super::HandOff::Closed => return,
        }
    }
}

/// The dump thread: a dump every `sample_interval`, and one on every resync request.
fn dump_thread(
    s: Arc<Settings>,
    tx: mpsc::Sender<FromKernel>,
    ready: std_mpsc::Sender<Result<(), String>>,
    resync: std_mpsc::Receiver<()>,
) {
    let setup = || -> Result<netlink_sys::Socket, String> {
        if let Some(ns) = &s.netns {
            netlink::enter_netns(ns)
                .map_err(|e| format!("cannot enter network namespace {}: {e}", ns.display()))?;
        }
        netlink::dump_socket(s.rcvbuf).map_err(|e| {
            format!(
                "cannot open the conntrack dump socket: {e}{}",
                perm_hint(&e)
            )
        })
    };
    let Some(sock) = started(&ready, setup) else {
        return;
    };
    let every = s.sample.unwrap_or(Duration::from_secs(3600));
    let mut buf = Vec::with_capacity(netlink::RECV_BUF);
    let mut seq = 0u32;
    loop {
        match resync.recv_timeout(every) {
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            Err(std_mpsc::RecvTimeoutError::Timeout) if s.sample.is_none() => continue,
            _ => {}
        }
        while resync.try_recv().is_ok() {} // one dump answers every pending request
        seq = seq.wrapping_add(1);
        let mut flows = Vec::new();
        match netlink::dump(&sock, seq, &mut buf, &mut flows) {
            Ok(()) => {
                flows.retain(|f| s.accepts(f));
                if tx.blocking_send(FromKernel::Dump(flows)).is_err() {
                    return;
                }
            }
            Err(e) => crate::warn!(
                "[input:conntrack] table dump failed: {e}; retrying at the next interval"
            ),
        }
    }
}

impl Input for ConntrackInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let s = self.settings;
            if !netlink::has_net_admin() {
                crate::warn!("[input:conntrack:{}] the process lacks CAP_NET_ADMIN: subscribing to conntrack events will likely fail", ctx.name);
            }
            let (tx, mut rx) = mpsc::channel(256);
            let (ready_tx, ready_rx) = std_mpsc::channel();
            let (resync_tx, resync_rx) = std_mpsc::channel();
            let stop = Arc::new(AtomicBool::new(false));
            let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(f)
                    .map_err(|e| PluginError::Other(format!("cannot start {name}: {e}")))
            };
            {
                let (s, n, tx, ready, resync, stop) = (
                    s.clone(),
                    ctx.name.clone(),
                    tx.clone(),
                    ready_tx.clone(),
                    resync_tx.clone(),
                    stop.clone(),
                );
                spawn(
                    "conntrack-events",
                    Box::new(move || event_thread(s, n, tx, ready, resync, stop)),
                )?;
            }
            {
                let (s, tx, ready) = (s.clone(), tx.clone(), ready_tx);
                spawn(
                    "conntrack-dump",
                    Box::new(move || dump_thread(s, tx, ready, resync_rx)),
                )?;
            }
            drop(tx);
            for _ in 0..2 {
                let r = crate::pipeline::engine::blocking(|| ready_rx.recv());
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(PluginError::Other(e));
                    }
                    Err(_) => {
                        return Err(PluginError::Other(
                            "conntrack reader thread ended during start-up".into(),
                        ))
                    }
                }
            }
            crate::info!(
                "[input:conntrack:{}] watching {}",
                ctx.name,
                s.netns
                    .as_ref()
                    .map_or("this network namespace".to_string(), |p| p
                        .display()
                        .to_string())
            );
            let host = crate::config::parser::hostname().unwrap_or_default();
            let schema = Schema::new(&host);
            let mut table = FlowTable::new(s.max_flows);
            let (mut events, mut samples, mut lost) = (0u64, 0u64, 0u64);
            let result = loop {
                let msg = tokio::select! {
                    _ = ctx.shutdown.wait() => break Ok(()),
                    m = rx.recv() => m,
                };
                let now = EventTime::now();
                let records = match msg {
                    None => {
                        break Err(PluginError::Other(
                            "conntrack reader threads stopped".into(),
                        ))
                    }
                    Some(FromKernel::Failed(e)) => break Err(PluginError::Other(e)),
                    Some(FromKernel::Lost(why, n)) => {
                        lost += n;
                        metrics::add(&self.metrics.lost, n);
                        metrics::add(&self.metrics.resyncs, 1);
                        crate::warn!("[input:conntrack:{}] lost {n} conntrack events: {why}; resynchronising with a table dump", ctx.name);
                        continue;
                    }
                    Some(FromKernel::Events(evs)) => {
                        events += evs.len() as u64;
                        metrics::add(&self.metrics.events, evs.len() as u64);
                        evs.iter()
                            .map(|(kind, f)| {
                                let d = table.on_event(*kind, f);
                                schema.record(*kind, f, d, false, now)
                            })
                            .collect()
                    }
                    Some(FromKernel::Dump(flows)) => {
                        let deltas = table.on_dump(&flows);
                        let records: Vec<_> = flows
                            .iter()
                            .zip(deltas)
                            .filter_map(|(f, d)| {
                                d.map(|(d, new)| schema.record(Kind::Sample, f, Some(d), new, now))
                            })
                            .collect();
                        samples += records.len() as u64;
                        metrics::add(&self.metrics.samples, records.len() as u64);
                        records
                    }
                };
                metrics::set(&self.metrics.tracked, table.len() as u64);
                if let Err(e) = ctx.out.send(records).await {
                    break Err(e);
                }
            };
            stop.store(true, Ordering::Relaxed);
            drop(resync_tx);
            crate::info!(
                "[input:conntrack:{}] {events} events, {samples} samples, {lost} lost, {} connections tracked, {} untracked (max_flows)",
                ctx.name,
                table.len(),
                table.untracked
            );
            result
        })
    }
}
