//! The durable state of one request, `requests/{id}/metadata/state.json`, and the state
//! machines of requests and stages.
//!
//! Every legal edge lives in [`RequestStatus::on`] and [`StageStatus::on`]; everything else
//! is [`Transition::Illegal`], except that terminal states absorb late events
//! ([`Transition::Ignored`]), so a stage answer that arrives after a request was cancelled or
//! failed changes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AnalysisId, ClipId, RequestId, StageName, VideoId};

/// Bumped when the layout of `state.json` changes. Every version before is still read (a
/// request in flight across an upgrade finishes); a state is written in this one.
///
/// - 1: a stage's result was kept among its figures, as `metrics.data`.
/// - 2: the result is `result`, the figures are typed ([`StageMetrics`]).
pub const SCHEMA_VERSION: u32 = 2;

/// What a user submitted, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub video_uri: String,
    pub query: Option<String>,
    pub profile: Profile,
    /// Where fave POSTs the result (or the failure) when the request ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Which addresses fave may reach on this request's behalf, fixed by the replica that
    /// accepted it; `None` in requests accepted before it was recorded (they go by the mode
    /// of the replica at hand, as they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
    /// Analysed anew, not answered from the library (`SubmitBody::fresh`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

/// Where a request's URLs may lead: its input, every redirect, its callback. A request
/// accepted in cluster mode keeps the address guard on whichever replica later fetches its
/// input or delivers its callback, a local-mode one included; the stricter of the request's
/// reach and the replica's mode wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// Public addresses only, http(s) and s3:// inputs (cluster mode).
    Public,
    /// Any address, loopback and private ones included, and file:// inputs (local mode).
    Any,
}

impl Reach {
    /// The reach of a request accepted by a replica in `local_mode`.
    pub fn of_mode(local_mode: bool) -> Self {
        if local_mode {
            Reach::Any
        } else {
            Reach::Public
        }
    }

    /// Whether a replica in `local_mode` may take a request of `reach` to internal
    /// addresses (and file:// inputs): only when both say so.
    pub fn allows_internal(reach: Option<Reach>, local_mode: bool) -> bool {
        local_mode && reach != Some(Reach::Public)
    }
}

/// The replica regime a request runs under; see stack.yml.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Cold,
    #[default]
    Warm,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cold" => Ok(Profile::Cold),
            "warm" => Ok(Profile::Warm),
            other => Err(format!(
                "unknown profile {other:?}: expected \"cold\" or \"warm\""
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatus {
    Init,
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StageStatus {
    Pending,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Skipped,
}

/// The outcome of applying an event to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition<S> {
    To(S),
    /// A terminal state absorbed a late event.
    Ignored,
    Illegal,
}

/// Something that happens to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    Start,
    Complete,
    Fail { code: String, detail: String },
    Cancel,
}

impl RequestStatus {
    /// The name `state.json` and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Every legal edge of a request.
    pub fn on(self, event: &RequestEvent) -> Transition<Self> {
        use RequestEvent as E;
        use RequestStatus as S;
        match (self, event) {
            (s, _) if s.is_terminal() => Transition::Ignored,
            (S::Init, E::Start) => Transition::To(S::Running),
            (S::Running, E::Complete) => Transition::To(S::Completed),
            (S::Init | S::Running, E::Fail { .. }) => Transition::To(S::Failed),
            (S::Init | S::Running, E::Cancel) => Transition::To(S::Cancelled),
            _ => Transition::Illegal,
        }
    }
}

/// Something that happens to a stage (or a per-clip task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageEvent {
    /// An attempt was sent.
    Start,
    /// An attempt failed and another will follow.
    Retry {
        code: String,
        detail: String,
    },
    /// The answer: the objects written, and the stage's own result.
    Succeed {
        outputs: BTreeMap<String, String>,
        result: serde_json::Value,
    },
    Fail {
        code: String,
        detail: String,
    },
    Skip,
}

impl StageStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }

    /// Every legal edge of a stage.
    pub fn on(self, event: &StageEvent) -> Transition<Self> {
        use StageEvent as E;
        use StageStatus as S;
        match (self, event) {
            (s, _) if s.is_terminal() => Transition::Ignored,
            (S::Pending | S::Retrying, E::Start) => Transition::To(S::Running),
            (S::Running, E::Retry { .. }) => Transition::To(S::Retrying),
            (S::Running, E::Succeed { .. }) => Transition::To(S::Succeeded),
            (S::Pending | S::Running | S::Retrying, E::Fail { .. }) => Transition::To(S::Failed),
            (S::Pending, E::Skip) => Transition::To(S::Skipped),
            _ => Transition::Illegal,
        }
    }
}

/// An event that is not legal in the current state: a bug in the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event} while {from}")]
pub struct IllegalTransition {
    pub from: String,
    pub event: String,
}

/// A failure, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error_code: String,
    pub error_detail: String,
}

/// One try of a stage call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// The gateway's `X-Call-Id` for this attempt.
    pub call_id: Option<String>,
    /// The lease owner that made this attempt.
    #[serde(default)]
    pub driver: Option<String>,
    pub http_status: Option<u16>,
    #[serde(flatten)]
    pub failure: Option<Failure>,
}

/// One stage of the pipeline (or one per-clip task) as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "stored::StageState")]
pub struct StageState {
    pub name: StageName,
    pub function: String,
    pub status: StageStatus,
    pub attempts: Vec<Attempt>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// Output name → S3 key, once succeeded.
    pub outputs: BTreeMap<String, String>,
    #[serde(flatten)]
    pub failure: Option<Failure>,
    /// The stage's own result (its manifest's `data`, the contract's `Output`), once
    /// succeeded; read back typed with [`StageState::result`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What the call cost.
    #[serde(default)]
    pub metrics: StageMetrics,
    /// While RETRYING: when the next attempt is due. With the last attempt's failure, it
    /// says what the stage waits for and why (a gateway outage shows here, not as silence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl StageState {
    pub fn new(name: StageName, function: impl Into<String>) -> Self {
        Self {
            name,
            function: function.into(),
            status: StageStatus::Pending,
            attempts: Vec::new(),
            started_at: None,
            ended_at: None,
            duration_ms: None,
            outputs: BTreeMap::new(),
            failure: None,
            result: None,
            metrics: StageMetrics::default(),
            next_attempt_at: None,
        }
    }

    /// Applies an event at time `now`. Returns whether anything changed.
    pub fn apply(
        &mut self,
        event: StageEvent,
        now: DateTime<Utc>,
    ) -> Result<bool, IllegalTransition> {
        let to = match self.status.on(&event) {
            Transition::To(to) => to,
            Transition::Ignored => return Ok(false),
            Transition::Illegal => {
                return Err(IllegalTransition {
                    from: format!("{:?}", self.status),
                    event: format!("{event:?}"),
                });
            }
        };
        // Whatever happens next, the wait is over (a retry sets it again after applying).
        self.next_attempt_at = None;
        match event {
            StageEvent::Start => {
                self.started_at.get_or_insert(now);
                self.attempts.push(Attempt {
                    number: self.attempts.len() as u32 + 1,
                    started_at: now,
                    ended_at: None,
                    duration_ms: None,
                    call_id: None,
                    driver: None,
                    http_status: None,
                    failure: None,
                });
            }
            StageEvent::Retry { code, detail } => {
                self.end_attempt(
                    now,
                    Some(Failure {
                        error_code: code,
                        error_detail: detail,
                    }),
                );
            }
            StageEvent::Succeed { outputs, result } => {
                self.end_attempt(now, None);
                self.outputs = outputs;
                self.result = Some(result);
                self.finish(now);
            }
            StageEvent::Fail { code, detail } => {
                let failure = Failure {
                    error_code: code,
                    error_detail: detail,
                };
                if self.status == StageStatus::Running {
                    self.end_attempt(now, Some(failure.clone()));
                }
                self.failure = Some(failure);
                self.finish(now);
            }
            StageEvent::Skip => self.finish(now),
        }
        self.status = to;
        Ok(true)
    }

    /// The result as the contract's type `O`, once succeeded: `None` before, an error if the
    /// stored result is not an `O` (a stage and an orchestrator of different contracts).
    pub fn result<O: serde::de::DeserializeOwned>(&self) -> Option<Result<O, String>> {
        let result = self.result.as_ref()?;
        Some(
            O::deserialize(result)
                .map_err(|e| format!("{}'s recorded result does not read: {e}", self.name)),
        )
    }

    /// The attempt under way, to record its call id and HTTP status.
    pub fn current_attempt(&mut self) -> Option<&mut Attempt> {
        self.attempts.last_mut().filter(|a| a.ended_at.is_none())
    }

    fn end_attempt(&mut self, now: DateTime<Utc>, failure: Option<Failure>) {
        if let Some(a) = self.current_attempt() {
            a.ended_at = Some(now);
            a.duration_ms = Some(millis_between(a.started_at, now));
            a.failure = failure;
        }
    }

    fn finish(&mut self, now: DateTime<Utc>) {
        self.ended_at = Some(now);
        self.duration_ms = self.started_at.map(|s| millis_between(s, now));
    }
}

/// What one stage call cost, as the orchestrator recorded it from the answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageMetrics {
    /// The call's round trip through the gateway, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_ms: Option<u64>,
    /// The function's own time on the work, download and upload included, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_ms: Option<u64>,
    /// The function process's peak resident memory so far (Linux `VmHWM`), in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kb: Option<u64>,
    /// The profile the call ran under, beside its times, for comparing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Set when the call found its function starting: the function's time from start to
    /// ready, in ms (its own word, the same under any gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_ms: Option<f64>,
}

/// How earlier schema versions are read.
mod stored {
    use super::*;

    /// A stage as any schema version stored it.
    #[derive(Deserialize)]
    pub(super) struct StageState {
        name: StageName,
        function: String,
        status: StageStatus,
        attempts: Vec<Attempt>,
        started_at: Option<DateTime<Utc>>,
        ended_at: Option<DateTime<Utc>>,
        duration_ms: Option<u64>,
        outputs: BTreeMap<String, String>,
        #[serde(flatten)]
        failure: Option<Failure>,
        #[serde(default)]
        result: Option<serde_json::Value>,
        #[serde(default)]
        metrics: Metrics,
        #[serde(default)]
        next_attempt_at: Option<DateTime<Utc>>,
    }

    /// Version 1 kept the result among the figures, as `data`.
    #[derive(Default, Deserialize)]
    struct Metrics {
        #[serde(flatten)]
        figures: StageMetrics,
        #[serde(default)]
        data: Option<serde_json::Value>,
    }

    impl From<StageState> for super::StageState {
        fn from(s: StageState) -> Self {
            Self {
                name: s.name,
                function: s.function,
                status: s.status,
                attempts: s.attempts,
                started_at: s.started_at,
                ended_at: s.ended_at,
                duration_ms: s.duration_ms,
                outputs: s.outputs,
                failure: s.failure,
                result: s.result.or(s.metrics.data),
                metrics: s.metrics.figures,
                next_attempt_at: s.next_attempt_at,
            }
        }
    }
}

fn millis_between(a: DateTime<Utc>, b: DateTime<Utc>) -> u64 {
    (b - a).num_milliseconds().max(0) as u64
}

/// One clip of the video and its per-clip tasks, in pipeline order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipState {
    pub clip: ClipId,
    pub start_s: f64,
    pub end_s: f64,
    /// The clip's video.
    pub key: String,
    pub tasks: Vec<StageState>,
}

impl ClipState {
    pub fn task(&self, name: &StageName) -> Option<&StageState> {
        self.tasks.iter().find(|s| &s.name == name)
    }

    pub fn task_mut(&mut self, name: &StageName) -> Option<&mut StageState> {
        self.tasks.iter_mut().find(|s| &s.name == name)
    }
}

/// The copy of the user's video in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputObject {
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
}

/// How the delivery of fave's own callback went (`Submission::callback_url`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackDelivery {
    /// Attempts begun, by every replica: one budget per request.
    pub attempts: u32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Delivery stopped for good: the receiver refused it, or every attempt failed.
    pub gave_up: bool,
    /// An attempt is under way until then (recorded before it is sent): no other replica
    /// sends meanwhile. One that died mid-attempt leaves it to lapse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_until: Option<DateTime<Utc>>,
    /// The next attempt is not before then (the backoff, shared by every replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
}

/// Who drives a request, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

/// One tenure of a driver: from when it took the lease (created the request, or resumed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverRecord {
    pub owner: String,
    pub since: DateTime<Utc>,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestState {
    pub schema_version: u32,
    pub request_id: RequestId,
    pub status: RequestStatus,
    /// Incremented at every write, so two writes never store the same bytes (and ETag).
    pub revision: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub submission: Submission,
    pub input: Option<InputObject>,
    pub stages: Vec<StageState>,
    /// The clips, once the stage that cuts them has run; each with its per-clip tasks.
    #[serde(default)]
    pub clips: Vec<ClipState>,
    #[serde(flatten)]
    pub failure: Option<Failure>,
    pub lease: Option<Lease>,
    /// Every driver that took the lease, in order: who drove the request when.
    #[serde(default)]
    pub drivers: Vec<DriverRecord>,
    /// The key of `final.json`, once completed.
    pub result_key: Option<String>,
    /// The callback's delivery, once tried.
    #[serde(default)]
    pub callback: Option<CallbackDelivery>,
    /// The video and analysis the request's answer comes from, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisUse>,
    /// When the video was deleted from the library (`DELETE /videos/{id}`): the request's
    /// media and results went with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_deleted_at: Option<DateTime<Utc>>,
}

/// Which analysis of which video a request's answer comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisUse {
    pub video: VideoId,
    pub analysis: AnalysisId,
    /// Answered from an analysis made before (no stage ran), not made by this request.
    pub reused: bool,
}

impl RequestState {
    /// Forgets what the request learnt of its video, which was deleted from the library:
    /// its input, its clips, every stage's result and its `final.json`. What is left says
    /// what was asked, how it went, and which video it was.
    pub fn forget_video(&mut self, now: DateTime<Utc>) {
        self.input = None;
        self.clips.clear();
        for stage in &mut self.stages {
            stage.result = None;
            stage.outputs.clear();
        }
        self.result_key = None;
        self.video_deleted_at = Some(now);
        self.revision += 1;
        self.updated_at = now;
    }

    pub fn new(
        request_id: RequestId,
        submission: Submission,
        stages: Vec<StageState>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            request_id,
            status: RequestStatus::Init,
            revision: 0,
            created_at: now,
            updated_at: now,
            ended_at: None,
            submission,
            input: None,
            stages,
            clips: Vec::new(),
            failure: None,
            lease: None,
            drivers: Vec::new(),
            result_key: None,
            callback: None,
            analysis: None,
            video_deleted_at: None,
        }
    }

    /// Applies an event at time `now`. Returns whether anything changed.
    pub fn apply(
        &mut self,
        event: RequestEvent,
        now: DateTime<Utc>,
    ) -> Result<bool, IllegalTransition> {
        let to = match self.status.on(&event) {
            Transition::To(to) => to,
            Transition::Ignored => return Ok(false),
            Transition::Illegal => {
                return Err(IllegalTransition {
                    from: format!("{:?}", self.status),
                    event: format!("{event:?}"),
                });
            }
        };
        if let RequestEvent::Fail { code, detail } = event {
            self.failure = Some(Failure {
                error_code: code,
                error_detail: detail,
            });
        }
        if to.is_terminal() {
            self.ended_at = Some(now);
            self.lease = None;
        }
        self.status = to;
        Ok(true)
    }

    pub fn stage(&self, name: &StageName) -> Option<&StageState> {
        self.stages.iter().find(|s| &s.name == name)
    }

    pub fn stage_mut(&mut self, name: &StageName) -> Option<&mut StageState> {
        self.stages.iter_mut().find(|s| &s.name == name)
    }

    /// Whether the request has ended and its callback is still to be delivered.
    pub fn callback_pending(&self) -> bool {
        self.status.is_terminal()
            && self.submission.callback_url.is_some()
            && self
                .callback
                .as_ref()
                .is_none_or(|c| c.delivered_at.is_none() && !c.gave_up)
    }

    /// Every task: the request-wide stages, then each clip's tasks.
    pub fn tasks(&self) -> impl Iterator<Item = &StageState> {
        self.stages
            .iter()
            .chain(self.clips.iter().flat_map(|c| &c.tasks))
    }

    /// Every task, to change.
    pub fn tasks_mut(&mut self) -> impl Iterator<Item = &mut StageState> {
        self.stages
            .iter_mut()
            .chain(self.clips.iter_mut().flat_map(|c| &mut c.tasks))
    }

    /// Records every task still in flight (running, or waiting to retry) as failed with
    /// code `abandoned`, for a request that ends without waiting for them (it failed, or
    /// was cancelled): no task of an ended request claims to be running. Their answers, if
    /// they come, are absorbed.
    pub fn abandon_in_flight(
        &mut self,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        for task in self.tasks_mut() {
            if matches!(task.status, StageStatus::Running | StageStatus::Retrying) {
                task.apply(
                    StageEvent::Fail {
                        code: crate::contract::FailureCode::Abandoned.into(),
                        detail: format!("not waited for: {why}"),
                    },
                    now,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_need_both_the_request_and_the_replica_in_local_mode() {
        use Reach::{Any, Public};
        for (reach, local, allowed) in [
            (Some(Any), true, true),
            (Some(Any), false, false),
            (Some(Public), true, false),
            (Some(Public), false, false),
            (None, true, true),
            (None, false, false),
        ] {
            assert_eq!(
                Reach::allows_internal(reach, local),
                allowed,
                "{reach:?} {local}"
            );
        }
        assert_eq!(Reach::of_mode(true), Any);
        assert_eq!(Reach::of_mode(false), Public);
    }

    #[test]
    fn tasks_in_flight_are_abandoned_and_their_late_answers_absorbed() {
        let now = Utc::now();
        let sub: Submission =
            serde_json::from_str(r#"{"video_uri":"s3://b/k","query":null,"profile":"warm"}"#)
                .unwrap();
        let stages = ["a", "b", "c", "d"].map(|n| StageState::new(n.parse().unwrap(), "f"));
        let mut r = RequestState::new("r1".parse().unwrap(), sub, stages.to_vec(), now);
        r.apply(RequestEvent::Start, now).unwrap();
        let [done, running, retrying, _pending] = &mut r.stages[..] else {
            panic!("four stages");
        };
        done.apply(StageEvent::Start, now).unwrap();
        done.apply(
            StageEvent::Succeed {
                outputs: BTreeMap::new(),
                result: serde_json::Value::Null,
            },
            now,
        )
        .unwrap();
        running.apply(StageEvent::Start, now).unwrap();
        retrying.apply(StageEvent::Start, now).unwrap();
        let retry = StageEvent::Retry {
            code: "http_503".into(),
            detail: "d".into(),
        };
        retrying.apply(retry, now).unwrap();
        r.abandon_in_flight("the request was cancelled", now)
            .unwrap();
        r.apply(RequestEvent::Cancel, now).unwrap();
        let statuses: Vec<StageStatus> = r.stages.iter().map(|s| s.status).collect();
        use StageStatus::{Failed, Pending, Succeeded};
        assert_eq!(statuses, [Succeeded, Failed, Failed, Pending]);
        for abandoned in &r.stages[1..3] {
            let failure = abandoned.failure.as_ref().unwrap();
            assert_eq!(failure.error_code, "abandoned");
        }
        let attempt = r.stages[1].attempts.last().unwrap();
        assert!(attempt.ended_at.is_some(), "the open attempt is closed");
        // The abandoned call's answer, when it comes, changes nothing.
        let late = StageEvent::Succeed {
            outputs: BTreeMap::new(),
            result: serde_json::Value::Null,
        };
        assert!(!r.stages[1].apply(late, now).unwrap());
        assert_eq!(r.stages[1].status, Failed);
    }

    #[test]
    fn a_submission_recorded_before_its_reach_reads_as_none() {
        let old: Submission =
            serde_json::from_str(r#"{"video_uri":"s3://b/k","query":null,"profile":"warm"}"#)
                .unwrap();
        assert_eq!(old.reach, None);
        let new = Submission {
            reach: Some(Reach::Public),
            fresh: false,
            ..old
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""reach":"public""#), "{text}");
    }

    fn fail() -> RequestEvent {
        RequestEvent::Fail {
            code: "c".into(),
            detail: "d".into(),
        }
    }

    #[test]
    fn request_legal_edges() {
        use RequestStatus::*;
        assert_eq!(Init.on(&RequestEvent::Start), Transition::To(Running));
        assert_eq!(
            Running.on(&RequestEvent::Complete),
            Transition::To(Completed)
        );
        assert_eq!(Init.on(&fail()), Transition::To(Failed));
        assert_eq!(Running.on(&fail()), Transition::To(Failed));
        assert_eq!(Init.on(&RequestEvent::Cancel), Transition::To(Cancelled));
        assert_eq!(Running.on(&RequestEvent::Cancel), Transition::To(Cancelled));
    }

    #[test]
    fn request_illegal_edges() {
        use RequestStatus::*;
        assert_eq!(Init.on(&RequestEvent::Complete), Transition::Illegal);
        assert_eq!(Running.on(&RequestEvent::Start), Transition::Illegal);
    }

    #[test]
    fn terminal_requests_absorb_late_events() {
        use RequestStatus::*;
        for terminal in [Completed, Failed, Cancelled] {
            for event in [
                RequestEvent::Start,
                RequestEvent::Complete,
                fail(),
                RequestEvent::Cancel,
            ] {
                assert_eq!(
                    terminal.on(&event),
                    Transition::Ignored,
                    "{terminal:?} {event:?}"
                );
            }
        }
    }

    #[test]
    fn stage_edges() {
        use StageStatus::*;
        let retry = StageEvent::Retry {
            code: "c".into(),
            detail: "d".into(),
        };
        let fail = StageEvent::Fail {
            code: "c".into(),
            detail: "d".into(),
        };
        let ok = StageEvent::Succeed {
            outputs: BTreeMap::new(),
            result: serde_json::Value::Null,
        };
        assert_eq!(Pending.on(&StageEvent::Start), Transition::To(Running));
        assert_eq!(Running.on(&retry), Transition::To(Retrying));
        assert_eq!(Retrying.on(&StageEvent::Start), Transition::To(Running));
        assert_eq!(Running.on(&ok), Transition::To(Succeeded));
        assert_eq!(Running.on(&fail), Transition::To(Failed));
        assert_eq!(Pending.on(&StageEvent::Skip), Transition::To(Skipped));
        assert_eq!(Pending.on(&ok), Transition::Illegal);
        assert_eq!(Running.on(&StageEvent::Start), Transition::Illegal);
        assert_eq!(Running.on(&StageEvent::Skip), Transition::Illegal);
        assert_eq!(Pending.on(&retry), Transition::Illegal);
        for terminal in [Succeeded, Failed, Skipped] {
            for event in [
                StageEvent::Start,
                retry.clone(),
                fail.clone(),
                ok.clone(),
                StageEvent::Skip,
            ] {
                assert_eq!(terminal.on(&event), Transition::Ignored);
            }
        }
    }

    #[test]
    fn stage_records_attempts_and_timings() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::milliseconds(250);
        let t2 = t1 + chrono::Duration::milliseconds(750);
        let mut s = StageState::new("stage-ffmpeg-0".parse().unwrap(), "stage-ffmpeg-0");
        s.apply(StageEvent::Start, t0).unwrap();
        s.current_attempt().unwrap().call_id = Some("call-1".into());
        s.apply(
            StageEvent::Retry {
                code: "unavailable".into(),
                detail: "503".into(),
            },
            t1,
        )
        .unwrap();
        s.apply(StageEvent::Start, t1).unwrap();
        let outputs = BTreeMap::from([("video".to_owned(), "k".to_owned())]);
        s.apply(
            StageEvent::Succeed {
                outputs: outputs.clone(),
                result: serde_json::json!({"frames": 3}),
            },
            t2,
        )
        .unwrap();
        assert_eq!(s.status, StageStatus::Succeeded);
        assert_eq!(s.attempts.len(), 2);
        assert_eq!(s.attempts[0].call_id.as_deref(), Some("call-1"));
        assert_eq!(
            s.attempts[0].failure.as_ref().unwrap().error_code,
            "unavailable"
        );
        assert_eq!(s.attempts[1].duration_ms, Some(750));
        assert_eq!(s.duration_ms, Some(1000));
        assert_eq!(s.outputs, outputs);
        assert_eq!(
            s.result,
            Some(serde_json::json!({"frames": 3})),
            "kept with the success"
        );
        // A late failure after success changes nothing.
        assert!(
            !s.apply(
                StageEvent::Fail {
                    code: "x".into(),
                    detail: "y".into()
                },
                t2
            )
            .unwrap()
        );
        assert_eq!(s.status, StageStatus::Succeeded);
        assert!(s.failure.is_none());
    }

    #[test]
    fn status_names_are_the_serialized_ones() {
        use RequestStatus as S;
        for s in [S::Init, S::Running, S::Completed, S::Failed, S::Cancelled] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn request_failure_is_recorded_and_json_round_trips() {
        let now = Utc::now();
        let sub = Submission {
            video_uri: "s3://b/k".into(),
            query: None,
            profile: Profile::Warm,
            callback_url: Some("https://example.com/done".into()),
            reach: None,
            fresh: false,
        };
        let mut r = RequestState::new("r1".parse().unwrap(), sub, vec![], now);
        assert!(!r.callback_pending(), "not before the end");
        r.apply(RequestEvent::Start, now).unwrap();
        r.apply(
            RequestEvent::Fail {
                code: "invalid_media".into(),
                detail: "not a video".into(),
            },
            now,
        )
        .unwrap();
        assert!(
            r.apply(RequestEvent::Complete, now)
                .is_ok_and(|changed| !changed)
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["status"], "FAILED");
        assert_eq!(json["error_code"], "invalid_media");
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        let back: RequestState = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        assert!(r.callback_pending(), "ended, not yet delivered");
        r.callback = Some(CallbackDelivery {
            attempts: 1,
            delivered_at: Some(now),
            last_status: Some(200),
            ..CallbackDelivery::default()
        });
        assert!(!r.callback_pending());
    }

    #[test]
    fn a_state_of_schema_1_reads_with_its_results_apart_from_its_figures() {
        // A stage as version 1 wrote it: the result among the figures.
        let v1 = serde_json::json!({
            "name": "stage-audio", "function": "stage-audio", "status": "SUCCEEDED",
            "attempts": [], "started_at": null, "ended_at": null, "duration_ms": 12,
            "outputs": {"features": "requests/r1/stages/stage-audio/features.json"},
            "metrics": {"work_ms": 7, "call_ms": 12, "profile": "warm", "cold_start_ms": 612.5,
                        "data": {"cuts": [5.0], "has_audio": true}},
        });
        let stage: StageState = serde_json::from_value(v1).unwrap();
        assert_eq!(
            stage.result,
            Some(serde_json::json!({"cuts": [5.0], "has_audio": true}))
        );
        assert_eq!(
            stage.metrics,
            StageMetrics {
                call_ms: Some(12),
                work_ms: Some(7),
                profile: Some(Profile::Warm),
                cold_start_ms: Some(612.5),
                ..StageMetrics::default()
            }
        );
        // Written again, it is version 2: the result beside the figures, read back the same.
        let v2 = serde_json::to_value(&stage).unwrap();
        assert_eq!(v2["result"]["cuts"], serde_json::json!([5.0]));
        assert!(v2["metrics"].get("data").is_none());
        assert_eq!(serde_json::from_value::<StageState>(v2).unwrap(), stage);

        #[derive(Deserialize)]
        struct Cuts {
            cuts: Vec<f64>,
        }
        let read = stage.result::<Cuts>().unwrap().unwrap();
        assert_eq!(read.cuts, [5.0]);
        let wrong = stage.result::<Vec<u8>>().unwrap();
        assert!(wrong.is_err_and(|e| e.contains("stage-audio")));
        assert!(
            StageState::new("x".parse().unwrap(), "x")
                .result::<Cuts>()
                .is_none()
        );
    }
}
