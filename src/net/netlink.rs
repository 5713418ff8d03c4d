//! Netlink sockets' shared chores: entering another network namespace (a netlink socket
//! belongs to the namespace it is created in) and a receive timeout, so that a blocking
//! `recv` returns. Used by the conntrack and nflog inputs and by `sockdiag`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// Moves the calling thread into the network namespace at `path` (e.g.
/// `/var/run/netns/x`). Sockets created afterwards belong to that namespace.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: setns on a valid fd; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets a blocking `recv` on `sock` return after `every` (shutdown, or a dump that never
/// ends, is noticed).
pub fn set_recv_timeout(sock: &impl AsRawFd, every: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: every.as_secs() as libc::time_t,
        tv_usec: every.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
