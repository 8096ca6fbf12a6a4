//! Invoking functions through the OpenFaaS gateway (`POST {GATEWAY_URL}/function/{name}`),
//! and classifying what comes back the way DESIGN.md's retry rules say.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use url::Url;

use crate::contract::FailureCode;
use crate::error::ErrorBody;

/// The call id header OpenFaaS's gateway adds to every invocation.
pub const CALL_ID: &str = "X-Call-Id";
/// Set by the gateway on errors it produced itself (not the function's own answers).
pub const OPENFAAS_INTERNAL: &str = "X-OpenFaaS-Internal";

/// Set by a function on the answer to a cold start, by [`crate::readiness`]'s one rule: how
/// long from its process's start until it could serve the call, in milliseconds. The
/// function says it, not the gateway, so it reads the same under any gateway.
pub const COLD_START: &str = "x-fave-cold-start";

/// The largest answer a function may give: a manifest names its large results by key.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// A successful (2xx) invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub status: u16,
    pub call_id: Option<String>,
    pub body: Bytes,
    pub elapsed: Duration,
    /// The function's own report of a cold start ([`COLD_START`]), if this call was one.
    pub cold_start_ms: Option<f64>,
}

/// A failed invocation, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    #[error("could not reach the gateway for {function}: {message}")]
    Connect { function: String, message: String },
    #[error("{function} did not answer within {timeout:?}")]
    Timeout { function: String, timeout: Duration },
    #[error("{function} answered {status}: {code}: {message}")]
    Status {
        function: String,
        status: u16,
        call_id: Option<String>,
        /// The function's error code when it answered with fave's error shape, else `http_{status}`.
        code: String,
        message: String,
        /// The gateway produced this answer (`X-OpenFaaS-Internal`), not the function.
        openfaas_internal: bool,
        /// The function's own `retryable` flag, when the function itself answered with fave's
        /// error shape (never set on an answer marked `X-OpenFaaS-Internal`).
        own_retryable: Option<bool>,
    },
    /// A 2xx answer whose body is not what the function writes (a complete manifest): an
    /// intermediary's page, or an answer cut short on the way. The transport's failure, not
    /// the function's: stage calls are idempotent, so it is retried like the platform's.
    #[error("{function} answered {status} with a body that is not its answer: {message}")]
    BadAnswer {
        function: String,
        status: u16,
        call_id: Option<String>,
        message: String,
    },
}

impl InvokeError {
    /// Retryable, as DESIGN.md lists: every platform failure ([`Self::is_platform`]),
    /// timeouts, and the function's own answers that say so (its error shape with
    /// `retryable: true`, e.g. a 503 while its model loads). A function's own final refusals
    /// (bad media, its own 500) and a 4xx from anything are final.
    pub fn is_transient(&self) -> bool {
        match self {
            InvokeError::Timeout { .. } => true,
            InvokeError::Status {
                own_retryable: Some(retryable),
                ..
            } => *retryable,
            _ => self.is_platform(),
        }
    }

    /// Whether the platform failed, not the function: the gateway could not be reached, or
    /// an answer that is not the function's own (no fave error shape) came back as a 5xx,
    /// a 429 (of-watchdog's `max_inflight`), or marked `X-OpenFaaS-Internal` (the gateway,
    /// the provider's proxy, or of-watchdog when the function refused its connection, as in
    /// a cold start). These are retried for a time window, not a count of attempts.
    pub fn is_platform(&self) -> bool {
        match self {
            InvokeError::Connect { .. } | InvokeError::BadAnswer { .. } => true,
            InvokeError::Timeout { .. } => false,
            InvokeError::Status {
                status,
                openfaas_internal,
                own_retryable,
                ..
            } => {
                own_retryable.is_none()
                    && (*openfaas_internal || *status >= 500 || *status == 429)
                    && *status != 404
            }
        }
    }

    /// A short code for `state.json`.
    pub fn code(&self) -> String {
        match self {
            InvokeError::Connect { .. } => FailureCode::GatewayUnreachable.into(),
            InvokeError::Timeout { .. } => FailureCode::StageTimeout.into(),
            InvokeError::Status { code, .. } => code.clone(),
            InvokeError::BadAnswer { .. } => FailureCode::BadStageAnswer.into(),
        }
    }

    pub fn call_id(&self) -> Option<&str> {
        match self {
            InvokeError::Status { call_id, .. } | InvokeError::BadAnswer { call_id, .. } => {
                call_id.as_deref()
            }
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            InvokeError::Status { status, .. } | InvokeError::BadAnswer { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// The most of a failed answer's message that is kept (in `state.json`, shown to users).
pub const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// `text` made fit to store and show: control characters (a terminal's escapes included)
/// become spaces, and it is cut to `max` characters, with an ellipsis when it was longer.
pub fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A client for one gateway. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: Url,
}

impl GatewayClient {
    pub fn new(base: Url) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a client with only a connect timeout set always builds");
        Self { http, base }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The URL of a function: `{base}/function/{name}`.
    pub fn function_url(&self, function: &str) -> String {
        format!(
            "{}/function/{function}",
            self.base.as_str().trim_end_matches('/')
        )
    }

    /// POSTs `body` as JSON to a function and waits at most `timeout` for the whole answer.
    pub async fn invoke<B: Serialize + ?Sized>(
        &self,
        function: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Invocation, InvokeError> {
        let started = Instant::now();
        let call = async {
            let response = self
                .http
                .post(self.function_url(function))
                .json(body)
                .send()
                .await
                .map_err(|e| InvokeError::Connect {
                    function: function.to_owned(),
                    message: e.to_string(),
                })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut response = response;
            let mut body = Vec::new();
            // Answers are manifests, small JSON with large results passed by key: one
            // over the bound is refused before it can take the caller's memory.
            while let Some(chunk) = response.chunk().await.map_err(|e| InvokeError::Connect {
                function: function.to_owned(),
                message: format!("reading the answer: {e}"),
            })? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(InvokeError::Status {
                        function: function.to_owned(),
                        status,
                        call_id: headers
                            .get(CALL_ID)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        code: FailureCode::StageAnswerTooLarge.into(),
                        message: format!("the answer is over {MAX_ANSWER_BYTES} bytes"),
                        openfaas_internal: false,
                        own_retryable: Some(false),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            let body = Bytes::from(body);
            let call_id = headers
                .get(CALL_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if (200..300).contains(&status) {
                return Ok(Invocation {
                    status,
                    call_id,
                    body,
                    elapsed: started.elapsed(),
                    cold_start_ms: headers
                        .get(COLD_START)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                });
            }
            let parsed = serde_json::from_slice::<ErrorBody>(&body).ok();
            let openfaas_internal = headers.contains_key(OPENFAAS_INTERNAL);
            Err(InvokeError::Status {
                function: function.to_owned(),
                status,
                call_id,
                code: parsed
                    .as_ref()
                    .map_or_else(|| format!("http_{status}"), |b| b.error.code.clone()),
                message: parsed.as_ref().map_or_else(
                    // Not the function's own words: what came instead, briefly and
                    // printably (an intermediary's page, or bytes that are not text).
                    || {
                        let excerpt = printable(&String::from_utf8_lossy(&body), 120);
                        format!(
                            "{} bytes that are not fave's error shape: {excerpt}",
                            body.len()
                        )
                    },
                    |b| printable(&b.error.message, MAX_ERROR_MESSAGE_CHARS),
                ),
                openfaas_internal,
                // The gateway's own answers may have the same shape (fave's local gateway):
                // they are still the platform's.
                own_retryable: parsed
                    .as_ref()
                    .filter(|_| !openfaas_internal)
                    .map(|b| b.error.retryable),
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(InvokeError::Timeout {
                    function: function.to_owned(),
                    timeout,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, internal: bool, own: Option<bool>) -> InvokeError {
        InvokeError::Status {
            function: "f".into(),
            status,
            call_id: None,
            code: "c".into(),
            message: "m".into(),
            openfaas_internal: internal,
            own_retryable: own,
        }
    }

    #[test]
    fn retry_classification_follows_the_design() {
        // Not the function's own answers: the platform's, retried for a time window.
        for s in [429, 500, 502, 503, 504] {
            assert!(status(s, false, None).is_platform(), "{s}");
            assert!(status(s, false, None).is_transient(), "{s}");
        }
        // of-watchdog's 500 when the function refused its connection (a cold start).
        assert!(status(500, true, None).is_platform());
        // The function's own answers: retried only when they say so, and never as the
        // platform's.
        assert!(status(503, false, Some(true)).is_transient());
        assert!(!status(503, false, Some(true)).is_platform());
        assert!(!status(500, false, Some(false)).is_transient());
        for s in [400, 404, 413, 422] {
            assert!(!status(s, false, None).is_transient(), "{s}");
            assert!(!status(s, false, Some(false)).is_transient(), "{s}");
        }
        // A function that is not deployed is final, whoever says so.
        assert!(!status(404, true, None).is_transient());
        let timeout = InvokeError::Timeout {
            function: "f".into(),
            timeout: Duration::ZERO,
        };
        assert!(timeout.is_transient() && !timeout.is_platform());
        let connect = InvokeError::Connect {
            function: "f".into(),
            message: "refused".into(),
        };
        assert!(connect.is_transient() && connect.is_platform());
        // A 2xx that is not a manifest (an intermediary's page, a body cut short): the
        // transport's, retried like the platform's.
        let bad = InvokeError::BadAnswer {
            function: "f".into(),
            status: 200,
            call_id: None,
            message: "EOF while parsing".into(),
        };
        assert!(bad.is_transient() && bad.is_platform());
        assert_eq!(bad.code(), "bad_stage_answer");
        assert_eq!(bad.http_status(), Some(200));
    }

    #[test]
    fn stored_messages_are_printable_and_bounded() {
        assert_eq!(printable("plain", 10), "plain");
        assert_eq!(printable("a\u{1b}[31mred\r\nb", 100), "a [31mred  b");
        assert_eq!(printable(&"x".repeat(20), 5), "xxxxx…");
        assert_eq!(printable("ééé", 3), "ééé");
    }
}
