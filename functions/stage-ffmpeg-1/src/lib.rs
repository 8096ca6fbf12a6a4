//! `stage-ffmpeg-1`: cut the canonical video into the listed clips.
//!
//! stage-audio lists the clips before the canonical video exists, at the times its
//! keyframes will have (stage-ffmpeg-0 forces one every second or so and reports where).
//! This stage checks that every clip boundary is a keyframe of the video (read from the
//! packet index, no decoding), then one `ffmpeg -c copy -f segment` run writes every clip,
//! each from one keyframe to the next, and each goes to the key the list gave it. No frame
//! is re-encoded, so the clips are exactly the canonical video's frames, each once.
//!
//! Times are in the canonical video's presentation time, starting at 0 (any offset the
//! container or the muxer adds is taken off).

use std::path::Path;
use std::time::Instant;

use fave_common::contract::ListedClip;
pub use fave_common::contract::ffmpeg1::{Input, NAME, Output};
use fave_common::ids::ClipId;
use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};
use fave_common::tool::{self, dir_and_name};
use futures::{StreamExt, TryStreamExt};
use tokio::process::Command;

/// More clips than this is a mistake upstream, not a video.
const MAX_CLIPS: usize = 2_000;

/// Clips uploaded at once.
const UPLOADS_IN_FLIGHT: usize = 4;

/// How far a listed boundary may be from the keyframe it names (the list's times are
/// rounded to the millisecond).
const BOUNDARY_TOLERANCE_S: f64 = 2e-3;

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
        let cuts = cuts_of(&input.clips)?;
        for clip in &input.clips {
            call.require_own_key("clips[].key", &clip.key)?;
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
        let at_keyframes = keyframes_at(&cuts, &relative)?;
        let files: Vec<std::path::PathBuf> = if cuts.is_empty() {
            vec![video.clone()]
        } else {
            let list = segment(&video, &at_keyframes, origin).await?;
            let segments = parse_segment_list(&list)?;
            if segments.len() != input.clips.len() {
                return Err(StageError::Internal(format!(
                    "ffmpeg wrote {} clips for {} listed",
                    segments.len(),
                    input.clips.len()
                )));
            }
            segments
                .iter()
                .map(|(file, _, _)| work.join(file))
                .collect()
        };
        let ffmpeg_ms = clock.elapsed().as_millis() as u64;
        // A few uploads at a time: a long video has hundreds of clips, and one after another
        // their round trips add up.
        let uploads: Vec<_> = files
            .into_iter()
            .zip(&input.clips)
            .map(|(file, clip)| (file, clip.clip.clone(), clip.key.clone()))
            .collect();
        let outputs = futures::stream::iter(uploads)
            .map(|(file, clip, key)| async move {
                ctx.storage.put_file(&key, &file, "video/mp4").await?;
                Ok::<_, StageError>((clip.to_string(), key))
            })
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(Produced {
            outputs,
            data: Output {
                clips: input.clips.len(),
                end_s: (((end - origin) * 1000.0).round() / 1000.0).max(0.0),
                ffmpeg_ms,
            },
        })
    }
}

/// Each boundary as the time of the keyframe it names (the list's is rounded to the
/// millisecond, and the muxer must be given a time just before the keyframe, never after
/// it); a boundary with no keyframe there is `invalid_media` (final).
fn keyframes_at(cuts: &[f64], keyframes: &[f64]) -> Result<Vec<f64>, StageError> {
    cuts.iter()
        .map(|&c| {
            keyframes
                .iter()
                .copied()
                .min_by(|a, b| (a - c).abs().total_cmp(&(b - c).abs()))
                .filter(|k| (k - c).abs() <= BOUNDARY_TOLERANCE_S)
                .ok_or_else(|| {
                    // The analysis foretold a keyframe here and the encode did not put one:
                    // a video whose frame times did not survive the encode.
                    StageError::InvalidMedia(format!(
                        "the canonical video has no keyframe at {c} s, where the clip list \
                         (from the analysis of the input) puts a boundary"
                    ))
                })
        })
        .collect()
}

/// The times between the clips (every clip's start but the first's); refuses a list that
/// is empty, too long, out of order, not numbered clip-0000 onwards, or with a gap.
fn cuts_of(clips: &[ListedClip]) -> Result<Vec<f64>, StageError> {
    let bad = |why: &str| Err(StageError::InvalidInput(format!("clips: {why}")));
    if clips.is_empty() || clips.len() > MAX_CLIPS {
        return bad(&format!("between 1 and {MAX_CLIPS} clips"));
    }
    for (i, clip) in clips.iter().enumerate() {
        let numbered = clip.clip == ClipId::from_index(i);
        let ordered =
            clip.start_s.is_finite() && clip.end_s.is_finite() && clip.start_s < clip.end_s;
        let joined = i == 0 && clip.start_s == 0.0 || i > 0 && clip.start_s == clips[i - 1].end_s;
        if !(numbered && ordered && joined) {
            return bad(&format!(
                "{} must be clip {i}, start where the one before ends (the first at 0) and \
                 end after it starts",
                clip.clip
            ));
        }
    }
    Ok(clips[1..].iter().map(|c| c.start_s).collect())
}

/// Presentation times of the video's keyframes, increasing, read from the packet index.
async fn keyframe_times(video: &Path) -> Result<Vec<f64>, StageError> {
    let (dir, name) = dir_and_name(video);
    let out = tool::run(
        Command::new("ffprobe")
            .args(tool::CONFINED_INPUT)
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
            .args(tool::CONFINED_INPUT)
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
            .args(["-nostdin", "-y", "-v", "error"])
            .args(tool::CONFINED_INPUT)
            .arg("-i")
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
    fn boundaries_are_cut_at_their_keyframes_own_times() {
        let keyframes = [0.0, 1.0, 2.0, 9.2075, 10.0];
        // 9.2075 s listed as 9.208: the cut is given the keyframe's time, so the muxer's
        // "first keyframe at or after" cannot skip it for the next one.
        assert_eq!(
            keyframes_at(&[1.0, 9.208], &keyframes).unwrap(),
            vec![1.0, 9.2075]
        );
        assert!(matches!(
            keyframes_at(&[9.5], &keyframes),
            Err(StageError::InvalidMedia(_))
        ));
        assert!(keyframes_at(&[1.0], &[]).is_err());
    }

    #[test]
    fn a_clip_list_must_cover_the_video_in_order() {
        let clip = |i: usize, start_s: f64, end_s: f64| ListedClip {
            clip: ClipId::from_index(i),
            start_s,
            end_s,
            key: format!("requests/r1/clips/{}/video.mp4", ClipId::from_index(i)),
        };
        let good = [
            clip(0, 0.0, 20.0),
            clip(1, 20.0, 41.001),
            clip(2, 41.001, 50.0),
        ];
        assert_eq!(cuts_of(&good).unwrap(), vec![20.0, 41.001]);
        assert_eq!(cuts_of(&good[..1]).unwrap(), Vec::<f64>::new());
        for bad in [
            vec![],
            vec![clip(0, 1.0, 20.0)],
            vec![clip(0, 0.0, 20.0), clip(1, 21.0, 30.0)],
            vec![clip(0, 0.0, 20.0), clip(2, 20.0, 30.0)],
            vec![clip(0, 0.0, 20.0), clip(1, 20.0, 20.0)],
            vec![clip(0, 0.0, f64::NAN)],
        ] {
            assert!(cuts_of(&bad).is_err(), "{bad:?}");
        }
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
