//! One replica slot's process, for as long as the slot is wanted: start the binary with
//! `FAVE_LISTEN_ADDR=127.0.0.1:0` so it binds any free port and writes the address to
//! `FAVE_ADDR_FILE` (no "free port" another process can take between our choosing it and
//! the function binding it), poll `GET /healthz` there, and mark the slot ready. A process
//! that exits is started again with backoff; one that is scaled away first finishes the
//! calls it holds, then gets SIGTERM (SIGKILL after a grace period).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::supervisor::{Function, Replica, SupervisorOptions};

/// How long a process has to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A process that served this long before it ended starts the backoff over, as a pod's
/// CrashLoopBackOff resets after it ran fine: only crashes close together are slowed.
const HEALTHY_RESETS_BACKOFF: Duration = Duration::from_secs(10);

pub(crate) struct Runner {
    function: Arc<Function>,
    index: usize,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    /// Where the process writes the address it bound.
    addr_file: PathBuf,
    log_file: Option<PathBuf>,
    health_timeout: Duration,
    /// For health checks; built once, so building it is not part of a cold start.
    http: reqwest::Client,
    desired: watch::Receiver<usize>,
    shutdown: watch::Receiver<bool>,
}

/// How one process's life ended.
enum Ended {
    /// The supervisor is stopping: the runner ends too.
    Shutdown,
    /// The slot is no longer wanted.
    ScaledDown,
    /// It exited, never got healthy, or could not be spawned: start again after a pause.
    /// `served` is how long it was healthy (zero if never).
    Failed { served: Duration },
}

/// The pause before the next start after a failed process that served for `served`, and
/// the backoff after that one.
fn backoff_after(backoff: Duration, served: Duration) -> (Duration, Duration) {
    let wait = if served >= HEALTHY_RESETS_BACKOFF {
        FIRST_BACKOFF
    } else {
        backoff
    };
    (wait, (wait * 2).min(MAX_BACKOFF))
}

impl Runner {
    pub(crate) fn new(
        function: Arc<Function>,
        index: usize,
        binary: PathBuf,
        options: &SupervisorOptions,
        run_dir: &Path,
        http: reqwest::Client,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let name = &function.name;
        let mut env = function.spec.environment.clone();
        env.extend(options.extra_env.clone());
        let addr_file = run_dir.join(format!("{name}-{index}.addr"));
        env.insert("FAVE_LISTEN_ADDR".into(), "127.0.0.1:0".into());
        env.insert(
            "FAVE_ADDR_FILE".into(),
            addr_file.to_string_lossy().into_owned(),
        );
        // Like a pod's name: stable across restarts of this replica, unique among live ones;
        // prefixed by `FAVE_STACK_NAME` when set, for stacks that share one store.
        let stack = env
            .get("FAVE_STACK_NAME")
            .map(|s| format!("{s}-"))
            .unwrap_or_default();
        env.insert("FAVE_REPLICA_ID".into(), format!("{stack}{name}-{index}"));
        let log_name = match index {
            0 => format!("{name}.log"),
            i => format!("{name}-{i}.log"),
        };
        Self {
            desired: function.watch_desired(),
            log_file: options.log_dir.as_ref().map(|d| d.join(log_name)),
            function,
            index,
            binary,
            env,
            addr_file,
            health_timeout: options.health_timeout,
            http,
            shutdown,
        }
    }

    fn replica(&self) -> &Replica {
        &self.function.replicas[self.index]
    }

    pub(crate) async fn run(mut self) {
        let index = self.index;
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::select! {
                wanted = wanted(&mut self.desired, index) => if !wanted { return },
                () = stopping(&mut self.shutdown) => return,
            }
            match self.run_process().await {
                Ended::Shutdown => return,
                Ended::ScaledDown => backoff = FIRST_BACKOFF,
                Ended::Failed { served } => {
                    let (wait, next) = backoff_after(backoff, served);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stopping(&mut self.shutdown) => return,
                    }
                    backoff = next;
                }
            }
        }
    }

    /// One process, from spawn to its end.
    async fn run_process(&mut self) -> Ended {
        let name = self.function.name.clone();
        let index = self.index;
        let spawned = Instant::now();
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(function = %name, replica = index, error = %e, "could not start function");
                return Ended::Failed {
                    served: Duration::ZERO,
                };
            }
        };
        self.replica().record_start(child.id());
        let healthy = tokio::select! {
            port = wait_healthy(&self.http, &self.addr_file, self.health_timeout, &mut child) => Ok(port),
            () = unwanted(&mut self.desired, index) => Err(Ended::ScaledDown),
            () = stopping(&mut self.shutdown) => Err(Ended::Shutdown),
        };
        let port = match healthy {
            Ok(Some(port)) => port,
            Ok(None) => {
                tracing::warn!(function = %name, replica = index, "function not healthy in time; restarting");
                let _ = child.kill().await;
                self.replica().clear_pid();
                return Ended::Failed {
                    served: Duration::ZERO,
                };
            }
            Err(ended) => {
                terminate(&mut child).await;
                self.replica().clear_pid();
                return ended;
            }
        };
        let cold_start = spawned.elapsed();
        if !self.function.mark_ready(index, port, cold_start) {
            terminate(&mut child).await;
            self.replica().clear_pid();
            return Ended::ScaledDown;
        }
        tracing::info!(
            function = %name,
            replica = index,
            port,
            cold_start_ms = cold_start.as_secs_f64() * 1000.0,
            "function healthy"
        );
        let healthy_at = Instant::now();
        let ended = tokio::select! {
            status = child.wait() => {
                self.function.mark_not_ready(index);
                tracing::warn!(function = %name, replica = index, ?status, "function exited; restarting");
                Ended::Failed { served: healthy_at.elapsed() }
            }
            () = unwanted(&mut self.desired, index) => {
                self.function.mark_not_ready(index);
                self.drain().await;
                terminate(&mut child).await;
                tracing::info!(function = %name, replica = index, "replica stopped (scaled down)");
                Ended::ScaledDown
            }
            () = stopping(&mut self.shutdown) => {
                self.function.mark_not_ready(index);
                terminate(&mut child).await;
                Ended::Shutdown
            }
        };
        self.replica().clear_pid();
        ended
    }

    /// Waits until the calls this replica holds have ended (or the supervisor stops).
    async fn drain(&mut self) {
        let mut changes = self.function.watch_changes();
        while self.replica().in_flight() > 0 && !*self.shutdown.borrow() {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = stopping(&mut self.shutdown) => return,
            }
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        // An address left by the previous process is not this one's.
        match std::fs::remove_file(&self.addr_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut command = Command::new(&self.binary);
        command
            .envs(&self.env)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(path) = &self.log_file {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        command.spawn()
    }
}

// The watch guards `wait_for` returns hold a read lock: these helpers drop them at once,
// so no handler below keeps one across an await (which would block `set_desired`).

/// Until slot `index` is wanted; `false` if the function is gone.
async fn wanted(desired: &mut watch::Receiver<usize>, index: usize) -> bool {
    desired.wait_for(|d| *d > index).await.is_ok()
}

/// Until slot `index` is no longer wanted.
async fn unwanted(desired: &mut watch::Receiver<usize>, index: usize) {
    let _ = desired.wait_for(|d| *d <= index).await;
}

/// Until the supervisor stops (or is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Waits for the process to write the address it bound, then polls `/healthz` there until
/// it answers 200; `None` if the process exits or time runs out first.
async fn wait_healthy(
    client: &reqwest::Client,
    addr_file: &Path,
    timeout: Duration,
    child: &mut Child,
) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut port = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if port.is_none() {
            port = std::fs::read_to_string(addr_file)
                .ok()
                .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port());
        }
        if let Some(port) = port
            && let Ok(r) = client
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            && r.status().is_success()
        {
            return Some(port);
        }
        // Short polls: this loop is the cold start a caller waits for.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// SIGTERM, then SIGKILL if the process has not exited after [`GRACE`].
async fn terminate(child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashes_close_together_back_off_and_a_process_that_served_starts_it_over() {
        let quick = Duration::from_millis(50);
        let mut backoff = FIRST_BACKOFF;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let (wait, next) = backoff_after(backoff, quick);
            waits.push(wait);
            backoff = next;
        }
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert_eq!(waits[1], FIRST_BACKOFF * 2);
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF, "capped: {waits:?}");
        // After a process that ran fine for a while, the next crash waits the least again.
        let (wait, next) = backoff_after(backoff, HEALTHY_RESETS_BACKOFF);
        assert_eq!((wait, next), (FIRST_BACKOFF, FIRST_BACKOFF * 2));
    }
}
