//! The local gateway's OpenFaaS contract: routes, headers, errors, and restarting a function
//! process that died.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{TestStack, file_uri, read, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_routes_and_errors_follow_openfaas() {
    let t = TestStack::start().await;
    let base = t.stack.gateway_url.clone();
    let (status, _, body) = read(
        t.http
            .get(base.join("healthz").expect("a URL"))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!((status, body), (200, Value::String("OK".into())));

    let (status, _, list) = read(
        t.http
            .get(base.join("system/functions").expect("a URL"))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "orchestrator",
            "stage-audio",
            "stage-detect",
            "stage-ffmpeg-0",
            "stage-ffmpeg-1",
            "stage-ffmpeg-2",
            "stage-transcribe"
        ]
    );
    for f in list.as_array().expect("a list") {
        assert_eq!(f["availableReplicas"], 1, "{f}");
    }
    let (status, _, one) = read(
        t.http
            .get(base.join("system/function/stage-ffmpeg-0").expect("a URL"))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["image"], "fave/stage-ffmpeg-0:latest");

    let (status, headers, body) = read(
        t.http
            .post(t.url("no-such-function", ""))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        headers.contains_key("x-openfaas-internal"),
        "the gateway marks its own errors"
    );
    assert!(headers.contains_key("x-call-id"));
    let (status, _, _) = read(
        t.http
            .get(base.join("system/function/nope").expect("a URL"))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 404);

    // Sub-paths reach the function, also under the namespaced name; the function's own
    // errors are not marked as the gateway's.
    let (status, headers, body) = read(
        t.http
            .get(t.url(
                "orchestrator.openfaas-fn",
                "/requests/0123456789abcdef0123456789abcdef?verbose=1",
            ))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(!headers.contains_key("x-openfaas-internal"));
    let (status, _, body) = t.get("/healthz").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_dies_is_restarted_and_calls_wait_for_it() {
    let t = TestStack::start().await;
    let function = t.function("stage-ffmpeg-0");
    assert_eq!(function.starts(), 1);
    let pid = function.pid().expect("running");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("killed");

    // A call right away waits for the restarted process instead of failing.
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bikes.mp4")) }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    assert_eq!(answer["status"], "COMPLETED");
    assert_eq!(function.starts(), 2, "restarted exactly once");
    assert_ne!(
        function.pid().map(|p| p as i32),
        Some(pid.as_raw_nonzero().get())
    );

    // And it keeps being restarted.
    let pid =
        rustix::process::Pid::from_raw(function.pid().expect("running") as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("killed");
    for _ in 0..200 {
        if function.starts() == 3 && function.ready_port().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(function.starts(), 3);
    assert!(function.ready_port().is_some());
}
