//! DNS responses in packets copied whole to an NFLOG group (`nflog` with `dns on`), as
//! Calico's felix snoops them for its domain store: the IP and UDP/TCP headers are
//! walked here, the DNS message itself is parsed by `simple-dns`. Only what a reverse
//! lookup needs is kept: the question and the A, AAAA and CNAME records (class IN) of
//! the answer and additional sections, names lowercased (felix/dataplane/dns).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use simple_dns::rdata::RData;
use simple_dns::{Name, PacketFlag, CLASS};

use crate::event::{Map, Str, Value};

/// Why a logged packet gave no DNS record.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    /// No transport payload (a TCP ACK or handshake segment of a DNS connection, a
    /// fragment): nothing to say, not counted as an error.
    Empty,
    /// The copy is shorter than the packet: `copy_range` (or the rule's `snaplen`)
    /// cut the DNS message.
    Cut,
    /// A DNS query, not a response (the rule copies more than replies).
    Query,
    /// Not a DNS message, or a broken one.
    Malformed(String),
}

/// One answer: `name` resolves to an address (A/AAAA) or is an alias of `target` (CNAME).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub ttl: u32,
    pub data: Data,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Addr(IpAddr),
    Cname(String),
}

/// What a DNS response says that a flow log can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: u16,
    /// The first question (responses carry exactly one in practice).
    pub qname: Option<String>,
    pub qtype: Option<u16>,
    pub answers: Vec<Answer>,
}

/// The UDP or TCP payload of an IP packet, as far as its IP length says (trailing
/// padding excluded). `Cut` when the copy holds less than the packet.
pub fn transport_payload(p: &[u8]) -> Result<(u8, &[u8]), Skip> {
    let bad = |what: &str| Skip::Malformed(what.to_string());
    let (proto, l4, total) = match p.first().map(|b| b >> 4) {
        Some(4) => {
            let h = p.get(..20).ok_or(Skip::Cut)?;
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if frag & 0x3fff != 0 {
                // A fragment (more-fragments set or an offset): the message is split.
                return Err(Skip::Empty);
            }
            if ihl < 20 || total < ihl {
                return Err(bad("an IPv4 header length out of range"));
            }
            (h[9], ihl, total)
        }
        Some(6) => {
            let h = p.get(..40).ok_or(Skip::Cut)?;
            (h[6], 40, 40 + u16::from_be_bytes([h[4], h[5]]) as usize)
        }
        _ => return Err(bad("not an IP packet")),
    };
    if p.len() < total {
        return Err(Skip::Cut);
    }
    let seg = &p[l4..total];
    let payload = match proto {
        17 => seg.get(8..).ok_or_else(|| bad("a UDP header cut short"))?,
        6 => {
            let off =
                (*seg.get(12).ok_or_else(|| bad("a TCP header cut short"))? >> 4) as usize * 4;
            seg.get(off.max(20)..)
                .ok_or_else(|| bad("a TCP header cut short"))?
        }
        // Extension headers, ICMP and the rest carry no DNS message we can read.
        _ => return Err(Skip::Empty),
    };
    if payload.is_empty() {
        return Err(Skip::Empty);
    }
    Ok((proto, payload))
}

/// The smallest wire size of a question (root name, type, class) and of a resource
/// record (root name, type, class, TTL, rdlength).
const MIN_QUESTION: usize = 5;
const MIN_RECORD: usize = 11;

fn lower(n: &Name) -> String {
    let mut s = n.to_string();
    s.make_ascii_lowercase();
    s
}

/// Parses a DNS response. Over TCP (`tcp`), the message follows its 2-byte length and
/// must be whole in this segment.
pub fn parse(payload: &[u8], tcp: bool) -> Result<Response, Skip> {
    let bad = |what: String| Skip::Malformed(what);
    let msg = if tcp {
        let n = payload
            .get(..2)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
            .ok_or_else(|| bad("a DNS-over-TCP length cut short".into()))?;
        payload.get(2..2 + n).ok_or_else(|| {
            bad(format!(
                "a DNS-over-TCP message of {n} bytes spread over segments"
            ))
        })?
    } else {
        payload
    };
    // The header's counts bound what the parser reserves: refuse counts the message
    // cannot hold before any allocation sized by them.
    let h = msg
        .get(..12)
        .ok_or_else(|| bad(format!("{} bytes, less than a DNS header", msg.len())))?;
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]) as usize;
    let need = count(4) * MIN_QUESTION + (count(6) + count(8) + count(10)) * MIN_RECORD;
    if 12 + need > msg.len() {
        return Err(bad(format!(
            "a DNS header counting more records than its {} bytes hold",
            msg.len()
        )));
    }
    let packet = simple_dns::Packet::parse(msg).map_err(|e| bad(format!("DNS: {e}")))?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return Err(Skip::Query);
    }
    let q = packet.questions.first();
    let mut answers = Vec::new();
    for rr in packet
        .answers
        .iter()
        .chain(packet.additional_records.iter())
    {
        if rr.class != CLASS::IN {
            continue;
        }
        let data = match &rr.rdata {
            RData::A(a) => Data::Addr(IpAddr::V4(Ipv4Addr::from(a.address))),
            RData::AAAA(a) => Data::Addr(IpAddr::V6(Ipv6Addr::from(a.address))),
            RData::CNAME(c) => Data::Cname(lower(&c.0)),
            _ => continue,
        };
        answers.push(Answer {
            name: lower(&rr.name),
            ttl: rr.ttl,
            data,
        });
    }
    Ok(Response {
        id: packet.id(),
        rcode: packet.rcode() as u16,
        qname: q.map(|q| lower(&q.qname)),
        qtype: q.map(|q| u16::from(q.qtype)),
        answers,
    })
}

/// The mnemonic of a record type, as `dig` prints it; other types by number.
pub fn type_name(t: u16) -> Str {
    let known = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        _ => return Arc::from(format!("TYPE{t}")),
    };
    Arc::from(known)
}

/// The mnemonic of a response code, as `dig` prints it.
pub fn rcode_name(r: u16) -> Str {
    let known = match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => return Arc::from(format!("RCODE{r}")),
    };
    Arc::from(known)
}

/// The `answers` array of a `dns` record: `{name, type, ttl, address}` for A/AAAA,
/// `{name, type, ttl, cname}` for CNAME, in the message's order.
pub fn answers_value(answers: &[Answer]) -> Value {
    let s = |v: &str| Value::Str(Arc::from(v));
    let k = |v: &str| -> Str { Arc::from(v) };
    Value::Array(
        answers
            .iter()
            .map(|a| {
                let (kind, key, val) = match &a.data {
                    Data::Addr(ip @ IpAddr::V4(_)) => ("A", "address", s(&ip.to_string())),
                    Data::Addr(ip) => ("AAAA", "address", s(&ip.to_string())),
                    Data::Cname(t) => ("CNAME", "cname", s(t)),
                };
                let m: Map = vec![
                    (k("name"), s(&a.name)),
                    (k("type"), s(kind)),
                    (k("ttl"), Value::UInt(a.ttl as u64)),
                    (k(key), val),
                ];
                Value::Map(m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{Packet, Question, ResourceRecord, QCLASS, QTYPE, TYPE};

    /// A response for `WWW.Example.test` A: a CNAME to `db.example.test` and its A
    /// record, the way a recursive resolver answers (and an AAAA glue record).
    fn response() -> Vec<u8> {
        let mut p = Packet::new_reply(0x1234);
        p.questions.push(Question::new(
            Name::new_unchecked("WWW.Example.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("WWW.Example.test"),
            CLASS::IN,
            300,
            RData::CNAME(CNAME(Name::new_unchecked("db.example.test"))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("db.example.test"),
            CLASS::IN,
            30,
            RData::A(A {
                address: u32::from(Ipv4Addr::new(10, 3, 0, 80)),
            }),
        ));
        p.additional_records.push(ResourceRecord::new(
            Name::new_unchecked("db.example.test"),
            CLASS::IN,
            30,
            RData::AAAA(AAAA {
                address: u128::from("fd00::80".parse::<Ipv6Addr>().unwrap()),
            }),
        ));
        p.build_bytes_vec_compressed().unwrap()
    }

    fn udp_v4(payload: &[u8]) -> Vec<u8> {
        let total = (20 + 8 + payload.len()) as u16;
        let mut v = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 3, 0, 53, 10, 3, 0, 5,
        ];
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v.extend(53u16.to_be_bytes());
        v.extend(40000u16.to_be_bytes());
        v.extend((8 + payload.len() as u16).to_be_bytes());
        v.extend([0, 0]);
        v.extend(payload);
        v
    }

    #[test]
    fn a_response_keeps_its_cname_chain_lowercased_in_order() {
        let wire = udp_v4(&response());
        let (proto, payload) = transport_payload(&wire).unwrap();
        assert_eq!(proto, 17);
        let r = parse(payload, false).unwrap();
        assert_eq!((r.id, r.rcode), (0x1234, 0));
        assert_eq!(r.qname.as_deref(), Some("www.example.test"));
        assert_eq!(r.qtype, Some(1));
        assert_eq!(
            r.answers,
            [
                Answer {
                    name: "www.example.test".into(),
                    ttl: 300,
                    data: Data::Cname("db.example.test".into())
                },
                Answer {
                    name: "db.example.test".into(),
                    ttl: 30,
                    data: Data::Addr("10.3.0.80".parse().unwrap())
                },
                Answer {
                    name: "db.example.test".into(),
                    ttl: 30,
                    data: Data::Addr("fd00::80".parse().unwrap())
                },
            ]
        );
        let v = answers_value(&r.answers);
        let Value::Array(a) = v else { panic!() };
        let Value::Map(m) = &a[0] else { panic!() };
        let keys: Vec<&str> = m.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["name", "type", "ttl", "cname"]);
    }

    #[test]
    fn tcp_messages_follow_their_length_and_must_be_whole() {
        let msg = response();
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend(&msg);
        assert_eq!(parse(&framed, true).unwrap().answers.len(), 3);
        assert!(matches!(
            parse(&framed[..framed.len() - 1], true),
            Err(Skip::Malformed(_))
        ));
    }

    #[test]
    fn queries_cut_copies_and_empty_segments_are_told_apart() {
        let mut q = Packet::new_query(7);
        q.questions.push(Question::new(
            Name::new_unchecked("a.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        assert_eq!(
            parse(&q.build_bytes_vec().unwrap(), false),
            Err(Skip::Query)
        );
        let wire = udp_v4(&response());
        // copy_range 128 on a longer packet.
        assert_eq!(transport_payload(&wire[..40]), Err(Skip::Cut));
        assert_eq!(transport_payload(&udp_v4(&[])), Err(Skip::Empty));
    }

    /// Broken messages are errors, never panics, loops or huge reservations: every
    /// truncation of a real response, counts that lie, a compression pointer to itself,
    /// and random bytes.
    #[test]
    fn malformed_messages_are_errors() {
        let msg = response();
        for n in 0..msg.len() {
            assert!(parse(&msg[..n], false).is_err(), "cut at {n}");
        }
        let mut lying = msg.clone();
        lying[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&lying, false), Err(Skip::Malformed(_))));
        // Header, then a question whose name is a pointer to itself (offset 12).
        let mut looped = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend([0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(parse(&looped, false), Err(Skip::Malformed(_))));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = parse(&bytes, len % 2 == 0);
            let _ = transport_payload(&bytes);
        }
        assert!(matches!(
            transport_payload(b"\x10 not ip"),
            Err(Skip::Malformed(_))
        ));
    }

    #[test]
    fn names_of_types_and_codes() {
        assert_eq!(&*type_name(28), "AAAA");
        assert_eq!(&*type_name(99), "TYPE99");
        assert_eq!(&*rcode_name(3), "NXDOMAIN");
    }
}
