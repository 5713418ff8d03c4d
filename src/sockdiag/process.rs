//! Which process holds a socket: socket inode → (pid, comm, cmdline), from the
//! `socket:[inode]` links of `/proc/<pid>/fd/*`. A scan walks every process' fds, so it
//! runs only for inodes not already known, at most once per `min_rescan`, and keeps only
//! the inodes asked for (at most `max` of them).

use std::collections::HashSet;
use std::hash::BuildHasher;

use foldhash::{HashMap, HashMapExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A process as flow logs name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// `/proc/<pid>/comm` (the kernel's 15-character task name).
    pub name: Arc<str>,
    /// `/proc/<pid>/cmdline` after argv[0], space-separated ("" when none).
    pub args: Arc<str>,
}

/// Scan counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Walks of /proc.
    pub scans: u64,
    /// Lookups of an inode no process was found for (after a scan, or while scans were
    /// rate-limited).
    pub misses: u64,
}

pub struct ProcessIndex {
    proc_root: PathBuf,
    by_inode: HashMap<u32, Arc<Process>>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
    max: usize,
    pub stats: IndexStats,
}

impl ProcessIndex {
    pub fn new(min_rescan: Duration, max: usize) -> ProcessIndex {
        ProcessIndex {
            proc_root: PathBuf::from("/proc"),
            by_inode: HashMap::new(),
            last_scan: None,
            min_rescan,
            max,
            stats: IndexStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_inode.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_inode.is_empty()
    }

    /// Resolves `inodes` (the sockets of a dump): known ones from the cache; if any is
    /// unknown and the last scan is at least `min_rescan` old, /proc is scanned again.
    /// Afterwards the cache holds exactly the resolved ones of `inodes` (sockets gone
    /// are forgotten).
    pub fn refresh<S: BuildHasher>(&mut self, inodes: &HashSet<u32, S>, now: Instant) {
        let unknown = inodes
            .iter()
            .any(|i| *i != 0 && !self.by_inode.contains_key(i));
        let due = self
            .last_scan
            .is_none_or(|t| now.duration_since(t) >= self.min_rescan);
        if unknown && due {
            self.last_scan = Some(now);
            self.stats.scans += 1;
            self.scan(inodes);
        }
        self.by_inode.retain(|i, _| inodes.contains(i));
    }

    /// The process holding the socket `inode`, if known (not counted as a miss).
    pub fn peek(&self, inode: u32) -> Option<Arc<Process>> {
        self.by_inode.get(&inode).cloned()
    }

    /// The process holding the socket `inode`, if known.
    pub fn get(&mut self, inode: u32) -> Option<Arc<Process>> {
        let p = self.by_inode.get(&inode).cloned();
        if p.is_none() {
            self.stats.misses += 1;
        }
        p
    }

    fn scan<S: BuildHasher>(&mut self, wanted: &HashSet<u32, S>) {
        let Ok(procs) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        let mut found: Vec<(u32, u32)> = Vec::new();
        let mut link = PathBuf::new();
        for p in procs.flatten() {
            let name = p.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let mut dir = p.path();
            dir.push("fd");
            let Ok(fds) = std::fs::read_dir(&dir) else {
                continue; // gone, or not ours to read
            };
            for fd in fds.flatten() {
                link.clone_from(&dir);
                link.push(fd.file_name());
                let Ok(target) = std::fs::read_link(&link) else {
                    continue;
                };
                let t = target.as_os_str().as_encoded_bytes();
                let Some(ino) = t
                    .strip_prefix(b"socket:[")
                    .and_then(|t| t.strip_suffix(b"]"))
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| t.parse::<u32>().ok())
                else {
                    continue;
                };
                if wanted.contains(&ino) && !self.by_inode.contains_key(&ino) {
                    found.push((ino, pid));
                }
            }
        }
        // A socket shared by several processes (fork) goes to the first pid listed (the
        // parent, usually). One read of comm/cmdline per pid.
        let mut procs: HashMap<u32, Option<Arc<Process>>> = HashMap::new();
        for (ino, pid) in found {
            if self.by_inode.len() >= self.max || self.by_inode.contains_key(&ino) {
                continue;
            }
            let p = procs
                .entry(pid)
                .or_insert_with(|| read_process(&self.proc_root, pid).map(Arc::new));
            if let Some(p) = p {
                self.by_inode.insert(ino, p.clone());
            }
        }
    }
}

fn read_process(root: &std::path::Path, pid: u32) -> Option<Process> {
    let dir = root.join(pid.to_string());
    let comm = std::fs::read(dir.join("comm")).ok()?;
    let name = String::from_utf8_lossy(comm.strip_suffix(b"\n").unwrap_or(&comm)).into_owned();
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(Process {
        pid,
        name: Arc::from(name),
        args: Arc::from(args.join(" ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockdiag::Reader;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Command, Stdio};

    /// A child process (python3) connects to our listener: the dump finds its socket and
    /// the index names the child by its pid, comm and arguments; our own end is ours.
    #[test]
    fn a_child_processes_socket_resolves_to_its_pid_comm_and_args() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port().to_string();
        let Ok(mut child) = Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); time.sleep(30)",
                &port,
            ])
            .stdin(Stdio::null())
            .spawn()
        else {
            eprintln!("skipped: no python3");
            return;
        };
        let (accepted, peer) = server.accept().unwrap();
        let mut socks = Vec::new();
        Reader::open(None)
            .unwrap()
            .dump_all(false, &mut socks)
            .unwrap();
        let client = socks
            .iter()
            .find(|s| s.local == peer && s.proto == 6)
            .expect("the child's socket");
        let ours = socks
            .iter()
            .find(|s| s.local == accepted.local_addr().unwrap() && s.remote == peer)
            .unwrap();
        let mut idx = ProcessIndex::new(Duration::from_secs(60), 1000);
        let wanted: HashSet<u32> = [client.inode, ours.inode].into();
        let t0 = Instant::now();
        idx.refresh(&wanted, t0);
        let p = idx.get(client.inode).expect("resolved");
        assert_eq!(p.pid, child.id());
        assert_eq!(&*p.name, "python3");
        assert!(p.args.starts_with("-c import socket"), "{}", p.args);
        assert!(p.args.ends_with(&format!(" {port}")), "{}", p.args);
        let me = idx.get(ours.inode).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(
            idx.stats,
            IndexStats {
                scans: 1,
                misses: 0
            }
        );
        // An unknown inode within min_rescan: no new scan, a miss.
        let c2 = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let _ = c2;
        let wanted2: HashSet<u32> = [client.inode, 999_999_999].into();
        idx.refresh(&wanted2, t0 + Duration::from_secs(1));
        assert!(idx.get(999_999_999).is_none());
        assert_eq!(
            idx.stats,
            IndexStats {
                scans: 1,
                misses: 1
            }
        );
        assert_eq!(idx.len(), 1, "sockets not in the dump are forgotten");
        // Past min_rescan: scanned again (and still not found).
        idx.refresh(&wanted2, t0 + Duration::from_secs(61));
        assert_eq!(idx.stats.scans, 2);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn the_index_holds_at_most_max_inodes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let b = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut socks = Vec::new();
        Reader::open(None)
            .unwrap()
            .dump_all(false, &mut socks)
            .unwrap();
        let wanted: HashSet<u32> = socks
            .iter()
            .filter(|s| [a.local_addr().unwrap(), b.local_addr().unwrap()].contains(&s.local))
            .map(|s| s.inode)
            .collect();
        assert_eq!(wanted.len(), 2);
        let mut idx = ProcessIndex::new(Duration::ZERO, 1);
        idx.refresh(&wanted, Instant::now());
        assert_eq!(idx.len(), 1);
    }
}
