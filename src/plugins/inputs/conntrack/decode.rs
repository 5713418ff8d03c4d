//! ctnetlink messages → [`Flow`]s. The crate (`netlink-packet-netfilter`) parses the
//! netlink framing, tuples, status, TCP protoinfo and mark; what it leaves as
//! `Other(DefaultNla)` is decoded here: counters (9/10), id (12), zone (18),
//! timestamps (20, 27), timeout and the ICMP tuple fields. Kernel side:
//! net/netfilter/nf_conntrack_netlink.c; ids from linux/netfilter/nfnetlink_conntrack.h.

use std::net::IpAddr;

use netlink_packet_core::{
    parse_u16_be, parse_u32_be, parse_u64_be, DefaultNla, NetlinkMessage, NetlinkPayload, Nla,
    NlaBuffer, NlasIterator, NLA_TYPE_MASK, NLM_F_CREATE, NLM_F_EXCL,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Tuple,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TIMESTAMP: u16 = 20;
const CTA_TIMESTAMP_EVENT: u16 = 27;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_TIMESTAMP_START: u16 = 1;
const CTA_TIMESTAMP_STOP: u16 = 2;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

/// What a message says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    New,
    Update,
    Destroy,
    /// A dump entry (periodic sample of a live flow).
    Sample,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::New => "new",
            Kind::Update => "update",
            Kind::Destroy => "destroy",
            Kind::Sample => "sample",
        }
    }
}

/// One direction of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple5 {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_id: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

/// Packets and bytes seen in one direction (cumulative, from the kernel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// One conntrack entry as a message describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// nfgenmsg family: 2 = IPv4, 10 = IPv6.
    pub family: u8,
    pub id: Option<u32>,
    pub orig: Tuple5,
    pub reply: Tuple5,
    pub status: u32,
    pub tcp_state: Option<u8>,
    pub mark: Option<u32>,
    /// 0 when absent (the default zone).
    pub zone: u16,
    pub orig_counters: Option<Counters>,
    pub reply_counters: Option<Counters>,
    /// Nanoseconds since the epoch (`nf_conntrack_timestamp`).
    pub start_ns: Option<u64>,
    pub stop_ns: Option<u64>,
    pub event_ns: Option<u64>,
    pub timeout: Option<u32>,
}

/// One decoded netlink message. Flows dominate, so the size difference is by design.
#[derive(Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Message {
    Flow(Kind, Flow),
    /// End of a dump.
    Done,
    /// A netlink error message (negative errno), e.g. an answer to a bad request.
    Error(i32),
    /// Anything else (noop, other subsystems): skipped.
    Other,
}

/// Decodes every message of one datagram. `dump` marks replies to a dump request,
/// whose `New` messages are samples rather than events.
pub fn decode_datagram(mut buf: &[u8], dump: bool, out: &mut Vec<Message>) -> Result<(), String> {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return Err(format!(
                "netlink message length {len} with {} bytes left",
                buf.len()
            ));
        }
        out.push(decode_message(&buf[..len], dump)?);
        // NLMSG_ALIGN
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(())
}

fn decode_message(bytes: &[u8], dump: bool) -> Result<Message, String> {
    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(bytes).map_err(|e| e.to_string())?;
    let flags = msg.header.flags;
    Ok(match msg.payload {
        NetlinkPayload::Done(_) => Message::Done,
        NetlinkPayload::Error(e) => match e.code {
            Some(code) => Message::Error(code.get()),
            None => Message::Other, // an ack
        },
        NetlinkPayload::InnerMessage(nf) => {
            let family = u8::from(nf.header.family);
            match nf.inner {
                NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) => {
                    let kind = if dump {
                        Kind::Sample
                    } else if flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 {
                        Kind::New
                    } else {
                        Kind::Update
                    };
                    Message::Flow(kind, flow(family, &attrs)?)
                }
                NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attrs)) => {
                    Message::Flow(Kind::Destroy, flow(family, &attrs)?)
                }
                _ => Message::Other,
            }
        }
        _ => Message::Other,
    })
}

fn flow(family: u8, attrs: &[ConntrackAttribute]) -> Result<Flow, String> {
    let mut f = Flow {
        family,
        ..Flow::default()
    };
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => f.orig = tuple(t)?,
            ConntrackAttribute::CtaTupleReply(t) => f.reply = tuple(t)?,
            ConntrackAttribute::CtaStatus(s) => f.status = s.bits(),
            ConntrackAttribute::CtaMark(m) => f.mark = Some(*m),
            ConntrackAttribute::CtaTimeout(t) => f.timeout = Some(*t),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for t in tcp {
                            if let ProtoInfoTCP::State(s) = t {
                                f.tcp_state = Some(*s);
                            }
                        }
                    }
                }
            }
            ConntrackAttribute::Other(nla) => other(&mut f, nla)?,
            _ => {}
        }
    }
    Ok(f)
}

/// The value bytes of an attribute the crate did not model (it keeps them private).
fn value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("bad {what}: {e}")
}

fn other(f: &mut Flow, nla: &DefaultNla) -> Result<(), String> {
    // DefaultNla keeps NLA_F_NESTED in kind().
    let kind = nla.kind() & NLA_TYPE_MASK;
    match kind {
        CTA_COUNTERS_ORIG | CTA_COUNTERS_REPLY => {
            let v = value(nla);
            let mut c = Counters::default();
            for n in NlasIterator::new(&v[..]) {
                let n: NlaBuffer<&[u8]> = n.map_err(|e| err("counters", e))?;
                match n.kind() & NLA_TYPE_MASK {
                    CTA_COUNTERS_PACKETS => {
                        c.packets = parse_u64_be(n.value()).map_err(|e| err("packets", e))?
                    }
                    CTA_COUNTERS_BYTES => {
                        c.bytes = parse_u64_be(n.value()).map_err(|e| err("bytes", e))?
                    }
                    _ => {}
                }
            }
            if kind == CTA_COUNTERS_ORIG {
                f.orig_counters = Some(c);
            } else {
                f.reply_counters = Some(c);
            }
        }
        CTA_ID => f.id = Some(parse_u32_be(&value(nla)).map_err(|e| err("id", e))?),
        CTA_ZONE => f.zone = parse_u16_be(&value(nla)).map_err(|e| err("zone", e))?,
        CTA_TIMESTAMP => {
            let v = value(nla);
            for n in NlasIterator::new(&v[..]) {
                let n: NlaBuffer<&[u8]> = n.map_err(|e| err("timestamp", e))?;
                match n.kind() & NLA_TYPE_MASK {
                    CTA_TIMESTAMP_START => {
                        f.start_ns = Some(parse_u64_be(n.value()).map_err(|e| err("start", e))?)
                    }
                    CTA_TIMESTAMP_STOP => {
                        f.stop_ns = Some(parse_u64_be(n.value()).map_err(|e| err("stop", e))?)
                    }
                    _ => {}
                }
            }
        }
        CTA_TIMESTAMP_EVENT => {
            f.event_ns = Some(parse_u64_be(&value(nla)).map_err(|e| err("event time", e))?)
        }
        _ => {} // helper, labels, seq-adj, use count, ...: not part of our record
    }
    Ok(())
}

fn tuple(parts: &[Tuple]) -> Result<Tuple5, String> {
    let mut t = Tuple5::default();
    for part in parts {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => t.src = Some(*a),
                        IPTuple::DestinationAddress(a) => t.dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(proto) => t.proto = u8::from(*proto),
                        ProtoTuple::SourcePort(port) => t.sport = Some(*port),
                        ProtoTuple::DestinationPort(port) => t.dport = Some(*port),
                        ProtoTuple::Other(nla) => {
                            let v = value(nla);
                            match nla.kind() & NLA_TYPE_MASK {
                                CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                                    t.icmp_id =
                                        Some(parse_u16_be(&v).map_err(|e| err("icmp id", e))?)
                                }
                                CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                                    t.icmp_type = v.first().copied()
                                }
                                CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                                    t.icmp_code = v.first().copied()
                                }
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Captured on this kernel (6.18) in a test namespace: a UDP datagram
    /// 127.0.0.1:40000 → 127.0.0.1:9, NEW then DESTROY (acct and timestamp on).
    const NEW: &str = "
        a0000000 0001 0006 00000000 00000000   nlmsghdr: len 160, type 0x0100 (ctnetlink NEW), flags CREATE|EXCL
        02 00 0000                             nfgenmsg: AF_INET, v0, res_id 0
        3400 0180                              CTA_TUPLE_ORIG (nested)
          1400 0180                              CTA_TUPLE_IP
            0800 0100 7f000001                     V4_SRC 127.0.0.1
            0800 0200 7f000001                     V4_DST 127.0.0.1
          1c00 0280                              CTA_TUPLE_PROTO
            0500 0100 11000000                     PROTO_NUM 17 (+pad)
            0600 0200 9c400000                     SRC_PORT 40000
            0600 0300 00090000                     DST_PORT 9
        3400 0280                              CTA_TUPLE_REPLY: 127.0.0.1:9 -> 127.0.0.1:40000
          1400 0180 0800 0100 7f000001 0800 0200 7f000001
          1c00 0280 0500 0100 11000000 0600 0200 00090000 0600 0300 9c400000
        0800 0c00 a0278bfd                     CTA_ID
        0800 0300 00000008                     CTA_STATUS CONFIRMED
        0800 0700 00000002                     CTA_TIMEOUT 2 s
        0c00 1b00 18eb6397ec9bd778             CTA_TIMESTAMP_EVENT (ns)";

    const DESTROY: &str = "
        ec000000 0201 0000 00000000 00000000   nlmsghdr: len 236, type 0x0102 (ctnetlink DELETE)
        02 00 0000
        3400 0180 1400 0180 0800 0100 7f000001 0800 0200 7f000001
                  1c00 0280 0500 0100 11000000 0600 0200 9c400000 0600 0300 00090000
        3400 0280 1400 0180 0800 0100 7f000001 0800 0200 7f000001
                  1c00 0280 0500 0100 11000000 0600 0200 00090000 0600 0300 9c400000
        0800 0c00 a0278bfd                     CTA_ID
        0800 0300 00000208                     CTA_STATUS CONFIRMED|DYING
        1c00 0980                              CTA_COUNTERS_ORIG
          0c00 0100 0000000000000001             PACKETS 1
          0c00 0200 0000000000000080             BYTES 128
        1c00 0a80                              CTA_COUNTERS_REPLY
          0c00 0100 0000000000000000
          0c00 0200 0000000000000000
        1c00 1480                              CTA_TIMESTAMP
          0c00 0100 18eb6397ec9bd5ba             START (ns)
          0c00 0200 18eb639863c3d587             STOP (ns)
        0c00 1b00 18eb639882c26c07             CTA_TIMESTAMP_EVENT";

    fn strip_comments(s: &str) -> String {
        s.lines()
            .map(|l| {
                l.split_whitespace()
                    .take_while(|w| w.bytes().all(|b| b.is_ascii_hexdigit()))
                    .collect::<Vec<_>>()
                    .join("")
            })
            .collect()
    }

    fn udp(sport: u16, dport: u16) -> Tuple5 {
        Tuple5 {
            src: Some("127.0.0.1".parse().unwrap()),
            dst: Some("127.0.0.1".parse().unwrap()),
            proto: 17,
            sport: Some(sport),
            dport: Some(dport),
            ..Tuple5::default()
        }
    }

    #[test]
    fn decodes_a_captured_new_event() {
        let bytes = hex(&strip_comments(NEW));
        assert_eq!(bytes.len(), 160);
        let mut out = Vec::new();
        decode_datagram(&bytes, false, &mut out).unwrap();
        let want = Flow {
            family: 2,
            id: Some(0xa0278bfd),
            orig: udp(40000, 9),
            reply: udp(9, 40000),
            status: 0x8,
            timeout: Some(2),
            event_ns: Some(0x18eb6397ec9bd778),
            ..Flow::default()
        };
        assert_eq!(out, vec![Message::Flow(Kind::New, want)]);
    }

    #[test]
    fn decodes_a_captured_destroy_with_counters_and_timestamps() {
        let bytes = hex(&strip_comments(DESTROY));
        assert_eq!(bytes.len(), 236);
        let mut out = Vec::new();
        decode_datagram(&bytes, false, &mut out).unwrap();
        let Message::Flow(Kind::Destroy, f) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            f.orig_counters,
            Some(Counters {
                packets: 1,
                bytes: 128
            })
        );
        assert_eq!(
            f.reply_counters,
            Some(Counters {
                packets: 0,
                bytes: 0
            })
        );
        assert_eq!(f.start_ns, Some(0x18eb6397ec9bd5ba));
        assert_eq!(f.stop_ns, Some(0x18eb639863c3d587));
        assert_eq!(f.status, 0x208);
        assert_eq!(f.id, Some(0xa0278bfd));
    }

    #[test]
    fn several_messages_per_datagram_and_dump_samples() {
        let mut bytes = hex(&strip_comments(NEW));
        bytes.extend(hex(&strip_comments(DESTROY)));
        let mut out = Vec::new();
        decode_datagram(&bytes, true, &mut out).unwrap();
        assert!(
            matches!(out[0], Message::Flow(Kind::Sample, _)),
            "a dump reply is a sample"
        );
        assert!(matches!(out[1], Message::Flow(Kind::Destroy, _)));
    }

    /// ICMP echo 127.0.0.1 → 127.0.0.1 (id 0x1234), then ICMPv6 echo ::1 → ::1 (id 0x4321):
    /// the ICMP fields arrive as attributes the crate leaves unparsed (4/5/6 and 7/8/9).
    const ICMP_NEW: &str = "b0000000000100060000000000000000020000003c00018014000180080001007f000001080002007f0000012400028005000100010000000600040012340000050005000800000005000600000000003c00028014000180080001007f000001080002007f00000124000280050001000100000006000400123400000500050000000000050006000000000008000c003da5d6310800030000000008080007000000001e0c001b0018eb63a2610f8bc2";
    const ICMPV6_NEW: &str = "e00000000001000600000000000000000a000000540001802c0001801400030000000000000000000000000000000001140004000000000000000000000000000000000124000280050001003a000000060007004321000005000800800000000500090000000000540002802c0001801400030000000000000000000000000000000001140004000000000000000000000000000000000124000280050001003a00000006000700432100000500080081000000050009000000000008000c00577d75800800030000000008080007000000001e0c001b0018eb63a26116021f";

    #[test]
    fn decodes_icmp_and_icmpv6_fields() {
        let mut out = Vec::new();
        decode_datagram(&hex(ICMP_NEW), false, &mut out).unwrap();
        decode_datagram(&hex(ICMPV6_NEW), false, &mut out).unwrap();
        let Message::Flow(Kind::New, v4) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!((v4.family, v4.orig.proto), (2, 1));
        assert_eq!(
            (v4.orig.icmp_type, v4.orig.icmp_code, v4.orig.icmp_id),
            (Some(8), Some(0), Some(0x1234))
        );
        assert_eq!(v4.reply.icmp_type, Some(0), "echo reply expected");
        assert_eq!(v4.timeout, Some(30));
        let Message::Flow(Kind::New, v6) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!((v6.family, v6.orig.proto), (10, 58));
        assert_eq!(v6.orig.src, Some("::1".parse().unwrap()));
        assert_eq!(
            (v6.orig.icmp_type, v6.orig.icmp_id),
            (Some(128), Some(0x4321))
        );
        assert_eq!(v6.reply.icmp_type, Some(129));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let bytes = hex(&strip_comments(NEW));
        let mut out = Vec::new();
        assert!(decode_datagram(&bytes[..100], false, &mut out).is_err());
        let mut bad = bytes.clone();
        bad[20..24].copy_from_slice(&[0xff, 0xff, 0x01, 0x80]); // attribute longer than the message
        assert!(decode_datagram(&bad, false, &mut out).is_err());
    }
}
