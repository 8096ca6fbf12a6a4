//! Runs each function of a stack as a local process, the way a provider runs replicas: it
//! starts the function's binary with stack.yml's environment, lets it bind any free port
//! and write the address to a file (`FAVE_ADDR_FILE`), waits until `GET /healthz` answers
//! there, and starts it again whenever it exits. The gateway asks
//! [`Function::wait_ready`] before it forwards a call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::stack_file::{FunctionSpec, StackFile};

/// How to run a stack's functions.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Where the function binaries are; each is named after its function.
    pub bin_dir: PathBuf,
    /// Set for every function after stack.yml's environment (the local gateway's URL, the
    /// embedded store's endpoint and credentials, local mode).
    pub extra_env: BTreeMap<String, String>,
    /// Each function's stdout and stderr go to `{log_dir}/{name}.log`; inherited if `None`.
    pub log_dir: Option<PathBuf>,
    /// How long a process may take to answer its health check before it is restarted.
    pub health_timeout: Duration,
    /// Replicas per function, overriding stack.yml's `com.openfaas.scale.min` label.
    pub replicas: BTreeMap<String, usize>,
}

/// Why the stack's functions could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(
        "no binary for function {function} at {path}; build it with `cargo build --workspace --bins`"
    )]
    MissingBinary { function: String, path: String },
    #[error("function {function} did not become healthy within {timeout:?}{log_hint}")]
    Unhealthy {
        function: String,
        timeout: Duration,
        log_hint: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One replica of a function: one process at a time, restarted when it exits.
#[derive(Debug)]
pub struct Replica {
    pub index: usize,
    /// `Some(port)` while a healthy process is serving.
    ready: watch::Sender<Option<u16>>,
    starts: AtomicU64,
    /// The process id of the current process (0 when none).
    pid: AtomicU32,
}

impl Replica {
    /// The current process's id, e.g. for a test that kills it.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }

    pub fn ready_port(&self) -> Option<u16> {
        *self.ready.borrow()
    }

    /// How many times a process was started (1 + restarts).
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }
}

/// One function of the stack and its replicas.
#[derive(Debug)]
pub struct Function {
    pub name: String,
    pub spec: FunctionSpec,
    pub replicas: Vec<Replica>,
    invocations: AtomicU64,
    /// Round-robin position for spreading calls over healthy replicas.
    next: AtomicUsize,
}

impl Function {
    /// The port of a healthy replica, taking them in turn; waits up to `timeout` for one
    /// when none is healthy (starting, or restarting after a crash).
    pub async fn wait_ready(&self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.replicas.len();
            let first = self.next.fetch_add(1, Ordering::Relaxed);
            if let Some(port) = (0..n).find_map(|i| self.replicas[(first + i) % n].ready_port()) {
                return Some(port);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A healthy replica's port, if any.
    pub fn ready_port(&self) -> Option<u16> {
        self.replicas.iter().find_map(Replica::ready_port)
    }

    /// How many replicas are healthy now.
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

    /// Processes started over all replicas (replicas + restarts).
    pub fn starts(&self) -> u64 {
        self.replicas.iter().map(Replica::starts).sum()
    }
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
    /// Starts every function of `stack` and waits until each is healthy.
    pub async fn start(
        stack: &StackFile,
        options: SupervisorOptions,
    ) -> Result<Self, SupervisorError> {
        if let Some(dir) = &options.log_dir {
            std::fs::create_dir_all(dir)?;
        }
        let (shutdown, _) = watch::channel(false);
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
            let count = options.replicas.get(name).copied().unwrap_or_else(|| {
                spec.labels
                    .get("com.openfaas.scale.min")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1)
            });
            let function = Arc::new(Function {
                name: name.clone(),
                spec: spec.clone(),
                replicas: (0..count.max(1))
                    .map(|index| Replica {
                        index,
                        ready: watch::channel(None).0,
                        starts: AtomicU64::new(0),
                        pid: AtomicU32::new(0),
                    })
                    .collect(),
                invocations: AtomicU64::new(0),
                next: AtomicUsize::new(0),
            });
            for replica in &function.replicas {
                let mut env = spec.environment.clone();
                env.extend(options.extra_env.clone());
                // Port 0: the process binds whatever port the OS gives it and writes the
                // address to its address file (no "free port" that another process can take
                // between our choosing it and the function binding it).
                let addr_file = supervisor
                    .run_dir
                    .path()
                    .join(format!("{name}-{}.addr", replica.index));
                env.insert("FAVE_LISTEN_ADDR".into(), "127.0.0.1:0".into());
                env.insert(
                    "FAVE_ADDR_FILE".into(),
                    addr_file.to_string_lossy().into_owned(),
                );
                // Like a pod's name: stable across restarts of this replica, unique among
                // live ones.
                env.insert(
                    "FAVE_REPLICA_ID".into(),
                    format!("{name}-{}", replica.index),
                );
                let log_name = match replica.index {
                    0 => format!("{name}.log"),
                    i => format!("{name}-{i}.log"),
                };
                let runner = Runner {
                    function: function.clone(),
                    replica: replica.index,
                    binary: binary.clone(),
                    env,
                    addr_file,
                    log_file: options.log_dir.as_ref().map(|d| d.join(log_name)),
                    health_timeout: options.health_timeout,
                    shutdown: supervisor.shutdown.subscribe(),
                };
                supervisor.tasks.spawn(runner.run());
            }
            supervisor.functions.insert(name.clone(), function);
        }
        for function in supervisor.functions.values() {
            for replica in &function.replicas {
                let mut ready = replica.ready.subscribe();
                let healthy =
                    tokio::time::timeout(options.health_timeout, ready.wait_for(Option::is_some))
                        .await;
                if !matches!(healthy, Ok(Ok(_))) {
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

struct Runner {
    function: Arc<Function>,
    replica: usize,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    /// Where the process writes the address it bound.
    addr_file: PathBuf,
    log_file: Option<PathBuf>,
    health_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

const GRACE: Duration = Duration::from_secs(5);

impl Runner {
    fn replica(&self) -> &Replica {
        &self.function.replicas[self.replica]
    }

    async fn run(mut self) {
        let name = self.function.name.clone();
        let mut backoff = Duration::from_millis(100);
        while !*self.shutdown.borrow() {
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(function = %name, error = %e, "could not start function");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            self.replica().starts.fetch_add(1, Ordering::Relaxed);
            self.replica()
                .pid
                .store(child.id().unwrap_or(0), Ordering::Relaxed);
            if let Some(port) = self.wait_healthy(&mut child).await {
                tracing::info!(function = %name, port, "function healthy");
                self.replica().ready.send_replace(Some(port));
                backoff = Duration::from_millis(100);
                tokio::select! {
                    status = child.wait() => {
                        self.replica().ready.send_replace(None);
                        tracing::warn!(function = %name, ?status, "function exited; restarting");
                    }
                    _ = self.shutdown.changed() => {
                        self.replica().ready.send_replace(None);
                        terminate(&mut child).await;
                        return;
                    }
                }
            } else {
                tracing::warn!(function = %name, "function not healthy in time; restarting");
                let _ = child.kill().await;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
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

    /// Waits for the process to write the address it bound, then polls `/healthz` there
    /// until it answers 200; `None` if the process exits or time runs out first.
    async fn wait_healthy(&mut self, child: &mut Child) -> Option<u16> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + self.health_timeout;
        let mut port = None;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if port.is_none() {
                port = std::fs::read_to_string(&self.addr_file)
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
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
