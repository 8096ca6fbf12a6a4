//! Which requests this process drives: a claim per request so nothing here drives one
//! twice, each driver on a task of its own (it outlives the HTTP call that started it), the
//! callback delivered after the driver, and the resumer, which walks the active index and
//! takes over every request whose lease is free (its driver is gone).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use fave_common::contract::FailureCode;
use fave_common::ids::RequestId;
use fave_common::keys;
use fave_common::state::{RequestState, RequestStatus};
use fave_common::storage::StorageError;
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::App;
use crate::callback;
use crate::input::Fetched;
use crate::record::{self, DriveError, Ending, Tracked};

impl App {
    /// Claims a request for this process: while the claim lives, nothing else here (the
    /// resumer, the resume route) starts driving it. `None` if it is claimed already.
    pub(crate) fn claim(self: &Arc<Self>, id: &RequestId) -> Option<Claim> {
        let fresh = self
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        fresh.then(|| Claim {
            app: self.clone(),
            id: id.clone(),
        })
    }

    /// Drives a claimed request in the background (it outlives the HTTP call that started
    /// it) and returns a handle to its end; the claim ends with the driver.
    pub(crate) fn spawn_driver(
        self: &Arc<Self>,
        claim: Claim,
        tracked: Tracked,
        prefetched: Option<Fetched>,
    ) -> tokio::task::JoinHandle<(RequestState, Result<(), DriveError>)> {
        let id = tracked.state.request_id.clone();
        let app = self.clone();
        // Every line the driver logs carries the request's id, so one request can be
        // followed through the orchestrator and (by the same field) every stage.
        let span = tracing::info_span!("request", request_id = %id);
        self.drivers.spawn(
            async move {
                let _claim = claim;
                app.metrics.drivers(1);
                let (mut state, result) = app
                    .driver()
                    .run(tracked, prefetched, app.shutdown.child_token())
                    .await;
                app.metrics.drivers(-1);
                if result.is_ok() {
                    app.metrics.ended(state.status);
                }
                match &result {
                    Err(DriveError::Stopped) => {
                        // Shutdown: hand the request over now rather than after the lease expires.
                        if let Ok(Some(mut t)) =
                            Tracked::load(app.storage.clone(), &id, app.holder()).await
                            && t.state
                                .lease
                                .as_ref()
                                .is_some_and(|l| l.owner == app.config.replica_id)
                            && t.release().await.is_ok()
                        {
                            state = t.state;
                            tracing::info!(request_id = %id, "lease released for another replica");
                        }
                    }
                    Err(bug @ (DriveError::Illegal(_) | DriveError::Bug { .. })) => {
                        // A bug, not a passing trouble: resuming would only repeat it, so the
                        // request ends FAILED and says why.
                        tracing::error!(request_id = %id, error = %bug, "driver bug");
                        if let Ok(Some(t)) =
                            Tracked::load(app.storage.clone(), &id, app.holder()).await
                        {
                            let t = Arc::new(Mutex::new(t));
                            let failed = Ending::Failed {
                                code: FailureCode::Internal,
                                detail: bug.to_string(),
                            };
                            if record::end(&t, failed).await.is_ok() {
                                state = t.lock().await.state.clone();
                            }
                        }
                    }
                    Err(e) => tracing::warn!(request_id = %id, error = %e, "driver stopped"),
                    Ok(()) => {
                        tracing::info!(request_id = %id, status = ?state.status, "request ended")
                    }
                }
                // The callback goes out after the driver has answered, so a slow receiver does
                // not hold up a caller waiting for the result; the claim goes with it.
                if state.callback_pending() {
                    app.spawn_callback(_claim, id);
                }
                (state, result)
            }
            .instrument(span),
        )
    }

    /// Delivers an ended request's callback in the background, holding its claim.
    fn spawn_callback(self: &Arc<Self>, claim: Claim, id: RequestId) {
        let app = self.clone();
        self.drivers.spawn(async move {
            let _claim = claim;
            if let Err(e) = callback::deliver(&app.storage, &app.http, &app.holder(), &id).await {
                tracing::warn!(request_id = %id, error = %e, "callback delivery stopped; it will be resumed");
            }
        });
    }

    /// Takes the lease of a non-terminal request whose lease is free, and drives it.
    /// Returns what happened, for the resume route and the log.
    pub async fn resume(self: &Arc<Self>, id: &RequestId) -> Result<Resumed, DriveError> {
        let Some(claim) = self.claim(id) else {
            return Ok(Resumed::AlreadyDrivenHere);
        };
        let Some(mut t) = Tracked::load(self.storage.clone(), id, self.holder()).await? else {
            return Ok(Resumed::NoSuchRequest);
        };
        if t.state.callback_pending() {
            self.spawn_callback(claim, id.clone());
            return Ok(Resumed::Resumed);
        }
        if t.state.status.is_terminal() {
            // Ended, owing nothing, but still in the index (its driver died between the
            // two writes): out of it now.
            record::leave_index(&self.storage, id).await?;
            return Ok(Resumed::Terminal(t.state.status));
        }
        if !t.lease_is_free(Utc::now()) {
            return Ok(Resumed::LeaseHeld(
                t.state.lease.map(|l| l.owner).unwrap_or_default(),
            ));
        }
        t.take_lease().await?;
        tracing::info!(request_id = %id, "resuming");
        self.spawn_driver(claim, t, None);
        Ok(Resumed::Resumed)
    }

    /// One pass over the active index: resume every request whose lease is free.
    pub async fn resume_pass(
        self: &Arc<Self>,
        orphans: &mut HashSet<String>,
    ) -> Result<usize, StorageError> {
        let mut resumed = 0;
        for key in self.storage.list_keys(keys::ACTIVE_PREFIX).await? {
            let Some(id) = key
                .strip_prefix(keys::ACTIVE_PREFIX)
                .and_then(|s| s.parse::<RequestId>().ok())
            else {
                continue;
            };
            match self.resume(&id).await {
                Ok(Resumed::Resumed) => resumed += 1,
                // A marker is written just before its state.json; one still alone a whole
                // pass later belongs to a submission that died in between.
                Ok(Resumed::NoSuchRequest) if !orphans.insert(key.clone()) => {
                    record::leave_index(&self.storage, &id).await?;
                    orphans.remove(&key);
                }
                Ok(_) | Err(DriveError::Superseded) => {}
                Err(e) => tracing::warn!(request_id = %id, error = %e, "could not resume"),
            }
        }
        Ok(resumed)
    }
}

/// A request this process drives (or is about to); dropping it lets the resumer see the
/// request again.
pub(crate) struct Claim {
    app: Arc<App>,
    id: RequestId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.app
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// What a resume attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    Resumed,
    AlreadyDrivenHere,
    NoSuchRequest,
    Terminal(RequestStatus),
    LeaseHeld(String),
}

/// Resumes requests at start and then every `resume_interval`, until shutdown.
pub fn spawn_resumer(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut orphans = HashSet::new();
        loop {
            match app.resume_pass(&mut orphans).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(resumed = n, "resumed requests"),
                Err(e) => tracing::warn!(error = %e, "resume pass failed"),
            }
            tokio::select! {
                () = app.shutdown.cancelled() => return,
                () = tokio::time::sleep(app.config.resume_interval) => {}
            }
        }
    })
}
