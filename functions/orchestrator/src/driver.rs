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
use fave_common::contract::library::VideoIndex;
use fave_common::ids::{ClipId, RequestId, VideoId};
use fave_common::keys::{RequestKeys, VideoKeys};
use fave_common::state::{
    AnalysisUse, ClipState, InputObject, RequestEvent, RequestState, RequestStatus, StageState,
};
use fave_common::storage::Storage;
use futures::{FutureExt, StreamExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::attempt::Invoker;
use crate::embed::reader;
use crate::input::{self, Fetched, Limits, Source};
use crate::library::{Library, Settled};
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
    /// The video library, when requests go through it (`FAVE_LIBRARY`, the video table).
    pub library: Option<&'a Library>,
    /// The language model queries are read with (`embed.rs`).
    pub model: &'a crate::embed::Model,
}

/// Where a request's analysis comes from.
enum Analysis {
    /// Made by this request's stages and published when it completes.
    Make(VideoId),
    /// Published already: no stage runs.
    Reuse(Box<VideoIndex>),
    /// Made by this request, outside the library (no library, or a fresh analysis).
    Own,
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
        let analysis = self.settle_analysis(t).await?;
        if let Analysis::Reuse(index) = &analysis {
            let state = t.lock().await.state.clone();
            let model = self.model.get().await;
            let result =
                crate::result::from_index(&state, index, started.elapsed(), reader(&model));
            let result_key = RequestKeys::new(&state.request_id).result();
            self.storage.put_json(&result_key, &result).await?;
            return record::end(t, Ending::Completed { result_key }).await;
        }
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
        let model = self.model.get().await;
        let (result, meanings) =
            crate::result::build(self.storage, &state, started.elapsed(), reader(&model)).await?;
        let result_key = RequestKeys::new(&state.request_id).result();
        self.storage.put_json(&result_key, &result).await?;
        if let (Analysis::Make(video), Some(library)) = (&analysis, self.library) {
            // Published before the request ends: a completed request's analysis is in
            // the library (a crash in between publishes it when the request resumes).
            library
                .publish(self.storage, video, &result, meanings)
                .await?;
        }
        record::end(t, Ending::Completed { result_key }).await
    }

    /// Settles where the analysis comes from (`library.rs`): notes the video's use (again,
    /// for a request whose input an earlier version stored without noting it first), then
    /// waits while another request makes the same analysis, and returns once it is
    /// published or this request holds the claim to make it. Recorded in state.json with
    /// the next write.
    async fn settle_analysis(&self, t: &Shared) -> Result<Analysis, DriveError> {
        let Some(library) = self.library else {
            return Ok(Analysis::Own);
        };
        let (id, input, uri, fresh) = {
            let t = t.lock().await;
            let s = &t.state;
            (
                s.request_id.clone(),
                s.input.clone(),
                s.submission.video_uri.clone(),
                s.submission.fresh,
            )
        };
        let input =
            input.ok_or_else(|| bug("settling the analysis", "no input copied in".into()))?;
        let video: VideoId = input
            .sha256
            .parse()
            .map_err(|e| bug("settling the analysis", format!("the input's hash: {e}")))?;
        library
            .saw(self.storage, &video, input.bytes, &id, &uri)
            .await?;
        let (analysis, reused) = if fresh {
            (Analysis::Own, false)
        } else {
            match library.settle(self.storage, &video, &id).await? {
                Settled::Ready(index) => (Analysis::Reuse(index), true),
                Settled::Make => (Analysis::Make(video.clone()), false),
            }
        };
        let mut g = t.lock().await;
        g.state.analysis = Some(AnalysisUse {
            video,
            analysis: library.analysis().clone(),
            reused,
        });
        if reused {
            // No stage runs for it: its record holds none (the analysis's request holds
            // them), rather than tasks pending forever in a completed request.
            g.state.stages.clear();
        }
        Ok(analysis)
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

    /// Stores the fetched video: with the library, once per content
    /// (`videos/{sha256}/input/`, not uploaded again when there), else in the request's
    /// folder.
    async fn store_input(
        &self,
        id: &RequestId,
        path: &std::path::Path,
        source: &Source,
        uri: &str,
    ) -> Result<InputObject, DriveError> {
        let (bytes, sha256) = fave_common::storage::sha256_file(path).await?;
        let key = match self.library {
            Some(library) => {
                let video: VideoId = sha256
                    .parse()
                    .map_err(|e| bug("storing the input", format!("its hash: {e}")))?;
                // Named in the video's record before anything of it is stored, so that a
                // delete of the video either sees this request or is waited out.
                library.enter(self.storage, &video, bytes, id, uri).await?;
                let key = VideoKeys::new(&video).input(&source.extension());
                if self.storage.exists(&key).await? {
                    return Ok(InputObject { key, bytes, sha256 });
                }
                key
            }
            None => RequestKeys::new(id).input(&source.extension()),
        };
        let stored = self
            .storage
            .put_hashed_file(&key, path, bytes, sha256, "application/octet-stream")
            .await?;
        Ok(InputObject {
            key: stored.key,
            bytes: stored.bytes,
            sha256: stored.sha256,
        })
    }

    /// Copies the video into the store (`store_input`) unless it is there already, using the
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
        let input = self
            .store_input(&id, fetched.path(), &source, &shown)
            .await?;
        t.lock().await.state.input = Some(input);
        commit_shared(t).await?;
        // Copied in: the input's secret is needed no more.
        crate::credentials::forget_video_uri(self.storage, &id, &shown).await?;
        Ok(true)
    }
}
