//! A client nobody here wrote: `tests/clients/curl.sh` drives the stack with curl, the way
//! OpenFaaS's docs call functions, and this checks what it got.

use std::path::Path;

use serde_json::Value;

use crate::api::{callback_sink, wait_for_posts};
use crate::util::{TestStack, file_uri, repo_root, sample};

fn step(dir: &Path, name: &str) -> (u16, String, Value) {
    let read = |ext: &str| {
        std::fs::read_to_string(dir.join(format!("{name}.{ext}")))
            .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"))
    };
    let code = read("code").trim().parse().expect("a status code");
    let body = read("body");
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (code, read("headers").to_ascii_lowercase(), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_as_the_openfaas_docs_use_it() {
    let t = TestStack::start().await;
    let (sink_url, received) = callback_sink().await;
    let out = tempfile::tempdir().expect("a temp dir");
    let video = file_uri(&sample("bikes.mp4"));
    let status = tokio::process::Command::new(repo_root().join("tests/clients/curl.sh"))
        .args([out.path().to_str().expect("utf-8"), &video, &sink_url])
        .env(
            "OPENFAAS_URL",
            t.stack.gateway_url.as_str().trim_end_matches('/'),
        )
        .status()
        .await
        .expect("bash and curl run");
    assert!(status.success(), "{}", t.logs());
    let dir = out.path();

    let (code, headers, sync) = step(dir, "sync");
    assert_eq!(code, 200, "{sync}");
    assert_eq!(sync["status"], "COMPLETED");
    let id = sync["request_id"].as_str().expect("an id");
    assert!(headers.contains(&format!("x-fave-request-id: {id}")));
    let (code, headers, replay) = step(dir, "replay");
    assert_eq!((code, &replay), (200, &sync));
    assert!(headers.contains("idempotent-replayed: true"));
    let (code, _, state) = step(dir, "status");
    assert_eq!((code, state["status"].as_str()), (200, Some("COMPLETED")));
    let (code, _, result) = step(dir, "result");
    assert_eq!((code, &result), (200, &sync));
    let (code, _, list) = step(dir, "list");
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["requests"].as_array().map(Vec::len), Some(1));

    let (code, _, chunked) = step(dir, "chunked");
    assert_eq!((code, chunked["status"].as_str()), (200, Some("COMPLETED")));
    assert_eq!(chunked["answer"]["query"], "cars", "{chunked}");

    let (code, headers, _) = step(dir, "async");
    assert_eq!(code, 202);
    let call_id = headers
        .lines()
        .find_map(|l| l.strip_prefix("x-call-id: "))
        .expect("an X-Call-Id")
        .trim()
        .to_owned();
    let posts = wait_for_posts(&received, 1).await;
    let (headers, body) = &posts[0];
    assert_eq!(headers["x-call-id"], call_id.as_str());
    assert_eq!(headers["x-function-status"], "200");
    assert_eq!(body["status"], "COMPLETED");

    let (code, headers, accepted) = step(dir, "prefer");
    assert_eq!((code, accepted["status"].as_str()), (202, Some("RUNNING")));
    let id = accepted["request_id"].as_str().expect("an id");
    assert!(
        headers.contains(&format!("location: /function/orchestrator/requests/{id}")),
        "{headers}"
    );

    let (code, _, bad) = step(dir, "bad");
    assert_eq!(
        (code, bad["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let (code, _, metrics) = step(dir, "metrics");
    assert_eq!(code, 200);
    let metrics = metrics.as_str().expect("text");
    // sync, chunked, async and prefer: four accepted (the replay is not a new one).
    assert!(
        metrics.contains("fave_requests_accepted_total 4"),
        "{metrics}"
    );
}
