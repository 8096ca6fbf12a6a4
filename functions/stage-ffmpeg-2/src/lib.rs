//! `stage-ffmpeg-2`, one call per clip: the frames object detection looks at, and the
//! clip's audio for speech to text, both cut from what stage-ffmpeg-0 took from the whole
//! video in its one decode. (The stage is named for the ffmpeg run it used to make per
//! clip; nothing is decoded here now.)
//!
//! - The frames are those of `frames.json` (every frame's key and time in the video) that
//!   show within the clip, times counted from the clip's start, listed in the clip's own
//!   `frames.json` (passed on by key). None are copied: the clip's list names
//!   stage-ffmpeg-0's objects.
//! - `audio.wav` is the clip's stretch of `speech.wav` (mono 16-bit PCM at 16 kHz, what
//!   speech models take): its header and just those samples are read from the store by
//!   byte range, so a clip never fetches the whole video's sound.
//!
//! Neither needs the clip's own video, so a clip is looked at while the canonical video is
//! still being encoded and cut.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Instant;

use fave_common::contract::Frame;
use fave_common::contract::ffmpeg2::outputs as output;
pub use fave_common::contract::ffmpeg2::{AUDIO_RATE, Input, NAME, Output};
use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};

/// Bytes read to find a wav's header (ffmpeg's is under a hundred).
const WAV_HEADER_BYTES: u64 = 64 * 1024;

pub struct Ffmpeg2;

impl Stage for Ffmpeg2 {
    type Input = Input;
    type Output = Output;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn run(
        &self,
        ctx: &StageContext<'_>,
        call: &StageCall<Input>,
    ) -> Result<Produced<Output>, StageError> {
        let input = &call.input;
        call.require_own_key("frames_key", &input.frames_key)?;
        if let Some(key) = &input.speech_key {
            call.require_own_key("speech_key", key)?;
        }
        let span_ok = input.start_s.is_finite()
            && input.end_s.is_finite()
            && 0.0 <= input.start_s
            && input.start_s < input.end_s;
        if !span_ok || !(1..=100_000).contains(&input.max_frames) {
            return Err(StageError::InvalidInput(
                "need 0 ≤ start_s < end_s, and max_frames within 1..=100000".into(),
            ));
        }
        let index: Vec<Frame> = ctx
            .storage
            .get_json(&input.frames_key)
            .await?
            .ok_or_else(|| StageError::InvalidInput(format!("no frames at {}", input.frames_key)))?
            .0;
        // A clip shorter than the spacing of the frames may hold none: it is then looked at
        // in no frame, which is what was asked for.
        let frames = frames_within(&index, input.start_s, input.end_s, input.max_frames);
        // The list goes by key: the result is kept in state.json, the list may be long.
        let listed = format!("{}frames.json", call.output_prefix());
        ctx.storage.put_json(&listed, &frames).await?;
        let mut outputs = BTreeMap::from([(output::FRAMES.to_owned(), listed)]);

        let clock = Instant::now();
        let audio = match &input.speech_key {
            Some(key) => {
                let wav = ctx.workdir()?.join("audio.wav");
                let cut = cut_speech(ctx, key, input.start_s, input.end_s, &wav).await?;
                if cut {
                    let out = format!("{}audio.wav", call.output_prefix());
                    ctx.storage.put_file(&out, &wav, "audio/wav").await?;
                    outputs.insert(output::AUDIO.to_owned(), out);
                }
                cut
            }
            None => false,
        };
        Ok(Produced {
            outputs,
            data: Output {
                frames: frames.len(),
                audio,
                audio_ms: clock.elapsed().as_millis() as u64,
            },
        })
    }
}

/// The frames of `index` (times in the video) that show within `start_s..end_s`, the first
/// `max` of them, with times from `start_s`. Times a hair's breadth apart (ffmpeg and
/// ffprobe print microseconds) are the same frame's.
pub fn frames_within(index: &[Frame], start_s: f64, end_s: f64, max: u32) -> Vec<Frame> {
    const SAME: f64 = 1e-4;
    index
        .iter()
        .filter(|f| f.time_s >= start_s - SAME && f.time_s < end_s - SAME)
        .take(max as usize)
        .map(|f| Frame {
            time_s: ((f.time_s - start_s).max(0.0) * 1e6).round() / 1e6,
            key: f.key.clone(),
        })
        .collect()
}

/// Writes to `out` the samples of the wav at `key` from `start_s` to `end_s`, reading only
/// its header and those bytes. False when the sound ends before the clip starts.
async fn cut_speech(
    ctx: &StageContext<'_>,
    key: &str,
    start_s: f64,
    end_s: f64,
    out: &Path,
) -> Result<bool, StageError> {
    let work = ctx.workdir()?;
    let head = work.join("speech-head.wav");
    ctx.storage
        .get_range_to_file(key, 0..WAV_HEADER_BYTES, &head)
        .await?;
    let header = read_header(&head)?;
    let samples = header.samples_within(start_s, end_s);
    if samples.is_empty() {
        return Ok(false);
    }
    let raw = work.join("speech.pcm");
    let bytes = header.byte_range(&samples);
    let got = ctx
        .storage
        .get_range_to_file(key, bytes.clone(), &raw)
        .await?;
    if got != bytes.end - bytes.start {
        return Err(StageError::InvalidMedia(format!(
            "{key} is shorter than its header says"
        )));
    }
    let (raw, out) = (raw.clone(), out.to_owned());
    tokio::task::spawn_blocking(move || pcm_to_wav(&raw, &out))
        .await
        .map_err(|e| StageError::Internal(format!("writing the clip's wav panicked: {e}")))?
        .map_err(|e| StageError::Internal(format!("writing the clip's wav: {e}")))?;
    Ok(true)
}

/// Where a wav's samples are: mono 16-bit PCM at [`AUDIO_RATE`], anything else refused.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WavHeader {
    /// Byte offset of the first sample.
    data_offset: u64,
    samples: u64,
}

impl WavHeader {
    /// The samples showing from `start_s` to `end_s`, within the wav.
    fn samples_within(&self, start_s: f64, end_s: f64) -> std::ops::Range<u64> {
        let at = |t: f64| ((t * f64::from(AUDIO_RATE)).round().max(0.0) as u64).min(self.samples);
        at(start_s)..at(end_s)
    }

    fn byte_range(&self, samples: &std::ops::Range<u64>) -> std::ops::Range<u64> {
        self.data_offset + 2 * samples.start..self.data_offset + 2 * samples.end
    }
}

fn read_header(head: &Path) -> Result<WavHeader, StageError> {
    let bad = |e: String| StageError::InvalidMedia(format!("the speech track: {e}"));
    let file = std::fs::File::open(head).map_err(|e| bad(e.to_string()))?;
    let reader = hound::WavReader::new(BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    let wanted = spec.channels == 1
        && spec.sample_rate == AUDIO_RATE
        && spec.bits_per_sample == 16
        && spec.sample_format == hound::SampleFormat::Int;
    if !wanted {
        return Err(bad(format!(
            "{spec:?} is not mono 16-bit PCM at {AUDIO_RATE} Hz"
        )));
    }
    let samples = u64::from(reader.len());
    // The reader stops at the first sample: what it read is the header.
    let mut inner = reader.into_inner();
    let data_offset = std::io::Seek::stream_position(&mut inner).map_err(|e| bad(e.to_string()))?;
    Ok(WavHeader {
        data_offset,
        samples,
    })
}

/// Wraps raw little-endian 16-bit mono samples in a wav header, streaming them.
fn pcm_to_wav(raw: &Path, out: &Path) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: AUDIO_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(out, spec)?;
    let mut input = BufReader::new(std::fs::File::open(raw)?);
    let mut pair = [0u8; 2];
    loop {
        match input.read_exact(&mut pair) {
            Ok(()) => writer.write_sample(i16::from_le_bytes(pair))?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
    }
    writer.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clip_gets_the_video_frames_that_show_within_it() {
        let index: Vec<Frame> = (0..10)
            .map(|n| Frame {
                time_s: f64::from(n) * 1.001,
                key: format!("f{n}"),
            })
            .collect();
        let keys = |start, end, max| -> Vec<(f64, String)> {
            frames_within(&index, start, end, max)
                .into_iter()
                .map(|f| (f.time_s, f.key))
                .collect()
        };
        // A clip from the keyframe at 2.002 s (as ffprobe prints it) to the one at 5.005 s.
        assert_eq!(
            keys(2.002, 5.005, 100),
            [
                (0.0, "f2".into()),
                (1.001, "f3".into()),
                (2.002, "f4".into())
            ]
        );
        // The same instant printed a microsecond apart is the same frame.
        assert_eq!(keys(2.002001, 5.004999, 100)[0].1, "f2");
        assert_eq!(keys(2.002001, 5.004999, 100).len(), 3);
        assert_eq!(keys(0.0, 100.0, 4).len(), 4, "at most max");
        assert!(keys(2.5, 2.9, 100).is_empty(), "a clip between two frames");
    }

    #[test]
    fn a_clip_reads_just_its_own_samples_of_the_speech_track() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("speech.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: AUDIO_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        // Three seconds, each sample its own index (mod 2^15), so a slice shows where it
        // came from.
        let mut w = hound::WavWriter::create(&wav, spec).unwrap();
        for i in 0..3 * AUDIO_RATE {
            w.write_sample((i % 32_768) as i16).unwrap();
        }
        w.finalize().unwrap();
        let header = read_header(&wav).unwrap();
        assert_eq!(header.samples, u64::from(3 * AUDIO_RATE));
        let samples = header.samples_within(1.0, 2.5);
        assert_eq!(samples, 16_000..40_000);
        assert_eq!(
            header.samples_within(2.0, 9.0),
            32_000..48_000,
            "cut at its end"
        );
        assert!(header.samples_within(4.0, 9.0).is_empty(), "after its end");

        // The bytes the range names are those samples: wrapped, they read back as them.
        let bytes = header.byte_range(&samples);
        let all = std::fs::read(&wav).unwrap();
        let raw = dir.path().join("slice.pcm");
        std::fs::write(&raw, &all[bytes.start as usize..bytes.end as usize]).unwrap();
        let out = dir.path().join("clip.wav");
        pcm_to_wav(&raw, &out).unwrap();
        let back: Vec<i16> = hound::WavReader::open(&out)
            .unwrap()
            .samples::<i16>()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back.len(), 24_000);
        assert_eq!((back[0], back[23_999]), (16_000, (39_999 % 32_768) as i16));

        let stereo = dir.path().join("stereo.wav");
        let mut w = hound::WavWriter::create(
            &stereo,
            hound::WavSpec {
                channels: 2,
                ..spec
            },
        )
        .unwrap();
        w.write_sample(0i16).unwrap();
        w.write_sample(0i16).unwrap();
        w.finalize().unwrap();
        assert!(matches!(
            read_header(&stereo),
            Err(StageError::InvalidMedia(_))
        ));
    }
}
