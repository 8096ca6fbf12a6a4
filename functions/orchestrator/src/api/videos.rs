//! The library's routes: `POST /query` (moments across the library), `GET /videos` (the
//! library, a page at a time), `GET /videos/{id}`, `DELETE /videos/{id}` and
//! `POST /videos/rebuild` (the library made again from the requests' outputs). The work is
//! `crate::library`'s.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fave_common::contract::library::{QueryBody, VideoPage, VideoSummary};
use fave_common::error::{ApiError, JsonBody};
use fave_common::ids::VideoId;
use fave_common::keys;
use futures::StreamExt;
use serde::Deserialize;

use crate::App;
use crate::library::{Library, parse_video};

/// The library, or 409 when this orchestrator runs without one.
pub(crate) fn library(app: &App) -> Result<&Library, ApiError> {
    app.library.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "library_off",
            "this orchestrator keeps no video library (FAVE_LIBRARY=false, or the no-op pipeline)",
        )
    })
}

/// `POST /query` `{"query": "...", "videos": [ids], "limit": n}`.
pub(super) async fn query(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<QueryBody>,
) -> Result<Response, ApiError> {
    let library = library(&app)?;
    let model = app.model.get().await;
    let meaning = crate::embed::reader(&model);
    let answer = library.query(&app.storage, &body, meaning).await?;
    Ok(Json(answer).into_response())
}

/// The query of `GET /videos`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page: the last video of it.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `GET /videos?limit=…&cursor=…`: the videos with a published analysis, in id order, a
/// page at a time; one listing call and one small read per video.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = super::list_query(query)?;
    Ok(Json(page(&app, &q).await?).into_response())
}

/// One page of the library: `GET /videos` and the web page's list.
pub(crate) async fn page(app: &Arc<App>, q: &ListQuery) -> Result<VideoPage, ApiError> {
    library(app)?;
    let limit = super::page_limit(q.limit)?;
    let after = q.cursor.as_deref().map(parse_video).transpose()?;
    // `index/library/{video}/g` sorts after every analysis of the video (hex digits) and
    // before the next video.
    let start_after = after.map(|v| format!("{}{v}/g", keys::LIBRARY_PREFIX));
    let page = app
        .storage
        .list_page(
            keys::LIBRARY_PREFIX,
            Some("/"),
            start_after.as_deref(),
            limit,
        )
        .await?;
    let videos: Vec<VideoId> = page
        .prefixes
        .iter()
        .filter_map(|p| {
            p.strip_prefix(keys::LIBRARY_PREFIX)?
                .trim_end_matches('/')
                .parse()
                .ok()
        })
        .collect();
    let summaries = futures::stream::iter(videos.iter().cloned())
        .map(|video| {
            let app = app.clone();
            async move { summary(&app, video).await }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(VideoPage {
        videos: summaries,
        next_cursor: if page.truncated {
            videos.last().map(ToString::to_string)
        } else {
            None
        },
    })
}

async fn summary(app: &App, video: VideoId) -> Result<VideoSummary, ApiError> {
    let analyses = crate::library::analyses_of(&app.storage, &video).await?;
    let record = crate::library::record_of(&app.storage, &video).await?;
    Ok(VideoSummary {
        video,
        analyses,
        bytes: record.as_ref().map(|r| r.bytes),
        uri: record.as_ref().and_then(|r| r.uris.last().cloned()),
        first_seen: record.as_ref().map(|r| r.first_seen),
        last_seen: record.as_ref().map(|r| r.last_seen),
    })
}

/// `GET /videos/{id}`.
pub(super) async fn detail(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let video = parse_video(&id)?;
    let detail = library(&app)?.detail(&app.storage, &video).await?;
    Ok(Json(detail).into_response())
}

/// `POST /videos/rebuild`: the library made again from the requests' outputs.
pub(super) async fn rebuild(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let library = library(&app)?;
    let model = app.model.get().await;
    let meaning = crate::embed::reader(&model);
    let rebuilt = library.rebuild(&app.storage, meaning).await?;
    Ok(Json(rebuilt).into_response())
}

/// `DELETE /videos/{id}`.
pub(super) async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let video = parse_video(&id)?;
    let deleted = library(&app)?.delete(&app.storage, &video).await?;
    Ok(Json(deleted).into_response())
}
