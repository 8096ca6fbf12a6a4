//! `stage-ffmpeg-1`: cut the canonical video into clips at the proposed cut points.
//!
//! stage-ffmpeg-0 forces a keyframe every second or so, and stream copy can only cut at a
//! keyframe, so each proposed cut is moved to the nearest keyframe (read from the packet
//! index, no decoding); cuts that would leave a clip shorter than `min_clip_s` are dropped.
//! Then one `ffmpeg -c copy -f segment` run writes every clip, each from one chosen
//! keyframe to the next: those keyframes' times are the clips' exact time ranges. No frame is re-encoded, so the clips
//! are exactly the canonical video's frames, each once.
//!
//! Times are in the canonical video's presentation time, starting at 0 (any offset the
//! container or the muxer adds is taken off).
//!
//! A video with no cut (shorter than the maximum clip length) is one clip: the canonical
//! video itself, referenced, not copied.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use fave_common::ids::ClipId;
use fave_common::stage::{ListedClip, Produced, Stage, StageCall, StageContext, StageError};
use fave_common::tool::{self, dir_and_name};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// This stage's name, which is its function's name.
pub const NAME: &str = "stage-ffmpeg-1";

/// More clips than this is a mistake upstream, not a video.
const MAX_CLIPS: usize = 2_000;

/// Clips uploaded at once.
const UPLOADS_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The canonical video; must be one of the request's own objects.
    pub video_key: String,
    /// Proposed cut times in seconds (any order; out-of-range ones are ignored).
    pub cuts: Vec<f64>,
    /// Cuts that would make a clip shorter than this are dropped.
    #[serde(default)]
    pub min_clip_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub clips: Vec<ListedClip>,
    /// Time spent in ffprobe and ffmpeg, the rest being storage.
    pub ffmpeg_ms: u64,
}

pub struct Ffmpeg1;

impl Stage for Ffmpeg1 {
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
        call.require_own_key("video_key", &input.video_key)?;
        if input.cuts.len() > MAX_CLIPS || input.min_clip_s.is_nan() || input.min_clip_s < 0.0 {
            return Err(StageError::InvalidInput(format!(
                "at most {MAX_CLIPS} cuts, and min_clip_s must be a number ≥ 0"
            )));
        }
        let work = ctx.workdir()?;
        let video = work.join("video.mp4");
        ctx.storage.get_to_file(&input.video_key, &video).await?;

        let clock = Instant::now();
        // Two reads of the container's index, side by side.
        let (keyframes, end) = tokio::try_join!(keyframe_times(&video), video_end(&video))?;
        let (Some(&origin), Some(end)) = (keyframes.first(), end) else {
            return Err(StageError::InvalidMedia("the video has no keyframe".into()));
        };
        let relative: Vec<f64> = keyframes.iter().map(|t| t - origin).collect();
        let duration = end - origin;
        let cuts = snap_cuts(&input.cuts, &relative, duration, input.min_clip_s);

        let prefix = call.output_prefix();
        let mut outputs = BTreeMap::new();
        let mut clips = Vec::new();
        if cuts.is_empty() {
            let clip = ClipId::from_index(0);
            outputs.insert(clip.to_string(), input.video_key.clone());
            clips.push(ListedClip {
                clip,
                start_s: 0.0,
                end_s: duration,
                key: input.video_key.clone(),
            });
            return Ok(Produced {
                outputs,
                data: Output {
                    clips,
                    ffmpeg_ms: clock.elapsed().as_millis() as u64,
                },
            });
        }
        let list = segment(&video, &cuts, origin).await?;
        let ffmpeg_ms = clock.elapsed().as_millis() as u64;
        let segments = parse_segment_list(&list)?;
        if segments.len() != cuts.len() + 1 {
            return Err(StageError::Internal(format!(
                "ffmpeg wrote {} clips for {} cuts",
                segments.len(),
                cuts.len()
            )));
        }
        // Each clip runs from one chosen keyframe to the next. (The list's own times are
        // not used: the muxer shifts all but the first by the B-frame delay.)
        let bounds: Vec<f64> = std::iter::once(0.0)
            .chain(cuts.iter().copied())
            .chain(std::iter::once(duration))
            .collect();
        for (i, edge) in bounds.windows(2).enumerate() {
            let clip = ClipId::from_index(i);
            let key = format!("{prefix}{clip}.mp4");
            outputs.insert(clip.to_string(), key.clone());
            clips.push(ListedClip {
                clip,
                start_s: round_ms(edge[0]),
                end_s: round_ms(edge[1]),
                key,
            });
        }
        // A few uploads at a time: a long video has hundreds of clips, and one after another
        // their round trips add up.
        let uploads: Vec<_> = segments
            .iter()
            .zip(&clips)
            .map(|((file, _, _), clip)| (work.join(file), clip.key.clone()))
            .collect();
        futures::stream::iter(uploads)
            .map(|(file, key)| async move { ctx.storage.put_file(&key, &file, "video/mp4").await })
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(Produced {
            outputs,
            data: Output { clips, ffmpeg_ms },
        })
    }
}

fn round_ms(t: f64) -> f64 {
    (t.max(0.0) * 1000.0).round() / 1000.0
}

/// Presentation times of the video's keyframes, increasing, read from the packet index.
async fn keyframe_times(video: &Path) -> Result<Vec<f64>, StageError> {
    let (dir, name) = dir_and_name(video);
    let out = tool::run(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "packet=pts_time,flags", "-of", "csv=p=0"])
            .arg(name),
        dir,
        "ffprobe",
    )
    .await
    .map_err(StageError::InvalidMedia)?;
    let mut times: Vec<f64> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            let (t, flags) = l.split_once(',')?;
            flags.starts_with('K').then(|| t.parse::<f64>().ok())?
        })
        .filter(|t| t.is_finite())
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Where the video ends, in the container's time: its start plus its duration.
async fn video_end(video: &Path) -> Result<Option<f64>, StageError> {
    let (dir, name) = dir_and_name(video);
    let out = tool::run(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=start_time,duration"])
            .args(["-of", "csv=p=0"])
            .arg(name),
        dir,
        "ffprobe",
    )
    .await
    .map_err(StageError::InvalidMedia)?;
    let text = String::from_utf8_lossy(&out);
    let mut parts = text.trim().split(',').map(|p| p.parse::<f64>().ok());
    Ok(match (parts.next().flatten(), parts.next().flatten()) {
        (Some(start), Some(duration)) if duration > 0.0 => Some(start + duration),
        _ => None,
    })
}

/// Moves each proposed cut to the nearest keyframe (times relative to the first one) and
/// drops cuts that would leave a clip shorter than `min_clip_s`, or none at all.
pub fn snap_cuts(proposed: &[f64], keyframes: &[f64], duration: f64, min_clip_s: f64) -> Vec<f64> {
    let mut wanted: Vec<f64> = proposed
        .iter()
        .copied()
        .filter(|t| t.is_finite() && *t > 0.0 && *t < duration)
        .collect();
    wanted.sort_by(f64::total_cmp);
    let min = min_clip_s.max(1e-3);
    let mut cuts: Vec<f64> = Vec::new();
    for t in wanted {
        let Some(&k) = keyframes
            .iter()
            .filter(|k| **k > 0.0)
            .min_by(|a, b| (*a - t).abs().total_cmp(&(*b - t).abs()))
        else {
            break;
        };
        let last = cuts.last().copied().unwrap_or(0.0);
        if k - last >= min && duration - k >= min {
            cuts.push(k);
        }
    }
    cuts
}

/// One stream-copy run of ffmpeg's segment muxer, cutting at the keyframes at `cuts`
/// (relative times); returns its CSV list of `file,start,end`.
async fn segment(video: &Path, cuts: &[f64], origin: f64) -> Result<String, StageError> {
    let (dir, name) = dir_and_name(video);
    // The muxer cuts at the first keyframe at or after each time: a hair before the one
    // chosen, so rounding cannot push a cut to the next keyframe.
    let times: Vec<String> = cuts
        .iter()
        .map(|t| format!("{:.6}", t + origin - 1e-4))
        .collect();
    tool::run(
        Command::new("ffmpeg")
            .args(["-nostdin", "-y", "-v", "error", "-i"])
            .arg(name)
            .args(["-map", "0", "-c", "copy", "-f", "segment", "-segment_times"])
            .arg(times.join(","))
            .args(["-reset_timestamps", "1", "-segment_list", "clips.csv"])
            .args(["-segment_list_type", "csv", "clip-%04d.mp4"]),
        dir,
        "ffmpeg",
    )
    .await
    .map_err(StageError::InvalidMedia)?;
    tokio::fs::read_to_string(dir.join("clips.csv"))
        .await
        .map_err(|e| StageError::Internal(format!("reading the segment list: {e}")))
}

/// `file,start,end` lines; a file name that is not one of ours is refused.
fn parse_segment_list(list: &str) -> Result<Vec<(String, f64, f64)>, StageError> {
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split(',');
            let (file, start, end) = (f.next(), f.next(), f.next());
            let parsed = (|| {
                let file = file?.trim();
                let ours = file.starts_with("clip-")
                    && file.ends_with(".mp4")
                    && file
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
                Some((
                    ours.then(|| file.to_owned())?,
                    start?.trim().parse().ok()?,
                    end?.trim().parse().ok()?,
                ))
            })();
            parsed.ok_or_else(|| StageError::Internal(format!("bad segment list line {l:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_move_to_the_nearest_keyframe_and_respect_the_minimum() {
        let keyframes: Vec<f64> = (0..80).map(f64::from).collect();
        assert_eq!(
            snap_cuts(&[19.6, 40.2, 60.5], &keyframes, 79.5, 5.0),
            vec![20.0, 40.0, 60.0]
        );
        // Unsorted, duplicate after snapping, too close to each other or to either end.
        assert_eq!(
            snap_cuts(&[41.0, 40.4, 2.0, 78.0, 20.1, 22.0], &keyframes, 79.5, 5.0),
            vec![20.0, 40.0]
        );
        assert!(snap_cuts(&[f64::NAN, -1.0, 100.0], &keyframes, 79.5, 5.0).is_empty());
        assert!(
            snap_cuts(&[10.0], &[0.0], 20.0, 1.0).is_empty(),
            "no keyframe to cut at"
        );
    }

    #[test]
    fn segment_lists_are_parsed_and_foreign_names_refused() {
        let list = "clip-0000.mp4,0.200000,20.200000\nclip-0001.mp4,20.200000,40.2\n";
        assert_eq!(
            parse_segment_list(list).unwrap(),
            vec![
                ("clip-0000.mp4".into(), 0.2, 20.2),
                ("clip-0001.mp4".into(), 20.2, 40.2)
            ]
        );
        assert!(parse_segment_list("../x.mp4,0,1").is_err());
        assert!(parse_segment_list("clip-0000.mp4,zero,1").is_err());
    }
}
