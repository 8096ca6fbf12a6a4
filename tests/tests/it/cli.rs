//! The `fave` CLI as users run it: the real binary against a real local stack, checking
//! what it prints, what it writes and its exit codes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::util::{TestStack, bin_dir, file_uri, sample};

/// What one run of `fave` did.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `fave` with the stack's gateway in `OPENFAAS_URL`, as a script would run it (no
/// terminal, so no colours and no progress bar).
fn command(t: &TestStack, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin_dir().join("fave"));
    cmd.args(args)
        .env("OPENFAAS_URL", t.stack.gateway_url.as_str())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn fave(t: &TestStack, args: &[&str]) -> Ran {
    let out = tokio::time::timeout(Duration::from_secs(180), command(t, args).output())
        .await
        .expect("fave finishes within 3 minutes")
        .expect("fave runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The ids of the requests the store holds.
async fn request_ids(t: &TestStack) -> BTreeSet<String> {
    t.request_keys()
        .await
        .iter()
        .filter(|k| k.ends_with("/metadata/state.json"))
        .filter_map(|k| k.split('/').nth(1).map(str::to_owned))
        .collect()
}

fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("each results line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_through_submit_status_result_list_timeline_and_cancel() {
    let t = TestStack::start().await;
    let bikes = sample("bikes.mp4");
    let bikes = bikes.to_str().expect("a UTF-8 path");

    // submit --wait --json: final.json, as the API answers it.
    let ran = fave(
        &t,
        &["submit", bikes, "--query", "find bikes", "--wait", "--json"],
    )
    .await;
    assert_eq!(ran.code, 0, "{ran}\n{}", t.logs());
    let result = ran.json();
    assert_eq!(result["status"], "COMPLETED", "{ran}");
    assert_eq!(
        result["submission"]["video_uri"],
        file_uri(&sample("bikes.mp4"))
    );
    let id = result["request_id"]
        .as_str()
        .expect("a request id")
        .to_owned();

    let ran = fave(&t, &["status", &id, "--json"]).await;
    assert_eq!(ran.code, 0, "{ran}");
    let state = ran.json();
    assert_eq!(
        (state["request_id"].as_str(), state["status"].as_str()),
        (Some(id.as_str()), Some("COMPLETED"))
    );
    let ran = fave(&t, &["status", &id]).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(
        ran.stdout.contains(&format!("request  {id}  COMPLETED")),
        "{ran}"
    );
    assert!(!ran.stdout.contains('\x1b'), "no colours off a terminal");

    let ran = fave(&t, &["result", &id, "--json"]).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.json(), result, "the stored final.json");
    let ran = fave(&t, &["result", &id]).await;
    assert!(ran.stdout.contains("answer to \"find bikes\""), "{ran}");
    // Into a reader that has gone (`fave result ID --json | head -c0`): no panic, the
    // quiet end of SIGPIPE, as any Unix tool.
    let mut child = command(&t, &["result", &id, "--json"])
        .spawn()
        .expect("fave runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().await.expect("fave ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(13),
        "ended by SIGPIPE: {:?} {stderr}",
        out.status
    );

    let ran = fave(&t, &["list", "--json"]).await;
    assert_eq!(ran.code, 0, "{ran}");
    let listed = ran.json();
    assert_eq!(listed["requests"][0]["request_id"], id.as_str(), "{ran}");
    assert!(listed["next_cursor"].is_null());
    let ran = fave(&t, &["list", "--status", "failed", "--all", "--json"]).await;
    assert_eq!(ran.json()["requests"], serde_json::json!([]), "{ran}");
    let ran = fave(&t, &["list"]).await;
    assert!(
        ran.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with(&id)),
        "{ran}"
    );

    // The timeline: one SVG bar per attempt in state.json, every stage in the text.
    let dir = tempfile::tempdir().expect("a temp dir");
    let svg_path = dir.path().join("timeline.svg");
    let ran = fave(
        &t,
        &[
            "timeline",
            &id,
            "-o",
            svg_path.to_str().expect("UTF-8"),
            "--width",
            "120",
        ],
    )
    .await;
    assert_eq!(ran.code, 0, "{ran}");
    eprintln!("{}", ran.stdout);
    let stored = t.state(&id.parse().expect("an id")).await;
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG was written");
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let bars: Vec<roxmltree::Node<'_, '_>> = doc
        .descendants()
        .filter(|n| {
            n.tag_name().name() == "rect"
                && n.attribute("class").is_some_and(|c| c.starts_with("bar "))
        })
        .collect();
    let attempts: usize = stored.tasks().map(|task| task.attempts.len()).sum();
    assert!(attempts >= 5, "every stage ran");
    assert_eq!(bars.len(), attempts, "one bar per attempt");
    let mut rows = Vec::new();
    for stage in &stored.stages {
        rows.push(stage.name.to_string());
    }
    for clip in &stored.clips {
        for task in &clip.tasks {
            rows.push(format!("{} {}", clip.clip, task.name));
        }
    }
    for row in &rows {
        let bars_of_row = bars
            .iter()
            .filter(|b| b.attribute("data-row") == Some(row.as_str()))
            .count();
        assert!(bars_of_row >= 1, "no bar for {row}");
        let line = ran
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{row} ")))
            .unwrap_or_else(|| panic!("no row {row} in\n{ran}"));
        assert!(line.contains('█'), "{line}");
    }
    assert!(
        ran.stdout
            .lines()
            .next()
            .is_some_and(|l| l.starts_with(&format!("request {id}  COMPLETED"))),
        "{ran}"
    );

    // Refusals: exit 3 with the API's error code; --json prints the API's body.
    let unknown = "0123456789abcdef0123456789abcdef";
    let ran = fave(&t, &["cancel", unknown]).await;
    assert_eq!(ran.code, 3, "{ran}");
    assert!(ran.stderr.contains("not_found"), "{ran}");
    let ran = fave(&t, &["cancel", unknown, "--json"]).await;
    assert_eq!(ran.json()["error"]["code"], "not_found", "{ran}");
    let ran = fave(&t, &["cancel", &id]).await;
    assert_eq!(ran.code, 3, "{ran}");
    assert!(ran.stderr.contains("already_ended"), "{ran}");
    let ran = fave(&t, &["resume", &id]).await;
    assert_eq!(ran.code, 3, "{ran}");
    let ran = fave(&t, &["submit", "ftp://example.com/a.mp4"]).await;
    assert_eq!(ran.code, 3, "{ran}");
    assert!(ran.stderr.contains("invalid_video_uri"), "{ran}");
    // Nothing listens on port 9 here.
    let ran = fave(&t, &["status", &id, "--gateway", "http://127.0.0.1:9"]).await;
    assert_eq!(ran.code, 3, "{ran}");
    assert!(ran.stderr.contains("cannot reach the gateway"), "{ran}");
    // Usage errors are clap's: exit 2, and a hostile id never reaches a URL.
    let ran = fave(&t, &["status", "../etc"]).await;
    assert_eq!(ran.code, 2, "{ran}");
    assert_eq!(request_ids(&t).await.len(), 1, "one request in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_the_good_lines_and_reports_the_bad_ones_by_number() {
    let t = TestStack::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let bikes = sample("bikes.mp4");
    let batch = dir.path().join("videos.txt");
    std::fs::write(
        &batch,
        format!(
            "# two good lines, two bad ones\n\
             {bikes}\n\
             \n\
             {{\"video_uri\": \"{uri}\", \"query\": \"find cars\"}}\n\
             {{\"video_uri\": \"{uri}\", \"query\": \n\
             ftp://example.com/video.mp4\n",
            bikes = bikes.display(),
            uri = file_uri(&bikes),
        ),
    )
    .expect("the batch file");
    let path = batch.to_str().expect("UTF-8");

    // Bad lines count as failures: the batch did not do everything it was given.
    let ran = fave(&t, &["batch", path, "--query", "find bikes"]).await;
    assert_eq!(ran.code, 1, "{ran}\n{}", t.logs());
    assert!(ran.stderr.contains("line 5: bad line"), "{ran}");
    assert!(ran.stderr.contains("line 6: refused"), "{ran}");
    let lines = results(&dir.path().join("videos.txt.results.jsonl"));
    let numbers: Vec<u64> = lines.iter().filter_map(|l| l["line"].as_u64()).collect();
    assert_eq!(
        numbers,
        [2, 4, 5, 6],
        "one results line per input line, in order"
    );
    for good in &lines[..2] {
        assert_eq!(good["status"], "COMPLETED", "{good}");
        assert_eq!(good["uri"], file_uri(&bikes));
        assert!(good["request_id"].is_string());
        assert!(good["seconds"].as_f64().is_some_and(|s| s > 0.0), "{good}");
        assert!(good["answer"]["message"].is_string(), "{good}");
    }
    assert_eq!(lines[0]["query"], "find bikes", "the default query");
    assert_eq!(lines[1]["query"], "find cars");
    assert_eq!(lines[1]["answer"]["message"], "1 of 1 clips show car");
    assert_eq!(lines[2]["status"], "INVALID");
    assert_eq!(lines[2]["error"]["code"], "invalid_line");
    assert_eq!(lines[3]["status"], "REJECTED");
    assert_eq!(
        lines[3]["error"]["code"], "invalid_video_uri",
        "the orchestrator's code"
    );
    let ids = request_ids(&t).await;
    assert_eq!(ids.len(), 2, "{ids:?}");

    // Run again: the finished lines are kept, nothing is submitted again.
    let ran = fave(&t, &["batch", path, "--query", "find bikes", "--json"]).await;
    assert_eq!(ran.code, 1, "{ran}");
    let summary = ran.json();
    assert_eq!(
        (
            &summary["completed"],
            &summary["from_earlier_runs"],
            &summary["bad_lines"],
            &summary["rejected"]
        ),
        (&2.into(), &2.into(), &1.into(), &1.into()),
        "{ran}"
    );
    assert_eq!(request_ids(&t).await, ids);
    let again = results(&dir.path().join("videos.txt.results.jsonl"));
    assert_eq!(again[..2], lines[..2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_batch_resumes_without_submitting_anything_twice() {
    // A short sync window: submissions answer 202 at once and the batch polls, so the
    // journal holds a request that is still running when the batch is killed.
    let t = TestStack::start_with(&[("FAVE_SYNC_WINDOW_SECS", "1")]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let uri = file_uri(&sample("bikes.mp4"));
    let batch = dir.path().join("three.jsonl");
    std::fs::write(
        &batch,
        ["find bikes", "find cars", "find people"]
            .iter()
            .map(|q| format!("{{\"video_uri\": \"{uri}\", \"query\": \"{q}\"}}\n"))
            .collect::<String>(),
    )
    .expect("the batch file");
    let journal = dir.path().join("three.jsonl.journal.jsonl");
    let args = [
        "batch",
        batch.to_str().expect("UTF-8"),
        "--concurrency",
        "1",
        "--poll",
        "0.2",
    ];

    let mut first = command(&t, &args).spawn().expect("fave runs");
    let submitted = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let text = std::fs::read_to_string(&journal).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("\"event\":\"submitted\"")) {
                return serde_json::from_str::<Value>(line).expect("a whole journal line");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first submission is journaled");
    first.start_kill().expect("SIGKILL");
    let status = first.wait().await.expect("it ends");
    assert!(!status.success());
    let first_id = submitted["request_id"].as_str().expect("an id").to_owned();
    let text = std::fs::read_to_string(&journal).expect("the journal");
    assert!(
        text.lines().filter(|l| l.contains("\"finished\"")).count() < 3,
        "killed before the end:\n{text}"
    );

    let ran = fave(&t, &args).await;
    assert_eq!(ran.code, 0, "{ran}\n{}", t.logs());
    assert!(
        ran.stderr
            .contains(&format!("line 1: following {first_id} (submitted earlier)")),
        "{ran}"
    );
    let lines = results(&dir.path().join("three.jsonl.results.jsonl"));
    assert_eq!(lines.len(), 3, "{ran}");
    let ids: BTreeSet<&str> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["status"], "COMPLETED", "{l}");
            l["request_id"].as_str().expect("an id")
        })
        .collect();
    assert_eq!(ids.len(), 3, "three distinct requests");
    assert_eq!(
        lines[0]["request_id"],
        first_id.as_str(),
        "line 1 re-attached"
    );
    let stored = request_ids(&t).await;
    assert_eq!(
        stored,
        ids.iter().map(|s| s.to_string()).collect(),
        "the orchestrator created exactly these three requests"
    );
    // Each request ran each stage once: nothing was driven twice either.
    for id in &stored {
        let state = t.state(&id.parse().expect("an id")).await;
        assert!(
            state.tasks().all(|task| task.attempts.len() == 1),
            "{id} ran a stage twice"
        );
    }
    // A third run has nothing left to do.
    let ran = fave(&t, &args).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(
        ran.stderr.contains("3 line(s) finished in an earlier run"),
        "{ran}"
    );
    assert_eq!(request_ids(&t).await, stored);
}

/// An orchestrator with an API token (its `fave-api-token` secret, here the environment
/// fallback) answers the CLI only when it sends the token: `--token`, or `FAVE_API_TOKEN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_api_token_the_orchestrator_requires() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let t = TestStack::start_with(&[("FAVE_API_TOKEN", &token)]).await;
    let refused = fave(&t, &["list", "--json"]).await;
    assert_eq!(refused.code, 3, "{refused}");
    assert!(refused.stderr.contains("unauthorized"), "{refused}");
    let listed = fave(&t, &["list", "--json", "--token", &token]).await;
    assert_eq!(listed.code, 0, "{listed}");
    assert_eq!(listed.json()["requests"], serde_json::json!([]));
    let by_env = command(&t, &["list", "--json"])
        .env("FAVE_API_TOKEN", &token)
        .output()
        .await
        .expect("fave runs");
    assert_eq!(by_env.status.code(), Some(0));
    // Through the gateway, the probe route stays open.
    let (status, _, _) = t.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, _, body) = t.get("/requests").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert!(!t.logs().contains(&token), "the token is never logged");
}
