//! The pipeline, declared in one place: each stage's name, function, whether it runs once
//! or once per clip, how its input is built from the request's state, its timeout and its
//! retry policy. The driver walks this table; adding a stage is one entry here plus one
//! function crate.
//!
//! Request-wide stages run in order. Per-clip stages run as one chain per clip: every clip
//! moves through the chain on its own, as soon as its previous task is done, with the clips
//! fanned out under `MAX_CONCURRENT_INVOCATIONS` (no barrier between clips).

use std::time::Duration;

use fave_common::retry::RetryPolicy;
use fave_common::state::{ClipState, RequestState};
use serde_json::{Value, json};

/// Runs once per request, or once per clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOut {
    Once,
    PerClip,
}

/// What a stage's input is built from.
pub struct InputContext<'a> {
    pub state: &'a RequestState,
    /// The clip, for per-clip stages.
    pub clip: Option<&'a ClipState>,
    pub params: &'a Params,
}

/// The knobs of a run, from the orchestrator's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub clip_min_s: f64,
    pub clip_max_s: f64,
    pub frames_per_second: f64,
}

/// One stage of the pipeline.
pub struct StageSpec {
    /// The stage's name in `state.json` and in its output keys.
    pub name: &'static str,
    /// The function the gateway routes to.
    pub function: &'static str,
    pub fan_out: FanOut,
    /// Builds the stage's input from what earlier stages recorded.
    pub input: fn(&InputContext<'_>) -> Result<Value, String>,
    /// How long one attempt may take; the orchestrator's own limit caps it.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// The request-wide stage whose result is the clip list (`data.clips`).
pub const CLIP_SOURCE: &str = "stage-ffmpeg-1";

/// The stages, in order: the request-wide ones, then the per-clip chain.
pub fn stages() -> Vec<StageSpec> {
    vec![
        StageSpec {
            name: "stage-ffmpeg-0",
            function: "stage-ffmpeg-0",
            fan_out: FanOut::Once,
            input: |cx| {
                let input = cx
                    .state
                    .input
                    .as_ref()
                    .ok_or("the input has not been copied in")?;
                Ok(json!({ "source_key": input.key }))
            },
            timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        },
        StageSpec {
            name: "stage-audio",
            function: "stage-audio",
            fan_out: FanOut::Once,
            input: |cx| {
                let media = data(cx.state, "stage-ffmpeg-0")?;
                Ok(json!({
                    "audio_key": output(cx.state, "stage-ffmpeg-0", "audio"),
                    "duration_s": media["duration_s"],
                    "scene_changes": media["scene_changes"],
                    "min_clip_s": cx.params.clip_min_s,
                    "max_clip_s": cx.params.clip_max_s,
                }))
            },
            timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
        },
        StageSpec {
            name: "stage-ffmpeg-1",
            function: "stage-ffmpeg-1",
            fan_out: FanOut::Once,
            input: |cx| {
                let video = output(cx.state, "stage-ffmpeg-0", "video")
                    .ok_or("stage-ffmpeg-0 wrote no video")?;
                Ok(json!({
                    "video_key": video,
                    "cuts": data(cx.state, "stage-audio")?["cuts"],
                    "min_clip_s": cx.params.clip_min_s,
                }))
            },
            timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
        },
        StageSpec {
            name: "stage-ffmpeg-2",
            function: "stage-ffmpeg-2",
            fan_out: FanOut::PerClip,
            input: |cx| {
                let clip = cx.clip.ok_or("a per-clip stage without a clip")?;
                let media = data(cx.state, "stage-ffmpeg-0")?;
                Ok(json!({
                    "clip_key": clip.key,
                    "fps": cx.params.frames_per_second,
                    "keyframe_interval_s": media["keyframe_interval_s"],
                    "audio": media["has_audio"] == true,
                }))
            },
            timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
        },
        StageSpec {
            name: "stage-detect",
            function: "stage-detect",
            fan_out: FanOut::PerClip,
            input: |cx| {
                let clip = cx.clip.ok_or("a per-clip stage without a clip")?;
                let frames = clip
                    .task(&"stage-ffmpeg-2".parse().map_err(|e| format!("{e}"))?)
                    .and_then(|t| t.metrics.get("data"))
                    .map(|d| d["frames"].clone())
                    .ok_or("stage-ffmpeg-2 has not run on this clip")?;
                Ok(json!({ "frames": frames }))
            },
            timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        },
    ]
}

/// A request-wide stage's result (`data` of its manifest), once it succeeded.
pub fn data<'a>(state: &'a RequestState, stage: &str) -> Result<&'a Value, String> {
    state
        .stages
        .iter()
        .find(|s| s.name.as_str() == stage)
        .and_then(|s| s.metrics.get("data"))
        .ok_or_else(|| format!("{stage} has not run"))
}

/// One named output key of a request-wide stage.
pub fn output<'a>(state: &'a RequestState, stage: &str, name: &str) -> Option<&'a str> {
    state
        .stages
        .iter()
        .find(|s| s.name.as_str() == stage)
        .and_then(|s| s.outputs.get(name))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_request_wide_stages_then_one_per_clip_chain() {
        let stages = stages();
        let first_per_clip = stages
            .iter()
            .position(|s| s.fan_out == FanOut::PerClip)
            .expect("a per-clip stage");
        assert!(
            stages[first_per_clip..]
                .iter()
                .all(|s| s.fan_out == FanOut::PerClip),
            "the driver runs request-wide stages first, then the per-clip chain"
        );
        assert!(
            stages[..first_per_clip]
                .iter()
                .any(|s| s.name == CLIP_SOURCE),
            "the clips are cut before the per-clip chain"
        );
        let mut names: Vec<_> = stages.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), stages.len(), "names are unique");
    }
}
