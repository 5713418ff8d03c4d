//! The `aws` filter, and the credential chain's instance-role source, against a
//! stand-in EC2 instance metadata service on 169.254.169.254:80 inside a network
//! namespace the test creates (tests/common/imds.rs), the agent running in it. The
//! records are compared with Fluent Bit 5.1.1's, run the same way against the same
//! metadata (tests/data/fluent-bit/aws_filter). Needs root (network namespaces), as
//! the flow-log tests do.

mod common;

use std::path::Path;
use std::time::Duration;

use common::http_sink::{HttpSink, Req};
use common::netns::NetNs;
use common::sigv4::verify;
use common::*;

const T: Duration = Duration::from_secs(30);

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fluent-bit/aws_filter")
        .join(name)
}

fn lines_of(o: &str) -> Vec<serde_json::Value> {
    o.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The requests' lines and token headers, in order.
fn calls(sink: &HttpSink) -> Vec<String> {
    sink.reqs()
        .iter()
        .map(|r: &Req| {
            format!(
                "{} ttl={} token={}",
                r.line.trim_end_matches(" HTTP/1.1"),
                r.header("x-aws-ec2-metadata-token-ttl-seconds")
                    .unwrap_or("-"),
                r.header("x-aws-ec2-metadata-token").unwrap_or("-")
            )
        })
        .collect()
}

/// Each Fluent Bit case: the same records, byte for byte (keys, order, values).
/// IMDSv2: the token is fetched once (TTL 21600) and sent with every request.
#[test]
fn records_are_fluent_bits() {
    // (case, IMDS: Some(v2 only) or None for no service)
    let cases = [
        ("v2_all", Some(true)),
        ("v1_defaults", Some(false)),
        ("tags_include_entity", Some(true)),
        ("unreachable", None),
    ];
    for (case, imds) in cases {
        let ns = NetNs::new("awsf");
        let sink = imds.map(|v2| common::imds::start(&ns, v2));
        let conf = std::fs::read_to_string(data(&format!("{case}.conf"))).unwrap();
        let want = std::fs::read_to_string(data(&format!("{case}.expected"))).unwrap();
        let mut agent = Agent::start_in_netns(&conf, &ns);
        agent.wait_lines(want.lines().count(), T);
        let o = agent.stop(T);
        assert_eq!(o.stdout, want, "{case}: {}", o.stderr);
        if let (Some(sink), Some(true)) = (&sink, imds) {
            let calls = calls(sink);
            assert_eq!(
                calls[0], "PUT /latest/api/token ttl=21600 token=-",
                "{case}: {calls:#?}"
            );
            assert!(
                calls[1..]
                    .iter()
                    .all(|c| c.starts_with("GET ") && c.ends_with(common::imds::TOKEN)),
                "{case}: {calls:#?}"
            );
        }
        if case == "v1_defaults" {
            let calls = calls(sink.as_ref().unwrap());
            assert_eq!(
                calls,
                [
                    "GET /latest/meta-data/instance-id/ ttl=- token=-",
                    "GET /latest/meta-data/placement/availability-zone/ ttl=- token=-"
                ]
            );
        }
    }
}

/// The service is down when the agent starts: records pass unchanged, with the
/// reason logged; once it answers (retry_interval_s 1), records get the metadata.
#[test]
fn records_pass_while_the_service_is_down_and_get_metadata_once_it_is_up() {
    let ns = NetNs::new("awsdown");
    let conf = "[SERVICE]\n    flush 0.2\n    grace 1\n\
                [INPUT]\n    name dummy\n    tag app\n    dummy {\"log\":\"x\"}\n    rate 10\n\
                [FILTER]\n    name aws\n    match *\n    retry_interval_s 1\n\
                [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n";
    let mut agent = Agent::start_in_netns(conf, &ns);
    agent.wait_lines(3, T);
    agent.wait_log("Failed to get instance ID", T);
    let _imds = common::imds::start(&ns, true);
    agent.wait_until(T, "records with metadata", |o, _| o.contains("\"az\""));
    let o = agent.stop(T);
    let recs = lines_of(&o.stdout);
    assert!(recs[0].get("az").is_none(), "{}", o.stdout);
    assert_eq!(recs[0]["log"], "x");
    let last = recs.last().unwrap();
    assert_eq!(last["az"], "us-east-1a", "{}", o.stdout);
    assert_eq!(last["ec2_instance_id"], "i-0123456789abcdef0");
    // Once with the metadata, always with it.
    let first_with = recs.iter().position(|r| r.get("az").is_some()).unwrap();
    assert!(recs[first_with..].iter().all(|r| r.get("az").is_some()));
}

/// An expired IMDSv2 token (401) is replaced and the request asked again.
#[test]
fn an_expired_token_is_replaced() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ns = NetNs::new("awstok");
    let data = common::imds::metadata();
    let gets = AtomicUsize::new(0);
    let sink = common::imds::start_with(&ns, move |req| {
        // The first GET is refused as if its token had expired.
        if req.line.starts_with("GET") && gets.fetch_add(1, Ordering::SeqCst) == 0 {
            return common::http_sink::Answer::status(401);
        }
        common::imds::answer(true, &data, req)
    });
    let conf = "[SERVICE]\n    flush 0.2\n    grace 1\n\
                [INPUT]\n    name dummy\n    dummy {\"log\":\"x\"}\n    samples 1\n\
                [FILTER]\n    name aws\n    match *\n\
                [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n";
    let mut agent = Agent::start_in_netns(conf, &ns);
    agent.wait_lines(1, T);
    let o = agent.stop(T);
    let rec = &lines_of(&o.stdout)[0];
    assert_eq!(
        rec["ec2_instance_id"], "i-0123456789abcdef0",
        "{}",
        o.stderr
    );
    let calls = calls(&sink);
    assert_eq!(
        &calls[..4],
        [
            "PUT /latest/api/token ttl=21600 token=-".to_string(),
            format!(
                "GET /latest/meta-data/instance-id/ ttl=- token={}",
                common::imds::TOKEN
            ),
            "PUT /latest/api/token ttl=21600 token=-".to_string(),
            format!(
                "GET /latest/meta-data/instance-id/ ttl=- token={}",
                common::imds::TOKEN
            ),
        ]
    );
}

/// `tags_include` and `tags_exclude` together, or an unknown `imds_version`: errors
/// at the line, as Fluent Bit refuses to start.
#[test]
fn bad_settings_are_config_errors() {
    let base = "[INPUT]\n    name dummy\n[FILTER]\n    name aws\n    match *\n";
    let out = "[OUTPUT]\n    name null\n    match *\n";
    let e = refused_config(&format!(
        "{base}    tags_enabled on\n    tags_include a\n    tags_exclude b\n{out}"
    ));
    assert!(
        e.iter()
            .any(|l| l.contains("both tags_include and tags_exclude")),
        "{e:?}"
    );
    let e = refused_config(&format!("{base}    imds_version v3\n{out}"));
    assert!(e.iter().any(|l| l.contains("imds_version")), "{e:?}");
}

/// The credential chain's last source: with no other credentials, `aws_auth` signs
/// with the instance role's temporary credentials from instance metadata (IMDSv2:
/// token first), session token included; botocore agrees with the signature.
#[test]
fn instance_role_credentials_sign_requests() {
    let ns = NetNs::new("awscred");
    let imds = common::imds::start(&ns, true);
    let l = ns.run_in(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let sink = HttpSink::on_listener(l, |_, _| common::http_sink::Answer::ok());
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n    grace 2\n    log_level debug\n\
         [INPUT]\n    name dummy\n    samples 1\n\
         [OUTPUT]\n    name http\n    match *\n    host 127.0.0.1\n    port {}\n\
         \x20   format json_lines\n    aws_auth on\n    aws_region eu-central-1\n    aws_service execute-api\n",
        sink.port()
    );
    let home = Dir::new();
    let mut agent = Agent::start_in_netns_env(&conf, &ns, &[("HOME", home.path())]);
    let reqs = sink.wait(T, "a signed request", |r| !r.is_empty());
    agent.wait_log("credentials from EC2 instance metadata", T);
    let o = agent.stop(T);
    let req = &reqs[0];
    assert_eq!(
        req.header("x-amz-security-token"),
        Some(common::imds::ROLE_TOKEN),
        "{}",
        o.stderr
    );
    verify(
        &req.raw,
        common::imds::ROLE_KEY,
        common::imds::ROLE_SECRET,
        Some(common::imds::ROLE_TOKEN),
        "eu-central-1",
        "execute-api",
    );
    let calls = calls(&imds);
    assert_eq!(calls[0], "PUT /latest/api/token ttl=21600 token=-");
    assert_eq!(
        calls[1..3],
        [
            format!(
                "GET /latest/meta-data/iam/security-credentials/ ttl=- token={}",
                common::imds::TOKEN
            ),
            format!(
                "GET /latest/meta-data/iam/security-credentials/{} ttl=- token={}",
                common::imds::ROLE,
                common::imds::TOKEN
            ),
        ]
    );
}
