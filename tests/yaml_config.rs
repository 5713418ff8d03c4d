//! Fluent Bit's YAML format: every example in conf/ has a YAML twin that builds the same
//! pipeline and prints the same output; YAML errors name file:line:column and a fix.

mod common;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::config::{parser, yaml, Document};
use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Sections as (kind, [(key, value)]), without positions.
fn shape(doc: &Document) -> Vec<(String, Vec<(String, String)>)> {
    doc.sections
        .iter()
        .map(|s| {
            (
                format!("{:?}", s.kind),
                s.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect(),
            )
        })
        .collect()
}

fn twins() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("conf")).unwrap() {
        let conf = entry.unwrap().path();
        // parsers_*.conf are parsers files (parsers_file), not pipelines with a twin.
        let parsers_file = conf
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("parsers"));
        if conf.extension().and_then(|e| e.to_str()) == Some("conf") && !parsers_file {
            let twin = conf.with_extension("yaml");
            assert!(twin.exists(), "{} has no YAML twin", conf.display());
            out.push((conf, twin));
        }
    }
    assert!(out.len() >= 5);
    out
}

#[test]
fn every_example_has_a_yaml_twin_with_the_same_pipeline() {
    std::env::set_current_dir(root()).unwrap();
    for (conf, twin) in twins() {
        let a = parser::load(&conf).unwrap();
        let b = yaml::load(&twin).unwrap();
        assert_eq!(
            shape(&a),
            shape(&b),
            "{} vs {}",
            conf.display(),
            twin.display()
        );
        let (ca, cb) = (
            run(&["-c", conf.to_str().unwrap(), "-D"], Some(root())),
            run(&["-c", twin.to_str().unwrap(), "-D"], Some(root())),
        );
        assert_eq!(
            ca.code,
            cb.code,
            "{}: {}\n{}",
            twin.display(),
            ca.stderr,
            cb.stderr
        );
    }
}

fn output_of(conf: &Path) -> Vec<String> {
    let dir = Dir::new();
    let mut a = Agent::spawn_in(
        &dir,
        &["-c", conf.to_str().unwrap(), "-f", "0.2"],
        Some(root()),
    );
    a.wait_lines(2, Duration::from_secs(20));
    let o = a.stop(Duration::from_secs(10));
    // Dates differ between runs; everything after them must not.
    o.stdout
        .lines()
        .take(2)
        .map(|l| {
            l.split_once(",\"message\"")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn yaml_and_classic_twins_print_the_same_records() {
    let a = output_of(&root().join("conf/dummy-json.conf"));
    let b = output_of(&root().join("conf/dummy-json.yaml"));
    assert_eq!(a, b);
    assert!(a[0].contains("\"env\":\"demo\""), "{a:?}");
}

fn yaml_error(text: &str) -> (Option<i32>, String) {
    let dir = Dir::new();
    dir.file("c.yml", text);
    let o = run(&["-c", "c.yml", "--dry-run"], Some(dir.path()));
    (o.code, log_lines(&o.stderr).join("\n"))
}

#[test]
fn yaml_errors_have_position_and_fix() {
    let (code, err) = yaml_error("pipeline:\n  inputs:\n    - name: random\n   samples: 5\n");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("[error] c.yml:4:") && err.contains("invalid YAML"),
        "{err}"
    );
    assert!(err.contains("[ help] indent with spaces only"), "{err}");
    let (_, err) = yaml_error("pipeline:\n  inputs:\n    - samples: 5\n");
    assert!(err.starts_with("[error] c.yml:3:7: [config] an item of 'inputs' has no 'name'\n[ help] add 'name: <plugin>'"), "{err}");
    let (_, err) = yaml_error("pipline:\n  inputs: []\n");
    assert!(err.starts_with("[error] c.yml:1:1: [config] unknown section 'pipline'\n[ help] did you mean 'pipeline'?"), "{err}");
    let (_, err) = yaml_error("pipeline:\n  inputs:\n    - name: random\n      samples: [1, 2]\n");
    // A list is a repeated property: fine for multi-value ones, an error for the rest.
    assert!(err.starts_with("[error] c.yml:4:20: [config] random: configuration property 'samples' is set 2 times (first at c.yml:4:17)"), "{err}");
    let (_, err) =
        yaml_error("pipeline:\n  inputs:\n    - name: random\n      samples:\n        a: 1\n");
    assert!(
        err.starts_with(
            "[error] c.yml:5:9: [config] 'samples' must be a single value, not a mapping"
        ),
        "{err}"
    );
    // Validation is shared with the classic format: same property errors, with columns.
    let (_, err) = yaml_error("pipeline:\n  inputs:\n    - name: random\n      sample: 5\n");
    assert!(
        err.starts_with(
            "[error] c.yml:4:7: [config] random: unknown configuration property 'sample'."
        ),
        "{err}"
    );
    let (_, err) = yaml_error("includes:\n  - nothere.yaml\n");
    assert!(
        err.contains("c.yml:2:5: could not open configuration file"),
        "{err}"
    );
}

#[test]
fn includes_are_relative_to_the_including_file_and_pipelines_merge() {
    let dir = Dir::new();
    dir.file("sub/outputs.yaml", "pipeline:\n  outputs:\n    - name: stdout\n      match: '*'\n      format: json_lines\n      jsonDateKey: false\n");
    dir.file("sub/main.yaml", "includes:\n  - outputs.yaml\nservice:\n  flush: 0.2\npipeline:\n  inputs:\n    - name: dummy\n      samples: 1\n");
    let mut a = Agent::spawn_in(&dir, &["-c", "sub/main.yaml"], Some(dir.path()));
    a.wait_lines(1, Duration::from_secs(10));
    let o = a.stop(Duration::from_secs(10));
    assert_eq!(o.stdout, "{\"message\":\"dummy\"}\n");
}
