//! librosa 0.11-equivalent audio features for fave, in pure Rust.
//!
//! Given mono 16-bit PCM (normally a 22050 Hz wav), this crate computes the
//! same numbers as these librosa 0.11 calls with their defaults
//! (`frame_length = n_fft = 2048`, `hop_length = 512`, `center=True`):
//!
//! | field of [`AudioFeatures`] | librosa                                              |
//! |----------------------------|------------------------------------------------------|
//! | `rms`                      | `feature.rms(y=y)` (zero padding)                    |
//! | `zero_crossing_rate`       | `feature.zero_crossing_rate(y)` (edge padding)       |
//! | `spectral_centroid`        | `feature.spectral_centroid(y=y, sr=sr)`              |
//! | `onset_strength`           | `onset.onset_strength(y=y, sr=sr)`                   |
//! | `onsets`                   | `onset.onset_detect(y=y, sr=sr, units="time")`       |
//! | `non_silent`               | `effects.split(y, top_db=60)` (in seconds)           |
//!
//! and [`propose_cuts`] turns those features plus video scene changes into
//! clip cut times.
//!
//! # Layout
//!
//! * `extractor` — [`FeatureExtractor`]: streaming framing, RMS, ZCR, STFT,
//!   spectral centroid and mel spectrogram, one frame at a time; the
//!   per-sample-rate tables (window, mel bank, FFT plan) are built once per
//!   process and shared, and the frame loop runs in an AVX2 build when the
//!   CPU has it (bit-identical results, tested);
//! * `spectrum` — power spectrum of a real frame (rustfft complex FFT with
//!   the real-input split fused into the power computation);
//! * `mel` — the Slaney mel filterbank (`librosa.filters.mel`);
//! * `onset` — onset envelope and librosa's peak picker;
//! * `split` — non-silent intervals from RMS;
//! * `cuts` — [`propose_cuts`];
//! * [`function`] — the `stage-audio` function serving all this to the pipeline;
//! * this file — the result types, errors and wav entry points.
//!
//! # Precision
//!
//! Like librosa (whose `y` is float32), the spectra are computed in f32;
//! RMS and ZCR are exact integer sums. Against librosa 0.11 the per-frame
//! series agree to ~1e-6 relative and onsets / intervals exactly (see
//! `tests/librosa_parity.rs`).
//!
//! # Memory
//!
//! Audio is decoded and processed in chunks and is never held whole. What
//! grows with length is the output plus the mel spectrogram (512 bytes per
//! frame, ≈ 22 KB per second of audio, ≈ 26 MB for 20 minutes), which must
//! be kept because librosa clamps it at 80 dB below its *global* maximum
//! before differencing (see [`FeatureExtractor`]).
//!
//! # Example
//!
//! ```no_run
//! let f = stage_audio::analyze_wav("speech.wav")?;
//! println!("{} frames, onsets at {:?}", f.rms.len(), f.onsets);
//! let cuts = stage_audio::propose_cuts(&f, &[12.0], f.duration_s(), 3.0, 30.0);
//! # Ok::<(), stage_audio::AudioError>(())
//! ```

use std::fmt;
use std::io::Read;
use std::path::Path;

pub mod clips;
mod cuts;
mod extractor;
pub mod function;
pub mod mel;
mod onset;
mod spectrum;
mod split;

pub use cuts::propose_cuts;
pub use extractor::FeatureExtractor;

/// Analysis frame length in samples (`n_fft` and `frame_length`).
pub const FRAME_LENGTH: usize = 2048;
/// Hop between frames in samples; frame `t` is centred on sample `t·512`.
pub const HOP_LENGTH: usize = 512;
/// Mel bands used for the onset envelope.
pub const N_MELS: usize = 128;

/// A half-open time interval `[start_s, end_s)` in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Start time in seconds.
    pub start_s: f64,
    /// End time in seconds (exclusive).
    pub end_s: f64,
}

/// Features of one audio signal. Per-frame series have `1 + n_samples / 512`
/// entries; entry `t` describes the frame centred at `t·512 / sample_rate` s.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFeatures {
    /// Sample rate of the analysed audio, in Hz.
    pub sample_rate: u32,
    /// Number of samples analysed.
    pub n_samples: usize,
    /// Root-mean-square amplitude per frame (full scale = 1.0).
    pub rms: Vec<f32>,
    /// Fraction of sample pairs per frame whose sign differs.
    pub zero_crossing_rate: Vec<f32>,
    /// Magnitude-weighted mean frequency per frame, in Hz (0 for silence).
    pub spectral_centroid: Vec<f32>,
    /// Mean positive change of the dB mel spectrogram per frame.
    pub onset_strength: Vec<f32>,
    /// Detected onset times in seconds, increasing.
    pub onsets: Vec<f64>,
    /// Non-silent intervals (within 60 dB of the loudest frame), increasing.
    pub non_silent: Vec<Interval>,
}

impl AudioFeatures {
    /// Duration of the analysed audio in seconds.
    pub fn duration_s(&self) -> f64 {
        self.n_samples as f64 / f64::from(self.sample_rate)
    }

    /// Centre time of frame `t` in seconds.
    pub fn frame_time(&self, t: usize) -> f64 {
        (t * HOP_LENGTH) as f64 / f64::from(self.sample_rate)
    }
}

/// Why audio could not be analysed.
#[derive(Debug)]
pub enum AudioError {
    /// Reading the file failed.
    Io(std::io::Error),
    /// The file is not a wav this crate handles (mono 16-bit integer PCM).
    Format(String),
    /// The input holds no samples.
    Empty,
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "reading audio: {e}"),
            Self::Format(m) => write!(f, "unsupported audio: {m}"),
            Self::Empty => write!(f, "audio has no samples"),
        }
    }
}

impl std::error::Error for AudioError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for AudioError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<hound::Error> for AudioError {
    fn from(e: hound::Error) -> Self {
        match e {
            hound::Error::IoError(io) => Self::Io(io),
            other => Self::Format(other.to_string()),
        }
    }
}

/// Samples decoded per read; bounds memory while decoding.
const READ_CHUNK: usize = 1 << 16;

/// Reads a mono 16-bit PCM wav and computes all features, streaming the file
/// through a [`FeatureExtractor`] so the audio is never held whole.
pub fn analyze_wav(path: impl AsRef<Path>) -> Result<AudioFeatures, AudioError> {
    let reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    if spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(AudioError::Format(format!(
            "need mono 16-bit integer PCM, got {} channel(s), {} bit {:?}",
            spec.channels, spec.bits_per_sample, spec.sample_format
        )));
    }
    let total = reader.len() as usize;
    // hound has parsed the header and stands at the start of the data chunk.
    // Its per-sample iterator costs a few ns a sample, a large share of the
    // whole analysis, so read the little-endian i16 payload in bulk instead.
    let mut data = reader.into_inner();
    let mut ex = FeatureExtractor::new(spec.sample_rate)?;
    ex.reserve_samples(total);
    let mut bytes = vec![0u8; 2 * READ_CHUNK];
    let mut samples = Vec::with_capacity(READ_CHUNK);
    let mut left = total;
    while left > 0 {
        let n = left.min(READ_CHUNK);
        data.read_exact(&mut bytes[..2 * n])?;
        samples.clear();
        samples.extend(
            bytes[..2 * n]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
        ex.push(&samples);
        left -= n;
    }
    ex.finish()
}

/// Computes all features of in-memory 16-bit mono samples at `sample_rate`.
pub fn analyze_samples(samples: &[i16], sample_rate: u32) -> Result<AudioFeatures, AudioError> {
    let mut ex = FeatureExtractor::new(sample_rate)?;
    ex.reserve_samples(samples.len());
    ex.push(samples);
    ex.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, f: f64, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * 32767.0 * (2.0 * std::f64::consts::PI * f * i as f64 / 22050.0).sin())
                    .round() as i16
            })
            .collect()
    }

    #[test]
    fn chunking_does_not_change_results() {
        let mut y = tone(50_000, 440.0, 0.5);
        y.extend(vec![0; 20_000]);
        y.extend(tone(30_000, 2000.0, 0.3));
        let whole = analyze_samples(&y, 22050).expect("analysis");
        let mut ex = FeatureExtractor::new(22050).expect("extractor");
        for c in y.chunks(777) {
            ex.push(c);
        }
        assert_eq!(ex.finish().expect("analysis"), whole);
        assert_eq!(whole.rms.len(), 1 + y.len() / HOP_LENGTH);
    }

    #[test]
    fn tone_features_are_sensible() {
        let y = tone(22050, 1000.0, 0.5);
        let f = analyze_samples(&y, 22050).expect("analysis");
        let mid = f.rms.len() / 2;
        // RMS of a sine is amp/√2; 1 kHz crosses zero 2000 times a second.
        assert!((f.rms[mid] - 0.5 / 2f32.sqrt()).abs() < 1e-3);
        assert!((f.zero_crossing_rate[mid] - 2000.0 / 22050.0).abs() < 2e-3);
        assert!((f.spectral_centroid[mid] - 1000.0).abs() < 30.0);
        assert_eq!(f.non_silent.len(), 1);
    }

    #[test]
    fn short_and_empty_inputs() {
        assert!(matches!(
            analyze_samples(&[], 22050),
            Err(AudioError::Empty)
        ));
        let f = analyze_samples(&[100, -100, 100], 22050).expect("analysis");
        assert_eq!(f.rms.len(), 1);
        assert_eq!(f.zero_crossing_rate[0], 2.0 / 2048.0);
    }
}
