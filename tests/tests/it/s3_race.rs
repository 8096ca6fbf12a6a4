//! Conditional writes must hold under concurrency, not only one call at a time: `state.json`
//! leases and compare-and-swap depend on it. These run against the embedded server, or
//! against the server `AWS_ENDPOINT_URL` names.

use std::net::SocketAddr;
use std::sync::Arc;

use fave_common::config::S3Settings;
use fave_common::secrets::Secret;
use fave_common::storage::{Storage, StorageError};
use fave_local::s3::{EmbeddedS3, S3ServerOptions};
use serde_json::{Value, json};

struct RaceStore {
    storage: Storage,
    _server: Option<EmbeddedS3>,
    _dir: tempfile::TempDir,
}

async fn race_store() -> RaceStore {
    let dir = tempfile::tempdir().expect("a temp dir");
    let bucket = format!("race-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (settings, server) = match std::env::var("AWS_ENDPOINT_URL") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "test".into());
            let settings = S3Settings {
                bucket,
                endpoint: Some(endpoint.parse().expect("a URL")),
                region: "us-east-1".into(),
                access_key_id: Some(Secret::new(var("AWS_ACCESS_KEY_ID"))),
                secret_access_key: Some(Secret::new(var("AWS_SECRET_ACCESS_KEY"))),
                force_path_style: true,
                max_attempts: 3,
                read_timeout: std::time::Duration::from_secs(60),
            };
            (settings, None)
        }
        _ => {
            let server = EmbeddedS3::start(&S3ServerOptions {
                data_dir: dir.path().to_path_buf(),
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                access_key_id: "race".into(),
                secret_access_key: "race-secret".into(),
            })
            .await
            .expect("the embedded server starts");
            let settings = S3Settings {
                bucket,
                endpoint: Some(server.endpoint().parse().expect("a URL")),
                region: "us-east-1".into(),
                access_key_id: Some(Secret::new("race")),
                secret_access_key: Some(Secret::new("race-secret")),
                force_path_style: true,
                max_attempts: 3,
                read_timeout: std::time::Duration::from_secs(60),
            };
            (settings, Some(server))
        }
    };
    let storage = Storage::connect(&settings).await;
    storage.ensure_bucket().await.expect("the bucket exists");
    RaceStore {
        storage,
        _server: server,
        _dir: dir,
    }
}

/// Sixteen conditional creates of one key at once, twenty times over, since a store that
/// checks and then writes lets two win only now and then: each time one winner, fifteen
/// 412s, and the winner's bytes stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_creates_of_one_key_give_one_winner() {
    let store = race_store().await;
    let storage = Arc::new(store.storage.clone());
    for round in 0..20 {
        let key = format!("race/lease-{round}.json");
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let mut tasks = Vec::new();
        for writer in 0..16 {
            let (storage, key, start) = (storage.clone(), key.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                storage
                    .create_json(&key, &json!({ "writer": writer }))
                    .await
            }));
        }
        let mut winners = Vec::new();
        let mut lost = 0;
        for (writer, task) in tasks.into_iter().enumerate() {
            match task.await.expect("the task runs") {
                Ok(_) => winners.push(writer),
                Err(StorageError::PreconditionFailed { .. }) => lost += 1,
                Err(other) => panic!("writer {writer}: unexpected error {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}, winners: {winners:?}");
        assert_eq!(lost, 15);
        let (stored, _) = storage
            .get_json::<Value>(&key)
            .await
            .expect("readable")
            .expect("present");
        assert_eq!(
            stored["writer"], winners[0],
            "the stored object is the winner's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_times_ten_compare_and_swap_increments_reach_eighty() {
    let store = race_store().await;
    let storage = Arc::new(store.storage.clone());
    storage
        .create_json("race/counter.json", &json!({ "n": 0, "by": "init" }))
        .await
        .expect("created");
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..10 {
                loop {
                    let (value, etag) = storage
                        .get_json::<Value>("race/counter.json")
                        .await
                        .expect("readable")
                        .expect("present");
                    let n = value["n"].as_u64().expect("a number");
                    // `by` makes every write's bytes (and so its ETag) unique.
                    let next = json!({ "n": n + 1, "by": format!("{writer}-{n}") });
                    match storage
                        .replace_json("race/counter.json", &next, &etag)
                        .await
                    {
                        Ok(_) => break,
                        Err(StorageError::PreconditionFailed { .. }) => conflicts += 1,
                        Err(other) => panic!("writer {writer}: unexpected error {other}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.expect("the task runs");
    }
    let (value, _) = storage
        .get_json::<Value>("race/counter.json")
        .await
        .expect("readable")
        .expect("present");
    assert_eq!(
        value["n"], 80,
        "lost updates ({conflicts} conflicts were retried)"
    );
}

#[tokio::test]
async fn replace_of_a_missing_object_and_stale_etag_fail() {
    let store = race_store().await;
    let s = &store.storage;
    let err = s
        .replace_json("race/none.json", &json!({}), "\"0123\"")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::PreconditionFailed { .. } | StorageError::NotFound { .. }
        ),
        "{err}"
    );
    let first = s
        .create_json("race/x.json", &json!({ "v": 1 }))
        .await
        .expect("created");
    let second = s
        .replace_json("race/x.json", &json!({ "v": 2 }), &first)
        .await
        .expect("replaced");
    assert_ne!(first, second);
    let stale = s
        .replace_json("race/x.json", &json!({ "v": 3 }), &first)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StorageError::PreconditionFailed { .. }),
        "{stale}"
    );
}

#[tokio::test]
async fn large_files_go_up_in_parts_and_come_back_whole() {
    let store = race_store().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let src = dir.path().join("big.bin");
    // Just over the multipart threshold, with content that differs part to part.
    let size = fave_common::storage::MULTIPART_THRESHOLD as usize + 3 * 1024 * 1024 + 7;
    let data: Vec<u8> = (0..size)
        .map(|i| (i % 251) as u8 ^ (i / 1_000_003) as u8)
        .collect();
    std::fs::write(&src, &data).expect("written");
    let stored = store
        .storage
        .put_file("big/blob.bin", &src, "application/octet-stream")
        .await
        .expect("uploaded");
    assert_eq!(stored.bytes, size as u64);
    let back = dir.path().join("back.bin");
    let n = store
        .storage
        .get_to_file("big/blob.bin", &back)
        .await
        .expect("downloaded");
    assert_eq!(n, size as u64);
    let (_, sha) = fave_common::storage::sha256_file(&back)
        .await
        .expect("hashed");
    assert_eq!(sha, stored.sha256);
    let err = store
        .storage
        .get_to_file_limited("big/blob.bin", &back, 1024)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { .. }), "{err}");
}
