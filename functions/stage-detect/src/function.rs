//! The `stage-detect` function, one call per clip: object detection on the clip's frames.
//!
//! The frames are fetched from the store a few at a time while the detector works on them,
//! so download and inference overlap. Inference runs on a fixed set of worker threads, one
//! per core, shared by every call the process serves: a call keeps one frame per worker in
//! flight (a lone clip uses every core), concurrent calls take turns instead of
//! oversubscribing the CPU, and memory stays what a core's worth of
//! inference needs (a pool that grows and shrinks, like tokio's blocking pool, leaves each
//! new thread's allocator arena behind; measured with `fave bench memory`). It writes
//! `detections.json` (every frame's detections) and returns, per label, the best score and
//! the frames it was seen in: what ranking a query needs.
//!
//! The model loads on a thread of its own from the moment the process starts
//! ([`Detect::start_loading`]), so the function listens at once; a call with frames waits for
//! the model (a clip without frames never does).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use fave_common::contract::Frame;
use fave_common::contract::detect::outputs as output;
pub use fave_common::contract::detect::{FrameDetections, Input, LabelSummary, NAME, Output};
use fave_common::readiness::Loading;
use fave_common::stage::{Produced, Stage, StageCall, StageContext, StageError};
use futures::{StreamExt, TryStreamExt};
use image::RgbImage;

use crate::gate::{Gate, Thumb};
use crate::{DetectOptions, Detection, Detector};

/// Frames fetched ahead of the detector.
const PREFETCH: usize = 4;

pub struct Detect {
    detector: Loading<Detector>,
    workers: Workers,
    /// The difference gate; `None` looks at every frame.
    gate: Option<Gate>,
}

impl Detect {
    /// Starts loading the model in `dir` into `backend` in the background and returns at
    /// once; calls wait for it at most `load_timeout`. One worker thread per core runs the
    /// detector.
    pub fn start_loading(
        dir: PathBuf,
        backend: crate::Backend,
        load_timeout: std::time::Duration,
    ) -> Self {
        let detector = Loading::start("detector", load_timeout, move || {
            let name = backend.name();
            Detector::load_with(&dir, backend)
                .inspect(|_| tracing::info!(backend = name, "the detector runs in {name}"))
                .map_err(|e| format!("loading the model from {} into {name}: {e}", dir.display()))
        });
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            detector,
            workers: Workers::new(cores),
            gate: Some(Gate::default()),
        }
    }

    /// The same with this difference gate (`None`: every frame is looked at).
    pub fn with_gate(self, gate: Option<Gate>) -> Self {
        Self { gate, ..self }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run jobs in the order they are sent.
struct Workers {
    jobs: mpsc::Sender<Job>,
    threads: usize,
}

impl Workers {
    fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("detect-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = next else { return };
                        // A panicking job answers nobody (its caller sees an error); the
                        // thread lives on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a detection worker");
            }
        }
        Self { jobs, threads }
    }

    /// Runs `f` on a worker and waits for its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| StageError::Internal("the detection workers are gone".into()))?;
        rx.await
            .map_err(|_| StageError::Internal("detection failed (the job panicked)".into()))
    }
}

impl Detect {
    /// One fetched frame, decoded on a worker, and its thumbnail for the gate; the frame is
    /// kept decoded, so the detector does not decode it again.
    async fn thumbnail(&self, path: PathBuf) -> Result<(Thumb, RgbImage), StageError> {
        self.workers
            .run(move || {
                let img = decode(&path)?;
                Ok::<_, StageError>((Thumb::of(&img), img))
            })
            .await?
    }

    /// Detects objects in one fetched frame on a worker; returns them and the
    /// detector's time in milliseconds.
    async fn look(
        &self,
        detector: Arc<Detector>,
        frame: Frame,
        fetched: Fetched,
        options: DetectOptions,
    ) -> Result<(FrameDetections, u64), StageError> {
        let (width, height, detections, ms) = self
            .workers
            .run(move || {
                let img = match fetched {
                    Fetched::Decoded(img) => img,
                    Fetched::File(path) => decode(&path)?,
                };
                let clock = std::time::Instant::now();
                let found = detector
                    .detect(&img, &options)
                    .map_err(|e| StageError::Internal(format!("detection: {e}")))?;
                let ms = clock.elapsed().as_millis() as u64;
                Ok::<_, StageError>((img.width(), img.height(), found, ms))
            })
            .await??;
        let found = FrameDetections {
            time_s: frame.time_s,
            key: frame.key,
            width,
            height,
            detections,
            carried: false,
        };
        Ok((found, ms))
    }
}

impl Stage for Detect {
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
        let mut frames = call.input.frames.clone();
        if let Some(key) = &call.input.frames_key {
            call.require_own_key("frames_key", key)?;
            let listed: Vec<Frame> = ctx
                .storage
                .get_json(key)
                .await?
                .ok_or_else(|| StageError::InvalidInput(format!("no frames at {key}")))?
                .0;
            frames.extend(listed);
        }
        for frame in &frames {
            call.require_own_key("a frame's key", &frame.key)?;
        }
        let options = call.input.options.unwrap_or_default();
        let detector = match frames.is_empty() {
            true => None,
            false => Some(self.detector.get().await?),
        };
        let jobs: Vec<(usize, Frame)> = frames.into_iter().enumerate().collect();
        // With the gate, each frame's thumbnail decides, in order, whether the detector
        // looks at it; the frames it looks at are looked at side by side all the same.
        let mut decider = self.gate.map(Gate::decider);
        // One frame per worker in flight, so that a lone clip has every core; concurrent
        // calls share the workers' queue. The buffered stages keep the frames in order.
        let looked: Vec<Looked> = futures::stream::iter(jobs)
            .map(|(i, frame)| fetch(ctx, i, frame))
            .buffered(PREFETCH)
            .map_ok(|(frame, path)| async move {
                Ok(match self.gate {
                    Some(_) => {
                        let (thumb, img) = self.thumbnail(path).await?;
                        (frame, Fetched::Decoded(img), Some(thumb))
                    }
                    None => (frame, Fetched::File(path), None),
                })
            })
            .try_buffered(self.workers.threads)
            .map_ok(|(frame, fetched, thumb)| {
                let look = match (&mut decider, &thumb) {
                    (Some(decider), Some(thumb)) => decider.look(thumb),
                    _ => true,
                };
                // Set whenever there are frames to look at.
                let detector = detector
                    .clone()
                    .ok_or_else(|| StageError::Internal("a frame without a detector".into()));
                async move {
                    match (look, thumb) {
                        (false, Some(thumb)) => Ok(Looked::Carried(frame, thumb)),
                        _ => self
                            .look(detector?, frame, fetched, options)
                            .await
                            .map(|(found, ms)| Looked::Detected(found, ms)),
                    }
                }
            })
            .try_buffered(self.workers.threads)
            .try_collect()
            .await?;
        let detect_ms = looked
            .iter()
            .map(|l| match l {
                Looked::Detected(_, ms) => *ms,
                Looked::Carried(..) => 0,
            })
            .sum();
        let results = carry_forward(looked);
        let carried = results.iter().filter(|f| f.carried).count();

        let path = ctx.workdir()?.join("detections.json");
        let text = serde_json::to_vec(&results)
            .map_err(|e| StageError::Internal(format!("writing detections.json: {e}")))?;
        tokio::fs::write(&path, text)
            .await
            .map_err(|e| StageError::Internal(format!("writing detections.json: {e}")))?;
        let key = format!("{}detections.json", call.output_prefix());
        ctx.storage
            .put_file(&key, &path, "application/json")
            .await?;
        Ok(Produced {
            outputs: BTreeMap::from([(output::DETECTIONS.to_owned(), key)]),
            data: Output {
                frames: results.len(),
                detected: results.len() - carried,
                carried,
                labels: summarize(&results),
                detect_ms,
            },
        })
    }
}

/// A fetched frame: still a file, or decoded already (to make its thumbnail).
enum Fetched {
    File(PathBuf),
    Decoded(RgbImage),
}

/// Decodes a fetched frame and removes its file.
fn decode(path: &Path) -> Result<RgbImage, StageError> {
    let img = image::open(path)
        .map_err(|e| StageError::InvalidMedia(format!("a frame is not an image: {e}")))?
        .to_rgb8();
    let _ = std::fs::remove_file(path);
    Ok(img)
}

/// A frame the detector looked at (with its time in ms), or one the gate let it skip.
enum Looked {
    Detected(FrameDetections, u64),
    Carried(Frame, Thumb),
}

/// The frames in order, each skipped one with the detections of the frame looked at
/// before it.
fn carry_forward(looked: Vec<Looked>) -> Vec<FrameDetections> {
    let mut frames: Vec<FrameDetections> = Vec::with_capacity(looked.len());
    let mut last: Option<Vec<Detection>> = None;
    for l in looked {
        frames.push(match l {
            Looked::Detected(found, _) => {
                last = Some(found.detections.clone());
                found
            }
            Looked::Carried(frame, thumb) => FrameDetections {
                time_s: frame.time_s,
                key: frame.key,
                width: thumb.width,
                height: thumb.height,
                // The gate always looks at a clip's first frame.
                detections: last.clone().unwrap_or_default(),
                carried: true,
            },
        });
    }
    frames
}

/// Downloads frame `i` into the work directory.
async fn fetch(
    ctx: &StageContext<'_>,
    i: usize,
    frame: Frame,
) -> Result<(Frame, PathBuf), StageError> {
    let path = ctx.workdir()?.join(format!("frame-{i:06}.jpg"));
    ctx.storage.get_to_file(&frame.key, &path).await?;
    Ok((frame, path))
}

/// Per label: the best score, when, and in how many frames it was seen.
pub fn summarize(frames: &[FrameDetections]) -> BTreeMap<String, LabelSummary> {
    let mut labels: BTreeMap<String, LabelSummary> = BTreeMap::new();
    for frame in frames {
        let mut seen_here: Vec<&str> = Vec::new();
        for d in &frame.detections {
            let entry = labels.entry(d.label.clone()).or_insert(LabelSummary {
                best_score: d.score,
                frames: 0,
                best_time_s: frame.time_s,
            });
            if d.score > entry.best_score {
                entry.best_score = d.score;
                entry.best_time_s = frame.time_s;
            }
            if !seen_here.contains(&d.label.as_str()) {
                seen_here.push(&d.label);
                entry.frames += 1;
            }
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, score: f32) -> Detection {
        Detection {
            label: label.into(),
            class_id: 0,
            score,
            bbox: [0.0; 4],
        }
    }

    fn frame(time_s: f64, detections: Vec<Detection>) -> FrameDetections {
        FrameDetections {
            time_s,
            key: String::new(),
            width: 1,
            height: 1,
            detections,
            carried: false,
        }
    }

    #[test]
    fn a_carried_frame_has_the_detections_of_the_frame_looked_at_before_it() {
        let img = image::RgbImage::new(8, 6);
        let skipped = |time_s: f64| {
            Looked::Carried(
                Frame {
                    time_s,
                    key: format!("k{time_s}"),
                },
                Thumb::of(&img),
            )
        };
        let looked = vec![
            Looked::Detected(frame(0.0, vec![det("car", 0.9)]), 40),
            skipped(1.0),
            Looked::Detected(frame(2.0, vec![det("dog", 0.7)]), 40),
            skipped(3.0),
            skipped(4.0),
        ];
        let frames = carry_forward(looked);
        let labels: Vec<(f64, &str, bool)> = frames
            .iter()
            .map(|f| (f.time_s, f.detections[0].label.as_str(), f.carried))
            .collect();
        assert_eq!(
            labels,
            [
                (0.0, "car", false),
                (1.0, "car", true),
                (2.0, "dog", false),
                (3.0, "dog", true),
                (4.0, "dog", true)
            ]
        );
        assert_eq!(
            (frames[1].width, frames[1].height),
            (8, 6),
            "the frame's own size"
        );
        assert_eq!(frames[1].key, "k1", "its own key");
    }

    #[tokio::test]
    async fn workers_run_jobs_and_survive_a_panic() {
        let workers = Workers::new(2);
        assert_eq!(workers.run(|| 6 * 7).await.unwrap(), 42);
        let panicked = workers.run(|| -> u32 { panic!("a bad frame") }).await;
        assert!(matches!(panicked, Err(StageError::Internal(_))));
        // Both threads are still there: two jobs that wait for each other both finish.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (a, b) = (barrier.clone(), barrier);
        let (x, y) = tokio::join!(
            workers.run(move || a.wait().is_leader()),
            workers.run(move || b.wait().is_leader())
        );
        assert_ne!(x.unwrap(), y.unwrap(), "exactly one leader");
    }

    #[test]
    fn summaries_count_frames_once_and_keep_the_best() {
        let frames = vec![
            frame(
                0.0,
                vec![det("person", 0.6), det("person", 0.7), det("car", 0.4)],
            ),
            frame(1.0, vec![det("person", 0.9)]),
            frame(2.0, vec![]),
        ];
        let s = summarize(&frames);
        assert_eq!(s.len(), 2);
        assert_eq!(s["person"].frames, 2);
        assert_eq!(s["person"].best_score, 0.9);
        assert_eq!(s["person"].best_time_s, 1.0);
        assert_eq!((s["car"].frames, s["car"].best_time_s), (1, 0.0));
    }
}
