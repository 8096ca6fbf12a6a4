//! The submission contract users and batch scripts rely on: `Idempotency-Key`, and
//! `/async-function` with `X-Callback-Url`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;
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

    // The orchestrator's metrics saw one request, driven to its end, each stage once.
    let response = t
        .http
        .get(t.url("orchestrator", "/metrics"))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    let text = response.text().await.expect("a body");
    for line in [
        "fave_requests_accepted_total 1",
        "fave_requests_ended_total{status=\"COMPLETED\"} 1",
        "fave_drivers_in_flight 0",
        "fave_stage_calls_total{stage=\"stage-ffmpeg-0\",outcome=\"succeeded\"} 1",
        "fave_stage_calls_total{stage=\"stage-detect\",outcome=\"succeeded\"} 1",
        "fave_stage_retries_total 0",
        "fave_stage_call_duration_seconds_count{stage=\"stage-audio\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Every write of state.json is counted: its creation, then one per revision.
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let state = t
        .state(&id.as_str().expect("an id").parse().expect("an id"))
        .await;
    assert_eq!(counter("fave_state_writes_total"), state.revision + 1);
    let last = serde_json::to_vec(&state).expect("serialises").len() as u64;
    let written = counter("fave_state_written_bytes_total");
    assert!(
        written > last && written <= last * (state.revision + 1),
        "{written} bytes for {} writes of at most {last}",
        state.revision + 1
    );
}

/// What a callback sink received: headers and body of each POST.
pub type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// A small HTTP server on loopback that records every POST it gets.
pub async fn callback_sink() -> (String, Received) {
    callback_sink_answering(0, 200).await
}

/// A sink that answers 503 to the first `failures` POSTs and `then` afterwards.
async fn callback_sink_answering(failures: usize, then: u16) -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/done",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let mut all = sink.lock().expect("not poisoned");
                all.push((headers, body));
                let status = if all.len() <= failures { 503 } else { then };
                axum::http::StatusCode::from_u16(status).expect("a status")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}/done", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Submits a text file posing as a video, with `callback_url`: the request fails at once
/// (422, `invalid_media`) and its callback is due. Returns the answer.
async fn submit_not_a_video(t: &TestStack, callback_url: &str) -> Value {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = dir.path().join("fake.mp4");
    std::fs::write(&fake, "not a video").expect("written");
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": file_uri(&fake), "callback_url": callback_url }))
        .await;
    assert_eq!(status, 422, "{answer}");
    answer
}

/// Waits until `received` holds at least `n` POSTs.
pub async fn wait_for_posts(received: &Received, n: usize) -> Vec<(HeaderMap, Value)> {
    for _ in 0..600 {
        let all = received.lock().expect("not poisoned").clone();
        if all.len() >= n {
            return all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} callbacks arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fave_posts_the_result_to_the_callback_url_retrying_until_it_is_taken() {
    let t = TestStack::start().await;
    // The receiver is down for two attempts.
    let (sink_url, received) = callback_sink_answering(2, 200).await;
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bikes.mp4")), "callback_url": sink_url }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    let id = answer["request_id"].as_str().expect("an id").to_owned();
    let posts = wait_for_posts(&received, 3).await;
    for (headers, body) in &posts {
        assert_eq!(headers["x-fave-request-id"], id.as_str());
        assert_eq!(headers["x-fave-status"], "COMPLETED");
        assert_eq!(body, &answer, "the callback carries final.json");
    }
    // Delivered: recorded in state.json, and the request leaves the active index.
    let mut state = t.state(&id.parse().expect("an id")).await;
    for _ in 0..100 {
        if state
            .callback
            .as_ref()
            .is_some_and(|c| c.delivered_at.is_some())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        state = t.state(&id.parse().expect("an id")).await;
    }
    let delivery = state.callback.expect("recorded");
    assert_eq!((delivery.attempts, delivery.last_status), (3, Some(200)));
    assert!(delivery.delivered_at.is_some() && !delivery.gave_up);
    let mut active = vec![String::new()];
    for _ in 0..100 {
        active = t
            .store()
            .list_keys(fave_common::keys::ACTIVE_PREFIX)
            .await
            .expect("listing works");
        if active.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        active.is_empty(),
        "the active index empties once the callback is delivered"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        received.lock().expect("not poisoned").len(),
        3,
        "nothing after delivery"
    );

    // A request that fails reports its failure; a receiver that refuses (400) is not
    // asked again.
    let (refusing_url, refused) = callback_sink_answering(0, 400).await;
    let answer = submit_not_a_video(&t, &refusing_url).await;
    let posts = wait_for_posts(&refused, 1).await;
    assert_eq!(posts[0].0["x-fave-status"], "FAILED");
    assert_eq!(posts[0].1["error"]["code"], "invalid_media");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(refused.lock().expect("not poisoned").len(), 1);
    let id = answer["request_id"].as_str().expect("an id");
    let delivery = t
        .state(&id.parse().expect("an id"))
        .await
        .callback
        .expect("recorded");
    assert!(delivery.gave_up && delivery.attempts == 1, "{delivery:?}");

    // A callback URL that is not one is refused with the submission.
    let (status, _, refused) = t
        .submit(
            &json!({ "video_uri": file_uri(&sample("bikes.mp4")), "callback_url": "ftp://x/y" }),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("invalid_callback_url"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_function_answers_202_and_posts_the_result_to_the_callback() {
    let t = TestStack::start().await;
    let (sink_url, received) = callback_sink().await;
    let body = json!({ "video_uri": file_uri(&sample("bikes.mp4")) });
    let url = format!("{}async-function/orchestrator", t.stack.gateway_url);
    let clock = std::time::Instant::now();
    let call_id = post_async(&t, &sink_url, &body).await;
    assert!(
        clock.elapsed() < std::time::Duration::from_secs(2),
        "202 at once, not after the run"
    );

    let mut delivered = None;
    for _ in 0..600 {
        if let Some(d) = received.lock().expect("not poisoned").first().cloned() {
            delivered = Some(d);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (headers, result) = delivered.expect("the callback arrives");
    assert_eq!(headers["x-call-id"], call_id.as_str());
    assert_eq!(headers["x-function-status"], "200");
    assert_eq!(headers["x-function-name"], "orchestrator");
    assert!(headers.contains_key("x-duration-seconds"));
    assert_eq!(result["status"], "COMPLETED", "{result}");
    let id = result["request_id"].as_str().expect("an id");
    let (status, _, stored) = t.get(&format!("/requests/{id}/result")).await;
    assert_eq!(
        (status, stored),
        (200, result),
        "the callback carries final.json"
    );
    assert_eq!(
        received.lock().expect("not poisoned").len(),
        1,
        "delivered once"
    );

    // A callback URL that is not one is refused before anything runs.
    let (status, headers, refused) = read(
        t.http
            .post(&url)
            .header("X-Callback-Url", "ftp://example/x")
            .json(&body)
            .send()
            .await
            .expect("the gateway answers"),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_callback_url"))
    );
    assert!(headers.contains_key("x-openfaas-internal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_listed_a_page_at_a_time_and_filtered_by_status() {
    let t = TestStack::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let not_a_video = dir.path().join("notes.mp4");
    std::fs::write(&not_a_video, "these are not frames").expect("written");
    let mut ids = Vec::new();
    for video in [sample("bikes.mp4"), not_a_video, sample("bikes.mp4")] {
        let (_, _, answer) = t.submit(&json!({ "video_uri": file_uri(&video) })).await;
        ids.push(answer["request_id"].as_str().expect("an id").to_owned());
    }

    // Two pages of two, in id order, together every request once.
    let (status, _, first) = t.get("/requests?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more to come")
        .to_owned();
    let (status, _, second) = t.get(&format!("/requests?limit=2&cursor={cursor}")).await;
    assert_eq!(status, 200, "{second}");
    assert!(second["next_cursor"].is_null(), "{second}");
    let listed: Vec<&str> = [&first, &second]
        .iter()
        .flat_map(|p| p["requests"].as_array().expect("a list"))
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);

    // By status: the one that failed, with its code.
    let (status, _, failed) = t.get("/requests?status=FAILED").await;
    assert_eq!(status, 200);
    let failed = failed["requests"].as_array().expect("a list");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["request_id"], ids[1].as_str());
    assert_eq!(failed[0]["error_code"], "invalid_media");
    let (_, _, done) = t.get("/requests?status=COMPLETED&limit=10").await;
    assert_eq!(done["requests"].as_array().map(Vec::len), Some(2));

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1000", "invalid_limit"),
        ("status=DONE", "invalid_query_string"),
        ("cursor=..%2F..%2Fetc", "invalid_request_id"),
        ("colour=blue", "invalid_query_string"),
    ] {
        let (status, _, refused) = t.get(&format!("/requests?{query}")).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_still_calls_back_through_the_resumer() {
    let t = TestStack::start_with(&[("FAVE_RESUME_INTERVAL_MS", "200")]).await;
    let (sink_url, received) = callback_sink().await;
    let body = json!({ "video_uri": file_uri(&sample("vtest.avi")), "callback_url": sink_url });
    let (http, url) = (t.http.clone(), t.url("orchestrator", ""));
    let post = tokio::spawn(async move { http.post(url).json(&body).send().await });
    let states = t.wait_for_running_stage().await;
    let id = states[0].request_id.to_string();
    let (status, _, cancelled) = t.post(&format!("/requests/{id}/cancel")).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("CANCELLED"))
    );
    // The cancel route leaves the delivery to the resumer, which finds the request again
    // because its callback is due.
    let posts = wait_for_posts(&received, 1).await;
    assert_eq!(posts[0].0["x-fave-request-id"], id.as_str());
    assert_eq!(posts[0].0["x-fave-status"], "CANCELLED");
    assert_eq!(posts[0].1["status"], "CANCELLED");
    let _ = post.await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        received.lock().expect("not poisoned").len(),
        1,
        "delivered once"
    );
}

/// POSTs `body` to `/async-function/orchestrator` with `X-Callback-Url: sink_url`; checks
/// the gateway's 202 and returns the call id it gave.
async fn post_async(t: &TestStack, sink_url: &str, body: &Value) -> String {
    let url = format!("{}async-function/orchestrator", t.stack.gateway_url);
    let (status, headers, _) = read(
        t.http
            .post(&url)
            .header("X-Callback-Url", sink_url)
            .json(body)
            .send()
            .await
            .expect("the gateway answers"),
    )
    .await;
    assert_eq!(status, 202);
    headers["x-call-id"].to_str().expect("ascii").to_owned()
}

/// A stack of no-op stages that take `work_ms` each, three in a row: a run of a known length,
/// with the real orchestrator, gateway and store.
async fn slow_noop_stack(work_ms: &str, vars: &[(&str, &str)]) -> TestStack {
    TestStack::start_spec(crate::util::StackSpec {
        stack_file: Some(crate::util::repo_root().join("bench/noop.yml")),
        env: &[
            ("FAVE_NOOP_STEPS", "3"),
            ("FAVE_NOOP_WORK_MS", work_ms),
            ("FAVE_SYNC_WINDOW_SECS", "1"),
        ],
        vars,
        ..crate::util::StackSpec::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_run_longer_than_the_sync_window_calls_back_with_the_result_on_every_delivery() {
    // A run of about 4.5 s, a sync window of 1 s, and the queue's ack wait at 2 s: the
    // delivery outlasts the ack wait and is delivered again, as NATS does.
    let t = slow_noop_stack("1500", &[("FAVE_GATEWAY_ACK_WAIT_SECS", "2")]).await;
    let (sink_url, received) = callback_sink().await;
    let body = json!({ "video_uri": file_uri(&sample("bikes.mp4")) });
    let call_id = post_async(&t, &sink_url, &body).await;
    let posts = wait_for_posts(&received, 2).await;
    // Every delivery was held for the end, so every callback carries the result.
    let id = posts[0].1["request_id"].as_str().expect("an id").to_owned();
    for (headers, result) in &posts {
        assert_eq!(headers["x-function-status"], "200", "{result}");
        assert_eq!(headers["x-call-id"], call_id.as_str());
        assert_eq!(result["status"], "COMPLETED", "{result}");
        assert_eq!(
            result["request_id"],
            id.as_str(),
            "one request for one call"
        );
    }
    let (status, _, stored) = t.get(&format!("/requests/{id}/result")).await;
    assert_eq!(
        (status, &stored),
        (200, &posts[0].1),
        "the callback is final.json"
    );
    // The redelivery started no second request, and ran no stage twice.
    let states = crate::util::all_states(t.store()).await;
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(
        states[0].tasks().all(|task| task.attempts.len() == 1),
        "{:?}",
        states[0]
    );
    eprintln!("{} deliveries, one request ({id})", posts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_caller_whose_orchestrator_died_finds_its_request_by_resending_its_call() {
    let t = TestStack::start_spec(crate::util::StackSpec {
        stack_file: Some(crate::util::repo_root().join("bench/noop.yml")),
        env: &[("FAVE_NOOP_STEPS", "3"), ("FAVE_NOOP_WORK_MS", "1000")],
        ..crate::util::StackSpec::default()
    })
    .await;
    let body = json!({ "video_uri": file_uri(&sample("bikes.mp4")) });
    let call = t.http.post(t.url("orchestrator", "")).json(&body).send();
    let killer = async {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let orchestrator = t.function("orchestrator");
        crate::util::signal(
            orchestrator.pid().expect("running"),
            rustix::process::Signal::KILL,
        );
    };
    let (answer, ()) = tokio::join!(call, killer);
    let (status, headers, lost) = read(answer.expect("the gateway answers")).await;
    assert!(
        status >= 500,
        "the call died with its orchestrator: {status} {lost}"
    );
    // The gateway names the call in its answer, whatever became of it.
    let call_id = headers["x-call-id"].to_str().expect("ascii").to_owned();
    // Resending the same call (the same body, the same X-Call-Id) answers with the request
    // it started, which the restarted orchestrator resumed; while the orchestrator is still
    // restarting, the gateway's retryable 502 says to send it again, as a client would.
    let mut resends = 0;
    let (status, headers, result) = loop {
        resends += 1;
        let answer = read(
            t.http
                .post(t.url("orchestrator", ""))
                .header("X-Call-Id", &call_id)
                .json(&body)
                .send()
                .await
                .expect("the gateway answers"),
        )
        .await;
        if answer.2["error"]["retryable"] != true || resends == 40 {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(status, 200, "{result}\n{}", t.logs());
    assert_eq!(result["status"], "COMPLETED", "{result}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let states = crate::util::all_states(t.store()).await;
    assert_eq!(states.len(), 1, "one request for one call: {states:?}");
    assert_eq!(result["request_id"], states[0].request_id.as_str());
}

/// A video URL's password and presigned signature, and a callback URL's token, are used
/// (the server gets the password, the receiver is called at its own URL) and then kept
/// nowhere: not in any answer, not in final.json or the callback's body, not in any object
/// left in the bucket once the request owes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_urls_are_used_and_then_kept_nowhere() {
    let t = TestStack::start().await;
    let video = std::fs::read(sample("bikes.mp4")).expect("readable");
    let seen_auth: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = seen_auth.clone();
    let server = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let (video, seen) = (video.clone(), seen.clone());
        async move {
            // Only the video's own calls: a port freed by another test's stopped store can
            // be this server's, and that stack's S3 calls (signed) may still arrive here.
            if let Some(auth) = headers
                .get("authorization")
                .filter(|_| uri.path() == "/bikes.mp4")
            {
                seen.lock()
                    .expect("not poisoned")
                    .push(auth.to_str().unwrap_or_default().to_owned());
            }
            video
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, server).await });
    let (sink_url, received) = callback_sink().await;
    let needles = ["pa55word", "s1gn4ture", "t0k3n"];
    let video_uri = format!(
        "http://viewer:pa55word@{addr}/bikes.mp4?X-Amz-Signature=s1gn4ture&X-Amz-Expires=60"
    );
    let callback_url = format!("{sink_url}?token=t0k3n");
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": video_uri, "callback_url": callback_url }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    let id = answer["request_id"].as_str().expect("an id").to_owned();
    let posts = wait_for_posts(&received, 1).await;
    // Used: the video server got the password, and the callback went to its whole URL
    // (the sink's route answered it).
    let auth = seen_auth.lock().expect("not poisoned").clone();
    assert_eq!(
        auth,
        ["Basic dmlld2VyOnBhNTV3b3Jk"],
        "viewer:pa55word, base64"
    );
    assert_eq!(posts[0].1["status"], "COMPLETED");
    // Kept nowhere: every answer, the callback's body, every object of the bucket.
    let mut shown = vec![answer.to_string(), posts[0].1.to_string()];
    for path in [
        "/requests".to_owned(),
        format!("/requests/{id}"),
        format!("/requests/{id}/result"),
    ] {
        let (status, _, body) = t.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        shown.push(body.to_string());
    }
    assert!(
        answer["submission"]["video_uri"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("http://{addr}/bikes.mp4"))),
        "the URL is still shown, without its secrets: {answer}"
    );
    // The request owes nothing more once its callback is recorded; give the record a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for key in t.store().list_keys("").await.expect("listing works") {
        if key.ends_with(".json") {
            let (value, _) = t
                .store()
                .get_json::<Value>(&key)
                .await
                .expect("readable")
                .expect("there");
            shown.push(format!("{key}: {value}"));
        }
    }
    for text in &shown {
        for needle in needles {
            assert!(!text.contains(needle), "{needle} kept in {text}");
        }
    }
    assert!(
        !t.store()
            .list_keys("")
            .await
            .expect("listing works")
            .iter()
            .any(|k| k.ends_with("credentials.json")),
        "nothing is kept once the request owes nothing"
    );
}

/// Three orchestrator replicas on one bucket, each of which finds the ended request in the
/// active index: its callback is still sent one attempt at a time, and no more often than
/// the one budget (8 attempts) allows, to a receiver that always answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_has_one_budget_and_one_attempt_at_a_time_across_replicas() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let posts = Arc::new(AtomicUsize::new(0));
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let app = {
        let (posts, now, most) = (posts.clone(), now.clone(), most.clone());
        axum::Router::new().fallback(move || {
            let (posts, now, most) = (posts.clone(), now.clone(), most.clone());
            async move {
                posts.fetch_add(1, Ordering::SeqCst);
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(at_once, Ordering::SeqCst);
                // Long enough for another replica to start a second attempt, were it to.
                tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}/done", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let t = TestStack::start_with_replicas(crate::util::FAST_RESUME, &[("orchestrator", 3)]).await;
    let answer = submit_not_a_video(&t, &url).await;
    let id: fave_common::ids::RequestId = crate::util::request_id(&answer);
    let mut delivery = None;
    for _ in 0..900 {
        delivery = t.state(&id).await.callback.filter(|c| c.gave_up);
        if delivery.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let delivery = delivery.expect("delivery was given up within 90 s");
    // Late attempts would show up after the give-up: wait a little for them.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (sent, at_once) = (posts.load(Ordering::SeqCst), most.load(Ordering::SeqCst));
    eprintln!("3 replicas: {sent} callback attempts, at most {at_once} at once");
    assert_eq!(delivery.attempts, 8, "{delivery:?}");
    assert_eq!(sent, 8, "one budget for the request");
    assert_eq!(at_once, 1, "one attempt at a time");
    assert!(
        t.store()
            .list_keys(fave_common::keys::ACTIVE_PREFIX)
            .await
            .expect("listing")
            .is_empty(),
        "given up, the request leaves the active index"
    );
}
