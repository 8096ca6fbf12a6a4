//! Onset strength envelope and onset picking, mirroring
//! `librosa.onset.onset_strength` and `librosa.onset.onset_detect` with
//! their defaults.

/// `top_db` of `librosa.power_to_db`'s default: the spectrogram is clamped
/// to `max − 80 dB`, the max taken over the *whole* spectrogram.
const TOP_DB: f32 = 80.0;
/// `lag` default of `onset_strength`.
const LAG: usize = 1;

use crate::mel::LANES;

/// Onset strength from a row-major `[frame][band]` mel spectrogram in dB
/// (before the top_db clamp).
///
/// librosa: `S = power_to_db(melspec)`, `env = max(0, S[:, t] − S[:, t−lag])`
/// (`max_size=1`, so the reference is `S` itself), mean over bands, then
/// left-pad with `lag + n_fft // (2·hop)` zeros (= 3 with the defaults) and
/// trim to the number of frames. The result is therefore *delayed*: value `t`
/// is the change from frame `t−3` to `t−2`; that is librosa's alignment and
/// is kept.
/// The extractor feeds [`OnsetEnvelope`] directly; this whole-array form is for tests.
#[cfg(test)]
pub(crate) fn onset_strength(mel_db: &[f32], n_mels: usize) -> Vec<f32> {
    let n_frames = mel_db.len() / n_mels;
    let max_db = mel_db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut env = OnsetEnvelope::new(max_db, n_mels, n_frames);
    for frame in mel_db.chunks_exact(n_mels) {
        env.push(frame);
    }
    env.finish()
}

/// [`onset_strength`] fed one mel frame at a time, in order, once the global maximum
/// (`max_db`) is known: what lets the spectrogram wait on disk instead of in memory.
pub(crate) struct OnsetEnvelope {
    floor: f32,
    n_frames: usize,
    prev: Vec<f32>,
    seen: usize,
    env: Vec<f32>,
}

impl OnsetEnvelope {
    pub(crate) fn new(max_db: f32, n_mels: usize, n_frames: usize) -> Self {
        // n_fft // (2·hop) with n_fft = 2048, hop = 512.
        let pad = LAG + crate::FRAME_LENGTH / (2 * crate::HOP_LENGTH);
        let mut env = Vec::with_capacity(n_frames);
        env.resize(pad.min(n_frames), 0.0);
        Self {
            // Computed in f32 as librosa does (float32 array max − python float).
            floor: max_db - TOP_DB,
            n_frames,
            prev: vec![0.0; n_mels],
            seen: 0,
            env,
        }
    }

    /// The next frame: the envelope gets the change from the previous one (value `t` is
    /// the change from frame `t − pad` to `t − pad + 1`), until it is `n_frames` long.
    pub(crate) fn push(&mut self, frame: &[f32]) {
        if self.seen >= LAG && self.env.len() < self.n_frames {
            let floor = self.floor;
            // Clamp at the floor, difference, rectify; summed in LANES f32 accumulators
            // (librosa's np.mean is an f32 pairwise sum).
            let rectified = |(&x, &y): (&f32, &f32)| (x.max(floor) - y.max(floor)).max(0.0);
            let (ca, ra) = frame.as_chunks::<LANES>();
            let (cb, rb) = self.prev.as_chunks::<LANES>();
            let mut acc = [0f32; LANES];
            for (x, y) in ca.iter().zip(cb) {
                for (s, d) in acc.iter_mut().zip(x.iter().zip(y).map(rectified)) {
                    *s += d;
                }
            }
            let sum = acc.iter().sum::<f32>() + ra.iter().zip(rb).map(rectified).sum::<f32>();
            self.env.push(sum / frame.len() as f32);
        }
        self.prev.copy_from_slice(frame);
        self.seen += 1;
    }

    pub(crate) fn finish(mut self) -> Vec<f32> {
        self.env.resize(self.n_frames, 0.0);
        self.env
    }
}

/// `librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop)`
/// with defaults, returned in seconds (`units="time"`).
///
/// The envelope is normalised to `[0, 1]` (minus min, over max + tiny) and
/// fed to `librosa.util.peak_pick` with the defaults from `onset_detect`:
/// `pre_max = 0.03·sr // hop`, `post_max = 1`, `pre_avg = 0.10·sr // hop`,
/// `post_avg = 0.10·sr // hop + 1`, `wait = 0.03·sr // hop`, `delta = 0.07`
/// (1, 1, 4, 5, 1 frames at 22050 Hz / 512).
pub(crate) fn onset_detect(env: &[f32], sr: u32, hop: usize) -> Vec<f64> {
    if env.is_empty() {
        return Vec::new();
    }
    let min = env.iter().copied().fold(f32::INFINITY, f32::min);
    let shifted: Vec<f32> = env.iter().map(|&x| x - min).collect();
    let max = shifted.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let scale = max + f32::MIN_POSITIVE;
    let norm: Vec<f32> = shifted.iter().map(|&x| x / scale).collect();
    // librosa: "if not onset_envelope.any()": nothing to pick.
    if !norm.iter().any(|&x| x != 0.0) || !norm.iter().all(|x| x.is_finite()) {
        return Vec::new();
    }

    // Python: `0.03 * sr // hop_length` is floor division on floats.
    let frames = |secs: f64| (secs * f64::from(sr) / hop as f64).floor() as usize;
    let params = PeakPick {
        pre_max: frames(0.03),
        post_max: frames(0.0) + 1,
        pre_avg: frames(0.10),
        post_avg: frames(0.10) + 1,
        wait: frames(0.03),
        delta: 0.07,
    };
    peak_pick(&norm, &params)
        .into_iter()
        .map(|f| (f * hop) as f64 / f64::from(sr))
        .collect()
}

/// Parameters of `librosa.util.peak_pick`, in frames.
struct PeakPick {
    pre_max: usize,
    post_max: usize,
    pre_avg: usize,
    post_avg: usize,
    wait: usize,
    delta: f32,
}

/// Port of librosa 0.11's `__peak_pick` loop, including its special case for
/// frame 0 and its greedy "skip `wait` frames after a peak".
fn peak_pick(x: &[f32], p: &PeakPick) -> Vec<usize> {
    let n = x.len();
    let max_of = |s: &[f32]| s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // np.mean on float32 returns float32; summing in f64 and rounding once
    // differs from numpy's pairwise f32 sum only in the last bit.
    let mean_of =
        |s: &[f32]| (s.iter().map(|&v| f64::from(v)).sum::<f64>() / s.len() as f64) as f32;

    let mut peaks = Vec::new();
    let first = x[0] >= max_of(&x[..p.post_max.min(n)])
        && x[0] >= mean_of(&x[..p.post_avg.min(n)]) + p.delta;
    let mut i = if first {
        peaks.push(0);
        p.wait + 1
    } else {
        1
    };
    while i < n {
        let maxn = max_of(&x[i.saturating_sub(p.pre_max)..(i + p.post_max).min(n)]);
        if x[i] != maxn {
            i += 1;
            continue;
        }
        let avgn = mean_of(&x[i.saturating_sub(p.pre_avg)..(i + p.post_avg).min(n)]);
        if x[i] < avgn + p.delta {
            i += 1;
            continue;
        }
        peaks.push(i);
        i += p.wait + 1;
    }
    peaks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onset_strength_is_delayed_and_rectified() {
        // 2 bands, 6 frames: a step up at frame 2, a step down at frame 4.
        let db = [
            -50.0, -50.0, //
            -50.0, -50.0, //
            -20.0, -30.0, //
            -20.0, -30.0, //
            -60.0, -60.0, //
            -60.0, -60.0,
        ];
        let env = onset_strength(&db, 2);
        assert_eq!(env.len(), 6);
        // First 3 frames are librosa's zero padding; frame t holds the change
        // from t−3 to t−2, so the step (frame 1 → 2) lands at t = 4.
        assert_eq!(&env[..4], &[0.0, 0.0, 0.0, 0.0]);
        assert!((env[4] - 25.0).abs() < 1e-6);
        assert_eq!(env[5], 0.0);
    }

    #[test]
    fn onset_strength_applies_global_top_db_floor() {
        // Max is 0 dB, so everything is clamped at −80 dB: the rise from
        // −100 to −90 is invisible, the rise from −90 to −70 counts 10 dB.
        let db = [0.0, -100.0, -90.0, -70.0, 0.0, 0.0];
        let env = onset_strength(&db, 1);
        assert_eq!(env[4], 0.0);
        assert!((env[5] - 10.0).abs() < 1e-6);
    }

    #[test]
    fn peak_pick_matches_librosa_rules() {
        let p = PeakPick {
            pre_max: 1,
            post_max: 1,
            pre_avg: 4,
            post_avg: 5,
            wait: 1,
            delta: 0.07,
        };
        // Frame 0 qualifies through the special case; the plateau at 3/4
        // yields only its first frame (x == local max, then wait).
        let x = [1.0, 0.0, 0.0, 0.8, 0.8, 0.0, 0.0, 0.05, 0.0];
        assert_eq!(peak_pick(&x, &p), vec![0, 3]);
    }
}
