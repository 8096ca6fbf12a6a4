//! Latency benchmark: model load time and per-frame detection latency.
//!
//! `cargo run --release --example bench-detect -- [IMAGE] [N]`
//! IMAGE defaults to `$FAVE_SAMPLES/vtest_10s.png`, N (timed runs after 3
//! warm-up runs) to 20.  The model comes from `$FAVE_MODELS/yolov3-tiny`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use stage_detect::{DetectOptions, Detector};

const WARMUP: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image_path = match args.next() {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("FAVE_SAMPLES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples"))
            .join("vtest_10s.png"),
    };
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);

    let img = image::open(&image_path)?.to_rgb8();

    let t = Instant::now();
    let detector = Detector::load(stage_detect::model_dir())?;
    let load = t.elapsed();

    let opts = DetectOptions::default();
    let mut last = Vec::new();
    for _ in 0..WARMUP {
        last = detector.detect(&img, &opts)?;
    }
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = detector.detect(&img, &opts);
            (t.elapsed(), r)
        })
        .map(|(d, r)| r.map(|_| d))
        .collect::<Result<_, _>>()?;
    times.sort();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "image      {} ({}x{})",
        image_path.display(),
        img.width(),
        img.height()
    );
    println!("load       {:.1} ms", ms(load));
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        println!(
            "per frame  median {:.1} ms, min {:.1} ms, max {:.1} ms over {n} runs ({WARMUP} warm-up)",
            ms(times[times.len() / 2]),
            ms(*min),
            ms(*max)
        );
    }
    for d in &last {
        println!(
            "  {:<12} {:.3} {:?}",
            d.label,
            d.score,
            d.bbox.map(|v| v.round())
        );
    }
    Ok(())
}
