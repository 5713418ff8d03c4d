//! The small state files inputs keep across restarts (tail's offsets, systemd's
//! cursor): `db.sync` and the atomic replace both use.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `db.sync`: how hard a save is pushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbSync {
    Off,
    Normal,
    /// `full` and `extra`: the directory is synced too (the rename is durable).
    Full,
}

impl DbSync {
    pub fn parse(s: &str) -> Option<DbSync> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Some(DbSync::Off),
            "normal" => Some(DbSync::Normal),
            "full" | "extra" => Some(DbSync::Full),
            _ => None,
        }
    }
}

/// Replaces `path` with `bytes` atomically: writes `tmp`, `fsync`s it (unless
/// `sync` is off), renames it over `path` and, with [`DbSync::Full`], `fsync`s the
/// directory. A crash leaves the old or the new file. `Err` names the step, the file
/// and the error.
pub fn replace_atomically(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    sync: DbSync,
) -> Result<(), (&'static str, PathBuf, io::Error)> {
    let io = |what, p: &Path| {
        let p = p.to_path_buf();
        move |e| (what, p, e)
    };
    let mut f = File::create(tmp).map_err(io("create", tmp))?;
    f.write_all(bytes).map_err(io("write", tmp))?;
    if sync != DbSync::Off {
        f.sync_data().map_err(io("fsync", tmp))?;
    }
    drop(f);
    fs::rename(tmp, path).map_err(io("replace", path))?;
    if sync == DbSync::Full {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))?;
    }
    Ok(())
}
