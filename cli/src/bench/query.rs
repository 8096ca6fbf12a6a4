//! `fave bench query`: `POST /query` through the gateway against libraries of 1, 100 and
//! 1,000 videos, beside the full pipeline on the same video and a second request for it
//! (answered from the library).
//!
//! The first videos are analysed for real; the larger libraries are made of copies of
//! their real indexes under made-up video ids (the bench says so): a query's cost depends
//! on the number and size of the indexes, not on where they came from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;
use fave_common::contract::library::{QueryBody, QueryTimings, VideoIndex, VideoRecord};
use fave_common::ids::VideoId;
use fave_common::keys::VideoKeys;
use fave_local::stack::Stack;
use serde_json::json;

use super::orchestrator::{quantile, sorted};
use super::report::{Chart, Report, Series};
use crate::client::{Client, GatewayArgs, Submission, run_once};
use crate::stack::{StackArgs, stack_options, to_uri};

/// The queries asked, in turn: labels, a phrase, words outside the table.
const QUERIES: [&str; 5] = [
    "find scenes with cars",
    "people",
    "a person with a bicycle",
    "someone saying \"hello\"",
    "dog",
];

pub async fn run(
    mut args: StackArgs,
    videos: &[PathBuf],
    sizes: &[usize],
    queries: usize,
) -> anyhow::Result<Report> {
    if videos.is_empty() {
        bail!("give at least one --video");
    }
    for v in videos {
        if !v.is_file() {
            bail!(
                "no video at {} (scripts/setup fetches the samples)",
                v.display()
            );
        }
    }
    // A library of its own: the embedded store's data starts empty.
    args.data_dir = args.data_dir.join("bench-query");
    if args.external_s3.is_none() && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("clearing {}", args.data_dir.display()))?;
    }
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let stack = Stack::start(stack_options(&args, any_port, any_port, true)?).await?;
    let outcome = measure(&stack, videos, sizes, queries).await;
    stack.shutdown().await;
    outcome
}

async fn measure(
    stack: &Stack,
    videos: &[PathBuf],
    sizes: &[usize],
    queries: usize,
) -> anyhow::Result<Report> {
    let gateway = stack.gateway_url.as_str();
    println!(
        "fave bench query: analysing {} videos for real",
        videos.len()
    );
    let mut real = Vec::new();
    let mut pipeline_ms = Vec::new();
    for video in videos {
        let submission = Submission {
            video_uri: to_uri(&video.display().to_string())?,
            query: Some(QUERIES[0].into()),
            ..Submission::default()
        };
        let clock = Instant::now();
        let made = run_once(gateway, &submission).await?;
        let ms = clock.elapsed().as_secs_f64() * 1e3;
        pipeline_ms.push(ms);
        let used = made.analysis.context("the request used no library")?;
        println!(
            "  {}: the full pipeline in {ms:.0} ms (video {})",
            video.display(),
            &used.video.as_str()[..12]
        );
        real.push(used);
    }
    // The same video again, another query: answered from the library.
    let again = Submission {
        video_uri: to_uri(&videos[0].display().to_string())?,
        query: Some(QUERIES[1].into()),
        ..Submission::default()
    };
    let clock = Instant::now();
    let second = run_once(gateway, &again).await?;
    let second_ms = clock.elapsed().as_secs_f64() * 1e3;
    let reused = second.analysis.as_ref().is_some_and(|a| a.reused);
    println!(
        "  {} again, another query: {second_ms:.1} ms end to end ({}; pipeline {:.0} ms, {:.0}× faster)",
        videos[0].display(),
        if reused {
            "answered from the library"
        } else {
            "NOT answered from the library"
        },
        pipeline_ms[0],
        pipeline_ms[0] / second_ms
    );

    let mut indexes = Vec::new();
    for used in &real {
        let key = VideoKeys::new(&used.video).index(&used.analysis);
        let (index, _) = stack
            .store
            .get_json::<VideoIndex>(&key)
            .await?
            .with_context(|| format!("no index at {key}"))?;
        indexes.push(index);
    }
    let client = Client::new(&GatewayArgs {
        gateway: gateway.to_owned(),
        token: None,
    })?;
    let mut in_library = real.len();
    let mut rows = Vec::new();
    let mut series = Vec::new();
    println!(
        "\n  {:>7}  {:>9}  {:>9}  {:>11}  {:>12}",
        "videos", "p50 ms", "p99 ms", "first ms", "vs pipeline"
    );
    for &size in sizes {
        while in_library < size {
            let index = &indexes[in_library % indexes.len()];
            synthesise(stack, index, in_library).await?;
            in_library += 1;
        }
        let mut took = Vec::new();
        let mut parts = Vec::new();
        let mut first_ms = f64::NAN;
        for i in 0..queries.max(1) + 1 {
            let body = QueryBody {
                query: QUERIES[i % QUERIES.len()].into(),
                ..QueryBody::default()
            };
            let clock = Instant::now();
            let answer = client.query(&body).await?;
            let ms = clock.elapsed().as_secs_f64() * 1e3;
            if answer.videos_searched != in_library {
                bail!(
                    "the query looked at {} videos, not {in_library}",
                    answer.videos_searched
                );
            }
            if i == 0 {
                // The first query after the library grew reads the new indexes.
                first_ms = ms;
            } else {
                took.push(ms);
                parts.push(answer.timings);
            }
        }
        let took = sorted(took);
        let (p50, p99) = (quantile(&took, 0.5), quantile(&took, 0.99));
        let part =
            |f: fn(&QueryTimings) -> f64| quantile(&sorted(parts.iter().map(f).collect()), 0.5);
        let (list, rank) = (part(|t| t.list_ms), part(|t| t.rank_ms));
        println!(
            "  {in_library:>7}  {p50:>9.2}  {p99:>9.2}  {first_ms:>11.1}  {:>11.0}×  (in the orchestrator, p50: list {list:.2}, rank {rank:.2})",
            pipeline_ms[0] / p50
        );
        rows.push(json!({
            "videos": in_library,
            "synthesised": in_library - real.len().min(in_library),
            "p50_ms": p50,
            "p99_ms": p99,
            "first_ms": first_ms,
            "list_ms_p50": list,
            "rank_ms_p50": rank,
            "queries": took.len(),
        }));
        series.push((in_library as f64, p50, p99));
    }
    if let [.., (n1, p1, _), (n2, p2, _)] = series.as_slice() {
        println!(
            "  growth: p50 ×{:.2} for ×{:.0} videos (≈ {:.1} µs per video)",
            p2 / p1,
            n2 / n1,
            1000.0 * (p2 - p1) / (n2 - n1)
        );
    }
    println!(
        "  (videos beyond the {} analysed are copies of their indexes under made-up ids)",
        real.len()
    );
    Ok(Report {
        suite: "query",
        setup: json!({
            "videos": videos,
            "sizes": sizes,
            "queries_per_size": queries,
            "query_texts": QUERIES,
        }),
        figures: json!({
            "pipeline_ms": pipeline_ms,
            "second_request_ms": second_ms,
            "second_request_reused": reused,
            "libraries": rows,
        }),
        chart: Chart::Lines {
            title: "POST /query latency against the library's size".into(),
            x_label: "videos in the library".into(),
            y_label: "ms".into(),
            log_x: true,
            series: vec![
                Series {
                    name: "p50".into(),
                    points: series.iter().map(|(n, p, _)| (*n, *p)).collect(),
                },
                Series {
                    name: "p99".into(),
                    points: series.iter().map(|(n, _, p)| (*n, *p)).collect(),
                },
            ],
            target: Some(("goal: 50 ms at 100 videos".into(), 50.0)),
        },
    })
}

/// A copy of `index` under a made-up video id, published as the orchestrator publishes:
/// the index, its record, its marker, then a new generation of the library.
async fn synthesise(stack: &Stack, index: &VideoIndex, n: usize) -> anyhow::Result<()> {
    let digest = format!("{:064x}", 0xfa7e_0000_0000u64 + n as u64);
    let video: VideoId = digest.parse().map_err(anyhow::Error::msg)?;
    let keys = VideoKeys::new(&video);
    let copy = VideoIndex {
        video: video.clone(),
        ..index.clone()
    };
    stack
        .store
        .put_json(&keys.index(&index.analysis), &copy)
        .await?;
    let now = Utc::now();
    let record = VideoRecord {
        video: video.clone(),
        bytes: index.bytes,
        first_seen: now,
        last_seen: now,
        uris: vec![format!("synthesised://{n}")],
        requests: Vec::new(),
    };
    stack.store.put_json(&keys.record(), &record).await?;
    stack
        .store
        .put_json(&keys.marker(&index.analysis), &())
        .await?;
    // As a publish does: the replicas list the library again.
    stack
        .store
        .put_json(fave_common::keys::LIBRARY_GENERATION, &(n, Utc::now()))
        .await?;
    Ok(())
}
