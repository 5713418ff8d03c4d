//! `tail` input with the real binary on real files: appends, read_from_head, globs,
//! rotation by rename and copytruncate under a writer at full speed (every line exactly
//! once, in order per file), restarts with a db (no gaps, no duplicates), `kill -9`
//! (no gaps), inode reuse, long lines and invalid UTF-8. Every wait is on a condition.

mod common;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

/// A config: tail with `input` properties into stdout json_lines.
fn conf(input: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.1\n    log_level debug\n[INPUT]\n    name tail\n{input}[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
    )
}

/// The records printed so far (a line cut by `kill -9` is left out).
fn records(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `log` value of every record.
fn logs(stdout: &str) -> Vec<String> {
    records(stdout)
        .iter()
        .map(|r| r["log"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until the agent follows `n` files (its debug log says so per file).
fn wait_following(a: &mut Agent, n: usize) {
    a.wait_until(T, &format!("{n} files followed"), |_, e| {
        e.matches("following from offset").count() >= n
    });
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// `g<gen> s<seq>` padded to 100 bytes with a newline.
fn line(gen: usize, seq: usize) -> String {
    format!("g{gen:03} s{seq:09} {}\n", "x".repeat(84))
}

/// Writes lines `range` of generation `gen` as fast as the writer goes.
fn write_lines(path: &Path, gen: usize, range: std::ops::Range<usize>) {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
    for seq in range {
        w.write_all(line(gen, seq).as_bytes()).unwrap();
    }
    w.flush().unwrap();
}

/// Checks that `logs` holds lines 0..n exactly once, and that each generation's lines
/// came in order.
fn exactly_once_in_order(logs: &[String], n: usize) {
    let mut seen = vec![false; n];
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for l in logs {
        let gen = &l[..4];
        let seq: usize = l[6..15].parse().unwrap();
        assert!(!seen[seq], "line {seq} twice");
        seen[seq] = true;
        if let Some(prev) = last.insert(gen.to_string(), seq) {
            assert!(prev < seq, "{gen}: line {seq} after {prev}");
        }
        assert_eq!(l.len(), 100, "line {seq} is whole");
    }
    let missing: Vec<usize> = (0..n).filter(|&i| !seen[i]).collect();
    assert!(
        missing.is_empty(),
        "missing lines: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert_eq!(logs.len(), n);
}

#[test]
fn appends_are_picked_up_and_existing_lines_skipped_by_default() {
    // With inotify, and polling (`inotify_watcher false`).
    for watcher in ["on", "off"] {
        let d = Dir::new();
        let f = d.file("app.log", "old 1\nold 2\n");
        let mut a = Agent::start(&conf(&format!(
            "    path {}\n    inotify_watcher {watcher}\n",
            f.display()
        )));
        wait_following(&mut a, 1);
        append(&f, "new 1\r\nnew 2\n");
        a.wait_lines(2, T);
        append(&f, "new 3\nunterminated");
        a.wait_lines(3, T);
        let o = a.stop(T);
        assert_eq!(o.code, Some(0));
        // Without a db, the held unterminated line is emitted at exit.
        assert_eq!(
            logs(&o.stdout),
            ["new 1", "new 2", "new 3", "unterminated"],
            "inotify_watcher {watcher}"
        );
    }
}

#[test]
fn symlink_retargeted_and_rotated_file_closed_once_drained() {
    let d = Dir::new();
    let link = d.path().join("current.log");
    let a_log = d.file("a.log", "a 1\n");
    std::os::unix::fs::symlink(&a_log, &link).unwrap();
    let mut a = Agent::start(&conf(&format!(
        "    path {}\n    read_from_head on\n    rotate_wait 1\n",
        link.display()
    )));
    a.wait_lines(1, T);
    append(&a_log, "a 2\n");
    a.wait_lines(2, T);
    // Retarget the link atomically, as kubelet does on rotation.
    let b_log = d.file("b.log", "b 1\n");
    let tmp = d.path().join("tmp.link");
    std::os::unix::fs::symlink(&b_log, &tmp).unwrap();
    fs::rename(&tmp, &link).unwrap();
    a.wait_lines(3, T);
    append(&b_log, "b 2\n");
    a.wait_lines(4, T);
    // The old target, read to its end and quiet for rotate_wait, is closed.
    a.wait_log("closed", T);
    let o = a.stop(T);
    assert_eq!(logs(&o.stdout), ["a 1", "a 2", "b 1", "b 2"]);
}

#[test]
fn read_from_head_with_path_and_offset_keys_and_tag() {
    let d = Dir::new();
    let f = d.file("app.log", "one\n\ntwo\n");
    let input = format!(
        "    path {}\n    read_from_head on\n    path_key file\n    offset_key off\n    tag app.*\n",
        f.display()
    );
    let mut a = Agent::start(&conf(&input));
    a.wait_lines(3, T);
    let o = a.stop(T);
    let name = f.display().to_string();
    // Each line without its `{"date":...,` prefix: the key order is part of the output.
    let bodies: Vec<&str> = o
        .stdout
        .lines()
        .map(|l| &l[l.find(',').unwrap() + 1..])
        .collect();
    assert_eq!(
        bodies,
        [
            format!("\"file\":\"{name}\",\"off\":0,\"log\":\"one\"}}"),
            format!("\"file\":\"{name}\",\"off\":4,\"log\":\"\"}}"),
            format!("\"file\":\"{name}\",\"off\":5,\"log\":\"two\"}}"),
        ]
    );

    // The tag is the path with dots: route on it.
    let d2 = Dir::new();
    let f2 = d2.file("x.log", "routed\n");
    // `/tmp/.tmpXYZ/x.log` → `app.tmp.tmpXYZ.x.log`: separators become dots, doubled
    // dots collapse.
    let path = f2.display().to_string();
    let tag = format!("app.{}", path[1..].replace('/', ".").replace("..", "."));
    let routed = format!(
        "[SERVICE]\n    flush 0.1\n[INPUT]\n    name tail\n    path {}\n    read_from_head on\n    tag app.*\n[OUTPUT]\n    name stdout\n    match {tag}\n    format json_lines\n",
        f2.display()
    );
    let mut a = Agent::start(&routed);
    a.wait_lines(1, T);
    assert_eq!(logs(&a.stop(T).stdout), ["routed"]);
}

#[test]
fn globs_and_exclude_path() {
    let d = Dir::new();
    for n in ["a.log", "b.log", "c.txt", "skip.log", "other.dat"] {
        d.file(n, &format!("{n}\n"));
    }
    // Last modified two hours ago: left out by ignore_older.
    let old = d.file("old.log", "old.log\n");
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let dir = d.path().display();
    let mut a = Agent::start(&conf(&format!(
        "    path {dir}/*.log, {dir}/*.txt\n    exclude_path *skip*\n    read_from_head on\n    ignore_older 1h\n"
    )));
    a.wait_lines(3, T);
    // A file created later in the watched directory is found at once and read from
    // its start (read_newly_discovered_files_from_head).
    d.file("d.log", "d.log\n");
    d.file("skip2.log", "skip2.log\n");
    a.wait_lines(4, T);
    let o = a.stop(T);
    let mut got = logs(&o.stdout);
    got.sort();
    assert_eq!(got, ["a.log", "b.log", "c.txt", "d.log"]);
}

#[test]
fn rename_rotation_under_a_full_speed_writer_loses_nothing() {
    // Rotated names outside the pattern (drained, then closed) and inside it (followed
    // on under their new name). The writer rotates faster than the agent looks: a file
    // may be renamed before it was ever followed, and is still read (found through the
    // directory's rename event, or by the pattern).
    for pattern in ["app.log", "app.log*"] {
        let d = Dir::new();
        let f = d.path().join("app.log");
        fs::write(&f, "").unwrap();
        // rotate_wait 1: a rotated file the agent is still behind on must stay open.
        let mut a = Agent::start(&conf(&format!(
            "    path {}/{pattern}\n    rotate_wait 1\n",
            d.path().display()
        )));
        wait_following(&mut a, 1);
        let (gens, per_gen) = (6, 20_000);
        for gen in 0..gens {
            write_lines(&f, gen, gen * per_gen..(gen + 1) * per_gen);
            if gen + 1 < gens {
                fs::rename(&f, d.path().join(format!("app.log.{gen}"))).unwrap();
            }
        }
        let n = gens * per_gen;
        a.wait_lines(n, T);
        let o = a.stop(T);
        exactly_once_in_order(&logs(&o.stdout), n);
        assert!(o.stderr.contains("handle rotation()"), "{}", o.stderr);
    }
}

#[test]
fn copytruncate_under_a_full_speed_writer_loses_nothing() {
    let d = Dir::new();
    let f = d.path().join("app.log");
    fs::write(&f, "").unwrap();
    let mut a = Agent::start(&conf(&format!("    path {}\n", f.display())));
    wait_following(&mut a, 1);
    let (gens, per_gen) = (4, 20_000);
    for gen in 0..gens {
        // Lines written between the agent's last read and the truncation exist only in
        // the copy (that is copytruncate's own race): truncate once all were read, then
        // write again at full speed, so the file grows back past the old offset fast.
        write_lines(&f, gen, gen * per_gen..(gen + 1) * per_gen);
        a.wait_lines((gen + 1) * per_gen, T);
        if gen + 1 < gens {
            OpenOptions::new()
                .write(true)
                .open(&f)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
    }
    let n = gens * per_gen;
    let o = a.stop(T);
    exactly_once_in_order(&logs(&o.stdout), n);
    assert_eq!(o.stderr.matches("file truncated").count(), gens - 1);
}

#[test]
fn restart_with_db_resumes_without_gaps_or_duplicates() {
    let d = Dir::new();
    let f = d.path().join("app.log");
    let db = d.path().join("tail.db");
    let input = format!(
        "    path {}\n    db {}\n    read_from_head on\n",
        f.display(),
        db.display()
    );
    write_lines(&f, 0, 0..1000);
    append(&f, "g000 s00000");
    let mut a = Agent::start(&conf(&input));
    a.wait_lines(1000, T);
    let first = a.stop(T);
    assert_eq!(first.code, Some(0));
    // The unterminated line stays unread: the next run reads it whole.
    append(&f, &line(0, 1000)[11..]);
    write_lines(&f, 0, 1001..2000);
    let mut a = Agent::start(&conf(&input));
    a.wait_lines(1000, T);
    let second = a.stop(T);
    let mut all = logs(&first.stdout);
    all.extend(logs(&second.stdout));
    exactly_once_in_order(&all, 2000);
}

#[test]
fn kill_9_during_delivery_then_restart_leaves_no_gap() {
    let d = Dir::new();
    let f = d.path().join("app.log");
    let db = d.path().join("tail.db");
    let n = 100_000;
    write_lines(&f, 0, 0..n);
    // mem_buf_limit keeps little in flight and slows reading to the flush rate, so the
    // kill lands mid-file with an offset saved.
    let input = format!(
        "    path {}\n    db {}\n    read_from_head on\n    mem_buf_limit 200k\n",
        f.display(),
        db.display()
    );
    let mut a = Agent::start(&conf(&input));
    // Kill once the db holds an offset and delivery is under way.
    a.wait_until(T, "a saved offset and records", |o, _| {
        o.lines().count() > 10_000 && fs::read_to_string(&db).is_ok_and(|t| !t.contains(" 0 "))
    });
    a.signal(libc::SIGKILL);
    a.wait(T);
    let first = logs(&a.stdout());
    assert!(a.stderr().contains("paused (mem buf overlimit)"));
    drop(a);
    assert!(first.len() < n, "killed before the end");
    let mut a = Agent::start(&conf(&input));
    a.wait_until(T, "the last line", |o, _| {
        o.contains(&line(0, n - 1)[..100])
    });
    let second = logs(&a.stop(T).stdout);
    // The second run starts at or before where the first one stopped, and reads on.
    let resumed: usize = second[0][6..15].parse().unwrap();
    assert!(
        resumed <= first.len(),
        "gap: first run got {}, second starts at {resumed}",
        first.len()
    );
    let seqs: Vec<usize> = second.iter().map(|l| l[6..15].parse().unwrap()).collect();
    assert_eq!(
        seqs,
        (resumed..n).collect::<Vec<_>>(),
        "the second run reads on without a gap"
    );
}

/// 64-bit FNV-1a, as the db's fingerprint and checksum.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[test]
fn inode_reuse_does_not_apply_a_stale_offset() {
    let d = Dir::new();
    let f = d.file("app.log", "new file line 1\nnew file line 2\n");
    let db = d.path().join("tail.db");
    let ino = fs::metadata(&f).unwrap().ino();
    // The db says this inode was another file, read up to offset 20: a file deleted
    // while the agent was stopped, its inode given to the new one.
    write_db(&db, &[(ino, 20, b"old file line\n", &f)]);
    let input = format!("    path {}\n    db {}\n", f.display(), db.display());
    let mut a = Agent::start(&conf(&input));
    a.wait_lines(2, T);
    let o = a.stop(T);
    assert_eq!(logs(&o.stdout), ["new file line 1", "new file line 2"]);
    assert!(o.stderr.contains("inode reused"), "{}", o.stderr);

    // The same file (fingerprint matches): the saved offset applies.
    write_db(&db, &[(ino, 16, b"new file line 1\n", &f)]);
    let mut a = Agent::start(&conf(&input));
    a.wait_lines(1, T);
    assert_eq!(logs(&a.stop(T).stdout), ["new file line 2"]);
}

/// Writes a db with one row per `(inode, offset, first bytes, name)`.
fn write_db(db: &Path, rows: &[(u64, u64, &[u8], &Path)]) {
    let mut body = String::from("agent-tail-db 1\n");
    for (ino, offset, head, name) in rows {
        body += &format!(
            "{ino} {offset} {} {:016x} {}\n",
            head.len(),
            fnv1a(head),
            name.display()
        );
    }
    let sum = fnv1a(body.as_bytes());
    fs::write(db, format!("{body}end {} {sum:016x}\n", rows.len())).unwrap();
}

#[test]
fn a_file_rotated_while_stopped_is_read_to_its_end() {
    // The agent was killed while app.log was read up to offset 3; then app.log was
    // renamed out of the pattern and a new app.log created.
    let d = Dir::new();
    let rotated = d.file("app.log.1", "r1\nr2\nr3\n");
    let f = d.file("app.log", "n1\n");
    let db = d.path().join("tail.db");
    let ino = fs::metadata(&rotated).unwrap().ino();
    write_db(&db, &[(ino, 3, b"r1\nr2\nr3\n", &f)]);
    let mut a = Agent::start(&conf(&format!(
        "    path {}\n    db {}\n    rotate_wait 1\n",
        f.display(),
        db.display()
    )));
    a.wait_lines(3, T);
    // Drained and quiet for rotate_wait: closed, and its row leaves the db.
    a.wait_log("closed", T);
    let o = a.stop(T);
    let mut got = logs(&o.stdout);
    got.sort();
    assert_eq!(got, ["n1", "r2", "r3"]);
    assert!(o.stderr.contains("was rotated to"), "{}", o.stderr);
    let saved = fs::read_to_string(&db).unwrap();
    assert!(!saved.contains(&format!("{ino} ")), "{saved}");
}

#[test]
fn long_lines_skip_truncate_or_stop() {
    let long = "L".repeat(100);
    let text = format!("short 1\n{long}\nshort 2\n");
    let run = |opts: &str, want: usize| {
        let d = Dir::new();
        let f = d.file("app.log", &text);
        let mut a = Agent::start(&conf(&format!(
            "    path {}\n    read_from_head on\n    buffer_chunk_size 16\n    buffer_max_size 32\n{opts}",
            f.display()
        )));
        a.wait_lines(want, T);
        if opts.is_empty() {
            a.wait_log("requires a larger buffer size", T);
        }
        let o = a.stop(T);
        (logs(&o.stdout), o.stderr)
    };
    let (got, err) = run("    skip_long_lines on\n", 2);
    assert_eq!(got, ["short 1", "short 2"]);
    assert_eq!(
        err.matches("have long lines. Skipping long lines.").count(),
        1
    );
    let (got, err) = run("    truncate_long_lines on\n", 3);
    assert_eq!(
        got,
        ["short 1".to_string(), "L".repeat(32), "short 2".into()]
    );
    assert_eq!(err.matches("Truncating long lines").count(), 1);
    // Neither: the file stops at the long line, which is kept for a larger buffer.
    let (got, _) = run("", 1);
    assert_eq!(got, ["short 1"]);
}

#[test]
fn invalid_utf8_is_kept_and_does_not_stop_the_file() {
    let d = Dir::new();
    let f = d.path().join("app.log");
    fs::write(&f, b"before\ncaf\xc3 ok\n\xff\x00\x01\nafter\n").unwrap();
    let mut a = Agent::start(&conf(&format!(
        "    path {}\n    read_from_head on\n",
        f.display()
    )));
    a.wait_lines(4, T);
    let got = logs(&a.stop(T).stdout);
    assert_eq!(got.len(), 4);
    assert_eq!((got[0].as_str(), got[3].as_str()), ("before", "after"));
    assert!(
        got[1].starts_with("caf") && got[1].ends_with(" ok"),
        "{got:?}"
    );
}

#[test]
fn a_deleted_file_is_read_to_its_end_then_closed() {
    let d = Dir::new();
    let f = d.path().join("app.log");
    fs::write(&f, "").unwrap();
    let mut a = Agent::start(&conf(&format!("    path {}\n", f.display())));
    wait_following(&mut a, 1);
    // Appended and unlinked at once: the bytes are still read through the open file.
    write_lines(&f, 0, 0..5000);
    fs::remove_file(&f).unwrap();
    a.wait_lines(5000, T);
    a.wait_log("closed", T);
    let o = a.stop(T);
    exactly_once_in_order(&logs(&o.stdout), 5000);
    assert!(o.stderr.contains("file deleted"), "{}", o.stderr);
}

#[test]
fn exit_on_eof_stops_once_every_file_is_read() {
    let d = Dir::new();
    let f = d.file("app.log", "one\ntwo\nlast without newline");
    d.file(
        "c.conf",
        &conf(&format!(
            "    path {}\n    read_from_head on\n    exit_on_eof on\n",
            f.display()
        )),
    );
    let o = run(&["-c", "c.conf"], Some(d.path()));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(logs(&o.stdout), ["one", "two", "last without newline"]);
}

#[test]
fn unsupported_and_invalid_properties_are_config_errors() {
    let d = Dir::new();
    d.file(
        "c.conf",
        "[INPUT]\n    name tail\n    path /tmp/*.log\n    unicode.encoding UTF-16LE\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    let o = run(&["-c", "c.conf", "--dry-run"], Some(d.path()));
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains(
            "c.conf:4: [config] tail: property 'unicode.encoding' is not supported yet by agent"
        ),
        "{}",
        o.stderr
    );
    // A parser defined nowhere names where it was looked for.
    d.file(
        "c.conf",
        "[INPUT]\n    name tail\n    path /tmp/*.log\n    parser json\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    let o = run(&["-c", "c.conf", "--dry-run"], Some(d.path()));
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains(
            "c.conf:4: [config] parser 'json' is not defined (no parsers file is loaded)"
        ),
        "{}",
        o.stderr
    );
    d.file(
        "c.conf",
        "[INPUT]\n    name tail\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    let o = run(&["-c", "c.conf", "--dry-run"], Some(d.path()));
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("no input 'path' was given"),
        "{}",
        o.stderr
    );
}

/// Every line is stamped when it is read, as Fluent Bit stamps each record: 1,000 lines
/// read at once get (nearly) 1,000 distinct times, not one.
#[test]
fn each_line_gets_its_own_time() {
    let dir = Dir::new();
    let text: String = (0..1000).map(|i| line(0, i)).collect();
    let log = dir.file("a.log", &text);
    let out = run(
        &[
            "-c",
            dir.file(
                "d.conf",
                &format!(
                    "[SERVICE]\n    flush 0.1\n[INPUT]\n    name tail\n    path {}\n    read_from_head on\n    exit_on_eof on\n[OUTPUT]\n    name stdout\n    match *\n",
                    log.display()
                ),
            )
            .to_str()
            .unwrap(),
        ],
        None,
    );
    let times: std::collections::BTreeSet<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split("[[").nth(1)?.split(',').next())
        .collect();
    assert!(
        times.len() >= 900,
        "{} distinct times of 1000 lines",
        times.len()
    );
}

/// `--dry-run` only checks the configuration: it neither creates nor locks the db (its
/// directory need not exist yet); a real start that cannot open it names the db.
#[test]
fn dry_run_does_not_touch_the_db() {
    let dir = Dir::new();
    let db = dir.path().join("sub/t.db");
    dir.file(
        "c.conf",
        &format!(
            "[INPUT]\n    name tail\n    path {}\n    db {}\n    db.locking on\n[OUTPUT]\n    name stdout\n    match *\n",
            dir.path().join("x.log").display(),
            db.display()
        ),
    );
    let o = run(&["-c", "c.conf", "--dry-run"], Some(dir.path()));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["c.conf"], "the dry run created files");
    let mut a = Agent::spawn_in(&dir, &["-c", "c.conf"], Some(dir.path()));
    assert_eq!(a.wait(T), Some(255));
    assert!(
        a.stderr().contains("db cannot create") && a.stderr().contains("sub/t.db"),
        "{}",
        a.stderr()
    );
}

/// `log_level` of one instance: its debug messages print while the service logs at
/// info; another instance set to `error` prints no info lines.
#[test]
fn an_instance_log_level_applies_to_its_messages_only() {
    let dir = Dir::new();
    let log = dir.file("a.log", "x\n");
    dir.file(
        "c.conf",
        &format!(
            "[SERVICE]\n    flush 0.1\n    log_level info\n[INPUT]\n    name tail\n    path {}\n    read_from_head on\n    exit_on_eof on\n    log_level debug\n[OUTPUT]\n    name stdout\n    match *\n    log_level error\n",
            log.display()
        ),
    );
    let o = run(&["-c", "c.conf"], Some(dir.path()));
    assert!(
        o.stderr.contains("[debug] [input:tail:tail.0]"),
        "{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("[debug] [engine]") && !o.stderr.contains("[debug] [output"),
        "{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("[ info] [output:stdout:stdout.0]"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("[ info] [input:tail:tail.0]"),
        "{}",
        o.stderr
    );
}

/// `exit_on_eof` stops the whole agent once every file is read (Fluent Bit's
/// `flb_engine_exit`), also when another input would run forever; exit status 0 and
/// every line delivered.
#[test]
fn exit_on_eof_stops_the_agent_with_other_inputs_running() {
    let dir = Dir::new();
    let log = dir.file("a.log", "one\ntwo\n");
    dir.file(
        "c.conf",
        &format!(
            "[SERVICE]\n    flush 0.1\n[INPUT]\n    name tail\n    path {}\n    read_from_head on\n    exit_on_eof on\n    tag t\n[INPUT]\n    name dummy\n    tag d\n[OUTPUT]\n    name stdout\n    match t\n    format json_lines\n    json_date_key false\n",
            log.display()
        ),
    );
    let mut a = Agent::spawn_in(&dir, &["-c", "c.conf"], Some(dir.path()));
    assert_eq!(a.wait(T), Some(0), "{}", a.stderr());
    assert_eq!(a.stdout(), "{\"log\":\"one\"}\n{\"log\":\"two\"}\n");
}
