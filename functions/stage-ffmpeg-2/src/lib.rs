//! `stage-ffmpeg-2`, one call per clip: the frames object detection looks at, and the
//! clip's audio for speech to text.
//!
//! One ffmpeg run decodes the clip once and writes:
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

use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};
use fave_common::tool::{self, dir_and_name};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// This stage's name, which is its function's name.
pub const NAME: &str = "stage-ffmpeg-2";

/// Frames uploaded at once.
const UPLOADS_IN_FLIGHT: usize = 8;

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
}

fn default_fps() -> f64 {
    1.0
}
fn default_max_width() -> u32 {
    640
}
fn default_max_frames() -> u32 {
    600
}

/// One extracted frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Seconds from the start of the clip.
    pub time_s: f64,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub frames: Vec<Frame>,
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
        let work = ctx.workdir()?;
        let clip = work.join("clip.mp4");
        ctx.storage.get_to_file(&input.clip_key, &clip).await?;
        let has_audio = input.audio && has_audio(&clip).await?;

        let clock = Instant::now();
        let (dir, name) = dir_and_name(&clip);
        let scale = format!("scale='min({},iw)':-2", input.max_width);
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-y", "-v", "error"]);
        if keyframes_are_the_frames(input) {
            cmd.args(["-skip_frame", "nokey", "-i"])
                .arg(name)
                .args(["-map", "0:v:0", "-vf"])
                .arg(scale)
                .args(["-fps_mode", "passthrough"]);
        } else {
            cmd.arg("-i")
                .arg(name)
                .args(["-map", "0:v:0", "-vf"])
                .arg(format!("fps={},{scale}", input.fps));
        }
        cmd.args(["-frames:v"])
            .arg(input.max_frames.to_string())
            .args(["-q:v", "3", "-start_number", "0", "frame-%06d.jpg"]);
        if has_audio {
            cmd.args(["-map", "0:a:0", "-vn", "-ac", "1", "-ar"])
                .arg(AUDIO_RATE.to_string())
                .args(["-c:a", "pcm_s16le", "audio.wav"]);
        }
        tool::run(&mut cmd, dir, "ffmpeg")
            .await
            .map_err(StageError::InvalidMedia)?;
        let ffmpeg_ms = clock.elapsed().as_millis() as u64;

        let prefix = call.output_prefix();
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
        // Uploaded a few at a time: each frame is small, so the round trips dominate.
        let files: Vec<String> = names.iter().map(|(_, name)| name.clone()).collect();
        let keys: Vec<String> = futures::stream::iter(files)
            .map(|name| upload(ctx, &prefix, name))
            .buffered(UPLOADS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut outputs = BTreeMap::new();
        let mut frames = Vec::with_capacity(names.len());
        for ((n, name), key) in names.iter().zip(keys) {
            outputs.insert(name.trim_end_matches(".jpg").to_owned(), key.clone());
            frames.push(Frame {
                time_s: f64::from(*n) / input.fps,
                key,
            });
        }
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
                fps: input.fps,
                audio: has_audio,
                ffmpeg_ms,
            },
        })
    }
}

/// Whether the clip's keyframes fall every `1 / fps` s, so decoding only them gives the
/// frames wanted.
fn keyframes_are_the_frames(input: &Input) -> bool {
    input
        .keyframe_interval_s
        .is_some_and(|k| (k * input.fps - 1.0).abs() < 1e-9)
}

/// Uploads one frame of the work directory; returns its key.
async fn upload(ctx: &StageContext<'_>, prefix: &str, name: String) -> Result<String, StageError> {
    let key = format!("{prefix}{name}");
    ctx.storage
        .put_file(&key, &ctx.workdir()?.join(&name), "image/jpeg")
        .await?;
    Ok(key)
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
        };
        assert!(keyframes_are_the_frames(&input(1.0, Some(1.0))));
        assert!(keyframes_are_the_frames(&input(2.0, Some(0.5))));
        assert!(!keyframes_are_the_frames(&input(2.0, Some(1.0))));
        assert!(!keyframes_are_the_frames(&input(1.0, None)));
    }

    #[test]
    fn frame_names_give_their_numbers() {
        assert_eq!(frame_number("frame-000012.jpg"), Some(12));
        assert_eq!(frame_number("frame-000000.jpg"), Some(0));
        assert_eq!(frame_number("audio.wav"), None);
        assert_eq!(frame_number("frame-x.jpg"), None);
    }
}
