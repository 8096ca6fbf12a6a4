//! Running one line: submitting it (or following the request an earlier run submitted),
//! following its request to the end, and journaling what happened.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use fave_common::contract::report::Final;
use fave_common::ids::RequestId;
use fave_common::state::{RequestState, RequestStatus};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use super::journal::{Event, Journal};
use super::lines::Item;
use crate::client::{Client, ClientError, Submitted};
use crate::term::{self, Paint, Palette};

/// How one line ended in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Completed,
    /// FAILED or CANCELLED.
    Failed,
    /// Refused before it was accepted (a 4xx such as `invalid_video_uri`); not journaled,
    /// so a rerun tries it again.
    Rejected,
    /// The gateway could not be reached; left for a rerun.
    NotRun,
}

/// The counters the progress bar shows.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) submitted: AtomicUsize,
    pub(super) running: AtomicUsize,
    pub(super) done: AtomicUsize,
    pub(super) failed: AtomicUsize,
}

impl Counters {
    fn message(&self) -> String {
        let n = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        format!(
            "{} submitted · {} running · {} done · {} failed",
            n(&self.submitted),
            n(&self.running),
            n(&self.done),
            n(&self.failed)
        )
    }
}

/// What every line's task shares.
pub(super) struct Ctx {
    pub(super) client: Client,
    pub(super) journal: Journal,
    pub(super) counters: Counters,
    pub(super) bar: ProgressBar,
    pub(super) poll: Duration,
    /// Set when the gateway stayed unreachable: the lines not started yet are left alone.
    pub(super) gave_up: AtomicBool,
}

impl Ctx {
    pub(super) fn refresh(&self) {
        self.bar.set_message(self.counters.message());
    }

    pub(super) fn say(&self, text: String) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

/// Submits (or re-attaches to) one line's request and follows it to its end.
pub(super) async fn run_line(
    ctx: &Ctx,
    item: Item,
    known_id: Option<String>,
) -> anyhow::Result<(usize, Outcome, Value)> {
    let started = Instant::now();
    let base = json!({
        "line": item.line,
        "uri": item.submission.video_uri,
        "query": item.submission.query,
        "profile": item.submission.profile,
    });
    let with = |mut extra: Value| {
        let mut v = base.clone();
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object_mut()) {
            v.append(extra);
        }
        v
    };
    if ctx.gave_up.load(Ordering::Relaxed) {
        return Ok((
            item.line,
            Outcome::NotRun,
            with(
                json!({"status": "NOT_RUN", "error": {"code": "gateway_unreachable",
                "message": "not submitted: the gateway could not be reached"}}),
            ),
        ));
    }
    let p = Palette::stderr();
    // Re-attach to a request an earlier run submitted; if the orchestrator does not know
    // it (another store?), submitting with the same key is safe and recreates it.
    let mut attached = None;
    if let Some(id) = known_id
        .as_deref()
        .and_then(|id| id.parse::<RequestId>().ok())
    {
        if let Err(ClientError::Refused { status: 404, .. }) = ctx.client.state(&id).await {
            ctx.say(format!(
                "line {}: the orchestrator does not know {id}; submitting it again",
                item.line
            ));
        } else {
            ctx.counters.running.fetch_add(1, Ordering::Relaxed);
            ctx.refresh();
            ctx.say(format!(
                "line {}: following {id} (submitted earlier)",
                item.line
            ));
            attached = Some(id);
        }
    }
    let (id, early_end) = match attached {
        Some(id) => (id, None),
        None => match submit_line(ctx, &item).await {
            Ok(Submitted::Accepted { id, .. }) => {
                let id = parse_id(&id)?;
                journal_submitted(ctx, &item, &id)?;
                (id, None)
            }
            Ok(Submitted::Completed { id, result }) => {
                let id = parse_id(&id)?;
                journal_submitted(ctx, &item, &id)?;
                (id, Some(Ok(result)))
            }
            Ok(Submitted::Ended { id, .. }) => {
                let id = parse_id(&id)?;
                journal_submitted(ctx, &item, &id)?;
                (id, Some(Err(())))
            }
            Err(e) => {
                // The gateway unreachable stops the batch's submissions; a refusal is this
                // line's alone.
                let (outcome, status, paint, what) = if e.is_transient() {
                    ctx.gave_up.store(true, Ordering::Relaxed);
                    (Outcome::NotRun, "NOT_RUN", Paint::Yellow, "not run")
                } else {
                    (Outcome::Rejected, "REJECTED", Paint::Red, "refused")
                };
                ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                ctx.refresh();
                ctx.say(format!("line {}: {}: {e}", item.line, p.paint(paint, what)));
                return Ok((
                    item.line,
                    outcome,
                    with(json!({"status": status, "error": e.detail()})),
                ));
            }
        },
    };
    // Follow it to its end (a sync answer has ended already; one poll gives its times).
    let waited = match early_end {
        Some(_) => ctx.client.state(&id).await,
        None => ctx.client.wait(&id, ctx.poll, |_| {}).await,
    };
    let state = match waited {
        Ok((_, state)) => state,
        Err(e) => {
            // Still running on the server as far as anyone knows: leave it for a rerun.
            if e.is_transient() {
                ctx.gave_up.store(true, Ordering::Relaxed);
            }
            ctx.counters.running.fetch_sub(1, Ordering::Relaxed);
            ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
            ctx.refresh();
            ctx.say(format!(
                "line {}: {} {id}: {e}",
                item.line,
                p.paint(Paint::Yellow, "lost track of"),
            ));
            return Ok((
                item.line,
                Outcome::NotRun,
                with(json!({"request_id": id, "status": "NOT_RUN", "error": e.detail()})),
            ));
        }
    };
    let seconds = state
        .ended_at
        .map(|end| (end - state.created_at).num_milliseconds() as f64 / 1e3)
        .unwrap_or_else(|| started.elapsed().as_secs_f64());
    let mut result = with(json!({
        "request_id": id,
        "status": state.status,
        "seconds": (seconds * 1000.0).round() / 1000.0,
    }));
    let outcome = if state.status == RequestStatus::Completed {
        let final_json = match early_end {
            Some(Ok(result)) => Ok(result),
            _ => ctx.client.result(&id).await,
        };
        match final_json {
            Ok(final_json) => match crate::client::typed(&final_json, "final.json") {
                Ok(final_json) => result["answer"] = summarize(&final_json),
                Err(e) => result["answer_error"] = e.detail(),
            },
            Err(e) => result["answer_error"] = e.detail(),
        }
        Outcome::Completed
    } else {
        result["error"] = failure(&state);
        Outcome::Failed
    };
    ctx.journal.append(&Event::Finished {
        line: item.line,
        key: item.key.clone(),
        request_id: id.to_string(),
        status: state.status.as_str().to_owned(),
        result: result.clone(),
        at: Utc::now(),
    })?;
    ctx.counters.running.fetch_sub(1, Ordering::Relaxed);
    let (counter, paint) = match outcome {
        Outcome::Completed => (&ctx.counters.done, Paint::Green),
        _ => (&ctx.counters.failed, Paint::Red),
    };
    counter.fetch_add(1, Ordering::Relaxed);
    ctx.refresh();
    let what = match outcome {
        Outcome::Completed => result["answer"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        _ => format!(
            "{}: {}",
            result["error"]["code"].as_str().unwrap_or("?"),
            term::cut(result["error"]["message"].as_str().unwrap_or(""), 120)
        ),
    };
    ctx.say(format!(
        "line {}: {} {id} in {}  {what}",
        item.line,
        p.paint(paint, state.status.as_str()),
        term::duration(seconds)
    ));
    Ok((item.line, outcome, result))
}

fn parse_id(id: &str) -> anyhow::Result<RequestId> {
    id.parse()
        .map_err(|e| anyhow::anyhow!("the orchestrator answered with a bad request id: {e}"))
}

fn journal_submitted(ctx: &Ctx, item: &Item, id: &RequestId) -> anyhow::Result<()> {
    ctx.journal.append(&Event::Submitted {
        line: item.line,
        key: item.key.clone(),
        request_id: id.to_string(),
        at: Utc::now(),
    })?;
    ctx.counters.running.fetch_add(1, Ordering::Relaxed);
    ctx.refresh();
    Ok(())
}

/// `POST /` with the line's key; transient trouble (connect errors, 429, 502–504, a
/// replica shutting down) is retried with backoff, which the key makes safe.
async fn submit_line(ctx: &Ctx, item: &Item) -> Result<Submitted, ClientError> {
    ctx.counters.submitted.fetch_add(1, Ordering::Relaxed);
    ctx.refresh();
    let mut delay = Duration::from_millis(500);
    let mut tries = 0;
    loop {
        match ctx
            .client
            .submit(&item.submission, Some(&item.key), false)
            .await
        {
            Err(e) if e.is_transient() && tries < 5 && !ctx.gave_up.load(Ordering::Relaxed) => {
                tries += 1;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
}

fn failure(state: &RequestState) -> Value {
    match &state.failure {
        Some(f) => json!({"code": f.error_code, "message": f.error_detail}),
        None => json!({"code": "cancelled", "message": "the request was cancelled"}),
    }
}

/// The answer to the query and what was seen, from `final.json`: the answer's message, its
/// best three clips, and the five labels seen with the best scores.
pub fn summarize(final_json: &Final) -> Value {
    let clips: Vec<Value> = final_json
        .answer
        .iter()
        .flat_map(|a| a.clips.iter().take(3))
        .map(|m| json!({"clip": m.clip, "start_s": m.start_s, "end_s": m.end_s, "score": m.score}))
        .collect();
    let mut labels: BTreeMap<&str, (f32, usize)> = BTreeMap::new();
    for clip in &final_json.clips {
        for (label, s) in &clip.labels {
            let e = labels.entry(label).or_insert((0.0, 0));
            e.0 = e.0.max(s.best_score);
            e.1 += 1;
        }
    }
    let mut labels: Vec<(&str, (f32, usize))> = labels.into_iter().collect();
    labels.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    json!({
        "message": final_json.answer.as_ref().map(|a| &a.message),
        "clips": clips,
        "labels": labels.iter().take(5).map(|(l, (score, n))| json!({
            "label": l,
            "best_score": (f64::from(*score) * 1000.0).round() / 1000.0,
            "clips": n,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_summarized() {
        let clip = |id: &str, labels: Value| {
            json!({"clip": id, "start_s": 0.0, "end_s": 5.0, "key": "k", "frames": 5,
                   "labels": labels, "detections": [], "transcript": null})
        };
        let seen = |score: f64| json!({"best_score": score, "frames": 1, "best_time_s": 0.0});
        let final_json: Final = serde_json::from_value(json!({
            "request_id": "r1", "status": "COMPLETED",
            "submission": {"video_uri": "s3://b/k.mp4", "query": "bikes", "profile": "warm",
                           "callback_url": null},
            "input": null, "media": null, "audio": null,
            "answer": {"query": "bikes", "terms": [], "labels": ["bicycle"], "speech": [],
                       "heard": [], "unknown": [], "message": "1 of 2 clips show bicycle",
                       "clips": [{"clip": "clip-0001", "start_s": 5.0, "end_s": 9.5,
                                  "score": 0.91, "matched": ["bicycle"], "said": [],
                                  "why": ["x"]}]},
            "clips": [
                clip("clip-0000", json!({"bicycle": seen(0.91), "person": seen(0.8)})),
                clip("clip-0001", json!({"person": seen(0.95)})),
            ],
            "stages": {},
            "timings": {"drive_ms": 1, "stage_ms": 1, "orchestration_ms": 0},
        }))
        .unwrap();
        let s = summarize(&final_json);
        assert_eq!(s["message"], "1 of 2 clips show bicycle");
        assert_eq!(
            s["clips"][0],
            json!({"clip": "clip-0001", "start_s": 5.0, "end_s": 9.5, "score": 0.91})
        );
        assert_eq!(
            s["labels"][0],
            json!({"label": "person", "best_score": 0.95, "clips": 2})
        );
        assert_eq!(s["labels"][1]["label"], "bicycle");
    }
}
