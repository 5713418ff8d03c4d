//! AWS SigV4 checks with botocore (AWS's Python signer, tests/common/sigv4_verify.py),
//! independently of the agent's signer.

/// botocore's verdict on `raw` signed with these credentials for region and service.
pub fn verify(
    raw: &[u8],
    key: &str,
    secret: &str,
    token: Option<&str>,
    region: &str,
    service: &str,
) {
    use base64::Engine;
    let job = serde_json::json!({
        "raw": base64::engine::general_purpose::STANDARD.encode(raw),
        "access_key": key, "secret_key": secret, "token": token,
        "region": region, "service": service,
    });
    let out = super::python_script("sigv4_verify.py", job.to_string().as_bytes());
    assert!(
        out.status.success(),
        "botocore does not sign this request the same:\n{}{}\n--- request\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(raw)
    );
}
