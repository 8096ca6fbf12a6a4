//! The orchestrator's HTTP API, relative to `/function/orchestrator`:
//!
//! - `POST /`: submit a request ([`submit`]).
//! - `GET /requests`, `GET /requests/{id}`, `GET /requests/{id}/result`,
//!   `POST /requests/{id}/resume`, `POST /requests/{id}/cancel` ([`requests`]).
//! - `POST /query`, `GET /videos`, `GET /videos/{id}`, `DELETE /videos/{id}`: the video
//!   library ([`videos`]).
//! - `GET /healthz` (liveness), `GET /readyz` (the store answers), `GET /metrics`.
//! - `GET /ui/…`: the web page (`crate::ui`).
//!
//! Every error is the one shape (`fave_common::error`), with the request's id and status
//! beside it when the error is about a request. With an API token configured, every route
//! but the probes requires it.

pub mod requests;
pub mod submit;
pub mod videos;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fave_common::contract::FailureCode;
use fave_common::contract::api::Accepted;
use fave_common::error::{ApiError, BodyLimit, ErrorBody, ErrorDetail};
use fave_common::ids::RequestId;
use fave_common::keys::RequestKeys;
use fave_common::state::{RequestState, RequestStatus};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::App;
use crate::record::DriveError;

/// The orchestrator's routes.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.config.body_limit;
    let routes = Router::new()
        .route("/", post(submit::submit))
        .route("/requests", get(requests::list))
        .route("/requests/{id}", get(requests::state))
        .route("/requests/{id}/result", get(requests::result))
        .route("/requests/{id}/resume", post(requests::resume))
        .route("/requests/{id}/cancel", post(requests::cancel))
        .route("/query", post(videos::query))
        .route("/videos", get(videos::list))
        .route("/videos/rebuild", post(videos::rebuild))
        .route("/videos/{id}", get(videos::detail).delete(videos::delete))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(crate::ui::routes());
    fave_common::error::json_fallbacks(routes)
        .layer(axum::Extension(BodyLimit(body_limit)))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_token,
        ))
        .with_state(app)
}

/// How long `/readyz` waits for the store.
const READY_STORE_WAIT: Duration = Duration::from_secs(2);

/// Readiness: this replica is up (as `/healthz` says) and the store answers. A store that
/// refuses or never answers is a `503 storage_unavailable` saying so in a plain sentence,
/// so an operator (or a readiness probe) sees an outage, not silence. `/healthz` stays the
/// liveness answer: a replica is not restarted for its store's sake.
async fn readyz(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    match app.storage.reachable(READY_STORE_WAIT).await {
        Ok(()) => Ok(Json(json!({"status": "ok", "store": "reachable"})).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the store is unreachable");
            Err(ApiError::unavailable(
                "storage_unavailable",
                format!(
                    "the store did not answer for bucket {} within {} s",
                    app.storage.bucket(),
                    READY_STORE_WAIT.as_secs()
                ),
            ))
        }
    }
}

/// With an API token configured, every route but `/healthz` and `/readyz` (what probes call) requires
/// `Authorization: Bearer <token>`: OpenFaaS leaves a function's own auth to the function.
/// The web page under `/ui` also takes HTTP Basic with the token as the password (any user
/// name), and asks for it so that a browser prompts. The comparison is of the two SHA-256
/// digests in constant time, so neither the token's bytes nor its length show in the time an
/// answer takes; the token is never logged.
async fn require_token(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &app.config.api_token else {
        return next.run(request).await;
    };
    if matches!(request.uri().path(), "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let page = request.uri().path() == "/ui" || request.uri().path().starts_with("/ui/");
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let given = match authorization.strip_prefix("Bearer ") {
        Some(bearer) => bearer.to_owned(),
        None if page => basic_password(authorization).unwrap_or_default(),
        None => String::new(),
    };
    let digest = |s: &str| Sha256::digest(s.as_bytes());
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        digest(&given).as_slice(),
        digest(token.expose()).as_slice(),
    )) {
        return next.run(request).await;
    }
    let mut refused = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this orchestrator requires its API token: Authorization: Bearer <token>",
    )
    .into_response();
    let challenge = if page {
        r#"Basic realm="fave", charset="UTF-8""#
    } else {
        "Bearer"
    };
    refused.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    refused
}

/// The password of an `Authorization: Basic …` value.
fn basic_password(authorization: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    pair.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// `GET /metrics`: Prometheus's text format.
async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// The answer for a request that reached a terminal state within the sync window.
async fn answer(app: &App, state: &RequestState) -> Result<Response, ApiError> {
    let id = &state.request_id;
    match state.status {
        RequestStatus::Completed => {
            let result = read_result(app, state).await?;
            let mut response = Json(result).into_response();
            set_request_headers(&mut response, id);
            Ok(response)
        }
        RequestStatus::Failed | RequestStatus::Cancelled => {
            let (code, detail) = state
                .failure
                .as_ref()
                .map(|f| (f.error_code.clone(), f.error_detail.clone()))
                .unwrap_or_else(|| {
                    (
                        FailureCode::Cancelled.into(),
                        "the request was cancelled".into(),
                    )
                });
            let status = FailureCode::parse(&code).http_status();
            let mut response = about_request(status, code, detail, false, state);
            set_request_headers(&mut response, id);
            Ok(response)
        }
        RequestStatus::Init | RequestStatus::Running => Ok(accepted(id)),
    }
}

fn status_path(id: &RequestId) -> String {
    format!("/function/orchestrator/requests/{id}")
}

fn set_request_headers(response: &mut Response, id: &RequestId) {
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert("x-fave-request-id", v);
    }
}

/// 202: accepted and still running; poll the status URL.
fn accepted(id: &RequestId) -> Response {
    let url = status_path(id);
    let body = Accepted {
        request_id: id.clone(),
        status: RequestStatus::Running,
        status_url: url.clone(),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    set_request_headers(&mut response, id);
    response
}

/// The most entries one page of a list holds (`GET /requests`, `GET /videos`), and the
/// default.
pub const MAX_PAGE: usize = 200;
const DEFAULT_PAGE: usize = 50;

/// A list's query string, or `400 invalid_query_string`.
pub(crate) fn list_query<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|axum::extract::Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query_string", e.body_text()))
}

/// A list's page size: `limit`, or the default, within 1..=[`MAX_PAGE`].
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be within 1..={MAX_PAGE}"),
        ))
    }
}

pub(crate) fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    raw.parse().map_err(|e: fave_common::ids::InvalidId| {
        ApiError::bad_request("invalid_request_id", e.to_string())
    })
}

/// The request could not be recorded: nothing was accepted, and the client may try again.
fn recording_failed(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "could not record a request");
    ApiError::unavailable(
        "storage_unavailable",
        "the request could not be recorded: the store could not be reached or did not answer; try again",
    )
}

pub(crate) fn drive_error(e: DriveError) -> ApiError {
    match e {
        DriveError::Storage(e) => e.into(),
        DriveError::Superseded => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the request changed meanwhile; try again",
        ),
        DriveError::Stopped => {
            ApiError::unavailable("shutting_down", "this replica is shutting down")
        }
        DriveError::Illegal(_) | DriveError::Bug { .. } => ApiError::internal(e.to_string()),
        DriveError::Passing(message) => ApiError::unavailable("input_unreachable", message),
    }
}

async fn load_state(app: &App, id: &RequestId) -> Result<RequestState, ApiError> {
    app.storage
        .get_json::<RequestState>(&RequestKeys::new(id).state())
        .await
        .map_err(ApiError::from)?
        .map(|(state, _)| state)
        .ok_or_else(|| ApiError::not_found(format!("no request {id}")))
}

/// `final.json` of a completed request, as stored (it is passed on, not re-read).
async fn read_result(app: &App, state: &RequestState) -> Result<Value, ApiError> {
    if let Some(at) = state.video_deleted_at {
        return Err(ApiError::new(
            StatusCode::GONE,
            "video_deleted",
            format!(
                "the video of request {} was deleted from the library at {at}; its results went with it",
                state.request_id
            ),
        ));
    }
    let key = state
        .result_key
        .clone()
        .unwrap_or_else(|| RequestKeys::new(&state.request_id).result());
    app.storage
        .get_json::<Value>(&key)
        .await
        .map_err(ApiError::from)?
        .map(|(v, _)| v)
        .ok_or_else(|| {
            ApiError::internal(format!(
                "request {} completed but has no final.json",
                state.request_id
            ))
        })
}

/// A 409 about request `id`, in `status`: retryable while the request has not ended.
fn conflict(
    id: &RequestId,
    status: RequestStatus,
    code: &'static str,
    message: String,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
            retryable: !status.is_terminal(),
        },
        request_id: Some(id.to_string()),
        status: Some(status),
    };
    (StatusCode::CONFLICT, Json(body)).into_response()
}

/// An error answer about a request that exists: the error, with the request's id and
/// status beside it.
fn about_request(
    status: StatusCode,
    code: String,
    message: String,
    retryable: bool,
    state: &RequestState,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message,
            retryable,
        },
        request_id: Some(state.request_id.to_string()),
        status: Some(state.status),
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use crate::config::OrchestratorConfig;
    use axum::body::Body;
    use axum::http::HeaderMap;
    use axum::http::Request;
    use fave_common::gateway::CALL_ID;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::submit::{
        IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY_LEN, MAX_QUERY_LEN, named_id, prefers_async,
    };
    use super::*;

    /// An orchestrator in cluster mode whose store and gateway are ports nothing listens on:
    /// everything these tests check is decided before either is reached.
    async fn app() -> Router {
        let lookup = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9".to_owned()),
            "GATEWAY_URL" => Some("http://127.0.0.1:9".to_owned()),
            "FAVE_SECRETS_DIR" => Some("/nonexistent".to_owned()),
            _ => None,
        };
        router(
            App::new(OrchestratorConfig::from_lookup(&lookup).unwrap())
                .await
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_configured_token_is_required_on_every_route_but_healthz() {
        let lookup = |k: &str| match k {
            "AWS_ENDPOINT_URL" | "GATEWAY_URL" => Some("http://127.0.0.1:9".to_owned()),
            "FAVE_SECRETS_DIR" => Some("/nonexistent".to_owned()),
            "FAVE_API_TOKEN" => Some("s3cr3t-token".to_owned()),
            _ => None,
        };
        let config = OrchestratorConfig::from_lookup(&lookup).unwrap();
        assert!(
            !format!("{config:?}").contains("s3cr3t"),
            "the token never prints"
        );
        let app = router(App::new(config).await.unwrap());
        let send = |method: &str, path: &str, auth: Option<&str>| {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let request = request.body(Body::from("{}")).unwrap();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                (status, body, challenge)
            }
        };
        for (method, path) in [
            ("POST", "/"),
            ("GET", "/requests"),
            ("GET", "/requests/0123456789abcdef"),
            ("GET", "/requests/0123456789abcdef/result"),
            ("POST", "/requests/0123456789abcdef/cancel"),
            ("POST", "/requests/0123456789abcdef/resume"),
            ("GET", "/metrics"),
            ("GET", "/no/such/route"),
        ] {
            for auth in [
                None,
                Some("Bearer wrong"),
                Some("s3cr3t-token"),
                Some("Bearer "),
            ] {
                let (status, body, challenge) = send(method, path, auth).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
                assert_eq!(body["error"]["code"], "unauthorized");
                assert_eq!(body["error"]["retryable"], false);
                assert_eq!(
                    challenge.as_ref().map(|v| v.as_bytes()),
                    Some(&b"Bearer"[..])
                );
            }
        }
        let (status, _, _) = send("GET", "/healthz", None).await;
        assert_eq!(status, StatusCode::OK, "probes need no token");
        // Readiness neither: here it says the (unreachable) store, not the missing token.
        let (status, body, _) = send("GET", "/readyz", None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable"))
        );
        let (status, _, _) = send("GET", "/metrics", Some("Bearer s3cr3t-token")).await;
        assert_eq!(status, StatusCode::OK);
        // With the token, a route is what it always was: here a JSON 404.
        let (status, body, _) = send("GET", "/no/such/route", Some("Bearer s3cr3t-token")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );

        // The web page asks a browser for the token as a Basic password, and takes it so.
        let basic = |pair: &str| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        for path in ["/ui", "/ui/", "/ui/assets/fave.css", "/ui/no/such/page"] {
            for auth in [
                None,
                Some(basic("fave:wrong")),
                Some(basic("s3cr3t-token")),
                Some("Basic !!not base64".to_owned()),
            ] {
                let (status, _, challenge) = send("GET", path, auth.as_deref()).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
                assert_eq!(
                    challenge.as_ref().map(|v| v.as_bytes()),
                    Some(&br#"Basic realm="fave", charset="UTF-8""#[..]),
                    "{path}"
                );
            }
        }
        for auth in [
            basic("anyone:s3cr3t-token"),
            "Bearer s3cr3t-token".to_owned(),
        ] {
            let (status, _, _) = send("GET", "/ui/assets/fave.css", Some(&auth)).await;
            assert_eq!(status, StatusCode::OK, "{auth}");
        }
        // The Basic form opens the page only, not the API.
        let (status, _, _) = send("GET", "/metrics", Some(&basic("x:s3cr3t-token"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    async fn call(request: Request<Body>) -> (StatusCode, Value) {
        let response = app().await.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn an_idempotency_key_or_else_a_gateway_call_stands_for_one_request_id() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                headers.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            headers
        };
        let with = |key: &str| named_id(&headers(&[(IDEMPOTENCY_KEY, key)]));
        let a = with("order 42").unwrap().unwrap();
        assert_eq!(with("order 42").unwrap(), Some(a.clone()));
        assert_ne!(with("order 43").unwrap(), Some(a.clone()));
        // The id a key stood for before gateway calls named requests too: requests in flight
        // across the upgrade are still found by their key.
        assert_eq!(a.as_str(), "7aa8d7676173f34a36ba580eff71535d");
        assert_eq!(named_id(&HeaderMap::new()).unwrap(), None);
        for bad in ["", "tab\there", &"k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1)] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        // Without a key, the gateway's call id names the request: a redelivery or a resend
        // with the same X-Call-Id finds it. The two kinds of name never meet.
        let call = |id: &str| named_id(&headers(&[(CALL_ID, id)])).unwrap();
        let c = call("3f1c-call").expect("named by the call");
        assert_eq!(call("3f1c-call"), Some(c.clone()));
        assert_ne!(call("another-call"), Some(c.clone()));
        assert_ne!(with("3f1c-call").unwrap(), Some(c.clone()));
        // A key wins over the call id.
        let both = named_id(&headers(&[
            (IDEMPOTENCY_KEY, "order 42"),
            (CALL_ID, "3f1c-call"),
        ]));
        assert_eq!(both.unwrap(), Some(a));
        // An unusable call id is the gateway's, not a caller's mistake: it names nothing.
        assert_eq!(call(&"c".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1)), None);
    }

    #[tokio::test]
    async fn readiness_says_when_the_store_is_unreachable_and_health_does_not() {
        let clock = std::time::Instant::now();
        let (status, body) = call(Request::get("/readyz").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "storage_unavailable");
        assert_eq!(body["error"]["retryable"], true);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("the store did not answer"), "{message}");
        assert!(
            clock.elapsed() < Duration::from_secs(10),
            "{:?}",
            clock.elapsed()
        );
        let (status, _) = call(Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a replica is not unhealthy for its store's sake"
        );
    }

    #[test]
    fn prefer_respond_async_is_read_among_other_preferences() {
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("prefer", HeaderValue::from_str(v).unwrap());
            }
            prefers_async(&headers)
        };
        assert!(with(&["respond-async"]));
        assert!(with(&["return=minimal, Respond-Async; wait=10"]));
        assert!(with(&["wait=5", "respond-async"]));
        assert!(!with(&["return=representation"]));
        assert!(!with(&[]));
    }

    async fn submit(body: Value) -> (StatusCode, Value) {
        call(
            Request::post("/")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    #[tokio::test]
    async fn file_uris_are_refused_outside_local_mode() {
        let (status, body) = submit(json!({"video_uri": "file:///etc/passwd"})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_video_uri"))
        );
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_outside_local_mode() {
        // Refused before any connection: nothing listens at these, in this test or here.
        for uri in [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://localhost:9/video.mp4",
            "http://[::1]:9/video.mp4",
            "https://10.0.0.1/video.mp4",
            "http://0x7f000001/video.mp4",
            // IPv6 forms that carry an internal IPv4 address: NAT64, 6to4, SIIT.
            "http://[64:ff9b::7f00:1]/video.mp4",
            "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
            "http://[2002:a00:1::1]/video.mp4",
            "http://[::ffff:0:a9fe:a9fe]/video.mp4",
        ] {
            let (status, body) = submit(json!({ "video_uri": uri })).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("forbidden_address")),
                "{uri}: {body}"
            );
        }
        // An authority URL parsers disagree about is refused before it is parsed.
        let (status, body) =
            submit(json!({ "video_uri": "http://cdn.example.com\\@10.0.0.1/video.mp4" })).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_video_uri")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn submissions_are_validated_into_typed_form() {
        for (body, code) in [
            (
                json!({"video_uri": "s3://b/k", "profile": "hot"}),
                "invalid_request",
            ),
            (
                json!({"video_uri": "s3://b/k", "extra": 1}),
                "invalid_request",
            ),
            (
                json!({"video_uri": "s3://b/k", "query": "q".repeat(MAX_QUERY_LEN + 1)}),
                "invalid_query",
            ),
            (
                json!({"video_uri": "mailto:me@example.com"}),
                "invalid_video_uri",
            ),
        ] {
            let (status, answer) = submit(body.clone()).await;
            assert_eq!(
                (status, answer["error"]["code"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn hostile_ids_never_reach_the_store() {
        for id in ["..", "a.b", "%2e%2e", "x%2Fy"] {
            let (status, body) = call(
                Request::get(format!("/requests/{id}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_request_id")),
                "{id}"
            );
        }
    }
}
