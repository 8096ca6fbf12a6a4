//! Whisper's log-mel spectrogram, as `whisper/audio.py`'s `log_mel_spectrogram` computes it.
//!
//! The audio (16 kHz mono) gets 30 s of silence appended, then a short-time Fourier
//! transform: 400-point periodic Hann window, hop 160, centred frames (the signal reflected
//! by 200 samples at each end, as `torch.stft(center=True, pad_mode="reflect")`), the last
//! frame dropped. Power spectra go through 80 Slaney-scale, Slaney-normalised mel filters
//! (librosa's `filters.mel(sr=16000, n_fft=400, n_mels=80)`), then `log10(max(x, 1e-10))`,
//! clamped from below at the whole spectrogram's maximum − 8, and mapped by `(x + 4) / 4`.
//! The encoder reads windows of [`WINDOW_FRAMES`] frames (30 s).

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use stage_audio::mel::MelBank;

/// Sample rate Whisper takes.
pub const SAMPLE_RATE: u32 = 16_000;
/// FFT size (25 ms).
pub const N_FFT: usize = 400;
/// Hop between frames (10 ms).
pub const HOP: usize = 160;
/// Mel bins.
pub const N_MELS: usize = 80;
/// Frames in one encoder window (30 s).
pub const WINDOW_FRAMES: usize = 3000;
/// Samples in one encoder window (30 s).
pub const WINDOW_SAMPLES: usize = WINDOW_FRAMES * HOP;
/// Power-spectrum bins of one frame.
const BINS: usize = N_FFT / 2 + 1;

/// A log-mel spectrogram: [`N_MELS`] rows of `frames` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mel {
    data: Vec<f32>,
    frames: usize,
    /// Frames that hold the audio itself (the rest is the appended silence).
    content_frames: usize,
}

impl Mel {
    /// All frames, the appended silence included.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Frames of the audio itself: one per [`HOP`] samples.
    pub fn content_frames(&self) -> usize {
        self.content_frames
    }

    /// One value.
    pub fn get(&self, mel: usize, frame: usize) -> f32 {
        self.data[mel * self.frames + frame]
    }

    /// The encoder's input for the window starting at `start`: [`N_MELS`] × [`WINDOW_FRAMES`],
    /// row-major, zero past the spectrogram's end (as whisper's `pad_or_trim`).
    pub fn window(&self, start: usize) -> Vec<f32> {
        let mut out = vec![0.0; N_MELS * WINDOW_FRAMES];
        let end = self.frames.min(start + WINDOW_FRAMES);
        if start < end {
            for (m, row) in out.chunks_exact_mut(WINDOW_FRAMES).enumerate() {
                let src = &self.data[m * self.frames + start..m * self.frames + end];
                row[..src.len()].copy_from_slice(src);
            }
        }
        out
    }
}

/// Computes [`Mel`]s; holds the filters, the window and the FFT plan (cheap to share).
pub struct LogMel {
    /// [`N_MELS`] filters over [`BINS`] power bins: stage-audio's librosa bank.
    filters: MelBank,
    hann: Vec<f32>,
    fft: Arc<dyn Fft<f32>>,
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMel {
    pub fn new() -> Self {
        let hann = (0..N_FFT)
            .map(|n| {
                let x = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        Self {
            filters: MelBank::new(f64::from(SAMPLE_RATE), N_FFT, N_MELS),
            hann,
            fft: FftPlanner::new().plan_fft_forward(N_FFT),
        }
    }

    /// The weight of power-spectrum bin `bin` in mel filter `mel`.
    pub fn filter(&self, mel: usize, bin: usize) -> f32 {
        self.filters.weight(mel, bin)
    }

    /// Whisper's log-mel of `samples` (16 kHz, in −1..1) with 30 s of silence appended.
    pub fn compute(&self, samples: &[f32]) -> Mel {
        let len = samples.len() + WINDOW_SAMPLES;
        let frames = len / HOP;
        let half = (N_FFT / 2) as isize;
        // The padded signal at `i`, reflected at both ends as torch.stft's centring does.
        let at = |i: isize| -> f32 {
            let last = len as isize - 1;
            let j = if i < 0 {
                -i
            } else if i > last {
                2 * last - i
            } else {
                i
            };
            samples
                .get(usize::try_from(j).unwrap_or(0))
                .copied()
                .unwrap_or(0.0)
        };
        let mut data = vec![0.0f32; N_MELS * frames];
        let mut buf = vec![Complex::new(0.0f32, 0.0); N_FFT];
        let mut scratch = vec![Complex::new(0.0f32, 0.0); self.fft.get_inplace_scratch_len()];
        // The bank reads a few zero bins past the spectrum's end (see MelBank::input_len).
        let mut power = vec![0.0f32; self.filters.input_len().max(BINS)];
        let mut energies = [0.0f32; N_MELS];
        for t in 0..frames {
            let origin = (t * HOP) as isize - half;
            for (n, c) in buf.iter_mut().enumerate() {
                *c = Complex::new(at(origin + n as isize) * self.hann[n], 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (p, c) in power[..BINS].iter_mut().zip(&buf) {
                *p = c.norm_sqr();
            }
            self.filters.apply(&power, &mut energies);
            for (m, energy) in energies.iter().enumerate() {
                data[m * frames + t] = energy.max(1e-10).log10();
            }
        }
        let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in &mut data {
            *v = (v.max(max - 8.0) + 4.0) / 4.0;
        }
        Mel {
            data,
            frames,
            content_frames: samples.len() / HOP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_match_librosa() {
        // librosa 0.11 `filters.mel(sr=16000, n_fft=400, n_mels=80)`: each filter's peak, and
        // each filter's sum (which area normalisation sets).
        let m = LogMel::new();
        let want: &[(usize, usize, f32, f32)] = &[
            (0, 1, 0.024_862_595, 0.024_862_595),
            (1, 2, 0.022_871_772, 0.024_862_593),
            (10, 10, 0.019_908_218, 0.024_862_593),
            (40, 43, 0.014_735_566, 0.026_664_86),
            (79, 192, 0.003_164_712, 0.024_925_34),
        ];
        for &(mel, bin, peak, sum) in want {
            let got = m.filter(mel, bin);
            assert!(
                (got - peak).abs() < 1e-7,
                "filter {mel} bin {bin}: {got} vs {peak}"
            );
            let total: f32 = (0..BINS).map(|b| m.filter(mel, b)).sum();
            assert!(
                (total - sum).abs() < 1e-6,
                "filter {mel}: sum {total} vs {sum}"
            );
        }
        assert_eq!(m.filter(0, 0), 0.0);
        assert_eq!(m.filter(79, 0), 0.0);
    }

    #[test]
    fn silence_is_flat_and_windows_pad_with_zeros() {
        let m = LogMel::new();
        let mel = m.compute(&vec![0.0; 16_000]);
        assert_eq!(mel.frames(), (16_000 + WINDOW_SAMPLES) / HOP);
        assert_eq!(mel.content_frames(), 100);
        // All 1e-10: log10 = -10, the maximum is -10 too, so (-10 + 4) / 4 everywhere.
        assert!((mel.get(0, 0) + 1.5).abs() < 1e-6);
        assert!((mel.get(79, mel.frames() - 1) + 1.5).abs() < 1e-6);
        let w = mel.window(mel.frames() - 10);
        assert_eq!(w.len(), N_MELS * WINDOW_FRAMES);
        assert!((w[9] + 1.5).abs() < 1e-6);
        assert_eq!(w[10], 0.0);
    }

    #[test]
    fn a_tone_lands_in_its_mel_bin() {
        // 1 kHz is 15 mel on the Slaney scale; the filters' centres are spaced
        // 45.25 / 81 mel apart, so its energy peaks in filter 26 (centre 15.08 mel − 1).
        let tone: Vec<f32> = (0..32_000)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let mel = LogMel::new().compute(&tone);
        let frame = 100;
        let peak = (0..N_MELS)
            .max_by(|&a, &b| mel.get(a, frame).total_cmp(&mel.get(b, frame)))
            .unwrap();
        assert_eq!(peak, 26);
        // The maximum maps to (max + 4) / 4 and nothing is below max − 8.
        let values: Vec<f32> = (0..N_MELS).map(|m| mel.get(m, frame)).collect();
        let top = values.iter().copied().fold(f32::MIN, f32::max);
        assert!(values.iter().all(|&v| v >= top - 2.0 - 1e-5));
    }
}
