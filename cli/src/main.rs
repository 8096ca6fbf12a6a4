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
mod bench_orchestrator;
mod bench_profiles;
mod client;
mod report;
mod requests;
mod term;
mod timeline;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use fave_common::secrets::Secret;
use fave_local::stack::{Stack, StackOptions, StoreChoice};
use report::{Chart, Report};
use serde_json::{Value, json};

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
    /// Draw where a request spent its time: stages and clip tasks on a time axis.
    Timeline(timeline::TimelineArgs),
    /// Start the stack on free ports, run the sample video through it, print a summary, stop.
    Demo {
        #[command(flatten)]
        stack: StackArgs,
        /// The video to run; defaults to the sample fetched by scripts/setup.
        #[arg(long, default_value = "samples/vtest.avi")]
        video: PathBuf,
        #[arg(long, default_value = "find scenes with cars")]
        query: String,
    },
    /// Benchmarks that print figures side by side with a baseline, and write a report
    /// (JSON) and a chart (SVG) of them.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Where each suite writes `<suite>.json` (every figure and its setup, for scripts) and
    /// `<suite>.svg` (a chart of them).
    #[arg(long, global = true, default_value = ".fave/reports")]
    report_dir: PathBuf,
    #[command(subcommand)]
    suite: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The whole pipeline through the local stack against a plain sequential run of the same
    /// work (ffmpeg CLI, librosa, the same detector), alternating, `--runs` times each.
    Pipeline {
        #[command(flatten)]
        stack: StackArgs,
        #[arg(long, default_value = "samples/vtest.avi")]
        video: PathBuf,
        #[arg(long, default_value = "find scenes with cars")]
        query: String,
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

#[derive(Args, Clone)]
struct StackArgs {
    /// The stack file to run.
    #[arg(long, default_value = "stack.yml")]
    stack: PathBuf,
    /// Where the embedded store keeps objects and functions write logs.
    #[arg(long, default_value = ".fave")]
    data_dir: PathBuf,
    /// Where the function binaries are (default: beside this `fave` binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Use the S3-compatible store at this URL instead of the embedded one (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "FAVE_EXTERNAL_S3")]
    external_s3: Option<url::Url>,
    #[arg(long, env = "FAVE_BUCKET", default_value = "fave-artifacts")]
    bucket: String,
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
            let uri = to_uri(&args.video)?;
            let (status, body) = submit(
                &args.gateway,
                &uri,
                args.query.as_deref(),
                args.profile.as_deref(),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(exit_code(status))
        }
        Command::Submit(args) => requests::submit(args).await.map(ExitCode::from),
        Command::Status(args) => requests::status(args).await.map(ExitCode::from),
        Command::Result(args) => requests::result(args).await.map(ExitCode::from),
        Command::List(args) => requests::list(args).await.map(ExitCode::from),
        Command::Cancel(args) => requests::cancel(args).await.map(ExitCode::from),
        Command::Resume(args) => requests::resume(args).await.map(ExitCode::from),
        Command::Batch(args) => batch::run(args).await.map(ExitCode::from),
        Command::Timeline(args) => timeline::run(args).await.map(ExitCode::from),
        Command::Demo {
            stack,
            video,
            query,
        } => demo(stack, &video, &query).await,
        Command::Bench(bench) => run_bench(bench).await,
    }
}

/// Runs one benchmark suite and writes its report and chart.
async fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let report = match args.suite {
        Bench::Pipeline {
            stack,
            video,
            query,
            runs,
        } => bench_pipeline(stack, &video, &query, runs).await?,
        Bench::Memory {
            stack,
            video,
            minutes,
        } => bench_memory(stack, &video, minutes).await?,
        Bench::Overhead {
            stack,
            steps,
            requests,
            quick,
        } => {
            let (steps, requests) = if quick { (5, 3) } else { (steps, requests) };
            bench_orchestrator::overhead(stack, steps, requests).await?
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
            bench_orchestrator::fanout(stack, clips, &concurrency, runs).await?
        }
        Bench::Profiles { stack, video, runs } => {
            bench_profiles::profiles(stack, &video, runs).await?
        }
        Bench::Api {
            stack,
            clients,
            per_client,
        } => bench_orchestrator::api(stack, clients, per_client).await?,
    };
    let (json, svg) = report.write(&args.report_dir)?;
    println!("  report: {}\n  chart:  {}", json.display(), svg.display());
    Ok(ExitCode::SUCCESS)
}

fn exit_code(status: u16) -> ExitCode {
    if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A local path becomes an absolute file:// URI; anything with a scheme is kept.
fn to_uri(video: &str) -> anyhow::Result<String> {
    if video.contains("://") {
        return Ok(video.to_owned());
    }
    let path = std::fs::canonicalize(video).with_context(|| format!("no video at {video}"))?;
    url::Url::from_file_path(&path)
        .map(|u| u.to_string())
        .map_err(|()| anyhow::anyhow!("{} cannot be a file:// URI", path.display()))
}

async fn submit(
    gateway: &str,
    uri: &str,
    query: Option<&str>,
    profile: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/function/orchestrator", gateway.trim_end_matches('/'));
    let mut body = json!({ "video_uri": uri });
    if let Some(q) = query {
        body["query"] = json!(q);
    }
    if let Some(p) = profile {
        body["profile"] = json!(p);
    }
    let response = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .timeout(Duration::from_secs(30 * 60))
        .send()
        .await
        .with_context(|| format!("POST {url}: is the stack up (`fave up`)?"))?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    Ok((status, body))
}

fn stack_options(
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
    println!("stack up in {up_ms} ms: gateway {}", stack.gateway_url);
    let uri = to_uri(&video.display().to_string())?;
    println!("submitting {uri}");
    let clock = Instant::now();
    let (status, body) = submit(stack.gateway_url.as_str(), &uri, Some(query), None).await?;
    let request_ms = clock.elapsed().as_millis();
    stack.shutdown().await;
    if status != 200 {
        println!("{}", serde_json::to_string_pretty(&body)?);
        bail!("the request failed with HTTP {status}");
    }
    let result_path = args.data_dir.join("final.json");
    std::fs::write(&result_path, serde_json::to_vec_pretty(&body)?)?;
    println!(
        "\nrequest {} COMPLETED in {request_ms} ms",
        body["request_id"].as_str().unwrap_or("?")
    );
    print_summary(&body);
    println!(
        "  final.json: {} (artifacts in s3://{}/requests/{}/)",
        result_path.display(),
        args.bucket,
        body["request_id"].as_str().unwrap_or("?"),
    );
    Ok(ExitCode::SUCCESS)
}

/// A completed request's clips, answer and times, for a person to read.
fn print_summary(body: &Value) {
    let empty = Vec::new();
    println!("  clips:");
    for c in body["clips"].as_array().unwrap_or(&empty) {
        let mut labels: Vec<(&String, &Value)> = c["labels"]
            .as_object()
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        labels.sort_by(|a, b| {
            let score = |v: &Value| v["best_score"].as_f64().unwrap_or(0.0);
            score(b.1).total_cmp(&score(a.1))
        });
        let seen: Vec<String> = labels
            .iter()
            .map(|(l, v)| {
                format!(
                    "{l} {:.2} ({} fr)",
                    v["best_score"].as_f64().unwrap_or(0.0),
                    v["frames"]
                )
            })
            .collect();
        println!(
            "    {} {:>7.2}–{:<7.2} s  {:>3} frames  {}",
            c["clip"].as_str().unwrap_or("?"),
            c["start_s"].as_f64().unwrap_or(0.0),
            c["end_s"].as_f64().unwrap_or(0.0),
            c["frames"],
            seen.join(", ")
        );
    }
    let answer = &body["answer"];
    if !answer.is_null() {
        println!(
            "  answer to {}: {}",
            answer["query"],
            answer["message"].as_str().unwrap_or("")
        );
        for (i, m) in answer["clips"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .enumerate()
        {
            println!(
                "    {}. {} {:.2}–{:.2} s  score {}  {}",
                i + 1,
                m["clip"].as_str().unwrap_or("?"),
                m["start_s"].as_f64().unwrap_or(0.0),
                m["end_s"].as_f64().unwrap_or(0.0),
                m["score"],
                m["why"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    println!("  stages (call time, summed over clips for per-clip stages):");
    if let Some(stages) = body["stages"].as_object() {
        for (name, s) in stages {
            let clips = s["clips"]
                .as_u64()
                .map(|n| format!(", {n} clips"))
                .unwrap_or_default();
            println!(
                "    {name:<20} {:>6} ms{clips}, {} attempts",
                s["call_ms"], s["attempts"]
            );
        }
    }
    let t = &body["timings"];
    println!(
        "  drive {} ms: some stage running {} ms, none {} ms",
        t["drive_ms"], t["stage_ms"], t["orchestration_ms"]
    );
}

async fn bench_pipeline(
    mut args: StackArgs,
    video: &Path,
    query: &str,
    runs: usize,
) -> anyhow::Result<Report> {
    if !video.is_file() {
        bail!(
            "no video at {} (scripts/setup fetches the samples)",
            video.display()
        );
    }
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    args.data_dir = args.data_dir.join("bench");
    let stack = Stack::start(stack_options(&args, any_port, any_port, true)?).await?;
    let uri = to_uri(&video.display().to_string())?;
    let fps: f64 = std::env::var("FAVE_FRAMES_PER_SEC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    println!(
        "fave bench pipeline: {} ({runs} runs each, alternating)",
        video.display()
    );
    let (mut fave_ms, mut base_work, mut base_wall) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_run = Vec::new();
    for run in 1..=runs.max(1) {
        let clock = Instant::now();
        let outcome = submit(stack.gateway_url.as_str(), &uri, Some(query), None).await;
        let ms = clock.elapsed().as_secs_f64() * 1e3;
        let body = match outcome {
            Ok((200, body)) => body,
            Ok((status, body)) => {
                stack.shutdown().await;
                bail!("the request failed with HTTP {status}: {body}");
            }
            Err(e) => {
                stack.shutdown().await;
                return Err(e);
            }
        };
        fave_ms.push(ms);
        let stages: Vec<String> = body["stages"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, s)| format!("{name} {}", s["call_ms"]))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "  run {run}: fave     {ms:>8.0} ms  (calls, ms: {})",
            stages.join(", ")
        );
        // The baseline cuts where fave cut, so both do the same work.
        let cuts: Vec<f64> = body["clips"]
            .as_array()
            .map(|c| {
                c.iter()
                    .skip(1)
                    .filter_map(|c| c["start_s"].as_f64())
                    .collect()
            })
            .unwrap_or_default();
        let work = bench::Work {
            video: video.to_path_buf(),
            cuts,
            fps,
            repo: std::env::current_dir()?,
        };
        let b = match tokio::task::spawn_blocking(move || bench::baseline(&work)).await? {
            Ok(b) => b,
            Err(e) => {
                stack.shutdown().await;
                return Err(e);
            }
        };
        println!(
            "  run {run}: baseline {:>8.0} ms  ({})",
            b.wall_ms,
            b.describe()
        );
        per_run.push(json!({
            "fave_ms": ms,
            "fave_stage_call_ms": body["stages"].as_object().map(|m| {
                m.iter().map(|(name, s)| (name.clone(), s["call_ms"].clone())).collect::<serde_json::Map<_, _>>()
            }),
            "baseline": b.to_json(),
        }));
        base_work.push(b.work_ms());
        base_wall.push(b.wall_ms);
    }
    stack.shutdown().await;
    let categories = (1..=fave_ms.len()).map(|r| format!("run {r}")).collect();
    let bars = vec![
        ("fave (warm stack)".to_owned(), fave_ms.clone()),
        ("baseline, work".to_owned(), base_work.clone()),
    ];
    let (fave_best, fave_median, fave_worst) = bench::best_median_worst(fave_ms);
    let (work_best, work_median, work_worst) = bench::best_median_worst(base_work);
    let (wall_best, _, _) = bench::best_median_worst(base_wall);
    println!("\n                        best      median       worst");
    println!("  fave (warm stack)  {fave_best:>8.0} ms {fave_median:>8.0} ms {fave_worst:>8.0} ms");
    println!("  baseline, work     {work_best:>8.0} ms {work_median:>8.0} ms {work_worst:>8.0} ms");
    println!("  baseline, wall     {wall_best:>8.0} ms   (work + librosa import + model load)");
    let (ratio_best, ratio_median) = (fave_best / work_best, fave_median / work_median);
    println!(
        "  ratio fave / baseline work: best {ratio_best:.2}, median {ratio_median:.2}  (target <= {PIPELINE_TARGET_RATIO:.2})"
    );
    Ok(Report {
        suite: "pipeline",
        setup: json!({ "video": video, "query": query, "runs": runs.max(1), "frames_per_s": fps }),
        figures: json!({
            "runs": per_run,
            "fave_ms": { "best": fave_best, "median": fave_median, "worst": fave_worst },
            "baseline_work_ms": { "best": work_best, "median": work_median, "worst": work_worst },
            "baseline_wall_best_ms": wall_best,
            "ratio": { "best": ratio_best, "median": ratio_median },
            "target_ratio": PIPELINE_TARGET_RATIO,
        }),
        chart: Chart::Bars {
            title: format!(
                "{}: fave vs a plain sequential run of the same work",
                video.display()
            ),
            y_label: "ms".into(),
            categories,
            series: bars,
        },
    })
}

/// The pipeline issue's target: fave in at most this share of the baseline's time.
const PIPELINE_TARGET_RATIO: f64 = 0.6;

async fn bench_memory(mut args: StackArgs, video: &Path, minutes: u32) -> anyhow::Result<Report> {
    if !video.is_file() {
        bail!(
            "no video at {} (scripts/setup fetches the samples)",
            video.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let (short, long) = (dir.path().join("short.mkv"), dir.path().join("long.mkv"));
    bench::with_tone(video, &short, None)?;
    bench::with_tone(video, &long, Some(f64::from(minutes) * 60.0))?;
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let base = args.data_dir.join("bench-memory");
    let mut peaks = Vec::new();
    for (label, input) in [("short", &short), ("long", &long)] {
        args.data_dir = base.join(label);
        let stack = Stack::start(stack_options(&args, any_port, any_port, true)?).await?;
        let clock = Instant::now();
        let outcome = submit(
            stack.gateway_url.as_str(),
            &to_uri(&input.display().to_string())?,
            None,
            None,
        )
        .await;
        stack.shutdown().await;
        let (status, body) = outcome?;
        if status != 200 {
            bail!("the {label} request failed with HTTP {status}: {body}");
        }
        println!(
            "{label}: {:.0} s of video in {:.1} s, {} clips",
            body["media"]["duration_s"].as_f64().unwrap_or(0.0),
            clock.elapsed().as_secs_f64(),
            body["clips"].as_array().map_or(0, Vec::len)
        );
        peaks.push(body["stages"].clone());
    }
    println!("\npeak RSS per function (MiB), fresh processes for each input:");
    println!(
        "  {:<20} {:>8} {:>8} {:>7}",
        "stage", "short", "long", "ratio"
    );
    let (mut names, mut short_mib, mut long_mib) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_stage = serde_json::Map::new();
    if let Some(stages) = peaks[0].as_object() {
        for name in stages.keys() {
            let mib = |p: &Value| p[name]["peak_rss_kb"].as_f64().unwrap_or(f64::NAN) / 1024.0;
            let (a, b) = (mib(&peaks[0]), mib(&peaks[1]));
            println!("  {name:<20} {a:>8.1} {b:>8.1} {:>7.2}", b / a);
            per_stage.insert(
                name.clone(),
                json!({ "short_mib": a, "long_mib": b, "long_over_short": b / a }),
            );
            names.push(name.clone());
            short_mib.push(a);
            long_mib.push(b);
        }
    }
    Ok(Report {
        suite: "memory",
        setup: json!({ "video": video, "long_minutes": minutes }),
        figures: json!({ "peak_rss": per_stage }),
        chart: Chart::Bars {
            title: format!(
                "peak RSS per function: {} once vs looped to {minutes} min",
                video.display()
            ),
            y_label: "MiB".into(),
            categories: names,
            series: vec![
                ("short".into(), short_mib),
                (format!("{minutes} min"), long_mib),
            ],
        },
    })
}
