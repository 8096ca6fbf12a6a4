//! Driving one request through the pipeline, recording every transition in `state.json`.
//!
//! Durability rests on three rules:
//! - Every write is conditional on the ETag this driver last read or wrote (`If-None-Match:
//!   *` on create, `If-Match` after). A driver whose write loses has been superseded (a
//!   cancel, or another replica that took an expired lease) and stops at once
//!   ([`DriveError::Superseded`]); whatever it was waiting for is dropped.
//! - Every write renews the driver's lease, and a heartbeat renews it while a stage call is
//!   long, so a lease only expires when its driver is gone.
//! - Finished steps are never redone: the input is copied in once, stages that succeeded are
//!   skipped, and a stage that already wrote its manifest returns it (the stage harness).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fave_common::contract::FailureCode;
use fave_common::error::ApiError;
use fave_common::gateway::{GatewayClient, InvokeError};
use fave_common::ids::{ClipId, RequestId, StageName};
use fave_common::keys::RequestKeys;
use fave_common::retry::RetryPolicy;
use fave_common::stage::{ListedClip, Manifest, StageCall};
use fave_common::state::{
    ClipState, DriverRecord, IllegalTransition, InputObject, Lease, RequestEvent, RequestState,
    RequestStatus, StageEvent, StageState, StageStatus,
};
use fave_common::storage::{Storage, StorageError};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::input::{self, Fetched, Limits, Source};
use crate::metrics::{Metrics, Outcome};
use crate::pipeline::{self, FanOut, InputContext, Params, StageSpec};

/// Why driving stopped without reaching a terminal state.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// Someone else wrote `state.json` since we read it: they own the request now.
    #[error("state.json was changed by another writer; this driver stops")]
    Superseded,
    /// The process is shutting down; the lease was released for another replica.
    #[error("the orchestrator is shutting down; the request will be resumed")]
    Stopped,
    #[error(transparent)]
    Storage(StorageError),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
}

impl From<StorageError> for DriveError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::PreconditionFailed { .. } => DriveError::Superseded,
            other => DriveError::Storage(other),
        }
    }
}

/// Who this driver is, for leases.
#[derive(Debug, Clone)]
pub struct LeaseHolder {
    pub owner: String,
    pub ttl: Duration,
}

/// A request's state, the ETag of the copy in the store, and who writes it.
pub struct Tracked {
    storage: Storage,
    key: String,
    etag: String,
    holder: LeaseHolder,
    pub state: RequestState,
    /// Group commit ([`commit_shared`]): changes asked to be made durable so far, how many
    /// of them the last landed write covered, and whether a write is on its way.
    asked: u64,
    landed: u64,
    writing: bool,
    written: Arc<Notify>,
}

/// A request's state while its driver runs: shared by the clips fanned out and the heartbeat.
pub type Shared = Arc<Mutex<Tracked>>;

impl Tracked {
    /// Writes a new request's first `state.json`, holding its lease; fails if one exists.
    pub async fn create(
        storage: Storage,
        mut state: RequestState,
        holder: LeaseHolder,
    ) -> Result<Self, DriveError> {
        let key = RequestKeys::new(&state.request_id).state();
        let now = Utc::now();
        state.lease = Some(lease(&holder, now));
        state.drivers.push(DriverRecord {
            owner: holder.owner.clone(),
            since: now,
        });
        let etag = storage.create_json(&key, &state).await?;
        Ok(Self::new(storage, key, etag, holder, state))
    }

    fn new(
        storage: Storage,
        key: String,
        etag: String,
        holder: LeaseHolder,
        state: RequestState,
    ) -> Self {
        Self {
            storage,
            key,
            etag,
            holder,
            state,
            asked: 0,
            landed: 0,
            writing: false,
            written: Arc::new(Notify::new()),
        }
    }

    /// Reads a request's state; `None` if there is none.
    pub async fn load(
        storage: Storage,
        id: &RequestId,
        holder: LeaseHolder,
    ) -> Result<Option<Self>, DriveError> {
        let key = RequestKeys::new(id).state();
        Ok(storage
            .get_json::<RequestState>(&key)
            .await?
            .map(|(state, etag)| Self::new(storage, key, etag, holder, state)))
    }

    /// Whether this holder may take the lease now: there is none, it expired, or it is this
    /// holder's own (a process restarted under the same name holds what it held before).
    pub fn lease_is_free(&self, now: DateTime<Utc>) -> bool {
        match &self.state.lease {
            None => true,
            Some(l) => l.expires_at <= now || l.owner == self.holder.owner,
        }
    }

    /// Takes the lease (which must be free) and records the new tenure.
    pub async fn take_lease(&mut self) -> Result<(), DriveError> {
        let record = DriverRecord {
            owner: self.holder.owner.clone(),
            since: Utc::now(),
        };
        self.state.drivers.push(record);
        self.commit().await
    }

    /// Writes the current state over the copy we last saw, renewing our lease.
    pub async fn commit(&mut self) -> Result<(), DriveError> {
        self.write(true).await
    }

    /// Writes the current state without a lease, so another replica can take it at once.
    pub async fn release(&mut self) -> Result<(), DriveError> {
        self.write(false).await
    }

    async fn write(&mut self, hold: bool) -> Result<(), DriveError> {
        debug_assert!(
            !self.writing,
            "a direct write while a group write is on its way"
        );
        let body = self.next_revision(hold)?;
        self.etag = self
            .storage
            .replace_json_bytes(&self.key, body, &self.etag)
            .await?;
        self.landed = self.asked;
        Ok(())
    }

    /// The next revision of the state, serialised: revision and time stamped, the lease
    /// renewed if `hold`.
    fn next_revision(&mut self, hold: bool) -> Result<Vec<u8>, DriveError> {
        let now = Utc::now();
        self.state.revision += 1;
        self.state.updated_at = now;
        self.state.lease =
            (hold && !self.state.status.is_terminal()).then(|| lease(&self.holder, now));
        serde_json::to_vec(&self.state).map_err(|source| {
            DriveError::Storage(StorageError::Json {
                key: self.key.clone(),
                source,
            })
        })
    }
}

/// Makes the caller's change to a shared state durable, in one write with every change made
/// meanwhile (group commit). The first caller to find no write on its way writes the state
/// as it is then, for itself and everyone who asked before; the others wait for that write,
/// and write again only if it did not cover them. The lock is not held while the store
/// answers, so the other clips go on meanwhile, and the write itself runs as a task of its
/// own: a caller that is dropped (a fan-out ending early) cannot leave it half done with the
/// ETag unknown.
pub async fn commit_shared(shared: &Shared) -> Step {
    let mine = {
        let mut t = shared.lock().await;
        t.asked += 1;
        t.asked
    };
    loop {
        let mut t = shared.lock().await;
        if t.landed >= mine {
            return Ok(());
        }
        if t.writing {
            let written = t.written.clone();
            let wait = written.notified();
            tokio::pin!(wait);
            // Registered before the lock is let go, so the write's end cannot be missed.
            wait.as_mut().enable();
            drop(t);
            wait.await;
            continue;
        }
        t.writing = true;
        let covers = t.asked;
        let body = match t.next_revision(true) {
            Ok(body) => body,
            Err(e) => {
                t.writing = false;
                return Err(e);
            }
        };
        let (storage, key, etag) = (t.storage.clone(), t.key.clone(), t.etag.clone());
        drop(t);
        let shared = shared.clone();
        let write = tokio::spawn(async move {
            let result = storage.replace_json_bytes(&key, body, &etag).await;
            let mut t = shared.lock().await;
            t.writing = false;
            t.written.notify_waiters();
            let etag = result?;
            t.etag = etag;
            t.landed = covers;
            Ok::<_, DriveError>(())
        });
        match write.await {
            Ok(result) => result?,
            Err(join) => {
                return Err(DriveError::Illegal(illegal(
                    "writing state.json",
                    format!("the write task died: {join}"),
                )));
            }
        }
    }
}

fn lease(holder: &LeaseHolder, now: DateTime<Utc>) -> Lease {
    Lease {
        owner: holder.owner.clone(),
        expires_at: now
            + chrono::Duration::from_std(holder.ttl).unwrap_or(chrono::Duration::seconds(30)),
    }
}

/// What the driver needs from the orchestrator.
pub struct Driver<'a> {
    pub storage: &'a Storage,
    pub gateway: &'a GatewayClient,
    /// The clients for users' URLs; each request gets the one its reach allows.
    pub http: &'a crate::guard::UserClients,
    pub stages: &'a [StageSpec],
    pub invocations: &'a Semaphore,
    /// At most this many clips move through the per-clip chain at once.
    pub fan_out: usize,
    pub params: &'a Params,
    pub metrics: &'a Metrics,
    /// Caps every stage's own timeout.
    pub max_stage_timeout: Duration,
    /// How long a stage call is retried while the platform fails it.
    pub platform_retry_window: Duration,
    pub input_limits: Limits,
}

/// What a step of the driver ends in: the driver's own trouble is the outer `Result`.
type Step = Result<(), DriveError>;

impl Driver<'_> {
    /// Drives a request to a terminal state, or until `stop` fires (superseded, shutdown).
    /// Runs a heartbeat that renews the lease while the driver waits.
    pub async fn run(
        &self,
        tracked: Tracked,
        prefetched: Option<Fetched>,
        stop: CancellationToken,
    ) -> (RequestState, Step) {
        let ttl = tracked.holder.ttl;
        let t = Arc::new(Mutex::new(tracked));
        let heartbeat = tokio::spawn(heartbeat(t.clone(), ttl, stop.clone()));
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
        let (once, per_clip): (Vec<&StageSpec>, Vec<&StageSpec>) =
            self.stages.iter().partition(|s| s.fan_out == FanOut::Once);
        if let Err((task, failure)) = self.run_stages(t, &once, &per_clip).await? {
            return self.fail(t, &task, failure).await;
        }
        // final.json reads every clip's detections: not under the lock, so the heartbeat
        // keeps the lease meanwhile.
        let state = t.lock().await.state.clone();
        let result = crate::result::build(self.storage, &state, started.elapsed()).await?;
        let result_key = RequestKeys::new(&state.request_id).result();
        self.storage.put_json(&result_key, &result).await?;
        {
            let mut g = t.lock().await;
            g.state.result_key = Some(result_key);
            g.state.apply(RequestEvent::Complete, Utc::now())?;
        }
        commit_shared(t).await?;
        self.forget(&t.lock().await.state).await
    }

    /// Fails the request for good: `task` ran out of attempts or failed for good.
    /// The tasks still in flight beside it are not waited for: they are recorded as
    /// failed too (`abandoned`), so no task of an ended request claims to be running.
    async fn fail(&self, t: &Shared, task: &Task, failure: InvokeError) -> Step {
        let detail = format!("{task}: {failure}");
        {
            let now = Utc::now();
            let state = &mut t.lock().await.state;
            state.abandon_in_flight(&format!("the request failed at {task}"), now)?;
            state.apply(
                RequestEvent::Fail {
                    code: failure.code(),
                    detail,
                },
                now,
            )?;
        }
        commit_shared(t).await?;
        self.forget(&t.lock().await.state).await
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
        let listed = pipeline::data(&t.state, &lister.name)
            .map(|d| d["clips"].clone())
            .map_err(|e| illegal("making clips", e))?;
        let cuts: Vec<ListedClip> = serde_json::from_value(listed)
            .map_err(|e| illegal("making clips", format!("a bad clip list: {e}")))?;
        let mut clips = Vec::with_capacity(cuts.len());
        for cut in cuts {
            let tasks = per_clip
                .iter()
                .map(|spec| {
                    Ok(StageState::new(
                        Task::request_wide(spec)?.name,
                        spec.function.as_str(),
                    ))
                })
                .collect::<Result<Vec<_>, IllegalTransition>>()?;
            clips.push(ClipState {
                clip: cut.clip,
                start_s: cut.start_s,
                end_s: cut.end_s,
                key: cut.key,
                tasks,
            });
        }
        t.state.clips = clips;
        drop(t);
        commit_shared(shared).await
    }

    /// Runs the request-wide stages as a graph: each starts as soon as the stages it comes
    /// `after` are done, so stages that do not read each other run side by side. The clips
    /// start as soon as the stage that lists them is done, beside the request-wide stages
    /// still running. Stops at the first task that fails for good, and returns it.
    async fn run_stages(
        &self,
        t: &Shared,
        once: &[&StageSpec],
        per_clip: &[&StageSpec],
    ) -> Result<Result<(), (Task, InvokeError)>, DriveError> {
        let tasks = once
            .iter()
            .map(|spec| Task::request_wide(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let lister = once.iter().position(|s| s.lists_clips);
        let mut launched = vec![false; once.len()];
        let mut clips_launched = per_clip.is_empty();
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            {
                let state = &t.lock().await.state;
                for i in ready(once, &tasks, &mut launched, state) {
                    let (spec, task) = (once[i], &tasks[i]);
                    running.push(
                        async move {
                            Ok(match self.run_stage(t, spec, task).await? {
                                Ok(()) => Ok(()),
                                Err(failure) => Err((task.clone(), failure)),
                            })
                        }
                        .boxed(),
                    );
                }
                if let Some(i) =
                    lister.filter(|&i| !clips_launched && task_succeeded(state, &tasks[i]))
                {
                    clips_launched = true;
                    let source = once[i];
                    running.push(
                        async move {
                            self.make_clips(t, source, per_clip).await?;
                            self.run_clips(t, per_clip).await
                        }
                        .boxed(),
                    );
                }
            }
            match running.next().await {
                Some(ended) => {
                    if let Err(failed) = ended? {
                        return Ok(Err(failed));
                    }
                }
                None => break,
            }
        }
        if let Some(i) = launched.iter().position(|l| !l) {
            return Err(DriveError::Illegal(illegal(
                "running the request",
                format!("{} waits for a stage that never ran", tasks[i]),
            )));
        }
        if !clips_launched {
            return Err(DriveError::Illegal(illegal(
                "running the request",
                "no stage listed the clips".into(),
            )));
        }
        Ok(Ok(()))
    }

    /// Runs every clip's per-clip tasks, `fan_out` clips at a time. Within a clip each task
    /// starts as soon as the tasks it comes `after` are done, so tasks that do not read each
    /// other run side by side. Stops at the first task that fails for good, and returns it.
    async fn run_clips(
        &self,
        t: &Shared,
        chain: &[&StageSpec],
    ) -> Result<Result<(), (Task, InvokeError)>, DriveError> {
        let clips: Vec<ClipId> = t
            .lock()
            .await
            .state
            .clips
            .iter()
            .map(|c| c.clip.clone())
            .collect();
        let run_chain = |clip: ClipId| async move {
            let tasks = chain
                .iter()
                .map(|spec| Task::for_clip(spec, &clip))
                .collect::<Result<Vec<_>, _>>()?;
            let mut launched = vec![false; chain.len()];
            let mut running = futures::stream::FuturesUnordered::new();
            loop {
                {
                    let state = &t.lock().await.state;
                    for i in ready(chain, &tasks, &mut launched, state) {
                        let (spec, task) = (chain[i], &tasks[i]);
                        running.push(async move { (task, self.run_stage(t, spec, task).await) });
                    }
                }
                match running.next().await {
                    Some((task, ended)) => {
                        if let Err(failure) = ended? {
                            return Ok(Err((task.clone(), failure)));
                        }
                    }
                    None => break,
                }
            }
            if let Some(i) = launched.iter().position(|l| !l) {
                return Err(DriveError::Illegal(illegal(
                    "running a clip",
                    format!("{} waits for a stage that never ran", tasks[i]),
                )));
            }
            Ok::<_, DriveError>(Ok(()))
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

    /// Removes a terminal request from the active index, unless its callback is still to
    /// be delivered (then the marker stays until it is; see `callback`).
    async fn forget(&self, state: &RequestState) -> Step {
        if !state.callback_pending() {
            crate::credentials::retire(self.storage, &state.request_id).await?;
        }
        Ok(())
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
            Err(e) if e.retryable => return Err(DriveError::Storage(storage_trouble(e))),
            Err(e) => {
                let failure = RequestEvent::Fail {
                    code: e.code.into(),
                    detail: e.message,
                };
                t.lock().await.state.apply(failure, Utc::now())?;
                commit_shared(t).await?;
                self.forget(&t.lock().await.state).await?;
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

    /// Calls one stage until it succeeds, fails for good, or runs out of attempts. The outer
    /// `Result` is the driver's own trouble; the inner one the stage's final failure.
    #[tracing::instrument(
        name = "task",
        skip_all,
        fields(stage = spec.name.as_str(), clip = task.clip.as_ref().map(ClipId::as_str))
    )]
    async fn run_stage(
        &self,
        shared: &Shared,
        spec: &StageSpec,
        task: &Task,
    ) -> Result<Result<(), InvokeError>, DriveError> {
        let t = shared;
        let call =
            {
                let t = t.lock().await;
                let clip =
                    match &task.clip {
                        Some(id) => Some(t.state.clips.iter().find(|c| &c.clip == id).ok_or_else(
                            || illegal("building a stage input", format!("no {id}")),
                        )?),
                        None => None,
                    };
                let cx = InputContext {
                    state: &t.state,
                    clip,
                    params: self.params,
                };
                let input = (spec.input)(&cx)
                    .map_err(|e| illegal("building a stage input", format!("{task}: {e}")))?;
                StageCall {
                    request_id: t.state.request_id.clone(),
                    stage: task.name.clone(),
                    clip: task.clip.clone(),
                    idempotency_key: idempotency_key(
                        t.state.request_id.as_str(),
                        &spec.name,
                        task.clip.as_ref().map(ClipId::as_str),
                        &input,
                    ),
                    input,
                }
            };
        let timeout = spec.timeout.min(self.max_stage_timeout);
        // Two budgets: the stage's count of attempts for its own retryable errors and its
        // timeouts, and a time window for the platform's failures (a cold start, a gateway
        // restart), which starts again after any answer from the function.
        let mut delays = spec.retry.delays();
        let mut platform_delays = PLATFORM_RETRY.delays();
        let mut platform_since: Option<Instant> = None;
        loop {
            {
                let mut t = t.lock().await;
                let stage = task_mut(&mut t, task)?;
                if stage.status == StageStatus::Running {
                    // A driver that is gone left this attempt open: close it as lost, then
                    // try again. The stage's manifest, if it got that far, makes it quick.
                    let detail =
                        "the driver of this attempt stopped before its answer was recorded".into();
                    stage.apply(
                        StageEvent::Retry {
                            code: FailureCode::DriverLost.into(),
                            detail,
                        },
                        Utc::now(),
                    )?;
                }
                stage.apply(StageEvent::Start, Utc::now())?;
                let owner = t.holder.owner.clone();
                if let Some(attempt) = task_mut(&mut t, task)?.current_attempt() {
                    attempt.driver = Some(owner);
                }
            }
            commit_shared(shared).await?;
            let (outcome, took) = {
                let _permit = self.invocations.acquire().await;
                let clock = Instant::now();
                let outcome = self.gateway.invoke(&spec.function, &call, timeout).await;
                (outcome, clock.elapsed())
            };
            let mut t = t.lock().await;
            let now = Utc::now();
            let profile = t.state.submission.profile;
            let stage = task_mut(&mut t, task)?;
            let failure = match outcome.map(|inv| {
                let manifest = serde_json::from_slice::<Manifest<Value>>(&inv.body);
                (inv, manifest)
            }) {
                Ok((invocation, Ok(manifest)))
                    if manifest.data.to_string().len() > MAX_STAGE_DATA_BYTES =>
                {
                    InvokeError::Status {
                        function: spec.function.clone(),
                        status: invocation.status,
                        call_id: invocation.call_id,
                        code: FailureCode::StageAnswerTooLarge.into(),
                        message: format!(
                            "the stage's result is over the {MAX_STAGE_DATA_BYTES} bytes \
                             state.json holds for one stage; large results go by key"
                        ),
                        openfaas_internal: false,
                        own_retryable: Some(false),
                    }
                }
                Ok((invocation, Ok(manifest))) => {
                    tracing::info!(
                        call_id = invocation.call_id.as_deref(),
                        call_ms = invocation.elapsed.as_millis() as u64,
                        work_ms = manifest.work_ms,
                        "stage call succeeded"
                    );
                    if let Some(a) = stage.current_attempt() {
                        a.call_id = invocation.call_id.clone();
                        a.http_status = Some(invocation.status);
                    }
                    stage
                        .metrics
                        .insert("work_ms".into(), json!(manifest.work_ms));
                    stage.metrics.insert(
                        "call_ms".into(),
                        json!(invocation.elapsed.as_millis() as u64),
                    );
                    if let Some(kb) = manifest.peak_rss_kb {
                        stage.metrics.insert("peak_rss_kb".into(), json!(kb));
                    }
                    // The profile the call ran under, beside its times, for comparing them.
                    stage.metrics.insert("profile".into(), json!(profile));
                    // The function's own word on a cold start, the same under any gateway.
                    if let Some(cold) = invocation.cold_start_ms {
                        stage.metrics.insert("cold_start_ms".into(), json!(cold));
                    }
                    stage.metrics.insert("data".into(), manifest.data);
                    self.metrics.call(
                        &spec.name,
                        Outcome::Succeeded,
                        took,
                        invocation.cold_start_ms.is_some(),
                    );
                    stage.apply(
                        StageEvent::Succeed {
                            outputs: manifest.outputs,
                        },
                        now,
                    )?;
                    drop(t);
                    commit_shared(shared).await?;
                    return Ok(Ok(()));
                }
                Ok((invocation, Err(e))) => InvokeError::BadAnswer {
                    function: spec.function.clone(),
                    status: invocation.status,
                    call_id: invocation.call_id,
                    message: format!("not a manifest: {e}"),
                },
                Err(failure) => failure,
            };
            if let Some(a) = stage.current_attempt() {
                a.call_id = failure.call_id().map(str::to_owned);
                a.http_status = failure.http_status();
            }
            let (code, detail) = (failure.code(), failure.to_string());
            let retry_in = if failure.is_platform() {
                let since = *platform_since.get_or_insert_with(Instant::now);
                (since.elapsed() < self.platform_retry_window)
                    .then(|| platform_delays.next())
                    .flatten()
            } else {
                if platform_since.take().is_some() {
                    platform_delays = PLATFORM_RETRY.delays();
                }
                failure.is_transient().then(|| delays.next()).flatten()
            };
            match retry_in {
                Some(delay) => {
                    self.metrics.call(&spec.name, Outcome::Retried, took, false);
                    tracing::warn!(call_id = failure.call_id(), error = %failure, ?delay, "stage attempt failed; retrying");
                    stage.apply(StageEvent::Retry { code, detail }, now)?;
                    stage.next_attempt_at =
                        Some(now + chrono::Duration::from_std(delay).unwrap_or_default());
                    drop(t);
                    commit_shared(shared).await?;
                    let _waiting = self.metrics.waiting_to_retry();
                    tokio::time::sleep(delay).await;
                }
                None => {
                    self.metrics.call(&spec.name, Outcome::Failed, took, false);
                    tracing::warn!(call_id = failure.call_id(), error = %failure, "stage failed");
                    stage.apply(StageEvent::Fail { code, detail }, now)?;
                    drop(t);
                    commit_shared(shared).await?;
                    return Ok(Err(failure));
                }
            }
        }
    }
}

/// The most of a stage's own result that `state.json` holds; larger results are passed by
/// key (an output object), so the record every transition rewrites stays small.
const MAX_STAGE_DATA_BYTES: usize = 1024 * 1024;

/// The backoff between retries of what the platform failed: from 200 ms, doubling, at most
/// 5 s apart, for as long as [`Driver::platform_retry_window`] allows.
const PLATFORM_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
    jitter: true,
};

/// Renews the lease every third of its time to live until `stop`; a lost write means the
/// request was taken over (or cancelled), which stops the driver too.
async fn heartbeat(shared: Shared, ttl: Duration, stop: CancellationToken) -> Step {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(ttl / 3) => {}
        }
        let id = {
            let t = shared.lock().await;
            if stop.is_cancelled() || t.state.status.is_terminal() {
                return Ok(());
            }
            t.state.request_id.clone()
        };
        match commit_shared(&shared).await {
            Ok(()) => {}
            Err(e @ DriveError::Superseded) => {
                tracing::warn!(request_id = %id, "lease lost; stopping");
                stop.cancel();
                return Err(e);
            }
            // A store that is briefly away: the SDK already retried; try again next beat.
            Err(e) => tracing::warn!(request_id = %id, error = %e, "lease renewal failed"),
        }
    }
}

fn illegal(from: &str, event: String) -> IllegalTransition {
    IllegalTransition {
        from: from.to_owned(),
        event,
    }
}

/// A retryable trouble fetching the input, as a storage error so the request is resumed.
fn storage_trouble(e: ApiError) -> StorageError {
    StorageError::Service {
        op: "fetch input",
        key: String::new(),
        status: Some(e.status.as_u16()),
        message: e.message,
        transient: true,
    }
}

/// One unit of work: a request-wide stage, or a stage of one clip.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: StageName,
    pub clip: Option<ClipId>,
}

impl Task {
    fn request_wide(spec: &StageSpec) -> Result<Self, IllegalTransition> {
        let name = spec
            .name
            .parse()
            .map_err(|e| illegal("pipeline", format!("{e}")))?;
        Ok(Self { name, clip: None })
    }

    fn for_clip(spec: &StageSpec, clip: &ClipId) -> Result<Self, IllegalTransition> {
        Ok(Self {
            clip: Some(clip.clone()),
            ..Self::request_wide(spec)?
        })
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

fn task_state<'a>(state: &'a RequestState, task: &Task) -> Option<&'a StageState> {
    match &task.clip {
        Some(id) => state.clips.iter().find(|c| &c.clip == id)?.task(&task.name),
        None => state.stage(&task.name),
    }
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
    let done = |name: &str| {
        tasks
            .iter()
            .any(|task| task.name.as_str() == name && task_succeeded(state, task))
    };
    let mut starting = Vec::new();
    for (i, (spec, task)) in specs.iter().zip(tasks).enumerate() {
        if launched[i] {
            continue;
        }
        if task_done(state, task) {
            launched[i] = true;
        } else if spec.after.iter().all(|name| done(name)) {
            launched[i] = true;
            starting.push(i);
        }
    }
    starting
}

/// Whether a task has ended (succeeded, skipped or failed): finished work is never redone.
fn task_done(state: &RequestState, task: &Task) -> bool {
    task_state(state, task).is_some_and(|s| s.status.is_terminal())
}

/// Whether a task ended so that what comes after it may run: succeeded, or skipped.
fn task_succeeded(state: &RequestState, task: &Task) -> bool {
    task_state(state, task)
        .is_some_and(|s| matches!(s.status, StageStatus::Succeeded | StageStatus::Skipped))
}

fn task_mut<'a>(t: &'a mut Tracked, task: &Task) -> Result<&'a mut StageState, IllegalTransition> {
    let status = t.state.status;
    let found = match &task.clip {
        Some(id) => t
            .state
            .clips
            .iter_mut()
            .find(|c| &c.clip == id)
            .and_then(|c| c.task_mut(&task.name)),
        None => t.state.stage_mut(&task.name),
    };
    found.ok_or_else(|| {
        illegal(
            &format!("{status:?}"),
            format!("a task {task} that the request does not have"),
        )
    })
}

/// The same (request, stage, clip, input) always gives the same key.
pub fn idempotency_key(request: &str, stage: &str, clip: Option<&str>, input: &Value) -> String {
    let mut h = Sha256::new();
    for part in [request, stage, clip.unwrap_or("")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // serde_json's Value keeps object keys sorted, so equal inputs serialise equally.
    h.update(input.to_string().as_bytes());
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_stage_is_not_something_to_build_on() {
        // The video pipeline's request-wide stages; stage-audio comes after stage-ffmpeg-0.
        let table = pipeline::video();
        let once: Vec<&StageSpec> = table.iter().filter(|s| s.fan_out == FanOut::Once).collect();
        let tasks: Vec<Task> = once
            .iter()
            .map(|s| Task::request_wide(s).unwrap())
            .collect();
        let stages = once
            .iter()
            .map(|s| StageState::new(s.name.parse().unwrap(), s.function.as_str()))
            .collect();
        let submission = fave_common::state::Submission {
            video_uri: "s3://b/uploads/v.mp4".into(),
            query: None,
            profile: Default::default(),
            callback_url: None,
            reach: None,
        };
        let mut state = RequestState::new("r1".parse().unwrap(), submission, stages, Utc::now());
        let index = |name: &str| once.iter().position(|s| s.name == name).unwrap();
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

    #[test]
    fn idempotency_keys_change_with_every_part() {
        let input = json!({"a": 1});
        let base = idempotency_key("r", "s", None, &input);
        assert_eq!(base, idempotency_key("r", "s", None, &json!({"a": 1})));
        assert_ne!(base, idempotency_key("r2", "s", None, &input));
        assert_ne!(base, idempotency_key("r", "s2", None, &input));
        assert_ne!(base, idempotency_key("r", "s", Some("clip-0000"), &input));
        assert_ne!(base, idempotency_key("r", "s", None, &json!({"a": 2})));
        // Parts are separated, so moving a character between them changes the key.
        assert_ne!(
            idempotency_key("ab", "c", None, &input),
            idempotency_key("a", "bc", None, &input)
        );
    }
}
