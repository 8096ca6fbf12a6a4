//! `stage-ffmpeg-0`: probe and normalize the request's input video with ffmpeg.
//!
//! From `requests/{id}/input/source.*` it writes, under `requests/{id}/stages/stage-ffmpeg-0/`:
//! - `probe.json`: ffprobe's view of the input;
//! - `video.mp4`: the canonical H.264 mp4 (yuv420p, at most 1280 px wide) with a keyframe
//!   forced every `keyframe_interval_s`, so later cuts by stream copy land exactly on them;
//! - `audio.wav`: mono 16-bit PCM at `sample_rate` Hz, when the input has sound;
//! - in its result, the times of the scene changes ffmpeg's `scene` score finds above
//!   `scene_threshold` (the cut candidates that stage-audio combines with the sound's).
//!
//! One ffmpeg process decodes the input once and writes every output, so scene detection
//! costs no second decode. A file ffprobe cannot
//! read, or one with no video stream, is `invalid_media` (422, final).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use fave_common::keys::RequestKeys;
use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};
use fave_common::tool::{self, dir_and_name as split};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// This stage's name, which is its function's name.
pub const NAME: &str = "stage-ffmpeg-0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The input video's key; must be under the request's `input/` folder.
    pub source_key: String,
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval_s: f64,
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// ffmpeg's scene score (0..1) above which a frame starts a new scene.
    #[serde(default = "default_scene_threshold")]
    pub scene_threshold: f64,
}

fn default_keyframe_interval() -> f64 {
    1.0
}

fn default_sample_rate() -> u32 {
    22_050
}

fn default_scene_threshold() -> f64 {
    0.3
}

/// At most this many scene changes are kept (a strobing video must not bloat the result).
const MAX_SCENE_CHANGES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub has_audio: bool,
    pub source_video_codec: String,
    pub source_bytes: u64,
    pub keyframe_interval_s: f64,
    pub sample_rate: u32,
    /// Times (s) where a new scene starts, increasing.
    pub scene_changes: Vec<f64>,
    /// Time spent in ffprobe and ffmpeg, the rest being storage.
    pub ffmpeg_ms: u64,
}

/// What matters of a probe.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub video_codec: String,
    pub has_audio: bool,
}

pub struct Ffmpeg0;

impl Stage for Ffmpeg0 {
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
        let input_prefix = format!("{}input/", RequestKeys::new(&call.request_id).root());
        if !input.source_key.starts_with(&input_prefix) || input.source_key.contains("..") {
            return Err(StageError::InvalidInput(format!(
                "source_key must be under {input_prefix}"
            )));
        }
        if !(0.1..=10.0).contains(&input.keyframe_interval_s) {
            return Err(StageError::InvalidInput(
                "keyframe_interval_s must be within 0.1..=10".into(),
            ));
        }
        if !(0.0..=1.0).contains(&input.scene_threshold) {
            return Err(StageError::InvalidInput(
                "scene_threshold must be within 0..=1".into(),
            ));
        }
        if !(8_000..=48_000).contains(&input.sample_rate) {
            return Err(StageError::InvalidInput(
                "sample_rate must be within 8000..=48000".into(),
            ));
        }
        let dir = ctx.workdir()?;
        let source = dir.join("source");
        let source_bytes = ctx.storage.get_to_file(&input.source_key, &source).await?;

        let clock = Instant::now();
        let probe = ffprobe(&source).await?;
        let info = media_info(&probe)?;
        let probe_path = dir.join("probe.json");
        let probe_text = serde_json::to_vec_pretty(&probe)
            .map_err(|e| StageError::Internal(format!("writing probe.json: {e}")))?;
        tokio::fs::write(&probe_path, probe_text)
            .await
            .map_err(|e| StageError::Internal(format!("writing probe.json: {e}")))?;
        let video = dir.join("video.mp4");
        let audio = dir.join("audio.wav");
        let scenes = dir.join("scenes.txt");
        normalize(
            &source,
            &video,
            info.has_audio.then_some(audio.as_path()),
            &scenes,
            input,
        )
        .await?;
        let scene_log = tokio::fs::read_to_string(&scenes).await.unwrap_or_default();
        let scene_changes = parse_scene_log(&scene_log);
        let canonical = media_info(&ffprobe(&video).await?)?;
        let ffmpeg_ms = clock.elapsed().as_millis() as u64;

        let prefix = call.output_prefix();
        let mut outputs = BTreeMap::new();
        let mut put = async |name: &str, file: &Path, content_type: &str, filename: &str| {
            let key = format!("{prefix}{filename}");
            ctx.storage.put_file(&key, file, content_type).await?;
            outputs.insert(name.to_owned(), key);
            Ok::<_, StageError>(())
        };
        put("probe", &probe_path, "application/json", "probe.json").await?;
        put("video", &video, "video/mp4", "video.mp4").await?;
        if info.has_audio {
            put("audio", &audio, "audio/wav", "audio.wav").await?;
        }
        Ok(Produced {
            outputs,
            data: Output {
                duration_s: canonical.duration_s,
                width: canonical.width,
                height: canonical.height,
                fps: canonical.fps,
                has_audio: info.has_audio,
                source_video_codec: info.video_codec,
                source_bytes,
                keyframe_interval_s: input.keyframe_interval_s,
                sample_rate: input.sample_rate,
                scene_changes,
                ffmpeg_ms,
            },
        })
    }
}

/// ffprobe's JSON description of a file. A file ffprobe cannot read is not media.
pub async fn ffprobe(path: &Path) -> Result<serde_json::Value, StageError> {
    let stdout = tool::run(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_format",
                "-show_streams",
            ])
            .arg(split(path).1),
        split(path).0,
        "ffprobe",
    )
    .await
    .map_err(StageError::InvalidMedia)?;
    serde_json::from_slice(&stdout)
        .map_err(|e| StageError::InvalidMedia(format!("ffprobe output: {e}")))
}

/// The facts of a probe that the pipeline needs; no video stream is `invalid_media`.
pub fn media_info(probe: &serde_json::Value) -> Result<MediaInfo, StageError> {
    let streams = probe["streams"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1)
        .ok_or_else(|| StageError::InvalidMedia("the file has no video stream".into()))?;
    let has_audio = streams.iter().any(|s| s["codec_type"] == "audio");
    let number = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<f64>().ok());
    let duration_s = number(&probe["format"]["duration"])
        .or_else(|| number(&video["duration"]))
        .filter(|d| d.is_finite() && *d > 0.0)
        .ok_or_else(|| StageError::InvalidMedia("the video has no duration".into()))?;
    let fps = video["avg_frame_rate"]
        .as_str()
        .or_else(|| video["r_frame_rate"].as_str())
        .and_then(|r| {
            let (n, d) = r.split_once('/')?;
            let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
            (d > 0.0).then_some(n / d)
        })
        .unwrap_or(0.0);
    Ok(MediaInfo {
        duration_s,
        width: video["width"].as_u64().unwrap_or(0) as u32,
        height: video["height"].as_u64().unwrap_or(0) as u32,
        fps,
        video_codec: video["codec_name"].as_str().unwrap_or("unknown").to_owned(),
        has_audio,
    })
}

/// The times of ffmpeg's `metadata=print` log: one `frame:N pts:P pts_time:T` line per
/// selected frame (followed by its metadata lines).
pub fn parse_scene_log(log: &str) -> Vec<f64> {
    let mut times: Vec<f64> = log
        .lines()
        .filter(|l| l.starts_with("frame:"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("pts_time:"))
        })
        .filter_map(|t| t.parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t > 0.0)
        .take(MAX_SCENE_CHANGES)
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    times
}

/// One ffmpeg run: the canonical mp4, the mono wav if wanted, and the scene-change log.
async fn normalize(
    source: &Path,
    video: &Path,
    audio: Option<&Path>,
    scenes: &Path,
    input: &Input,
) -> Result<(), StageError> {
    let mut cmd = Command::new("ffmpeg");
    // The decoded video is scaled to even dimensions (yuv420p needs them) at most 1280
    // wide, then split: one branch is encoded, the other (shrunk the cheapest way, which
    // is plenty for a scene score: a tenth of the cost of a second decode) goes through
    // `select` and logs the frames that start a scene. Every file is in the work
    // directory and named relative to it.
    let graph = format!(
        "[0:v:0]scale='trunc(min(1280,iw)/2)*2':-2,split=2[v][s];\
         [s]scale=160:-2:flags=neighbor,select='gt(scene,{})',metadata=print:file={},nullsink",
        input.scene_threshold,
        split(scenes).1.to_string_lossy(),
    );
    cmd.args(["-nostdin", "-y", "-v", "error", "-i"])
        .arg(split(source).1)
        .arg("-filter_complex")
        .arg(graph)
        .args([
            "-map",
            "[v]",
            "-map",
            "0:a:0?",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            "-force_key_frames",
        ])
        .arg(format!(
            "expr:gte(t,n_forced*{})",
            input.keyframe_interval_s
        ))
        .args([
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-movflags",
            "+faststart",
        ])
        .arg(split(video).1);
    if let Some(audio) = audio {
        cmd.args(["-map", "0:a:0", "-vn", "-ac", "1", "-ar"])
            .arg(input.sample_rate.to_string())
            .args(["-c:a", "pcm_s16le"])
            .arg(split(audio).1);
    }
    tool::run(&mut cmd, split(source).0, "ffmpeg")
        .await
        .map_err(StageError::InvalidMedia)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_info_reads_a_probe() {
        let probe = serde_json::json!({
            "streams": [
                {"codec_type": "video", "codec_name": "h264", "width": 640, "height": 360,
                 "avg_frame_rate": "30000/1001"},
                {"codec_type": "audio", "codec_name": "aac"}
            ],
            "format": {"duration": "12.5"}
        });
        let info = media_info(&probe).unwrap();
        assert_eq!((info.width, info.height), (640, 360));
        assert!((info.fps - 29.97).abs() < 0.01);
        assert_eq!(info.duration_s, 12.5);
        assert!(info.has_audio);
        assert_eq!(info.video_codec, "h264");
    }

    #[test]
    fn scene_log_gives_sorted_positive_times() {
        let log = "frame:0    pts:4096    pts_time:12.32\nlavfi.scene_score=0.4\n\
                   frame:1    pts:16    pts_time:3.5\nlavfi.scene_score=0.9\n\
                   frame:2    pts:0    pts_time:0\nframe:3 pts:1 pts_time:nan\n";
        assert_eq!(parse_scene_log(log), vec![3.5, 12.32]);
        assert!(parse_scene_log("").is_empty());
    }

    #[test]
    fn audio_only_or_imageless_probe_is_invalid_media() {
        let probe = serde_json::json!({
            "streams": [{"codec_type": "audio"}], "format": {"duration": "3"}
        });
        assert!(matches!(
            media_info(&probe),
            Err(StageError::InvalidMedia(_))
        ));
        let cover_only = serde_json::json!({
            "streams": [{"codec_type": "video", "disposition": {"attached_pic": 1}}],
            "format": {"duration": "3"}
        });
        assert!(matches!(
            media_info(&cover_only),
            Err(StageError::InvalidMedia(_))
        ));
    }
}
