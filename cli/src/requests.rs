//! The one-request commands: `submit`, `status`, `result`, `list`, `cancel`, `resume`.
//!
//! Each prints a short summary for people, or with `--json` the API's JSON as it came.
//! Exit codes are [`crate::client::exit`]'s.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use fave_common::contract::api::{RequestPage, RequestSummary};
use fave_common::contract::report::Final;
use fave_common::error::ErrorBody;
use fave_common::ids::RequestId;
use fave_common::state::{Profile, RequestState, RequestStatus, StageState, StageStatus};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{Client, GatewayArgs, Submitted, exit, pretty, request_id};
use crate::term::{self, Paint, Palette};

#[derive(Args, Debug)]
#[command(after_help = "\
Without --wait, fave asks for an answer as soon as the request is accepted (Prefer:
respond-async) and prints its id. With --wait, the orchestrator answers within its sync
window (FAVE_SYNC_WINDOW_SECS, 300 s by default) and a request still running after it is
followed to its end.

Examples:
  fave submit samples/bikes.mp4 --query 'find bikes' --wait
  fave submit s3://videos/street.mp4 --profile cold --json | jq -r .request_id
  fave submit https://example.com/a.mp4 --idempotency-key nightly-2024-05-01/a")]
pub struct SubmitArgs {
    /// A local path (sent as an absolute file:// URI, which the orchestrator reads in local
    /// mode only), or a file://, s3:// or http(s):// URI.
    pub video: String,
    /// What to look for, e.g. "find scenes with cars".
    #[arg(long)]
    pub query: Option<String>,
    /// The replica regime to run under (the orchestrator's default is warm).
    #[arg(long, value_parser = ["cold", "warm"])]
    pub profile: Option<String>,
    /// Follow a request that is still running after the sync window until it ends.
    #[arg(long)]
    pub wait: bool,
    /// Makes the submission idempotent: sending it again answers with the same request.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print the API's JSON (final.json, or the 202 answer) instead of a summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Exit code 0 while the request runs or once it completed, 1 if it failed or was cancelled,
3 if there is no such request or the gateway cannot be reached.

Examples:
  fave status 0190f3c4a9b87d6e8f0a1b2c3d4e5f60
  fave status 0190f3c4a9b87d6e8f0a1b2c3d4e5f60 --json | jq '.stages[].status'")]
pub struct StatusArgs {
    /// The request id (from `fave submit` or `fave list`).
    #[arg(value_parser = request_id)]
    pub id: RequestId,
    /// Print state.json as the API returns it.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Exit code 1 if the request failed or was cancelled, 3 if it is still running or unknown.

Examples:
  fave result 0190f3c4a9b87d6e8f0a1b2c3d4e5f60
  fave result 0190f3c4a9b87d6e8f0a1b2c3d4e5f60 --json > final.json")]
pub struct ResultArgs {
    #[arg(value_parser = request_id)]
    pub id: RequestId,
    /// Print final.json as the API returns it.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Requests come in id order (creation order for ids fave makes). One page by default; --all
follows next_cursor to the end.

Examples:
  fave list
  fave list --status FAILED --all
  fave list --json --limit 10 | jq -r '.requests[].request_id'")]
pub struct ListArgs {
    /// Only requests in this status.
    #[arg(long, value_parser = ["INIT", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"], ignore_case = true)]
    pub status: Option<String>,
    /// Requests per page (1–200; the orchestrator's default is 50).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub limit: Option<u16>,
    /// Start after this page cursor (a `next_cursor` of an earlier call).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow next_cursor until every page is read.
    #[arg(long)]
    pub all: bool,
    /// Print the API's JSON ({"requests": […], "next_cursor"}; one merged page with --all).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// `cancel` and `resume` take the same arguments.
#[derive(Args, Debug)]
pub struct IdArgs {
    #[arg(value_parser = request_id)]
    pub id: RequestId,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.gateway)?;
    let submission = crate::client::submission(&args.video, args.query, args.profile.as_deref())?;
    let answer = match client
        .submit(&submission, args.idempotency_key.as_deref(), !args.wait)
        .await
    {
        Ok(answer) => answer,
        Err(e) => return Ok(e.report(args.json)),
    };
    let out = Palette::stdout();
    match answer {
        Submitted::Completed { id, result } => Ok(print_completed(&id, &result, args.json)?),
        Submitted::Ended {
            id, status, body, ..
        } => {
            if args.json {
                println!("{}", pretty(&body));
            }
            let (code, message) = error_of(&body);
            eprintln!(
                "request {id} {}: {code}: {message}",
                out.request_status(status)
            );
            Ok(exit::FAILED)
        }
        Submitted::Accepted { id, body } if !args.wait => {
            if args.json {
                println!("{}", pretty(&body));
            } else {
                println!(
                    "request {id} accepted, {}",
                    out.request_status(RequestStatus::Running)
                );
                println!("  follow it: fave status {id}   (or fave submit … --wait)");
            }
            Ok(exit::OK)
        }
        Submitted::Accepted { id, .. } => {
            let id = request_id(&id).map_err(anyhow::Error::msg)?;
            follow(&client, &id, args.json).await
        }
    }
}

/// Polls a running request to its end (a spinner on a terminal), then prints its result or
/// its failure.
async fn follow(client: &Client, id: &RequestId, json_output: bool) -> anyhow::Result<u8> {
    let spinner = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let waited = client
        .wait(id, Duration::from_millis(500), |state| {
            spinner.set_message(progress_line(state));
        })
        .await;
    spinner.finish_and_clear();
    let (_, state) = match waited {
        Ok(done) => done,
        Err(e) => return Ok(e.report(json_output)),
    };
    if state.status == RequestStatus::Completed {
        return match client.result(id).await {
            Ok(raw) => Ok(print_completed(id.as_str(), &raw, json_output)?),
            Err(e) => Ok(e.report(json_output)),
        };
    }
    let (code, message) = failure_of(&state);
    if json_output {
        // The shape the API answers a failed submission with.
        println!(
            "{}",
            pretty(&json!({
                "error": {"code": code, "message": message, "retryable": false},
                "request_id": id,
                "status": state.status,
            }))
        );
    }
    eprintln!(
        "request {id} {}: {code}: {message}",
        Palette::stderr().request_status(state.status)
    );
    Ok(exit::FAILED)
}

fn failure_of(state: &RequestState) -> (String, String) {
    state.failure.as_ref().map_or_else(
        || ("cancelled".into(), "the request was cancelled".into()),
        |f| (f.error_code.clone(), f.error_detail.clone()),
    )
}

/// "RUNNING · stage-detect · 7/11 tasks done" for a spinner.
pub fn progress_line(state: &RequestState) -> String {
    let tasks: Vec<&StageState> = state.tasks().collect();
    let done = tasks.iter().filter(|t| t.status.is_terminal()).count();
    let running: Vec<&str> = tasks
        .iter()
        .filter(|t| matches!(t.status, StageStatus::Running | StageStatus::Retrying))
        .map(|t| t.name.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut line = format!(
        "{} {} · {done}/{} tasks done",
        state.request_id,
        state.status.as_str(),
        tasks.len()
    );
    if !running.is_empty() {
        line.push_str(" · ");
        line.push_str(&running.join(", "));
    }
    line
}

/// A completed request: `final.json` as the API sent it for `--json`, its summary for a
/// person.
fn print_completed(id: &str, result: &Value, json_output: bool) -> anyhow::Result<u8> {
    if json_output {
        println!("{}", pretty(result));
    } else {
        let result: Final = crate::client::typed(result, "final.json")?;
        println!(
            "request {id} {}",
            Palette::stdout().request_status(RequestStatus::Completed)
        );
        crate::print_summary(&result);
    }
    Ok(exit::OK)
}

pub async fn status(args: StatusArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.gateway)?;
    let (raw, state) = match client.state(&args.id).await {
        Ok(found) => found,
        Err(e) => return Ok(e.report(args.json)),
    };
    if args.json {
        println!("{}", pretty(&raw));
    } else {
        print!("{}", describe(&state, Palette::stdout(), Utc::now()));
    }
    Ok(match state.status {
        RequestStatus::Failed | RequestStatus::Cancelled => exit::FAILED,
        _ => exit::OK,
    })
}

/// A request's state for people: what was asked, where it is, each stage, the clips'
/// tasks grouped by stage, and the failure if any.
pub fn describe(state: &RequestState, p: Palette, now: DateTime<Utc>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &state.submission;
    let _ = writeln!(
        out,
        "request  {}  {}  ({})",
        p.paint(Paint::Bold, &state.request_id),
        p.request_status(state.status),
        serde_json::to_value(s.profile)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "video    {}", s.video_uri);
    if let Some(q) = &s.query {
        let _ = writeln!(out, "query    {q}");
    }
    let end = state.ended_at.unwrap_or(now);
    let took = (end - state.created_at).num_milliseconds() as f64 / 1e3;
    let _ = writeln!(
        out,
        "created  {}   {} {}",
        state.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        if state.ended_at.is_some() {
            "took"
        } else {
            "running for"
        },
        term::duration(took)
    );
    let _ = writeln!(out, "stages");
    for stage in &state.stages {
        let _ = writeln!(out, "  {}", stage_line(stage, p));
    }
    if !state.clips.is_empty() {
        let _ = writeln!(out, "clips    {} (tasks by stage)", state.clips.len());
        let mut by_stage: BTreeMap<(usize, &str), Vec<&StageState>> = BTreeMap::new();
        for clip in &state.clips {
            for (i, task) in clip.tasks.iter().enumerate() {
                by_stage
                    .entry((i, task.name.as_str()))
                    .or_default()
                    .push(task);
            }
        }
        for ((_, name), tasks) in by_stage {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for t in &tasks {
                *counts.entry(status_name(t.status)).or_default() += 1;
            }
            let counts: Vec<String> = counts
                .iter()
                .map(|(status, n)| format!("{n} {status}"))
                .collect();
            let attempts = term::plural(tasks.iter().map(|t| t.attempts.len()).sum(), "attempt");
            let busy: u64 = tasks.iter().filter_map(|t| t.duration_ms).sum();
            let _ = writeln!(
                out,
                "  {name:<20} {:<28} {attempts:>12}  {:>10} summed",
                counts.join(", "),
                term::duration(busy as f64 / 1e3)
            );
        }
    }
    if let Some(f) = &state.failure {
        let _ = writeln!(
            out,
            "error    {}: {}",
            p.paint(Paint::Red, &f.error_code),
            f.error_detail
        );
    }
    out
}

fn status_name(s: StageStatus) -> &'static str {
    match s {
        StageStatus::Pending => "PENDING",
        StageStatus::Running => "RUNNING",
        StageStatus::Retrying => "RETRYING",
        StageStatus::Succeeded => "SUCCEEDED",
        StageStatus::Failed => "FAILED",
        StageStatus::Skipped => "SKIPPED",
    }
}

fn stage_line(stage: &StageState, p: Palette) -> String {
    let status = p.stage_status(stage.status);
    // The painted status carries escape codes; pad by the plain name's width.
    let pad = " ".repeat(10usize.saturating_sub(status_name(stage.status).len()));
    let attempts = term::plural(stage.attempts.len(), "attempt");
    let took = stage
        .duration_ms
        .map(|ms| term::duration(ms as f64 / 1e3))
        .unwrap_or_default();
    let mut line = format!(
        "{:<20} {status}{pad} {attempts:>11} {took:>10}",
        stage.name.as_str()
    );
    if let Some(f) = &stage.failure {
        line.push_str(&format!(
            "  {}: {}",
            f.error_code,
            term::cut(&f.error_detail, 80)
        ));
    } else if stage.status == StageStatus::Retrying
        && let Some(f) = stage.attempts.last().and_then(|a| a.failure.as_ref())
    {
        // Waiting, and why: an outage shows here instead of silence.
        let next = stage
            .next_attempt_at
            .map(|at| {
                let secs = (at - chrono::Utc::now()).num_milliseconds().max(0) as f64 / 1e3;
                format!("; next attempt in {}", term::duration(secs))
            })
            .unwrap_or_default();
        line.push_str(&format!(
            "  {}: {}{next}",
            f.error_code,
            term::cut(&f.error_detail, 60)
        ));
    }
    line
}

pub async fn result(args: ResultArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.gateway)?;
    match client.result(&args.id).await {
        Ok(raw) => Ok(print_completed(args.id.as_str(), &raw, args.json)?),
        Err(crate::client::ClientError::Refused { body, message, .. })
            if ended_without_result(&body).is_some() =>
        {
            if args.json {
                println!("{}", pretty(&body));
            }
            // The failure itself is in the state.
            let detail = match client.state(&args.id).await {
                Ok((_, state)) => {
                    let (code, message) = failure_of(&state);
                    format!("{code}: {message}")
                }
                Err(_) => message,
            };
            let status = ended_without_result(&body).map_or("?", RequestStatus::as_str);
            eprintln!("request {} {status}, no result: {detail}", args.id);
            Ok(exit::FAILED)
        }
        Err(e) => Ok(e.report(args.json)),
    }
}

/// The code and message of an error answer, `?` and nothing when it is not one.
fn error_of(body: &Value) -> (String, String) {
    match serde_json::from_value::<ErrorBody>(body.clone()) {
        Ok(ErrorBody { error, .. }) => (error.code, error.message),
        Err(_) => ("?".into(), String::new()),
    }
}

/// The status of a request that the error answer says ended without a result (failed or
/// cancelled).
fn ended_without_result(body: &Value) -> Option<RequestStatus> {
    let answer = serde_json::from_value::<ErrorBody>(body.clone()).ok()?;
    answer
        .status
        .filter(|s| matches!(s, RequestStatus::Failed | RequestStatus::Cancelled))
}

pub async fn list(args: ListArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.gateway)?;
    let status = args.status.map(|s| s.to_ascii_uppercase());
    let mut cursor = args.cursor.clone();
    let mut requests = Vec::new();
    let next = loop {
        let page = match client
            .list(
                status.as_deref(),
                args.limit.map(usize::from),
                cursor.as_deref(),
            )
            .await
        {
            Ok(page) => page,
            Err(e) => return Ok(e.report(args.json)),
        };
        requests.extend(page.requests);
        match page.next_cursor {
            Some(c) if args.all => cursor = Some(c),
            other => break other,
        }
    };
    if args.json {
        println!(
            "{}",
            pretty(&serde_json::to_value(RequestPage {
                requests,
                next_cursor: next
            })?)
        );
        return Ok(exit::OK);
    }
    print!(
        "{}",
        list_table(&requests, Palette::stdout(), term::width())
    );
    if let Some(c) = next {
        println!("more: fave list --all, or fave list --cursor {c}");
    }
    Ok(exit::OK)
}

/// The list as a table that fits `width` columns.
pub fn list_table(requests: &[RequestSummary], p: Palette, width: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if requests.is_empty() {
        out.push_str("no requests\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{}",
        p.paint(
            Paint::Dim,
            format!(
                "{:<32}  {:<9}  {:<19}  {:<7}  {:<24}  VIDEO",
                "REQUEST", "STATUS", "CREATED (UTC)", "PROFILE", "QUERY"
            )
        )
    );
    let fixed = 32 + 2 + 9 + 2 + 19 + 2 + 7 + 2 + 24 + 2;
    for r in requests {
        let status = r.status.as_str();
        let paint = match r.status {
            RequestStatus::Completed => Paint::Green,
            RequestStatus::Failed => Paint::Red,
            RequestStatus::Cancelled => Paint::Yellow,
            _ => Paint::Blue,
        };
        let created = r.created_at.format("%Y-%m-%d %H:%M:%S").to_string();
        let profile = match r.profile {
            Profile::Cold => "cold",
            Profile::Warm => "warm",
        };
        let _ = writeln!(
            out,
            "{:<32}  {}  {created:<19}  {profile:<7}  {:<24}  {}",
            r.request_id,
            p.padded(paint, status, 9),
            term::cut(r.query.as_deref().unwrap_or(""), 24),
            term::cut(&r.video_uri, width.saturating_sub(fixed).max(20)),
        );
    }
    out
}

pub async fn cancel(args: IdArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.gateway)?;
    match client.cancel(&args.id).await {
        Ok(body) => {
            if args.json {
                println!("{}", pretty(&body));
            } else {
                println!(
                    "request {} {}",
                    args.id,
                    Palette::stdout().request_status(RequestStatus::Cancelled)
                );
            }
            Ok(exit::OK)
        }
        Err(e) => Ok(e.report(args.json)),
    }
}

pub async fn resume(args: IdArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.gateway)?;
    match client.resume(&args.id).await {
        Ok(body) => {
            if args.json {
                println!("{}", pretty(&body));
            } else {
                println!(
                    "request {} resumed, {}; follow it: fave status {}",
                    args.id,
                    Palette::stdout().request_status(RequestStatus::Running),
                    args.id
                );
            }
            Ok(exit::OK)
        }
        Err(e) => Ok(e.report(args.json)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fave_common::state::{Profile, StageEvent};

    pub(crate) fn sample_state() -> RequestState {
        let t0: DateTime<Utc> = "2024-05-01T10:00:00Z".parse().unwrap();
        let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        let stage = |name: &str, start: i64, end: i64, retry: bool| {
            let mut s = StageState::new(name.parse().unwrap(), name);
            s.apply(StageEvent::Start, at(start)).unwrap();
            if retry {
                s.apply(
                    StageEvent::Retry {
                        code: "upstream_unavailable".into(),
                        detail: "502".into(),
                    },
                    at(start + 100),
                )
                .unwrap();
                s.apply(StageEvent::Start, at(start + 300)).unwrap();
            }
            s.apply(
                StageEvent::Succeed {
                    outputs: BTreeMap::new(),
                    result: serde_json::Value::Null,
                },
                at(end),
            )
            .unwrap();
            s
        };
        let mut state = RequestState::new(
            "req1".parse().unwrap(),
            fave_common::state::Submission {
                video_uri: "file:///v.mp4".into(),
                query: Some("bikes".into()),
                profile: Profile::Warm,
                callback_url: None,
                reach: None,
                fresh: false,
            },
            vec![
                stage("stage-ffmpeg-0", 200, 1200, false),
                stage("stage-audio", 1200, 1500, true),
            ],
            t0,
        );
        for i in 0..2 {
            state.clips.push(fave_common::state::ClipState {
                clip: fave_common::ids::ClipId::from_index(i),
                start_s: i as f64 * 5.0,
                end_s: i as f64 * 5.0 + 5.0,
                key: String::new(),
                tasks: vec![
                    stage("stage-ffmpeg-2", 1600, 2000, false),
                    stage("stage-detect", 2000, 3000 + 500 * i as i64, false),
                ],
            });
        }
        state.status = RequestStatus::Completed;
        state.ended_at = Some(at(3600));
        state
    }

    #[test]
    fn a_state_reads_as_a_summary() {
        let text = describe(&sample_state(), Palette::plain(), Utc::now());
        assert!(text.contains("request  req1  COMPLETED  (warm)"), "{text}");
        assert!(text.contains("took 3.60 s"), "{text}");
        assert!(
            text.contains("stage-audio          SUCCEEDED   2 attempts     300 ms"),
            "{text}"
        );
        assert!(text.contains("clips    2"), "{text}");
        assert!(text.contains("stage-detect         2 SUCCEEDED"), "{text}");
        let line = progress_line(&sample_state());
        assert_eq!(line, "req1 COMPLETED · 6/6 tasks done");
    }

    #[test]
    fn a_stage_waiting_to_retry_says_why_and_when() {
        let now = Utc::now();
        let mut stage = StageState::new("stage-detect".parse().unwrap(), "stage-detect");
        stage.apply(StageEvent::Start, now).unwrap();
        let retry = StageEvent::Retry {
            code: "gateway_unreachable".into(),
            detail: "could not reach the gateway for stage-detect: connection refused".into(),
        };
        stage.apply(retry, now).unwrap();
        stage.next_attempt_at = Some(now + chrono::Duration::seconds(4));
        let line = stage_line(&stage, Palette::plain());
        assert!(line.contains("RETRYING"), "{line}");
        assert!(
            line.contains("gateway_unreachable: could not reach"),
            "{line}"
        );
        assert!(line.contains("next attempt in"), "{line}");
        // The next event ends the wait.
        stage.apply(StageEvent::Start, now).unwrap();
        assert_eq!(stage.next_attempt_at, None);
    }

    #[test]
    fn the_list_is_a_table() {
        let rows = vec![RequestSummary {
            request_id: "0190f3c4a9b87d6e8f0a1b2c3d4e5f60".parse().unwrap(),
            status: RequestStatus::Failed,
            created_at: "2024-05-01T10:00:00.123Z".parse().unwrap(),
            updated_at: "2024-05-01T10:00:01Z".parse().unwrap(),
            profile: Profile::Warm,
            query: Some("find scenes with cars and trucks and buses".into()),
            video_uri: "s3://b/k.mp4".into(),
            error_code: Some("invalid_media".into()),
        }];
        let table = list_table(&rows, Palette::plain(), 120);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("REQUEST"), "{table}");
        assert!(
            lines[1].contains("FAILED     2024-05-01 10:00:00  warm"),
            "{table}"
        );
        assert!(lines[1].contains("find scenes with cars a…"), "{table}");
        assert!(lines[1].ends_with("s3://b/k.mp4"), "{table}");
    }
}
