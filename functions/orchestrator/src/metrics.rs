//! `GET /metrics`: what this replica has seen, in Prometheus's text format (0.0.4).
//!
//! Counters are per process, as Prometheus expects (it sums replicas and handles restarts):
//! requests accepted and ended by status, drivers running, state.json writes and their bytes
//! (`record::WRITTEN`), stage calls by stage and outcome with a duration histogram, retries,
//! and calls that met a cold start: fave's local gateway
//! says so (`X-Fave-Cold-Start`); OpenFaaS's shows it only in the call's duration, so there a
//! call is counted cold when the stage's own work took under half of it and it over a second.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use fave_common::state::RequestStatus;

/// Upper bounds (seconds) of the stage-call duration histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Calls at or under each bound (not cumulative here; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// How a stage call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Succeeded,
    Retried,
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
        }
    }
}

/// This replica's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    drivers: AtomicI64,
    /// Stage tasks waiting for their next attempt now.
    retrying: AtomicI64,
    cold_starts: AtomicU64,
    calls: Mutex<BTreeMap<(String, Outcome), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A driver started (`+1`) or stopped (`-1`).
    pub fn drivers(&self, delta: i64) {
        self.drivers.fetch_add(delta, Ordering::Relaxed);
    }

    /// A stage task waits for its next attempt while the guard lives (dropped when the wait
    /// ends, or when its driver stops).
    pub fn waiting_to_retry(&self) -> Waiting<'_> {
        self.retrying.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.retrying)
    }

    /// A request this replica drove reached `status`.
    pub fn ended(&self, status: RequestStatus) {
        let counter = match status {
            RequestStatus::Completed => &self.completed,
            RequestStatus::Failed => &self.failed,
            RequestStatus::Cancelled => &self.cancelled,
            RequestStatus::Init | RequestStatus::Running => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One stage call: how it ended, its time, and whether the function reported it as a
    /// cold start (`fave_common::readiness`'s rule, the one rule fave has).
    pub fn call(&self, stage: &str, outcome: Outcome, took: Duration, cold_start: bool) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((stage.to_owned(), outcome))
            .or_default() += 1;
        self.durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(stage.to_owned())
            .or_default()
            .observe(took.as_secs_f64());
        if cold_start {
            self.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        scalar(
            &mut out,
            "fave_requests_accepted_total",
            "counter",
            "Requests accepted by this replica.",
            load(&self.accepted),
        );
        header(
            &mut out,
            "fave_requests_ended_total",
            "counter",
            "Requests this replica drove to an end, by status.",
        );
        for (status, c) in [
            (RequestStatus::Completed, &self.completed),
            (RequestStatus::Failed, &self.failed),
            (RequestStatus::Cancelled, &self.cancelled),
        ] {
            let _ = writeln!(
                out,
                "fave_requests_ended_total{{status=\"{}\"}} {}",
                status.as_str(),
                load(c)
            );
        }
        let written = &crate::record::WRITTEN;
        scalar(
            &mut out,
            "fave_state_writes_total",
            "counter",
            "Writes of state.json that landed (each rewrites the whole record).",
            load(&written.writes),
        );
        scalar(
            &mut out,
            "fave_state_written_bytes_total",
            "counter",
            "Bytes of state.json written, all writes that landed.",
            load(&written.bytes),
        );
        scalar(
            &mut out,
            "fave_drivers_in_flight",
            "gauge",
            "Requests this replica is driving now.",
            self.drivers.load(Ordering::Relaxed),
        );
        scalar(
            &mut out,
            "fave_stage_tasks_retrying",
            "gauge",
            "Stage tasks waiting for their next attempt now (an outage shows here).",
            self.retrying.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "fave_stage_calls_total",
            "counter",
            "Stage calls, by stage and outcome (retried: failed and tried again).",
        );
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let retries: u64 = calls
            .iter()
            .filter(|((_, o), _)| *o == Outcome::Retried)
            .map(|(_, n)| n)
            .sum();
        for ((stage, outcome), n) in &calls {
            let _ = writeln!(
                out,
                "fave_stage_calls_total{{stage=\"{stage}\",outcome=\"{}\"}} {n}",
                outcome.label()
            );
        }
        scalar(
            &mut out,
            "fave_stage_retries_total",
            "counter",
            "Stage calls that failed and were tried again.",
            retries,
        );
        scalar(
            &mut out,
            "fave_stage_cold_starts_total",
            "counter",
            "Stage calls their function reported as a cold start.",
            load(&self.cold_starts),
        );
        header(
            &mut out,
            "fave_stage_call_duration_seconds",
            "histogram",
            "Stage call time through the gateway.",
        );
        let durations = self
            .durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (stage, h) in &durations {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "fave_stage_call_duration_seconds_bucket{{stage=\"{stage}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "fave_stage_call_duration_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "fave_stage_call_duration_seconds_sum{{stage=\"{stage}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "fave_stage_call_duration_seconds_count{{stage=\"{stage}\"}} {}",
                h.count
            );
        }
        out
    }
}

/// A metric's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one value and no labels.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A task's wait for its next attempt, counted while it lives.
pub struct Waiting<'a>(&'a AtomicI64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_what_happened() {
        let m = Metrics::default();
        m.accepted();
        m.accepted();
        m.ended(RequestStatus::Completed);
        m.ended(RequestStatus::Running);
        m.drivers(1);
        let waiting = m.waiting_to_retry();
        let also = m.waiting_to_retry();
        drop(also);
        let s = Duration::from_secs_f64;
        m.call("stage-detect", Outcome::Retried, s(0.2), false);
        m.call("stage-detect", Outcome::Succeeded, s(3.0), true);
        m.call("stage-detect", Outcome::Succeeded, s(0.7), false);
        // Only what the functions reported counts, however long a call took.
        m.call("stage-audio", Outcome::Succeeded, s(0.1), true);
        m.call("stage-audio", Outcome::Succeeded, s(3.0), false);
        let text = m.render();
        for line in [
            "fave_requests_accepted_total 2",
            "fave_requests_ended_total{status=\"COMPLETED\"} 1",
            "fave_requests_ended_total{status=\"FAILED\"} 0",
            "fave_drivers_in_flight 1",
            "fave_stage_tasks_retrying 1",
            "fave_stage_calls_total{stage=\"stage-detect\",outcome=\"succeeded\"} 2",
            "fave_stage_calls_total{stage=\"stage-detect\",outcome=\"retried\"} 1",
            "fave_stage_retries_total 1",
            "fave_stage_cold_starts_total 2",
            "fave_stage_call_duration_seconds_bucket{stage=\"stage-detect\",le=\"0.25\"} 1",
            "fave_stage_call_duration_seconds_bucket{stage=\"stage-detect\",le=\"1\"} 2",
            "fave_stage_call_duration_seconds_bucket{stage=\"stage-detect\",le=\"+Inf\"} 3",
            "fave_stage_call_duration_seconds_count{stage=\"stage-detect\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        drop(waiting);
        assert!(
            m.render()
                .lines()
                .any(|l| l == "fave_stage_tasks_retrying 0")
        );
    }
}
