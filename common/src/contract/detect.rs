//! `stage-detect`, once per clip: the objects in the clip's frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Frame;

pub const NAME: &str = "stage-detect";

/// The names of its outputs.
pub mod outputs {
    /// `detections.json`: a list of [`FrameDetections`](super::FrameDetections).
    pub const DETECTIONS: &str = "detections";
}

/// The frames to look at, by list or by the key of a list (stage-ffmpeg-2's
/// `frames.json`): the two are looked at in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Frames to look at, times from the clip's start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<Frame>,
    /// A `frames.json` of the request's, listing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_key: Option<String>,
    #[serde(default)]
    pub options: Option<DetectOptions>,
}

/// Tuning knobs of the detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectOptions {
    /// Keep a (box, class) when objectness × class probability exceeds this.
    pub score_threshold: f32,
    /// Per-class NMS drops a box whose IoU with a better one exceeds this.
    pub nms_iou: f32,
}

impl Default for DetectOptions {
    /// Darknet's defaults for `detector test`: 0.25 and 0.45.
    fn default() -> Self {
        DetectOptions {
            score_threshold: 0.25,
            nms_iou: 0.45,
        }
    }
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// COCO label, e.g. `"person"`.
    pub label: String,
    /// Index of `label` in `coco.names`.
    pub class_id: usize,
    /// Objectness × class probability, in 0..1.
    pub score: f32,
    /// `[x1, y1, x2, y2]` in pixels of the image looked at, clipped to it.
    pub bbox: [f32; 4],
}

/// One frame's detections, as written to `detections.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameDetections {
    pub time_s: f64,
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Detection>,
    /// The detector did not look at this frame: it barely differed from the last one it
    /// looked at, whose detections these are (the difference gate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carried: bool,
}

/// What was seen of one label in the clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSummary {
    pub best_score: f32,
    /// Frames (of `frames`) in which it was detected at least once.
    pub frames: usize,
    /// Time (s from the clip start) of the frame with the best score.
    pub best_time_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub frames: usize,
    /// Of `frames`, those the detector looked at, and those whose detections were carried
    /// from the frame looked at before them (the difference gate).
    #[serde(default)]
    pub detected: usize,
    #[serde(default)]
    pub carried: usize,
    pub labels: BTreeMap<String, LabelSummary>,
    /// Time spent in the detector, the rest being storage and decoding.
    pub detect_ms: u64,
}
