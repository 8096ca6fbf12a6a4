//! The orchestrator function: accepts `{video_uri, query, profile}`, copies the video into
//! the store, keeps the request's durable state in `state.json` and drives the stage
//! functions through the gateway.
//!
//! - [`router`]: the HTTP routes (relative to `/function/orchestrator`).
//! - [`input`]: validating the video URI and fetching the video, before anything is written.
//! - [`guard`]: the SSRF guard on every URL the orchestrator fetches for a user.
//! - [`metrics`]: `GET /metrics`.
//! - [`credentials`]: the secret parts of submitted URLs, kept apart and only while needed.
//! - [`callback`]: delivering the result to a request's `callback_url`, at least once.
//! - [`pipeline`]: the stage table.
//! - [`driver`]: walking the stage table and recording every transition.

pub mod callback;
pub mod credentials;
pub mod driver;
pub mod guard;
pub mod input;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod result;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use fave_common::config::{OrchestratorConfig, PipelineChoice};
use fave_common::contract::FailureCode;
use fave_common::error::{ApiError, BodyLimit, JsonBody};
use fave_common::gateway::{CALL_ID, GatewayClient};
use fave_common::ids::{RequestId, StageName};
use fave_common::keys::{self, RequestKeys};
use fave_common::state::{
    Profile, Reach, RequestEvent, RequestState, RequestStatus, StageState, Submission, Transition,
};
use fave_common::storage::{Storage, StorageError};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::driver::{DriveError, Driver, LeaseHolder, Tracked};
use crate::input::{Fetched, Limits, Source};
use crate::pipeline::StageSpec;

/// Everything a handler needs, built once at start.
pub struct App {
    pub config: OrchestratorConfig,
    pub storage: Storage,
    pub gateway: GatewayClient,
    http: guard::UserClients,
    stages: Vec<StageSpec>,
    params: pipeline::Params,
    pub metrics: metrics::Metrics,
    invocations: Semaphore,
    /// Fired by SIGTERM: drivers persist their state, release their leases and stop.
    pub shutdown: CancellationToken,
    /// Every driver this process runs, so shutdown can wait for them.
    pub drivers: TaskTracker,
    /// Requests this process drives now; the resumer skips them.
    driving: std::sync::Mutex<HashSet<RequestId>>,
}

impl App {
    pub async fn new(config: OrchestratorConfig) -> Arc<Self> {
        let storage = Storage::connect(&config.s3).await;
        let gateway = GatewayClient::new(config.gateway_url.clone());
        // Videos (and callbacks) are fetched from URLs users give: outside local mode, never
        // from internal addresses (see `guard`).
        let http = guard::UserClients::new(config.local_mode);
        let invocations = Semaphore::new(config.max_concurrent_invocations);
        let params = pipeline::Params {
            clip_min_s: config.clip_min_s,
            clip_max_s: config.clip_max_s,
            frames_per_second: config.frames_per_second,
            noop_clips: match config.pipeline {
                PipelineChoice::Noop { clips, .. } => clips,
                PipelineChoice::Video => 0,
            },
            noop_work_ms: match config.pipeline {
                PipelineChoice::Noop { work_ms, .. } => work_ms,
                PipelineChoice::Video => 0,
            },
        };
        let stages = pipeline::stages(config.pipeline);
        Arc::new(Self {
            config,
            storage,
            gateway,
            http,
            stages,
            params,
            metrics: metrics::Metrics::default(),
            invocations,
            shutdown: CancellationToken::new(),
            drivers: TaskTracker::new(),
            driving: std::sync::Mutex::new(HashSet::new()),
        })
    }

    fn holder(&self) -> LeaseHolder {
        LeaseHolder {
            owner: self.config.replica_id.clone(),
            ttl: self.config.lease_ttl,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.config.max_input_bytes,
            timeout: self.config.input_timeout,
        }
    }

    fn driver(&self) -> Driver<'_> {
        Driver {
            storage: &self.storage,
            gateway: &self.gateway,
            http: &self.http,
            stages: &self.stages,
            invocations: &self.invocations,
            fan_out: self.config.max_concurrent_invocations,
            params: &self.params,
            metrics: &self.metrics,
            max_stage_timeout: self.config.stage_timeout,
            platform_retry_window: self.config.platform_retry_window,
            input_limits: self.limits(),
        }
    }

    /// Claims a request for this process: while the claim lives, nothing else here (the
    /// resumer, the resume route) starts driving it. `None` if it is claimed already.
    fn claim(self: &Arc<Self>, id: &RequestId) -> Option<Claim> {
        let fresh = self
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        fresh.then(|| Claim {
            app: self.clone(),
            id: id.clone(),
        })
    }

    /// Drives a claimed request in the background (it outlives the HTTP call that started
    /// it) and returns a handle to its end; the claim ends with the driver.
    fn spawn_driver(
        self: &Arc<Self>,
        claim: Claim,
        tracked: Tracked,
        prefetched: Option<Fetched>,
    ) -> tokio::task::JoinHandle<(RequestState, Result<(), DriveError>)> {
        let id = tracked.state.request_id.clone();
        let app = self.clone();
        // Every line the driver logs carries the request's id, so one request can be
        // followed through the orchestrator and (by the same field) every stage.
        let span = tracing::info_span!("request", request_id = %id);
        self.drivers.spawn(
            async move {
                let _claim = claim;
                app.metrics.drivers(1);
                let (mut state, result) = app
                    .driver()
                    .run(tracked, prefetched, app.shutdown.child_token())
                    .await;
                app.metrics.drivers(-1);
                if result.is_ok() {
                    app.metrics.ended(state.status);
                }
                match &result {
                    Err(DriveError::Stopped) => {
                        // Shutdown: hand the request over now rather than after the lease expires.
                        if let Ok(Some(mut t)) =
                            Tracked::load(app.storage.clone(), &id, app.holder()).await
                            && t.state
                                .lease
                                .as_ref()
                                .is_some_and(|l| l.owner == app.config.replica_id)
                            && t.release().await.is_ok()
                        {
                            state = t.state;
                            tracing::info!(request_id = %id, "lease released for another replica");
                        }
                    }
                    Err(DriveError::Illegal(bug)) => {
                        // A bug, not a passing trouble: resuming would only repeat it, so the
                        // request ends FAILED and says why.
                        tracing::error!(request_id = %id, error = %bug, "driver bug");
                        if let Ok(Some(mut t)) =
                            Tracked::load(app.storage.clone(), &id, app.holder()).await
                        {
                            let failed = t.state.apply(
                                RequestEvent::Fail {
                                    code: FailureCode::Internal.into(),
                                    detail: bug.to_string(),
                                },
                                Utc::now(),
                            );
                            if failed.is_ok() && t.commit().await.is_ok() {
                                if !t.state.callback_pending() {
                                    let _ = credentials::retire(&app.storage, &id).await;
                                }
                                state = t.state;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(request_id = %id, error = %e, "driver stopped"),
                    Ok(()) => {
                        tracing::info!(request_id = %id, status = ?state.status, "request ended")
                    }
                }
                // The callback goes out after the driver has answered, so a slow receiver does
                // not hold up a caller waiting for the result; the claim goes with it.
                if state.callback_pending() {
                    app.spawn_callback(_claim, id);
                }
                (state, result)
            }
            .instrument(span),
        )
    }

    /// Delivers an ended request's callback in the background, holding its claim.
    fn spawn_callback(self: &Arc<Self>, claim: Claim, id: RequestId) {
        let app = self.clone();
        self.drivers.spawn(async move {
            let _claim = claim;
            if let Err(e) = callback::deliver(&app.storage, &app.http, &app.holder(), &id).await {
                tracing::warn!(request_id = %id, error = %e, "callback delivery stopped; it will be resumed");
            }
        });
    }

    /// Takes the lease of a non-terminal request whose lease is free, and drives it.
    /// Returns what happened, for the resume route and the log.
    pub async fn resume(self: &Arc<Self>, id: &RequestId) -> Result<Resumed, DriveError> {
        let Some(claim) = self.claim(id) else {
            return Ok(Resumed::AlreadyDrivenHere);
        };
        let Some(mut t) = Tracked::load(self.storage.clone(), id, self.holder()).await? else {
            return Ok(Resumed::NoSuchRequest);
        };
        if t.state.callback_pending() {
            self.spawn_callback(claim, id.clone());
            return Ok(Resumed::Resumed);
        }
        if t.state.status.is_terminal() {
            credentials::retire(&self.storage, id).await?;
            return Ok(Resumed::Terminal(t.state.status));
        }
        if !t.lease_is_free(Utc::now()) {
            return Ok(Resumed::LeaseHeld(
                t.state.lease.map(|l| l.owner).unwrap_or_default(),
            ));
        }
        t.take_lease().await?;
        tracing::info!(request_id = %id, "resuming");
        self.spawn_driver(claim, t, None);
        Ok(Resumed::Resumed)
    }

    /// One pass over the active index: resume every request whose lease is free.
    pub async fn resume_pass(
        self: &Arc<Self>,
        orphans: &mut HashSet<String>,
    ) -> Result<usize, StorageError> {
        let mut resumed = 0;
        for key in self.storage.list_keys(keys::ACTIVE_PREFIX).await? {
            let Some(id) = key
                .strip_prefix(keys::ACTIVE_PREFIX)
                .and_then(|s| s.parse::<RequestId>().ok())
            else {
                continue;
            };
            match self.resume(&id).await {
                Ok(Resumed::Resumed) => resumed += 1,
                // A marker is written just before its state.json; one still alone a whole
                // pass later belongs to a submission that died in between.
                Ok(Resumed::NoSuchRequest) if !orphans.insert(key.clone()) => {
                    credentials::retire(&self.storage, &id).await?;
                    orphans.remove(&key);
                }
                Ok(_) | Err(DriveError::Superseded) => {}
                Err(e) => tracing::warn!(request_id = %id, error = %e, "could not resume"),
            }
        }
        Ok(resumed)
    }
}

/// A request this process drives (or is about to); dropping it lets the resumer see the
/// request again.
struct Claim {
    app: Arc<App>,
    id: RequestId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.app
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// What a resume attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    Resumed,
    AlreadyDrivenHere,
    NoSuchRequest,
    Terminal(RequestStatus),
    LeaseHeld(String),
}

/// Resumes requests at start and then every `resume_interval`, until shutdown.
pub fn spawn_resumer(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut orphans = HashSet::new();
        loop {
            match app.resume_pass(&mut orphans).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(resumed = n, "resumed requests"),
                Err(e) => tracing::warn!(error = %e, "resume pass failed"),
            }
            tokio::select! {
                () = app.shutdown.cancelled() => return,
                () = tokio::time::sleep(app.config.resume_interval) => {}
            }
        }
    })
}

/// The orchestrator's routes.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.config.body_limit;
    let routes = Router::new()
        .route("/", post(submit))
        .route("/requests", get(list_requests))
        .route("/requests/{id}", get(get_state))
        .route("/requests/{id}/result", get(get_result))
        .route("/requests/{id}/resume", post(resume))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text));
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
/// The comparison is of the two SHA-256 digests in constant time, so neither the token's
/// bytes nor its length show in the time an answer takes; the token is never logged.
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
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let digest = |s: &str| Sha256::digest(s.as_bytes());
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        digest(given).as_slice(),
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
    refused
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    refused
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

/// The body of `POST /`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    pub video_uri: String,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub profile: Option<Profile>,
    /// Where the result is POSTed when the request ends.
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// The longest query accepted.
pub const MAX_QUERY_LEN: usize = 1000;

/// The header that makes a submission idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Answer header saying an earlier submission with the same key is being answered.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The request id a submission names before it is made, if it names one: its
/// `Idempotency-Key`'s, else its gateway call's (`X-Call-Id`, which OpenFaaS's gateway sets on
/// every call and keeps when the caller sent one). Deriving the id makes the conditional
/// create of `state.json` the one atomic claim: of two submissions with the same key or call
/// id, on any replica, exactly one creates the request; the other answers with it. So a
/// queue worker's redelivery of one async call, or a caller resending a call whose answer
/// it lost with the same `X-Call-Id`, finds the request that call started.
fn named_id(headers: &HeaderMap) -> Result<Option<RequestId>, ApiError> {
    let printable = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
            .filter(|k| k.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .map(str::to_owned)
    };
    if headers.get_all(IDEMPOTENCY_KEY).iter().count() > 1 {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key is given more than once",
        ));
    }
    let (namespace, name) = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => {
            let key = printable(value).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"),
                )
            })?;
            (&b"fave idempotency key\0"[..], key)
        }
        // The gateway's header, not the caller's word: one that is not usable names nothing.
        None => match headers.get(CALL_ID).and_then(printable) {
            Some(call) => (&b"fave gateway call\0"[..], call),
            None => return Ok(None),
        },
    };
    let mut h = Sha256::new();
    h.update(namespace);
    h.update(name.as_bytes());
    let id = hex::encode(&h.finalize()[..16]);
    id.parse()
        .map(Some)
        .map_err(|e| ApiError::internal(format!("a derived request id is invalid: {e}")))
}

/// Whether the call is a queue worker's delivery of an `/async-function` call: OpenFaaS's
/// gateway queues the caller's headers with the call, `X-Callback-Url` among them, and the
/// queue worker POSTs whatever this call answers to that URL. Such a call is held for the
/// request's end, so that the callback carries the result rather than a 202.
fn delivered_by_queue_worker(headers: &HeaderMap) -> bool {
    headers.contains_key(QUEUED_CALLBACK_URL)
}

/// The header OpenFaaS's async path carries the caller's callback address in.
const QUEUED_CALLBACK_URL: &str = "x-callback-url";

/// Whether the caller sent `Prefer: respond-async`.
fn prefers_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split([',', ';'])
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

/// Answers a submission whose `Idempotency-Key` names an existing request: the same
/// submission gets that request's answer (waiting for its end within the sync window, as
/// the first call did); a different one is a conflict.
async fn replay(
    app: &App,
    existing: RequestState,
    submission: &Submission,
    window: Duration,
) -> Response {
    let id = existing.request_id.clone();
    if &existing.submission != submission {
        let mut response = ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            format!(
                "this Idempotency-Key (or gateway call id) was used for request {id}, with a \
                 different body"
            ),
        )
        .into_response();
        set_request_headers(&mut response, &id);
        return response;
    }
    let deadline = tokio::time::Instant::now() + window;
    let mut state = existing;
    while !state.status.is_terminal() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match load_state(app, &id).await {
            Ok(now) => state = now,
            Err(e) => return e.into_response(),
        }
    }
    let mut response = answer(app, &state)
        .await
        .unwrap_or_else(|e| e.into_response());
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

/// Checks a submission's fields before anything is fetched or written: the query's
/// length, the video URI (scheme, form, the SSRF guard's address check), the callback URL.
/// Pure and total, so the property tests can throw anything at it.
pub fn validate(body: SubmitBody, local_mode: bool) -> Result<(Submission, Source), ApiError> {
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
    let source = Source::parse(&body.video_uri, local_mode)?;
    if let Some(url) = &body.callback_url {
        callback::check(url, local_mode)?;
    }
    let submission = Submission {
        video_uri: body.video_uri,
        query,
        profile: body.profile.unwrap_or_default(),
        callback_url: body.callback_url,
        reach: Some(Reach::of_mode(local_mode)),
    };
    Ok((submission, source))
}

async fn submit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Response, ApiError> {
    if app.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "this replica is shutting down",
        ));
    }
    let idempotent = named_id(&headers)?;
    let (submission, source) = validate(body, app.config.local_mode)?;
    source.check_allowed(&app.config.s3_inputs, &app.config.s3.bucket)?;
    // state.json and every answer keep the URLs without their secrets; those are kept
    // apart until used.
    let (submission, kept) = credentials::split(submission);
    // A queue worker's delivery waits for the end (its answer is the callback's body);
    // `Prefer: respond-async` (RFC 7240) gets 202 as soon as the request is accepted.
    let window = if delivered_by_queue_worker(&headers) {
        app.config.async_hold
    } else if prefers_async(&headers) {
        Duration::ZERO
    } else {
        app.config.sync_window
    };
    if let Some(id) = &idempotent
        && let Some((existing, _)) = app
            .storage
            .get_json::<RequestState>(&RequestKeys::new(id).state())
            .await
            .map_err(ApiError::from)?
    {
        return Ok(replay(&app, existing, &submission, window).await);
    }
    // Nothing is written before the video is known to exist and be within limits.
    let (http, _) = app.http.for_reach(submission.reach);
    let fetched = input::fetch(&source, &app.storage, http, app.limits()).await?;

    let id = idempotent.clone().unwrap_or_else(RequestId::generate);
    // Claimed before anything is written, so the resumer cannot take the new request over
    // between its index marker and its driver. A claimed idempotent id is the same key
    // submitted twice at once to this replica: the first one creates it.
    let Some(claim) = app.claim(&id) else {
        return match idempotent {
            Some(_) => {
                Ok(replay(&app, wait_for_state(&app, &id).await?, &submission, window).await)
            }
            None => Err(ApiError::internal(format!(
                "request id {id} is already in use"
            ))),
        };
    };
    // Request-wide stages are recorded now; per-clip tasks once the clips are known.
    let stages = app
        .stages
        .iter()
        .filter(|s| s.fan_out == pipeline::FanOut::Once)
        .map(|s| {
            s.name
                .parse::<StageName>()
                .map(|name| StageState::new(name, s.function.as_str()))
                .map_err(|e| ApiError::internal(format!("the stage table is wrong: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let state = RequestState::new(id.clone(), submission.clone(), stages, Utc::now());
    // The index marker first: a crash between the two leaves a marker the resumer clears,
    // never a request the resumer cannot find.
    app.storage
        .put_json(&keys::active_marker(&id), &json!({}))
        .await
        .map_err(|e| recording_failed(&e))?;
    credentials::keep(&app.storage, &id, &kept)
        .await
        .map_err(|e| recording_failed(&e))?;
    let tracked = match Tracked::create(app.storage.clone(), state, app.holder()).await {
        Ok(tracked) => tracked,
        // Another replica created the request of this key first: answer with it.
        Err(DriveError::Superseded) if idempotent.is_some() => {
            drop(claim);
            return Ok(replay(&app, load_state(&app, &id).await?, &submission, window).await);
        }
        Err(e) => return Err(recording_failed(&e)),
    };
    tracing::info!(request_id = %id, "request accepted");
    app.metrics.accepted();

    // Accepted: from here the request runs to its end even if the caller goes away.
    let task = app.spawn_driver(claim, tracked, Some(fetched));
    match tokio::time::timeout(window, task).await {
        Ok(Ok((state, Ok(())))) => answer(&app, &state).await,
        Ok(Ok((state, Err(e)))) => Err(ApiError::unavailable(
            "driver_interrupted",
            format!(
                "request {} was accepted and is {:?}; it will be resumed: {e}",
                state.request_id, state.status
            ),
        )),
        Ok(Err(join)) => Err(ApiError::internal(format!(
            "request {id}: the driver panicked: {join}"
        ))),
        Err(_) => Ok(accepted(&id)),
    }
}

/// A request that another submission of this replica is creating: its `state.json`
/// appears within moments (or that submission failed, and so does this one).
async fn wait_for_state(app: &App, id: &RequestId) -> Result<RequestState, ApiError> {
    for _ in 0..100 {
        if let Some((state, _)) = app
            .storage
            .get_json::<RequestState>(&RequestKeys::new(id).state())
            .await
            .map_err(ApiError::from)?
        {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ApiError::unavailable(
        "submission_in_progress",
        format!("request {id} of this Idempotency-Key is still being created; try again"),
    ))
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

/// The request could not be recorded: nothing was accepted, and the client may try again.
fn recording_failed(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "could not record a request");
    ApiError::unavailable(
        "storage_unavailable",
        "the request could not be recorded: the store could not be reached or did not answer; try again",
    )
}

fn drive_error(e: DriveError) -> ApiError {
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
        DriveError::Illegal(e) => ApiError::internal(e.to_string()),
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

async fn read_result(app: &App, state: &RequestState) -> Result<Value, ApiError> {
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

/// The query of `GET /requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only requests in this status (`INIT`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`).
    #[serde(default)]
    pub status: Option<RequestStatus>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// The most requests one page holds, and the default.
pub const MAX_PAGE: usize = 200;
const DEFAULT_PAGE: usize = 50;
/// The most requests one call looks at while filtering by status.
const MAX_SCANNED: usize = 2000;

/// `GET /requests?status=…&limit=…&cursor=…`: requests in id order (creation order for the
/// ids fave makes; an `Idempotency-Key`'s id sorts by its hash), a page at a time.
/// `next_cursor` is set while more may follow; a filtered page can hold fewer than `limit`
/// requests and still have a cursor, when the scan budget ran out first.
async fn list_requests(
    State(app): State<Arc<App>>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::bad_request("invalid_query_string", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be within 1..={MAX_PAGE}"),
        ));
    }
    let mut after = match &q.cursor {
        Some(c) => Some(parse_id(c)?),
        None => None,
    };
    let mut found = Vec::new();
    let mut scanned = 0;
    let more = loop {
        // `requests/{id}0` sorts after every key of `requests/{id}/` and before the next id.
        let start_after = after
            .as_ref()
            .map(|id| format!("{}{id}0", keys::REQUESTS_PREFIX));
        let page = app
            .storage
            .list_page(
                keys::REQUESTS_PREFIX,
                Some("/"),
                start_after.as_deref(),
                limit - found.len(),
            )
            .await
            .map_err(ApiError::from)?;
        let ids: Vec<RequestId> = page
            .prefixes
            .iter()
            .filter_map(|p| keys::request_id_of(p))
            .collect();
        let states = futures::stream::iter(ids.iter().cloned())
            .map(|id| {
                let app = app.clone();
                async move { load_state(&app, &id).await.ok() }
            })
            .buffered(8)
            .collect::<Vec<_>>()
            .await;
        scanned += ids.len();
        for state in states.into_iter().flatten() {
            if q.status.is_none_or(|s| s == state.status) {
                found.push(summary(&state));
            }
        }
        after = ids.last().cloned().or(after);
        if !page.truncated || ids.is_empty() {
            break false;
        }
        if found.len() >= limit || scanned >= MAX_SCANNED {
            break true;
        }
    };
    Ok(Json(json!({
        "requests": found,
        "next_cursor": if more { after.map(|id| id.to_string()) } else { None },
    }))
    .into_response())
}

/// A request as a list shows it.
fn summary(state: &RequestState) -> Value {
    json!({
        "request_id": state.request_id,
        "status": state.status,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "video_uri": state.submission.video_uri,
        "query": state.submission.query,
        "profile": state.submission.profile,
        "error_code": state.failure.as_ref().map(|f| &f.error_code),
    })
}

async fn get_state(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<RequestState>, ApiError> {
    let id = parse_id(&id)?;
    load_state(&app, &id).await.map(Json)
}

fn conflict(
    id: &RequestId,
    status: RequestStatus,
    code: &'static str,
    message: String,
) -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({
            "error": {"code": code, "message": message, "retryable": !status.is_terminal()},
            "request_id": id,
            "status": status,
        })),
    )
        .into_response()
}

async fn get_result(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let state = load_state(&app, &id).await?;
    if state.status != RequestStatus::Completed {
        let message = format!("request {id} is {:?}", state.status);
        return Ok(conflict(&id, state.status, "not_completed", message));
    }
    Ok(Json(read_result(&app, &state).await?).into_response())
}

/// `POST /requests/{id}/resume`: drive a request whose driver is gone, now.
async fn resume(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match app.resume(&id).await.map_err(drive_error)? {
        Resumed::Resumed | Resumed::AlreadyDrivenHere => Ok(accepted(&id)),
        Resumed::NoSuchRequest => Err(ApiError::not_found(format!("no request {id}"))),
        Resumed::Terminal(status) => Ok(conflict(
            &id,
            status,
            "already_ended",
            format!("request {id} is {status:?}"),
        )),
        Resumed::LeaseHeld(owner) => Ok(conflict(
            &id,
            RequestStatus::Running,
            "lease_held",
            format!("request {id} is being driven by {owner}"),
        )),
    }
}

/// `POST /requests/{id}/cancel`: the request ends CANCELLED; its driver's next write loses
/// the race and stops, and stage answers that arrive later change nothing.
async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    for _ in 0..8 {
        let mut t = Tracked::load(app.storage.clone(), &id, app.holder())
            .await
            .map_err(drive_error)?
            .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
        if t.state.status.on(&RequestEvent::Cancel) == Transition::Ignored {
            let status = t.state.status;
            return Ok(conflict(
                &id,
                status,
                "already_ended",
                format!("request {id} is {status:?}"),
            ));
        }
        let now = Utc::now();
        t.state
            .abandon_in_flight("the request was cancelled", now)
            .and_then(|()| t.state.apply(RequestEvent::Cancel, now))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match t.commit().await {
            Ok(()) => {
                // With a callback due, the marker stays and the resumer delivers it.
                if !t.state.callback_pending() {
                    credentials::retire(&app.storage, &id)
                        .await
                        .map_err(ApiError::from)?;
                }
                tracing::info!(request_id = %id, "request cancelled");
                return Ok(
                    Json(json!({"request_id": id, "status": t.state.status})).into_response()
                );
            }
            // The driver wrote meanwhile: read again and retry.
            Err(DriveError::Superseded) => continue,
            Err(e) => return Err(drive_error(e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        "the request kept changing; try again",
    ))
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
        let app = router(App::new(config).await);
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
