//! Runs each function of a stack as local processes, the way a provider runs replicas.
//!
//! A [`Function`] has one slot per replica it may ever run (its `com.openfaas.scale.max`)
//! and a desired replica count; slot `i` runs a process while `i < desired` (see
//! [`crate::runner`] for one slot's process: start with port 0, wait for `/healthz`,
//! restart on exit, drain and stop on scale-down). What changes the desired count:
//!
//! - deploy: `com.openfaas.scale.min` (or [`SupervisorOptions::replicas`]), 0 allowed;
//! - [`Supervisor::scale`] (`POST /system/scale-function/{name}`), clamped to the max;
//! - a call to a function at zero: [`Function::call`] scales it to `max(min, 1)` and waits
//!   for a healthy replica, as OpenFaaS's gateway does in `scale_from_zero`;
//! - idling: with `com.openfaas.scale.zero=true`, no call in flight and none for
//!   `com.openfaas.scale.zero-duration`, the function goes to zero.
//!
//! Calls are spread round-robin over the healthy replicas. A [`Call`] holds its replica
//! until dropped, so a replica being scaled down finishes its calls before it is stopped,
//! and the idle clock starts when the last call ends.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::runner::Runner;
use crate::scaling::{ScaleLabelError, ScalePolicy};
use crate::stack_file::{FunctionSpec, StackFile};

/// How to run a stack's functions.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Where the function binaries are; each is named after its function.
    pub bin_dir: PathBuf,
    /// Set for every function after stack.yml's environment (the local gateway's URL, the
    /// embedded store's endpoint and credentials, local mode).
    pub extra_env: BTreeMap<String, String>,
    /// Each function's stdout and stderr go to `{log_dir}/{name}.log` (`{name}-{i}.log`
    /// for replica `i` > 0); inherited if `None`.
    pub log_dir: Option<PathBuf>,
    /// How long a process may take to answer its health check before it is restarted.
    pub health_timeout: Duration,
    /// Replicas per function at start, overriding stack.yml's `com.openfaas.scale.min`
    /// (and raising its max if needed).
    pub replicas: BTreeMap<String, usize>,
}

/// Why the stack's functions could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(
        "no binary for function {function} at {path}; build it with `cargo build --workspace --bins`"
    )]
    MissingBinary { function: String, path: String },
    #[error("function {function}: {source}")]
    Labels {
        function: String,
        source: ScaleLabelError,
    },
    #[error("function {function} did not become healthy within {timeout:?}{log_hint}")]
    Unhealthy {
        function: String,
        timeout: Duration,
        log_hint: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why a replica count could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    #[error("function {0} not found")]
    NotFound(String),
}

/// Locks a mutex whose data stays consistent even if a holder panicked (counters, ports).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One replica slot of a function: at most one process at a time.
#[derive(Debug)]
pub struct Replica {
    pub index: usize,
    serving: Mutex<Serving>,
    starts: AtomicU64,
    /// The process id of the current process (0 when none).
    pid: AtomicU32,
    invocations: AtomicU64,
}

#[derive(Debug, Default)]
struct Serving {
    /// `Some(port)` while a healthy process takes calls.
    port: Option<u16>,
    /// Calls forwarded to this replica that have not ended.
    in_flight: usize,
}

impl Replica {
    fn new(index: usize) -> Self {
        Self {
            index,
            serving: Mutex::default(),
            starts: AtomicU64::new(0),
            pid: AtomicU32::new(0),
            invocations: AtomicU64::new(0),
        }
    }

    /// The current process's id, e.g. for a test that kills it.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }

    pub fn ready_port(&self) -> Option<u16> {
        lock(&self.serving).port
    }

    /// How many times a process was started in this slot.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// Calls the gateway forwarded to this replica.
    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.serving).in_flight
    }

    pub(crate) fn record_start(&self, pid: Option<u32>) {
        self.starts.fetch_add(1, Ordering::Relaxed);
        self.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
    }

    pub(crate) fn clear_pid(&self) {
        self.pid.store(0, Ordering::Relaxed);
    }
}

/// When the function was last busy, for scaling to zero.
#[derive(Debug)]
struct Activity {
    /// Calls that arrived and have not ended (waiting for a replica, or forwarded).
    in_flight: usize,
    /// When `in_flight` last fell to zero, or the function was last scaled up.
    idle_since: Instant,
}

/// How long one process took from spawn to its first healthy answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdStart {
    pub replica: usize,
    pub spawn_to_healthy: Duration,
}

/// The most cold starts kept per function (the latest).
const COLD_STARTS_KEPT: usize = 1000;

/// One function of the stack and its replica slots.
#[derive(Debug)]
pub struct Function {
    pub name: String,
    pub spec: FunctionSpec,
    pub policy: ScalePolicy,
    /// One slot per replica the function may run (`policy.max`); slot `i` runs a process
    /// while `i` is below [`Function::desired`].
    pub replicas: Vec<Replica>,
    desired: watch::Sender<usize>,
    /// Bumped whenever a replica's readiness or calls change, to wake whoever waits on it.
    changes: watch::Sender<()>,
    activity: Mutex<Activity>,
    /// Set when the function leaves zero, cleared when a replica is next healthy: a call
    /// that finds no replica meanwhile is waiting for a cold start.
    starting_from_zero: AtomicBool,
    invocations: AtomicU64,
    /// Round-robin position for spreading calls over healthy replicas.
    next: AtomicUsize,
    cold_starts: Mutex<VecDeque<ColdStart>>,
}

impl Function {
    fn new(name: &str, spec: &FunctionSpec, policy: ScalePolicy, initial: usize) -> Self {
        Self {
            name: name.to_owned(),
            spec: spec.clone(),
            policy,
            replicas: (0..policy.max).map(Replica::new).collect(),
            desired: watch::channel(initial).0,
            changes: watch::channel(()).0,
            activity: Mutex::new(Activity {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
            starting_from_zero: AtomicBool::new(false),
            invocations: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            cold_starts: Mutex::default(),
        }
    }

    /// The replica count asked for (OpenFaaS's `replicas`).
    pub fn desired(&self) -> usize {
        *self.desired.borrow()
    }

    pub(crate) fn watch_desired(&self) -> watch::Receiver<usize> {
        self.desired.subscribe()
    }

    pub(crate) fn watch_changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Sets the replica count (already clamped). Slots at or above it stop taking calls
    /// at once; their runners drain and stop them.
    fn set_desired(&self, n: usize) {
        let before = self.desired.send_replace(n);
        if before == 0 && n > 0 {
            self.starting_from_zero.store(true, Ordering::Relaxed);
        }
        for replica in &self.replicas[n.min(self.replicas.len())..] {
            lock(&replica.serving).port = None;
        }
        self.changes.send_replace(());
    }

    /// Sets the replica count, clamped to the max; returns the count set.
    pub fn scale(&self, replicas: usize) -> usize {
        let n = replicas.min(self.policy.max);
        let mut activity = lock(&self.activity);
        // A scale-up counts as activity: the idle clock starts again.
        if n > self.desired() {
            activity.idle_since = Instant::now();
        }
        self.set_desired(n);
        n
    }

    /// Marks slot `index` healthy on `port`, unless it was scaled away meanwhile.
    pub(crate) fn mark_ready(&self, index: usize, port: u16, cold_start: Duration) -> bool {
        let replica = &self.replicas[index];
        {
            let mut serving = lock(&replica.serving);
            if index >= self.desired() {
                return false;
            }
            serving.port = Some(port);
        }
        self.starting_from_zero.store(false, Ordering::Relaxed);
        let mut kept = lock(&self.cold_starts);
        if kept.len() == COLD_STARTS_KEPT {
            kept.pop_front();
        }
        kept.push_back(ColdStart {
            replica: index,
            spawn_to_healthy: cold_start,
        });
        drop(kept);
        self.changes.send_replace(());
        true
    }

    pub(crate) fn mark_not_ready(&self, index: usize) {
        lock(&self.replicas[index].serving).port = None;
        self.changes.send_replace(());
    }

    /// Takes a healthy replica among the desired ones, in turn, counting the call on it.
    fn pick(&self) -> Option<(usize, u16)> {
        let n = self.desired().min(self.replicas.len());
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| {
            let index = (first + i) % n;
            let replica = &self.replicas[index];
            let mut serving = lock(&replica.serving);
            let port = serving.port?;
            serving.in_flight += 1;
            replica.invocations.fetch_add(1, Ordering::Relaxed);
            Some((index, port))
        })
    }

    /// A call arrives: counts it in flight and, at zero replicas, scales from zero.
    /// Returns whether it will wait for a cold start.
    fn arrive(&self) -> bool {
        let mut activity = lock(&self.activity);
        activity.in_flight += 1;
        if self.desired() == 0 {
            self.set_desired(self.policy.from_zero_target());
            tracing::info!(function = %self.name, replicas = self.desired(), "scaling from zero");
        }
        drop(activity);
        self.available() == 0 && self.starting_from_zero.load(Ordering::Relaxed)
    }

    /// A call ends: once none is left, the idle clock starts.
    fn depart(&self, replica: Option<usize>) {
        if let Some(index) = replica {
            let mut serving = lock(&self.replicas[index].serving);
            serving.in_flight = serving.in_flight.saturating_sub(1);
        }
        let mut activity = lock(&self.activity);
        activity.in_flight = activity.in_flight.saturating_sub(1);
        if activity.in_flight == 0 {
            activity.idle_since = Instant::now();
        }
        drop(activity);
        self.changes.send_replace(());
    }

    /// Scales to zero if the function may and has been idle long enough; the check and
    /// the change happen under the same lock a call takes when it arrives, so a call
    /// either counts as activity or finds zero replicas and scales back up.
    fn scale_to_zero_if_idle(&self) -> bool {
        let activity = lock(&self.activity);
        let idle = activity.in_flight == 0
            && activity.idle_since.elapsed() >= self.policy.zero_duration
            && self.desired() > 0;
        if idle {
            self.set_desired(0);
        }
        idle
    }

    /// Starts a call: waits up to `timeout` for a healthy replica (scaling from zero if
    /// the function is at zero) and holds it until the returned [`Call`] is dropped.
    pub async fn call(self: &Arc<Self>, timeout: Duration) -> Result<Call, NotReady> {
        let arrived = Instant::now();
        let mut changes = self.changes.subscribe();
        let cold = self.arrive();
        let mut call = Call {
            function: self.clone(),
            replica: None,
            port: 0,
            cold_wait: None,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((index, port)) = self.pick() {
                call.replica = Some(index);
                call.port = port;
                call.cold_wait = cold.then(|| arrived.elapsed());
                return Ok(call);
            }
            if self.desired() == 0 {
                // Scaled to zero by hand while this call waited: it still needs a replica.
                let _ = self.scale(self.policy.from_zero_target());
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(NotReady {
                    waited: arrived.elapsed(),
                    from_zero: cold,
                });
            }
        }
    }

    /// The port of a healthy replica, waiting up to `timeout` for one (a start, or a
    /// restart after a crash). Does not scale from zero.
    pub async fn wait_ready(&self, timeout: Duration) -> Option<u16> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(port) = self.ready_port() {
                return Some(port);
            }
            tokio::time::timeout_at(deadline, changes.changed())
                .await
                .ok()?
                .ok()?;
        }
    }

    /// A healthy replica's port, if any.
    pub fn ready_port(&self) -> Option<u16> {
        self.replicas.iter().find_map(Replica::ready_port)
    }

    /// How many replicas are healthy and taking calls now (OpenFaaS's `availableReplicas`).
    pub fn available(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.ready_port().is_some())
            .count()
    }

    pub fn count_invocation(&self) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }

    /// The first replica's process id.
    pub fn pid(&self) -> Option<u32> {
        self.replicas.first().and_then(Replica::pid)
    }

    /// Processes started over all replicas (starts from zero, scale-ups and restarts).
    pub fn starts(&self) -> u64 {
        self.replicas.iter().map(Replica::starts).sum()
    }

    /// Spawn → first healthy answer of every process that became healthy, oldest first
    /// (the latest 1000).
    pub fn cold_starts(&self) -> Vec<ColdStart> {
        lock(&self.cold_starts).iter().copied().collect()
    }
}

/// A call holding a healthy replica; dropping it ends the call (after the answer's body
/// has been sent, when it is moved into the body).
#[derive(Debug)]
pub struct Call {
    function: Arc<Function>,
    replica: Option<usize>,
    port: u16,
    cold_wait: Option<Duration>,
}

impl Call {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Which replica slot takes the call.
    pub fn replica(&self) -> usize {
        self.replica.unwrap_or(0)
    }

    /// How long the call waited for a start from zero, if it had to.
    pub fn cold_wait(&self) -> Option<Duration> {
        self.cold_wait
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.function.depart(self.replica);
    }
}

/// No healthy replica in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady {
    pub waited: Duration,
    /// Whether the call was waiting for a start from zero (else a restart).
    pub from_zero: bool,
}

/// The running functions. Dropping it stops them.
pub struct Supervisor {
    functions: BTreeMap<String, Arc<Function>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Where the processes write the addresses they bound.
    run_dir: tempfile::TempDir,
}

impl Supervisor {
    /// Starts every function of `stack` at its initial replica count and waits until
    /// those replicas are healthy.
    pub async fn start(
        stack: &StackFile,
        options: SupervisorOptions,
    ) -> Result<Self, SupervisorError> {
        if let Some(dir) = &options.log_dir {
            std::fs::create_dir_all(dir)?;
        }
        let (shutdown, _) = watch::channel(false);
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let mut supervisor = Self {
            functions: BTreeMap::new(),
            shutdown,
            tasks: JoinSet::new(),
            run_dir: tempfile::Builder::new().prefix("fave-run-").tempdir()?,
        };
        for (name, spec) in &stack.functions {
            let binary = options.bin_dir.join(name);
            if !binary.is_file() {
                return Err(SupervisorError::MissingBinary {
                    function: name.clone(),
                    path: binary.display().to_string(),
                });
            }
            let mut policy = ScalePolicy::from_labels(&spec.labels).map_err(|source| {
                SupervisorError::Labels {
                    function: name.clone(),
                    source,
                }
            })?;
            if let Some(&n) = options.replicas.get(name) {
                policy.min = n;
                policy.max = policy.max.max(n);
            }
            let function = Arc::new(Function::new(name, spec, policy, policy.min));
            for replica in &function.replicas {
                let runner = Runner::new(
                    function.clone(),
                    replica.index,
                    binary.clone(),
                    &options,
                    supervisor.run_dir.path(),
                    http.clone(),
                    supervisor.shutdown.subscribe(),
                );
                supervisor.tasks.spawn(runner.run());
            }
            if policy.zero {
                supervisor.tasks.spawn(idle_watch(
                    function.clone(),
                    supervisor.shutdown.subscribe(),
                ));
            }
            supervisor.functions.insert(name.clone(), function);
        }
        for function in supervisor.functions.values() {
            let mut changes = function.watch_changes();
            let deadline = tokio::time::Instant::now() + options.health_timeout;
            while function.available() < function.desired() {
                if !matches!(
                    tokio::time::timeout_at(deadline, changes.changed()).await,
                    Ok(Ok(()))
                ) {
                    let log_hint = match &options.log_dir {
                        Some(dir) => format!("; see the logs in {}", dir.display()),
                        None => String::new(),
                    };
                    return Err(SupervisorError::Unhealthy {
                        function: function.name.clone(),
                        timeout: options.health_timeout,
                        log_hint,
                    });
                }
            }
        }
        Ok(supervisor)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Function>> {
        self.functions.get(name)
    }

    pub fn functions(&self) -> impl Iterator<Item = &Arc<Function>> {
        self.functions.values()
    }

    /// Sets a function's replica count, clamped to its max (0 allowed); returns the count
    /// set. New replicas start in the background; removed ones finish their calls first.
    pub fn scale(&self, name: &str, replicas: usize) -> Result<usize, ScaleError> {
        let function = self
            .get(name)
            .ok_or_else(|| ScaleError::NotFound(name.to_owned()))?;
        let set = function.scale(replicas);
        tracing::info!(function = %name, requested = replicas, replicas = set, "scaled");
        Ok(set)
    }

    /// Every function's cold starts (spawn → healthy), for benchmarks.
    pub fn cold_starts(&self) -> BTreeMap<String, Vec<ColdStart>> {
        self.functions
            .iter()
            .map(|(name, f)| (name.clone(), f.cold_starts()))
            .collect()
    }

    /// Sends SIGTERM to every process, waits for them to exit (SIGKILL after a grace period).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Child processes are `kill_on_drop`, so aborting the runners stops them too.
        let _ = self.shutdown.send(true);
        self.tasks.abort_all();
    }
}

/// Scales `function` to zero whenever it has been idle for its zero-duration.
async fn idle_watch(function: Arc<Function>, mut shutdown: watch::Receiver<bool>) {
    let tick = (function.policy.zero_duration / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if function.scale_to_zero_if_idle() {
            tracing::info!(
                function = %function.name,
                idle_for = ?function.policy.zero_duration,
                "scaled to zero after idling"
            );
        }
    }
}
