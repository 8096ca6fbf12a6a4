//! The orchestrator function: accepts `{video_uri, query, profile}`, copies the video into
//! the store, keeps the request's durable state in `state.json` and drives the stage
//! functions through the gateway. ARCHITECTURE.md follows a request through these modules.
//!
//! The HTTP surface:
//! - [`api`]: the routes (relative to `/function/orchestrator`): submitting, listing,
//!   reading, resuming and cancelling requests; health, readiness, metrics.
//! - [`input`]: validating the video URI and fetching the video, before anything is written.
//! - [`guard`]: the SSRF guard on every URL the orchestrator fetches for a user.
//! - [`credentials`]: the secret parts of submitted URLs, kept apart and only while needed.
//! - [`ui`]: the web page under `/ui/`: requests, clips with their frames and boxes, search.
//!
//! Running requests:
//! - [`runtime`]: which requests this process drives: claims, drivers, the resumer.
//! - [`driver`]: one request's course, from the copied input to its end.
//! - [`pipeline`]: the stage table, typed by each stage's contract.
//! - [`scheduler`]: which task runs when, for the request-wide stages and each clip.
//! - [`attempt`]: one task's calls through the gateway, retries and timeouts.
//! - [`record`]: `state.json`, its leases and group commit, the active index, and the one
//!   place a request ends.
//! - [`result`] and [`query`]: `final.json` and the answer to the request's query.
//! - [`embed`]: the sentence-embedding model (all-MiniLM-L6-v2) queries are read with.
//! - [`library`]: the video library: an analysis made once per video and parameters, and
//!   the queries answered from it (`POST /query`, `GET /videos`).
//! - [`callback`]: delivering the result to a request's `callback_url`, at least once.
//! - [`metrics`]: what `GET /metrics` counts; [`config`]: the settings, read once at start.

pub mod api;
pub mod attempt;
pub mod callback;
pub mod config;
pub mod credentials;
pub mod driver;
pub mod embed;
pub mod guard;
pub mod input;
pub mod library;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod record;
pub mod result;
pub mod runtime;
pub mod scheduler;
pub mod ui;

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{OrchestratorConfig, PipelineChoice};
use fave_common::gateway::GatewayClient;
use fave_common::ids::RequestId;
use fave_common::storage::Storage;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::api::router;
use crate::attempt::Invoker;
use crate::driver::Driver;
use crate::input::Limits;
use crate::record::LeaseHolder;
pub use crate::runtime::spawn_resumer;

/// Everything a handler needs, built once at start.
pub struct App {
    pub config: OrchestratorConfig,
    pub storage: Storage,
    pub gateway: GatewayClient,
    http: guard::UserClients,
    table: pipeline::Table,
    params: pipeline::Params,
    /// The video library, when requests go through it (the video table, `FAVE_LIBRARY`).
    pub library: Option<library::Library>,
    /// The language model queries are read with, loading from start (`embed.rs`).
    pub model: embed::Model,
    /// What the web page has gathered of ended requests.
    pub views: ui::Views,
    pub metrics: metrics::Metrics,
    invocations: Semaphore,
    /// Fired by SIGTERM: drivers persist their state, release their leases and stop.
    pub shutdown: CancellationToken,
    /// Every driver this process runs, so shutdown can wait for them.
    pub drivers: TaskTracker,
    /// Requests this process drives now; the resumer skips them.
    driving: std::sync::Mutex<HashSet<RequestId>>,
}

impl App {
    /// Connects the clients and builds the stage table the configuration names; a table
    /// that is not well formed is a bug, reported here rather than on a request.
    pub async fn new(config: OrchestratorConfig) -> anyhow::Result<Arc<Self>> {
        let storage = Storage::connect(&config.s3).await;
        let gateway = GatewayClient::new(config.gateway_url.clone());
        // Videos (and callbacks) are fetched from URLs users give: outside local mode, never
        // from internal addresses (see `guard`).
        let http = guard::UserClients::new(config.local_mode);
        let invocations = Semaphore::new(config.max_concurrent_invocations);
        let params = pipeline::Params {
            clip_min_s: config.clip_min_s,
            clip_max_s: config.clip_max_s,
            frames_per_second: config.frames_per_second,
            noop_clips: match config.pipeline {
                PipelineChoice::Noop { clips, .. } => clips,
                PipelineChoice::Video => 0,
            },
            noop_work_ms: match config.pipeline {
                PipelineChoice::Noop { work_ms, .. } => work_ms,
                PipelineChoice::Video => 0,
            },
        };
        let table = pipeline::Table::of(config.pipeline)
            .map_err(|e| anyhow::anyhow!("the stage table is not well formed: {e}"))?;
        let library = (config.library && config.pipeline == PipelineChoice::Video)
            .then(|| library::Library::new(&params, &config.analysis_tag));
        let model = embed::Model::start(
            config.embed.then(embed::model_dir),
            fave_common::readiness::load_timeout(&|k| std::env::var(k).ok()),
        );
        Ok(Arc::new(Self {
            library,
            model,
            config,
            storage,
            gateway,
            http,
            table,
            params,
            views: ui::Views::default(),
            metrics: metrics::Metrics::default(),
            invocations,
            shutdown: CancellationToken::new(),
            drivers: TaskTracker::new(),
            driving: std::sync::Mutex::new(HashSet::new()),
        }))
    }

    pub(crate) fn holder(&self) -> LeaseHolder {
        LeaseHolder {
            owner: self.config.replica_id.clone(),
            ttl: self.config.lease_ttl,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.config.max_input_bytes,
            timeout: self.config.input_timeout,
        }
    }

    pub(crate) fn driver(&self) -> Driver<'_> {
        Driver {
            storage: &self.storage,
            http: &self.http,
            table: &self.table,
            invoker: Invoker {
                gateway: &self.gateway,
                invocations: &self.invocations,
                params: &self.params,
                metrics: &self.metrics,
                max_stage_timeout: self.config.stage_timeout,
                platform_retry_window: self.config.platform_retry_window,
            },
            fan_out: self.config.max_concurrent_invocations,
            input_limits: self.limits(),
            library: self.library.as_ref(),
            model: &self.model,
        }
    }
}
