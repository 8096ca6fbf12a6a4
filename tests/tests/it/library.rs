//! The video library on the real stack: a video is analysed once per set of parameters and
//! later requests and `POST /query` are answered from what was kept, with no stage run;
//! concurrent first requests make one analysis; a changed parameter makes another; a
//! deleted video leaves nothing of itself in the bucket.

use std::collections::BTreeSet;
use std::time::Instant;

use fave_common::state::RequestState;
use serde_json::{Value, json};

use crate::util::{StackSpec, TestStack, file_uri, log_count, request_id, sample};

/// Stage runs begun so far, over every function's log.
fn stage_runs(t: &TestStack) -> usize {
    log_count(t, "stage work started").values().sum()
}

async fn sha256_of(path: &std::path::Path) -> String {
    fave_common::storage::sha256_file(path)
        .await
        .expect("the sample reads")
        .1
}

/// Submits `uri` with `query` (none when empty) and waits for its 200.
async fn submit(t: &TestStack, uri: &str, query: &str) -> Value {
    let body = if query.is_empty() {
        json!({"video_uri": uri})
    } else {
        json!({"video_uri": uri, "query": query})
    };
    let (status, _, answer) = t.submit(&body).await;
    assert_eq!(status, 200, "{uri}: {answer}\n{}", t.logs());
    answer
}

async fn query(t: &TestStack, body: &Value) -> (u16, Value) {
    let response = t
        .http
        .post(t.url("orchestrator", "/query"))
        .json(body)
        .send()
        .await
        .expect("the gateway answers");
    let (status, _, body) = crate::util::read(response).await;
    (status, body)
}

/// The labels of each clip of an answer, by clip id.
fn clip_labels(answer: &Value) -> Vec<(String, BTreeSet<String>)> {
    answer["clips"]
        .as_array()
        .expect("clips")
        .iter()
        .map(|c| {
            let labels = c["labels"]
                .as_object()
                .expect("labels")
                .keys()
                .cloned()
                .collect();
            (c["clip"].as_str().expect("clip").to_owned(), labels)
        })
        .collect()
}

fn answered_clips(answer: &Value) -> Vec<String> {
    answer["answer"]["clips"]
        .as_array()
        .expect("answer clips")
        .iter()
        .map(|m| m["clip"].as_str().expect("clip").to_owned())
        .collect()
}

/// The same bytes under another URI, with another query: no stage runs, the answer is to
/// the new query, from the first request's analysis; the library lists the video once,
/// with both URIs and both requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_seen_before_is_answered_from_the_library_without_running_a_stage() {
    let t = TestStack::start().await;
    let original = sample("bikes.mp4");
    let copy = t.dir.path().join("the-same-bikes.mp4");
    std::fs::copy(&original, &copy).expect("a copy");
    let video = sha256_of(&original).await;

    let first = submit(&t, &file_uri(&original), "find bicycles").await;
    assert_eq!(first["analysis"]["video"], video.as_str());
    assert_eq!(first["analysis"]["reused"], false);
    let runs = stage_runs(&t);
    assert!(runs >= 4, "the first request ran its stages ({runs})");

    let clock = Instant::now();
    let second = submit(&t, &file_uri(&copy), "people").await;
    let took = clock.elapsed();
    assert_eq!(stage_runs(&t), runs, "no stage ran for the second request");
    assert_eq!(second["analysis"]["reused"], true);
    assert_eq!(second["analysis"]["video"], video.as_str());
    assert_eq!(
        second["analysis"]["analysis"],
        first["analysis"]["analysis"]
    );
    assert_eq!(second["stages"], json!({}), "no stage is reported");
    assert_eq!(
        clip_labels(&second),
        clip_labels(&first),
        "the same analysis"
    );
    assert_eq!(second["answer"]["labels"], json!(["person"]));
    // Its own query answered: exactly the clips in which a person was seen.
    let with_people: BTreeSet<String> = clip_labels(&first)
        .into_iter()
        .filter(|(_, labels)| labels.contains("person"))
        .map(|(clip, _)| clip)
        .collect();
    assert!(!with_people.is_empty(), "bikes.mp4 shows people: {first}");
    let answered: BTreeSet<String> = answered_clips(&second).into_iter().collect();
    assert_eq!(answered, with_people);
    println!(
        "second request answered from the library in {:.0} ms (drive {} ms); first took {} ms",
        took.as_secs_f64() * 1e3,
        second["timings"]["drive_ms"],
        first["timings"]["drive_ms"]
    );

    let (status, _, listed) = t.get("/videos").await;
    assert_eq!(status, 200, "{listed}");
    let videos = listed["videos"].as_array().expect("videos");
    assert_eq!(videos.len(), 1, "{listed}");
    assert_eq!(videos[0]["video"], video.as_str());
    assert_eq!(videos[0]["uri"], file_uri(&copy).as_str(), "the latest URI");
    let (status, _, detail) = t.get(&format!("/videos/{video}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["record"]["uris"].as_array().map(Vec::len), Some(2));
    let requests: BTreeSet<String> = detail["record"]["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect();
    let ids: BTreeSet<String> = [&first, &second]
        .iter()
        .map(|a| request_id(a).to_string())
        .collect();
    assert_eq!(requests, ids);
    assert_eq!(detail["analyses"].as_array().map(Vec::len), Some(1));
    assert_eq!(detail["analyses"][0]["request_id"], first["request_id"]);

    // The library lost (its indexes, markers and records gone from the bucket) and made
    // again from the requests' outputs: queries find the video, and it is not analysed again.
    for prefix in ["videos/", "index/library"] {
        for key in t.store().list_keys(prefix).await.expect("a listing") {
            if !key.contains("/input/") {
                t.store().delete(&key).await.expect("deleted");
            }
        }
    }
    let (_, answer) = query(&t, &json!({"query": "people"})).await;
    assert_eq!(answer["videos_searched"], 0, "{answer}");
    let (status, _, rebuilt) = t.post("/videos/rebuild").await;
    assert_eq!(status, 200, "{rebuilt}");
    assert_eq!(
        (&rebuilt["analyses"], &rebuilt["requests"]),
        (&json!(1), &json!(2)),
        "{rebuilt}"
    );
    let (_, answer) = query(&t, &json!({"query": "people"})).await;
    assert_eq!(answer["videos_searched"], 1, "{answer}");
    let third = submit(&t, &file_uri(&original), "bicycles").await;
    assert_eq!(third["analysis"]["reused"], true);
    assert_eq!(
        stage_runs(&t),
        runs,
        "no stage ran after the rebuild either"
    );
}

/// Two first submissions of one new video at once: one makes the analysis, the other
/// waits for it and is answered from it; every stage task ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_first_submissions_of_one_video_at_once_make_one_analysis() {
    let t = TestStack::start().await;
    let uri = file_uri(&sample("bikes.mp4"));
    let (a, b) = tokio::join!(submit(&t, &uri, "bicycles"), submit(&t, &uri, "people"));
    let reused: Vec<bool> = [&a, &b]
        .iter()
        .map(|x| x["analysis"]["reused"].as_bool().expect("reused"))
        .collect();
    assert_eq!(
        reused.iter().filter(|r| **r).count(),
        1,
        "one made it, one reused it: {reused:?}"
    );
    let maker = if reused[0] { &b } else { &a };
    let (state, _) = t
        .store()
        .get_json::<RequestState>(&format!(
            "requests/{}/metadata/state.json",
            request_id(maker)
        ))
        .await
        .expect("the store answers")
        .expect("the maker's state");
    let tasks = state.stages.len() + state.clips.iter().map(|c| c.tasks.len()).sum::<usize>();
    let runs = log_count(&t, "stage work started");
    assert_eq!(
        runs.values().sum::<usize>(),
        tasks,
        "each of the maker's {tasks} tasks ran once, and nothing else: {runs:?}"
    );
    assert_eq!(clip_labels(&a), clip_labels(&b));
}

/// A stack with another frame rate sharing the first one's store: the same video gets a
/// new analysis (its stages run), which is reused in turn; the library holds both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_parameter_makes_a_new_analysis() {
    let a = TestStack::start().await;
    let s3 = a.stack.s3.clone();
    let b = TestStack::start_spec(StackSpec {
        // Its own replica names: a replica that finds its own name on a lease takes it over.
        env: &[("FAVE_FRAMES_PER_SEC", "2"), ("FAVE_STACK_NAME", "b")],
        store: Some(&s3),
        ..StackSpec::default()
    })
    .await;
    let uri = file_uri(&sample("bigbuckbunny.mp4"));
    let video = sha256_of(&sample("bigbuckbunny.mp4")).await;
    let at_one = submit(&a, &uri, "rabbit").await;
    assert_eq!(at_one["analysis"]["reused"], false);
    let at_two = submit(&b, &uri, "rabbit").await;
    assert_eq!(at_two["analysis"]["reused"], false, "a new analysis");
    assert!(stage_runs(&b) > 0, "its stages ran");
    assert_ne!(
        at_one["analysis"]["analysis"],
        at_two["analysis"]["analysis"]
    );
    let frames = |x: &Value| -> u64 {
        x["clips"]
            .as_array()
            .expect("clips")
            .iter()
            .map(|c| c["frames"].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(
        frames(&at_two) > frames(&at_one),
        "twice the frames per second: {} vs {}",
        frames(&at_two),
        frames(&at_one)
    );
    let runs = stage_runs(&b);
    let again = submit(&b, &uri, "dog").await;
    assert_eq!(again["analysis"]["reused"], true);
    assert_eq!(
        again["analysis"]["analysis"],
        at_two["analysis"]["analysis"]
    );
    assert_eq!(stage_runs(&b), runs);
    let (status, _, detail) = a.get(&format!("/videos/{video}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["analyses"].as_array().map(Vec::len),
        Some(2),
        "{detail}"
    );
}

/// Three different videos, then queries over the library: each ranks the video that shows
/// it first, and naming a video keeps the answer to it; then `fave search` prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_three_videos_ranks_the_right_one_first() {
    let t = TestStack::start().await;
    let (mut ids, mut made) = (Vec::new(), Vec::new());
    for name in ["vtest.avi", "bikes.mp4", "bigbuckbunny.mp4"] {
        let answer = submit(&t, &file_uri(&sample(name)), "").await;
        ids.push(
            answer["analysis"]["video"]
                .as_str()
                .expect("video")
                .to_owned(),
        );
        made.push(answer);
    }
    let [vtest, bikes, _bunny] = [&ids[0], &ids[1], &ids[2]];
    for (q, expected) in [("bicycle", bikes), ("cars", vtest)] {
        let (status, answer) = query(&t, &json!({"query": q})).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["videos_searched"], 3);
        let moments = answer["moments"].as_array().expect("moments");
        assert!(!moments.is_empty(), "{q}: {answer}");
        assert_eq!(&moments[0]["video"], expected.as_str(), "{q}: {answer}");
        assert!(
            moments[0]["key"]
                .as_str()
                .is_some_and(|k| k.ends_with("video.mp4"))
        );
        println!("{q}: {} moments in {} ms", moments.len(), answer["took_ms"]);
    }
    // A count: vtest.avi's last clip is the one with eight people or more in one frame.
    let (status, answer) = query(&t, &json!({"query": "at least eight people"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["terms"][0]["at_least"], 8, "{answer}");
    let moments = answer["moments"].as_array().expect("moments");
    assert_eq!(moments.len(), 1, "{answer}");
    assert_eq!(
        (&moments[0]["video"], &moments[0]["clip"]),
        (&json!(vtest), &json!("clip-0003")),
        "{answer}"
    );
    // Together in one frame, and not at all.
    let (status, answer) = query(&t, &json!({"query": "a person and a car"})).await;
    assert_eq!(
        (status, &answer["together"]),
        (200, &json!(true)),
        "{answer}"
    );
    let moments = answer["moments"].as_array().expect("moments");
    assert!(
        moments
            .iter()
            .filter(|m| m["video"] == json!(vtest))
            .count()
            == 4
            && moments.iter().all(|m| m["why"].as_array().is_some_and(|w| w
                .iter()
                .any(|r| r.as_str().is_some_and(|r| r.contains("together"))))),
        "{answer}"
    );
    // Not at all: exactly the library's clips in which no car was seen.
    let (status, answer) = query(&t, &json!({"query": "scenes without cars", "limit": 1000})).await;
    assert_eq!(
        (status, &answer["without"]),
        (200, &json!(["car"])),
        "{answer}"
    );
    let found: BTreeSet<(String, String)> = answer["moments"]
        .as_array()
        .expect("moments")
        .iter()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (text("video"), text("clip"))
        })
        .collect();
    let carless: BTreeSet<(String, String)> = made
        .iter()
        .zip(&ids)
        .flat_map(|(a, id)| {
            clip_labels(a)
                .into_iter()
                .filter(|(_, labels)| !labels.contains("car"))
                .map(move |(clip, _)| (id.clone(), clip))
        })
        .collect();
    assert!(!carless.is_empty(), "some clip of the library shows no car");
    assert_eq!(found, carless, "{answer}");
    assert!(
        found.iter().all(|(v, _)| v != vtest),
        "every clip of vtest.avi shows cars"
    );
    // Only the named video, and a limit.
    let (status, answer) = query(
        &t,
        &json!({"query": "people", "videos": [bikes], "limit": 1}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let moments = answer["moments"].as_array().expect("moments");
    assert_eq!(moments.len(), 1, "{answer}");
    assert_eq!(&moments[0]["video"], bikes.as_str());

    let out = tokio::process::Command::new(crate::util::bin_dir().join("fave"))
        .args(["search", "cars", "--json"])
        .env("OPENFAAS_URL", t.stack.gateway_url.as_str())
        .output()
        .await
        .expect("fave runs");
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(&printed["moments"][0]["video"], vtest.as_str());
}

/// `DELETE /videos/{id}`: nothing of the video is left in the bucket (its analysis, its
/// index entry, the requests' input copies, clips, frames and results); the requests'
/// records remain and say so; the library no longer finds it; a new submission analyses
/// it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_video_leaves_none_of_its_keys_in_the_bucket() {
    let t = TestStack::start().await;
    let uri = file_uri(&sample("bigbuckbunny.mp4"));
    let first = submit(&t, &uri, "rabbit").await;
    let second = submit(&t, &uri, "people").await;
    assert_eq!(second["analysis"]["reused"], true);
    let video = first["analysis"]["video"]
        .as_str()
        .expect("video")
        .to_owned();
    let requests = [request_id(&first), request_id(&second)];

    let (status, deleted) = delete_video(&t, &video).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["requests"].as_array().map(Vec::len), Some(2));

    let keys = t.store().list_keys("").await.expect("a listing");
    let left: Vec<&String> = keys
        .iter()
        .filter(|k| {
            k.contains(&video)
                || requests.iter().any(|r| {
                    k.starts_with(&format!("requests/{r}/")) && !k.ends_with("/metadata/state.json")
                })
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for r in &requests {
        let (status, _, state) = t.get(&format!("/requests/{r}")).await;
        assert_eq!(status, 200);
        assert!(state["video_deleted_at"].is_string(), "{state}");
        assert!(
            state["input"].is_null() && state["clips"] == json!([]),
            "{state}"
        );
        let (status, _, gone) = t.get(&format!("/requests/{r}/result")).await;
        assert_eq!(
            (status, &gone["error"]["code"]),
            (410, &json!("video_deleted"))
        );
    }
    let (status, answer) = query(&t, &json!({"query": "rabbit"})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["videos_searched"], 0);
    let (status, _, _) = t.get(&format!("/videos/{video}")).await;
    assert_eq!(status, 404);

    let runs = stage_runs(&t);
    let again = submit(&t, &uri, "rabbit").await;
    assert_eq!(again["analysis"]["reused"], false, "analysed again");
    assert!(stage_runs(&t) > runs);
}

/// A request of a video whose delete is under way (its `deleting.json` there, as the delete
/// writes it before it reads the video's record) is named in the record, stores nothing of
/// the video and waits; when the delete ends it goes on and completes. And a delete that
/// comes while a request of the video runs sees it there and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_out_a_delete_of_its_video_and_a_delete_waits_for_no_request() {
    let t = TestStack::start().await;
    let path = sample("bikes.mp4");
    let video = sha256_of(&path).await;
    let tombstone = format!("videos/{video}/deleting.json");
    t.store()
        .put_json(&tombstone, &json!({ "started_at": chrono::Utc::now() }))
        .await
        .expect("written");
    let response = t
        .http
        .post(t.url("orchestrator", ""))
        .header("prefer", "respond-async")
        .json(&json!({ "video_uri": file_uri(&path), "query": "bicycles" }))
        .send()
        .await
        .expect("the gateway answers");
    let (status, _, accepted) = crate::util::read(response).await;
    assert_eq!(status, 202, "{accepted}");
    let id = request_id(&accepted);
    let record = format!("videos/{video}/video.json");
    wait_named(&t, &record, &id).await;
    // Named, then waiting: running, nothing of the video stored.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let state = t.state(&id).await;
    assert!(!state.status.is_terminal(), "{:?}", state.status);
    assert!(
        state.input.is_none(),
        "the input was stored during the delete"
    );
    let stored = t
        .store()
        .list_keys(&format!("videos/{video}/input/"))
        .await
        .expect("a listing");
    assert!(stored.is_empty(), "{stored:?}");

    // The delete ends (its record gone with the video): the request names itself again and
    // completes. While it runs, a delete sees it and is refused, leaving no deleting.json.
    t.store().delete(&record).await.expect("deleted");
    t.store().delete(&tombstone).await.expect("deleted");
    wait_named(&t, &record, &id).await;
    let refused = delete_video(&t, &video).await;
    assert_eq!(
        (refused.0, &refused.1["error"]["code"]),
        (409, &json!("video_in_use")),
        "{}",
        refused.1
    );
    assert!(
        !t.store().exists(&tombstone).await.expect("a HEAD"),
        "a refused delete leaves no deleting.json"
    );
    let states =
        crate::util::wait_for_states(t.store(), 120, |s| s.iter().all(|s| s.status.is_terminal()))
            .await;
    assert_eq!(states.len(), 1);
    assert_eq!(
        states[0].status,
        fave_common::state::RequestStatus::Completed,
        "{:?}",
        states[0].failure
    );
    let (status, _, detail) = t.get(&format!("/videos/{video}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["record"]["requests"], json!([id.to_string()]));
}

/// `DELETE /videos/{video}`: its status and body.
async fn delete_video(t: &TestStack, video: &str) -> (u16, Value) {
    let response = t
        .http
        .delete(t.url("orchestrator", &format!("/videos/{video}")))
        .send()
        .await
        .expect("the gateway answers");
    let (status, _, body) = crate::util::read(response).await;
    (status, body)
}

/// Waits until the video record at `record` names request `id`, and only it.
async fn wait_named(t: &TestStack, record: &str, id: &fave_common::ids::RequestId) {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let named = t
            .store()
            .get_json::<Value>(record)
            .await
            .expect("readable")
            .is_some_and(|(r, _)| r["requests"] == json!([id.to_string()]));
        if named {
            return;
        }
        assert!(Instant::now() < deadline, "never named in {record}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Bad queries and ids get the API's JSON errors; an empty library answers an empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_json_errors_and_an_empty_library_answers_nothing() {
    let t = TestStack::start().await;
    let (status, answer) = query(&t, &json!({"query": "cars"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["moments"], json!([]));
    assert_eq!(answer["labels"], json!(["car"]));
    let unknown = "ab".repeat(32);
    let cases = [
        (json!({"query": ""}), 422, "invalid_query"),
        (json!({"query": "   "}), 422, "invalid_query"),
        (json!({"query": "x".repeat(501)}), 422, "invalid_query"),
        (json!({"query": "a\u{0}b"}), 422, "invalid_query"),
        (json!({"query": "cars", "limit": 0}), 422, "invalid_limit"),
        (
            json!({"query": "cars", "limit": 1001}),
            422,
            "invalid_limit",
        ),
        (
            json!({"query": "cars", "videos": ["../../etc"]}),
            400,
            "invalid_video_id",
        ),
        (
            json!({"query": "cars", "videos": [unknown]}),
            404,
            "unknown_video",
        ),
        (json!({"query": 3}), 0, ""),
        (json!({"query": "cars", "extra": 1}), 0, ""),
        (json!([]), 0, ""),
    ];
    for (body, expected, code) in cases {
        let (status, answer) = query(&t, &body).await;
        if expected == 0 {
            assert!(matches!(status, 400 | 422), "{body}: {status} {answer}");
        } else {
            assert_eq!(status, expected, "{body}: {answer}");
        }
        assert!(answer["error"]["message"].is_string(), "{body}: {answer}");
        if !code.is_empty() {
            assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        }
    }
    let response = t
        .http
        .post(t.url("orchestrator", "/query"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("the gateway answers");
    let (status, _, answer) = crate::util::read(response).await;
    assert_eq!(status, 400, "{answer}");
    for (path, expected) in [
        (format!("/videos/{unknown}"), 404),
        ("/videos/not-a-video".to_owned(), 400),
        ("/videos/%2e%2e%2fetc".to_owned(), 400),
        ("/videos?limit=0".to_owned(), 400),
        ("/videos?cursor=..%2F".to_owned(), 400),
    ] {
        let (status, _, answer) = t.get(&path).await;
        assert_eq!(status, expected, "{path}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{path}: {answer}");
    }
    let (status, _) = delete_video(&t, &unknown).await;
    assert_eq!(status, 404);
    let (status, _, listed) = t.get("/videos").await;
    assert_eq!(status, 200);
    assert_eq!(listed["videos"], json!([]));
}

/// Words outside the word table are read by the language model: "cyclists" is a bicycle
/// (bikes.mp4 shows them), a word near no label is still reported as not understood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_understood_beyond_the_word_table() {
    let t = TestStack::start().await;
    let bikes = submit(&t, &file_uri(&sample("bikes.mp4")), "").await;
    let video = bikes["analysis"]["video"].clone();
    let (status, answer) = query(&t, &json!({"query": "cyclists"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["terms"][0]["labels"], json!(["bicycle"]), "{answer}");
    assert!(
        answer["terms"][0]["similarity"]
            .as_f64()
            .is_some_and(|s| s >= 0.5),
        "{answer}"
    );
    assert_eq!(answer["moments"][0]["video"], video, "{answer}");
    let (status, answer) = query(&t, &json!({"query": "a xylophone"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["unknown"], json!(["xylophone"]), "{answer}");
    assert_eq!(answer["moments"], json!([]));
}

/// Real speech (espeak-ng, transcribed by Whisper): a request asking for someone "talking
/// about money" finds the clip that says "cash", in its own answer and through the library;
/// the same word quoted must be said as written, and is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_said_is_found_by_meaning() {
    let t = TestStack::start().await;
    let video = crate::transcribe::spoken_video_saying(
        t.dir.path(),
        "I need the cash by Friday, or we lose the house.",
    );
    let made = submit(&t, &file_uri(&video), "someone talking about money").await;
    let said: Vec<&Value> = made["answer"]["clips"]
        .as_array()
        .expect("answer clips")
        .iter()
        .filter(|m| m["said"] == json!(["money"]))
        .collect();
    assert!(
        !said.is_empty(),
        "the clip with the speech: {}",
        made["answer"]
    );
    assert!(
        said[0]["why"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("said something like \"money\"")),
        "{}",
        made["answer"]
    );
    // Shown before it is queried: the listing of its analyses leaves the query its meaning.
    let (status, _, shown) = t
        .get(&format!(
            "/videos/{}",
            made["analysis"]["video"].as_str().unwrap_or_default()
        ))
        .await;
    assert_eq!(status, 200, "{shown}");
    let (status, answer) = query(&t, &json!({"query": "someone talking about money"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["moments"][0]["said"], json!(["money"]), "{answer}");
    let (status, answer) = query(&t, &json!({"query": "someone saying \"money\""})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["moments"],
        json!([]),
        "a quoted word is matched as written: {answer}"
    );
}
