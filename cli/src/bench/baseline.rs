//! `fave bench pipeline`: the whole pipeline on one video through the local stack, against
//! a plain sequential baseline doing the same work in one process, one step after another:
//!
//! 1. ffmpeg: normalize to the same canonical H.264 mp4 (and wav, if there is sound);
//! 2. ffmpeg: a second pass for scene changes;
//! 3. librosa 0.11 (`scripts/librosa_reference.py`): the same audio features, if any sound;
//! 4. ffmpeg: split at the same cut points fave chose (stream copy);
//! 5. ffmpeg: frames of each clip at the same rate and size;
//! 6. the same detector (yolov3-tiny in tract, stage-detect's code) on every frame in turn.
//!
//! Both sides run `runs` times, alternating, so drift in the machine's load hits both. fave
//! runs on a warm stack (functions started, the model loaded); the baseline's one-time
//! set-up (importing librosa, loading the model) is reported apart and left out of the
//! ratio, which is therefore the stricter one for fave.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

/// What one baseline run took, step by step, in milliseconds.
#[derive(Debug, Default, Clone)]
struct Baseline {
    normalize: f64,
    scenes: f64,
    audio: Option<f64>,
    split: f64,
    frames: f64,
    detect: f64,
    /// One-time set-up: librosa's import and the model load.
    setup: f64,
    frame_count: usize,
    detections: usize,
}

impl Baseline {
    fn work(&self) -> f64 {
        self.normalize
            + self.scenes
            + self.audio.unwrap_or(0.0)
            + self.split
            + self.frames
            + self.detect
    }
}

/// Settings both sides share.
pub struct Work {
    pub video: PathBuf,
    pub cuts: Vec<f64>,
    pub fps: f64,
    /// Where `scripts/` is.
    pub repo: PathBuf,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One sequential baseline run in `dir`.
fn baseline_once(work: &Work, dir: &Path) -> anyhow::Result<Baseline> {
    let mut b = Baseline::default();
    let video = dir.join("video.mp4");
    let wav = dir.join("audio.wav");
    let has_audio = has_audio(&work.video)?;

    let t = Instant::now();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-y", "-v", "error", "-i"])
        .arg(&work.video)
        .args(["-map", "0:v:0", "-map", "0:a:0?", "-vf"])
        .arg("scale='trunc(min(1280,iw)/2)*2':-2")
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-fps_mode",
            "vfr",
            "-force_key_frames",
            "expr:gte(t,n_forced*1)",
        ])
        .args(["-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k"])
        .args(["-movflags", "+faststart"])
        .arg(&video);
    if has_audio {
        cmd.args([
            "-map",
            "0:a:0",
            "-vn",
            "-ac",
            "1",
            "-ar",
            "22050",
            "-c:a",
            "pcm_s16le",
        ])
        .arg(&wav);
    }
    run(&mut cmd, "ffmpeg normalize")?;
    b.normalize = ms_since(t);

    let t = Instant::now();
    run(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&video)
            .args([
                "-vf",
                "scale=160:-2:flags=neighbor,select='gt(scene,0.3)',metadata=print:file=-",
            ])
            .args(["-f", "null", "-"]),
        "ffmpeg scene detection",
    )?;
    b.scenes = ms_since(t);

    if has_audio {
        let out = dir.join("librosa.json");
        let t = Instant::now();
        run(
            Command::new(python())
                .arg(work.repo.join("scripts/librosa_reference.py"))
                .arg(&wav)
                .arg(&out),
            "librosa",
        )?;
        let total = ms_since(t);
        let report: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
        let import = report["import_s"].as_f64().unwrap_or(0.0) * 1e3;
        b.setup += import;
        b.audio = Some(total - import);
    }

    let t = Instant::now();
    let clips_dir = dir.join("clips");
    std::fs::create_dir_all(&clips_dir)?;
    if work.cuts.is_empty() {
        std::fs::copy(&video, clips_dir.join("clip-0000.mp4"))?;
    } else {
        let times: Vec<String> = work
            .cuts
            .iter()
            .map(|c| format!("{:.6}", c - 1e-4))
            .collect();
        run(
            Command::new("ffmpeg")
                .args(["-nostdin", "-y", "-v", "error", "-i"])
                .arg(&video)
                .args(["-map", "0", "-c", "copy", "-f", "segment", "-segment_times"])
                .arg(times.join(","))
                .args(["-reset_timestamps", "1"])
                .arg(clips_dir.join("clip-%04d.mp4")),
            "ffmpeg split",
        )?;
    }
    b.split = ms_since(t);

    let t = Instant::now();
    let mut clips: Vec<PathBuf> = std::fs::read_dir(&clips_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    clips.sort();
    let mut frames = Vec::new();
    for (i, clip) in clips.iter().enumerate() {
        let out = dir.join(format!("frames-{i:04}"));
        std::fs::create_dir_all(&out)?;
        run(
            Command::new("ffmpeg")
                .args(["-nostdin", "-y", "-v", "error", "-i"])
                .arg(clip)
                .args(["-map", "0:v:0", "-vf"])
                .arg(format!("fps={},scale='min(640,iw)':-2", work.fps))
                .args(["-q:v", "3", "-start_number", "0"])
                .arg(out.join("frame-%06d.jpg")),
            "ffmpeg frames",
        )?;
        let mut these: Vec<PathBuf> = std::fs::read_dir(&out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        these.sort();
        frames.extend(these);
    }
    b.frames = ms_since(t);

    let t = Instant::now();
    // The same runtime stage-detect runs in (FAVE_DETECT_BACKEND), so the two compare the
    // orchestration, not the runtimes.
    let backend = stage_detect::Backend::from_lookup(&|k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)?;
    let detector = stage_detect::Detector::load_with(stage_detect::model_dir(), backend)?;
    b.setup += ms_since(t);
    let t = Instant::now();
    let options = stage_detect::DetectOptions::default();
    for frame in &frames {
        let img = image::open(frame)?.to_rgb8();
        b.detections += detector.detect(&img, &options)?.len();
    }
    b.detect = ms_since(t);
    b.frame_count = frames.len();
    Ok(b)
}

/// Runs the baseline once in a fresh temporary directory.
pub fn baseline(work: &Work) -> anyhow::Result<BaselineRun> {
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let steps = baseline_once(work, dir.path())?;
    Ok(BaselineRun {
        wall_ms: ms_since(t),
        steps,
    })
}

pub struct BaselineRun {
    pub wall_ms: f64,
    steps: Baseline,
}

impl BaselineRun {
    /// Wall time without the one-time set-up.
    pub fn work_ms(&self) -> f64 {
        self.steps.work()
    }

    /// Every step's time, for a report.
    pub fn to_json(&self) -> serde_json::Value {
        let b = &self.steps;
        serde_json::json!({
            "wall_ms": self.wall_ms,
            "work_ms": b.work(),
            "steps_ms": {
                "normalize": b.normalize,
                "scenes": b.scenes,
                "audio": b.audio,
                "split": b.split,
                "frames": b.frames,
                "detect": b.detect,
            },
            "setup_ms": b.setup,
            "frames": b.frame_count,
            "detections": b.detections,
        })
    }

    pub fn describe(&self) -> String {
        let b = &self.steps;
        format!(
            "normalize {:.0} + scenes {:.0} + audio {} + split {:.0} + frames {:.0} + detect {:.0} \
             ({} frames, {} detections) = {:.0} ms; set-up apart {:.0} ms",
            b.normalize,
            b.scenes,
            b.audio
                .map_or("(no sound)".to_owned(), |a| format!("{a:.0}")),
            b.split,
            b.frames,
            b.detect,
            b.frame_count,
            b.detections,
            b.work(),
            b.setup
        )
    }
}

fn has_audio(video: &Path) -> anyhow::Result<bool> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a"])
        .args(["-show_entries", "stream=index", "-of", "csv=p=0"])
        .arg(video)
        .output()
        .context("running ffprobe")?;
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// The Python that has librosa: `$FAVE_PYTHON` (scripts/env.sh sets it).
fn python() -> PathBuf {
    std::env::var_os("FAVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// (best, median, worst) of a list of milliseconds; NaN for an empty one.
pub fn best_median_worst(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(&best), Some(&worst)) => (best, v[v.len() / 2], worst),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

/// `video` with a beeping tone as its sound (so the audio stage has work), looped to
/// `seconds` if given; written to `out` (Matroska, the video stream copied).
pub fn with_tone(video: &Path, out: &Path, seconds: Option<f64>) -> anyhow::Result<()> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-y", "-v", "error"]);
    if seconds.is_some() {
        cmd.args(["-stream_loop", "-1"]);
    }
    cmd.arg("-i")
        .arg(video)
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:beep_factor=4:sample_rate=22050",
        ])
        .args([
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:v",
            "copy",
            "-c:a",
            "pcm_s16le",
        ]);
    match seconds {
        Some(s) => cmd.arg("-t").arg(format!("{s}")),
        None => cmd.arg("-shortest"),
    };
    run(cmd.arg(out), "ffmpeg (making the input)")
}
