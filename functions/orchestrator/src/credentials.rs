//! The secret parts of a submission's URLs (a password in the userinfo, a presigned URL's
//! query, a callback's token) are kept only as long as they are needed, and never shown.
//!
//! At submission the URLs are split ([`split`]): `state.json`, and so every answer,
//! final.json, the CLI and the callback's body, holds them without their secrets
//! ([`without_secrets`]); the whole URLs go to `requests/{id}/metadata/credentials.json`,
//! written only when there is a secret to keep. The input's is forgotten once the video is
//! copied in ([`forget_video_uri`]); the callback's once the request owes nothing more
//! ([`forget`], when the request leaves the active index).

use fave_common::ids::RequestId;
use fave_common::keys::RequestKeys;
use fave_common::state::Submission;
use fave_common::storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};
use url::Url;

/// The whole URLs of a submission, where they differ from what `state.json` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

impl Kept {
    fn is_empty(&self) -> bool {
        self.video_uri.is_none() && self.callback_url.is_none()
    }
}

/// A URI as fave keeps and shows it: an http(s) URL without its userinfo and query (a
/// presigned URL's signature is a credential), as logs already show it; any other URI as
/// it is (`s3://` and `file://` carry no secrets).
pub fn without_secrets(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && (!url.username().is_empty()
                    || url.password().is_some()
                    || url.query().is_some()) =>
        {
            crate::input::shown(&url)
        }
        _ => raw.to_owned(),
    }
}

/// The submission as `state.json` keeps it, and what must be kept apart to use it.
pub fn split(mut submission: Submission) -> (Submission, Kept) {
    let mut kept = Kept::default();
    let shown = without_secrets(&submission.video_uri);
    if shown != submission.video_uri {
        kept.video_uri = Some(std::mem::replace(&mut submission.video_uri, shown));
    }
    if let Some(url) = submission.callback_url.as_mut() {
        let shown = without_secrets(url);
        if &shown != url {
            kept.callback_url = Some(std::mem::replace(url, shown));
        }
    }
    (submission, kept)
}

/// Writes what `split` kept, if anything, before the request's `state.json` exists.
pub async fn keep(storage: &Storage, id: &RequestId, kept: &Kept) -> Result<(), StorageError> {
    if kept.is_empty() {
        return Ok(());
    }
    storage
        .put_json(&RequestKeys::new(id).credentials(), kept)
        .await
        .map(|_| ())
}

async fn load(storage: &Storage, id: &RequestId) -> Result<Kept, StorageError> {
    Ok(storage
        .get_json::<Kept>(&RequestKeys::new(id).credentials())
        .await?
        .map(|(kept, _)| kept)
        .unwrap_or_default())
}

/// The input's whole URI: the kept one, else the one `state.json` shows (which is whole
/// when it had no secret, and for requests accepted before credentials were kept apart).
pub async fn video_uri(
    storage: &Storage,
    id: &RequestId,
    shown: &str,
) -> Result<String, StorageError> {
    whole(storage, id, shown, |k| k.video_uri).await
}

/// The callback's whole URL, likewise.
pub async fn callback_url(
    storage: &Storage,
    id: &RequestId,
    shown: &str,
) -> Result<String, StorageError> {
    whole(storage, id, shown, |k| k.callback_url).await
}

async fn whole(
    storage: &Storage,
    id: &RequestId,
    shown: &str,
    pick: fn(Kept) -> Option<String>,
) -> Result<String, StorageError> {
    if !may_have_secrets(shown) {
        return Ok(shown.to_owned());
    }
    Ok(pick(load(storage, id).await?).unwrap_or_else(|| shown.to_owned()))
}

/// Only http(s) URLs have secrets split off: for the others nothing is looked up.
fn may_have_secrets(shown: &str) -> bool {
    shown.starts_with("http://") || shown.starts_with("https://")
}

/// Forgets the input's secret once the video is in the store.
pub async fn forget_video_uri(
    storage: &Storage,
    id: &RequestId,
    shown: &str,
) -> Result<(), StorageError> {
    if !may_have_secrets(shown) {
        return Ok(());
    }
    let mut kept = load(storage, id).await?;
    if kept.video_uri.take().is_none() {
        return Ok(());
    }
    let key = RequestKeys::new(id).credentials();
    if kept.is_empty() {
        storage.delete(&key).await
    } else {
        storage.put_json(&key, &kept).await.map(|_| ())
    }
}

/// Every secret a request kept, gone: it owes nothing more
/// ([`crate::record::leave_index`]).
pub async fn forget(storage: &Storage, id: &RequestId) -> Result<(), StorageError> {
    storage.delete(&RequestKeys::new(id).credentials()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_split_off_and_plain_uris_kept_as_they_are() {
        let submission = Submission {
            video_uri: "https://user:pa55@cdn.example.com/v.mp4?X-Amz-Signature=abc".into(),
            query: None,
            profile: Default::default(),
            callback_url: Some("https://hooks.example.com/done?token=t0k3n".into()),
            reach: None,
            fresh: false,
        };
        let (shown, kept) = split(submission.clone());
        let text = serde_json::to_string(&shown).unwrap();
        for needle in ["pa55", "user", "X-Amz-Signature", "abc", "t0k3n"] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
        assert_eq!(shown.video_uri, "https://cdn.example.com/v.mp4?…");
        assert_eq!(
            kept.video_uri.as_deref(),
            Some(submission.video_uri.as_str())
        );
        assert_eq!(kept.callback_url, submission.callback_url);

        for plain in [
            "s3://fave-artifacts/uploads/v.mp4",
            "file:///videos/a.mp4",
            "https://cdn.example.com/v.mp4",
        ] {
            assert_eq!(without_secrets(plain), plain);
            let (s, k) = split(Submission {
                video_uri: plain.into(),
                ..submission.clone()
            });
            assert_eq!(s.video_uri, plain);
            assert_eq!(k.video_uri, None);
        }
    }
}
