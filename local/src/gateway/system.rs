//! The gateway's `/system/*` routes, the provider API OpenFaaS's gateway exposes:
//!
//! - `GET /system/functions`, `GET /system/function/{name}`: each function as OpenFaaS's
//!   `FunctionStatus` (`replicas` is the count asked for, `availableReplicas` the healthy
//!   ones), plus fave's own `processStarts`, `coldStartMs` (spawn → healthy of each process,
//!   latest last), `minReplicas`, `maxReplicas`.
//! - `POST /system/scale-function/{name}` with faas-provider's `ScaleServiceRequest`
//!   (`{"serviceName", "replicas", "namespace"?}`): sets the replica count, clamped to the
//!   function's `com.openfaas.scale.max` (0 allowed), and answers `202` at once, as
//!   faas-netes does; replicas start in the background.
//! - `GET /system/info`: provider and version.
//!
//! With credentials configured, every `/system/*` path (unknown ones too) needs them:
//! otherwise `401` with `WWW-Authenticate: Basic realm="OpenFaaS"` and the JSON error shape.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use fave_common::error::ApiError;
use serde::Deserialize;
use serde_json::json;

use super::{Gateway, function_name, internal};
use crate::supervisor::Function;

pub(super) fn routes(state: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/system/functions", get(list_functions))
        .route("/system/function/{name}", get(get_function))
        .route("/system/scale-function/{name}", post(scale_function))
        .route("/system/info", get(info))
        .route(
            "/system/{*rest}",
            any(|| async { internal(ApiError::not_found("no such route")) }),
        )
        .layer(middleware::from_fn_with_state(state, require_auth))
}

/// Lets a `/system/*` call through only with the configured credentials, if any.
async fn require_auth(State(g): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let Some(auth) = &g.options.basic_auth else {
        return next.run(req).await;
    };
    let presented = req.headers().get(header::AUTHORIZATION);
    if auth.accepts(presented.map(HeaderValue::as_bytes)) {
        return next.run(req).await;
    }
    // Which of the two, never what was sent.
    let reason = if presented.is_some() {
        "wrong credentials"
    } else {
        "no credentials"
    };
    tracing::warn!(path = %req.uri().path(), reason, "rejected a /system call");
    let mut response = internal(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "invalid credentials",
    ));
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"OpenFaaS\""),
    );
    response
}

/// A function as OpenFaaS's `FunctionStatus` describes it, with fave's start figures.
fn describe(f: &Function) -> serde_json::Value {
    let cold_start_ms: Vec<f64> = f
        .cold_starts()
        .iter()
        .map(|c| (c.spawn_to_healthy.as_secs_f64() * 1e4).round() / 10.0)
        .collect();
    json!({
        "name": f.name,
        "image": f.spec.image,
        "namespace": "openfaas-fn",
        "invocationCount": f.invocations(),
        "replicas": f.desired(),
        "availableReplicas": f.available(),
        "envProcess": f.name,
        "envVars": f.spec.environment,
        "labels": f.spec.labels,
        "annotations": f.spec.annotations,
        "secrets": f.spec.secrets,
        "minReplicas": f.policy.min,
        "maxReplicas": f.policy.max,
        "processStarts": f.starts(),
        "coldStartMs": cold_start_ms,
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

/// faas-provider's `ScaleServiceRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaleServiceRequest {
    #[serde(default)]
    service_name: String,
    replicas: u64,
    #[serde(default)]
    #[allow(dead_code)]
    namespace: Option<String>,
}

async fn scale_function(
    State(g): State<Arc<Gateway>>,
    Path(raw_name): Path<String>,
    body: Bytes,
) -> Response {
    let name = function_name(&raw_name);
    let request: ScaleServiceRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return internal(ApiError::bad_request(
                "invalid_scale_request",
                format!("expected {{\"serviceName\": string, \"replicas\": integer ≥ 0}}: {e}"),
            ));
        }
    };
    let body_name = function_name(&request.service_name);
    if !body_name.is_empty() && body_name != name {
        return internal(ApiError::bad_request(
            "invalid_scale_request",
            format!("serviceName {body_name:?} does not match the path's {name:?}"),
        ));
    }
    let requested = usize::try_from(request.replicas).unwrap_or(usize::MAX);
    match g.supervisor.scale(name, requested) {
        Ok(set) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "serviceName": name,
                "replicas": set,
                "requestedReplicas": request.replicas,
            })),
        )
            .into_response(),
        Err(e) => internal(ApiError::not_found(e.to_string())),
    }
}

/// OpenFaaS's `/system/info`: which provider, which version.
async fn info() -> Response {
    let version = json!({ "release": env!("CARGO_PKG_VERSION"), "sha": "" });
    axum::Json(json!({
        "provider": {
            "provider": "fave-local",
            "orchestration": "process",
            "version": version,
        },
        "version": version,
        "arch": std::env::consts::ARCH,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use fave_common::secrets::Secret;
    use tower::ServiceExt;

    use crate::auth::BasicAuth;
    use crate::gateway::{GatewayOptions, router};
    use crate::stack_file::StackFile;
    use crate::supervisor::{Supervisor, SupervisorOptions};

    /// A stack of `never-healthy` functions at zero replicas: a script that starts and
    /// sleeps without ever answering `/healthz`.
    async fn supervisor(bin_dir: &std::path::Path, labels: &str) -> Supervisor {
        let script = bin_dir.join("never-healthy");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stack = StackFile::parse(&format!(
            "provider: {{name: openfaas}}\nfunctions:\n  never-healthy:\n    labels: {labels}\n"
        ))
        .unwrap();
        Supervisor::start(
            &stack,
            SupervisorOptions {
                bin_dir: bin_dir.to_path_buf(),
                extra_env: BTreeMap::new(),
                log_dir: None,
                health_timeout: Duration::from_secs(5),
                replicas: BTreeMap::new(),
            },
        )
        .await
        .unwrap()
    }

    async fn send(app: &axum::Router, req: Request<Body>) -> (u16, axum::http::HeaderMap, String) {
        let response = app.clone().oneshot(req).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn get(uri: &str, authorization: Option<&str>) -> Request<Body> {
        let mut req = Request::get(uri);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn system_routes_need_the_credentials_and_the_rest_stays_open() {
        let bin = tempfile::tempdir().unwrap();
        let sup = supervisor(bin.path(), "{com.openfaas.scale.min: '0'}").await;
        let options = GatewayOptions {
            basic_auth: Some(BasicAuth::new("admin", Secret::new("pa55-w0rd"))),
            ..GatewayOptions::default()
        };
        let app = router(std::sync::Arc::new(sup), options);
        // "admin:pa55-w0rd" and "admin:wrong"
        let right = "Basic YWRtaW46cGE1NS13MHJk";
        let wrong = "Basic YWRtaW46d3Jvbmc=";
        for uri in [
            "/system/functions",
            "/system/function/never-healthy",
            "/system/info",
            "/system/no-such-route",
        ] {
            for auth in [None, Some(wrong)] {
                let (status, headers, body) = send(&app, get(uri, auth)).await;
                assert_eq!(status, 401, "{uri} {auth:?}");
                assert_eq!(headers["www-authenticate"], "Basic realm=\"OpenFaaS\"");
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(body["error"]["code"], "unauthorized");
                assert!(!body.to_string().contains("pa55-w0rd"));
            }
        }
        let scale = |auth: Option<&str>| {
            let mut req = Request::post("/system/scale-function/never-healthy");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.body(Body::from(
                r#"{"serviceName":"never-healthy","replicas":0}"#,
            ))
            .unwrap()
        };
        assert_eq!(send(&app, scale(None)).await.0, 401);
        assert_eq!(send(&app, scale(Some(wrong))).await.0, 401);
        assert_eq!(send(&app, scale(Some(right))).await.0, 202);
        let (status, _, body) = send(&app, get("/system/functions", Some(right))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(send(&app, get("/system/info", Some(right))).await.0, 200);
        let (status, _, _) = send(&app, get("/system/no-such-route", Some(right))).await;
        assert_eq!(status, 404);
        // Open routes: health, and functions (an unknown one is the gateway's 404, not 401).
        assert_eq!(send(&app, get("/healthz", None)).await.0, 200);
        assert_eq!(send(&app, get("/function/unknown", None)).await.0, 404);
        assert_eq!(
            send(&app, get("/async-function/unknown", None)).await.0,
            404
        );
    }

    #[tokio::test]
    async fn scale_requests_are_checked_and_clamped() {
        let bin = tempfile::tempdir().unwrap();
        let sup = supervisor(
            bin.path(),
            "{com.openfaas.scale.min: '0', com.openfaas.scale.max: '2'}",
        )
        .await;
        let app = router(std::sync::Arc::new(sup), GatewayOptions::default());
        let scale = |uri: &str, body: &str| {
            Request::post(uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap()
        };
        let uri = "/system/scale-function/never-healthy";
        for bad in [
            "",
            "{",
            r#"{"serviceName":"never-healthy"}"#,
            r#"{"serviceName":"never-healthy","replicas":-1}"#,
            r#"{"serviceName":"never-healthy","replicas":"2"}"#,
            r#"{"serviceName":"other","replicas":1}"#,
        ] {
            let (status, headers, body) = send(&app, scale(uri, bad)).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(headers.contains_key("x-openfaas-internal"));
        }
        let (status, _, body) = send(
            &app,
            scale("/system/scale-function/nope", r#"{"replicas":1}"#),
        )
        .await;
        assert_eq!(status, 404, "{body}");
        let (status, _, body) = send(
            &app,
            scale(
                "/system/scale-function/never-healthy.openfaas-fn",
                r#"{"serviceName":"never-healthy","replicas":50}"#,
            ),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["replicas"], 2, "clamped to the max");
        let (_, _, one) = send(&app, get("/system/function/never-healthy", None)).await;
        let one: serde_json::Value = serde_json::from_str(&one).unwrap();
        assert_eq!(
            (one["replicas"].as_u64(), one["maxReplicas"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(one["availableReplicas"], 0, "never healthy");
        let (status, _, _) = send(
            &app,
            scale(uri, r#"{"serviceName":"never-healthy","replicas":0}"#),
        )
        .await;
        assert_eq!(status, 202);
    }

    #[tokio::test]
    async fn a_start_from_zero_that_never_gets_healthy_is_a_json_503() {
        let bin = tempfile::tempdir().unwrap();
        let sup =
            std::sync::Arc::new(supervisor(bin.path(), "{com.openfaas.scale.min: '0'}").await);
        let options = GatewayOptions {
            ready_timeout: Duration::from_millis(300),
            ..GatewayOptions::default()
        };
        let app = router(sup.clone(), options);
        let function = sup.get("never-healthy").unwrap().clone();
        assert_eq!((function.desired(), function.starts()), (0, 0));
        let (status, headers, body) = send(&app, get("/function/never-healthy", None)).await;
        assert_eq!(status, 503, "{body}");
        assert!(headers.contains_key("x-openfaas-internal"));
        assert!(!headers.contains_key("x-fave-gateway-wait"));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "scale_from_zero_timeout");
        assert_eq!(body["error"]["retryable"], true);
        // It was scaled up and a process started; the call did not wait longer than asked.
        assert_eq!(function.desired(), 1);
        assert!(function.starts() >= 1);
        assert!(function.pid().is_some());
    }
}
