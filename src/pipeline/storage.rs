//! Filesystem buffering (`storage.path`, input `storage.type filesystem`): records are
//! written to a chunk file as the engine accepts them, the file is deleted once every
//! output finished with the chunk, and files left by a crash are replayed at start.
//!
//! On-disk format (ours), one file per chunk, `<storage.path>/<input>/<ns>-<seq>.flb`:
//! ```text
//! "AGCHUNK1"                   8 bytes magic
//! u16 BE tag length, tag bytes
//! frames, each:  u32 BE payload length | u32 BE CRC-32 of the payload (0 when
//!                storage.checksum is off) | payload: records in Fluent Bit's msgpack
//!                event format, [[EventTime, {meta}], {body}] one after the other
//! ```
//! `storage.sync full` fsyncs after every frame; `normal` fsyncs when the chunk is
//! handed to outputs (a process crash loses nothing written; a power loss may lose the
//! chunk being filled). A truncated last frame (a crash mid-write) keeps the frames
//! before it; any other damage moves the file to `<storage.path>/quarantine/` with a log
//! line, and the frames before the damage are still delivered.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::format::{read_msgpack_record, write_msgpack_record, KeyCache};
use crate::event::{Record, Tag};

const MAGIC: &[u8; 8] = b"AGCHUNK1";

/// `storage.*` settings of `[SERVICE]`.
#[derive(Clone, Debug)]
pub struct Store {
    pub dir: PathBuf,
    pub sync_full: bool,
    pub checksum: bool,
    seq: Arc<AtomicU64>,
}

/// A chunk file being filled.
#[derive(Debug)]
pub struct ChunkFile {
    pub path: PathBuf,
    file: File,
}

/// Bounds what is in memory: chunks (or bytes) handed to outputs and not yet finished.
/// `acquire` waits while the bound is reached; the returned ack gives the amount back.
#[derive(Debug)]
pub struct Gate {
    limit: u64,
    held: AtomicU64,
    freed: tokio::sync::Notify,
}

impl Gate {
    pub fn new(limit: u64) -> Arc<Gate> {
        Arc::new(Gate {
            limit,
            held: AtomicU64::new(0),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Waits until below the limit (one acquisition may cross it), then takes `amount`.
    /// Returns what to run once the chunk is finished.
    pub async fn acquire(self: &Arc<Self>, amount: u64) -> crate::pipeline::AckFn {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.held.load(Ordering::Acquire) < self.limit {
                break;
            }
            freed.await;
        }
        self.held.fetch_add(amount, Ordering::AcqRel);
        let gate = self.clone();
        Box::new(move || {
            gate.held.fetch_sub(amount, Ordering::AcqRel);
            gate.freed.notify_waiters();
        })
    }
}

/// What replay found in one file.
pub struct Loaded {
    pub tag: Tag,
    pub records: Vec<Record>,
    /// Damage found (the file went to quarantine, or its last frame was cut short).
    pub problem: Option<String>,
}

fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Store {
    pub fn open(dir: &Path, sync_full: bool, checksum: bool) -> io::Result<Store> {
        fs::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            sync_full,
            checksum,
            seq: Arc::default(),
        })
    }

    /// A new chunk file for `input`'s records with `tag`.
    pub fn create(&self, input: &str, tag: &str) -> io::Result<ChunkFile> {
        let dir = self.dir.join(safe(input));
        fs::create_dir_all(&dir)?;
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            "{ns}-{}.flb",
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let mut head = Vec::with_capacity(10 + tag.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(tag.len().min(u16::MAX as usize) as u16).to_be_bytes());
        head.extend_from_slice(&tag.as_bytes()[..tag.len().min(u16::MAX as usize)]);
        file.write_all(&head)?;
        Ok(ChunkFile { path, file })
    }

    /// Appends one frame of records.
    pub fn append(
        &self,
        f: &mut ChunkFile,
        records: &[Record],
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        buf.clear();
        buf.extend_from_slice(&[0; 8]);
        for r in records {
            write_msgpack_record(buf, r);
        }
        let len = (buf.len() - 8) as u32;
        let crc = if self.checksum {
            crc32fast::hash(&buf[8..])
        } else {
            0
        };
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        buf[4..8].copy_from_slice(&crc.to_be_bytes());
        f.file.write_all(buf)?;
        if self.sync_full {
            f.file.sync_data()?;
        }
        Ok(())
    }

    /// The chunk goes to outputs: make it durable; returns its path.
    pub fn seal(&self, f: ChunkFile) -> io::Result<PathBuf> {
        f.file.sync_all()?;
        Ok(f.path)
    }

    /// Chunk files left by a previous run, oldest first.
    pub fn backlog(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for input in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if input.file_name() == "quarantine" || !input.path().is_dir() {
                continue;
            }
            for f in fs::read_dir(input.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|e| e == "flb") {
                    out.push(f.path());
                }
            }
        }
        out.sort_by_key(|p| p.file_name().map(|n| n.to_owned()));
        out
    }

    /// Reads a chunk file; damage quarantines it (the good frames are still returned).
    pub fn load(&self, path: &Path) -> io::Result<Loaded> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        let (tag, records, problem) = parse(&bytes, self.checksum);
        let problem = match problem {
            Some((msg, truncated_end)) if !truncated_end => {
                let q = self.dir.join("quarantine");
                fs::create_dir_all(&q)?;
                let to = q.join(path.file_name().unwrap_or_default());
                fs::rename(path, &to)?;
                Some(format!("{msg}: moved to {}", to.display()))
            }
            Some((msg, _)) => Some(msg),
            None => None,
        };
        Ok(Loaded {
            tag,
            records,
            problem,
        })
    }
}

/// (tag, records of the good frames, damage and whether it is only a cut-short end).
fn parse(bytes: &[u8], checksum: bool) -> (Tag, Vec<Record>, Option<(String, bool)>) {
    let bad = |m: &str| (Tag::from(""), Vec::new(), Some((m.to_string(), false)));
    if bytes.len() < 10 || &bytes[..8] != MAGIC {
        return bad("not a chunk file (bad magic)");
    }
    let tlen = u16::from_be_bytes([bytes[8], bytes[9]]) as usize;
    let Some(tag) = bytes.get(10..10 + tlen) else {
        return bad("truncated header");
    };
    let tag = Tag::from(String::from_utf8_lossy(tag).as_ref());
    let mut rest = &bytes[10 + tlen..];
    let mut records = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 8 {
            return (
                tag,
                records,
                Some(("the last frame is cut short".into(), true)),
            );
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(8..8 + len) else {
            return (
                tag,
                records,
                Some(("the last frame is cut short".into(), true)),
            );
        };
        if checksum && crc != 0 && crc32fast::hash(payload) != crc {
            return (
                tag,
                records,
                Some(("a frame fails its checksum".into(), false)),
            );
        }
        let (mut pos, mut frame, mut keys) = (0, Vec::new(), KeyCache::default());
        while pos < payload.len() {
            match read_msgpack_record(payload, &mut pos, &mut keys) {
                Ok(r) => frame.push(r),
                Err(e) => {
                    return (
                        tag,
                        records,
                        Some((format!("a frame does not decode ({e})"), false)),
                    )
                }
            }
        }
        records.extend(frame);
        rest = &rest[8 + len..];
    }
    (tag, records, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Value};

    fn recs(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| Record::new(EventTime::new(1, 0), vec![(Arc::from("i"), Value::UInt(i))]))
            .collect()
    }

    #[test]
    fn write_seal_load_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), true, true).unwrap();
        let mut f = s.create("dummy.0", "app.x").unwrap();
        let mut buf = Vec::new();
        s.append(&mut f, &recs(3), &mut buf).unwrap();
        s.append(&mut f, &recs(2), &mut buf).unwrap();
        let path = s.seal(f).unwrap();
        assert_eq!(s.backlog(), vec![path.clone()]);
        let l = s.load(&path).unwrap();
        assert_eq!((&*l.tag, l.records.len(), l.problem), ("app.x", 5, None));

        // A cut-short last frame keeps the good frames and the file stays.
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let l = s.load(&path).unwrap();
        assert_eq!(l.records.len(), 3);
        assert_eq!(l.problem.as_deref(), Some("the last frame is cut short"));
        assert!(path.exists());

        // A flipped byte fails the checksum: quarantined, the frames before it kept.
        let mut bad = bytes.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0xff;
        fs::write(&path, &bad).unwrap();
        let l = s.load(&path).unwrap();
        assert_eq!(l.records.len(), 3);
        assert!(l.problem.unwrap().contains("fails its checksum: moved to"));
        assert!(!path.exists());
        assert_eq!(
            fs::read_dir(dir.path().join("quarantine")).unwrap().count(),
            1
        );
        assert!(s.backlog().is_empty(), "quarantine is not replayed");
    }
}
