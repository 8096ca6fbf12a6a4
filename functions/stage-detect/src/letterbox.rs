//! Letterboxing: fit an image of any size into the fixed network input while
//! keeping its aspect ratio, and map boxes back afterwards.
//!
//! The geometry (integer sizes, centred placement, 0.5 grey padding) follows
//! Darknet's `letterbox_image` / `correct_yolo_boxes` so boxes land where
//! Darknet would put them.  The resampling filter does not: Darknet's
//! align-corners bilinear aliases badly when shrinking (e.g. 768→416); the
//! antialiased triangle filter of the `image` crate scored closer to the
//! reference detections (car 0.81 vs 0.76 on the vtest frame).

use image::RgbImage;
use image::imageops::{self, FilterType};

/// Grey level Darknet pads the letterbox with (in the 0..1 input scale).
const PAD_VALUE: f32 = 0.5;

/// Where an image of `src_w`×`src_h` sits inside a `net_w`×`net_h` input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Letterbox {
    pub src_w: u32,
    pub src_h: u32,
    /// Size of the resized image inside the network input.
    pub new_w: u32,
    pub new_h: u32,
    /// Offset of the resized image's top-left corner in the network input.
    pub pad_x: u32,
    pub pad_y: u32,
}

impl Letterbox {
    /// Darknet's geometry: scale so the limiting side fills the input
    /// exactly, integer sizes, centred (padding split with integer division).
    pub fn new(src_w: u32, src_h: u32, net_w: u32, net_h: u32) -> Self {
        let (sw, sh) = (u64::from(src_w.max(1)), u64::from(src_h.max(1)));
        let (nw, nh) = (u64::from(net_w), u64::from(net_h));
        // Compare net_w/src_w < net_h/src_h without floats.
        let (new_w, new_h) = if nw * sh < nh * sw {
            (nw, sh * nw / sw)
        } else {
            (sw * nh / sh, nh)
        };
        // Extreme aspect ratios could round a side to 0; keep at least 1 pixel.
        let (new_w, new_h) = (new_w.max(1) as u32, new_h.max(1) as u32);
        Letterbox {
            src_w,
            src_h,
            new_w,
            new_h,
            pad_x: (net_w - new_w) / 2,
            pad_y: (net_h - new_h) / 2,
        }
    }

    /// Map a box `[x1, y1, x2, y2]` from network-input pixels to source-image
    /// pixels, clipped to the image.
    pub fn source_box(&self, b: [f32; 4]) -> [f32; 4] {
        let sx = self.src_w as f32 / self.new_w as f32;
        let sy = self.src_h as f32 / self.new_h as f32;
        let (px, py) = (self.pad_x as f32, self.pad_y as f32);
        let (w, h) = (self.src_w as f32, self.src_h as f32);
        [
            ((b[0] - px) * sx).clamp(0.0, w),
            ((b[1] - py) * sy).clamp(0.0, h),
            ((b[2] - px) * sx).clamp(0.0, w),
            ((b[3] - py) * sy).clamp(0.0, h),
        ]
    }

    /// Planar RGB input in 0..1, `3 × net_h × net_w`, as the network wants it.
    pub fn render(&self, img: &RgbImage, net_w: usize, net_h: usize) -> Vec<f32> {
        let plane = net_w * net_h;
        let mut out = vec![PAD_VALUE; 3 * plane];
        // Skip resampling when the image already has the target size.
        let resized;
        let src = if img.dimensions() == (self.new_w, self.new_h) {
            img
        } else {
            resized = imageops::resize(img, self.new_w, self.new_h, FilterType::Triangle);
            &resized
        };
        let (px, py) = (self.pad_x as usize, self.pad_y as usize);
        for (x, y, p) in src.enumerate_pixels() {
            let idx = (y as usize + py) * net_w + x as usize + px;
            for c in 0..3 {
                out[c * plane + idx] = f32::from(p[c]) / 255.0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landscape_geometry_matches_darknet() {
        // 768x576 (vtest.avi) into 416: 416x312, 52 px grey bands top and bottom.
        let lb = Letterbox::new(768, 576, 416, 416);
        assert_eq!((lb.new_w, lb.new_h, lb.pad_x, lb.pad_y), (416, 312, 0, 52));
        // Portrait: 300x600 -> 208x416 centred horizontally.
        let lb = Letterbox::new(300, 600, 416, 416);
        assert_eq!((lb.new_w, lb.new_h, lb.pad_x, lb.pad_y), (208, 416, 104, 0));
    }

    #[test]
    fn mapping_back_inverts_the_letterbox() {
        let lb = Letterbox::new(768, 576, 416, 416);
        // The full resized region maps to the full image.
        let b = lb.source_box([0.0, 52.0, 416.0, 364.0]);
        for (got, want) in b.iter().zip([0.0, 0.0, 768.0, 576.0]) {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
        // An interior point: source (384, 288) is at net (208, 52 + 156).
        let b = lb.source_box([208.0, 208.0, 208.0, 208.0]);
        assert!(
            (b[0] - 384.0).abs() < 1e-3 && (b[1] - 288.0).abs() < 1e-3,
            "{b:?}"
        );
        // Boxes reaching into the grey band are clipped to the image.
        let b = lb.source_box([-10.0, 0.0, 500.0, 416.0]);
        assert_eq!(b, [0.0, 0.0, 768.0, 576.0]);
    }

    #[test]
    fn render_pads_with_grey_and_places_pixels() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([255, 0, 51]));
        let lb = Letterbox::new(4, 2, 8, 8);
        assert_eq!((lb.new_w, lb.new_h, lb.pad_x, lb.pad_y), (8, 4, 0, 2));
        let t = lb.render(&img, 8, 8);
        assert_eq!(t.len(), 3 * 64);
        assert_eq!(t[0], PAD_VALUE); // top band, R plane
        assert_eq!(t[2 * 8 + 3], 1.0); // row 2 is inside the image: R = 255
        assert_eq!(t[64 + 2 * 8 + 3], 0.0); // G plane
        assert!((t[128 + 5 * 8 + 7] - 0.2).abs() < 1e-6); // B = 51/255, last image row
        assert_eq!(t[128 + 6 * 8], PAD_VALUE); // bottom band
    }
}
