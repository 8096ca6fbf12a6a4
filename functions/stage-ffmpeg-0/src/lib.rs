//! `stage-ffmpeg-0`: probe and normalize the request's input video with ffmpeg.
//!
//! From `requests/{id}/input/source.*` it writes, under `requests/{id}/stages/{stage}/`,
//! what `video` and `analysis` ask for (both, by default, from one decode):
//! - `probe.json`: ffprobe's view of the input;
//! - with `video`, `video.mp4`: the canonical H.264 mp4 (yuv420p, at most 1280 px wide)
//!   with a keyframe forced every `keyframe_interval_s`, so later cuts by stream copy land
//!   exactly on them;
//! - with `analysis`, what the rest of the pipeline reads first:
//!   - `audio.wav`: mono 16-bit PCM at `sample_rate` Hz, and `speech.wav`, the same at
//!     16 kHz (what speech models take), when the input has sound;
//!   - `keyframes.json`: the times the canonical video's keyframes have (or will have, when
//!     it is made by another call): the first frame at or after every
//!     `keyframe_interval_s`, the rule they are forced by, counted from the first frame;
//!   - `frames/frame-NNNNNN.jpg` and their index `frames.json` (each frame's key and time
//!     from the first frame), when `frames` asks for them: the frames object detection
//!     looks at, the first frame at or after every `1 / fps` s, at most `max_width` px
//!     wide. stage-ffmpeg-2 hands each clip its share of them;
//!   - in its result, the times of the scene changes ffmpeg's `scene` score finds above
//!     `scene_threshold` (the cut candidates that stage-audio combines with the sound's).
//!
//! One ffmpeg process decodes the input once and writes every output asked for. The
//! pipeline asks for the two parts in two calls side by side: the analysis is a fraction
//! of the encode's time, and the clips are planned and looked at while the encode runs. A
//! file ffprobe cannot read, or one with no video stream, is `invalid_media` (422, final).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use fave_common::contract::Frame;
use fave_common::contract::ffmpeg0::outputs as output;
pub use fave_common::contract::ffmpeg0::{
    FrameSampling, Input, Keyframes, NAME, Output, SPEECH_RATE, TakenFrames, VIDEO_STAGE,
};
use fave_common::keys::RequestKeys;
use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};
use fave_common::tool::{self, dir_and_name as split};
use futures::{StreamExt, TryStreamExt};
use tokio::process::Command;

/// At most this many scene changes are kept (a strobing video must not bloat the result).
const MAX_SCENE_CHANGES: usize = 10_000;

/// At most this many frames are taken (a day of video at one a second).
const MAX_FRAMES: u32 = 86_400;

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

/// What this function takes on, checked against every claim of the probe before anything is
/// decoded: the container's duration and each stream's, the frame count, the picture size
/// and the pixels a second. A file over any of them is `media_over_limit` (422, final). Read
/// once at start from `FAVE_MAX_DURATION_SECS` (default 21600: 6 h), `FAVE_MAX_FRAMES`
/// (2,000,000), `FAVE_MAX_PIXELS` (a frame's width × height, 8192 × 4320), `FAVE_MAX_SIDE`
/// (8192 px) and `FAVE_MAX_PIXEL_RATE` (width × height × frames a second, 3840 × 2160 × 60).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaLimits {
    pub max_duration_s: f64,
    pub max_frames: f64,
    pub max_pixels: f64,
    pub max_side: f64,
    pub max_pixel_rate: f64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_duration_s: 6.0 * 3600.0,
            max_frames: 2_000_000.0,
            max_pixels: 8192.0 * 4320.0,
            max_side: 8192.0,
            max_pixel_rate: 3840.0 * 2160.0 * 60.0,
        }
    }
}

impl MediaLimits {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let d = Self::default();
        let read = |var: &str, default: f64| match lookup(var).filter(|v| !v.trim().is_empty()) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or_else(|| format!("configuration: {var}: {v:?} is not a positive number")),
        };
        Ok(Self {
            max_duration_s: read("FAVE_MAX_DURATION_SECS", d.max_duration_s)?,
            max_frames: read("FAVE_MAX_FRAMES", d.max_frames)?,
            max_pixels: read("FAVE_MAX_PIXELS", d.max_pixels)?,
            max_side: read("FAVE_MAX_SIDE", d.max_side)?,
            max_pixel_rate: read("FAVE_MAX_PIXEL_RATE", d.max_pixel_rate)?,
        })
    }

    /// Refuses a probe any of whose claims is over a limit.
    pub fn check(&self, probe: &serde_json::Value, info: &MediaInfo) -> Result<(), StageError> {
        let number = |v: &serde_json::Value| {
            v.as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .or_else(|| v.as_f64())
                .filter(|n| n.is_finite())
        };
        let streams = probe["streams"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let durations = std::iter::once(number(&probe["format"]["duration"]))
            .chain(streams.iter().map(|s| number(&s["duration"])))
            .flatten();
        let longest = durations.fold(info.duration_s, f64::max);
        let over = |what: String| Err(StageError::OverLimit(what));
        if longest > self.max_duration_s {
            return over(format!(
                "the file says it lasts {}, over the {} this deployment takes \
                 (FAVE_MAX_DURATION_SECS)",
                human(longest),
                human(self.max_duration_s)
            ));
        }
        let (w, h) = (f64::from(info.width), f64::from(info.height));
        if w.max(h) > self.max_side || w * h > self.max_pixels {
            return over(format!(
                "{}x{} pictures are over the {} px a side and {} px a picture this deployment \
                 takes (FAVE_MAX_SIDE, FAVE_MAX_PIXELS)",
                info.width, info.height, self.max_side, self.max_pixels
            ));
        }
        let stated = streams
            .iter()
            .filter(|s| s["codec_type"] == "video")
            .filter_map(|s| number(&s["nb_frames"]))
            .fold(0.0, f64::max);
        let frames = stated.max(longest * info.fps);
        if frames > self.max_frames {
            return over(format!(
                "about {frames:.0} frames, over the {:.0} this deployment takes \
                 (FAVE_MAX_FRAMES)",
                self.max_frames
            ));
        }
        if w * h * info.fps > self.max_pixel_rate {
            return over(format!(
                "{}x{} at {:.1} frames a second is over the {:.0} pixels a second this \
                 deployment takes (FAVE_MAX_PIXEL_RATE)",
                info.width, info.height, info.fps, self.max_pixel_rate
            ));
        }
        Ok(())
    }
}

/// Seconds as a person reads them: `3 s`, `2.5 h`, `136 years`.
fn human(seconds: f64) -> String {
    const YEAR: f64 = 365.25 * 86_400.0;
    if seconds >= YEAR {
        format!("{:.0} years", seconds / YEAR)
    } else if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{seconds:.0} s")
    }
}

/// The stage-ffmpeg-0 function, with the limits it was started with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ffmpeg0 {
    pub limits: MediaLimits,
}

impl Stage for Ffmpeg0 {
    type Input = Input;
    type Output = Output;

    fn name(&self) -> &'static str {
        NAME
    }

    fn serves(&self, stage: &str) -> bool {
        stage == NAME || stage == VIDEO_STAGE
    }

    async fn run(
        &self,
        ctx: &StageContext<'_>,
        call: &StageCall<Input>,
    ) -> Result<Produced<Output>, StageError> {
        let input = &call.input;
        // The request's own input, or the library's copy of the video (named by its hash).
        let input_prefix = format!("{}input/", RequestKeys::new(&call.request_id).root());
        let own = input.source_key.starts_with(&input_prefix) && !input.source_key.contains("..");
        if !own && !fave_common::keys::is_video_input(&input.source_key) {
            return Err(StageError::InvalidInput(format!(
                "source_key must be under {input_prefix} or be a video's stored input"
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
        if let Some(f) = input.frames
            && (!(0.01..=30.0).contains(&f.fps) || !(16..=4096).contains(&f.max_width))
        {
            return Err(StageError::InvalidInput(
                "frames: fps must be within 0.01..=30, max_width 16..=4096".into(),
            ));
        }
        if !input.video && !input.analysis {
            return Err(StageError::InvalidInput(
                "nothing to write: video and analysis are both false".into(),
            ));
        }
        let dir = ctx.workdir()?;
        let source = dir.join("source");
        let source_bytes = ctx.storage.get_to_file(&input.source_key, &source).await?;

        let clock = Instant::now();
        let probe = ffprobe(&source).await?;
        let info = media_info(&probe)?;
        self.limits.check(&probe, &info)?;
        let probe_path = dir.join("probe.json");
        let probe_text = serde_json::to_vec_pretty(&probe)
            .map_err(|e| StageError::Internal(format!("writing probe.json: {e}")))?;
        tokio::fs::write(&probe_path, probe_text)
            .await
            .map_err(|e| StageError::Internal(format!("writing probe.json: {e}")))?;
        let out = Outputs::in_dir(dir, input, info.has_audio);
        if out.frames.is_some() {
            tokio::fs::create_dir_all(dir.join("frames"))
                .await
                .map_err(|e| StageError::Internal(format!("making the frames folder: {e}")))?;
        }
        normalize(&source, &out, input).await?;
        let read_log = async |path: &Option<std::path::PathBuf>| match path {
            Some(path) => tokio::fs::read_to_string(path).await.unwrap_or_default(),
            None => String::new(),
        };
        let scene_changes = parse_scene_log(&read_log(&out.scenes).await);
        let keyframes = Keyframes {
            times: relative_times(&read_log(&out.keyframes).await)
                .into_iter()
                .filter(|t| t.is_finite())
                .collect(),
        };
        let ffmpeg_ms = clock.elapsed().as_millis() as u64;

        // The files go up side by side with the frames (the video is one large body, the
        // frames many small ones) and neither waits for the other.
        let prefix = call.output_prefix();
        let files = async {
            let mut outputs = BTreeMap::new();
            let mut put = async |name: &str, file: &Path, content_type: &str| {
                let filename = split(file).1.to_string_lossy().into_owned();
                let key = format!("{prefix}{filename}");
                ctx.storage.put_file(&key, file, content_type).await?;
                outputs.insert(name.to_owned(), key);
                Ok::<_, StageError>(())
            };
            put(output::PROBE, &probe_path, "application/json").await?;
            if let Some(video) = &out.video {
                put(output::VIDEO, video, "video/mp4").await?;
            }
            if let Some((audio, speech)) = &out.audio {
                put(output::AUDIO, audio, "audio/wav").await?;
                put(output::SPEECH, speech, "audio/wav").await?;
            }
            if out.keyframes.is_some() {
                let key = format!("{prefix}keyframes.json");
                ctx.storage.put_json(&key, &keyframes).await?;
                outputs.insert(output::KEYFRAMES.to_owned(), key);
            }
            Ok::<_, StageError>(outputs)
        };
        let frames = async {
            let Some(sampling) = out.frames else {
                return Ok(None);
            };
            let frames =
                upload_frames(ctx, &dir.join("frames"), &format!("{prefix}frames/")).await?;
            let key = format!("{prefix}frames.json");
            ctx.storage.put_json(&key, &frames).await?;
            let taken = TakenFrames {
                fps: sampling.fps,
                max_width: sampling.max_width,
                count: frames.len(),
            };
            Ok::<_, StageError>(Some((key, taken)))
        };
        // What the canonical video is, read while it goes up.
        let canonical = async {
            match &out.video {
                Some(video) => media_info(&ffprobe(video).await?),
                None => Ok(info.clone()),
            }
        };
        let (mut outputs, frames, canonical) = tokio::try_join!(files, frames, canonical)?;
        let taken = frames.map(|(key, taken)| {
            outputs.insert(output::FRAMES.to_owned(), key);
            taken
        });
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
                keyframes: keyframes.times.len(),
                frames: taken,
                ffmpeg_ms,
            },
        })
    }
}

/// The files one call writes in its work directory; `None` for what it was not asked for.
struct Outputs {
    video: Option<std::path::PathBuf>,
    /// The wav at the asked rate, and the one for speech.
    audio: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Logs of the frames that start a scene, and of those the keyframes are forced on.
    scenes: Option<std::path::PathBuf>,
    keyframes: Option<std::path::PathBuf>,
    frames: Option<FrameSampling>,
}

impl Outputs {
    fn in_dir(dir: &Path, input: &Input, has_audio: bool) -> Self {
        let analysis = |name: &str| input.analysis.then(|| dir.join(name));
        Self {
            video: input.video.then(|| dir.join("video.mp4")),
            audio: (input.analysis && has_audio)
                .then(|| (dir.join("audio.wav"), dir.join("speech.wav"))),
            scenes: analysis("scenes.txt"),
            keyframes: analysis("keyframes.txt"),
            frames: input.frames.filter(|_| input.analysis),
        }
    }
}

/// ffprobe's JSON description of a file. A file ffprobe cannot read is not media.
pub async fn ffprobe(path: &Path) -> Result<serde_json::Value, StageError> {
    let stdout = tool::run(
        Command::new("ffprobe")
            .args(tool::CONFINED_INPUT)
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
    // The streams' own durations, not the container's claim (a container can say anything;
    // MediaLimits::check refuses a claim over the limit either way); the container's only
    // where no stream says.
    let streamed = streams
        .iter()
        .filter(|s| matches!(s["codec_type"].as_str(), Some("video" | "audio")))
        .filter_map(|s| number(&s["duration"]))
        .filter(|d| d.is_finite() && *d > 0.0)
        .reduce(f64::max);
    let duration_s = streamed
        .or_else(|| number(&probe["format"]["duration"]))
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

/// The times in ffmpeg's `metadata=print` log, in order: one `frame:N pts:P pts_time:T`
/// line per frame that passed (followed by its metadata lines); a time ffmpeg could not
/// give is NaN, so that the n-th time stays the n-th frame's.
pub fn frame_times(log: &str) -> impl Iterator<Item = f64> + '_ {
    log.lines().filter(|l| l.starts_with("frame:")).map(|l| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("pts_time:"))
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    })
}

/// The scene changes of the scene branch's log: positive times, increasing.
pub fn parse_scene_log(log: &str) -> Vec<f64> {
    let mut times: Vec<f64> = frame_times(log)
        .filter(|t| t.is_finite() && *t > 0.0)
        .take(MAX_SCENE_CHANGES)
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    times
}

/// A `metadata=print` log's times counted from its first frame's, in frame order (NaN
/// where ffmpeg gave none, so the n-th time stays the n-th frame's).
pub fn relative_times(log: &str) -> Vec<f64> {
    let times: Vec<f64> = frame_times(log).collect();
    let first = times
        .first()
        .copied()
        .filter(|t| t.is_finite())
        .unwrap_or(0.0);
    times.into_iter().map(|t| t - first).collect()
}

/// Uploads the frames ffmpeg wrote to `dir` (`frame-NNNNNN.jpg`, with their times in
/// `frames.txt`) under `prefix`; returns them in order.
async fn upload_frames(
    ctx: &StageContext<'_>,
    dir: &Path,
    prefix: &str,
) -> Result<Vec<Frame>, StageError> {
    let log = tokio::fs::read_to_string(dir.join("frames.txt"))
        .await
        .unwrap_or_default();
    // The n-th frame written is the n-th one logged; a frame without a file (ffmpeg
    // stopped at MAX_FRAMES) or without a time is not listed. Times count from the first
    // frame, as the keyframes' and the clips' do.
    let frames: Vec<(String, f64)> = relative_times(&log)
        .into_iter()
        .enumerate()
        .map(|(n, t)| (format!("frame-{n:06}.jpg"), t))
        .filter(|(name, t)| t.is_finite() && dir.join(name).is_file())
        .collect();
    // A few at a time: each is small, so the round trips dominate.
    const IN_FLIGHT: usize = 8;
    futures::stream::iter(frames)
        .map(|(name, time_s)| async move {
            let key = format!("{prefix}{name}");
            ctx.storage
                .put_file(&key, &dir.join(&name), "image/jpeg")
                .await?;
            Ok::<_, StageError>(Frame { time_s, key })
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
}

/// One ffmpeg run writing `out`: the canonical mp4, the wavs, the scene-change and keyframe
/// logs, and the frames for detection, each only if wanted.
async fn normalize(source: &Path, out: &Outputs, input: &Input) -> Result<(), StageError> {
    let name = |path: &Path| split(path).1.to_string_lossy().into_owned();
    // The decoded video is scaled to even dimensions (yuv420p needs them) at most 1280
    // wide, then split into a branch per output. The scene branch (shrunk the cheapest
    // way, which is plenty for a scene score: a tenth of the cost of a second decode)
    // goes through `select` and logs the frames that start a scene. The keyframe branch
    // picks the first frame at or after each multiple of `keyframe_interval_s` from the
    // first frame, as `-force_key_frames` below does (the encoder counts `t` from the first
    // frame it gets; the filters count from the input's start, hence `t-start_t`: a video
    // whose first picture comes late, as in some AVIs, would otherwise be foretold a frame
    // off), and logs their times; the frames branch does the same at `1 / fps` s and writes
    // them. (`metadata=print` only logs a frame that carries metadata, hence the `add`.)
    // Every file is in the work directory and named relative to it.
    let mut labels = Vec::new();
    let mut branches = Vec::new();
    if out.video.is_some() {
        labels.push("[v]");
    }
    if let Some(scenes) = &out.scenes {
        labels.push("[s]");
        branches.push(format!(
            "[s]scale=160:-2:flags=neighbor,select='gt(scene,{})',metadata=print:file={},nullsink",
            input.scene_threshold,
            name(scenes),
        ));
    }
    if let Some(keyframes) = &out.keyframes {
        labels.push("[k]");
        branches.push(format!(
            "[k]select='gte(t-start_t,selected_n*{})',metadata=add:key=fave.keyframe:value=1,\
             metadata=print:file={}[keys]",
            input.keyframe_interval_s,
            name(keyframes),
        ));
    }
    if let Some(f) = out.frames {
        labels.push("[f]");
        branches.push(format!(
            "[f]select='gte(t-start_t,selected_n/{})',scale='min({},iw)':-2,\
             metadata=add:key=fave.frame:value=1,metadata=print:file=frames/frames.txt[frames]",
            f.fps, f.max_width,
        ));
    }
    let mut graph = format!(
        "[0:v:0]scale='trunc(min(1280,iw)/2)*2':-2,split={}{}",
        labels.len(),
        labels.concat()
    );
    for branch in branches {
        graph.push(';');
        graph.push_str(&branch);
    }
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-y", "-v", "error"])
        .args(tool::CONFINED_INPUT)
        .arg("-i")
        .arg(split(source).1)
        .arg("-filter_complex")
        .arg(graph);
    if let Some(video) = &out.video {
        cmd.args(["-map", "[v]", "-map", "0:a:0?"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"])
            // Every frame keeps its time (mp4's default would fill a variable rate to a
            // constant one, moving the keyframes off the times the analysis foretold).
            .args(["-pix_fmt", "yuv420p", "-fps_mode", "vfr"])
            .arg("-force_key_frames")
            .arg(format!(
                "expr:gte(t,n_forced*{})",
                input.keyframe_interval_s
            ))
            .args(["-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k"])
            .args(["-movflags", "+faststart"])
            .arg(name(video));
    }
    if let Some((audio, speech)) = &out.audio {
        for (path, rate) in [(audio, input.sample_rate), (speech, SPEECH_RATE)] {
            cmd.args(["-map", "0:a:0", "-vn", "-ac", "1", "-ar"])
                .arg(rate.to_string())
                .args(["-c:a", "pcm_s16le"])
                .arg(name(path));
        }
    }
    if out.keyframes.is_some() {
        // Nothing to write but the log; an output all the same, so the call has one
        // when it writes no other file (a silent video, no frames asked for).
        cmd.args(["-map", "[keys]", "-f", "null", "-"]);
    }
    if out.frames.is_some() {
        // One file per frame picked, none repeated to fill a constant rate.
        cmd.args(["-map", "[frames]", "-fps_mode", "passthrough", "-frames:v"])
            .arg(MAX_FRAMES.to_string())
            .args(["-q:v", "3", "-start_number", "0", "frames/frame-%06d.jpg"]);
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
    fn frame_log_times_stay_in_frame_order() {
        let log = "frame:0    pts:0       pts_time:0\nfave.frame=1\n\
                   frame:1    pts:1001    pts_time:1.001\nfave.frame=1\n\
                   frame:2    pts:?\nframe:3    pts:3003    pts_time:3.003\n";
        let times: Vec<f64> = frame_times(log).collect();
        assert_eq!(
            times.len(),
            4,
            "one per frame line, the first at 0 included"
        );
        assert_eq!((times[0], times[1], times[3]), (0.0, 1.001, 3.003));
        assert!(times[2].is_nan(), "a frame without a time keeps its place");
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

    fn probe(format_s: &str, stream_s: &str, w: u32, h: u32, rate: &str) -> serde_json::Value {
        serde_json::json!({
            "streams": [{"codec_type": "video", "codec_name": "h264", "width": w, "height": h,
                "avg_frame_rate": rate, "duration": stream_s}],
            "format": {"duration": format_s}
        })
    }

    #[test]
    fn the_duration_is_the_streams_and_every_claim_is_held_to_the_limits() {
        let limits = MediaLimits::default();
        let fine = probe("80.0", "79.5", 768, 576, "10/1");
        let info = media_info(&fine).unwrap();
        assert_eq!(info.duration_s, 79.5, "the stream's, not the container's");
        assert!(limits.check(&fine, &info).is_ok());
        // A 46 KB mp4 whose container says 2^32 s (136 years): the streams say 3 s, and the
        // claim alone is refused.
        let crafted = probe("4294967295", "3.0", 320, 240, "25/1");
        let info = media_info(&crafted).unwrap();
        assert_eq!(info.duration_s, 3.0);
        let err = limits.check(&crafted, &info).unwrap_err();
        assert!(
            matches!(&err, StageError::OverLimit(m) if m.contains("136 years")),
            "{err}"
        );
        let cases = [
            probe("36000", "36000", 16, 16, "25/1"), // 10 h of tiny frames
            probe("10", "10", 16384, 16, "25/1"),    // a side too long
            probe("10", "10", 7680, 4320, "120/1"),  // too many pixels a second
            probe("10", "10", 8192, 8192, "1/1"),    // too many pixels a picture
            probe("20000", "20000", 320, 240, "200/1"), // too many frames
        ];
        for p in &cases {
            let info = media_info(p).unwrap();
            let err = limits.check(p, &info).unwrap_err();
            assert!(matches!(err, StageError::OverLimit(_)), "{p}: {err}");
            let api = fave_common::error::ApiError::from(err);
            assert_eq!((api.status.as_u16(), api.code), (422, "media_over_limit"));
        }
    }

    #[test]
    fn limits_are_read_from_the_environment_and_bad_values_refused() {
        let with = |var: &'static str, value: &'static str| {
            move |k: &str| (k == var).then(|| value.to_owned())
        };
        let l = MediaLimits::from_lookup(&with("FAVE_MAX_DURATION_SECS", "60")).unwrap();
        assert_eq!(l.max_duration_s, 60.0);
        assert_eq!(l.max_side, MediaLimits::default().max_side);
        for bad in ["0", "-1", "many", "inf"] {
            assert!(
                MediaLimits::from_lookup(&with("FAVE_MAX_FRAMES", bad)).is_err(),
                "{bad}"
            );
        }
    }
}
