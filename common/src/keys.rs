//! The one place S3 keys are built. Every key of a request lives under `requests/{id}/`,
//! and every part of a key is a validated id, so no caller can escape its request's folder.

use crate::ids::{AnalysisId, ClipId, RequestId, StageName, VideoId};

/// The prefix under which every request's folder lives.
pub const REQUESTS_PREFIX: &str = "requests/";

/// The index of requests that are not yet terminal: one empty marker per request, created
/// before its `state.json` and removed after it ends, so resuming lists this small prefix
/// instead of every request ever made.
pub const ACTIVE_PREFIX: &str = "index/active/";

/// `index/active/{id}`
pub fn active_marker(id: &RequestId) -> String {
    format!("{ACTIVE_PREFIX}{id}")
}

/// Where the library keeps what it knows of each video: `videos/{video}/`.
pub const VIDEOS_PREFIX: &str = "videos/";

/// The library's listing: one empty marker per published analysis,
/// `index/library/{video}/{analysis}`, so a query lists one small prefix (a page of a
/// thousand videos per call) instead of every object of every video.
pub const LIBRARY_PREFIX: &str = "index/library/";

/// Rewritten (new content, so a new ETag) after every change to the library's markers, so
/// a reader relists them only when they changed: one small read per query instead of a
/// listing.
pub const LIBRARY_GENERATION: &str = "index/library.generation";

/// Keys of one video of the library.
#[derive(Debug, Clone)]
pub struct VideoKeys {
    root: String,
    video: VideoId,
}

impl VideoKeys {
    pub fn new(video: &VideoId) -> Self {
        Self {
            root: format!("{VIDEOS_PREFIX}{video}/"),
            video: video.clone(),
        }
    }

    /// `videos/{video}/`
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `videos/{video}/input/source.{ext}`: the video's bytes, stored once however many
    /// requests submit them.
    pub fn input(&self, ext: &str) -> String {
        format!("{}input/source.{}", self.root, extension(ext))
    }

    /// `videos/{video}/video.json`: its facts, the URIs it came under, the requests that
    /// used it.
    pub fn record(&self) -> String {
        format!("{}video.json", self.root)
    }

    /// `videos/{video}/deleting.json`: a delete of the video is under way (since when); a
    /// request of the video that finds it waits until it is gone.
    pub fn deleting(&self) -> String {
        format!("{}deleting.json", self.root)
    }

    /// `videos/{video}/{analysis}/claim.json`: which request is making this analysis.
    pub fn claim(&self, analysis: &AnalysisId) -> String {
        format!("{}{analysis}/claim.json", self.root)
    }

    /// `videos/{video}/{analysis}/index.json`: the analysis, once made; written once.
    pub fn index(&self, analysis: &AnalysisId) -> String {
        format!("{}{analysis}/index.json", self.root)
    }

    /// `index/library/{video}/`
    pub fn markers(&self) -> String {
        format!("{LIBRARY_PREFIX}{}/", self.video)
    }

    /// `index/library/{video}/{analysis}`
    pub fn marker(&self, analysis: &AnalysisId) -> String {
        format!("{}{analysis}", self.markers())
    }
}

/// A file extension from a user's URI reduced to a short lowercase alphanumeric word, or
/// `bin`.
fn extension(ext: &str) -> String {
    let ext = ext.to_ascii_lowercase();
    if !ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
        ext
    } else {
        "bin".to_owned()
    }
}

/// Whether `key` is a video's stored input, `videos/{sha256}/input/source.{ext}` exactly
/// (what `VideoKeys::input` makes): the one key outside a request's folder a stage may
/// read, named by the content's hash.
pub fn is_video_input(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(VIDEOS_PREFIX) else {
        return false;
    };
    let mut parts = rest.split('/');
    let (Some(video), Some("input"), Some(file), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    video.parse::<VideoId>().is_ok()
        && file
            .strip_prefix("source.")
            .is_some_and(|ext| extension(ext) == ext)
}

/// The video and analysis a library marker names.
pub fn library_marker_of(key: &str) -> Option<(VideoId, AnalysisId)> {
    let (video, analysis) = key.strip_prefix(LIBRARY_PREFIX)?.split_once('/')?;
    Some((video.parse().ok()?, analysis.parse().ok()?))
}

/// Keys of one request.
#[derive(Debug, Clone)]
pub struct RequestKeys {
    root: String,
}

impl RequestKeys {
    pub fn new(id: &RequestId) -> Self {
        Self {
            root: format!("{REQUESTS_PREFIX}{id}/"),
        }
    }

    /// `requests/{id}/`
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `requests/{id}/input/source.{ext}`: the input, when it is not kept by the library.
    pub fn input(&self, ext: &str) -> String {
        format!("{}input/source.{}", self.root, extension(ext))
    }

    /// `requests/{id}/metadata/state.json`
    pub fn state(&self) -> String {
        format!("{}metadata/state.json", self.root)
    }

    /// `requests/{id}/metadata/credentials.json`: a submission's URLs with their secret
    /// parts, kept apart from state.json and only until they are used.
    pub fn credentials(&self) -> String {
        format!("{}metadata/credentials.json", self.root)
    }

    /// `requests/{id}/metadata/final.json`
    pub fn result(&self) -> String {
        format!("{}metadata/final.json", self.root)
    }

    /// `requests/{id}/stages/{stage}/`: where a request-wide stage writes its outputs.
    pub fn stage_prefix(&self, stage: &StageName) -> String {
        format!("{}stages/{stage}/", self.root)
    }

    /// `requests/{id}/clips/{clip}/video.mp4`: a clip's video, where the clip list says it
    /// is (the stage that lists the clips names it; the stage that cuts them writes it).
    pub fn clip_video(&self, clip: &ClipId) -> String {
        format!("{}clips/{clip}/video.mp4", self.root)
    }

    /// `requests/{id}/clips/{clip}/{stage}/`: where a per-clip stage writes its outputs.
    pub fn clip_stage_prefix(&self, clip: &ClipId, stage: &StageName) -> String {
        format!("{}clips/{clip}/{stage}/", self.root)
    }
}

/// The manifest a stage writes last under its output prefix.
pub fn manifest(prefix: &str) -> String {
    format!("{prefix}manifest.json")
}

/// The request id of a key under `requests/`, if it is one.
pub fn request_id_of(key: &str) -> Option<RequestId> {
    key.strip_prefix(REQUESTS_PREFIX)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> RequestId {
        "r1".parse().unwrap()
    }

    #[test]
    fn a_video_lives_under_its_hash() {
        let video: VideoId = "ab".repeat(32).parse().unwrap();
        let analysis: AnalysisId = "0123456789abcdef".parse().unwrap();
        let k = VideoKeys::new(&video);
        assert_eq!(k.record(), format!("videos/{video}/video.json"));
        assert_eq!(
            k.index(&analysis),
            format!("videos/{video}/0123456789abcdef/index.json")
        );
        assert_eq!(
            library_marker_of(&k.marker(&analysis)),
            Some((video.clone(), analysis))
        );
        assert_eq!(library_marker_of("index/library/x/y"), None);
        assert!(is_video_input(&k.input("MP4")));
        assert!(k.input("MP4").ends_with("/input/source.mp4"));
        for hostile in [
            format!("videos/{video}/input/../../requests/r1/input/source.mp4"),
            format!("videos/{video}/input/source.MP4"),
            format!("videos/{video}/0123456789abcdef/index.json"),
            "videos/abc/input/source.mp4".to_owned(),
            format!("requests/r1/videos/{video}/input/source.mp4"),
        ] {
            assert!(!is_video_input(&hostile), "{hostile}");
        }
    }

    #[test]
    fn layout_matches_the_design() {
        let k = RequestKeys::new(&id());
        assert_eq!(k.root(), "requests/r1/");
        assert_eq!(k.state(), "requests/r1/metadata/state.json");
        assert_eq!(k.result(), "requests/r1/metadata/final.json");
        assert_eq!(k.input("MP4"), "requests/r1/input/source.mp4");
        let stage: StageName = "stage-ffmpeg-0".parse().unwrap();
        assert_eq!(
            manifest(&k.stage_prefix(&stage)),
            "requests/r1/stages/stage-ffmpeg-0/manifest.json"
        );
        assert_eq!(
            k.clip_stage_prefix(&ClipId::from_index(3), &stage),
            "requests/r1/clips/clip-0003/stage-ffmpeg-0/"
        );
        assert_eq!(
            k.clip_video(&ClipId::from_index(3)),
            "requests/r1/clips/clip-0003/video.mp4"
        );
    }

    #[test]
    fn hostile_extensions_are_neutralised() {
        let k = RequestKeys::new(&id());
        for bad in ["", "../../x", "mp4/..", "a.b", "verylongextension", "é"] {
            assert_eq!(k.input(bad), "requests/r1/input/source.bin", "{bad:?}");
        }
    }

    #[test]
    fn active_markers_name_their_request() {
        let key = active_marker(&id());
        assert_eq!(key, "index/active/r1");
        assert_eq!(
            key.strip_prefix(ACTIVE_PREFIX)
                .unwrap()
                .parse::<RequestId>()
                .unwrap(),
            id()
        );
    }

    #[test]
    fn request_id_round_trips_from_keys() {
        let k = RequestKeys::new(&id());
        assert_eq!(request_id_of(&k.state()), Some(id()));
        assert_eq!(request_id_of("other/r1/x"), None);
        assert_eq!(request_id_of("requests/../x"), None);
    }
}
