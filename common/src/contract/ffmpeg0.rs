//! `stage-ffmpeg-0`: the input video probed, normalized and taken apart. One function serves
//! two stages of the video table: [`NAME`] (the analysis) and [`VIDEO_STAGE`] (the canonical
//! video alone, made beside it).

use serde::{Deserialize, Serialize};

use super::FRAME_MAX_WIDTH;

/// The function's name, and the analysis stage's.
pub const NAME: &str = "stage-ffmpeg-0";

/// The pipeline's other stage this function serves: the canonical video alone.
pub const VIDEO_STAGE: &str = "stage-ffmpeg-0-video";

/// The names of its outputs (output name → key in the manifest).
pub mod outputs {
    /// ffprobe's view of the input, always.
    pub const PROBE: &str = "probe";
    /// The canonical H.264 mp4, with `video`.
    pub const VIDEO: &str = "video";
    /// Mono PCM at the input's `sample_rate`, with `analysis` and sound.
    pub const AUDIO: &str = "audio";
    /// The same at [`SPEECH_RATE`](super::SPEECH_RATE), what speech models take.
    pub const SPEECH: &str = "speech";
    /// `keyframes.json`, [`Keyframes`](super::Keyframes), with `analysis`.
    pub const KEYFRAMES: &str = "keyframes";
    /// `frames.json`, a list of [`Frame`](crate::contract::Frame)s, with `frames`.
    pub const FRAMES: &str = "frames";
}

/// Sample rate of `speech.wav`.
pub const SPEECH_RATE: u32 = 16_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The input video's key: under the request's `input/` folder, or the library's copy
    /// of the video (`videos/{sha256}/input/source.{ext}`).
    pub source_key: String,
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval_s: f64,
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// ffmpeg's scene score (0..1) above which a frame starts a new scene.
    #[serde(default = "default_scene_threshold")]
    pub scene_threshold: f64,
    /// Frames to take for detection from the same decode; none if absent.
    #[serde(default)]
    pub frames: Option<FrameSampling>,
    /// Write the canonical video.
    #[serde(default = "yes")]
    pub video: bool,
    /// Write the analysis: the wavs, the keyframe times, the scene changes, the frames.
    #[serde(default = "yes")]
    pub analysis: bool,
}

impl Input {
    /// Both parts from one decode, with every setting at its default.
    pub fn new(source_key: impl Into<String>) -> Self {
        Self {
            source_key: source_key.into(),
            keyframe_interval_s: default_keyframe_interval(),
            sample_rate: default_sample_rate(),
            scene_threshold: default_scene_threshold(),
            frames: None,
            video: true,
            analysis: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Which frames to take: the first at or after every `1 / fps` s, at most `max_width` wide.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameSampling {
    pub fps: f64,
    #[serde(default = "default_frame_width")]
    pub max_width: u32,
}

impl FrameSampling {
    /// `fps` frames a second, at most [`FRAME_MAX_WIDTH`] wide.
    pub fn at(fps: f64) -> Self {
        Self {
            fps,
            max_width: FRAME_MAX_WIDTH,
        }
    }
}

fn default_frame_width() -> u32 {
    FRAME_MAX_WIDTH
}

fn default_keyframe_interval() -> f64 {
    1.0
}

fn default_sample_rate() -> u32 {
    22_050
}

fn default_scene_threshold() -> f64 {
    0.3
}

/// The canonical video's facts when this call wrote it, else the input's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub has_audio: bool,
    pub source_video_codec: String,
    pub source_bytes: u64,
    pub keyframe_interval_s: f64,
    pub sample_rate: u32,
    /// Times (s) where a new scene starts, increasing (none without `analysis`).
    pub scene_changes: Vec<f64>,
    /// How many keyframe times `keyframes.json` holds (none without `analysis`).
    #[serde(default)]
    pub keyframes: usize,
    /// The frames taken for detection (listed in the `frames` output), if asked for.
    #[serde(default)]
    pub frames: Option<TakenFrames>,
    /// Time spent probing the input and in ffmpeg, before the uploads (the canonical
    /// video's probe runs alongside them).
    pub ffmpeg_ms: u64,
}

/// How the frames of `frames.json` were taken, and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TakenFrames {
    pub fps: f64,
    pub max_width: u32,
    pub count: usize,
}

/// `keyframes.json`: the canonical video's keyframe times from its first frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyframes {
    pub times: Vec<f64>,
}
