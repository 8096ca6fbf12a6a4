//! Parity test against librosa 0.11.
//!
//! Builds two real wavs at test time (Big Buck Bunny's soundtrack via ffmpeg,
//! and espeak-ng speech padded with digital silence), runs
//! `scripts/librosa_reference.py` on them with `$FAVE_PYTHON` (default
//! `~/.cache/fave-tools/venv/bin/python`, which must have librosa 0.11),
//! and requires every feature to match:
//!
//! A third wav, a loud excerpt of the first that begins and ends on negative
//! samples, makes the centring pads observable.
//!
//! * per-frame series: `|rust − librosa| ≤ 1e-3 · max(|librosa|, 1e-3 · max|librosa|)`;
//! * onset times and non-silent interval edges: same count, each within one
//!   hop (512 samples).
//!
//! Missing tools make the test fail (not skip), so a green run always means
//! the comparison happened. `$FAVE_SAMPLE_MP4` overrides the video used.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use stage_audio::{AudioFeatures, HOP_LENGTH, analyze_wav};

const REL_TOL: f64 = 1e-3;
/// Near-zero floor, as a fraction of the series' largest magnitude.
const FLOOR_FRAC: f64 = 1e-3;

fn python() -> String {
    std::env::var("FAVE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/fave-tools/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

fn sample_mp4() -> PathBuf {
    if let Ok(p) = std::env::var("FAVE_SAMPLE_MP4") {
        return PathBuf::from(p);
    }
    // Inside the fave repo the sample sits in samples/ at some ancestor.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|d| d.join("samples/bigbuckbunny.mp4"))
        .find(|p| p.exists())
        .unwrap_or_else(|| manifest.join("../../samples/bigbuckbunny.mp4"))
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Big Buck Bunny's soundtrack, downmixed to mono 22050 Hz 16-bit.
fn make_bbb(dir: &Path) -> PathBuf {
    let out = dir.join("bbb.wav");
    run(Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(sample_mp4())
        .args(["-vn", "-ac", "1", "-ar", "22050", "-c:a", "pcm_s16le"])
        .arg(&out));
    out
}

/// espeak-ng speech twice, framed by digital silence: 1.5 s, speech, 1 s,
/// speech, 2 s — so split() yields two intervals and onset/ZCR/centroid see
/// silence→speech transitions.
fn make_speech(dir: &Path) -> PathBuf {
    let raw = dir.join("speech_raw.wav");
    run(Command::new("espeak-ng")
        .arg("-w")
        .arg(&raw)
        .arg("The quick brown fox jumps over the lazy dog."));
    let out = dir.join("speech.wav");
    let silence = |d: &str| format!("anullsrc=r=22050:cl=mono:d={d}");
    run(Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &silence("1.5"),
            "-i",
        ])
        .arg(&raw)
        .args(["-f", "lavfi", "-i", &silence("1.0"), "-i"])
        .arg(&raw)
        .args(["-f", "lavfi", "-i", &silence("2.0")])
        .args([
            "-filter_complex",
            "[1:a]aresample=22050,aformat=channel_layouts=mono[s1];\
             [3:a]aresample=22050,aformat=channel_layouts=mono[s2];\
             [0:a][s1][2:a][s2][4:a]concat=n=5:v=0:a=1",
            "-ac",
            "1",
            "-ar",
            "22050",
            "-c:a",
            "pcm_s16le",
        ])
        .arg(&out));
    out
}

/// A loud excerpt of `bbb` that starts and ends on negative samples, so the
/// centring pads matter: zero vs edge padding changes RMS, ZCR (a zero pad
/// next to a negative sample is a crossing) and the edge STFT frames. Both
/// natural files start and end near zero and would hide a padding mistake.
fn make_bbb_cut(dir: &Path, bbb: &Path) -> PathBuf {
    let mut r = hound::WavReader::open(bbb).expect("open bbb");
    let spec = r.spec();
    let y: Vec<i16> = r.samples::<i16>().map(|s| s.expect("sample")).collect();
    let sr = spec.sample_rate as usize;
    let start = (sr..y.len())
        .find(|&i| y[i] < -1000)
        .expect("loud negative start");
    let end = (0..y.len() - sr / 2)
        .rev()
        .find(|&i| y[i] < -1000)
        .expect("loud negative end");
    let out = dir.join("bbb_cut.wav");
    let mut w = hound::WavWriter::create(&out, spec).expect("create wav");
    for &s in &y[start..=end] {
        w.write_sample(s).expect("write");
    }
    w.finalize().expect("finalize");
    out
}

fn reference(wav: &Path) -> Value {
    let json = wav.with_extension("json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/librosa_reference.py");
    run(Command::new(python()).arg(script).arg(wav).arg(&json));
    let text = std::fs::read_to_string(&json).expect("reference JSON");
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(v: &Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} missing"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Largest tolerance-normalised error; ≤ REL_TOL means a match.
fn max_rel_err(ours: &[f32], theirs: &[f64]) -> Result<f64, String> {
    if ours.len() != theirs.len() {
        return Err(format!("length {} vs librosa {}", ours.len(), theirs.len()));
    }
    let max_abs = theirs.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let floor = FLOOR_FRAC * max_abs;
    let mut worst = (0.0, 0);
    for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
        let denom = b.abs().max(floor).max(f64::MIN_POSITIVE);
        let e = (f64::from(a) - b).abs() / denom;
        if e > worst.0 {
            worst = (e, i);
        }
    }
    if worst.0 > REL_TOL {
        let i = worst.1;
        return Err(format!(
            "rel err {:.3e} at frame {i}: rust {} vs librosa {}",
            worst.0, ours[i], theirs[i]
        ));
    }
    Ok(worst.0)
}

/// Same number of events, each within `tol` seconds.
fn max_time_err(ours: &[f64], theirs: &[f64], tol: f64) -> Result<f64, String> {
    if ours.len() != theirs.len() {
        return Err(format!(
            "{} events vs librosa {}: {ours:?} vs {theirs:?}",
            ours.len(),
            theirs.len()
        ));
    }
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    if worst > tol {
        return Err(format!(
            "time error {worst} s > {tol} s: {ours:?} vs {theirs:?}"
        ));
    }
    Ok(worst)
}

/// Compares every feature; returns the per-feature errors or all failures.
fn compare(name: &str, f: &AudioFeatures, r: &Value) -> Vec<String> {
    let hop_s = HOP_LENGTH as f64 / f64::from(f.sample_rate);
    let mut failures = Vec::new();
    let mut report = |feature: &str, res: Result<f64, String>| match res {
        Ok(e) => println!("{name:>7} {feature:<20} max err {e:.3e}"),
        Err(m) => failures.push(format!("{name}: {feature}: {m}")),
    };
    report("rms", max_rel_err(&f.rms, &floats(r, "rms")));
    report(
        "zero_crossing_rate",
        max_rel_err(&f.zero_crossing_rate, &floats(r, "zero_crossing_rate")),
    );
    report(
        "spectral_centroid",
        max_rel_err(&f.spectral_centroid, &floats(r, "spectral_centroid")),
    );
    report(
        "onset_strength",
        max_rel_err(&f.onset_strength, &floats(r, "onset_strength")),
    );
    report(
        "onsets (s)",
        max_time_err(&f.onsets, &floats(r, "onsets"), hop_s + 1e-9),
    );
    let ours: Vec<f64> = f
        .non_silent
        .iter()
        .flat_map(|iv| [iv.start_s, iv.end_s])
        .collect();
    // librosa gives [[start, end], ...]; flatten to edges like `ours`.
    let theirs: Vec<f64> = r["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .flat_map(|pair| pair.as_array().expect("[start, end]").iter())
        .map(|x| x.as_f64().expect("number"))
        .collect();
    report("non_silent (s)", max_time_err(&ours, &theirs, hop_s + 1e-9));
    failures
}

#[test]
fn matches_librosa_on_real_audio() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    let bbb = make_bbb(dir.path());
    let bbb_cut = make_bbb_cut(dir.path(), &bbb);
    for (name, wav) in [
        ("bbb", bbb),
        ("speech", make_speech(dir.path())),
        ("bbb_cut", bbb_cut),
    ] {
        let r = reference(&wav);
        assert!(
            r["librosa_version"]
                .as_str()
                .is_some_and(|v| v.starts_with("0.11")),
            "reference must run librosa 0.11, got {}",
            r["librosa_version"]
        );
        let f = analyze_wav(&wav).expect("analysis");
        assert_eq!(
            f.n_samples as u64,
            r["n_samples"].as_u64().expect("n_samples")
        );
        failures.extend(compare(name, &f, &r));

        // The comparison must not be vacuous: a one-frame shift of a real
        // series has to be caught.
        let mut shifted = f.rms.clone();
        shifted.rotate_right(1);
        assert!(
            max_rel_err(&shifted, &floats(&r, "rms")).is_err(),
            "{name}: shifted RMS passed"
        );
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
