//! One task's calls: its input built from the record, one attempt after another through the
//! gateway until it succeeds, fails for good, or runs out of attempts, each attempt's
//! start and end committed to `state.json` (a success with the next write, which the
//! scheduler makes: see [`crate::scheduler`]).
//!
//! Two budgets decide whether a failed attempt is tried again: the stage's own count of
//! attempts (its retryable errors, its timeouts), and a time window for the platform's
//! failures (a cold start, a gateway restart), which starts again after any answer from
//! the function. An answer is a [`Manifest`] whose result is the stage's contract `Output`
//! ([`StageSpec::check`]); one that is not is refused as it arrives.

use std::time::{Duration, Instant};

use chrono::Utc;
use fave_common::contract::FailureCode;
use fave_common::gateway::{GatewayClient, Invocation, InvokeError};
use fave_common::ids::ClipId;
use fave_common::retry::{Delays, RetryPolicy};
use fave_common::stage::{Manifest, StageCall};
use fave_common::state::{StageEvent, StageMetrics, StageStatus};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::metrics::{Metrics, Outcome};
use crate::pipeline::{InputContext, Params, StageSpec};
use crate::record::{DriveError, Shared, bug, commit_shared};
use crate::scheduler::Task;

/// What calling a stage needs from the orchestrator.
pub struct Invoker<'a> {
    pub gateway: &'a GatewayClient,
    /// At most this many stage calls are in flight from this replica.
    pub invocations: &'a Semaphore,
    pub params: &'a Params,
    pub metrics: &'a Metrics,
    /// Caps every stage's own timeout.
    pub max_stage_timeout: Duration,
    /// How long a stage call is retried while the platform fails it.
    pub platform_retry_window: Duration,
}

/// A stage's answer: the manifest, and the call it came on.
struct Answer {
    invocation: Invocation,
    manifest: Manifest<Value>,
}

impl Invoker<'_> {
    /// Calls one task until it succeeds, fails for good, or runs out of attempts. The outer
    /// `Result` is the driver's own trouble; the inner one the stage's final failure.
    #[tracing::instrument(
        name = "task",
        skip_all,
        fields(stage = spec.name.as_str(), clip = task.clip.as_ref().map(ClipId::as_str))
    )]
    pub async fn run(
        &self,
        shared: &Shared,
        spec: &StageSpec,
        task: &Task,
    ) -> Result<Result<(), InvokeError>, DriveError> {
        let call = self.call_for(shared, spec, task).await?;
        let timeout = spec.timeout.min(self.max_stage_timeout);
        let mut budget = Budget::new(&spec.retry, self.platform_retry_window);
        loop {
            begin(shared, task).await?;
            let (answer, took) = {
                let _permit = self.invocations.acquire().await;
                let clock = Instant::now();
                let answer = self.attempt(spec, &call, timeout).await;
                (answer, clock.elapsed())
            };
            let mut t = shared.lock().await;
            let now = Utc::now();
            let profile = t.state.submission.profile;
            let stage = task.state_mut(&mut t)?;
            let failure = match answer {
                Ok(Answer {
                    invocation,
                    manifest,
                }) => {
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
                    stage.metrics = StageMetrics {
                        call_ms: Some(invocation.elapsed.as_millis() as u64),
                        work_ms: Some(manifest.work_ms),
                        peak_rss_kb: manifest.peak_rss_kb,
                        profile: Some(profile),
                        cold_start_ms: invocation.cold_start_ms,
                    };
                    let cold = invocation.cold_start_ms.is_some();
                    self.metrics
                        .call(spec.name.as_str(), Outcome::Succeeded, took, cold);
                    let succeed = StageEvent::Succeed {
                        outputs: manifest.outputs,
                        result: manifest.data,
                    };
                    stage.apply(succeed, now)?;
                    // Written with the next write: the scheduler's (see `scheduler`).
                    return Ok(Ok(()));
                }
                Err(failure) => failure,
            };
            if let Some(a) = stage.current_attempt() {
                a.call_id = failure.call_id().map(str::to_owned);
                a.http_status = failure.http_status();
            }
            let (code, detail) = (failure.code(), failure.to_string());
            let name = spec.name.as_str();
            match budget.next(&failure) {
                Some(delay) => {
                    self.metrics.call(name, Outcome::Retried, took, false);
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
                    self.metrics.call(name, Outcome::Failed, took, false);
                    tracing::warn!(call_id = failure.call_id(), error = %failure, "stage failed");
                    stage.apply(StageEvent::Fail { code, detail }, now)?;
                    drop(t);
                    commit_shared(shared).await?;
                    return Ok(Err(failure));
                }
            }
        }
    }

    /// The call for `task`: its input built from what earlier stages recorded, and the key
    /// that makes a repeat of it the same work.
    async fn call_for(
        &self,
        shared: &Shared,
        spec: &StageSpec,
        task: &Task,
    ) -> Result<StageCall<Value>, DriveError> {
        let t = shared.lock().await;
        let clip = match &task.clip {
            Some(id) => Some(
                t.state
                    .clips
                    .iter()
                    .find(|c| &c.clip == id)
                    .ok_or_else(|| bug("building a stage input", format!("no {id}")))?,
            ),
            None => None,
        };
        let cx = InputContext {
            state: &t.state,
            clip,
            params: self.params,
        };
        let input = spec
            .input(&cx)
            .map_err(|e| bug("building a stage input", format!("{task}: {e}")))?;
        let request_id = t.state.request_id.clone();
        let clip = task.clip.as_ref().map(ClipId::as_str);
        Ok(StageCall {
            idempotency_key: idempotency_key(request_id.as_str(), spec.name.as_str(), clip, &input),
            request_id,
            stage: task.name.clone(),
            clip: task.clip.clone(),
            input,
        })
    }

    /// One attempt: the call through the gateway, and its answer read as the stage's.
    async fn attempt(
        &self,
        spec: &StageSpec,
        call: &StageCall<Value>,
        timeout: Duration,
    ) -> Result<Answer, InvokeError> {
        let invocation = self.gateway.invoke(&spec.function, call, timeout).await?;
        let refused = |code: FailureCode, message: String| InvokeError::Status {
            function: spec.function.clone(),
            status: invocation.status,
            call_id: invocation.call_id.clone(),
            code: code.into(),
            message,
            openfaas_internal: false,
            own_retryable: Some(false),
        };
        let manifest = match serde_json::from_slice::<Manifest<Value>>(&invocation.body) {
            Ok(manifest) => manifest,
            Err(e) => {
                return Err(InvokeError::BadAnswer {
                    function: spec.function.clone(),
                    status: invocation.status,
                    call_id: invocation.call_id.clone(),
                    message: format!("not a manifest: {e}"),
                });
            }
        };
        if manifest.data.to_string().len() > MAX_STAGE_DATA_BYTES {
            return Err(refused(
                FailureCode::StageAnswerTooLarge,
                format!(
                    "the stage's result is over the {MAX_STAGE_DATA_BYTES} bytes state.json \
                     holds for one stage; large results go by key"
                ),
            ));
        }
        if let Err(e) = spec.check(&manifest.data) {
            return Err(refused(
                FailureCode::StageAnswerMismatch,
                format!("the result is not {}'s contract output: {e}", spec.name),
            ));
        }
        Ok(Answer {
            invocation,
            manifest,
        })
    }
}

/// Opens an attempt on `task` and commits it, closing first an attempt that a driver which
/// is gone left open (as lost: its stage's manifest, if it got that far, makes the next one
/// quick).
async fn begin(shared: &Shared, task: &Task) -> Result<(), DriveError> {
    {
        let mut t = shared.lock().await;
        let owner = t.holder().owner.clone();
        let stage = task.state_mut(&mut t)?;
        if stage.status == StageStatus::Running {
            let detail = "the driver of this attempt stopped before its answer was recorded".into();
            let lost = StageEvent::Retry {
                code: FailureCode::DriverLost.into(),
                detail,
            };
            stage.apply(lost, Utc::now())?;
        }
        stage.apply(StageEvent::Start, Utc::now())?;
        if let Some(attempt) = stage.current_attempt() {
            attempt.driver = Some(owner);
        }
    }
    commit_shared(shared).await
}

/// Whether, and after how long, a failed attempt is tried again.
struct Budget {
    /// The stage's own attempts, for its retryable errors and its timeouts.
    delays: Delays,
    /// The platform's failures: retried until the window has passed since the first of a
    /// run of them.
    platform_delays: Delays,
    platform_since: Option<Instant>,
    platform_window: Duration,
}

impl Budget {
    fn new(policy: &RetryPolicy, platform_window: Duration) -> Self {
        Self {
            delays: policy.delays(),
            platform_delays: PLATFORM_RETRY.delays(),
            platform_since: None,
            platform_window,
        }
    }

    /// The wait before trying again after `failure`, or `None`: it is final.
    fn next(&mut self, failure: &InvokeError) -> Option<Duration> {
        if failure.is_platform() {
            let since = *self.platform_since.get_or_insert_with(Instant::now);
            return (since.elapsed() < self.platform_window)
                .then(|| self.platform_delays.next())
                .flatten();
        }
        // An answer from the function: the platform's window starts again.
        if self.platform_since.take().is_some() {
            self.platform_delays = PLATFORM_RETRY.delays();
        }
        failure.is_transient().then(|| self.delays.next()).flatten()
    }
}

/// The most of a stage's own result that `state.json` holds; larger results are passed by
/// key (an output object), so the record every transition rewrites stays small.
const MAX_STAGE_DATA_BYTES: usize = 1024 * 1024;

/// The backoff between retries of what the platform failed: from 200 ms, doubling, at most
/// 5 s apart, for as long as [`Invoker::platform_retry_window`] allows.
const PLATFORM_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
    jitter: true,
};

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
    use serde_json::json;

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

    #[test]
    fn the_platform_is_retried_for_a_window_and_the_stage_for_its_attempts() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            jitter: false,
        };
        let connect = InvokeError::Connect {
            function: "f".into(),
            message: "refused".into(),
        };
        let timeout = InvokeError::Timeout {
            function: "f".into(),
            timeout: Duration::from_secs(1),
        };
        let mut budget = Budget::new(&policy, Duration::from_secs(60));
        // The platform's failures do not spend the stage's attempts.
        for _ in 0..10 {
            assert!(budget.next(&connect).is_some());
        }
        assert!(budget.next(&timeout).is_some());
        assert!(budget.next(&timeout).is_some());
        assert!(budget.next(&timeout).is_none(), "three attempts in all");
        let mut closed = Budget::new(&policy, Duration::ZERO);
        assert!(closed.next(&connect).is_none(), "the window has passed");
    }
}
