//! AWS SigV4 checks with botocore (AWS's Python signer, tests/common/sigv4_verify.py),
//! independently of the agent's signer.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/sigv4_verify.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "botocore does not sign this request the same:\n{}{}\n--- request\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(raw)
    );
}
