//! Slaney-style mel filterbank, as built by `librosa.filters.mel` with its
//! defaults (`htk=False`, `norm="slaney"`, `fmin=0`, `fmax=sr/2`).
//!
//! Every filter is a triangle over a contiguous run of FFT bins, so the bank
//! is stored sparsely (first bin + weights) and applying it costs about two
//! multiply-adds per FFT bin instead of `n_mels × n_bins`.
//!
//! Public for stage-transcribe, whose Whisper features use the same bank
//! (`filters.mel(sr=16000, n_fft=400, n_mels=80)`).

/// The Slaney scale's constants: linear at `F_SP` Hz per mel below `MIN_LOG_HZ`,
/// logarithmic with step `logstep()` above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

/// Hz → mel on the Slaney scale (linear below 1 kHz, logarithmic above),
/// exactly `librosa.hz_to_mel(htk=False)`.
fn hz_to_mel(f: f64) -> f64 {
    let (min_log_mel, logstep) = (MIN_LOG_MEL, logstep());
    if f >= MIN_LOG_HZ {
        min_log_mel + (f / MIN_LOG_HZ).ln() / logstep
    } else {
        f / F_SP
    }
}

/// Inverse of [`hz_to_mel`], exactly `librosa.mel_to_hz(htk=False)`.
fn mel_to_hz(m: f64) -> f64 {
    let (min_log_mel, logstep) = (MIN_LOG_MEL, logstep());
    if m >= min_log_mel {
        MIN_LOG_HZ * (logstep * (m - min_log_mel)).exp()
    } else {
        F_SP * m
    }
}

/// One triangular filter: `weights[i]` applies to FFT bin `start + i`.
#[derive(Debug, Clone)]
struct Filter {
    start: usize,
    weights: Vec<f32>,
}

/// A sparse mel filterbank for a given sample rate and FFT size.
#[derive(Debug, Clone)]
pub struct MelBank {
    filters: Vec<Filter>,
}

impl MelBank {
    /// Builds the bank like `librosa.filters.mel(sr=sr, n_fft=n_fft,
    /// n_mels=n_mels, fmax=sr/2)`: weights are computed in f64 and stored as
    /// f32, as librosa does (its default `dtype=np.float32`).
    pub fn new(sr: f64, n_fft: usize, n_mels: usize) -> Self {
        let n_bins = n_fft / 2 + 1;
        // np.fft.rfftfreq(n_fft, 1/sr)
        let fftfreqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * sr / n_fft as f64).collect();
        // mel_frequencies(n_mels + 2, fmin=0, fmax=sr/2): np.linspace in mel.
        let (min_mel, max_mel) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
        let n_pts = n_mels + 2;
        let mel_f: Vec<f64> = (0..n_pts)
            .map(|i| {
                // np.linspace computes start + i*step, with the end point
                // pinned exactly; replicate to keep the last edge bit-exact.
                let m = if i == n_pts - 1 {
                    max_mel
                } else {
                    min_mel + i as f64 * ((max_mel - min_mel) / (n_pts - 1) as f64)
                };
                mel_to_hz(m)
            })
            .collect();

        let filters = (0..n_mels)
            .map(|i| {
                let (f_lo, f_c, f_hi) = (mel_f[i], mel_f[i + 1], mel_f[i + 2]);
                let (d_lo, d_hi) = (f_c - f_lo, f_hi - f_c);
                // Slaney normalisation: roughly constant energy per channel.
                let enorm = 2.0 / (f_hi - f_lo);
                let w: Vec<f32> = fftfreqs
                    .iter()
                    .map(|&f| {
                        let lower = -(f_lo - f) / d_lo;
                        let upper = (f_hi - f) / d_hi;
                        // librosa stores the triangle in an f32 array, then
                        // scales it by the f64 norm; round the same way.
                        let tri = 0f64.max(lower.min(upper)) as f32;
                        (f64::from(tri) * enorm) as f32
                    })
                    .collect();
                let first = w.iter().position(|&x| x > 0.0);
                let last = w.iter().rposition(|&x| x > 0.0);
                match (first, last) {
                    (Some(a), Some(b)) => {
                        // Pad to whole SIMD chunks with zero weights so
                        // `dot` never runs a scalar tail.
                        let mut weights = w[a..=b].to_vec();
                        weights.resize(weights.len().next_multiple_of(LANES), 0.0);
                        Filter { start: a, weights }
                    }
                    // Empty channel (only possible for tiny n_fft); it
                    // contributes zero power, like librosa's all-zero row.
                    _ => Filter {
                        start: 0,
                        weights: Vec::new(),
                    },
                }
            })
            .collect();
        Self { filters }
    }

    /// Number of mel bands.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether the bank has no bands.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The weight of FFT bin `bin` in band `band` (zero outside its triangle).
    pub fn weight(&self, band: usize, bin: usize) -> f32 {
        let f = &self.filters[band];
        bin.checked_sub(f.start)
            .and_then(|i| f.weights.get(i))
            .copied()
            .unwrap_or(0.0)
    }

    /// Minimum length of the power slice given to [`apply`](Self::apply):
    /// the zero-padded filters may read a few bins past `n_fft/2`, which the
    /// caller must keep at zero.
    pub fn input_len(&self) -> usize {
        self.filters
            .iter()
            .map(|f| f.start + f.weights.len())
            .max()
            .unwrap_or(0)
    }

    /// Projects a power spectrum (`n_fft/2+1` bins) onto the bank, writing one
    /// value per band into `out`.
    #[inline(always)]
    pub fn apply(&self, power: &[f32], out: &mut [f32]) {
        for (o, f) in out.iter_mut().zip(&self.filters) {
            let p = &power[f.start..f.start + f.weights.len()];
            *o = dot(&f.weights, p);
        }
    }
}

/// Width of the independent accumulators used for vectorised sums.
pub(crate) const LANES: usize = 8;

/// Dot product with [`LANES`] independent accumulators so the compiler can
/// keep it in SIMD registers (a single running sum forces sequential adds).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ra) = a.as_chunks::<LANES>();
    let (cb, rb) = b.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        for ((s, &xi), &yi) in acc.iter_mut().zip(x).zip(y) {
            *s += xi * yi;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Sum with [`LANES`] independent accumulators (see [`dot`]).
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let (ca, ra) = a.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for x in ca {
        for (s, &xi) in acc.iter_mut().zip(x) {
            *s += xi;
        }
    }
    acc.iter().sum::<f32>() + ra.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips() {
        for f in [0.0, 100.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0, 11025.0] {
            assert!((mel_to_hz(hz_to_mel(f)) - f).abs() < 1e-9 * f.max(1.0));
        }
        // Known Slaney values.
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(200.0) - 3.0).abs() < 1e-12);
        assert!((hz_to_mel(8000.0) - 45.245_640_471_924_965).abs() < 1e-9);
    }

    #[test]
    fn bank_covers_spectrum() {
        let bank = MelBank::new(22050.0, 2048, 128);
        assert_eq!(bank.len(), 128);
        // A flat unit power spectrum gives positive energy in every band.
        let mut power = vec![0.0f32; bank.input_len().max(1025)];
        power[..1025].fill(1.0);
        let mut out = vec![0.0f32; 128];
        bank.apply(&power, &mut out);
        assert!(out.iter().all(|&x| x > 0.0));
    }
}
