//! `http` output against a stand-in server on loopback that parses requests by hand:
//! the requests are Fluent Bit 5.1.1's (captured in tests/data/fluent-bit/http), and
//! faults (a receiver down, 503, 429 with Retry-After, 400, a stalled or cut response)
//! lose nothing that can be delivered and count what is dropped.

mod common;

use std::path::Path;
use std::time::Duration;

use common::http_sink::{run_request_oracle_cases, Answer, HttpSink};
use common::*;

const T: Duration = Duration::from_secs(30);

fn oracle_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fluent-bit/http")
}

#[test]
fn requests_are_fluent_bits() {
    let n = run_request_oracle_cases(&oracle_dir(), Answer::ok, |text, port| {
        text.replace("${HTTP_PORT}", &port.to_string())
    });
    assert!(n >= 9, "{n} cases");
}

/// `rand_value` of every record in a json_lines body.
fn values(body: &str) -> Vec<u64> {
    body.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("{l}"));
            v["rand_value"].as_u64().unwrap()
        })
        .collect()
}

fn random_to_http(port: u16, n: u32, extra: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    grace 10\n    scheduler.base 1\n    scheduler.cap 10\n\
         [INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 20000000\n\
         [OUTPUT]\n    name http\n    match *\n    host 127.0.0.1\n    port {port}\n\
         \x20   format json_lines\n    retry_limit no_limits\n{extra}"
    )
}

/// 503, 429 with Retry-After, a response that stalls past http.response_timeout, one
/// cut in the middle of its body: each retries its chunk, and every record is accepted
/// exactly once by the requests answered 200.
#[test]
fn failed_requests_are_retried_and_nothing_is_lost() {
    let script = |n: usize, _: &common::http_sink::Req| match n {
        0 => Answer::status(503).body("busy"),
        1 => Answer::status(429).header("Retry-After", "5"),
        2 => Answer::ok().stall(Duration::from_secs(3)),
        3 => Answer::ok().body("half of this body").cut(),
        _ => Answer::ok(),
    };
    let sink = HttpSink::scripted(script);
    let n = 40;
    let agent = Agent::start(&random_to_http(
        sink.port(),
        n,
        "    http.response_timeout 1s\n",
    ));
    let accepted = |reqs: &[common::http_sink::Req]| -> Vec<u64> {
        reqs.iter()
            .enumerate()
            .filter(|(i, _)| *i >= 4)
            .flat_map(|(_, r)| values(&r.text()))
            .collect()
    };
    let reqs = sink.wait(T, "every record accepted", |r| {
        let mut v = accepted(r);
        v.sort();
        v.dedup();
        v.len() >= n as usize
    });
    let o = agent.stop(T);
    let mut got = accepted(&reqs);
    let total = got.len();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), n as usize);
    assert_eq!(
        total, n as usize,
        "a record was accepted twice\n{}",
        o.stderr
    );
    // The retry of the chunk refused with 429 waited for its Retry-After: 5 s, where
    // this config's first backoff alone waits 2 to 3 s.
    let retried = reqs[2..]
        .iter()
        .find(|r| r.body == reqs[1].body)
        .expect("the 429 chunk sent again");
    let waited = retried.at.duration_since(reqs[1].at);
    assert!(waited >= Duration::from_millis(4900), "{waited:?}");
    for text in [
        "HTTP status=503",
        "busy",
        "HTTP status=429",
        "http.response_timeout",
    ] {
        assert!(o.stderr.contains(text), "{text}\n{}", o.stderr);
    }
}

/// A receiver that is down for 30 s (the outage), then up: the records wait
/// and all arrive, none twice.
#[test]
fn receiver_down_then_up_loses_nothing() {
    let port = free_port();
    let n = 30;
    let agent = Agent::start(&random_to_http(port, n, ""));
    std::thread::sleep(Duration::from_secs(30));
    let sink = HttpSink::on_port(port, |_, _| Answer::ok());
    let reqs = sink.wait(T, "every record", |r| {
        r.iter().map(|r| values(&r.text()).len()).sum::<usize>() >= n as usize
    });
    let o = agent.stop(T);
    let mut got: Vec<u64> = reqs.iter().flat_map(|r| values(&r.text())).collect();
    got.sort();
    let all = got.len();
    got.dedup();
    assert_eq!(got.len(), n as usize, "{}", o.stderr);
    assert_eq!(all, n as usize, "nothing was delivered twice: {}", o.stderr);
    assert!(o.stderr.contains("Connection refused"), "{}", o.stderr);
}

/// A 4xx other than 408/429 drops the chunk: logged with the response body and
/// counted in fluentbit_output_dropped_records_total; later chunks still go.
#[test]
fn client_error_drops_the_chunk_and_counts_it() {
    let sink = HttpSink::scripted(|n, _| match n {
        0 => Answer::status(400).body("{\"error\":\"mapper_parsing_exception\"}"),
        _ => Answer::ok(),
    });
    let http = free_port();
    let mut agent = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    samples 3\n    rate 2\n\
         [OUTPUT]\n    name http\n    match *\n    host 127.0.0.1\n    port {}\n",
        sink.port()
    ));
    sink.wait(T, "3 requests", |r| r.len() >= 3);
    agent.wait_log("mapper_parsing_exception", T);
    let (_, metrics) = http_get(http, "/api/v1/metrics/prometheus").unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("fluentbit_output_dropped_records_total{name=\"http.0\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(line.split(' ').nth(1), Some("1"), "{line}");
    let o = agent.stop(T);
    assert!(
        o.stderr.contains("HTTP status=400") && o.stderr.contains("will not be retried"),
        "{}",
        o.stderr
    );
}

/// Requests reuse one kept-alive connection; `net.keepalive off` opens one each.
#[test]
fn keepalive_reuses_the_connection() {
    for (extra, one) in [("", true), ("    net.keepalive off\n", false)] {
        let sink = HttpSink::start();
        let agent = Agent::start(&format!(
            "[SERVICE]\n    flush 0.2\n\
             [INPUT]\n    name dummy\n    samples 4\n    rate 5\n\
             [OUTPUT]\n    name http\n    match *\n    host 127.0.0.1\n    port {}\n    workers 1\n{extra}",
            sink.port()
        ));
        let reqs = sink.wait(T, "4 records", |r| {
            r.iter()
                .map(|r| {
                    serde_json::from_slice::<Vec<serde_json::Value>>(&r.body)
                        .unwrap()
                        .len()
                })
                .sum::<usize>()
                >= 4
        });
        agent.stop(T);
        assert!(reqs.len() >= 2, "{reqs:?}");
        if one {
            assert_eq!(sink.connections(), 1);
            assert_eq!(reqs[0].header("connection"), Some("keep-alive"));
        } else {
            assert_eq!(sink.connections(), reqs.len());
            assert_eq!(reqs[0].header("connection"), None);
        }
    }
}

/// Through a proxy (`proxy`, or HTTP_PROXY unless NO_PROXY names the host): absolute
/// request URIs, `Proxy-Authorization` from the proxy URL, `Host` the destination.
#[test]
fn proxies_get_absolute_uris() {
    let proxy = HttpSink::start();
    let conf = |extra: &str| {
        format!(
            "[SERVICE]\n    flush 0.2\n\
             [INPUT]\n    name dummy\n    samples 1\n\
             [OUTPUT]\n    name http\n    match *\n    host logs.example\n    port 9200\n    uri /in\n{extra}"
        )
    };
    let a = Agent::start(&conf(&format!(
        "    proxy http://u:p@127.0.0.1:{}\n",
        proxy.port()
    )));
    let reqs = proxy.wait(T, "a request", |r| !r.is_empty());
    a.stop(T);
    assert_eq!(reqs[0].line, "POST http://logs.example:9200/in HTTP/1.1");
    assert_eq!(reqs[0].header("host"), Some("logs.example:9200"));
    assert_eq!(reqs[0].header("proxy-authorization"), Some("Basic dTpw"));

    let url = format!("http://127.0.0.1:{}", proxy.port());
    let a = Agent::start_with_env(&conf(""), &[("HTTP_PROXY", &url)]);
    proxy.wait(T, "a second request", |r| r.len() >= 2);
    a.stop(T);
    assert_eq!(
        proxy.reqs()[1].line,
        "POST http://logs.example:9200/in HTTP/1.1"
    );

    // NO_PROXY names the host: connects directly (here: to a port nothing serves).
    let direct = HttpSink::start();
    let a = Agent::start_with_env(
        &conf("")
            .replace("logs.example", "127.0.0.1")
            .replace("9200", &direct.port().to_string()),
        &[("HTTP_PROXY", &url), ("NO_PROXY", "other,127.0.0.1")],
    );
    let reqs = direct.wait(T, "a direct request", |r| !r.is_empty());
    a.stop(T);
    assert_eq!(reqs[0].line, "POST /in HTTP/1.1");
    assert_eq!(proxy.reqs().len(), 2);
}

/// Config errors name the line and the fix.
#[test]
fn bad_settings_are_refused() {
    for (line, want) in [
        ("    body_key $b\n", "body_key together with headers_key"),
        ("    compress brotli\n", "compress"),
        ("    oauth2.enable on\n", "OAuth2"),
        ("    aws_auth on\n", "aws_region not set"),
        ("    header Bad:Name x\n", "invalid header"),
        ("    tls on\n    proxy http://127.0.0.1:3128\n", "CONNECT"),
    ] {
        let errs = refused_config(&format!(
            "[INPUT]\n    name dummy\n[OUTPUT]\n    name http\n    match *\n{line}"
        ));
        assert!(errs.iter().any(|e| e.contains(want)), "{line}: {errs:?}");
    }
}
