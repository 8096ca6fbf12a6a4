//! A real video through the gateway, the orchestrator and stage-ffmpeg-0 (real ffmpeg),
//! with everything checked in the store afterwards.

use std::time::Duration;

use fave_common::contract::detect;
use fave_common::keys::{self, RequestKeys};
use fave_common::state::{RequestState, RequestStatus, StageStatus};
use serde_json::{Value, json};

use crate::util::{TestStack, duration, ffprobe, file_uri, read, request_id, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_video_runs_end_to_end_through_the_gateway() {
    let t = TestStack::start().await;
    let video = sample("bigbuckbunny.mp4");
    let source_duration = duration(&ffprobe(&video, &[]));

    // Watch state.json while the request runs, to see its transitions.
    let watcher = {
        let store = t.store().clone();
        tokio::spawn(async move {
            let mut seen: Vec<RequestStatus> = Vec::new();
            for _ in 0..3000 {
                for key in store.list_keys("requests/").await.unwrap_or_default() {
                    if key.ends_with("metadata/state.json")
                        && let Ok(Some((s, _))) = store.get_json::<RequestState>(&key).await
                        && seen.last() != Some(&s.status)
                    {
                        seen.push(s.status);
                    }
                }
                if seen.last().is_some_and(|s| s.is_terminal()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };

    // The body goes chunked (no Content-Length), as of-watchdog forwards bodies.
    let body = json!({ "video_uri": file_uri(&video), "query": "find scenes with a rabbit", "profile": "cold" });
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .to_string()
        .into_bytes()
        .chunks(7)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let response = t
        .http
        .post(t.url("orchestrator", ""))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("the gateway answers");
    let (status, headers, answer) = read(response).await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    for h in ["x-call-id", "x-start-time", "x-duration-seconds"] {
        assert!(headers.contains_key(h), "the gateway adds {h}");
    }
    assert_eq!(answer["status"], "COMPLETED");
    let id = request_id(&answer);
    let seen = watcher.await.expect("the watcher runs");
    assert!(seen.contains(&RequestStatus::Running), "saw {seen:?}");
    assert_eq!(seen.last(), Some(&RequestStatus::Completed), "saw {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] != RequestStatus::Completed),
        "nothing after COMPLETED: {seen:?}"
    );

    // state.json records the whole story.
    let keys = RequestKeys::new(&id);
    let state = t.state(&id).await;
    assert_eq!(state.status, RequestStatus::Completed);
    assert_eq!(
        state.submission.query.as_deref(),
        Some("find scenes with a rabbit")
    );
    assert!(
        state.revision >= 4,
        "every transition is a write: revision {}",
        state.revision
    );
    let input = state.input.as_ref().expect("the input was copied in");
    assert_eq!(
        input.bytes,
        std::fs::metadata(&video).expect("exists").len()
    );
    assert!(t.store().exists(&input.key).await.expect("head works"));
    let stage = &state.stages[0];
    assert_eq!(stage.name.as_str(), "stage-ffmpeg-0");
    assert_eq!(stage.status, StageStatus::Succeeded);
    assert_eq!(stage.attempts.len(), 1);
    let attempt = &stage.attempts[0];
    assert_eq!(attempt.http_status, Some(200));
    assert!(
        attempt
            .call_id
            .as_deref()
            .is_some_and(|c| uuid::Uuid::parse_str(c).is_ok()),
        "{attempt:?}"
    );
    let (started, ended) = (
        stage.started_at.expect("started"),
        stage.ended_at.expect("ended"),
    );
    assert!(
        state.created_at <= started && started <= ended && ended <= state.ended_at.expect("ended")
    );

    // The same function made the canonical video beside it, as a stage of its own.
    let encode = &state.stages[1];
    assert_eq!(encode.name.as_str(), "stage-ffmpeg-0-video");
    assert_eq!(encode.status, StageStatus::Succeeded);

    // Every output, and the manifests, exist; final.json is the answer.
    for (stage, names) in [
        (
            stage,
            &["audio", "speech", "keyframes", "frames", "probe"][..],
        ),
        (encode, &["video", "probe"][..]),
    ] {
        let prefix = keys.stage_prefix(&stage.name);
        let mut written: Vec<&str> = stage.outputs.keys().map(String::as_str).collect();
        written.retain(|n| !n.starts_with("frame-"));
        let mut wanted = names.to_vec();
        wanted.sort_unstable();
        assert_eq!(written, wanted, "{}", stage.name);
        for key in stage.outputs.values() {
            assert!(key.starts_with(&prefix), "{key}");
            assert!(t.store().exists(key).await.expect("head works"), "{key}");
        }
        let (manifest, _) = t
            .store()
            .get_json::<Value>(&keys::manifest(&prefix))
            .await
            .expect("readable")
            .expect("manifest");
        assert_eq!(manifest["outputs"], json!(stage.outputs));
    }
    let (final_json, _) = t
        .store()
        .get_json::<Value>(&keys.result())
        .await
        .expect("readable")
        .expect("final.json");
    assert_eq!(final_json, answer);

    // The canonical video is H.264 of the source's length, with a keyframe every second.
    let dir = tempfile::tempdir().expect("a temp dir");
    let mp4 = dir.path().join("video.mp4");
    t.store()
        .get_to_file(&encode.outputs["video"], &mp4)
        .await
        .expect("downloaded");
    let probe = ffprobe(&mp4, &[]);
    let v = probe["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("video");
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(v["pix_fmt"], "yuv420p");
    assert!(
        (duration(&probe) - source_duration).abs() < 0.15,
        "{} vs {source_duration}",
        duration(&probe)
    );
    assert!(
        (answer["media"]["duration_s"].as_f64().expect("a number") - source_duration).abs() < 0.15
    );
    let frames = ffprobe(
        &mp4,
        &[
            "-select_streams",
            "v:0",
            "-skip_frame",
            "nokey",
            "-show_entries",
            "frame=pts_time",
        ],
    );
    let keyframes: Vec<f64> = frames["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .filter_map(|f| f["pts_time"].as_str()?.parse().ok())
        .collect();
    let whole_seconds = source_duration.floor() as usize;
    assert!(keyframes.len() > whole_seconds, "keyframes {keyframes:?}");
    for (i, k) in keyframes.iter().enumerate().take(whole_seconds) {
        assert!(
            (k - i as f64).abs() < 0.05,
            "keyframe {i} at {k}: {keyframes:?}"
        );
    }
    // The analysis said where they would be before the video existed, to the frame: the
    // clips are planned on those times and cut at them.
    let (foretold, _) = t
        .store()
        .get_json::<Value>(&stage.outputs["keyframes"])
        .await
        .expect("readable")
        .expect("keyframes.json");
    let foretold: Vec<f64> = serde_json::from_value(foretold["times"].clone()).expect("times");
    assert_eq!(
        foretold.len(),
        keyframes.len(),
        "{foretold:?} vs {keyframes:?}"
    );
    for (f, k) in foretold.iter().zip(&keyframes) {
        assert!(
            (f - (k - keyframes[0])).abs() < 1e-3,
            "{foretold:?} vs {keyframes:?}"
        );
    }

    // The wavs are mono 16-bit PCM, at 22050 Hz for the analysis and 16 kHz for speech.
    for (name, rate) in [("audio", "22050"), ("speech", "16000")] {
        let wav = dir.path().join(format!("{name}.wav"));
        t.store()
            .get_to_file(&stage.outputs[name], &wav)
            .await
            .expect("downloaded");
        let probe = ffprobe(&wav, &[]);
        let a = &probe["streams"][0];
        assert_eq!(
            (
                a["codec_name"].as_str(),
                a["channels"].as_u64(),
                a["sample_rate"].as_str()
            ),
            (Some("pcm_s16le"), Some(1), Some(rate)),
            "{name}"
        );
    }

    // GET /requests/{id} and /result through the gateway agree with the store.
    let (status, _, got) = t.get(&format!("/requests/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got["status"], "COMPLETED");
    assert_eq!(got["revision"], state.revision);
    let (status, _, result) = t.get(&format!("/requests/{id}/result")).await;
    assert_eq!((status, result), (200, answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_without_sound_completes_without_a_wav() {
    let t = TestStack::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let video = silent_video(dir.path(), 15, 2.5);
    let (status, _, answer) = t.submit(&json!({ "video_uri": file_uri(&video) })).await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    assert_eq!(answer["media"]["has_audio"], false);
    assert_eq!(answer["media"]["source_video_codec"], "mpeg4");
    let outputs = &answer["stages"]["stage-ffmpeg-0"]["outputs"];
    assert!(outputs.get("audio").is_none(), "{outputs}");
    assert!(outputs.get("speech").is_none(), "{outputs}");
    let video = &answer["stages"]["stage-ffmpeg-0-video"]["outputs"]["video"];
    assert!(video.is_string(), "{answer}");
    // No sound: the audio stage still runs and proposes no cut. Shorter than the shortest
    // clip: the whole video is one clip, a copy of the canonical video, with frames looked
    // at.
    assert_eq!(answer["audio"]["has_audio"], false);
    assert_eq!(answer["audio"]["cuts"], json!([]));
    let clips = answer["clips"].as_array().expect("clips");
    assert_eq!(clips.len(), 1, "{clips:?}");
    assert_eq!(clips[0]["start_s"], 0.0);
    assert!((clips[0]["end_s"].as_f64().expect("a number") - 2.5).abs() < 0.1);
    let id = request_id(&answer);
    let clip_key = RequestKeys::new(&id).clip_video(&"clip-0000".parse().expect("an id"));
    assert_eq!(clips[0]["key"], clip_key);
    let (clip, canonical) = (dir.path().join("clip.mp4"), dir.path().join("video.mp4"));
    for (key, file) in [
        (clip_key.as_str(), &clip),
        (video.as_str().unwrap(), &canonical),
    ] {
        t.store().get_to_file(key, file).await.expect("downloaded");
    }
    assert_eq!(
        std::fs::read(&clip).expect("read"),
        std::fs::read(&canonical).expect("read"),
        "the one clip is the canonical video"
    );
    assert_eq!(
        clips[0]["frames"], 3,
        "1 frame a second of 2.5 s: at 0, 1 and 2 s"
    );
    assert!(answer["answer"].is_null(), "no query, no answer");
    assert_eq!(
        answer["submission"]["profile"], "warm",
        "the default profile"
    );
    // The stored copy keeps the input's extension.
    assert!(
        answer["input"]["key"]
            .as_str()
            .expect("a key")
            .ends_with("/input/source.mkv")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_is_also_taken_from_s3_and_http_uris() {
    let t = TestStack::start().await;
    let video = sample("bikes.mp4");
    // s3://: another object in the same store.
    let bucket = t.store().bucket().to_owned();
    t.store()
        .put_file("uploads/bikes.mp4", &video, "video/mp4")
        .await
        .expect("uploaded");
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": format!("s3://{bucket}/uploads/bikes.mp4") }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    assert_eq!(
        answer["input"]["bytes"],
        std::fs::metadata(&video).expect("exists").len()
    );
    // Only from where inputs may come (by default the bucket's uploads/): never another
    // request's data, never a bucket nobody configured. Refused before anything is written.
    let other = answer["request_id"].as_str().expect("an id");
    let before = t.request_keys().await.len();
    for uri in [
        format!("s3://{bucket}/requests/{other}/input/source.mp4"),
        format!("s3://{bucket}/requests/{other}/stages/stage-ffmpeg-0-video/video.mp4"),
        format!("s3://{bucket}/uploads/../requests/{other}/input/source.mp4"),
        format!("s3://{bucket}/index/active/{other}"),
        "s3://someone-elses-bucket/private/video.mp4".to_owned(),
    ] {
        let (status, _, refused) = t.submit(&json!({ "video_uri": uri })).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (422, Some("forbidden_input")),
            "{uri}: {refused}"
        );
    }
    assert_eq!(
        t.request_keys().await.len(),
        before,
        "refusals wrote nothing"
    );

    // http://: a small file server on loopback (local mode allows loopback).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let bytes = std::fs::read(&video).expect("readable");
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let found = request.starts_with("GET /bikes.mp4 ");
            let head = if found {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    bytes.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = socket.write_all(head.as_bytes()).await;
            if found {
                let _ = socket.write_all(&bytes).await;
            }
        }
    });
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": format!("http://{addr}/bikes.mp4") }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    assert_eq!(answer["status"], "COMPLETED");
    let before = t.request_keys().await.len();
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": format!("http://{addr}/missing.mp4") }))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("input_not_found")),
        "{answer}"
    );
    assert_eq!(
        t.request_keys().await.len(),
        before,
        "a missing video writes nothing"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_clip_is_looked_at_on_every_core() {
    // Four frames a second of a 3 s video: one clip of 12 frames, one detection call. The
    // difference gate is off: every frame is to be looked at.
    let t =
        TestStack::start_with(&[("FAVE_FRAMES_PER_SEC", "4"), ("FAVE_DETECT_GATE", "false")]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let video = silent_video(dir.path(), 25, 3.0);
    let (status, _, answer) = t.submit(&json!({ "video_uri": file_uri(&video) })).await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    let state = t.state(&request_id(&answer)).await;
    assert_eq!(state.clips.len(), 1);
    let detect = state.clips[0]
        .task(&"stage-detect".parse().expect("a stage name"))
        .expect("a detection task");
    let seen: detect::Output = detect
        .result()
        .expect("a result")
        .expect("its contract's output");
    assert_eq!(seen.frames, 12, "{seen:?}");
    // The detector's own time, summed over the frames, exceeds the call's whole work only
    // if frames were looked at side by side: one after another, it is a part of it.
    let (looking, work) = (seen.detect_ms, detect.metrics.work_ms.expect("work_ms"));
    if std::thread::available_parallelism().map_or(1, usize::from) >= 2 {
        assert!(
            looking > work,
            "{looking} ms of detection in {work} ms of work"
        );
    }
}

/// `silent.mkv` in `dir`: ffmpeg's moving test pattern, 320×240 at `fps`, MPEG-4, no sound.
fn silent_video(dir: &std::path::Path, fps: u32, seconds: f64) -> std::path::PathBuf {
    let video = dir.join("silent.mkv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size=320x240:rate={fps}:duration={seconds}"
        ))
        .args(["-c:v", "mpeg4"])
        .arg(&video)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    video
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_with_uneven_frame_times_is_cut_where_it_was_planned() {
    // 24 frames a second with two jumps in time (at frames 100 and 200): the frame at or
    // after 9 s is at 9.208 s. The clips are planned on the analysis's times before the
    // canonical video exists; the encode must keep them for the cut to land there.
    let t =
        TestStack::start_with(&[("FAVE_CLIP_MIN_SECS", "1"), ("FAVE_CLIP_MAX_SECS", "3")]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let video = dir.path().join("uneven.mkv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=24:duration=12")
        .args(["-vf", "setpts=(N/24+gt(N\\,100)*0.53+gt(N\\,200)*0.31)/TB"])
        .args([
            "-fps_mode",
            "passthrough",
            "-enc_time_base:v",
            "1:1000",
            "-c:v",
            "mpeg4",
        ])
        .arg(&video)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    let (status, _, answer) = t.submit(&json!({ "video_uri": file_uri(&video) })).await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    let clips = answer["clips"].as_array().expect("clips");
    let starts: Vec<f64> = clips
        .iter()
        .map(|c| c["start_s"].as_f64().expect("a number"))
        .collect();
    assert_eq!(starts, [0.0, 3.0, 6.0, 9.208], "{clips:?}");
    // The last clip's video starts with the picture shown at 9.208 s: its first frame is
    // a keyframe, and it holds every frame from there on (24 a second, from 9.208 s).
    let id = request_id(&answer);
    let last = dir.path().join("last.mp4");
    let key = RequestKeys::new(&id).clip_video(&"clip-0003".parse().expect("an id"));
    t.store().get_to_file(&key, &last).await.expect("cut");
    let frames = ffprobe(
        &last,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time,key_frame",
        ],
    );
    let frames = frames["frames"].as_array().expect("frames");
    assert_eq!(frames[0]["key_frame"], 1);
    let end = clips[3]["end_s"].as_f64().expect("a number");
    let expected = ((end - 9.208) * 24.0).round() as usize;
    assert!(
        frames.len().abs_diff(expected) <= 1,
        "{} frames in {end} - 9.208 s",
        frames.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_between_two_sampled_frames_completes_with_none() {
    // A frame every 4 s, clips of 2 s: the clip from 2 to 4 s holds no frame to look at.
    let t = TestStack::start_with(&[
        ("FAVE_FRAMES_PER_SEC", "0.25"),
        ("FAVE_CLIP_MIN_SECS", "1"),
        ("FAVE_CLIP_MAX_SECS", "2"),
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let video = silent_video(dir.path(), 25, 6.0);
    let (status, _, answer) = t.submit(&json!({ "video_uri": file_uri(&video) })).await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    let frames: Vec<(f64, u64)> = answer["clips"]
        .as_array()
        .expect("clips")
        .iter()
        .map(|c| {
            (
                c["start_s"].as_f64().unwrap(),
                c["frames"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(frames, [(0.0, 1), (2.0, 0), (4.0, 1)], "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_whose_first_picture_comes_late_is_cut_where_it_was_planned() {
    // Megamind.avi's first packet shows nothing: its first picture is at 0.042 s. The
    // encoder counts keyframe times from its first frame; the foretelling must too, or the
    // plan is a frame off every keyframe and the cut finds none where it was told to.
    let t =
        TestStack::start_with(&[("FAVE_CLIP_MIN_SECS", "1"), ("FAVE_CLIP_MAX_SECS", "3")]).await;
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": file_uri(&sample("Megamind.avi")) }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    let starts: Vec<f64> = answer["clips"]
        .as_array()
        .expect("clips")
        .iter()
        .map(|c| c["start_s"].as_f64().expect("a number"))
        .collect();
    // Cut (stage-ffmpeg-1 found a keyframe at every boundary), and on the keyframes'
    // grid: 23.976 frames a second, a keyframe every 1.001 s from the first picture.
    assert!(starts.len() >= 3, "{starts:?}");
    for s in &starts {
        let ticks = s / 1.001;
        assert!((ticks - ticks.round()).abs() < 1e-3, "{starts:?}");
    }
}
