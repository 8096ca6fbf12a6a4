//! The page's media: a clip's video or a frame, streamed from the store as it is read (never
//! held whole), with HTTP range requests so a browser's video element can seek. Only keys
//! the request's page shows are served ([`RequestView::shows`](super::view::RequestView)):
//! the key in the URL is looked up, never trusted as a path.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fave_common::error::ApiError;
use tokio_util::io::ReaderStream;

use crate::App;

/// `GET /ui/requests/{id}/media/{key}`.
pub(super) async fn media(
    State(app): State<Arc<App>>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = crate::api::parse_id(&id)?;
    let view = app.views.get(&app.storage, &id).await?;
    let not_shown = || ApiError::not_found(format!("request {id}'s page shows no object {key}"));
    if !view.shows(&key) {
        return Err(not_shown());
    }
    let size = app.storage.size(&key).await?.ok_or_else(not_shown)?;
    // A `Range` that does not parse is ignored, as RFC 9110 says; one that parses but lies
    // outside the object is a 416.
    let wanted = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| http_range_header::parse_range_header(v).ok())
        .map(|r| r.validate(size));
    let range = match wanted {
        // One range is answered with it; several (rare, from no browser's video element)
        // with the whole object, as RFC 9110 allows.
        Some(Ok(ranges)) if ranges.len() == 1 => Some(ranges[0].clone()),
        Some(Ok(_)) | None => None,
        Some(Err(_)) => {
            let mut refused = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the object is {size} bytes long"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                refused.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(refused);
        }
    };
    let opened = app
        .storage
        .open(&key, range.clone())
        .await?
        .ok_or_else(not_shown)?;
    let mut response = Response::new(Body::from_stream(ReaderStream::new(
        opened.body.into_async_read(),
    )));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&key)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(opened.length));
    // A key's bytes never change (a request's outputs are written once).
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    if let Some(r) = range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start(), r.end())) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// What the page's media are, by their keys' endings.
fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("mp4") => "video/mp4",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}
