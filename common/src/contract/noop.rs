//! `stage-noop`: does nothing through the same harness as every real stage; it serves every
//! stage of the no-op table, the last request-wide one listing the clips.

use serde::{Deserialize, Serialize};

use super::ListedClip;

pub const NAME: &str = "stage-noop";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// How long the "work" takes (a sleep).
    #[serde(default)]
    pub work_ms: u64,
    /// How many clips to list, for the stage the per-clip chain starts from.
    #[serde(default)]
    pub clips: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clips: Vec<ListedClip>,
}
