//! The pipeline, declared in one place: each stage's name, function, whether it runs once
//! or once per clip, how its input is built from the request's state, its timeout and its
//! retry policy. The driver walks this table; adding a stage is one entry here plus one
//! function crate.
//!
//! Every stage starts as soon as the stages it reads (`after`) are done, so stages that do
//! not read each other run side by side. The clips start as soon as the stage that lists
//! them is done, beside the request-wide stages still running. Per-clip stages run per
//! clip, each as soon as the tasks of the same clip that it reads are done: every clip
//! moves on its own, with the clips fanned out under `MAX_CONCURRENT_INVOCATIONS` (no
//! barrier between clips).

use std::time::Duration;

use fave_common::config::PipelineChoice;
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
    /// The no-op pipeline's clip count and per-call work (0 for the video pipeline).
    pub noop_clips: usize,
    pub noop_work_ms: u64,
}

/// One stage of the pipeline.
pub struct StageSpec {
    /// The stage's name in `state.json` and in its output keys.
    pub name: String,
    /// The function the gateway routes to.
    pub function: String,
    pub fan_out: FanOut,
    /// Whether this request-wide stage's result is the clip list (`data.clips`) the
    /// per-clip chain runs over; exactly one has it when there is a per-clip chain.
    pub lists_clips: bool,
    /// The stages (earlier in the table) whose results it reads: for a request-wide stage,
    /// request-wide ones; for a per-clip stage, per-clip ones, on the same clip. It starts as
    /// soon as they are done.
    pub after: Vec<String>,
    /// Builds the stage's input from what earlier stages recorded.
    pub input: fn(&InputContext<'_>) -> Result<Value, String>,
    /// How long one attempt may take; the orchestrator's own limit caps it.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// The stage table `choice` names.
pub fn stages(choice: PipelineChoice) -> Vec<StageSpec> {
    match choice {
        PipelineChoice::Video => video(),
        PipelineChoice::Noop { steps, clips, .. } => noop(steps, clips),
    }
}

/// The video-analysis pipeline: the request-wide stages, then the per-clip chain.
///
/// ```text
/// stage-ffmpeg-0 (analysis) ──> stage-audio (lists the clips) ──┬──> per clip: stage-ffmpeg-2 ──> stage-detect
///                                                               │                         └─> stage-transcribe
/// stage-ffmpeg-0-video (encode) ─────────────────────────────> stage-ffmpeg-1 (cuts the clips' videos)
/// ```
///
/// The encode is the longest step and nothing the clips are looked at with comes from it,
/// so it runs beside the rest: the analysis reads the same input for the sound, the scene
/// changes, the frames and where the encoder will put the keyframes, and the clips are
/// planned on those keyframes and looked at while the video is still being made.
pub fn video() -> Vec<StageSpec> {
    vec![
        StageSpec {
            name: "stage-ffmpeg-0".into(),
            function: "stage-ffmpeg-0".into(),
            fan_out: FanOut::Once,
            lists_clips: false,
            after: vec![],
            input: |cx| {
                Ok(json!({
                    "source_key": source_key(cx)?,
                    "frames": { "fps": cx.params.frames_per_second },
                    "video": false,
                }))
            },
            timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        },
        StageSpec {
            name: "stage-ffmpeg-0-video".into(),
            function: "stage-ffmpeg-0".into(),
            fan_out: FanOut::Once,
            lists_clips: false,
            after: vec![],
            input: |cx| Ok(json!({ "source_key": source_key(cx)?, "analysis": false })),
            timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        },
        StageSpec {
            name: "stage-audio".into(),
            function: "stage-audio".into(),
            fan_out: FanOut::Once,
            lists_clips: true,
            after: vec!["stage-ffmpeg-0".into()],
            input: |cx| {
                let media = data(cx.state, "stage-ffmpeg-0")?;
                Ok(json!({
                    "audio_key": output(cx.state, "stage-ffmpeg-0", "audio"),
                    "keyframes_key": output(cx.state, "stage-ffmpeg-0", "keyframes")
                        .ok_or("stage-ffmpeg-0 wrote no keyframe times")?,
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
            name: "stage-ffmpeg-1".into(),
            function: "stage-ffmpeg-1".into(),
            fan_out: FanOut::Once,
            lists_clips: false,
            after: vec!["stage-audio".into(), "stage-ffmpeg-0-video".into()],
            input: |cx| {
                let video = output(cx.state, "stage-ffmpeg-0-video", "video")
                    .ok_or("stage-ffmpeg-0-video wrote no video")?;
                Ok(json!({
                    "video_key": video,
                    "clips": data(cx.state, "stage-audio")?["clips"],
                }))
            },
            timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
        },
        StageSpec {
            name: "stage-ffmpeg-2".into(),
            function: "stage-ffmpeg-2".into(),
            fan_out: FanOut::PerClip,
            lists_clips: false,
            after: vec![],
            input: |cx| {
                let clip = cx.clip.ok_or("a per-clip stage without a clip")?;
                Ok(json!({
                    "frames_key": output(cx.state, "stage-ffmpeg-0", "frames")
                        .ok_or("stage-ffmpeg-0 took no frames")?,
                    "start_s": clip.start_s,
                    "end_s": clip.end_s,
                    "speech_key": output(cx.state, "stage-ffmpeg-0", "speech"),
                }))
            },
            timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
        },
        // A clip's transcription and its detection both start once stage-ffmpeg-2 has cut
        // its audio and frames, side by side: neither waits for the other. A clip without
        // sound is answered at once (the audio key is null then).
        StageSpec {
            name: "stage-transcribe".into(),
            function: "stage-transcribe".into(),
            fan_out: FanOut::PerClip,
            lists_clips: false,
            after: vec!["stage-ffmpeg-2".into()],
            input: |cx| {
                let clip = cx.clip.ok_or("a per-clip stage without a clip")?;
                let audio = clip
                    .task(&"stage-ffmpeg-2".parse().map_err(|e| format!("{e}"))?)
                    .filter(|t| t.metrics.contains_key("data"))
                    .map(|t| t.outputs.get("audio").cloned())
                    .ok_or("stage-ffmpeg-2 has not run on this clip")?;
                Ok(json!({ "audio_key": audio }))
            },
            timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        },
        StageSpec {
            name: "stage-detect".into(),
            function: "stage-detect".into(),
            fan_out: FanOut::PerClip,
            lists_clips: false,
            after: vec!["stage-ffmpeg-2".into()],
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

/// The function that serves every stage of the no-op pipeline.
pub const NOOP_FUNCTION: &str = "stage-noop";

/// `steps` no-op stages in a row (each after the one before), the last listing `clips`
/// clips, then one no-op task per clip: the orchestrator's own costs (gateway hops, state
/// writes, manifests) with no work.
pub fn noop(steps: usize, clips: usize) -> Vec<StageSpec> {
    let step = |name: String, fan_out, lists_clips, after| StageSpec {
        name,
        function: NOOP_FUNCTION.into(),
        fan_out,
        lists_clips,
        after,
        input: |cx| {
            let listing = cx.clip.is_none() && cx.params.noop_clips > 0;
            Ok(json!({
                "work_ms": cx.params.noop_work_ms,
                "clips": if listing { cx.params.noop_clips } else { 0 },
            }))
        },
        timeout: Duration::from_secs(60),
        retry: RetryPolicy::default(),
    };
    let mut table: Vec<StageSpec> = (1..=steps)
        .map(|i| {
            let before = (i > 1).then(|| format!("noop-{:03}", i - 1));
            step(
                format!("noop-{i:03}"),
                FanOut::Once,
                clips > 0 && i == steps,
                before.into_iter().collect(),
            )
        })
        .collect();
    if clips > 0 {
        table.push(step("noop-clip".into(), FanOut::PerClip, false, vec![]));
    }
    table
}

/// The request's copy of its video.
fn source_key(cx: &InputContext<'_>) -> Result<String, String> {
    let input = cx.state.input.as_ref();
    Ok(input.ok_or("the input has not been copied in")?.key.clone())
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
    fn the_tables_are_request_wide_stages_then_one_per_clip_chain() {
        well_formed(&video());
        well_formed(&noop(3, 10));
        let only_steps = noop(4, 0);
        assert_eq!(only_steps.len(), 4);
        assert!(
            only_steps
                .iter()
                .all(|s| s.fan_out == FanOut::Once && !s.lists_clips)
        );
    }

    #[test]
    fn transcription_gets_the_clips_audio_once_it_exists() {
        use fave_common::state::{ClipState, RequestState, StageState, Submission};
        let stages = video();
        let spec = stages
            .iter()
            .find(|s| s.name == "stage-transcribe")
            .expect("a transcribe stage");
        assert_eq!(spec.fan_out, FanOut::PerClip);
        assert_eq!(spec.after, ["stage-ffmpeg-2"]);
        let detect = stages.iter().find(|s| s.name == "stage-detect").unwrap();
        assert_eq!(detect.after, ["stage-ffmpeg-2"], "not after transcription");

        let submission = Submission {
            video_uri: "file:///v.mp4".into(),
            query: None,
            profile: Default::default(),
            callback_url: None,
            reach: None,
        };
        let state = RequestState::new(
            "r1".parse().unwrap(),
            submission,
            vec![],
            chrono::Utc::now(),
        );
        let params = Params {
            clip_min_s: 5.0,
            clip_max_s: 20.0,
            frames_per_second: 1.0,
            noop_clips: 0,
            noop_work_ms: 0,
        };
        let mut clip = ClipState {
            clip: "clip-0000".parse().unwrap(),
            start_s: 0.0,
            end_s: 5.0,
            key: "requests/r1/clips/clip-0000.mp4".into(),
            tasks: vec![StageState::new(
                "stage-ffmpeg-2".parse().unwrap(),
                "stage-ffmpeg-2",
            )],
        };
        let input = |clip: &ClipState| {
            (spec.input)(&InputContext {
                state: &state,
                clip: Some(clip),
                params: &params,
            })
        };
        assert!(input(&clip).is_err(), "not before stage-ffmpeg-2 has run");
        let frames = &mut clip.tasks[0];
        frames
            .metrics
            .insert("data".into(), json!({"audio": false}));
        assert_eq!(input(&clip), Ok(json!({"audio_key": null})));
        let frames = &mut clip.tasks[0];
        frames
            .outputs
            .insert("audio".into(), "requests/r1/a.wav".into());
        assert_eq!(input(&clip), Ok(json!({"audio_key": "requests/r1/a.wav"})));
    }

    #[test]
    fn the_clips_are_listed_and_looked_at_without_waiting_for_the_encode() {
        use fave_common::state::{ClipState, InputObject, RequestState, StageState, Submission};
        let stages = video();
        let spec = |name: &str| stages.iter().find(|s| s.name == name).unwrap();
        // What each stage waits for, transitively.
        fn waits_for<'a>(stages: &'a [StageSpec], name: &str, out: &mut Vec<&'a str>) {
            let spec = stages.iter().find(|s| s.name == name).unwrap();
            for before in &spec.after {
                out.push(before);
                waits_for(stages, before, out);
            }
        }
        let chain = |name: &str| {
            let mut out = Vec::new();
            waits_for(&stages, name, &mut out);
            out
        };
        assert!(spec("stage-audio").lists_clips);
        assert!(!chain("stage-audio").contains(&"stage-ffmpeg-0-video"));
        for per_clip in ["stage-ffmpeg-2", "stage-detect", "stage-transcribe"] {
            assert!(
                !chain(per_clip).contains(&"stage-ffmpeg-0-video"),
                "{per_clip}"
            );
        }
        assert_eq!(
            spec("stage-ffmpeg-1").after,
            ["stage-audio", "stage-ffmpeg-0-video"]
        );

        let submission = Submission {
            video_uri: "file:///v.mp4".into(),
            query: None,
            profile: Default::default(),
            callback_url: None,
            reach: None,
        };
        let names = ["stage-ffmpeg-0", "stage-ffmpeg-0-video", "stage-audio"];
        let mut state = RequestState::new(
            "r1".parse().unwrap(),
            submission,
            names
                .iter()
                .map(|n| StageState::new(n.parse().unwrap(), *n))
                .collect(),
            chrono::Utc::now(),
        );
        state.input = Some(InputObject {
            key: "requests/r1/input/source.mp4".into(),
            bytes: 1,
            sha256: "00".into(),
        });
        let params = Params {
            clip_min_s: 5.0,
            clip_max_s: 20.0,
            frames_per_second: 2.0,
            noop_clips: 0,
            noop_work_ms: 0,
        };
        let clip = ClipState {
            clip: "clip-0001".parse().unwrap(),
            start_s: 20.0,
            end_s: 40.0,
            key: "requests/r1/clips/clip-0001/video.mp4".into(),
            tasks: vec![],
        };
        let input = |state: &RequestState, name: &str, clip: Option<&ClipState>| {
            (spec(name).input)(&InputContext {
                state,
                clip,
                params: &params,
            })
        };
        let analysis = input(&state, "stage-ffmpeg-0", None).unwrap();
        assert_eq!(analysis["frames"], json!({"fps": 2.0}));
        assert_eq!(analysis["video"], false);
        assert_eq!(
            input(&state, "stage-ffmpeg-0-video", None).unwrap()["analysis"],
            false
        );

        // The analysis is done, the encode is not: the clips' inputs are whole all the same.
        let ffmpeg0 = &mut state.stages[0];
        ffmpeg0.metrics.insert(
            "data".into(),
            json!({"duration_s": 79.5, "scene_changes": [20.0]}),
        );
        for (name, key) in [
            ("frames", "requests/r1/stages/stage-ffmpeg-0/frames.json"),
            (
                "keyframes",
                "requests/r1/stages/stage-ffmpeg-0/keyframes.json",
            ),
            ("speech", "requests/r1/stages/stage-ffmpeg-0/speech.wav"),
        ] {
            ffmpeg0.outputs.insert(name.into(), key.into());
        }
        assert_eq!(
            input(&state, "stage-audio", None).unwrap()["keyframes_key"],
            "requests/r1/stages/stage-ffmpeg-0/keyframes.json"
        );
        assert_eq!(
            input(&state, "stage-ffmpeg-2", Some(&clip)).unwrap(),
            json!({
                "frames_key": "requests/r1/stages/stage-ffmpeg-0/frames.json",
                "speech_key": "requests/r1/stages/stage-ffmpeg-0/speech.wav",
                "start_s": 20.0,
                "end_s": 40.0,
            })
        );
        assert!(
            input(&state, "stage-ffmpeg-1", None).is_err(),
            "the cut waits for the video"
        );
    }

    fn well_formed(stages: &[StageSpec]) {
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
        assert_eq!(
            stages[..first_per_clip]
                .iter()
                .filter(|s| s.lists_clips)
                .count(),
            1,
            "one stage lists the clips, before the per-clip chain"
        );
        assert!(
            stages
                .iter()
                .all(|s| s.name.parse::<fave_common::ids::StageName>().is_ok())
        );
        for (i, s) in stages.iter().enumerate() {
            for needed in &s.after {
                assert!(
                    stages[..i]
                        .iter()
                        .any(|e| &e.name == needed && e.fan_out == s.fan_out),
                    "{} comes after {needed}, an earlier stage of the same fan-out",
                    s.name
                );
            }
        }
        let mut names: Vec<_> = stages.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), stages.len(), "names are unique");
    }
}
