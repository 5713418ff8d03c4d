//! Size-based rotation (`rotate`, `rotate_max_size`, `rotate_max_files`, `rotate_gzip`),
//! as Fluent Bit 5.1.1 does it: before a write, a file whose size (seeded from disk the
//! first time, then measured after each write) has reached `rotate_max_size` is renamed
//! to `<file>.YYYYMMDD_HHMMSS_xxxxxxxx` (local time, 8 random hex digits), gzipped to
//! `<name>.gz` in independent 4 MiB members, and the oldest rotated files beyond
//! `rotate_max_files` are removed. A failed rotation is logged and the write goes on
//! to the current file. Fluent Bit: plugins/out_file/file_rotate.c

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

/// Bytes of the source compressed into one gzip member.
const GZIP_MEMBER: usize = 4 * 1024 * 1024;

/// Rotation settings and, per destination, its size. Shared by the workers.
pub struct Rotation {
    pub max_size: u64,
    pub max_files: usize,
    pub gzip: bool,
    /// Log prefix, `[output:file:file.0]`.
    pub prefix: String,
    /// Size per destination path, `None` until first seeded from disk.
    sizes: Mutex<HashMap<String, u64>>,
}

impl Rotation {
    pub fn new(max_size: u64, max_files: usize, gzip: bool, prefix: String) -> Rotation {
        Rotation {
            max_size,
            max_files,
            gzip,
            prefix,
            sizes: Mutex::default(),
        }
    }

    /// Before writing to `path`: rotates it when it has reached the limit.
    pub fn before_write(&self, path: &str) {
        let mut sizes = self
            .sizes
            .lock()
            .expect("no panics while holding the sizes");
        let size = sizes.entry(path.to_string()).or_insert_with(|| {
            // Seeded from disk, so a file already too big at start rotates now.
            std::fs::metadata(path).map_or(0, |m| m.len())
        });
        if *size >= self.max_size && self.rotate(path) {
            *size = 0;
        }
    }

    /// After writing to `path`: its size as on disk.
    pub fn after_write(&self, path: &str) {
        if let Ok(m) = std::fs::metadata(path) {
            let mut sizes = self
                .sizes
                .lock()
                .expect("no panics while holding the sizes");
            sizes.insert(path.to_string(), m.len());
        }
    }

    /// `file_rotate_do`; true when the file was renamed.
    fn rotate(&self, path: &str) -> bool {
        let prefix = &self.prefix;
        let rotated = format!("{path}.{}", suffix());
        if let Err(e) = std::fs::rename(path, &rotated) {
            crate::warn!("{prefix} could not rotate {path}: {e}");
            return false;
        }
        crate::info!("{prefix} rotated {path} to {rotated}");
        if self.gzip {
            let gz = format!("{rotated}.gz");
            match compress(Path::new(&rotated), Path::new(&gz)) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&rotated);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&gz);
                    crate::warn!("{prefix} keeping uncompressed rotated file {rotated}: {e}");
                }
            }
        }
        let p = Path::new(path);
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Some(base) = p.file_name().and_then(|b| b.to_str()) {
            self.trim(dir, base);
        }
        true
    }

    /// `file_rotate_trim`: keeps the newest `max_files` rotated files of `base`, by
    /// modification time in whole seconds (`st_mtime`), then name, as Fluent Bit
    /// sorts them.
    fn trim(&self, dir: &Path, base: &str) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut rotated: Vec<(i64, std::path::PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(base))
                    .and_then(|n| n.strip_prefix('.'))
                    .is_some_and(is_rotation_suffix)
            })
            .filter_map(|e| {
                let m = std::fs::metadata(e.path()).ok()?;
                m.is_file().then(|| (m.mtime(), e.path()))
            })
            .collect();
        if rotated.len() <= self.max_files {
            return;
        }
        rotated.sort();
        let remove = rotated.len() - self.max_files;
        crate::info!(
            "{} cleaning up old rotated files: removing {remove} files (keeping {})",
            self.prefix,
            self.max_files
        );
        for (_, p) in &rotated[..remove] {
            if let Err(e) = std::fs::remove_file(p) {
                crate::warn!(
                    "{} could not remove old rotated file: {}: {e}",
                    self.prefix,
                    p.display()
                );
            }
        }
    }
}

/// `YYYYMMDD_HHMMSS_xxxxxxxx`: local time now and 32 random bits, so that two
/// rotations within one second do not collide.
fn suffix() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: `tm` is plain data that localtime_r fills in.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    format!(
        "{:04}{:02}{:02}_{:02}{:02}{:02}_{:08x}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        fastrand::u32(..)
    )
}

/// `is_valid_rotation_filename` after `<base>.`: `YYYYMMDD_HHMMSS`, optionally
/// `_xxxxxxxx` (hex), optionally `.gz`.
fn is_rotation_suffix(s: &str) -> bool {
    let s = s.strip_suffix(".gz").unwrap_or(s).as_bytes();
    let stamp = |b: &[u8]| {
        b.len() == 15
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'_'
            && b[9..].iter().all(u8::is_ascii_digit)
    };
    match s.len() {
        15 => stamp(s),
        24 => stamp(&s[..15]) && s[15] == b'_' && s[16..].iter().all(u8::is_ascii_hexdigit),
        _ => false,
    }
}

/// `file_rotate_compress`: `src` as gzip members of at most 4 MiB of input each (one
/// empty member for an empty file).
fn compress(src: &Path, dst: &Path) -> io::Result<()> {
    let mut input = File::open(src)?;
    let mut out = io::BufWriter::new(File::create(dst)?);
    let mut buf = vec![0u8; GZIP_MEMBER];
    let mut total = 0;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match input.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 && total > 0 {
            break;
        }
        total += n;
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(&mut out, flate2::Compression::default());
        gz.write_all(&buf[..n])?;
        gz.finish()?;
        if n < buf.len() {
            break;
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_suffixes() {
        assert!(is_rotation_suffix("20240314_100000"));
        assert!(is_rotation_suffix("20240314_100000.gz"));
        assert!(is_rotation_suffix("20240314_100000_0a1B2c3d"));
        assert!(is_rotation_suffix("20240314_100000_0a1b2c3d.gz"));
        assert!(!is_rotation_suffix("20240314_100000_0a1b2c3g"));
        assert!(!is_rotation_suffix("20240314-100000"));
        assert!(!is_rotation_suffix("20240314_100000.zip"));
        assert!(!is_rotation_suffix("1"));
        let s = suffix();
        assert!(is_rotation_suffix(&s), "{s}");
    }

    #[test]
    fn rotates_compresses_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let p = path.to_str().unwrap();
        let rot = Rotation::new(10, 2, true, "[t]".into());
        std::fs::write(&path, "0123456789abc").unwrap();
        // Seeded from disk: already over the limit, rotated before the first write.
        rot.before_write(p);
        assert!(!path.exists());
        std::fs::write(&path, "second").unwrap();
        rot.after_write(p);
        rot.before_write(p);
        assert!(path.exists(), "6 bytes is under the limit");
        let gz: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".gz"))
            .collect();
        assert_eq!(gz.len(), 1, "{gz:?}");
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(File::open(dir.path().join(&gz[0])).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "0123456789abc");
        // Three more rotations: only the newest two rotated files stay.
        for i in 0..3 {
            std::fs::write(&path, format!("file {i} is long enough")).unwrap();
            rot.after_write(p);
            rot.before_write(p);
        }
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 2);
    }

    #[test]
    fn large_files_are_several_members() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        let dst = dir.path().join("a.gz");
        let data: Vec<u8> = (0..GZIP_MEMBER + 10).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        compress(&src, &dst).unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(File::open(&dst).unwrap())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // An empty file is one empty member, still valid gzip.
        std::fs::write(&src, b"").unwrap();
        compress(&src, &dst).unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(File::open(&dst).unwrap())
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }
}
