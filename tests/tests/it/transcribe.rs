//! Speech to text through the whole stack: a sentence spoken by espeak-ng, muxed into a
//! video after seven seconds of silence, cut into clips, each clip's audio transcribed by
//! stage-transcribe (Whisper tiny.en), the transcript in `final.json` in the video's time,
//! and a query for a spoken phrase answered from it. A video without sound gets empty
//! transcripts. (Megamind.avi's real dialogue is checked at the library level:
//! `functions/stage-transcribe/tests/known_answers.rs`.)

use std::path::Path;
use std::process::Command;

use fave_common::contract::transcribe;
use fave_common::ids::StageName;
use fave_common::state::{RequestStatus, StageStatus};
use serde_json::{Value, json};

use crate::util::{TestStack, file_uri, request_id, sample};

/// What espeak-ng says.
const SENTENCE: &str =
    "The quick brown fox jumps over the lazy dog. Please open the door and turn on the lights.";
/// Seconds of silence before it.
const LEAD_S: f64 = 7.0;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test-pattern video with `SENTENCE` spoken from `LEAD_S` on, a second of silence after.
fn spoken_video(dir: &Path) -> std::path::PathBuf {
    spoken_video_saying(dir, SENTENCE)
}

/// A test-pattern video with `sentence` spoken from `LEAD_S` on, a second of silence after.
pub(crate) fn spoken_video_saying(dir: &Path, sentence: &str) -> std::path::PathBuf {
    let speech = dir.join("speech.wav");
    run(Command::new("espeak-ng")
        .arg("-w")
        .arg(&speech)
        .arg(sentence));
    let video = dir.join("spoken.mp4");
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=10"])
        .args(["-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono"])
        .arg("-i")
        .arg(&speech)
        .arg("-filter_complex")
        .arg(format!(
            "[1:a]atrim=duration={LEAD_S}[lead];[lead][2:a]concat=n=2:v=0:a=1,apad=pad_dur=1[a]"
        ))
        .args(["-map", "0:v", "-map", "[a]", "-shortest"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(&video));
    video
}

/// Words as compared for the word error rate: lower-cased, punctuation dropped.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Word error rate: word-level edit distance over the reference's length.
fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let cost = usize::from(rw != hw);
            let next = (prev + cost).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[h.len()] as f64 / r.len().max(1) as f64
}

#[test]
fn the_word_error_rate_counts_edits() {
    assert_eq!(wer("a b c d", "a b c d"), 0.0);
    assert_eq!(wer("a b c d", "a x c"), 0.5);
    assert_eq!(wer("The dog.", "the dog"), 0.0);
    assert_eq!(wer("a b", ""), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_is_transcribed_in_the_videos_time_and_a_spoken_phrase_found() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let video = spoken_video(dir.path());
    // Short clips, so the silence and the speech fall in different ones.
    let t =
        TestStack::start_with(&[("FAVE_CLIP_MIN_SECS", "3"), ("FAVE_CLIP_MAX_SECS", "8")]).await;
    let (status, _, answer) = t
        .submit(&json!({
            "video_uri": file_uri(&video),
            "query": "find where someone says 'lazy dog'",
        }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    assert_eq!(answer["status"], "COMPLETED");
    let clips = answer["clips"].as_array().expect("clips");
    assert!(clips.len() >= 2, "{} clips", clips.len());

    // Every clip has a transcript; the speech is in the video's time, inside its clip.
    let mut heard = Vec::new();
    for c in clips {
        let (start, end) = (c["start_s"].as_f64().unwrap(), c["end_s"].as_f64().unwrap());
        let transcript = &c["transcript"];
        let text = transcript["text"].as_str().expect("a transcript's text");
        println!("{} {start:6.2}–{end:6.2} s: {text:?}", c["clip"]);
        if end <= LEAD_S - 0.5 {
            assert_eq!(text, "", "silence before the speech: {c}");
        }
        for s in transcript["segments"].as_array().expect("segments") {
            let (a, b) = (s["start_s"].as_f64().unwrap(), s["end_s"].as_f64().unwrap());
            assert!(
                start - 1e-6 <= a && a <= b && b <= end + 0.05,
                "{s} in {start}–{end}"
            );
            assert!(
                a >= LEAD_S - 1.0,
                "speech starts at {LEAD_S} s in the video: {s}"
            );
        }
        assert_eq!(
            transcript["words"].as_u64(),
            Some(text.split_whitespace().count() as u64)
        );
        heard.push(text.to_owned());
    }
    let heard = heard.join(" ");
    let rate = wer(SENTENCE, &heard);
    println!("said:  {SENTENCE}\nheard: {heard}\nword error rate {rate:.3}");
    assert!(rate <= 0.5, "word error rate {rate}: {heard:?}");

    // The query asks for a phrase; the clip that has it said comes first.
    let a = &answer["answer"];
    assert_eq!(a["speech"], json!(["lazy dog"]), "{a}");
    assert_eq!(a["unknown"], json!([]), "{a}");
    let ranked = a["clips"].as_array().expect("ranked clips");
    assert!(!ranked.is_empty(), "{a}");
    let top = clips
        .iter()
        .find(|c| c["clip"] == ranked[0]["clip"])
        .expect("a clip of the request");
    let top_text = top["transcript"]["text"].as_str().unwrap().to_lowercase();
    assert!(top_text.contains("lazy dog"), "{top_text:?}");
    assert_eq!(ranked[0]["said"], json!(["lazy dog"]));
    for m in ranked {
        let c = clips.iter().find(|c| c["clip"] == m["clip"]).unwrap();
        assert!(
            c["end_s"].as_f64() > Some(LEAD_S - 0.5),
            "{m} ranked from the silence"
        );
    }

    // state.json: every clip was transcribed once its audio was cut, with its detection
    // side by side: where there was speech to transcribe, detection did not wait for it.
    let id = request_id(&answer);
    let state = t.state(&id).await;
    let stage = |s: &str| -> StageName { s.parse().expect("a stage name") };
    for c in &state.clips {
        let transcribe = c
            .task(&stage("stage-transcribe"))
            .expect("a transcribe task");
        assert_eq!(transcribe.status, StageStatus::Succeeded, "{}", c.clip);
        let key = transcribe
            .outputs
            .get("transcript")
            .expect("transcript.json");
        let (written, _) = t
            .store()
            .get_json::<Value>(key)
            .await
            .expect("readable")
            .expect("transcript.json exists");
        let heard: transcribe::Output = transcribe
            .result()
            .expect("a result")
            .expect("its contract's output");
        assert_eq!(written["text"], heard.text);
        let frames = c.task(&stage("stage-ffmpeg-2")).unwrap();
        let detect = c.task(&stage("stage-detect")).unwrap();
        assert!(frames.ended_at <= transcribe.started_at);
        assert!(frames.ended_at <= detect.started_at);
        if !heard.text.is_empty() {
            assert!(
                detect.started_at < transcribe.ended_at,
                "{}: detection waited for transcription",
                c.clip
            );
        }
        if frames.outputs.contains_key("audio") {
            let rtf = heard.rtf.expect("an rtf");
            println!("{}: real-time factor {rtf}", c.clip);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_without_sound_gets_empty_transcripts() {
    let t = TestStack::start().await;
    let (status, _, answer) = t
        .submit(&json!({
            "video_uri": file_uri(&sample("bikes.mp4")),
            "query": "someone says 'hello'",
        }))
        .await;
    assert_eq!(status, 200, "{answer}\n{}", t.logs());
    assert_eq!(answer["status"], "COMPLETED");
    assert_eq!(answer["media"]["has_audio"], false);
    let clips = answer["clips"].as_array().expect("clips");
    assert!(!clips.is_empty());
    for c in clips {
        assert_eq!(
            c["transcript"],
            json!({"text": "", "words": 0, "segments": []}),
            "{c}"
        );
    }
    assert_eq!(answer["answer"]["clips"], json!([]));
    assert_eq!(
        answer["answer"]["message"], "no clip has \"hello\" said",
        "{answer}"
    );
    let id = request_id(&answer);
    let state = t.state(&id).await;
    assert_eq!(state.status, RequestStatus::Completed);
    let stage: StageName = "stage-transcribe".parse().unwrap();
    for c in &state.clips {
        let task = c.task(&stage).expect("a transcribe task");
        assert_eq!(task.status, StageStatus::Succeeded);
        let heard: transcribe::Output = task
            .result()
            .expect("a result")
            .expect("its contract's output");
        assert_eq!(heard.rtf, None);
        assert_eq!(task.attempts.len(), 1);
    }
}
