//! The one place S3 keys are built. Every key of a request lives under `requests/{id}/`,
//! and every part of a key is a validated id, so no caller can escape its request's folder.

use crate::ids::{ClipId, RequestId, StageName};

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

    /// `requests/{id}/input/source.{ext}`; `ext` is reduced to a short lowercase alphanumeric
    /// word (or `bin`), because it comes from a user's URI.
    pub fn input(&self, ext: &str) -> String {
        let ext = ext.to_ascii_lowercase();
        let ext = if !ext.is_empty()
            && ext.len() <= 8
            && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            ext
        } else {
            "bin".to_owned()
        };
        format!("{}input/source.{ext}", self.root)
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
