//! The offsets db: where each file was read up to *and delivered*, kept across
//! restarts. Fluent Bit keeps it in SQLite (plugins/in_tail/tail_db.c); agent uses its
//! own small text file, replaced atomically, so it needs no SQLite library:
//!
//! ```text
//! agent-tail-db 1
//! <inode> <offset> <fingerprint length> <fingerprint hash, 16 hex> <file name>
//! ...
//! end <number of rows> <FNV-1a 64 of every byte before this line, 16 hex>
//! ```
//!
//! Names escape `\` as `\\`, newline as `\n` and carriage return as `\r`. A save
//! writes `<db>.tmp`, `fsync`s it (`db.sync normal`, the default), renames it over the
//! db and, with `db.sync full` or `extra`, `fsync`s the directory. A crash leaves
//! either the old or the new db, never a mix; the checksum line catches a file damaged
//! otherwise (`db.sync off` and a power cut), which is refused at start rather than
//! silently read as "no offsets".
//!
//! An offset is saved only once every output is done with the lines before it, so a
//! restart re-reads what was in flight (at-least-once) and never skips a line.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::config::DbConfig;
use super::file::{fnv1a, Fingerprint};
use crate::plugins::inputs::state_file::replace_atomically;

const MAGIC: &str = "agent-tail-db 1";

/// Most bytes a db may hold (a row is about a hundred bytes: millions of files). A db
/// path that is not a regular file (`/dev/zero`, a FIFO) is refused: reading it would
/// never end, and replacing it on save would replace a device.
const MAX_DB_FILE: u64 = 1 << 30;

/// One file's saved state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub ino: u64,
    /// Every line before this offset was delivered.
    pub offset: u64,
    pub fingerprint: Fingerprint,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is a Fluent Bit SQLite db, which agent does not read: point 'db' to a new file (files are then read as if new)")]
    Sqlite { path: PathBuf },
    #[error("{path} is damaged ({why}): move it away to start without saved offsets")]
    Damaged { path: PathBuf, why: String },
    #[error("{path} is locked by another process (db.locking on)")]
    Locked { path: PathBuf },
}

/// An open db: its settings and, with `db.locking`, the lock it holds until dropped.
#[derive(Debug)]
pub struct Db {
    config: DbConfig,
    tmp: PathBuf,
    /// The exclusive `flock` on `<db>.lock` (`db.locking on`); released when dropped.
    _lock: Option<File>,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Db {
    /// Opens (and with `db.locking`, locks) the db and reads its rows.
    pub fn open(config: DbConfig) -> Result<(Db, Vec<Row>), DbError> {
        let lock = if config.locking {
            let path = with_suffix(&config.path, ".lock");
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|source| DbError::Io {
                    what: "create",
                    path: path.clone(),
                    source,
                })?;
            // SAFETY: flock(2) on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                return Err(DbError::Locked { path });
            }
            Some(f)
        } else {
            None
        };
        let rows = match crate::config::read_regular_file(&config.path, MAX_DB_FILE) {
            Ok(bytes) => decode(&bytes).map_err(|why| {
                if bytes.starts_with(b"SQLite format 3\0") {
                    DbError::Sqlite {
                        path: config.path.clone(),
                    }
                } else {
                    DbError::Damaged {
                        path: config.path.clone(),
                        why,
                    }
                }
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(DbError::Io {
                    what: "read",
                    path: config.path.clone(),
                    source,
                })
            }
        };
        // Saves go through this file: it must be creatable where the db is, or offsets
        // would be lost at every save (a db in a missing directory ran without them).
        let tmp = with_suffix(&config.path, ".tmp");
        File::create(&tmp).map_err(|source| DbError::Io {
            what: "create",
            path: tmp.clone(),
            source,
        })?;
        let _ = fs::remove_file(&tmp);
        Ok((
            Db {
                config,
                tmp,
                _lock: lock,
            },
            rows,
        ))
    }

    pub fn compare_filename(&self) -> bool {
        self.config.compare_filename
    }

    /// Replaces the db with `rows`, atomically.
    pub fn save(&self, rows: &[Row]) -> Result<(), DbError> {
        replace_atomically(
            &self.config.path,
            &self.tmp,
            &encode(rows),
            self.config.sync,
        )
        .map_err(|(what, path, source)| DbError::Io { what, path, source })
    }
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => return Err(format!("bad escape \\{other:?} in a name")),
        }
    }
    Ok(out)
}

pub fn encode(rows: &[Row]) -> Vec<u8> {
    let mut out = format!("{MAGIC}\n");
    for r in rows {
        out.push_str(&format!(
            "{} {} {} {:016x} {}\n",
            r.ino,
            r.offset,
            r.fingerprint.len,
            r.fingerprint.hash,
            escape(&r.name)
        ));
    }
    let sum = fnv1a(out.as_bytes());
    out.push_str(&format!("end {} {sum:016x}\n", rows.len()));
    out.into_bytes()
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Row>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let body_end = text
        .strip_suffix('\n')
        .and_then(|t| t.rfind('\n'))
        .map(|i| i + 1)
        .ok_or("no end line")?;
    let (body, trailer) = text.split_at(body_end);
    let mut t = trailer.trim_end_matches('\n').split(' ');
    let (Some("end"), Some(n), Some(sum), None) = (t.next(), t.next(), t.next(), t.next()) else {
        return Err("no end line".into());
    };
    if u64::from_str_radix(sum, 16).ok() != Some(fnv1a(body.as_bytes())) {
        return Err("checksum mismatch".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("first line is not '{MAGIC}'"));
    }
    let rows = lines
        .map(|line| {
            let mut f = line.splitn(5, ' ');
            let mut num = |what| {
                f.next()
                    .ok_or_else(|| format!("row without {what}"))
                    .map(str::to_owned)
            };
            let ino = num("inode")?;
            let offset = num("offset")?;
            let fp_len = num("fingerprint length")?;
            let fp_hash = num("fingerprint")?;
            let name = f.next().ok_or("row without a name")?;
            let bad = |w: &str| format!("bad {w} in row '{line}'");
            Ok(Row {
                ino: ino.parse().map_err(|_| bad("inode"))?,
                offset: offset.parse().map_err(|_| bad("offset"))?,
                fingerprint: Fingerprint {
                    len: fp_len.parse().map_err(|_| bad("fingerprint length"))?,
                    hash: u64::from_str_radix(&fp_hash, 16).map_err(|_| bad("fingerprint"))?,
                },
                name: unescape(name)?,
            })
        })
        .collect::<Result<Vec<Row>, String>>()?;
    if n.parse::<usize>().ok() != Some(rows.len()) {
        return Err("row count mismatch".into());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::inputs::state_file::DbSync;

    fn rows() -> Vec<Row> {
        vec![
            Row {
                ino: 1122364,
                offset: 63,
                fingerprint: Fingerprint::of(b"line one\n"),
                name: "/var/log/app.log".into(),
            },
            Row {
                ino: 9,
                offset: 0,
                fingerprint: Fingerprint::of(&[]),
                name: "/tmp/odd name\\with\nnewline".into(),
            },
        ]
    }

    #[test]
    fn round_trip_and_exact_text() {
        let bytes = encode(&rows());
        assert_eq!(decode(&bytes).unwrap(), rows());
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "agent-tail-db 1");
        assert_eq!(
            lines[1],
            format!(
                "1122364 63 9 {:016x} /var/log/app.log",
                fnv1a(b"line one\n")
            )
        );
        assert_eq!(
            lines[2],
            "9 0 0 cbf29ce484222325 /tmp/odd name\\\\with\\nnewline"
        );
        assert!(lines[3].starts_with("end 2 "));
        assert_eq!(decode(&encode(&[])).unwrap(), []);
    }

    #[test]
    fn damage_is_detected() {
        let good = encode(&rows());
        // Any flipped byte, or a cut anywhere, is refused.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i}");
            assert!(decode(&good[..i]).is_err(), "cut at {i}");
        }
    }

    #[test]
    fn save_replaces_atomically_and_locking_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let config = DbConfig {
            path: dir.path().join("tail.db"),
            sync: DbSync::Full,
            locking: true,
            compare_filename: false,
        };
        let (db, loaded) = Db::open(config.clone()).unwrap();
        assert!(loaded.is_empty());
        db.save(&rows()).unwrap();
        assert!(!dir.path().join("tail.db.tmp").exists());
        assert!(matches!(
            Db::open(config.clone()),
            Err(DbError::Locked { .. })
        ));
        drop(db);
        let (_db, loaded) = Db::open(config.clone()).unwrap();
        assert_eq!(loaded, rows());
        fs::write(&config.path, b"SQLite format 3\0...").unwrap();
        let unlocked = DbConfig {
            locking: false,
            ..config
        };
        assert!(matches!(Db::open(unlocked), Err(DbError::Sqlite { .. })));
    }
}
