//! The difference gate before the detector, on real videos: the answers with it are the
//! answers without it, and it saves detector calls where the picture stands still.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::util::{TestStack, file_uri, sample};

/// What the pipeline answered about one video: per clip, the labels seen at 0.5 or more
/// with their best score; the clips that answer the query; the frames looked at and
/// carried.
struct Seen {
    clips: Vec<BTreeMap<String, f64>>,
    answer: BTreeSet<String>,
    detected: u64,
    carried: u64,
}

fn seen(answer: &Value) -> Seen {
    let clips = answer["clips"].as_array().expect("clips");
    let count = |k: &str| clips.iter().map(|c| c[k].as_u64().unwrap_or(0)).sum();
    Seen {
        clips: clips
            .iter()
            .map(|c| {
                c["labels"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(label, s)| (label.clone(), s["best_score"].as_f64().unwrap_or(0.0)))
                    .filter(|(_, score)| *score >= 0.5)
                    .collect()
            })
            .collect(),
        answer: answer["answer"]["clips"]
            .as_array()
            .expect("answer clips")
            .iter()
            .filter_map(|m| m["clip"].as_str().map(str::to_owned))
            .collect(),
        detected: count("detected"),
        carried: count("carried"),
    }
}

async fn run(t: &TestStack, video: &str) -> Seen {
    let (status, _, answer) = t
        .submit(&json!({
            "video_uri": file_uri(&sample(video)),
            "query": "find scenes with cars, people or a dog",
        }))
        .await;
    assert_eq!(status, 200, "{video}: {answer}\n{}", t.logs());
    seen(&answer)
}

/// On the four sample videos, with the gate and without: the per-clip labels at 0.5 or more
/// agree in at least 98 % of clips, their best scores within 0.05, and the query's answer is
/// the same. The store plays no part, so this runs on the embedded one only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_difference_gate_saves_detector_calls_without_changing_the_answers() {
    if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| !e.is_empty()) {
        eprintln!("skipped: the gate does not depend on the store (runs on the embedded one)");
        return;
    }
    let gated = TestStack::start().await;
    let every = TestStack::start_with(&[("FAVE_DETECT_GATE", "false")]).await;
    let (mut clips, mut agreeing, mut saved_any) = (0, 0, false);
    for video in ["vtest.avi", "bikes.mp4", "bigbuckbunny.mp4", "Megamind.avi"] {
        let with = run(&gated, video).await;
        let without = run(&every, video).await;
        assert_eq!(without.carried, 0, "{video}: the gate is off");
        assert_eq!(
            with.clips.len(),
            without.clips.len(),
            "{video}: the same clips"
        );
        assert_eq!(
            with.detected + with.carried,
            without.detected,
            "{video}: the same frames"
        );
        for (a, b) in with.clips.iter().zip(&without.clips) {
            clips += 1;
            let same_labels = a.keys().eq(b.keys());
            let close = a
                .iter()
                .all(|(label, score)| b.get(label).is_some_and(|s| (s - score).abs() <= 0.05));
            if same_labels && close {
                agreeing += 1;
            } else {
                println!("{video}: with the gate {a:?}, without {b:?}");
            }
        }
        assert_eq!(with.answer, without.answer, "{video}: the same answer");
        saved_any |= with.carried > 0;
        println!(
            "{video}: detector looked at {} of {} frames with the gate ({} carried, {:.0} % saved)",
            with.detected,
            without.detected,
            with.carried,
            100.0 * with.carried as f64 / without.detected.max(1) as f64
        );
    }
    let share = agreeing as f64 / clips as f64;
    println!(
        "clips agreeing: {agreeing} of {clips} ({:.1} %)",
        share * 100.0
    );
    assert!(share >= 0.98, "{agreeing} of {clips} clips agree");
    assert!(
        saved_any,
        "the gate saved no detector call on any sample video"
    );
}
