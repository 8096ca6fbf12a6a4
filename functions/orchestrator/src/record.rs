//! The durable record of one request: `state.json`, who may write it, and how a request
//! ends.
//!
//! Durability rests on three rules:
//! - Every write is conditional on the ETag this driver last read or wrote (`If-None-Match:
//!   *` on create, `If-Match` after). A driver whose write loses has been superseded (a
//!   cancel, or another replica that took an expired lease) and stops at once
//!   ([`DriveError::Superseded`]); whatever it was waiting for is dropped.
//! - Every write renews the driver's lease, and a [`heartbeat`] renews it while a stage
//!   call is long, so a lease only expires when its driver is gone.
//! - A request ends in one place, [`end`]: the terminal state is committed, the tasks still
//!   in flight are recorded as abandoned, and the request leaves the active index
//!   (`active/{id}`, which the resumer walks) once it owes nothing more: at once, or after
//!   its callback is delivered ([`crate::callback`]). Only [`enter_index`] and
//!   [`leave_index`] touch the index.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fave_common::contract::FailureCode;
use fave_common::ids::RequestId;
use fave_common::keys::{self, RequestKeys};
use fave_common::state::{
    DriverRecord, IllegalTransition, Lease, RequestEvent, RequestState, SCHEMA_VERSION,
};
use fave_common::storage::{Storage, StorageError};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

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
    /// A state-machine edge that does not exist: a bug, as resuming would repeat it.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// Any other bug of fave's (a task the request lacks, a result that does not read as
    /// its contract's output), with where it was found.
    #[error("a bug while {context}: {detail}")]
    Bug {
        context: &'static str,
        detail: String,
    },
    /// A trouble that passes (the input's server failing for now): the driver stops, and
    /// the request is resumed later.
    #[error("{0}")]
    Passing(String),
}

impl From<StorageError> for DriveError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::PreconditionFailed { .. } => DriveError::Superseded,
            other => DriveError::Storage(other),
        }
    }
}

/// How much of `state.json` this process has written: each write rewrites the whole
/// record, so bytes per write grow with the request (`GET /metrics` reports both).
pub static WRITTEN: Written = Written {
    writes: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
};

/// Writes of `state.json`, and their bytes.
pub struct Written {
    pub writes: AtomicU64,
    pub bytes: AtomicU64,
}

impl Written {
    fn count(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
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
        WRITTEN.count(serde_json::to_vec(&state).map_or(0, |b| b.len()));
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

    /// Who writes this record.
    pub fn holder(&self) -> &LeaseHolder {
        &self.holder
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
        let bytes = body.len();
        self.etag = self
            .storage
            .replace_json_bytes(&self.key, body, &self.etag)
            .await?;
        WRITTEN.count(bytes);
        self.landed = self.asked;
        Ok(())
    }

    /// The next revision of the state, serialised: revision and time stamped, the lease
    /// renewed if `hold`.
    fn next_revision(&mut self, hold: bool) -> Result<Vec<u8>, DriveError> {
        let now = Utc::now();
        // A state read in an earlier schema is written in this one.
        self.state.schema_version = SCHEMA_VERSION;
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
            let bytes = body.len();
            let result = storage.replace_json_bytes(&key, body, &etag).await;
            if result.is_ok() {
                WRITTEN.count(bytes);
            }
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
                return Err(bug(
                    "writing state.json",
                    format!("the write task died: {join}"),
                ));
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

/// What a step of the driver ends in: the driver's own trouble is the `Err`.
pub type Step = Result<(), DriveError>;

/// How a request ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every stage succeeded, and `final.json` is written at `result_key`.
    Completed {
        result_key: String,
    },
    Failed {
        code: FailureCode,
        detail: String,
    },
    Cancelled,
}

/// Ends the request: the tasks still in flight are recorded as failed (`abandoned`), so no
/// task of an ended request claims to be running, and stage answers that come later change
/// nothing; the terminal state is committed; and the request leaves the active index unless
/// its callback is still to be delivered (then delivering it does). A request that has
/// ended already stays as it ended (terminal states absorb). Every way a request ends comes
/// through here.
pub async fn end(shared: &Shared, ending: Ending) -> Step {
    {
        let state = &mut shared.lock().await.state;
        let now = Utc::now();
        let event = match ending {
            Ending::Completed { result_key } => {
                state.result_key = Some(result_key);
                RequestEvent::Complete
            }
            Ending::Failed { code, detail } => {
                state.abandon_in_flight(&format!("the request failed ({})", code.as_str()), now)?;
                RequestEvent::Fail {
                    code: code.into(),
                    detail,
                }
            }
            Ending::Cancelled => {
                state.abandon_in_flight("the request was cancelled", now)?;
                RequestEvent::Cancel
            }
        };
        state.apply(event, now)?;
    }
    commit_shared(shared).await?;
    let (storage, id, owing) = {
        let t = shared.lock().await;
        let owing = t.state.callback_pending();
        (t.storage.clone(), t.state.request_id.clone(), owing)
    };
    if !owing {
        leave_index(&storage, &id).await?;
    }
    Ok(())
}

/// Puts a request about to be created into the active index. Written before its
/// `state.json`, so a crash between the two leaves a marker the resumer clears
/// ([`crate::runtime`]), never a request the resumer cannot find.
pub async fn enter_index(storage: &Storage, id: &RequestId) -> Result<(), StorageError> {
    storage
        .put_json(&keys::active_marker(id), &serde_json::json!({}))
        .await
        .map(drop)
}

/// A request that owes nothing more (ended, its callback delivered or given up, or never
/// created): out of the active index, and every secret it kept gone.
pub async fn leave_index(storage: &Storage, id: &RequestId) -> Result<(), StorageError> {
    crate::credentials::forget(storage, id).await?;
    storage.delete(&keys::active_marker(id)).await
}

/// Renews the lease every third of its time to live until `stop`; a lost write means the
/// request was taken over (or cancelled), which stops the driver too.
pub async fn heartbeat(shared: Shared, ttl: Duration, stop: CancellationToken) -> Step {
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

/// A bug of fave's, found while doing `context`.
pub(crate) fn bug(context: &'static str, detail: String) -> DriveError {
    DriveError::Bug { context, detail }
}
