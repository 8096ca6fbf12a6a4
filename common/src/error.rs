//! The one error shape every fave function answers with:
//! `{"error": {"code", "message", "retryable"}}`, and the extractor that gives malformed
//! bodies the same shape.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::state::RequestStatus;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// The request the error is about, when it is about one that exists (a request that
    /// ended failed, a conflict over a request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// That request's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RequestStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `invalid_media` or `not_found`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Whether sending the same call again may succeed.
    pub retryable: bool,
}

/// An error on its way to becoming an HTTP answer. Handlers return `Result<_, ApiError>`;
/// this is the only `IntoResponse` for errors.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            // 5xx may pass; a 4xx says the call itself is wrong. 429 and 408 are the exceptions.
            retryable: status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                retryable: self.retryable,
            },
            request_id: None,
            status: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request failed");
        }
        (self.status, Json(self.body())).into_response()
    }
}

/// Gives a router's unknown paths (404 `not_found`) and wrong methods (405
/// `method_not_allowed`) the JSON error shape; axum's own answers have an empty body.
pub fn json_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take this method",
            )
        })
}

/// The largest body [`JsonBody`] accepts, set per router with `Extension(BodyLimit(n))`
/// (1 MiB where none is set).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// How much of an over-long body is read and thrown away before answering 413. Answering
/// while the caller is still sending makes the server close the connection under it, and a
/// proxy in between (the gateway) then sees a reset instead of the 413.
const DRAIN_CAP: usize = 16 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a whole JSON body may take to arrive (a body sent a byte at a time is refused
/// with 408 `body_timeout`, not waited for).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON body extractor whose every failure is an [`ApiError`]: too large → 413
/// `body_too_large`, unreadable → 400, not JSON → 400 `malformed_json`, JSON of the wrong
/// shape → 422 `invalid_request`. It does not insist on a `Content-Type`, because `faas-cli
/// invoke` and `curl -d` send none or the wrong one. Chunked bodies without a length are
/// read like any other.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        use http_body_util::BodyExt;
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(1024 * 1024, |l| l.0);
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
        };
        // A declared length past anything worth draining is answered at once.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > DRAIN_CAP as u64) {
            return Err(too_large());
        }
        let mut body = req.into_body();
        let mut bytes = Vec::new();
        let mut seen = 0usize;
        let drain_until = tokio::time::Instant::now() + DRAIN_TIME;
        let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, body.frame()).await;
            let Ok(next) = next else {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
                ));
            };
            let Some(frame) = next else { break };
            let frame =
                frame.map_err(|e| ApiError::bad_request("unreadable_body", e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len();
            if seen <= limit {
                bytes.extend_from_slice(&data);
            } else if seen > DRAIN_CAP || tokio::time::Instant::now() > drain_until {
                break;
            }
        }
        if seen > limit {
            return Err(too_large());
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body, classifying the failure as [`JsonBody`] does. Every fave body is a
/// JSON object: serde would also read a struct from an array of its fields in order
/// (`["s3://b/k"]`), which no client means, so anything but an object is refused.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // 400 when the body is not JSON, 422 when it is JSON of the wrong shape. serde_json's
    // own category cannot tell: reading into a type, it stops at the first value of the
    // wrong type (calling some of those syntax errors) before seeing whether the rest is
    // JSON at all. So a failure is classified by parsing the body as untyped JSON.
    let parsed = serde_json::from_slice(bytes).map_err(|e| {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(_) => ApiError::unprocessable("invalid_request", e.to_string()),
            Err(syntax) => ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {syntax}"),
            ),
        }
    })?;
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(parsed),
        _ => Err(ApiError::unprocessable(
            "invalid_request",
            "the body must be a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        a: u32,
    }

    #[test]
    fn json_failures_are_classified() {
        assert_eq!(parse_json::<Req>(b"{").unwrap_err().code, "malformed_json");
        assert_eq!(
            parse_json::<Req>(b"nope").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let e = parse_json::<Req>(br#"{"a":"x"}"#).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        );
        assert_eq!(
            parse_json::<Req>(br#"{"a":1,"b":2}"#).unwrap_err().code,
            "invalid_request"
        );
        assert!(parse_json::<Req>(br#" {"a":1}"#).is_ok());
        // serde_json calls a number where an enum belongs a syntax error; it is a shape one.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum Colour {
            Red,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Paint {
            colour: Colour,
        }
        let e = parse_json::<Paint>(br#"{"colour": 1}"#).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        );
        // serde reads a struct from a sequence of its fields; a body must be an object.
        let e = parse_json::<Req>(b"[1]").unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        );
        assert_eq!(
            parse_json::<Req>(br#"{"a":1,"a":2}"#).unwrap_err().code,
            "invalid_request"
        );
    }

    #[tokio::test]
    async fn a_declared_length_past_the_drain_cap_is_refused_before_the_body() {
        // The body would never come: the answer must not wait for it.
        let never = futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let request = axum::http::Request::post("/")
            .header("content-length", "99999999999")
            .body(axum::body::Body::from_stream(never))
            .unwrap();
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            JsonBody::<Req>::from_request(request, &()),
        )
        .await
        .expect("answered at once");
        let e = refused.err().expect("refused");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
    }

    #[test]
    fn retryable_follows_status() {
        assert!(ApiError::unavailable("x", "y").retryable);
        assert!(!ApiError::unprocessable("x", "y").retryable);
        assert!(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "x", "y").retryable);
        let body = serde_json::to_value(ApiError::not_found("gone").body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "not_found", "message": "gone", "retryable": false}})
        );
    }
}
