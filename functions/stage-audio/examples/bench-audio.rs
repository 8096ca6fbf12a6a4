//! Times this crate against librosa 0.11 on the same wav.
//!
//! ```text
//! cargo run --release --example bench-audio -- WAV [REPEAT] [--rust-only]
//! ```
//!
//! Rust: one cold call (first touch of the file, FFT planning), then
//! `REPEAT` (default 9) calls of [`analyze_wav`] (decode + features) and of
//! [`analyze_samples`] (features only, samples already in memory).
//!
//! librosa: `scripts/librosa_reference.py --repeat 4` under `$FAVE_PYTHON`.
//! Its first run is "cold" (lazy submodule imports, numba JIT/cache load,
//! FFT set-up) and the other three are "warm". `import librosa` and the
//! first `librosa.load` (which pays lazy imports) are reported but excluded.
//!
//! Both best and median times are printed: on a shared machine the best run
//! is the least disturbed estimate, and the speed-up is given for both.
//! `--rust-only` skips librosa (for profiling the Rust side).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use stage_audio::{analyze_samples, analyze_wav};

/// (best, median) of durations in seconds, as milliseconds.
fn best_median_ms(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    match v.first() {
        Some(&best) => (best * 1e3, v[v.len() / 2] * 1e3),
        None => (f64::NAN, f64::NAN),
    }
}

fn time_runs<T>(
    repeat: usize,
    mut f: impl FnMut() -> Result<T, stage_audio::AudioError>,
) -> Result<Vec<f64>, stage_audio::AudioError> {
    (0..repeat)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f()?);
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let rust_only = args.iter().any(|a| a == "--rust-only");
    args.retain(|a| a != "--rust-only");
    let Some(wav) = args.first().cloned() else {
        return Err("usage: bench WAV [REPEAT] [--rust-only]".into());
    };
    let repeat: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(9)
        .max(1);

    let t = Instant::now();
    let f = analyze_wav(&wav)?;
    let rust_cold = t.elapsed().as_secs_f64() * 1e3;
    let e2e = best_median_ms(time_runs(repeat, || analyze_wav(&wav))?);
    let samples: Vec<i16> = hound::WavReader::open(&wav)?
        .samples::<i16>()
        .collect::<Result<_, _>>()?;
    let feat = best_median_ms(time_runs(repeat, || {
        analyze_samples(&samples, f.sample_rate)
    })?);

    println!(
        "wav: {wav} ({:.1} s, {} frames)",
        f.duration_s(),
        f.rms.len()
    );
    println!("                                        best     median");
    println!("rust    cold (first call)          {rust_cold:9.2} ms");
    println!(
        "rust    decode + features          {:9.2} {:9.2} ms",
        e2e.0, e2e.1
    );
    println!(
        "rust    features only              {:9.2} {:9.2} ms",
        feat.0, feat.1
    );
    if rust_only {
        return Ok(());
    }

    let python = std::env::var("FAVE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/fave-tools/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/librosa_reference.py");
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("ref.json");
    let status = Command::new(&python)
        .arg(&script)
        .arg(&wav)
        .arg(&json)
        .args(["--repeat", "4"])
        .status()?;
    if !status.success() {
        return Err(format!("{python} {} failed: {status}", script.display()).into());
    }
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let secs = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let runs: Vec<f64> = r["runs_s"]
        .as_array()
        .map(|a| a.iter().map(secs).collect())
        .unwrap_or_default();
    let lib_cold = runs.first().map_or(f64::NAN, |s| s * 1e3);
    let warm = best_median_ms(runs.get(1..).unwrap_or_default().to_vec());
    let ms = |key: &str| secs(&r[key]) * 1e3;

    println!(
        "librosa import                     {:9.2} ms (excluded)",
        ms("import_s")
    );
    println!(
        "librosa load, 1st (lazy imports)   {:9.2} ms (excluded)",
        ms("load_cold_s")
    );
    println!("librosa load, 2nd (decode)         {:9.2} ms", ms("load_s"));
    println!("librosa features cold (1st run)    {lib_cold:9.2} ms");
    println!(
        "librosa features warm              {:9.2} {:9.2} ms",
        warm.0, warm.1
    );
    println!(
        "speed-up, features only:     warm {:.1}x best / {:.1}x median, cold {:.1}x",
        warm.0 / feat.0,
        warm.1 / feat.1,
        lib_cold / feat.1
    );
    println!(
        "speed-up, decode + features: warm {:.1}x best",
        (warm.0 + ms("load_s")) / e2e.0
    );
    Ok(())
}
