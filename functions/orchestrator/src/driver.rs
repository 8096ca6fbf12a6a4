//! Driving one request through the pipeline, recording every transition in `state.json`.
//!
//! Every write is conditional on the ETag this driver last read or wrote (`If-None-Match: *`
//! on create, `If-Match` after), so a driver that lost the race stops at once
//! ([`DriveError::Superseded`]) instead of overwriting another's progress. Stages that
//! already succeeded are skipped, so driving a request again resumes it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use fave_common::gateway::{GatewayClient, InvokeError};
use fave_common::ids::StageName;
use fave_common::keys::RequestKeys;
use fave_common::stage::{Manifest, StageCall};
use fave_common::state::{
    IllegalTransition, RequestEvent, RequestState, RequestStatus, StageEvent,
};
use fave_common::storage::{Storage, StorageError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::pipeline::StageSpec;

/// Why driving stopped without reaching a terminal state.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// Someone else wrote `state.json` since we read it: they drive the request now.
    #[error("state.json was changed by another writer; this driver stops")]
    Superseded,
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

/// A request's state and the ETag of the copy in the store.
pub struct Tracked {
    storage: Storage,
    key: String,
    etag: String,
    pub state: RequestState,
}

impl Tracked {
    /// Writes a new request's first `state.json`; fails if one exists.
    pub async fn create(storage: Storage, state: RequestState) -> Result<Self, DriveError> {
        let key = RequestKeys::new(&state.request_id).state();
        let etag = storage.create_json(&key, &state).await?;
        Ok(Self {
            storage,
            key,
            etag,
            state,
        })
    }

    /// Writes the current state over the copy we last saw.
    pub async fn commit(&mut self) -> Result<(), DriveError> {
        self.state.revision += 1;
        self.state.updated_at = Utc::now();
        self.etag = self
            .storage
            .replace_json(&self.key, &self.state, &self.etag)
            .await?;
        Ok(())
    }
}

/// What the driver needs from the orchestrator.
pub struct Driver<'a> {
    pub storage: &'a Storage,
    pub gateway: &'a GatewayClient,
    pub stages: &'a [StageSpec],
    pub invocations: &'a Semaphore,
    /// Caps every stage's own timeout.
    pub max_stage_timeout: Duration,
}

impl Driver<'_> {
    /// Runs every stage not yet succeeded, then writes `final.json` and completes the
    /// request; on a stage's final failure the request is FAILED with its code.
    pub async fn drive(&self, t: &mut Tracked) -> Result<(), DriveError> {
        if t.state.status.is_terminal() {
            return Ok(());
        }
        if t.state.status == RequestStatus::Init {
            t.state.apply(RequestEvent::Start, Utc::now())?;
            t.commit().await?;
        }
        let started = Instant::now();
        for spec in self.stages {
            let name: StageName = spec.name.parse().map_err(|e| IllegalTransition {
                from: "pipeline".into(),
                event: format!("{e}"),
            })?;
            if t.state.stage(&name).is_some_and(|s| s.status.is_terminal()) {
                continue;
            }
            if let Err(failure) = self.run_stage(t, spec, &name).await? {
                t.state.apply(
                    RequestEvent::Fail {
                        code: failure.code(),
                        detail: format!("{}: {failure}", spec.name),
                    },
                    Utc::now(),
                )?;
                t.commit().await?;
                return Ok(());
            }
        }
        let result = aggregate(&t.state, started.elapsed());
        let result_key = RequestKeys::new(&t.state.request_id).result();
        self.storage.put_json(&result_key, &result).await?;
        t.state.result_key = Some(result_key);
        t.state.apply(RequestEvent::Complete, Utc::now())?;
        t.commit().await?;
        Ok(())
    }

    /// Calls one stage until it succeeds, fails for good, or runs out of attempts. The outer
    /// `Result` is the driver's own trouble; the inner one the stage's final failure.
    async fn run_stage(
        &self,
        t: &mut Tracked,
        spec: &StageSpec,
        name: &StageName,
    ) -> Result<Result<(), InvokeError>, DriveError> {
        let input = (spec.input)(&t.state).map_err(|e| IllegalTransition {
            from: format!("{:?}", t.state.status),
            event: format!("building the input of {}: {e}", spec.name),
        })?;
        let call = StageCall {
            request_id: t.state.request_id.clone(),
            stage: name.clone(),
            clip: None,
            idempotency_key: idempotency_key(
                &t.state.request_id.to_string(),
                spec.name,
                None,
                &input,
            ),
            input,
        };
        let timeout = spec.timeout.min(self.max_stage_timeout);
        let mut delays = spec.retry.delays();
        loop {
            stage_mut(t, name)?.apply(StageEvent::Start, Utc::now())?;
            t.commit().await?;
            let outcome = {
                let _permit = self.invocations.acquire().await;
                self.gateway.invoke(spec.function, &call, timeout).await
            };
            let now = Utc::now();
            let stage = stage_mut(t, name)?;
            match outcome {
                Ok(invocation) => {
                    if let Some(a) = stage.current_attempt() {
                        a.call_id = invocation.call_id.clone();
                        a.http_status = Some(invocation.status);
                    }
                    let manifest: Manifest<Value> = match serde_json::from_slice(&invocation.body) {
                        Ok(m) => m,
                        Err(e) => {
                            let failure = InvokeError::Status {
                                function: spec.function.to_owned(),
                                status: invocation.status,
                                call_id: invocation.call_id,
                                code: "bad_stage_answer".into(),
                                message: format!("the answer is not a manifest: {e}"),
                                openfaas_internal: false,
                            };
                            stage.apply(
                                StageEvent::Fail {
                                    code: failure.code(),
                                    detail: failure.to_string(),
                                },
                                now,
                            )?;
                            t.commit().await?;
                            return Ok(Err(failure));
                        }
                    };
                    stage
                        .metrics
                        .insert("work_ms".into(), json!(manifest.work_ms));
                    stage.metrics.insert(
                        "call_ms".into(),
                        json!(invocation.elapsed.as_millis() as u64),
                    );
                    stage.metrics.insert("data".into(), manifest.data);
                    stage.apply(
                        StageEvent::Succeed {
                            outputs: manifest.outputs,
                        },
                        now,
                    )?;
                    t.commit().await?;
                    return Ok(Ok(()));
                }
                Err(failure) => {
                    if let Some(a) = stage.current_attempt() {
                        a.call_id = failure.call_id().map(str::to_owned);
                        a.http_status = failure.http_status();
                    }
                    let event_detail = failure.to_string();
                    let delay = if failure.is_transient() {
                        delays.next()
                    } else {
                        None
                    };
                    match delay {
                        Some(delay) => {
                            tracing::warn!(stage = spec.name, error = %failure, ?delay, "stage attempt failed; retrying");
                            stage.apply(
                                StageEvent::Retry {
                                    code: failure.code(),
                                    detail: event_detail,
                                },
                                now,
                            )?;
                            t.commit().await?;
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            tracing::warn!(stage = spec.name, error = %failure, "stage failed");
                            stage.apply(
                                StageEvent::Fail {
                                    code: failure.code(),
                                    detail: event_detail,
                                },
                                now,
                            )?;
                            t.commit().await?;
                            return Ok(Err(failure));
                        }
                    }
                }
            }
        }
    }
}

fn stage_mut<'a>(
    t: &'a mut Tracked,
    name: &StageName,
) -> Result<&'a mut fave_common::state::StageState, IllegalTransition> {
    let status = t.state.status;
    t.state.stage_mut(name).ok_or_else(|| IllegalTransition {
        from: format!("{status:?}"),
        event: format!("a stage {name} that the request does not have"),
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

/// `final.json`: what the request produced, and where its time went.
pub fn aggregate(state: &RequestState, drive_time: Duration) -> Value {
    let mut stages = BTreeMap::new();
    let mut stage_call_ms = 0u64;
    for s in &state.stages {
        let call_ms = s
            .metrics
            .get("call_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        stage_call_ms += call_ms;
        stages.insert(
            s.name.to_string(),
            json!({
                "status": s.status,
                "outputs": s.outputs,
                "attempts": s.attempts.len(),
                "call_ms": call_ms,
                "work_ms": s.metrics.get("work_ms"),
            }),
        );
    }
    let media = state
        .stages
        .iter()
        .find(|s| s.name.as_str() == "stage-ffmpeg-0")
        .and_then(|s| s.metrics.get("data"))
        .cloned();
    let drive_ms = drive_time.as_millis() as u64;
    json!({
        "request_id": state.request_id,
        "status": RequestStatus::Completed,
        "submission": state.submission,
        "input": state.input,
        "media": media,
        "stages": stages,
        "timings": {
            "drive_ms": drive_ms,
            "stage_calls_ms": stage_call_ms,
            // State writes, scheduling and everything else that is not a stage call.
            "orchestration_ms": drive_ms.saturating_sub(stage_call_ms),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
