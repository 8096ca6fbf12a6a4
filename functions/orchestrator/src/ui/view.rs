//! What the web page shows of one request ([`RequestView`]), gathered from its `state.json`,
//! its `final.json` and each clip's `detections.json`, and the one list of store keys the
//! page may stream ([`RequestView::shows`]).
//!
//! A request answered from the library ran no stage: its clips and frames are those of the
//! request that made the analysis, read from that request's records. What a view holds of
//! an ended request does not change until its state does, so [`Views`] keeps it, checked
//! against the state's ETag on every use.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use fave_common::contract::detect;
use fave_common::contract::library::VideoIndex;
use fave_common::contract::report::{ClipReport, Final};
use fave_common::error::ApiError;
use fave_common::ids::RequestId;
use fave_common::keys::{RequestKeys, VideoKeys};
use fave_common::state::{RequestState, RequestStatus};
use fave_common::storage::Storage;
use fave_common::timeline::Timeline;

/// One request as the page shows it.
pub struct RequestView {
    pub state: RequestState,
    /// `final.json`, for a completed request whose video was not deleted.
    pub result: Option<Final>,
    pub clips: Vec<ClipView>,
    /// The stage timeline, as `fave timeline -o` draws it.
    pub timeline: String,
    /// Every store key the page shows: the clips' videos and their frames.
    media: HashSet<String>,
}

/// One clip: what `final.json` (or, before it, the state) says of it, and its frames.
pub struct ClipView {
    pub report: ClipReport,
    pub frames: Vec<FrameView>,
}

/// One sampled frame and what the detector found in it.
pub struct FrameView {
    /// Seconds from the video's start.
    pub time_s: f64,
    pub key: String,
    pub width: u32,
    pub height: u32,
    /// The detector did not look at it: these are the detections of the frame before.
    pub carried: bool,
    pub detections: Vec<detect::Detection>,
}

impl RequestView {
    /// Whether the page shows the object at `key`: the media route serves nothing else.
    pub fn shows(&self, key: &str) -> bool {
        self.media.contains(key)
    }

    /// The keys `clips` show: each clip's video and frames.
    fn build_media(clips: &[ClipView]) -> HashSet<String> {
        clips
            .iter()
            .flat_map(|c| {
                std::iter::once(c.report.key.clone()).chain(c.frames.iter().map(|f| f.key.clone()))
            })
            .filter(|k| !k.is_empty())
            .collect()
    }
}

/// Views of ended requests, by id, each with the ETag of the state it was built from.
#[derive(Default)]
pub struct Views {
    ended: Mutex<HashMap<RequestId, (String, Arc<RequestView>)>>,
}

/// How many ended requests' views are kept; when full, all are let go and kept anew (simpler
/// than an LRU, and a view is rebuilt from the store in tens of milliseconds).
const KEPT: usize = 128;

impl Views {
    /// The view of request `id`: built, or kept from before if its state is unchanged.
    pub async fn get(
        &self,
        storage: &Storage,
        id: &RequestId,
    ) -> Result<Arc<RequestView>, ApiError> {
        let (state, etag) = storage
            .get_json::<RequestState>(&RequestKeys::new(id).state())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
        if let Some((kept_etag, view)) = self.ended.lock().expect("not poisoned").get(id)
            && *kept_etag == etag
        {
            return Ok(view.clone());
        }
        let ended = state.status.is_terminal();
        let view = Arc::new(build(storage, state).await?);
        if ended {
            let mut kept = self.ended.lock().expect("not poisoned");
            if kept.len() >= KEPT {
                kept.clear();
            }
            kept.insert(id.clone(), (etag, view.clone()));
        }
        Ok(view)
    }
}

/// Gathers what the page shows of the request in `state`.
async fn build(storage: &Storage, state: RequestState) -> Result<RequestView, ApiError> {
    let result = match (state.status, state.video_deleted_at) {
        (RequestStatus::Completed, None) => {
            let key = state
                .result_key
                .clone()
                .unwrap_or_else(|| RequestKeys::new(&state.request_id).result());
            storage.get_json::<Final>(&key).await?.map(|(f, _)| f)
        }
        _ => None,
    };
    // Whose records hold the clips' frames: this request's, or the analysis maker's.
    let maker = match state.analysis.as_ref().filter(|a| a.reused) {
        Some(used) => {
            let index_key = VideoKeys::new(&used.video).index(&used.analysis);
            let made_by = storage
                .get_json::<VideoIndex>(&index_key)
                .await?
                .map(|(index, _)| index.request_id);
            match made_by {
                Some(id) => storage
                    .get_json::<RequestState>(&RequestKeys::new(&id).state())
                    .await?
                    .map(|(s, _)| s),
                None => None,
            }
        }
        None => None,
    };
    let frames_from = maker.as_ref().unwrap_or(&state);
    let failed = crate::api::drive_error;
    let mut clips = Vec::new();
    match &result {
        // Completed: the clips as final.json has them; the frames from the records.
        Some(done) => {
            for report in &done.clips {
                let frames = match frames_from.clips.iter().find(|c| c.clip == report.clip) {
                    Some(clip) => {
                        let read = crate::result::clip_frames(storage, clip)
                            .await
                            .map_err(failed)?;
                        frames_of(clip, read)
                    }
                    None => Vec::new(),
                };
                clips.push(ClipView {
                    report: report.clone(),
                    frames,
                });
            }
        }
        // Not yet: each clip as final.json will have it, from the same one read.
        None => {
            for clip in &frames_from.clips {
                let read = crate::result::clip_frames(storage, clip)
                    .await
                    .map_err(failed)?;
                let report = crate::result::clip_report_of(clip, &read).map_err(failed)?;
                clips.push(ClipView {
                    report,
                    frames: frames_of(clip, read),
                });
            }
        }
    }
    let timeline = Timeline::build(&state, Utc::now()).svg();
    let media = RequestView::build_media(&clips);
    Ok(RequestView {
        state,
        result,
        clips,
        timeline,
        media,
    })
}

/// A clip's frames with their detections (its `detections.json`), in video time.
fn frames_of(
    clip: &fave_common::state::ClipState,
    frames: Vec<detect::FrameDetections>,
) -> Vec<FrameView> {
    frames
        .into_iter()
        .map(|f| FrameView {
            time_s: clip.start_s + f.time_s,
            key: f.key,
            width: f.width,
            height: f.height,
            carried: f.carried,
            detections: f.detections,
        })
        .collect()
}
