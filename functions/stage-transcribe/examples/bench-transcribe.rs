//! Speed and memory of the transcriber: the model loaded once, then each WAV transcribed.
//!
//! `cargo run --release -p stage-transcribe --example bench-transcribe -- [--beam N] [--threads N]
//! [--runs N] WAV…`
//!
//! WAVs are 16 kHz mono (`ffmpeg -i VIDEO -vn -ac 1 -ar 16000 clip.wav`). Per WAV: its
//! length, the time of each run, the real-time factor (seconds of work per second of audio;
//! the best run's), and the transcript; then the process's peak resident memory. The model
//! comes from `FAVE_WHISPER_DIR` or `~/.cache/fave-tools/models/whisper-tiny.en`.

use std::path::PathBuf;
use std::time::Instant;

use stage_transcribe::{DecodeOptions, Transcriber, read_wav};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = DecodeOptions::default();
    let mut threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut runs = 3usize;
    let mut wavs: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<usize, Box<dyn std::error::Error>> {
            Ok(args
                .next()
                .ok_or(format!("{name} needs a value"))?
                .parse()?)
        };
        match arg.as_str() {
            "--beam" => options.beam_size = value("--beam")?,
            "--threads" => threads = value("--threads")?,
            "--runs" => runs = value("--runs")?.max(1),
            _ => wavs.push(PathBuf::from(arg)),
        }
    }
    if wavs.is_empty() {
        return Err("usage: bench [--beam N] [--threads N] [--runs N] WAV…".into());
    }

    let rss_before = fave_common::stage::peak_rss_kb().unwrap_or(0);
    let clock = Instant::now();
    let model = Transcriber::load_with(stage_transcribe::model_dir(), options, threads)?;
    let load = clock.elapsed();
    let rss_loaded = fave_common::stage::peak_rss_kb().unwrap_or(0);
    println!(
        "model      {} (beam {}, {threads} threads)",
        stage_transcribe::model_dir().display(),
        options.beam_size
    );
    println!(
        "load       {:.0} ms, peak RSS {} MiB → {} MiB",
        load.as_secs_f64() * 1e3,
        rss_before / 1024,
        rss_loaded / 1024
    );

    for wav in &wavs {
        let samples = read_wav(wav)?;
        let audio_s = samples.len() as f64 / 16_000.0;
        let mut times = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs {
            let clock = Instant::now();
            last = Some(model.transcribe(&samples)?);
            times.push(clock.elapsed().as_secs_f64());
        }
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{}  {audio_s:.2} s of audio: runs {} s → real-time factor {:.3} (best run)",
            wav.display(),
            times
                .iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            best / audio_s
        );
        if let Some(t) = last {
            for s in &t.segments {
                println!("  [{:6.2} – {:6.2}] {}", s.start_s, s.end_s, s.text);
            }
        }
    }
    println!(
        "peak RSS   {} MiB",
        fave_common::stage::peak_rss_kb().unwrap_or(0) / 1024
    );
    Ok(())
}
