//! stage-detect: a pretrained COCO object detector (Darknet yolov3-tiny) that
//! runs on the CPU in pure Rust.
//!
//! The network runs in ONNX Runtime or in [tract](https://crates.io/crates/tract-onnx)
//! ([`Backend`], `engine.rs`) from an ONNX file that `scripts/fetch-model` converts once,
//! at set-up, from the original Darknet `.cfg`/`.weights` (`scripts/darknet_to_onnx.py`).
//! Nothing is downloaded at build or run time.  A model directory holds:
//!
//! - `model.onnx`: input `input` (1×3×416×416 RGB in 0..1), outputs `yolo_0`,
//!   `yolo_1`: the raw outputs of the two YOLO heads (13×13 and 26×26);
//! - `yolov3-tiny.cfg`: the Darknet cfg, read here for the input size and each
//!   head's anchors (the ONNX file has no place for them);
//! - `coco.names`: one label per line, by class id.
//!
//! Layout: [`Detector`] (this file) loads the model and runs one image through
//! letterboxing (`letterbox.rs`), the network, head decoding and per-class
//! NMS (`postprocess.rs`); `cfg.rs` parses the cfg; [`function`] serves it as the
//! `stage-detect` function of the pipeline, with the model loaded once per process
//! ([`model_dir`] says where from).
//!
//! ```no_run
//! # fn main() -> Result<(), stage_detect::DetectError> {
//! let detector = stage_detect::Detector::load("/root/.cache/fave-tools/models/yolov3-tiny")?;
//! let img = image::open("frame.png").map_err(stage_detect::DetectError::Image)?.to_rgb8();
//! for d in detector.detect(&img, &stage_detect::DetectOptions::default())? {
//!     println!("{} {:.2} {:?}", d.label, d.score, d.bbox);
//! }
//! # Ok(()) }
//! ```

mod cfg;
mod engine;
pub mod function;
pub mod gate;
mod letterbox;
mod postprocess;

use std::path::{Path, PathBuf};

use image::RgbImage;

pub use engine::{Backend, ORT_LIBRARY, ort_library};
pub use postprocess::{iou, nms};

use cfg::NetSpec;
use engine::Engine;
use letterbox::Letterbox;

/// File names inside a model directory.
pub const MODEL_FILE: &str = "model.onnx";
/// Darknet cfg kept next to the model for anchors and input size.
pub const CFG_FILE: &str = "yolov3-tiny.cfg";
/// Class labels, one per line.
pub const LABELS_FILE: &str = "coco.names";

/// Where the model directory is: `FAVE_MODEL_DIR`, else `$FAVE_MODELS/yolov3-tiny`, else
/// `~/.cache/fave-tools/models/yolov3-tiny` (where `scripts/fetch-model` puts it).
pub fn model_dir() -> PathBuf {
    fave_common::config::model_dir("FAVE_MODEL_DIR", "yolov3-tiny")
}

/// Everything that can go wrong loading the model or detecting.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A model-directory file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Darknet cfg is malformed or lacks what we need.
    #[error("bad Darknet cfg: {0}")]
    Cfg(String),
    /// The ONNX model, the cfg and the labels do not agree with each other.
    #[error("model does not match its cfg/labels: {0}")]
    Mismatch(String),
    /// The runtime (tract or ONNX Runtime) failed to load, optimise or run the network.
    #[error("{0}")]
    Runtime(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Image decoding failed (only produced by callers' convenience paths).
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
}

/// Result alias for this crate.
pub type Result<T, E = DetectError> = std::result::Result<T, E>;

pub use fave_common::contract::detect::{DetectOptions, Detection};

/// A loaded yolov3-tiny network, ready to run on any number of images.
///
/// Loading parses and optimises the graph once (for a fixed 1×3×H×W input);
/// `detect` takes `&self`, so one `Detector` can be shared between threads.
#[derive(Debug)]
pub struct Detector {
    engine: Engine,
    backend: Backend,
    spec: NetSpec,
    labels: Vec<String>,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| DetectError::Io {
        path: path.to_owned(),
        source,
    })
}

impl Detector {
    /// Load `model.onnx`, `yolov3-tiny.cfg` and `coco.names` from `model_dir`
    /// and build an optimised tract plan.
    pub fn load(model_dir: impl AsRef<Path>) -> Result<Detector> {
        Self::load_with(model_dir, Backend::Tract)
    }

    /// The same, run by `backend`.
    pub fn load_with(model_dir: impl AsRef<Path>, backend: Backend) -> Result<Detector> {
        let dir = model_dir.as_ref();
        let spec = cfg::parse(&read_text(&dir.join(CFG_FILE))?)?;
        let labels: Vec<String> = read_text(&dir.join(LABELS_FILE))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        for (i, head) in spec.heads.iter().enumerate() {
            if head.classes != labels.len() {
                return Err(DetectError::Mismatch(format!(
                    "head {i} has {} classes but {LABELS_FILE} has {} labels",
                    head.classes,
                    labels.len()
                )));
            }
        }

        let model_path = dir.join(MODEL_FILE);
        // tract would report a missing file as a generic error; say which file.
        if !model_path.is_file() {
            return Err(DetectError::Io {
                path: model_path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let engine = Engine::load(&backend, &model_path, spec.height, spec.width)?;
        let outputs = engine.outputs();
        if outputs != spec.heads.len() {
            return Err(DetectError::Mismatch(format!(
                "model has {outputs} outputs, cfg has {} [yolo] sections",
                spec.heads.len()
            )));
        }
        Ok(Detector {
            engine,
            backend,
            spec,
            labels,
        })
    }

    /// What runs the network.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Class labels, indexed by `Detection::class_id`.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Network input size `(width, height)`; images are letterboxed to it.
    pub fn input_size(&self) -> (usize, usize) {
        (self.spec.width, self.spec.height)
    }

    /// Detect objects in `img`.  Returns detections sorted by descending score.
    pub fn detect(&self, img: &RgbImage, opts: &DetectOptions) -> Result<Vec<Detection>> {
        let (net_w, net_h) = self.input_size();
        let lb = Letterbox::new(img.width(), img.height(), net_w as u32, net_h as u32);
        let outputs = self
            .engine
            .run(lb.render(img, net_w, net_h), net_h, net_w)?;

        let mut dets = Vec::new();
        for (i, ((shape, data), head)) in outputs.iter().zip(&self.spec.heads).enumerate() {
            let want_c = head.anchors.len() * (5 + head.classes);
            if shape.len() != 4 || shape[0] != 1 || shape[1] != want_c {
                return Err(DetectError::Mismatch(format!(
                    "output {i} has shape {shape:?}, expected [1, {want_c}, h, w]"
                )));
            }
            let found = postprocess::decode_head(
                data,
                (shape[2], shape[3]),
                head,
                (net_w, net_h),
                opts.score_threshold,
            );
            dets.extend(found.into_iter().map(|c| Detection {
                // class_id < classes == labels.len(), checked at load.
                label: self.labels[c.class_id].clone(),
                class_id: c.class_id,
                score: c.score,
                bbox: lb.source_box(c.bbox),
            }));
        }
        Ok(nms(dets, opts.nms_iou))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Detector>();
    }

    #[test]
    fn missing_model_dir_is_an_io_error() {
        let err = Detector::load("/nonexistent/stage-detect-model").expect_err("must fail");
        assert!(matches!(err, DetectError::Io { .. }), "{err}");
    }

    #[test]
    fn detection_serde_roundtrip() {
        let d = Detection {
            label: "person".into(),
            class_id: 0,
            score: 0.5,
            bbox: [1.0, 2.0, 3.0, 4.0],
        };
        let json = serde_json::to_string(&d).expect("serialize");
        assert_eq!(
            serde_json::from_str::<Detection>(&json).expect("deserialize"),
            d
        );
    }
}
