//! `stage-ffmpeg-1`: the canonical video cut into the listed clips by stream copy. Its
//! outputs are named by clip id, each the clip's video.

use serde::{Deserialize, Serialize};

use super::ListedClip;

pub const NAME: &str = "stage-ffmpeg-1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The canonical video; must be one of the request's own objects.
    pub video_key: String,
    /// The clips to cut, in order, each starting where the one before ends.
    pub clips: Vec<ListedClip>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// How many clips were written.
    pub clips: usize,
    /// Where the video ends, from its first frame: the last clip's true end.
    pub end_s: f64,
    /// Time spent in ffprobe and ffmpeg, the rest being storage.
    pub ffmpeg_ms: u64,
}
