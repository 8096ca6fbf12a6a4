//! `fave bench pipeline`: the whole pipeline through the local stack against a plain
//! sequential run of the same work (ffmpeg CLI, librosa, the same detector), alternating.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use fave_local::stack::Stack;
use serde_json::json;

use super::baseline;
use super::report::{Chart, Report};
use crate::client::{Submission, run_once};
use crate::stack::{StackArgs, stack_options, to_uri};

pub async fn run(
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
        let submission = Submission {
            video_uri: uri.clone(),
            query: Some(query.to_owned()),
            // Every run analyses: none is answered from the library.
            fresh: true,
            ..Submission::default()
        };
        let outcome = run_once(stack.gateway_url.as_str(), &submission).await;
        let ms = clock.elapsed().as_secs_f64() * 1e3;
        let result = match outcome {
            Ok(result) => result,
            Err(e) => {
                stack.shutdown().await;
                return Err(e);
            }
        };
        fave_ms.push(ms);
        let stages: Vec<String> = result
            .stages
            .iter()
            .map(|(name, s)| format!("{name} {}", s.call_ms))
            .collect();
        println!(
            "  run {run}: fave     {ms:>8.0} ms  (calls, ms: {})",
            stages.join(", ")
        );
        // The baseline cuts where fave cut, so both do the same work.
        let cuts: Vec<f64> = result.clips.iter().skip(1).map(|c| c.start_s).collect();
        let work = baseline::Work {
            video: video.to_path_buf(),
            cuts,
            fps,
            repo: std::env::current_dir()?,
        };
        let b = match tokio::task::spawn_blocking(move || baseline::baseline(&work)).await? {
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
            "fave_stage_call_ms": result.stages.iter().map(|(name, s)| (name.clone(), s.call_ms)).collect::<std::collections::BTreeMap<_, _>>(),
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
    let (fave_best, fave_median, fave_worst) = baseline::best_median_worst(fave_ms);
    let (work_best, work_median, work_worst) = baseline::best_median_worst(base_work);
    let (wall_best, _, _) = baseline::best_median_worst(base_wall);
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
