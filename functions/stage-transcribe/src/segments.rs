//! From one window's decoded tokens to timed segments and the next window's start, as
//! `whisper/transcribe.py` does it.
//!
//! With timestamps on, Whisper writes `<|t0|> text <|t1|><|t1|> text <|t2|>…`: each segment's
//! text between its start and end time tokens (times in 0.02 s steps from the window's start).
//! When the output ends on a single timestamp, every segment is complete and the next window
//! starts after this one's audio; otherwise the last segment was cut off by the window's end,
//! and the next window starts at the last complete segment's end, so that speech is decoded
//! again whole. Output without a pair of consecutive timestamps is one segment over the window.

use crate::mel::{HOP, SAMPLE_RATE};

/// The prompt's only token: English-only models take no language or task token, and leaving
/// out `<|notimestamps|>` asks for timestamps.
pub const SOT: &str = "<|startoftranscript|>";

/// Seconds per timestamp step.
const TIME_PRECISION: f64 = 0.02;
/// Spectrogram frames per timestamp step.
const FRAMES_PER_STEP: usize = 2;

/// The ids of the special tokens a transcript is read by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// `<|0.00|>`; every id from here up is a timestamp.
    timestamp_begin: usize,
    /// `<|30.00|>`, the last timestamp.
    timestamp_end: usize,
}

impl Tokens {
    /// Reads the special ids from the model's `vocabulary.txt` (one token per line, by id).
    pub fn from_vocabulary(text: &str) -> Result<Self, String> {
        let id = |token: &str| {
            text.lines()
                .position(|l| l == token)
                .ok_or_else(|| format!("vocabulary.txt has no {token}"))
        };
        let no_timestamps = id("<|notimestamps|>")?;
        let timestamp_begin = id("<|0.00|>")?;
        let timestamp_end = id("<|30.00|>")?;
        id(SOT)?;
        if timestamp_begin != no_timestamps + 1 || timestamp_end != timestamp_begin + 1500 {
            return Err("vocabulary.txt's timestamp tokens are not Whisper's".into());
        }
        Ok(Self {
            timestamp_begin,
            timestamp_end,
        })
    }

    fn timestamp(&self, id: usize) -> Option<usize> {
        (self.timestamp_begin..=self.timestamp_end)
            .contains(&id)
            .then(|| id - self.timestamp_begin)
    }
}

/// One segment of a window: times from the window's start, and the positions of its text
/// tokens in the decoded sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSegment {
    pub start_s: f64,
    pub end_s: f64,
    pub tokens: Vec<usize>,
}

/// What a window's tokens say.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub segments: Vec<WindowSegment>,
    /// Spectrogram frames to move on by.
    pub advance_frames: usize,
}

impl Window {
    /// Reads the decoded `ids` of a window holding `frames` frames of audio.
    pub fn read(tokens: &Tokens, ids: &[usize], frames: usize) -> Self {
        let window_s = (frames * HOP) as f64 / f64::from(SAMPLE_RATE);
        let step = |i: usize| tokens.timestamp(ids[i]);
        let is_ts: Vec<bool> = (0..ids.len()).map(|i| step(i).is_some()).collect();
        let text_in = |range: std::ops::Range<usize>| -> Vec<usize> {
            range.filter(|&i| !is_ts[i]).collect()
        };
        let n = ids.len();
        let single_timestamp_ending = n >= 2 && !is_ts[n - 2] && is_ts[n - 1];
        let mut slices: Vec<usize> = (1..n).filter(|&i| is_ts[i - 1] && is_ts[i]).collect();
        if slices.is_empty() {
            // No segment boundary: the whole window is one segment, ending at the closing
            // timestamp when the output ends on one, else with the window.
            let end_s = if single_timestamp_ending {
                step(n - 1).map_or(window_s, |s| s as f64 * TIME_PRECISION)
            } else {
                window_s
            };
            let start_s = (0..n)
                .find_map(step)
                .map_or(0.0, |s| s as f64 * TIME_PRECISION);
            let text = text_in(0..n);
            return Self {
                segments: if text.is_empty() {
                    Vec::new()
                } else {
                    vec![WindowSegment {
                        start_s: start_s.min(end_s),
                        end_s: end_s.min(window_s),
                        tokens: text,
                    }]
                },
                advance_frames: frames,
            };
        }
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut segments = Vec::with_capacity(slices.len());
        let mut last = 0;
        for &end in &slices {
            let (first_ts, last_ts) = (step(last), step(end - 1));
            let text = text_in(last..end);
            if let (Some(a), Some(b), false) = (first_ts, last_ts, text.is_empty()) {
                let start_s = (a as f64 * TIME_PRECISION).min(window_s);
                segments.push(WindowSegment {
                    start_s,
                    end_s: (b as f64 * TIME_PRECISION).clamp(start_s, window_s),
                    tokens: text,
                });
            }
            last = end;
        }
        let advance_frames = if single_timestamp_ending {
            frames
        } else {
            // The last complete segment's end: what follows is decoded again, whole.
            step(last - 1).map_or(frames, |s| (s * FRAMES_PER_STEP).min(frames))
        };
        Self {
            segments,
            advance_frames,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tiny.en's ids: `<|notimestamps|>` 50362, `<|0.00|>` 50363.
    fn tokens() -> Tokens {
        Tokens {
            timestamp_begin: 50363,
            timestamp_end: 50363 + 1500,
        }
    }

    fn ts(seconds: f64) -> usize {
        50363 + (seconds / TIME_PRECISION).round() as usize
    }

    #[test]
    fn the_vocabulary_gives_the_special_ids() {
        let mut lines: Vec<String> = (0..50257).map(|i| format!("t{i}")).collect();
        lines.push(SOT.into());
        lines.extend((0..104).map(|i| format!("<|x{i}|>")));
        lines.push("<|notimestamps|>".into());
        lines.extend((0..=1500).map(|i| format!("<|{:.2}|>", i as f64 * 0.02)));
        assert_eq!(Tokens::from_vocabulary(&lines.join("\n")), Ok(tokens()));
        assert!(Tokens::from_vocabulary("a\nb").is_err());
    }

    #[test]
    fn complete_segments_and_a_single_timestamp_ending_move_on_a_whole_window() {
        // <|0.00|> a b <|2.40|><|2.40|> c <|5.00|>
        let ids = [ts(0.0), 1, 2, ts(2.4), ts(2.4), 3, ts(5.0)];
        let w = Window::read(&tokens(), &ids, 1000);
        assert_eq!(
            w.segments,
            vec![
                WindowSegment {
                    start_s: 0.0,
                    end_s: 2.4,
                    tokens: vec![1, 2]
                },
                WindowSegment {
                    start_s: 2.4,
                    end_s: 5.0,
                    tokens: vec![5]
                },
            ]
        );
        assert_eq!(w.advance_frames, 1000);
    }

    #[test]
    fn a_cut_off_segment_is_decoded_again_from_the_last_complete_end() {
        // <|0.00|> a <|12.00|><|12.00|> b… (the window ended mid-sentence)
        let ids = [ts(0.0), 1, ts(12.0), ts(12.0), 2, 3];
        let w = Window::read(&tokens(), &ids, 3000);
        assert_eq!(w.segments.len(), 1);
        assert_eq!((w.segments[0].start_s, w.segments[0].end_s), (0.0, 12.0));
        assert_eq!(w.advance_frames, 1200);
    }

    #[test]
    fn output_without_a_boundary_is_one_segment() {
        let w = Window::read(&tokens(), &[ts(0.5), 1, 2, 3], 800);
        assert_eq!(w.segments.len(), 1);
        assert_eq!((w.segments[0].start_s, w.segments[0].end_s), (0.5, 8.0));
        assert_eq!(w.segments[0].tokens, vec![1, 2, 3]);
        assert_eq!(w.advance_frames, 800);
        // Nothing said.
        let w = Window::read(&tokens(), &[], 800);
        assert!(w.segments.is_empty());
        assert_eq!(w.advance_frames, 800);
        // Times never pass the window's audio.
        let w = Window::read(&tokens(), &[ts(0.0), 1, ts(9.0)], 500);
        assert_eq!((w.segments[0].start_s, w.segments[0].end_s), (0.0, 5.0));
    }
}
