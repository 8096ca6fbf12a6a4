//! What the functions log: one JSON object per line (`FAVE_LOG_FORMAT=json`) whose fields
//! follow one request through every function by its id, and never a secret.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::util::{TestStack, file_uri, request_id, sample};

/// Every `request_id`, `stage`, `clip` and `call_id` a log line carries, in its own fields
/// or in the spans it was logged in.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    let spans = line["spans"].as_array().into_iter().flatten();
    std::iter::once(&line["fields"])
        .chain(std::iter::once(&line["span"]))
        .chain(spans)
        .find_map(|v| v[name].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_followed_across_functions_by_its_id_and_no_secret_is_logged() {
    let t = TestStack::start_with(&[
        ("FAVE_LOG_FORMAT", "json"),
        // Verbose on purpose: a secret must not leak even at debug level, where the S3
        // client logs its requests.
        (
            "RUST_LOG",
            "debug,hyper=info,hyper_util=info,h2=info,rustls=info",
        ),
    ])
    .await;

    // Credentials a user might put into URLs: a password in the userinfo and a presigned
    // URL's signature. The local server answers 404, so the submission is refused.
    let canary_password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let canary_signature = format!("sig-{}", uuid::Uuid::new_v4().simple());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
    let mut bodies = Vec::new();
    for uri in [
        format!("http://alice:{canary_password}@{addr}/v.mp4"),
        format!("http://{addr}/v.mp4?X-Amz-Signature={canary_signature}"),
    ] {
        let (status, _, body) = t.submit(&json!({ "video_uri": uri })).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "input_not_found", "{body}");
        bodies.push(body.to_string());
    }

    let (status, _, result) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bikes.mp4")), "query": "bikes" }))
        .await;
    assert_eq!(status, 200, "{result}");
    bodies.push(result.to_string());
    let id = request_id(&result);
    let state = t.state(&id).await;

    // Every call id the orchestrator recorded, per function.
    let mut recorded: BTreeSet<(String, String)> = BTreeSet::new();
    for stage in state.tasks() {
        for attempt in &stage.attempts {
            let call_id = attempt
                .call_id
                .clone()
                .expect("every attempt has a call id");
            recorded.insert((stage.function.clone(), call_id));
        }
    }
    assert!(recorded.len() >= 5, "{recorded:?}");

    let mut secrets = vec![canary_password, canary_signature];
    if crate::util::embedded_store() {
        // The embedded store's key is random; moto's ("test") would match anything.
        let key = t.stack.s3.secret_access_key.as_ref().expect("a key");
        secrets.push(key.expose().to_owned());
    }
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut orchestrator_calls = BTreeSet::new();
    for function in crate::util::FUNCTIONS {
        let path = t.dir.path().join("logs").join(format!("{function}.log"));
        let text = std::fs::read_to_string(&path).expect("a log file");
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{function}'s log holds a secret"
            );
        }
        let mut about_request = 0;
        for raw in text.lines().filter(|l| !l.trim().is_empty()) {
            let line: Value = serde_json::from_str(raw)
                .unwrap_or_else(|e| panic!("{function}: not a JSON line ({e}): {raw}"));
            if field(&line, "request_id") != Some(id.as_str()) {
                continue;
            }
            about_request += 1;
            if let Some(call_id) = field(&line, "call_id") {
                if function == "orchestrator" {
                    orchestrator_calls.insert(call_id.to_owned());
                } else {
                    assert!(field(&line, "stage").is_some(), "{raw}");
                    seen.insert((function.to_owned(), call_id.to_owned()));
                }
            }
        }
        assert!(about_request > 0, "{function} logged nothing about {id}");
    }
    // Each function logged each call it served under the call id the orchestrator
    // recorded; the orchestrator logged every one of them too.
    assert_eq!(seen, recorded);
    let recorded_ids: BTreeSet<String> = recorded.into_iter().map(|(_, c)| c).collect();
    assert_eq!(orchestrator_calls, recorded_ids);
    for body in &bodies {
        for secret in &secrets {
            assert!(!body.contains(secret.as_str()), "an answer holds a secret");
        }
    }
}
