//! A stage call's claim on its work: one idempotency key is worked on at most once at a
//! time, across every replica of a function and every delivery of the call.
//!
//! The claim is `{output prefix}claim.json`, created with `If-None-Match: *` so one caller
//! wins, and renewed with `If-Match` while the work runs. It names its holder and when it
//! lapses. A caller that finds a live claim waits for the manifest instead of working; one
//! that finds a lapsed claim (its holder died, or was paused past it) takes it over with
//! `If-Match` on what it read, so of several only one does. A holder whose renewal loses has
//! been taken over: the harness stops its work, which then writes no manifest.
//!
//! The claim is removed when the work ends, after the manifest is written (or on failure,
//! so that a retry may try again); a claim left behind by a holder that died only lapses.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageError};

/// How long a claim lives without renewal; renewed every third of it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The claim's key under a call's output prefix.
pub fn key(prefix: &str) -> String {
    format!("{prefix}claim.json")
}

/// What `claim.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// Who works: this process and the call that claimed.
    pub holder: String,
    pub idempotency_key: String,
    pub expires_at: DateTime<Utc>,
}

/// A claim this caller holds: renew it while working, release it after.
#[derive(Debug, Clone)]
pub struct Claim {
    key: String,
    record: ClaimRecord,
    etag: String,
    ttl: Duration,
}

/// What [`acquire`] found.
#[derive(Debug)]
pub enum Acquired {
    /// The work is this caller's.
    Mine(Claim),
    /// Someone else holds a live claim: wait for their manifest.
    Held(ClaimRecord),
}

/// Claims the work at `prefix` for `holder`, or says who holds it.
pub async fn acquire(
    storage: &Storage,
    prefix: &str,
    holder: &str,
    idempotency_key: &str,
    ttl: Duration,
) -> Result<Acquired, StorageError> {
    let key = key(prefix);
    let record = ClaimRecord {
        holder: holder.to_owned(),
        idempotency_key: idempotency_key.to_owned(),
        expires_at: expiry(ttl),
    };
    let mine = |etag: String| {
        Acquired::Mine(Claim {
            key: key.clone(),
            record: record.clone(),
            etag,
            ttl,
        })
    };
    // A claim released between our create and our read is tried again, a few times.
    for _ in 0..3 {
        match storage.create_json(&key, &record).await {
            Ok(etag) => return Ok(mine(etag)),
            Err(StorageError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
        let Some((held, etag)) = storage.get_json::<ClaimRecord>(&key).await? else {
            continue;
        };
        if held.expires_at > Utc::now() {
            return Ok(Acquired::Held(held));
        }
        // Lapsed: of everyone who read this version, one takes it over.
        return match storage.replace_json(&key, &record, &etag).await {
            Ok(etag) => {
                tracing::warn!(lapsed = %held.holder, "took over a lapsed claim");
                Ok(mine(etag))
            }
            Err(StorageError::PreconditionFailed { .. }) => {
                match storage.get_json::<ClaimRecord>(&key).await? {
                    Some((now_held, _)) => Ok(Acquired::Held(now_held)),
                    None => continue,
                }
            }
            Err(e) => Err(e),
        };
    }
    // Claimed and released again and again under our hands: try later, not never.
    Err(StorageError::Service {
        op: "PutObject",
        key,
        status: Some(412),
        message: "the claim kept changing while it was read".into(),
        transient: true,
    })
}

impl Claim {
    /// Keeps the claim alive until it is lost to a taker, or until it would lapse before a
    /// renewal gets through (a store that refuses or hangs): it returns then, a margin
    /// before the claim's expiry, so that its work stops before anyone may take it over.
    pub async fn keep(&mut self, storage: &Storage) -> StorageError {
        let every = self.ttl / 3;
        let margin = self.ttl / 10;
        // The claim lapses `ttl` after the last write that got through; stop `margin` before.
        let mut deadline = tokio::time::Instant::now() + self.ttl - margin;
        loop {
            tokio::time::sleep(every).await;
            self.record.expires_at = expiry(self.ttl);
            let sent = tokio::time::Instant::now();
            let renewal = storage.replace_json(&self.key, &self.record, &self.etag);
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(etag)) => {
                    self.etag = etag;
                    deadline = sent + self.ttl - margin;
                }
                Ok(Err(e @ StorageError::PreconditionFailed { .. })) => return e,
                Ok(Err(e)) if tokio::time::Instant::now() + every >= deadline => return e,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not renew the claim; trying again");
                }
                Err(_) => {
                    return StorageError::Service {
                        op: "PutObject",
                        key: self.key.clone(),
                        status: None,
                        message: "the claim could not be renewed before it lapsed".into(),
                        transient: true,
                    };
                }
            }
        }
    }

    /// Removes the claim, once the work it covered has ended and the claim was not lost
    /// meanwhile (renewed every third of its life, it cannot have lapsed and been taken
    /// over unless [`Claim::keep`] said so). Best effort: a claim left behind lapses.
    pub async fn release(self, storage: &Storage) {
        if let Err(e) = storage.delete(&self.key).await {
            tracing::warn!(error = %e, "could not release the claim; it will lapse");
        }
    }
}

fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}
