//! The local stack as the commands that run one start it (`up`, `demo`, the benchmarks):
//! where its files and binaries are, and which store it uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fave_common::secrets::Secret;
use fave_local::stack::{StackOptions, StoreChoice};

/// What a run on a stack of its own sends: the demo's and the pipeline benchmark's.
#[derive(Args, Clone)]
pub struct SampleArgs {
    /// The video to run; defaults to the sample fetched by scripts/setup.
    #[arg(long, default_value = "samples/vtest.avi")]
    pub video: PathBuf,
    #[arg(long, default_value = "find scenes with cars")]
    pub query: String,
}

#[derive(Args, Clone)]
pub struct StackArgs {
    /// The stack file to run.
    #[arg(long, default_value = "stack.yml")]
    pub stack: PathBuf,
    /// Where the embedded store keeps objects and functions write logs.
    #[arg(long, default_value = ".fave")]
    pub data_dir: PathBuf,
    /// Where the function binaries are (default: beside this `fave` binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Use the S3-compatible store at this URL instead of the embedded one (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "FAVE_EXTERNAL_S3")]
    pub external_s3: Option<url::Url>,
    #[arg(long, env = "FAVE_BUCKET", default_value = "fave-artifacts")]
    pub bucket: String,
}

pub fn stack_options(
    args: &StackArgs,
    gateway_addr: SocketAddr,
    s3_addr: SocketAddr,
    log_to_files: bool,
) -> anyhow::Result<StackOptions> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the fave binary has no parent directory")?
            .to_path_buf(),
    };
    let store = match &args.external_s3 {
        None => StoreChoice::Embedded { addr: s3_addr },
        Some(endpoint) => StoreChoice::External {
            endpoint: endpoint.clone(),
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            access_key_id: Secret::new(
                std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is not set")?,
            ),
            secret_access_key: Secret::new(
                std::env::var("AWS_SECRET_ACCESS_KEY")
                    .context("AWS_SECRET_ACCESS_KEY is not set")?,
            ),
        },
    };
    Ok(StackOptions {
        stack_file: args.stack.clone(),
        bin_dir,
        data_dir: args.data_dir.clone(),
        gateway_addr,
        store,
        bucket: args.bucket.clone(),
        log_to_files,
        extra_env: BTreeMap::new(),
        replicas: BTreeMap::new(),
        profile: None,
        vars: BTreeMap::new(),
    })
}

/// A local path becomes an absolute file:// URI; anything with a scheme is kept.
pub fn to_uri(video: &str) -> anyhow::Result<String> {
    if video.contains("://") {
        return Ok(video.to_owned());
    }
    let path = std::fs::canonicalize(video).with_context(|| format!("no video at {video}"))?;
    url::Url::from_file_path(&path)
        .map(|u| u.to_string())
        .map_err(|()| anyhow::anyhow!("{} cannot be a file:// URI", path.display()))
}
