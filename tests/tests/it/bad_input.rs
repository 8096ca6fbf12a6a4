//! Bad input gets a JSON error with a fitting status, and writes nothing half-done.

use fave_common::ids::RequestId;
use fave_common::state::{RequestStatus, StageStatus};
use serde_json::{Value, json};

use crate::util::{TestStack, file_uri, read};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_submissions_write_nothing() {
    let t = TestStack::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let missing = dir.path().join("nope.mp4");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            "{\"video_uri\": ".into(),
            400,
            "malformed_json",
        ),
        (
            "not JSON at all",
            "video please".into(),
            400,
            "malformed_json",
        ),
        ("empty body", String::new(), 400, "malformed_json"),
        (
            "missing video_uri",
            json!({"query": "cars"}).to_string(),
            422,
            "invalid_request",
        ),
        (
            "wrong type",
            json!({"video_uri": 42}).to_string(),
            422,
            "invalid_request",
        ),
        (
            "unknown field",
            json!({"video_uri": "s3://b/k", "colour": "red"}).to_string(),
            422,
            "invalid_request",
        ),
        (
            "unknown profile",
            json!({"video_uri": "s3://b/k", "profile": "lukewarm"}).to_string(),
            422,
            "invalid_request",
        ),
        (
            "query of the wrong type",
            json!({"video_uri": "s3://b/k", "query": ["cars"]}).to_string(),
            422,
            "invalid_request",
        ),
        (
            "unsupported scheme",
            json!({"video_uri": "ftp://example.com/v.mp4"}).to_string(),
            422,
            "invalid_video_uri",
        ),
        (
            "not a URI",
            json!({"video_uri": "just words"}).to_string(),
            422,
            "invalid_video_uri",
        ),
        (
            "a file that does not exist",
            json!({"video_uri": file_uri(&missing)}).to_string(),
            422,
            "input_not_found",
        ),
        (
            "a directory",
            json!({"video_uri": file_uri(dir.path())}).to_string(),
            422,
            "input_not_found",
        ),
        (
            "a missing s3 object",
            json!({"video_uri": format!("s3://{}/no/such.mp4", t.store().bucket())}).to_string(),
            422,
            "input_not_found",
        ),
        (
            "an overlong query",
            json!({"video_uri": "s3://b/k", "query": "x".repeat(1001)}).to_string(),
            422,
            "invalid_query",
        ),
        (
            "an overlong URI",
            json!({"video_uri": format!("s3://b/{}", "k".repeat(3000))}).to_string(),
            422,
            "invalid_video_uri",
        ),
        (
            "a huge body",
            json!({"video_uri": "s3://b/k", "query": "x".repeat(200_000)}).to_string(),
            413,
            "body_too_large",
        ),
    ];
    for (what, body, want_status, want_code) in cases {
        let response = t
            .http
            .post(t.url("orchestrator", ""))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the gateway answers");
        let (status, headers, answer) = read(response).await;
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{what}"
        );
        assert_error(status, &answer, want_status, want_code);
    }
    assert_eq!(
        t.request_keys().await,
        Vec::<String>::new(),
        "rejected submissions wrote something"
    );
    // The service keeps serving.
    let (status, _, _) = t.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_file_posing_as_a_video_fails_cleanly() {
    let t = TestStack::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = dir.path().join("holiday.mp4");
    std::fs::write(&fake, "this is not a video, just some text\n".repeat(100)).expect("written");
    let (status, _, answer) = t.submit(&json!({ "video_uri": file_uri(&fake) })).await;
    assert_error(status, &answer, 422, "invalid_media");
    assert_eq!(answer["error"]["retryable"], false);
    assert_eq!(answer["status"], "FAILED");

    // The request is terminal and says why; nothing claims to be done.
    let id: RequestId = answer["request_id"]
        .as_str()
        .expect("the failed request is named")
        .parse()
        .expect("valid");
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
    let stage = &state.stages[0];
    assert_eq!(stage.status, StageStatus::Failed);
    assert_eq!(stage.attempts.len(), 1, "bad media is not retried");
    assert_eq!(stage.attempts[0].http_status, Some(422));
    assert!(stage.outputs.is_empty());
    let written = t.request_keys().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_unknown_request_ids_are_refused() {
    let t = TestStack::start().await;
    for (path, want_status, want_code) in [
        ("/requests/..%2F..%2Fetc", 400, "invalid_request_id"),
        ("/requests/a.b", 400, "invalid_request_id"),
        ("/requests/%00", 400, "invalid_request_id"),
        ("/requests/a%2Fb", 400, "invalid_request_id"),
        (
            &format!("/requests/{}", "a".repeat(300)),
            400,
            "invalid_request_id",
        ),
        ("/requests/%C3%A9t%C3%A9", 400, "invalid_request_id"),
        (
            "/requests/0123456789abcdef0123456789abcdef",
            404,
            "not_found",
        ),
        ("/no/such/route", 404, "not_found"),
    ] {
        let (status, _, body) = t.get(path).await;
        assert_error(status, &body, want_status, want_code);
    }
}
