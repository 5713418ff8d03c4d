//! Where parser definitions come from (`parsers_file` relative to the working directory
//! or the main file, `-R`, YAML `parsers:`/`multiline_parsers:`, YAML parsers files) and
//! the errors that name the file and line of a bad one.

mod common;
use common::*;

const PARSERS: &str =
    "[PARSER]\n    name   kv\n    format regex\n    regex  ^(?<k>[a-z]+)=(?<v>.*)$\n";

fn dry_run(d: &Dir, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.push("--dry-run");
    run(&all, Some(d.path()))
}

/// The `[error]`/`[ help]` lines, timestamps stripped.
fn errors(o: &Output) -> Vec<String> {
    log_lines(&o.stderr)
        .into_iter()
        .filter(|l| l.starts_with("[error]") || l.starts_with("[ help]"))
        .collect()
}

fn main_conf(service: &str, input: &str) -> String {
    format!("[SERVICE]\n{service}[INPUT]\n    name tail\n    path /nonexistent/*.log\n{input}[OUTPUT]\n    name stdout\n    match *\n")
}

#[test]
fn parsers_file_is_found_from_the_cwd_then_from_the_main_files_directory() {
    let d = Dir::new();
    d.file("etc/parsers.conf", PARSERS);
    d.file(
        "etc/c.conf",
        &main_conf("    parsers_file parsers.conf\n", "    parser kv\n"),
    );
    // From the config's own directory, and from elsewhere (found next to the main file).
    assert_eq!(dry_run(&d, &["-c", "etc/c.conf"]).code, Some(0));
    let o = run(&["-c", "c.conf", "--dry-run"], Some(&d.path().join("etc")));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // -R adds one, as a [SERVICE] parsers_file would.
    d.file("etc/plain.conf", &main_conf("", "    parser kv\n"));
    assert_eq!(
        dry_run(&d, &["-c", "etc/plain.conf", "-R", "etc/parsers.conf"]).code,
        Some(0)
    );
}

#[test]
fn a_missing_parsers_file_names_every_path_tried() {
    let d = Dir::new();
    d.file("etc/c.conf", &main_conf("    parsers_file nope.conf\n", ""));
    let o = dry_run(&d, &["-c", "etc/c.conf"]);
    assert_eq!(o.code, Some(1));
    let e = errors(&o);
    assert_eq!(
        e[0],
        "[error] etc/c.conf:2: [config] could not open parsers file 'nope.conf': no such file (searched: nope.conf, etc/nope.conf)"
    );
}

#[test]
fn an_undefined_parser_names_the_files_searched_and_the_nearest_name() {
    let d = Dir::new();
    d.file("parsers.conf", PARSERS);
    d.file(
        "c.conf",
        &main_conf("    parsers_file parsers.conf\n", "    parser kb\n"),
    );
    let o = dry_run(&d, &["-c", "c.conf"]);
    assert_eq!(o.code, Some(1));
    assert_eq!(
        errors(&o)[..2],
        [
            "[error] c.conf:6: [config] parser 'kb' is not defined (searched: parsers.conf)",
            "[ help] did you mean 'kv'? define it in one of those files, or fix the name",
        ]
    );
    // Multiline parsers: the built-in ones are always there.
    d.file(
        "c.conf",
        &main_conf("", "    multiline.parser docker, jav\n"),
    );
    let o = dry_run(&d, &["-c", "c.conf"]);
    assert_eq!(o.code, Some(1));
    assert_eq!(
        errors(&o)[..2],
        [
            "[error] c.conf:5: [config] multiline parser 'jav' is not defined (no parsers file is loaded; built-in: docker, cri, go, python, java, ruby)",
            "[ help] did you mean 'java'? add 'parsers_file parsers.conf' to [SERVICE] with a file that defines it",
        ]
    );
}

#[test]
fn a_bad_parser_definition_names_its_file_and_line() {
    let d = Dir::new();
    d.file("c.conf", &main_conf("    parsers_file p.conf\n", ""));
    d.file(
        "p.conf",
        "[PARSER]\n    name bad\n    format regex\n    regex ^(?<a>[a-z+$\n",
    );
    let o = dry_run(&d, &["-c", "c.conf"]);
    assert_eq!(o.code, Some(1));
    assert!(
        errors(&o)[0].starts_with("[error] p.conf:4: "),
        "{:?}",
        errors(&o)
    );
    // Two parsers of one name: an error, as in Fluent Bit.
    d.file("p.conf", &format!("{PARSERS}{PARSERS}"));
    let o = dry_run(&d, &["-c", "c.conf"]);
    assert_eq!(o.code, Some(1));
    assert_eq!(
        errors(&o)[0],
        "[error] p.conf:5: [parser] parser named 'kv' already exists (first defined at p.conf:1)"
    );
    // [PARSER] in the main classic file is refused, as in Fluent Bit.
    d.file("c.conf", &format!("{}{PARSERS}", main_conf("", "")));
    let o = dry_run(&d, &["-c", "c.conf"]);
    assert_eq!(o.code, Some(1));
    assert!(errors(&o)[0].contains(
        "Sections 'multiline_parser' and 'parser' are not valid in the main configuration file"
    ));
}

#[test]
fn yaml_parsers_and_multiline_parsers_and_yaml_parsers_files() {
    let d = Dir::new();
    d.file(
        "c.yaml",
        concat!(
            "service:\n  parsers_file: more.yaml\n",
            "parsers:\n  - name: kv\n    format: regex\n    regex: '^(?<k>[a-z]+)=(?<v>.*)$'\n",
            "multiline_parsers:\n  - name: starts_with_date\n    type: regex\n    flush_timeout: 1000\n    rules:\n",
            "      - state: start_state\n        regex: '/^\\d{4}-\\d{2}-\\d{2}/'\n        next_state: cont\n",
            "      - state: cont\n        regex: '/^\\s+/'\n        next_state: cont\n",
            "pipeline:\n  inputs:\n    - name: tail\n      path: /nonexistent/*.log\n",
            "      parser: kv2\n      multiline.parser: starts_with_date\n",
            "  outputs:\n    - name: stdout\n      match: '*'\n",
        ),
    );
    d.file("more.yaml", "parsers:\n  - name: kv2\n    format: logfmt\n");
    let o = dry_run(&d, &["-c", "c.yaml"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}
