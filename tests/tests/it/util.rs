//! Starting the real local stack for a test, on ephemeral ports, with its own data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use fave_common::secrets::Secret;
use fave_common::storage::Storage;
use fave_local::stack::{Stack, StackOptions, StoreChoice};
use serde_json::Value;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds the function binaries once per test run (a no-op when they are fresh), so the
/// stack never runs stale ones, and returns their directory.
pub fn bin_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut cmd = Command::new(env!("CARGO"));
            // `--tests` too, so the feature set matches `cargo test --workspace` and nothing
            // is built twice with different features.
            cmd.current_dir(repo_root()).args([
                "build",
                "--quiet",
                "--workspace",
                "--bins",
                "--tests",
            ]);
            if !cfg!(debug_assertions) {
                cmd.arg("--release");
            }
            // Cargo sets these for the test process. Build scripts that watch them (ring's
            // watches CARGO_MANIFEST_DIR) would see a change, rerun, and rebuild half the
            // tree here and again in the next outer build.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                let set_by_cargo_for_tests = [
                    "CARGO_MANIFEST_",
                    "CARGO_PKG_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .iter()
                .any(|p| name.starts_with(p));
                if set_by_cargo_for_tests {
                    cmd.env_remove(name.as_ref());
                }
            }
            let status = cmd.status().expect("cargo runs");
            assert!(status.success(), "building the function binaries failed");
            // This test binary is target/{profile}/deps/it-…; the binaries are in target/{profile}.
            let exe = std::env::current_exe().expect("the test binary has a path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/{profile}")
                .to_path_buf()
        })
        .clone()
}

/// The store the tests use: `AWS_ENDPOINT_URL` if set (a fresh bucket per stack), else the
/// embedded server.
fn store_choice() -> (StoreChoice, String) {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
            let bucket = format!(
                "fave-test-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            (
                StoreChoice::External {
                    endpoint: endpoint.parse().expect("AWS_ENDPOINT_URL is a URL"),
                    region: var("AWS_REGION", "us-east-1"),
                    access_key_id: Secret::new(var("AWS_ACCESS_KEY_ID", "test")),
                    secret_access_key: Secret::new(var("AWS_SECRET_ACCESS_KEY", "test")),
                },
                bucket,
            )
        }
        _ => (
            StoreChoice::Embedded {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            "fave-artifacts".to_owned(),
        ),
    }
}

/// How a test's stack differs from the default one (the repository's stack.yml, nothing
/// extra).
#[derive(Default)]
pub struct StackSpec<'a> {
    /// Another stack file, e.g. one a test wrote with only the functions it needs.
    pub stack_file: Option<PathBuf>,
    /// Extra environment for every function.
    pub env: &'a [(&'a str, &'a str)],
    /// Replicas at start per function.
    pub replicas: &'a [(&'a str, usize)],
    /// Variables for stack.yml's `${…}` and the gateway's settings, over everything else.
    pub vars: &'a [(&'a str, &'a str)],
    /// A profile of `deploy/profiles/` beside the stack file.
    pub profile: Option<&'a str>,
    /// Another stack's store and bucket, shared, instead of one of its own.
    pub store: Option<&'a fave_common::config::S3Settings>,
}

/// The functions of stack.yml, in pipeline order.
pub const FUNCTIONS: [&str; 7] = [
    "orchestrator",
    "stage-ffmpeg-0",
    "stage-audio",
    "stage-ffmpeg-1",
    "stage-ffmpeg-2",
    "stage-transcribe",
    "stage-detect",
];

/// A running stack and the directory it keeps its data in.
pub struct TestStack {
    pub stack: Stack,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl TestStack {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A stack whose functions get `env` on top of everything else.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_with_replicas(env, &[]).await
    }

    /// A stack with `env` and several replicas of some functions.
    pub async fn start_with_replicas(env: &[(&str, &str)], replicas: &[(&str, usize)]) -> Self {
        Self::start_spec(StackSpec {
            env,
            replicas,
            ..StackSpec::default()
        })
        .await
    }

    /// A stack as `spec` describes it.
    pub async fn start_spec(spec: StackSpec<'_>) -> Self {
        let StackSpec {
            stack_file,
            env,
            replicas,
            vars,
            profile,
            store: shared,
        } = spec;
        // FAVE_KEEP_TEST_DIRS=1 keeps each stack's data and logs for a look after a failure.
        let keep = std::env::var_os("FAVE_KEEP_TEST_DIRS").is_some();
        let dir = tempfile::Builder::new()
            .prefix("fave-test-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("a temp dir");
        if keep {
            eprintln!("stack data and logs in {}", dir.path().display());
        }
        let (store, bucket) = match shared {
            Some(s3) => (
                StoreChoice::External {
                    endpoint: s3.endpoint.clone().expect("a store with an endpoint"),
                    region: s3.region.clone(),
                    access_key_id: s3.access_key_id.clone().expect("the store's key id"),
                    secret_access_key: s3.secret_access_key.clone().expect("the store's key"),
                },
                s3.bucket.clone(),
            ),
            None => store_choice(),
        };
        let stack = Stack::start(StackOptions {
            stack_file: stack_file.unwrap_or_else(|| repo_root().join("stack.yml")),
            bin_dir: bin_dir(),
            data_dir: dir.path().to_path_buf(),
            gateway_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            store,
            bucket,
            log_to_files: true,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            replicas: replicas.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            profile: profile.map(str::to_owned),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .expect("the stack starts");
        Self {
            stack,
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn store(&self) -> &Storage {
        &self.stack.store
    }

    /// `{gateway}/function/{name}{path}`
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("{}function/{name}{path}", self.stack.gateway_url)
    }

    /// `{gateway}/system/{path}`
    pub fn system_url(&self, path: &str) -> String {
        format!("{}system/{path}", self.stack.gateway_url)
    }

    pub async fn submit(&self, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .post(self.url("orchestrator", ""))
            .json(body)
            .send()
            .await
            .expect("the gateway answers");
        read(response).await
    }

    /// A request's `state.json`, which must exist.
    pub async fn state(
        &self,
        id: &fave_common::ids::RequestId,
    ) -> fave_common::state::RequestState {
        let key = fave_common::keys::RequestKeys::new(id).state();
        self.store()
            .get_json(&key)
            .await
            .expect("readable")
            .expect("state.json exists")
            .0
    }

    /// One of the stack's functions.
    pub fn function(&self, name: &str) -> std::sync::Arc<fave_local::supervisor::Function> {
        self.stack.supervisor().get(name).expect("deployed").clone()
    }

    /// `GET /function/orchestrator{path}`
    pub async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        read(
            self.http
                .get(self.url("orchestrator", path))
                .send()
                .await
                .expect("the gateway answers"),
        )
        .await
    }

    /// `POST /function/orchestrator{path}` with no body.
    pub async fn post(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        read(
            self.http
                .post(self.url("orchestrator", path))
                .send()
                .await
                .expect("the gateway answers"),
        )
        .await
    }

    /// Submits a video without waiting for the answer.
    pub fn submit_in_background(
        &self,
        video: &Path,
        fresh: bool,
    ) -> tokio::task::JoinHandle<(u16, reqwest::header::HeaderMap, Value)> {
        let (http, url) = (self.http.clone(), self.url("orchestrator", ""));
        let body = serde_json::json!({ "video_uri": file_uri(video), "fresh": fresh });
        tokio::spawn(async move {
            read(
                http.post(url)
                    .json(&body)
                    .send()
                    .await
                    .expect("the gateway answers"),
            )
            .await
        })
    }

    /// Waits until some request's first stage is running; returns the states then.
    pub async fn wait_for_running_stage(&self) -> Vec<fave_common::state::RequestState> {
        wait_for_states(self.store(), 30, |s| {
            s.iter()
                .any(|s| s.stages[0].status == fave_common::state::StageStatus::Running)
        })
        .await
    }

    /// Every key under `requests/`.
    pub async fn request_keys(&self) -> Vec<String> {
        self.store()
            .list_keys("requests/")
            .await
            .expect("listing works")
    }

    /// What the functions logged, for a failing assertion's message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for name in FUNCTIONS {
            let path = self.dir.path().join("logs").join(format!("{name}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            all.push_str(&format!("--- {name}\n"));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

/// Settings that make resuming quick enough to test: a resume pass every 200 ms, 3 s leases.
pub const FAST_RESUME: &[(&str, &str)] =
    &[("FAVE_RESUME_INTERVAL_MS", "200"), ("FAVE_LEASE_SECS", "3")];

/// The log lines of every function that hold `what` (the harness's "stage work started",
/// say), counted by the idempotency key they name: how often each stage's work did it, by
/// the stages' own record.
pub fn log_count(t: &TestStack, what: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let logs = std::fs::read_dir(t.dir.path().join("logs")).expect("a log directory");
    for entry in logs.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(what)) {
            if let Some(key) = line
                .split("idempotency_key=")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_alphanumeric()).next())
            {
                *counts.entry(key.to_owned()).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Every function's log lines that name `key` (an idempotency key, a request id), each
/// after its log's file name: what a failing assertion about that key shows.
pub fn log_lines_naming(t: &TestStack, key: &str) -> String {
    let mut lines = Vec::new();
    let logs = std::fs::read_dir(t.dir.path().join("logs")).expect("a log directory");
    for entry in logs.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let name = entry.file_name().to_string_lossy().into_owned();
        for line in text.lines().filter(|l| l.contains(key)) {
            lines.push(format!("{name}: {line}"));
        }
    }
    lines.join("\n")
}

pub async fn read(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a readable body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// A sample from `samples/` (fetched by scripts/setup from registry packages).
/// The request id an answer (final.json, a 202, a callback body) names.
pub fn request_id(answer: &Value) -> fave_common::ids::RequestId {
    answer["request_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no valid request id in {answer}"))
}

pub fn sample(name: &str) -> PathBuf {
    let path = repo_root().join("samples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    path
}

pub fn file_uri(path: &Path) -> String {
    url::Url::from_file_path(path)
        .expect("an absolute path")
        .to_string()
}

/// ffprobe's JSON for a file.
pub fn ffprobe(path: &Path, extra: &[&str]) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .args(extra)
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe prints JSON")
}

pub fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a duration")
}

/// Whether the stack runs the embedded store (tests that stop the store need it).
pub fn embedded_store() -> bool {
    std::env::var("AWS_ENDPOINT_URL").map_or(true, |e| e.is_empty())
}

/// Sends a signal to a function's current process.
pub fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    let _ = rustix::process::kill_process(pid, signal);
}

/// Every request's state, read from the store.
pub async fn all_states(store: &Storage) -> Vec<fave_common::state::RequestState> {
    let mut states = Vec::new();
    for key in store.list_keys("requests/").await.expect("listing works") {
        if key.ends_with("/metadata/state.json")
            && let Some((s, _)) = store.get_json(&key).await.expect("readable")
        {
            states.push(s);
        }
    }
    states
}

/// Polls until `done` holds for the states in the store, or panics after `secs`.
pub async fn wait_for_states(
    store: &Storage,
    secs: u64,
    done: impl Fn(&[fave_common::state::RequestState]) -> bool,
) -> Vec<fave_common::state::RequestState> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let states = all_states(store).await;
        if done(&states) {
            return states;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out; states: {:#?}",
            states
                .iter()
                .map(|s| (&s.request_id, s.status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
