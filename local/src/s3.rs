//! The embedded S3-compatible server: s3s's protocol layer over s3s-fs's file store, on
//! loopback, with SigV4 credentials.
//!
//! s3s-fs checks `If-None-Match`/`If-Match` and then writes, as two steps, and `GetObject`
//! opens the file and reads the stored ETag as two steps. Two writers can both pass the check,
//! and a reader can pair old bytes with a new ETag, which would let a compare-and-swap
//! overwrite a newer value. [`Serialized`] closes both gaps: writes to a key hold that key's
//! lock exclusively, reads of a key hold it shared while they open the object. The locks are
//! striped (a fixed number, hashed by bucket and key), so memory stays bounded.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tokio::task::JoinSet;

const LOCK_STRIPES: usize = 256;

/// s3s-fs with per-key serialization of conditional writes; see the module docs.
pub struct Serialized {
    fs: s3s_fs::FileSystem,
    stripes: Vec<RwLock<()>>,
    hasher: RandomState,
}

impl Serialized {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let fs =
            s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(Self {
            fs,
            stripes: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            hasher: RandomState::new(),
        })
    }

    fn stripe(&self, bucket: &str, key: &str) -> usize {
        (self.hasher.hash_one((bucket, key)) % LOCK_STRIPES as u64) as usize
    }

    fn lock(&self, bucket: &str, key: &str) -> &RwLock<()> {
        &self.stripes[self.stripe(bucket, key)]
    }
}

#[async_trait::async_trait]
impl S3 for Serialized {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let lock = self.lock(&req.input.bucket, &req.input.key);
        let _guard = lock.write().await;
        self.fs.put_object(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let lock = self.lock(&req.input.bucket, &req.input.key);
        let _guard = lock.write().await;
        self.fs.complete_multipart_upload(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let lock = self.lock(&req.input.bucket, &req.input.key);
        let _guard = lock.write().await;
        self.fs.copy_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let lock = self.lock(&req.input.bucket, &req.input.key);
        let _guard = lock.write().await;
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        // Take every stripe involved, in index order, so two batch deletes cannot deadlock.
        let mut stripes: Vec<usize> = req
            .input
            .delete
            .objects
            .iter()
            .map(|o| self.stripe(&req.input.bucket, &o.key))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.stripes[i].write().await);
        }
        self.fs.delete_objects(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        // Held while the object is opened and its ETag read; the body streams from the open
        // file afterwards, which a later rename does not change.
        let lock = self.lock(&req.input.bucket, &req.input.key);
        let _guard = lock.read().await;
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let lock = self.lock(&req.input.bucket, &req.input.key);
        let _guard = lock.read().await;
        self.fs.head_object(req).await
    }

    // Everything below touches no object's bytes and ETag together, so it needs no lock.

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}

/// How to start the embedded server.
#[derive(Debug, Clone)]
pub struct S3ServerOptions {
    /// Where objects are kept; buckets are its subdirectories.
    pub data_dir: PathBuf,
    /// `127.0.0.1:0` picks a free port.
    pub addr: SocketAddr,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// A running embedded S3 server. Dropping it stops it.
pub struct EmbeddedS3 {
    addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl EmbeddedS3 {
    /// Binds and starts serving in the background.
    pub async fn start(options: &S3ServerOptions) -> std::io::Result<Self> {
        std::fs::create_dir_all(&options.data_dir)?;
        let fs = Serialized::new(&options.data_dir)?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            options.access_key_id.clone(),
            options.secret_access_key.clone(),
        ));
        let service = builder.build();
        let listener = TcpListener::bind(options.addr).await?;
        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let (socket, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "embedded S3: accept failed");
                        continue;
                    }
                };
                let service = service.clone();
                connections.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        tracing::info!(%addr, data_dir = %options.data_dir.display(), "embedded S3 server listening");
        Ok(Self { addr, tasks })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:{port}`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and drops every open connection.
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

impl Drop for EmbeddedS3 {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}
