//! The library's commands: `search` (moments across every analysed video), `videos` (the
//! library) and `video show|rm`.
//!
//! Each prints a short summary for people, or with `--json` the API's JSON as it came.
//! Exit codes are [`crate::client::exit`]'s.

use clap::{Args, Subcommand};
use fave_common::contract::library::{QueryBody, VideoPage};
use fave_common::ids::VideoId;

use crate::client::{Client, GatewayArgs, exit, pretty};

#[derive(Args, Debug)]
#[command(after_help = "\
Answers from what was kept when each video was analysed: no stage runs.

Examples:
  fave search 'a man with a dog'
  fave search 'cars' --video 3f5a…(64 hex digits) --limit 5 --json")]
pub struct SearchArgs {
    /// What to look for, e.g. "scenes with cars" or "someone saying \"hello\"".
    pub query: String,
    /// Only this video (its id, from `fave videos`); may be given more than once.
    #[arg(long = "video", value_name = "ID", value_parser = video_id)]
    pub videos: Vec<VideoId>,
    /// At most this many moments.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Args, Debug)]
pub struct VideosArgs {
    /// Videos per page.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The page after this one (a `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Every page.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Args, Debug)]
pub struct VideoArgs {
    #[command(subcommand)]
    pub command: VideoCommand,
}

#[derive(Subcommand, Debug)]
pub enum VideoCommand {
    /// Show a video: where it came from, its analyses, the requests that used it.
    Show(VideoIdArgs),
    /// Delete a video from the library: its analyses and index entries, and the media and
    /// results of every request that used it (their records remain and say so).
    Rm(VideoIdArgs),
    /// Make the library again from the requests' outputs (after its index was lost, or to
    /// publish analyses made before it existed).
    Rebuild(RebuildArgs),
}

#[derive(Args, Debug)]
pub struct RebuildArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Args, Debug)]
pub struct VideoIdArgs {
    #[arg(value_parser = video_id)]
    pub id: VideoId,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

fn video_id(raw: &str) -> Result<VideoId, String> {
    raw.parse()
        .map_err(|e: fave_common::ids::InvalidId| e.to_string())
}

/// `fave search`.
pub async fn search(args: SearchArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.gateway)?;
    let body = QueryBody {
        query: args.query.clone(),
        videos: args.videos.iter().map(ToString::to_string).collect(),
        limit: args.limit,
    };
    let answer = match client.query(&body).await {
        Ok(a) => a,
        Err(e) => return Ok(e.report(args.json)),
    };
    if args.json {
        println!("{}", pretty(&serde_json::to_value(&answer)?));
        return Ok(exit::OK);
    }
    let looked_for: Vec<String> = answer
        .labels
        .iter()
        .cloned()
        .chain(answer.speech.iter().map(|p| format!("\"{p}\"")))
        .collect();
    println!(
        "{} moments in {} videos ({:.1} ms); looked for: {}",
        answer.moments.len(),
        answer.videos_searched,
        answer.took_ms,
        if looked_for.is_empty() {
            "nothing understood".into()
        } else {
            looked_for.join(", ")
        }
    );
    if !answer.unknown.is_empty() {
        println!("not understood: {}", answer.unknown.join(", "));
    }
    for (rank, found) in answer.moments.iter().enumerate() {
        let m = &found.moment;
        println!(
            "{:>3}. {}  {:>7.1}–{:<7.1} s  {}  score {:.2}  {}",
            rank + 1,
            &found.video.as_str()[..12],
            m.start_s,
            m.end_s,
            m.clip,
            m.score,
            m.why.join("; ")
        );
    }
    Ok(exit::OK)
}

/// `fave videos`.
pub async fn videos(args: VideosArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.gateway)?;
    let mut cursor = args.cursor.clone();
    let mut videos = Vec::new();
    let next = loop {
        let page = match client.videos(args.limit, cursor.as_deref()).await {
            Ok(p) => p,
            Err(e) => return Ok(e.report(args.json)),
        };
        videos.extend(page.videos);
        match page.next_cursor {
            Some(c) if args.all => cursor = Some(c),
            other => break other,
        }
    };
    if args.json {
        let page = VideoPage {
            videos,
            next_cursor: next,
        };
        println!("{}", pretty(&serde_json::to_value(page)?));
        return Ok(exit::OK);
    }
    println!("{:<64}  {:>10}  {:<20}  URI", "VIDEO", "BYTES", "LAST SEEN");
    for v in &videos {
        println!(
            "{:<64}  {:>10}  {:<20}  {}",
            v.video,
            v.bytes.map(|b| b.to_string()).unwrap_or_default(),
            v.last_seen
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            v.uri.as_deref().unwrap_or("")
        );
    }
    if let Some(c) = next {
        println!("more: fave videos --all, or fave videos --cursor {c}");
    }
    Ok(exit::OK)
}

/// `fave video show|rm`.
pub async fn video(args: VideoArgs) -> anyhow::Result<u8> {
    match args.command {
        VideoCommand::Show(a) => {
            let client = Client::new(&a.gateway)?;
            let detail = match client.video(&a.id).await {
                Ok(d) => d,
                Err(e) => return Ok(e.report(a.json)),
            };
            if a.json {
                println!("{}", pretty(&serde_json::to_value(&detail)?));
                return Ok(exit::OK);
            }
            println!("video {}", detail.video);
            if let Some(r) = &detail.record {
                println!(
                    "  {} bytes, first seen {}, last seen {}",
                    r.bytes, r.first_seen, r.last_seen
                );
                for uri in &r.uris {
                    println!("  as {uri}");
                }
                println!("  requests: {}", r.requests.len());
            }
            for an in &detail.analyses {
                let labels: Vec<String> = an
                    .labels
                    .iter()
                    .map(|(l, n)| format!("{l} ({n})"))
                    .collect();
                println!(
                    "  analysis {} by request {}: {} clips, {:.1} s, {} words; {}",
                    an.analysis,
                    an.request_id,
                    an.clips,
                    an.duration_s.unwrap_or(0.0),
                    an.words,
                    labels.join(", ")
                );
            }
            Ok(exit::OK)
        }
        VideoCommand::Rebuild(a) => {
            let client = Client::new(&a.gateway)?;
            let rebuilt = match client.rebuild_library().await {
                Ok(r) => r,
                Err(e) => return Ok(e.report(a.json)),
            };
            if a.json {
                println!("{}", pretty(&serde_json::to_value(&rebuilt)?));
            } else {
                println!(
                    "rebuilt the library: {} analyses published from {} requests ({} made with other parameters left alone)",
                    rebuilt.analyses, rebuilt.requests, rebuilt.other_parameters
                );
            }
            Ok(exit::OK)
        }
        VideoCommand::Rm(a) => {
            let client = Client::new(&a.gateway)?;
            let deleted = match client.delete_video(&a.id).await {
                Ok(d) => d,
                Err(e) => return Ok(e.report(a.json)),
            };
            if a.json {
                println!("{}", pretty(&serde_json::to_value(&deleted)?));
            } else {
                println!(
                    "deleted video {}: {} objects, the media of {} requests",
                    deleted.video,
                    deleted.objects,
                    deleted.requests.len()
                );
            }
            Ok(exit::OK)
        }
    }
}
