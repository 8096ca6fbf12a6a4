//! `fave bench`: benchmarks that print their figures side by side with a baseline run in
//! the same session, and write a report (JSON) and a chart (SVG) of them ([`report`]).
//!
//! - [`detect`]: the detector per frame on tract and on ONNX Runtime, side by side.
//! - [`pipeline`]: the whole pipeline against a plain sequential run of the same work
//!   ([`baseline`]).
//! - [`memory`]: every function's peak memory on a short and a long input.
//! - [`orchestrator`]: the orchestrator's own costs on no-op stages (`overhead`, `fanout`)
//!   and the API's latency under many clients (`api`).
//! - [`profiles`]: the same request under the warm and cold profiles.
//! - [`query`]: `POST /query` against libraries of 1, 100 and 1,000 videos, beside the
//!   full pipeline and a second request answered from the library.

mod baseline;
mod detect;
mod memory;
mod orchestrator;
mod pipeline;
mod profiles;
mod query;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::stack::{SampleArgs, StackArgs};

#[derive(Args)]
pub struct BenchArgs {
    /// Where each suite writes `<suite>.json` (every figure and its setup, for scripts) and
    /// `<suite>.svg` (a chart of them).
    #[arg(long, global = true, default_value = ".fave/reports")]
    report_dir: PathBuf,
    #[command(subcommand)]
    suite: Bench,
}

#[derive(Subcommand)]
pub enum Bench {
    /// The whole pipeline through the local stack against a plain sequential run of the same
    /// work (ffmpeg CLI, librosa, the same detector), alternating, `--runs` times each.
    Pipeline {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        sample: SampleArgs,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The orchestrator's cost per sequential step, on no-op stages (bench/noop.yml):
    /// p50/p95/p99 ms per step, each step's state written to the store.
    Overhead {
        #[command(flatten)]
        stack: StackArgs,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value_t = 20)]
        requests: usize,
        /// A short run (CI): 5 steps, 3 requests.
        #[arg(long)]
        quick: bool,
    },
    /// Per-clip no-op tasks completed per second by one orchestrator, for each
    /// MAX_CONCURRENT_INVOCATIONS setting, side by side.
    Fanout {
        #[command(flatten)]
        stack: StackArgs,
        #[arg(long, default_value_t = 1000)]
        clips: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,128")]
        concurrency: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A short run (CI): 100 clips, concurrency 1 and 4, one run each.
        #[arg(long)]
        quick: bool,
    },
    /// The same request under the warm and cold profiles (deploy/profiles), per stage:
    /// call time, the function's start (spawn → healthy) and work, side by side.
    Profiles {
        #[command(flatten)]
        stack: StackArgs,
        #[arg(long, default_value = "samples/bikes.mp4")]
        video: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// `POST /query` p50/p99 against libraries of growing size (the first videos analysed
    /// for real, the rest copies of their indexes under made-up ids), beside the full
    /// pipeline on the same video and a second request for it.
    Query {
        #[command(flatten)]
        stack: StackArgs,
        /// Videos analysed for real (the larger libraries copy their indexes).
        #[arg(long = "video", default_value = "samples/vtest.avi")]
        videos: Vec<PathBuf>,
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        sizes: Vec<usize>,
        /// Queries timed per library size.
        #[arg(long, default_value_t = 100)]
        queries: usize,
    },
    /// stage-detect's detector per frame on tract and on ONNX Runtime, the same model and
    /// frames, one thread and one frame per core, taking turns: min/median/max and the ratio.
    Detect {
        #[arg(long, default_value_t = 12)]
        rounds: usize,
    },
    /// Status-query and submit latency (p50/p99) under many concurrent clients.
    Api {
        #[command(flatten)]
        stack: StackArgs,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Status queries, then submits, per client.
        #[arg(long, default_value_t = 10)]
        per_client: usize,
    },
    /// Peak memory of every function on a short and a long input (vtest.avi with a tone
    /// track, once and looped to `--minutes`), each on a fresh stack, side by side.
    Memory {
        #[command(flatten)]
        stack: StackArgs,
        #[arg(long, default_value = "samples/vtest.avi")]
        video: PathBuf,
        #[arg(long, default_value_t = 20)]
        minutes: u32,
    },
}

/// Runs one benchmark suite and writes its report and chart.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let report = match args.suite {
        Bench::Pipeline {
            stack,
            sample,
            runs,
        } => pipeline::run(stack, &sample.video, &sample.query, runs).await?,
        Bench::Memory {
            stack,
            video,
            minutes,
        } => memory::run(stack, &video, minutes).await?,
        Bench::Overhead {
            stack,
            steps,
            requests,
            quick,
        } => {
            let (steps, requests) = if quick { (5, 3) } else { (steps, requests) };
            orchestrator::overhead(stack, steps, requests).await?
        }
        Bench::Fanout {
            stack,
            clips,
            concurrency,
            runs,
            quick,
        } => {
            let (clips, concurrency, runs) = if quick {
                (100, vec![1, 4], 1)
            } else {
                (clips, concurrency, runs)
            };
            orchestrator::fanout(stack, clips, &concurrency, runs).await?
        }
        Bench::Profiles { stack, video, runs } => profiles::run(stack, &video, runs).await?,
        Bench::Query {
            stack,
            videos,
            sizes,
            queries,
        } => query::run(stack, &videos, &sizes, queries).await?,
        Bench::Api {
            stack,
            clients,
            per_client,
        } => orchestrator::api(stack, clients, per_client).await?,
        Bench::Detect { rounds } => {
            let frames = [
                Path::new("samples/vtest_10s.png"),
                Path::new("samples/messi5.jpg"),
            ];
            tokio::task::spawn_blocking(move || detect::run(&frames, rounds)).await??
        }
    };
    let (json, svg) = report.write(&args.report_dir)?;
    println!("  report: {}\n  chart:  {}", json.display(), svg.display());
    Ok(ExitCode::SUCCESS)
}
