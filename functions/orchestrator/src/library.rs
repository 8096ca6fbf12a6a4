//! The video library: a video is analysed once per set of parameters, and every later
//! request for the same bytes, and every `POST /query`, is answered from what that analysis
//! kept. The layout is `contract::library`'s; everything lives in the request bucket, so a
//! cluster needs no other server.
//!
//! - **Content addressing.** A video is the SHA-256 of its bytes (computed as it is copied
//!   in); an analysis is the digest of everything that changes its result
//!   ([`AnalysisParams`]). A request settles its analysis before any stage runs
//!   ([`Library::settle`]): published already → answered from `index.json`, no stage runs;
//!   else the request that creates `claim.json` (`If-None-Match: *`) makes it and the others
//!   wait for it; a claim whose request ended without publishing (failed, cancelled, gone)
//!   is taken over with `If-Match`, by one of its waiters.
//! - **Publishing.** The maker writes `index.json` (once: its content is a function of the
//!   video and the parameters), then the library's marker, then removes its claim, all
//!   before the request ends: a request that completed made its analysis visible.
//! - **Reading.** A query lists the markers (one call per thousand videos) and reads each
//!   analysis's `index.json` once per process: an index never changes after it is written,
//!   so the cache is never stale; a deleted video's marker is gone from the next listing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use fave_common::contract::library::{
    AnalysisClaim, AnalysisParams, AnalysisSummary, Deleted, Deleting, FoundMoment, INDEX_SCHEMA,
    QueryAnswer, QueryBody, QueryTimings, Rebuilt, VideoDetail, VideoIndex, VideoRecord,
};
use fave_common::contract::report::Final;
use fave_common::contract::{FRAME_MAX_WIDTH, detect};
use fave_common::error::ApiError;
use fave_common::ids::{AnalysisId, RequestId, VideoId};
use fave_common::keys::{self, RequestKeys, VideoKeys};
use fave_common::state::{RequestState, RequestStatus};
use fave_common::storage::{Storage, StorageError};
use futures::StreamExt;

use crate::query::{self, Meaning};
use crate::result;

/// The stage table's version in [`AnalysisParams::pipeline`]: bump it when a stage's
/// meaning changes, so no analysis of the old meaning is reused.
pub const PIPELINE_VERSION: &str = "video/1";

/// The detector and the transcriber the stage functions load (their model directories).
const DETECTOR: &str = "yolov3-tiny";
const TRANSCRIBER: &str = "whisper-tiny.en";

/// What a request's analysis comes to.
pub enum Settled {
    /// Published already: answer from it.
    Ready(Box<VideoIndex>),
    /// This request makes it (it holds the claim).
    Make,
}

/// One step of settling: a waiter tries again after a while.
enum Try {
    Settled(Settled),
    Wait,
}

/// The library of one orchestrator process: its analysis parameters and the indexes read.
pub struct Library {
    params: AnalysisParams,
    analysis: AnalysisId,
    /// The markers as last listed, and the generation's ETag they were listed under.
    listing: tokio::sync::Mutex<Option<(Option<String>, Arc<Published>)>>,
    /// Published indexes read so far by queries, by video and analysis, without their
    /// per-frame detections ([`Library::searchable`]).
    cache: Mutex<HashMap<(VideoId, AnalysisId), Arc<Searchable>>>,
}

impl Library {
    pub fn new(params: &crate::pipeline::Params, tag: &str) -> Self {
        let params = AnalysisParams {
            pipeline: PIPELINE_VERSION.into(),
            frames_per_second: params.frames_per_second,
            frame_max_width: FRAME_MAX_WIDTH,
            clip_min_s: params.clip_min_s,
            clip_max_s: params.clip_max_s,
            detector: DETECTOR.into(),
            detect: detect::DetectOptions::default(),
            transcriber: TRANSCRIBER.into(),
            tag: tag.to_owned(),
        };
        let analysis = params.id();
        Self {
            params,
            analysis,
            cache: Mutex::new(HashMap::new()),
            listing: tokio::sync::Mutex::new(None),
        }
    }

    /// The id of the analyses this process makes.
    pub fn analysis(&self) -> &AnalysisId {
        &self.analysis
    }

    /// Notes in `video.json` that `request` submitted the video as `uri` (before anything
    /// else of the library: a delete finds every request that used the video).
    pub async fn saw(
        &self,
        storage: &Storage,
        video: &VideoId,
        bytes: u64,
        request: &RequestId,
        uri: &str,
    ) -> Result<(), StorageError> {
        let key = VideoKeys::new(video).record();
        loop {
            let now = Utc::now();
            let written = match storage.get_json::<VideoRecord>(&key).await? {
                Some((mut record, etag)) => {
                    if record.requests.contains(request)
                        && record.uris.last().is_some_and(|u| u == uri)
                    {
                        return Ok(());
                    }
                    record.saw(request, uri, now);
                    storage.replace_json(&key, &record, &etag).await
                }
                None => {
                    let mut record = VideoRecord {
                        video: video.clone(),
                        bytes,
                        first_seen: now,
                        last_seen: now,
                        uris: Vec::new(),
                        requests: Vec::new(),
                    };
                    record.saw(request, uri, now);
                    storage.create_json(&key, &record).await
                }
            };
            match written {
                Ok(_) => return Ok(()),
                // Another request of the same video wrote meanwhile: read it again.
                Err(StorageError::PreconditionFailed { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Records `request` in the video's `video.json` ([`Library::saw`]) before anything of
    /// it is stored, and waits out a delete of the video under way (`deleting.json`, until
    /// it is gone or older than [`DELETE_STALE`]), recording the request again after it:
    /// the delete removed the record. A delete writes its `deleting.json` before it reads
    /// the record, so of the two, either the delete sees this request (and refuses with
    /// `409 video_in_use`) or this request sees the delete and waits; never neither.
    pub async fn enter(
        &self,
        storage: &Storage,
        video: &VideoId,
        bytes: u64,
        request: &RequestId,
        uri: &str,
    ) -> Result<(), StorageError> {
        let tombstone = VideoKeys::new(video).deleting();
        let mut waited = false;
        loop {
            self.saw(storage, video, bytes, request, uri).await?;
            let deleting = storage.get_json::<Deleting>(&tombstone).await?;
            match deleting {
                Some((d, _)) if Utc::now() - d.started_at < DELETE_STALE => {
                    if !waited {
                        tracing::info!(%video, "the video is being deleted; waiting for the delete to end");
                        waited = true;
                    }
                    tokio::time::sleep(DELETE_POLL).await;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Settles `request`'s analysis of `video`: waits (polling) while another request makes
    /// it, and returns once it is published or this request holds the claim to make it.
    pub async fn settle(
        &self,
        storage: &Storage,
        video: &VideoId,
        request: &RequestId,
    ) -> Result<Settled, StorageError> {
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.try_settle(storage, video, request).await? {
                Try::Settled(s) => return Ok(s),
                Try::Wait => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    async fn try_settle(
        &self,
        storage: &Storage,
        video: &VideoId,
        request: &RequestId,
    ) -> Result<Try, StorageError> {
        let ready = |index| Ok(Try::Settled(Settled::Ready(Box::new(index))));
        if let Some(index) = self.load(storage, video, &self.analysis).await? {
            return ready(index);
        }
        let key = VideoKeys::new(video).claim(&self.analysis);
        let mine = AnalysisClaim {
            request_id: request.clone(),
            claimed_at: Utc::now(),
        };
        let written = match storage.get_json::<AnalysisClaim>(&key).await? {
            None => storage.create_json(&key, &mine).await,
            Some((claim, _)) if claim.request_id == *request => {
                return Ok(Try::Settled(Settled::Make));
            }
            Some((claim, etag)) => {
                if !ended_unpublished(storage, &claim.request_id).await? {
                    return Ok(Try::Wait);
                }
                // Its maker publishes before it ends: look once more, then take it over.
                if let Some(index) = self.load(storage, video, &self.analysis).await? {
                    return ready(index);
                }
                tracing::info!(
                    %video, analysis = %self.analysis, from = %claim.request_id, to = %request,
                    "taking over an analysis whose request ended without it"
                );
                storage.replace_json(&key, &mine, &etag).await
            }
        };
        match written {
            Ok(_) => Ok(Try::Settled(Settled::Make)),
            Err(StorageError::PreconditionFailed { .. }) => Ok(Try::Wait),
            Err(e) => Err(e),
        }
    }

    /// Publishes the analysis `made` (a completed request's `final.json`): `index.json`,
    /// then the library's marker, then the claim is removed.
    pub async fn publish(
        &self,
        storage: &Storage,
        video: &VideoId,
        made: &Final,
        meanings: Vec<Vec<Vec<f32>>>,
    ) -> Result<(), StorageError> {
        let keys = VideoKeys::new(video);
        let index = VideoIndex {
            schema: INDEX_SCHEMA,
            video: video.clone(),
            analysis: self.analysis.clone(),
            params: self.params.clone(),
            request_id: made.request_id.clone(),
            made_at: Utc::now(),
            bytes: made.input.as_ref().map_or(0, |i| i.bytes),
            media: made.media.clone(),
            audio: made.audio.clone(),
            clips: made.clips.clone(),
            embedder: (!meanings.is_empty()).then(|| crate::embed::MODEL_NAME.to_owned()),
            meanings,
        };
        match storage
            .create_json(&keys.index(&self.analysis), &index)
            .await
        {
            // Written by this request before a crash, or by a fresh run: the same analysis.
            Ok(_) | Err(StorageError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
        storage.put_json(&keys.marker(&self.analysis), &()).await?;
        bump_generation(storage).await?;
        storage.delete(&keys.claim(&self.analysis)).await
    }

    /// A published index as stored, every frame's detections included; `None` if it is not
    /// published.
    pub async fn load(
        &self,
        storage: &Storage,
        video: &VideoId,
        analysis: &AnalysisId,
    ) -> Result<Option<VideoIndex>, StorageError> {
        let key = VideoKeys::new(video).index(analysis);
        let Some((index, _)) = storage.get_json::<VideoIndex>(&key).await? else {
            return Ok(None);
        };
        if index.schema != INDEX_SCHEMA {
            return Err(StorageError::Service {
                op: "reading the library",
                key,
                status: None,
                message: format!("index schema {} is not {INDEX_SCHEMA}", index.schema),
                transient: false,
            });
        }
        Ok(Some(index))
    }

    /// A published index as queries read it, from the cache or the store: without the
    /// per-frame boxes (a clip's labels, frame counts and transcript are what a query ranks
    /// by, and each frame's count of boxes per label what counts and co-occurrence need),
    /// so a replica's cache of a thousand videos stays a few megabytes.
    async fn searchable(
        &self,
        storage: &Storage,
        video: &VideoId,
        analysis: &AnalysisId,
        meaning: Option<&dyn Meaning>,
    ) -> Result<Option<Arc<Searchable>>, StorageError> {
        let at = (video.clone(), analysis.clone());
        if let Some(hit) = self.cache.lock().expect("cache lock").get(&at) {
            return Ok(Some(hit.clone()));
        }
        let Some(mut index) = self.load(storage, video, analysis).await? else {
            return Ok(None);
        };
        let frames = index.clips.iter().map(result::frame_labels).collect();
        for clip in &mut index.clips {
            clip.detections = Vec::new();
        }
        // Made without the model, or by another: the segments are embedded here, once.
        if let Cow::Owned(made) = result::index_meanings(&index, meaning) {
            index.meanings = made;
            index.embedder = Some(crate::embed::MODEL_NAME.to_owned());
        }
        let index = Arc::new(Searchable { index, frames });
        self.cache
            .lock()
            .expect("cache lock")
            .insert(at, index.clone());
        Ok(Some(index))
    }

    /// Every published analysis, by video: the markers as last listed, listed again only
    /// when the generation object changed since (any replica's publish or delete), so a
    /// query costs one small read, not a listing, and never misses a change.
    pub async fn published(&self, storage: &Storage) -> Result<Arc<Published>, StorageError> {
        let mut listing = self.listing.lock().await;
        let generation = storage.etag(keys::LIBRARY_GENERATION).await?;
        if let Some((seen, published)) = listing.as_ref()
            && *seen == generation
            && generation.is_some()
        {
            return Ok(published.clone());
        }
        // Listed after the generation was read: a change made meanwhile bumps it again,
        // and the next query lists again.
        let mut videos: Published = BTreeMap::new();
        for key in storage.list_keys(keys::LIBRARY_PREFIX).await? {
            if let Some((video, analysis)) = keys::library_marker_of(&key) {
                videos.entry(video).or_default().push(analysis);
            }
        }
        let videos = Arc::new(videos);
        *listing = Some((generation, videos.clone()));
        Ok(videos)
    }

    /// Of a video's published analyses, the one a query reads: this process's own when it
    /// has one, else the last listed.
    fn chosen<'a>(&self, analyses: &'a [AnalysisId]) -> Option<&'a AnalysisId> {
        analyses
            .iter()
            .find(|a| **a == self.analysis)
            .or_else(|| analyses.last())
    }

    /// `POST /query`: the moments that answer `body.query` across the library (or the named
    /// videos), best first.
    pub async fn query(
        &self,
        storage: &Storage,
        body: &QueryBody,
        meaning: Option<&dyn Meaning>,
    ) -> Result<QueryAnswer, ApiError> {
        let started = Instant::now();
        let (text, only, limit) = validate(body)?;
        let published = self.published(storage).await.map_err(ApiError::from)?;
        let listed = Instant::now();
        if let Some(missing) = only.iter().find(|v| !published.contains_key(*v)) {
            return Err(unknown_video(missing));
        }
        let wanted: Vec<(VideoId, AnalysisId)> = published
            .iter()
            .filter(|(video, _)| only.is_empty() || only.contains(video))
            .filter_map(|(video, analyses)| Some((video.clone(), self.chosen(analyses)?.clone())))
            .collect();
        let indexes: Vec<Arc<Searchable>> = futures::stream::iter(wanted)
            .map(|(video, analysis)| async move {
                self.searchable(storage, &video, &analysis, meaning).await
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            // A marker whose index is gone is a video being deleted: skipped.
            .filter_map(|r| r.transpose())
            .collect::<Result<_, _>>()
            .map_err(ApiError::from)?;
        let read = Instant::now();
        // Read once (the model embeds the query's phrases once), answered per video.
        let plan = query::understand_with(text, meaning);
        let mut understood = result::answer_plan(&plan, &[], &[], &[]);
        let mut unknown: Option<Vec<String>> = None;
        let mut moments = Vec::new();
        for index in &indexes {
            let answer = result::answer_plan(
                &plan,
                &index.index.clips,
                &index.index.meanings,
                &index.frames,
            );
            // A word is not understood when no video's speech has it either.
            unknown = Some(match unknown {
                None => answer.unknown.clone(),
                Some(u) => u
                    .into_iter()
                    .filter(|w| answer.unknown.contains(w))
                    .collect(),
            });
            let index = &index.index;
            for moment in answer.clips {
                let key = index
                    .clips
                    .iter()
                    .find(|c| c.clip.as_str() == moment.clip)
                    .map(|c| c.key.clone())
                    .unwrap_or_default();
                moments.push(FoundMoment {
                    video: index.video.clone(),
                    analysis: index.analysis.clone(),
                    request_id: index.request_id.clone(),
                    key,
                    moment,
                });
            }
        }
        // As within one video: both kinds of evidence above one, more terms above fewer,
        // then the score; ties in library order.
        let rank = |m: &FoundMoment| {
            let m = &m.moment;
            let kinds = usize::from(!m.matched.is_empty()) + usize::from(!m.said.is_empty());
            (kinds, m.matched.len() + m.said.len())
        };
        moments.sort_by(|a, b| {
            rank(b)
                .cmp(&rank(a))
                .then_with(|| b.moment.score.total_cmp(&a.moment.score))
        });
        moments.truncate(limit);
        if let Some(u) = unknown {
            understood.unknown = u;
        }
        let ms = |from: Instant, to: Instant| round2((to - from).as_secs_f64() * 1000.0);
        let ranked = Instant::now();
        Ok(QueryAnswer {
            timings: QueryTimings {
                list_ms: ms(started, listed),
                read_ms: ms(listed, read),
                rank_ms: ms(read, ranked),
            },
            query: text.to_owned(),
            without: understood.without,
            together: understood.together,
            terms: understood.terms,
            labels: understood.labels,
            speech: understood.speech,
            unknown: understood.unknown,
            moments,
            videos_searched: indexes.len(),
            took_ms: round2(started.elapsed().as_secs_f64() * 1000.0),
        })
    }

    /// `GET /videos/{id}`: the record and each published analysis, summed up.
    pub async fn detail(
        &self,
        storage: &Storage,
        video: &VideoId,
    ) -> Result<VideoDetail, ApiError> {
        let analyses = analyses_of(storage, video).await?;
        let record = record_of(storage, video).await?;
        if record.is_none() && analyses.is_empty() {
            return Err(unknown_video(video));
        }
        // Read from the store, not through the queries' cache: what is cached there is
        // embedded with the model, which this route does not wait for.
        let mut summaries = Vec::new();
        for analysis in &analyses {
            if let Some(index) = self.load(storage, video, analysis).await? {
                summaries.push(summary(&index));
            }
        }
        Ok(VideoDetail {
            video: video.clone(),
            record,
            analyses: summaries,
        })
    }
}

impl Library {
    /// `DELETE /videos/{id}`: the video's analyses, index entries and record, and every
    /// object of the requests that used it but their `state.json`, which says so
    /// (`video_deleted_at`) and keeps nothing of the video but its id. Refused while one of
    /// those requests is still running (`409 video_in_use`). The markers go first, so
    /// queries stop finding the video before anything they would read is gone.
    pub async fn delete(&self, storage: &Storage, video: &VideoId) -> Result<Deleted, ApiError> {
        let tombstone = VideoKeys::new(video).deleting();
        let started = Deleting {
            started_at: Utc::now(),
        };
        storage.put_json(&tombstone, &started).await?;
        let deleted = self.delete_marked(storage, video).await;
        // Gone with the rest when the delete went through; removed here when it did not, so
        // that no request waits for a delete that is not happening.
        if let Err(e) = storage.delete(&tombstone).await {
            tracing::warn!(error = %e, %video, "could not remove deleting.json; it lapses");
        }
        deleted
    }

    /// [`Library::delete`], once `deleting.json` says so: requests of the video that come
    /// now wait, so the record read here names every request the delete must consider.
    async fn delete_marked(&self, storage: &Storage, video: &VideoId) -> Result<Deleted, ApiError> {
        let keys = VideoKeys::new(video);
        let record = storage
            .get_json::<VideoRecord>(&keys.record())
            .await?
            .map(|(r, _)| r);
        let markers = storage.list_keys(&keys.markers()).await?;
        if record.is_none() && markers.is_empty() {
            return Err(unknown_video(video));
        }
        let requests = record.map(|r| r.requests).unwrap_or_default();
        for request in &requests {
            let state = storage
                .get_json::<RequestState>(&RequestKeys::new(request).state())
                .await?;
            if state.is_some_and(|(s, _)| !s.status.is_terminal()) {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "video_in_use",
                    format!(
                        "request {request} of this video is still running; cancel it or wait for it"
                    ),
                ));
            }
        }
        let mut objects = 0;
        for key in &markers {
            storage.delete(key).await?;
            objects += 1;
        }
        bump_generation(storage).await?;
        self.cache
            .lock()
            .expect("cache lock")
            .retain(|(v, _), _| v != video);
        for request in &requests {
            objects += forget_request_media(storage, request).await?;
        }
        let tombstone = keys.deleting();
        for key in storage.list_keys(keys.root()).await? {
            if key != tombstone {
                storage.delete(&key).await?;
                objects += 1;
            }
        }
        tracing::info!(%video, objects, requests = requests.len(), "deleted a video");
        Ok(Deleted {
            video: video.clone(),
            objects,
            requests,
        })
    }
}

impl Library {
    /// `POST /videos/rebuild`: the library made again from the stage outputs. Every
    /// completed request that made an analysis with this orchestrator's parameters (not
    /// answered from the library, not fresh, its video not deleted) is published again
    /// from its `final.json`, as when it completed: the index (kept when it is there), the
    /// marker, the video's record. Safe to run at any time, and again.
    pub async fn rebuild(
        &self,
        storage: &Storage,
        meaning: Option<&dyn Meaning>,
    ) -> Result<Rebuilt, ApiError> {
        let mut rebuilt = Rebuilt::default();
        let mut after: Option<String> = None;
        loop {
            let page = storage
                .list_page(keys::REQUESTS_PREFIX, Some("/"), after.as_deref(), 1000)
                .await?;
            let ids: Vec<RequestId> = page
                .prefixes
                .iter()
                .filter_map(|p| keys::request_id_of(p))
                .collect();
            for id in &ids {
                rebuilt.requests += 1;
                match self.republish(storage, id, meaning).await? {
                    Some(true) => rebuilt.analyses += 1,
                    Some(false) => rebuilt.other_parameters += 1,
                    None => {}
                }
            }
            // `requests/{id}0` sorts after every key of `requests/{id}/`.
            after = ids
                .last()
                .map(|id| format!("{}{id}0", keys::REQUESTS_PREFIX));
            if !page.truncated || ids.is_empty() {
                break;
            }
        }
        tracing::info!(?rebuilt, "rebuilt the library");
        Ok(rebuilt)
    }

    /// Publishes again the analysis request `id` made: `Some(true)` when it did, `Some(false)`
    /// when it made one with other parameters, `None` when it made none to publish.
    async fn republish(
        &self,
        storage: &Storage,
        id: &RequestId,
        meaning: Option<&dyn Meaning>,
    ) -> Result<Option<bool>, StorageError> {
        let Some((state, _)) = storage
            .get_json::<RequestState>(&RequestKeys::new(id).state())
            .await?
        else {
            return Ok(None);
        };
        let made_one = state.status == RequestStatus::Completed
            && !state.submission.fresh
            && state.video_deleted_at.is_none();
        let (Some(used), Some(key), true) = (&state.analysis, &state.result_key, made_one) else {
            return Ok(None);
        };
        if used.reused {
            return Ok(None);
        }
        if used.analysis != self.analysis {
            return Ok(Some(false));
        }
        let Some((made, _)) = storage.get_json::<Final>(key).await? else {
            return Ok(None);
        };
        let bytes = made.input.as_ref().map_or(0, |i| i.bytes);
        self.saw(storage, &used.video, bytes, id, &state.submission.video_uri)
            .await?;
        let meanings = result::embed_segments(meaning, &made.clips);
        self.publish(storage, &used.video, &made, meanings).await?;
        Ok(Some(true))
    }
}

/// Removes every object of an ended request but its `state.json`, and marks that the video
/// was deleted. Returns the objects removed.
async fn forget_request_media(storage: &Storage, request: &RequestId) -> Result<usize, ApiError> {
    let keys = RequestKeys::new(request);
    let state_key = keys.state();
    let mut objects = 0;
    for key in storage.list_keys(keys.root()).await? {
        if key != state_key {
            storage.delete(&key).await?;
            objects += 1;
        }
    }
    loop {
        let Some((mut state, etag)) = storage.get_json::<RequestState>(&state_key).await? else {
            return Ok(objects);
        };
        state.forget_video(Utc::now());
        match storage.replace_json(&state_key, &state, &etag).await {
            Ok(_) => return Ok(objects),
            Err(StorageError::PreconditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// An index as queries read it ([`Library::searchable`]).
struct Searchable {
    index: VideoIndex,
    /// Each clip's frames' boxes by label.
    frames: Vec<result::FrameLabels>,
}

/// Every published analysis, by video.
pub type Published = BTreeMap<VideoId, Vec<AnalysisId>>;

/// Marks a change of the library's markers for every replica's next query.
async fn bump_generation(storage: &Storage) -> Result<(), StorageError> {
    let changed = (Utc::now(), uuid::Uuid::new_v4());
    storage.put_json(keys::LIBRARY_GENERATION, &changed).await?;
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// How often a request waiting out a delete of its video looks again.
const DELETE_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// A `deleting.json` this old is a delete that died midway (one takes seconds): requests
/// go on; a `DELETE` sent again finishes it.
const DELETE_STALE: chrono::Duration = chrono::Duration::minutes(2);

/// A video's published analyses, from its markers.
pub async fn analyses_of(
    storage: &Storage,
    video: &VideoId,
) -> Result<Vec<AnalysisId>, StorageError> {
    Ok(storage
        .list_keys(&VideoKeys::new(video).markers())
        .await?
        .iter()
        .filter_map(|k| keys::library_marker_of(k).map(|(_, a)| a))
        .collect())
}

/// A video's record (`video.json`), if it has one.
pub async fn record_of(
    storage: &Storage,
    video: &VideoId,
) -> Result<Option<VideoRecord>, StorageError> {
    Ok(storage
        .get_json::<VideoRecord>(&VideoKeys::new(video).record())
        .await?
        .map(|(r, _)| r))
}

/// Whether the request holding a claim ended (or is gone) without publishing it.
async fn ended_unpublished(storage: &Storage, holder: &RequestId) -> Result<bool, StorageError> {
    let state = storage
        .get_json::<RequestState>(&RequestKeys::new(holder).state())
        .await?;
    Ok(state.is_none_or(|(s, _)| s.status.is_terminal()))
}

fn summary(index: &VideoIndex) -> AnalysisSummary {
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for clip in &index.clips {
        for label in clip.labels.keys() {
            *labels.entry(label.clone()).or_default() += 1;
        }
    }
    AnalysisSummary {
        analysis: index.analysis.clone(),
        request_id: index.request_id.clone(),
        made_at: index.made_at,
        params: index.params.clone(),
        duration_s: index.media.as_ref().map(|m| m.duration_s),
        clips: index.clips.len(),
        labels,
        words: index
            .clips
            .iter()
            .filter_map(|c| c.transcript.as_ref())
            .map(|t| t.words)
            .sum(),
    }
}

/// The query, the videos asked about and the limit, or why the body cannot be answered.
fn validate(body: &QueryBody) -> Result<(&str, Vec<VideoId>, usize), ApiError> {
    let text = body.query.trim();
    if text.is_empty() {
        return Err(ApiError::unprocessable("invalid_query", "query is empty"));
    }
    if text.chars().count() > QueryBody::MAX_QUERY_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_query",
            format!(
                "query is longer than {} characters",
                QueryBody::MAX_QUERY_CHARS
            ),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            "query contains control characters",
        ));
    }
    let limit = body.limit.unwrap_or(QueryBody::DEFAULT_LIMIT);
    if !(1..=QueryBody::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_limit",
            format!("limit must be within 1..={}", QueryBody::MAX_LIMIT),
        ));
    }
    if body.videos.len() > 1000 {
        return Err(ApiError::unprocessable(
            "invalid_video_id",
            "at most 1000 videos may be named",
        ));
    }
    let videos = body
        .videos
        .iter()
        .map(|v| parse_video(v))
        .collect::<Result<_, _>>()?;
    Ok((text, videos, limit as usize))
}

/// A video id from a path or a body: 400 `invalid_video_id` when it is not one.
pub fn parse_video(raw: &str) -> Result<VideoId, ApiError> {
    raw.parse().map_err(|e: fave_common::ids::InvalidId| {
        ApiError::bad_request("invalid_video_id", e.to_string())
    })
}

fn unknown_video(video: &VideoId) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "unknown_video",
        format!("no video {video} in the library"),
    )
}
