//! When a function process can serve, and whether a call paid for its start: one place for
//! both, so cold starts are told the same way under fave's local gateway and OpenFaaS's.
//!
//! A function binds its port first (within milliseconds of starting: of-watchdog reports the
//! pod healthy without asking the function, so a call may come at once) and loads its model
//! afterwards, on a thread of its own ([`Loading`]). A call that needs the model waits for
//! it, up to the load timeout (`FAVE_MODEL_LOAD_TIMEOUT_SECS`, default 120), and then gets a
//! retryable 503 `model_loading` instead of a refused connection.
//!
//! The process is **ready** once it listens and every [`Loading`] it started has ended. The
//! **cold-start rule** ([`cold_start`]): a call is a cold start when it is the first call its
//! process serves and it arrived within [`COLD_WINDOW`] of the process's start (a replica
//! started for it, or moments before it); its cost is the time from the process's start until
//! the process could serve it: the later of its arrival and readiness. The harness puts that
//! on the answer as [`crate::gateway::COLD_START`], which the orchestrator records as the
//! stage's `cold_start_ms`. What happens before the process starts (scheduling a pod, pulling
//! an image) is not in it: only a platform sees that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::stage::StageError;

/// A first call that arrives later than this after its process started is not a cold start:
/// the replica was idle and ready before it (a warm pool).
pub const COLD_WINDOW: Duration = Duration::from_secs(30);

/// How long a call waits for a model still loading, by default.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Progress {
    listening: bool,
    loading: usize,
    ready_at: Option<Instant>,
}

impl Progress {
    fn settle(&mut self) {
        if self.listening && self.loading == 0 && self.ready_at.is_none() {
            self.ready_at = Some(Instant::now());
        }
    }
}

fn started_cell() -> &'static OnceLock<Instant> {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    &STARTED
}

fn progress() -> std::sync::MutexGuard<'static, Progress> {
    static PROGRESS: Mutex<Progress> = Mutex::new(Progress {
        listening: false,
        loading: 0,
        ready_at: None,
    });
    PROGRESS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Notes the process's start; the first call wins, so call it first thing in `main`.
pub fn mark_started() -> Instant {
    *started_cell().get_or_init(Instant::now)
}

/// Notes that the process accepts connections.
pub fn mark_listening() {
    let mut p = progress();
    p.listening = true;
    p.settle();
}

/// When the process became ready, if it is.
pub fn ready_at() -> Option<Instant> {
    progress().ready_at
}

/// The rule, as a pure function of the times: the cold-start cost of a call that arrived at
/// `arrived`, the first of a process started at `started` and ready at `ready` (if it is).
pub fn cold_start(
    started: Instant,
    arrived: Instant,
    ready: Option<Instant>,
    first: bool,
) -> Option<Duration> {
    let age = arrived.saturating_duration_since(started);
    if !first || age > COLD_WINDOW {
        return None;
    }
    let servable = ready.map_or(arrived, |r| r.max(arrived));
    Some(servable.saturating_duration_since(started))
}

/// Tells each call whether it is its process's first, once.
#[derive(Debug, Default)]
pub struct FirstCall(AtomicBool);

impl FirstCall {
    /// True for exactly one caller.
    pub fn take(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }
}

/// `FAVE_MODEL_LOAD_TIMEOUT_SECS` from `lookup`, else [`DEFAULT_LOAD_TIMEOUT`].
pub fn load_timeout(lookup: &dyn Fn(&str) -> Option<String>) -> Duration {
    lookup("FAVE_MODEL_LOAD_TIMEOUT_SECS")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_LOAD_TIMEOUT, Duration::from_secs)
}

type Loaded<T> = Option<Result<Arc<T>, String>>;

/// A model loading on a thread of its own while the function already serves. Calls that need
/// it [`get`](Loading::get) it: at once when loaded, after a wait while it loads (at most the
/// load timeout), or the load's error.
pub struct Loading<T> {
    what: &'static str,
    rx: watch::Receiver<Loaded<T>>,
    timeout: Duration,
}

impl<T: Send + Sync + 'static> Loading<T> {
    /// Starts `load` on a thread named after `what` and returns at once.
    pub fn start(
        what: &'static str,
        timeout: Duration,
        load: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Self {
        let (tx, rx) = watch::channel(None);
        progress().loading += 1;
        let done = move |loaded: Loaded<T>| {
            let _ = tx.send(loaded);
            let mut p = progress();
            p.loading -= 1;
            p.settle();
        };
        let spawned = std::thread::Builder::new()
            .name(format!("load-{what}"))
            .spawn(move || {
                let clock = Instant::now();
                let loaded = load().map(Arc::new);
                match &loaded {
                    Ok(_) => tracing::info!(
                        model = what,
                        load_ms = clock.elapsed().as_millis() as u64,
                        "model loaded"
                    ),
                    Err(e) => tracing::error!(model = what, error = %e, "loading the model failed"),
                }
                done(Some(loaded));
            });
        if let Err(e) = spawned {
            // The receiver then sees the sender gone: calls that need the model say why.
            tracing::error!(model = what, error = %e, "could not start the model loader");
            let mut p = progress();
            p.loading -= 1;
            p.settle();
        }
        Self { what, rx, timeout }
    }

    /// The model, once loaded; a retryable `model_loading` error when it is still loading
    /// after the load timeout; the load's own error, for good, when it failed.
    pub async fn get(&self) -> Result<Arc<T>, StageError> {
        let mut rx = self.rx.clone();
        let waited = tokio::time::timeout(self.timeout, rx.wait_for(Option::is_some)).await;
        let loaded = match waited {
            Err(_) => {
                return Err(StageError::Unavailable {
                    code: "model_loading",
                    message: format!(
                        "the {} model is still loading after {:?}; try again",
                        self.what, self.timeout
                    ),
                });
            }
            Ok(Err(_)) => {
                return Err(StageError::Internal(format!(
                    "the {} model loader is gone",
                    self.what
                )));
            }
            Ok(Ok(loaded)) => loaded,
        };
        match &*loaded {
            Some(Ok(model)) => Ok(model.clone()),
            Some(Err(e)) => Err(StageError::Internal(e.clone())),
            None => Err(StageError::Internal(format!(
                "the {} model is not loaded",
                self.what
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_prompt_first_call_is_cold_and_it_costs_until_ready() {
        let s = Instant::now();
        let at = |ms| s + Duration::from_millis(ms);
        // Arrived at 40 ms, model ready at 900 ms: it could be served at 900 ms.
        assert_eq!(
            cold_start(s, at(40), Some(at(900)), true),
            Some(Duration::from_millis(900))
        );
        // Ready before it came: its arrival is when it could be served.
        assert_eq!(
            cold_start(s, at(2000), Some(at(900)), true),
            Some(Duration::from_millis(2000))
        );
        // Not ready yet (a call that needs no model): its arrival.
        assert_eq!(
            cold_start(s, at(40), None, true),
            Some(Duration::from_millis(40))
        );
        assert_eq!(cold_start(s, at(40), Some(at(900)), false), None);
        let late = s + COLD_WINDOW + Duration::from_millis(1);
        assert_eq!(cold_start(s, late, Some(at(900)), true), None);
    }

    #[test]
    fn the_first_call_is_taken_once() {
        let first = FirstCall::default();
        assert!(first.take());
        assert!(!first.take());
        assert!(!first.take());
    }

    #[tokio::test]
    async fn a_call_waits_for_the_model_then_gets_it() {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let loading = Loading::start("test", Duration::from_secs(30), move || {
            gate.recv().map_err(|e| e.to_string())?;
            Ok(7u32)
        });
        let waiting = tokio::spawn(async move { loading.get().await.map(|m| *m) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "the call waits while the model loads"
        );
        release.send(()).expect("the loader waits");
        assert_eq!(waiting.await.expect("joins").expect("loaded"), 7);
    }

    #[tokio::test]
    async fn a_model_still_loading_after_the_timeout_is_a_retryable_refusal() {
        let (_release, gate) = std::sync::mpsc::channel::<()>();
        let loading = Loading::start("slow", Duration::from_millis(50), move || {
            let _ = gate.recv_timeout(Duration::from_secs(5));
            Ok(())
        });
        let err = loading.get().await.expect_err("still loading");
        assert!(
            matches!(
                err,
                StageError::Unavailable {
                    code: "model_loading",
                    ..
                }
            ),
            "{err}"
        );
        let api = crate::error::ApiError::from(err);
        assert_eq!((api.status.as_u16(), api.retryable), (503, true));
    }

    #[tokio::test]
    async fn a_model_that_fails_to_load_fails_calls_and_says_why() {
        let loading: Loading<()> = Loading::start("broken", Duration::from_secs(5), || {
            Err("no model in /nonexistent".into())
        });
        let err = loading.get().await.expect_err("no model");
        assert!(
            matches!(&err, StageError::Internal(m) if m.contains("/nonexistent")),
            "{err}"
        );
    }
}
