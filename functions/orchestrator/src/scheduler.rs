//! Which task runs when: one scheduler for both scopes, the request-wide stages and one
//! clip's chain. A task starts as soon as every stage it comes `after` succeeded, so tasks
//! that do not read each other run side by side; a task that ended (in this run or one
//! before a restart) is never started again. The first task that fails for good ends its
//! scope, and the tasks still in flight in it are dropped. A success and the start of the
//! task it lets run are committed in one write.

use fave_common::gateway::InvokeError;
use fave_common::ids::{ClipId, StageName};
use fave_common::state::{RequestState, StageState, StageStatus};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::pipeline::StageSpec;
use crate::record::{DriveError, Shared, Tracked, bug, commit_shared};

/// One unit of work: a request-wide stage, or a stage of one clip.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: StageName,
    pub clip: Option<ClipId>,
}

impl Task {
    pub fn request_wide(spec: &StageSpec) -> Self {
        Self {
            name: spec.name.clone(),
            clip: None,
        }
    }

    pub fn for_clip(spec: &StageSpec, clip: &ClipId) -> Self {
        Self {
            name: spec.name.clone(),
            clip: Some(clip.clone()),
        }
    }

    /// The task's record in `state`.
    pub fn state<'a>(&self, state: &'a RequestState) -> Option<&'a StageState> {
        match &self.clip {
            Some(id) => state.clips.iter().find(|c| &c.clip == id)?.task(&self.name),
            None => state.stage(&self.name),
        }
    }

    /// The task's record, to change; a task the request does not have is a bug.
    pub fn state_mut<'a>(&self, t: &'a mut Tracked) -> Result<&'a mut StageState, DriveError> {
        let status = t.state.status;
        let found = match &self.clip {
            Some(id) => t
                .state
                .clips
                .iter_mut()
                .find(|c| &c.clip == id)
                .and_then(|c| c.task_mut(&self.name)),
            None => t.state.stage_mut(&self.name),
        };
        found.ok_or_else(|| {
            bug(
                "recording a task",
                format!("a task {self} that the {status:?} request does not have"),
            )
        })
    }

    /// Whether it ended (succeeded, skipped or failed): finished work is never redone.
    fn done(&self, state: &RequestState) -> bool {
        self.state(state).is_some_and(|s| s.status.is_terminal())
    }

    /// Whether it ended so that what comes after it may run: succeeded, or skipped.
    pub fn succeeded(&self, state: &RequestState) -> bool {
        self.state(state)
            .is_some_and(|s| matches!(s.status, StageStatus::Succeeded | StageStatus::Skipped))
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.clip {
            Some(clip) => write!(f, "{} on {clip}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// What running a task, or a scope of them, ends in: the driver's own trouble is the outer
/// `Err`; the first task that failed for good, and why, the inner one.
pub type Ran = Result<Result<(), (Task, InvokeError)>, DriveError>;

/// Runs one scope: `specs` with their `tasks` (one each), each through `run` as soon as
/// it is ready. `then` is launched, beside the tasks still running, once the task at its
/// index has succeeded (the request-wide scope starts the clips so). Returns when every
/// task ended, or at the first that failed for good.
pub async fn run_scope<'a, F>(
    shared: &'a Shared,
    specs: &[&'a StageSpec],
    tasks: &'a [Task],
    run: &F,
    mut then: Option<(usize, BoxFuture<'a, Ran>)>,
) -> Ran
where
    F: Fn(&'a StageSpec, &'a Task) -> BoxFuture<'a, Ran>,
{
    let mut launched = vec![false; specs.len()];
    let mut running = FuturesUnordered::new();
    // A task's success is recorded in memory by its call ([`crate::attempt`]) and made
    // durable by the next write: the start of a task it lets run, which commits both in one
    // write, or, when it lets nothing start, a write of its own here. Lost to a crash in
    // between, the success is found again by calling the stage once more: its manifest is
    // returned without redoing the work.
    let mut unwritten_success = false;
    loop {
        let starting = {
            let state = &shared.lock().await.state;
            let before = running.len();
            for i in ready(specs, tasks, &mut launched, state) {
                running.push(run(specs[i], &tasks[i]));
            }
            if then
                .as_ref()
                .is_some_and(|(after, _)| tasks[*after].succeeded(state))
                && let Some((_, next)) = then.take()
            {
                running.push(next);
            }
            running.len() > before
        };
        if unwritten_success && !starting {
            commit_shared(shared).await?;
        }
        unwritten_success = match running.next().await {
            Some(ended) => {
                if let Err(failed) = ended? {
                    return Ok(Err(failed));
                }
                true
            }
            None => break,
        };
    }
    if let Some(i) = launched.iter().position(|l| !l) {
        return Err(bug(
            "running the request",
            format!("{} waits for a stage that never ran", tasks[i]),
        ));
    }
    Ok(Ok(()))
}

/// Which of `tasks` (one per spec of `specs`) may start now: not launched yet, not ended,
/// and every stage they come `after` succeeded (a failed one is not something to build on:
/// its failure ends the request when its own future is collected, which may come after
/// another task's). Marks those already ended, and those returned, as launched.
fn ready(
    specs: &[&StageSpec],
    tasks: &[Task],
    launched: &mut [bool],
    state: &RequestState,
) -> Vec<usize> {
    let done = |name: &StageName| {
        tasks
            .iter()
            .any(|task| &task.name == name && task.succeeded(state))
    };
    let mut starting = Vec::new();
    for (i, (spec, task)) in specs.iter().zip(tasks).enumerate() {
        if launched[i] {
            continue;
        }
        if task.done(state) {
            launched[i] = true;
        } else if spec.after.iter().all(done) {
            launched[i] = true;
            starting.push(i);
        }
    }
    starting
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use fave_common::state::Submission;

    use super::*;
    use crate::pipeline;

    #[test]
    fn a_failed_stage_is_not_something_to_build_on() {
        // The video pipeline's request-wide stages; stage-audio comes after stage-ffmpeg-0.
        let table = pipeline::video().unwrap();
        let (once, _) = table.scopes();
        let tasks: Vec<Task> = once.iter().map(|s| Task::request_wide(s)).collect();
        let stages = once
            .iter()
            .map(|s| StageState::new(s.name.clone(), s.function.as_str()))
            .collect();
        let submission = Submission {
            video_uri: "s3://b/uploads/v.mp4".into(),
            query: None,
            profile: Default::default(),
            callback_url: None,
            reach: None,
            fresh: false,
        };
        let mut state = RequestState::new("r1".parse().unwrap(), submission, stages, Utc::now());
        let index = |name: &str| once.iter().position(|s| s.name.as_str() == name).unwrap();
        let mut launched = vec![false; once.len()];
        let first = ready(&once, &tasks, &mut launched, &state);
        assert!(first.contains(&index("stage-ffmpeg-0")), "{first:?}");
        assert!(!first.contains(&index("stage-audio")));
        // stage-ffmpeg-0 failed for good; its failure is still on its way to the driver.
        state.stages[index("stage-ffmpeg-0")].status = StageStatus::Failed;
        let next = ready(&once, &tasks, &mut launched, &state);
        assert!(!next.contains(&index("stage-audio")), "{next:?}");
        // Succeeded, it is.
        state.stages[index("stage-ffmpeg-0")].status = StageStatus::Succeeded;
        let after = ready(&once, &tasks, &mut launched, &state);
        assert!(after.contains(&index("stage-audio")), "{after:?}");
    }
}
