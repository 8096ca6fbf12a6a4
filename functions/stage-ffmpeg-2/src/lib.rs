//! `stage-ffmpeg-2`, one call per clip: the frames object detection looks at, and the
//! clip's audio for speech to text.
//!
//! When stage-ffmpeg-0 already took frames at `fps` from the whole video (`from_video`:
//! its `frames.json` and the clip's place in the video), the clip's frames are those that
//! show within it, and the clip is not decoded for them: it is not even fetched when there
//! is no sound to cut. Otherwise (or when none of those frames falls in the clip) one
//! ffmpeg run decodes the clip once and writes:
//! - `frame-NNNNNN.jpg`: frames at `fps` per second, frame `n` being the one showing at
//!   `n / fps` s into the clip, at most `max_width` px wide and at most `max_frames` of
//!   them. When the clip has a keyframe every `1 / fps` s (stage-ffmpeg-0 forces one every
//!   `keyframe_interval_s`, and clips start on one), those keyframes are exactly the frames
//!   wanted, and only they are decoded (`-skip_frame nokey`): a tenth to a thirtieth of
//!   the decoding. Otherwise ffmpeg's `fps` filter picks them from every decoded frame;
//! - `audio.wav`: mono 16-bit PCM at 16 kHz (what speech models take), when `audio` is set
//!   and the clip has sound.

use std::collections::BTreeMap;
use std::time::Instant;

use fave_common::stage::{
    FRAME_MAX_WIDTH, Frame, Produced, Stage, StageCall, StageContext, StageError,
};
use fave_common::tool::{self, dir_and_name};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// This stage's name, which is its function's name.
pub const NAME: &str = "stage-ffmpeg-2";

/// Sample rate of the clip audio.
pub const AUDIO_RATE: u32 = 16_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The clip's video; must be one of the request's own objects.
    pub clip_key: String,
    /// Frames per second to extract.
    #[serde(default = "default_fps")]
    pub fps: f64,
    #[serde(default = "default_max_width")]
    pub max_width: u32,
    #[serde(default = "default_max_frames")]
    pub max_frames: u32,
    /// The spacing of the clip's keyframes, if regular (stage-ffmpeg-0's forced ones).
    #[serde(default)]
    pub keyframe_interval_s: Option<f64>,
    /// Whether to write the clip's audio (the video has sound).
    #[serde(default)]
    pub audio: bool,
    /// Frames already taken at `fps` from the whole video, to use instead of decoding.
    #[serde(default)]
    pub from_video: Option<FromVideo>,
}

/// stage-ffmpeg-0's frames of the whole video, and where the clip lies in the video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromVideo {
    /// `frames.json`: every frame's time in the video and key.
    pub frames_key: String,
    pub start_s: f64,
    pub end_s: f64,
}

fn default_fps() -> f64 {
    1.0
}
fn default_max_width() -> u32 {
    FRAME_MAX_WIDTH
}
fn default_max_frames() -> u32 {
    600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The clip's frames, times from the clip's start.
    pub frames: Vec<Frame>,
    /// Whether they are stage-ffmpeg-0's, taken from the whole video.
    #[serde(default)]
    pub frames_from_video: bool,
    pub fps: f64,
    /// Whether `audio.wav` was written.
    pub audio: bool,
    pub ffmpeg_ms: u64,
}

pub struct Ffmpeg2;

impl Stage for Ffmpeg2 {
    type Input = Input;
    type Output = Output;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn run(
        &self,
        ctx: &StageContext<'_>,
        call: &StageCall<Input>,
    ) -> Result<Produced<Output>, StageError> {
        let input = &call.input;
        call.require_own_key("clip_key", &input.clip_key)?;
        if !(0.01..=30.0).contains(&input.fps)
            || !(16..=4096).contains(&input.max_width)
            || !(1..=100_000).contains(&input.max_frames)
        {
            return Err(StageError::InvalidInput(
                "fps must be within 0.01..=30, max_width 16..=4096, max_frames 1..=100000".into(),
            ));
        }
        let taken = match &input.from_video {
            Some(v) => {
                call.require_own_key("from_video.frames_key", &v.frames_key)?;
                let index: Vec<Frame> = ctx
                    .storage
                    .get_json(&v.frames_key)
                    .await?
                    .ok_or_else(|| {
                        StageError::InvalidInput(format!("no frames at {}", v.frames_key))
                    })?
                    .0;
                frames_within(&index, v.start_s, v.end_s, input.max_frames)
            }
            None => Vec::new(),
        };
        let decode = taken.is_empty();
        let work = ctx.workdir()?;
        let clip = work.join("clip.mp4");
        let has_audio = if decode || input.audio {
            ctx.storage.get_to_file(&input.clip_key, &clip).await?;
            input.audio && has_audio(&clip).await?
        } else {
            false
        };

        let clock = Instant::now();
        if decode || has_audio {
            let (dir, name) = dir_and_name(&clip);
            let mut cmd = Command::new("ffmpeg");
            cmd.args(["-nostdin", "-y", "-v", "error"]);
            let keyframes_only = keyframes_are_the_frames(input);
            if decode && keyframes_only {
                cmd.args(["-skip_frame", "nokey"]);
            }
            cmd.arg("-i").arg(name);
            if decode {
                let scale = format!("scale='min({},iw)':-2", input.max_width);
                cmd.args(["-map", "0:v:0", "-vf"]);
                if keyframes_only {
                    cmd.arg(scale).args(["-fps_mode", "passthrough"]);
                } else {
                    cmd.arg(format!("fps={},{scale}", input.fps));
                }
                cmd.args(["-frames:v"])
                    .arg(input.max_frames.to_string())
                    .args(["-q:v", "3", "-start_number", "0", "frame-%06d.jpg"]);
            }
            if has_audio {
                cmd.args(["-map", "0:a:0", "-vn", "-ac", "1", "-ar"])
                    .arg(AUDIO_RATE.to_string())
                    .args(["-c:a", "pcm_s16le", "audio.wav"]);
            }
            tool::run(&mut cmd, dir, "ffmpeg")
                .await
                .map_err(StageError::InvalidMedia)?;
        }
        let ffmpeg_ms = clock.elapsed().as_millis() as u64;

        let prefix = call.output_prefix();
        let mut outputs = BTreeMap::new();
        let frames = if decode {
            upload_frames(ctx, &prefix, input.fps, &mut outputs).await?
        } else {
            // Named like the frames this stage writes itself, so its outputs read the same.
            for (i, f) in taken.iter().enumerate() {
                outputs.insert(format!("frame-{i:06}"), f.key.clone());
            }
            taken
        };
        if frames.is_empty() {
            return Err(StageError::InvalidMedia("the clip gave no frame".into()));
        }
        if has_audio {
            let key = format!("{prefix}audio.wav");
            ctx.storage
                .put_file(&key, &work.join("audio.wav"), "audio/wav")
                .await?;
            outputs.insert("audio".to_owned(), key);
        }
        Ok(Produced {
            outputs,
            data: Output {
                frames,
                frames_from_video: !decode,
                fps: input.fps,
                audio: has_audio,
                ffmpeg_ms,
            },
        })
    }
}

/// The frames of `index` (times in the video) that show within `start_s..end_s`, the first
/// `max` of them, with times from `start_s`. Times a hair's breadth apart (ffmpeg and
/// ffprobe print microseconds) are the same frame's.
pub fn frames_within(index: &[Frame], start_s: f64, end_s: f64, max: u32) -> Vec<Frame> {
    const SAME: f64 = 1e-4;
    index
        .iter()
        .filter(|f| f.time_s >= start_s - SAME && f.time_s < end_s - SAME)
        .take(max as usize)
        .map(|f| Frame {
            time_s: ((f.time_s - start_s).max(0.0) * 1e6).round() / 1e6,
            key: f.key.clone(),
        })
        .collect()
}

/// Uploads the frames ffmpeg wrote to the work directory, naming each in `outputs`; returns
/// them in order, frame `n` showing at `n / fps` s into the clip.
async fn upload_frames(
    ctx: &StageContext<'_>,
    prefix: &str,
    fps: f64,
    outputs: &mut BTreeMap<String, String>,
) -> Result<Vec<Frame>, StageError> {
    let work = ctx.workdir()?;
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(work)
        .await
        .map_err(|e| StageError::Internal(format!("listing frames: {e}")))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| StageError::Internal(format!("listing frames: {e}")))?
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = frame_number(&name) {
            names.push((n, name));
        }
    }
    names.sort();
    let files = names
        .iter()
        .map(|(n, name)| (name.clone(), f64::from(*n) / fps))
        .collect();
    let frames = ctx.put_frames(work, prefix, files).await?;
    for ((_, name), f) in names.iter().zip(&frames) {
        outputs.insert(name.trim_end_matches(".jpg").to_owned(), f.key.clone());
    }
    Ok(frames)
}

/// Whether the clip's keyframes fall every `1 / fps` s, so decoding only them gives the
/// frames wanted.
fn keyframes_are_the_frames(input: &Input) -> bool {
    input
        .keyframe_interval_s
        .is_some_and(|k| (k * input.fps - 1.0).abs() < 1e-9)
}

/// `frame-000012.jpg` → 12.
fn frame_number(name: &str) -> Option<u32> {
    name.strip_prefix("frame-")?
        .strip_suffix(".jpg")?
        .parse()
        .ok()
}

/// Whether the clip has an audio stream.
async fn has_audio(clip: &std::path::Path) -> Result<bool, StageError> {
    let (dir, name) = dir_and_name(clip);
    let out = tool::run(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "a"])
            .args(["-show_entries", "stream=index", "-of", "csv=p=0"])
            .arg(name),
        dir,
        "ffprobe",
    )
    .await
    .map_err(StageError::InvalidMedia)?;
    Ok(!String::from_utf8_lossy(&out).trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_used_only_when_they_are_spaced_as_wanted() {
        let input = |fps: f64, k: Option<f64>| Input {
            clip_key: String::new(),
            fps,
            max_width: 640,
            max_frames: 10,
            keyframe_interval_s: k,
            audio: false,
            from_video: None,
        };
        assert!(keyframes_are_the_frames(&input(1.0, Some(1.0))));
        assert!(keyframes_are_the_frames(&input(2.0, Some(0.5))));
        assert!(!keyframes_are_the_frames(&input(2.0, Some(1.0))));
        assert!(!keyframes_are_the_frames(&input(1.0, None)));
    }

    #[test]
    fn a_clip_gets_the_video_frames_that_show_within_it() {
        let index: Vec<Frame> = (0..10)
            .map(|n| Frame {
                time_s: f64::from(n) * 1.001,
                key: format!("f{n}"),
            })
            .collect();
        let keys = |start, end, max| -> Vec<(f64, String)> {
            frames_within(&index, start, end, max)
                .into_iter()
                .map(|f| (f.time_s, f.key))
                .collect()
        };
        // A clip from the keyframe at 2.002 s (as ffprobe prints it) to the one at 5.005 s.
        assert_eq!(
            keys(2.002, 5.005, 100),
            [
                (0.0, "f2".into()),
                (1.001, "f3".into()),
                (2.002, "f4".into())
            ]
        );
        // The same instant printed a microsecond apart is the same frame.
        assert_eq!(keys(2.002001, 5.004999, 100)[0].1, "f2");
        assert_eq!(keys(2.002001, 5.004999, 100).len(), 3);
        assert_eq!(keys(0.0, 100.0, 4).len(), 4, "at most max");
        assert!(keys(2.5, 2.9, 100).is_empty(), "a clip between two frames");
    }

    #[test]
    fn frame_names_give_their_numbers() {
        assert_eq!(frame_number("frame-000012.jpg"), Some(12));
        assert_eq!(frame_number("frame-000000.jpg"), Some(0));
        assert_eq!(frame_number("audio.wav"), None);
        assert_eq!(frame_number("frame-x.jpg"), None);
    }
}
