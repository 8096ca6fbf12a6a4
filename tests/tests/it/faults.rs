//! Transient faults between the orchestrator and the gateway: a fault-injecting proxy (a
//! test fixture, named as such) answers some calls with 502/503/429, a 500 of garbage, an
//! intermediary's HTML page as a 200, or an answer cut short (mid-body, or whole-looking
//! with a matching length), and forwards the rest to the real gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fave_common::state::{RequestStatus, StageStatus};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::util::{TestStack, file_uri, sample, wait_for_states};

/// Which calls the proxy breaks.
#[derive(Clone, Copy)]
enum Plan {
    /// Every `n`th call to any function, cycling through the kinds of fault; never the
    /// retry of a call it just broke, so a fault costs exactly one retry whatever the
    /// interleaving of concurrent requests.
    EveryNth(u64),
    /// Every call for the stage stage-ffmpeg-0 (not the other stage its function serves)
    /// gets a 503 in fave's error shape, retryable: the function's own answer.
    AlwaysFailStage,
    /// The same calls get a bare 503, as a gateway or a proxy answers: the platform's.
    AlwaysFailStagePlatform,
    /// Every `n`th call is delivered twice at once, as an at-least-once queue may deliver
    /// it; the first answer goes back.
    Duplicate(u64),
    /// Every call forwarded, on a connection of its own (`Connection: close`), so that
    /// while the proxy is down ([`FaultProxy::outage`]) every call meets a refused connect,
    /// as during a gateway's restart.
    Clean,
}

struct FaultProxy {
    upstream: OnceCell<String>,
    plan: Plan,
    calls: AtomicU64,
    faults: AtomicU64,
    /// Idempotency keys of calls broken and not yet retried.
    broken: std::sync::Mutex<std::collections::HashSet<String>>,
    http: reqwest::Client,
    /// Where the proxy listens, what it serves, and the task serving it while it is up.
    addr: OnceCell<std::net::SocketAddr>,
    app: OnceCell<axum::Router>,
    serving: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FaultProxy {
    /// Serves the proxy on its address.
    async fn come_up(&self) {
        let addr = *self.addr.get().expect("bound once");
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.expect("the proxy's port is free again");
        let app = self.app.get().expect("set once").clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *self.serving.lock().expect("not poisoned") = Some(task);
    }

    /// The gateway down for `length`: the listener closed, every connect refused, then up
    /// again on the same address.
    async fn outage(&self, length: Duration) {
        let serving = self.serving.lock().expect("not poisoned").take();
        if let Some(task) = serving {
            task.abort();
            let _ = task.await;
        }
        tokio::time::sleep(length).await;
        self.come_up().await;
    }
}

async fn proxy(State(p): State<Arc<FaultProxy>>, req: Request) -> Response {
    let n = p.calls.fetch_add(1, Ordering::Relaxed) + 1;
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let call = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let key = call["idempotency_key"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    let fault = match p.plan {
        Plan::EveryNth(k) => {
            let mut broken = p.broken.lock().expect("not poisoned");
            if broken.remove(&key) || n % k != 0 {
                None
            } else {
                broken.insert(key);
                Some(EVERY_NTH_KINDS[((n / k) % EVERY_NTH_KINDS.len() as u64) as usize])
            }
        }
        Plan::Duplicate(k) if n % k == 0 => {
            p.faults.fetch_add(1, Ordering::Relaxed);
            let (first, _second) =
                tokio::join!(forward(&p, &parts, body.clone()), forward(&p, &parts, body));
            return match first {
                Ok((status, whole)) => (status, whole).into_response(),
                Err(failed) => failed,
            };
        }
        Plan::Duplicate(_) | Plan::Clean => None,
        Plan::AlwaysFailStage | Plan::AlwaysFailStagePlatform => {
            let own = matches!(p.plan, Plan::AlwaysFailStage);
            (path.starts_with("/function/stage-ffmpeg-0") && call["stage"] == "stage-ffmpeg-0")
                .then_some(if own { 4 } else { 1 })
        }
    };
    if let Some(kind) = fault {
        p.faults.fetch_add(1, Ordering::Relaxed);
        return match kind {
            0 => (StatusCode::BAD_GATEWAY, "injected fault").into_response(),
            1 => (StatusCode::SERVICE_UNAVAILABLE, "injected fault").into_response(),
            2 => (StatusCode::TOO_MANY_REQUESTS, "injected fault").into_response(),
            4 => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": {"code": "model_loading",
                    "message": "injected fault", "retryable": true}})),
            )
                .into_response(),
            // A 500 that is nobody's error shape: garbage, control characters included.
            5 => (
                StatusCode::INTERNAL_SERVER_ERROR,
                b"\x1b[31m<html>\x00\x01 upstream exploded \xff\xfe".repeat(40),
            )
                .into_response(),
            // An intermediary's page instead of the function's answer.
            6 => (
                StatusCode::OK,
                [("content-type", "text/html")],
                "<html><body><h1>Scheduled maintenance</h1></body></html>",
            )
                .into_response(),
            // The real answer, cut in half, with a length that matches the cut: nothing
            // at the HTTP level says it is short. The stage's work is done and its
            // manifest stored, so the retry is answered from it.
            7 => match forward(&p, &parts, body).await {
                Ok((status, whole)) => {
                    let half = whole.slice(..whole.len() / 2);
                    (status, half).into_response()
                }
                Err(failed) => failed,
            },
            // A 200 whose body breaks off: the connection dropped mid-answer.
            _ => {
                let broken = futures::stream::iter([
                    Ok(bytes::Bytes::from_static(b"{\"stage\":")),
                    Err(std::io::Error::other("injected: connection dropped")),
                ]);
                Response::new(Body::from_stream(broken))
            }
        };
    }
    let upstream = p.upstream.get().cloned().unwrap_or_default();
    let url = format!("{}{}", upstream.trim_end_matches('/'), parts.uri);
    let method = parts.method.clone();
    match p
        .http
        .request(method, url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status();
            let mut response = Response::builder().status(status);
            for (k, v) in r.headers() {
                response = response.header(k, v);
            }
            if matches!(p.plan, Plan::Clean) {
                response = response.header("connection", "close");
            }
            let bytes = r.bytes().await.unwrap_or_default();
            response
                .body(Body::from(bytes))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// The kinds of fault [`Plan::EveryNth`] cycles through: 502, 503, 429 (0–2), an answer
/// broken off mid-body (3), a 500 of garbage (5), an HTML 200 (6), an answer cut short with
/// a matching length (7).
const EVERY_NTH_KINDS: [u8; 7] = [0, 1, 2, 3, 5, 6, 7];

/// Forwards a call to the gateway; its status and whole body.
async fn forward(
    p: &FaultProxy,
    parts: &axum::http::request::Parts,
    body: bytes::Bytes,
) -> Result<(StatusCode, bytes::Bytes), Response> {
    let upstream = p.upstream.get().cloned().unwrap_or_default();
    let url = format!("{}{}", upstream.trim_end_matches('/'), parts.uri);
    let answer = p
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY.into_response())?;
    let status = answer.status();
    let whole = answer
        .bytes()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY.into_response())?;
    Ok((status, whole))
}

/// Submits bikes.mp4 `n` times at once, each analysed afresh (the faults are in the stage
/// calls, so every request makes them), waiting for each answer: status and body.
async fn submit_bikes(t: &TestStack, n: usize) -> Vec<(u16, String)> {
    let uri = file_uri(&sample("bikes.mp4"));
    let posts: Vec<_> = (0..n)
        .map(|_| {
            let (http, url, uri) = (t.http.clone(), t.url("orchestrator", ""), uri.clone());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .json(&json!({ "video_uri": uri, "fresh": true }))
                    .send()
                    .await
                    .expect("answers");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for post in posts {
        answers.push(post.await.expect("runs"));
    }
    answers
}

/// Starts the proxy, then a stack whose orchestrator calls the gateway through it.
async fn stack_behind_fault_proxy(plan: Plan) -> (TestStack, Arc<FaultProxy>) {
    stack_behind_fault_proxy_with(plan, &[]).await
}

async fn stack_behind_fault_proxy_with(
    plan: Plan,
    env: &[(&str, &str)],
) -> (TestStack, Arc<FaultProxy>) {
    let proxy_state = Arc::new(FaultProxy {
        upstream: OnceCell::new(),
        plan,
        calls: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        broken: std::sync::Mutex::default(),
        http: reqwest::Client::new(),
        addr: OnceCell::new(),
        app: OnceCell::new(),
        serving: std::sync::Mutex::default(),
    });
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = free.local_addr().expect("an address");
    drop(free);
    let proxy_url = format!("http://{addr}");
    let app = axum::Router::new()
        .fallback(proxy)
        .with_state(proxy_state.clone());
    proxy_state.addr.set(addr).expect("set once");
    proxy_state.app.set(app).expect("set once");
    proxy_state.come_up().await;
    let mut env = env.to_vec();
    env.push(("GATEWAY_URL", &proxy_url));
    let t = TestStack::start_with(&env).await;
    proxy_state
        .upstream
        .set(t.stack.gateway_url.to_string())
        .expect("set once");
    (t, proxy_state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_one_call_in_five_failing_transiently_still_completes_every_request() {
    let (t, proxy) = stack_behind_fault_proxy(Plan::EveryNth(5)).await;
    for (status, body) in submit_bikes(&t, 6).await {
        assert_eq!(status, 200, "{body}\n{}", t.logs());
    }
    let states = wait_for_states(t.store(), 60, |s| {
        s.len() == 6 && s.iter().all(|s| s.status.is_terminal())
    })
    .await;
    let retries: usize = states
        .iter()
        .flat_map(|s| s.tasks())
        .map(|task| task.attempts.len() - 1)
        .sum();
    let (calls, faults) = (
        proxy.calls.load(Ordering::Relaxed),
        proxy.faults.load(Ordering::Relaxed),
    );
    eprintln!("faults: {faults} of {calls} stage calls failed; {retries} retries; all 6 completed");
    assert!(faults >= 1, "the proxy injected nothing");
    assert_eq!(retries as u64, faults, "every fault cost exactly one retry");
    for s in &states {
        assert_eq!(s.status, RequestStatus::Completed);
        let attempts = s.tasks().flat_map(|task| &task.attempts);
        for failed in attempts.filter(|a| a.failure.is_some()) {
            let code = &failed.failure.as_ref().expect("checked").error_code;
            assert!(
                [
                    "http_502",
                    "http_503",
                    "http_429",
                    "http_500",
                    "gateway_unreachable",
                    "bad_stage_answer"
                ]
                .contains(&code.as_str()),
                "{code}"
            );
            // What is kept of a fault is short and printable, whatever came back.
            let detail = &failed.failure.as_ref().expect("checked").error_detail;
            assert!(
                detail.chars().count() < 400 && !detail.chars().any(char::is_control),
                "{detail:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_stage_that_always_fails_exhausts_its_budget_and_fails_the_request() {
    let (t, proxy) = stack_behind_fault_proxy(Plan::AlwaysFailStage).await;
    let started = std::time::Instant::now();
    let (status, _, body) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bikes.mp4")) }))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("model_loading")),
        "{body}"
    );
    let states = wait_for_states(t.store(), 10, |s| s.len() == 1).await;
    let s = &states[0];
    assert_eq!(s.status, RequestStatus::Failed);
    let failure = s.failure.as_ref().expect("recorded");
    assert_eq!(failure.error_code, "model_loading");
    assert!(
        failure.error_detail.starts_with("stage-ffmpeg-0: "),
        "{}",
        failure.error_detail
    );
    let stage = &s.stages[0];
    assert_eq!(stage.status, StageStatus::Failed);
    // The default policy: four attempts, backoff 0.2 s doubling with jitter, capped at 5 s.
    assert_eq!(stage.attempts.len(), 4);
    assert_eq!(proxy.faults.load(Ordering::Relaxed), 4);
    assert!(stage.attempts.iter().all(|a| a.http_status == Some(503)));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the budget bounds the time: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_the_platform_failing_a_stage_is_retried_for_its_window_not_a_count() {
    // A bare 503, as a gateway answers while a function scales up: retried for
    // FAVE_PLATFORM_RETRY_SECS (8 s here: with the backoff's worst jitter, at least five
    // attempts), past the four attempts of the stage's own budget, then the request fails.
    let (t, proxy) = stack_behind_fault_proxy_with(
        Plan::AlwaysFailStagePlatform,
        &[("FAVE_PLATFORM_RETRY_SECS", "8")],
    )
    .await;
    let started = std::time::Instant::now();
    let (status, _, body) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bikes.mp4")) }))
        .await;
    let took = started.elapsed();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("http_503")),
        "{body}"
    );
    let states = wait_for_states(t.store(), 10, |s| s.len() == 1).await;
    let stage = &states[0].stages[0];
    assert_eq!(stage.status, StageStatus::Failed);
    let attempts = stage.attempts.len();
    eprintln!("a platform 503 on every call: {attempts} attempts in {took:?}");
    assert!(attempts > 4, "more than the count budget: {attempts}");
    assert_eq!(proxy.faults.load(Ordering::Relaxed), attempts as u64);
    assert!(
        took >= Duration::from_secs(3),
        "retried for the window: {took:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "and not much past it: {took:?}"
    );
}

/// How often each idempotency key's work began, by the stage functions' own logs.
fn executions(t: &TestStack) -> std::collections::BTreeMap<String, usize> {
    crate::util::log_count(t, "stage work started")
}

/// How often each idempotency key's work ended failing (its store writes failed, its claim
/// could not be kept), by the stage functions' own logs.
fn failed_runs(t: &TestStack) -> std::collections::BTreeMap<String, usize> {
    crate::util::log_count(t, "stage work ended failing")
}

/// A delivery duplicated, both copies at once (an at-least-once queue, a retrying proxy):
/// the second waits for the first's work through its claim, and no stage's work runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_duplicated_delivery_runs_the_stage_once() {
    let (t, proxy) = stack_behind_fault_proxy(Plan::Duplicate(3)).await;
    for (status, body) in submit_bikes(&t, 3).await {
        assert_eq!(status, 200, "{body}\n{}", t.logs());
    }
    let states = wait_for_states(t.store(), 60, |s| {
        s.len() == 3 && s.iter().all(|s| s.status.is_terminal())
    })
    .await;
    assert!(states.iter().all(|s| s.status == RequestStatus::Completed));
    let duplicated = proxy.faults.load(Ordering::Relaxed);
    let runs = executions(&t);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "{duplicated} calls delivered twice; {} works begun; {} begun more than once",
        runs.len(),
        twice.len()
    );
    assert!(duplicated >= 5, "the proxy duplicated {duplicated} calls");
    let succeeded = states
        .iter()
        .flat_map(|s| s.tasks())
        .filter(|task| task.status == StageStatus::Succeeded)
        .count();
    assert_eq!(runs.len(), succeeded, "every task's work began");
    let shown: Vec<_> = twice
        .iter()
        .map(|(key, _)| crate::util::log_lines_naming(&t, key))
        .collect();
    assert!(
        twice.is_empty(),
        "work begun twice: {twice:?}\n{}",
        shown.join("\n")
    );
}

/// The gateway down for a while (`FAVE_OUTAGE_SECS`, default 5; the soak runs 60) while
/// requests run, as during a gateway pod's restart or a rolling update: every stage call
/// meets a refused connection, is retried within the platform window, and every request
/// completes, each stage's work begun once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_the_gateway_down_for_seconds_costs_retries_only() {
    let length: u64 = std::env::var("FAVE_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (t, proxy) = stack_behind_fault_proxy(Plan::Clean).await;
    let uri = file_uri(&sample("bikes.mp4"));
    let mut posts = Vec::new();
    for _ in 0..3 {
        let (http, url, uri) = (t.http.clone(), t.url("orchestrator", ""), uri.clone());
        posts.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("prefer", "respond-async")
                .json(&json!({ "video_uri": uri, "fresh": true }))
                .send()
                .await
                .expect("answers");
            r.status().as_u16()
        }));
    }
    for post in posts {
        assert_eq!(post.await.expect("runs"), 202);
    }
    t.wait_for_running_stage().await;
    let clock = std::time::Instant::now();
    proxy.outage(Duration::from_secs(length)).await;
    eprintln!("the gateway was down for {:?}", clock.elapsed());
    let states = wait_for_states(t.store(), 120 + length, |s| {
        s.len() == 3 && s.iter().all(|s| s.status.is_terminal())
    })
    .await;
    let refused = states
        .iter()
        .flat_map(|s| s.tasks())
        .flat_map(|task| &task.attempts)
        .filter(|a| {
            a.failure
                .as_ref()
                .is_some_and(|f| f.error_code == "gateway_unreachable")
        })
        .count();
    let runs = executions(&t);
    let twice = runs.values().filter(|n| **n > 1).count();
    eprintln!(
        "gateway down {length} s: {} of 3 completed, {refused} attempts refused, {twice} works begun twice",
        states
            .iter()
            .filter(|s| s.status == RequestStatus::Completed)
            .count()
    );
    for s in &states {
        assert_eq!(s.status, RequestStatus::Completed, "{:?}", s.failure);
    }
    assert!(refused >= 1, "the outage met no call");
    assert_eq!(twice, 0, "work begun twice: {runs:?}");
}

/// How the store in front of a [`StoreProxy`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreMode {
    Up,
    /// Connections refused: the listener closed, the connections it held dropped.
    Refusing,
    /// Connections accepted and held, nothing forwarded either way: a store that hangs.
    BlackHole,
}

/// A TCP proxy in front of the store, for every function (a test fixture): it forwards, or
/// plays an outage of one kind or the other.
struct StoreProxy {
    addr: std::net::SocketAddr,
    upstream: OnceCell<std::net::SocketAddr>,
    mode: tokio::sync::watch::Sender<StoreMode>,
    serving: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StoreProxy {
    async fn start() -> Arc<Self> {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = free.local_addr().expect("an address");
        drop(free);
        let proxy = Arc::new(Self {
            addr,
            upstream: OnceCell::new(),
            mode: tokio::sync::watch::channel(StoreMode::Up).0,
            serving: std::sync::Mutex::default(),
        });
        proxy.listen().await;
        proxy
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn listen(self: &Arc<Self>) {
        let mut bound = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = bound.expect("the proxy's port is free again");
        let proxy = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(proxy.clone().relay(socket));
            }
        });
        *self.serving.lock().expect("not poisoned") = Some(task);
    }

    async fn relay(self: Arc<Self>, mut socket: tokio::net::TcpStream) {
        let mut mode = self.mode.subscribe();
        if *mode.borrow() != StoreMode::Up {
            // Held, unanswered, until the store is back; then dropped.
            let _ = mode.wait_for(|m| *m == StoreMode::Up).await;
            return;
        }
        let upstream = loop {
            if let Some(a) = self.upstream.get() {
                break *a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Ok(mut store) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let outage = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut socket, &mut store) => None,
            changed = mode.wait_for(|m| *m != StoreMode::Up) => changed.ok().map(|m| *m),
        };
        if outage == Some(StoreMode::BlackHole) {
            // Nothing forwarded any more; the connection hangs until the store is back.
            let _ = mode.wait_for(|m| *m == StoreMode::Up).await;
        }
    }

    /// The store away for `length`, as `kind` says, then back.
    async fn outage(self: &Arc<Self>, kind: StoreMode, length: Duration) {
        if kind == StoreMode::Refusing {
            let serving = self.serving.lock().expect("not poisoned").take();
            if let Some(task) = serving {
                task.abort();
                let _ = task.await;
            }
        }
        self.mode.send_replace(kind);
        tokio::time::sleep(length).await;
        self.mode.send_replace(StoreMode::Up);
        if kind == StoreMode::Refusing {
            self.listen().await;
        }
    }
}

/// Three requests, and the store away for a while (`FAVE_STORE_OUTAGE_SECS`, default 10;
/// the soak runs 60) as `kind` says, for every function: every request completes, no stage's
/// work begins twice, nothing stays in the active index, and `/readyz` says so meanwhile.
async fn store_outage(kind: StoreMode) {
    let length: u64 = std::env::var("FAVE_STORE_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let proxy = StoreProxy::start().await;
    let url = proxy.url();
    let t = TestStack::start_with(&[
        ("AWS_ENDPOINT_URL", &url),
        ("FAVE_S3_READ_TIMEOUT_SECS", "3"),
    ])
    .await;
    let store = t.stack.s3.endpoint.as_ref().expect("a store endpoint");
    let upstream = format!(
        "{}:{}",
        store.host_str().expect("a host"),
        store.port_or_known_default().expect("a port")
    );
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .expect("resolves")
        .next()
        .expect("an address");
    proxy.upstream.set(upstream).expect("set once");
    let uri = file_uri(&sample("bikes.mp4"));
    for _ in 0..3 {
        let r = t
            .http
            .post(t.url("orchestrator", ""))
            .header("prefer", "respond-async")
            .json(&json!({ "video_uri": uri, "fresh": true }))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 202);
    }
    t.wait_for_running_stage().await;
    let away = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.outage(kind, Duration::from_secs(length)).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _, during) = t.get("/readyz").await;
    assert_eq!(
        (status, during["error"]["code"].as_str()),
        (503, Some("storage_unavailable")),
        "{during}"
    );
    away.await.expect("the outage ends");
    let clock = std::time::Instant::now();
    let states = wait_for_states(t.store(), 240, |s| {
        s.len() == 3 && s.iter().all(|s| s.status.is_terminal())
    })
    .await;
    let (status, _, after) = t.get("/readyz").await;
    assert_eq!(status, 200, "{after}");
    // A run whose store writes failed in the outage is done again, as it must be; a run
    // begun while another lived, never: every start past the first follows a failed run.
    let (runs, failed) = (executions(&t), failed_runs(&t));
    let again: usize = runs.values().map(|n| n - 1).sum();
    let overlapping: Vec<_> = runs
        .iter()
        .filter(|(key, n)| **n > 1 + failed.get(*key).copied().unwrap_or(0))
        .collect();
    let completed = states
        .iter()
        .filter(|s| s.status == RequestStatus::Completed)
        .count();
    eprintln!(
        "store {kind:?} for {length} s: {completed} of 3 completed, {:?} after it came back, {again} works begun again after a failed run, {} begun while another lived",
        clock.elapsed(),
        overlapping.len()
    );
    for s in &states {
        assert_eq!(
            s.status,
            RequestStatus::Completed,
            "{:?}\n{}",
            s.failure,
            t.logs()
        );
    }
    assert!(
        overlapping.is_empty(),
        "work begun while another run lived: {overlapping:?}"
    );
    let active = t
        .store()
        .list_keys(fave_common::keys::ACTIVE_PREFIX)
        .await
        .expect("listing");
    assert!(active.is_empty(), "left in the active index: {active:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_the_store_refusing_connections_for_seconds_costs_retries_only() {
    store_outage(StoreMode::Refusing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_the_store_black_holed_for_seconds_costs_retries_only() {
    store_outage(StoreMode::BlackHole).await;
}
