//! Finding files: expanding `path` globs minus `exclude_path`, composing a file's tag,
//! and deciding where a newly found file is read from.
//! Fluent Bit: plugins/in_tail/tail_scan_glob.c, tail_file.c (tag_compose)

use std::path::{Path, PathBuf};

use super::db::Row;
use super::file::Fingerprint;

/// Expands every pattern (in order, each sorted as `glob(3)` does), drops excluded
/// paths and duplicates. Unreadable directories are skipped.
pub fn expand(patterns: &[String], exclude: &[glob::Pattern]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in patterns {
        let Ok(paths) = glob::glob(p) else { continue };
        for path in paths.flatten() {
            if !excluded(&path, exclude) && !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// `fnmatch(pattern, path, 0)`: `*` also matches `/`.
pub fn excluded(path: &Path, exclude: &[glob::Pattern]) -> bool {
    let s = path.to_string_lossy();
    exclude.iter().any(|p| p.matches(&s))
}

/// Whether `path` is one of the files the patterns name.
pub fn matches(path: &Path, patterns: &[String], exclude: &[glob::Pattern]) -> bool {
    let s = path.to_string_lossy();
    !excluded(path, exclude)
        && patterns.iter().any(|p| {
            glob::Pattern::new(p).is_ok_and(|p| {
                p.matches_with(
                    &s,
                    glob::MatchOptions {
                        require_literal_separator: true,
                        ..Default::default()
                    },
                )
            })
        })
}

/// Directories whose new entries may match a pattern: the literal part of each pattern
/// before its first wildcard component. Watched so that new files (and the new file of
/// a rotation) are found at once instead of at the next `refresh_interval`.
pub fn pattern_dirs(patterns: &[String]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in patterns {
        let mut dir = PathBuf::new();
        for c in Path::new(p).components() {
            if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
                break;
            }
            dir.push(c);
        }
        // The pattern named a file: its parent is what to watch.
        if dir == Path::new(p) {
            dir.pop();
        }
        if dir.as_os_str().is_empty() {
            dir.push(".");
        }
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    out
}

/// A tag with `*` replaced by the file's path, `/`, `\` and `:` turned into dots, the
/// leading separator dropped and doubled dots collapsed:
/// `kube.*` + `/var/log/app.log` → `kube.var.log.app.log`.
pub fn compose_tag(tag: &str, path: &str) -> String {
    if !tag.contains('*') {
        return tag.to_string();
    }
    let mut expanded = String::with_capacity(path.len());
    for c in path.chars() {
        let c = if matches!(c, '/' | '\\' | ':') {
            '.'
        } else {
            c
        };
        if c == '.' && (expanded.is_empty() || expanded.ends_with('.')) {
            continue;
        }
        expanded.push(c);
    }
    tag.replace('*', &expanded)
}

/// A tag whose `<name>`s are replaced by the named groups of `tag_regex` matched on the
/// file's path (a name the regex does not have, or a group that did not take part,
/// becomes `_`), as Fluent Bit composes it. `None`: the path does not match, or a `<`
/// is not closed.
pub fn compose_tag_regex(
    tag: &str,
    re: &crate::parser::regex::OnigRegex,
    path: &str,
) -> Option<String> {
    let mut groups: Vec<(crate::event::Str, &str)> = Vec::new();
    let matched = re.search(path.as_bytes(), |name, span| {
        if let Some((a, b)) = span {
            groups.push((name.clone(), path.get(a..b).unwrap_or_default()));
        }
    });
    if !matched {
        return None;
    }
    let mut out = String::with_capacity(tag.len() + path.len());
    let mut rest = tag;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let name = &after[..close];
        if name.contains('<') {
            return None;
        }
        match groups.iter().find(|(n, _)| &**n == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push('_'),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// What is known about a file when it is found.
pub struct Found<'a> {
    pub size: u64,
    /// Its db row, matched by inode (and name with `db.compare_filename`).
    pub row: Option<&'a Row>,
    /// Its first `row.fingerprint.len` bytes hashed now (when there is a row and the
    /// file has that many bytes).
    pub head: Option<Fingerprint>,
    /// Found by the first scan (else later, while running).
    pub at_startup: bool,
    /// It appeared at the path of a file that was just rotated away.
    pub replaces_rotated: bool,
}

/// Where reading starts, and why (for the log).
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// The db's offset: the same file as before.
    Saved(u64),
    /// The db names this inode but the first bytes differ, or it is shorter than the
    /// saved offset: another file (inode reuse) or rewritten. Read it all.
    Replaced,
    Head,
    End(u64),
}

impl Start {
    pub fn offset(&self) -> u64 {
        match self {
            Start::Saved(o) | Start::End(o) => *o,
            Start::Replaced | Start::Head => 0,
        }
    }
}

pub fn start(f: &Found, read_from_head: bool, read_new_from_head: bool) -> Start {
    if let Some(row) = f.row {
        let same = f.head == Some(row.fingerprint) && row.offset <= f.size;
        return if same {
            Start::Saved(row.offset)
        } else {
            Start::Replaced
        };
    }
    let head = if f.replaces_rotated {
        true
    } else if f.at_startup {
        read_from_head
    } else {
        read_new_from_head
    };
    if head {
        Start::Head
    } else {
        Start::End(f.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_from_tag_regex_groups() {
        let re = crate::parser::regex::OnigRegex::new(
            r"(?<pod_name>[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)_(?<namespace_name>[^_]+)_(?<container_name>.+)-(?<docker_id>[a-z0-9]{64})\.log$",
        )
        .unwrap();
        let path = format!(
            "/var/log/containers/web-7d4b9_prod_nginx-{}.log",
            "a".repeat(64)
        );
        assert_eq!(
            compose_tag_regex(
                "kube.<namespace_name>.<pod_name>.<container_name>.<nope>",
                &re,
                &path
            )
            .as_deref(),
            Some("kube.prod.web-7d4b9.nginx._")
        );
        assert_eq!(compose_tag_regex("kube.<namespace_name", &re, &path), None);
        assert_eq!(
            compose_tag_regex("k.<pod_name>", &re, "/var/log/other.log"),
            None
        );
    }
    use std::fs;

    #[test]
    fn tags_like_fluent_bit() {
        assert_eq!(
            compose_tag("kube.*", "/var/log/containers/a_b-c.log"),
            "kube.var.log.containers.a_b-c.log"
        );
        assert_eq!(compose_tag("*", "/a//b/../c:d\\e"), "a.b.c.d.e");
        assert_eq!(compose_tag("x.*.y", "rel/f"), "x.rel.f.y");
        assert_eq!(compose_tag("fixed", "/var/log/x"), "fixed");
    }

    #[test]
    fn expand_globs_minus_excludes_in_order() {
        let d = tempfile::tempdir().unwrap();
        for n in ["a.log", "b.log", "c.txt", "skip.log"] {
            fs::write(d.path().join(n), "").unwrap();
        }
        let p = |s: &str| format!("{}/{s}", d.path().display());
        let ex = vec![glob::Pattern::new("*skip*").unwrap()];
        let got = expand(&[p("*.log"), p("*.txt"), p("a.*")], &ex);
        let names: Vec<_> = got
            .iter()
            .map(|x| x.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.log", "b.log", "c.txt"]);
        assert!(matches(&d.path().join("b.log"), &[p("*.log")], &ex));
        assert!(!matches(&d.path().join("skip.log"), &[p("*.log")], &ex));
        assert!(!matches(&d.path().join("b.log.1"), &[p("*.log")], &ex));
    }

    #[test]
    fn watched_dirs() {
        let pats = ["/var/log/*.log", "/var/log/x/*/y.log", "/a/b.log", "c*.log"].map(String::from);
        assert_eq!(
            pattern_dirs(&pats),
            [
                PathBuf::from("/var/log"),
                PathBuf::from("/var/log/x"),
                PathBuf::from("/a"),
                PathBuf::from(".")
            ]
        );
    }

    #[test]
    fn where_reading_starts() {
        let fp = Fingerprint::of(b"first line\n");
        let row = Row {
            ino: 5,
            offset: 100,
            fingerprint: fp,
            name: "x".into(),
        };
        let found = |size, row, head, at_startup, replaces_rotated| Found {
            size,
            row,
            head,
            at_startup,
            replaces_rotated,
        };
        // Same file: resume at the saved offset, whatever read_from_head says.
        let f = found(150, Some(&row), Some(fp), true, false);
        assert_eq!(start(&f, false, true), Start::Saved(100));
        // Inode reused by a file with other first bytes: read all of it.
        let other = Fingerprint::of(b"other file\n");
        let f = found(150, Some(&row), Some(other), true, false);
        assert_eq!(start(&f, false, true), Start::Replaced);
        // Shorter than the saved offset (truncated while stopped), or shorter than the
        // fingerprint: read all of it.
        assert_eq!(
            start(&found(50, Some(&row), Some(fp), true, false), false, true),
            Start::Replaced
        );
        assert_eq!(
            start(&found(5, Some(&row), None, true, false), false, true),
            Start::Replaced
        );
        // Not in the db.
        assert_eq!(
            start(&found(70, None, None, true, false), false, true),
            Start::End(70)
        );
        assert_eq!(
            start(&found(70, None, None, true, false), true, false),
            Start::Head
        );
        assert_eq!(
            start(&found(70, None, None, false, false), false, true),
            Start::Head
        );
        assert_eq!(
            start(&found(70, None, None, false, false), true, false),
            Start::End(70)
        );
        // The new file of a rotation is always read from its start.
        assert_eq!(
            start(&found(70, None, None, false, true), false, false),
            Start::Head
        );
    }
}
