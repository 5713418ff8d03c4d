//! `aws_auth` (AWS SigV4) of the HTTP outputs: requests captured by a stand-in server,
//! each signature recomputed by botocore (AWS's Python signer, tests/common/
//! sigv4_verify.py) from the request's own date and SignedHeaders, and the request
//! shape compared with Fluent Bit 5.1.1's (tests/data/fluent-bit/aws).

mod common;

use std::path::Path;

use std::time::Duration;

use common::http_sink::{Answer, HttpSink, Req};
use common::sigv4::verify;
use common::*;

const T: Duration = Duration::from_secs(30);
const KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "FQoGZXIvYXdzEXAMPLETOKEN";

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fluent-bit/aws")
        .join(name)
}

/// What two runs share of a signed request: the request line, header names in order
/// (lower-cased), and the Authorization header without its date and signature.
fn shape(req: &Req) -> String {
    let mut out = format!("{}\n", req.line);
    for (k, v) in &req.headers {
        let k = k.to_ascii_lowercase();
        out.push_str(&k);
        if k == "authorization" {
            let v = v.split(", Signature=").next().unwrap();
            // Credential=KEY/DATE/region/service/aws4_request
            let (head, rest) = v.split_once("Credential=").unwrap();
            let mut parts: Vec<&str> = rest.split('/').collect();
            parts[1] = "DATE";
            out.push_str(&format!(": {head}Credential={}", parts.join("/")));
        }
        out.push('\n');
    }
    out
}

fn parse_one(raw: &[u8]) -> Req {
    common::http_sink::parse(raw).expect("a whole request").0
}

/// Runs a case of tests/data/fluent-bit/aws with `env`, returns the first request.
fn run_case(case: &str, env: &[(&str, &str)]) -> (Req, String) {
    let sink =
        HttpSink::scripted(|_, _| Answer::ok().body(r#"{"errors":false,"took":1,"items":[]}"#));
    let conf = std::fs::read_to_string(data(&format!("{case}.conf")))
        .unwrap()
        .replace("${HTTP_PORT}", &sink.port().to_string());
    let agent = Agent::start_with_env(&conf, env);
    let reqs = sink.wait(T, case, |r| !r.is_empty());
    let o = agent.stop(T);
    (reqs[0].clone(), o.stderr)
}

/// Environment credentials with a session token, `http` output: botocore computes the
/// same Authorization, `x-amz-security-token` is sent and signed, and the request has
/// Fluent Bit's shape (same headers in the same order, same SignedHeaders).
#[test]
fn env_credentials_sign_as_fluent_bit() {
    let home = Dir::new();
    let home_s = home.path().to_str().unwrap();
    let (req, _) = run_case(
        "http_env_session",
        &[
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_SESSION_TOKEN", TOKEN),
            ("HOME", home_s),
        ],
    );
    verify(
        &req.raw,
        KEY,
        SECRET,
        Some(TOKEN),
        "us-west-2",
        "my-service",
    );
    let fb = std::fs::read(data("http_env_session.expected")).unwrap();
    verify(&fb, KEY, SECRET, Some(TOKEN), "us-west-2", "my-service");
    assert_eq!(shape(&req), shape(&parse_one(&fb)));
}

/// A shared credentials file, profile from `aws_profile`, `es` output: Amazon
/// OpenSearch's rules as Fluent Bit's (Host without port, x-amz-content-sha256 of the
/// body as sent, Content-Length unsigned, User-Agent aws-fluent-bit-plugin).
#[test]
fn profile_credentials_sign_es_as_fluent_bit() {
    let home = Dir::new();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    home.file(
        ".aws/credentials",
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = defaultsecret\n\n\
         [prod]\naws_access_key_id = AKIDPROD\naws_secret_access_key = prod/secret+key\n",
    );
    let (req, _) = run_case("es_profile", &[("HOME", home.path().to_str().unwrap())]);
    verify(
        &req.raw,
        "AKIDPROD",
        "prod/secret+key",
        None,
        "eu-west-1",
        "es",
    );
    let fb = std::fs::read(data("es_profile.expected")).unwrap();
    verify(&fb, "AKIDPROD", "prod/secret+key", None, "eu-west-1", "es");
    assert_eq!(shape(&req), shape(&parse_one(&fb)));
}

fn random_to_http(port: u16, extra: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n    log_level debug\n\
         [INPUT]\n    name random\n    samples 1\n\
         [OUTPUT]\n    name http\n    match *\n    host 127.0.0.1\n    port {port}\n\
         \x20   format json_lines\n    compress gzip\n    aws_auth on\n    aws_region ap-south-1\n\
         \x20   aws_service execute-api\n{extra}"
    )
}

/// `aws_role_arn`: STS AssumeRole (a stand-in STS via `aws_sts_endpoint` answering
/// the real XML) is called signed with the base credentials, with the role and
/// external id; the output's request is then signed with the temporary credentials
/// (session token included), over the gzip body as sent.
#[test]
fn assume_role_credentials_are_used() {
    let sts = HttpSink::scripted(|_, _| {
        Answer::ok().header("Content-Type", "text/xml").body(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n\
             <AssumeRoleResult>\n<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/writer/s</Arn>\
             <AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>\n<Credentials>\n\
             <AccessKeyId>ASIATEMPKEY</AccessKeyId>\n<SecretAccessKey>temp/secret</SecretAccessKey>\n\
             <SessionToken>TEMPSESSIONTOKEN</SessionToken>\n\
             <Expiration>2099-01-01T00:00:00Z</Expiration>\n</Credentials>\n</AssumeRoleResult>\n\
             <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>\n</AssumeRoleResponse>\n",
        )
    });
    let sink = HttpSink::start();
    let home = Dir::new();
    let extra = format!(
        "    aws_role_arn arn:aws:iam::123456789012:role/writer\n    aws_external_id ext-42\n\
         \x20   aws_sts_endpoint http://127.0.0.1:{}\n",
        sts.port()
    );
    let agent = Agent::start_with_env(
        &random_to_http(sink.port(), &extra),
        &[
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("HOME", home.path().to_str().unwrap()),
        ],
    );
    let reqs = sink.wait(T, "a signed request", |r| !r.is_empty());
    let o = agent.stop(T);
    let calls = sts.reqs();
    assert_eq!(calls.len(), 1, "one STS call, then cached: {}", o.stderr);
    let call = &calls[0];
    assert!(
        call.line
            .starts_with("GET /?Version=2011-06-15&Action=AssumeRole&"),
        "{}",
        call.line
    );
    assert!(call
        .line
        .contains("&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fwriter"));
    assert!(call.line.contains("&ExternalId=ext-42"));
    verify(&call.raw, KEY, SECRET, None, "ap-south-1", "sts");
    let req = &reqs[0];
    assert_eq!(req.header("content-encoding"), Some("gzip"));
    verify(
        &req.raw,
        "ASIATEMPKEY",
        "temp/secret",
        Some("TEMPSESSIONTOKEN"),
        "ap-south-1",
        "execute-api",
    );
}

/// `aws_auth` without `aws_region` (or, for http, without `aws_service`) is refused at
/// the line of aws_auth, as Fluent Bit refuses to start.
#[test]
fn missing_region_or_service_is_a_config_error() {
    let conf = "[OUTPUT]\n    name http\n    match *\n    aws_auth on\n    aws_service x\n";
    let lines = refused_config(conf);
    let text = lines.join("\n");
    assert!(text.contains("fluent-bit.conf:4"), "{text}");
    assert!(
        text.contains("aws_auth enabled but aws_region not set"),
        "{text}"
    );
    let conf = "[OUTPUT]\n    name http\n    match *\n    aws_auth on\n    aws_region us-east-1\n";
    let text = refused_config(conf).join("\n");
    assert!(text.contains("aws_service not set"), "{text}");
    let conf = "[OUTPUT]\n    name es\n    match *\n    aws_auth on\n";
    let text = refused_config(conf).join("\n");
    assert!(text.contains("aws_region not set"), "{text}");
}

/// No credentials anywhere (no env, no files, ECS unset, instance metadata not
/// reachable): nothing is sent unsigned, and the log says what was tried.
#[test]
fn no_credentials_sends_nothing_and_says_what_was_tried() {
    let sink = HttpSink::start();
    let home = Dir::new();
    let mut agent = Agent::start_with_env(
        &random_to_http(sink.port(), ""),
        &[("HOME", home.path().to_str().unwrap())],
    );
    agent.wait_log("no AWS credentials", T);
    let o = agent.stop(T);
    assert!(sink.reqs().is_empty(), "an unsigned request was sent");
    for tried in [
        "environment",
        "shared credentials/config file: not set up",
        "EKS web identity",
        "ECS",
        "EC2 instance metadata",
    ] {
        assert!(o.stderr.contains(tried), "{tried}: {}", o.stderr);
    }
}

/// The config file's `credential_process` (Fluent Bit reads it before the credentials
/// file): its JSON credentials, session token included, sign the request.
#[test]
fn credential_process_of_the_config_file_is_used() {
    let sink = HttpSink::start();
    let home = Dir::new();
    let json = r#"{"Version":1,"AccessKeyId":"AKIDPROC","SecretAccessKey":"proc/secret","SessionToken":"PROCTOKEN","Expiration":"2099-01-01T00:00:00Z"}"#;
    let config = home.file(
        "aws-config",
        &format!("[profile other]\naws_access_key_id = NOPE\n\n[profile proc]\ncredential_process = echo '{json}'\n"),
    );
    home.file(
        "credentials",
        "[proc]\naws_access_key_id = AKIDFILE\naws_secret_access_key = filesecret\n",
    );
    let agent = Agent::start_with_env(
        &random_to_http(sink.port(), "    aws_profile proc\n"),
        &[
            ("HOME", home.path().to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                home.path().join("credentials").to_str().unwrap(),
            ),
        ],
    );
    let reqs = sink.wait(T, "a signed request", |r| !r.is_empty());
    agent.stop(T);
    verify(
        &reqs[0].raw,
        "AKIDPROC",
        "proc/secret",
        Some("PROCTOKEN"),
        "ap-south-1",
        "execute-api",
    );
}

/// EKS web identity: `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` → an unsigned STS
/// `AssumeRoleWithWebIdentity` carrying the token (at `aws_sts_endpoint`), whose
/// credentials sign the request; environment keys, when set, come first.
#[test]
fn web_identity_credentials_are_used() {
    let sts = HttpSink::scripted(|_, _| {
        Answer::ok().body(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleWithWebIdentityResult><Credentials><SessionToken>WEBTOKEN</SessionToken>\
             <SecretAccessKey>web/secret</SecretAccessKey><Expiration>2099-01-01T00:00:00Z</Expiration>\
             <AccessKeyId>ASIAWEB</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>\
             </AssumeRoleWithWebIdentityResponse>",
        )
    });
    let sink = HttpSink::start();
    let home = Dir::new();
    let token = home.file("token", "eyJhbGciOi.eyJzdWIiOi.sig\n");
    let agent = Agent::start_with_env(
        &random_to_http(
            sink.port(),
            &format!("    aws_sts_endpoint http://127.0.0.1:{}\n", sts.port()),
        ),
        &[
            ("HOME", home.path().to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        ],
    );
    let reqs = sink.wait(T, "a signed request", |r| !r.is_empty());
    agent.stop(T);
    let call = &sts.reqs()[0];
    assert!(
        call.line
            .starts_with("GET /?Version=2011-06-15&Action=AssumeRoleWithWebIdentity&"),
        "{}",
        call.line
    );
    assert!(
        call.line
            .contains("&WebIdentityToken=eyJhbGciOi.eyJzdWIiOi.sig "),
        "{}",
        call.line
    );
    assert!(
        call.header("authorization").is_none(),
        "AssumeRoleWithWebIdentity is unsigned"
    );
    verify(
        &reqs[0].raw,
        "ASIAWEB",
        "web/secret",
        Some("WEBTOKEN"),
        "ap-south-1",
        "execute-api",
    );
}

/// ECS task role: `AWS_CONTAINER_CREDENTIALS_FULL_URI` with
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN` as `Authorization`; its JSON credentials sign the
/// request.
#[test]
fn ecs_credentials_are_used() {
    let ecs = HttpSink::scripted(|_, _| {
        Answer::ok().body(
            r#"{"AccessKeyId":"ASIAECS","SecretAccessKey":"ecs/secret","Token":"ECSTOKEN","Expiration":"2099-01-01T00:00:00Z","RoleArn":"arn:aws:iam::1:role/task"}"#,
        )
    });
    let sink = HttpSink::start();
    let home = Dir::new();
    let uri = format!("http://127.0.0.1:{}/v2/credentials/abc", ecs.port());
    let agent = Agent::start_with_env(
        &random_to_http(sink.port(), ""),
        &[
            ("HOME", home.path().to_str().unwrap()),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Basic ZWNzOnRva2Vu"),
        ],
    );
    let reqs = sink.wait(T, "a signed request", |r| !r.is_empty());
    agent.stop(T);
    let call = &ecs.reqs()[0];
    assert_eq!(call.line, "GET /v2/credentials/abc HTTP/1.1");
    assert_eq!(call.header("authorization"), Some("Basic ZWNzOnRva2Vu"));
    verify(
        &reqs[0].raw,
        "ASIAECS",
        "ecs/secret",
        Some("ECSTOKEN"),
        "ap-south-1",
        "execute-api",
    );
}

/// Temporary credentials are cached while fresh and fetched again once less than 60
/// seconds remain (Fluent Bit's refresh window): the first STS answer expires in 63 s,
/// so it signs the first requests only, one more STS call gives the next credentials,
/// which sign the rest without further calls.
#[test]
fn temporary_credentials_are_refreshed_before_they_expire() {
    let sts = HttpSink::scripted(|n, _| {
        let (key, ttl) = if n == 0 {
            ("ASIAFIRST", 63)
        } else {
            ("ASIASECOND", 3600)
        };
        let expires = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(ttl),
        );
        Answer::ok().body(&format!(
            "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>{key}</AccessKeyId>\
             <SecretAccessKey>{key}/secret</SecretAccessKey><SessionToken>{key}TOKEN</SessionToken>\
             <Expiration>{expires}</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>"
        ))
    });
    let sink = HttpSink::start();
    let home = Dir::new();
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n\
         [INPUT]\n    name random\n    samples 8\n    interval_sec 1\n    interval_nsec 0\n\
         [OUTPUT]\n    name http\n    match *\n    host 127.0.0.1\n    port {}\n\
         \x20   format json_lines\n    aws_auth on\n    aws_region us-east-2\n    aws_service svc\n\
         \x20   aws_role_arn arn:aws:iam::1:role/r\n    aws_sts_endpoint http://127.0.0.1:{}\n",
        sink.port(),
        sts.port()
    );
    let agent = Agent::start_with_env(
        &conf,
        &[
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("HOME", home.path().to_str().unwrap()),
        ],
    );
    let reqs = sink.wait(T, "8 requests", |r| r.len() >= 8);
    let o = agent.stop(T);
    assert_eq!(sts.reqs().len(), 2, "{}", o.stderr);
    let keys: Vec<&str> = reqs
        .iter()
        .map(|r| {
            let auth = r.header("authorization").unwrap();
            let key = auth
                .split("Credential=")
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap();
            verify(
                &r.raw,
                key,
                &format!("{key}/secret"),
                Some(&format!("{key}TOKEN")),
                "us-east-2",
                "svc",
            );
            if key == "ASIAFIRST" {
                "first"
            } else {
                "second"
            }
        })
        .collect();
    let first = keys.iter().filter(|k| **k == "first").count();
    assert!((1..=4).contains(&first), "{keys:?}");
    assert!(
        keys[..first].iter().all(|k| *k == "first") && keys[first..].iter().all(|k| *k == "second"),
        "{keys:?}"
    );
}
