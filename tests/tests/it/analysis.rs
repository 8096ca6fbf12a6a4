//! The whole pipeline on real media: `vtest.avi` (OpenCV's street scene) cut into clips,
//! frames taken from each clip, objects detected with the real yolov3-tiny model, and the
//! query answered from what was detected.

use fave_common::contract::{Frame, ffmpeg2};
use fave_common::ids::StageName;
use fave_common::state::{RequestStatus, StageStatus};
use serde_json::{Value, json};

use crate::util::{TestStack, duration, ffprobe, file_uri, request_id, sample};

fn name(s: &str) -> StageName {
    s.parse().expect("a stage name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_video_is_cut_detected_and_the_query_answered() {
    // Two clips at a time, so that a clip moving on to detection while later clips have not
    // started their frames shows there is no barrier between the per-clip stages.
    let t = TestStack::start_with(&[("MAX_CONCURRENT_INVOCATIONS", "2")]).await;
    let video = sample("vtest.avi");
    let source_duration = duration(&ffprobe(&video, &[]));
    let (status, _, answer) = t
        .submit(&json!({ "video_uri": file_uri(&video), "query": "find scenes with cars" }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    assert_eq!(answer["status"], "COMPLETED");

    // Several clips, end to end, each no longer than the maximum (20 s) by more than the
    // keyframe spacing (1 s), covering the whole video.
    let clips = answer["clips"].as_array().expect("clips");
    assert!(clips.len() >= 3, "{} clips", clips.len());
    assert_eq!(clips[0]["start_s"], 0.0);
    for pair in clips.windows(2) {
        assert_eq!(pair[0]["end_s"], pair[1]["start_s"], "clips are contiguous");
    }
    let last_end = clips.last().expect("a clip")["end_s"]
        .as_f64()
        .expect("a number");
    assert!(
        (last_end - source_duration).abs() < 0.2,
        "{last_end} vs {source_duration}"
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let source_frames = frames_of(&video);
    let mut clip_frames = 0;
    for c in clips {
        let (start, end) = (c["start_s"].as_f64().unwrap(), c["end_s"].as_f64().unwrap());
        assert!(end - start <= 21.0 && end - start >= 4.0, "{c}");
        // The clip object holds exactly that time range.
        let file = dir.path().join("clip.mp4");
        t.store()
            .get_to_file(c["key"].as_str().expect("a key"), &file)
            .await
            .expect("the clip is stored");
        // vtest.avi runs at 10 frames a second, and so does the canonical video.
        let frames = frames_of(&file);
        clip_frames += frames;
        assert!(
            (frames as f64 / 10.0 - (end - start)).abs() < 0.15,
            "{frames} frames in {c}"
        );
        assert_eq!(
            c["frames"].as_u64(),
            Some((end - start).ceil() as u64),
            "1 frame a second"
        );
    }

    assert_eq!(
        clip_frames, source_frames,
        "the clips hold every frame, each once"
    );

    // People and a car are in the street; every detection is a real one, within the frame.
    let all: Vec<&Value> = clips
        .iter()
        .flat_map(|c| c["detections"].as_array().expect("detections"))
        .collect();
    for label in ["person", "car"] {
        let best = all
            .iter()
            .filter(|d| d["label"] == label)
            .filter_map(|d| d["score"].as_f64())
            .fold(0.0, f64::max);
        assert!(best > 0.7, "best {label} {best}");
    }
    for d in &all {
        let b: Vec<f64> = d["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert!(
            b[0] < b[2] && b[1] < b[3] && b[2] <= 768.0 + 0.5 && b[3] <= 576.0 + 0.5,
            "{d}"
        );
        let time = d["time_s"].as_f64().unwrap();
        assert!((0.0..source_duration).contains(&time), "{d}");
    }

    // The answer: clips ranked by evidence of a car; each one ranked has a car among its
    // detections; scores do not increase down the ranking.
    let a = &answer["answer"];
    assert_eq!(a["labels"], json!(["car"]), "{a}");
    assert_eq!(a["unknown"], json!([]));
    let ranked = a["clips"].as_array().expect("ranked clips");
    assert!(!ranked.is_empty(), "{a}");
    for m in ranked {
        let clip = clips
            .iter()
            .find(|c| c["clip"] == m["clip"])
            .expect("a clip of the request");
        let cars = clip["detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["label"] == "car")
            .count();
        assert!(cars > 0, "{m} ranked without a car");
        assert!(
            m["why"][0].as_str().is_some_and(|w| w.starts_with("car ")),
            "{m}"
        );
    }
    for pair in ranked.windows(2) {
        assert!(
            pair[0]["score"].as_f64() >= pair[1]["score"].as_f64(),
            "{pair:?}"
        );
    }
    let unranked_with_cars = clips
        .iter()
        .filter(|c| !ranked.iter().any(|m| m["clip"] == c["clip"]))
        .filter(|c| c["labels"].get("car").is_some())
        .count();
    assert_eq!(unranked_with_cars, 0, "every clip with a car is ranked");

    // state.json records every per-clip task; detection started on some clip before the
    // frames of a later clip were begun (per-clip pipelining, no global barrier).
    let id = request_id(&answer);
    let state = t.state(&id).await;
    assert_eq!(state.status, RequestStatus::Completed);
    assert_eq!(state.clips.len(), clips.len());
    for c in &state.clips {
        for task in &c.tasks {
            assert_eq!(
                task.status,
                StageStatus::Succeeded,
                "{} {}",
                c.clip,
                task.name
            );
            assert!(task.attempts[0].call_id.is_some());
            assert!(!task.outputs.is_empty());
        }
    }
    let started = |clip: usize, stage: &str| {
        state.clips[clip]
            .task(&name(stage))
            .and_then(|t| t.started_at)
            .expect("started")
    };
    let first_detect = (0..state.clips.len())
        .map(|i| started(i, "stage-detect"))
        .min()
        .unwrap();
    let last_frames = (0..state.clips.len())
        .map(|i| started(i, "stage-ffmpeg-2"))
        .max()
        .unwrap();
    assert!(
        first_detect < last_frames,
        "detection waited for every clip's frames"
    );

    // The clips were looked at while the canonical video was still being made: nothing
    // they read comes from it.
    let encoded = state
        .stage(&name("stage-ffmpeg-0-video"))
        .and_then(|s| s.ended_at)
        .expect("encoded");
    assert!(
        first_detect < encoded,
        "detection waited for the encode: {first_detect} vs {encoded}"
    );

    // The frames were taken once, by stage-ffmpeg-0 from its one decode: no clip was
    // decoded again for them, and each clip got the ones that show within it, on time.
    let taken = format!("requests/{id}/stages/stage-ffmpeg-0/frames/");
    for (c, clip) in state.clips.iter().zip(clips) {
        let frames =
            listed_frames(&t, c.task(&name("stage-ffmpeg-2")).expect("a frames task")).await;
        assert_eq!(Some(frames.len() as u64), clip["frames"].as_u64());
        for f in &frames {
            assert!(f.key.starts_with(&taken), "{f:?}");
        }
    }
    // The second clip's first frame is the picture at the clip's start, not a second off.
    let clip = &state.clips[1];
    let frames = listed_frames(
        &t,
        clip.task(&name("stage-ffmpeg-2")).expect("a frames task"),
    )
    .await;
    let first = &frames[0];
    assert_eq!(first.time_s, 0.0, "{first:?}");
    let frame = dir.path().join("frame.jpg");
    let file = dir.path().join("clip.mp4");
    t.store()
        .get_to_file(&first.key, &frame)
        .await
        .expect("the frame is stored");
    t.store()
        .get_to_file(&clip.key, &file)
        .await
        .expect("the clip is stored");
    let (at_start, a_second_on) = (psnr_at(&frame, &file, 0.0), psnr_at(&frame, &file, 1.0));
    assert!(
        at_start > 35.0 && a_second_on < 30.0,
        "PSNR {at_start} dB against the clip's first picture, {a_second_on} dB a second on"
    );
}

/// PSNR (dB) of `image` against the picture of `video` at `at_s` (its first at or after
/// that time), scaled to 640 px wide. The picture is written out first: with both inputs in
/// one filter graph, ffmpeg pairs frames by timestamp, not the two pictures meant.
fn psnr_at(image: &std::path::Path, video: &std::path::Path, at_s: f64) -> f64 {
    let picture = image.with_extension(format!("{at_s}.png"));
    let ffmpeg = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-y", "-v", "info"])
            .args(args)
            .output()
            .expect("ffmpeg runs")
    };
    let select = format!("select='gte(t,{at_s})',scale=640:-2");
    let out = ffmpeg(&[
        "-i".as_ref(),
        video.as_os_str(),
        "-vf".as_ref(),
        select.as_ref(),
        "-frames:v".as_ref(),
        "1".as_ref(),
        picture.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ffmpeg(&[
        "-i".as_ref(),
        image.as_os_str(),
        "-i".as_ref(),
        picture.as_os_str(),
        "-lavfi".as_ref(),
        "[0:v]format=rgb24[a];[1:v]format=rgb24[b];[a][b]psnr".as_ref(),
        "-f".as_ref(),
        "null".as_ref(),
        "-".as_ref(),
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    log.split("average:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no PSNR in {log}"))
}

/// The number of video frames (packets) in a file.
fn frames_of(path: &std::path::Path) -> u64 {
    let probe = ffprobe(path, &["-count_packets", "-select_streams", "v:0"]);
    probe["streams"][0]["nb_read_packets"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("a packet count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_for_what_is_not_there_returns_no_clips_and_says_so() {
    let t = TestStack::start().await;
    let video = sample("bikes.mp4");
    let (status, _, answer) = t
        .submit(&json!({
            "video_uri": file_uri(&video),
            "query": "find scenes with giraffes and unicorns",
        }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    let a = &answer["answer"];
    assert_eq!(a["labels"], json!(["giraffe"]), "{a}");
    assert_eq!(
        a["unknown"],
        json!(["unicorns"]),
        "an unknown word is reported"
    );
    assert_eq!(a["clips"], json!([]));
    let message = a["message"].as_str().expect("a message");
    assert!(message.contains("no clip shows giraffe"), "{message}");
    assert!(message.contains("unicorns"), "{message}");
    // bikes.mp4 has no sound: the audio stage says so and the request still completes.
    assert_eq!(answer["media"]["has_audio"], false);
    assert_eq!(answer["audio"]["has_audio"], false);
    // The clips were still looked at: the answer is empty because nothing matched.
    assert!(answer["clips"].as_array().is_some_and(|c| !c.is_empty()));
    assert!(answer["clips"][0]["frames"].as_u64() > Some(0));
}

/// A clip's frames, as stage-ffmpeg-2 listed them (by key: its result holds their count).
async fn listed_frames(t: &TestStack, task: &fave_common::state::StageState) -> Vec<Frame> {
    let cut: ffmpeg2::Output = task
        .result()
        .expect("a frames task's result")
        .expect("its contract's output");
    let key = &task.outputs[ffmpeg2::outputs::FRAMES];
    let (frames, _) = t
        .store()
        .get_json::<Vec<Frame>>(key)
        .await
        .expect("readable")
        .expect("frames.json exists");
    assert_eq!(frames.len(), cut.frames);
    frames
}
