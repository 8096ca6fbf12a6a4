//! The difference gate before the detector: a sampled frame that barely differs from the
//! last frame the detector looked at is not looked at again, and that frame's detections
//! are carried forward to it, marked as carried (NoScope's difference detector; the
//! `interval` of NVIDIA DeepStream's detector, made to follow the picture). A static
//! camera's near-duplicate frames then cost a thumbnail each instead of a network pass.
//!
//! The decision is made on small grayscale thumbnails, for the whole clip, before any
//! detection, so the frames that are looked at are still looked at side by side. Two
//! thumbnails differ by the share of their pixels that changed by more than
//! [`PIXEL_DELTA`]; a frame is looked at when that share is over the threshold, and after
//! `max_carried` frames carried in a row whatever it is. A clip's first frame is always
//! looked at.

use image::RgbImage;
use image::imageops::{self, FilterType};

use fave_common::config::{ConfigError, parse, parse_bool};

/// A thumbnail's size: 64 × 36 covers a 16:9 frame; other shapes are squeezed, which a
/// comparison of two frames of one video does not mind.
const THUMB_W: u32 = 64;
const THUMB_H: u32 = 36;

/// How much (of 255) a thumbnail pixel must change to count as changed: above the noise of
/// a JPEG re-encode and of sensor grain.
pub const PIXEL_DELTA: u8 = 24;

/// When the detector may skip a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    /// A frame whose share of changed thumbnail pixels is at most this is carried.
    pub threshold: f32,
    /// At most this many frames in a row are carried.
    pub max_carried: usize,
}

impl Default for Gate {
    /// Chosen on the sample videos at one frame a second (the gate's test): at 5 % it spares
    /// the detector 42 % of vtest.avi's frames with every clip's labels and answer as without
    /// it; at 8 % it spares 79 % but two clips' best scores move by more than 0.05.
    fn default() -> Self {
        Self {
            threshold: 0.05,
            max_carried: 4,
        }
    }
}

impl Gate {
    /// The gate as configured: `FAVE_DETECT_GATE` (on unless `false`),
    /// `FAVE_DETECT_GATE_THRESHOLD` (a share of pixels, 0.05) and
    /// `FAVE_DETECT_GATE_MAX_CARRIED` (4). `None` when it is switched off.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let off = lookup("FAVE_DETECT_GATE").is_some() && !parse_bool(lookup, "FAVE_DETECT_GATE")?;
        if off {
            return Ok(None);
        }
        let default = Self::default();
        let threshold: f32 = parse(lookup, "FAVE_DETECT_GATE_THRESHOLD", default.threshold)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(ConfigError {
                var: "FAVE_DETECT_GATE_THRESHOLD",
                reason: format!("{threshold} is not a share within 0..1"),
            });
        }
        let max_carried = parse(lookup, "FAVE_DETECT_GATE_MAX_CARRIED", default.max_carried)?;
        Ok(Some(Self {
            threshold,
            max_carried,
        }))
    }

    /// Which of a clip's frames (by their thumbnails, in order) the detector looks at.
    pub fn plan(&self, thumbs: &[Thumb]) -> Vec<bool> {
        let mut decider = self.decider();
        thumbs.iter().map(|t| decider.look(t)).collect()
    }

    /// Decides frame after frame, in order, as they arrive.
    pub fn decider(self) -> Decider {
        Decider {
            gate: self,
            looked_at: None,
            carried: 0,
        }
    }
}

/// The gate's decisions over one clip's frames, in order.
#[derive(Debug)]
pub struct Decider {
    gate: Gate,
    /// The last frame the detector looks at.
    looked_at: Option<Thumb>,
    carried: usize,
}

impl Decider {
    /// Whether the detector looks at this frame (the next of the clip).
    pub fn look(&mut self, thumb: &Thumb) -> bool {
        let look = match &self.looked_at {
            None => true,
            Some(last) => {
                self.carried >= self.gate.max_carried || last.changed(thumb) > self.gate.threshold
            }
        };
        if look {
            self.looked_at = Some(thumb.clone());
            self.carried = 0;
        } else {
            self.carried += 1;
        }
        look
    }
}

/// A frame made small and gray, to compare with another, and the frame's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumb {
    pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl Thumb {
    pub fn of(img: &RgbImage) -> Self {
        let gray = imageops::grayscale(img);
        let small = imageops::resize(&gray, THUMB_W, THUMB_H, FilterType::Triangle);
        Self {
            pixels: small.into_raw(),
            width: img.width(),
            height: img.height(),
        }
    }

    /// The share of pixels that changed by more than [`PIXEL_DELTA`].
    pub fn changed(&self, other: &Thumb) -> f32 {
        if self.pixels.len() != other.pixels.len() || self.pixels.is_empty() {
            return 1.0;
        }
        let changed = self
            .pixels
            .iter()
            .zip(&other.pixels)
            .filter(|(a, b)| a.abs_diff(**b) > PIXEL_DELTA)
            .count();
        changed as f32 / self.pixels.len() as f32
    }
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    fn frame(square_at: u32) -> Thumb {
        // A gray 640×360 frame with a white 160×160 square.
        let img = RgbImage::from_fn(640, 360, |x, y| {
            let inside = (square_at..square_at + 160).contains(&x) && (100..260).contains(&y);
            if inside {
                Rgb([250, 250, 250])
            } else {
                Rgb([60, 60, 60])
            }
        });
        Thumb::of(&img)
    }

    #[test]
    fn a_frame_like_the_last_one_looked_at_is_carried_and_a_change_is_looked_at() {
        let still = frame(100);
        assert_eq!(still.changed(&frame(100)), 0.0);
        let moved = frame(400);
        assert!(still.changed(&moved) > 0.1, "{}", still.changed(&moved));
        let gate = Gate::default();
        let thumbs = [frame(100), frame(100), frame(100), frame(400), frame(400)];
        assert_eq!(gate.plan(&thumbs), [true, false, false, true, false]);
    }

    #[test]
    fn no_more_than_max_carried_in_a_row_and_the_last_looked_at_is_the_reference() {
        let gate = Gate {
            threshold: 0.01,
            max_carried: 2,
        };
        let same = vec![frame(100); 7];
        assert_eq!(
            gate.plan(&same),
            [true, false, false, true, false, false, true]
        );
        // A slow drift: each frame near the one before, but compared with the last frame
        // looked at, so the drift adds up and is looked at.
        let drift: Vec<Thumb> = (0..6).map(|i| frame(100 + i * 6)).collect();
        let (step, three) = (drift[0].changed(&drift[1]), drift[0].changed(&drift[3]));
        assert!(step < three, "{step} {three}");
        let plan = Gate {
            threshold: (step + three) / 2.0,
            max_carried: 100,
        }
        .plan(&drift);
        assert!(!plan[1], "one step is under the threshold: {plan:?}");
        assert!(plan.iter().skip(2).any(|&look| look), "{plan:?}");
    }

    #[test]
    fn the_gate_is_configured_or_switched_off() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(Gate::from_lookup(&lookup(&[])), Ok(Some(Gate::default())));
        assert_eq!(
            Gate::from_lookup(&lookup(&[("FAVE_DETECT_GATE", "false")])),
            Ok(None)
        );
        assert_eq!(
            Gate::from_lookup(&lookup(&[
                ("FAVE_DETECT_GATE", "true"),
                ("FAVE_DETECT_GATE_THRESHOLD", "0.05"),
                ("FAVE_DETECT_GATE_MAX_CARRIED", "9"),
            ])),
            Ok(Some(Gate {
                threshold: 0.05,
                max_carried: 9
            }))
        );
        let bad = Gate::from_lookup(&lookup(&[("FAVE_DETECT_GATE_THRESHOLD", "2")]));
        assert_eq!(bad.unwrap_err().var, "FAVE_DETECT_GATE_THRESHOLD");
    }
}
