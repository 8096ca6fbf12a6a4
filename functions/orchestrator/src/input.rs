//! Copying the user's video in. The URI is checked and the bytes fetched into a local file
//! *before* anything is written to the store, so a missing or unreachable video leaves no
//! trace. Sizes and times are capped while streaming, so an endless stream cannot fill a disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fave_common::error::ApiError;
use fave_common::storage::{Storage, StorageError};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use url::Url;

/// The longest `video_uri` accepted.
pub const MAX_URI_LEN: usize = 2048;

/// A video URI that passed validation.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Http(Url),
    S3 { bucket: String, key: String },
}

impl Source {
    /// Parses and checks a `video_uri`; `file://` only in local mode.
    pub fn parse(raw: &str, local_mode: bool) -> Result<Self, ApiError> {
        let invalid = |m: String| ApiError::unprocessable("invalid_video_uri", m);
        if raw.trim().is_empty() {
            return Err(invalid("video_uri is empty".into()));
        }
        if raw.len() > MAX_URI_LEN {
            return Err(invalid(format!(
                "video_uri is longer than {MAX_URI_LEN} characters"
            )));
        }
        // URL parsing would silently drop a CR/LF or tab; a URI carrying one is refused.
        if raw.chars().any(char::is_control) {
            return Err(invalid("video_uri contains control characters".into()));
        }
        if crate::guard::is_ambiguous(raw) {
            return Err(invalid(
                "video_uri contains a backslash, which URL parsers read differently".into(),
            ));
        }
        let url = Url::parse(raw).map_err(|e| invalid(format!("video_uri is not a URI: {e}")))?;
        match url.scheme() {
            "file" if local_mode => url
                .to_file_path()
                .map(Source::File)
                .map_err(|()| invalid("video_uri is not a usable file:// path".into())),
            "file" => Err(invalid(
                "file:// video URIs are accepted only in local mode; use s3:// or https://".into(),
            )),
            "http" | "https" => match crate::guard::check_url(&url, local_mode) {
                Ok(()) => Ok(Source::Http(url)),
                Err(e) => Err(forbidden(&e)),
            },
            "s3" => {
                let bucket = url.host_str().unwrap_or_default().to_owned();
                let key = url.path().trim_start_matches('/').to_owned();
                if bucket.is_empty() || key.is_empty() {
                    return Err(invalid(
                        "an s3:// URI needs a bucket and a key: s3://bucket/key".into(),
                    ));
                }
                Ok(Source::S3 { bucket, key })
            }
            other => Err(invalid(format!(
                "unsupported scheme {other:?}: use s3://, http(s):// or, locally, file://"
            ))),
        }
    }

    /// The file extension the stored copy keeps (`mp4`, `avi`, …).
    pub fn extension(&self) -> String {
        let path = match self {
            Source::File(p) => p.to_string_lossy().into_owned(),
            Source::Http(u) => u.path().to_owned(),
            Source::S3 { key, .. } => key.clone(),
        };
        Path::new(&path)
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A URL as error messages and logs show it: without a user's password or token in the
/// userinfo, and without the query, which for a presigned URL is a credential.
pub fn shown(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let hidden_query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    if hidden_query {
        format!("{shown}?…")
    } else {
        shown.to_string()
    }
}

/// 422 for a video URL that leads to an internal address (the SSRF guard).
impl Source {
    /// Refuses an `s3://` input outside `allowed` (`(bucket, key prefix)` pairs) and any in
    /// the store's own request data: a submitter reads only what it may, never another
    /// request's video or outputs.
    pub fn check_allowed(
        &self,
        allowed: &[(String, String)],
        artifacts_bucket: &str,
    ) -> Result<(), ApiError> {
        let Source::S3 { bucket, key } = self else {
            return Ok(());
        };
        let refuse = |why: &str| {
            Err(ApiError::unprocessable(
                "forbidden_input",
                format!("video_uri: s3://{bucket}/… {why}"),
            ))
        };
        let own_data = [fave_common::keys::REQUESTS_PREFIX, "videos/", "index/"];
        if key.split('/').any(|part| part == ".." || part == ".") {
            return refuse("names a relative path");
        }
        if bucket == artifacts_bucket && own_data.iter().any(|p| key.starts_with(p)) {
            return refuse("is fave's own data, not an input");
        }
        if allowed
            .iter()
            .any(|(b, prefix)| b == bucket && key.starts_with(prefix.as_str()))
        {
            Ok(())
        } else {
            refuse("is outside the buckets and prefixes inputs may come from (FAVE_S3_INPUTS)")
        }
    }
}

fn forbidden(e: &crate::guard::ForbiddenAddress) -> ApiError {
    ApiError::unprocessable("forbidden_address", format!("video_uri: {e}"))
}

/// The fetched input: a file of the user's own (local mode) or one we downloaded.
pub enum Fetched {
    Local(PathBuf),
    Downloaded(tempfile::TempPath),
}

impl Fetched {
    pub fn path(&self) -> &Path {
        match self {
            Fetched::Local(p) => p,
            Fetched::Downloaded(t) => t,
        }
    }
}

/// Limits on copying an input in.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub timeout: Duration,
}

/// Fetches `source` into a local file, checking existence, size and time.
pub async fn fetch(
    source: &Source,
    storage: &Storage,
    http: &reqwest::Client,
    limits: Limits,
) -> Result<Fetched, ApiError> {
    let too_large = || {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "input_too_large",
            format!("the video is larger than {} bytes", limits.max_bytes),
        )
    };
    match source {
        Source::File(path) => {
            let meta = tokio::fs::metadata(path).await.map_err(|_| {
                ApiError::unprocessable("input_not_found", format!("no file at {}", path.display()))
            })?;
            if !meta.is_file() {
                return Err(ApiError::unprocessable(
                    "input_not_found",
                    format!("{} is not a file", path.display()),
                ));
            }
            if meta.len() > limits.max_bytes {
                return Err(too_large());
            }
            Ok(Fetched::Local(path.clone()))
        }
        Source::Http(url) => {
            let temp = temp_file()?;
            let shown = shown(url);
            let download = async {
                let response = http.get(url.clone()).send().await.map_err(|e| {
                    if let Some(f) = crate::guard::forbidden_in(&e) {
                        return forbidden(&f);
                    }
                    ApiError::unprocessable(
                        "input_unreachable",
                        format!("fetching {shown}: {}", e.without_url()),
                    )
                })?;
                let status = response.status();
                if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
                    return Err(ApiError::unprocessable(
                        "input_not_found",
                        format!("{shown} answered {status}"),
                    ));
                }
                if !status.is_success() {
                    return Err(ApiError::unprocessable(
                        "input_unreachable",
                        format!("{shown} answered {status}"),
                    ));
                }
                if response
                    .content_length()
                    .is_some_and(|n| n > limits.max_bytes)
                {
                    return Err(too_large());
                }
                let mut file = tokio::fs::File::create(&temp)
                    .await
                    .map_err(|e| ApiError::internal(format!("creating a temp file: {e}")))?;
                let mut written = 0u64;
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| {
                        ApiError::unprocessable(
                            "input_unreachable",
                            format!("reading {shown}: {}", e.without_url()),
                        )
                    })?;
                    written += chunk.len() as u64;
                    if written > limits.max_bytes {
                        return Err(too_large());
                    }
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| ApiError::internal(format!("writing a temp file: {e}")))?;
                }
                file.flush()
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(())
            };
            tokio::time::timeout(limits.timeout, download)
                .await
                .map_err(|_| {
                    ApiError::unprocessable(
                        "input_timeout",
                        format!("fetching {shown} took longer than {:?}", limits.timeout),
                    )
                })??;
            Ok(Fetched::Downloaded(temp))
        }
        Source::S3 { bucket, key } => {
            let temp = temp_file()?;
            let other = storage.for_bucket(bucket);
            let fetch = other.get_to_file_limited(key, &temp, limits.max_bytes);
            match tokio::time::timeout(limits.timeout, fetch).await {
                Err(_) => Err(ApiError::unprocessable(
                    "input_timeout",
                    format!("fetching s3://{bucket}/{key} timed out"),
                )),
                Ok(Err(StorageError::NotFound { .. })) => Err(ApiError::unprocessable(
                    "input_not_found",
                    format!("no object at s3://{bucket}/{key}"),
                )),
                Ok(Err(StorageError::TooLarge { .. })) => Err(too_large()),
                Ok(Err(e)) if e.is_transient() => Err(e.into()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading an s3:// input failed");
                    Err(ApiError::unprocessable("input_unreachable", e.plain()))
                }
                Ok(Ok(_)) => Ok(Fetched::Downloaded(temp)),
            }
        }
    }
}

fn temp_file() -> Result<tempfile::TempPath, ApiError> {
    tempfile::NamedTempFile::new()
        .map(tempfile::NamedTempFile::into_temp_path)
        .map_err(|e| ApiError::internal(format!("creating a temp file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_checked() {
        assert!(matches!(
            Source::parse("file:///tmp/a.mp4", true),
            Ok(Source::File(_))
        ));
        assert_eq!(
            Source::parse("file:///tmp/a.mp4", false).unwrap_err().code,
            "invalid_video_uri"
        );
        assert!(matches!(
            Source::parse("https://example.com/v.mp4", false),
            Ok(Source::Http(_))
        ));
        assert!(matches!(
            Source::parse("s3://bucket/dir/v.mp4", false),
            Ok(Source::S3 { ref bucket, ref key }) if bucket == "bucket" && key == "dir/v.mp4"
        ));
        for bad in [
            "",
            "  ",
            "ftp://x/y",
            "gopher://x",
            "javascript:alert(1)",
            "s3://bucket",
            "s3:///key",
            "not a uri",
            "https://example.com/v.mp4\r\nX-Injected: 1",
            "https://exa\tmple.com/v.mp4",
        ] {
            assert!(Source::parse(bad, true).is_err(), "{bad:?}");
        }
        assert!(Source::parse(&format!("https://x/{}", "a".repeat(MAX_URI_LEN)), true).is_err());
    }

    #[test]
    fn shown_urls_keep_no_credentials() {
        let url = Url::parse("https://alice:hunter2@cdn.example.com/v.mp4?X-Amz-Signature=abc#t=3")
            .unwrap();
        assert_eq!(shown(&url), "https://cdn.example.com/v.mp4?…");
        let plain = Url::parse("https://cdn.example.com/v.mp4").unwrap();
        assert_eq!(shown(&plain), "https://cdn.example.com/v.mp4");
    }

    #[test]
    fn extension_comes_from_the_path() {
        assert_eq!(
            Source::parse("https://x/a/b.MP4?x=y.avi", false)
                .unwrap()
                .extension(),
            "MP4"
        );
        assert_eq!(
            Source::parse("s3://b/k/video", false).unwrap().extension(),
            ""
        );
    }
}
