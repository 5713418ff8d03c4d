//! Behaviour tests: each expected record was printed by Fluent Bit 5.1.1 (tail with
//! `read_from_head`, `multiline.parser ...`, stdout output) for the same input, unless a
//! comment says the expectation is read from Fluent Bit's source.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::parser::load_parsers_file;
use crate::config::SectionKind;
use crate::event::format::write_print_record;
use crate::event::Value;

/// The time given with line `i` (tail passes its read time).
fn t(i: usize) -> EventTime {
    EventTime::new(1_700_000_000 + i as i64, 0)
}

/// A stream of built-in parsers.
fn builtins(names: &[&str]) -> MlStream {
    MlStream::new(names.iter().map(|n| builtin(n).unwrap()).collect(), None)
}

/// Feeds `text` line by line; positions are byte offsets, times `t(i)`.
fn feed(s: &mut MlStream, text: &str, now: Instant) -> Vec<MlRecord> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for (i, line) in text.split_terminator('\n').enumerate() {
        let end = pos + line.len() as u64 + 1;
        s.append_text(line.as_bytes(), t(i), pos, end, now, &mut out);
        pos = end;
    }
    out
}

/// Records as Fluent Bit's stdout prints them (tag `t`).
fn print(recs: &[MlRecord]) -> String {
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        write_print_record(&mut out, i, "t", &r.clone().into_record());
    }
    String::from_utf8(out).unwrap()
}

fn text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        Value::Bin(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("not a string: {other:?}"),
    }
}

fn get(r: &MlRecord, key: &str) -> String {
    text(
        &r.body
            .iter()
            .find(|(k, _)| &**k == key)
            .unwrap_or_else(|| panic!("no {key} in {r:?}"))
            .1,
    )
}

fn logs(recs: &[MlRecord]) -> Vec<String> {
    recs.iter().map(|r| get(r, "log")).collect()
}

fn keys(r: &MlRecord) -> Vec<&str> {
    r.body.iter().map(|(k, _)| &**k).collect()
}

/// The sections of conf/parsers_multiline.conf.
fn conf_sections() -> Vec<crate::config::Section> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/parsers_multiline.conf");
    load_parsers_file(&path).unwrap().sections
}

/// A `[MULTILINE_PARSER]` of conf/parsers_multiline.conf that needs no `[PARSER]`.
fn conf_parser(name: &str) -> Arc<MlParser> {
    let s = conf_sections()
        .into_iter()
        .find(|s| {
            s.kind == SectionKind::MultilineParser
                && s.entries.iter().any(|e| e.key == "name" && e.value == name)
        })
        .unwrap();
    Arc::new(MlParser::from_section(&s, &Parsers::default()).unwrap())
}

#[test]
fn docker_joins_16k_partials_of_a_40k_line_per_stream() {
    let msg: String = (0..40959)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect::<String>()
        + "\n";
    let parts = [&msg[..16384], &msg[16384..32768], &msg[32768..]];
    let line = |log: &str, stream: &str, n: usize| {
        let log = serde_json::to_string(log).unwrap();
        format!(
            r#"{{"log":{log},"stream":"{stream}","time":"2024-01-02T03:04:05.{:09}Z"}}"#,
            100_000_000 + n
        )
    };
    let input = [
        line(parts[0], "stdout", 0),
        line("err one\n", "stderr", 1),
        line(parts[1], "stdout", 2),
        line("err part ", "stderr", 3),
        line(parts[2], "stdout", 4),
        line("end\n", "stderr", 5),
        line("short\n", "stdout", 6),
    ]
    .join("\n")
        + "\n";
    let mut s = builtins(&["docker"]);
    let recs = feed(&mut s, &input, Instant::now());
    assert_eq!(recs.len(), 4);
    // The joined line: the first part's keys and time, `log` joined, its `\n` kept.
    assert_eq!(get(&recs[1], "log"), msg);
    assert_eq!(keys(&recs[1]), ["log", "stream", "time"]);
    assert_eq!(get(&recs[1], "time"), "2024-01-02T03:04:05.100000000Z");
    assert_eq!(recs[1].time, EventTime::new(1704164645, 100_000_000));
    let first_line_len = input.find('\n').unwrap() as u64 + 1;
    assert_eq!(
        (recs[1].first, recs[1].end),
        (
            0,
            input[..input.rfind("{\"log\":\"end").unwrap()].len() as u64
        )
    );
    assert!(recs[1].first < first_line_len);
    let small: Vec<_> = [0, 2, 3].iter().map(|&i| recs[i].clone()).collect();
    assert_eq!(
        print(&small),
        r#"[0] t: [[1704164645.100000001, {}], {"log"=>"err one
", "stream"=>"stderr", "time"=>"2024-01-02T03:04:05.100000001Z"}]
[1] t: [[1704164645.100000003, {}], {"log"=>"err part end
", "stream"=>"stderr", "time"=>"2024-01-02T03:04:05.100000003Z"}]
[2] t: [[1704164645.100000006, {}], {"log"=>"short
", "stream"=>"stdout", "time"=>"2024-01-02T03:04:05.100000006Z"}]
"#
    );
    assert_eq!(s.pending_from(), None);
}

#[test]
fn docker_lines_that_are_not_docker_go_out_alone() {
    let input = r#"{"log":"part one, ","stream":"stdout","time":"2019-05-07T18:57:50.904275087Z"}
{"log":"part two\n","stream":"stdout","time":"2019-05-07T18:57:51.1Z"}
{"log":"err\n","stream":"stderr","time":"2019-05-07T18:57:52.53412Z"}
not json
{"log":"","stream":"stdout","time":"2019-05-07T18:57:52Z"}
"#;
    let recs = feed(&mut builtins(&["docker"]), input, Instant::now());
    // Fluent Bit stamps the last two with the time it read them: ours is t(3), t(4).
    assert_eq!(
        print(&recs),
        r#"[0] t: [[1557255470.904275087, {}], {"log"=>"part one, part two
", "stream"=>"stdout", "time"=>"2019-05-07T18:57:50.904275087Z"}]
[1] t: [[1557255472.534120000, {}], {"log"=>"err
", "stream"=>"stderr", "time"=>"2019-05-07T18:57:52.53412Z"}]
[2] t: [[1700000003.000000000, {}], {"log"=>"not json"}]
[3] t: [[1700000004.000000000, {}], {"log"=>"{"log":"","stream":"stdout","time":"2019-05-07T18:57:52Z"}"}]
"#
    );
}

#[test]
fn cri_joins_p_until_f_per_stream() {
    let input = "2019-05-07T18:57:50.904275087+00:00 stdout P part one, \n\
                 2019-05-07T18:57:51.0Z stderr F err line\n\
                 2019-05-07T18:57:52.5-02:00 stdout F part two\n\
                 not cri at all\n\
                 2019-05-07T18:57:50Z stdout F no frac\n\
                 2019-13-07T18:57:50.1Z stdout F bad month\n\
                 2019-05-07T18:57:50.1234567891Z stdout F ten digits\n\
                 garbage stdout F g\n\
                 2019-05-07T18:57:50.1 stdout F no tz\n\
                 2019-05-07T18:57:50.1Z stdout F\n\
                 2019-05-07T18:57:50.1Z stdout F \n";
    let recs = feed(&mut builtins(&["cri"]), input, Instant::now());
    // `_p` is the first part's "P". "garbage" has a time before 1970: Fluent Bit cannot
    // encode it, drops the record ("[multiline] error packing event") and its text "g"
    // joins the next record.
    assert_eq!(
        print(&recs),
        r#"[0] t: [[1557255471.000000000, {}], {"time"=>"2019-05-07T18:57:51.0Z", "stream"=>"stderr", "_p"=>"F", "log"=>"err line"}]
[1] t: [[1557255470.904275087, {}], {"time"=>"2019-05-07T18:57:50.904275087+00:00", "stream"=>"stdout", "_p"=>"P", "log"=>"part one, part two"}]
[2] t: [[1700000003.000000000, {}], {"log"=>"not cri at all"}]
[3] t: [[1557255470.000000000, {}], {"time"=>"2019-05-07T18:57:50Z", "stream"=>"stdout", "_p"=>"F", "log"=>"no frac"}]
[4] t: [[1546214400.000000000, {}], {"time"=>"2019-13-07T18:57:50.1Z", "stream"=>"stdout", "_p"=>"F", "log"=>"bad month"}]
[5] t: [[1557255470.123456789, {}], {"time"=>"2019-05-07T18:57:50.1234567891Z", "stream"=>"stdout", "_p"=>"F", "log"=>"ten digits"}]
[6] t: [[1557255470.100000000, {}], {"time"=>"2019-05-07T18:57:50.1", "stream"=>"stdout", "_p"=>"F", "log"=>"gno tz"}]
[7] t: [[1700000009.000000000, {}], {"log"=>"2019-05-07T18:57:50.1Z stdout F"}]
[8] t: [[1557255470.100000000, {}], {"time"=>"2019-05-07T18:57:50.1Z", "stream"=>"stdout", "_p"=>"F", "log"=>""}]
"#
    );
}

#[test]
fn cri_positions_hold_commits_until_the_record_is_complete() {
    let mut s = builtins(&["cri"]);
    let now = Instant::now();
    let mut out = Vec::new();
    let lines = [
        "2024-01-02T03:04:05.1Z stdout P a",   // 0..
        "2024-01-02T03:04:05.2Z stderr P x",   //
        "2024-01-02T03:04:05.3Z stdout P b",   //
        "2024-01-02T03:04:05.4Z stderr F y",   //
        "2024-01-02T03:04:05.5Z stdout F c",   //
        "2024-01-02T03:04:05.6Z stdout F one", //
    ];
    let mut starts = Vec::new();
    let mut pos = 0;
    for (i, l) in lines.iter().enumerate() {
        starts.push(pos);
        let end = pos + l.len() as u64 + 1;
        s.append_text(l.as_bytes(), t(i), pos, end, now, &mut out);
        pos = end;
        let expect_pending = match i {
            0..=4 => Some(starts[0]),
            _ => None,
        };
        if i < 4 {
            assert_eq!(s.pending_from(), expect_pending, "after line {i}");
        }
    }
    assert_eq!(logs(&out), ["xy", "abc", "one"]);
    // stderr: lines 1 and 3; stdout: lines 0, 2, 4; the last one alone.
    assert_eq!((out[0].first, out[0].end), (starts[1], starts[4]));
    assert_eq!((out[1].first, out[1].end), (starts[0], starts[5]));
    assert_eq!((out[2].first, out[2].end), (starts[5], pos));
    assert_eq!(s.pending_from(), None);
    assert_eq!(s.deadline(), None);
}

#[test]
fn docker_then_cri_auto_detects_per_line() {
    let input = "2024-01-02T03:04:05.1Z stdout P part \n\
        {\"log\":\"docker line\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:06.2Z\"}\n\
        2024-01-02T03:04:07.3Z stdout F two\n\
        2024-01-02T03:04:07.3Z stderr P held \n\
        {\"log\":\"d part \",\"stream\":\"stderr\",\"time\":\"2024-01-02T03:04:08Z\"}\n\
        garbage\n";
    let recs = feed(&mut builtins(&["docker", "cri"]), input, Instant::now());
    // The parser that took the previous line is tried first; a line neither takes
    // flushes both (docker's groups first) and goes out through docker, the first.
    assert_eq!(
        print(&recs),
        r#"[0] t: [[1704164646.200000000, {}], {"log"=>"docker line
", "stream"=>"stdout", "time"=>"2024-01-02T03:04:06.2Z"}]
[1] t: [[1704164645.100000000, {}], {"time"=>"2024-01-02T03:04:05.1Z", "stream"=>"stdout", "_p"=>"P", "log"=>"part two"}]
[2] t: [[1704164648.000000000, {}], {"log"=>"d part ", "stream"=>"stderr", "time"=>"2024-01-02T03:04:08Z"}]
[3] t: [[1704164647.300000000, {}], {"time"=>"2024-01-02T03:04:07.3Z", "stream"=>"stderr", "_p"=>"P", "log"=>"held "}]
[4] t: [[1700000005.000000000, {}], {"log"=>"garbage"}]
"#
    );
}

const JAVA: &str = r#"single line
Exception in thread "main" java.lang.IllegalStateException: boom
	at com.example.App.run(App.java:10)
	at com.example.App.main(App.java:5)
Caused by: java.lang.NullPointerException: null
	at com.example.Dep.call(Dep.java:3)
	... 2 more
another line
    at orphan.frame(X.java:1)
last
"#;

#[test]
fn java_exception_with_caused_by() {
    let recs = feed(&mut builtins(&["java"]), JAVA, Instant::now());
    // Without key_content every record ends with "\n". The state survives the flush
    // forced by "another line", so the orphan frame starts a record of its own.
    assert_eq!(
        logs(&recs),
        [
            "single line\n",
            "Exception in thread \"main\" java.lang.IllegalStateException: boom\n\tat com.example.App.run(App.java:10)\n\tat com.example.App.main(App.java:5)\nCaused by: java.lang.NullPointerException: null\n\tat com.example.Dep.call(Dep.java:3)\n\t... 2 more\n",
            "another line\n",
            "    at orphan.frame(X.java:1)\n",
            "last\n",
        ]
    );
    assert!(recs.iter().all(|r| keys(r) == ["log"]));
    // Text records take the time of the last line registered (read from Fluent Bit's
    // source: each line overwrites the group's time): "... 2 more" is line 6.
    assert_eq!(recs[1].time, t(6));
    assert_eq!(recs[0].time, t(0));
    let starts: Vec<u64> = std::iter::once(0)
        .chain(JAVA.match_indices('\n').map(|(i, _)| i as u64 + 1))
        .collect();
    assert_eq!((recs[1].first, recs[1].end), (starts[1], starts[7]));
}

#[test]
fn python_traceback() {
    let input = r#"Traceback (most recent call last):
  File "app.py", line 3, in <module>
    main()
  File "app.py", line 2, in main
    raise ValueError("bad")
ValueError: bad
after
"#;
    let mut s = builtins(&["python"]);
    let recs = feed(&mut s, input, Instant::now());
    assert_eq!(
        logs(&recs),
        [
            "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>\n    main()\n  File \"app.py\", line 2, in main\n    raise ValueError(\"bad\")\nValueError: bad\n",
            "after\n",
        ]
    );
    // "ValueError: bad" completes the record before it is registered: the time is
    // the line before it (from Fluent Bit's source: try_flushing_buffer runs first).
    assert_eq!(recs[0].time, t(4));
}

#[test]
fn go_panic() {
    let input = "panic: my panic\n\ngoroutine 1 [running]:\nmain.main()\n\t/tmp/main.go:4 +0x25\nexit status 2\n";
    let recs = feed(&mut builtins(&["go"]), input, Instant::now());
    assert_eq!(
        logs(&recs),
        [
            "panic: my panic\n\ngoroutine 1 [running]:\nmain.main()\n\t/tmp/main.go:4 +0x25\n",
            "exit status 2\n"
        ]
    );
}

#[test]
fn ruby_backtrace() {
    let input = "/app/x.rb:3:in `divide': divided by 0 (ZeroDivisionError)\n\tfrom /app/x.rb:3:in `/'\n\tfrom /app/x.rb:7:in `<main>'\nnext\n";
    let recs = feed(&mut builtins(&["ruby"]), input, Instant::now());
    assert_eq!(
        logs(&recs),
        [
            "/app/x.rb:3:in `divide': divided by 0 (ZeroDivisionError)\n\tfrom /app/x.rb:3:in `/'\n\tfrom /app/x.rb:7:in `<main>'\n",
            "next\n"
        ]
    );
}

#[test]
fn custom_regex_parser_from_the_docs() {
    let input = r#"single line...
Dec 14 06:41:08 Exception in thread "main" java.lang.RuntimeException: Something has gone wrong, aborting!
    at com.myproject.module.MyProject.badMethod(MyProject.java:22)
    at com.myproject.module.MyProject.oneMoreMethod(MyProject.java:18)
    at com.myproject.module.MyProject.anotherMethod(MyProject.java:14)
    at com.myproject.module.MyProject.someMethod(MyProject.java:10)
    at com.myproject.module.MyProject.main(MyProject.java:6)
another line...
"#;
    let mut s = MlStream::new(vec![conf_parser("multiline-regex-test")], None);
    assert_eq!(s.flush_timeout(), Duration::from_millis(1000));
    let recs = feed(&mut s, input, Instant::now());
    let lines: Vec<&str> = input.lines().collect();
    assert_eq!(
        logs(&recs),
        [
            "single line...\n".to_string(),
            lines[1..7].join("\n") + "\n",
            "another line...\n".into()
        ]
    );
}

#[test]
fn custom_key_content_keeps_text_without_final_newline() {
    let input = "2024-05-01 12:00:00 INFO start\n2024-05-01 12:00:01 ERROR failed\njava.lang.Exception: x\n\tat a.b(C.java:1)\n\n2024-05-01T12:00:02 INFO done\n";
    let mut s = MlStream::new(vec![conf_parser("date-first")], None);
    let mut recs = feed(&mut s, input, Instant::now());
    assert_eq!(s.pending_from(), Some(input.rfind("2024").unwrap() as u64));
    s.flush(&mut recs);
    let messages: Vec<String> = recs.iter().map(|r| get(r, "message")).collect();
    assert_eq!(
        messages,
        [
            "2024-05-01 12:00:00 INFO start",
            "2024-05-01 12:00:01 ERROR failed\njava.lang.Exception: x\n\tat a.b(C.java:1)\n\n",
            "2024-05-01T12:00:02 INFO done",
        ]
    );
    assert_eq!(s.pending_from(), None);
}

#[test]
fn custom_endswith_and_equal() {
    let input = "echo a \\\n  b \\\n  c\nsingle\n\\\nx\n";
    let recs = feed(
        &mut MlStream::new(vec![conf_parser("backslash-continued")], None),
        input,
        Instant::now(),
    );
    assert_eq!(
        logs(&recs),
        ["echo a \\\n  b \\\n  c\n", "single\n", "\\\nx\n"]
    );
    // Text records take the last line's time (endswith/equal register each line).
    assert_eq!(recs[0].time, t(2));

    let input = "BEGIN\nbody 1\nEND\nalone\nEND\nEND\nlast\n";
    let mut s = MlStream::new(vec![conf_parser("end-marker")], None);
    let now = Instant::now();
    let mut recs = feed(&mut s, input, now);
    assert_eq!(
        logs(&recs),
        ["BEGIN\nbody 1\nEND\n", "alone\nEND\n", "END\n"]
    );
    // "last" waits for the flush timer.
    assert_eq!(s.deadline(), Some(now + Duration::from_millis(1000)));
    s.flush_expired(now + Duration::from_millis(999), &mut recs);
    assert_eq!(recs.len(), 3);
    s.flush_expired(now + Duration::from_millis(1000), &mut recs);
    assert_eq!(logs(&recs[3..]), ["last\n"]);
    assert_eq!(s.deadline(), None);
}

#[test]
fn endswith_text_shorter_than_match_string_is_dropped() {
    // package_content returns "not processed" (0), which flb_ml_append_text counts as
    // taken: the line vanishes (read from Fluent Bit's source).
    let p = MlParser {
        name: Arc::from("ends"),
        kind: Kind::EndsWith(Box::from(&b"END"[..])),
        negate: false,
        flush_ms: 1000,
        key_content: None,
        key_pattern: None,
        key_group: None,
        line: LineParser::None,
    };
    let mut s = MlStream::new(vec![Arc::new(p)], None);
    let recs = feed(&mut s, "ab\nxEND\n", Instant::now());
    assert_eq!(logs(&recs), ["xEND\n"]);
}

#[test]
fn flush_timer_is_periodic_and_states_survive_it() {
    let now = Instant::now();
    let mut s = builtins(&["java"]);
    let mut out = Vec::new();
    s.append_text(
        b"java.lang.IllegalStateException: boom",
        t(0),
        0,
        10,
        now,
        &mut out,
    );
    assert_eq!(s.deadline(), Some(now + Duration::from_secs(4)));
    // A line 3.9 s later does not move the timer: Fluent Bit flushes every 4 s.
    s.append_text(
        b"\tat a.b(C.java:1)",
        t(1),
        10,
        20,
        now + Duration::from_millis(3900),
        &mut out,
    );
    assert_eq!(s.deadline(), Some(now + Duration::from_secs(4)));
    s.flush_expired(now + Duration::from_millis(3999), &mut out);
    assert!(out.is_empty());
    s.flush_expired(now + Duration::from_secs(4), &mut out);
    assert_eq!(
        logs(&out),
        ["java.lang.IllegalStateException: boom\n\tat a.b(C.java:1)\n"]
    );
    assert_eq!((out[0].first, out[0].end), (0, 20));
    // The state is still "java": the next frame starts a record of its own.
    s.append_text(
        b"\tat c.d(E.java:2)",
        t(2),
        20,
        30,
        now + Duration::from_secs(5),
        &mut out,
    );
    assert_eq!(s.pending_from(), Some(20));
    // Next tick of the same timer.
    assert_eq!(s.deadline(), Some(now + Duration::from_secs(8)));
    s.flush(&mut out);
    assert_eq!(logs(&out[1..]), ["\tat c.d(E.java:2)\n"]);
    assert_eq!(s.deadline(), None);
    // The multiline filter's flush_ms overrides the period.
    s.set_flush_timeout(Duration::from_millis(500));
    assert_eq!(s.flush_timeout(), Duration::from_millis(500));
}

#[test]
fn buffer_limit_truncates_regex_records() {
    let mut s = builtins(&["java"]);
    s.set_buffer_limit(50);
    let input =
        "java.lang.IllegalStateException: boom\n\tat a.b(C.java:1)\n\tat c.d(E.java:2)\nafter\n";
    let recs = feed(&mut s, input, Instant::now());
    // The second frame is cut at 50 bytes and flushes the record at once; the state is
    // reset, so the third frame matches no rule and goes out alone.
    // Fluent Bit 5.1.1 with `multiline_buffer_limit 50` prints the same records.
    let recs: Vec<MlRecord> = recs
        .into_iter()
        .map(|r| MlRecord {
            time: EventTime::new(1, 0),
            ..r
        })
        .collect();
    assert_eq!(
        print(&recs),
        "[0] t: [[1.000000000, {\"multiline_truncated\"=>true}], {\"log\"=>\"java.lang.IllegalStateException: boom\n\tat a.b(C.ja\n\"}]\n\
         [1] t: [[1.000000000, {}], {\"log\"=>\"\tat c.d(E.java:2)\n\"}]\n\
         [2] t: [[1.000000000, {}], {\"log\"=>\"after\n\"}]\n"
    );
}

#[test]
fn records_of_the_multiline_filter() {
    // multiline.parser java, multiline.key_content log: the first record's keys stay,
    // `log` becomes the joined text (no final "\n": key_content is set); a record no
    // rule takes passes unchanged.
    let mut s = MlStream::new(vec![builtin("java").unwrap()], Some(Arc::from("log")));
    let now = Instant::now();
    let mut out = Vec::new();
    let rec = |log: &str, n: i64| {
        vec![
            (Arc::from("n"), Value::Int(n)),
            (Arc::from("log"), Value::Str(Arc::from(log))),
        ]
    };
    s.append_record(t(0), rec("plain", 0), 0, 1, now, &mut out);
    s.append_record(t(1), rec("java.lang.Error: x", 1), 1, 2, now, &mut out);
    s.append_record(t(2), rec("\tat a.b(C.java:1)", 2), 2, 3, now, &mut out);
    s.append_record(
        t(3),
        vec![(Arc::from("other"), Value::Int(3))],
        3,
        4,
        now,
        &mut out,
    );
    assert_eq!(
        print(&out),
        r#"[0] t: [[1700000000.000000000, {}], {"n"=>0, "log"=>"plain"}]
[1] t: [[1700000001.000000000, {}], {"n"=>1, "log"=>"java.lang.Error: x
	at a.b(C.java:1)"}]
[2] t: [[1700000003.000000000, {}], {"other"=>3}]
"#
    );
    assert_eq!((out[1].first, out[1].end), (1, 3));
}

#[test]
fn map_mode_regex_leaves_the_completing_line_registered() {
    // Fluent Bit 5.1.1, tail (parser json) + filter multiline with
    //   rule "start_state" "/^S/" "cont"
    //   rule "cont" "/^E/" "start_state"
    // prints S1+E1 with n=1, S2+E2 with n=2 (E1's map), then E2's map again.
    let defs = [
        rules::RuleDef {
            from: "start_state",
            regex: "/^S/",
            to: Some("cont"),
        },
        rules::RuleDef {
            from: "cont",
            regex: "/^E/",
            to: Some("start_state"),
        },
    ];
    let p = MlParser {
        name: Arc::from("t5"),
        kind: Kind::Regex(rules::Rules::build(&defs).unwrap()),
        negate: false,
        flush_ms: 1000,
        key_content: None,
        key_pattern: None,
        key_group: None,
        line: LineParser::None,
    };
    let mut s = MlStream::new(vec![Arc::new(p)], Some(Arc::from("log")));
    let now = Instant::now();
    let mut out = Vec::new();
    for (i, log) in ["S1", "E1", "S2", "E2", "plain"].iter().enumerate() {
        let body = vec![
            (Arc::from("log"), Value::Str(Arc::from(*log))),
            (Arc::from("n"), Value::Int(i as i64 + 1)),
        ];
        s.append_record(t(i), body, i as u64, i as u64 + 1, now, &mut out);
    }
    let bodies: Vec<String> = out
        .iter()
        .map(|r| format!("{}|{:?}", get(r, "log"), r.body[1].1))
        .collect();
    assert_eq!(
        bodies,
        [
            "S1\nE1|Int(1)",
            "S2\nE2|Int(2)",
            "E2|Int(4)",
            "plain|Int(5)"
        ]
    );
}

#[test]
fn lines_nobody_takes_and_empty_lines() {
    let mut s = builtins(&["go"]);
    let recs = feed(&mut s, "a\n\nb\n", Instant::now());
    // An empty line alone makes no record (its buffer is empty at flush).
    assert_eq!(logs(&recs), ["a\n", "b\n"]);
    assert_eq!(s.pending_from(), None);
    // No parser at all: lines pass through.
    let mut s = MlStream::new(vec![], None);
    assert_eq!(logs(&feed(&mut s, "x\n", Instant::now())), ["x"]);
}

#[test]
fn conf_file_sections_compile() {
    let sections = conf_sections();
    let names: Vec<String> = sections
        .iter()
        .filter(|s| s.kind == SectionKind::MultilineParser)
        .map(|s| {
            s.entries
                .iter()
                .find(|e| e.key == "name")
                .unwrap()
                .value
                .clone()
        })
        .collect();
    assert_eq!(
        names,
        [
            "multiline-regex-test",
            "date-first",
            "backslash-continued",
            "end-marker",
            "json-python"
        ]
    );
    // json-python needs its [PARSER]: without it, an error naming the line.
    let s = sections
        .iter()
        .rfind(|s| s.kind == SectionKind::MultilineParser)
        .unwrap();
    let e = MlParser::from_section(s, &Parsers::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("multiline parser 'json-python' points to an undefined parser 'json-time'"),
        "{e}"
    );
    assert!(e.contains("parsers_multiline.conf:"), "{e}");
}

#[test]
fn docker_mode_joins_raw_json() {
    // Fluent Bit 5.1.1 tail, docker_mode on, no parser: the rebuilt JSON line is the
    // record's `log`; a line that is not JSON flushes and goes out alone.
    let input =
        "{\"log\":\"part one \",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05.1Z\"}\n\
        {\"log\":\"two\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:06.2Z\"}\n\
        not json\n\
        {\"log\":\"tail\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:07Z\"}\n";
    let now = Instant::now();
    let mut s = MlStream::docker_mode(Duration::from_secs(2), None, Arc::from("log"));
    let mut recs = feed(&mut s, input, now);
    assert_eq!(
        logs(&recs),
        [
            r#"{"log":"part one two\n","stream":"stdout","time":"2024-01-02T03:04:06.2Z"}"#,
            "not json"
        ]
    );
    assert_eq!(recs[0].time, t(1));
    let tail_at = input.rfind('{').unwrap() as u64;
    assert_eq!(s.pending_from(), Some(tail_at));
    // The timeout runs from the last line.
    assert_eq!(s.deadline(), Some(now + Duration::from_secs(2)));
    s.flush_expired(now + Duration::from_secs(2), &mut recs);
    assert_eq!(
        logs(&recs[2..]),
        [r#"{"log":"tail","stream":"stdout","time":"2024-01-02T03:04:07Z"}"#]
    );
    assert_eq!((recs[2].first, recs[2].end), (tail_at, input.len() as u64));
    assert_eq!(s.pending_from(), None);
}

/// Tests that need a real `Parser` (`[PARSER]` sections): they run once the parsers
/// are built; until then `Parser::from_section` reports "not built yet" and they stop.
mod with_parsers {
    use super::*;
    use crate::config::{Entry, Section, Span};

    /// A `[PARSER]` from `key value` pairs, or `None` while parsers are not built.
    fn parser(props: &[(&str, &str)]) -> Option<Arc<Parser>> {
        let section = Section {
            kind: SectionKind::Parser,
            header: "PARSER".into(),
            span: Span::new("test", 1),
            entries: props
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                    span: Span::new("test", 2),
                })
                .collect(),
            processors: Vec::new(),
        };
        match Parser::from_section(&section) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) if e.to_string().contains("not built yet") => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn parser_then_join_from_the_conf_file() {
        let mut parsers = Parsers::default();
        if parser(&[("name", "probe"), ("format", "json")]).is_none() {
            return;
        }
        parsers
            .add_sections("parsers_multiline.conf", &conf_sections())
            .unwrap();
        let mut s = MlStream::new(vec![parsers.multiline("json-python").unwrap()], None);
        let input = r#"{"log":"Traceback (most recent call last):","stream":"stderr","time":"2024-01-02T03:04:05.5+00:00"}
{"log":"  File \"a.py\", line 1, in <module>","stream":"stderr","time":"2024-01-02T03:04:06+00:00"}
{"log":"    main()","stream":"stderr","time":"2024-01-02T03:04:06+00:00"}
{"log":"KeyError: 'x'","stream":"stderr","time":"2024-01-02T03:04:07+00:00"}
"#;
        let recs = feed(&mut s, input, Instant::now());
        assert_eq!(recs.len(), 1);
        assert_eq!(keys(&recs[0]), ["log", "stream", "time"]);
        assert_eq!(get(&recs[0], "log"), "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n    main()\nKeyError: 'x'");
        assert_eq!(recs[0].time, EventTime::new(1704164645, 500_000_000));
    }

    #[test]
    fn legacy_firstline() {
        // Fluent Bit 5.1.1 tail: multiline on, parser_firstline first, parser_1 kv.
        let Some(first) = parser(&[
            ("name", "first"),
            ("format", "regex"),
            (
                "regex",
                r"^(?<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?<level>[A-Z]+) (?<msg>.*)$",
            ),
            ("time_key", "time"),
            ("time_format", "%Y-%m-%d %H:%M:%S"),
        ]) else {
            return;
        };
        let kv = parser(&[
            ("name", "kv"),
            ("format", "regex"),
            ("regex", r"^\s+(?<k>[a-z]+)=(?<v>\S+)$"),
        ])
        .unwrap();
        let now = Instant::now();
        let mut s = MlStream::firstline(first, vec![kv], Duration::from_secs(2), Arc::from("log"));
        let input = "orphan line\n2024-01-02 03:04:05 ERROR boom\n  key=value\nraw continuation\nmore raw\n2024-01-02 03:04:06 INFO next\n  k=v\nafter kv\n";
        let mut recs = feed(&mut s, input, now);
        assert_eq!(
            s.pending_from(),
            Some(input.find("2024-01-02 03:04:06").unwrap() as u64)
        );
        s.flush_expired(now + Duration::from_secs(2), &mut recs);
        // (Fluent Bit prints the orphan after the first record: tail packs the two
        // kinds into different buffers. The records are these.)
        assert_eq!(
            print(&recs),
            r#"[0] t: [[1700000000.000000000, {}], {"log"=>"orphan line"}]
[1] t: [[1704164645.000000000, {}], {"level"=>"ERROR", "msg"=>"boom", "k"=>"key", "v"=>"value
raw continuation
more raw"}]
[2] t: [[1704164646.000000000, {}], {"level"=>"INFO", "msg"=>"next", "k"=>"k", "v"=>"v
after kv"}]
"#
        );
    }

    #[test]
    fn legacy_docker_mode_with_first_line_parser() {
        // Fluent Bit 5.1.1 tail: docker_mode on, docker_mode_parser on the raw JSON.
        let Some(first) = parser(&[
            ("name", "dfirst"),
            ("format", "regex"),
            ("regex", r#"^\{"log":"(?<d>\d{4}-\d{2}-\d{2})"#),
        ]) else {
            return;
        };
        let input = "{\"log\":\"2024-01-02 first\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05.1Z\"}\n\
            {\"log\":\"  cont a\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:06.2Z\"}\n\
            {\"log\":\"  cont b\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:06.3Z\"}\n\
            {\"log\":\"2024-01-03 second\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:07Z\"}\n";
        let mut s = MlStream::docker_mode(Duration::from_secs(2), Some(first), Arc::from("log"));
        let mut recs = feed(&mut s, input, Instant::now());
        s.flush(&mut recs);
        assert_eq!(
            logs(&recs),
            [
                r#"{"log":"2024-01-02 first\n  cont a\n  cont b\n","stream":"stdout","time":"2024-01-02T03:04:06.3Z"}"#,
                r#"{"log":"2024-01-03 second\n","stream":"stdout","time":"2024-01-02T03:04:07Z"}"#,
            ]
        );
    }
}

fn md(pairs: &[(&str, Value)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| (Arc::from(*k), v.clone()))
        .collect()
}

fn log_body(log: &str) -> Map {
    vec![(Arc::from("log"), Value::Str(Arc::from(log)))]
}

#[test]
fn metadata_of_joined_records() {
    // Read from Fluent Bit's source (flb_ml_stream_group_add_metadata and
    // flb_ml_flush_metadata_buffer): each line's metadata once, binaries as hex.
    let mut s = MlStream::new(vec![builtin("java").unwrap()], Some(Arc::from("log")));
    let now = Instant::now();
    let mut out = Vec::new();
    let trace = ("trace_id", Value::Bin(Arc::from(&[0xab, 0xcd][..])));
    let lines = [
        ("java.lang.Error: x", md(std::slice::from_ref(&trace))),
        (
            "\tat a.b(C.java:1)",
            md(&[trace.clone(), ("span", Value::Str(Arc::from("s2")))]),
        ),
        ("plain", md(&[("k", Value::Str(Arc::from("v")))])),
    ];
    for (i, (log, m)) in lines.into_iter().enumerate() {
        s.append_event(
            t(i),
            m,
            log_body(log),
            i as u64,
            i as u64 + 1,
            now,
            &mut out,
        );
    }
    let hex = Value::Str(Arc::from("abcd"));
    assert_eq!(
        out[0].metadata,
        md(&[("trace_id", hex), ("span", Value::Str(Arc::from("s2")))])
    );
    assert_eq!(out[1].metadata, md(&[("k", Value::Str(Arc::from("v")))]));
    assert_eq!(out[1].clone().into_record().metadata, out[1].metadata);
}

#[test]
fn metadata_of_the_completing_line_goes_to_the_next_record() {
    // An endswith record is flushed before the completing line's metadata is added
    // (package_content in Fluent Bit's flb_ml.c).
    let p = MlParser {
        name: Arc::from("dot"),
        kind: Kind::EndsWith(Box::from(&b"."[..])),
        negate: false,
        flush_ms: 1000,
        key_content: Some(Arc::from("log")),
        key_pattern: None,
        key_group: None,
        line: LineParser::None,
    };
    let mut s = MlStream::new(vec![Arc::new(p)], None);
    let now = Instant::now();
    let mut out = Vec::new();
    for (i, log) in ["one.", "two", " three."].iter().enumerate() {
        let m = md(&[("n", Value::Int(i as i64 + 1))]);
        s.append_event(
            t(i),
            m,
            log_body(log),
            i as u64,
            i as u64 + 1,
            now,
            &mut out,
        );
    }
    s.flush(&mut out);
    assert_eq!(logs(&out), ["one.", "two three."]);
    assert_eq!(out[0].metadata, Map::new());
    assert_eq!(
        out[1].metadata,
        md(&[("n", Value::Int(1)), ("n", Value::Int(2))])
    );
}

#[test]
fn arbitrary_lines_never_panic() {
    // Fragments of every format glued at random, times before 1970 included: whatever
    // comes, nothing panics.
    let pieces: &[&[u8]] = &[
        b"{",
        b"}",
        b"\"log\":",
        b"\"",
        b"\\",
        b"\\n",
        b"\\u00",
        b"\\ud83d",
        b",",
        b":",
        b"[",
        b"]",
        b"2024-01-02T03:04:05.",
        b"123456789",
        b"Z",
        b"+01:00",
        b" stdout ",
        b" stderr ",
        b"F ",
        b"P ",
        b"Traceback (most recent call last):",
        b"  File \"x\"",
        b"Error: ",
        b"panic: ",
        b"\tat ",
        b"goroutine 1 [running]:",
        b"\n",
        b"\r",
        b" ",
        b"\xff",
        b"\xc3",
        b"\0",
        b"x",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let now = Instant::now();
    let mut streams: Vec<MlStream> = vec![
        builtins(&["docker", "cri"]),
        builtins(&["cri"]),
        builtins(&["go", "python", "java", "ruby"]),
        MlStream::new(vec![builtin("java").unwrap()], Some(Arc::from("log"))),
        MlStream::docker_mode(Duration::from_secs(1), None, Arc::from("log")),
    ];
    for s in &mut streams {
        s.set_buffer_limit(300);
    }
    let mut out = Vec::new();
    for i in 0..20_000u64 {
        let mut line = Vec::new();
        for _ in 0..rng.usize(0..12) {
            line.extend_from_slice(pieces[rng.usize(..pieces.len())]);
        }
        let t = EventTime::new(rng.i64(-5..2_000_000_000), 0);
        for s in &mut streams {
            s.append_text(&line, t, i, i + 1, now, &mut out);
            let body = vec![(Arc::from("log"), super::container::bytes_value(&line))];
            if i % 7 == 0 {
                s.append_record(t, body, i, i + 1, now, &mut out);
            }
            if i % 1000 == 0 {
                s.flush_expired(now + Duration::from_secs(i), &mut out);
            }
        }
        let _ = super::time::container_time(&line, i % 2 == 0);
        out.clear();
    }
    for s in &mut streams {
        s.flush(&mut out);
    }
}
