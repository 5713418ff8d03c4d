//! The cursor db: the journal cursor of the last entry *delivered*, kept across restarts.
//! Fluent Bit keeps it in SQLite (plugins/in_systemd/systemd_db.c, one row of table
//! `in_systemd_cursor`); agent uses a small text file, replaced atomically, as tail's
//! offsets db (so it needs no SQLite library):
//!
//! ```text
//! agent-systemd-db 1
//! <cursor>
//! end <CRC-32 of every byte before this line, 8 hex>
//! ```
//!
//! A save writes `<db>.tmp`, `fsync`s it (unless `db.sync off`), renames it over the db
//! and, with `db.sync full` or `extra`, `fsync`s the directory. A crash leaves the old or
//! the new db; the checksum catches a file damaged otherwise, which is refused at start
//! rather than read as "no cursor" (that would read the whole journal again).

use std::io;
use std::path::{Path, PathBuf};

const MAGIC: &str = "agent-systemd-db 1";

/// A cursor is about 130 bytes; anything much larger is not our db.
const MAX_DB_FILE: u64 = 64 << 10;

pub use crate::plugins::inputs::state_file::DbSync;

#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    tmp: PathBuf,
    sync: DbSync,
}

/// Reads the db at `path`: its cursor, `None` when the file does not exist yet.
pub fn open(path: &Path, sync: DbSync) -> Result<(Db, Option<String>), String> {
    let cursor = match crate::config::read_regular_file(path, MAX_DB_FILE) {
        Ok(bytes) => Some(decode(&bytes).map_err(|why| {
            if bytes.starts_with(b"SQLite format 3\0") {
                format!("{} is a Fluent Bit SQLite db, which agent does not read: point 'db' to a new file (the journal is then read from its start, or its end with read_from_tail)", path.display())
            } else {
                format!(
                    "{} is damaged ({why}): move it away to start without a saved cursor",
                    path.display()
                )
            }
        })?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    Ok((
        Db {
            path: path.to_path_buf(),
            tmp: PathBuf::from(tmp),
            sync,
        },
        cursor,
    ))
}

impl Db {
    /// Replaces the db with `cursor`, atomically.
    pub fn save(&self, cursor: &str) -> Result<(), String> {
        crate::plugins::inputs::state_file::replace_atomically(
            &self.path,
            &self.tmp,
            &encode(cursor),
            self.sync,
        )
        .map_err(|(what, path, e)| format!("cannot {what} {}: {e}", path.display()))
    }
}

pub fn encode(cursor: &str) -> Vec<u8> {
    let body = format!("{MAGIC}\n{cursor}\n");
    let sum = crc32fast::hash(body.as_bytes());
    format!("{body}end {sum:08x}\n").into_bytes()
}

pub fn decode(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let body_end = text
        .strip_suffix('\n')
        .and_then(|t| t.rfind('\n'))
        .map(|i| i + 1)
        .ok_or("no end line")?;
    let (body, trailer) = text.split_at(body_end);
    let sum = trailer
        .strip_prefix("end ")
        .and_then(|t| t.strip_suffix('\n'))
        .ok_or("no end line")?;
    if u32::from_str_radix(sum, 16).ok() != Some(crc32fast::hash(body.as_bytes())) {
        return Err("checksum mismatch".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("first line is not '{MAGIC}'"));
    }
    match (lines.next(), lines.next()) {
        (Some(c), None) if !c.is_empty() => Ok(c.to_string()),
        _ => Err("not one cursor line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const CURSOR: &str = "s=e86521689cd54cdeb8d63f9b40bc9721;i=2;b=0123456789abcdef0123456789abcdef;m=3e9;t=60a24182f6481;x=6c0b093cc858e2f6";

    #[test]
    fn round_trip_and_damage() {
        let good = encode(CURSOR);
        assert_eq!(decode(&good).unwrap(), CURSOR);
        assert!(String::from_utf8(good.clone())
            .unwrap()
            .starts_with("agent-systemd-db 1\ns=e865"));
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i}");
            assert!(decode(&good[..i]).is_err(), "cut at {i}");
        }
    }

    #[test]
    fn save_open_and_sqlite_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let (db, c) = open(&path, DbSync::Full).unwrap();
        assert_eq!(c, None);
        db.save(CURSOR).unwrap();
        assert!(!dir.path().join("j.db.tmp").exists());
        assert_eq!(open(&path, DbSync::Off).unwrap().1.as_deref(), Some(CURSOR));
        fs::write(&path, b"SQLite format 3\0...").unwrap();
        let e = open(&path, DbSync::Normal).unwrap_err();
        assert!(e.contains("SQLite"), "{e}");
        fs::write(&path, b"agent-systemd-db 1\nx\nend 00000000\n").unwrap();
        let e = open(&path, DbSync::Normal).unwrap_err();
        assert!(e.contains("damaged (checksum mismatch)"), "{e}");
    }
}
