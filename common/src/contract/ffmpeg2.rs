//! `stage-ffmpeg-2`, once per clip: the clip's share of the video's frames and of its speech.

use serde::{Deserialize, Serialize};

pub const NAME: &str = "stage-ffmpeg-2";

/// Sample rate of the clip audio.
pub const AUDIO_RATE: u32 = 16_000;

/// The names of its outputs.
pub mod outputs {
    /// The clip's 16 kHz mono wav, when the video has sound.
    pub const AUDIO: &str = "audio";
    /// `frames.json`: the clip's frames, a list of [`Frame`](crate::contract::Frame)s
    /// with times from the clip's start (stage-ffmpeg-0's objects: none are copied).
    pub const FRAMES: &str = "frames";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// stage-ffmpeg-0's `frames.json`.
    pub frames_key: String,
    /// Where the clip lies in the video, in seconds from its first frame.
    pub start_s: f64,
    pub end_s: f64,
    /// stage-ffmpeg-0's `speech.wav`; absent when the video has no sound.
    #[serde(default)]
    pub speech_key: Option<String>,
    #[serde(default = "default_max_frames")]
    pub max_frames: u32,
}

fn default_max_frames() -> u32 {
    600
}

impl Input {
    /// The clip `[start_s, end_s)` of the frames and speech stage-ffmpeg-0 wrote.
    pub fn new(frames_key: String, start_s: f64, end_s: f64, speech_key: Option<String>) -> Self {
        Self {
            frames_key,
            start_s,
            end_s,
            speech_key,
            max_frames: default_max_frames(),
        }
    }
}

/// The clip's frames are passed on by key (the `frames` output), not in the result: a clip
/// has up to hundreds, and the result is kept in state.json, which every transition
/// rewrites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// How many frames `frames.json` lists.
    pub frames: usize,
    /// Whether `audio.wav` was written.
    pub audio: bool,
    /// Time spent on the clip's audio: reading its bytes, wrapping and storing them.
    pub audio_ms: u64,
}
