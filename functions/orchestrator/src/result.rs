//! `final.json`: what a completed request produced, gathered from `state.json` and the
//! per-clip detections, with the answer to the request's query.
//!
//! ```text
//! request_id, status, submission, input
//! media        stage-ffmpeg-0's facts (duration, size, fps, sound, scene changes)
//! audio        stage-audio's summary and cuts
//! clips[]      clip, start_s, end_s, key, frames, labels{label: best_score, frames,
//!              best_time_s}, detections[] {time_s, label, score, bbox}, transcript {text,
//!              words, segments[] {start_s, end_s, text}}  (times in the video)
//! answer       query, terms, labels, speech (phrases asked for), heard (other words found
//!              in the speech), unknown words, clips[] ranked with why and said, message
//! stages       per stage: the function serving it, status, outputs, attempts, call and
//!              work time (summed over clips), the function's peak memory
//! timings      drive_ms, stage_ms (the time some stage task was open: stages run side by
//!              side), orchestration_ms (the rest: no task open)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fave_common::state::{RequestState, RequestStatus, StageState};
use fave_common::storage::{Storage, StorageError};
use serde_json::{Value, json};

use crate::query;

/// The stage whose per-clip output is `detections.json`.
const DETECT: &str = "stage-detect";
/// The stage whose per-clip result is the clip's transcript.
const TRANSCRIBE: &str = "stage-transcribe";

/// Builds `final.json` for a request whose stages have all succeeded.
pub async fn build(
    storage: &Storage,
    state: &RequestState,
    drive_time: Duration,
) -> Result<Value, StorageError> {
    let mut clips = Vec::with_capacity(state.clips.len());
    for clip in &state.clips {
        let detect = clip.tasks.iter().find(|t| t.name.as_str() == DETECT);
        let summary = detect.and_then(|t| t.metrics.get("data"));
        let detections = match detect.and_then(|t| t.outputs.get("detections")) {
            Some(key) => storage
                .get_json::<Vec<Value>>(key)
                .await?
                .map(|(frames, _)| flatten(&frames, clip.start_s))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let labels: BTreeMap<String, Value> = summary
            .and_then(|d| d["labels"].as_object())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(label, s)| {
                        let mut s = s.clone();
                        if let Some(t) = s["best_time_s"].as_f64() {
                            s["best_time_s"] = json!(round3(clip.start_s + t));
                        }
                        (label.clone(), s)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let transcript = clip
            .tasks
            .iter()
            .find(|t| t.name.as_str() == TRANSCRIBE)
            .and_then(|t| t.metrics.get("data"))
            .map(|d| transcript(d, clip.start_s));
        clips.push(json!({
            "clip": clip.clip,
            "start_s": clip.start_s,
            "end_s": clip.end_s,
            "key": clip.key,
            "frames": summary.and_then(|d| d["frames"].as_u64()).unwrap_or(0),
            "labels": labels,
            "detections": detections,
            "transcript": transcript,
        }));
    }
    let answer = state.submission.query.as_deref().map(|q| answer(q, &clips));
    let request_wide = |name: &str| {
        state
            .stages
            .iter()
            .find(|s| s.name.as_str() == name)
            .and_then(|s| s.metrics.get("data"))
            .cloned()
    };
    let (stages, stage_ms) = stage_summary(state);
    let drive_ms = drive_time.as_millis() as u64;
    Ok(json!({
        "request_id": state.request_id,
        "status": RequestStatus::Completed,
        "submission": state.submission,
        "input": state.input,
        "media": request_wide("stage-ffmpeg-0"),
        "audio": request_wide("stage-audio"),
        "clips": clips,
        "answer": answer,
        "stages": stages,
        "timings": {
            "drive_ms": drive_ms,
            "stage_ms": stage_ms,
            // State writes, scheduling and everything else that is not a stage call.
            "orchestration_ms": drive_ms.saturating_sub(stage_ms),
        },
    }))
}

/// One clip's frames (`detections.json`) as a flat list, times moved into the video's.
fn flatten(frames: &[Value], clip_start: f64) -> Vec<Value> {
    frames
        .iter()
        .flat_map(|frame| {
            let time = round3(clip_start + frame["time_s"].as_f64().unwrap_or(0.0));
            frame["detections"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |d| {
                    json!({
                        "time_s": time,
                        "label": d["label"],
                        "score": d["score"],
                        "bbox": d["bbox"],
                    })
                })
        })
        .collect()
}

/// A clip's transcript (stage-transcribe's result), segment times moved into the video's.
fn transcript(data: &Value, clip_start: f64) -> Value {
    let segments: Vec<Value> = data["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let at = |k: &str| round3(clip_start + s[k].as_f64().unwrap_or(0.0));
            json!({"start_s": at("start_s"), "end_s": at("end_s"), "text": s["text"]})
        })
        .collect();
    json!({
        "text": data["text"].as_str().unwrap_or_default(),
        "words": data["words"].as_u64().unwrap_or(0),
        "segments": segments,
    })
}

fn round3(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// The clips that answer `text`, ranked, and what the query was understood as.
fn answer(text: &str, clips: &[Value]) -> Value {
    let plan = query::understand(text);
    let evidence: Vec<query::ClipEvidence<'_>> = clips
        .iter()
        .map(|c| query::ClipEvidence {
            clip: c["clip"].as_str().unwrap_or_default(),
            start_s: c["start_s"].as_f64().unwrap_or(0.0),
            end_s: c["end_s"].as_f64().unwrap_or(0.0),
            labels: c["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(label, s)| {
                    (
                        label.as_str(),
                        s["best_score"].as_f64().unwrap_or(0.0) as f32,
                        s["frames"].as_u64().unwrap_or(0) as usize,
                    )
                })
                .collect(),
            frames: c["frames"].as_u64().unwrap_or(0) as usize,
            speech: c["transcript"]["segments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| query::Spoken {
                    start_s: s["start_s"].as_f64().unwrap_or(0.0),
                    text: s["text"].as_str().unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    let matches = query::rank(&plan, &evidence);
    let unknown = query::unheard(&plan, &evidence);
    let heard: Vec<&String> = plan
        .unknown
        .iter()
        .filter(|w| !unknown.contains(w))
        .collect();
    // What was looked for, in words: the labels, then what someone should say.
    let said: Vec<String> = plan
        .phrases
        .iter()
        .chain(heard.iter().copied())
        .map(|p| format!("\"{p}\""))
        .collect();
    let labels = plan.labels().join(", ");
    let suffix = unknown_suffix(&unknown);
    let message = if plan.terms.is_empty() && said.is_empty() {
        format!(
            "nothing in the query names an object the detector knows or words to listen for{suffix}"
        )
    } else {
        let said = said.join(", ");
        // (plural verb for "N clips …", singular for "no clip …")
        let (what, what_one) = match (plan.terms.is_empty(), said.is_empty()) {
            (false, true) => (format!("show {labels}"), format!("shows {labels}")),
            (true, false) => (format!("have {said} said"), format!("has {said} said")),
            _ => (
                format!("show {labels} or have {said} said"),
                format!("shows {labels} or has {said} said"),
            ),
        };
        if matches.is_empty() {
            format!("no clip {what_one}{suffix}")
        } else {
            format!("{} of {} clips {what}{suffix}", matches.len(), clips.len())
        }
    };
    json!({
        "query": text,
        "terms": plan.terms.iter().map(|t| json!({"word": t.word, "labels": t.labels})).collect::<Vec<_>>(),
        "labels": plan.labels(),
        "speech": plan.phrases,
        "heard": heard,
        "unknown": unknown,
        "message": message,
        "clips": matches.iter().map(|m| json!({
            "clip": m.clip,
            "start_s": m.start_s,
            "end_s": m.end_s,
            "score": (m.score * 1000.0).round() / 1000.0,
            "matched": m.matched,
            "said": m.said,
            "why": m.why,
        })).collect::<Vec<_>>(),
    })
}

fn unknown_suffix(unknown: &[String]) -> String {
    if unknown.is_empty() {
        String::new()
    } else {
        format!(" (words not understood: {})", unknown.join(", "))
    }
}

/// Per stage (per-clip tasks summed over the clips): status, outputs, attempts and times;
/// and the time spent in stages: request-wide calls plus the per-clip phase's wall time.
fn stage_summary(state: &RequestState) -> (BTreeMap<String, Value>, u64) {
    let mut stages = BTreeMap::new();
    for s in &state.stages {
        let call_ms = metric(s, "call_ms");
        stages.insert(
            s.name.to_string(),
            json!({
                "function": s.function,
                "status": s.status,
                "outputs": s.outputs,
                "attempts": s.attempts.len(),
                "call_ms": call_ms,
                "work_ms": metric(s, "work_ms"),
                "peak_rss_kb": s.metrics.get("peak_rss_kb"),
            }),
        );
    }
    let tasks: Vec<&StageState> = state.clips.iter().flat_map(|c| &c.tasks).collect();
    let mut per_clip: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    let mut functions: BTreeMap<String, &str> = BTreeMap::new();
    for t in &tasks {
        functions.insert(t.name.to_string(), &t.function);
        let e = per_clip.entry(t.name.to_string()).or_default();
        e[0] += 1;
        e[1] += t.attempts.len() as u64;
        e[2] += metric(t, "call_ms");
        e[3] += metric(t, "work_ms");
        e[4] = e[4].max(metric(t, "peak_rss_kb"));
    }
    for (name, [clips, attempts, call_ms, work_ms, peak_rss_kb]) in per_clip {
        let function = functions.get(&name).copied();
        stages.insert(
            name,
            json!({
                "function": function,
                "clips": clips,
                "attempts": attempts,
                "call_ms": call_ms,
                "work_ms": work_ms,
                "peak_rss_kb": peak_rss_kb,
            }),
        );
    }
    (stages, open_ms(state.tasks()))
}

/// How long at least one of `tasks` was open (from its start to its end), in ms: the union
/// of their spans, since tasks run side by side.
fn open_ms<'a>(tasks: impl Iterator<Item = &'a StageState>) -> u64 {
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = tasks
        .filter_map(|t| Some((t.started_at?, t.ended_at?)))
        .collect();
    spans.sort();
    let mut open = chrono::Duration::zero();
    let mut current: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for (start, end) in spans {
        match &mut current {
            Some((_, until)) if start <= *until => *until = (*until).max(end),
            _ => {
                if let Some((a, b)) = current.replace((start, end)) {
                    open += b - a;
                }
            }
        }
    }
    if let Some((a, b)) = current {
        open += b - a;
    }
    open.num_milliseconds().max(0) as u64
}

fn metric(s: &StageState, name: &str) -> u64 {
    s.metrics.get(name).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(id: &str, start: f64, labels: Value, frames: u64) -> Value {
        json!({"clip": id, "start_s": start, "end_s": start + 10.0, "labels": labels, "frames": frames})
    }

    #[test]
    fn stage_time_counts_side_by_side_tasks_once() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let task = |from_ms: i64, to_ms: Option<i64>| {
            let mut s = StageState::new("stage-x".parse().unwrap(), "stage-x");
            s.started_at = Some(t0 + chrono::Duration::milliseconds(from_ms));
            s.ended_at = to_ms.map(|ms| t0 + chrono::Duration::milliseconds(ms));
            s
        };
        // 0-1000 and 200-3000 overlap (3000 open), a gap, then 3500-4000; one never ended.
        let tasks = [
            task(200, Some(3000)),
            task(0, Some(1000)),
            task(3500, Some(4000)),
            task(100, None),
        ];
        assert_eq!(open_ms(tasks.iter()), 3500);
        assert_eq!(open_ms([].iter()), 0);
    }

    #[test]
    fn the_answer_ranks_clips_with_the_object_and_explains() {
        let clips = vec![
            clip(
                "clip-0000",
                0.0,
                json!({"person": {"best_score": 0.9, "frames": 5}}),
                5,
            ),
            clip(
                "clip-0001",
                10.0,
                json!({"car": {"best_score": 0.8, "frames": 4}}),
                5,
            ),
        ];
        let a = answer("find scenes with cars", &clips);
        assert_eq!(a["labels"], json!(["car"]));
        assert_eq!(a["clips"].as_array().map(Vec::len), Some(1));
        assert_eq!(a["clips"][0]["clip"], "clip-0001");
        assert!(
            a["clips"][0]["why"][0]
                .as_str()
                .is_some_and(|w| w.contains("car"))
        );
        assert!(
            a["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("1 of 2"))
        );

        let none = answer("find scenes with zebras", &clips);
        assert_eq!(none["clips"], json!([]));
        assert!(
            none["message"]
                .as_str()
                .is_some_and(|m| m.contains("no clip shows zebra"))
        );

        let unknown = answer("find scenes with unicorns", &clips);
        assert_eq!(unknown["unknown"], json!(["unicorns"]));
        assert!(
            unknown["message"]
                .as_str()
                .is_some_and(|m| m.contains("unicorns"))
        );
    }

    fn said(mut clip: Value, segments: &[(f64, &str)]) -> Value {
        let segments: Vec<Value> = segments
            .iter()
            .map(|&(start_s, text)| json!({"start_s": start_s, "end_s": start_s + 1.0, "text": text}))
            .collect();
        clip["transcript"] = json!({"text": "", "words": 0, "segments": segments});
        clip
    }

    #[test]
    fn transcripts_move_into_the_videos_time() {
        let data = json!({"text": "Hello there. General Kenobi.", "words": 4, "rtf": 0.2,
            "segments": [{"start_s": 0.5, "end_s": 1.25, "text": "Hello there."},
                         {"start_s": 1.5, "end_s": 3.0, "text": "General Kenobi."}]});
        let t = transcript(&data, 20.0);
        assert_eq!(
            t,
            json!({"text": "Hello there. General Kenobi.", "words": 4, "segments": [
                {"start_s": 20.5, "end_s": 21.25, "text": "Hello there."},
                {"start_s": 21.5, "end_s": 23.0, "text": "General Kenobi."}]})
        );
        let silent = transcript(&json!({"text": "", "segments": [], "words": 0}), 5.0);
        assert_eq!(silent, json!({"text": "", "words": 0, "segments": []}));
    }

    #[test]
    fn the_answer_finds_what_is_said_and_ranks_clips_with_both_first() {
        let clips = vec![
            said(
                clip(
                    "clip-0000",
                    0.0,
                    json!({"car": {"best_score": 0.9, "frames": 5}}),
                    5,
                ),
                &[],
            ),
            said(
                clip("clip-0001", 10.0, json!({}), 5),
                &[(12.0, "You don't judge a book by its cover.")],
            ),
            said(
                clip(
                    "clip-0002",
                    20.0,
                    json!({"car": {"best_score": 0.4, "frames": 1}}),
                    5,
                ),
                &[(21.0, "The judge is here.")],
            ),
        ];
        let a = answer("find where someone says 'judge'", &clips);
        assert_eq!(a["speech"], json!(["judge"]));
        assert_eq!(a["unknown"], json!([]));
        let ranked: Vec<&str> = a["clips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["clip"].as_str())
            .collect();
        assert_eq!(ranked, vec!["clip-0001", "clip-0002"]);
        assert_eq!(a["clips"][0]["said"], json!(["judge"]));
        assert_eq!(a["clips"][0]["why"], json!(["said \"judge\" at 12.0 s"]));
        assert_eq!(a["message"], "2 of 3 clips have \"judge\" said");

        // Objects and words: the clip with both first. "cover" is no label but is said: it
        // is heard, not unknown; "flurbs" is neither.
        let a = answer("cars and judge, cover, flurbs", &clips);
        assert_eq!(a["labels"], json!(["car"]));
        assert_eq!(a["heard"], json!(["judge", "cover"]));
        assert_eq!(a["unknown"], json!(["flurbs"]));
        assert_eq!(a["clips"][0]["clip"], "clip-0002");
        assert_eq!(a["clips"][1]["clip"], "clip-0001");
        assert_eq!(
            a["message"],
            "3 of 3 clips show car or have \"judge\", \"cover\" said (words not understood: flurbs)"
        );

        let none = answer("someone says 'open the door'", &clips);
        assert_eq!(none["clips"], json!([]));
        assert_eq!(none["message"], "no clip has \"open the door\" said");
    }

    #[test]
    fn detections_move_into_the_videos_time() {
        let frames = vec![json!({"time_s": 2.0, "detections": [
            {"label": "car", "score": 0.5, "bbox": [1, 2, 3, 4], "class_id": 2}
        ]})];
        let flat = flatten(&frames, 20.0);
        assert_eq!(flat.len(), 1);
        assert_eq!(flat[0]["time_s"], 22.0);
        assert_eq!(flat[0]["label"], "car");
    }
}
