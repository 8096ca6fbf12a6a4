//! Turning raw YOLO head outputs into scored boxes, and non-maximum suppression.

use crate::Detection;
use crate::cfg::HeadSpec;

/// A box before labels and image coordinates are attached.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    pub class_id: usize,
    pub score: f32,
    /// x1, y1, x2, y2 in network-input pixels.
    pub bbox: [f32; 4],
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Decode one YOLOv3 head.
///
/// `out` is the raw `1 × A·(5+C) × gh × gw` tensor (NCHW, contiguous): for
/// anchor `a`, channel `a·(5+C) + k` holds tx, ty, tw, th, objectness, then the
/// C class logits.  As in Darknet's yolo layer, x, y, objectness and classes
/// go through a sigmoid, w and h are `exp(t) × anchor`, and a box yields one
/// candidate per class whose `objectness × class probability` exceeds
/// `threshold` (so one box may carry several labels).
pub(crate) fn decode_head(
    out: &[f32],
    (gh, gw): (usize, usize),
    head: &HeadSpec,
    (net_w, net_h): (usize, usize),
    threshold: f32,
) -> Vec<Candidate> {
    let per_anchor = 5 + head.classes;
    let plane = gh * gw;
    let mut found = Vec::new();
    for (a, &(aw, ah)) in head.anchors.iter().enumerate() {
        let chan = |k: usize| &out[(a * per_anchor + k) * plane..(a * per_anchor + k + 1) * plane];
        let objectness = chan(4);
        for (cell, &t_obj) in objectness.iter().enumerate() {
            let obj = sigmoid(t_obj);
            // score = obj × p(class) ≤ obj: nothing in this cell can pass.
            if obj <= threshold {
                continue;
            }
            let (row, col) = ((cell / gw) as f32, (cell % gw) as f32);
            let cx = (col + sigmoid(chan(0)[cell])) / gw as f32 * net_w as f32;
            let cy = (row + sigmoid(chan(1)[cell])) / gh as f32 * net_h as f32;
            let w = chan(2)[cell].exp() * aw;
            let h = chan(3)[cell].exp() * ah;
            let bbox = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
            for class_id in 0..head.classes {
                let score = obj * sigmoid(chan(5 + class_id)[cell]);
                if score > threshold {
                    found.push(Candidate {
                        class_id,
                        score,
                        bbox,
                    });
                }
            }
        }
    }
    found
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes (0 for empty boxes).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy per-class non-maximum suppression.
///
/// Highest score first; a detection is dropped when it overlaps an already
/// kept detection *of the same class* with IoU above `iou_threshold`.
/// Returns the survivors sorted by descending score.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        let suppressed = kept
            .iter()
            .any(|k| k.class_id == d.class_id && iou(&k.bbox, &d.bbox) > iou_threshold);
        if !suppressed {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            label: format!("c{class_id}"),
            class_id,
            score,
            bbox,
        }
    }

    #[test]
    fn iou_basics() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        // Half-overlapping: inter 50, union 150.
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }

    #[test]
    fn nms_is_per_class_and_keeps_best() {
        let dets = vec![
            det(0, 0.6, [1.0, 1.0, 11.0, 11.0]), // IoU 0.68 with the 0.9 box: dropped
            det(0, 0.9, [0.0, 0.0, 10.0, 10.0]), // best of class 0
            det(1, 0.5, [0.0, 0.0, 10.0, 10.0]), // same place, other class: kept
            det(0, 0.4, [5.0, 0.0, 15.0, 10.0]), // IoU 1/3 with the best: kept
            det(0, 0.3, [100.0, 0.0, 110.0, 10.0]), // elsewhere: kept
        ];
        let kept = nms(dets, 0.45);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.5, 0.4, 0.3]);
        assert_eq!(kept[1].class_id, 1);
    }

    #[test]
    fn decode_places_box_in_its_cell() {
        // One head, 2x2 grid, 1 anchor (20x30 px), 2 classes, 64x64 input.
        let head = HeadSpec {
            anchors: vec![(20.0, 30.0)],
            classes: 2,
        };
        let plane = 4;
        let mut out = vec![-20.0f32; 7 * plane]; // everything "off"
        let cell = 3; // row 1, col 1
        out[cell] = 0.0; // tx: sigmoid 0.5
        out[plane + cell] = 0.0; // ty
        out[2 * plane + cell] = 0.0; // tw: exp 1
        out[3 * plane + cell] = 2f32.ln(); // th: exp 2
        out[4 * plane + cell] = 10.0; // objectness ~1
        out[6 * plane + cell] = 10.0; // class 1 ~1
        let found = decode_head(&out, (2, 2), &head, (64, 64), 0.25);
        assert_eq!(found.len(), 1);
        let c = &found[0];
        assert_eq!(c.class_id, 1);
        assert!(c.score > 0.99);
        // Centre (1.5/2·64, 1.5/2·64) = (48, 48); size 20 x 60.
        let want = [38.0, 18.0, 58.0, 78.0];
        for (g, w) in c.bbox.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{:?}", c.bbox);
        }
    }
}
