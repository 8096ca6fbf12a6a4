//! `fave`: start the local stack, submit videos, look at requests.
//!
//! - `fave up`: the embedded S3 store, the gateway and stack.yml's functions, until Ctrl-C.
//! - `fave run VIDEO`: submit one video through a running gateway and print the result.
//! - `fave submit`, `status`, `result`, `list`, `cancel`, `resume`: the orchestrator's API
//!   ([`requests`], over [`client`]), a summary for people or `--json` for scripts.
//! - `fave batch FILE`: many videos, a few at a time, resumable ([`batch`]).
//! - `fave timeline ID`: where a request spent its time, in the terminal and as SVG
//!   ([`timeline`]).
//! - `fave demo`: `up` on free ports, `run` on the sample video, a summary, and stop.
//! - `fave bench pipeline`: fave against a plain sequential baseline on one video.

mod batch;
mod bench;
mod client;
mod requests;
mod stack;
mod term;
mod timeline;
mod videos;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use fave_common::contract::report::Final;
use fave_local::stack::Stack;

use crate::client::{Submission, run_once};
use crate::stack::{SampleArgs, StackArgs, stack_options, to_uri};

#[derive(Parser)]
#[command(
    name = "fave",
    version,
    about = "Video-analysis pipelines as OpenFaaS functions",
    after_help = "\
The API commands (submit, status, result, list, cancel, resume, batch, timeline) talk to the
orchestrator through --gateway, or OPENFAAS_URL (default http://127.0.0.1:8080, where
`fave up` listens). Each prints a summary; --json prints the API's JSON for scripts.

Exit codes: 0 done; 1 a request failed or was cancelled, or a batch had failed or bad lines;
2 usage; 3 the gateway or the orchestrator refused the call or could not be reached.

Examples:
  fave up
  fave submit samples/bikes.mp4 --query 'find bikes' --wait
  fave batch videos.txt --concurrency 4
  fave timeline <ID> -o request.svg"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local stack (S3 store, gateway, functions) and keep it running until Ctrl-C.
    Up(UpArgs),
    /// Submit a video (a path, file://, s3:// or http(s):// URI) and print the result.
    Run(RunArgs),
    /// Submit one video; print the result, or the id of a request still running.
    Submit(requests::SubmitArgs),
    /// Show a request: what was asked, its status, each stage and the clips' tasks.
    Status(requests::StatusArgs),
    /// Print a completed request's result (final.json).
    Result(requests::ResultArgs),
    /// List requests in id order (creation order for the ids fave makes), optionally by status.
    List(requests::ListArgs),
    /// Cancel a request; its driver stops at its next step.
    #[command(after_help = "Example:\n  fave cancel 0190f3c4a9b87d6e8f0a1b2c3d4e5f60")]
    Cancel(requests::IdArgs),
    /// Resume a request whose driver is gone, now rather than at the next resume pass.
    #[command(after_help = "Example:\n  fave resume 0190f3c4a9b87d6e8f0a1b2c3d4e5f60")]
    Resume(requests::IdArgs),
    /// Submit every video of a file (or stdin), a few at a time; resumable.
    Batch(batch::BatchArgs),
    /// Find moments across every analysed video, from what was kept (no stage runs).
    Search(videos::SearchArgs),
    /// List the library: every video with a published analysis.
    Videos(videos::VideosArgs),
    /// Show or delete one video of the library.
    Video(videos::VideoArgs),
    /// Draw where a request spent its time: stages and clip tasks on a time axis.
    Timeline(timeline::TimelineArgs),
    /// Start the stack on free ports, run the sample video through it, print a summary, stop.
    Demo {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        sample: SampleArgs,
    },
    /// Benchmarks that print figures side by side with a baseline, and write a report
    /// (JSON) and a chart (SVG) of them.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    stack: StackArgs,
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9000")]
    s3_addr: SocketAddr,
    /// Scaling as a cluster deploys it: `deploy/profiles/{cold,warm}.env` fill stack.yml's
    /// labels (cold: stages at zero replicas until called, scaled down when idle).
    #[arg(long, value_parser = ["cold", "warm"])]
    profile: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// A local path, or a file://, s3:// or http(s):// URI.
    video: String,
    #[arg(long)]
    query: Option<String>,
    #[arg(long, value_parser = ["cold", "warm"])]
    profile: Option<String>,
    #[arg(long, env = "OPENFAAS_URL", default_value = "http://127.0.0.1:8080")]
    gateway: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    fave_common::telemetry::init();
    let cli = Cli::parse();
    // Rust ignores SIGPIPE, so `fave list --json | head` would panic on the closed pipe. The
    // API commands only print, and end quietly as other Unix tools do; the ones that run the
    // stack (child processes, sockets) keep Rust's default.
    if !matches!(
        cli.command,
        Command::Up(_) | Command::Demo { .. } | Command::Bench(_)
    ) {
        sigpipe::reset();
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Run(args) => {
            let submission = client::submission(&args.video, args.query, args.profile.as_deref())?;
            let result = run_once(&args.gateway, &submission).await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit(args) => requests::submit(args).await.map(ExitCode::from),
        Command::Status(args) => requests::status(args).await.map(ExitCode::from),
        Command::Result(args) => requests::result(args).await.map(ExitCode::from),
        Command::List(args) => requests::list(args).await.map(ExitCode::from),
        Command::Cancel(args) => requests::cancel(args).await.map(ExitCode::from),
        Command::Resume(args) => requests::resume(args).await.map(ExitCode::from),
        Command::Batch(args) => batch::run(args).await.map(ExitCode::from),
        Command::Timeline(args) => timeline::run(args).await.map(ExitCode::from),
        Command::Search(args) => videos::search(args).await.map(ExitCode::from),
        Command::Videos(args) => videos::videos(args).await.map(ExitCode::from),
        Command::Video(args) => videos::video(args).await.map(ExitCode::from),
        Command::Demo { stack, sample } => demo(stack, &sample.video, &sample.query).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut options = stack_options(&args.stack, args.gateway_addr, args.s3_addr, false)?;
    options.profile = args.profile.clone();
    let stack = Stack::start(options).await?;
    println!("gateway   {}", stack.gateway_url);
    if let Some(endpoint) = stack.embedded_endpoint() {
        println!(
            "s3        {endpoint} (embedded, data in {})",
            args.stack.data_dir.join("s3").display()
        );
    }
    println!("bucket    {}", stack.s3.bucket);
    for f in stack.supervisor().functions() {
        println!(
            "function  {}",
            stack.gateway_url.join(&format!("function/{}", f.name))?
        );
    }
    println!(
        "web page  {}",
        stack.gateway_url.join("function/orchestrator/ui/")?
    );
    println!(
        "\nsubmit with: fave run VIDEO --gateway {}   (Ctrl-C stops)",
        stack.gateway_url
    );
    fave_common::server::shutdown_signal().await;
    stack.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: StackArgs, video: &Path, query: &str) -> anyhow::Result<ExitCode> {
    if !video.is_file() {
        bail!(
            "no video at {}; run scripts/setup first, or pass --video",
            video.display()
        );
    }
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut args = args;
    args.data_dir = args.data_dir.join("demo");
    let started = Instant::now();
    let stack = Stack::start(stack_options(&args, any_port, any_port, true)?).await?;
    let up_ms = started.elapsed().as_millis();
    println!(
        "stack up in {up_ms} ms: gateway {}, web page {} (while the demo runs; `fave up` keeps one up)",
        stack.gateway_url,
        stack.gateway_url.join("function/orchestrator/ui/")?
    );
    let uri = to_uri(&video.display().to_string())?;
    println!("submitting {uri}");
    let clock = Instant::now();
    let submission = Submission {
        video_uri: uri,
        query: Some(query.to_owned()),
        ..Submission::default()
    };
    let outcome = run_once(stack.gateway_url.as_str(), &submission).await;
    let request_ms = clock.elapsed().as_millis();
    // The same video asked something else: answered from what its analysis kept.
    let again = Submission {
        query: Some(AGAIN_QUERY.to_owned()),
        ..submission.clone()
    };
    let clock = Instant::now();
    let again = match &outcome {
        Ok(_) => Some(run_once(stack.gateway_url.as_str(), &again).await),
        Err(_) => None,
    };
    let again_ms = clock.elapsed().as_secs_f64() * 1e3;
    stack.shutdown().await;
    let result = outcome?;
    let result_path = args.data_dir.join("final.json");
    std::fs::write(&result_path, serde_json::to_vec_pretty(&result)?)?;
    println!(
        "\nrequest {} COMPLETED in {request_ms} ms",
        result.request_id
    );
    print_summary(&result);
    println!(
        "  final.json: {} (artifacts in s3://{}/requests/{}/)",
        result_path.display(),
        args.bucket,
        result.request_id,
    );
    if let Some(again) = again {
        let again = again?;
        let from_library = again.analysis.as_ref().is_some_and(|a| a.reused);
        println!(
            "\nasked again, {AGAIN_QUERY:?}: {} in {again_ms:.0} ms{}",
            again
                .answer
                .as_ref()
                .map_or_else(String::new, |a| a.message.clone()),
            if from_library {
                ", answered from the library (no stage ran)"
            } else {
                ""
            }
        );
        println!("  search every analysed video: fave search \"cars\" (with `fave up`)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo's second question about its video.
const AGAIN_QUERY: &str = "people";

/// A completed request's clips, answer and times, for a person to read.
fn print_summary(result: &Final) {
    if let Some(a) = result.analysis.as_ref().filter(|a| a.reused) {
        println!(
            "  answered from the library: video {}, analysis {} (made before; no stage ran)",
            &a.video.as_str()[..12],
            a.analysis
        );
    }
    println!("  clips:");
    for c in &result.clips {
        let mut labels: Vec<_> = c.labels.iter().collect();
        labels.sort_by(|a, b| b.1.best_score.total_cmp(&a.1.best_score));
        let seen: Vec<String> = labels
            .iter()
            .map(|(l, s)| format!("{l} {:.2} ({} fr)", s.best_score, s.frames))
            .collect();
        println!(
            "    {} {:>7.2}–{:<7.2} s  {:>3} frames  {}",
            c.clip,
            c.start_s,
            c.end_s,
            c.frames,
            seen.join(", ")
        );
    }
    if let Some(answer) = &result.answer {
        println!("  answer to {:?}: {}", answer.query, answer.message);
        for (i, m) in answer.clips.iter().enumerate() {
            println!(
                "    {}. {} {:.2}–{:.2} s  score {}  {}",
                i + 1,
                m.clip,
                m.start_s,
                m.end_s,
                m.score,
                m.why.join("; ")
            );
        }
    }
    println!("  stages (call time, summed over clips for per-clip stages):");
    for (name, s) in &result.stages {
        let clips = s.clips.map(|n| format!(", {n} clips")).unwrap_or_default();
        println!(
            "    {name:<20} {:>6} ms{clips}, {} attempts",
            s.call_ms, s.attempts
        );
    }
    let t = &result.timings;
    println!(
        "  drive {} ms: some stage running {} ms, none {} ms",
        t.drive_ms, t.stage_ms, t.orchestration_ms
    );
}
