//! `cloudwatch_logs` against a stand-in CloudWatch Logs that speaks the AWS JSON 1.1
//! wire format as the service does (log groups and streams that exist or not,
//! ResourceNotFoundException, ResourceAlreadyExistsException, `x-amzn-RequestId`),
//! checks every PutLogEvents against CloudWatch's rules (sorted events, at most 10,000,
//! 1,048,576 bytes counted as message + 26 per event, 24 hours), decodes bodies with
//! serde_json and every signature with botocore. The requests are compared with Fluent
//! Bit 5.1.1's for the same configs (tests/data/fluent-bit/cloudwatch_logs).

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http_sink::{Answer, HttpSink, Req};
use common::sigv4::verify;
use common::*;

const T: Duration = Duration::from_secs(30);
const KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "FQoGZXIvYXdzEXAMPLETOKEN";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fluent-bit/cloudwatch_logs")
        .join(name)
}

/// One event as stored: group, stream, timestamp, message.
type Stored = (String, String, u64, String);

#[derive(Default)]
struct State {
    groups: HashSet<String>,
    streams: HashSet<(String, String)>,
    events: Vec<Stored>,
    /// Answers to give instead, by action, in turn.
    /// (`None`: answer as the service does.)
    faults: HashMap<String, VecDeque<Option<Answer>>>,
    /// Rule breaks seen in requests (the test fails on any).
    violations: Vec<String>,
}

/// The stand-in service.
struct Cw {
    sink: HttpSink,
    state: Arc<Mutex<State>>,
}

fn aws_error(code: &str, message: &str) -> Answer {
    Answer::status(400)
        .header("x-amzn-RequestId", "11111111-2222-3333-4444-555555555555")
        .header("Content-Type", "application/x-amz-json-1.1")
        .body(&serde_json::json!({"__type": code, "message": message}).to_string())
}

fn ok(body: &str) -> Answer {
    Answer::ok()
        .header("x-amzn-RequestId", "11111111-2222-3333-4444-555555555555")
        .header("Content-Type", "application/x-amz-json-1.1")
        .body(body)
}

fn answer(st: &mut State, req: &Req) -> Answer {
    let action = req
        .header("x-amz-target")
        .and_then(|t| t.strip_prefix("Logs_20140328."))
        .unwrap_or("")
        .to_string();
    if let Some(Some(a)) = st.faults.get_mut(&action).and_then(|q| q.pop_front()) {
        return a;
    }
    if req.line != "POST / HTTP/1.1"
        || req.header("content-type") != Some("application/x-amz-json-1.1")
    {
        st.violations
            .push(format!("not a JSON 1.1 request: {}", req.line));
        return aws_error("SerializationException", "bad request");
    }
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            st.violations
                .push(format!("{action}: body is not JSON: {e}"));
            return aws_error("SerializationException", "not JSON");
        }
    };
    let s = |k: &str| body[k].as_str().unwrap_or("").to_string();
    let (group, stream) = (s("logGroupName"), s("logStreamName"));
    match action.as_str() {
        "CreateLogGroup" => {
            if !st.groups.insert(group) {
                return aws_error("ResourceAlreadyExistsException", "exists");
            }
            ok("")
        }
        "PutRetentionPolicy" => ok(""),
        "CreateLogStream" => {
            if !st.groups.contains(&group) {
                return aws_error(
                    "ResourceNotFoundException",
                    "The specified log group does not exist.",
                );
            }
            if !st.streams.insert((group, stream)) {
                return aws_error(
                    "ResourceAlreadyExistsException",
                    "The specified log stream already exists",
                );
            }
            ok("")
        }
        "PutLogEvents" => {
            if !st.streams.contains(&(group.clone(), stream.clone())) {
                return aws_error(
                    "ResourceNotFoundException",
                    "The specified log stream does not exist.",
                );
            }
            let events = body["logEvents"].as_array().cloned().unwrap_or_default();
            let mut size = 0;
            let mut last = 0;
            let times: Vec<u64> = events
                .iter()
                .map(|e| e["timestamp"].as_u64().unwrap())
                .collect();
            for (e, &t) in events.iter().zip(&times) {
                let m = e["message"].as_str().unwrap();
                size += m.len() + 26;
                if t < last {
                    st.violations.push("events not in time order".into());
                }
                last = t;
                st.events
                    .push((group.clone(), stream.clone(), t, m.to_string()));
            }
            if events.is_empty() || events.len() > 10_000 {
                st.violations
                    .push(format!("{} events in a call", events.len()));
            }
            if size > 1_048_576 || req.body.len() > 1_048_576 {
                st.violations.push(format!(
                    "batch of {size} bytes ({} as sent)",
                    req.body.len()
                ));
            }
            if times.last().unwrap_or(&0) - times.first().unwrap_or(&0) >= 86_400_000 {
                st.violations.push("a batch spans 24 hours".into());
            }
            ok(
                r#"{"nextSequenceToken":"49536701251539826331025683274032969384950891766572122113"}"#,
            )
        }
        other => {
            st.violations.push(format!("unknown action {other}"));
            aws_error("UnknownOperationException", other)
        }
    }
}

impl Cw {
    fn start(groups: &[&str]) -> Cw {
        Cw::build(groups, None)
    }

    fn build(groups: &[&str], pki: Option<&pki::Pki>) -> Cw {
        let state = Arc::new(Mutex::new(State {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..State::default()
        }));
        let st = state.clone();
        let script = move |_: usize, req: &Req| answer(&mut st.lock().unwrap(), req);
        let sink = match pki {
            None => HttpSink::scripted(script),
            Some(p) => HttpSink::tls_scripted(p, script),
        };
        Cw { sink, state }
    }

    /// The next `action` not yet scripted is answered `a`.
    fn fault(&self, action: &str, a: Answer) {
        self.script(action, Some(a));
    }

    /// The next `action` not yet scripted is answered as the service does.
    fn pass(&self, action: &str) {
        self.script(action, None);
    }

    fn script(&self, action: &str, a: Option<Answer>) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(action.to_string())
            .or_default()
            .push_back(a);
    }

    fn events(&self) -> Vec<Stored> {
        self.state.lock().unwrap().events.clone()
    }

    fn wait_events(&self, n: usize, what: &str) -> Vec<Stored> {
        let end = std::time::Instant::now() + T;
        loop {
            let ev = self.events();
            if ev.len() >= n {
                return ev;
            }
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for {what}: {} of {n} events",
                ev.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn puts(&self) -> Vec<Req> {
        self.sink
            .reqs()
            .into_iter()
            .filter(|r| r.header("x-amz-target") == Some("Logs_20140328.PutLogEvents"))
            .collect()
    }

    fn assert_valid(&self) {
        let v = self.state.lock().unwrap().violations.clone();
        assert!(v.is_empty(), "requests CloudWatch would refuse: {v:?}");
    }
}

fn creds(home: &Dir) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
        ("AWS_SESSION_TOKEN", TOKEN.to_string()),
        ("HOME", home.path().to_str().unwrap().to_string()),
    ]
}

fn start(conf: &str, home: &Dir) -> Agent {
    let env = creds(home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Agent::start_with_env(conf, &env)
}

/// A request in the form two runs share: the request line, header names lower-cased
/// with their values (the date, the signature and the port masked), the body. Keyed by
/// its group and stream: requests of different streams have no order between them.
fn canonical(req: &Req) -> ((String, String), String) {
    let mut out = format!("{}\n", req.line);
    for (k, v) in &req.headers {
        let k = k.to_ascii_lowercase();
        let v = match k.as_str() {
            "host" => v
                .rsplit_once(':')
                .map_or(v.clone(), |(h, _)| format!("{h}:PORT")),
            "x-amz-date" => "DATE".into(),
            "authorization" => {
                let v = v.split(", Signature=").next().unwrap();
                let (head, rest) = v.split_once("Credential=").unwrap();
                let mut parts: Vec<&str> = rest.split('/').collect();
                parts[1] = "DATE";
                format!("{head}Credential={}", parts.join("/"))
            }
            _ => v.clone(),
        };
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push_str(&String::from_utf8_lossy(&req.body));
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let key = (
        body["logGroupName"].as_str().unwrap_or("").to_string(),
        body["logStreamName"].as_str().unwrap_or("").to_string(),
    );
    (key, out)
}

/// Requests grouped by stream (first-seen order kept within a stream).
fn by_stream(reqs: &[Req]) -> Vec<((String, String), Vec<String>)> {
    let mut out: Vec<((String, String), Vec<String>)> = Vec::new();
    for r in reqs {
        let (k, text) = canonical(r);
        match out.iter_mut().find(|(key, _)| *key == k) {
            Some((_, v)) => v.push(text),
            None => out.push((k, vec![text])),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn parse_all(raw: &[u8]) -> Vec<Req> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some((r, used)) = common::http_sink::parse(rest) {
        out.push(r);
        rest = &rest[used..];
    }
    out
}

fn region_of(req: &Req) -> String {
    let auth = req.header("authorization").unwrap();
    auth.split('/').nth(2).unwrap().to_string()
}

/// Each case of tests/data/fluent-bit/cloudwatch_logs: the same requests as Fluent
/// Bit's (headers in order, bodies byte for byte), stream and group creation included,
/// every signature (the agent's and Fluent Bit's) checked by botocore.
#[test]
fn requests_are_fluent_bits() {
    let cases = [
        ("prefix_autocreate", &[][..]),
        ("log_key_emf", &[][..]),
        ("templates", &["/eks/shop", "fallback-group"][..]),
    ];
    for (case, groups) in cases {
        let want = parse_all(&std::fs::read(data(&format!("{case}.expected"))).unwrap());
        let cw = Cw::start(groups);
        let conf = std::fs::read_to_string(data(&format!("{case}.conf")))
            .unwrap()
            .replace("${ENDPOINT}", "http://127.0.0.1")
            .replace("${PORT}", &cw.sink.port().to_string());
        let home = Dir::new();
        let agent = start(&conf, &home);
        let reqs = cw.sink.wait(T, case, |r| r.len() >= want.len());
        let o = agent.stop(T);
        cw.assert_valid();
        assert_eq!(reqs.len(), want.len(), "{case}: {}", o.stderr);
        for r in reqs.iter().chain(&want) {
            verify(&r.raw, KEY, SECRET, Some(TOKEN), &region_of(r), "logs");
        }
        assert_eq!(by_stream(&reqs), by_stream(&want), "{case}: {}", o.stderr);
    }
}

/// The default is TLS (as Fluent Bit's, which always uses it): a bare `endpoint` host
/// is reached over TLS, verified with `tls.ca_file`, `Host` with its port.
#[test]
fn tls_is_used_by_default() {
    let pki = pki::Pki::new();
    let cw = Cw::build(&["g"], Some(&pki));
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n[INPUT]\n    name dummy\n    samples 1\n\
         [OUTPUT]\n    name cloudwatch_logs\n    match *\n    region us-east-1\n\
         \x20   log_group_name g\n    log_stream_name s\n    endpoint localhost\n    port {}\n\
         \x20   tls.ca_file {}\n",
        cw.sink.port(),
        pki.path("ca.pem")
    );
    let home = Dir::new();
    let agent = start(&conf, &home);
    let ev = cw.wait_events(1, "an event over TLS");
    agent.stop(T);
    cw.assert_valid();
    assert_eq!(ev[0].3, r#"{"message":"dummy"}"#);
    let first = &cw.sink.reqs()[0];
    assert_eq!(
        first.header("host"),
        Some(&*format!("localhost:{}", cw.sink.port()))
    );
    verify(&first.raw, KEY, SECRET, Some(TOKEN), "us-east-1", "logs");
}

fn dummy_conf(port: u16, record: &str, copies: usize, extra_service: &str, extra: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.5\n    grace 5\n    scheduler.base 1\n    scheduler.cap 2\n{extra_service}\
         [INPUT]\n    name dummy\n    tag app\n    dummy {record}\n    samples 1\n    copies {copies}\n\
         [OUTPUT]\n    name cloudwatch_logs\n    match *\n    region us-east-1\n\
         \x20   log_group_name g\n    log_stream_prefix p-\n    endpoint http://127.0.0.1\n\
         \x20   port {port}\n    retry_limit no_limits\n{extra}"
    )
}

/// Requests split where Fluent Bit splits them: 10,000 events per call, and the
/// payload limit counted as Fluent Bit counts it (76 bytes, the names, each escaped
/// message + 42): every event delivered once, every call within CloudWatch's limits.
#[test]
fn batches_split_at_the_limits() {
    // 25,000 small events: 10,000 + 10,000 + 5,000.
    let cw = Cw::start(&["g"]);
    let home = Dir::new();
    let agent = start(
        &dummy_conf(cw.sink.port(), r#"{"m":"x"}"#, 25_000, "", ""),
        &home,
    );
    let ev = cw.wait_events(25_000, "25,000 events");
    agent.stop(T);
    cw.assert_valid();
    assert_eq!(ev.len(), 25_000);
    let counts: Vec<usize> = cw
        .puts()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["logEvents"].as_array().unwrap().len()
        })
        .collect();
    assert_eq!(counts, [10_000, 10_000, 5_000]);

    // 30 events of a 100,000-byte message: (1,048,576 - 76 - 3 - 5) / (100,008 + 42)
    // = 10 per call (the message is {"m":"aaa..."} escaped: 100,008 bytes).
    let cw = Cw::start(&["g"]);
    let big = format!(r#"{{"m":"{}"}}"#, "a".repeat(100_000));
    let agent = start(&dummy_conf(cw.sink.port(), &big, 30, "", ""), &home);
    let ev = cw.wait_events(30, "30 large events");
    agent.stop(T);
    cw.assert_valid();
    assert_eq!(ev.len(), 30);
    assert!(ev.iter().all(|e| e.3.len() == 100_008));
    let sizes: Vec<usize> = cw.puts().iter().map(|r| r.body.len()).collect();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 1_048_576), "{sizes:?}");
}

/// A message over 1,000,000 bytes is cut to that length; one larger than a whole
/// request is dropped, counted and logged.
#[test]
fn oversize_events_are_cut_or_dropped_and_counted() {
    let cw = Cw::start(&["g"]);
    let http = free_port();
    let service = format!("    http_server on\n    http_port {http}\n");
    let cut = format!(r#"{{"m":"{}"}}"#, "b".repeat(1_010_000));
    let home = Dir::new();
    let mut agent = start(&dummy_conf(cw.sink.port(), &cut, 1, &service, ""), &home);
    let ev = cw.wait_events(1, "a cut event");
    // Cut at 1,000,000 bytes of the message as sent (JSON-escaped).
    let sent = serde_json::to_string(&ev[0].3).unwrap();
    assert_eq!(sent.len() - 2, 1_000_000);
    assert!(ev[0].3.starts_with("{\"m\":\"bbb"));
    agent.wait_log("Truncating event which is larger than max size", T);
    agent.stop(T);

    let cw = Cw::start(&["g"]);
    let huge = format!(r#"{{"m":"{}"}}"#, "c".repeat(1_100_000));
    let mut agent = start(&dummy_conf(cw.sink.port(), &huge, 1, &service, ""), &home);
    agent.wait_log("Discarding massive log record", T);
    let end = std::time::Instant::now() + T;
    while metric(
        http,
        "fluentbit_output_dropped_records_total",
        "cloudwatch_logs.0",
    ) != 1
    {
        assert!(std::time::Instant::now() < end, "the drop was not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.stop(T);
    assert!(cw.events().is_empty());
    cw.assert_valid();
}

/// 500, then ThrottlingException (a 400 that is worth retrying), then success: the
/// events arrive once each, after the engine's retries.
#[test]
fn server_errors_and_throttling_are_retried() {
    let cw = Cw::start(&["g"]);
    cw.fault("PutLogEvents", Answer::status(500).body("oops"));
    cw.fault(
        "PutLogEvents",
        aws_error("ThrottlingException", "Rate exceeded"),
    );
    let home = Dir::new();
    let agent = start(&dummy_conf(cw.sink.port(), r#"{"m":1}"#, 5, "", ""), &home);
    let ev = cw.wait_events(5, "5 events after two failures");
    let o = agent.stop(T);
    cw.assert_valid();
    assert_eq!(ev.len(), 5);
    assert_eq!(cw.puts().len(), 3, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "PutLogEvents API responded with error='ThrottlingException', message='Rate exceeded'"
        ),
        "{}",
        o.stderr
    );
}

/// InvalidParameterException: the request's events are dropped at once (Fluent Bit
/// retries them until retry_limit), counted, and the log says AWS's reason.
#[test]
fn a_refused_request_is_dropped_counted_and_logged() {
    let cw = Cw::start(&["g"]);
    cw.fault(
        "PutLogEvents",
        aws_error(
            "InvalidParameterException",
            "Log event too large: 300000 bytes exceeds limit of 262144",
        ),
    );
    let http = free_port();
    let service = format!("    http_server on\n    http_port {http}\n");
    let home = Dir::new();
    let mut agent = start(
        &dummy_conf(cw.sink.port(), r#"{"m":1}"#, 4, &service, ""),
        &home,
    );
    agent.wait_log(
        "Log event too large: 300000 bytes exceeds limit of 262144",
        T,
    );
    let end = std::time::Instant::now() + T;
    while metric(
        http,
        "fluentbit_output_dropped_records_total",
        "cloudwatch_logs.0",
    ) != 4
    {
        assert!(std::time::Instant::now() < end, "the drop was not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = agent.stop(T);
    assert_eq!(cw.puts().len(), 1, "not retried: {}", o.stderr);
    assert!(cw.events().is_empty());
    assert!(
        o.stderr
            .contains("PutLogEvents API responded with error='InvalidParameterException'"),
        "{}",
        o.stderr
    );
}

/// The group is created (auto_create_group) when CreateLogStream says it does not
/// exist; a stream deleted later (ResourceNotFoundException on PutLogEvents) is
/// created again and the events sent again, nothing lost.
#[test]
fn missing_groups_and_streams_are_created() {
    let cw = Cw::start(&[]);
    let home = Dir::new();
    let conf = format!(
        "[SERVICE]\n    flush 0.3\n    grace 5\n\
         [INPUT]\n    name dummy\n    tag app\n    dummy {{\"m\":1}}\n    rate 5\n\
         [OUTPUT]\n    name cloudwatch_logs\n    match *\n    region us-east-1\n\
         \x20   log_group_name g\n    log_stream_name s\n    auto_create_group on\n\
         \x20   endpoint http://127.0.0.1\n    port {}\n",
        cw.sink.port()
    );
    let agent = start(&conf, &home);
    cw.wait_events(2, "events in the created group");
    // The stream is deleted behind the agent's back.
    let before = {
        let mut st = cw.state.lock().unwrap();
        st.streams.clear();
        st.events.len()
    };
    cw.wait_events(before + 3, "events after the stream came back");
    agent.stop(T);
    cw.assert_valid();
    let actions: Vec<String> = cw
        .sink
        .reqs()
        .iter()
        .map(|r| r.header("x-amz-target").unwrap().to_string())
        .collect();
    let creates = actions
        .iter()
        .filter(|a| a.ends_with("CreateLogStream"))
        .count();
    assert_eq!(
        &actions[..4],
        [
            "Logs_20140328.CreateLogStream",
            "Logs_20140328.CreateLogGroup",
            "Logs_20140328.CreateLogStream",
            "Logs_20140328.PutLogEvents"
        ]
    );
    assert_eq!(creates, 3, "{actions:?}");
    // Every record of the dummy input arrived, none twice (the times are distinct).
    let ev = cw.events();
    let times: HashSet<u64> = ev.iter().map(|e| e.2).collect();
    assert_eq!(times.len(), ev.len());
}

/// When a later request of a chunk fails, only what was not delivered is sent again:
/// each event arrives once (Fluent Bit sends the whole chunk again, duplicating the
/// calls that went through).
#[test]
fn a_failed_batch_retries_only_what_was_not_delivered() {
    let cw = Cw::start(&["g"]);
    // 30 events of 100,008 bytes = 3 calls; the second one fails once with 503.
    cw.pass("PutLogEvents");
    cw.fault("PutLogEvents", Answer::status(503).body("busy"));
    let home = Dir::new();
    let big = format!(r#"{{"m":"{}","i":1}}"#, "a".repeat(100_000));
    let agent = start(&dummy_conf(cw.sink.port(), &big, 30, "", ""), &home);
    let ev = cw.wait_events(30, "30 events");
    let o = agent.stop(T);
    cw.assert_valid();
    assert_eq!(ev.len(), 30, "{}", o.stderr);
    assert_eq!(cw.puts().len(), 4, "{}", o.stderr);
}

/// An auth error (ExpiredTokenException) makes the agent fetch its credentials again:
/// the retry is signed with the new keys of the shared credentials file.
#[test]
fn an_auth_error_fetches_the_credentials_again() {
    let cw = Cw::start(&["g"]);
    cw.fault(
        "PutLogEvents",
        aws_error(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
    );
    let home = Dir::new();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    let file = |key: &str| {
        home.file(
            ".aws/credentials",
            &format!(
                "[default]\naws_access_key_id = {key}\naws_secret_access_key = s3cret/{key}\n"
            ),
        );
    };
    file("AKIDOLD");
    let agent = Agent::start_with_env(
        &dummy_conf(cw.sink.port(), r#"{"m":1}"#, 2, "", ""),
        &[("HOME", home.path().to_str().unwrap())],
    );
    cw.sink.wait(T, "the refused call", |r| {
        r.iter()
            .any(|r| r.header("x-amz-target") == Some("Logs_20140328.PutLogEvents"))
    });
    file("AKIDNEW");
    cw.wait_events(2, "the events after the refresh");
    let o = agent.stop(T);
    let puts = cw.puts();
    assert_eq!(puts.len(), 2, "{}", o.stderr);
    verify(
        &puts[0].raw,
        "AKIDOLD",
        "s3cret/AKIDOLD",
        None,
        "us-east-1",
        "logs",
    );
    verify(
        &puts[1].raw,
        "AKIDNEW",
        "s3cret/AKIDNEW",
        None,
        "us-east-1",
        "logs",
    );
    assert!(
        o.stderr.contains("auth error, refreshing creds"),
        "{}",
        o.stderr
    );
}

/// Events of one chunk more than 24 hours apart go in separate calls, each sorted by
/// time (records read by tail with their own times, out of order).
#[test]
fn events_are_sorted_and_a_day_apart_go_separately() {
    let cw = Cw::start(&["g"]);
    let dir = Dir::new();
    let parsers = dir.file(
        "parsers.conf",
        "[PARSER]\n    name t\n    format json\n    time_key t\n    time_format %Y-%m-%dT%H:%M:%S\n",
    );
    let log = dir.file(
        "app.log",
        "{\"t\":\"2026-01-01T10:00:02\",\"i\":1}\n{\"t\":\"2026-01-01T10:00:01\",\"i\":2}\n\
         {\"t\":\"2026-01-02T10:00:01\",\"i\":3}\n{\"t\":\"2026-01-01T10:00:03\",\"i\":4}\n",
    );
    let conf = format!(
        "[SERVICE]\n    flush 1\n    grace 5\n    parsers_file {}\n\
         [INPUT]\n    name tail\n    path {}\n    tag app\n    read_from_head on\n    parser t\n\
         [OUTPUT]\n    name cloudwatch_logs\n    match *\n    region us-east-1\n\
         \x20   log_group_name g\n    log_stream_name s\n    endpoint http://127.0.0.1\n    port {}\n",
        parsers.display(),
        log.display(),
        cw.sink.port()
    );
    let agent = start(&conf, &dir);
    cw.wait_events(4, "4 events");
    let o = agent.stop(T);
    cw.assert_valid();
    let calls: Vec<Vec<u64>> = cw
        .puts()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["logEvents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let m: serde_json::Value =
                        serde_json::from_str(e["message"].as_str().unwrap()).unwrap();
                    m["i"].as_u64().unwrap()
                })
                .collect()
        })
        .collect();
    // Batches form in arrival order (Fluent Bit's): 1, 2; then 3, a day after 1, sends
    // them first; 4 is within a day of 3. Each call is sorted by time.
    assert_eq!(calls, [vec![2, 1], vec![4, 3]], "{}", o.stderr);
}

/// Settings Fluent Bit refuses at start, and those agent refuses on purpose, are
/// errors at their line.
#[test]
fn bad_settings_are_config_errors() {
    let section = |extra: &str| {
        format!("[INPUT]\n    name dummy\n[OUTPUT]\n    name cloudwatch_logs\n    match *\n{extra}")
    };
    let cases = [
        (
            "    region us-east-1\n    log_stream_name s\n",
            "'log_group_name' is a required field",
        ),
        (
            "    log_group_name g\n    log_stream_name s\n",
            "'region' is a required field",
        ),
        (
            "    region us-east-1\n    log_group_name g\n",
            "Either 'log_stream_name' or 'log_stream_prefix' is required",
        ),
        (
            "    region us-east-1\n    log_group_name g\n    log_stream_name s\n    log_stream_prefix p\n",
            "Either 'log_stream_name' or 'log_stream_prefix' is required",
        ),
        (
            "    region us-east-1\n    log_group_name g\n    log_stream_name s\n    auto_create_group on\n    log_group_class COLD\n",
            "log_group_class",
        ),
        (
            "    region us-east-1\n    log_group_name g\n    log_stream_name s\n    log_retention_days 10\n",
            "log_retention_days",
        ),
        (
            "    region us-east-1\n    log_group_name g\n    log_stream_name s\n    add_entity on\n",
            "add_entity",
        ),
    ];
    for (extra, want) in cases {
        let e = refused_config(&section(extra));
        assert!(e.iter().any(|l| l.contains(want)), "{want}: {e:?}");
    }
}

/// `auto_retry_requests` (on by default): a request whose answer is cut off is sent
/// again at once, before any engine retry; off, the engine retries the chunk.
#[test]
fn a_request_without_an_answer_is_sent_again_at_once() {
    for (auto, engine_retry) in [("on", false), ("off", true)] {
        let cw = Cw::start(&["g"]);
        cw.fault("PutLogEvents", ok(r#"{"nextSequenceToken":"x"}"#).cut());
        let home = Dir::new();
        let agent = start(
            &dummy_conf(
                cw.sink.port(),
                r#"{"m":1}"#,
                3,
                "",
                &format!("    auto_retry_requests {auto}\n"),
            ),
            &home,
        );
        cw.wait_events(3, "the events");
        let o = agent.stop(T);
        assert_eq!(cw.puts().len(), 2, "{auto}: {}", o.stderr);
        assert_eq!(
            o.stderr.contains("[engine] failed to flush chunk"),
            engine_retry,
            "{auto}: {}",
            o.stderr
        );
    }
}

/// A 200 without `x-amzn-RequestId` is not CloudWatch's (a proxy's, say): as Fluent
/// Bit, it is asked again at once, then the chunk is retried.
#[test]
fn a_200_without_a_request_id_is_not_taken_for_delivery() {
    let cw = Cw::start(&["g"]);
    cw.fault("PutLogEvents", Answer::ok().body("{}"));
    cw.fault("PutLogEvents", Answer::ok().body("{}"));
    let home = Dir::new();
    let agent = start(&dummy_conf(cw.sink.port(), r#"{"m":1}"#, 2, "", ""), &home);
    cw.wait_events(2, "the events");
    let o = agent.stop(T);
    assert_eq!(cw.puts().len(), 3, "{}", o.stderr);
    assert!(
        o.stderr.contains("x-amzn-RequestId header not found"),
        "{}",
        o.stderr
    );
}

/// The PutLogEvents messages of a capture, `"Timestamp":N` masked (the scrape time).
fn emf_messages(req: &Req) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    v["logEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let m = e["message"].as_str().unwrap();
            let (head, rest) = m.split_once("\"Timestamp\":").unwrap();
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            format!("{head}\"Timestamp\":T{}", &rest[digits..])
        })
        .collect()
}

/// Metrics (here scraped from a Prometheus text exposition) go as one embedded metric
/// format event per sample, as Fluent Bit 5.1.1 writes them (counters, gauges,
/// summaries and histograms; tests/data/fluent-bit/cloudwatch_logs/metrics_emf).
#[test]
fn metrics_are_sent_as_fluent_bits_emf_events() {
    let text = std::fs::read_to_string(data("metrics_emf.prom")).unwrap();
    let exporter = HttpSink::scripted(move |_, _| {
        Answer::ok()
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(&text)
    });
    let cw = Cw::start(&["g"]);
    let conf = std::fs::read_to_string(data("metrics_emf.conf"))
        .unwrap()
        .replace("${METRICS_PORT}", &exporter.port().to_string())
        .replace("${ENDPOINT}", "http://127.0.0.1")
        .replace("${PORT}", &cw.sink.port().to_string());
    let home = Dir::new();
    let agent = start(&conf, &home);
    cw.wait_events(5, "the samples");
    let o = agent.stop(T);
    cw.assert_valid();
    let want = parse_all(&std::fs::read(data("metrics_emf.expected")).unwrap());
    let want = want
        .iter()
        .find(|r| r.header("x-amz-target") == Some("Logs_20140328.PutLogEvents"))
        .unwrap();
    assert_eq!(
        emf_messages(&cw.puts()[0]),
        emf_messages(want),
        "{}",
        o.stderr
    );
}
