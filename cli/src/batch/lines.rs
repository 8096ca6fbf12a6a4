//! Reading the batch: each line becomes a submission with its idempotency key, or a bad
//! line.

use std::path::{Path, PathBuf};

use fave_common::state::Profile;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::Submission;
use crate::term;

/// One line to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub line: usize,
    pub submission: Submission,
    pub key: String,
}

/// A line that cannot be submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub text: String,
    pub error: String,
}

impl BadLine {
    pub(super) fn result(&self) -> Value {
        json!({
            "line": self.line,
            "status": "INVALID",
            "error": {"code": "invalid_line", "message": self.error},
            "text": term::cut(&self.text, 500),
        })
    }
}

/// A JSON line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineSpec {
    video_uri: String,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    profile: Option<String>,
}

/// What a line falls back on.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub query: Option<String>,
    pub profile: Option<String>,
    /// Where relative paths are read from.
    pub base_dir: PathBuf,
}

/// Reads the batch: items to submit and bad lines, in line order (1-based numbers).
pub fn parse(text: &str, defaults: &Defaults, identity: &str) -> (Vec<Item>, Vec<BadLine>) {
    let (mut items, mut bad) = (Vec::new(), Vec::new());
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_line(trimmed, defaults) {
            Ok(submission) => {
                let key = idempotency_key(identity, line, &submission);
                items.push(Item {
                    line,
                    submission,
                    key,
                });
            }
            Err(error) => bad.push(BadLine {
                line,
                text: trimmed.to_owned(),
                error,
            }),
        }
    }
    (items, bad)
}

fn parse_line(text: &str, defaults: &Defaults) -> Result<Submission, String> {
    let (uri, query, profile) = if text.starts_with('{') {
        let spec: LineSpec =
            serde_json::from_str(text).map_err(|e| format!("not a batch JSON line: {e}"))?;
        (spec.video_uri, spec.query, spec.profile)
    } else {
        (text.to_owned(), None, None)
    };
    let profile = profile
        .or_else(|| defaults.profile.clone())
        .map(|p| p.parse::<Profile>())
        .transpose()?;
    Ok(Submission {
        video_uri: video_uri(&uri, &defaults.base_dir)?,
        query: query
            .or_else(|| defaults.query.clone())
            .filter(|q| !q.trim().is_empty()),
        profile,
        callback_url: None,
        fresh: false,
    })
}

/// A URI as it is (the orchestrator judges its scheme), or a path made into an absolute
/// file:// URI.
fn video_uri(text: &str, base_dir: &Path) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("video_uri is empty".into());
    }
    if text.contains("://") {
        return url::Url::parse(text)
            .map(|_| text.to_owned())
            .map_err(|e| format!("{text:?} is not a URI: {e}"));
    }
    let path = base_dir.join(text);
    let path =
        std::fs::canonicalize(&path).map_err(|e| format!("no video at {}: {e}", path.display()))?;
    if !path.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    url::Url::from_file_path(&path)
        .map(|u| u.to_string())
        .map_err(|()| format!("{} cannot be a file:// URI", path.display()))
}

/// `fave-batch-` and 40 hex digits of SHA-256 over the batch's identity, the line's number
/// and the submission the line makes (after defaults): stable across runs, distinct for two
/// equal lines, and new when a line's meaning changes (so a changed line is a new request
/// rather than a `409 idempotency_key_reused`).
pub fn idempotency_key(identity: &str, line: usize, submission: &Submission) -> String {
    let mut h = Sha256::new();
    h.update(b"fave batch v1\0");
    h.update(identity.as_bytes());
    h.update(b"\0");
    h.update(line.to_string().as_bytes());
    h.update(b"\0");
    h.update(
        serde_json::to_string(submission)
            .unwrap_or_default()
            .as_bytes(),
    );
    format!("fave-batch-{}", &hex::encode(h.finalize())[..40])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(dir: &Path) -> Defaults {
        Defaults {
            query: Some("find bikes".into()),
            profile: None,
            base_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn lines_are_uris_paths_or_json_and_bad_ones_keep_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"x").unwrap();
        let text = "\
# videos
a.mp4

s3://bucket/b.mp4
{\"video_uri\": \"s3://bucket/c.mp4\", \"query\": \"cars\", \"profile\": \"cold\"}
{\"video_uri\": \"s3://bucket/d.mp4\", \"profile\": \"hot\"}
{not json
missing.mp4
{\"uri\": \"s3://x\"}
ftp://host/e.mp4
";
        let (items, bad) = parse(text, &defaults(dir.path()), "name:t");
        let lines: Vec<usize> = items.iter().map(|i| i.line).collect();
        assert_eq!(lines, [2, 4, 5, 10]);
        assert!(items[0].submission.video_uri.starts_with("file:///"));
        assert!(items[0].submission.video_uri.ends_with("/a.mp4"));
        assert_eq!(items[0].submission.query.as_deref(), Some("find bikes"));
        assert_eq!(items[2].submission.query.as_deref(), Some("cars"));
        assert_eq!(items[2].submission.profile, Some(Profile::Cold));
        // The orchestrator, not the CLI, judges schemes.
        assert_eq!(items[3].submission.video_uri, "ftp://host/e.mp4");
        let bad_lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(bad_lines, [6, 7, 8, 9]);
        assert!(bad[0].error.contains("unknown profile"), "{:?}", bad[0]);
        assert!(
            bad[1].error.contains("not a batch JSON line"),
            "{:?}",
            bad[1]
        );
        assert!(bad[2].error.contains("no video at"), "{:?}", bad[2]);
        assert!(bad[3].error.contains("unknown field"), "{:?}", bad[3]);
        assert_eq!(bad[1].result()["line"], 7);
    }

    #[test]
    fn keys_are_stable_distinct_and_valid_headers() {
        let sub = |q: &str| Submission {
            video_uri: "s3://b/k".into(),
            query: Some(q.into()),
            profile: None,
            callback_url: None,
            fresh: false,
        };
        let a = idempotency_key("name:x", 1, &sub("cars"));
        assert_eq!(a, idempotency_key("name:x", 1, &sub("cars")));
        assert_ne!(a, idempotency_key("name:x", 2, &sub("cars")));
        assert_ne!(a, idempotency_key("name:y", 1, &sub("cars")));
        assert_ne!(a, idempotency_key("name:x", 1, &sub("bikes")));
        assert_eq!(a.len(), "fave-batch-".len() + 40);
        assert!(a.bytes().all(|b| b.is_ascii_graphic()));
    }
}
