//! The whole local stack started together: the S3 store (embedded, or an external one named
//! by `AWS_ENDPOINT_URL`), the functions of stack.yml as processes, and the gateway in front
//! of them. `fave up`, `fave demo` and the end-to-end tests all start it this way.
//!
//! stack.yml's `${VAR:-default}`s are substituted from [`StackOptions::vars`], then the
//! [`StackOptions::profile`]'s env file, then the process environment. The gateway's own
//! settings (basic-auth credentials, `FAVE_SECRETS_DIR`) come from `vars`, then the process
//! environment: a profile describes scaling, not secrets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fave_common::config::S3Settings;
use fave_common::secrets::Secret;
use fave_common::storage::Storage;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use url::Url;

use crate::auth::BasicAuth;
use crate::gateway::{self, GatewayOptions};
use crate::s3::{EmbeddedS3, S3ServerOptions};
use crate::stack_env::{StackEnv, read_profile};
use crate::stack_file::StackFile;
use crate::supervisor::{Supervisor, SupervisorOptions};

/// Which S3-compatible store the stack uses.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// The embedded server on this address (`127.0.0.1:0` for any free port), keeping its
    /// objects under `{data_dir}/s3`.
    Embedded { addr: SocketAddr },
    /// A store that is already running, e.g. SeaweedFS or moto.
    External {
        endpoint: Url,
        region: String,
        access_key_id: Secret,
        secret_access_key: Secret,
    },
}

/// How to start the stack.
#[derive(Clone)]
pub struct StackOptions {
    pub stack_file: PathBuf,
    /// Where the function binaries are.
    pub bin_dir: PathBuf,
    /// The embedded store's objects and the functions' logs go here.
    pub data_dir: PathBuf,
    pub gateway_addr: SocketAddr,
    pub store: StoreChoice,
    pub bucket: String,
    /// Function logs to `{data_dir}/logs/{name}.log` instead of this process's stderr.
    pub log_to_files: bool,
    /// Extra environment for every function, after everything else.
    pub extra_env: BTreeMap<String, String>,
    /// Replicas per function at start, overriding stack.yml's `com.openfaas.scale.min`.
    pub replicas: BTreeMap<String, usize>,
    /// A profile, `deploy/profiles/{profile}.env` beside the stack file, whose variables
    /// stack.yml is substituted with (e.g. `cold`: scale to zero; `warm`: one replica each).
    pub profile: Option<String>,
    /// Variables that win over the profile and the process environment, for stack.yml's
    /// substitution and the gateway's own settings (`FAVE_SECRETS_DIR`,
    /// `FAVE_GATEWAY_USER`, `FAVE_GATEWAY_PASSWORD`, `FAVE_GATEWAY_ACK_WAIT_SECS`). `Debug` prints their names only.
    pub vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for StackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackOptions")
            .field("stack_file", &self.stack_file)
            .field("bin_dir", &self.bin_dir)
            .field("data_dir", &self.data_dir)
            .field("gateway_addr", &self.gateway_addr)
            .field("store", &self.store)
            .field("bucket", &self.bucket)
            .field("log_to_files", &self.log_to_files)
            .field("extra_env", &self.extra_env.keys().collect::<Vec<_>>())
            .field("replicas", &self.replicas)
            .field("profile", &self.profile)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StackOptions {
    /// The variables stack.yml is substituted with: `vars`, the profile, the environment.
    pub fn stack_env(&self) -> anyhow::Result<StackEnv> {
        let profile = match &self.profile {
            Some(name) => read_profile(&self.stack_file, name)?,
            None => BTreeMap::new(),
        };
        Ok(StackEnv::new(self.vars.clone(), profile))
    }

    /// The async queue's ack wait: `FAVE_GATEWAY_ACK_WAIT_SECS` from `vars`, then the
    /// process environment, else the queue worker's 30 s.
    pub fn ack_wait(&self) -> anyhow::Result<Duration> {
        let var = "FAVE_GATEWAY_ACK_WAIT_SECS";
        match self
            .vars
            .get(var)
            .cloned()
            .or_else(|| fave_common::config::env_lookup(var))
        {
            None => Ok(GatewayOptions::default().ack_wait),
            Some(v) => {
                let secs: f64 = v
                    .trim()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{var}={v:?}: {e}"))?;
                anyhow::ensure!(
                    secs > 0.0 && secs.is_finite(),
                    "{var}={v:?}: must be above 0"
                );
                Ok(Duration::from_secs_f64(secs))
            }
        }
    }

    /// The gateway's credentials: from `vars`, then the process environment.
    pub fn basic_auth(&self) -> anyhow::Result<Option<BasicAuth>> {
        let lookup = |k: &str| {
            self.vars
                .get(k)
                .cloned()
                .or_else(|| fave_common::config::env_lookup(k))
        };
        Ok(BasicAuth::from_secrets(&lookup)?)
    }
}

/// A running stack. Dropping it stops everything; [`Stack::shutdown`] does so gracefully.
pub struct Stack {
    pub gateway_url: Url,
    pub s3: S3Settings,
    pub store: Storage,
    embedded: Option<EmbeddedS3>,
    /// How the embedded store was started, on its actual port, to start it again.
    embedded_options: Option<S3ServerOptions>,
    supervisor: Arc<Supervisor>,
    gateway: JoinHandle<()>,
}

impl Stack {
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        let stack_file = StackFile::load_with(&options.stack_file, &options.stack_env()?)?;
        let basic_auth = options.basic_auth()?;
        let (embedded, s3) = match &options.store {
            StoreChoice::Embedded { addr } => {
                let access_key_id =
                    format!("fave-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
                let secret_access_key = uuid::Uuid::new_v4().simple().to_string();
                let mut server_options = S3ServerOptions {
                    data_dir: options.data_dir.join("s3"),
                    addr: *addr,
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                };
                let server = EmbeddedS3::start(&server_options).await?;
                server_options.addr = server.addr();
                let s3 = S3Settings {
                    bucket: options.bucket.clone(),
                    endpoint: Some(Url::parse(&server.endpoint())?),
                    region: "us-east-1".into(),
                    access_key_id: Some(Secret::new(access_key_id)),
                    secret_access_key: Some(Secret::new(secret_access_key)),
                    force_path_style: true,
                    max_attempts: 10,
                    read_timeout: std::time::Duration::from_secs(60),
                };
                (Some((server, server_options)), s3)
            }
            StoreChoice::External {
                endpoint,
                region,
                access_key_id,
                secret_access_key,
            } => (
                None,
                S3Settings {
                    bucket: options.bucket.clone(),
                    endpoint: Some(endpoint.clone()),
                    region: region.clone(),
                    access_key_id: Some(access_key_id.clone()),
                    secret_access_key: Some(secret_access_key.clone()),
                    force_path_style: true,
                    max_attempts: 10,
                    read_timeout: std::time::Duration::from_secs(60),
                },
            ),
        };
        let store = Storage::connect(&s3).await;
        store.ensure_bucket().await?;

        let listener = TcpListener::bind(options.gateway_addr).await?;
        let gateway_url = Url::parse(&format!("http://{}", listener.local_addr()?))?;
        let mut env = BTreeMap::from([
            (
                "GATEWAY_URL".to_owned(),
                gateway_url.as_str().trim_end_matches('/').to_owned(),
            ),
            ("FAVE_BUCKET".to_owned(), s3.bucket.clone()),
            ("AWS_REGION".to_owned(), s3.region.clone()),
            ("FAVE_LOCAL_MODE".to_owned(), "true".to_owned()),
            // Locally, credentials come from the environment, never from a machine-wide
            // /var/openfaas/secrets that belongs to something else.
            (
                "FAVE_SECRETS_DIR".to_owned(),
                options.data_dir.join("no-secrets").display().to_string(),
            ),
        ]);
        if let Some(endpoint) = &s3.endpoint {
            env.insert(
                "AWS_ENDPOINT_URL".into(),
                endpoint.as_str().trim_end_matches('/').to_owned(),
            );
        }
        if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
            env.insert("AWS_ACCESS_KEY_ID".into(), id.expose().to_owned());
            env.insert("AWS_SECRET_ACCESS_KEY".into(), secret.expose().to_owned());
        }
        env.extend(options.extra_env.clone());
        let supervisor = Supervisor::start(
            &stack_file,
            SupervisorOptions {
                bin_dir: options.bin_dir.clone(),
                extra_env: env,
                log_dir: options.log_to_files.then(|| options.data_dir.join("logs")),
                health_timeout: Duration::from_secs(20),
                replicas: options.replicas.clone(),
            },
        )
        .await?;
        let supervisor = Arc::new(supervisor);
        let app = gateway::router(
            supervisor.clone(),
            GatewayOptions {
                basic_auth,
                ack_wait: options.ack_wait()?,
                ..GatewayOptions::default()
            },
        );
        let gateway = tokio::spawn(async move {
            let forever = std::future::pending::<()>();
            if let Err(e) = fave_common::server::serve(listener, app, forever).await {
                tracing::error!(error = %e, "gateway stopped");
            }
        });
        Ok(Self {
            gateway_url,
            s3,
            store,
            embedded_options: embedded.as_ref().map(|(_, o)| o.clone()),
            embedded: embedded.map(|(server, _)| server),
            supervisor,
            gateway,
        })
    }

    /// The functions, to read invocation and start counts.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The embedded store's endpoint, if the stack runs one.
    pub fn embedded_endpoint(&self) -> Option<String> {
        self.embedded.as_ref().map(EmbeddedS3::endpoint)
    }

    /// Stops the embedded store, as an outage would: connections drop, the port closes.
    pub fn stop_store(&mut self) {
        if let Some(server) = self.embedded.take() {
            server.stop();
        }
    }

    /// Starts the embedded store again, on the same port and the same data.
    pub async fn restart_store(&mut self) -> std::io::Result<()> {
        if let (None, Some(options)) = (&self.embedded, &self.embedded_options) {
            self.embedded = Some(EmbeddedS3::start(options).await?);
        }
        Ok(())
    }

    /// Stops the gateway, then each function with SIGTERM, then the store.
    pub async fn shutdown(self) {
        self.gateway.abort();
        if let Ok(supervisor) = Arc::try_unwrap(self.supervisor) {
            supervisor.shutdown().await;
        }
        if let Some(s3) = self.embedded {
            s3.stop();
        }
    }
}
