//! `fave bench detect`: stage-detect's detector per frame, on tract and on ONNX Runtime, side
//! by side: the same model and the same frames (vtest.avi's at 10 s and messi5.jpg), one
//! frame at a time on one thread, then one frame per core at once, the backends taking turns
//! round by round so that both meet the same load. Prints min/median/max per frame and
//! ONNX Runtime's median as a share of tract's.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use stage_detect::{Backend, DetectOptions, Detector};

use super::report::{Chart, Report};

/// Frames each backend detects per round, and rounds.
const PER_ROUND: usize = 5;

pub fn run(frames: &[&Path], rounds: usize) -> anyhow::Result<Report> {
    let images: Vec<image::RgbImage> = frames
        .iter()
        .map(|p| {
            image::open(p)
                .with_context(|| format!("{} (run scripts/setup)", p.display()))
                .map(|i| i.to_rgb8())
        })
        .collect::<anyhow::Result<_>>()?;
    let library = stage_detect::ort_library(&|k| std::env::var(k).ok());
    let backends = [Backend::Tract, Backend::OnnxRuntime { library }];
    let mut detectors = Vec::new();
    for backend in backends {
        let name = backend.name();
        let clock = Instant::now();
        let detector = Detector::load_with(stage_detect::model_dir(), backend)
            .with_context(|| format!("loading the detector into {name}"))?;
        println!(
            "{name:<12} loaded in {:.0} ms",
            clock.elapsed().as_secs_f64() * 1e3
        );
        detectors.push(detector);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let opts = DetectOptions::default();
    // Warm-up: one frame each.
    for d in &detectors {
        d.detect(&images[0], &opts)?;
    }
    let mut rows = Vec::new();
    let mut chart = Vec::new();
    for threads in [1, cores] {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); detectors.len()];
        for round in 0..rounds {
            for (i, d) in detectors.iter().enumerate() {
                // Each thread detects PER_ROUND frames; per frame is its wall time over them.
                let clock = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let images = &images;
                        let opts = &opts;
                        s.spawn(move || {
                            for k in 0..PER_ROUND {
                                let img = &images[(round + t + k) % images.len()];
                                d.detect(img, opts).expect("the detector runs");
                            }
                        });
                    }
                });
                samples[i].push(clock.elapsed().as_secs_f64() * 1e3 / PER_ROUND as f64);
            }
        }
        let mut medians = Vec::new();
        for (d, sample) in detectors.iter().zip(&mut samples) {
            sample.sort_by(f64::total_cmp);
            let (min, median, max) = (
                sample[0],
                sample[sample.len() / 2],
                sample[sample.len() - 1],
            );
            medians.push(median);
            println!(
                "{:<12} {threads} thread(s): per frame min {min:.1} ms, median {median:.1} ms, max {max:.1} ms ({} rounds of {PER_ROUND})",
                d.backend().name(),
                sample.len()
            );
            rows.push(json!({
                "backend": d.backend().name(),
                "threads": threads,
                "per_frame_ms": {"min": min, "median": median, "max": max},
            }));
        }
        println!(
            "  onnxruntime / tract, median per frame at {threads} thread(s): {:.2}×",
            medians[1] / medians[0]
        );
        chart.push((format!("{threads} thread(s)"), medians));
    }
    let categories = chart.iter().map(|(c, _)| c.clone()).collect();
    let series = detectors
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                d.backend().name().to_owned(),
                chart.iter().map(|(_, m)| m[i]).collect(),
            )
        })
        .collect();
    Ok(Report {
        suite: "detect",
        setup: json!({
            "frames": frames.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "rounds": rounds,
            "frames_per_round": PER_ROUND,
            "model": stage_detect::model_dir(),
        }),
        figures: json!({ "rows": rows }),
        chart: Chart::Bars {
            title: "stage-detect per frame: tract and ONNX Runtime (median ms)".into(),
            y_label: "ms per frame".into(),
            categories,
            series,
        },
    })
}
