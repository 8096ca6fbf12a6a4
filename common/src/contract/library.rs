//! The video library: a video is analysed once and any number of queries are answered from
//! what was kept. What is kept, per video and analysis (`videos/{video}/{analysis}/`,
//! `keys::VideoKeys`), and the library's API bodies (`POST /query`, `GET /videos`,
//! `GET /videos/{id}`, `DELETE /videos/{id}`).
//!
//! ```text
//! videos/{video}/input/source.{ext}     the video's bytes, stored once
//! videos/{video}/video.json               VideoRecord: bytes, the URIs it came under,
//!                                         first and last seen, the requests that used it
//! videos/{video}/{analysis}/claim.json    AnalysisClaim: the request making it
//! videos/{video}/{analysis}/index.json    VideoIndex: the analysis, written once
//! index/library/{video}/{analysis}        an empty marker per published analysis
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::report::{ClipReport, Moment, Term};
use super::{audio, detect, ffmpeg0};
use crate::ids::{AnalysisId, RequestId, VideoId};

/// The shape of `index.json`; a reader refuses a schema it does not know.
pub const INDEX_SCHEMA: u32 = 1;

/// Everything that changes an analysis's result. Its digest is the analysis's id, so
/// changing any of these makes a new analysis, never a wrong reuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisParams {
    /// The stage table and its contract, by version: bumped when a stage's meaning changes.
    pub pipeline: String,
    pub frames_per_second: f64,
    pub frame_max_width: u32,
    pub clip_min_s: f64,
    pub clip_max_s: f64,
    /// The detector's model and its thresholds.
    pub detector: String,
    pub detect: detect::DetectOptions,
    /// The speech-to-text model.
    pub transcriber: String,
    /// The operator's word for the stage functions' own settings, which the orchestrator
    /// cannot see (`FAVE_ANALYSIS_TAG`: change it with a function's model or gate).
    pub tag: String,
}

impl AnalysisParams {
    /// The first 16 hex digits of the SHA-256 of the parameters as JSON (field order is
    /// the struct's, so the same parameters always give the same id).
    pub fn id(&self) -> AnalysisId {
        let json = serde_json::to_vec(self).expect("analysis parameters serialise");
        hex::encode(&Sha256::digest(&json)[..8])
            .parse()
            .expect("16 hex digits are an analysis id")
    }
}

/// `claim.json`: the request making an analysis. Created with `If-None-Match: *`, so of
/// concurrent first requests for one video one analyses and the others wait for it; taken
/// over (`If-Match`) only when that request ended without publishing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisClaim {
    pub request_id: RequestId,
    pub claimed_at: DateTime<Utc>,
}

/// `index.json`: one analysis of one video, all a query needs: the source's facts, the
/// clips with every sampled frame's detections and the transcript segments, the audio
/// summary. Built from the stage outputs of the request that made it (the same clips its
/// `final.json` holds), and written once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoIndex {
    pub schema: u32,
    pub video: VideoId,
    pub analysis: AnalysisId,
    pub params: AnalysisParams,
    /// The request whose stages made it; the clip videos and frames are under its folder.
    pub request_id: RequestId,
    pub made_at: DateTime<Utc>,
    pub bytes: u64,
    pub media: Option<ffmpeg0::Output>,
    pub audio: Option<audio::Output>,
    pub clips: Vec<ClipReport>,
    /// The embeddings of each clip's transcript segments (by clip, then segment) by
    /// [`VideoIndex::embedder`], for matching what was said by meaning; empty when no model
    /// made them (a reader with one makes them itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meanings: Vec<Vec<Vec<f32>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
}

/// `video.json`: what the library knows of a video apart from its analyses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoRecord {
    pub video: VideoId,
    pub bytes: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The URIs it was submitted as (without secrets), most recent last, at most
    /// [`VideoRecord::MAX_URIS`].
    pub uris: Vec<String>,
    /// Every request that submitted these bytes, oldest first.
    pub requests: Vec<RequestId>,
}

impl VideoRecord {
    pub const MAX_URIS: usize = 20;

    /// Notes one more request of this video, submitted as `uri`.
    pub fn saw(&mut self, request: &RequestId, uri: &str, now: DateTime<Utc>) {
        self.last_seen = now;
        self.uris.retain(|u| u != uri);
        self.uris.push(uri.to_owned());
        if self.uris.len() > Self::MAX_URIS {
            self.uris.remove(0);
        }
        if !self.requests.contains(request) {
            self.requests.push(request.clone());
        }
    }
}

/// The body of `POST /query`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub query: String,
    /// Only these videos (their ids); every video of the library when absent or empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub videos: Vec<String>,
    /// At most this many moments, 1–[`QueryBody::MAX_LIMIT`]; [`QueryBody::DEFAULT_LIMIT`]
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl QueryBody {
    pub const DEFAULT_LIMIT: u64 = 20;
    pub const MAX_LIMIT: u64 = 1000;
    /// The longest query accepted, in characters.
    pub const MAX_QUERY_CHARS: usize = 500;
}

/// The answer to `POST /query`: the moments that answer it across the library, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryAnswer {
    pub query: String,
    /// How the query was understood: its object terms and the labels they map to, the
    /// phrases to listen for, the words not understood.
    pub terms: Vec<Term>,
    pub labels: Vec<String>,
    pub speech: Vec<String>,
    pub unknown: Vec<String>,
    /// Objects that must not be seen, and whether the others must be seen together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub together: bool,
    pub moments: Vec<FoundMoment>,
    /// Videos looked at, and the time the answer took in the orchestrator.
    pub videos_searched: usize,
    pub took_ms: f64,
    /// Where that time went: listing the library, reading the indexes not cached yet,
    /// ranking.
    pub timings: QueryTimings,
}

/// Where a query's time went, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryTimings {
    pub list_ms: f64,
    pub read_ms: f64,
    pub rank_ms: f64,
}

/// One moment of one video that answers a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundMoment {
    pub video: VideoId,
    pub analysis: AnalysisId,
    /// The request whose analysis it comes from (its clip video is under its folder).
    pub request_id: RequestId,
    /// The clip's video in the store.
    pub key: String,
    #[serde(flatten)]
    pub moment: Moment,
}

/// A page of `GET /videos`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoPage {
    pub videos: Vec<VideoSummary>,
    /// Set while more may follow: the `cursor` of the next page.
    pub next_cursor: Option<String>,
}

/// A video as the library's list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoSummary {
    pub video: VideoId,
    pub analyses: Vec<AnalysisId>,
    pub bytes: Option<u64>,
    /// The URI it was last submitted as.
    pub uri: Option<String>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// `GET /videos/{id}`: the video, its analyses, the requests that used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoDetail {
    pub video: VideoId,
    pub record: Option<VideoRecord>,
    pub analyses: Vec<AnalysisSummary>,
}

/// One analysis as `GET /videos/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSummary {
    pub analysis: AnalysisId,
    pub request_id: RequestId,
    pub made_at: DateTime<Utc>,
    pub params: AnalysisParams,
    pub duration_s: Option<f64>,
    pub clips: usize,
    /// Each label seen, with the number of clips it was seen in.
    pub labels: std::collections::BTreeMap<String, usize>,
    /// Words said, over every clip.
    pub words: usize,
}

/// The answer to `POST /videos/rebuild`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilt {
    /// Requests looked at.
    pub requests: usize,
    /// Analyses published again from their requests' outputs.
    pub analyses: usize,
    /// Analyses left alone: made with other parameters than this orchestrator's, which it
    /// cannot restate.
    pub other_parameters: usize,
}

/// `deleting.json`: a delete of the video is under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleting {
    pub started_at: DateTime<Utc>,
}

/// The answer to `DELETE /videos/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub video: VideoId,
    /// Objects removed from the bucket.
    pub objects: usize,
    /// The requests that used the video: their media and results are gone, their records
    /// say so (`video_deleted_at`).
    pub requests: Vec<RequestId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> AnalysisParams {
        AnalysisParams {
            pipeline: "video/1".into(),
            frames_per_second: 1.0,
            frame_max_width: 640,
            clip_min_s: 5.0,
            clip_max_s: 20.0,
            detector: "yolov3-tiny".into(),
            detect: detect::DetectOptions::default(),
            transcriber: "whisper-tiny.en".into(),
            tag: String::new(),
        }
    }

    #[test]
    fn the_analysis_id_is_stable_and_changes_with_any_parameter() {
        let a = params();
        assert_eq!(a.id(), params().id());
        let changed = [
            AnalysisParams {
                frames_per_second: 2.0,
                ..params()
            },
            AnalysisParams {
                clip_max_s: 10.0,
                ..params()
            },
            AnalysisParams {
                detector: "yolov4-tiny".into(),
                ..params()
            },
            AnalysisParams {
                tag: "gate-off".into(),
                ..params()
            },
        ];
        for c in changed {
            assert_ne!(a.id(), c.id(), "{c:?}");
        }
    }

    #[test]
    fn a_video_record_keeps_uris_distinct_and_bounded() {
        let now = Utc::now();
        let r: RequestId = "r1".parse().unwrap();
        let mut v = VideoRecord {
            video: "ab".repeat(32).parse().unwrap(),
            bytes: 1,
            first_seen: now,
            last_seen: now,
            uris: vec![],
            requests: vec![],
        };
        for i in 0..30 {
            v.saw(&r, &format!("file:///v{i}.mp4"), now);
        }
        v.saw(&r, "file:///v10.mp4", now);
        assert_eq!(v.uris.len(), VideoRecord::MAX_URIS);
        assert_eq!(v.uris.last().unwrap(), "file:///v10.mp4");
        assert_eq!(v.requests, vec![r]);
    }
}
