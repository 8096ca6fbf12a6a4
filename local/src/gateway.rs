//! The OpenFaaS-compatible gateway: the same HTTP contract as OpenFaaS's gateway, in front of
//! the functions the [`Supervisor`] runs.
//!
//! - `ANY /function/{name}[/{path}][?query]` (also `{name}.openfaas-fn`) forwards method,
//!   sub-path, query, headers and body, streamed both ways, to a healthy replica (in turn
//!   when there are several), and adds `X-Call-Id`, `X-Start-Time` (Unix nanoseconds) and
//!   `X-Duration-Seconds` as OpenFaaS does. A function at zero replicas is started first
//!   and the call waits until it is healthy (OpenFaaS's `scale_from_zero`); such a call's
//!   answer carries `X-Fave-Gateway-Wait: <ms waited>` (the gateway's view; the cold start
//!   fave records is the one the function itself reports, `X-Fave-Cold-Start`).
//! - `ANY /async-function/{name}[/{path}][?query]` answers `202` with `X-Call-Id` at once and
//!   makes the same call in the background, as OpenFaaS's queue worker (nats-queue-worker)
//!   does: a POST with the caller's headers (`X-Callback-Url` and `X-Call-Id` among them) and
//!   `User-Agent: openfaas-ce/nats-queue-worker`; when it ends, its answer is POSTed to the
//!   caller's `X-Callback-Url`, if any, with `X-Call-Id`, `X-Function-Status`,
//!   `X-Function-Name` and `X-Duration-Seconds`. Delivery is at least once, as there: a call
//!   still unanswered after the ack wait (`ack_wait`, 30 s) is delivered again beside it,
//!   with the same call id, up to [`MAX_DELIVERIES`] in all, each calling back.
//! - `/system/*` ([`system`]): functions, scaling, info, behind basic auth when configured.
//! - `GET /healthz`, always open.
//!
//! Errors the gateway makes itself carry `X-OpenFaaS-Internal: gateway`, which tells a
//! caller that the function never answered: unknown function → 404; no healthy process in
//! time → 503 (`scale_from_zero_timeout` after a start from zero, else `no_endpoints`);
//! the process refused the connection → 502; no answer in time → 504.

mod system;

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
use futures::StreamExt;
use tracing::Instrument;

use crate::auth::BasicAuth;
use crate::supervisor::{Call, Function, Supervisor};

/// On an answer that waited for a start from zero: how long the gateway held it, in
/// milliseconds.
pub const GATEWAY_WAIT_HEADER: &str = "x-fave-gateway-wait";

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// How long a call waits for a healthy process (start from zero, restart after a
    /// crash) before it fails with 503.
    pub ready_timeout: Duration,
    /// How long a function may take to answer (OpenFaaS's `upstream_timeout`).
    pub upstream_timeout: Duration,
    /// Credentials every `/system/*` call must carry; `None` leaves them open.
    pub basic_auth: Option<BasicAuth>,
    /// How long an asynchronous call may go unanswered before it is delivered again (the
    /// queue worker's `ack_wait`: NATS redelivers a message whose ack is late).
    pub ack_wait: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(15 * 60),
            basic_auth: None,
            ack_wait: Duration::from_secs(30),
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
    match &options.basic_auth {
        Some(auth) => tracing::info!(user = %auth.user, "basic auth required on /system/*"),
        None => tracing::warn!(
            "basic auth is off: /system/* is open (set the basic-auth-user and \
             basic-auth-password secrets, or FAVE_GATEWAY_USER / FAVE_GATEWAY_PASSWORD)"
        ),
    }
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
        .merge(system::routes(state.clone()))
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

/// The largest body the gateway forwards by its declared length (fave's functions take
/// small JSON; the largest, a stage call, is under 1 MiB).
const MAX_BODY: u64 = 64 * 1024 * 1024;

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
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_ASYNC_BODY).await else {
        return internal(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("an asynchronous call's body is limited to {MAX_ASYNC_BODY} bytes"),
        ));
    };
    let mut headers = parts.headers;
    if let Ok(v) = HeaderValue::from_str(&call_id) {
        headers.insert(CALL_ID, v);
    }
    headers.insert(
        axum::http::header::USER_AGENT,
        HeaderValue::from_static(QUEUE_WORKER_AGENT),
    );
    let queued = Queued {
        name,
        uri: parts.uri,
        headers,
        body,
        callback,
        call_id: call_id.clone(),
    };
    tokio::spawn(queued.deliver(g));
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

/// The `User-Agent` OpenFaaS's queue worker sets on the calls it delivers.
const QUEUE_WORKER_AGENT: &str = "openfaas-ce/nats-queue-worker";

/// The most times one asynchronous call is delivered.
pub const MAX_DELIVERIES: usize = 3;

/// An asynchronous call, as the queue holds it.
struct Queued {
    name: String,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: bytes::Bytes,
    callback: Option<reqwest::Url>,
    call_id: String,
}

impl Queued {
    /// Delivers the call, and again beside it each time `ack_wait` passes with no delivery
    /// answered (at most [`MAX_DELIVERIES`] in all); every delivery calls back when it ends.
    async fn deliver(self, g: Arc<Gateway>) {
        let queued = Arc::new(self);
        let mut deliveries = tokio::task::JoinSet::new();
        let spawn = |deliveries: &mut tokio::task::JoinSet<()>| {
            let (g, q) = (g.clone(), queued.clone());
            deliveries.spawn(async move { q.deliver_once(g).await });
        };
        spawn(&mut deliveries);
        loop {
            tokio::select! {
                _ = deliveries.join_next() => break,
                () = tokio::time::sleep(g.options.ack_wait), if deliveries.len() < MAX_DELIVERIES => {
                    tracing::info!(function = %queued.name, call_id = %queued.call_id, "no ack within ack_wait: delivering again");
                    spawn(&mut deliveries);
                }
            }
        }
        // The others run to their end and call back too, as a redelivered message does.
        while deliveries.join_next().await.is_some() {}
    }

    async fn deliver_once(&self, g: Arc<Gateway>) {
        let started = Instant::now();
        let mut request = Request::post(self.uri.clone());
        if let Some(h) = request.headers_mut() {
            h.extend(self.headers.clone());
        }
        let Ok(request) = request.body(Body::from(self.body.clone())) else {
            return;
        };
        let answer = forward(g.clone(), &self.name, request).await;
        let Some(url) = self.callback.clone() else {
            return;
        };
        let status = answer.status();
        let content_type = answer
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .cloned();
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let (name, id) = (&self.name, &self.call_id);
        let mut post = g
            .http
            .post(url)
            .header(CALL_ID, id)
            .header("x-function-status", status.as_u16())
            .header("x-function-name", name)
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
    }
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
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        // Refused before it is forwarded: a proxy cannot relay a function's early answer
        // while the caller is still sending, and no fave function takes such a body.
        let response = internal(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the gateway forwards bodies of at most {MAX_BODY} bytes"),
        ));
        return with_call_headers(response, &call_id, start_nanos, started);
    }
    function.count_invocation();
    let span = tracing::info_span!("invoke", function = name, call_id = %call_id);
    let response = async {
        match function.call(g.options.ready_timeout).await {
            Ok(call) => {
                let cold_wait = call.cold_wait();
                let mut response =
                    send_upstream(&g, &function, call, req, &call_id, start_nanos).await;
                if let Some(wait) = cold_wait {
                    tracing::info!(
                        waited_ms = wait.as_millis() as u64,
                        "call waited for a start from zero"
                    );
                    response.headers_mut().insert(
                        HeaderName::from_static(GATEWAY_WAIT_HEADER),
                        HeaderValue::from(wait.as_millis() as u64),
                    );
                }
                response
            }
            Err(e) if e.from_zero => internal(ApiError::unavailable(
                "scale_from_zero_timeout",
                format!(
                    "{name} was scaled from zero but no replica was healthy within {:?}",
                    g.options.ready_timeout
                ),
            )),
            Err(_) => internal(ApiError::unavailable(
                "no_endpoints",
                format!("No endpoints available for: {name}."),
            )),
        }
    }
    .instrument(span)
    .await;
    with_call_headers(response, &call_id, start_nanos, started)
}

/// Forwards the call to the replica `call` holds. The answer's body keeps `call`, so the
/// replica counts as busy (not drained, not idle) until the body has been sent.
async fn send_upstream(
    g: &Gateway,
    function: &Function,
    call: Call,
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
    let url = format!("http://127.0.0.1:{}/{path}{query}", call.port());
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
    // The caller's body, with its read errors marked as the caller's, to tell them from the
    // function's side of the exchange.
    let body = reqwest::Body::wrap_stream(
        req.into_body()
            .into_data_stream()
            .map(|chunk| chunk.map_err(|e| CallerBodyError(e.to_string()))),
    );
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
            let body = answer.bytes_stream().map(move |chunk| {
                let _held = &call;
                chunk
            });
            response
                .body(Body::from_stream(body))
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
        // The caller's own body broke off or was malformed (bad chunking) while it was
        // being forwarded: the caller's fault, said as such, not the function's.
        Err(e) if caused_by_caller_body(&e) => internal(ApiError::bad_request(
            "malformed_body",
            "the request body could not be read (malformed chunked encoding, or cut short)",
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

/// A read error of the caller's request body.
#[derive(Debug)]
struct CallerBodyError(String);

impl std::fmt::Display for CallerBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reading the caller's body: {}", self.0)
    }
}

impl std::error::Error for CallerBodyError {}

fn caused_by_caller_body(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<CallerBodyError>() {
            return true;
        }
        source = err.source();
    }
    false
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
