//! `final.json` ([`Final`]): what a completed request produced, gathered from `state.json`
//! and the per-clip detections, with the answer to the request's query. Its shape is the
//! contract's (`fave_common::contract::report`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fave_common::contract::library::VideoIndex;
use fave_common::contract::report::{
    Answer, ClipReport, Final, Moment, StageReport, Term, TimedDetection, Timings, Transcript,
};
use fave_common::contract::{audio, detect, ffmpeg0, transcribe};
use fave_common::state::{ClipState, RequestState, RequestStatus, StageState};
use fave_common::storage::Storage;
use serde::de::DeserializeOwned;

use crate::query;
use crate::record::{DriveError, bug};

/// Builds `final.json` for a request whose stages have all succeeded.
/// Returns it with the embeddings of its transcript segments (for the library's index).
pub async fn build(
    storage: &Storage,
    state: &RequestState,
    drive_time: Duration,
    meaning: Option<&dyn query::Meaning>,
) -> Result<(Final, Vec<Vec<Vec<f32>>>), DriveError> {
    let mut clips = Vec::with_capacity(state.clips.len());
    for clip in &state.clips {
        clips.push(clip_report(storage, clip).await?);
    }
    let segments = embed_segments(meaning, &clips);
    let reading = Reading {
        meaning,
        segments: &segments,
    };
    let answer = state
        .submission
        .query
        .as_deref()
        .map(|q| answer(q, &clips, reading));
    let (stages, stage_ms) = stage_summary(state);
    let drive_ms = drive_time.as_millis() as u64;
    let made = Final {
        request_id: state.request_id.clone(),
        status: RequestStatus::Completed,
        submission: state.submission.clone(),
        input: state.input.clone(),
        analysis: state.analysis.clone(),
        media: request_wide::<ffmpeg0::Output>(state, ffmpeg0::NAME)?,
        audio: request_wide::<audio::Output>(state, audio::NAME)?,
        clips,
        answer,
        stages,
        timings: Timings {
            drive_ms,
            stage_ms,
            // State writes, scheduling and everything else that is not a stage call.
            orchestration_ms: drive_ms.saturating_sub(stage_ms),
        },
    };
    Ok((made, segments))
}

/// `final.json` for a request answered from a published analysis: its clips, media and
/// sound are the analysis's, its answer is to its own query, and no stage ran.
pub fn from_index(
    state: &RequestState,
    index: &VideoIndex,
    drive_time: Duration,
    meaning: Option<&dyn query::Meaning>,
) -> Final {
    let segments = index_meanings(index, meaning);
    let reading = Reading {
        meaning,
        segments: &segments,
    };
    let drive_ms = drive_time.as_millis() as u64;
    Final {
        request_id: state.request_id.clone(),
        status: RequestStatus::Completed,
        submission: state.submission.clone(),
        input: state.input.clone(),
        analysis: state.analysis.clone(),
        media: index.media.clone(),
        audio: index.audio.clone(),
        clips: index.clips.clone(),
        answer: state
            .submission
            .query
            .as_deref()
            .map(|q| answer(q, &index.clips, reading)),
        stages: BTreeMap::new(),
        timings: Timings {
            drive_ms,
            stage_ms: 0,
            orchestration_ms: drive_ms,
        },
    }
}

/// One clip: its detections (read from `detections.json`) and transcript, times moved
/// into the video's.
async fn clip_report(storage: &Storage, clip: &ClipState) -> Result<ClipReport, DriveError> {
    let frames = clip_frames(storage, clip).await?;
    clip_report_of(clip, &frames)
}

/// A clip's `detections.json`: each frame the detector was given and what it found, times
/// from the clip's start; none before the clip's detection succeeded.
pub(crate) async fn clip_frames(
    storage: &Storage,
    clip: &ClipState,
) -> Result<Vec<detect::FrameDetections>, DriveError> {
    let key = clip
        .tasks
        .iter()
        .find(|t| t.name.as_str() == detect::NAME)
        .and_then(|t| t.outputs.get(detect::outputs::DETECTIONS));
    Ok(match key {
        Some(key) => storage
            .get_json::<Vec<detect::FrameDetections>>(key)
            .await?
            .map(|(frames, _)| frames)
            .unwrap_or_default(),
        None => Vec::new(),
    })
}

/// [`clip_report`] from the clip's frames, already read ([`clip_frames`]).
pub(crate) fn clip_report_of(
    clip: &ClipState,
    frames: &[detect::FrameDetections],
) -> Result<ClipReport, DriveError> {
    let detect = clip.tasks.iter().find(|t| t.name.as_str() == detect::NAME);
    let summary: Option<detect::Output> = detect.map(result).transpose()?.flatten();
    let detections = flatten(frames, clip.start_s);
    let transcript = clip
        .tasks
        .iter()
        .find(|t| t.name.as_str() == transcribe::NAME)
        .map(result::<transcribe::Output>)
        .transpose()?
        .flatten()
        .map(|heard| in_video_time(&heard, clip.start_s));
    let (frames, detected, carried, labels) = match summary {
        Some(seen) => (
            seen.frames,
            seen.detected,
            seen.carried,
            seen.labels
                .into_iter()
                .map(|(label, mut s)| {
                    s.best_time_s = round3(clip.start_s + s.best_time_s);
                    (label, s)
                })
                .collect(),
        ),
        None => (0, 0, 0, BTreeMap::new()),
    };
    Ok(ClipReport {
        clip: clip.clip.clone(),
        start_s: clip.start_s,
        end_s: clip.end_s,
        key: clip.key.clone(),
        frames,
        detected,
        carried,
        labels,
        detections,
        transcript,
    })
}

/// A task's result as its contract's `Output`, if it has one.
fn result<O: DeserializeOwned>(task: &StageState) -> Result<Option<O>, DriveError> {
    task.result::<O>()
        .transpose()
        .map_err(|e| bug("building final.json", e))
}

/// A request-wide stage's result, if the table has the stage.
fn request_wide<O: DeserializeOwned>(
    state: &RequestState,
    name: &str,
) -> Result<Option<O>, DriveError> {
    match crate::pipeline::request_wide(state, name) {
        Some(stage) => result(stage),
        None => Ok(None),
    }
}

/// One clip's frames (`detections.json`) as a flat list, times moved into the video's.
fn flatten(frames: &[detect::FrameDetections], clip_start: f64) -> Vec<TimedDetection> {
    frames
        .iter()
        .flat_map(|frame| {
            let time_s = round3(clip_start + frame.time_s);
            frame.detections.iter().map(move |d| TimedDetection {
                time_s,
                label: d.label.clone(),
                score: d.score,
                bbox: d.bbox,
            })
        })
        .collect()
}

/// A clip's transcript, segment times moved into the video's.
fn in_video_time(heard: &transcribe::Output, clip_start: f64) -> Transcript {
    Transcript {
        text: heard.text.clone(),
        words: heard.words,
        segments: heard
            .segments
            .iter()
            .map(|s| transcribe::Segment {
                start_s: round3(clip_start + s.start_s),
                end_s: round3(clip_start + s.end_s),
                text: s.text.clone(),
            })
            .collect(),
    }
}

fn round3(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// The clips that answer `text`, ranked, and what the query was understood as.
pub(crate) fn answer(text: &str, clips: &[ClipReport], reading: Reading<'_>) -> Answer {
    let plan = query::understand_with(text, reading.meaning);
    let frames: Vec<FrameLabels> = clips.iter().map(frame_labels).collect();
    answer_plan(&plan, clips, reading.segments, &frames)
}

/// Each frame's boxes of one clip, by label: what counts, objects seen together and objects
/// not seen are judged on.
pub type FrameLabels = Vec<BTreeMap<String, usize>>;

/// A clip's frames with at least one box, from its detections (one frame a time).
pub fn frame_labels(clip: &ClipReport) -> FrameLabels {
    let mut frames: BTreeMap<u64, BTreeMap<String, usize>> = BTreeMap::new();
    for d in &clip.detections {
        let at = (d.time_s * 1000.0).round() as u64;
        *frames
            .entry(at)
            .or_default()
            .entry(d.label.clone())
            .or_default() += 1;
    }
    frames.into_values().collect()
}

/// What an answer reads besides the clips: the language model, when loaded, and the
/// embeddings of each clip's transcript segments (by clip, then segment), when made.
#[derive(Clone, Copy, Default)]
pub struct Reading<'a> {
    pub meaning: Option<&'a dyn query::Meaning>,
    pub segments: &'a [Vec<Vec<f32>>],
}

/// The segment embeddings an index is answered with: its own when this model made them (or
/// there is no model to make others), else made now.
pub fn index_meanings<'a>(
    index: &'a VideoIndex,
    meaning: Option<&dyn query::Meaning>,
) -> Cow<'a, [Vec<Vec<f32>>]> {
    if meaning.is_none() || index.embedder.as_deref() == Some(crate::embed::MODEL_NAME) {
        Cow::Borrowed(&index.meanings)
    } else {
        Cow::Owned(embed_segments(meaning, &index.clips))
    }
}

/// The embeddings of every clip's transcript segments, by clip then segment; empty without
/// a model (or when it failed).
pub fn embed_segments(
    meaning: Option<&dyn query::Meaning>,
    clips: &[ClipReport],
) -> Vec<Vec<Vec<f32>>> {
    let Some(meaning) = meaning else {
        return Vec::new();
    };
    let texts: Vec<&str> = clips
        .iter()
        .flat_map(|c| c.transcript.iter().flat_map(|t| &t.segments))
        .map(|s| s.text.as_str())
        .collect();
    let mut embedded = meaning.embed(&texts).into_iter();
    if embedded.len() != texts.len() {
        return Vec::new();
    }
    clips
        .iter()
        .map(|c| {
            let n = c.transcript.as_ref().map_or(0, |t| t.segments.len());
            embedded.by_ref().take(n).collect()
        })
        .collect()
}

/// The answer to a plan already read: the same for one request's clips and for each video
/// of the library, the plan (and its embeddings) made once.
pub(crate) fn answer_plan(
    plan: &query::QueryPlan,
    clips: &[ClipReport],
    segments: &[Vec<Vec<f32>>],
    frames: &[FrameLabels],
) -> Answer {
    let evidence: Vec<query::ClipEvidence<'_>> = clips
        .iter()
        .enumerate()
        .map(|(i, c)| query::ClipEvidence {
            clip: c.clip.as_str(),
            start_s: c.start_s,
            end_s: c.end_s,
            labels: c
                .labels
                .iter()
                .map(|(label, s)| (label.as_str(), s.best_score, s.frames))
                .collect(),
            frames: c.frames,
            speech: c
                .transcript
                .iter()
                .flat_map(|t| &t.segments)
                .enumerate()
                .map(|(j, s)| query::Spoken {
                    start_s: s.start_s,
                    text: &s.text,
                    meaning: segments
                        .get(i)
                        .and_then(|clip| clip.get(j))
                        .map(Vec::as_slice),
                })
                .collect(),
            frame_labels: frames.get(i).map_or(&[], Vec::as_slice),
        })
        .collect();
    let matches = query::rank(plan, &evidence);
    let unknown = query::unheard(plan, &evidence);
    let heard: Vec<String> = plan
        .unknown
        .iter()
        .filter(|w| !unknown.contains(w))
        .cloned()
        .collect();
    // What was looked for, in words: the labels, then what someone should say.
    let said: Vec<String> = plan
        .phrases
        .iter()
        .chain(&heard)
        .map(|p| format!("\"{p}\""))
        .collect();
    let labels = plan.labels().join(", ");
    let suffix = unknown_suffix(&unknown);
    let not_seen: Vec<&str> = plan.without.iter().flat_map(|t| t.labels.clone()).collect();
    let message = if plan.terms.is_empty() && said.is_empty() && !not_seen.is_empty() {
        format!(
            "{} of {} clips show no {}{suffix}",
            matches.len(),
            clips.len(),
            not_seen.join(" or ")
        )
    } else if plan.terms.is_empty() && said.is_empty() {
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
    let owned = |labels: &[&str]| labels.iter().map(|l| (*l).to_owned()).collect();
    Answer {
        query: plan.text.clone(),
        terms: plan
            .terms
            .iter()
            .map(|t| Term {
                word: t.word.clone(),
                labels: owned(&t.labels),
                similarity: t.similarity.map(|s| (s * 1000.0).round() / 1000.0),
                at_least: (t.at_least > 1).then_some(t.at_least),
            })
            .collect(),
        labels: owned(&plan.labels()),
        speech: plan.phrases.clone(),
        heard,
        unknown,
        without: plan
            .without
            .iter()
            .flat_map(|t| t.labels.iter().map(|l| (*l).to_owned()))
            .collect(),
        together: plan.together,
        message,
        clips: matches
            .into_iter()
            .map(|m| Moment {
                clip: m.clip,
                start_s: m.start_s,
                end_s: m.end_s,
                score: (m.score * 1000.0).round() / 1000.0,
                matched: owned(&m.matched),
                said: m.said,
                why: m.why,
            })
            .collect(),
    }
}

fn unknown_suffix(unknown: &[String]) -> String {
    if unknown.is_empty() {
        String::new()
    } else {
        format!(" (words not understood: {})", unknown.join(", "))
    }
}

/// Per stage (per-clip tasks summed over the clips): status, outputs, attempts and times;
/// and the time spent in stages: the union of every task's span.
fn stage_summary(state: &RequestState) -> (BTreeMap<String, StageReport>, u64) {
    let mut stages = BTreeMap::new();
    for s in &state.stages {
        stages.insert(
            s.name.to_string(),
            StageReport {
                function: Some(s.function.clone()),
                status: Some(s.status),
                outputs: Some(s.outputs.clone()),
                clips: None,
                attempts: s.attempts.len(),
                call_ms: s.metrics.call_ms.unwrap_or(0),
                work_ms: s.metrics.work_ms.unwrap_or(0),
                peak_rss_kb: s.metrics.peak_rss_kb,
            },
        );
    }
    for t in state.clips.iter().flat_map(|c| &c.tasks) {
        let e = stages
            .entry(t.name.to_string())
            .or_insert_with(|| StageReport {
                function: Some(t.function.clone()),
                status: None,
                outputs: None,
                clips: Some(0),
                attempts: 0,
                call_ms: 0,
                work_ms: 0,
                peak_rss_kb: None,
            });
        e.clips = Some(e.clips.unwrap_or(0) + 1);
        e.attempts += t.attempts.len();
        e.call_ms += t.metrics.call_ms.unwrap_or(0);
        e.work_ms += t.metrics.work_ms.unwrap_or(0);
        e.peak_rss_kb = e.peak_rss_kb.max(t.metrics.peak_rss_kb);
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

#[cfg(test)]
mod tests {
    use fave_common::contract::detect::{Detection, FrameDetections, LabelSummary};

    use super::*;

    fn clip(id: &str, start: f64, labels: &[(&str, f32, usize)], frames: usize) -> ClipReport {
        ClipReport {
            clip: id.parse().unwrap(),
            start_s: start,
            end_s: start + 10.0,
            key: format!("requests/r1/clips/{id}/video.mp4"),
            frames,
            detected: frames,
            carried: 0,
            labels: labels
                .iter()
                .map(|&(label, best_score, frames)| {
                    let seen = LabelSummary {
                        best_score,
                        frames,
                        best_time_s: start,
                    };
                    (label.to_owned(), seen)
                })
                .collect(),
            detections: vec![],
            transcript: None,
        }
    }

    fn said(mut clip: ClipReport, segments: &[(f64, &str)]) -> ClipReport {
        clip.transcript = Some(Transcript {
            text: String::new(),
            words: 0,
            segments: segments
                .iter()
                .map(|&(start_s, text)| transcribe::Segment {
                    start_s,
                    end_s: start_s + 1.0,
                    text: text.into(),
                })
                .collect(),
        });
        clip
    }

    fn ranked(a: &Answer) -> Vec<&str> {
        a.clips.iter().map(|m| m.clip.as_str()).collect()
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
            clip("clip-0000", 0.0, &[("person", 0.9, 5)], 5),
            clip("clip-0001", 10.0, &[("car", 0.8, 4)], 5),
        ];
        let a = answer("find scenes with cars", &clips, Reading::default());
        assert_eq!(a.labels, ["car"]);
        assert_eq!(ranked(&a), ["clip-0001"]);
        assert!(a.clips[0].why[0].contains("car"));
        assert!(a.message.starts_with("1 of 2"));

        let none = answer("find scenes with zebras", &clips, Reading::default());
        assert!(none.clips.is_empty());
        assert!(none.message.contains("no clip shows zebra"));

        let unknown = answer("find scenes with unicorns", &clips, Reading::default());
        assert_eq!(unknown.unknown, ["unicorns"]);
        assert!(unknown.message.contains("unicorns"));
    }

    #[test]
    fn transcripts_move_into_the_videos_time() {
        let heard = transcribe::Output {
            text: "Hello there. General Kenobi.".into(),
            segments: vec![
                transcribe::Segment {
                    start_s: 0.5,
                    end_s: 1.25,
                    text: "Hello there.".into(),
                },
                transcribe::Segment {
                    start_s: 1.5,
                    end_s: 3.0,
                    text: "General Kenobi.".into(),
                },
            ],
            words: 4,
            rtf: Some(0.2),
            audio_s: 3.0,
            transcribe_ms: 600,
        };
        let t = in_video_time(&heard, 20.0);
        assert_eq!(
            (t.text.as_str(), t.words),
            ("Hello there. General Kenobi.", 4)
        );
        let times: Vec<(f64, f64)> = t.segments.iter().map(|s| (s.start_s, s.end_s)).collect();
        assert_eq!(times, [(20.5, 21.25), (21.5, 23.0)]);
    }

    #[test]
    fn the_answer_finds_what_is_said_and_ranks_clips_with_both_first() {
        let clips = vec![
            said(clip("clip-0000", 0.0, &[("car", 0.9, 5)], 5), &[]),
            said(
                clip("clip-0001", 10.0, &[], 5),
                &[(12.0, "You don't judge a book by its cover.")],
            ),
            said(
                clip("clip-0002", 20.0, &[("car", 0.4, 1)], 5),
                &[(21.0, "The judge is here.")],
            ),
        ];
        let a = answer(
            "find where someone says 'judge'",
            &clips,
            Reading::default(),
        );
        assert_eq!(a.speech, ["judge"]);
        assert!(a.unknown.is_empty());
        assert_eq!(ranked(&a), ["clip-0001", "clip-0002"]);
        assert_eq!(a.clips[0].said, ["judge"]);
        assert_eq!(a.clips[0].why, ["said \"judge\" at 12.0 s"]);
        assert_eq!(a.message, "2 of 3 clips have \"judge\" said");

        // Objects and words: the clip with both first. "cover" is no label but is said: it
        // is heard, not unknown; "flurbs" is neither.
        let a = answer("cars and judge, cover, flurbs", &clips, Reading::default());
        assert_eq!(a.labels, ["car"]);
        assert_eq!(a.heard, ["judge", "cover"]);
        assert_eq!(a.unknown, ["flurbs"]);
        assert_eq!(ranked(&a)[..2], ["clip-0002", "clip-0001"]);
        assert_eq!(
            a.message,
            "3 of 3 clips show car or have \"judge\", \"cover\" said (words not understood: flurbs)"
        );

        let none = answer("someone says 'open the door'", &clips, Reading::default());
        assert!(none.clips.is_empty());
        assert_eq!(none.message, "no clip has \"open the door\" said");
    }

    #[test]
    fn detections_move_into_the_videos_time() {
        let frames = vec![FrameDetections {
            time_s: 2.0,
            key: "k".into(),
            width: 640,
            height: 360,
            carried: false,
            detections: vec![Detection {
                label: "car".into(),
                class_id: 2,
                score: 0.5,
                bbox: [1.0, 2.0, 3.0, 4.0],
            }],
        }];
        let flat = flatten(&frames, 20.0);
        assert_eq!(flat.len(), 1);
        assert_eq!((flat[0].time_s, flat[0].label.as_str()), (22.0, "car"));
        assert_eq!(flat[0].bbox, [1.0, 2.0, 3.0, 4.0]);
    }
}
