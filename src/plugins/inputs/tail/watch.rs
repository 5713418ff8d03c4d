//! What wakes tail up when a file changes: inotify, or nothing (polling) when
//! `inotify_watcher false` or when inotify is not available.
//! Fluent Bit: plugins/in_tail/tail_fs_inotify.c, tail_fs_stat.c

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What an inotify event means to tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The file (by tail's id) has new bytes.
    Modified(u64),
    /// Its links, name or attributes changed: check for rotation or deletion.
    Changed(u64),
    /// A new entry in a watched directory: look for new files.
    NewEntry,
    /// An entry of a watched directory was renamed (a rotation, maybe of a file that
    /// was never seen at its first name).
    Renamed { from: PathBuf, to: PathBuf },
    /// The kernel dropped events: check everything.
    Overflow,
}

#[derive(Clone)]
enum Target {
    File(u64),
    Dir(PathBuf),
}

/// Renames whose second half has not arrived yet, by cookie; a rename out of every
/// watched directory never completes, so only the latest few are kept.
const PENDING_MOVES: usize = 64;

/// The inotify instance and what each watch is for. Closing it (drop) removes every
/// watch.
pub struct InotifyWatcher {
    fd: AsyncFd<Inotify>,
    targets: HashMap<WatchDescriptor, Target>,
    files: HashMap<u64, WatchDescriptor>,
    moves: Vec<(u32, PathBuf)>,
    buf: Vec<u8>,
}

impl InotifyWatcher {
    pub fn new() -> io::Result<InotifyWatcher> {
        let inotify = Inotify::init()?;
        // SAFETY: `Inotify` owns its descriptor and closes it only when dropped, which
        // happens with the `AsyncFd`; `as_raw_fd` always returns that descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(InotifyWatcher {
            fd,
            targets: HashMap::new(),
            files: HashMap::new(),
            moves: Vec::new(),
            buf: vec![0; 64 * 1024],
        })
    }

    /// Watches the file at `path` (following symlinks) for tail's file `id`.
    pub fn watch_file(&mut self, path: &Path, id: u64) -> io::Result<()> {
        let mask =
            WatchMask::MODIFY | WatchMask::ATTRIB | WatchMask::MOVE_SELF | WatchMask::DELETE_SELF;
        let wd = self.fd.get_mut().watches().add(path, mask)?;
        self.targets.insert(wd.clone(), Target::File(id));
        self.files.insert(id, wd);
        Ok(())
    }

    pub fn unwatch_file(&mut self, id: u64) {
        if let Some(wd) = self.files.remove(&id) {
            self.targets.remove(&wd);
            // Fails when the kernel already dropped it (file deleted): nothing to do.
            let _ = self.fd.get_mut().watches().remove(wd);
        }
    }

    /// Watches a directory for new entries (created or renamed into it).
    pub fn watch_dir(&mut self, path: &Path) -> io::Result<()> {
        let wd = self.fd.get_mut().watches().add(
            path,
            WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::MOVED_FROM,
        )?;
        self.targets.insert(wd, Target::Dir(path.to_path_buf()));
        Ok(())
    }

    /// Reads the events queued now, without waiting.
    pub fn try_events(&mut self, out: &mut Vec<Event>) -> io::Result<()> {
        loop {
            let events = match self.fd.get_mut().read_events(&mut self.buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            for e in events {
                if e.mask.contains(EventMask::Q_OVERFLOW) {
                    out.push(Event::Overflow);
                    continue;
                }
                if e.mask.contains(EventMask::IGNORED) {
                    if let Some(Target::File(id)) = self.targets.remove(&e.wd) {
                        self.files.remove(&id);
                    }
                    continue;
                }
                match self.targets.get(&e.wd) {
                    Some(Target::File(id)) if e.mask.contains(EventMask::MODIFY) => {
                        out.push(Event::Modified(*id))
                    }
                    Some(Target::File(id)) => out.push(Event::Changed(*id)),
                    Some(Target::Dir(dir)) => {
                        let path = e.name.map(|n| dir.join(n));
                        match path {
                            Some(from) if e.mask.contains(EventMask::MOVED_FROM) => {
                                if self.moves.len() == PENDING_MOVES {
                                    self.moves.remove(0);
                                }
                                self.moves.push((e.cookie, from));
                            }
                            Some(to) if e.mask.contains(EventMask::MOVED_TO) => {
                                let from = self.moves.iter().position(|(c, _)| *c == e.cookie);
                                if let Some(i) = from {
                                    let from = self.moves.remove(i).1;
                                    out.push(Event::Renamed { from, to });
                                }
                                out.push(Event::NewEntry);
                            }
                            _ => out.push(Event::NewEntry),
                        }
                    }
                    None => {}
                }
            }
        }
    }

    /// Waits until the inotify descriptor is readable, then reads what is queued.
    /// Readiness is cleared before reading up to `WouldBlock`, so an event that
    /// arrives meanwhile wakes the next call (tokio's registration is edge-triggered).
    pub async fn events(&mut self, out: &mut Vec<Event>) -> io::Result<()> {
        self.fd.readable_mut().await?.clear_ready();
        self.try_events(out)
    }
}
