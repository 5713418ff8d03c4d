//! A stand-in EC2 instance metadata service on 169.254.169.254:80 inside a network
//! namespace, answering as IMDS does: `PUT /latest/api/token` with
//! `X-aws-ec2-metadata-token-ttl-seconds` gives a session token; with `v2_only`, a GET
//! without the current token is answered 401 (and the token request 403 without it
//! off, as an instance with `--http-tokens optional` and v1 clients); unknown paths 404.
//! Paths are read with or without a trailing slash.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::http_sink::{Answer, HttpSink, Req};
use super::netns::NetNs;

pub const TOKEN: &str = "AQAEAFakeToken==";
pub const MAC: &str = "0e:49:61:0f:c3:11";
pub const ROLE: &str = "agent-role";
pub const ROLE_KEY: &str = "ASIAIMDSROLEKEY";
pub const ROLE_SECRET: &str = "imds/role+secret";
pub const ROLE_TOKEN: &str = "IMDSSESSIONTOKEN";

/// The metadata served: what tests/data/fluent-bit/aws_filter was captured with.
pub fn metadata() -> HashMap<String, String> {
    let mut m: HashMap<String, String> = [
        ("/latest/meta-data/instance-id", "i-0123456789abcdef0"),
        (
            "/latest/meta-data/placement/availability-zone",
            "us-east-1a",
        ),
        ("/latest/meta-data/instance-type", "t3.micro"),
        ("/latest/meta-data/local-ipv4", "10.0.1.23"),
        ("/latest/meta-data/mac", MAC),
        ("/latest/meta-data/ami-id", "ami-0abcdef1234567890"),
        ("/latest/meta-data/hostname", "ip-10-0-1-23.ec2.internal"),
        ("/latest/meta-data/tags/instance", "Name\nenv\nteam"),
        ("/latest/meta-data/tags/instance/Name", "web-1"),
        ("/latest/meta-data/tags/instance/env", "prod"),
        ("/latest/meta-data/tags/instance/team", "payments"),
        ("/latest/meta-data/iam/security-credentials", ROLE),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    m.insert(
        format!("/latest/meta-data/network/interfaces/macs/{MAC}/vpc-id"),
        "vpc-0a1b2c3d".into(),
    );
    m.insert(
        "/latest/dynamic/instance-identity/document".into(),
        "{\n  \"accountId\" : \"123456789012\",\n  \"region\" : \"us-east-1\",\n  \"instanceId\" : \"i-0123456789abcdef0\"\n}".into(),
    );
    m.insert(
        format!("/latest/meta-data/iam/security-credentials/{ROLE}"),
        format!(
            "{{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2026-01-01T00:00:00Z\",\n  \"Type\" : \"AWS-HMAC\",\n  \
             \"AccessKeyId\" : \"{ROLE_KEY}\",\n  \"SecretAccessKey\" : \"{ROLE_SECRET}\",\n  \"Token\" : \"{ROLE_TOKEN}\",\n  \
             \"Expiration\" : \"2099-01-01T00:00:00Z\"\n}}"
        ),
    );
    m
}

/// Answers one request as IMDS does.
pub fn answer(v2_only: bool, data: &HashMap<String, String>, req: &Req) -> Answer {
    let (method, path) = {
        let mut parts = req.line.split(' ');
        (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        )
    };
    if method == "PUT" {
        if path == "/latest/api/token"
            && req.header("x-aws-ec2-metadata-token-ttl-seconds").is_some()
        {
            return Answer::ok().body(TOKEN);
        }
        return Answer::status(400);
    }
    if v2_only && req.header("x-aws-ec2-metadata-token") != Some(TOKEN) {
        return Answer::status(401);
    }
    match data.get(path.trim_end_matches('/')) {
        Some(v) => Answer::ok().header("Content-Type", "text/plain").body(v),
        None => Answer::status(404).body("Not Found"),
    }
}

/// The service inside `ns` (which gets 169.254.169.254 on its loopback).
pub fn start(ns: &NetNs, v2_only: bool) -> HttpSink {
    let data = Arc::new(Mutex::new(metadata()));
    start_with(ns, move |req| answer(v2_only, &data.lock().unwrap(), req))
}

/// As [`start`] with the test's own answers.
pub fn start_with(ns: &NetNs, script: impl Fn(&Req) -> Answer + Send + Sync + 'static) -> HttpSink {
    add_address(ns);
    let l = ns.run_in(|| TcpListener::bind("169.254.169.254:80").expect("bind 169.254.169.254:80"));
    HttpSink::on_listener(l, move |_, req| script(req))
}

/// 169.254.169.254 on the namespace's loopback (once).
pub fn add_address(ns: &NetNs) {
    let have = ns.exec(&["ip", "-4", "addr", "show", "dev", "lo"]);
    if !have.contains("169.254.169.254") {
        ns.exec(&["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"]);
    }
}
