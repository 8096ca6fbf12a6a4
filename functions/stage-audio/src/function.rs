//! The `stage-audio` function: the features of stage-ffmpeg-0's wav, the clip cuts they
//! propose together with the video's scene changes, and, given the times of the canonical
//! video's keyframes, the clip list those cuts make ([`crate::clips`]).
//!
//! It writes `features.json` (the per-frame series, onsets and non-silent intervals, for
//! whoever wants the detail) and returns a summary, the cuts and the clips, which is all
//! the pipeline needs. A video without sound is cut on its scene changes alone.

use std::collections::BTreeMap;

use fave_common::contract::audio::MAX_CLIPS;
pub use fave_common::contract::audio::{Input, NAME, Output};
use fave_common::contract::ffmpeg0::Keyframes;
use fave_common::keys::RequestKeys;
use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};
use serde::Serialize;

use crate::{AudioError, AudioFeatures, analyze_wav, clips, propose_cuts};

pub struct Audio;

impl Stage for Audio {
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
        let input = call.input.clone();
        if let Some(key) = &input.audio_key {
            call.require_own_key("audio_key", key)?;
        }
        let lengths_ok = input.min_clip_s >= 0.0
            && input.max_clip_s > 0.0
            && input.min_clip_s <= input.max_clip_s
            && input.max_clip_s.is_finite();
        if !(lengths_ok && input.duration_s > 0.0 && input.duration_s.is_finite()) {
            return Err(StageError::InvalidInput(
                "need 0 ≤ min_clip_s ≤ max_clip_s and a positive duration_s".into(),
            ));
        }
        // Every cut list this stage returns stays bounded: a video that needs more clips
        // than the cap, even at the longest clip length, is refused before any cut is made
        // (a file declaring 136 years once made a 4 GB answer here).
        if input.duration_s / input.max_clip_s > MAX_CLIPS as f64 {
            return Err(StageError::InvalidInput(format!(
                "more than {MAX_CLIPS} clips: max_clip_s is too small for a video this long"
            )));
        }
        let keyframes = match &input.keyframes_key {
            Some(key) => {
                call.require_own_key("keyframes_key", key)?;
                let found = ctx.storage.get_json::<Keyframes>(key).await?;
                let Some((keyframes, _)) = found else {
                    return Err(StageError::InvalidInput(format!("no keyframes at {key}")));
                };
                Some(keyframes.times)
            }
            None => None,
        };
        let wav = ctx.workdir()?.join("audio.wav");
        if let Some(key) = &input.audio_key {
            ctx.storage.get_to_file(key, &wav).await?;
        }
        let clock = std::time::Instant::now();
        let has_audio = input.audio_key.is_some();
        let (duration_s, min_clip_s) = (input.duration_s, input.min_clip_s);
        // The analysis is CPU-bound: off the async threads.
        let (features, cuts) = tokio::task::spawn_blocking(move || {
            let features = if has_audio {
                analyze_wav(&wav)?
            } else {
                silence()
            };
            let cuts = propose_cuts(
                &features,
                &input.scene_changes,
                input.duration_s,
                input.min_clip_s,
                input.max_clip_s,
            );
            Ok::<_, AudioError>((features, cuts))
        })
        .await
        .map_err(|e| StageError::Internal(format!("the analysis panicked: {e}")))?
        .map_err(|e| match e {
            AudioError::Io(e) => StageError::Internal(format!("reading the wav: {e}")),
            other => StageError::InvalidMedia(other.to_string()),
        })?;
        let keys = RequestKeys::new(&call.request_id);
        let clips = keyframes.map(|keyframes| {
            let cuts = clips::snap_cuts(&cuts, &keyframes, duration_s, min_clip_s);
            clips::clips_between(&cuts, duration_s, |clip| keys.clip_video(clip))
        });
        if clips.as_ref().is_some_and(|c| c.len() > MAX_CLIPS) {
            return Err(StageError::InvalidInput(format!(
                "more than {MAX_CLIPS} clips: max_clip_s is too small for a video this long"
            )));
        }
        let analysis_ms = clock.elapsed().as_millis() as u64;

        let path = ctx.workdir()?.join("features.json");
        write_detail(&path, &features)
            .map_err(|e| StageError::Internal(format!("writing features.json: {e}")))?;
        let key = format!("{}features.json", call.output_prefix());
        ctx.storage
            .put_file(&key, &path, "application/json")
            .await?;
        Ok(Produced {
            outputs: BTreeMap::from([("features".to_owned(), key)]),
            data: Output {
                clips,
                ..summary(&features, has_audio, cuts, analysis_ms)
            },
        })
    }
}

/// The features of a video with no sound: no frames, no sound.
fn silence() -> AudioFeatures {
    AudioFeatures {
        sample_rate: 22_050,
        n_samples: 0,
        rms: Vec::new(),
        zero_crossing_rate: Vec::new(),
        spectral_centroid: Vec::new(),
        onset_strength: Vec::new(),
        onsets: Vec::new(),
        non_silent: Vec::new(),
    }
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        0.0
    } else {
        (v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64) as f32
    }
}

fn summary(f: &AudioFeatures, has_audio: bool, cuts: Vec<f64>, analysis_ms: u64) -> Output {
    Output {
        has_audio,
        cuts,
        clips: None,
        audio_duration_s: f.duration_s(),
        frames: f.rms.len(),
        onsets: f.onsets.len(),
        non_silent_s: f
            .non_silent
            .iter()
            .fold(0.0, |sum, iv| sum + (iv.end_s - iv.start_s)),
        rms_mean: mean(&f.rms),
        rms_max: f.rms.iter().copied().fold(0.0, f32::max),
        spectral_centroid_mean_hz: mean(&f.spectral_centroid),
        zero_crossing_rate_mean: mean(&f.zero_crossing_rate),
        analysis_ms,
    }
}

/// `features.json`: every series, frame `t` centred at `t · hop / sample_rate` s; written
/// straight from the series to the file (it grows with the audio's length).
fn write_detail(path: &std::path::Path, f: &AudioFeatures) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Detail<'a> {
        sample_rate: u32,
        hop_length: usize,
        frame_length: usize,
        rms: &'a [f32],
        zero_crossing_rate: &'a [f32],
        spectral_centroid: &'a [f32],
        onset_strength: &'a [f32],
        onsets_s: &'a [f64],
        non_silent_s: Vec<[f64; 2]>,
    }
    let detail = Detail {
        sample_rate: f.sample_rate,
        hop_length: crate::HOP_LENGTH,
        frame_length: crate::FRAME_LENGTH,
        rms: &f.rms,
        zero_crossing_rate: &f.zero_crossing_rate,
        spectral_centroid: &f.spectral_centroid,
        onset_strength: &f.onset_strength,
        onsets_s: &f.onsets,
        non_silent_s: f
            .non_silent
            .iter()
            .map(|iv| [iv.start_s, iv.end_s])
            .collect(),
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer(&mut out, &detail)?;
    std::io::Write::flush(&mut out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_video_is_cut_on_its_scene_changes() {
        let f = silence();
        let cuts = propose_cuts(&f, &[12.0, 31.0], 50.0, 5.0, 20.0);
        assert_eq!(cuts, vec![12.0, 31.0]);
        let s = summary(&f, false, cuts, 1);
        assert_eq!((s.frames, s.rms_mean, s.non_silent_s), (0, 0.0, 0.0));
    }

    #[test]
    fn the_summary_reads_the_series() {
        let y: Vec<i16> = (0..22_050)
            .map(|i| ((i as f64 * 0.2).sin() * 8000.0) as i16)
            .collect();
        let f = crate::analyze_samples(&y, 22_050).expect("analysis");
        let s = summary(&f, true, Vec::new(), 1);
        assert!(s.rms_mean > 0.1 && s.rms_max >= s.rms_mean, "{s:?}");
        assert!((s.audio_duration_s - 1.0).abs() < 1e-9);
        assert!(s.non_silent_s > 0.9, "{s:?}");
    }
}
