//! The contract both ends of a seam read, as types: JSON exists only on the wire and in the
//! store. Each stage has a module here with its function's `NAME`, its `Input`, its
//! `Output` (the manifest's `data`) and the names of its outputs; the stage crate implements
//! it and the orchestrator builds the inputs and reads the results through the same types,
//! so a renamed field fails to compile instead of failing three hops later. Beside them:
//! what a failure may be called ([`FailureCode`]), the API's bodies ([`api`]), `final.json`
//! ([`report`]) and what the video library keeps and answers ([`library`]).
//!
//! The call and the answer around each stage's types ([`StageCall`], [`Manifest`]) are the
//! harness's, in [`crate::stage`].

pub mod api;
pub mod audio;
pub mod detect;
pub mod failure;
pub mod ffmpeg0;
pub mod ffmpeg1;
pub mod ffmpeg2;
pub mod library;
pub mod noop;
pub mod report;
pub mod transcribe;

pub use failure::FailureCode;
use serde::{Deserialize, Serialize};

use crate::ids::ClipId;
pub use crate::stage::{Manifest, StageCall};

/// One clip of the list a clip-listing stage returns (stage-audio's `clips`, and the no-op
/// stage's standing in for it): the orchestrator runs the per-clip stages over these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedClip {
    pub clip: ClipId,
    pub start_s: f64,
    pub end_s: f64,
    /// The clip's video in the store.
    pub key: String,
}

/// Frames taken for detection are at most this wide (px), the height in proportion.
pub const FRAME_MAX_WIDTH: u32 = 640;

/// A frame in the store and when it shows, in seconds from the start of the video or clip
/// it was taken from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    pub time_s: f64,
    pub key: String,
}
