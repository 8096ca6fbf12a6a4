//! `fave bench profiles`: the same request under the `warm` and `cold` profiles
//! (`deploy/profiles/*.env` through stack.yml's labels), each on its own local stack.
//! Under `cold` every stage function is scaled to zero before each run, so each run pays
//! every stage's start the way a request after a quiet spell does on a cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use fave_local::stack::Stack;
use serde_json::json;

use super::report::{Chart, Report};
use crate::client::{Submission, run_once};
use crate::stack::StackArgs;

/// The target for a function's own start (process spawn → healthy), model loads
/// aside.
const COLD_START_TARGET_MS: f64 = 50.0;

/// One profile's figures, per stage: call times, work times, and starts (spawn → healthy).
#[derive(Default)]
struct Figures {
    total_ms: Vec<f64>,
    call_ms: BTreeMap<String, Vec<f64>>,
    /// The function serving each stage (one function may serve two).
    functions: BTreeMap<String, String>,
    work_ms: BTreeMap<String, Vec<f64>>,
    start_ms: BTreeMap<String, Vec<f64>>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run(args: StackArgs, video: &Path, runs: usize) -> anyhow::Result<Report> {
    if !video.is_file() {
        bail!(
            "no video at {} (scripts/setup fetches the samples)",
            video.display()
        );
    }
    let uri = crate::stack::to_uri(&video.display().to_string())?;
    println!(
        "fave bench profiles: {} under warm and cold, {runs} runs each after a warm-up \
         request; under cold every stage function is scaled to zero before each run.",
        video.display()
    );
    let warm = run_profile(&args, "warm", &uri, runs).await?;
    let cold = run_profile(&args, "cold", &uri, runs).await?;

    println!(
        "  {:<20} {:>10} {:>10} {:>7} {:>14} {:>10}",
        "stage (median)", "warm call", "cold call", "ratio", "start (cold)", "work"
    );
    let mut per_stage = serde_json::Map::new();
    let (mut categories, mut warm_bars, mut cold_bars) = (Vec::new(), Vec::new(), Vec::new());
    for (stage, warm_calls) in &warm.call_ms {
        let w = median(warm_calls);
        let cold_calls = cold.call_ms.get(stage).map_or(&[][..], Vec::as_slice);
        let c = median(cold_calls);
        let function = cold.functions.get(stage).unwrap_or(stage).as_str();
        let starts = cold.start_ms.get(function).map_or(&[][..], Vec::as_slice);
        let start = median(starts);
        let work = median(warm.work_ms.get(stage).map_or(&[][..], Vec::as_slice));
        println!(
            "  {stage:<20} {w:>8.0}ms {c:>8.0}ms {:>6.2}× {start:>12.1}ms {work:>8.0}ms",
            c / w
        );
        per_stage.insert(
            stage.clone(),
            json!({
                "warm_call_ms": warm_calls,
                "cold_call_ms": cold_calls,
                "cold_start_ms": starts,
                "median": { "warm_call_ms": w, "cold_call_ms": c, "cold_start_ms": start, "work_ms": work },
            }),
        );
        categories.push(stage.clone());
        warm_bars.push(w);
        cold_bars.push(c);
    }
    let (w, c) = (median(&warm.total_ms), median(&cold.total_ms));
    println!(
        "  {:<20} {w:>8.0}ms {c:>8.0}ms {:>6.2}×",
        "whole request",
        c / w
    );
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.0}–{hi:.0} ms")
    };
    println!(
        "  {:<20} warm {}, cold {} over {} runs each",
        "  min–max",
        range(&warm.total_ms),
        range(&cold.total_ms),
        warm.total_ms.len()
    );
    categories.push("whole request".into());
    warm_bars.push(w);
    cold_bars.push(c);
    println!(
        "  process start → healthy under cold, per function (target ≤ {COLD_START_TARGET_MS} ms, model loads aside):"
    );
    for (function, starts) in &cold.start_ms {
        let m = median(starts);
        let note = if function == "stage-detect" {
            " (includes loading the detector)"
        } else {
            ""
        };
        println!(
            "    {function:<16} {m:>7.1} ms  {}{note}",
            if m <= COLD_START_TARGET_MS {
                "met"
            } else {
                "over"
            }
        );
    }
    Ok(Report {
        suite: "profiles",
        setup: json!({ "video": video, "runs": runs.max(1), "warm_up_runs": 1 }),
        figures: json!({
            "stages": per_stage,
            "whole_request": {
                "warm_ms": warm.total_ms,
                "cold_ms": cold.total_ms,
                "median": { "warm_ms": w, "cold_ms": c, "cold_over_warm": c / w },
            },
            "cold_start_target_ms": COLD_START_TARGET_MS,
        }),
        chart: Chart::Bars {
            title: format!("{}: median call time, warm vs cold", video.display()),
            y_label: "ms".into(),
            categories,
            series: vec![("warm".into(), warm_bars), ("cold".into(), cold_bars)],
        },
    })
}

async fn run_profile(
    args: &StackArgs,
    profile: &str,
    uri: &str,
    runs: usize,
) -> anyhow::Result<Figures> {
    let mut args = args.clone();
    args.data_dir = args.data_dir.join(format!("bench-profile-{profile}"));
    let _ = std::fs::remove_dir_all(&args.data_dir);
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut options = crate::stack::stack_options(&args, any_port, any_port, true)?;
    options.profile = Some(profile.to_owned());
    let stack = Stack::start(options).await?;
    let outcome = measure(&stack, profile, uri, runs).await;
    stack.shutdown().await;
    outcome
}

async fn measure(stack: &Stack, profile: &str, uri: &str, runs: usize) -> anyhow::Result<Figures> {
    let stages: Vec<String> = stack
        .supervisor()
        .functions()
        .map(|f| f.name.clone())
        .filter(|name| name != "orchestrator")
        .collect();
    let mut figures = Figures::default();
    for run in 0..=runs.max(1) {
        if profile == "cold" {
            scale_to_zero(stack, &stages).await?;
        }
        let before: BTreeMap<String, usize> = stack
            .supervisor()
            .cold_starts()
            .into_iter()
            .map(|(f, s)| (f, s.len()))
            .collect();
        let clock = Instant::now();
        let submission = Submission {
            video_uri: uri.to_owned(),
            profile: Some(profile.parse().map_err(anyhow::Error::msg)?),
            // Every run analyses: none is answered from the library.
            fresh: true,
            ..Submission::default()
        };
        let result = run_once(stack.gateway_url.as_str(), &submission)
            .await
            .map_err(|e| e.context(format!("the {profile} request")))?;
        let total = clock.elapsed().as_secs_f64() * 1e3;
        if run == 0 {
            continue; // the warm-up: the OS's caches filled (under cold, then scaled down)
        }
        figures.total_ms.push(total);
        for (stage, s) in result.stages {
            if let Some(function) = s.function {
                figures.functions.insert(stage.clone(), function);
            }
            let ms = |v: u64| v as f64;
            figures
                .call_ms
                .entry(stage.clone())
                .or_default()
                .push(ms(s.call_ms));
            figures
                .work_ms
                .entry(stage)
                .or_default()
                .push(ms(s.work_ms));
        }
        for (function, starts) in stack.supervisor().cold_starts() {
            let seen = before.get(&function).copied().unwrap_or(0);
            for s in starts.iter().skip(seen) {
                figures
                    .start_ms
                    .entry(function.clone())
                    .or_default()
                    .push(s.spawn_to_healthy.as_secs_f64() * 1e3);
            }
        }
    }
    Ok(figures)
}

/// Scales every stage function to zero and waits until their processes are gone.
async fn scale_to_zero(stack: &Stack, functions: &[String]) -> anyhow::Result<()> {
    for name in functions {
        stack.supervisor().scale(name, 0)?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while functions.iter().any(|name| {
        stack
            .supervisor()
            .get(name)
            .is_some_and(|f| f.available() > 0)
    }) {
        if Instant::now() > deadline {
            bail!("the stage functions did not scale to zero within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }
}
