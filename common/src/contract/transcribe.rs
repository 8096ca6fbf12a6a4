//! `stage-transcribe`, once per clip: what is said in the clip's audio.

use serde::{Deserialize, Serialize};

pub const NAME: &str = "stage-transcribe";

/// The names of its outputs.
pub mod outputs {
    /// `transcript.json`: the [`Output`](super::Output) again.
    pub const TRANSCRIPT: &str = "transcript";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The clip's 16 kHz mono wav; absent when the clip has no sound.
    #[serde(default)]
    pub audio_key: Option<String>,
}

/// One stretch of speech.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Seconds from the start of the audio.
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
}

/// The stage's result, also written as `transcript.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub text: String,
    /// Times in seconds from the clip's start.
    pub segments: Vec<Segment>,
    pub words: usize,
    /// Seconds of work per second of audio; `null` without audio.
    pub rtf: Option<f64>,
    pub audio_s: f64,
    pub transcribe_ms: u64,
}
