//! `fave bench memory`: peak memory of every function on a short and a long input, each on
//! a fresh stack.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use fave_common::contract::report::StageReport;
use fave_local::stack::Stack;
use serde_json::json;

use super::baseline;
use super::report::{Chart, Report};
use crate::client::{Submission, run_once};
use crate::stack::{StackArgs, stack_options, to_uri};

pub async fn run(mut args: StackArgs, video: &Path, minutes: u32) -> anyhow::Result<Report> {
    if !video.is_file() {
        bail!(
            "no video at {} (scripts/setup fetches the samples)",
            video.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let (short, long) = (dir.path().join("short.mkv"), dir.path().join("long.mkv"));
    baseline::with_tone(video, &short, None)?;
    baseline::with_tone(video, &long, Some(f64::from(minutes) * 60.0))?;
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let base = args.data_dir.join("bench-memory");
    let mut peaks = Vec::new();
    for (label, input) in [("short", &short), ("long", &long)] {
        args.data_dir = base.join(label);
        let stack = Stack::start(stack_options(&args, any_port, any_port, true)?).await?;
        let clock = Instant::now();
        let submission = Submission {
            video_uri: to_uri(&input.display().to_string())?,
            // Every run analyses: none is answered from the library.
            fresh: true,
            ..Submission::default()
        };
        let outcome = run_once(stack.gateway_url.as_str(), &submission).await;
        stack.shutdown().await;
        let result = outcome.map_err(|e| e.context(format!("the {label} request")))?;
        println!(
            "{label}: {:.0} s of video in {:.1} s, {} clips",
            result.media.as_ref().map_or(0.0, |m| m.duration_s),
            clock.elapsed().as_secs_f64(),
            result.clips.len()
        );
        peaks.push(result.stages);
    }
    println!("\npeak RSS per function (MiB), fresh processes for each input:");
    println!(
        "  {:<20} {:>8} {:>8} {:>7}",
        "stage", "short", "long", "ratio"
    );
    let (mut names, mut short_mib, mut long_mib) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_stage = serde_json::Map::new();
    {
        for name in peaks[0].keys() {
            let mib = |p: &BTreeMap<String, StageReport>| {
                p.get(name)
                    .and_then(|s| s.peak_rss_kb)
                    .map_or(f64::NAN, |kb| kb as f64 / 1024.0)
            };
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
