//! Clip-cut proposal from audio features and video scene changes.
//!
//! # Rule
//!
//! Candidate cut points are scored:
//!
//! | candidate                                                  | score            |
//! |------------------------------------------------------------|------------------|
//! | scene change inside silence (outside every non-silent interval) | 4           |
//! | midpoint of a silence gap between two non-silent intervals | 2 + min(gap s, 1) |
//! | scene change while sound is playing                        | 1.5              |
//! | onset                                                      | its normalised onset strength, in (0, 1] |
//!
//! so a visual cut that is also quiet beats a pause, a pause beats a visual
//! cut that would chop sound, and onsets (the start of a new sound event)
//! are the last resort.
//!
//! Cuts are then chosen greedily from the start. With the current clip
//! starting at `s`, the next cut is the best-scoring candidate (earliest on
//! ties) in `[s + min, min(s + max, duration − min)]`, so that neither this
//! clip nor the remainder is shorter than `min`. If that window holds no
//! candidate, the cut is at its upper end (fewest clips). Once the remainder
//! is at most `max`, no more cuts are made.
//!
//! `max` is a hard limit and `min` a best effort: when both cannot hold (the
//! remainder is longer than `max` but shorter than `2·min`, possible only if
//! `max < 2·min`), the cut goes in `[duration − max, s + max]` (best
//! candidate, else its middle), so no clip exceeds `max`.

use crate::AudioFeatures;

/// Guards against "cuts" that would not advance, e.g. a candidate exactly at
/// the clip start when `min_len_s` is 0.
const EPS: f64 = 1e-6;

/// Score of a scene change that falls in silence.
const SCENE_IN_SILENCE: f64 = 4.0;
/// Base score of a silence-gap midpoint (plus up to 1 for the gap length).
const SILENCE_GAP: f64 = 2.0;
/// Score of a scene change while sound is playing.
const SCENE_IN_SOUND: f64 = 1.5;

/// Proposes clip cut times (seconds, strictly increasing, inside
/// `(0, duration_s)`) combining the silence gaps and onsets in `features`
/// with externally detected video `scene_changes` (seconds, any order;
/// non-finite or out-of-range values are ignored).
///
/// Every resulting clip is at most `max_len_s` long and, whenever the
/// lengths allow it, at least `min_len_s` long. See the module docs for the
/// scoring and selection rule. Returns no cuts if `duration_s <= max_len_s`
/// or the arguments are not positive finite numbers.
pub fn propose_cuts(
    features: &AudioFeatures,
    scene_changes: &[f64],
    duration_s: f64,
    min_len_s: f64,
    max_len_s: f64,
) -> Vec<f64> {
    if !(duration_s.is_finite() && max_len_s.is_finite() && duration_s > 0.0 && max_len_s > 0.0) {
        return Vec::new();
    }
    let max = max_len_s;
    let min = if min_len_s.is_finite() {
        min_len_s.clamp(0.0, max)
    } else {
        0.0
    };
    let candidates = candidates(features, scene_changes, duration_s);

    let mut cuts = Vec::new();
    let mut s = 0.0;
    while duration_s - s > max {
        let (lo, hi) = (s + min, (s + max).min(duration_s - min));
        let cut = if lo <= hi {
            best_in(&candidates, lo.max(s + EPS), hi).unwrap_or(hi)
        } else {
            // min and max cannot both hold: keep both pieces within max.
            let (lo, hi) = (duration_s - max, s + max);
            best_in(&candidates, lo.max(s + EPS), hi).unwrap_or(0.5 * (lo + hi))
        };
        cuts.push(cut);
        s = cut;
    }
    cuts
}

/// Highest-scoring candidate time in `[lo, hi]`, earliest on ties.
/// `candidates` is sorted by time.
fn best_in(candidates: &[(f64, f64)], lo: f64, hi: f64) -> Option<f64> {
    let from = candidates.partition_point(|&(t, _)| t < lo);
    candidates[from..]
        .iter()
        .take_while(|&&(t, _)| t <= hi)
        .fold(None, |best: Option<(f64, f64)>, &(t, sc)| match best {
            Some((_, bs)) if bs >= sc => best,
            _ => Some((t, sc)),
        })
        .map(|(t, _)| t)
}

/// All scored candidates inside `(0, duration)`, sorted by time.
fn candidates(features: &AudioFeatures, scene_changes: &[f64], duration: f64) -> Vec<(f64, f64)> {
    let inside = |t: f64| t.is_finite() && t > 0.0 && t < duration;
    let in_sound = |t: f64| {
        features
            .non_silent
            .iter()
            .any(|iv| t >= iv.start_s && t < iv.end_s)
    };
    let mut out = Vec::new();

    for &t in scene_changes.iter().filter(|&&t| inside(t)) {
        let score = if in_sound(t) {
            SCENE_IN_SOUND
        } else {
            SCENE_IN_SILENCE
        };
        out.push((t, score));
    }

    for pair in features.non_silent.windows(2) {
        let (a, b) = (pair[0].end_s, pair[1].start_s);
        let mid = 0.5 * (a + b);
        if b > a && inside(mid) {
            out.push((mid, SILENCE_GAP + (b - a).min(1.0)));
        }
    }

    let env_max = features
        .onset_strength
        .iter()
        .copied()
        .fold(0.0f32, f32::max);
    let sr_per_hop = f64::from(features.sample_rate) / crate::HOP_LENGTH as f64;
    for &t in features.onsets.iter().filter(|&&t| inside(t)) {
        let frame = (t * sr_per_hop).round() as usize;
        let strength = features.onset_strength.get(frame).copied().unwrap_or(0.0);
        // Normalised like onset_detect's envelope; floor keeps weak onsets
        // above "no candidate" without letting them compete with pauses.
        let score = if env_max > 0.0 {
            f64::from(strength / env_max)
        } else {
            0.0
        };
        out.push((t, score.clamp(0.05, 1.0)));
    }

    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Interval;

    fn features(non_silent: &[(f64, f64)], onsets: &[f64]) -> AudioFeatures {
        let sr = 22050;
        let duration = 100.0;
        let n_frames = (duration * sr as f64 / 512.0) as usize + 1;
        let mut env = vec![0.1f32; n_frames];
        for &t in onsets {
            env[(t * sr as f64 / 512.0).round() as usize] = 1.0;
        }
        AudioFeatures {
            sample_rate: sr,
            n_samples: (duration * sr as f64) as usize,
            rms: vec![0.0; n_frames],
            zero_crossing_rate: vec![0.0; n_frames],
            spectral_centroid: vec![0.0; n_frames],
            onset_strength: env,
            onsets: onsets.to_vec(),
            non_silent: non_silent
                .iter()
                .map(|&(start_s, end_s)| Interval { start_s, end_s })
                .collect(),
        }
    }

    fn clip_lengths(cuts: &[f64], duration: f64) -> Vec<f64> {
        let mut edges = vec![0.0];
        edges.extend_from_slice(cuts);
        edges.push(duration);
        edges.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn short_input_needs_no_cut() {
        let f = features(&[(0.0, 10.0)], &[2.0, 5.0]);
        assert!(propose_cuts(&f, &[4.0], 10.0, 2.0, 10.0).is_empty());
    }

    #[test]
    fn prefers_silence_gap_over_onsets() {
        // Speech 0-9 s and 10-20 s; strong onsets at 6 s and 12 s.
        let f = features(&[(0.0, 9.0), (10.0, 20.0)], &[6.0, 12.0]);
        let cuts = propose_cuts(&f, &[], 20.0, 3.0, 15.0);
        assert_eq!(cuts, vec![9.5]);
    }

    #[test]
    fn scene_change_in_silence_beats_everything() {
        let f = features(&[(0.0, 8.0), (8.5, 12.0), (12.3, 20.0)], &[5.0]);
        // Scene changes at 5.5 (during speech) and 12.1 (in the 12.0-12.3 gap).
        let cuts = propose_cuts(&f, &[5.5, 12.1], 20.0, 3.0, 15.0);
        assert_eq!(cuts, vec![12.1]);
    }

    #[test]
    fn scene_change_during_sound_beats_onset_but_not_pause() {
        let f = features(&[(0.0, 20.0)], &[6.0]);
        assert_eq!(propose_cuts(&f, &[7.0], 20.0, 3.0, 15.0), vec![7.0]);
        let f = features(&[(0.0, 9.0), (9.2, 20.0)], &[6.0]);
        assert_eq!(propose_cuts(&f, &[7.0], 20.0, 3.0, 15.0), vec![9.1]);
    }

    #[test]
    fn falls_back_to_max_length_without_candidates() {
        let f = features(&[(0.0, 100.0)], &[]);
        let cuts = propose_cuts(&f, &[], 100.0, 5.0, 30.0);
        assert_eq!(cuts, vec![30.0, 60.0, 90.0]);
        assert!(
            clip_lengths(&cuts, 100.0)
                .iter()
                .all(|&l| (5.0..=30.0).contains(&l))
        );
        // The last cut is pulled back so the final clip is not below min.
        assert_eq!(
            propose_cuts(&f, &[], 100.0, 20.0, 30.0),
            vec![30.0, 60.0, 80.0]
        );
    }

    #[test]
    fn ignores_candidates_outside_window_and_range() {
        let f = features(&[(0.0, 50.0)], &[]);
        // 1.0 is before min, NaN/negative/beyond-end are junk, 12.0 is valid.
        let cuts = propose_cuts(&f, &[1.0, f64::NAN, -3.0, 80.0, 12.0], 50.0, 5.0, 30.0);
        assert_eq!(cuts[0], 12.0);
        assert!(
            clip_lengths(&cuts, 50.0)
                .iter()
                .all(|&l| (5.0..=30.0).contains(&l))
        );
    }

    #[test]
    fn lengths_respected_with_dense_candidates() {
        let onsets: Vec<f64> = (1..99).map(|i| i as f64 * 0.97).collect();
        let gaps: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 10.0, i as f64 * 10.0 + 9.3))
            .collect();
        let f = features(&gaps, &onsets);
        let scenes = [3.3, 17.0, 44.4, 71.2];
        let cuts = propose_cuts(&f, &scenes, 99.3, 4.0, 12.0);
        assert!(cuts.windows(2).all(|w| w[0] < w[1]));
        assert!(cuts.iter().all(|&c| c > 0.0 && c < 99.3));
        let lens = clip_lengths(&cuts, 99.3);
        assert!(
            lens.iter()
                .all(|&l| (4.0 - 1e-9..=12.0 + 1e-9).contains(&l)),
            "{lens:?}"
        );
    }

    #[test]
    fn infeasible_min_keeps_max_hard() {
        // max < 2·min and 13 s cannot be split into clips of 7-10 s.
        let f = features(&[(0.0, 13.0)], &[]);
        let cuts = propose_cuts(&f, &[], 13.0, 7.0, 10.0);
        assert_eq!(cuts.len(), 1);
        assert!(clip_lengths(&cuts, 13.0).iter().all(|&l| l <= 10.0));
    }

    #[test]
    fn degenerate_arguments() {
        let f = features(&[(0.0, 10.0)], &[]);
        assert!(propose_cuts(&f, &[], f64::NAN, 1.0, 2.0).is_empty());
        assert!(propose_cuts(&f, &[], 10.0, 1.0, 0.0).is_empty());
        // min > max is clamped to max; max stays a hard limit.
        let cuts = propose_cuts(&f, &[], 10.0, 8.0, 4.0);
        assert!(clip_lengths(&cuts, 10.0).iter().all(|&l| l <= 4.0));
        // min = 0 still advances.
        assert_eq!(propose_cuts(&f, &[], 10.0, 0.0, 4.0), vec![4.0, 8.0]);
    }
}
