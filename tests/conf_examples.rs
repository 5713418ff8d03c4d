//! Every example in conf/ is valid as it is, and the stdout ones run and print.

mod common;
use std::path::Path;
use std::time::Duration;

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `parsers_*.conf` hold [PARSER]/[MULTILINE_PARSER] sections for a `parsers_file`, not
/// a pipeline.
fn is_parsers_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("parsers"))
}

#[test]
fn every_example_config_passes_dry_run() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") || is_parsers_file(&path) {
            continue;
        }
        let o = run(&["-c", path.to_str().unwrap(), "--dry-run"], Some(root()));
        assert_eq!(o.code, Some(0), "{}: {}", path.display(), o.stderr);
        checked += 1;
    }
    assert!(checked >= 3, "conf/ should hold runnable examples");
}

#[test]
fn random_stdout_example_prints_five_records() {
    let dir = Dir::new();
    let conf = root().join("conf/random-stdout.conf");
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap(), "-f", "0.5"], None);
    a.wait_lines(5, Duration::from_secs(20));
    let o = a.stop(Duration::from_secs(10));
    assert_eq!(o.code, Some(0));
    assert_eq!(o.stdout.lines().count(), 5);
    // The index restarts with every flush; two records may share one under load.
    assert!(
        o.stdout
            .lines()
            .all(|l| l.starts_with('[') && l.contains("] random.0: [[")),
        "{}",
        o.stdout
    );
}

#[test]
fn dummy_json_example_enriches_records() {
    let dir = Dir::new();
    let conf = root().join("conf/dummy-json.conf");
    let mut a = Agent::spawn_in(&dir, &["-c", conf.to_str().unwrap()], None);
    a.wait_lines(2, Duration::from_secs(20));
    let o = a.stop(Duration::from_secs(10));
    let first = o.stdout.lines().next().unwrap();
    assert!(first.starts_with("{\"date\":\"20"), "{first}");
    assert!(
        first.contains("\"message\":\"hello\",\"env\":\"demo\",\"host\":\""),
        "{first}"
    );
}
