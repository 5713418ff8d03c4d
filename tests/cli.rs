//! The command line: version, help, plugin help, usage errors, dry run.

mod common;
use common::*;

#[test]
fn version_exits_zero() {
    let o = run(&["-V"], None);
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.starts_with("agent v"), "{}", o.stdout);
}

#[test]
fn help_lists_plugins_and_time_forms() {
    let o = run(&["--help"], None);
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.starts_with("Usage: agent [OPTION]\n"));
    for needle in ["random", "dummy", "stdout", "record_modifier", "500ms"] {
        assert!(
            o.stdout.contains(needle),
            "help lacks {needle}:\n{}",
            o.stdout
        );
    }
    assert_eq!(o.stderr, "");
}

#[test]
fn plugin_help_is_generated_from_the_table() {
    let o = run(&["-i", "random", "-h"], None);
    assert_eq!(o.code, Some(0));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "INPUT: random");
    for prop in ["samples", "interval_sec", "interval_nsec"] {
        assert!(o.stdout.contains(prop), "{}", o.stdout);
    }
    assert!(o.stdout.contains("default: -1"));
    let o = run(&["-o", "stdout", "-h"], None);
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.contains("json_date_format"), "{}", o.stdout);
    assert!(!o.stdout.contains("NETWORKING"), "{}", o.stdout);
    // Networked outputs also list the net.* and tls.* tables they accept.
    let o = run(&["-o", "tcp", "-h"], None);
    assert_eq!(o.code, Some(0));
    let net = o.stdout.find("\nNETWORKING\n").expect("NETWORKING section");
    let tls = o.stdout.find("\nTLS\n").expect("TLS section");
    assert!(o.stdout[..net].contains("raw_message_key"), "{}", o.stdout);
    assert!(
        o.stdout[net..tls].contains("net.keepalive_idle_timeout  "),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout[tls..].contains("tls.verify_hostname"),
        "{}",
        o.stdout
    );
    let o = run(&["-F", "record_modifier", "-h"], None);
    assert_eq!(o.code, Some(0));
    let o = run(&["-i", "nope", "-h"], None);
    assert_eq!(o.code, Some(1));
}

#[test]
fn unknown_flag_prints_help_and_exits_one() {
    let o = run(&["--no-such-flag"], None);
    assert_eq!(o.code, Some(1));
    assert_eq!(o.stderr, "agent: unrecognized option '--no-such-flag'\n");
    assert!(o.stdout.starts_with("Usage: agent"));
}

#[test]
fn dry_run_valid_and_invalid() {
    let dir = Dir::new();
    let ok = dir.file(
        "ok.conf",
        "[INPUT]\n    name random\n[OUTPUT]\n    name stdout\n    match *\n",
    );
    let o = run(&["-c", ok.to_str().unwrap(), "--dry-run"], None);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(
        o.stderr.trim_end().lines().last(),
        Some("configuration test is successful")
    );
    assert_eq!(o.stdout, "");

    let bad = dir.file(
        "bad.conf",
        "[INPUT]\n    name random\n    no_such_property 42\n",
    );
    let o = run(&["-c", bad.to_str().unwrap(), "-D"], None);
    assert_eq!(o.code, Some(1));
    assert!(!o.stderr.contains("configuration test is successful"));
}

#[test]
fn command_line_pipeline_runs() {
    let dir = Dir::new();
    let mut a = Agent::spawn_in(
        &dir,
        &[
            "-i",
            "dummy",
            "-p",
            "samples=1",
            "-p",
            "start_time_sec=0",
            "-p",
            "start_time_nsec=0",
            "-o",
            "stdout",
            "-m",
            "*",
            "-p",
            "format=json_lines",
            "-f",
            "0.2",
        ],
        None,
    );
    a.wait_lines(1, std::time::Duration::from_secs(10));
    let o = a.stop(std::time::Duration::from_secs(10));
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.starts_with("{\"date\":"), "{}", o.stdout);
    assert!(
        o.stdout.ends_with(",\"message\":\"dummy\"}\n"),
        "{}",
        o.stdout
    );
}

#[test]
fn command_line_errors() {
    let o = run(&["-i", "no_such_plugin", "-o", "stdout"], None);
    assert_eq!(o.code, Some(1));
    let lines = log_lines(&o.stderr);
    assert_eq!(lines[0], "[error] command line (-i no_such_plugin): [config] section 'no_such_plugin' tried to instance a plugin name that doesn't exist");
    assert_eq!(
        lines.last().unwrap(),
        "[error] configuration file contains errors, aborting."
    );

    let o = run(
        &[
            "-i",
            "random",
            "-p",
            "no_such_property=42",
            "-o",
            "stdout",
            "-m",
            "*",
        ],
        None,
    );
    assert_eq!(o.code, Some(1));
    let lines = log_lines(&o.stderr);
    assert_eq!(lines[0], "[error] command line (-p no_such_property=42): [config] random: unknown configuration property 'no_such_property'. The following properties are allowed: samples, interval_sec, and interval_nsec.");
    assert_eq!(lines[1], "[ help] try the command: agent -i random -h");

    let o = run(&[], None);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("no configuration given"), "{}", o.stderr);

    let o = run(&["-c", "/nonexistent/fluent-bit.conf"], None);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("/nonexistent/fluent-bit.conf"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("could not open configuration file"),
        "{}",
        o.stderr
    );
}

#[test]
fn tag_quiet_and_log_file_flags() {
    let dir = Dir::new();
    let log = dir.path().join("agent.log");
    let log_s = log.to_str().unwrap().to_string();
    let mut a = Agent::spawn_in(
        &dir,
        &[
            "-i",
            "dummy",
            "-t",
            "my.tag",
            "-p",
            "samples=1",
            "-o",
            "stdout",
            "-m",
            "my.*",
            "-f",
            "0.2",
            "-l",
            &log_s,
        ],
        None,
    );
    a.wait_lines(1, std::time::Duration::from_secs(10));
    let o = a.stop(std::time::Duration::from_secs(10));
    assert!(o.stdout.starts_with("[0] my.tag: [["), "{}", o.stdout);
    assert!(
        !o.stderr.contains("[ info]"),
        "logs go to the file:\n{}",
        o.stderr
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("[ info] [input:dummy:dummy.0] initializing"),
        "{logged}"
    );

    let mut a = Agent::spawn_in(
        &dir,
        &[
            "-q",
            "-i",
            "dummy",
            "-p",
            "samples=1",
            "-o",
            "stdout",
            "-m",
            "*",
            "-f",
            "0.2",
        ],
        None,
    );
    a.wait_lines(1, std::time::Duration::from_secs(10));
    let o = a.stop(std::time::Duration::from_secs(10));
    let lines = log_lines(&o.stderr);
    // -q silences the log; only the signal line, which Fluent Bit prints raw, remains.
    assert_eq!(lines, ["[engine] caught signal (SIGTERM)"], "{}", o.stderr);
}

/// One input and one output: an output without Match takes everything (Fluent Bit's
/// 1:1 quick setup); with two inputs it takes nothing and says so.
#[test]
fn one_input_one_output_routes_without_match() {
    let dir = Dir::new();
    let mut a = Agent::spawn_in(
        &dir,
        &["-i", "dummy", "-p", "samples=2", "-o", "stdout"],
        None,
    );
    a.wait_lines(2, std::time::Duration::from_secs(10));
    let out = a.stop(std::time::Duration::from_secs(10));
    assert_eq!(
        out.stdout.matches("{\"message\"=>\"dummy\"}").count(),
        2,
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("NO match"), "{}", out.stderr);
    let a = Agent::spawn_in(
        &dir,
        &[
            "-i",
            "dummy",
            "-p",
            "samples=1",
            "-i",
            "dummy",
            "-p",
            "samples=1",
            "-o",
            "stdout",
        ],
        None,
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let out = a.stop(std::time::Duration::from_secs(10));
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("[router] NO match for stdout.0 output instance"),
        "{}",
        out.stderr
    );
}

/// A config with only [SERVICE] (FireLens fragments, health checks) passes --dry-run
/// and runs until stopped, as Fluent Bit does, with a warning that it reads nothing.
#[test]
fn a_service_only_config_runs_and_says_it_reads_nothing() {
    let dir = Dir::new();
    dir.file("c.conf", "[SERVICE]\n    flush 1\n");
    let o = run(&["-c", "c.conf", "--dry-run"], Some(dir.path()));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("no input defined: the agent runs but reads nothing"),
        "{}",
        o.stderr
    );
    let a = Agent::spawn_in(&dir, &["-c", "c.conf"], Some(dir.path()));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let alive = unsafe { libc::kill(a.pid() as i32, 0) } == 0
        && !std::fs::read_to_string(format!("/proc/{}/stat", a.pid()))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(alive, "it keeps running until stopped");
    let o = a.stop(std::time::Duration::from_secs(10));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}
