//! `POST /`: a submission validated, its video fetched (nothing is written before the video
//! is known to exist and be within limits), the request recorded and its driver started;
//! the answer waits for the end within the sync window, or is a 202 with a status URL.
//! An `Idempotency-Key` (or the gateway's call id) names the request, so the same
//! submission twice is one request.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use fave_common::error::{ApiError, JsonBody};
use fave_common::gateway::CALL_ID;
use fave_common::ids::RequestId;
use fave_common::keys::RequestKeys;
use fave_common::state::{Reach, RequestState, StageState, Submission};
use sha2::{Digest, Sha256};

use super::{accepted, answer, load_state, recording_failed, set_request_headers};
use crate::input::{self, Source};
use crate::record::{self, DriveError, Tracked};
use crate::{App, callback, credentials};

pub use fave_common::contract::api::SubmitBody;

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
pub(super) fn named_id(headers: &HeaderMap) -> Result<Option<RequestId>, ApiError> {
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
pub(super) fn delivered_by_queue_worker(headers: &HeaderMap) -> bool {
    headers.contains_key(QUEUED_CALLBACK_URL)
}

/// The header OpenFaaS's async path carries the caller's callback address in.
const QUEUED_CALLBACK_URL: &str = "x-callback-url";

/// Whether the caller sent `Prefer: respond-async`.
pub(super) fn prefers_async(headers: &HeaderMap) -> bool {
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
        fresh: body.fresh,
    };
    Ok((submission, source))
}

pub(super) async fn submit(
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
    let (once, _) = app.table.scopes();
    let stages = once
        .iter()
        .map(|s| StageState::new(s.name.clone(), s.function.as_str()))
        .collect();
    let state = RequestState::new(id.clone(), submission.clone(), stages, Utc::now());
    record::enter_index(&app.storage, &id)
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
