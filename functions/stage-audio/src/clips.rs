//! From proposed cuts to the clip list: each cut moved to the nearest keyframe the
//! canonical video has (stage-ffmpeg-0 forces one every second or so, and stream copy can
//! only cut at a keyframe), cuts that would leave a clip shorter than the minimum dropped.
//! The keyframe times come from stage-ffmpeg-0's analysis, which picks the frames by the
//! rule the encoder forces keyframes by, so the list is known before the video is encoded
//! and stage-ffmpeg-1 cuts it at exactly these times.

use fave_common::contract::ListedClip;
use fave_common::ids::ClipId;

/// Moves each proposed cut to the nearest keyframe (times relative to the first one) and
/// drops cuts that would leave a clip shorter than `min_clip_s`, or none at all.
pub fn snap_cuts(proposed: &[f64], keyframes: &[f64], duration: f64, min_clip_s: f64) -> Vec<f64> {
    let mut wanted: Vec<f64> = proposed
        .iter()
        .copied()
        .filter(|t| t.is_finite() && *t > 0.0 && *t < duration)
        .collect();
    wanted.sort_by(f64::total_cmp);
    let mut after_start: Vec<f64> = keyframes.iter().copied().filter(|k| *k > 0.0).collect();
    after_start.sort_by(f64::total_cmp);
    let min = min_clip_s.max(1e-3);
    let mut cuts: Vec<f64> = Vec::new();
    for t in wanted {
        // The nearest of the keyframes on either side of t.
        let i = after_start.partition_point(|k| *k < t);
        let Some(k) = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter_map(|j| after_start.get(j).copied())
            .min_by(|a, b| (a - t).abs().total_cmp(&(b - t).abs()))
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

/// The clips between `cuts` (already on keyframes), from 0 to `duration`, each named by
/// `key` where its video is to be; times to the millisecond.
pub fn clips_between(
    cuts: &[f64],
    duration: f64,
    key: impl Fn(&ClipId) -> String,
) -> Vec<ListedClip> {
    let bounds: Vec<f64> = std::iter::once(0.0)
        .chain(cuts.iter().copied())
        .chain(std::iter::once(duration))
        .collect();
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, edge)| {
            let clip = ClipId::from_index(i);
            ListedClip {
                key: key(&clip),
                clip,
                start_s: round_ms(edge[0]),
                end_s: round_ms(edge[1]),
            }
        })
        .collect()
}

fn round_ms(t: f64) -> f64 {
    (t.max(0.0) * 1000.0).round() / 1000.0
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
    fn clips_run_from_cut_to_cut_and_cover_the_video() {
        let key = |c: &ClipId| format!("k/{c}");
        let clips = clips_between(&[1.001, 20.0200001], 30.5, key);
        let spans: Vec<_> = clips.iter().map(|c| (c.start_s, c.end_s)).collect();
        assert_eq!(spans, vec![(0.0, 1.001), (1.001, 20.02), (20.02, 30.5)]);
        assert_eq!(clips[2].key, "k/clip-0002");
        let one = clips_between(&[], 7.25, key);
        assert_eq!((one.len(), one[0].start_s, one[0].end_s), (1, 0.0, 7.25));
    }
}
