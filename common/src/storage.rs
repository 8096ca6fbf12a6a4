//! S3-compatible storage on aws-sdk-s3. Media is streamed between the store and files on
//! disk (multipart above [`MULTIPART_THRESHOLD`]); only small JSON is held in memory.
//! `state.json` is written with conditional requests: [`Storage::create_json`] sends
//! `If-None-Match: *` and [`Storage::replace_json`] `If-Match: <etag>`.
//!
//! Retries of individual S3 calls are the SDK's own (standard retry mode); nothing here
//! stacks a second loop on top.

use std::path::Path;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::S3Settings;

/// Objects at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: u64 = 8 * 1024 * 1024;

/// An object opened by [`Storage::open`]: its bytes arrive as they are read.
pub struct Opened {
    /// The bytes this answer holds (the whole object's, or the range's).
    pub length: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub body: ByteStream,
}

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no object at {key}")]
    NotFound { key: String },
    /// A conditional write lost: the object exists (create) or changed (replace).
    #[error("precondition failed writing {key}: it was created or changed by someone else")]
    PreconditionFailed { key: String },
    #[error("S3 {op} {key} failed: {message}")]
    Service {
        op: &'static str,
        key: String,
        status: Option<u16>,
        message: String,
        transient: bool,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{key} is larger than {limit} bytes")]
    TooLarge { key: String, limit: u64 },
    #[error("{key} is not the JSON expected: {source}")]
    Json {
        key: String,
        source: serde_json::Error,
    },
}

impl StorageError {
    /// Whether the same call may succeed later (throttling, 5xx, the store unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Service { transient, .. } => *transient,
            _ => false,
        }
    }

    /// A plain sentence for a client: what failed, without the SDK's chain of causes
    /// (which the caller logs).
    pub fn plain(&self) -> String {
        match self {
            StorageError::Service {
                op,
                transient: true,
                ..
            } => format!(
                "the store could not be reached or did not answer in time ({op}); try again"
            ),
            StorageError::Service { op, status, .. } => match status {
                Some(s) => format!("the store refused {op} with status {s}"),
                None => format!("the store refused {op}"),
            },
            StorageError::Io { op, .. } => format!("a local file operation failed ({op})"),
            StorageError::Json { key, .. } => format!("{key} does not hold the JSON expected"),
            StorageError::NotFound { .. }
            | StorageError::PreconditionFailed { .. }
            | StorageError::TooLarge { .. } => self.to_string(),
        }
    }

    fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    fn from_sdk<E, R>(op: &'static str, key: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HasStatus,
    {
        let status = err.raw_response().map(HasStatus::status);
        let code = err
            .as_service_error()
            .and_then(|e| e.code())
            .map(str::to_owned);
        match (status, code.as_deref()) {
            (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => {
                return StorageError::NotFound {
                    key: key.to_owned(),
                };
            }
            // 409 ConditionalRequestConflict: AWS's answer to two conditional writes at once.
            (Some(412 | 409), _) | (_, Some("PreconditionFailed")) => {
                return StorageError::PreconditionFailed {
                    key: key.to_owned(),
                };
            }
            _ => {}
        }
        let transient = match &err {
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => true,
            _ => {
                matches!(status, Some(s) if s >= 500 || s == 429)
                    || matches!(code.as_deref(), Some("SlowDown" | "RequestTimeout"))
            }
        };
        StorageError::Service {
            op,
            key: key.to_owned(),
            status,
            message: DisplayErrorContext(&err).to_string(),
            transient,
        }
    }
}

/// A store failure as a caller of an HTTP route sees it: `503 storage_unavailable` when it
/// may pass, else a 500; a plain sentence either way, and the SDK's chain of causes to the
/// log. The orchestrator's routes and the stage harness both answer with it.
impl From<StorageError> for crate::error::ApiError {
    fn from(e: StorageError) -> Self {
        tracing::warn!(error = %e, "a store call failed");
        if e.is_transient() {
            Self::unavailable("storage_unavailable", e.plain())
        } else {
            Self::internal(e.plain())
        }
    }
}

/// Lets error classification read the HTTP status of any SDK response type.
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredObject {
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A bucket on an S3-compatible store. Cheap to clone; build it once per process.
#[derive(Debug, Clone)]
pub struct Storage {
    client: Client,
    bucket: String,
}

impl Storage {
    /// Builds the client from the settings, the one place an S3 client is made.
    pub async fn connect(settings: &S3Settings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()));
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "fave-config",
            ));
        }
        let sdk = loader.load().await;
        // The SDK's own retries ride out a store that is briefly away; nothing here loops again.
        let retry = RetryConfig::standard()
            .with_max_attempts(settings.max_attempts)
            .with_max_backoff(std::time::Duration::from_secs(5));
        // Every attempt is bounded: the connect, and the wait for the answer's first byte.
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .read_timeout(settings.read_timeout)
            .build();
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(settings.force_path_style)
            .retry_config(retry)
            .timeout_config(timeouts);
        if settings.endpoint.is_some() {
            // S3-compatible servers differ in how far they support the newer default
            // checksums; send and check them only where the API requires it.
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: settings.bucket.clone(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the store answers for the bucket now (one `HeadBucket`, no retries beyond the
    /// SDK's), within `within`: for a readiness route.
    pub async fn reachable(&self, within: std::time::Duration) -> Result<(), StorageError> {
        let head = self.client.head_bucket().bucket(&self.bucket).send();
        match tokio::time::timeout(within, head).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StorageError::from_sdk("HeadBucket", &self.bucket, e)),
            Err(_) => Err(StorageError::Service {
                op: "HeadBucket",
                key: self.bucket.clone(),
                status: None,
                message: format!("the store did not answer within {within:?}"),
                transient: true,
            }),
        }
    }

    /// Creates the bucket unless it exists (local and dev stores start empty).
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => match StorageError::from_sdk("HeadBucket", &self.bucket, e) {
                StorageError::NotFound { .. } => {}
                other => return Err(other),
            },
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error().and_then(|s| s.code()),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(StorageError::from_sdk("CreateBucket", &self.bucket, e)),
        }
    }

    /// Uploads a file, streaming it; multipart at or above [`MULTIPART_THRESHOLD`].
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<StoredObject, StorageError> {
        let (bytes, sha256) = sha256_file(path).await?;
        self.put_hashed_file(key, path, bytes, sha256, content_type)
            .await
    }

    /// [`Storage::put_file`] for a file whose size and SHA-256 the caller has already read
    /// ([`sha256_file`]), so it is not read twice.
    pub async fn put_hashed_file(
        &self,
        key: &str,
        path: &Path,
        bytes: u64,
        sha256: String,
        content_type: &str,
    ) -> Result<StoredObject, StorageError> {
        if bytes >= MULTIPART_THRESHOLD {
            self.put_multipart(key, path, bytes, content_type).await?;
        } else {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| StorageError::io("read", path, std::io::Error::other(e)))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .body(body)
                .send()
                .await
                .map_err(|e| StorageError::from_sdk("PutObject", key, e))?;
        }
        Ok(StoredObject {
            key: key.to_owned(),
            bytes,
            sha256,
        })
    }

    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| StorageError::from_sdk("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(key, path, size, &upload_id).await;
        if result.is_err() {
            // Best effort: an abandoned upload only costs space, the error below is what matters.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let length = PART_SIZE.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| StorageError::io("read", path, std::io::Error::other(e)))?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(|e| StorageError::from_sdk("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += length;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| StorageError::from_sdk("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    /// The same store, another bucket (to copy a user's `s3://` input in).
    pub fn for_bucket(&self, bucket: &str) -> Storage {
        Storage {
            client: self.client.clone(),
            bucket: bucket.to_owned(),
        }
    }

    /// Downloads an object into a file, streaming it. Returns the bytes written.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StorageError> {
        self.get_to_file_limited(key, path, u64::MAX).await
    }

    /// Downloads an object into a file, streaming it, refusing more than `limit` bytes.
    pub async fn get_to_file_limited(
        &self,
        key: &str,
        path: &Path,
        limit: u64,
    ) -> Result<u64, StorageError> {
        self.download(key, None, path, limit).await
    }

    /// Downloads the bytes `range` of an object (fewer if it ends sooner) into a file,
    /// streaming them. Returns the bytes written.
    pub async fn get_range_to_file(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        path: &Path,
    ) -> Result<u64, StorageError> {
        if range.is_empty() {
            tokio::fs::File::create(path)
                .await
                .map_err(|e| StorageError::io("create", path, e))?;
            return Ok(0);
        }
        let limit = range.end - range.start;
        self.download(key, Some(range), path, limit).await
    }

    async fn download(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
        path: &Path,
        limit: u64,
    ) -> Result<u64, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end - 1)))
            .send()
            .await
            .map_err(|e| StorageError::from_sdk("GetObject", key, e))?;
        let too_large = || StorageError::TooLarge {
            key: key.to_owned(),
            limit,
        };
        if out.content_length().is_some_and(|n| n as u64 > limit) {
            return Err(too_large());
        }
        // One byte past the limit tells "exactly at the limit" from "over it".
        let mut reader = out.body.into_async_read().take(limit.saturating_add(1));
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| StorageError::io("create", path, e))?;
        // Copied by hand to tell the store failing mid-stream (transient: the connection
        // broke) from the local disk failing.
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let read = reader
                .read(&mut buf)
                .await
                .map_err(|e| StorageError::Service {
                    op: "GetObject",
                    key: key.to_owned(),
                    status: None,
                    message: format!("the download broke off: {e}"),
                    transient: true,
                })?;
            if read == 0 {
                break;
            }
            file.write_all(&buf[..read])
                .await
                .map_err(|e| StorageError::io("download to", path, e))?;
            n += read as u64;
        }
        file.flush()
            .await
            .map_err(|e| StorageError::io("download to", path, e))?;
        if n > limit {
            return Err(too_large());
        }
        Ok(n)
    }

    /// Reads a small JSON object and its ETag; `None` if there is no such object.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, String)>, StorageError> {
        let Some(out) = self.open(key, None).await? else {
            return Ok(None);
        };
        let etag = out.etag;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Service {
                op: "GetObject",
                key: key.to_owned(),
                status: None,
                message: e.to_string(),
                transient: true,
            })?
            .into_bytes();
        let value = serde_json::from_slice(&bytes).map_err(|source| StorageError::Json {
            key: key.to_owned(),
            source,
        })?;
        Ok(Some((value, etag)))
    }

    /// Writes a small JSON object unconditionally. Returns its ETag.
    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<String, StorageError> {
        self.write_json(key, value, Condition::None).await
    }

    /// Creates a JSON object only if none exists (`If-None-Match: *`).
    pub async fn create_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<String, StorageError> {
        self.write_json(key, value, Condition::Absent).await
    }

    /// Replaces a JSON object only if its ETag is still `etag` (`If-Match`): compare-and-swap.
    pub async fn replace_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        etag: &str,
    ) -> Result<String, StorageError> {
        self.write_json(key, value, Condition::Matches(etag)).await
    }

    /// Replaces `key` with `body`, JSON serialised already, if its ETag is still `etag`:
    /// for a writer that serialises under its own lock and writes after releasing it.
    pub async fn replace_json_bytes(
        &self,
        key: &str,
        body: Vec<u8>,
        etag: &str,
    ) -> Result<String, StorageError> {
        self.write_bytes(key, body, Condition::Matches(etag)).await
    }

    async fn write_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        condition: Condition<'_>,
    ) -> Result<String, StorageError> {
        let body = serde_json::to_vec_pretty(value).map_err(|source| StorageError::Json {
            key: key.to_owned(),
            source,
        })?;
        self.write_bytes(key, body, condition).await
    }

    async fn write_bytes(
        &self,
        key: &str,
        body: Vec<u8>,
        condition: Condition<'_>,
    ) -> Result<String, StorageError> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        put = match condition {
            Condition::None => put,
            Condition::Absent => put.if_none_match("*"),
            Condition::Matches(etag) => put.if_match(etag),
        };
        let out = put
            .send()
            .await
            .map_err(|e| StorageError::from_sdk("PutObject", key, e))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    /// An object's size in bytes, `None` if there is no such object.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self
            .head(key)
            .await?
            .map(|h| h.content_length().unwrap_or(0).max(0) as u64))
    }

    /// What HeadObject says of an object, `None` if there is no such object.
    async fn head(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) => match StorageError::from_sdk("HeadObject", key, e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Opens an object, or only its bytes `range` (first and last, inclusive), to stream
    /// it on as it comes, never held whole; `None` if there is no such object.
    pub async fn open(
        &self,
        key: &str,
        range: Option<std::ops::RangeInclusive<u64>>,
    ) -> Result<Option<Opened>, StorageError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.start(), r.end())))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                return match StorageError::from_sdk("GetObject", key, e) {
                    StorageError::NotFound { .. } => Ok(None),
                    other => Err(other),
                };
            }
        };
        Ok(Some(Opened {
            length: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_owned(),
            content_type: out.content_type().map(str::to_owned),
            body: out.body,
        }))
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.etag(key).await?.is_some())
    }

    /// An object's ETag, `None` if there is no such object.
    pub async fn etag(&self, key: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .head(key)
            .await?
            .map(|h| h.e_tag().unwrap_or_default().to_owned()))
    }

    /// Every key under a prefix, in key order.
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StorageError::from_sdk("ListObjectsV2", prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }

    /// One page of a listing in key order: the keys under `prefix`, or with `delimiter`
    /// the keys and the common prefixes up to it (a "directory" level), after `start_after`.
    pub async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<ListPage, StorageError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_owned))
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(i32::try_from(max.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| StorageError::from_sdk("ListObjectsV2", prefix, e))?;
        Ok(ListPage {
            keys: page
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect(),
            prefixes: page
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_owned))
                .collect(),
            truncated: page.is_truncated().unwrap_or(false),
        })
    }

    /// Deletes one object (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StorageError::from_sdk("DeleteObject", key, e))?;
        Ok(())
    }
}

/// One page of [`Storage::list_page`].
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub keys: Vec<String>,
    pub prefixes: Vec<String>,
    /// More follow this page.
    pub truncated: bool,
}

enum Condition<'a> {
    None,
    Absent,
    Matches(&'a str),
}

/// Size and SHA-256 of a file, read in 64 KiB chunks.
pub async fn sha256_file(path: &Path) -> Result<(u64, String), StorageError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| StorageError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| StorageError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that accepts connections and never answers (black-holed) costs each attempt
    /// its read timeout, then a transient error: the caller is not held forever.
    #[tokio::test]
    async fn a_store_that_never_answers_is_a_transient_error_after_the_read_timeout() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", silent.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        let lookup = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some(endpoint.clone()),
            "AWS_ACCESS_KEY_ID" => Some("k".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("s".to_owned()),
            "FAVE_SECRETS_DIR" => Some("/nonexistent".to_owned()),
            "FAVE_S3_MAX_ATTEMPTS" => Some("2".to_owned()),
            "FAVE_S3_READ_TIMEOUT_SECS" => Some("1".to_owned()),
            _ => None,
        };
        let storage = Storage::connect(&S3Settings::from_lookup(&lookup).unwrap()).await;
        let clock = std::time::Instant::now();
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            storage.get_json::<serde_json::Value>("requests/r1/metadata/state.json"),
        )
        .await
        .expect("the call ends by itself")
        .unwrap_err();
        let took = clock.elapsed();
        assert!(err.is_transient(), "{err}");
        assert_eq!(
            err.plain(),
            "the store could not be reached or did not answer in time (GetObject); try again"
        );
        assert!(
            took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(10),
            "two attempts of 1 s each: {took:?}"
        );
    }
}
