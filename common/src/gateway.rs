//! Invoking functions through the OpenFaaS gateway (`POST {GATEWAY_URL}/function/{name}`),
//! and classifying what comes back the way DESIGN.md's retry rules say.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use url::Url;

use crate::error::ErrorBody;

/// The call id header OpenFaaS's gateway adds to every invocation.
pub const CALL_ID: &str = "X-Call-Id";
/// Set by the gateway on errors it produced itself (not the function's own answers).
pub const OPENFAAS_INTERNAL: &str = "X-OpenFaaS-Internal";

/// Set by fave's local gateway on a call that waited for a replica to start from zero: how
/// long it waited, in milliseconds. (OpenFaaS's gateway sends nothing like it.)
pub const COLD_START: &str = "X-Fave-Cold-Start";

/// A successful (2xx) invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub status: u16,
    pub call_id: Option<String>,
    pub body: Bytes,
    pub elapsed: Duration,
    /// How long the gateway waited for a replica to start, if it says so ([`COLD_START`]).
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
    },
}

impl InvokeError {
    /// Retryable, as DESIGN.md lists: connect errors, timeouts, 429, 502, 503, 504, and a 500
    /// the gateway itself produced. A function's own 4xx (bad media), its own 500 and 404
    /// (not deployed) are final. Stages answer 503 for their transient troubles.
    pub fn is_transient(&self) -> bool {
        match self {
            InvokeError::Connect { .. } | InvokeError::Timeout { .. } => true,
            InvokeError::Status {
                status,
                openfaas_internal,
                ..
            } => match status {
                429 | 502 | 503 | 504 => true,
                500 => *openfaas_internal,
                _ => false,
            },
        }
    }

    /// A short code for `state.json`.
    pub fn code(&self) -> String {
        match self {
            InvokeError::Connect { .. } => "gateway_unreachable".into(),
            InvokeError::Timeout { .. } => "stage_timeout".into(),
            InvokeError::Status { code, .. } => code.clone(),
        }
    }

    pub fn call_id(&self) -> Option<&str> {
        match self {
            InvokeError::Status { call_id, .. } => call_id.as_deref(),
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            InvokeError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
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
            let body = response.bytes().await.map_err(|e| InvokeError::Connect {
                function: function.to_owned(),
                message: format!("reading the answer: {e}"),
            })?;
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
            Err(InvokeError::Status {
                function: function.to_owned(),
                status,
                call_id,
                code: parsed
                    .as_ref()
                    .map_or_else(|| format!("http_{status}"), |b| b.error.code.clone()),
                message: parsed.as_ref().map_or_else(
                    || String::from_utf8_lossy(&body).chars().take(500).collect(),
                    |b| b.error.message.clone(),
                ),
                openfaas_internal: headers.contains_key(OPENFAAS_INTERNAL),
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

    fn status(status: u16, internal: bool) -> InvokeError {
        InvokeError::Status {
            function: "f".into(),
            status,
            call_id: None,
            code: "c".into(),
            message: "m".into(),
            openfaas_internal: internal,
        }
    }

    #[test]
    fn retry_classification_follows_the_design() {
        for s in [429, 502, 503, 504] {
            assert!(status(s, false).is_transient(), "{s}");
        }
        assert!(status(500, true).is_transient());
        assert!(!status(500, false).is_transient());
        for s in [400, 404, 413, 422] {
            assert!(!status(s, false).is_transient(), "{s}");
        }
        assert!(
            InvokeError::Timeout {
                function: "f".into(),
                timeout: Duration::ZERO
            }
            .is_transient()
        );
    }
}
