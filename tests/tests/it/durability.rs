//! An accepted request is never lost, finished work is never redone: proven by killing,
//! stopping and cancelling things under the real local stack. Tests that inject a fault are
//! named `fault_…`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fave_common::keys::{self, ACTIVE_PREFIX, RequestKeys};
use fave_common::state::{RequestState, RequestStatus, StageStatus};
use rustix::process::Signal;
use serde_json::{Value, json};

use crate::util::{
    FAST_RESUME, TestStack, embedded_store, file_uri, log_count, read, request_id, sample, signal,
    wait_for_states,
};

/// Asserts that neither stage the stage-ffmpeg-0 function serves began its work more than
/// once for any request, by the function's own log.
///
/// A run is counted when it begins ("stage work started"), finished or not: the work goes
/// on when its caller is killed, and a retry waits for it, so after kills no work was
/// started over; that it was done at all, `assert_complete_and_whole` checks.
fn ran_at_most_once(t: &TestStack, states: &[RequestState]) {
    for stage in FFMPEG_0 {
        let runs = stage_runs(t, stage);
        for s in states {
            let ran = runs.get(s.request_id.as_str()).copied().unwrap_or(0);
            assert!(ran <= 1, "{stage} ran {ran} times for {}", s.request_id);
        }
    }
}

/// How often each request's `stage` began its work, by the stage function's own log (a
/// begun execution counts, finished or not).
fn stage_runs(t: &TestStack, stage: &str) -> BTreeMap<String, usize> {
    let log =
        std::fs::read_to_string(t.dir.path().join("logs/stage-ffmpeg-0.log")).unwrap_or_default();
    let mut runs = BTreeMap::new();
    let this_stage = format!("stage=\"{stage}\"");
    for line in log
        .lines()
        .filter(|l| l.contains("stage work started") && l.contains(&this_stage))
    {
        if let Some(id) = line
            .split("request_id=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_alphanumeric()).next())
        {
            *runs.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    runs
}

/// Both stages the stage-ffmpeg-0 function serves.
const FFMPEG_0: [&str; 2] = ["stage-ffmpeg-0", "stage-ffmpeg-0-video"];

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator, seeded from the clock and printed, so a failing run can
/// be told apart from another.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn assert_complete_and_whole(t: &TestStack, states: &[RequestState]) {
    let mut makers = BTreeMap::new();
    for s in states {
        assert_eq!(
            s.status,
            RequestStatus::Completed,
            "{}: {:?}",
            s.request_id,
            s.failure
        );
        let keys = RequestKeys::new(&s.request_id);
        assert!(
            t.store().exists(&keys.result()).await.expect("head"),
            "final.json of {}",
            s.request_id
        );
        if let Some(used) = &s.analysis {
            let index = fave_common::keys::VideoKeys::new(&used.video).index(&used.analysis);
            assert!(t.store().exists(&index).await.expect("head"), "{index}");
            if used.reused {
                // Answered from the library: no stage of its own.
                assert!(
                    s.stages.is_empty() && s.clips.is_empty(),
                    "{}",
                    s.request_id
                );
                continue;
            }
            if !s.submission.fresh {
                *makers.entry(used.analysis.clone()).or_insert(0) += 1;
            }
        }
        assert!(!s.clips.is_empty(), "{}: no clips", s.request_id);
        let tasks = s
            .stages
            .iter()
            .map(|stage| (keys.stage_prefix(&stage.name), stage));
        let clip_tasks = s.clips.iter().flat_map(|c| {
            c.tasks
                .iter()
                .map(|task| (keys.clip_stage_prefix(&c.clip, &task.name), task))
        });
        for (prefix, task) in tasks.chain(clip_tasks) {
            assert_eq!(task.status, StageStatus::Succeeded, "{prefix}");
            assert!(
                t.store()
                    .exists(&keys::manifest(&prefix))
                    .await
                    .expect("head"),
                "no manifest under {prefix}"
            );
            for key in task.outputs.values() {
                assert!(t.store().exists(key).await.expect("head"), "lost {key}");
            }
        }
    }
    // One request made each analysis for the library: the others waited for it.
    assert!(makers.values().all(|n| *n == 1), "{makers:?}");
    let active = t.store().list_keys(ACTIVE_PREFIX).await.expect("listing");
    assert!(
        active.is_empty(),
        "ended requests stay in the active index: {active:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_orchestrator_killed_at_random_points_loses_nothing_and_redoes_nothing() {
    let requests = env_number("FAVE_KILL_TEST_REQUESTS", 4);
    let kills = env_number("FAVE_KILL_TEST_KILLS", 6);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("kill test: {requests} requests, {kills} kills, seed {seed}");
    let mut rng = Lcg(seed);
    let t = TestStack::start_with(FAST_RESUME).await;
    let orchestrator = t.function("orchestrator");
    let uri = file_uri(&sample("bikes.mp4"));

    let mut posts = Vec::new();
    for i in 0..requests {
        let (http, url, uri) = (t.http.clone(), t.url("orchestrator", ""), uri.clone());
        // Every other request analyses afresh, the others share one analysis through the
        // library: both paths are killed at random points.
        let body = json!({ "video_uri": uri, "fresh": i % 2 == 0 });
        posts.push(tokio::spawn(async move {
            let response = http.post(url).json(&body).send().await;
            match response {
                Ok(r) => read(r).await.0,
                Err(_) => 0,
            }
        }));
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
    }
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(900))).await;
        if let Some(pid) = orchestrator.pid() {
            signal(pid, Signal::KILL);
        }
        // Wait for the restart, so the next kill hits a process doing work.
        orchestrator
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("restarted");
    }
    let mut accepted = 0;
    for post in posts {
        if matches!(post.await.expect("the task runs"), 200 | 202) {
            accepted += 1;
        }
    }
    let states = wait_for_states(t.store(), 180, |states| {
        !states.is_empty() && states.iter().all(|s| s.status.is_terminal())
    })
    .await;
    eprintln!(
        "kill test: {} POSTs answered 2xx, {} requests recorded, orchestrator started {} times",
        accepted,
        states.len(),
        orchestrator.starts()
    );
    let attempts: usize = states
        .iter()
        .flat_map(|s| s.tasks())
        .map(|t| t.attempts.len())
        .sum();
    let tasks: usize = states.iter().map(|s| s.tasks().count()).sum();
    let encodes: usize = stage_runs(&t, "stage-ffmpeg-0-video").values().sum();
    eprintln!(
        "kill test: {attempts} attempts for {tasks} tasks; the encode began {encodes} times for {} videos",
        states.len()
    );
    assert!(states.len() >= accepted, "an accepted request was lost");
    assert_complete_and_whole(&t, &states).await;
    ran_at_most_once(&t, &states);
    for s in &states {
        assert_one_driver_at_a_time(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sigterm_releases_the_lease_and_a_restart_resumes() {
    let t = TestStack::start_with(FAST_RESUME).await;
    let orchestrator = t.function("orchestrator");
    let post = t.submit_in_background(&sample("bigbuckbunny.mp4"), false);
    // Once the stage is running, ask the orchestrator to stop.
    t.wait_for_running_stage().await;
    let pid = orchestrator.pid().expect("running");
    let stopped = Instant::now();
    signal(pid, Signal::TERM);
    let (status, _, body) = post.await.expect("the task runs");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("driver_interrupted")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("resumed")),
        "{body}"
    );
    // It exits within the drain window (the supervisor then starts it again).
    while orchestrator.pid() == Some(pid) {
        assert!(
            stopped.elapsed() < Duration::from_secs(12),
            "did not exit within the drain window"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log =
        std::fs::read_to_string(t.dir.path().join("logs/orchestrator.log")).unwrap_or_default();
    assert!(log.contains("lease released for another replica"), "{log}");
    let states = wait_for_states(t.store(), 60, |s| s.iter().all(|s| s.status.is_terminal())).await;
    assert_complete_and_whole(&t, &states).await;
    assert_eq!(states.len(), 1);
    // The stage was running when the signal came: either it finished and its manifest was
    // reused, or it was abandoned and ran once more; it never finished twice.
    ran_at_most_once(&t, &states);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_cancel_mid_run_stays_cancelled_when_the_stage_answers_late() {
    let t = TestStack::start_with(FAST_RESUME).await;
    let post = t.submit_in_background(&sample("bigbuckbunny.mp4"), false);
    let states = t.wait_for_running_stage().await;
    let id = states[0].request_id.clone();
    let (status, _, body) = t.post(&format!("/requests/{id}/cancel")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("CANCELLED")),
        "{body}"
    );
    // The submitter learns its request was cancelled.
    let (status, _, body) = post.await.expect("the task runs");
    assert!(status == 409 || status == 503, "{status} {body}");
    // Let the stage finish and any late answer arrive; the request stays cancelled.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let state = t.state(&id).await;
    assert_eq!(state.status, RequestStatus::Cancelled);
    assert!(state.lease.is_none());
    // The task that was running when the request was cancelled is closed as abandoned, and
    // stays so when its answer comes late: nothing of a cancelled request claims to run.
    assert!(
        state
            .tasks()
            .all(|s| !matches!(s.status, StageStatus::Running | StageStatus::Retrying)),
        "{:?}",
        state.stages
    );
    let abandoned = state
        .tasks()
        .filter(|s| {
            s.failure
                .as_ref()
                .is_some_and(|f| f.error_code == "abandoned")
        })
        .count();
    assert!(abandoned >= 1, "{:?}", state.stages);
    assert!(
        !t.store()
            .exists(&RequestKeys::new(&id).result())
            .await
            .expect("head"),
        "no final.json after cancel"
    );
    assert!(
        t.store()
            .list_keys(ACTIVE_PREFIX)
            .await
            .expect("listing")
            .is_empty()
    );
    // Cancelling again, or resuming, is refused with the status.
    for action in ["cancel", "resume"] {
        let (status, _, body) = t.post(&format!("/requests/{id}/{action}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str(), &body["status"]),
            (409, Some("already_ended"), &json!("CANCELLED")),
            "{action}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_store_down_for_a_while_mid_run_and_the_request_still_completes() {
    if !embedded_store() {
        eprintln!("skipped: stopping the store needs the embedded one");
        return;
    }
    let mut t = TestStack::start_with(FAST_RESUME).await;
    let post = t.submit_in_background(&sample("bigbuckbunny.mp4"), false);
    t.wait_for_running_stage().await;
    t.stack.stop_store();
    tokio::time::sleep(Duration::from_secs(8)).await;
    t.stack
        .restart_store()
        .await
        .expect("the store starts again on its port");
    let (status, _, body) = post.await.expect("the task runs");
    // Either the first driver rode the outage out, or it gave up and the resumer finished.
    let states = wait_for_states(t.store(), 90, |s| s.iter().all(|s| s.status.is_terminal())).await;
    assert_complete_and_whole(&t, &states).await;
    if status == 200 {
        assert_eq!(body["status"], "COMPLETED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_route_refuses_what_it_cannot_resume() {
    let t = TestStack::start().await;
    let (status, _, body) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bikes.mp4")) }))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["request_id"].as_str().expect("an id");
    let (status, _, body) = t.post(&format!("/requests/{id}/resume")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_ended")),
        "{body}"
    );
    let (status, _, body): (u16, _, Value) = read(
        t.http
            .post(t.url(
                "orchestrator",
                "/requests/0123456789abcdef0123456789abcdef/resume",
            ))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

/// Checks, from what `state.json` recorded, that the request was driven by one driver at a
/// time: every stage attempt was made by the driver whose tenure it falls in, and tenures
/// follow one another.
fn assert_one_driver_at_a_time(s: &RequestState) {
    assert!(
        !s.drivers.is_empty(),
        "{}: no driver recorded",
        s.request_id
    );
    assert!(
        s.drivers.windows(2).all(|w| w[0].since <= w[1].since),
        "{:?}",
        s.drivers
    );
    for stage in s.tasks() {
        for attempt in &stage.attempts {
            let tenure = s
                .drivers
                .iter()
                .rev()
                .find(|d| d.since <= attempt.started_at)
                .expect("a tenure");
            assert_eq!(
                attempt.driver.as_deref(),
                Some(tenure.owner.as_str()),
                "{}: attempt {} of {} made outside its driver's tenure: {:?}",
                s.request_id,
                attempt.number,
                stage.name,
                s.drivers
            );
        }
        for pair in stage.attempts.windows(2) {
            let ended = pair[0].ended_at.expect("an earlier attempt is closed");
            assert!(
                ended <= pair[1].started_at,
                "{}: attempts overlap",
                s.request_id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_three_orchestrator_replicas_share_a_bucket_and_survive_kills() {
    let requests = env_number("FAVE_REPLICA_TEST_REQUESTS", 9);
    let t = TestStack::start_with_replicas(FAST_RESUME, &[("orchestrator", 3)]).await;
    let orchestrator = t.function("orchestrator");
    assert_eq!(orchestrator.available(), 3);
    let uri = file_uri(&sample("bikes.mp4"));
    // The gateway spreads the submissions over the three replicas. Each has its own
    // Idempotency-Key and is sent again, as a client does, while a killed replica's call
    // fails (a kill may land before the request was recorded: then nothing was accepted,
    // and the resend is its first submission; after: the resend finds it).
    // Every other request analyses afresh; the others share one analysis (the library).
    let posts: Vec<_> = (0..requests)
        .map(|i| {
            let (http, url) = (t.http.clone(), t.url("orchestrator", ""));
            let body = json!({ "video_uri": uri, "fresh": i % 2 == 0 });
            tokio::spawn(async move {
                for _ in 0..20 {
                    let sent = http
                        .post(&url)
                        .header("Idempotency-Key", format!("replica-test-{i}"))
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(r) = sent
                        && r.status().is_success()
                    {
                        return r.status().as_u16();
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                0
            })
        })
        .collect();
    let mut rng = Lcg(7);
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        let replica = &orchestrator.replicas[1 + round % 2];
        if let Some(pid) = replica.pid() {
            signal(pid, Signal::KILL);
        }
    }
    for post in posts {
        let status = post.await.expect("the task runs");
        assert!(
            matches!(status, 200 | 202),
            "a submission was never accepted: {status}"
        );
    }
    let states = wait_for_states(t.store(), 120, |s| {
        s.len() >= requests && s.iter().all(|s| s.status.is_terminal())
    })
    .await;
    assert_eq!(states.len(), requests, "every submission was recorded once");
    assert_complete_and_whole(&t, &states).await;
    ran_at_most_once(&t, &states);
    let mut owners = std::collections::BTreeSet::new();
    for s in &states {
        assert_one_driver_at_a_time(s);
        owners.extend(s.drivers.iter().map(|d| d.owner.clone()));
    }
    let takeovers: usize = states.iter().map(|s| s.drivers.len() - 1).sum();
    eprintln!(
        "replicas: {} requests over owners {owners:?}, {takeovers} takeovers, replica starts {:?}",
        states.len(),
        orchestrator
            .replicas
            .iter()
            .map(|r| r.starts())
            .collect::<Vec<_>>()
    );
    assert!(
        owners.len() >= 2,
        "the submissions were spread over the replicas: {owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_stage_call_returns_the_manifest_without_running_again() {
    let t = TestStack::start().await;
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bikes.mp4")) }))
        .await;
    assert_eq!(status, 200, "{answer}");
    let id = request_id(&answer);
    let state = t.state(&id).await;
    let input = state.input.as_ref().expect("copied in");
    // The call the orchestrator made (its table's input, at the default frame rate), sent
    // again, as at-least-once delivery would.
    let table = orchestrator::pipeline::video().expect("a well-formed table");
    let params = orchestrator::pipeline::Params {
        clip_min_s: 5.0,
        clip_max_s: 20.0,
        frames_per_second: 1.0,
        noop_clips: 0,
        noop_work_ms: 0,
    };
    let cx = orchestrator::pipeline::InputContext {
        state: &state,
        clip: None,
        params: &params,
    };
    let sent = table.stages()[0].input(&cx).expect("the analysis's input");
    assert_eq!(sent["source_key"], json!(input.key));
    let call = json!({
        "request_id": id,
        "stage": "stage-ffmpeg-0",
        "idempotency_key": orchestrator::attempt::idempotency_key(id.as_str(), "stage-ffmpeg-0", None, &sent),
        "input": sent,
    });
    let response = t
        .http
        .post(t.url("stage-ffmpeg-0", ""))
        .json(&call)
        .send()
        .await
        .expect("answers");
    assert_eq!(
        response
            .headers()
            .get("x-fave-reused")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let (status, _, manifest) = read(response).await;
    assert_eq!(status, 200, "{manifest}");
    assert_eq!(manifest["outputs"], json!(state.stages[0].outputs));
    assert_eq!(
        stage_runs(&t, "stage-ffmpeg-0").get(id.as_str()),
        Some(&1),
        "the repeat did not run ffmpeg"
    );
    // A different key (other parameters) is new work, and runs.
    let mut other = call.clone();
    other["idempotency_key"] = json!("another-key");
    let response = t
        .http
        .post(t.url("stage-ffmpeg-0", ""))
        .json(&other)
        .send()
        .await
        .expect("answers");
    assert!(response.headers().get("x-fave-reused").is_none());
    assert_eq!(response.status(), 200);
    assert_eq!(stage_runs(&t, "stage-ffmpeg-0").get(id.as_str()), Some(&2));
}

/// A stage past its timeout counts as a failed attempt, and its work goes on: the retry
/// finds it under way (its claim), waits for it, and is answered by its manifest, so the
/// work began once however many attempts it took. With a 1 s timeout, the analysis and the
/// encode of bigbuckbunny.mp4 take longer than one attempt; whether they finish within the
/// four attempts depends on the machine, so the request may complete or fail as
/// `stage_timeout`, but never by starting the work over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_stage_past_its_timeout_counts_as_a_failed_attempt_and_its_work_goes_on() {
    let t = TestStack::start_with(&[("FAVE_STAGE_TIMEOUT_SECS", "1")]).await;
    let (status, _, body) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bigbuckbunny.mp4")) }))
        .await;
    let id = request_id(&body);
    let state = t.state(&id).await;
    let timed_out: Vec<_> = state
        .tasks()
        .flat_map(|s| s.attempts.iter().map(move |a| (s, a)))
        .filter(|(_, a)| {
            a.failure
                .as_ref()
                .is_some_and(|f| f.error_code == "stage_timeout")
        })
        .collect();
    assert!(!timed_out.is_empty(), "no stage ran past 1 s: {body}");
    for (stage, a) in &timed_out {
        assert!(
            a.duration_ms.is_some_and(|d| (1000..2500).contains(&d)),
            "{}: {a:?}",
            stage.name
        );
    }
    for stage in FFMPEG_0 {
        let began = stage_runs(&t, stage).get(id.as_str()).copied().unwrap_or(0);
        assert_eq!(began, 1, "{stage}'s work began {began} times");
    }
    match state.status {
        RequestStatus::Completed => {
            assert_eq!(status, 200, "{body}");
            // A stage that timed out was then answered by the work its first attempt began.
            let (late, _) = timed_out[0];
            assert_eq!(late.status, StageStatus::Succeeded, "{late:?}");
            assert!(late.attempts.len() > 1);
        }
        _ => {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (502, Some("stage_timeout")),
                "{body}"
            );
        }
    }
    eprintln!(
        "past a 1 s timeout: {:?}, {} attempts timed out, each stage's work begun once",
        state.status,
        timed_out.len()
    );
}

/// A driver paused (SIGSTOP) past its lease while a stage's work runs, then woken
/// (SIGCONT): the other replica takes the request over and calls the stage again, and that
/// call waits for the work under way (its claim) instead of running it a second time; the
/// woken driver loses its next write and stops. Executions are counted from the stage
/// function's own log, not the orchestrator's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_driver_paused_past_its_lease_causes_no_second_execution() {
    let t = TestStack::start_spec(crate::util::StackSpec {
        stack_file: Some(crate::util::repo_root().join("bench/noop.yml")),
        env: &[
            ("FAVE_NOOP_STEPS", "2"),
            ("FAVE_NOOP_WORK_MS", "6000"),
            ("FAVE_RESUME_INTERVAL_MS", "200"),
            ("FAVE_LEASE_SECS", "3"),
        ],
        replicas: &[("orchestrator", 2)],
        ..crate::util::StackSpec::default()
    })
    .await;
    let response = t
        .http
        .post(t.url("orchestrator", ""))
        .header("prefer", "respond-async")
        .json(&json!({ "video_uri": file_uri(&sample("bikes.mp4")) }))
        .send()
        .await
        .expect("answers");
    let (status, _, body) = read(response).await;
    assert_eq!(status, 202, "{body}");
    let id = request_id(&body);
    let mut owner = None;
    for _ in 0..100 {
        let state = t.state(&id).await;
        if state
            .stages
            .iter()
            .any(|s| s.status == StageStatus::Running)
        {
            owner = state.lease.map(|l| l.owner);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let owner = owner.expect("a stage runs under a lease");
    let index: usize = owner
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a replica's name");
    let orchestrator = t.function("orchestrator");
    let pid = orchestrator.replicas[index].pid().expect("running");
    signal(pid, Signal::STOP);
    // Past the 3 s lease: the other replica's resumer takes the request over.
    tokio::time::sleep(Duration::from_secs(7)).await;
    signal(pid, Signal::CONT);
    let states =
        wait_for_states(t.store(), 60, |s| s.len() == 1 && s[0].status.is_terminal()).await;
    let state = &states[0];
    assert_eq!(
        state.status,
        RequestStatus::Completed,
        "{:?}",
        state.failure
    );
    let owners: std::collections::BTreeSet<&str> =
        state.drivers.iter().map(|d| d.owner.as_str()).collect();
    assert!(owners.len() >= 2, "taken over: {:?}", state.drivers);
    assert_one_driver_at_a_time(state);
    let begun = log_count(&t, "stage work started");
    let calls: usize = state.tasks().map(|s| s.attempts.len()).sum();
    eprintln!(
        "paused driver: {} stage works begun for {} tasks, {calls} calls, drivers {:?}",
        begun.values().sum::<usize>(),
        state.tasks().count(),
        state.drivers.iter().map(|d| &d.owner).collect::<Vec<_>>()
    );
    assert_eq!(begun.len(), state.tasks().count(), "{begun:?}");
    assert!(
        begun.values().all(|n| *n == 1),
        "a stage's work ran twice: {begun:?}"
    );
}

/// A request in flight across the upgrade to state.json's schema 2: its driver is paused and
/// killed mid-run, and its state rewritten as schema 1 kept it (each stage's result among
/// its figures, as `metrics.data`). The restarted orchestrator resumes it from that state:
/// it completes, whole, in schema 2, and nothing that had succeeded is done again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_begun_under_the_previous_schema_completes_under_this_one() {
    let t = TestStack::start_with(FAST_RESUME).await;
    let orchestrator = t.function("orchestrator");
    let post = t.submit_in_background(&sample("bikes.mp4"), false);
    // Once the clips are listed, with stages done and others still to run.
    let states = wait_for_states(t.store(), 60, |s| {
        s.len() == 1 && !s[0].clips.is_empty() && !s[0].status.is_terminal()
    })
    .await;
    let id = states[0].request_id.clone();
    let pid = orchestrator.pid().expect("running");
    signal(pid, Signal::STOP);
    let key = RequestKeys::new(&id).state();
    let (mut old, _) = t
        .store()
        .get_json::<Value>(&key)
        .await
        .expect("readable")
        .expect("a state");
    assert_eq!(old["schema_version"], 2);
    let mut moved = 0;
    let mut to_schema_1 = |task: &mut Value| {
        if let Some(result) = task.as_object_mut().and_then(|t| t.remove("result")) {
            task["metrics"]["data"] = result;
            moved += 1;
        }
    };
    for stage in old["stages"].as_array_mut().expect("stages") {
        to_schema_1(stage);
    }
    for clip in old["clips"].as_array_mut().expect("clips") {
        for task in clip["tasks"].as_array_mut().expect("tasks") {
            to_schema_1(task);
        }
    }
    assert!(moved >= 2, "results to move: {old}");
    old["schema_version"] = json!(1);
    t.store().put_json(&key, &old).await.expect("written");
    let succeeded_before: Vec<String> = states[0]
        .tasks()
        .filter(|s| s.status == StageStatus::Succeeded)
        .map(|s| s.name.to_string())
        .collect();
    signal(pid, Signal::KILL);
    let _ = post.await;

    let states = wait_for_states(t.store(), 120, |s| {
        s.len() == 1 && s[0].status.is_terminal()
    })
    .await;
    assert_complete_and_whole(&t, &states).await;
    let (now, _) = t
        .store()
        .get_json::<Value>(&key)
        .await
        .expect("readable")
        .expect("a state");
    assert_eq!(now["schema_version"], 2, "written in this schema");
    let audio = now["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "stage-audio"))
        .expect("stage-audio");
    assert!(audio["result"]["clips"].is_array(), "{audio}");
    assert!(audio["metrics"].get("data").is_none(), "{audio}");
    // What had succeeded under schema 1 was read, not redone.
    ran_at_most_once(&t, &states);
    for name in &succeeded_before {
        let stage = states[0].tasks().find(|s| &s.name.to_string() == name);
        assert!(
            stage.is_some_and(|s| s.attempts.iter().filter(|a| a.failure.is_none()).count() == 1),
            "{name} succeeded once: {stage:?}"
        );
    }
}
