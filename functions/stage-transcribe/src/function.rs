//! The `stage-transcribe` function, one call per clip: what is said in the clip's audio.
//!
//! The input names the clip's 16 kHz wav (stage-ffmpeg-2's `audio` output), or nothing when
//! the video has no sound. The model is loaded once per process, in the background from the
//! moment the process starts ([`Transcribe::start_loading`]), so a call for a clip without
//! sound is answered at once, even while the model is still loading; a call with sound waits
//! for it. The work runs on tokio's blocking pool while CTranslate2's own threads do the
//! inference; concurrent calls take turns at the one model replica. It writes
//! `transcript.json` (segments with times in the clip) and returns the same, with the
//! real-time factor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fave_common::contract::transcribe::outputs as output;
pub use fave_common::contract::transcribe::{Input, NAME, Output};
use fave_common::readiness::Loading;
use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};

use crate::{Transcriber, Transcript, read_wav};

impl From<Transcript> for Output {
    fn from(t: Transcript) -> Self {
        Self {
            rtf: t.real_time_factor().map(|r| (r * 1000.0).round() / 1000.0),
            text: t.text,
            segments: t.segments,
            words: t.words,
            audio_s: t.audio_s,
            transcribe_ms: t.transcribe_ms,
        }
    }
}

pub struct Transcribe {
    model: Loading<Transcriber>,
}

impl Transcribe {
    /// Starts loading the model in `dir` on a thread of its own and returns at once; calls
    /// with sound wait for it at most `load_timeout`.
    pub fn start_loading(dir: PathBuf, load_timeout: std::time::Duration) -> Self {
        let model = Loading::start("whisper", load_timeout, move || {
            Transcriber::load(&dir)
                .map_err(|e| format!("loading the model from {}: {e}", dir.display()))
        });
        Self { model }
    }
}

impl Stage for Transcribe {
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
        let transcript = match &call.input.audio_key {
            None => Transcript::empty(0.0),
            Some(key) => {
                call.require_own_key("audio_key", key)?;
                let path = ctx.workdir()?.join("audio.wav");
                ctx.storage.get_to_file(key, &path).await?;
                let model = self.model.get().await?;
                tokio::task::spawn_blocking(move || {
                    let samples =
                        read_wav(&path).map_err(|e| StageError::InvalidMedia(e.to_string()))?;
                    model
                        .transcribe(&samples)
                        .map_err(|e| StageError::Internal(format!("transcribing: {e}")))
                })
                .await
                .map_err(|e| StageError::Internal(format!("transcription panicked: {e}")))??
            }
        };
        let output = Output::from(transcript);
        tracing::info!(
            words = output.words,
            audio_s = output.audio_s,
            transcribe_ms = output.transcribe_ms,
            "transcribed"
        );
        let path = ctx.workdir()?.join("transcript.json");
        let text = serde_json::to_vec(&output)
            .map_err(|e| StageError::Internal(format!("writing transcript.json: {e}")))?;
        tokio::fs::write(&path, text)
            .await
            .map_err(|e| StageError::Internal(format!("writing transcript.json: {e}")))?;
        let key = format!("{}transcript.json", call.output_prefix());
        ctx.storage
            .put_file(&key, &path, "application/json")
            .await?;
        Ok(Produced {
            outputs: BTreeMap::from([(output::TRANSCRIPT.to_owned(), key)]),
            data: output,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_model_that_fails_to_load_fails_calls_and_says_why() {
        let stage =
            Transcribe::start_loading("/nonexistent/whisper".into(), Duration::from_secs(30));
        let err = stage.model.get().await.expect_err("no model there");
        assert!(
            matches!(&err, StageError::Internal(m) if m.contains("/nonexistent/whisper")),
            "{err}"
        );
    }

    #[test]
    fn the_output_rounds_the_real_time_factor_and_has_none_without_audio() {
        let mut t = Transcript::empty(3.0);
        t.transcribe_ms = 1234;
        assert_eq!(Output::from(t).rtf, Some(0.411));
        let none = Output::from(Transcript::empty(0.0));
        assert_eq!(none.rtf, None);
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            serde_json::json!({"text": "", "segments": [], "words": 0, "rtf": null,
                "audio_s": 0.0, "transcribe_ms": 0})
        );
    }

    #[test]
    fn inputs_without_audio_are_accepted() {
        let input: Input = serde_json::from_str("{}").unwrap();
        assert_eq!(input.audio_key, None);
        let input: Input = serde_json::from_str(r#"{"audio_key": null}"#).unwrap();
        assert_eq!(input.audio_key, None);
        assert!(serde_json::from_str::<Input>(r#"{"audio": "x"}"#).is_err());
    }
}
