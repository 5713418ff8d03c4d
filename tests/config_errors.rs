//! Every bad configuration stops the agent before anything runs (exit 1, nothing on
//! stdout) with `file:line`, what is wrong, and how to fix it.

mod common;
use common::*;

/// Writes `conf` as `c.conf` in a temp dir, runs `agent -c c.conf --dry-run` from that
/// dir; returns (exit code, log lines without timestamps).
fn check(conf: &str) -> (Option<i32>, Vec<String>) {
    let dir = Dir::new();
    dir.file("c.conf", conf);
    let o = run(&["-c", "c.conf", "--dry-run"], Some(dir.path()));
    assert_eq!(o.stdout, "", "nothing may run");
    (o.code, log_lines(&o.stderr))
}

/// Asserts exit 1 with exactly `error` (and `help`, when given) as the first lines.
fn fails(conf: &str, error: &str, help: Option<&str>) {
    let (code, lines) = check(conf);
    assert_eq!(code, Some(1), "{lines:#?}");
    assert_eq!(lines[0], format!("[error] {error}"), "{lines:#?}");
    if let Some(help) = help {
        assert_eq!(lines[1], format!("[ help] {help}"), "{lines:#?}");
    }
    assert_eq!(
        lines.last().unwrap(),
        "[error] configuration file contains errors, aborting."
    );
}

const OUT: &str = "[OUTPUT]\n    name stdout\n    match *\n";

#[test]
fn unknown_plugin_names() {
    fails(
        &format!("[INPUT]\n    name no_such_plugin\n{OUT}"),
        "c.conf:1: [config] section 'no_such_plugin' tried to instance a plugin name that doesn't exist",
        Some("available input plugins: conntrack, cpu, disk, dummy, exec, fluentbit_metrics, forward, head, http, kafka, kmsg, mem, netif, nflog, node_exporter_metrics, proc, prometheus_scrape, random, stdin, syslog, systemd, tail, tcp, udp; list them with: agent -h"),
    );
    fails(
        "[INPUT]\n    name random\n[OUTPUT]\n    name stdot\n    match *\n",
        "c.conf:3: [config] section 'stdot' tried to instance a plugin name that doesn't exist",
        Some("did you mean 'stdout'? available output plugins: cloudwatch_logs, counter, es, file, forward, http, kafka, loki, null, opensearch, opentelemetry, prometheus_exporter, prometheus_remote_write, stdout, tcp; list them with: agent -h"),
    );
    fails(
        &format!("[INPUT]\n    name random\n[FILTER]\n    name no_such_plugin\n    match *\n{OUT}"),
        "c.conf:3: [config] section 'no_such_plugin' tried to instance a plugin name that doesn't exist",
        None,
    );
}

#[test]
fn missing_name() {
    fails(
        &format!("[INPUT]\n    tag x\n{OUT}"),
        "c.conf:1: [config] section 'input' is missing the 'name' property",
        Some("add a line such as 'Name random' to the [INPUT] section"),
    );
}

#[test]
fn unknown_property_lists_allowed_and_suggests() {
    fails(
        &format!("[INPUT]\n    name random\n    sample 3\n{OUT}"),
        "c.conf:3: [config] random: unknown configuration property 'sample'. The following properties are allowed: samples, interval_sec, and interval_nsec.",
        Some("did you mean 'samples'? try the command: agent -i random -h"),
    );
    fails(
        "[INPUT]\n    name random\n[OUTPUT]\n    name stdout\n    match *\n    no_such_property 42\n",
        "c.conf:6: [config] stdout: unknown configuration property 'no_such_property'. The following properties are allowed: format, json_date_format, and json_date_key.",
        Some("try the command: agent -o stdout -h"),
    );
}

#[test]
fn property_set_twice() {
    fails(
        &format!("[INPUT]\n    name random\n    samples 3\n    Samples 4\n{OUT}"),
        "c.conf:4: [config] random: configuration property 'samples' is set 2 times (first at c.conf:3)",
        Some("remove one of the two 'samples' lines"),
    );
}

#[test]
fn bad_values_by_type() {
    fails(
        &format!("[INPUT]\n    name dummy\n    fixed_timestamp maybe\n{OUT}"),
        "c.conf:3: [config] dummy: invalid value 'maybe' for property 'fixed_timestamp': expected a boolean: on, off, true, false, yes or no",
        None,
    );
    fails(
        &format!("[INPUT]\n    name dummy\n    mem_buf_limit 5MiB\n{OUT}"),
        "c.conf:3: [config] dummy: invalid value '5MiB' for property 'mem_buf_limit': expected a size such as 512, 32k, 5M or 1G (decimal units)",
        None,
    );
    fails(
        &format!("[INPUT]\n    name random\n    samples many\n{OUT}"),
        "c.conf:3: [config] random: invalid value 'many' for property 'samples': expected an integer such as 5 or -1",
        None,
    );
    fails(
        &format!("[INPUT]\n    name random\n{OUT}    retry_limit sometimes\n"),
        "c.conf:6: [config] stdout: invalid value 'sometimes' for property 'retry_limit': expected a number > 0, no_limits, false or no_retries",
        None,
    );
    fails(
        &format!("[SERVICE]\n    flush soon\n[INPUT]\n    name random\n{OUT}"),
        "c.conf:2: [config] service: invalid value 'soon' for property 'flush': expected a number such as 1 or 0.5",
        None,
    );
    fails(
        &format!("[INPUT]\n    name dummy\n    dummy {{\"message\": oops}}\n{OUT}"),
        "c.conf:3: [config] dummy: invalid value '{\"message\": oops}' for property 'dummy': expected a JSON object such as {\"message\":\"dummy\"}",
        None,
    );
    fails(
        &format!("[INPUT]\n    name stdin_not_here\n{OUT}"),
        "c.conf:1: [config] section 'stdin_not_here' tried to instance a plugin name that doesn't exist",
        None,
    );
}

#[test]
fn filter_without_match() {
    fails(
        &format!(
            "[INPUT]\n    name random\n[FILTER]\n    name record_modifier\n    record a b\n{OUT}"
        ),
        "c.conf:3: [filter] NO match rule for record_modifier.0 filter instance",
        Some("add 'Match *' (or a tag pattern, or 'Match_Regex') to the [FILTER] section"),
    );
}

#[test]
fn indentation_errors_keep_fluent_bits_texts() {
    let (code, lines) = check("[INPUT]\n    name random\n[OUTPUT]\n      name stdout\n");
    assert_eq!(code, Some(1));
    assert!(
        lines[0].starts_with(
            "[error] c.conf:4: [config] extra indentation level found: invalid indentation level"
        ),
        "{lines:#?}"
    );
    let (_, lines) = check("[INPUT]\n    name random\n  samples 1\n");
    assert!(
        lines[0].starts_with(
            "[error] c.conf:3: [config] indentation level is too low: invalid indentation level"
        ),
        "{lines:#?}"
    );
    let (_, lines) = check("[INPUT]\n    name random\n\t   samples 1\n");
    assert!(lines[0].starts_with("[error] c.conf:3: [config] inconsistent use of tab and space: invalid indentation level"), "{lines:#?}");
    assert!(lines[0].contains("set by line 2"), "{lines:#?}");
}

#[test]
fn line_grammar_errors() {
    let (code, lines) = check("[INPUT\n    name random\n");
    assert_eq!(code, Some(1));
    assert_eq!(lines[0], "[error] c.conf:1: [config] bad header definition (a section header needs a closing ']', e.g. [INPUT])");
    let (_, lines) = check("[INPUT]\n    name\trandom\n");
    assert!(
        lines[0].starts_with(
            "[error] c.conf:2: [config] undefined value - check config is in valid classic format"
        ),
        "{lines:#?}"
    );
}

#[test]
fn missing_include_names_the_file() {
    let (code, lines) = check("@INCLUDE nothere.conf\n[INPUT]\n    name random\n");
    assert_eq!(code, Some(1));
    assert!(
        lines[0].starts_with("[error] c.conf:1: [config] I cannot open nothere.conf file"),
        "{lines:#?}"
    );
}

#[test]
fn unknown_service_key_is_a_warning_not_silence() {
    let (code, lines) = check(&format!(
        "[SERVICE]\n    flsh 1\n    hot_reload.timeout 5\n[INPUT]\n    name random\n{OUT}"
    ));
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(lines.contains(&"[ warn] c.conf:2: [config] service: unknown property 'flsh' is ignored (did you mean 'flush'?)".to_string()), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("[ warn] c.conf:3: [config] service: 'hot_reload.timeout' is a Fluent Bit setting that agent does not support yet")), "{lines:#?}");
    assert_eq!(lines.last().unwrap(), "configuration test is successful");
}

#[test]
fn includes_set_and_env_build_the_pipeline() {
    // @INCLUDE relative to the main file's dir, @SET used before its definition,
    // ${VAR} from the environment and ${VAR:-default}, CRLF line ends.
    let dir = Dir::new();
    dir.file("conf/outputs.conf", "[OUTPUT]\r\n    name stdout\r\n    match ${TAG}\r\n    format ${FMT:-json_lines}\r\n    json_date_key false\r\n");
    dir.file(
        "conf/main.conf",
        "[INPUT]\r\n    name dummy\r\n    tag ${TAG}\r\n    samples 1\r\n    dummy {\"who\":\"${WHO}\"}\r\n@INCLUDE outputs.conf\r\n@SET TAG=from_set\r\n[SERVICE]\r\n    flush 0.2\r\n",
    );
    let mut a = {
        let out = dir.path().join("agent.stdout");
        let err = dir.path().join("agent.stderr");
        let child = std::process::Command::new(BIN)
            .args(["-c", "conf/main.conf"])
            .current_dir(dir.path())
            .env("WHO", "env-user")
            .env("FMT", "")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        (child, out, err)
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::fs::read_to_string(&a.1).unwrap().lines().count() < 1 {
        assert!(
            std::time::Instant::now() < end,
            "{}",
            std::fs::read_to_string(&a.2).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe { libc::kill(a.0.id() as i32, libc::SIGTERM) };
    assert_eq!(a.0.wait().unwrap().code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&a.1).unwrap(),
        "{\"who\":\"env-user\"}\n"
    );
}

/// The forward and tcp plugins' own checks name the line of the offending key.
#[test]
fn forward_and_tcp_values_are_checked_at_their_line() {
    fails(
        "[INPUT]\n    name forward\n    buffer_chunk_size 2M\n    buffer_max_size 1M\n[OUTPUT]\n    name stdout\n    match *\n",
        "c.conf:4: [config] forward: invalid value '1M' for property 'buffer_max_size': expected a size >= buffer_chunk_size (2000000)",
        None,
    );
    fails(
        "[INPUT]\n    name forward\n    security.users alice\n    shared_key k\n[OUTPUT]\n    name stdout\n    match *\n",
        "c.conf:3: [config] forward: invalid value 'alice' for property 'security.users': expected 'USERNAME PASSWORD'",
        None,
    );
    fails(
        "[INPUT]\n    name forward\n    tls on\n[OUTPUT]\n    name stdout\n    match *\n",
        "c.conf:1: [config] forward: invalid value '' for property 'tls.crt_file': expected a PEM certificate file: a TLS server needs tls.crt_file and tls.key_file",
        None,
    );
    fails(
        "[INPUT]\n    name random\n[OUTPUT]\n    name forward\n    match *\n    username u\n    password p\n",
        "c.conf:6: [config] forward: invalid value 'u' for property 'username': expected unset, or a shared_key too: user authentication is part of the shared key handshake",
        None,
    );
    fails(
        "[INPUT]\n    name random\n[OUTPUT]\n    name forward\n    match *\n    compress zstd\n",
        "c.conf:6: [config] forward: invalid value 'zstd' for property 'compress': expected one of: gzip",
        None,
    );
    fails(
        "[INPUT]\n    name tcp\n    chunk_size 64\n    buffer_size 32\n[OUTPUT]\n    name stdout\n    match *\n",
        "c.conf:4: [config] tcp: invalid value '32' for property 'buffer_size': expected a size >= chunk_size",
        None,
    );
}

/// `storage.type filesystem` without `[SERVICE] storage.path`: Fluent Bit buffers in
/// memory; agent does too and says which key is missing, also under --dry-run.
#[test]
fn filesystem_storage_without_a_path_warns_and_buffers_in_memory() {
    let (code, lines) = check(&format!(
        "[INPUT]\n    name random\n    storage.type filesystem\n{OUT}"
    ));
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("[ warn] c.conf:3: [storage] random.0: storage.type filesystem needs [SERVICE] storage.path")),
        "{lines:#?}"
    );
}

/// `plugins_file`/`streams_file`: a file that loads nothing is accepted; one with an
/// external plugin or a stream task is refused at the line naming it (agent runs
/// neither, and a config must not start doing less than it says); a missing one is
/// Fluent Bit's "not found".
#[test]
fn plugins_and_streams_files_are_refused_when_they_define_anything() {
    let dir = Dir::new();
    dir.file(
        "none.conf",
        "[PLUGINS]\n    # Path /path/to/out_gstdout.so\n",
    );
    dir.file("some.conf", "[PLUGINS]\n    Path /opt/out_x.so\n");
    dir.file(
        "sp_none.conf",
        "[STREAM_TASK]\n    # Exec CREATE STREAM x AS SELECT * FROM TAG:'a';\n",
    );
    dir.file(
        "sp.conf",
        "[STREAM_TASK]\n    Name t\n    Exec CREATE STREAM x AS SELECT * FROM TAG:'a';\n",
    );
    let dry = |service: &str| {
        dir.file(
            "c.conf",
            &format!("[SERVICE]\n    {service}\n[INPUT]\n    name dummy\n{OUT}"),
        );
        let o = run(&["-c", "c.conf", "--dry-run"], Some(dir.path()));
        (o.code, o.stderr)
    };
    assert_eq!(dry("plugins_file none.conf").0, Some(0));
    assert_eq!(dry("streams_file sp_none.conf").0, Some(0));
    let (code, err) = dry("plugins_file some.conf");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("c.conf:2")
            && err.contains("external plugins")
            && err.contains("/opt/out_x.so"),
        "{err}"
    );
    let (code, err) = dry("streams_file sp.conf");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("c.conf:2") && err.contains("stream processor tasks"),
        "{err}"
    );
    let (code, err) = dry("plugins_file nope.conf");
    assert_eq!(code, Some(1));
    assert!(err.contains("plugins_file not found"), "{err}");
}

/// `[SERVICE] dns.*` are the defaults of every networked output's `net.dns.*` (as in
/// Fluent Bit); a value agent cannot honour is refused at the service's line.
#[test]
fn service_dns_settings_are_output_defaults() {
    let conf = |service: &str, output: &str| {
        format!("[SERVICE]\n    {service}\n[INPUT]\n    name dummy\n[OUTPUT]\n    name tcp\n    match *\n{output}")
    };
    let (code, lines) = check(&conf("dns.prefer_ipv4 on", ""));
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("dns")), "{lines:#?}");
    let (code, lines) = check(&conf("dns.mode TCP", ""));
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        lines[0].contains("c.conf:2") && lines[0].contains("net.dns.mode"),
        "{lines:#?}"
    );
    // The output's own setting wins.
    let (code, lines) = check(&conf("dns.mode TCP", "    net.dns.mode UDP\n"));
    assert_eq!(code, Some(0), "{lines:#?}");
}

/// Files that are not regular files, absurd nesting and absurd sizes are refused at
/// once with the reason: never a hang (`/dev/zero`, a FIFO), a crash (YAML 20,000
/// levels deep overflowed the stack) or minutes of work (200,000 `${`, a 16 MB key).
#[test]
fn hostile_files_and_sizes_are_refused_not_hung() {
    let o = run(&["-c", "/dev/zero", "--dry-run"], None);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("/dev/zero: could not open configuration file: not a regular file"),
        "{}",
        o.stderr
    );

    let dir = Dir::new();
    let fifo = dir.path().join("fifo.conf");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    dir.file(
        "inc.conf",
        &format!(
            "@INCLUDE {}\n[INPUT]\n    name dummy\n{OUT}",
            fifo.display()
        ),
    );
    let o = run(&["-c", "inc.conf", "--dry-run"], Some(dir.path()));
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("fifo.conf file: not a regular file"),
        "{}",
        o.stderr
    );

    fails(
        "[INPUT]\n    name dummy\n[OUTPUT]\n    name tcp\n    match *\n    tls on\n    tls.crt_file /dev/zero\n    tls.key_file /dev/zero\n",
        "c.conf:7: [config] tcp: invalid value '/dev/zero' for property 'tls.crt_file': expected a PEM certificate file (cannot read /dev/zero: not a regular file)",
        None,
    );

    for (name, deep) in [
        (
            "block.yaml",
            format!(
                "pipeline:\n  inputs:\n    - name: dummy\n      x:\n        {}x\n",
                "- ".repeat(20_000)
            ),
        ),
        (
            "flow.yaml",
            format!(
                "pipeline:\n  inputs:\n    - name: dummy\n      x: {}{}\n",
                "[".repeat(20_000),
                "]".repeat(20_000)
            ),
        ),
    ] {
        dir.file(name, &deep);
        let o = run(&["-c", name, "--dry-run"], Some(dir.path()));
        assert_eq!(o.code, Some(1), "{name}: {}", o.stderr);
        assert!(
            o.stderr.contains("nested more than 64 levels deep")
                || o.stderr.contains("recursion limit"),
            "{name}: {}",
            o.stderr
        );
    }

    // Unclosed `${` are literal text, as in Fluent Bit; the config is valid.
    let (code, lines) = check(&format!(
        "[INPUT]\n    name dummy\n    tag {}\n{OUT}",
        "${".repeat(200_000)
    ));
    assert_eq!(code, Some(0), "{lines:?}");
    let (code, lines) = check(&format!(
        "[INPUT]\n    name dummy\n    {} v\n{OUT}",
        "k".repeat(16_000_000)
    ));
    assert_eq!(code, Some(1));
    assert!(
        lines[0].contains("unknown configuration property"),
        "{}",
        &lines[0][..200]
    );
}

/// A tail db that is not a regular file is refused when the input starts (reading
/// /dev/zero never ended; saving would have replaced the device), exit 255.
#[test]
fn tail_db_must_be_a_regular_file() {
    let dir = Dir::new();
    dir.file("x.log", "a\n");
    dir.file(
        "c.conf",
        &format!(
            "[INPUT]\n    name tail\n    path {}\n    db /dev/zero\n{OUT}",
            dir.path().join("x.log").display()
        ),
    );
    let o = run(&["-c", "c.conf"], Some(dir.path()));
    assert_eq!(o.code, Some(255), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("db cannot read /dev/zero: not a regular file"),
        "{}",
        o.stderr
    );
}

/// Absurd numbers are refused at their line with the range (issue 21 item 7): each of
/// these passed `--dry-run`, then panicked or ran doing nothing.
#[test]
fn absurd_numbers_are_refused_with_their_range() {
    let dummy = "[INPUT]\n    name dummy\n";
    for (conf, error) in [
        (format!("[SERVICE]\n    flush 1e20\n{dummy}{OUT}"), "c.conf:2: [config] invalid flush value '1e20'"),
        (format!("[SERVICE]\n    flush 1e-10\n{dummy}{OUT}"), "c.conf:2: [config] invalid flush value '1e-10'"),
        (
            format!("[SERVICE]\n    scheduler.base 9223372036854775807\n{dummy}{OUT}"),
            "c.conf:2: [config] service: invalid value '9223372036854775807' for property 'scheduler.base': expected a value from 1 to 315360000",
        ),
        (
            format!("{dummy}[OUTPUT]\n    name tcp\n    match *\n    net.connect_timeout 18000000000000000000\n"),
            "c.conf:6: [config] tcp: invalid value '18000000000000000000' for property 'net.connect_timeout': expected a duration such as 10 (seconds), 5m, 2h, 1d or 500ms, at most 10 years",
        ),
        (
            format!("[INPUT]\n    name tail\n    path /x\n    refresh_interval 9223372036854775807\n{OUT}"),
            "c.conf:4: [config] tail: invalid value '9223372036854775807' for property 'refresh_interval': expected a duration such as 10 (seconds), 5m, 2h, 1d or 500ms, at most 10 years",
        ),
        (
            format!("[INPUT]\n    name tail\n    path /x\n    watcher_interval 9223372036854775807\n{OUT}"),
            "c.conf:4: [config] tail: invalid value '9223372036854775807' for property 'watcher_interval': expected a duration such as 10 (seconds), 5m, 2h, 1d or 500ms, at most 10 years",
        ),
        (
            format!("{dummy}    copies 9223372036854775807\n{OUT}"),
            "c.conf:3: [config] dummy: invalid value '9223372036854775807' for property 'copies': expected a value from 1 to 1000000",
        ),
        (
            format!("{dummy}[FILTER]\n    name throttle\n    match *\n    window 9223372036854775807\n{OUT}"),
            "c.conf:6: [config] throttle: invalid value '9223372036854775807' for property 'window': expected a value from 0 to 1000000",
        ),
        (
            format!("[INPUT]\n    name tail\n    path /x\n    buffer_chunk_size 100G\n    buffer_max_size 100G\n{OUT}"),
            "c.conf:4: [config] tail: invalid value '100G' for property 'buffer_chunk_size': expected a value from 1 to 1073741824 bytes",
        ),
        (
            format!("[INPUT]\n    name nflog\n    dns on\n    copy_range 20\n{OUT}"),
            "c.conf:4: [config] nflog: invalid value '20' for property 'copy_range': expected a number of bytes from 40 (IPv6 header) to 65535",
        ),
        (
            format!("{dummy}[FILTER]\n    name flow_aggregate\n    match *\n    dest_domains_limit 0\n{OUT}"),
            "c.conf:6: [config] flow_aggregate: invalid value '0' for property 'dest_domains_limit': expected a number of names from 1 to 1000",
        ),
        (
            format!("{dummy}[FILTER]\n    name flow_aggregate\n    match *\n    dns_cache_max -1\n{OUT}"),
            "c.conf:6: [config] flow_aggregate: invalid value '-1' for property 'dns_cache_max': expected a number of addresses >= 1",
        ),
    ] {
        let (code, lines) = check(&conf);
        assert_eq!(code, Some(1), "{conf}\n{lines:#?}");
        assert_eq!(lines[0], format!("[error] {error}"), "{lines:#?}");
    }
}

/// Durability the config asks for is there, or the agent does not start (exit 255,
/// issue 21 item 14): a tail db in a missing directory ran without saving offsets, and
/// filesystem buffering on a read-only storage.path ran in memory.
#[test]
fn missing_durability_stops_the_start() {
    let dir = Dir::new();
    dir.file("x.log", "a\n");
    dir.file(
        "c.conf",
        &format!(
            "[INPUT]\n    name tail\n    path {}\n    db {}/missing/t.db\n{OUT}",
            dir.path().join("x.log").display(),
            dir.path().display()
        ),
    );
    let o = run(&["-c", "c.conf"], Some(dir.path()));
    assert_eq!(o.code, Some(255), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("missing/t.db.tmp: No such file or directory"),
        "{}",
        o.stderr
    );

    // A read-only directory (root ignores permissions: a file where a directory must be).
    dir.file("notadir", "x");
    dir.file(
        "s.conf",
        &format!(
            "[SERVICE]\n    storage.path {}/notadir/st\n[INPUT]\n    name dummy\n    storage.type filesystem\n{OUT}",
            dir.path().display()
        ),
    );
    let o = run(&["-c", "s.conf"], Some(dir.path()));
    assert_eq!(o.code, Some(255), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("inputs with storage.type filesystem need it"),
        "{}",
        o.stderr
    );
}
