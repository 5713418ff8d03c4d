//! Parser tests: every format and property, with Fluent Bit's results.

use std::sync::Arc;

use super::*;
use crate::config::{SectionKind, Span};

fn section(lines: &[(&str, &str)]) -> Section {
    Section {
        kind: SectionKind::Parser,
        header: "PARSER".to_string(),
        span: Span::new("parsers.conf", 1),
        entries: lines
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Entry {
                key: k.to_ascii_lowercase(),
                value: v.to_string(),
                span: Span::new("parsers.conf", i as u32 + 2),
            })
            .collect(),
        processors: Vec::new(),
    }
}

fn parser(lines: &[(&str, &str)]) -> Parser {
    Parser::from_section(&section(lines)).unwrap_or_else(|e| panic!("{e}"))
}

fn err(lines: &[(&str, &str)]) -> String {
    match Parser::from_section(&section(lines)) {
        Ok(_) => panic!("no error"),
        Err(e) => match e.help() {
            Some(h) => format!("{e} | {h}"),
            None => e.to_string(),
        },
    }
}

fn s(v: &str) -> Value {
    Value::Str(Arc::from(v))
}

// 2024-03-15 12:00:00 UTC
const NOW: i64 = 1_710_504_000;

type Parsed = (Option<EventTime>, Vec<(String, Value)>);

fn run(p: &Parser, line: &str) -> Result<Parsed, NoMatch> {
    let mut out = Map::new();
    let t = p.parse_at(line.as_bytes(), NOW, &mut out)?;
    Ok((
        t,
        out.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    ))
}

fn kv(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn regex_apache_with_time() {
    let p = parser(&[
        ("Name", "apache"),
        ("Format", "regex"),
        (
            "Regex",
            r#"^(?<host>[^ ]*) [^ ]* (?<user>[^ ]*) \[(?<time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)?" (?<code>[^ ]*) (?<size>[^ ]*)(?: "(?<referer>[^\"]*)" "(?<agent>[^\"]*)")?$"#,
        ),
        ("Time_Key", "time"),
        ("Time_Format", "%d/%b/%Y:%H:%M:%S %z"),
    ]);
    let (t, rec) = run(
        &p,
        r#"192.168.2.20 - - [28/Jul/2006:10:27:10 -0300] "GET /cgi-bin/try/ HTTP/1.0" 200 3395"#,
    )
    .unwrap();
    assert_eq!(t, Some(EventTime::new(1_154_093_230, 0)));
    assert_eq!(
        rec,
        kv(&[
            ("host", s("192.168.2.20")),
            ("user", s("-")),
            ("method", s("GET")),
            ("path", s("/cgi-bin/try/")),
            ("code", s("200")),
            ("size", s("3395"))
        ])
    );
    assert_eq!(run(&p, "garbage"), Err(NoMatch));
}

#[test]
fn regex_empty_values_and_time_keep() {
    let re = r"^(?<a>[^ ]*) (?<time>[^ ]*) (?<b>.*)$";
    let p = parser(&[("name", "x"), ("format", "regex"), ("regex", re)]);
    // no time_format: "time" is a plain key; empty captures are skipped
    assert_eq!(run(&p, " t1 ").unwrap(), (None, kv(&[("time", s("t1"))])));
    let p = parser(&[
        ("name", "x"),
        ("format", "regex"),
        ("regex", re),
        ("skip_empty_values", "off"),
    ]);
    assert_eq!(
        run(&p, " t1 ").unwrap().1,
        kv(&[("a", s("")), ("time", s("t1")), ("b", s(""))])
    );
    let p = parser(&[
        ("name", "x"),
        ("format", "regex"),
        ("regex", re),
        ("time_format", "%s"),
        ("time_keep", "on"),
    ]);
    assert_eq!(
        run(&p, "a 1700000000 b").unwrap(),
        (
            Some(EventTime::new(1_700_000_000, 0)),
            kv(&[("a", s("a")), ("time", s("1700000000")), ("b", s("b"))])
        )
    );
}

#[test]
fn regex_time_failure_drops_the_key_and_keeps_the_record() {
    let p = parser(&[
        ("name", "x"),
        ("format", "regex"),
        ("regex", r"^(?<time>\S+) (?<msg>.*)$"),
        ("time_format", "%Y-%m-%d"),
        ("time_keep", "on"),
    ]);
    assert_eq!(
        run(&p, "yesterday hello").unwrap(),
        (None, kv(&[("msg", s("hello"))]))
    );
    // time_strict off: a partial read still gives a time (year 2024, Jan 0 = Dec 31)
    let p = parser(&[
        ("name", "x"),
        ("format", "regex"),
        ("regex", r"^(?<time>\S+) (?<msg>.*)$"),
        ("time_format", "%Y-%m-%d"),
        ("time_strict", "off"),
    ]);
    assert_eq!(
        run(&p, "2024-xx hello").unwrap(),
        (
            Some(EventTime::new(1_703_980_800, 0)),
            kv(&[("msg", s("hello"))])
        )
    );
}

#[test]
fn regex_missing_year_gets_the_current_one() {
    let p = parser(&[
        ("name", "syslog"),
        ("format", "regex"),
        (
            "regex",
            r"^\<(?<pri>[0-9]+)\>(?<time>[^ ]* {1,2}[^ ]* [^ ]*) (?<host>[^ ]*) (?<ident>[a-zA-Z0-9_\/\.\-]*)(?:\[(?<pid>[0-9]+)\])?(?:[^\:]*\:)? *(?<message>.*)$",
        ),
        ("time_key", "time"),
        ("time_format", "%b %d %H:%M:%S"),
        ("time_keep", "on"),
    ]);
    let (t, rec) = run(
        &p,
        "<34>Oct 11 22:14:15 mymachine su[1234]: 'su root' failed",
    )
    .unwrap();
    assert_eq!(t, Some(EventTime::new(1_728_684_855, 0)));
    assert_eq!(
        rec,
        kv(&[
            ("pri", s("34")),
            ("time", s("Oct 11 22:14:15")),
            ("host", s("mymachine")),
            ("ident", s("su")),
            ("pid", s("1234")),
            ("message", s("'su root' failed"))
        ])
    );
}

#[test]
fn regex_types() {
    let p = parser(&[
        ("name", "x"),
        ("format", "regex"),
        (
            "regex",
            r"^(?<n>\S+) (?<f>\S+) (?<b>\S+) (?<h>\S+) (?<s>\S+)$",
        ),
        ("types", "n:integer f:float b:bool h:hex"),
    ]);
    assert_eq!(
        run(&p, "12 1.5 true ff x").unwrap().1,
        kv(&[
            ("n", Value::Int(12)),
            ("f", Value::Float(1.5)),
            ("b", Value::Bool(true)),
            ("h", Value::UInt(255)),
            ("s", s("x"))
        ])
    );
    // a bool that does not cast stays a string
    assert_eq!(
        run(&p, "x y maybe z w").unwrap().1[2],
        ("b".to_string(), s("maybe"))
    );
}

#[test]
fn regex_with_no_named_group_never_matches() {
    let p = parser(&[("name", "x"), ("format", "regex"), ("regex", "(a)(b)")]);
    assert_eq!(run(&p, "ab"), Err(NoMatch));
    let p = parser(&[("name", "x"), ("format", "regex"), ("regex", "a|(?<x>b)")]);
    assert_eq!(run(&p, "a"), Err(NoMatch));
    assert_eq!(run(&p, "b").unwrap().1, kv(&[("x", s("b"))]));
}

#[test]
fn regex_decoders_run_after_time() {
    let p = parser(&[
        ("name", "x"),
        ("format", "regex"),
        ("regex", r"^(?<log>.*)$"),
        ("decode_field_as", "escaped log"),
        ("decode_field", "json log"),
    ]);
    assert_eq!(run(&p, r"a\tb").unwrap().1, kv(&[("log", s("a\tb"))]));
    let p = parser(&[
        ("name", "x"),
        ("format", "regex"),
        ("regex", r"^(?<log>.*)$"),
        ("decode_field", "json log"),
    ]);
    assert_eq!(
        run(&p, r#"{"k":"v"}"#).unwrap().1,
        kv(&[("log", s(r#"{"k":"v"}"#)), ("k", s("v"))])
    );
}

#[test]
fn json_time_and_types() {
    let p = parser(&[
        ("name", "docker"),
        ("format", "json"),
        ("time_key", "time"),
        ("time_format", "%Y-%m-%dT%H:%M:%S.%L"),
        ("time_keep", "on"),
    ]);
    let (t, rec) = run(
        &p,
        r#"{"log":"hi\n","stream":"stdout","time":"2017-03-02T14:43:03.160158521Z"}"#,
    )
    .unwrap();
    assert_eq!(t, Some(EventTime::new(1_488_465_783, 160_158_521)));
    assert_eq!(
        rec,
        kv(&[
            ("log", s("hi\n")),
            ("stream", s("stdout")),
            ("time", s("2017-03-02T14:43:03.160158521Z"))
        ])
    );
    let p = parser(&[("name", "j"), ("format", "json"), ("time_format", "%s")]);
    assert_eq!(
        run(&p, r#"{"a":1,"time":"1700000000","b":[1]}"#).unwrap(),
        (
            Some(EventTime::new(1_700_000_000, 0)),
            kv(&[
                ("a", Value::UInt(1)),
                ("b", Value::Array(vec![Value::UInt(1)]))
            ])
        )
    );
    // a time that does not parse: the key stays, no time
    assert_eq!(
        run(&p, r#"{"time":"soon"}"#).unwrap(),
        (None, kv(&[("time", s("soon"))]))
    );
    // a time that is not a string: untouched
    assert_eq!(
        run(&p, r#"{"time":1700000000}"#).unwrap(),
        (None, kv(&[("time", Value::UInt(1_700_000_000))]))
    );
    assert_eq!(run(&p, r#"[1]"#), Err(NoMatch));
    assert_eq!(run(&p, r#"not json"#), Err(NoMatch));
    // types do not apply to json
    let p = parser(&[("name", "j"), ("format", "json"), ("types", "a:integer")]);
    assert_eq!(run(&p, r#"{"a":"1"}"#).unwrap().1, kv(&[("a", s("1"))]));
}

#[test]
fn logfmt() {
    let p = parser(&[("name", "l"), ("format", "logfmt")]);
    assert_eq!(
        run(&p, r#"a=1 b="x \"y\"" c= d e="" f=é =x g=h=i"#)
            .unwrap()
            .1,
        kv(&[
            ("a", s("1")),
            ("b", s("x \"y\"")),
            ("c", Value::Bool(true)),
            ("d", Value::Bool(true)),
            ("e", s("")),
            ("f", s("é")),
            ("x", Value::Bool(true)),
            ("g", s("h")),
            ("i", Value::Bool(true))
        ])
    );
    // only the first line, when the newline follows a pair
    assert_eq!(run(&p, "a=1\nb=2").unwrap().1, kv(&[("a", s("1"))]));
    assert_eq!(
        run(&p, "a=1 \nb=2").unwrap().1,
        kv(&[("a", s("1")), ("b", s("2"))])
    );
    assert_eq!(run(&p, "  "), Err(NoMatch));
    let p = parser(&[
        ("name", "l"),
        ("format", "logfmt"),
        ("logfmt_no_bare_keys", "on"),
    ]);
    assert_eq!(run(&p, "a=1 b"), Err(NoMatch));
    assert_eq!(
        run(&p, "a=1 b=").unwrap().1,
        kv(&[("a", s("1")), ("b", Value::Bool(true))])
    );
    // with types: raw values, bare keys are ""
    let p = parser(&[("name", "l"), ("format", "logfmt"), ("types", "n:integer")]);
    assert_eq!(
        run(&p, r#"n=5 q="a\"b" bare"#).unwrap().1,
        kv(&[("n", Value::Int(5)), ("q", s(r#"a\"b"#)), ("bare", s(""))])
    );
}

#[test]
fn logfmt_and_ltsv_time() {
    let p = parser(&[
        ("name", "l"),
        ("format", "logfmt"),
        ("time_key", "ts"),
        ("time_format", "%Y-%m-%dT%H:%M:%S"),
    ]);
    assert_eq!(
        run(&p, "ts=2024-03-15T00:00:00 msg=hi").unwrap(),
        (
            Some(EventTime::new(1_710_460_800, 0)),
            kv(&[("msg", s("hi"))])
        )
    );
    // a bad time rejects the line
    assert_eq!(run(&p, "ts=yesterday msg=hi"), Err(NoMatch));
    // only the time field, dropped: nothing left, no match
    assert_eq!(run(&p, "ts=2024-03-15T00:00:00"), Err(NoMatch));
    let p = parser(&[
        ("name", "t"),
        ("format", "ltsv"),
        ("time_format", "%Y-%m-%dT%H:%M:%S"),
        ("time_keep", "on"),
    ]);
    assert_eq!(
        run(&p, "time:2024-03-15T00:00:00\thost:a.b\tua:x y:z").unwrap(),
        (
            Some(EventTime::new(1_710_460_800, 0)),
            kv(&[
                ("time", s("2024-03-15T00:00:00")),
                ("host", s("a.b")),
                ("ua", s("x y:z"))
            ])
        )
    );
}

#[test]
fn ltsv() {
    let p = parser(&[("name", "t"), ("format", "ltsv"), ("types", "n:integer")]);
    assert_eq!(
        run(&p, "n:7\tempty:\t:skipped\tx:1\r\ny:2").unwrap().1,
        kv(&[("n", Value::Int(7)), ("empty", s("")), ("x", s("1"))])
    );
    // a field without ':' ends the record
    assert_eq!(run(&p, "a:1\tb c:2\td:3").unwrap().1, kv(&[("a", s("1"))]));
    assert_eq!(run(&p, "no fields"), Err(NoMatch));
}

#[test]
fn time_offset_system_zone_and_time_zone() {
    let base = [
        ("name", "x"),
        ("format", "regex"),
        ("regex", "^(?<time>.*)$"),
        ("time_format", "%Y-%m-%d %H:%M:%S"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut l = base.to_vec();
        l.extend_from_slice(extra);
        parser(&l)
    };
    let t = |p: &Parser| run(p, "2024-03-15 00:00:00").unwrap().0.unwrap().secs;
    assert_eq!(t(&with(&[])), 1_710_460_800);
    assert_eq!(
        t(&with(&[("time_offset", "-0600")])),
        1_710_460_800 + 6 * 3600
    );
    let expected_local = {
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = 124;
        tm.tm_mon = 2;
        tm.tm_mday = 15;
        tm.tm_isdst = -1;
        unsafe { libc::mktime(&mut tm) as i64 }
    };
    assert_eq!(
        t(&with(&[
            ("time_system_timezone", "on"),
            ("time_offset", "+0100")
        ])),
        expected_local
    );
    if std::path::Path::new("/usr/share/zoneinfo/Asia/Tokyo").exists() {
        assert_eq!(
            t(&with(&[("time_zone", "Asia/Tokyo")])),
            1_710_460_800 - 9 * 3600
        );
    }
}

#[test]
fn config_errors() {
    assert_eq!(err(&[("format", "json")]), "parsers.conf:1: [parser] no parser 'name' found in file 'parsers.conf' | add a line such as 'Name my_parser' to the [PARSER] section");
    assert!(err(&[("name", "x")])
        .starts_with("parsers.conf:1: [parser] no parser 'format' found for 'x'"));
    assert!(err(&[("name", "x"), ("format", "regex")])
        .starts_with("parsers.conf:1: [parser] no parser 'regex' found for 'x'"));
    assert_eq!(
        err(&[("name", "x"), ("format", "xml")]),
        "parsers.conf:3: [parser:x] Invalid format xml | known formats: regex, json, ltsv, logfmt"
    );
    assert_eq!(
        err(&[("name", "x"), ("format", "regex"), ("regex", "(?<a>[a-")]),
        "parsers.conf:4: [parser:x] Invalid regex pattern (?<a>[a-: premature end of char-class"
    );
    assert!(err(&[
        ("name", "x"),
        ("format", "regex"),
        ("regex", r"(?<a>\p{Nope})")
    ])
    .starts_with("parsers.conf:4: [parser:x] Invalid regex pattern"));
    assert!(
        err(&[("name", "x"), ("format", "json"), ("time_format", "%Y %Q")]).starts_with(
            "parsers.conf:4: [parser:x] invalid time_format: unknown conversion '%Q' in '%Y %Q'"
        )
    );
    assert!(err(&[
        ("name", "x"),
        ("format", "json"),
        ("time_format", "%s"),
        ("time_offset", "+9:00")
    ])
    .starts_with("parsers.conf:5: [parser:x] invalid time_offset '+9:00'"));
    assert!(
        err(&[("name", "x"), ("format", "json"), ("time_keep", "maybe")])
            .starts_with("parsers.conf:4: [parser:x] invalid value 'maybe' for 'time_keep'")
    );
    assert!(
        err(&[("name", "x"), ("format", "json"), ("time_zone", "UTC")])
            .contains("time_zone requires time_format")
    );
    assert!(err(&[
        ("name", "x"),
        ("format", "json"),
        ("time_format", "%s"),
        ("time_zone", "No/Where")
    ])
    .contains("invalid or unavailable time_zone 'No/Where'"));
    assert!(err(&[
        ("name", "x"),
        ("format", "json"),
        ("decode_field", "yaml log")
    ])
    .contains("field decoder 'yaml' unknown"));
}

#[test]
fn keys_are_read_as_fluent_bit_reads_them() {
    // first of a repeated key wins; an empty value is unset
    let p = parser(&[
        ("name", "x"),
        ("format", "json"),
        ("time_key", ""),
        ("time_format", "%s"),
        ("time_format", "%Y"),
    ]);
    assert_eq!(p.time_key(), Some("time"));
    assert_eq!(p.time_format(), Some("%s"));
    assert_eq!(p.format(), "json");
    let p = parser(&[("name", "x"), ("format", "ReGeX"), ("regex", "(?<a>.)")]);
    assert_eq!(p.format(), "regex");
    assert!(p.regex().is_some());
}

/// Every `[PARSER]` of a parsers file, compiled.
fn load_file(path: &std::path::Path) -> Vec<Parser> {
    let doc = crate::config::parser::load_parsers_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    doc.sections
        .iter()
        .filter(|s| s.kind == SectionKind::Parser)
        .map(|s| Parser::from_section(s).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

const STANDARD: &[&str] = &[
    "apache",
    "apache2",
    "apache_error",
    "nginx",
    "k8s-nginx-ingress",
    "json",
    "logfmt",
    "docker",
    "docker-daemon",
    "syslog-rfc5424",
    "syslog-rfc3164-local",
    "syslog-rfc3164",
    "mongodb",
    "envoy",
    "istio-envoy-proxy",
    "cri",
    "kube-custom",
    "kmsg-netfilter-log",
];

#[test]
fn fluent_bits_parsers_file_compiles() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/data/parsers.conf");
    let parsers = load_file(&path);
    let names: Vec<&str> = parsers.iter().map(|p| &*p.name).collect();
    for name in STANDARD {
        assert!(
            names.contains(name),
            "{name} missing from {}",
            path.display()
        );
    }
    // All of them run on the linear-time engine.
    assert!(parsers
        .iter()
        .filter_map(Parser::regex)
        .all(|r| !r.is_fancy()));
}

#[test]
fn our_parsers_file_has_the_standard_parsers_and_reads_lines_as_fluent_bit() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/parsers.conf");
    let parsers = load_file(&path);
    let get = |n: &str| {
        parsers
            .iter()
            .find(|p| &*p.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    for name in STANDARD {
        get(name);
    }
    assert_eq!(parsers.len(), STANDARD.len());
    // Fluent Bit's records for these lines (also in testdata/cases.tsv).
    type Case<'a> = (&'a str, &'a str, Option<(i64, u32)>, Vec<(&'a str, Value)>);
    let cases: &[Case] = &[
        (
            "nginx",
            r#"172.17.0.1 - - [04/Mar/2024:10:10:10 +0000] "GET /index.html?x=1 HTTP/1.1" 200 612 "-" "curl/8.5.0""#,
            Some((1_709_547_010, 0)),
            vec![("remote", s("172.17.0.1")), ("host", s("-")), ("user", s("-")), ("method", s("GET")), ("path", s("/index.html?x=1")), ("code", s("200")), ("size", s("612")), ("referer", s("-")), ("agent", s("curl/8.5.0"))],
        ),
        (
            "cri",
            "2019-05-07T18:57:50.904275087+00:00 stdout F hello world",
            Some((1_557_255_470, 904_275_087)),
            vec![("time", s("2019-05-07T18:57:50.904275087+00:00")), ("stream", s("stdout")), ("logtag", s("F")), ("message", s("hello world"))],
        ),
        (
            "syslog-rfc5424",
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 1234 ID47 [exampleSDID@32473 iut="3"] An application event"#,
            Some((1_065_910_455, 3_000_000)),
            vec![
                ("pri", s("165")),
                ("time", s("2003-10-11T22:14:15.003Z")),
                ("host", s("mymachine.example.com")),
                ("ident", s("evntslog")),
                ("pid", s("1234")),
                ("msgid", s("ID47")),
                ("extradata", s(r#"[exampleSDID@32473 iut="3"]"#)),
                ("message", s("An application event")),
            ],
        ),
        (
            "mongodb",
            "2014-11-03T18:28:32.450-0500 I NETWORK [initandlisten] waiting for connections on port 27017 12ms",
            Some((1_415_039_312, 450_000_000)),
            vec![
                ("time", s("2014-11-03T18:28:32.450-0500")),
                ("severity", s("I")),
                ("component", s("NETWORK")),
                ("context", s("initandlisten")),
                ("message", s("waiting for connections on port 27017")),
                ("ms", s("12")),
            ],
        ),
        (
            "docker",
            r#"{"log":"hi\n","stream":"stderr","time":"2024-03-15T01:02:03.5Z"}"#,
            Some((1_710_464_523, 500_000_000)),
            vec![("log", s("hi\n")), ("stream", s("stderr")), ("time", s("2024-03-15T01:02:03.5Z"))],
        ),
        ("logfmt", "level=info msg=\"started\" ok", None, vec![("level", s("info")), ("msg", s("started")), ("ok", Value::Bool(true))]),
    ];
    for (name, line, time, want) in cases {
        let got = run(get(name), line).unwrap_or_else(|_| panic!("{name}: no match"));
        assert_eq!(
            got,
            (time.map(|(a, b)| EventTime::new(a, b)), kv(want)),
            "{name}"
        );
    }
}

/// Lines read by Fluent Bit 5.1.1 with the parsers of testdata/props.conf and of our
/// conf/parsers.conf (tail, then stdout): our records must print the same. Records whose time Fluent Bit did not
/// parse carry its clock at capture time; for those only the body is compared.
#[test]
fn records_match_fluent_bits_for_each_property() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/parser/testdata");
    let mut parsers = load_file(&dir.join("props.conf"));
    parsers.extend(load_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/parsers.conf"),
    ));
    let text = std::fs::read_to_string(dir.join("cases.tsv")).unwrap();
    let mut captured_at = 0i64;
    let mut checked = 0;
    for row in text.lines() {
        let cols: Vec<&str> = row.split('\t').collect();
        if cols[0] == "# captured_at" {
            captured_at = cols[1].parse().unwrap();
            continue;
        }
        let (name, line, want) = (cols[0], cols[1], cols[2]);
        let line: String = serde_json::from_str(line).unwrap();
        let want: String = serde_json::from_str(want).unwrap();
        let want = want.as_str();
        let p = parsers.iter().find(|p| &*p.name == name).unwrap();
        let mut body = Map::new();
        let time = match p.parse_at(line.as_bytes(), captured_at, &mut body) {
            Ok(t) => t,
            Err(NoMatch) => {
                body.push((Arc::from("log"), s(&line)));
                None
            }
        };
        let rec = crate::event::Record::new(time.unwrap_or_default(), body);
        let mut out = Vec::new();
        crate::event::format::write_print_record(&mut out, 0, "t", &rec);
        let got = String::from_utf8(out).unwrap();
        let got = got.trim_end().strip_prefix("[0] t: ").unwrap();
        // [[secs.nanos, {}], {...}]
        let split = |r: &str| -> (String, String) {
            let (t, rest) = r.split_once(", ").unwrap();
            (t.trim_start_matches('[').to_string(), rest.to_string())
        };
        let ((got_t, got_rest), (want_t, want_rest)) = (split(got), split(want));
        assert_eq!(got_rest, want_rest, "{name}: {line:?}");
        if time.is_some() {
            assert_eq!(got_t, want_t, "{name}: {line:?}");
        } else {
            let secs: i64 = want_t.split('.').next().unwrap().parse().unwrap();
            assert!(
                (secs - captured_at).abs() < 600,
                "{name}: {line:?}: Fluent Bit parsed a time ({want_t}), we did not"
            );
        }
        checked += 1;
    }
    assert!(checked >= 60);
}

/// The oracle of tests/data/fluent-bit (Fluent Bit 5.1.1's stdout for each standard
/// parser, with our conf/parsers.conf, and each parser property): the lines tail would
/// read, through our parser, print the same records. Times Fluent Bit stamped with
/// "now" (capture day) are compared loosely. Cases whose result depends on the process
/// time zone (TZ=Europe/Berlin with time_system_timezone) are left to the binary-level
/// test (tests/fluent_bit_parity.rs), which can set TZ.
#[test]
fn oracle_parsers_and_props_cases() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("tests/data/fluent-bit");
    let Ok(cases) = std::fs::read_to_string(data.join("cases.tsv")) else {
        panic!("tests/data/fluent-bit/cases.tsv is missing");
    };
    // 2026-11-30 15:35 UTC, during the capture.
    const CAPTURED: i64 = 1_796_052_900;
    let capture_day = CAPTURED / 86_400;
    let ours = load_file(&root.join("conf/parsers.conf"));
    let props = load_file(&data.join("props/parsers.conf"));
    let mut checked = 0;
    for row in cases.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (dir, case, tz) = (cols[0], cols[1], cols[2]);
        if dir != "parsers" && dir != "props" {
            continue;
        }
        let conf = std::fs::read_to_string(data.join(dir).join(format!("{case}.conf"))).unwrap();
        let prop = |k: &str| {
            conf.lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let (Some(parser_name), Some(tag), Some(path)) =
            (prop("parser "), prop("tag "), prop("path "))
        else {
            continue; // raw tail cases: no parser
        };
        if tz != "UTC" && case.contains("system") {
            continue;
        }
        let set = if dir == "parsers" { &ours } else { &props };
        let parser = set
            .iter()
            .find(|p| *p.name == parser_name)
            .unwrap_or_else(|| panic!("{case}: no parser {parser_name}"));
        // tail: lines end with \n (an unterminated last line is not read), a trailing
        // \r is dropped.
        let input = std::fs::read(data.join(dir).join(&path)).unwrap();
        let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        lines.pop();
        let mut got: Vec<(Option<EventTime>, String)> = Vec::new();
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut body = Map::new();
            let time = match parser.parse_at(line, CAPTURED, &mut body) {
                Ok(t) => t,
                Err(NoMatch) => {
                    body.push((Arc::from("log"), types::text_value(line)));
                    None
                }
            };
            if time.is_some_and(|t| !time::is_event_time(t)) {
                continue; // Fluent Bit: "error packing event"
            }
            let mut out = Vec::new();
            crate::event::format::write_print_record(
                &mut out,
                0,
                &tag,
                &crate::event::Record::new(time.unwrap_or_default(), body),
            );
            got.push((
                time,
                String::from_utf8_lossy(&out)
                    .trim_end_matches('\n')
                    .to_string(),
            ));
        }
        // Fluent Bit's records: "[N] tag: [[...]]", possibly over several lines.
        let expected = std::fs::read(data.join(dir).join(format!("{case}.expected"))).unwrap();
        let expected = String::from_utf8_lossy(&expected);
        let start = format!("] {tag}: [[");
        let mut want: Vec<String> = Vec::new();
        for line in expected.split_inclusive('\n') {
            let is_start = line.starts_with('[')
                && line
                    .find(&start)
                    .is_some_and(|i| line[1..i].bytes().all(|b| b.is_ascii_digit()));
            if is_start {
                want.push(line.to_string());
            } else if let Some(last) = want.last_mut() {
                last.push_str(line);
            }
        }
        assert_eq!(got.len(), want.len(), "{dir}/{case}: record count");
        for ((time, g), w) in got.iter().zip(&want) {
            let w = w.trim_end_matches('\n');
            // drop "[N] tag: [[" and split the time off
            let tail = |r: &str| r[r.find(&start).unwrap() + start.len()..].to_string();
            let (g, w) = (tail(g), tail(w));
            let (gt, gb) = g.split_once(", ").unwrap();
            let (wt, wb) = w.split_once(", ").unwrap();
            assert_eq!(gb, wb, "{dir}/{case}");
            if time.is_some() {
                assert_eq!(gt, wt, "{dir}/{case}: {gb}");
            } else {
                let secs: i64 = wt.split('.').next().unwrap().parse().unwrap();
                assert_eq!(
                    secs.div_euclid(86_400),
                    capture_day,
                    "{dir}/{case}: Fluent Bit parsed a time ({wt}) for {wb}, we did not"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} cases");
}
