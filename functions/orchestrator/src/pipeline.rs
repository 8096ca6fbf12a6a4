//! The pipeline, declared in one place: each stage's name, function, how its input is built
//! from the request's state, its timeout and its retry policy. The driver walks this table;
//! adding a stage is one entry here plus one function crate.

use std::time::Duration;

use fave_common::retry::RetryPolicy;
use fave_common::state::RequestState;
use serde_json::{Value, json};

/// One stage of the pipeline.
pub struct StageSpec {
    /// The stage's name in `state.json` and in its output keys.
    pub name: &'static str,
    /// The function the gateway routes to.
    pub function: &'static str,
    /// Builds the stage's input from what earlier stages recorded.
    pub input: fn(&RequestState) -> Result<Value, String>,
    /// How long one attempt may take; the orchestrator's own limit caps it.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// The stages, in order.
pub fn stages() -> Vec<StageSpec> {
    vec![StageSpec {
        name: "stage-ffmpeg-0",
        function: "stage-ffmpeg-0",
        input: |state| {
            let input = state
                .input
                .as_ref()
                .ok_or("the input has not been copied in")?;
            Ok(json!({ "source_key": input.key }))
        },
        timeout: Duration::from_secs(600),
        retry: RetryPolicy::default(),
    }]
}
