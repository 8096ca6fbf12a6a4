//! `stage-noop`: does nothing, through the same harness as every real stage, so that what
//! a benchmark measures with it is the orchestrator's own cost: the gateway hop, the
//! harness's manifest read and write, and the orchestrator's state writes. It serves every
//! stage of the orchestrator's no-op table (`FAVE_PIPELINE=noop`).

use std::collections::BTreeMap;
use std::time::Duration;

use fave_common::contract::ListedClip;
pub use fave_common::contract::noop::{Input, NAME, Output};
use fave_common::ids::ClipId;
use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};

/// More clips than this is a mistake, not a benchmark.
const MAX_CLIPS: usize = 100_000;

pub struct Noop;

impl Stage for Noop {
    type Input = Input;
    type Output = Output;

    fn name(&self) -> &'static str {
        NAME
    }

    fn serves(&self, stage: &str) -> bool {
        stage.starts_with("noop-")
    }

    async fn run(
        &self,
        _ctx: &StageContext<'_>,
        call: &StageCall<Input>,
    ) -> Result<Produced<Output>, StageError> {
        let input = &call.input;
        if input.clips > MAX_CLIPS || input.work_ms > 600_000 {
            return Err(StageError::InvalidInput(format!(
                "at most {MAX_CLIPS} clips and 600000 ms of work"
            )));
        }
        if input.work_ms > 0 {
            tokio::time::sleep(Duration::from_millis(input.work_ms)).await;
        }
        let prefix = call.output_prefix();
        let clips = (0..input.clips)
            .map(|i| {
                let clip = ClipId::from_index(i);
                ListedClip {
                    key: format!("{prefix}/{clip}"),
                    clip,
                    start_s: i as f64,
                    end_s: (i + 1) as f64,
                }
            })
            .collect();
        Ok(Produced {
            outputs: BTreeMap::new(),
            data: Output { clips },
        })
    }
}
