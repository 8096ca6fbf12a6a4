//! Non-silent intervals, mirroring `librosa.effects.split(y, top_db=60,
//! frame_length=2048, hop_length=512)` with its default `ref=np.max`.

use crate::Interval;

/// Frames quieter than this many dB below the loudest frame are silent.
const TOP_DB: f64 = 60.0;

/// Splits the signal into non-silent intervals from its per-frame RMS.
///
/// librosa: `db = amplitude_to_db(rms, ref=np.max, top_db=None)`, i.e.
/// `10·log10(max(1e-10, rms²)) − 10·log10(max(1e-10, max_rms²))`; a frame is
/// non-silent when `db > −top_db`. Runs of non-silent frames `[a, b)` become
/// sample intervals `[a·hop, min(b·hop, n))`.
pub(crate) fn non_silent_intervals(
    rms: &[f32],
    n_samples: usize,
    sr: u32,
    hop: usize,
) -> Vec<Interval> {
    let db = |r: f32| {
        let p = f64::from(r) * f64::from(r);
        10.0 * p.max(1e-10).log10()
    };
    let ref_db = db(rms.iter().copied().fold(0.0, f32::max));
    let loud: Vec<bool> = rms.iter().map(|&r| db(r) - ref_db > -TOP_DB).collect();

    let to_s = |frame: usize| (frame * hop).min(n_samples) as f64 / f64::from(sr);
    let mut out = Vec::new();
    let mut start = None;
    for (i, &l) in loud.iter().chain(std::iter::once(&false)).enumerate() {
        match (l, start) {
            (true, None) => start = Some(i),
            (false, Some(a)) => {
                out.push(Interval {
                    start_s: to_s(a),
                    end_s: to_s(i),
                });
                start = None;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_relative_level() {
        // Frames 0-1 silent (−80 dB), 2-3 loud, 4 at −59 dB (kept), 5 silent.
        let rms = [1e-4, 0.0, 1.0, 0.5, 1.2e-3, 1e-4];
        let iv = non_silent_intervals(&rms, 5 * 512 + 100, 22050, 512);
        assert_eq!(iv.len(), 1);
        assert_eq!(iv[0].start_s, 1024.0 / 22050.0);
        assert_eq!(iv[0].end_s, 2560.0 / 22050.0);
    }

    #[test]
    fn last_interval_is_clipped_to_signal_length() {
        let rms = [1.0, 1.0, 1.0];
        let iv = non_silent_intervals(&rms, 1100, 22050, 512);
        assert_eq!(iv.len(), 1);
        assert_eq!(iv[0].start_s, 0.0);
        assert_eq!(iv[0].end_s, 1100.0 / 22050.0);
    }
}
