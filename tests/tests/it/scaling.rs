//! The local gateway scales functions as OpenFaaS does: `com.openfaas.scale.*` labels
//! (substituted from a profile's env file), scale from zero on a call, idle scale-down to
//! zero, `POST /system/scale-function/{name}` with calls spread over the replicas, and basic
//! auth on `/system/*`.
//!
//! Each test runs a stack file of its own with only stage-audio (its real binary; a cheap
//! `GET /healthz` is the call), so it starts fast and its replica counts are its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{StackSpec, TestStack, bin_dir, read};

/// A stack.yml with stage-audio only, with `labels` (YAML lines indented for the block).
fn write_stack(dir: &Path, labels: &[&str]) -> PathBuf {
    let labels: String = labels.iter().map(|l| format!("      {l}\n")).collect();
    let text = format!(
        "version: 1.0\nprovider:\n  name: openfaas\nfunctions:\n  stage-audio:\n    \
         image: fave/stage-audio:latest\n    environment:\n      FAVE_BUCKET: fave-artifacts\n    \
         labels:\n{labels}"
    );
    let path = dir.join("stack.yml");
    std::fs::write(&path, text).expect("a stack file");
    path
}

async fn start(dir: &Path, labels: &[&str], vars: &[(&str, &str)]) -> TestStack {
    TestStack::start_spec(StackSpec {
        stack_file: Some(write_stack(dir, labels)),
        vars,
        ..StackSpec::default()
    })
    .await
}

/// `GET /system/function/stage-audio`
async fn status(t: &TestStack) -> Value {
    let (code, _, body) = read(
        t.http
            .get(t.system_url("function/stage-audio"))
            .send()
            .await
            .expect("the gateway answers"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    body
}

/// `GET /function/stage-audio/healthz`: its status and `X-Fave-Gateway-Wait`, if any.
async fn call(t: &TestStack) -> (u16, Option<u64>) {
    let (code, headers, body) = read(
        t.http
            .get(t.url("stage-audio", "/healthz"))
            .send()
            .await
            .expect("the gateway answers"),
    )
    .await;
    assert_eq!(code, 200, "{body}\n{}", t.logs());
    let cold = headers
        .get("x-fave-gateway-wait")
        .map(|v| v.to_str().expect("ascii").parse().expect("milliseconds"));
    (code, cold)
}

async fn scale(t: &TestStack, replicas: i64) -> (u16, Value) {
    let (code, _, body) = read(
        t.http
            .post(t.system_url("scale-function/stage-audio"))
            .json(&json!({ "serviceName": "stage-audio", "replicas": replicas }))
            .send()
            .await
            .expect("the gateway answers"),
    )
    .await;
    (code, body)
}

/// Polls `/system/function/stage-audio` until `done` holds, or panics after `secs`.
async fn wait_status(t: &TestStack, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(t).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out; last status {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alive(pid: u32) -> bool {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::test_kill_process(pid).is_ok()
}

async fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn replicas(s: &Value) -> (u64, u64) {
    (
        s["replicas"].as_u64().expect("replicas"),
        s["availableReplicas"].as_u64().expect("availableReplicas"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_function_at_zero_starts_it_and_waits_until_healthy() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let t = start(dir.path(), &["com.openfaas.scale.min: 0"], &[]).await;
    let function = t.function("stage-audio");
    assert_eq!(replicas(&status(&t).await), (0, 0));
    assert_eq!(function.starts(), 0, "nothing runs at zero");

    let (_, cold) = call(&t).await;
    let waited = cold.expect("the first call waited for a start from zero");
    let after = status(&t).await;
    assert_eq!(replicas(&after), (1, 1), "{after}");
    assert_eq!(after["processStarts"], 1);
    let starts = after["coldStartMs"].as_array().expect("a list");
    assert_eq!(starts.len(), 1, "{after}");
    let spawn_to_healthy = starts[0].as_f64().expect("ms");
    // The call waited at least for the process (the header is in whole milliseconds).
    assert!(
        spawn_to_healthy <= waited as f64 + 1.0,
        "{after} vs {waited} ms"
    );
    eprintln!(
        "stage-audio from zero: the call waited {waited} ms, spawn → healthy {spawn_to_healthy} ms"
    );

    // Warm now: no header, no new process.
    assert_eq!(call(&t).await, (200, None));
    assert_eq!(function.starts(), 1);
    assert_eq!(t.stack.supervisor().cold_starts()["stage-audio"].len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_function_scales_to_zero_and_its_process_exits() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let t = start(
        dir.path(),
        &[
            "com.openfaas.scale.min: 1",
            "com.openfaas.scale.zero: true",
            "com.openfaas.scale.zero-duration: ${IDLE:-15m}",
        ],
        &[("IDLE", "2s")],
    )
    .await;
    let function = t.function("stage-audio");
    let pid = function.pid().expect("one replica runs");
    assert_eq!(call(&t).await, (200, None));
    let last_call = Instant::now();

    // Not before the zero-duration...
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(replicas(&status(&t).await), (1, 1));
    assert!(alive(pid));
    // ...but soon after it.
    let s = wait_status(&t, 10, |s| replicas(s) == (0, 0)).await;
    let idle = last_call.elapsed();
    assert!(
        idle >= Duration::from_secs(2),
        "scaled down after {idle:?}: {s}"
    );
    wait_gone(pid).await;
    assert_eq!(function.pid(), None);
    eprintln!("stage-audio scaled to zero {idle:?} after its last call");

    // The next call starts it again.
    let (_, cold) = call(&t).await;
    assert!(cold.is_some(), "a call after idling waits for a cold start");
    assert_eq!(replicas(&status(&t).await), (1, 1));
    assert_ne!(function.pid(), Some(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_function_sets_replicas_that_share_the_calls_clamped_to_max() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let t = start(
        dir.path(),
        &["com.openfaas.scale.min: 1", "com.openfaas.scale.max: 3"],
        &[],
    )
    .await;
    let function = t.function("stage-audio");

    let (code, body) = scale(&t, 2).await;
    assert_eq!((code, &body["replicas"]), (202, &json!(2)), "{body}");
    let s = wait_status(&t, 20, |s| replicas(s) == (2, 2)).await;
    assert_eq!(s["processStarts"], 2);
    let pids: Vec<u32> = function.replicas[..2]
        .iter()
        .map(|r| r.pid().expect("running"))
        .collect();
    assert_ne!(pids[0], pids[1], "two processes");
    for _ in 0..10 {
        assert_eq!(call(&t).await, (200, None));
    }
    let per_replica: Vec<u64> = function.replicas[..2]
        .iter()
        .map(|r| r.invocations())
        .collect();
    assert!(
        per_replica.iter().all(|&n| n >= 3),
        "calls spread over both replicas: {per_replica:?}"
    );

    // Above the max: clamped.
    let (code, body) = scale(&t, 10).await;
    assert_eq!((code, &body["replicas"]), (202, &json!(3)), "{body}");
    let s = wait_status(&t, 20, |s| replicas(s) == (3, 3)).await;
    assert_eq!(s["maxReplicas"], 3);
    let pids: Vec<u32> = function.replicas[..3]
        .iter()
        .map(|r| r.pid().expect("running"))
        .collect();

    // Down to zero: every process exits.
    let (code, body) = scale(&t, 0).await;
    assert_eq!((code, &body["replicas"]), (202, &json!(0)), "{body}");
    wait_status(&t, 10, |s| replicas(s) == (0, 0)).await;
    for pid in pids {
        wait_gone(pid).await;
    }
    let (code, body) = scale(&t, -1).await;
    assert_eq!(code, 400, "{body}");
    // And a call brings one back.
    let (_, cold) = call(&t).await;
    assert!(cold.is_some());
    assert_eq!(replicas(&status(&t).await), (1, 1));
}

/// The label block stack.yml carries for the profiles.
const PROFILE_LABELS: [&str; 5] = [
    "com.openfaas.scale.min: ${FAVE_SCALE_MIN:-1}",
    "com.openfaas.scale.max: ${FAVE_SCALE_MAX:-4}",
    "com.openfaas.scale.zero: ${FAVE_SCALE_ZERO:-false}",
    "com.openfaas.scale.zero-duration: ${FAVE_SCALE_ZERO_DURATION:-15m}",
    "fave.profile: ${FAVE_PROFILE:-warm}",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiles_env_file_sets_the_scaling_labels() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let stack_file = write_stack(dir.path(), &PROFILE_LABELS);
    let profiles = dir.path().join("deploy/profiles");
    std::fs::create_dir_all(&profiles).expect("a directory");
    std::fs::write(
        profiles.join("cold.env"),
        "# scale to zero when idle\nFAVE_PROFILE=cold\nFAVE_SCALE_MIN=0\nFAVE_SCALE_ZERO=true\n\
         FAVE_SCALE_ZERO_DURATION=5m\n",
    )
    .expect("a profile");
    std::fs::write(
        profiles.join("warm.env"),
        "FAVE_PROFILE=warm\nFAVE_SCALE_MIN=1\nFAVE_SCALE_ZERO=false\n",
    )
    .expect("a profile");
    let run = |profile: &'static str, vars: &'static [(&'static str, &'static str)]| {
        let stack_file = stack_file.clone();
        async move {
            let t = TestStack::start_spec(StackSpec {
                stack_file: Some(stack_file),
                profile: Some(profile),
                vars,
                ..StackSpec::default()
            })
            .await;
            let s = status(&t).await;
            t.stack.shutdown().await;
            s
        }
    };

    let cold = run("cold", &[("FAVE_SCALE_ZERO_DURATION", "2s")]).await;
    let labels = &cold["labels"];
    assert_eq!(labels["fave.profile"], "cold", "{cold}");
    assert_eq!(labels["com.openfaas.scale.min"], "0");
    assert_eq!(labels["com.openfaas.scale.zero"], "true");
    assert_eq!(
        labels["com.openfaas.scale.zero-duration"], "2s",
        "explicit vars win over the profile"
    );
    assert_eq!(replicas(&cold), (0, 0));

    let warm = run("warm", &[("FAVE_SCALE_MAX", "7")]).await;
    let labels = &warm["labels"];
    assert_eq!(labels["fave.profile"], "warm", "{warm}");
    assert_eq!(labels["com.openfaas.scale.zero"], "false");
    assert_eq!(
        labels["com.openfaas.scale.zero-duration"], "15m",
        "the default"
    );
    assert_eq!(replicas(&warm), (1, 1));
    assert_eq!(warm["maxReplicas"], 7);
}

/// Runs `fave up` as a process, as a user would, and reads its log: the gateway's own
/// tracing and the functions' output, everything it writes to stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_routes_need_basic_auth_and_the_password_is_never_logged() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().expect("a temp dir");
    let stack_file = write_stack(dir.path(), &["com.openfaas.scale.min: 1"]);
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("a directory");
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(secrets.join("basic-auth-user"), "admin\n").expect("a secret");
    std::fs::write(secrets.join("basic-auth-password"), format!("{password}\n")).expect("a secret");
    let log_path = dir.path().join("fave-up.log");
    let log = std::fs::File::create(&log_path).expect("a log file");

    let bins = bin_dir();
    let mut fave = tokio::process::Command::new(bins.join("fave"))
        .arg("up")
        .arg("--stack")
        .arg(&stack_file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--bin-dir")
        .arg(&bins)
        .args(["--gateway-addr", "127.0.0.1:0", "--s3-addr", "127.0.0.1:0"])
        .env("FAVE_SECRETS_DIR", &secrets)
        .env_remove("FAVE_GATEWAY_USER")
        .env_remove("FAVE_GATEWAY_PASSWORD")
        .env_remove("FAVE_EXTERNAL_S3")
        // As verbose as it gets for our crates and the HTTP stack.
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("fave runs");
    let stdout = fave.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let gateway = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("readable") {
            if let Some(url) = line.strip_prefix("gateway") {
                return url.trim().trim_end_matches('/').to_owned();
            }
        }
        panic!(
            "fave up ended early: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    })
    .await
    .expect("fave up prints its gateway");

    let http = reqwest::Client::new();
    let send = |req: reqwest::RequestBuilder, auth: Option<&str>| {
        let req = match auth {
            Some(pw) => req.basic_auth("admin", Some(pw)),
            None => req,
        };
        async move { read(req.send().await.expect("the gateway answers")).await }
    };
    let list = || http.get(format!("{gateway}/system/functions"));
    let scale = || {
        http.post(format!("{gateway}/system/scale-function/stage-audio"))
            .json(&json!({"serviceName": "stage-audio", "replicas": 1}))
    };
    for (what, auth) in [
        ("no credentials", None),
        ("wrong ones", Some(wrong.as_str())),
    ] {
        for req in [list(), scale()] {
            let (code, headers, body) = send(req, auth).await;
            assert_eq!(code, 401, "{what}: {body}");
            assert_eq!(
                headers["www-authenticate"], "Basic realm=\"OpenFaaS\"",
                "{what}"
            );
            assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
            let text = body.to_string();
            assert!(
                !text.contains(&password) && !text.contains(&wrong),
                "{text}"
            );
        }
    }
    let (code, _, body) = send(list(), Some(&password)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body[0]["name"], "stage-audio");
    let (code, _, body) = send(scale(), Some(&password)).await;
    assert_eq!(code, 202, "{body}");
    // Functions and health stay open, as in OpenFaaS.
    let (code, _, body) = send(
        http.get(format!("{gateway}/function/stage-audio/healthz")),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = send(http.get(format!("{gateway}/healthz")), None).await;
    assert_eq!(code, 200);

    // Stop it as Ctrl-C would, and read everything it logged.
    let pid = fave.id().expect("running");
    crate::util::signal(pid, rustix::process::Signal::INT);
    let exit = tokio::time::timeout(Duration::from_secs(30), fave.wait())
        .await
        .expect("fave up stops on SIGINT")
        .expect("an exit status");
    let log = std::fs::read_to_string(&log_path).expect("the log");
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("basic auth required on /system/*"), "{log}");
    assert!(log.contains("rejected a /system call"), "{log}");
    let token = {
        // What the client sent: base64("admin:{password}"); must not be logged either.
        let header = reqwest::Client::new()
            .get("http://127.0.0.1/")
            .basic_auth("admin", Some(&password))
            .build()
            .expect("a request");
        let value = header.headers()["authorization"]
            .to_str()
            .expect("ascii")
            .to_owned();
        value.trim_start_matches("Basic ").to_owned()
    };
    for secret in [&password, &wrong, &token] {
        assert!(!log.contains(secret.as_str()), "a credential was logged");
    }
    eprintln!(
        "fave up logged {} lines, none with a credential",
        log.lines().count()
    );
}

/// From zero, as the cold profile runs: every stage's first call starts its function, is
/// served on its first attempt (the functions listen before their models load, and early
/// calls wait), and reports its cold start itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_cold_runs_each_stage_at_its_first_attempt_and_records_its_cold_start() {
    let t = TestStack::start_spec(StackSpec {
        profile: Some("cold"),
        ..StackSpec::default()
    })
    .await;
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": crate::util::file_uri(&crate::util::sample("bikes.mp4")) }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    let state = t.state(&crate::util::request_id(&answer)).await;
    let mut cold = std::collections::BTreeMap::new();
    for task in state.tasks() {
        assert_eq!(
            task.attempts.len(),
            1,
            "{} {:?}: {:?}",
            task.name,
            task.attempts,
            task.metrics
        );
        if let Some(ms) = task.metrics.cold_start_ms {
            cold.insert(task.function.clone(), ms);
        }
    }
    eprintln!("cold starts reported by the functions: {cold:?}");
    // Each function was at zero: the first call it served was its cold start.
    for function in crate::util::FUNCTIONS
        .iter()
        .filter(|f| **f != "orchestrator")
    {
        assert!(cold.contains_key(*function), "{function}: {cold:?}");
    }
}
