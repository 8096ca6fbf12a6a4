//! The web page, served by the orchestrator itself under `/ui/` (behind a cluster's gateway,
//! `/function/orchestrator/ui/`): the requests, one request whole (its timeline, each clip's
//! video and frames with the detections drawn over them, what was said, the answer), the
//! video library and a search over it.
//!
//! Server-rendered HTML ([`pages`]) that reads without JavaScript; one small script
//! (`assets/fave.js`) refreshes a page while something on it runs. Every asset is compiled
//! into the binary, nothing is fetched from elsewhere. Media are streamed from the store
//! ([`media`]), only the keys a request's page shows ([`view`]). With an API token
//! configured, the pages require it too (`api::require_token`: HTTP Basic, any user name,
//! the token as the password, so a browser asks for it).

mod media;
mod pages;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fave_common::contract::library::QueryBody;
use fave_common::error::ApiError;
use maud::{Markup, html};
use serde::Deserialize;

use crate::App;
use crate::api::requests::ListQuery as RequestsQuery;
use crate::api::videos::ListQuery as VideosQuery;

pub use view::Views;

/// The page's routes, `/ui` and under it.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(to_index))
        .route("/ui/", get(requests))
        .route("/ui/requests/{id}", get(request))
        .route("/ui/requests/{id}/media/{*key}", get(media::media))
        .route("/ui/videos", get(videos))
        .route("/ui/search", get(search))
        .route("/ui/assets/{name}", get(asset))
}

/// `/ui` itself: on to `/ui/`, relative, so it works under any prefix.
async fn to_index() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "ui/")]).into_response()
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

async fn requests(
    State(app): State<Arc<App>>,
    query: QueryResult<RequestsQuery>,
) -> Result<Markup, ApiError> {
    let q = crate::api::list_query(query)?;
    let page = crate::api::requests::page(&app, &q).await?;
    Ok(pages::requests(&page, q.status, q.limit))
}

/// Where `?clip=…&t=…` opens a clip's video.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct At {
    clip: Option<String>,
    t: Option<f64>,
}

async fn request(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: QueryResult<At>,
) -> Result<Markup, ApiError> {
    let at = crate::api::list_query(query)?;
    let id = crate::api::parse_id(&id)?;
    let view = app.views.get(&app.storage, &id).await?;
    let at = match (&at.clip, at.t) {
        (Some(clip), Some(t)) if t.is_finite() => Some((clip.as_str(), t)),
        _ => None,
    };
    Ok(pages::request(&view, at))
}

async fn videos(
    State(app): State<Arc<App>>,
    query: QueryResult<VideosQuery>,
) -> Result<Markup, ApiError> {
    let q = crate::api::list_query(query)?;
    if app.library.is_none() {
        return Ok(library_off());
    }
    let page = crate::api::videos::page(&app, &q).await?;
    Ok(pages::videos(&page))
}

fn library_off() -> Markup {
    pages::layout(
        "",
        "Videos",
        html! { h1 { "Videos" } p.empty { "This orchestrator keeps no video library (FAVE_LIBRARY=false)." } },
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    video: Option<String>,
}

/// How many moments the search page shows.
const SHOWN: u64 = 24;

/// `/ui/search?q=…&video=…`: the library's answer (`POST /query`'s), each moment with the
/// frame that shows it best.
async fn search(
    State(app): State<Arc<App>>,
    query: QueryResult<SearchQuery>,
) -> Result<Response, ApiError> {
    let q = crate::api::list_query(query)?;
    let Some(library) = &app.library else {
        return Ok(library_off().into_response());
    };
    let text = q.q.trim();
    if text.is_empty() {
        return Ok(pages::search("", q.video.as_deref(), pages::Searched::Nothing).into_response());
    }
    let body = QueryBody {
        query: text.to_owned(),
        videos: q.video.iter().cloned().collect(),
        limit: Some(SHOWN),
    };
    let model = app.model.get().await;
    let answer = match library
        .query(&app.storage, &body, crate::embed::reader(&model))
        .await
    {
        Ok(answer) => answer,
        // A query the API refuses (too long, an unknown video) is said on the page.
        Err(e) if e.status.is_client_error() => {
            let page = pages::search(text, q.video.as_deref(), pages::Searched::Refused(&e));
            return Ok((e.status, page).into_response());
        }
        Err(e) => return Err(e),
    };
    // One view per analysing request, however many of its clips were found.
    let mut views = std::collections::HashMap::new();
    for m in &answer.moments {
        if !views.contains_key(&m.request_id) {
            let view = app.views.get(&app.storage, &m.request_id).await.ok();
            views.insert(m.request_id.clone(), view);
        }
    }
    let found: Vec<pages::Found<'_>> = answer
        .moments
        .iter()
        .map(|m| pages::Found {
            found: m,
            frame: views
                .get(&m.request_id)
                .and_then(Option::as_ref)
                .and_then(|v| {
                    v.clips
                        .iter()
                        .find(|c| c.report.clip.as_str() == m.moment.clip)
                })
                .and_then(|clip| pages::best_frame(clip, &m.moment.matched)),
        })
        .collect();
    Ok(pages::search(
        text,
        q.video.as_deref(),
        pages::Searched::Found(&answer, &found),
    )
    .into_response())
}

/// The stylesheet and the script, compiled in.
async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (body, kind) = match name.as_str() {
        "fave.css" => (include_str!("assets/fave.css"), "text/css; charset=utf-8"),
        "fave.js" => (
            include_str!("assets/fave.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return Err(ApiError::not_found(format!("no asset {name}"))),
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(response)
}
