//! The orchestrator function: accepts `{video_uri, query, profile}`, copies the video into
//! the store, keeps the request's durable state in `state.json` and drives the stage
//! functions through the gateway.
//!
//! - [`router`]: the HTTP routes (relative to `/function/orchestrator`).
//! - [`input`]: validating the video URI and fetching the video, before anything is written.
//! - [`pipeline`]: the stage table.
//! - [`driver`]: walking the stage table and recording every transition.

pub mod driver;
pub mod input;
pub mod pipeline;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use fave_common::config::OrchestratorConfig;
use fave_common::error::{ApiError, JsonBody};
use fave_common::gateway::GatewayClient;
use fave_common::ids::{RequestId, StageName};
use fave_common::keys::RequestKeys;
use fave_common::state::{
    InputObject, Profile, RequestEvent, RequestState, RequestStatus, StageState, Submission,
};
use fave_common::storage::{Storage, StorageError};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::driver::{DriveError, Driver, Tracked};
use crate::input::{Fetched, Limits, Source};
use crate::pipeline::StageSpec;

/// Everything a handler needs, built once at start.
pub struct App {
    pub config: OrchestratorConfig,
    pub storage: Storage,
    pub gateway: GatewayClient,
    http: reqwest::Client,
    stages: Vec<StageSpec>,
    invocations: Semaphore,
}

impl App {
    pub async fn new(config: OrchestratorConfig) -> Arc<Self> {
        let storage = Storage::connect(&config.s3).await;
        let gateway = GatewayClient::new(config.gateway_url.clone());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .expect("a client with a connect timeout and a redirect limit always builds");
        let invocations = Semaphore::new(config.max_concurrent_invocations);
        Arc::new(Self {
            config,
            storage,
            gateway,
            http,
            stages: pipeline::stages(),
            invocations,
        })
    }

    fn driver(&self) -> Driver<'_> {
        Driver {
            storage: &self.storage,
            gateway: &self.gateway,
            stages: &self.stages,
            invocations: &self.invocations,
            max_stage_timeout: self.config.stage_timeout,
        }
    }
}

/// The orchestrator's routes.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.config.body_limit;
    Router::new()
        .route("/", post(submit))
        .route("/requests/{id}", get(get_state))
        .route("/requests/{id}/result", get(get_result))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

/// The body of `POST /`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    pub video_uri: String,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub profile: Option<Profile>,
}

/// The longest query accepted.
pub const MAX_QUERY_LEN: usize = 1000;

/// How long `POST /` waits for the request to finish before answering 202.
const SYNC_WINDOW: Duration = Duration::from_secs(300);

async fn submit(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Response, ApiError> {
    let query = body
        .query
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if query
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_LEN)
    {
        return Err(ApiError::unprocessable(
            "invalid_query",
            format!("query is longer than {MAX_QUERY_LEN} characters"),
        ));
    }
    let source = Source::parse(&body.video_uri, app.config.local_mode)?;
    let limits = Limits {
        max_bytes: app.config.max_input_bytes,
        timeout: app.config.input_timeout,
    };
    // Nothing is written before the video is known to exist and be within limits.
    let fetched = input::fetch(&source, &app.storage, &app.http, limits).await?;

    let id = RequestId::generate();
    let stages = app
        .stages
        .iter()
        .map(|s| {
            s.name
                .parse::<StageName>()
                .map(|name| StageState::new(name, s.function))
                .map_err(|e| ApiError::internal(format!("the stage table is wrong: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let submission = Submission {
        video_uri: body.video_uri,
        query,
        profile: body.profile.unwrap_or_default(),
    };
    let state = RequestState::new(id.clone(), submission, stages, Utc::now());
    let tracked = Tracked::create(app.storage.clone(), state)
        .await
        .map_err(|e| {
            ApiError::unavailable("storage_unavailable", format!("recording the request: {e}"))
        })?;
    tracing::info!(request_id = %id, "request accepted");

    // Accepted: from here the request runs to its end even if the caller goes away.
    let task = tokio::spawn({
        let app = app.clone();
        let ext = source.extension();
        async move { copy_in_and_drive(&app, tracked, &ext, fetched).await }
    });
    match tokio::time::timeout(SYNC_WINDOW, task).await {
        Ok(Ok(Ok(state))) => answer(&app, &state).await,
        Ok(Ok(Err(e))) => Err(ApiError::unavailable(
            "driver_interrupted",
            format!("request {id} was accepted but could not be driven to its end: {e}"),
        )),
        Ok(Err(join)) => Err(ApiError::internal(format!(
            "request {id}: the driver panicked: {join}"
        ))),
        Err(_) => Ok(accepted(&id)),
    }
}

async fn copy_in_and_drive(
    app: &App,
    mut t: Tracked,
    ext: &str,
    fetched: Fetched,
) -> Result<RequestState, DriveError> {
    let key = RequestKeys::new(&t.state.request_id).input(ext);
    match app
        .storage
        .put_file(&key, fetched.path(), "application/octet-stream")
        .await
    {
        Ok(stored) => {
            t.state.input = Some(InputObject {
                key: stored.key,
                bytes: stored.bytes,
                sha256: stored.sha256,
            });
            t.commit().await?;
        }
        Err(e) => {
            t.state.apply(
                RequestEvent::Fail {
                    code: "storage_unavailable".into(),
                    detail: format!("copying the input in: {e}"),
                },
                Utc::now(),
            )?;
            t.commit().await?;
            return Ok(t.state);
        }
    }
    drop(fetched);
    app.driver().drive(&mut t).await?;
    Ok(t.state)
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
                .unwrap_or_else(|| ("cancelled".into(), "the request was cancelled".into()));
            let status = match code.as_str() {
                "invalid_media" | "invalid_input" | "input_missing" => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                "cancelled" => StatusCode::CONFLICT,
                "storage_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            let body = json!({
                "error": {"code": code, "message": detail, "retryable": false},
                "request_id": id,
                "status": state.status,
            });
            let mut response = (status, Json(body)).into_response();
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
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({"request_id": id, "status": "RUNNING", "status_url": url})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    set_request_headers(&mut response, id);
    response
}

fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    raw.parse().map_err(|e: fave_common::ids::InvalidId| {
        ApiError::bad_request("invalid_request_id", e.to_string())
    })
}

fn storage_error(e: StorageError) -> ApiError {
    if e.is_transient() {
        ApiError::unavailable("storage_unavailable", e.to_string())
    } else {
        ApiError::internal(e.to_string())
    }
}

async fn load_state(app: &App, id: &RequestId) -> Result<RequestState, ApiError> {
    app.storage
        .get_json::<RequestState>(&RequestKeys::new(id).state())
        .await
        .map_err(storage_error)?
        .map(|(state, _)| state)
        .ok_or_else(|| ApiError::not_found(format!("no request {id}")))
}

async fn read_result(app: &App, state: &RequestState) -> Result<Value, ApiError> {
    let key = state
        .result_key
        .clone()
        .unwrap_or_else(|| RequestKeys::new(&state.request_id).result());
    app.storage
        .get_json::<Value>(&key)
        .await
        .map_err(storage_error)?
        .map(|(v, _)| v)
        .ok_or_else(|| {
            ApiError::internal(format!(
                "request {} completed but has no final.json",
                state.request_id
            ))
        })
}

async fn get_state(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<RequestState>, ApiError> {
    let id = parse_id(&id)?;
    load_state(&app, &id).await.map(Json)
}

async fn get_result(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let state = load_state(&app, &id).await?;
    if state.status != RequestStatus::Completed {
        return Ok((
            StatusCode::CONFLICT,
            Json(json!({
                "error": {
                    "code": "not_completed",
                    "message": format!("request {id} is {:?}", state.status),
                    "retryable": !state.status.is_terminal(),
                },
                "request_id": id,
                "status": state.status,
            })),
        )
            .into_response());
    }
    Ok(Json(read_result(&app, &state).await?).into_response())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

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
        router(App::new(OrchestratorConfig::from_lookup(&lookup).unwrap()).await)
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
