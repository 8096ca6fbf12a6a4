//! The submission contract users and batch scripts rely on: `Idempotency-Key`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::util::{TestStack, file_uri, read, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_runs_a_submission_once() {
    let t = TestStack::start().await;
    let body = json!({ "video_uri": file_uri(&sample("bikes.mp4")), "query": "bikes" });
    let post = |key: &str, body: &Value| {
        t.http
            .post(t.url("orchestrator", ""))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
    };

    // Three at once: one request runs; all three answer with it.
    let (a, b, c) = tokio::join!(
        post("batch-7 item 1", &body),
        post("batch-7 item 1", &body),
        post("batch-7 item 1", &body)
    );
    let mut answers = Vec::new();
    for r in [a, b, c] {
        answers.push(read(r.expect("the gateway answers")).await);
    }
    let id = answers[0].2["request_id"].clone();
    for (status, headers, body) in &answers {
        assert_eq!(*status, 200, "{body}\n{}", t.logs());
        assert_eq!(body["request_id"], id);
        assert_eq!(body["status"], "COMPLETED");
        assert_eq!(headers["x-fave-request-id"], id.as_str().unwrap());
    }
    let replayed = answers
        .iter()
        .filter(|(_, h, _)| h.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replayed, 2, "exactly one submission created the request");

    // Later, the same key and body: the same answer, nothing run again.
    let (status, headers, again) = read(post("batch-7 item 1", &body).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again, answers[0].2, "the stored final.json");
    let ids: BTreeSet<String> = t
        .request_keys()
        .await
        .iter()
        .filter_map(|k| k.split('/').nth(1).map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let state = t.state(&id.as_str().unwrap().parse().unwrap()).await;
    assert!(
        state.tasks().all(|task| task.attempts.len() == 1),
        "nothing ran twice"
    );

    // The same key with another body is refused, and writes nothing.
    let other = json!({ "video_uri": file_uri(&sample("bikes.mp4")), "query": "cars" });
    let (status, _, refused) = read(post("batch-7 item 1", &other).await.unwrap()).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    assert_eq!(refused["error"]["retryable"], false);
    let keys_after = t.request_keys().await.len();

    // A key that is not one: 400, nothing written.
    for bad in ["", &"k".repeat(256), "tab\there"] {
        let (status, _, refused) = read(post(bad, &body).await.unwrap()).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (400, Some("invalid_idempotency_key")),
            "{bad:?}"
        );
    }
    assert_eq!(t.request_keys().await.len(), keys_after);
}
