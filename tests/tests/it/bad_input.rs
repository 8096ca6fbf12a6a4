//! Bad input gets a JSON error with a fitting status, and writes nothing half-done. The
//! cases are data, `tests/data/bad-input.json`; the parsers' property tests are in
//! `functions/orchestrator/tests/parsers.rs`.

use fave_common::state::{RequestStatus, StageStatus};
use serde_json::{Value, json};

use crate::util::{TestStack, file_uri, read, request_id};

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["retryable"].is_boolean(), "{body}");
}

/// One case of `tests/data/bad-input.json` (its `about` says what the fields mean).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "both")]
    mode: String,
    #[serde(default = "post")]
    method: String,
    #[serde(default = "root")]
    path: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    status: u16,
    code: String,
}

fn both() -> String {
    "both".into()
}
fn post() -> String {
    "POST".into()
}
fn root() -> String {
    "/".into()
}

/// Fills in `{name}` placeholders and `{cN}` repetitions.
fn fill(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    // `{x1001}`: one ASCII letter, then how many times.
    while let Some(start) = out.find('{') {
        let Some(len) = out[start..].find('}') else {
            break;
        };
        let inner = &out[start + 1..start + len];
        let mut chars = inner.chars();
        let (Some(c), Ok(n)) = (chars.next(), chars.as_str().parse::<usize>()) else {
            break;
        };
        out.replace_range(start..=start + len, &c.to_string().repeat(n));
    }
    out
}

fn fill_value(v: &Value, vars: &[(&str, String)]) -> Value {
    match v {
        Value::String(s) => Value::String(fill(s, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|i| fill_value(i, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill_value(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The bytes a case's body stands for.
fn body_bytes(body: &Option<Value>, vars: &[(&str, String)]) -> Vec<u8> {
    match body {
        None => Vec::new(),
        Some(Value::String(raw)) => fill(raw, vars).into_bytes(),
        Some(Value::Object(o)) if o.contains_key("json") => {
            fill_value(&o["json"], vars).to_string().into_bytes()
        }
        Some(Value::Object(o)) if o.contains_key("repeat") => {
            let unit = o["repeat"].as_str().expect("repeat is a string");
            let times = o["times"].as_u64().expect("times is a number") as usize;
            let wrap = o["wrap"].as_str().unwrap_or("{}");
            wrap.replacen("{}", &unit.repeat(times), 1).into_bytes()
        }
        Some(Value::Object(o)) if o.contains_key("bytes") => o["bytes"]
            .as_array()
            .expect("bytes is a list")
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .expect("a byte")
            })
            .collect(),
        Some(other) => panic!("unknown body form {other}"),
    }
}

/// A listener on `bind` that answers `answer` to anything and counts what reaches it: a
/// canary for where nothing should go.
async fn counting_listener(
    bind: &str,
    answer: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::Relaxed);
            answer
        }
    });
    let listener = tokio::net::TcpListener::bind(bind).await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

/// Serves what the corpus's URL cases need: `/` streams zeros forever, `/404` and `/500`
/// answer so; a second listener accepts connections and never answers.
async fn hostile_servers() -> (String, String) {
    use axum::routing::get;
    let endless = axum::Router::new()
        .route(
            "/",
            get(|| async {
                let zeros = futures::stream::repeat_with(|| {
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[0u8; 64 * 1024]))
                });
                axum::body::Body::from_stream(zeros)
            }),
        )
        .route("/404", get(|| async { axum::http::StatusCode::NOT_FOUND }))
        .route(
            "/500",
            get(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let endless_url = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, endless).await });
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let silent_url = format!("http://{}/v.mp4", silent.local_addr().expect("bound"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    (endless_url, silent_url)
}

/// Runs every case of `mode` against one stack; returns the mismatches.
async fn run_corpus(t: &TestStack, mode: &str, vars: &[(&str, String)]) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(crate::util::repo_root().join("tests/data/bad-input.json"))
        .expect("the corpus is readable");
    let corpus: Value = serde_json::from_str(&text).expect("the corpus is JSON");
    let cases: Vec<Case> =
        serde_json::from_value(corpus["cases"].clone()).expect("every case is well formed");
    let mut ran = 0;
    let mut wrong = Vec::new();
    for case in cases.iter().filter(|c| c.mode == "both" || c.mode == mode) {
        ran += 1;
        let method: reqwest::Method = case.method.parse().expect("a method");
        let mut request = t
            .http
            .request(method, t.url("orchestrator", &fill(&case.path, vars)))
            .body(body_bytes(&case.body, vars));
        for (name, value) in &case.headers {
            let value = reqwest::header::HeaderValue::from_bytes(fill(value, vars).as_bytes())
                .expect("a header value a client can send");
            request = request.header(name.as_str(), value);
        }
        let response = request.send().await.expect("the gateway answers");
        let (status, headers, body) = read(response).await;
        let json =
            headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/json");
        let shaped = body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
            && body["error"]["retryable"].is_boolean();
        if status != case.status || body["error"]["code"] != case.code.as_str() || !json || !shaped
        {
            wrong.push(format!(
                "[{mode}] {}: want {} {}, got {status} {body}",
                case.name, case.status, case.code
            ));
        }
    }
    (ran, wrong)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_input_corpus_is_refused_and_writes_nothing() {
    let (endless_url, silent_url) = hostile_servers().await;
    // Small limits, so the endless stream and the silent server end quickly.
    let local = TestStack::start_with(&[
        ("FAVE_MAX_INPUT_BYTES", "1048576"),
        ("FAVE_INPUT_TIMEOUT_SECS", "2"),
    ])
    .await;
    let cluster = TestStack::start_with(&[
        ("FAVE_LOCAL_MODE", "false"),
        ("FAVE_INPUT_TIMEOUT_SECS", "5"),
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut total = 0;
    let mut wrong = Vec::new();
    for (t, mode) in [(&local, "local"), (&cluster, "cluster")] {
        let vars = [
            ("bucket", t.store().bucket().to_owned()),
            ("missing_file", file_uri(&dir.path().join("nope.mp4"))),
            ("dir", file_uri(dir.path())),
            ("endless_url", endless_url.clone()),
            ("silent_url", silent_url.clone()),
            ("valid_id", "0123456789abcdef0123456789abcdef".to_owned()),
        ];
        let (ran, mut w) = run_corpus(t, mode, &vars).await;
        total += ran;
        wrong.append(&mut w);
        assert_eq!(
            t.store().list_keys("").await.expect("listing works"),
            Vec::<String>::new(),
            "[{mode}] refused input wrote something"
        );
        // The service keeps serving.
        let (status, _, _) = t.get("/healthz").await;
        assert_eq!(status, 200, "[{mode}]");
    }
    eprintln!("bad-input corpus: {total} runs, {} wrong", wrong.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_videos_fail_cleanly() {
    let t = TestStack::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let text = dir.path().join("holiday.mp4");
    std::fs::write(&text, "this is not a video, just some text\n".repeat(100)).expect("written");
    // The first 32 KiB of a real mp4 whose index (moov) comes at its end.
    let truncated = dir.path().join("truncated.mp4");
    let whole = std::fs::read(crate::util::sample("bikes.mp4")).expect("readable");
    std::fs::write(&truncated, &whole[..32 * 1024]).expect("written");
    for fake in [text, truncated] {
        not_a_video(&t, &file_uri(&fake)).await;
    }
}

/// Submits `uri` and checks it fails as bad media: terminal, explained, nothing claimed done.
async fn not_a_video(t: &TestStack, uri: &str) {
    let (status, _, answer) = t.submit(&json!({ "video_uri": uri })).await;
    assert_error(status, &answer, 422, "invalid_media");
    assert_eq!(answer["error"]["retryable"], false);
    assert_eq!(answer["status"], "FAILED");

    // The request is terminal and says why; nothing claims to be done.
    let id = request_id(&answer);
    let state = t.state(&id).await;
    assert_eq!(state.status, RequestStatus::Failed);
    let failure = state.failure.as_ref().expect("a failure is recorded");
    assert_eq!(failure.error_code, "invalid_media");
    assert!(
        failure.error_detail.contains("stage-ffmpeg-0"),
        "{}",
        failure.error_detail
    );
    assert!(
        !failure.error_detail.contains("/tmp"),
        "no internal paths: {}",
        failure.error_detail
    );
    // Both reads of the video (the analysis and the encode) run at once; the first to
    // find it is not one fails the request, and the other is not waited for.
    let stage = state
        .stages
        .iter()
        .find(|s| failure.error_detail.starts_with(&format!("{}:", s.name)))
        .expect("the failure names its stage");
    assert_eq!(stage.status, StageStatus::Failed);
    assert!(
        state
            .tasks()
            .all(|s| s.status.is_terminal() || s.status == StageStatus::Pending),
        "no task of a failed request is left running: {:?}",
        state.stages
    );
    assert_eq!(stage.attempts.len(), 1, "bad media is not retried");
    assert_eq!(stage.attempts[0].http_status, Some(422));
    assert!(stage.outputs.is_empty());
    let written: Vec<String> = t
        .request_keys()
        .await
        .into_iter()
        .filter(|k| k.contains(id.as_str()))
        .collect();
    assert!(
        !written.iter().any(|k| k.ends_with("manifest.json")),
        "{written:?}"
    );
    assert!(
        !written.iter().any(|k| k.ends_with("final.json")),
        "{written:?}"
    );
    let (status, _, result) = t.get(&format!("/requests/{id}/result")).await;
    assert_error(status, &result, 409, "not_completed");
}

/// Uploaded files that name other files for ffmpeg to open: playlists (HLS, DASH) and concat
/// lists, under names that hide what they are, each pointing at a real video on this
/// machine (the canary). ffmpeg and ffprobe open only the input itself, by protocol and
/// demuxer whitelists (`common/src/tool.rs`), so each is refused as bad media at the probe,
/// and nothing of the canary reaches the bucket: no frame, no video, no manifest. Each comes
/// in twice: as a local file (local mode) and uploaded to the bucket's `uploads/` and named
/// by its s3:// URI, as a cluster's users send them (cluster mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_that_names_other_files_is_refused_and_none_of_them_is_read() {
    let local = TestStack::start().await;
    let cluster = TestStack::start_with(&[("FAVE_LOCAL_MODE", "false")]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let canary = dir.path().join("canary.ts");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=5",
        ])
        .args(["-t", "3", "-c:v", "libx264"])
        .arg(&canary)
        .status()
        .expect("ffmpeg runs");
    assert!(made.success());
    let path = canary.display().to_string();
    let hls = |segment: &str| {
        format!("#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\n{segment}\n#EXT-X-ENDLIST\n")
    };
    let dash = format!(
        "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
         type=\"static\" mediaPresentationDuration=\"PT3S\" minBufferTime=\"PT1S\" \
         profiles=\"urn:mpeg:dash:profile:isoff-on-demand:2011\"><Period><AdaptationSet>\
         <Representation id=\"1\" bandwidth=\"100000\" mimeType=\"video/mp2t\">\
         <BaseURL>file://{path}</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
    );
    let cases = [
        ("playlist.m3u8", hls(&format!("file://{path}"))),
        ("holiday.avi", hls(&format!("file://{path}"))),
        ("holiday.mp4", hls(&path)),
        ("clip.mkv", hls(&format!("file:{path}"))),
        ("list.mp4", format!("ffconcat version 1.0\nfile '{path}'\n")),
        (
            "list.txt",
            format!("ffconcat version 1.0\nfile 'file:{path}'\n"),
        ),
        ("manifest.mp4", dash.clone()),
        ("manifest.mpd", dash),
    ];
    let bucket = cluster.store().bucket().to_owned();
    for (name, text) in &cases {
        let fake = dir.path().join(name);
        std::fs::write(&fake, text).expect("written");
        not_a_video(&local, &file_uri(&fake)).await;
        let upload = format!("uploads/{name}");
        cluster
            .store()
            .put_file(&upload, &fake, "application/octet-stream")
            .await
            .expect("uploaded");
        not_a_video(&cluster, &format!("s3://{bucket}/{upload}")).await;
    }
    // Of every request, only its input and its state are in the bucket.
    for t in [&local, &cluster] {
        let stray: Vec<String> = t
            .request_keys()
            .await
            .into_iter()
            .filter(|k| !k.contains("/input/") && !k.contains("/metadata/"))
            // A call's claim on its work is no output; the side call may still hold one.
            .filter(|k| !k.ends_with("/claim.json"))
            .collect();
        assert!(stray.is_empty(), "written from a playlist: {stray:?}");
    }
    eprintln!(
        "{} playlist and concat spellings refused, in local and in cluster mode",
        cases.len()
    );
}

/// With the proxy variables set, as many clusters set them, the orchestrator still fetches
/// inputs itself, through its address guard: a proxy would resolve and connect for it, and
/// metadata or Kubernetes API URLs would be fetched through it. The proxy here is a loopback
/// listener that counts what reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_do_not_take_fetches_around_the_address_guard() {
    use std::sync::atomic::Ordering;

    let (addr, hits) = counting_listener("127.0.0.1:0", "a video from the proxy").await;
    let proxy_url = format!("http://{addr}");
    let t = TestStack::start_with(&[
        ("FAVE_LOCAL_MODE", "false"),
        ("FAVE_INPUT_TIMEOUT_SECS", "5"),
        ("HTTP_PROXY", &proxy_url),
        ("HTTPS_PROXY", &proxy_url),
        ("ALL_PROXY", &proxy_url),
        ("http_proxy", &proxy_url),
        // The store and the gateway are on loopback, as a cluster's are inside NO_PROXY.
        ("NO_PROXY", "127.0.0.1,localhost"),
        ("no_proxy", "127.0.0.1,localhost"),
    ])
    .await;
    for uri in [
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://kubernetes.default.svc/api/v1/secrets",
        "https://video.fave-test.invalid/v.mp4",
    ] {
        let (status, _, answer) = t.submit(&json!({ "video_uri": uri })).await;
        assert_eq!(status, 422, "{uri}: {answer}");
        assert_ne!(answer["status"], "COMPLETED", "{uri}: {answer}");
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "nothing went through the proxy"
    );
    assert_eq!(
        t.store().list_keys("").await.expect("listing works"),
        Vec::<String>::new(),
        "nothing was written"
    );
}

/// A request keeps the address guard it was accepted under. A request accepted by a
/// cluster-mode replica (`reach: public` in its state.json) whose callback is due, found by a
/// local-mode replica, is not called back at a loopback address; the same request accepted
/// in local mode is. The requests are ended ones (a text file posing as a video) whose state
/// is then written as each kind of replica would have written it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_accepted_in_cluster_mode_stays_guarded_on_a_local_mode_replica() {
    use fave_common::keys::{self, RequestKeys};
    use fave_common::state::{Reach, RequestState};
    use std::sync::atomic::Ordering;

    let (addr, hits) = counting_listener("127.0.0.1:0", "got it").await;
    let canary = format!("http://{addr}/done");

    let t = TestStack::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = dir.path().join("holiday.mp4");
    std::fs::write(&fake, "not a video\n".repeat(100)).expect("written");
    let (status, _, answer) = t.submit(&json!({ "video_uri": file_uri(&fake) })).await;
    assert_eq!(status, 422, "{answer}");
    let ended = t.state(&request_id(&answer)).await;

    // Delivers the callback of a copy of `ended` accepted with `reach`; returns the record.
    let deliver = |name: &'static str, reach: Reach| {
        let (t, ended, canary) = (&t, ended.clone(), canary.clone());
        async move {
            let id: fave_common::ids::RequestId = name.parse().expect("an id");
            let mut state: RequestState = ended;
            state.request_id = id.clone();
            state.submission.callback_url = Some(canary);
            state.submission.reach = Some(reach);
            state.callback = None;
            state.lease = None;
            let store = t.store();
            store
                .put_json(&keys::active_marker(&id), &json!({}))
                .await
                .expect("written");
            store
                .put_json(&RequestKeys::new(&id).state(), &state)
                .await
                .expect("written");
            let (status, _, body) = t.post(&format!("/requests/{id}/resume")).await;
            assert!(status < 300, "{status} {body}");
            for _ in 0..100 {
                let record = t.state(&id).await.callback;
                if let Some(r) = record.filter(|r| r.delivered_at.is_some() || r.gave_up) {
                    return r;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("{name}: the callback was neither delivered nor given up");
        }
    };

    let guarded = deliver("accepted-in-cluster-mode", Reach::Public).await;
    assert_eq!(hits.load(Ordering::Relaxed), 0, "the canary was called");
    assert!(guarded.gave_up && guarded.attempts == 1, "{guarded:?}");
    assert!(
        guarded
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("internal address")),
        "{guarded:?}"
    );
    // The same request accepted in local mode is called back: the canary can tell.
    let open = deliver("accepted-in-local-mode", Reach::Any).await;
    assert!(open.delivered_at.is_some(), "{open:?}");
    assert_eq!(hits.load(Ordering::Relaxed), 1);
}

/// Media bounded before work starts: a 17 KB mp4 whose container says it lasts 2^32 s (136
/// years; its one stream, 3 s), and a real video longer than the deployment takes (here a
/// 2-minute one of 16×16 pictures under a 60 s limit, as 10 h ones would be under the default
/// 6 h), are refused at the probe as `media_over_limit`: nothing decoded, no clip planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_over_the_limits_is_refused_at_the_probe() {
    let t = TestStack::start_with(&[("FAVE_MAX_DURATION_SECS", "60")]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let ffmpeg = |source: &str, seconds: &str, out: &std::path::Path| {
        let made = std::process::Command::new("ffmpeg")
            .args([
                "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", seconds,
            ])
            .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .arg(out)
            .status()
            .expect("ffmpeg runs");
        assert!(made.success());
    };
    // mvhd's timescale 1 and duration 0xFFFFFFFF: the container's claim, nothing else.
    let crafted = dir.path().join("holiday.mp4");
    ffmpeg("testsrc=size=320x240:rate=25", "3", &crafted);
    let mut bytes = std::fs::read(&crafted).expect("readable");
    let at = bytes
        .windows(4)
        .position(|w| w == b"mvhd")
        .expect("an mvhd box");
    assert_eq!(bytes[at + 4], 0, "a version-0 mvhd");
    bytes[at + 16..at + 24].copy_from_slice(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
    std::fs::write(&crafted, &bytes).expect("written");
    let long = dir.path().join("long.mp4");
    ffmpeg("color=black:size=16x16:rate=1", "120", &long);
    for (video, says) in [(&crafted, "136 years"), (&long, "120 s")] {
        let clock = std::time::Instant::now();
        let (status, _, answer) = t.submit(&json!({ "video_uri": file_uri(video) })).await;
        assert_error(status, &answer, 422, "media_over_limit");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
        let state = t.state(&request_id(&answer)).await;
        assert_eq!(state.status, RequestStatus::Failed);
        assert!(state.clips.is_empty(), "no clip was planned");
        let keys: Vec<String> = t
            .request_keys()
            .await
            .into_iter()
            .filter(|k| k.contains(state.request_id.as_str()))
            .filter(|k| !k.contains("/input/") && !k.contains("/metadata/"))
            // A call's claim on its work is no output; the side call may still hold one.
            .filter(|k| !k.ends_with("/claim.json"))
            .collect();
        assert!(keys.is_empty(), "{keys:?}");
        // Memory stayed bounded: the stage refused at the probe, the orchestrator kept
        // only the small failure (each process's peak since its start, Linux VmHWM).
        for name in ["stage-ffmpeg-0", "orchestrator"] {
            let pid = t.function(name).pid().expect("running");
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("readable");
            let peak_kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("VmHWM");
            eprintln!("{name}: peak RSS {} MiB", peak_kb / 1024);
            assert!(peak_kb < 256 * 1024, "{name} peaked at {peak_kb} KiB");
        }
        eprintln!(
            "{} refused in {:?}: {message}",
            video.display(),
            clock.elapsed()
        );
    }
}

/// Sends `raw` to `addr` and reads the answer until the server closes the connection or
/// `within` passes; returns what came back and how long until the close.
async fn raw_exchange(
    addr: &str,
    raw: String,
    within: std::time::Duration,
) -> (String, Option<std::time::Duration>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let clock = std::time::Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    socket.write_all(raw.as_bytes()).await.expect("sent");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at((clock + within).into(), socket.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0)) | Ok(Err(_)) => break Some(clock.elapsed()),
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                // An answer with a body in the error shape is complete once its JSON closes.
                if got.ends_with(b"}}")
                    || got.ends_with(b"}") && got.windows(4).any(|w| w == b"\r\n\r\n")
                {
                    break Some(clock.elapsed());
                }
            }
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Slow and malformed requests: read deadlines for headers (10 s) and bodies (10 s) on
/// every fave server, 413 at once for a declared length past any limit, 400 for malformed
/// chunking at the gateway, and a repeated Idempotency-Key refused, each in the one error
/// shape where the server answers at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_malformed_requests_meet_deadlines_and_get_the_error_shape() {
    let t = TestStack::start().await;
    let addr = t
        .stack
        .gateway_url
        .as_str()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let path = "/function/orchestrator";
    let slow_headers = raw_exchange(
        &addr,
        format!("POST {path} HTTP/1.1\r\nHost: gateway\r\nX-Slow: 1"),
        std::time::Duration::from_secs(20),
    );
    let slow_body = raw_exchange(
        &addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
        ),
        std::time::Duration::from_secs(25),
    );
    let huge = raw_exchange(
        &addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
             Content-Length: 99999999999\r\n\r\n{{\"video_uri\": \"s3://b/k\"}}"
        ),
        std::time::Duration::from_secs(10),
    );
    let bad_chunks = raw_exchange(
        &addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n\
             ZZZ\r\nnot a chunk\r\n"
        ),
        std::time::Duration::from_secs(10),
    );
    let ((headers_got, headers_closed), (body_got, body_closed), (huge_got, huge_at), (bad_got, _)) =
        tokio::join!(slow_headers, slow_body, huge, bad_chunks);
    let closed = headers_closed.expect("a connection that never finishes its headers is closed");
    assert!(closed < std::time::Duration::from_secs(15), "{closed:?}");
    assert!(
        headers_got.is_empty() || headers_got.starts_with("HTTP/1.1 408"),
        "{headers_got}"
    );
    eprintln!("headers never finished: closed after {closed:?}");
    assert!(body_got.starts_with("HTTP/1.1 408"), "{body_got}");
    assert!(body_got.contains("\"body_timeout\""), "{body_got}");
    eprintln!("a body that stops: 408 after {body_closed:?}");
    assert!(huge_got.starts_with("HTTP/1.1 413"), "{huge_got}");
    assert!(huge_got.contains("\"body_too_large\""), "{huge_got}");
    let huge_at = huge_at.expect("answered");
    assert!(
        huge_at < std::time::Duration::from_secs(3),
        "413 at once: {huge_at:?}"
    );
    assert!(bad_got.starts_with("HTTP/1.1 400"), "{bad_got}");
    assert!(bad_got.contains("\"malformed_body\""), "{bad_got}");

    // The same key twice is not a key: refused, not silently the first.
    let (status, _, body) = read(
        t.http
            .post(t.url("orchestrator", ""))
            .header("Idempotency-Key", "a")
            .header("Idempotency-Key", "b")
            .json(&json!({ "video_uri": "s3://b/k" }))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_error(status, &body, 400, "invalid_idempotency_key");
}

/// Set in the test process that runs inside its own network namespace.
const IN_NETNS: &str = "FAVE_TEST_IN_NETNS";

/// The IPv6 spellings that carry an internal IPv4 address, and authorities with a
/// backslash, sent end to end to a cluster-mode stack as `video_uri` and as `callback_url`.
/// It runs only inside a network namespace of its own whose one interface is loopback (the
/// test re-runs itself under `unshare --net`), so that a guard failure can never send
/// traffic off the machine. A canary listens on loopback, where the IPv4-mapped spelling
/// would lead; it must hear nothing, and nothing may be written.
#[test]
fn hostile_addresses_are_refused_end_to_end_inside_a_network_namespace() {
    const NAME: &str =
        "bad_input::hostile_addresses_are_refused_end_to_end_inside_a_network_namespace";
    if std::env::var_os(IN_NETNS).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(hostile_addresses_inside_the_namespace());
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let status = std::process::Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        // The external store's server is outside the namespace: the embedded one serves.
        .env_remove("AWS_ENDPOINT_URL")
        .status()
        .expect("unshare runs (util-linux; the tests run as root)");
    assert!(status.success(), "the test inside the namespace: {status}");
}

async fn hostile_addresses_inside_the_namespace() {
    use std::sync::atomic::Ordering;

    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("readable");
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "a namespace with nothing but loopback");

    // On every address the namespace has, IPv4 and IPv6 loopback alike.
    let (addr, hits) = counting_listener("[::]:0", "canary").await;
    let port = addr.port();

    let t = TestStack::start_with(&[
        ("FAVE_LOCAL_MODE", "false"),
        ("FAVE_INPUT_TIMEOUT_SECS", "5"),
    ])
    .await;
    let forbidden = [
        format!("http://[::ffff:127.0.0.1]:{port}/v.mp4"),
        format!("http://[::ffff:0:7f00:1]:{port}/v.mp4"),
        format!("http://[::127.0.0.1]:{port}/v.mp4"),
        format!("http://[64:ff9b::7f00:1]:{port}/v.mp4"),
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/".to_owned(),
        format!("http://[64:ff9b:1::7f00:1]:{port}/v.mp4"),
        format!("http://[2002:7f00:1::1]:{port}/v.mp4"),
        "http://[2002:a9fe:a9fe::1]/latest/meta-data/".to_owned(),
        format!("http://[2001:0:7f00:1::ffff:ffff]:{port}/v.mp4"),
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/v.mp4".to_owned(),
        format!("http://[::1]:{port}/v.mp4"),
        format!("http://[fd00::1]:{port}/v.mp4"),
    ];
    let ambiguous = [
        format!("http://cdn.example.com\\@127.0.0.1:{port}/v.mp4"),
        format!("http://cdn.example.com\\@[::ffff:127.0.0.1]:{port}/v.mp4"),
        format!("https://127.0.0.1:{port}\\@cdn.example.com/v.mp4"),
    ];
    let bucket = t.store().bucket().to_owned();
    let upload = format!("s3://{bucket}/uploads/v.mp4");
    let mut cases = Vec::new();
    for url in &forbidden {
        cases.push((json!({ "video_uri": url }), "forbidden_address"));
        cases.push((
            json!({ "video_uri": upload, "callback_url": url }),
            "forbidden_address",
        ));
    }
    for url in &ambiguous {
        cases.push((json!({ "video_uri": url }), "invalid_video_uri"));
        cases.push((
            json!({ "video_uri": upload, "callback_url": url }),
            "invalid_callback_url",
        ));
    }
    for (body, code) in &cases {
        let (status, _, answer) = t.submit(body).await;
        assert_error(status, &answer, 422, code);
        assert!(answer.get("request_id").is_none(), "{body}: {answer}");
    }
    assert_eq!(hits.load(Ordering::Relaxed), 0, "the canary was reached");
    assert_eq!(
        t.store().list_keys("").await.expect("listing works"),
        Vec::<String>::new(),
        "a refused request wrote something"
    );
    eprintln!(
        "{} hostile addresses refused end to end inside a network namespace",
        cases.len()
    );
}
