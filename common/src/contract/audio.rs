//! `stage-audio`: librosa's features of the sound, the proposed cuts, and the clip list the
//! per-clip chain runs over.

use serde::{Deserialize, Serialize};

use super::ListedClip;

pub const NAME: &str = "stage-audio";

/// More clips than this is a mistake upstream, not a video.
pub const MAX_CLIPS: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// stage-ffmpeg-0's wav; absent when the video has no sound.
    #[serde(default)]
    pub audio_key: Option<String>,
    /// The video's duration in seconds.
    pub duration_s: f64,
    /// Scene-change times (s) from stage-ffmpeg-0.
    #[serde(default)]
    pub scene_changes: Vec<f64>,
    pub min_clip_s: f64,
    pub max_clip_s: f64,
    /// stage-ffmpeg-0's `keyframes.json`: the clips are listed when it is given.
    #[serde(default)]
    pub keyframes_key: Option<String>,
}

/// The summary of the features, and the cuts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub has_audio: bool,
    /// Proposed cut times (s), increasing.
    /// At most [`MAX_CLIPS`] of them: the video is refused before it would need more.
    pub cuts: Vec<f64>,
    /// The clips the cuts make, moved to keyframes, with the keys their videos are to have;
    /// listed when the keyframes were given.
    #[serde(default)]
    pub clips: Option<Vec<ListedClip>>,
    pub audio_duration_s: f64,
    pub frames: usize,
    pub onsets: usize,
    /// Seconds of sound (within 60 dB of the loudest frame).
    pub non_silent_s: f64,
    pub rms_mean: f32,
    pub rms_max: f32,
    pub spectral_centroid_mean_hz: f32,
    pub zero_crossing_rate_mean: f32,
    /// Time spent computing features and cuts, the rest being storage.
    pub analysis_ms: u64,
}
