//! The routes about requests that exist: the list, one request's state and result, and
//! resuming or cancelling it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fave_common::contract::api::{Cancelled, RequestPage, RequestSummary};
use fave_common::error::ApiError;
use fave_common::ids::RequestId;
use fave_common::keys;
use fave_common::state::{RequestEvent, RequestState, RequestStatus, Transition};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{accepted, conflict, drive_error, load_state, parse_id, read_result};
use crate::App;
use crate::record::{self, DriveError, Ending, Tracked};
use crate::runtime::Resumed;

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

/// The most requests one call looks at while filtering by status.
const MAX_SCANNED: usize = 2000;

/// `GET /requests?status=…&limit=…&cursor=…`: requests in id order (creation order for the
/// ids fave makes; an `Idempotency-Key`'s id sorts by its hash), a page at a time.
/// `next_cursor` is set while more may follow; a filtered page can hold fewer than `limit`
/// requests and still have a cursor, when the scan budget ran out first.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = super::list_query(query)?;
    Ok(Json(page(&app, &q).await?).into_response())
}

/// One page of the requests `q` asks for: `GET /requests` and the web page's list.
pub(crate) async fn page(app: &Arc<App>, q: &ListQuery) -> Result<RequestPage, ApiError> {
    let limit = super::page_limit(q.limit)?;
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
    Ok(RequestPage {
        requests: found,
        next_cursor: if more {
            after.map(|id| id.to_string())
        } else {
            None
        },
    })
}

/// A request as a list shows it.
fn summary(state: &RequestState) -> RequestSummary {
    RequestSummary {
        request_id: state.request_id.clone(),
        status: state.status,
        created_at: state.created_at,
        updated_at: state.updated_at,
        video_uri: state.submission.video_uri.clone(),
        query: state.submission.query.clone(),
        profile: state.submission.profile,
        error_code: state.failure.as_ref().map(|f| f.error_code.clone()),
    }
}

pub(super) async fn state(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<RequestState>, ApiError> {
    let id = parse_id(&id)?;
    load_state(&app, &id).await.map(Json)
}

pub(super) async fn result(
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
pub(super) async fn resume(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
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
pub(super) async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    for _ in 0..8 {
        let t = Tracked::load(app.storage.clone(), &id, app.holder())
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
        let t = Arc::new(Mutex::new(t));
        match record::end(&t, Ending::Cancelled).await {
            Ok(()) => {
                tracing::info!(request_id = %id, "request cancelled");
                let status = t.lock().await.state.status;
                return Ok(Json(Cancelled {
                    request_id: id,
                    status,
                })
                .into_response());
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
