//! ctnetlink sockets: the event subscription and the dump socket, opened in a chosen
//! network namespace, with the receive-buffer and reliability options that decide
//! whether events are lost under load (measurements in shared/spec/flows.md §1.5).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::decode::{decode_datagram, Flow, Message};

/// Multicast groups (`NFNLGRP_CONNTRACK_*`).
pub const GROUP_NEW: u32 = 1;
pub const GROUP_UPDATE: u32 = 2;
pub const GROUP_DESTROY: u32 = 3;

/// Receive buffer for one `recv`: dump datagrams hold many messages.
pub const RECV_BUF: usize = 256 * 1024;

pub use crate::net::netlink::{enter_netns, set_recv_timeout};

fn setsockopt_int(sock: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a plain int option on a socket we own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sizes the receive buffer with `SO_RCVBUFFORCE` (not capped by `rmem_max`; needs
/// CAP_NET_ADMIN). Returns the size the kernel reports (it doubles the request).
pub fn set_rcvbuf(sock: &Socket, bytes: usize) -> io::Result<usize> {
    let want = i32::try_from(bytes).unwrap_or(i32::MAX);
    setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want)?;
    sock.get_rx_buf_sz()
}

/// A socket subscribed to `groups`. Reliable mode (`NETLINK_BROADCAST_ERROR` +
/// `NETLINK_NO_ENOBUFS`) makes the kernel keep DESTROY events it could not deliver
/// and deliver them again, as ulogd's `reliable=1` does.
pub fn event_socket(groups: &[u32], rcvbuf: usize, reliable: bool) -> io::Result<(Socket, usize)> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    for g in groups {
        sock.add_membership(*g)?;
    }
    let got = set_rcvbuf(&sock, rcvbuf)?;
    if reliable {
        sock.set_broadcast_error(true)?;
        sock.set_no_enobufs(true)?;
    }
    set_recv_timeout(&sock, Duration::from_millis(200))?;
    Ok((sock, got))
}

/// A socket for dump requests.
pub fn dump_socket(rcvbuf: usize) -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    set_rcvbuf(&sock, rcvbuf)?;
    set_recv_timeout(&sock, Duration::from_secs(5))?;
    Ok(sock)
}

/// Dumps the whole table (all families) into `out`. Never `GET_CTRZERO`: that would
/// zero the kernel's counters under every other consumer.
pub fn dump(sock: &Socket, seq: u32, buf: &mut Vec<u8>, out: &mut Vec<Flow>) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut req = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            ConntrackMessage::Get(vec![]),
        )),
    );
    req.finalize();
    let mut bytes = vec![0; req.buffer_len()];
    req.serialize(&mut bytes);
    sock.send(&bytes, 0)?;
    let mut msgs = Vec::new();
    loop {
        buf.clear();
        buf.reserve(RECV_BUF);
        let n = sock.recv(buf, 0)?;
        msgs.clear();
        decode_datagram(&buf[..n], true, &mut msgs)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        for m in msgs.drain(..) {
            match m {
                Message::Flow(_, f) => out.push(f),
                Message::Done => return Ok(()),
                Message::Error(code) => return Err(io::Error::from_raw_os_error(-code)),
                Message::Other => {}
            }
        }
    }
}

/// Whether the process has CAP_NET_ADMIN (bit 12 of CapEff).
pub fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 12) != 0)
}
