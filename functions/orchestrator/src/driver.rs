//! One request's course: the video copied in, the stage table run (the request-wide
//! stages, and each clip's chain once the clips are listed), `final.json` written, and the
//! request ended ([`record::end`]). The record ([`crate::record`]) keeps it durable, the
//! scheduler ([`crate::scheduler`]) says what runs when, and each task's calls are
//! [`crate::attempt`]'s. Finished steps are never redone: the input is copied in once,
//! tasks that ended are not started again, and a stage that already wrote its manifest
//! returns it (the stage harness).

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use fave_common::contract::FailureCode;
use fave_common::ids::ClipId;
use fave_common::keys::RequestKeys;
use fave_common::state::{
    ClipState, InputObject, RequestEvent, RequestState, RequestStatus, StageState,
};
use fave_common::storage::Storage;
use futures::{FutureExt, StreamExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::attempt::Invoker;
use crate::input::{self, Fetched, Limits, Source};
use crate::pipeline::{StageSpec, Table};
use crate::record::{self, DriveError, Ending, Shared, Step, Tracked, bug, commit_shared};
use crate::scheduler::{self, Ran, Task};

/// What the driver needs from the orchestrator.
pub struct Driver<'a> {
    pub storage: &'a Storage,
    /// The clients for users' URLs; each request gets the one its reach allows.
    pub http: &'a crate::guard::UserClients,
    pub table: &'a Table,
    pub invoker: Invoker<'a>,
    /// At most this many clips move through the per-clip chain at once.
    pub fan_out: usize,
    pub input_limits: Limits,
}

impl Driver<'_> {
    /// Drives a request to a terminal state, or until `stop` fires (superseded, shutdown).
    /// Runs a heartbeat that renews the lease while the driver waits.
    pub async fn run(
        &self,
        tracked: Tracked,
        prefetched: Option<Fetched>,
        stop: CancellationToken,
    ) -> (RequestState, Step) {
        let ttl = tracked.holder().ttl;
        let t = Arc::new(Mutex::new(tracked));
        let heartbeat = tokio::spawn(record::heartbeat(t.clone(), ttl, stop.clone()));
        let result = tokio::select! {
            r = self.drive(&t, prefetched) => r,
            () = stop.cancelled() => Err(DriveError::Stopped),
        };
        stop.cancel();
        let superseded = matches!(heartbeat.await, Ok(Err(DriveError::Superseded)));
        let result = if superseded {
            Err(DriveError::Superseded)
        } else {
            result
        };
        let t = t.lock().await;
        (t.state.clone(), result)
    }

    async fn drive(&self, t: &Shared, prefetched: Option<Fetched>) -> Step {
        if t.lock().await.state.status.is_terminal() {
            return Ok(());
        }
        if !self.copy_input_in(t, prefetched).await? {
            return Ok(());
        }
        let starting = {
            let mut g = t.lock().await;
            let init = g.state.status == RequestStatus::Init;
            if init {
                g.state.apply(RequestEvent::Start, Utc::now())?;
            }
            init
        };
        if starting {
            commit_shared(t).await?;
        }
        let started = Instant::now();
        if let Err((task, failure)) = self.run_stages(t).await? {
            let failed = Ending::Failed {
                code: FailureCode::parse(&failure.code()),
                detail: format!("{task}: {failure}"),
            };
            return record::end(t, failed).await;
        }
        // final.json reads every clip's detections: not under the lock, so the heartbeat
        // keeps the lease meanwhile.
        let state = t.lock().await.state.clone();
        let result = crate::result::build(self.storage, &state, started.elapsed()).await?;
        let result_key = RequestKeys::new(&state.request_id).result();
        self.storage.put_json(&result_key, &result).await?;
        record::end(t, Ending::Completed { result_key }).await
    }

    /// Runs the request-wide stages, and the clips as soon as the stage that lists them is
    /// done, beside the request-wide stages still running. Stops at the first task that
    /// fails for good, and returns it.
    async fn run_stages(&self, t: &Shared) -> Ran {
        let (once, per_clip) = self.table.scopes();
        let tasks: Vec<Task> = once.iter().map(|spec| Task::request_wide(spec)).collect();
        let run = |spec, task| self.run_task(t, spec, task);
        let per_clip = &per_clip;
        let clips = once.iter().position(|s| s.lists_clips()).map(|i| {
            let lister = once[i];
            let clips = async move {
                self.make_clips(t, lister, per_clip).await?;
                self.run_clips(t, per_clip).await
            };
            (i, clips.boxed())
        });
        scheduler::run_scope(t, &once, &tasks, &run, clips).await
    }

    /// Runs every clip's chain, `fan_out` clips at a time, each clip as a scope of its own
    /// (no barrier between clips). Stops at the first task that fails for good.
    async fn run_clips(&self, t: &Shared, chain: &[&StageSpec]) -> Ran {
        let clips: Vec<ClipId> = t
            .lock()
            .await
            .state
            .clips
            .iter()
            .map(|c| c.clip.clone())
            .collect();
        let run_chain = |clip: ClipId| async move {
            let tasks: Vec<Task> = chain
                .iter()
                .map(|spec| Task::for_clip(spec, &clip))
                .collect();
            let run = |spec, task| self.run_task(t, spec, task);
            scheduler::run_scope(t, chain, &tasks, &run, None).await
        };
        // The driver's own trouble and the first task that failed for good both end the
        // fan-out; the clips still in flight are dropped with it.
        let mut running = futures::stream::iter(clips)
            .map(run_chain)
            .buffer_unordered(self.fan_out.max(1));
        while let Some(ended) = running.next().await {
            if let Err(failed) = ended? {
                return Ok(Err(failed));
            }
        }
        Ok(Ok(()))
    }

    fn run_task<'a>(
        &'a self,
        t: &'a Shared,
        spec: &'a StageSpec,
        task: &'a Task,
    ) -> futures::future::BoxFuture<'a, Ran> {
        async move {
            Ok(match self.invoker.run(t, spec, task).await? {
                Ok(()) => Ok(()),
                Err(failure) => Err((task.clone(), failure)),
            })
        }
        .boxed()
    }

    /// Records the clips that `lister` listed, each with its per-clip tasks pending; once
    /// only, so a resumed request keeps its clips and what they have done.
    async fn make_clips(
        &self,
        shared: &Shared,
        lister: &StageSpec,
        per_clip: &[&StageSpec],
    ) -> Step {
        let mut t = shared.lock().await;
        if !t.state.clips.is_empty() {
            return Ok(());
        }
        let result = t
            .state
            .stage(&lister.name)
            .and_then(|s| s.result.as_ref())
            .ok_or_else(|| bug("making clips", format!("{} has no result", lister.name)))?;
        let listed = lister
            .clips(result)
            .map_err(|e| bug("making clips", format!("a bad clip list: {e}")))?;
        t.state.clips = listed
            .into_iter()
            .map(|cut| ClipState {
                clip: cut.clip,
                start_s: cut.start_s,
                end_s: cut.end_s,
                key: cut.key,
                tasks: per_clip
                    .iter()
                    .map(|spec| StageState::new(spec.name.clone(), spec.function.as_str()))
                    .collect(),
            })
            .collect();
        drop(t);
        commit_shared(shared).await
    }

    /// Copies the video into `requests/{id}/input/` unless it is there already, using the
    /// file fetched at submission or fetching it again (a resumed request). Returns false if
    /// the request failed because the video can no longer be had.
    async fn copy_input_in(
        &self,
        t: &Shared,
        prefetched: Option<Fetched>,
    ) -> Result<bool, DriveError> {
        // The lock is not held while the video is fetched and uploaded (minutes, for a large
        // one), so the heartbeat keeps the lease meanwhile.
        let (id, uri, reach) = {
            let t = t.lock().await;
            if t.state.input.is_some() {
                return Ok(true);
            }
            (
                t.state.request_id.clone(),
                t.state.submission.video_uri.clone(),
                t.state.submission.reach,
            )
        };
        // The whole URI, with the secret state.json does not keep.
        let shown = uri;
        let uri = crate::credentials::video_uri(self.storage, &id, &shown).await?;
        // Guarded as the request was accepted, whatever this replica's mode.
        let (http, allow_internal) = self.http.for_reach(reach);
        let fetched = match (prefetched, Source::parse(&uri, allow_internal)) {
            (Some(f), Ok(source)) => Ok((f, source)),
            (None, Ok(source)) => input::fetch(&source, self.storage, http, self.input_limits)
                .await
                .map(|f| (f, source)),
            (_, Err(e)) => Err(e),
        };
        let (fetched, source) = match fetched {
            Ok(ok) => ok,
            Err(e) if e.retryable => return Err(DriveError::Passing(e.message)),
            Err(e) => {
                let failed = Ending::Failed {
                    code: FailureCode::parse(e.code),
                    detail: e.message,
                };
                record::end(t, failed).await?;
                return Ok(false);
            }
        };
        let key = RequestKeys::new(&id).input(&source.extension());
        let stored = self
            .storage
            .put_file(&key, fetched.path(), "application/octet-stream")
            .await?;
        t.lock().await.state.input = Some(InputObject {
            key: stored.key,
            bytes: stored.bytes,
            sha256: stored.sha256,
        });
        commit_shared(t).await?;
        // Copied in: the input's secret is needed no more.
        crate::credentials::forget_video_uri(self.storage, &id, &shown).await?;
        Ok(true)
    }
}
