//! `opensearch` output against a stand-in server on loopback: the requests are Fluent
//! Bit 5.1.1's (captured in tests/data/fluent-bit/opensearch): XXH3 ids of
//! `generate_id`, record accessor indices, `/_bulk/?pipeline=`, and everything it
//! shares with `es` (tests/out_es.rs covers the shared reply handling and faults).

mod common;

use std::path::Path;

use common::http_sink::{run_request_oracle_cases, Answer};

const BULK_OK: &str = r#"{"took":1,"errors":false,"items":[{"create":{"status":201}}]}"#;

#[test]
fn requests_are_fluent_bits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fluent-bit/opensearch");
    let n = run_request_oracle_cases(
        &dir,
        || Answer::ok().body(BULK_OK),
        |text, port| text.replace("${HTTP_PORT}", &port.to_string()),
    );
    assert!(n >= 9, "{n} cases");
}

#[test]
fn es_only_properties_are_refused() {
    for (key, value) in [
        ("cloud_id", "x:eA=="),
        ("http_api_key", "QQ=="),
        ("upstream", "u.conf"),
    ] {
        let conf = format!(
            "[INPUT]\n    name dummy\n[OUTPUT]\n    name opensearch\n    match *\n    {key} {value}\n"
        );
        let lines = common::refused_config(&conf);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("fluent-bit.conf:6") && l.contains(key)),
            "{key}: {lines:?}"
        );
    }
}
