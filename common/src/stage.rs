//! The stage contract and the one harness that serves every stage.
//!
//! The orchestrator POSTs a [`StageCall`] to a stage function through the gateway. The
//! harness validates it, and if the stage's `manifest.json` already holds the answer for the
//! same idempotency key it returns that without redoing work (gateway async delivery is
//! at-least-once). Otherwise it claims the work ([`crate::claim`]): a call that finds the
//! work claimed by another (a duplicate delivery, a retry while the first still runs) waits
//! for that work's manifest instead of doing it again. The claimant runs the stage in a
//! fresh work directory, on a task of its own so the work outlives a caller that went away
//! (its retry finds the manifest), and writes the [`Manifest`] last, so a manifest's
//! presence means every output it names is complete.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::claim::{self, Acquired, Claim};
use crate::config::{StageConfig, env_lookup};
use crate::error::{ApiError, BodyLimit, JsonBody};
use crate::gateway::COLD_START as COLD_START_HEADER;
use crate::ids::{ClipId, RequestId, StageName};
use crate::keys::{self, RequestKeys};
use crate::readiness::{self, FirstCall};
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
    /// Refuses a key (named `field` in the input) that is not one of this request's own
    /// objects: a stage reads only what its request owns.
    pub fn require_own_key(&self, field: &str, key: &str) -> Result<(), StageError> {
        let root = RequestKeys::new(&self.request_id).root().to_owned();
        if key.starts_with(&root) && !key.contains("..") {
            Ok(())
        } else {
            Err(StageError::InvalidInput(format!(
                "{field} must be under {root}"
            )))
        }
    }

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
    /// The function process's peak resident memory so far (Linux `VmHWM`), in KiB.
    #[serde(default)]
    pub peak_rss_kb: Option<u64>,
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
    /// The media is beyond what this deployment takes on (too long, too large, too many
    /// pixels a second), found before any work: final.
    #[error("{0}")]
    OverLimit(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Not now, but soon: a model still loading. A retryable 503 with its own code.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error("{0}")]
    Internal(String),
}

impl From<StageError> for ApiError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::InvalidInput(m) => ApiError::unprocessable("invalid_input", m),
            StageError::InvalidMedia(m) => ApiError::unprocessable("invalid_media", m),
            StageError::OverLimit(m) => ApiError::unprocessable("media_over_limit", m),
            StageError::Storage(StorageError::NotFound { key }) => {
                ApiError::unprocessable("input_missing", format!("no object at {key}"))
            }
            StageError::Storage(e) => e.into(),
            StageError::Unavailable { code, message } => ApiError::unavailable(code, message),
            StageError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// Where a stage runs: the store, and a work directory of its own that is removed after.
pub struct StageContext<'a> {
    pub storage: &'a Storage,
    /// Made on first use: a call that needs no files (the no-op stage, a stage that only
    /// reads and writes JSON) should not pay for a directory made and removed.
    workdir: OnceLock<TempDir>,
}

impl StageContext<'_> {
    /// This call's work directory, made on first use and removed after the call.
    pub fn workdir(&self) -> Result<&Path, StageError> {
        if let Some(dir) = self.workdir.get() {
            return Ok(dir.path());
        }
        let dir = tempfile::tempdir()
            .map_err(|e| StageError::Internal(format!("creating a work directory: {e}")))?;
        // Only this call uses its context, so the cell is still empty here.
        Ok(self.workdir.get_or_init(|| dir).path())
    }
}

/// One pipeline stage. Implement this and call [`main`]; the harness does the rest.
pub trait Stage: Send + Sync + 'static {
    type Input: DeserializeOwned + Send + Sync + 'static;
    type Output: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The stage's name, which is its function's name in stack.yml.
    fn name(&self) -> &'static str;

    /// Whether this function serves calls for `stage` of the orchestrator's table: its own
    /// name, unless one function serves several stages (the no-op function serves them all).
    fn serves(&self, stage: &str) -> bool {
        stage == self.name()
    }

    fn run(
        &self,
        ctx: &StageContext<'_>,
        call: &StageCall<Self::Input>,
    ) -> impl Future<Output = Result<Produced<Self::Output>, StageError>> + Send;
}

struct Harness<S> {
    stage: S,
    storage: Storage,
    started: Instant,
    first_call: FirstCall,
    /// Work under way, each on a task of its own; shutdown waits for them.
    work: TaskTracker,
    claim_ttl: Duration,
    /// Names this process's claims: unique per process, with a count per call.
    holder: String,
    calls: AtomicU64,
}

impl<S> Harness<S> {
    fn next_holder(&self) -> String {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        format!("{}/{n}", self.holder)
    }
}

/// How a harness serves: its limits and where its work is tracked.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    pub body_limit: usize,
    pub claim_ttl: Duration,
    /// The tasks doing the stage's work; a binary waits for them when it stops.
    pub work: TaskTracker,
}

impl HarnessOptions {
    /// A body limit, the default claim life, and a tracker of its own.
    pub fn new(body_limit: usize) -> Self {
        Self {
            body_limit,
            claim_ttl: claim::DEFAULT_TTL,
            work: TaskTracker::new(),
        }
    }
}

/// How long a caller that found the work claimed waits, between looks at the manifest.
const CLAIM_POLL: Duration = Duration::from_millis(200);

/// The router serving a stage: `POST /` runs it, `GET /healthz` says it is up; any other
/// route is a JSON 404. The answer to a cold call says so ([`readiness`]'s rule).
pub fn router<S: Stage>(stage: S, storage: Storage, options: HarnessOptions) -> Router {
    let harness = Arc::new(Harness {
        stage,
        storage,
        started: readiness::mark_started(),
        first_call: FirstCall::default(),
        work: options.work,
        claim_ttl: options.claim_ttl,
        holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        calls: AtomicU64::new(0),
    });
    let body_limit = options.body_limit;
    let routes = Router::new().route("/", post(handle::<S>)).route(
        "/healthz",
        get(|| async { Json(serde_json::json!({"status": "ok"})) }),
    );
    crate::error::json_fallbacks(routes)
        .layer(axum::Extension(BodyLimit(body_limit)))
        .with_state(harness)
}

async fn handle<S: Stage>(
    State(h): State<Arc<Harness<S>>>,
    headers: axum::http::HeaderMap,
    body: Result<JsonBody<StageCall<S::Input>>, ApiError>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let first = h.first_call.take();
    let answer = match body {
        Ok(JsonBody(call)) => serve(h.clone(), &headers, call).await,
        Err(e) => Err(e),
    };
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    if let Some(cold) = readiness::cold_start(h.started, arrived, readiness::ready_at(), first) {
        tracing::info!(cold_start_ms = cold.as_millis() as u64, "a cold start");
        response.headers_mut().insert(
            HeaderName::from_static(COLD_START_HEADER),
            HeaderValue::from(cold.as_millis() as u64),
        );
    }
    Ok(response)
}

async fn serve<S: Stage>(
    h: Arc<Harness<S>>,
    headers: &axum::http::HeaderMap,
    call: StageCall<S::Input>,
) -> Result<Response, ApiError> {
    if !h.stage.serves(call.stage.as_str()) {
        return Err(ApiError::bad_request(
            "wrong_stage",
            format!("this is {}, the call is for {}", h.stage.name(), call.stage),
        ));
    }
    let span = tracing::info_span!(
        "stage",
        stage = call.stage.as_str(),
        request_id = %call.request_id,
        clip = call.clip.as_ref().map(ClipId::as_str),
        // The gateway's id of this call, which the orchestrator records in the attempt.
        call_id = headers
            .get(crate::gateway::CALL_ID)
            .and_then(|v| v.to_str().ok()),
    );
    async move {
        let prefix = call.output_prefix();
        let manifest_key = keys::manifest(&prefix);
        let mut waited = false;
        loop {
            if let Some(done) = stored_manifest::<S>(&h.storage, &manifest_key, &call).await? {
                tracing::info!(waited, "manifest already written, returning it");
                return Ok(reused(Json(done).into_response()));
            }
            let holder = h.next_holder();
            let acquired =
                claim::acquire(&h.storage, &prefix, &holder, &call.idempotency_key, h.claim_ttl)
                    .await
                    .map_err(StageError::from)?;
            match acquired {
                Acquired::Mine(claim) => {
                    // The holder before us writes its manifest, then releases its claim: a
                    // claim won just after that release must find the manifest, not redo it.
                    if let Some(done) =
                        stored_manifest::<S>(&h.storage, &manifest_key, &call).await?
                    {
                        claim.release(&h.storage).await;
                        tracing::info!(waited, "manifest written meanwhile, returning it");
                        return Ok(reused(Json(done).into_response()));
                    }
                    return work(h, call, claim).await;
                }
                Acquired::Held(by) => {
                    if !waited {
                        tracing::info!(holder = %by.holder, "this work is under way elsewhere; waiting for its manifest");
                        waited = true;
                    }
                    // Until the manifest comes, or the claim is released (the work failed:
                    // this call tries it) or lapses (its holder died: this call takes it
                    // over). The caller's own timeout bounds the wait.
                    tokio::time::sleep(CLAIM_POLL).await;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// The manifest at `key`, if it answers `call` (the same idempotency key).
async fn stored_manifest<S: Stage>(
    storage: &Storage,
    key: &str,
    call: &StageCall<S::Input>,
) -> Result<Option<Manifest<S::Output>>, StageError> {
    Ok(storage
        .get_json::<Manifest<S::Output>>(key)
        .await?
        .map(|(done, _)| done)
        .filter(|done| done.idempotency_key == call.idempotency_key))
}

/// Does the claimed work on a task of its own, so that it finishes and writes its manifest
/// even if this call's caller goes away; answers this call with its outcome.
async fn work<S: Stage>(
    h: Arc<Harness<S>>,
    call: StageCall<S::Input>,
    mut claim: Claim,
) -> Result<Response, ApiError> {
    let (answer, outcome) = tokio::sync::oneshot::channel();
    let worker = h.clone();
    h.work.spawn(
        async move {
            tracing::info!(idempotency_key = %call.idempotency_key, "stage work started");
            let done = tokio::select! {
                done = run_to_manifest(&worker, &call) => Ok(done),
                lost = claim.keep(&worker.storage) => Err(StageError::Unavailable {
                    code: "claim_lost",
                    message: format!("this call's claim on its work was lost: {lost}"),
                }),
            };
            // A lost claim is someone else's now: it is not ours to remove.
            let done = match done {
                Ok(done) => {
                    claim.release(&worker.storage).await;
                    done
                }
                Err(lost) => Err(lost),
            };
            // With "started", what a test (or an operator) needs to tell a run done again
            // after a failure from two runs at once.
            match &done {
                Ok(_) => tracing::info!(idempotency_key = %call.idempotency_key, "stage work ended"),
                Err(e) => tracing::warn!(idempotency_key = %call.idempotency_key, error = %e, "stage work ended failing"),
            }
            // The caller may be gone; the manifest is what its retry finds.
            let _ = answer.send(done);
        }
        .in_current_span(),
    );
    match outcome.await {
        Ok(Ok(manifest)) => Ok((StatusCode::OK, Json(manifest)).into_response()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::internal(
            "the stage's work ended without an answer",
        )),
    }
}

/// Runs the stage in a fresh work directory and writes its manifest, last.
async fn run_to_manifest<S: Stage>(
    h: &Harness<S>,
    call: &StageCall<S::Input>,
) -> Result<Manifest<S::Output>, StageError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let ctx = StageContext {
        storage: &h.storage,
        workdir: OnceLock::new(),
    };
    let produced = h.stage.run(&ctx, call).await?;
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
        peak_rss_kb: peak_rss_kb(),
    };
    h.storage
        .put_json(&keys::manifest(&call.output_prefix()), &manifest)
        .await?;
    tracing::info!(work_ms = manifest.work_ms, "stage done");
    Ok(manifest)
}

/// This process's peak resident set size in KiB, where the OS tells it (Linux).
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn reused(mut response: Response) -> Response {
    response.headers_mut().insert(
        HeaderName::from_static(REUSED_HEADER),
        HeaderValue::from_static("true"),
    );
    response
}

/// A stage binary's whole `main`: read config, listen, connect storage, serve until
/// SIGTERM. It listens before anything slow: a model the stage loads is loading on a thread
/// of its own by now ([`readiness::Loading`]), and early calls wait for it.
pub async fn main<S: Stage>(stage: S) -> MainResult {
    readiness::mark_started();
    crate::telemetry::init();
    let config = StageConfig::from_lookup(&env_lookup)?;
    let listener = crate::server::bind(config.listen).await?;
    readiness::mark_listening();
    tracing::info!(
        stage = stage.name(),
        addr = %listener.local_addr()?,
        since_start_ms = readiness::mark_started().elapsed().as_millis() as u64,
        "listening"
    );
    let storage = Storage::connect(&config.s3).await;
    let options = HarnessOptions {
        claim_ttl: config.claim_ttl,
        ..HarnessOptions::new(config.body_limit)
    };
    let work = options.work.clone();
    let app = router(stage, storage, options);
    crate::server::serve(listener, app, crate::server::shutdown_signal()).await?;
    // Work whose callers went away still finishes, within the drain window, so that its
    // manifest is there for their retries; what does not is cut off with the process.
    work.close();
    if tokio::time::timeout(WORK_DRAIN, work.wait()).await.is_err() {
        tracing::warn!("stopping with stage work unfinished; its claim will lapse");
    }
    Ok(())
}

/// How long a stopping stage waits for work whose callers went away.
const WORK_DRAIN: Duration = Duration::from_secs(20);

/// What a binary's `main` returns: any error, boxed, so the library needs no `anyhow`.
pub type MainResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::config::S3Settings;

    /// A stage that only echoes; the tests below never get as far as running it, except
    /// where storage is reached and found unreachable.
    struct Echo;

    impl Stage for Echo {
        type Input = Value;
        type Output = Value;
        fn name(&self) -> &'static str {
            "stage-echo"
        }
        async fn run(
            &self,
            _: &StageContext<'_>,
            call: &StageCall<Value>,
        ) -> Result<Produced<Value>, StageError> {
            Ok(Produced {
                outputs: BTreeMap::new(),
                data: call.input.clone(),
            })
        }
    }

    /// A store on a port nothing listens on.
    async fn unreachable_store() -> Storage {
        let lookup = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9".to_owned()),
            "AWS_ACCESS_KEY_ID" => Some("k".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("s".to_owned()),
            "FAVE_SECRETS_DIR" => Some("/nonexistent".to_owned()),
            // One attempt: the SDK's retries would only make the test slow.
            "FAVE_S3_MAX_ATTEMPTS" => Some("1".to_owned()),
            _ => None,
        };
        Storage::connect(&S3Settings::from_lookup(&lookup).unwrap()).await
    }

    async fn call(app: Router, request: Request<Body>) -> (StatusCode, Value) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn post(body: Body) -> Request<Body> {
        Request::post("/").body(body).unwrap()
    }

    fn call_json(stage: &str) -> Value {
        json!({"request_id": "r1", "stage": stage, "idempotency_key": "k", "input": {"x": 1}})
    }

    #[tokio::test]
    async fn routes_and_errors_have_one_shape() {
        let app = router(Echo, unreachable_store().await, HarnessOptions::new(1024));
        let (status, body) = call(
            app.clone(),
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
        let (status, body) = call(
            app.clone(),
            Request::get("/nope").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (status, body) = call(app.clone(), post(Body::from("{oops"))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("malformed_json"))
        );
        let (status, body) = call(
            app.clone(),
            post(Body::from(call_json("stage-other").to_string())),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("wrong_stage"))
        );
        let mut hostile = call_json("stage-echo");
        hostile["request_id"] = json!("../../etc");
        let (status, body) = call(app.clone(), post(Body::from(hostile.to_string()))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request"))
        );
        let big = json!({"pad": "x".repeat(2048)}).to_string();
        let (status, body) = call(app, post(Body::from(big))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
        );
    }

    #[tokio::test]
    async fn chunked_bodies_without_content_length_are_read() {
        // of-watchdog forwards bodies chunked; the wrong stage name proves the body was parsed.
        let app = router(Echo, unreachable_store().await, HarnessOptions::new(1024));
        let text = call_json("stage-other").to_string();
        let chunks: Vec<Result<String, std::io::Error>> = text
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
            .collect();
        let request = post(Body::from_stream(futures::stream::iter(chunks)));
        assert!(request.headers().get("content-length").is_none());
        let (status, body) = call(app, request).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("wrong_stage"))
        );
    }

    #[test]
    fn every_stage_error_answers_with_a_named_failure_code_that_agrees_on_retrying() {
        use crate::contract::FailureCode;
        let store = |transient| StorageError::Service {
            op: "GetObject",
            key: "k".into(),
            status: None,
            message: "m".into(),
            transient,
        };
        for e in [
            StageError::InvalidInput("m".into()),
            StageError::InvalidMedia("m".into()),
            StageError::OverLimit("m".into()),
            StageError::Storage(StorageError::NotFound { key: "k".into() }),
            StageError::Storage(store(true)),
            StageError::Storage(store(false)),
            StageError::Unavailable {
                code: "model_loading",
                message: "m".into(),
            },
            StageError::Unavailable {
                code: "claim_lost",
                message: "m".into(),
            },
            StageError::Internal("m".into()),
        ] {
            let api = ApiError::from(e);
            let code = FailureCode::parse(api.code);
            assert!(
                !matches!(code, FailureCode::Other(_)),
                "{} is not named",
                api.code
            );
            assert_eq!(api.retryable, code.is_retryable(), "{}", api.code);
        }
    }

    #[test]
    fn a_stage_reads_only_its_requests_own_objects() {
        let call: StageCall<Value> = serde_json::from_value(call_json("stage-echo")).unwrap();
        assert!(
            call.require_own_key("k", "requests/r1/input/source.mp4")
                .is_ok()
        );
        for bad in [
            "requests/r2/input/source.mp4",
            "requests/r1/../r2/x",
            "requests/r10/x",
            "other/requests/r1/x",
        ] {
            let err = call.require_own_key("video_key", bad).unwrap_err();
            assert!(
                matches!(&err, StageError::InvalidInput(m) if m.starts_with("video_key")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let kb = peak_rss_kb().expect("VmHWM");
            assert!(kb > 1024, "{kb} KiB");
        }
    }

    #[tokio::test]
    async fn an_unreachable_store_is_a_retryable_503() {
        let app = router(Echo, unreachable_store().await, HarnessOptions::new(1024));
        let (status, body) = call(app, post(Body::from(call_json("stage-echo").to_string()))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "storage_unavailable");
        assert_eq!(body["error"]["retryable"], true);
    }
}
