//! Local sockets as the kernel lists them (`NETLINK_SOCK_DIAG`, inet_diag): TCP and UDP,
//! IPv4 and IPv6, each with its 5-tuple, inode and, for TCP, the `tcp_info` fields flow
//! logs report; and the processes owning them ([`process`]: inode → pid, comm, cmdline
//! through `/proc/*/fd`). Shared machinery: it knows no pipeline and no plugin.
//!
//! The netlink framing, request, response header and socket id are
//! `netlink-packet-sock-diag`'s (the rust-netlink family of our conntrack decoder). Its
//! `tcp_info` is kept as the kernel's bytes (the crate's default: its `rich_nlas` struct
//! rejects a `tcp_info` shorter than the newest layout, i.e. every socket of an older
//! kernel) and read through libc's `struct tcp_info`: the kernel only ever appends to it,
//! so the prefix the kernel sent is copied and the rest stays zero.

pub mod process;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{
    nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket as NlSocket};

/// The `tcp_info` fields flow logs carry, as the kernel reports them. Which Calico
/// Enterprise field each feeds (Calico reads the same kernel fields from eBPF's
/// `bpf_tcp_sock`, felix/bpf-gpl tcp stats → collector `TcpStatsData`):
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// `tcpi_rtt`: smoothed RTT (srtt), µs → `tcp_{mean,max}_smooth_rtt`.
    pub srtt_us: u32,
    /// `tcpi_min_rtt`: windowed minimum RTT, µs → `tcp_{mean,max}_min_rtt`.
    pub min_rtt_us: u32,
    /// `tcpi_snd_mss`: the sender's MSS (`mss_cache`) → `tcp_{mean,min}_mss`.
    pub snd_mss: u32,
    /// `tcpi_snd_cwnd`: congestion window, segments →
    /// `tcp_{mean,min}_send_congestion_window`.
    pub snd_cwnd: u32,
    /// `tcpi_total_retrans`: segments retransmitted over the connection's life
    /// (counter) → `tcp_total_retransmissions` (summed deltas).
    pub total_retrans: u32,
    /// `tcpi_lost`: segments currently presumed lost (`lost_out`) → `tcp_lost_packets`
    /// (summed deltas, as Calico's `LostOut`).
    pub lost: u32,
    /// `tcpi_retransmits`: unrecovered RTO timeouts (`icsk_retransmits`, which Calico's
    /// `UnrecoveredRTO` reads) → `tcp_unrecovered_to` (summed deltas).
    pub unrecovered_rto: u32,
}

impl TcpStats {
    /// Reads the fields from an `INET_DIAG_INFO` attribute (`struct tcp_info`, any
    /// kernel's length).
    pub fn from_tcp_info(bytes: &[u8]) -> TcpStats {
        // SAFETY: tcp_info is plain integers: all-zero is a valid value, and the copy
        // writes at most its size from a slice at least that long.
        let info: libc::tcp_info = unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let n = bytes.len().min(std::mem::size_of::<libc::tcp_info>());
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                &mut info as *mut libc::tcp_info as *mut u8,
                n,
            );
            info
        };
        TcpStats {
            srtt_us: info.tcpi_rtt,
            min_rtt_us: info.tcpi_min_rtt,
            snd_mss: info.tcpi_snd_mss,
            snd_cwnd: info.tcpi_snd_cwnd,
            total_retrans: info.tcpi_total_retrans,
            lost: info.tcpi_lost,
            unrecovered_rto: info.tcpi_retransmits as u32,
        }
    }
}

/// One socket of the dump. Addresses are canonical: an IPv4-mapped IPv6 address (a
/// dual-stack socket carrying IPv4) is the IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub proto: u8,
    pub local: SocketAddr,
    /// Unspecified address and port 0 for an unconnected UDP socket.
    pub remote: SocketAddr,
    /// 0 for sockets no process holds (e.g. an accepted connection not yet `accept()`ed).
    pub inode: u32,
    /// The kernel's TCP state (`TCP_ESTABLISHED` = 1, …; UDP: 1 connected, 7 not).
    pub state: u8,
    /// TCP sockets, when asked for.
    pub tcp: Option<TcpStats>,
}

/// TCP states dumped: all but LISTEN (no peer), TIME_WAIT and SYN_RECV (mini sockets
/// without an inode or `tcp_info`).
fn tcp_states() -> StateFlags {
    StateFlags::all() - StateFlags::LISTEN - StateFlags::TIME_WAIT - StateFlags::SYN_RECV
}

/// Receive buffer of one `recv` (a dump datagram holds many sockets).
const RECV_BUF: usize = 64 * 1024;

/// A `NETLINK_SOCK_DIAG` socket of one network namespace.
pub struct Reader {
    sock: NlSocket,
    seq: u32,
    buf: Vec<u8>,
    req: Vec<u8>,
    /// Responses that did not decode (skipped), since the reader opened.
    pub undecodable: u64,
}

impl Reader {
    /// Opens a reader in this network namespace, or in the one at `netns` (a netlink
    /// socket stays in the namespace it was created in: a short-lived thread enters it,
    /// creates the socket and ends).
    pub fn open(netns: Option<&Path>) -> io::Result<Reader> {
        let sock = match netns {
            None => Self::socket()?,
            Some(p) => {
                let p: PathBuf = p.to_path_buf();
                std::thread::spawn(move || {
                    crate::net::netlink::enter_netns(&p).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot enter network namespace {}: {e}", p.display()),
                        )
                    })?;
                    Self::socket()
                })
                .join()
                .map_err(|_| io::Error::other("sock_diag netns thread panicked"))??
            }
        };
        Ok(Reader {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
            req: Vec::new(),
            undecodable: 0,
        })
    }

    fn socket() -> io::Result<NlSocket> {
        let mut sock = NlSocket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        // A dump never blocks the caller forever.
        crate::net::netlink::set_recv_timeout(&sock, DUMP_TIMEOUT)?;
        Ok(sock)
    }

    /// Appends every TCP and UDP socket (IPv4 and IPv6) to `out`; with `tcp_info`, TCP
    /// sockets carry their [`TcpStats`].
    pub fn dump_all(&mut self, tcp_info: bool, out: &mut Vec<Socket>) -> io::Result<()> {
        for family in [AF_INET, AF_INET6] {
            self.dump(family, IPPROTO_TCP, tcp_info, out)?;
            self.dump(family, IPPROTO_UDP, false, out)?;
        }
        Ok(())
    }

    /// Appends the sockets of one family and protocol to `out`.
    pub fn dump(
        &mut self,
        family: u8,
        proto: u8,
        tcp_info: bool,
        out: &mut Vec<Socket>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: proto,
                extensions: if tcp_info && proto == IPPROTO_TCP {
                    ExtensionFlags::INFO
                } else {
                    ExtensionFlags::empty()
                },
                states: if proto == IPPROTO_TCP {
                    tcp_states()
                } else {
                    StateFlags::all()
                },
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            })
            .into(),
        );
        msg.finalize();
        self.req.clear();
        self.req.resize(msg.buffer_len(), 0);
        msg.serialize(&mut self.req);
        self.sock.send(&self.req, 0)?;
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            let n = self.sock.recv(&mut self.buf, 0)?;
            let mut off = 0;
            while off + 4 <= n {
                let data = &self.buf[off..n];
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                if len < 16 || len > data.len() {
                    self.undecodable += 1;
                    break;
                }
                off += (len + 3) & !3;
                let m = match NetlinkMessage::<SockDiagMessage>::deserialize(&data[..len]) {
                    Ok(m) => m,
                    Err(_) => {
                        self.undecodable += 1;
                        continue;
                    }
                };
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(match e.code {
                            Some(c) => io::Error::from_raw_os_error(-c.get()),
                            None => io::Error::other("sock_diag: unexpected ACK"),
                        })
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        out.push(socket(proto, &r));
                    }
                    _ => {}
                }
            }
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    }
}

fn socket(proto: u8, r: &InetResponse) -> Socket {
    let id = &r.header.socket_id;
    let tcp = r.nlas.iter().find_map(|n| match n {
        Nla::TcpInfo(bytes) => Some(TcpStats::from_tcp_info(bytes)),
        _ => None,
    });
    Socket {
        proto,
        local: SocketAddr::new(canonical(id.source_address), id.source_port),
        remote: SocketAddr::new(canonical(id.destination_address), id.destination_port),
        inode: r.header.inode,
        state: r.header.state,
        tcp,
    }
}

/// How long a [`Reader`] waits for a dump before giving up.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;

    fn inode_of(fd: &impl AsRawFd) -> u32 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        let s = link.to_string_lossy();
        s.strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A real connection on loopback is in the dump with both ends' tuples and inodes,
    /// and its tcp_info agrees with getsockopt(TCP_INFO) on the same socket.
    #[test]
    fn a_real_tcp_connection_is_dumped_with_its_inode_and_tcp_info() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = server.accept().unwrap();
        client.write_all(&[7u8; 10_000]).unwrap();
        let mut buf = vec![0; 10_000];
        accepted.read_exact(&mut buf).unwrap();
        let mut r = Reader::open(None).unwrap();
        let mut socks = Vec::new();
        r.dump_all(true, &mut socks).unwrap();
        let c = socks
            .iter()
            .find(|s| s.local == client.local_addr().unwrap() && s.proto == 6)
            .unwrap_or_else(|| panic!("client not in {socks:#?}"));
        assert_eq!(c.remote, server.local_addr().unwrap());
        assert_eq!(c.inode, inode_of(&client));
        assert_eq!(c.state, 1, "established");
        let a = socks
            .iter()
            .find(|s| {
                s.local == accepted.local_addr().unwrap()
                    && s.remote == client.local_addr().unwrap()
            })
            .unwrap();
        assert_eq!(a.inode, inode_of(&accepted));
        assert!(
            !socks
                .iter()
                .any(|s| s.local == server.local_addr().unwrap() && s.remote.port() == 0),
            "listeners are left out"
        );
        let tcp = c.tcp.expect("tcp_info asked for");
        // SAFETY: getsockopt(TCP_INFO) into a zeroed tcp_info of the size we pass.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                client.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut libc::tcp_info as *mut libc::c_void,
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(tcp.snd_mss, info.tcpi_snd_mss);
        assert!(
            tcp.snd_mss > 0 && tcp.snd_cwnd > 0 && tcp.srtt_us > 0,
            "{tcp:?}"
        );
        assert_eq!(tcp.total_retrans, info.tcpi_total_retrans);
        assert!(tcp.min_rtt_us <= tcp.srtt_us.max(tcp.min_rtt_us));
        let mut no_info = Vec::new();
        r.dump(AF_INET, IPPROTO_TCP, false, &mut no_info).unwrap();
        assert!(no_info.iter().all(|s| s.tcp.is_none()));
    }

    /// IPv6 and UDP: a connected UDP socket has its peer, an unbound one none; an IPv6
    /// socket is found by its IPv6 tuple.
    #[test]
    fn udp_and_ipv6_sockets_are_dumped() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let v6 = TcpListener::bind("[::1]:0");
        let mut socks = Vec::new();
        Reader::open(None)
            .unwrap()
            .dump_all(false, &mut socks)
            .unwrap();
        let sa = socks
            .iter()
            .find(|s| s.proto == 17 && s.local == a.local_addr().unwrap())
            .unwrap();
        assert_eq!(sa.remote.port(), 0);
        assert_eq!(sa.inode, inode_of(&a));
        let sb = socks
            .iter()
            .find(|s| s.proto == 17 && s.local == b.local_addr().unwrap())
            .unwrap();
        assert_eq!(sb.remote, a.local_addr().unwrap());
        if let Ok(l) = v6 {
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let mut socks = Vec::new();
            Reader::open(None)
                .unwrap()
                .dump_all(false, &mut socks)
                .unwrap();
            let s = socks
                .iter()
                .find(|s| s.local == c.local_addr().unwrap())
                .unwrap();
            assert_eq!(s.inode, inode_of(&c));
            assert!(s.local.is_ipv6());
        }
    }

    #[test]
    fn a_short_tcp_info_reads_as_zeros_beyond_its_end() {
        let mut bytes = vec![0u8; 104]; // up to tcpi_total_retrans (a 3.x kernel's size)
        bytes[2] = 3; // tcpi_retransmits
        bytes[16..20].copy_from_slice(&1448u32.to_ne_bytes()); // tcpi_snd_mss
        bytes[68..72].copy_from_slice(&50_000u32.to_ne_bytes()); // tcpi_rtt
        bytes[80..84].copy_from_slice(&10u32.to_ne_bytes()); // tcpi_snd_cwnd
        bytes[100..104].copy_from_slice(&4u32.to_ne_bytes()); // tcpi_total_retrans
        let t = TcpStats::from_tcp_info(&bytes);
        assert_eq!(
            t,
            TcpStats {
                srtt_us: 50_000,
                min_rtt_us: 0,
                snd_mss: 1448,
                snd_cwnd: 10,
                total_retrans: 4,
                lost: 0,
                unrecovered_rto: 3,
            }
        );
    }

    /// What a dump costs per socket (and a /proc scan per fd), measured:
    /// `cargo test --release --lib dump_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn dump_cost() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut keep = Vec::new();
        for _ in 0..4000 {
            keep.push(TcpStream::connect(l.local_addr().unwrap()).unwrap());
            keep.push(l.accept().unwrap().0);
        }
        let mut r = Reader::open(None).unwrap();
        let mut socks = Vec::new();
        let t = std::time::Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            socks.clear();
            r.dump_all(true, &mut socks).unwrap();
        }
        let per = t.elapsed() / rounds;
        eprintln!(
            "dump of {} sockets with tcp_info: {per:?} ({:?} per socket)",
            socks.len(),
            per / socks.len() as u32
        );
        let inodes: std::collections::HashSet<u32> = socks.iter().map(|s| s.inode).collect();
        let t = std::time::Instant::now();
        let mut idx = process::ProcessIndex::new(Duration::ZERO, usize::MAX);
        idx.refresh(&inodes, std::time::Instant::now());
        eprintln!(
            "/proc scan resolving {} inodes: {:?}",
            idx.len(),
            t.elapsed()
        );
    }

    #[test]
    fn a_missing_namespace_is_an_error_naming_it() {
        let e = Reader::open(Some(Path::new("/var/run/netns/no-such-ns")))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no-such-ns"), "{e}");
    }
}
