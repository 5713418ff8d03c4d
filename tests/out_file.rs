//! The `file` output against Fluent Bit 5.1.1: every case in
//! tests/data/fluent-bit/file must write the same files, byte for byte, as Fluent Bit
//! did (`<case>.out/`, the tree under `${OUT_DIR}`) and log the same `[output:file:...]`
//! and `[record accessor]` lines (`<case>.expected.log`). Then what Fluent Bit has no
//! oracle for: a directory that cannot be opened or created is retried and nothing is
//! lost, size rotation, and config errors.

mod common;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn data() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fluent-bit/file"
    ))
}

/// Every file under `root`, by path relative to it.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn show(t: &BTreeMap<PathBuf, Vec<u8>>) -> String {
    t.iter()
        .map(|(p, b)| format!("== {}\n{}", p.display(), String::from_utf8_lossy(b)))
        .collect()
}

/// The output's log lines (`[output:file:...]`, `[record accessor]`), without time.
fn file_log(stderr: &str) -> Vec<String> {
    log_lines(stderr)
        .into_iter()
        .filter(|l| {
            (l.contains("[output:file:") && !l.contains("worker #"))
                || l.contains("[record accessor]")
        })
        .collect()
}

/// One case: the agent run in the data dir with `OUT_DIR` set; `Err` says what differs.
fn run_case(case: &str) -> Result<(), String> {
    let dir = data();
    let conf = format!("{case}.conf");
    let want = tree(&dir.join(format!("{case}.out")));
    let logs = Dir::new();
    let out = Dir::new();
    let mut agent =
        Agent::spawn_in_env(&logs, &["-c", &conf], Some(dir), &[("OUT_DIR", out.path())]);
    let endless = std::fs::read_to_string(dir.join(&conf))
        .unwrap()
        .contains("dummy");
    let code = if endless {
        // dummy never ends: stop once the files are complete.
        let deadline = Instant::now() + Duration::from_secs(15);
        while tree(out.path()) != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        agent.signal(libc::SIGTERM);
        agent.wait(Duration::from_secs(15))
    } else {
        agent.wait(Duration::from_secs(20))
    };
    let got = tree(out.path());
    let stderr = agent.stderr();
    if code != Some(0) || got != want {
        return Err(format!(
            "{case}: exit {code:?}\n--- agent\n{}--- fluent-bit\n{}--- stderr\n{stderr}",
            show(&got),
            show(&want)
        ));
    }
    // Fluent Bit's lines, in order; the agent may add to a line (the engine's "; N
    // records dropped" after an error), never change it.
    let want_log =
        std::fs::read_to_string(dir.join(format!("{case}.expected.log"))).unwrap_or_default();
    let log = file_log(&stderr);
    let same = want_log.lines().count() == log.len()
        && want_log.lines().zip(&log).all(|(w, g)| g.starts_with(w));
    if !same {
        return Err(format!(
            "{case}: log lines differ\n--- agent\n{}\n--- fluent-bit\n{want_log}",
            log.join("\n")
        ));
    }
    Ok(())
}

#[test]
fn every_captured_case_writes_fluent_bits_files_and_logs() {
    let mut cases: Vec<String> = std::fs::read_dir(data())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".out").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 23, "only {} cases", cases.len());
    let failures: Vec<String> = std::thread::scope(|s| {
        cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|c| run_case(c).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const RECORDS: &str = "{\"m\":\"one\"}\n{\"m\":\"two\"}\n{\"m\":\"three\"}\n";

/// A config reading `records.jsonl` of `d` once, retrying every 2 s.
fn tail_conf(d: &Dir, output: &str) -> String {
    d.file("records.jsonl", RECORDS);
    d.file("parsers.conf", "[PARSER]\n    name json\n    format json\n");
    format!(
        "[SERVICE]\n    flush 0.2\n    grace 10\n    parsers_file parsers.conf\n    \
         scheduler.base 1\n    scheduler.cap 1\n\
         [INPUT]\n    name tail\n    tag t\n    path records.jsonl\n    parser json\n    \
         read_from_head on\n    exit_on_eof on\n\
         [OUTPUT]\n    name file\n    match *\n    format plain\n{output}"
    )
}

#[test]
fn a_directory_that_cannot_be_opened_or_created_is_retried_and_nothing_is_lost() {
    let d = Dir::new();
    // Without mkdir: a missing directory.
    let missing = d.path().join("later");
    // With mkdir: a parent that is a regular file cannot be a directory.
    let blocker = d.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let conf = tail_conf(
        &d,
        &format!(
            // No retry limit: the directories are fixed only after both failures are
            // logged, and a slow test thread must not race the last retry.
            "    path {}\n    retry_limit no_limits\n[OUTPUT]\n    name file\n    match *\n    \
             format plain\n    retry_limit no_limits\n    mkdir on\n    path {}/sub\n",
            missing.display(),
            blocker.display()
        ),
    );
    d.file("fluent-bit.conf", &conf);
    let mut a = Agent::spawn_in(&d, &["-c", "fluent-bit.conf"], Some(d.path()));
    a.wait_until(Duration::from_secs(10), "two retries logged", |_, err| {
        err.contains("for file.0 (error opening") && err.contains("for file.1 (error opening")
    });
    let err = a.stderr();
    let retry = log_lines(&err)
        .into_iter()
        .find(|l| l.contains("file.0 (error opening"))
        .unwrap();
    let want = format!(
        "[ warn] [engine] failed to flush chunk for file.0 (error opening: {}/t: No such file \
         or directory (os error 2)), retry in ",
        missing.display()
    );
    assert!(
        retry.starts_with(&want) && retry.ends_with(" seconds: 3 records"),
        "{retry}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Fix both; the retries deliver every record once.
    std::fs::create_dir(&missing).unwrap();
    std::fs::remove_file(&blocker).unwrap();
    let code = a.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", a.stderr());
    let want = "{\"m\":\"one\"}\n{\"m\":\"two\"}\n{\"m\":\"three\"}\n";
    assert_eq!(std::fs::read_to_string(missing.join("t")).unwrap(), want);
    assert_eq!(
        std::fs::read_to_string(blocker.join("sub/t")).unwrap(),
        want
    );
}

/// Rotated files of `base` in `dir`, by name.
fn rotated(dir: &Path, base: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&format!("{base}.")))
        .collect();
    v.sort();
    v
}

/// 40 records of 21 bytes, a few per flush, into a file rotated past 200 bytes; returns
/// the temp dir (`out` in it), the rotated files' names and the agent's log.
fn rotation_run(gzip: bool, max_files: usize) -> (Dir, Vec<String>, String) {
    let d = Dir::new();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let conf = format!(
        "[SERVICE]\n    flush 0.1\n    grace 5\n\
         [INPUT]\n    name dummy\n    tag r\n    rate 40\n    samples 40\n    \
         dummy {{\"message\":\"rotate me please\"}}\n\
         [OUTPUT]\n    name file\n    match *\n    path {}\n    format template\n    \
         template {{message}} {{n}}\n    rotate on\n    rotate_max_size 200\n    \
         rotate_max_files {max_files}\n    rotate_gzip {gzip}\n",
        out.display()
    );
    let mut a = Agent::start(&conf);
    let all_rotated = |n: usize| move |_: &str, err: &str| err.matches("] rotated ").count() >= n;
    // 840 bytes: rotated at least 3 times, whatever the flush boundaries.
    a.wait_until(Duration::from_secs(15), "3 rotations", all_rotated(3));
    let o = a.stop(Duration::from_secs(10));
    let names = rotated(&out, "r");
    for n in &names {
        // r.YYYYMMDD_HHMMSS_xxxxxxxx(.gz)
        let suffix = n.strip_prefix("r.").unwrap();
        let stem = suffix.strip_suffix(".gz");
        assert_eq!(stem.is_some(), gzip, "{n}");
        let stem = stem.unwrap_or(suffix).as_bytes();
        assert_eq!(stem.len(), 24, "{n}");
        assert!(
            stem[..8].iter().all(u8::is_ascii_digit) && stem[8] == b'_',
            "{n}"
        );
        assert!(stem[16..].iter().all(u8::is_ascii_hexdigit), "{n}");
        // Rotated once past the limit, in whole lines.
        let text = read_maybe_gz(&out.join(n));
        assert!(text.len() >= 200, "{n}: rotated before the limit");
        assert!(
            text.lines().all(|l| l == "rotate me please {n}"),
            "{n}: {text}"
        );
    }
    assert!(
        o.stderr.contains(&format!(
            "[output:file:file.0] file rotation enabled: rotate_max_size=200, \
             rotate_max_files={max_files}, rotate_gzip={gzip}"
        )),
        "{}",
        o.stderr
    );
    (d, names, o.stderr)
}

fn read_maybe_gz(p: &Path) -> String {
    let mut s = String::new();
    let Ok(f) = std::fs::File::open(p) else {
        return s;
    };
    if p.extension().is_some_and(|e| e == "gz") {
        flate2::read::MultiGzDecoder::new(f)
            .read_to_string(&mut s)
            .unwrap();
    } else {
        std::io::BufReader::new(f).read_to_string(&mut s).unwrap();
    }
    s
}

#[test]
fn files_rotate_by_size_and_nothing_is_lost() {
    let (d, names, _) = rotation_run(false, 10);
    let out = d.path().join("out");
    assert!(names.len() >= 3, "{names:?}");
    let mut text: String = names.iter().map(|n| read_maybe_gz(&out.join(n))).collect();
    text.push_str(&read_maybe_gz(&out.join("r")));
    assert_eq!(text, "rotate me please {n}\n".repeat(40));
}

#[test]
fn rotated_files_are_gzipped_and_the_oldest_removed() {
    let (_, names, log) = rotation_run(true, 2);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        log.contains("cleaning up old rotated files: removing 1 files (keeping 2)"),
        "{log}"
    );
}

fn file_error(props: &str) -> Vec<String> {
    refused_config(&format!(
        "[SERVICE]\n    flush 0.2\n[INPUT]\n    name dummy\n    samples 1\n\
         [OUTPUT]\n    name file\n    match *\n{props}"
    ))
}

#[test]
fn bad_values_are_errors_at_their_line() {
    let l = file_error("    format csv\n    delimiter ;\n");
    assert!(
        l[0].contains("fluent-bit.conf:10:") && l[0].contains("delimiter"),
        "{l:?}"
    );
    assert!(l.join("\n").contains("tab, space or comma"), "{l:?}");
    let l = file_error("    path /tmp/$x\n");
    assert!(
        l.join("\n")
            .contains("fallback_file is required when dynamic destinations"),
        "{l:?}"
    );
    let l = file_error("    path $dir/x\n    fallback_file f\n");
    assert!(l.join("\n").contains("static prefix"), "{l:?}");
    let l = file_error("    on_limit_reached fallback\n");
    assert!(
        l.join("\n")
            .contains("fallback_file is required for fallback actions"),
        "{l:?}"
    );
    let l = file_error("    format xml\n");
    assert!(
        l[0].contains("'format'") || l[0].contains("format"),
        "{l:?}"
    );
    let l = file_error("    rotate on\n    rotate_max_files 0\n");
    assert!(l[0].contains("rotate_max_files"), "{l:?}");
    let l = file_error("    rotate on\n    rotate_max_size 0\n");
    assert!(l[0].contains("rotate_max_size"), "{l:?}");
    let l = file_error("    file $a[b\n    fallback_file f\n");
    assert!(l[0].contains("record accessor"), "{l:?}");
}

/// Metric sets routed to `file` are written in cmetrics' text form, as Fluent Bit's
/// file output writes them (tests/data/fluent-bit/file/metrics): the first set equals
/// Fluent Bit's but for the scrape time at the start of each line.
#[test]
fn metric_sets_are_written_as_fluent_bits_text() {
    let dir = data().join("metrics");
    let text = std::fs::read_to_string(data().join("../processors_metrics/scrape.txt")).unwrap();
    let target = common::http_sink::HttpSink::scripted(move |_, _| {
        common::http_sink::Answer::ok().body(&text)
    });
    let out = Dir::new();
    let conf = std::fs::read_to_string(dir.join("scrape_to_file.yaml"))
        .unwrap()
        .replace("${SCRAPE_PORT}", &target.port().to_string())
        .replace("${OUT_DIR}", out.path().to_str().unwrap());
    let tmp = Dir::new();
    let path = tmp.file("fluent-bit.yaml", &conf);
    let a = Agent::spawn_in(&tmp, &["-c", path.to_str().unwrap()], None);
    let file = out.path().join("m.txt");
    let want = std::fs::read_to_string(dir.join("scrape_to_file.expected")).unwrap();
    let n = want.lines().count();
    let end = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = std::fs::read_to_string(&file).unwrap_or_default();
        if got.lines().count() >= n {
            break got;
        }
        assert!(Instant::now() < end, "{got}");
        std::thread::sleep(Duration::from_millis(100));
    };
    a.stop(Duration::from_secs(30));
    // `2026-12-01T10:36:28.047722007Z ` then the sample; one time for the whole set.
    let masked = |t: &str| -> Vec<String> {
        t.lines()
            .take(n)
            .map(|l| format!("TIME{}", &l[30..]))
            .collect()
    };
    assert_eq!(masked(&got), masked(&want), "{got}");
    let times: std::collections::BTreeSet<&str> = got.lines().take(n).map(|l| &l[..30]).collect();
    assert_eq!(times.len(), 1, "{got}");
}
