//! The pipeline, declared in one place: each stage's name, function, whether it runs once
//! or once per clip, how its input is built from the request's state, its timeout and its
//! retry policy. The driver walks this table; adding a stage is one entry here plus one
//! function crate and its contract module (`fave_common::contract`).
//!
//! Each entry is typed by its stage's contract: its input is built as the contract's
//! `Input`, the results it reads are the earlier stages' `Output`s, and an answer whose
//! result is not the stage's `Output` is refused when it arrives
//! (`stage_answer_mismatch`), not three hops later. A table is checked once, when it is
//! built ([`Table::new`]): unique names, the request-wide stages before the per-clip chain,
//! one clip lister, and every `after` naming an earlier stage of the same scope.
//!
//! Every stage starts as soon as the stages it reads (`after`) are done, so stages that do
//! not read each other run side by side. The clips start as soon as the stage that lists
//! them is done, beside the request-wide stages still running. Per-clip stages run per
//! clip, each as soon as the tasks of the same clip that it reads are done: every clip
//! moves on its own, with the clips fanned out under `MAX_CONCURRENT_INVOCATIONS` (no
//! barrier between clips).

use std::time::Duration;

use crate::config::PipelineChoice;
use fave_common::contract::{
    ListedClip, audio, detect, ffmpeg0, ffmpeg1, ffmpeg2, noop, transcribe,
};
use fave_common::ids::StageName;
use fave_common::retry::RetryPolicy;
use fave_common::state::{ClipState, RequestState, StageState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

impl InputContext<'_> {
    /// A request-wide stage's result, as its contract's `Output`, once it succeeded.
    pub fn result<O: DeserializeOwned>(&self, stage: &str) -> Result<O, String> {
        read(request_wide(self.state, stage), stage)
    }

    /// One named output key of a request-wide stage.
    pub fn output(&self, stage: &str, name: &str) -> Option<String> {
        request_wide(self.state, stage).and_then(|s| s.outputs.get(name).cloned())
    }

    /// The clip of a per-clip stage.
    pub fn clip(&self) -> Result<&ClipState, String> {
        self.clip
            .ok_or_else(|| "a per-clip stage without a clip".into())
    }

    /// A stage's result on this clip, as its contract's `Output`, and its record.
    pub fn clip_result<O: DeserializeOwned>(
        &self,
        stage: &str,
    ) -> Result<(O, &StageState), String> {
        let task = self.clip()?.tasks.iter().find(|t| t.name.as_str() == stage);
        Ok((read(task, stage)?, task.ok_or("no such task")?))
    }

    /// The request's copy of its video.
    fn source_key(&self) -> Result<String, String> {
        let input = self.state.input.as_ref();
        Ok(input.ok_or("the input has not been copied in")?.key.clone())
    }
}

/// The request-wide stage called `stage`, if the request has one.
pub(crate) fn request_wide<'a>(state: &'a RequestState, stage: &str) -> Option<&'a StageState> {
    state.stages.iter().find(|s| s.name.as_str() == stage)
}

fn read<O: DeserializeOwned>(task: Option<&StageState>, stage: &str) -> Result<O, String> {
    task.and_then(StageState::result)
        .unwrap_or_else(|| Err(format!("{stage} has not run")))
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

type BuildInput = Box<dyn Fn(&InputContext<'_>) -> Result<Value, String> + Send + Sync>;

/// Reads the clips out of a clip lister's result.
type ReadClips = fn(&Value) -> Result<Vec<ListedClip>, String>;

/// One stage of the pipeline.
pub struct StageSpec {
    /// The stage's name in `state.json` and in its output keys.
    pub name: StageName,
    /// The function the gateway routes to.
    pub function: String,
    pub fan_out: FanOut,
    /// The stages (earlier in the table) whose results it reads: for a request-wide stage,
    /// request-wide ones; for a per-clip stage, per-clip ones, on the same clip. It starts as
    /// soon as they are done.
    pub after: Vec<StageName>,
    /// How long one attempt may take; the orchestrator's own limit caps it.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    input: BuildInput,
    /// Whether an answer's result is the contract's `Output`.
    check: fn(&Value) -> Result<(), String>,
    /// For the one stage whose result lists the clips: reads them.
    clips: Option<ReadClips>,
}

impl StageSpec {
    /// A stage of contract `(I, O)`, served by `function`, with the default timeout and
    /// retries. The names are the table's own constants: one that is not a stage name is a
    /// bug [`Table::new`] reports.
    fn new<I: Serialize + 'static, O: DeserializeOwned>(
        name: &str,
        function: &str,
        fan_out: FanOut,
        after: &[&str],
        input: fn(&InputContext<'_>) -> Result<I, String>,
    ) -> Result<Self, String> {
        let parse = |n: &str| n.parse().map_err(|e| format!("stage name {n:?}: {e}"));
        Ok(Self {
            name: parse(name)?,
            function: function.into(),
            fan_out,
            after: after.iter().map(|a| parse(a)).collect::<Result<_, _>>()?,
            timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            input: Box::new(move |cx| {
                let input = input(cx)?;
                serde_json::to_value(input).map_err(|e| format!("serialising the input: {e}"))
            }),
            check: |v| O::deserialize(v).map(drop).map_err(|e| e.to_string()),
            clips: None,
        })
    }

    fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Its result lists the clips the per-clip chain runs over, read by `clips`.
    fn listing(mut self, clips: ReadClips) -> Self {
        self.clips = Some(clips);
        self
    }

    /// The stage's input for this task, from what earlier stages recorded.
    pub fn input(&self, cx: &InputContext<'_>) -> Result<Value, String> {
        (self.input)(cx)
    }

    /// Refuses an answer whose result is not this stage's contract `Output`.
    pub fn check(&self, result: &Value) -> Result<(), String> {
        (self.check)(result)
    }

    /// Whether this stage's result lists the clips.
    pub fn lists_clips(&self) -> bool {
        self.clips.is_some()
    }

    /// The clips this stage's result lists (none for a stage that lists none).
    pub fn clips(&self, result: &Value) -> Result<Vec<ListedClip>, String> {
        self.clips.map_or(Ok(Vec::new()), |read| read(result))
    }
}

/// A checked stage table: the request-wide stages, then the per-clip chain.
pub struct Table {
    stages: Vec<StageSpec>,
}

impl Table {
    /// Checks a table: unique names; the request-wide stages first, then the per-clip
    /// chain; exactly one request-wide stage listing the clips when there is a chain; and
    /// every `after` naming an earlier stage of the same scope.
    pub fn new(stages: Vec<Result<StageSpec, String>>) -> Result<Self, String> {
        let stages = stages.into_iter().collect::<Result<Vec<_>, _>>()?;
        let first_per_clip = stages
            .iter()
            .position(|s| s.fan_out == FanOut::PerClip)
            .unwrap_or(stages.len());
        if let Some(s) = stages[first_per_clip..]
            .iter()
            .find(|s| s.fan_out == FanOut::Once)
        {
            return Err(format!(
                "{} is request-wide but comes after the per-clip chain",
                s.name
            ));
        }
        let listers = stages.iter().filter(|s| s.lists_clips()).count();
        let chain = first_per_clip < stages.len();
        if listers > 1 || chain != (listers == 1) {
            return Err(format!(
                "{listers} stages list the clips; a table with a per-clip chain has one, \
                 one without has none"
            ));
        }
        if stages[first_per_clip..].iter().any(StageSpec::lists_clips) {
            return Err("a per-clip stage cannot list the clips".into());
        }
        for (i, s) in stages.iter().enumerate() {
            if stages[..i].iter().any(|e| e.name == s.name) {
                return Err(format!("{} is in the table twice", s.name));
            }
            for needed in &s.after {
                if !stages[..i]
                    .iter()
                    .any(|e| &e.name == needed && e.fan_out == s.fan_out)
                {
                    return Err(format!(
                        "{} comes after {needed}, which is not an earlier stage of its scope",
                        s.name
                    ));
                }
            }
        }
        Ok(Self { stages })
    }

    /// The table `choice` names.
    pub fn of(choice: PipelineChoice) -> Result<Self, String> {
        match choice {
            PipelineChoice::Video => video(),
            PipelineChoice::Noop { steps, clips, .. } => noop(steps, clips),
        }
    }

    /// Every stage, request-wide ones first.
    pub fn stages(&self) -> &[StageSpec] {
        &self.stages
    }

    /// The request-wide stages, and the per-clip chain.
    pub fn scopes(&self) -> (Vec<&StageSpec>, Vec<&StageSpec>) {
        self.stages.iter().partition(|s| s.fan_out == FanOut::Once)
    }

    /// The stage called `name`.
    pub fn get(&self, name: &StageName) -> Option<&StageSpec> {
        self.stages.iter().find(|s| &s.name == name)
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
pub fn video() -> Result<Table, String> {
    use FanOut::{Once, PerClip};
    let long = Duration::from_secs(600);
    Table::new(vec![
        StageSpec::new::<_, ffmpeg0::Output>(ffmpeg0::NAME, ffmpeg0::NAME, Once, &[], |cx| {
            Ok(ffmpeg0::Input {
                frames: Some(ffmpeg0::FrameSampling::at(cx.params.frames_per_second)),
                video: false,
                ..ffmpeg0::Input::new(cx.source_key()?)
            })
        })
        .map(|s| s.timeout(long)),
        StageSpec::new::<_, ffmpeg0::Output>(
            ffmpeg0::VIDEO_STAGE,
            ffmpeg0::NAME,
            Once,
            &[],
            |cx| {
                Ok(ffmpeg0::Input {
                    analysis: false,
                    ..ffmpeg0::Input::new(cx.source_key()?)
                })
            },
        )
        .map(|s| s.timeout(long)),
        StageSpec::new::<_, audio::Output>(
            audio::NAME,
            audio::NAME,
            Once,
            &[ffmpeg0::NAME],
            |cx| {
                let media: ffmpeg0::Output = cx.result(ffmpeg0::NAME)?;
                Ok(audio::Input {
                    audio_key: cx.output(ffmpeg0::NAME, ffmpeg0::outputs::AUDIO),
                    keyframes_key: Some(
                        cx.output(ffmpeg0::NAME, ffmpeg0::outputs::KEYFRAMES)
                            .ok_or("stage-ffmpeg-0 wrote no keyframe times")?,
                    ),
                    duration_s: media.duration_s,
                    scene_changes: media.scene_changes,
                    min_clip_s: cx.params.clip_min_s,
                    max_clip_s: cx.params.clip_max_s,
                })
            },
        )
        .map(|s| {
            s.listing(|v| {
                let listed = audio::Output::deserialize(v).map_err(|e| e.to_string())?;
                listed
                    .clips
                    .ok_or_else(|| "stage-audio listed no clips".into())
            })
        }),
        StageSpec::new::<_, ffmpeg1::Output>(
            ffmpeg1::NAME,
            ffmpeg1::NAME,
            Once,
            &[audio::NAME, ffmpeg0::VIDEO_STAGE],
            |cx| {
                let listed: audio::Output = cx.result(audio::NAME)?;
                Ok(ffmpeg1::Input {
                    video_key: cx
                        .output(ffmpeg0::VIDEO_STAGE, ffmpeg0::outputs::VIDEO)
                        .ok_or("stage-ffmpeg-0-video wrote no video")?,
                    clips: listed.clips.ok_or("stage-audio listed no clips")?,
                })
            },
        ),
        StageSpec::new::<_, ffmpeg2::Output>(ffmpeg2::NAME, ffmpeg2::NAME, PerClip, &[], |cx| {
            let clip = cx.clip()?;
            Ok(ffmpeg2::Input::new(
                cx.output(ffmpeg0::NAME, ffmpeg0::outputs::FRAMES)
                    .ok_or("stage-ffmpeg-0 took no frames")?,
                clip.start_s,
                clip.end_s,
                cx.output(ffmpeg0::NAME, ffmpeg0::outputs::SPEECH),
            ))
        }),
        // A clip's transcription and its detection both start once stage-ffmpeg-2 has cut
        // its audio and frames, side by side: neither waits for the other. A clip without
        // sound is answered at once (the audio key is null then).
        StageSpec::new::<_, transcribe::Output>(
            transcribe::NAME,
            transcribe::NAME,
            PerClip,
            &[ffmpeg2::NAME],
            |cx| {
                let (_, cut) = cx.clip_result::<ffmpeg2::Output>(ffmpeg2::NAME)?;
                Ok(transcribe::Input {
                    audio_key: cut.outputs.get(ffmpeg2::outputs::AUDIO).cloned(),
                })
            },
        )
        .map(|s| s.timeout(long)),
        StageSpec::new::<_, detect::Output>(
            detect::NAME,
            detect::NAME,
            PerClip,
            &[ffmpeg2::NAME],
            |cx| {
                let (_, cut) = cx.clip_result::<ffmpeg2::Output>(ffmpeg2::NAME)?;
                Ok(detect::Input {
                    frames: Vec::new(),
                    frames_key: Some(
                        cut.outputs
                            .get(ffmpeg2::outputs::FRAMES)
                            .cloned()
                            .ok_or("stage-ffmpeg-2 listed no frames")?,
                    ),
                    options: None,
                })
            },
        )
        .map(|s| s.timeout(long)),
    ])
}

/// `steps` no-op stages in a row (each after the one before), the last listing `clips`
/// clips, then one no-op task per clip: the orchestrator's own costs (gateway hops, state
/// writes, manifests) with no work.
pub fn noop(steps: usize, clips: usize) -> Result<Table, String> {
    let names: Vec<String> = (1..=steps).map(|i| format!("noop-{i:03}")).collect();
    let input = |cx: &InputContext<'_>| -> Result<noop::Input, String> {
        let listing = cx.clip.is_none() && cx.params.noop_clips > 0;
        Ok(noop::Input {
            work_ms: cx.params.noop_work_ms,
            clips: if listing { cx.params.noop_clips } else { 0 },
        })
    };
    let mut table = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let after: Vec<&str> = names[..i].last().map(String::as_str).into_iter().collect();
        let step = StageSpec::new::<_, noop::Output>(name, noop::NAME, FanOut::Once, &after, input)
            .map(|s| s.timeout(Duration::from_secs(60)));
        table.push(if clips > 0 && i + 1 == steps {
            step.map(|s| {
                s.listing(|v| {
                    noop::Output::deserialize(v)
                        .map(|o| o.clips)
                        .map_err(|e| e.to_string())
                })
            })
        } else {
            step
        });
    }
    if clips > 0 {
        table.push(
            StageSpec::new::<_, noop::Output>("noop-clip", noop::NAME, FanOut::PerClip, &[], input)
                .map(|s| s.timeout(Duration::from_secs(60))),
        );
    }
    Table::new(table)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fave_common::state::{InputObject, StageEvent, Submission};
    use serde_json::json;

    use super::*;

    fn params() -> Params {
        Params {
            clip_min_s: 5.0,
            clip_max_s: 20.0,
            frames_per_second: 2.0,
            noop_clips: 3,
            noop_work_ms: 0,
        }
    }

    fn request(table: &Table) -> RequestState {
        let submission = Submission {
            video_uri: "file:///v.mp4".into(),
            query: None,
            profile: Default::default(),
            callback_url: None,
            reach: None,
            fresh: false,
        };
        let (once, _) = table.scopes();
        let stages = once
            .iter()
            .map(|s| StageState::new(s.name.clone(), s.function.as_str()))
            .collect();
        let mut state = RequestState::new(
            "r1".parse().unwrap(),
            submission,
            stages,
            chrono::Utc::now(),
        );
        state.input = Some(InputObject {
            key: "requests/r1/input/source.mp4".into(),
            bytes: 1,
            sha256: "00".into(),
        });
        state
    }

    /// Records `stage` as succeeded with `result` (serialised, as the answer carries it).
    fn succeed(task: &mut StageState, outputs: &[(&str, &str)], result: impl Serialize) {
        let outputs = outputs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>();
        let now = chrono::Utc::now();
        task.apply(StageEvent::Start, now).unwrap();
        let result = serde_json::to_value(result).unwrap();
        task.apply(StageEvent::Succeed { outputs, result }, now)
            .unwrap();
    }

    fn stage<'a>(state: &'a mut RequestState, name: &str) -> &'a mut StageState {
        state
            .stages
            .iter_mut()
            .find(|s| s.name.as_str() == name)
            .unwrap()
    }

    fn input(
        table: &Table,
        state: &RequestState,
        name: &str,
        clip: Option<&ClipState>,
    ) -> Result<Value, String> {
        let spec = table.get(&name.parse().unwrap()).unwrap();
        spec.input(&InputContext {
            state,
            clip,
            params: &params(),
        })
    }

    fn media(scene_changes: Vec<f64>) -> ffmpeg0::Output {
        ffmpeg0::Output {
            duration_s: 40.0,
            width: 640,
            height: 360,
            fps: 25.0,
            has_audio: true,
            source_video_codec: "h264".into(),
            source_bytes: 1,
            keyframe_interval_s: 1.0,
            sample_rate: 22_050,
            scene_changes,
            keyframes: 40,
            frames: None,
            ffmpeg_ms: 1,
        }
    }

    fn listed() -> audio::Output {
        audio::Output {
            has_audio: true,
            cuts: vec![20.0],
            clips: Some(vec![
                ListedClip {
                    clip: "clip-0000".parse().unwrap(),
                    start_s: 0.0,
                    end_s: 20.0,
                    key: "requests/r1/clips/clip-0000/video.mp4".into(),
                },
                ListedClip {
                    clip: "clip-0001".parse().unwrap(),
                    start_s: 20.0,
                    end_s: 40.0,
                    key: "requests/r1/clips/clip-0001/video.mp4".into(),
                },
            ]),
            audio_duration_s: 40.0,
            frames: 1,
            onsets: 0,
            non_silent_s: 1.0,
            rms_mean: 0.1,
            rms_max: 0.2,
            spectral_centroid_mean_hz: 1000.0,
            zero_crossing_rate_mean: 0.1,
            analysis_ms: 1,
        }
    }

    #[test]
    fn the_tables_are_checked_when_built() {
        let video = video().unwrap();
        let (once, per_clip) = video.scopes();
        assert_eq!((once.len(), per_clip.len()), (4, 3));
        assert_eq!(once.iter().filter(|s| s.lists_clips()).count(), 1);
        let with_clips = noop(3, 10).unwrap();
        assert!(with_clips.stages()[2].lists_clips());
        let only_steps = noop(4, 0).unwrap();
        assert!(
            only_steps
                .stages()
                .iter()
                .all(|s| s.fan_out == FanOut::Once && !s.lists_clips())
        );

        let step = |name: &str, fan_out, after: &[&str]| {
            StageSpec::new::<_, noop::Output>(name, noop::NAME, fan_out, after, |_| {
                Ok(noop::Input {
                    work_ms: 0,
                    clips: 0,
                })
            })
        };
        use FanOut::{Once, PerClip};
        let refused = |table: Vec<Result<StageSpec, String>>| Table::new(table).err().unwrap();
        assert!(refused(vec![step("a", Once, &[]), step("a", Once, &[])]).contains("twice"));
        assert!(refused(vec![step("a", Once, &["b"]), step("b", Once, &[])]).contains("after b"));
        assert!(
            refused(vec![step("a", PerClip, &[]), step("b", Once, &[])]).contains("request-wide")
        );
        assert!(
            refused(vec![step("a", Once, &[]), step("b", PerClip, &[])]).contains("list the clips")
        );
        assert!(refused(vec![step("Not A Name", Once, &[])]).contains("Not A Name"));
        let lister = step("a", Once, &[]).map(|s| s.listing(|_| Ok(vec![])));
        assert!(
            refused(vec![lister, step("b", PerClip, &["a"])])
                .contains("not an earlier stage of its scope")
        );
    }

    /// Walks the video table as a run does, each stage answering with its contract's
    /// `Output`: every input the orchestrator builds is read by its stage's `Input` (which
    /// refuses unknown fields), every answer passes the check, and the lister's clips come
    /// out of its result. A renamed field on either side fails here, or does not compile.
    #[test]
    fn every_input_the_video_table_builds_is_read_by_its_stage() {
        let table = video().unwrap();
        let mut state = request(&table);
        let analysis: ffmpeg0::Input =
            serde_json::from_value(input(&table, &state, ffmpeg0::NAME, None).unwrap()).unwrap();
        assert_eq!(analysis.frames.map(|f| f.fps), Some(2.0));
        assert!(analysis.analysis && !analysis.video);
        let encode: ffmpeg0::Input =
            serde_json::from_value(input(&table, &state, ffmpeg0::VIDEO_STAGE, None).unwrap())
                .unwrap();
        assert!(encode.video && !encode.analysis);
        assert!(
            input(&table, &state, audio::NAME, None).is_err(),
            "not before the analysis"
        );

        let check =
            |name: &str, result: &Value| table.get(&name.parse().unwrap()).unwrap().check(result);
        let media = media(vec![20.0]);
        check(ffmpeg0::NAME, &serde_json::to_value(&media).unwrap()).unwrap();
        assert!(
            check(ffmpeg0::NAME, &json!({"duration": 40.0})).is_err(),
            "not its Output"
        );
        succeed(
            stage(&mut state, ffmpeg0::NAME),
            &[
                ("frames", "requests/r1/stages/stage-ffmpeg-0/frames.json"),
                (
                    "keyframes",
                    "requests/r1/stages/stage-ffmpeg-0/keyframes.json",
                ),
                ("audio", "requests/r1/stages/stage-ffmpeg-0/audio.wav"),
                ("speech", "requests/r1/stages/stage-ffmpeg-0/speech.wav"),
            ],
            &media,
        );
        let cuts: audio::Input =
            serde_json::from_value(input(&table, &state, audio::NAME, None).unwrap()).unwrap();
        assert_eq!(cuts.duration_s, 40.0);
        assert_eq!(cuts.scene_changes, [20.0]);
        assert_eq!(
            cuts.keyframes_key.as_deref(),
            Some("requests/r1/stages/stage-ffmpeg-0/keyframes.json")
        );

        let listed = listed();
        let lister = table.get(&audio::NAME.parse().unwrap()).unwrap();
        let result = serde_json::to_value(&listed).unwrap();
        lister.check(&result).unwrap();
        assert_eq!(lister.clips(&result).unwrap().len(), 2);
        succeed(stage(&mut state, audio::NAME), &[], &listed);
        assert!(
            input(&table, &state, ffmpeg1::NAME, None).is_err(),
            "the cut waits for the video"
        );
        succeed(
            stage(&mut state, ffmpeg0::VIDEO_STAGE),
            &[("video", "requests/r1/stages/stage-ffmpeg-0-video/video.mp4")],
            &media,
        );
        let cut: ffmpeg1::Input =
            serde_json::from_value(input(&table, &state, ffmpeg1::NAME, None).unwrap()).unwrap();
        assert_eq!(cut.clips.len(), 2);

        let mut clip = ClipState {
            clip: "clip-0001".parse().unwrap(),
            start_s: 20.0,
            end_s: 40.0,
            key: "requests/r1/clips/clip-0001/video.mp4".into(),
            tasks: table
                .scopes()
                .1
                .iter()
                .map(|s| StageState::new(s.name.clone(), s.function.as_str()))
                .collect(),
        };
        let share: ffmpeg2::Input =
            serde_json::from_value(input(&table, &state, ffmpeg2::NAME, Some(&clip)).unwrap())
                .unwrap();
        assert_eq!((share.start_s, share.end_s), (20.0, 40.0));
        assert_eq!(
            share.speech_key.as_deref(),
            Some("requests/r1/stages/stage-ffmpeg-0/speech.wav")
        );
        for later in [detect::NAME, transcribe::NAME] {
            assert!(
                input(&table, &state, later, Some(&clip)).is_err(),
                "{later} waits for its frames"
            );
        }
        let frames = ffmpeg2::Output {
            frames: 1,
            audio: true,
            audio_ms: 1,
        };
        succeed(
            &mut clip.tasks[0],
            &[
                (
                    "audio",
                    "requests/r1/stages/stage-ffmpeg-2/clip-0001/audio.wav",
                ),
                (
                    "frames",
                    "requests/r1/stages/stage-ffmpeg-2/clip-0001/frames.json",
                ),
            ],
            &frames,
        );
        let looked: detect::Input =
            serde_json::from_value(input(&table, &state, detect::NAME, Some(&clip)).unwrap())
                .unwrap();
        assert!(looked.frames.is_empty(), "the frames go by key");
        assert_eq!(
            looked.frames_key.as_deref(),
            Some("requests/r1/stages/stage-ffmpeg-2/clip-0001/frames.json")
        );
        let heard: transcribe::Input =
            serde_json::from_value(input(&table, &state, transcribe::NAME, Some(&clip)).unwrap())
                .unwrap();
        assert_eq!(
            heard.audio_key.as_deref(),
            Some("requests/r1/stages/stage-ffmpeg-2/clip-0001/audio.wav")
        );
    }

    #[test]
    fn a_clip_without_sound_is_transcribed_as_silence() {
        let table = video().unwrap();
        let state = request(&table);
        let mut clip = ClipState {
            clip: "clip-0000".parse().unwrap(),
            start_s: 0.0,
            end_s: 5.0,
            key: "requests/r1/clips/clip-0000.mp4".into(),
            tasks: vec![StageState::new(
                ffmpeg2::NAME.parse().unwrap(),
                ffmpeg2::NAME,
            )],
        };
        let silent = ffmpeg2::Output {
            frames: 0,
            audio: false,
            audio_ms: 0,
        };
        succeed(&mut clip.tasks[0], &[], &silent);
        assert_eq!(
            input(&table, &state, transcribe::NAME, Some(&clip)),
            Ok(json!({"audio_key": null}))
        );
    }

    #[test]
    fn the_clips_are_listed_and_looked_at_without_waiting_for_the_encode() {
        let table = video().unwrap();
        // What each stage waits for, transitively.
        fn waits_for(table: &Table, name: &StageName, out: &mut Vec<String>) {
            for before in &table.get(name).unwrap().after {
                out.push(before.to_string());
                waits_for(table, before, out);
            }
        }
        let chain = |name: &str| {
            let mut out = Vec::new();
            waits_for(&table, &name.parse().unwrap(), &mut out);
            out
        };
        let encode = ffmpeg0::VIDEO_STAGE.to_owned();
        for looked_at in [audio::NAME, ffmpeg2::NAME, detect::NAME, transcribe::NAME] {
            assert!(!chain(looked_at).contains(&encode), "{looked_at}");
        }
        assert_eq!(
            chain(ffmpeg1::NAME),
            [audio::NAME, ffmpeg0::NAME, ffmpeg0::VIDEO_STAGE]
        );
    }
}
