//! Known-answer tests on real images with the real pretrained weights, on both backends:
//! tract, and ONNX Runtime (`scripts/fetch-onnxruntime`'s library, or `ORT_DYLIB_PATH`).
//!
//! Needs `scripts/fetch-model` (model in `$FAVE_MODELS/yolov3-tiny`, default
//! `/root/.cache/fave-tools/models`) and `scripts/fetch-samples` (media in
//! `$FAVE_SAMPLES`, default the repository's `samples/`).  A missing file fails the test
//! with a hint: silently skipping would hide a broken detector.
//!
//! Reference values were measured independently of this crate by
//! `scripts/reference_detect.py` (the same ONNX file in onnxruntime, letterboxed
//! with Pillow's bilinear resize, decoded in numpy): vtest frame person 0.981,
//! car 0.814; messi5 sports ball 0.867 (0.873 with ffmpeg's JPEG decoder).

use std::path::PathBuf;
use std::sync::OnceLock;

use stage_detect::{Backend, DetectOptions, Detection, Detector, iou};

fn sample(name: &str) -> image::RgbImage {
    let dir = std::env::var_os("FAVE_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples"));
    let path = dir.join(name);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", path.display()))
        .to_rgb8()
}

/// The detector on each backend, loaded once.
fn detectors() -> [&'static Detector; 2] {
    static TRACT: OnceLock<Detector> = OnceLock::new();
    static ORT: OnceLock<Detector> = OnceLock::new();
    let load = |backend: Backend| {
        Detector::load_with(stage_detect::model_dir(), backend)
            .unwrap_or_else(|e| panic!("{e} (run scripts/setup)"))
    };
    [
        TRACT.get_or_init(|| load(Backend::Tract)),
        ORT.get_or_init(|| {
            let library = stage_detect::ort_library(&|k| std::env::var(k).ok());
            load(Backend::OnnxRuntime { library })
        }),
    ]
}

/// Highest-scoring detection with this label.
fn best<'a>(dets: &'a [Detection], label: &str) -> &'a Detection {
    dets.iter()
        .filter(|d| d.label == label)
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .unwrap_or_else(|| panic!("no {label:?} in {dets:#?}"))
}

fn assert_close(d: &Detection, score: f32, bbox: [f32; 4]) {
    assert!(
        (d.score - score).abs() <= 0.05,
        "{} score {} not within 0.05 of {score}",
        d.label,
        d.score
    );
    // Box placement checks anchors, decoding and the letterbox mapping.
    let overlap = iou(&d.bbox, &bbox);
    assert!(
        overlap > 0.7,
        "{} box {:?} vs reference {bbox:?}: IoU {overlap}",
        d.label,
        d.bbox
    );
}

#[test]
fn vtest_frame_has_people_and_a_car() {
    let img = sample("vtest_10s.png");
    assert_eq!(img.dimensions(), (768, 576));
    for detector in detectors() {
        let dets = detector
            .detect(&img, &DetectOptions::default())
            .expect("detect");
        eprintln!("{}: {dets:#?}", detector.backend().name());
        assert_close(best(&dets, "person"), 0.98, [348.6, 187.1, 374.3, 279.6]);
        assert_close(best(&dets, "car"), 0.81, [724.9, 47.7, 766.8, 98.1]);
        assert!(
            dets.iter().filter(|d| d.label == "person").count() >= 3,
            "{dets:#?}"
        );
        for d in &dets {
            assert!(d.score > 0.25 && d.score <= 1.0);
            let [x1, y1, x2, y2] = d.bbox;
            assert!(0.0 <= x1 && x1 < x2 && x2 <= 768.0 && 0.0 <= y1 && y1 < y2 && y2 <= 576.0);
        }
    }
}

/// The two backends run the same network on the same input: the same detections, scores
/// within 0.01 and boxes within 2 px, on several real frames.
#[test]
fn both_backends_agree() {
    let [tract, ort] = detectors();
    for name in ["vtest_10s.png", "messi5.jpg"] {
        let img = sample(name);
        let opts = DetectOptions::default();
        let a = tract.detect(&img, &opts).expect("tract detects");
        let b = ort.detect(&img, &opts).expect("onnxruntime detects");
        assert_eq!(a.len(), b.len(), "{name}: {a:#?} vs {b:#?}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.label, y.label, "{name}");
            assert!((x.score - y.score).abs() <= 0.01, "{name}: {x:?} vs {y:?}");
            for (p, q) in x.bbox.iter().zip(&y.bbox) {
                assert!((p - q).abs() <= 2.0, "{name}: {x:?} vs {y:?}");
            }
        }
    }
}

/// Without ONNX Runtime's library the function does not start: it says where it looked
/// and how to run without it.
#[test]
fn a_missing_onnxruntime_library_stops_the_function_at_start_naming_it() {
    let missing = "/nonexistent/libonnxruntime.so.1.31.1";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stage-detect"))
        .env("FAVE_DETECT_BACKEND", "onnxruntime")
        .env("ORT_DYLIB_PATH", missing)
        .output()
        .expect("the function runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(missing), "{said}");
    assert!(said.contains("FAVE_DETECT_BACKEND=tract"), "{said}");
}

#[test]
fn messi_has_a_sports_ball_and_a_person() {
    let img = sample("messi5.jpg");
    for detector in detectors() {
        let dets = detector
            .detect(&img, &DetectOptions::default())
            .expect("detect");
        eprintln!("{}: {dets:#?}", detector.backend().name());
        assert_close(
            best(&dets, "sports ball"),
            0.87,
            [334.5, 288.3, 387.5, 336.3],
        );
        best(&dets, "person");
    }
}

#[test]
fn threshold_option_filters() {
    let img = sample("vtest_10s.png");
    let opts = DetectOptions {
        score_threshold: 0.9,
        ..DetectOptions::default()
    };
    for detector in detectors() {
        let dets = detector.detect(&img, &opts).expect("detect");
        assert!(
            !dets.is_empty() && dets.iter().all(|d| d.score > 0.9),
            "{dets:#?}"
        );
    }
}

#[test]
fn flat_grey_image_has_nothing() {
    let img = image::RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128]));
    for detector in detectors() {
        let dets = detector
            .detect(&img, &DetectOptions::default())
            .expect("detect");
        assert!(dets.is_empty(), "{dets:#?}");
    }
}
