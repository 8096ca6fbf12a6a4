//! The OpenFaaS-compatible gateway: the same HTTP contract as OpenFaaS's gateway, in front of
//! the functions the [`Supervisor`] runs.
//!
//! - `ANY /function/{name}[/{path}][?query]` (also `{name}.openfaas-fn`) forwards method,
//!   sub-path, query, headers and body, streamed both ways, and adds `X-Call-Id`,
//!   `X-Start-Time` (Unix nanoseconds) and `X-Duration-Seconds` as OpenFaaS does.
//! - `ANY /async-function/{name}[/{path}][?query]` answers `202` with `X-Call-Id` at once and
//!   makes the same call in the background; when it ends, its answer is POSTed to the
//!   caller's `X-Callback-Url`, if any, with `X-Call-Id`, `X-Function-Status`,
//!   `X-Function-Name` and `X-Duration-Seconds`, as OpenFaaS's queue worker does.
//! - `GET /system/functions`, `GET /system/function/{name}`, `GET /healthz`.
//!
//! Errors the gateway makes itself carry `X-OpenFaaS-Internal: gateway`, which tells a
//! caller that the function never answered: unknown function → 404; no healthy process in
//! time → 503; the process refused the connection → 502; no answer in time → 504.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use fave_common::error::ApiError;
use fave_common::gateway::{CALL_ID, OPENFAAS_INTERNAL};
use serde_json::json;
use tracing::Instrument;

use crate::supervisor::{Function, Supervisor};

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// How long a call waits for a healthy process (cold start, restart after a crash).
    pub ready_timeout: Duration,
    /// How long a function may take to answer (OpenFaaS's `upstream_timeout`).
    pub upstream_timeout: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(15 * 60),
        }
    }
}

struct Gateway {
    supervisor: Arc<Supervisor>,
    http: reqwest::Client,
    options: GatewayOptions,
}

/// The gateway's routes.
pub fn router(supervisor: Arc<Supervisor>, options: GatewayOptions) -> Router {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        // Functions are on loopback; a proxy from the environment must not get in between.
        .no_proxy()
        .build()
        .expect("a client with a connect timeout and no proxy always builds");
    let state = Arc::new(Gateway {
        supervisor,
        http,
        options,
    });
    Router::new()
        .route("/function/{name}", any(invoke_root))
        .route("/function/{name}/", any(invoke_root))
        .route("/function/{name}/{*path}", any(invoke_path))
        .route("/async-function/{name}", any(enqueue_root))
        .route("/async-function/{name}/", any(enqueue_root))
        .route("/async-function/{name}/{*path}", any(enqueue_path))
        .route("/system/functions", get(list_functions))
        .route("/system/function/{name}", get(get_function))
        .route("/healthz", get(|| async { "OK" }))
        .fallback(|| async { internal(ApiError::not_found("no such route")) })
        .with_state(state)
}

/// `name` or `name.openfaas-fn`, OpenFaaS's default function namespace.
fn function_name(raw: &str) -> &str {
    raw.strip_suffix(".openfaas-fn").unwrap_or(raw)
}

async fn invoke_root(
    State(g): State<Arc<Gateway>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    forward(g, &name, req).await
}

async fn invoke_path(
    State(g): State<Arc<Gateway>>,
    Path((name, _)): Path<(String, String)>,
    req: Request,
) -> Response {
    forward(g, &name, req).await
}

async fn enqueue_root(
    State(g): State<Arc<Gateway>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    enqueue(g, &name, req).await
}

async fn enqueue_path(
    State(g): State<Arc<Gateway>>,
    Path((name, _)): Path<(String, String)>,
    req: Request,
) -> Response {
    enqueue(g, &name, req).await
}

/// The largest body an asynchronous call may carry: it is held until the call is made.
const MAX_ASYNC_BODY: usize = 16 * 1024 * 1024;

/// `/async-function/{name}`: accept the call, make it in the background, and POST its
/// answer to `X-Callback-Url`.
async fn enqueue(g: Arc<Gateway>, raw_name: &str, req: Request) -> Response {
    let name = function_name(raw_name).to_owned();
    if g.supervisor.get(&name).is_none() {
        return internal(ApiError::not_found(format!(
            "error finding function {name}"
        )));
    }
    let callback = match req.headers().get(CALLBACK_URL) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|u| reqwest::Url::parse(u).ok()) {
            Some(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            _ => {
                return internal(ApiError::bad_request(
                    "invalid_callback_url",
                    "X-Callback-Url must be an http(s) URL",
                ));
            }
        },
    };
    let call_id = call_id_of(req.headers());
    let (mut parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_ASYNC_BODY).await else {
        return internal(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("an asynchronous call's body is limited to {MAX_ASYNC_BODY} bytes"),
        ));
    };
    if let Ok(v) = HeaderValue::from_str(&call_id) {
        parts.headers.insert(CALL_ID, v);
    }
    let queued = Request::from_parts(parts, Body::from(body));
    let worker = g.clone();
    let id = call_id.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let answer = forward(worker.clone(), &name, queued).await;
        let Some(url) = callback else { return };
        let status = answer.status();
        let content_type = answer
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .cloned();
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let mut post = worker
            .http
            .post(url)
            .header(CALL_ID, &id)
            .header("x-function-status", status.as_u16())
            .header("x-function-name", &name)
            .header(
                "x-duration-seconds",
                format!("{:.6}", started.elapsed().as_secs_f64()),
            )
            .timeout(Duration::from_secs(30))
            .body(body);
        if let Some(ct) = content_type {
            post = post.header(axum::http::header::CONTENT_TYPE, ct);
        }
        match post.send().await {
            Ok(r) => {
                tracing::info!(function = %name, call_id = %id, status = r.status().as_u16(), "callback delivered")
            }
            Err(e) => {
                tracing::warn!(function = %name, call_id = %id, error = %e, "callback failed")
            }
        }
    });
    let start_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    with_call_headers(
        StatusCode::ACCEPTED.into_response(),
        &call_id,
        start_nanos,
        Instant::now(),
    )
}

/// The caller's `X-Call-Id` if it sent a sensible one, else a new one.
fn call_id_of(headers: &HeaderMap) -> String {
    headers
        .get(CALL_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The part of the request's path after `/function/{name}` (or `/async-function/{name}`),
/// exactly as the caller sent it: still percent-encoded, so `%2F` or `..%2F` reach the
/// function as they were and are the function's to judge, not turned into real path
/// segments here.
fn raw_sub_path(uri: &axum::http::Uri) -> &str {
    let path = uri.path();
    let after = path
        .strip_prefix("/function/")
        .or_else(|| path.strip_prefix("/async-function/"))
        .unwrap_or("");
    match after.find('/') {
        Some(i) => &after[i + 1..],
        None => "",
    }
}

/// Marks an error as the gateway's own.
fn internal(err: ApiError) -> Response {
    let mut response = err.into_response();
    response
        .headers_mut()
        .insert(OPENFAAS_INTERNAL, HeaderValue::from_static("gateway"));
    response
}

/// Where the answer of an asynchronous call is POSTed.
const CALLBACK_URL: &str = "x-callback-url";

/// Headers that belong to one hop and are not forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "host" {
            to.append(name.clone(), value.clone());
        }
    }
}

async fn forward(g: Arc<Gateway>, raw_name: &str, req: Request) -> Response {
    let name = function_name(raw_name);
    let call_id = call_id_of(req.headers());
    let start_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let started = Instant::now();
    let Some(function) = g.supervisor.get(name).cloned() else {
        let response = internal(ApiError::not_found(format!(
            "error finding function {name}"
        )));
        return with_call_headers(response, &call_id, start_nanos, started);
    };
    function.count_invocation();
    let span = tracing::info_span!("invoke", function = name, call_id = %call_id);
    let response = async {
        match function.wait_ready(g.options.ready_timeout).await {
            Some(port) => send_upstream(&g, &function, port, req, &call_id, start_nanos).await,
            None => internal(ApiError::unavailable(
                "no_endpoints",
                format!("No endpoints available for: {name}."),
            )),
        }
    }
    .instrument(span)
    .await;
    with_call_headers(response, &call_id, start_nanos, started)
}

async fn send_upstream(
    g: &Gateway,
    function: &Function,
    port: u16,
    req: Request,
    call_id: &str,
    start_nanos: u128,
) -> Response {
    let name = &function.name;
    let path = raw_sub_path(req.uri());
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("http://127.0.0.1:{port}/{path}{query}");
    let method = req.method().clone();
    let mut headers = HeaderMap::new();
    copy_headers(req.headers(), &mut headers);
    headers.insert(
        HeaderName::from_static("x-call-id"),
        HeaderValue::from_str(call_id).unwrap_or(HeaderValue::from_static("invalid")),
    );
    headers.insert(
        HeaderName::from_static("x-start-time"),
        HeaderValue::from(start_nanos as u64),
    );
    let body = reqwest::Body::wrap_stream(req.into_body().into_data_stream());
    let upstream = g
        .http
        .request(method, url)
        .headers(headers)
        .body(body)
        .timeout(g.options.upstream_timeout)
        .send()
        .await;
    match upstream {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            if let Some(h) = response.headers_mut() {
                copy_headers(answer.headers(), h);
            }
            response
                .body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|e| internal(ApiError::internal(e.to_string())))
        }
        Err(e) if e.is_timeout() => internal(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!(
                "{name} did not answer within {:?}",
                g.options.upstream_timeout
            ),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "upstream request failed");
            internal(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("Can't reach service for: {name}."),
            ))
        }
    }
}

fn with_call_headers(
    mut response: Response,
    call_id: &str,
    start_nanos: u128,
    started: Instant,
) -> Response {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(call_id) {
        h.insert(HeaderName::from_static("x-call-id"), v);
    }
    h.insert(
        HeaderName::from_static("x-start-time"),
        HeaderValue::from(start_nanos as u64),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", started.elapsed().as_secs_f64())) {
        h.insert(HeaderName::from_static("x-duration-seconds"), v);
    }
    response
}

/// A function as OpenFaaS's `/system/functions` describes it.
fn describe(f: &Function) -> serde_json::Value {
    json!({
        "name": f.name,
        "image": f.spec.image,
        "namespace": "openfaas-fn",
        "invocationCount": f.invocations(),
        "replicas": f.replicas.len(),
        "availableReplicas": f.available(),
        "envProcess": f.name,
        "envVars": f.spec.environment,
        "labels": f.spec.labels,
        "annotations": f.spec.annotations,
        "secrets": f.spec.secrets,
    })
}

async fn list_functions(State(g): State<Arc<Gateway>>) -> Response {
    let all: Vec<_> = g.supervisor.functions().map(|f| describe(f)).collect();
    axum::Json(all).into_response()
}

async fn get_function(State(g): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    match g.supervisor.get(function_name(&name)) {
        Some(f) => axum::Json(describe(f)).into_response(),
        None => internal(ApiError::not_found(format!("function {name} not found"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_encoded() {
        let sub = |u: &str| raw_sub_path(&u.parse().unwrap()).to_owned();
        assert_eq!(sub("/function/f"), "");
        assert_eq!(sub("/function/f/"), "");
        assert_eq!(sub("/function/f/a/b?x=1"), "a/b");
        assert_eq!(
            sub("/function/f.openfaas-fn/requests/..%2F..%2Fetc"),
            "requests/..%2F..%2Fetc"
        );
    }
}
