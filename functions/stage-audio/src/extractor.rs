//! Streaming, frame-by-frame feature extraction.
//!
//! All of librosa's `center=True` features put frame `t` at samples
//! `[t·hop − frame/2, t·hop + frame/2)` of the signal, padded at both ends by
//! `frame/2` samples. Instead of materialising the padded signal, each frame
//! is clipped to `[0, n)` and the padding is accounted for analytically:
//!
//! * RMS and the STFT use zero ("constant") padding, so padded samples simply
//!   contribute nothing;
//! * ZCR uses edge padding; repeated edge values never cross zero and the pad
//!   joins the signal at an equal value, so only pairs inside `[0, n)` count.
//!
//! RMS and ZCR are sums over the frame, and a frame is exactly four hops, so
//! both are accumulated once per 512-sample block (sum of squares, crossings
//! inside the block, first/last sample) and each frame adds up its (up to)
//! four blocks — every sample is touched once instead of four times.
//!
//! A frame is processed as soon as its last sample has arrived, and samples
//! no later frame needs are dropped, so the sample buffer stays small however
//! long the input is.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::mel::{LANES, MelBank, dot, sum};
use crate::onset::{OnsetEnvelope, onset_detect};
use crate::spectrum::{PowerSpectrum, SpectrumPlan};
use crate::split::non_silent_intervals;
use crate::{AudioError, AudioFeatures, FRAME_LENGTH, HOP_LENGTH, N_MELS};

/// Half a frame: the centring pad on each side.
const HALF: usize = FRAME_LENGTH / 2;
/// Number of FFT bins.
const N_BINS: usize = FRAME_LENGTH / 2 + 1;
/// Drop consumed samples only once this many have piled up, so the
/// `Vec::drain` memmove is amortised over many frames.
const COMPACT_AT: usize = 1 << 15;
/// Mel frames held in memory before they go to the spill file (≈ 1 MiB, 24 s).
const SPILL_FRAMES: usize = 2048;

/// Incremental feature extractor over 16-bit mono PCM.
///
/// Feed samples in any chunk sizes with [`push`](Self::push), then call
/// [`finish`](Self::finish). Results are identical whatever the chunking.
///
/// Memory: the audio is not retained. The 128-band mel spectrogram in dB must
/// wait until `finish`, because librosa's `power_to_db(top_db=80)` clamps
/// against the maximum over the *whole* spectrogram, known only at the end;
/// it is 512 bytes per frame (≈ 22 KB per second of audio), so past
/// [`SPILL_FRAMES`] frames it goes to an anonymous temporary file and is read
/// back in order by `finish`. What stays in memory and grows with the input is
/// the per-frame output itself (RMS, ZCR, centroid, onset strength: 16 bytes a
/// frame, ≈ 0.8 MB for 20 minutes).
pub struct FeatureExtractor {
    sr: u32,
    /// The CPU has AVX2 and FMA: run the hot loop in [`Self::push_avx2`].
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
    tables: Arc<Tables>,
    spectrum: PowerSpectrum,

    /// `buf[i]` is signal sample `buf_start + i`.
    buf: Vec<i16>,
    buf_start: usize,
    /// Total samples received so far.
    n_received: usize,
    /// Index of the next frame to compute.
    next_frame: usize,
    /// Per-hop statistics; `blocks[i]` is block `block_start + i`, i.e.
    /// samples `[(block_start + i)·hop, …)`.
    blocks: Vec<Block>,
    block_start: usize,

    /// The windowed, zero-padded frame (edge frames only).
    frame: Vec<f32>,
    power: Vec<f32>,
    /// `|X_k|`, as long as `power`.
    mag: Vec<f32>,
    /// `[0, 1, 2, …]` as f32 (as long as `power`), the centroid's weights.
    bin_index: Vec<f32>,
    mel_frame: Vec<f32>,

    rms: Vec<f32>,
    zcr: Vec<f32>,
    centroid: Vec<f32>,
    /// Row-major `[frame][band]` mel power in dB, before the top_db clamp: the frames
    /// not yet spilled.
    mel_db: Vec<f32>,
    /// The maximum of every mel value so far.
    mel_max: f32,
    /// Earlier mel frames, in order, as little-endian f32.
    spill: Option<BufWriter<File>>,
    /// The first failure writing the spill file, reported by `finish`.
    spill_error: Option<std::io::Error>,
    /// Frames kept in memory before spilling: [`SPILL_FRAMES`] (tests change it).
    spill_frames: usize,
}

impl FeatureExtractor {
    /// Creates an extractor for audio sampled at `sample_rate` Hz.
    ///
    /// librosa parity was verified at 22050 Hz; other rates use the same
    /// formulas (mel bank up to `sr/2`, peak-picking windows scaled by `sr`).
    pub fn new(sample_rate: u32) -> Result<Self, AudioError> {
        if sample_rate == 0 {
            return Err(AudioError::Format("sample rate must be positive".into()));
        }
        let tables = Tables::get(sample_rate);
        let power_len = N_BINS.next_multiple_of(LANES).max(tables.mel.input_len());
        Ok(Self {
            sr: sample_rate,
            #[cfg(target_arch = "x86_64")]
            avx2: is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            mel_frame: vec![0.0; tables.mel.len()],
            spectrum: PowerSpectrum::new(Arc::clone(&tables.plan)),
            frame: vec![0.0; FRAME_LENGTH],
            tables,
            buf: Vec::with_capacity(COMPACT_AT + 2 * FRAME_LENGTH),
            buf_start: 0,
            n_received: 0,
            next_frame: 0,
            blocks: Vec::new(),
            block_start: 0,
            // Whole SIMD chunks, and room for the padded mel filters; the
            // bins past n/2 are never written and stay zero.
            power: vec![0.0; power_len],
            mag: vec![0.0; power_len],
            bin_index: (0..power_len).map(|k| k as f32).collect(),
            rms: Vec::new(),
            zcr: Vec::new(),
            centroid: Vec::new(),
            mel_db: Vec::new(),
            mel_max: f32::NEG_INFINITY,
            spill: None,
            spill_error: None,
            spill_frames: SPILL_FRAMES,
        })
    }

    /// Reserves output space for `additional` more samples, so long inputs
    /// of known length do not grow the per-frame vectors by reallocation.
    pub(crate) fn reserve_samples(&mut self, additional: usize) {
        let frames = (self.n_received + additional) / HOP_LENGTH + 1 - self.rms.len();
        self.rms.reserve(frames);
        self.zcr.reserve(frames);
        self.centroid.reserve(frames);
        self.mel_db
            .reserve(frames.min(SPILL_FRAMES) * self.mel_frame.len());
    }

    /// Appends samples and processes every frame that is now complete.
    pub fn push(&mut self, samples: &[i16]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is true only if the running CPU reported AVX2
            // and FMA support (checked in `new`). The workspace denies unsafe code;
            // this call is its one audited exception.
            #[allow(unsafe_code)]
            unsafe {
                self.push_avx2(samples)
            };
            return;
        }
        self.push_generic(samples);
    }

    /// [`push`](Self::push) compiled with AVX2/FMA enabled. The per-frame
    /// loops are written for 8-wide SIMD; with only the x86-64 baseline
    /// (SSE2) the compiler splits them in two, and this copy runs ~1.4×
    /// faster. Results are bit-identical: no floating-point operation is
    /// reordered, only executed in wider registers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn push_avx2(&mut self, samples: &[i16]) {
        self.push_generic(samples);
    }

    /// The body of [`push`](Self::push); always inlined so that it (and the
    /// helpers it inlines) is compiled for the caller's target features.
    #[inline(always)]
    fn push_generic(&mut self, samples: &[i16]) {
        // Feed in bounded slices so the buffer never holds much more than
        // COMPACT_AT samples, even when a caller pushes a whole file at once.
        for chunk in samples.chunks(COMPACT_AT) {
            self.buf.extend_from_slice(chunk);
            self.n_received += chunk.len();
            self.summarise_blocks(self.n_received / HOP_LENGTH);
            // Frame t is complete once sample t·hop + HALF − 1 has arrived
            // (then its last block, t + 1, is complete too).
            while self.next_frame * HOP_LENGTH + HALF <= self.n_received {
                self.process_frame(self.next_frame, self.n_received);
                self.next_frame += 1;
            }
            self.compact();
        }
    }

    /// Processes the remaining (right-padded) frames and derives the
    /// whole-signal features (onset envelope, onsets, non-silent intervals).
    pub fn finish(mut self) -> Result<AudioFeatures, AudioError> {
        let n = self.n_received;
        if n == 0 {
            return Err(AudioError::Empty);
        }
        // librosa's centred framing yields 1 + n // hop frames.
        let n_frames = 1 + n / HOP_LENGTH;
        // The trailing partial block, if any.
        self.summarise_blocks(n.div_ceil(HOP_LENGTH));
        while self.next_frame < n_frames {
            self.process_frame(self.next_frame, n);
            self.next_frame += 1;
        }

        let onset_env = self.onset_envelope(n_frames)?;
        let onsets = onset_detect(&onset_env, self.sr, HOP_LENGTH);
        let non_silent = non_silent_intervals(&self.rms, n, self.sr, HOP_LENGTH);
        Ok(AudioFeatures {
            sample_rate: self.sr,
            n_samples: n,
            rms: self.rms,
            zero_crossing_rate: self.zcr,
            spectral_centroid: self.centroid,
            onset_strength: onset_env,
            onsets,
            non_silent,
        })
    }

    /// Moves the mel frames held in memory to the spill file.
    #[cold]
    fn spill_mel(&mut self) {
        if self.spill_error.is_some() {
            return;
        }
        let written = (|| {
            let file = match &mut self.spill {
                Some(file) => file,
                None => self
                    .spill
                    .insert(BufWriter::with_capacity(1 << 16, tempfile::tempfile()?)),
            };
            for v in &self.mel_db {
                file.write_all(&v.to_le_bytes())?;
            }
            Ok::<_, std::io::Error>(())
        })();
        self.mel_db.clear();
        self.spill_error = written.err();
    }

    /// The onset envelope over every mel frame: the spilled ones read back in order,
    /// then those still in memory.
    fn onset_envelope(&mut self, n_frames: usize) -> Result<Vec<f32>, AudioError> {
        if let Some(e) = self.spill_error.take() {
            return Err(AudioError::Io(e));
        }
        let mut env = OnsetEnvelope::new(self.mel_max, N_MELS, n_frames);
        if let Some(spill) = self.spill.take() {
            let mut file = spill
                .into_inner()
                .map_err(|e| AudioError::Io(e.into_error()))?;
            file.seek(SeekFrom::Start(0))?;
            let mut reader = BufReader::with_capacity(1 << 16, file);
            let mut bytes = vec![0u8; 4 * N_MELS];
            let mut frame = vec![0f32; N_MELS];
            loop {
                match reader.read_exact(&mut bytes) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(AudioError::Io(e)),
                }
                for (v, b) in frame.iter_mut().zip(bytes.chunks_exact(4)) {
                    *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                env.push(&frame);
            }
        }
        for frame in self.mel_db.chunks_exact(N_MELS) {
            env.push(frame);
        }
        Ok(env.finish())
    }

    /// Summarises blocks up to (excluding) `upto`; the last one may be
    /// partial when finishing.
    #[inline(always)]
    fn summarise_blocks(&mut self, upto: usize) {
        for b in self.block_start + self.blocks.len()..upto {
            let lo = b * HOP_LENGTH;
            let hi = (lo + HOP_LENGTH).min(self.n_received);
            let block = Block::of(&self.buf[lo - self.buf_start..hi - self.buf_start]);
            self.blocks.push(block);
        }
    }

    /// Drops samples and blocks that no future frame can reach.
    fn compact(&mut self) {
        // The next frame starts at next_frame·hop − HALF (clipped at 0).
        let keep_from = (self.next_frame * HOP_LENGTH).saturating_sub(HALF);
        let droppable = keep_from.saturating_sub(self.buf_start);
        if droppable >= COMPACT_AT {
            self.buf.drain(..droppable);
            self.buf_start += droppable;
            let blocks = (keep_from / HOP_LENGTH).saturating_sub(self.block_start);
            self.blocks.drain(..blocks);
            self.block_start += blocks;
        }
    }

    /// Computes every per-frame feature of frame `t`; `n_avail` is the number
    /// of signal samples that exist (the signal length once finishing).
    #[inline(always)]
    fn process_frame(&mut self, t: usize, n_avail: usize) {
        let center = t * HOP_LENGTH;
        // Frame covers signal indices [center − HALF, center + HALF); clip it.
        let lo = center.saturating_sub(HALF);
        let hi = (center + HALF).min(n_avail);
        // Offset of signal index `lo` inside the (virtual) padded frame.
        let pad_left = lo + HALF - center;
        let samples = &self.buf[lo - self.buf_start..hi - self.buf_start];

        // RMS and ZCR from the blocks the clipped frame spans. Frame t covers
        // blocks t−2 … t+1; missing ones lie in the padding. Padding adds
        // nothing to either sum: RMS pads with zeros, and ZCR's edge padding
        // repeats the edge sample, which never crosses.
        let (b_lo, b_hi) = (lo / HOP_LENGTH, hi.div_ceil(HOP_LENGTH));
        let span = &self.blocks[b_lo - self.block_start..b_hi - self.block_start];
        let sum_sq: u64 = span.iter().map(|b| b.sum_sq).sum();
        let inner: usize = span.iter().map(|b| b.crossings).sum();
        // Crossings between adjacent blocks: last sample of one vs first of
        // the next.
        let joins = span
            .windows(2)
            .filter(|w| (w[0].last ^ w[1].first) < 0)
            .count();
        // librosa: mean of |x|² over the frame (the zero pad counts in the
        // denominator) and mean of the crossing flags over the frame.
        let rms = ((sum_sq as f64 / FRAME_LENGTH as f64).sqrt() / 32768.0) as f32;
        let zcr = ((inner + joins) as f64 / FRAME_LENGTH as f64) as f32;

        // Windowed, zero-padded frame → power spectrum |X_k|².
        if samples.len() == FRAME_LENGTH {
            // Interior frame (nearly all of them): no padding to build.
            self.spectrum
                .compute_windowed(samples, &self.tables.window, &mut self.power);
        } else {
            self.frame[..pad_left].fill(0.0);
            let used = pad_left + samples.len();
            for ((dst, &s), &w) in self.frame[pad_left..used]
                .iter_mut()
                .zip(samples)
                .zip(&self.tables.window[pad_left..used])
            {
                *dst = w * f32::from(s);
            }
            self.frame[used..].fill(0.0);
            self.spectrum.compute(&self.frame, &mut self.power);
        }

        // Spectral centroid = Σ f_k |X_k| / Σ |X_k| with f_k = k·sr/n_fft.
        // Magnitudes first, then two LANES-wide sums: separate simple loops
        // vectorise fully where a fused one does not. f32 sums are good to
        // ~1e-6 relative. `power` (so `mag`) is zero past bin n/2.
        for (m, &p) in self.mag.iter_mut().zip(&self.power) {
            *m = p.sqrt();
        }
        let num = f64::from(dot(&self.mag, &self.bin_index));
        let den = f64::from(sum(&self.mag));
        // librosa's normalize() leaves columns whose L1 norm is below the f32
        // `tiny` un-normalised; such a column is all (near-)zero → centroid 0.
        let centroid = if den < f64::from(f32::MIN_POSITIVE) {
            0.0
        } else {
            (num / den * f64::from(self.sr) / FRAME_LENGTH as f64) as f32
        };

        // Mel power → dB (ref=1, amin=1e-10); the top_db clamp needs the
        // global maximum and is applied in `finish`.
        self.tables.mel.apply(&self.power, &mut self.mel_frame);
        // In place, then copied: an `extend(map(..))` moves the loop into a
        // non-inlined std helper compiled without the AVX2 features.
        for m in &mut self.mel_frame {
            *m = power_to_db(*m);
        }
        self.mel_max = self.mel_frame.iter().copied().fold(self.mel_max, f32::max);
        self.mel_db.extend_from_slice(&self.mel_frame);
        if self.mel_db.len() >= self.spill_frames * self.mel_frame.len() {
            self.spill_mel();
        }

        self.rms.push(rms);
        self.zcr.push(zcr);
        self.centroid.push(centroid);
    }
}

/// Everything that depends only on the sample rate: built once per rate and
/// shared by all extractors, so analysing many short files does not pay for
/// the mel bank and FFT plan each time.
struct Tables {
    /// Periodic Hann window pre-scaled by 1/32768, so `window[i] * s as f32`
    /// is the windowed librosa sample (`s / 32768`) in one multiply.
    window: Vec<f32>,
    mel: MelBank,
    plan: Arc<SpectrumPlan>,
}

impl Tables {
    /// The shared tables for `sr`, building them on first use.
    fn get(sr: u32) -> Arc<Self> {
        type Cache = Mutex<Vec<(u32, Arc<Tables>)>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        // A panic elsewhere while holding the lock cannot leave the list
        // half-updated (push is the only mutation), so poisoning is ignored.
        let mut cache = CACHE
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, t)) = cache.iter().find(|(rate, _)| *rate == sr) {
            return Arc::clone(t);
        }
        let t = Arc::new(Self::new(sr));
        cache.push((sr, Arc::clone(&t)));
        t
    }

    fn new(sr: u32) -> Self {
        // scipy.signal.get_window("hann", N, fftbins=True): the *periodic*
        // Hann window, 0.5 − 0.5·cos(2πn/N). Computed in f64 like scipy.
        let window = (0..FRAME_LENGTH)
            .map(|n| {
                let w =
                    0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / FRAME_LENGTH as f64).cos();
                (w / 32768.0) as f32
            })
            .collect();
        Self {
            window,
            mel: MelBank::new(f64::from(sr), FRAME_LENGTH, N_MELS),
            plan: Arc::new(SpectrumPlan::new(FRAME_LENGTH)),
        }
    }
}

/// Sums over one hop of samples, from which frame RMS and ZCR are built.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Σ s² — exact: at most 512 · 2^30.
    sum_sq: u64,
    /// Sign changes between consecutive samples inside the block.
    crossings: usize,
    first: i16,
    last: i16,
}

impl Block {
    #[inline(always)]
    fn of(samples: &[i16]) -> Self {
        // Square in i32 (|s|² ≤ 2^30) and sum in u64: exact, and simple
        // enough for the compiler to vectorise.
        let sum_sq = samples
            .iter()
            .map(|&s| u64::from((i32::from(s) * i32::from(s)).unsigned_abs()))
            .sum();
        // librosa's zero_crossings: signbit(x[i]) != signbit(x[i−1]), with
        // |x| ≤ 1e-10 treated as +0 (`zero_pos=True`); for 16-bit input that
        // is exactly "x == 0 counts as positive". Two i16 differ in sign bit
        // iff their XOR is negative.
        let crossings = samples.windows(2).filter(|w| (w[0] ^ w[1]) < 0).count();
        Self {
            sum_sq,
            crossings,
            first: samples.first().copied().unwrap_or(0),
            last: samples.last().copied().unwrap_or(0),
        }
    }
}

/// `10·log10(max(1e-10, p))`, librosa's `power_to_db` with `ref=1.0` before
/// the `top_db` clamp.
#[inline(always)]
fn power_to_db(p: f32) -> f32 {
    const DB_PER_LN: f32 = 10.0 / std::f32::consts::LN_10;
    ln_positive(p.max(1e-10)) * DB_PER_LN
}

/// Natural log of a positive, normal, finite f32 (Cephes `logf`: exponent
/// split plus a degree-9 polynomial, within ~1e-7 of `f32::ln`).
///
/// libm's `logf` is an opaque call per value and was ~7% of the analysis;
/// this branch-free form vectorises across the 128 mel bands. Inputs here are
/// clamped to ≥ 1e-10, so zeros, subnormals, infinities and NaN never occur.
#[inline(always)]
fn ln_positive(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    // x = m · 2^e with m in [0.5, 1).
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    // Centre the mantissa on 1: m in [√½, √2), f = m − 1.
    let f = if m < SQRT_HALF {
        e -= 1;
        m + m - 1.0
    } else {
        m - 1.0
    };
    let e = e as f32;
    let z = f * f;
    let mut y = 7.037_683_6e-2;
    y = y * f - 1.151_461e-1;
    y = y * f + 1.167_699_87e-1;
    y = y * f - 1.242_014_1e-1;
    y = y * f + 1.424_932_3e-1;
    y = y * f - 1.666_805_7e-1;
    y = y * f + 2.000_071_4e-1;
    y = y * f - 2.499_999_4e-1;
    y = y * f + 3.333_333e-1;
    y *= f * z;
    // ln 2 = 355/512 − 2.121944e-4: the exact first part keeps e·ln2
    // free of rounding loss.
    const LN2_HI: f32 = 355.0 / 512.0;
    y += -2.121_944_4e-4 * e;
    y += -0.5 * z;
    f + y + LN2_HI * e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilling_the_mel_spectrogram_to_disk_changes_nothing() {
        // 40 s of a chirp with bursts and silences: onsets, and a global maximum that is
        // reached late, after several spills.
        let y: Vec<i16> = (0..40 * 22_050)
            .map(|i| {
                let t = i as f64 / 22_050.0;
                let burst = if (t % 3.0) < 1.0 { 0.2 + t / 50.0 } else { 0.0 };
                (burst * 30_000.0 * (2.0 * std::f64::consts::PI * (200.0 + 30.0 * t) * t).sin())
                    as i16
            })
            .collect();
        let run = |spill_frames: usize| {
            let mut ex = FeatureExtractor::new(22_050).expect("extractor");
            ex.spill_frames = spill_frames;
            for chunk in y.chunks(10_000) {
                ex.push(chunk);
            }
            let spilled = ex.spill.is_some();
            (ex.finish().expect("analysis"), spilled)
        };
        let (in_memory, spilled) = run(1 << 30);
        assert!(!spilled);
        let (on_disk, spilled) = run(100);
        assert!(spilled, "1723 frames in spills of 100");
        assert!(!in_memory.onsets.is_empty());
        assert_eq!(on_disk, in_memory);
    }

    #[test]
    fn ln_positive_matches_std() {
        // Sweep 1e-10 … 1e12 geometrically, plus values around 1 where the
        // result is near zero.
        let mut x = 1e-10f32;
        while x < 1e12 {
            let (got, want) = (f64::from(ln_positive(x)), f64::from(x).ln());
            assert!(
                (got - want).abs() <= 2e-7 * want.abs().max(1.0),
                "ln({x}): {got} vs {want}"
            );
            x *= 1.000_7;
        }
        for x in [
            0.999_999f32,
            1.0,
            1.000_001,
            // Either side of the mantissa-centring switch.
            std::f32::consts::FRAC_1_SQRT_2.next_down(),
            std::f32::consts::FRAC_1_SQRT_2,
            std::f32::consts::SQRT_2.next_down(),
        ] {
            let (got, want) = (f64::from(ln_positive(x)), f64::from(x).ln());
            assert!((got - want).abs() <= 2e-7, "ln({x}): {got} vs {want}");
        }
    }

    #[test]
    fn avx2_and_generic_paths_agree_bit_for_bit() {
        let y: Vec<i16> = (0..100_000u32)
            .map(|i| {
                let t = f64::from(i) / 22050.0;
                let v = 0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 0.1 * (2.0 * std::f64::consts::PI * 3100.0 * t * t).sin();
                (v * 32767.0 * f64::from(((i / 7000) % 3) as u8)).round() as i16
            })
            .collect();
        let run = |force_generic: bool| {
            let mut ex = FeatureExtractor::new(22050).expect("extractor");
            #[cfg(target_arch = "x86_64")]
            if force_generic {
                ex.avx2 = false;
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = force_generic;
            ex.push(&y);
            ex.finish().expect("features")
        };
        assert_eq!(run(true), run(false));
    }
}
