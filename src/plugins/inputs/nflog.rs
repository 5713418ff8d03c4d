//! `nflog` input: packets that netfilter logs to an NFLOG group (`nft ... log group 5
//! prefix "D|default/deny-db" drop`), one record per packet with its 5-tuple, size and
//! log prefix. Calico's own prefixes (`DPE0|np/ns/tier.name`: action, owner, direction,
//! rule) and ours (`<action><separator><policy>`, `D|ns/policy`) set `action`,
//! `direction`, `policy`, `tier` and `rule`, which `flow_aggregate` turns into the
//! verdicts and policies of flow logs.
//! With `dns on` the group carries DNS replies (`nft ... udp sport 53 log group 3`):
//! each response becomes one `event: dns` record with its answers, for
//! `flow_aggregate`'s `dest_domains`. Kernel side: net/netfilter/nfnetlink_log.c.

mod dns;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, PacketNla, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use tokio::sync::mpsc;

use super::conntrack::{netlink, proto_name};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Record, Str, Value};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

#[rustfmt::skip]
const PROPS: &[PropSpec] = &[
    PropSpec::new("group", PropKind::Int, Some("0"), "NFLOG group to receive (as in `log group N`), 0-65535."),
    PropSpec::new("rcvbuf", PropKind::Size, Some("4M"), "Receive buffer of the netlink socket (SO_RCVBUFFORCE)."),
    PropSpec::new("netns", PropKind::Str, None, "Receive in the network namespace at this path instead of the agent's own."),
    PropSpec::new("prefix_separator", PropKind::Str, Some("|"), "Splits our log prefixes into action (D/deny/drop or A/allow/accept) and policy name; Calico's own prefixes (DPE0|np/ns/name) are read when it is the default |."),
    PropSpec::new("dns", PropKind::Bool, Some("off"), "The group carries DNS replies: each DNS response becomes one `event: dns` record with its A/AAAA/CNAME answers (for flow_aggregate's dest_domains); other packets are counted and skipped."),
    PropSpec::new("copy_range", PropKind::Int, None, "Bytes of each packet the kernel copies to the agent, 40-65535; default 128 (the headers), 65535 with `dns on` (whole DNS messages)."),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "nflog",
    description: "Packets logged by netfilter to an NFLOG group (netlink)",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

/// Bytes of each packet copied to us: the IP and transport headers are enough...
const COPY_RANGE: u32 = 128;
/// ...except for DNS messages, copied whole (the kernel's most, NFULNL_COPY_RANGE_MAX).
const COPY_RANGE_DNS: u32 = 65_535;
const MAX_BACKLOG: usize = 65_536;
/// Packets held with their payload (`dns on`): fewer, as each may be 64 KiB.
const MAX_BACKLOG_DNS: usize = 4_096;

struct NflogInput {
    group: u16,
    rcvbuf: usize,
    netns: Option<PathBuf>,
    separator: String,
    dns: bool,
    copy_range: u32,
    /// `agent_nflog_dns_responses_total`, `agent_nflog_dns_skipped_total`.
    dns_responses: Arc<AtomicU64>,
    dns_skipped: Arc<AtomicU64>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let group = u16::try_from(props.int("group").unwrap_or(0))
        .map_err(|_| props.error("group", "an NFLOG group from 0 to 65535"))?;
    let netns = props
        .str("netns")
        .filter(|_| props.is_set("netns"))
        .map(PathBuf::from);
    if let Some(p) = netns.as_ref().filter(|p| !p.exists()) {
        return Err(props.error(
            "netns",
            format!(
                "the path of a network namespace ({} does not exist)",
                p.display()
            ),
        ));
    }
    let dns = props.bool("dns").unwrap_or(false);
    let copy_range = match props
        .int("copy_range")
        .filter(|_| props.is_set("copy_range"))
    {
        None if dns => COPY_RANGE_DNS,
        None => COPY_RANGE,
        Some(n @ 40..=65_535) => n as u32,
        Some(_) => {
            return Err(props.error(
                "copy_range",
                "a number of bytes from 40 (IPv6 header) to 65535",
            ))
        }
    };
    Ok(Box::new(NflogInput {
        group,
        rcvbuf: props.size("rcvbuf").unwrap_or(4_000_000) as usize,
        netns,
        separator: props.str("prefix_separator").unwrap_or("|").to_string(),
        dns,
        copy_range,
        dns_responses: ctx.metrics.counter(
            "agent_nflog_dns_responses_total",
            "DNS responses read from a `dns on` NFLOG group.",
            ctx.instance,
        ),
        dns_skipped: ctx.metrics.counter(
            "agent_nflog_dns_skipped_total",
            "Packets of a `dns on` NFLOG group that gave no DNS record: malformed, cut by copy_range, or queries.",
            ctx.instance,
        ),
    }))
}

/// What one logged packet says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub family: u8,
    pub proto: u8,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp: Option<(u8, u8)>,
    /// The identifier of an ICMP echo request or reply (part of the flow key).
    pub icmp_id: Option<u16>,
    /// The packet's length from its IP header (not the copied part).
    pub bytes: u64,
    pub prefix: String,
    pub mark: u32,
    pub time: Option<EventTime>,
    /// The copied bytes, kept only with `dns on` (moved from the netlink attribute).
    pub copy: Vec<u8>,
}

/// Parses the IP and transport headers at the start of a logged packet.
pub fn parse_ip(p: &[u8], out: &mut Packet) -> Option<()> {
    let (l4, proto) = match p.first()? >> 4 {
        4 => {
            // Every index below is within the 20-byte header checked here: a packet
            // cut short by a small `snaplen` is skipped, never indexed past its end.
            let h = p.get(..20)?;
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            if ihl < 20 {
                return None;
            }
            out.family = 2;
            out.bytes = u16::from_be_bytes([h[2], h[3]]) as u64;
            out.src = Some(IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])));
            out.dst = Some(IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])));
            (p.get(ihl..)?, h[9])
        }
        6 => {
            let h = p.get(..40)?;
            out.family = 10;
            out.bytes = 40 + u16::from_be_bytes([h[4], h[5]]) as u64;
            let a: [u8; 16] = h[8..24].try_into().ok()?;
            let b: [u8; 16] = h[24..40].try_into().ok()?;
            out.src = Some(IpAddr::V6(Ipv6Addr::from(a)));
            out.dst = Some(IpAddr::V6(Ipv6Addr::from(b)));
            (&p[40..], h[6])
        }
        _ => return None,
    };
    out.proto = proto;
    match proto {
        6 | 17 | 132 | 136 if l4.len() >= 4 => {
            out.sport = Some(u16::from_be_bytes([l4[0], l4[1]]));
            out.dport = Some(u16::from_be_bytes([l4[2], l4[3]]));
        }
        1 | 58 if l4.len() >= 2 => {
            out.icmp = Some((l4[0], l4[1]));
            // Echo request/reply (ICMP 8/0, ICMPv6 128/129) carry an identifier.
            if matches!((proto, l4[0]), (1, 0 | 8) | (58, 128 | 129)) && l4.len() >= 6 {
                out.icmp_id = Some(u16::from_be_bytes([l4[4], l4[5]]));
            }
        }
        _ => {}
    }
    Some(())
}

/// What a log prefix says about the rule that logged the packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleHit<'a> {
    /// `allow`, `deny` or `pass` (Calico's next-tier).
    pub action: Option<&'static str>,
    /// `ingress` or `egress`: which side's policy acted (Calico prefixes only).
    pub direction: Option<&'static str>,
    /// The policy as Calico Enterprise names it in flow logs (`ns/tier.name`,
    /// `tier.name`, `ns/tier.staged:name`, `__PROFILE__.kns.ns`, `__NO_MATCH__`).
    pub policy: Option<std::borrow::Cow<'a, str>>,
    pub tier: Option<std::borrow::Cow<'a, str>>,
    /// The rule's index in its policy; -1 for a tier's default action.
    pub rule: Option<i64>,
}

/// Calico's tier of a policy name: the part before the first dot (`tier.name`), else
/// `default` (felix names policies of other tiers `tier.name`).
fn tier_of(name: &str) -> &str {
    name.split_once('.').map_or("default", |(t, _)| t)
}

/// A Calico NFLOG prefix, `AODIII|id` (felix/rules/nflogprefix.go): A the action
/// ((A)llow, (D)eny, (N)ext tier), O the owner ((P)olicy or p(R)ofile), D the direction
/// ((I)ngress, (E)gress), III the rule index (none for a tier's end), id the policy
/// (`kind/ns/name`, `kind/name`), the tier (end of tier) or the profile.
fn calico_hit(prefix: &str) -> Option<RuleHit<'_>> {
    use std::borrow::Cow;
    let (code, id) = match prefix.split_once('|') {
        Some((c, id)) => (c, Some(id)),
        None => (prefix, None),
    };
    let b = code.as_bytes();
    if b.len() < 3 || !b[3..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let action = match b[0] {
        b'A' => "allow",
        b'D' => "deny",
        b'N' => "pass",
        _ => return None,
    };
    let direction = match b[2] {
        b'I' => "ingress",
        b'E' => "egress",
        _ => return None,
    };
    let rule = code[3..].parse::<i64>().ok();
    let mut hit = RuleHit {
        action: Some(action),
        direction: Some(direction),
        rule: Some(rule.unwrap_or(-1)),
        ..RuleHit::default()
    };
    match (b[1], id) {
        // A profile's rule, or the no-match profile (`DRI`).
        (b'R', id) => {
            hit.tier = Some(Cow::Borrowed("__PROFILE__"));
            hit.policy = Some(Cow::Owned(format!(
                "__PROFILE__.{}",
                id.filter(|i| !i.is_empty()).unwrap_or("__NO_MATCH__")
            )));
        }
        // End of tier (`DPE|tier`): the tier's default action.
        (b'P', Some(tier)) if rule.is_none() => {
            hit.tier = Some(Cow::Borrowed(tier));
            hit.policy = Some(Cow::Borrowed("__NO_MATCH__"));
        }
        (b'P', Some(id)) => {
            let (kind, rest) = match id.split_once('/') {
                Some((k, r)) if KINDS.contains(&k) => (k, r),
                _ => ("", id),
            };
            let (ns, name) = match kind {
                "gnp" | "sgnp" | "kcnp" => (None, rest),
                _ => match rest.split_once('/') {
                    Some((ns, name)) => (Some(ns), name),
                    None => (None, rest),
                },
            };
            let tier = match kind {
                "knp" | "sknp" | "kcnp" => "default",
                _ => tier_of(name),
            };
            let bare = name.strip_prefix(tier).and_then(|n| n.strip_prefix('.'));
            // Calico Enterprise's flow-log names (felix/calc RuleID.setFlowLogPolicyName).
            let shown = match kind {
                "snp" => format!("{tier}.staged:{}", bare.unwrap_or(name)),
                "sgnp" => format!("{tier}.staged:{}", bare.unwrap_or(name)),
                "sknp" => format!("staged:{name}"),
                _ => name.to_string(),
            };
            hit.tier = Some(Cow::Owned(tier.to_string()));
            hit.policy = Some(Cow::Owned(match ns {
                Some(ns) => format!("{ns}/{shown}"),
                None => shown,
            }));
        }
        _ => return None,
    }
    Some(hit)
}

/// Calico's short policy kinds in NFLOG prefixes (felix/types/policy_id.go).
const KINDS: [&str; 7] = ["np", "gnp", "snp", "sgnp", "sknp", "knp", "kcnp"];

/// The rule behind a log prefix: Calico's own format (see [`calico_hit`]), or ours,
/// `<action><separator><policy>` (`D|default/deny-db`, `allow|ns/p`).
pub fn rule_hit<'a>(prefix: &'a str, sep: &str) -> RuleHit<'a> {
    use std::borrow::Cow;
    let prefix = prefix.trim();
    if sep == "|" {
        if let Some(hit) = calico_hit(prefix) {
            return hit;
        }
    }
    let Some((code, policy)) = prefix.split_once(sep).filter(|_| !sep.is_empty()) else {
        return RuleHit::default();
    };
    let action = match code.trim().to_ascii_lowercase().as_str() {
        "d" | "deny" | "drop" | "reject" => Some("deny"),
        "a" | "allow" | "accept" => Some("allow"),
        _ => None,
    };
    let policy = Some(policy.trim()).filter(|p| !p.is_empty());
    RuleHit {
        action,
        direction: None,
        tier: policy.map(|p| Cow::Borrowed(tier_of(p.rsplit('/').next().unwrap_or(p)))),
        policy: policy.map(Cow::Borrowed),
        rule: None,
    }
}

/// Decodes the packets of one netlink read into `out` (with their copied bytes when
/// `keep`); returns how many logged packets were skipped because their copied bytes
/// hold no whole IP header (a small `snaplen`, a non-IP payload).
fn decode(bytes: &[u8], out: &mut Vec<Packet>, keep: bool) -> Result<u64, String> {
    let mut skipped = 0;
    let mut buf = bytes;
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return Err(format!(
                "netlink message length {len} with {} bytes left",
                buf.len()
            ));
        }
        let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[..len])
            .map_err(|e| e.to_string())?;
        if let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) = msg.payload
        {
            let mut p = Packet::default();
            let mut ok = false;
            for nla in nlas {
                match nla {
                    PacketNla::Payload(payload) => {
                        ok = parse_ip(&payload, &mut p).is_some();
                        if keep {
                            p.copy = payload;
                        }
                    }
                    PacketNla::Prefix(c) => p.prefix = c.to_string_lossy().into_owned(),
                    PacketNla::Mark(m) => p.mark = m,
                    _ => {}
                }
            }
            if ok {
                out.push(p);
            } else {
                skipped += 1;
            }
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(skipped)
}

fn send_config(
    sock: &Socket,
    family: NetfilterProtoFamily,
    group: u16,
    nlas: Vec<netlink_packet_netfilter::nflog::ConfigNla>,
) -> std::io::Result<()> {
    let req = config_request(family, group, nlas);
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let mut reply = Vec::with_capacity(4096);
    sock.recv(&mut reply, 0)?;
    if let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&reply) {
        if let NetlinkPayload::Error(e) = msg.payload {
            if let Some(code) = e.code {
                return Err(std::io::Error::from_raw_os_error(-code.get()));
            }
        }
    }
    Ok(())
}

fn open(s: &NflogInput) -> Result<Socket, String> {
    if let Some(ns) = &s.netns {
        netlink::enter_netns(ns)
            .map_err(|e| format!("cannot enter network namespace {}: {e}", ns.display()))?;
    }
    let hint = |e: std::io::Error| {
        let extra = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the nflog input needs CAP_NET_ADMIN)"
        } else {
            ""
        };
        format!("cannot bind NFLOG group {}: {e}{extra}", s.group)
    };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(hint)?;
    sock.bind_auto().map_err(hint)?;
    netlink::set_rcvbuf(&sock, s.rcvbuf).map_err(hint)?;
    netlink::set_recv_timeout(&sock, std::time::Duration::from_millis(200)).map_err(hint)?;
    send_config(
        &sock,
        NetfilterProtoFamily::Unspec,
        s.group,
        vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(s.copy_range).into(),
        ],
    )
    .map_err(hint)?;
    Ok(sock)
}

enum FromKernel {
    Packets(Vec<Packet>),
    Lost(u64),
    /// Logged packets without a whole IP header.
    Skipped(u64),
    Failed(String),
}

fn reader(sock: Socket, tx: mpsc::Sender<FromKernel>, stop: Arc<AtomicBool>, dns: bool) {
    let mut buf = Vec::with_capacity(netlink::RECV_BUF);
    let mut batch = Vec::new();
    let backlog = if dns { MAX_BACKLOG_DNS } else { MAX_BACKLOG };
    while !stop.load(Ordering::Relaxed) {
        buf.clear();
        match sock.recv(&mut buf, 0) {
            Ok(n) => match decode(&buf[..n], &mut batch, dns) {
                Ok(0) => {}
                Ok(skipped) => {
                    let _ = tx.try_send(FromKernel::Skipped(skipped));
                }
                Err(e) => {
                    crate::warn!("[input:nflog] skipped an undecodable netlink message: {e}")
                }
            },
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                let _ = tx.try_send(FromKernel::Lost(0));
            }
            Err(e) if super::nothing_yet(&e) => {}
            Err(e) => {
                let _ = tx.blocking_send(FromKernel::Failed(format!("nflog socket failed: {e}")));
                return;
            }
        }
        let unwrap = |m| match m {
            FromKernel::Packets(b) => Some(b),
            _ => None,
        };
        match super::hand_off(&tx, &mut batch, backlog, FromKernel::Packets, unwrap) {
            super::HandOff::Done => {}
            super::HandOff::Dropped(lost) => {
                let _ = tx.try_send(FromKernel::Lost(lost));
            }
            super::HandOff::Closed => return,
        }
    }
}

const FIELDS: [&str; 22] = [
    "event",
    "family",
    "proto",
    "proto_num",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "icmp_type",
    "icmp_code",
    "bytes",
    "packets",
    "prefix",
    "icmp_id",
    "action",
    "direction",
    "policy",
    "tier",
    "rule",
    "group",
    "mark",
    "host",
];

fn record(keys: &[Str], p: &Packet, sep: &str, group: u16, host: &Value, now: EventTime) -> Record {
    let s = |v: &str| Value::Str(Arc::from(v));
    let opt = |v: Option<u64>| v.map_or(Value::Nil, Value::UInt);
    let hit = rule_hit(&p.prefix, sep);
    let values = [
        s("packet"),
        s(if p.family == 10 { "ipv6" } else { "ipv4" }),
        proto_name(p.proto).map_or(Value::Nil, s),
        Value::UInt(p.proto as u64),
        p.src.map_or(Value::Nil, |a| s(&a.to_string())),
        opt(p.sport.map(u64::from)),
        p.dst.map_or(Value::Nil, |a| s(&a.to_string())),
        opt(p.dport.map(u64::from)),
        opt(p.icmp.map(|(t, _)| t as u64)),
        opt(p.icmp.map(|(_, c)| c as u64)),
        Value::UInt(p.bytes),
        Value::UInt(1),
        s(&p.prefix),
        opt(p.icmp_id.map(u64::from)),
        hit.action.map_or(Value::Nil, s),
        hit.direction.map_or(Value::Nil, s),
        hit.policy.as_deref().map_or(Value::Nil, s),
        hit.tier.as_deref().map_or(Value::Nil, s),
        hit.rule.map_or(Value::Nil, Value::Int),
        Value::UInt(group as u64),
        Value::UInt(p.mark as u64),
        host.clone(),
    ];
    Record::new(
        p.time.unwrap_or(now),
        keys.iter().cloned().zip(values).collect(),
    )
}

const DNS_FIELDS: [&str; 14] = [
    "event", "family", "proto", "src_ip", "src_port", "dst_ip", "dst_port", "id", "rcode",
    "question", "qtype", "answers", "group", "host",
];

fn dns_record(
    keys: &[Str],
    p: &Packet,
    r: &dns::Response,
    group: u16,
    host: &Value,
    now: EventTime,
) -> Record {
    let s = |v: &str| Value::Str(Arc::from(v));
    let opt = |v: Option<u16>| v.map_or(Value::Nil, |n| Value::UInt(n as u64));
    let values = [
        s("dns"),
        s(if p.family == 10 { "ipv6" } else { "ipv4" }),
        proto_name(p.proto).map_or(Value::Nil, s),
        p.src.map_or(Value::Nil, |a| s(&a.to_string())),
        opt(p.sport),
        p.dst.map_or(Value::Nil, |a| s(&a.to_string())),
        opt(p.dport),
        Value::UInt(r.id as u64),
        Value::Str(dns::rcode_name(r.rcode)),
        r.qname.as_deref().map_or(Value::Nil, s),
        r.qtype
            .map_or(Value::Nil, |t| Value::Str(dns::type_name(t))),
        dns::answers_value(&r.answers),
        Value::UInt(group as u64),
        host.clone(),
    ];
    Record::new(
        p.time.unwrap_or(now),
        keys.iter().cloned().zip(values).collect(),
    )
}

/// What the packets of a `dns on` group were; the first of each kind of skip is
/// warned about, all are counted (summary at exit, `agent_nflog_dns_skipped_total`).
#[derive(Default)]
struct DnsCounts {
    responses: u64,
    malformed: u64,
    cut: u64,
    queries: u64,
}

impl DnsCounts {
    fn read(&mut self, me: &NflogInput, name: &str, p: &Packet) -> Option<dns::Response> {
        let got = dns::transport_payload(&p.copy).and_then(|(proto, m)| dns::parse(m, proto == 6));
        let (count, first) = match got {
            Ok(r) => {
                self.responses += 1;
                crate::pipeline::metrics::add(&me.dns_responses, 1);
                return Some(r);
            }
            Err(dns::Skip::Empty) => return None,
            Err(dns::Skip::Cut) => (&mut self.cut, format!("a DNS message longer than copy_range {} (or the rule's snaplen) was cut; raise copy_range", me.copy_range)),
            Err(dns::Skip::Query) => (&mut self.queries, "a DNS query was skipped: have the rule copy replies only (udp sport 53)".to_string()),
            Err(dns::Skip::Malformed(e)) => (&mut self.malformed, format!("a packet is no DNS response ({e})")),
        };
        if *count == 0 {
            crate::warn!("[input:nflog:{name}] group {}: {first}; such packets are counted and skipped (summary at exit)", me.group);
        }
        *count += 1;
        crate::pipeline::metrics::add(&me.dns_skipped, 1);
        None
    }
}

impl Input for NflogInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::channel(256);
            let (ready_tx, ready_rx) = std_mpsc::channel();
            let stop = Arc::new(AtomicBool::new(false));
            let me = Arc::new(*self);
            {
                let (me, stop) = (me.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("nflog".into())
                    .spawn(move || match open(&me) {
                        Ok(sock) => {
                            let _ = ready_tx.send(Ok(()));
                            let dns = me.dns;
                            reader(sock, tx, stop, dns);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    })
                    .map_err(|e| {
                        PluginError::Other(format!("cannot start the nflog reader: {e}"))
                    })?;
            }
            match crate::pipeline::engine::blocking(|| ready_rx.recv()) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(PluginError::Other(e)),
                Err(_) => {
                    return Err(PluginError::Other(
                        "the nflog reader ended during start-up".into(),
                    ))
                }
            }
            crate::info!(
                "[input:nflog:{}] receiving NFLOG group {}",
                ctx.name,
                me.group
            );
            let keys: Vec<Str> = FIELDS.iter().map(|k| Arc::from(*k)).collect();
            let dns_keys: Vec<Str> = DNS_FIELDS.iter().map(|k| Arc::from(*k)).collect();
            let mut dns = DnsCounts::default();
            let host = Value::Str(Arc::from(
                crate::config::parser::hostname().unwrap_or_default(),
            ));
            let (mut packets, mut lost, mut skipped) = (0u64, 0u64, 0u64);
            let result = loop {
                let msg = tokio::select! {
                    _ = ctx.shutdown.wait() => break Ok(()),
                    m = rx.recv() => m,
                };
                match msg {
                    None => break Err(PluginError::Other("the nflog reader stopped".into())),
                    Some(FromKernel::Failed(e)) => break Err(PluginError::Other(e)),
                    Some(FromKernel::Lost(n)) => {
                        lost += n;
                        crate::warn!("[input:nflog:{}] logged packets were lost ({}): the socket buffer overflowed or the pipeline is behind; raise rcvbuf", ctx.name, if n == 0 { "ENOBUFS".to_string() } else { format!("{n} packets") });
                    }
                    Some(FromKernel::Skipped(n)) => {
                        if skipped == 0 {
                            crate::warn!("[input:nflog:{}] logged packets without a whole IP header were skipped (counted in the summary at exit); is the rule's snaplen below 40?", ctx.name);
                        }
                        skipped += n;
                    }
                    Some(FromKernel::Packets(ps)) => {
                        packets += ps.len() as u64;
                        let now = EventTime::now();
                        let records: Vec<Record> = if me.dns {
                            ps.iter()
                                .filter_map(|p| {
                                    let r = dns.read(&me, &ctx.name, p)?;
                                    Some(dns_record(&dns_keys, p, &r, me.group, &host, now))
                                })
                                .collect()
                        } else {
                            ps.iter()
                                .map(|p| record(&keys, p, &me.separator, me.group, &host, now))
                                .collect()
                        };
                        if records.is_empty() {
                            continue;
                        }
                        if let Err(e) = ctx.out.send(records).await {
                            break Err(e);
                        }
                    }
                }
            };
            stop.store(true, Ordering::Relaxed);
            crate::info!(
                "[input:nflog:{}] {packets} packets, {lost} lost, {skipped} without a whole IP header",
                ctx.name
            );
            if me.dns {
                crate::info!(
                    "[input:nflog:{}] {} DNS responses, {} malformed, {} cut by copy_range, {} queries",
                    ctx.name,
                    dns.responses,
                    dns.malformed,
                    dns.cut,
                    dns.queries
                );
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_tcp_and_ipv6_udp_headers() {
        // IPv4, IHL 5, total length 60, TCP, 10.0.0.1:41000 -> 10.0.0.2:5432 (SYN).
        let mut v4 = vec![
            0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        v4.extend([0xa0, 0x28, 0x15, 0x38, 0, 0, 0, 0]);
        let mut p = Packet::default();
        parse_ip(&v4, &mut p).unwrap();
        assert_eq!(
            (p.family, p.proto, p.bytes, p.sport, p.dport),
            (2, 6, 60, Some(41000), Some(5432))
        );
        assert_eq!(p.dst, Some("10.0.0.2".parse().unwrap()));
        // IPv6, payload 12, UDP, ::1:5000 -> ::1:53.
        let mut v6 = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend([0x13, 0x88, 0, 53, 0, 12, 0, 0]);
        let mut p = Packet::default();
        parse_ip(&v6, &mut p).unwrap();
        assert_eq!(
            (p.family, p.proto, p.bytes, p.sport, p.dport),
            (10, 17, 52, Some(5000), Some(53))
        );
        assert!(
            parse_ip(&v4[..10], &mut Packet::default()).is_none(),
            "truncated"
        );
        // Cut anywhere (snaplen 14 and the like): skipped, never a panic.
        for n in 0..v4.len() {
            let got = parse_ip(&v4[..n], &mut Packet::default());
            assert_eq!(got.is_some(), n >= 20, "IPv4 cut at {n}");
        }
        for n in 0..v6.len() {
            let got = parse_ip(&v6[..n], &mut Packet::default());
            assert_eq!(got.is_some(), n >= 40, "IPv6 cut at {n}");
        }
        // A header length below 20 bytes is not IPv4.
        let mut bad = v4.clone();
        bad[0] = 0x44;
        assert!(parse_ip(&bad, &mut Packet::default()).is_none());
    }

    /// action, direction, policy, tier, rule.
    type Hit = (
        Option<&'static str>,
        Option<&'static str>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );

    fn hit(prefix: &str) -> Hit {
        let h = rule_hit(prefix, "|");
        (
            h.action,
            h.direction,
            h.policy.map(|p| p.into_owned()),
            h.tier.map(|t| t.into_owned()),
            h.rule,
        )
    }

    #[test]
    fn prefix_convention() {
        assert_eq!(
            hit("D|default/deny-db"),
            (
                Some("deny"),
                None,
                Some("default/deny-db".into()),
                Some("default".into()),
                None
            )
        );
        let h = rule_hit("allow;ns/p ", ";");
        assert_eq!(
            (h.action, h.policy.as_deref()),
            (Some("allow"), Some("ns/p"))
        );
        assert_eq!(rule_hit("just a prefix", "|"), RuleHit::default());
    }

    /// Calico's prefixes (felix/rules/nflogprefix_test.go) and the names Calico
    /// Enterprise's flow logs give them (felix/calc RuleID.setFlowLogPolicyName).
    #[test]
    fn calico_prefixes() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            hit("API0|np/namespace1/default.policy"),
            (
                Some("allow"),
                Some("ingress"),
                some("namespace1/default.policy"),
                some("default"),
                Some(0)
            )
        );
        assert_eq!(
            hit("DPE88|gnp/security.block-all"),
            (
                Some("deny"),
                Some("egress"),
                some("security.block-all"),
                some("security"),
                Some(88)
            )
        );
        assert_eq!(
            hit("APE2|knp/policy-demo/knp.default.allow-dns"),
            (
                Some("allow"),
                Some("egress"),
                some("policy-demo/knp.default.allow-dns"),
                some("default"),
                Some(2)
            )
        );
        assert_eq!(
            hit("DPI1|snp/ns/default.try-it"),
            (
                Some("deny"),
                Some("ingress"),
                some("ns/default.staged:try-it"),
                some("default"),
                Some(1)
            )
        );
        assert_eq!(
            hit("DPE|tier-1"),
            (
                Some("deny"),
                Some("egress"),
                some("__NO_MATCH__"),
                some("tier-1"),
                Some(-1)
            )
        );
        assert_eq!(
            hit("NPI|default"),
            (
                Some("pass"),
                Some("ingress"),
                some("__NO_MATCH__"),
                some("default"),
                Some(-1)
            )
        );
        assert_eq!(
            hit("DRI"),
            (
                Some("deny"),
                Some("ingress"),
                some("__PROFILE__.__NO_MATCH__"),
                some("__PROFILE__"),
                Some(-1)
            )
        );
        assert_eq!(
            hit("ARE0|kns.policy-demo"),
            (
                Some("allow"),
                Some("egress"),
                some("__PROFILE__.kns.policy-demo"),
                some("__PROFILE__"),
                Some(0)
            )
        );
        // Not Calico's: the action letters without an owner and direction.
        assert_eq!(hit("A|x").1, None);
    }
}
