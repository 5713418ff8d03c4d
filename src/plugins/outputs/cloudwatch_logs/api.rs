//! The CloudWatch Logs API calls of the output (AWS JSON 1.1: `POST /` with
//! `X-Amz-Target: Logs_20140328.<Action>`, SigV4-signed for service `logs`) and what
//! their answers mean. Fluent Bit: plugins/out_cloudwatch_logs/cloudwatch_api.c,
//! src/aws/flb_aws_util.c (`flb_aws_client_request`, `flb_aws_error`).

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use crate::http_client::{HttpClient, HttpError, Reply};

/// An error answer's `__type` (without a `namespace#` prefix) and `message`.
#[derive(Debug, Default, PartialEq)]
pub struct AwsError {
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn parse(body: &[u8]) -> Option<AwsError> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let code = v.get("__type")?.as_str()?;
        let code = code.rsplit_once('#').map_or(code, |(_, c)| c).to_string();
        let message = ["message", "Message"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|m| m.as_str()))
            .unwrap_or("")
            .to_string();
        Some(AwsError { code, message })
    }
}

/// What an API call came to.
#[derive(Debug)]
pub enum Outcome {
    /// 200 (with `x-amzn-RequestId`, for PutLogEvents): the answer's body.
    Done(Bytes),
    /// Worth another try later: throttling, 5xx, expired credentials, no answer.
    Retry(String),
    /// The same request would be refused again.
    Refused(AwsError, String),
}

/// Error codes that another try may get past.
const RETRIABLE: &[&str] = &[
    "ThrottlingException",
    "ServiceUnavailableException",
    "LimitExceededException",
    "OperationAbortedException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InternalFailure",
];

/// Error codes that say the credentials are expired or not valid (Fluent Bit's
/// `flb_aws_is_auth_error`): they are fetched again and the request retried.
const AUTH_ERRORS: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "AccessDeniedException",
    "AccessDenied",
    "IncompleteSignature",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "InvalidClientTokenId",
    "InvalidToken",
    "InvalidAccessKeyId",
    "InvalidSecurity",
    "TokenRefreshRequired",
    "InvalidSignature",
    "UnrecognizedClientException",
];

/// Fetched again at most this often on auth errors (Fluent Bit's
/// FLB_AWS_CREDENTIAL_REFRESH_LIMIT).
const REFRESH_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One API client: the signed HTTP client, the output's User-Agent and log prefix.
#[derive(Clone)]
pub struct Api {
    pub client: HttpClient,
    /// The signer's credentials, forgotten on an auth error.
    pub creds: std::sync::Arc<dyn crate::aws::credentials::Provide>,
    /// When credentials were last forgotten.
    pub refreshed: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    pub user_agent: HeaderValue,
    /// `auto_retry_requests`: a request that got no answer is sent once more at once.
    pub auto_retry: bool,
    /// `[output:cloudwatch_logs:NAME]`.
    pub who: String,
}

const CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/x-amz-json-1.1");

impl Api {
    /// Calls `action` with `body`; `logs_format` adds `x-amzn-logs-format`.
    pub async fn call(
        &self,
        action: &str,
        body: Bytes,
        logs_format: Option<&HeaderValue>,
    ) -> Outcome {
        let target = HeaderValue::from_str(&format!("Logs_20140328.{action}"))
            .expect("action names are header values");
        let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
            (hyper::header::USER_AGENT, self.user_agent.clone()),
            (hyper::header::CONTENT_TYPE, CONTENT_TYPE),
            (HeaderName::from_static("x-amz-target"), target),
        ];
        if let Some(f) = logs_format {
            headers.push((HeaderName::from_static("x-amzn-logs-format"), f.clone()));
        }
        // Fluent Bit sends a PutLogEvents that got a 200 without a request id (a proxy's
        // answer, not CloudWatch's) once more at once, then gives up on it.
        let mut invalid_200_retried = false;
        let mut no_answer_retried = !self.auto_retry;
        loop {
            let reply = match self
                .client
                .send(Method::POST, "/", &headers, body.clone())
                .await
            {
                Ok(r) => r,
                Err(e @ HttpError::Sign { .. }) => return Outcome::Retry(e.to_string()),
                Err(e) => {
                    if !no_answer_retried {
                        no_answer_retried = true;
                        crate::debug!("{} [aws_client] auto-retrying: {e}", self.who);
                        continue;
                    }
                    return Outcome::Retry(e.to_string());
                }
            };
            let status = reply.status.as_u16();
            crate::debug!("{} {action} http status={status}", self.who);
            if status == 200 {
                if action == "PutLogEvents" && !reply.headers.contains_key("x-amzn-requestid") {
                    if !invalid_200_retried {
                        invalid_200_retried = true;
                        crate::debug!("{} issuing immediate retry for invalid response", self.who);
                        continue;
                    }
                    return Outcome::Retry(
                        "Recieved code 200 but response was invalid, x-amzn-RequestId header not found"
                            .into(),
                    );
                }
                return Outcome::Done(reply.body);
            }
            return self.judge(action, &reply);
        }
    }

    fn judge(&self, action: &str, reply: &Reply) -> Outcome {
        let status = reply.status.as_u16();
        let Some(err) = AwsError::parse(&reply.body) else {
            let line = format!(
                "{action}: HTTP status={status}, raw response: {}",
                reply.body_text()
            );
            return if (400..500).contains(&status) && status != 408 && status != 429 {
                Outcome::Refused(AwsError::default(), line)
            } else {
                Outcome::Retry(line)
            };
        };
        let line = if err.message.is_empty() {
            format!("{action} API responded with error='{}'", err.code)
        } else {
            format!(
                "{action} API responded with error='{}', message='{}'",
                err.code, err.message
            )
        };
        if AUTH_ERRORS.contains(&err.code.as_str()) {
            let now = std::time::Instant::now();
            let mut last = self.refreshed.lock().expect("refresh lock");
            if last.is_none_or(|t| now.duration_since(t) >= REFRESH_LIMIT) {
                *last = Some(now);
                crate::info!("{} [aws_client] auth error, refreshing creds", self.who);
                self.creds.invalidate();
            }
            return Outcome::Retry(line);
        }
        if status >= 500 || status == 429 || status == 408 || RETRIABLE.contains(&err.code.as_str())
        {
            Outcome::Retry(line)
        } else {
            Outcome::Refused(err, line)
        }
    }
}

/// The number of events of a 200 PutLogEvents answer that CloudWatch rejected
/// (`rejectedLogEventsInfo`: too new from an index, too old or expired up to one), of a
/// batch of `n`.
pub fn rejected_events(body: &[u8], n: usize) -> usize {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    let Some(info) = v.get("rejectedLogEventsInfo") else {
        return 0;
    };
    let idx = |k: &str| info.get(k).and_then(|i| i.as_u64()).map(|i| i as usize);
    let mut rejected = vec![false; n];
    if let Some(i) = idx("tooNewLogEventStartIndex") {
        rejected.iter_mut().skip(i).for_each(|r| *r = true);
    }
    for k in ["tooOldLogEventEndIndex", "expiredLogEventEndIndex"] {
        if let Some(i) = idx(k) {
            rejected
                .iter_mut()
                .take(i.saturating_add(1))
                .for_each(|r| *r = true);
        }
    }
    rejected.iter().filter(|r| **r).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_parse_with_or_without_a_namespace() {
        let e = AwsError::parse(
            br#"{"__type":"com.amazonaws.logs#InvalidParameterException","message":"bad"}"#,
        )
        .unwrap();
        assert_eq!(e.code, "InvalidParameterException");
        assert_eq!(e.message, "bad");
        let e = AwsError::parse(br#"{"__type":"ThrottlingException"}"#).unwrap();
        assert_eq!(e.message, "");
        assert!(AwsError::parse(b"<html>").is_none());
    }

    #[test]
    fn rejected_events_are_counted() {
        let b = br#"{"nextSequenceToken":"x","rejectedLogEventsInfo":{"tooOldLogEventEndIndex":1,"tooNewLogEventStartIndex":8}}"#;
        assert_eq!(rejected_events(b, 10), 4);
        assert_eq!(rejected_events(br#"{"nextSequenceToken":"x"}"#, 10), 0);
        let b = br#"{"rejectedLogEventsInfo":{"expiredLogEventEndIndex":2,"tooOldLogEventEndIndex":0}}"#;
        assert_eq!(rejected_events(b, 5), 3);
    }
}
