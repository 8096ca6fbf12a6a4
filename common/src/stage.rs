//! The stage contract and the one harness that serves every stage.
//!
//! The orchestrator POSTs a [`StageCall`] to a stage function through the gateway. The
//! harness validates it, and if the stage's `manifest.json` already holds the answer for the
//! same idempotency key it returns that without redoing work (gateway async delivery is
//! at-least-once). Otherwise it runs the stage in a fresh work directory and writes the
//! [`Manifest`] last, so a manifest's presence means every output it names is complete.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::config::{StageConfig, env_lookup};
use crate::error::{ApiError, JsonBody};
use crate::ids::{ClipId, RequestId, StageName};
use crate::keys::{self, RequestKeys};
use crate::storage::{Storage, StorageError};

/// Answer header saying the manifest was already there and nothing was run.
pub const REUSED_HEADER: &str = "x-fave-reused";

/// What the orchestrator sends a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageCall<I> {
    pub request_id: RequestId,
    pub stage: StageName,
    /// Set for per-clip tasks.
    #[serde(default)]
    pub clip: Option<ClipId>,
    /// Derived from (request, stage, clip, inputs, params): the same key means the same work.
    pub idempotency_key: String,
    pub input: I,
}

impl<I> StageCall<I> {
    /// Where this call's outputs go; derived from the validated ids, never taken from the
    /// caller, so a call cannot write outside its request's folder.
    pub fn output_prefix(&self) -> String {
        let keys = RequestKeys::new(&self.request_id);
        match &self.clip {
            Some(clip) => keys.clip_stage_prefix(clip, &self.stage),
            None => keys.stage_prefix(&self.stage),
        }
    }
}

/// What a stage leaves behind, written last under its output prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest<O> {
    pub stage: StageName,
    pub request_id: RequestId,
    pub clip: Option<ClipId>,
    pub idempotency_key: String,
    /// Output name → S3 key.
    pub outputs: BTreeMap<String, String>,
    /// The stage's own result.
    pub data: O,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Time spent doing the stage's work, download and upload included.
    pub work_ms: u64,
}

/// What a stage's `run` returns: the objects it wrote and its result.
#[derive(Debug, Clone)]
pub struct Produced<O> {
    pub outputs: BTreeMap<String, String>,
    pub data: O,
}

/// Why a stage could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The call itself is wrong (missing input object, bad parameters): final.
    #[error("{0}")]
    InvalidInput(String),
    /// The media cannot be processed (not a video, corrupt): final.
    #[error("{0}")]
    InvalidMedia(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Internal(String),
}

impl From<StageError> for ApiError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::InvalidInput(m) => ApiError::unprocessable("invalid_input", m),
            StageError::InvalidMedia(m) => ApiError::unprocessable("invalid_media", m),
            StageError::Storage(StorageError::NotFound { key }) => {
                ApiError::unprocessable("input_missing", format!("no object at {key}"))
            }
            StageError::Storage(e) if e.is_transient() => {
                ApiError::unavailable("storage_unavailable", e.to_string())
            }
            StageError::Storage(e) => ApiError::internal(e.to_string()),
            StageError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// Where a stage runs: the store, and a work directory of its own that is removed after.
pub struct StageContext<'a> {
    pub storage: &'a Storage,
    pub workdir: &'a Path,
}

/// One pipeline stage. Implement this and call [`main`]; the harness does the rest.
pub trait Stage: Send + Sync + 'static {
    type Input: DeserializeOwned + Send + Sync + 'static;
    type Output: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The stage's name, which is its function's name in stack.yml.
    fn name(&self) -> &'static str;

    fn run(
        &self,
        ctx: &StageContext<'_>,
        call: &StageCall<Self::Input>,
    ) -> impl Future<Output = Result<Produced<Self::Output>, StageError>> + Send;
}

struct Harness<S> {
    stage: S,
    storage: Storage,
}

/// The router serving a stage: `POST /` runs it, `GET /healthz` says it is up; any other
/// route is a JSON 404.
pub fn router<S: Stage>(stage: S, storage: Storage, body_limit: usize) -> Router {
    let harness = Arc::new(Harness { stage, storage });
    Router::new()
        .route("/", post(handle::<S>))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(harness)
}

async fn handle<S: Stage>(
    State(h): State<Arc<Harness<S>>>,
    JsonBody(call): JsonBody<StageCall<S::Input>>,
) -> Result<Response, ApiError> {
    if call.stage.as_str() != h.stage.name() {
        return Err(ApiError::bad_request(
            "wrong_stage",
            format!("this is {}, the call is for {}", h.stage.name(), call.stage),
        ));
    }
    let span = tracing::info_span!(
        "stage",
        stage = h.stage.name(),
        request_id = %call.request_id,
        clip = call.clip.as_ref().map(ClipId::as_str),
    );
    async move {
        let manifest_key = keys::manifest(&call.output_prefix());
        if let Some((done, _)) = h
            .storage
            .get_json::<Manifest<S::Output>>(&manifest_key)
            .await
            .map_err(StageError::from)?
            && done.idempotency_key == call.idempotency_key
        {
            tracing::info!("manifest already written, returning it");
            return Ok(reused(Json(done).into_response()));
        }
        let started_at = Utc::now();
        let clock = Instant::now();
        let workdir = tempfile::tempdir()
            .map_err(|e| ApiError::internal(format!("creating a work directory: {e}")))?;
        let ctx = StageContext {
            storage: &h.storage,
            workdir: workdir.path(),
        };
        let produced = h.stage.run(&ctx, &call).await?;
        let manifest = Manifest {
            stage: call.stage.clone(),
            request_id: call.request_id.clone(),
            clip: call.clip.clone(),
            idempotency_key: call.idempotency_key.clone(),
            outputs: produced.outputs,
            data: produced.data,
            started_at,
            ended_at: Utc::now(),
            work_ms: clock.elapsed().as_millis() as u64,
        };
        h.storage
            .put_json(&manifest_key, &manifest)
            .await
            .map_err(StageError::from)?;
        tracing::info!(work_ms = manifest.work_ms, "stage done");
        Ok((StatusCode::OK, Json(manifest)).into_response())
    }
    .instrument(span)
    .await
}

fn reused(mut response: Response) -> Response {
    response.headers_mut().insert(
        HeaderName::from_static(REUSED_HEADER),
        HeaderValue::from_static("true"),
    );
    response
}

/// A stage binary's whole `main`: read config, connect storage, serve until SIGTERM.
pub async fn main<S: Stage>(stage: S) -> MainResult {
    crate::telemetry::init();
    let config = StageConfig::from_lookup(&env_lookup)?;
    let storage = Storage::connect(&config.s3).await;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(stage = stage.name(), addr = %listener.local_addr()?, "listening");
    let app = router(stage, storage, config.body_limit);
    crate::server::serve(listener, app, crate::server::shutdown_signal()).await?;
    Ok(())
}

/// What a binary's `main` returns: any error, boxed, so the library needs no `anyhow`.
pub type MainResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
