//! `final.json`: what a completed request produced. The orchestrator writes it (and answers
//! a synchronous request with it); the CLI and anyone else read it through these types.
//!
//! ```text
//! request_id, status, submission, input
//! analysis     the video (SHA-256) and analysis it comes from, reused or made here
//! media        stage-ffmpeg-0's result (duration, size, fps, sound, scene changes)
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

use serde::{Deserialize, Serialize};

use super::{audio, detect, ffmpeg0, transcribe};
use crate::ids::{ClipId, RequestId};
use crate::state::{AnalysisUse, InputObject, RequestStatus, StageStatus, Submission};

/// `final.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Final {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub submission: Submission,
    pub input: Option<InputObject>,
    /// The video (its SHA-256) and the analysis the answer comes from; `reused` when that
    /// analysis was made before, by another request, and no stage ran for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisUse>,
    /// The video's facts, from its analysis.
    pub media: Option<ffmpeg0::Output>,
    /// The sound's summary and the cuts.
    pub audio: Option<audio::Output>,
    pub clips: Vec<ClipReport>,
    /// The answer to the request's query, when it had one.
    pub answer: Option<Answer>,
    /// Per stage, per-clip tasks summed over the clips.
    pub stages: BTreeMap<String, StageReport>,
    pub timings: Timings,
}

/// One clip: what was seen and said in it, times in the video's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipReport {
    pub clip: ClipId,
    pub start_s: f64,
    pub end_s: f64,
    /// The clip's video.
    pub key: String,
    /// Frames sampled in the clip.
    pub frames: usize,
    /// Of `frames`, those the detector looked at; the others carried the detections of the
    /// frame looked at before them, which they barely differed from (the difference gate).
    #[serde(default)]
    pub detected: usize,
    #[serde(default)]
    pub carried: usize,
    /// Per label: the best score, the frames it was seen in, when the best was.
    pub labels: BTreeMap<String, detect::LabelSummary>,
    pub detections: Vec<TimedDetection>,
    /// What was said; `None` when the pipeline has no transcription.
    pub transcript: Option<Transcript>,
}

/// One detected object in one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedDetection {
    pub time_s: f64,
    pub label: String,
    pub score: f32,
    /// `[x1, y1, x2, y2]` in pixels of the frame looked at.
    pub bbox: [f32; 4],
}

/// A clip's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub text: String,
    pub words: usize,
    pub segments: Vec<transcribe::Segment>,
}

/// The clips that answer the query, ranked, and what the query was understood as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub query: String,
    /// The query's words that name objects the detector knows, and which.
    pub terms: Vec<Term>,
    /// Every label looked for.
    pub labels: Vec<String>,
    /// Phrases asked for in quotes or after "says".
    pub speech: Vec<String>,
    /// Other words of the query found in what was said.
    pub heard: Vec<String>,
    /// Words neither seen nor heard.
    pub unknown: Vec<String>,
    /// Objects that must not be seen ("without cars"): their labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without: Vec<String>,
    /// The objects must be seen in one frame together ("a person and a bicycle").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub together: bool,
    /// The answer in a sentence.
    pub message: String,
    pub clips: Vec<Moment>,
}

/// A word of the query and the labels it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub word: String,
    pub labels: Vec<String>,
    /// Set when a language model read the word (the word table did not know it): the
    /// cosine between the word and the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// Boxes of it one frame must hold, when the query counted ("two dogs").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<usize>,
}

/// One clip that answers, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moment {
    pub clip: String,
    pub start_s: f64,
    pub end_s: f64,
    pub score: f64,
    /// The labels looked for that were seen.
    pub matched: Vec<String>,
    /// The words looked for that were said.
    pub said: Vec<String>,
    pub why: Vec<String>,
}

/// One stage of the run: a request-wide stage, or a per-clip one summed over its clips.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The function serving it.
    pub function: Option<String>,
    /// A request-wide stage's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StageStatus>,
    /// A request-wide stage's outputs (name → key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, String>>,
    /// A per-clip stage's number of clips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clips: Option<usize>,
    pub attempts: usize,
    pub call_ms: u64,
    pub work_ms: u64,
    /// The function's peak memory (the most over a per-clip stage's calls), KiB.
    pub peak_rss_kb: Option<u64>,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// From the driver's start to the end.
    pub drive_ms: u64,
    /// Some stage task was open (stages run side by side).
    pub stage_ms: u64,
    /// State writes, scheduling and everything else that is not a stage call.
    pub orchestration_ms: u64,
}
