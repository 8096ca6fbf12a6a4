//! `fave batch`: many videos, a few at a time, resumable.
//!
//! - **Input**: one video per line (a path or a URI), or a JSON object per line
//!   (`{"video_uri", "query", "profile"}`); blank lines and `#` comments are skipped. A line
//!   that cannot be read is reported with its number and never stops the others.
//! - **Idempotency**: each line is sent with an `Idempotency-Key` derived from the batch's
//!   identity (`--name`, else the file's canonical path), the line's number and the
//!   submission it makes, so sending it again, from this run or a later one, answers with
//!   the same request instead of starting another.
//! - **Journal** (`<file>.journal.jsonl`, append-only): `submitted` with the request id once
//!   the orchestrator has it, `finished` with the status and the results line once it has
//!   ended. A rerun skips finished lines (keeping their results), follows submitted ones by
//!   polling, and submits the rest; every event is one whole line, written and synced under
//!   a lock, so an interruption (Ctrl-C, SIGTERM, even SIGKILL) leaves it readable, and a
//!   torn last line is skipped.
//! - **Results** (`<file>.results.jsonl`): one JSON line per input line in line order,
//!   rewritten from the journal and this run at the end (also when interrupted).

mod journal;
mod lines;
mod request;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

pub use self::journal::Known;
pub use self::lines::{BadLine, Defaults, Item, parse};
use self::request::{Counters, Ctx, Outcome, run_line};
use crate::client::{Client, GatewayArgs, exit};
use crate::term::{Paint, Palette};

#[derive(Args, Debug)]
#[command(after_help = "\
Lines:
  samples/bikes.mp4                      a path (relative to the batch file's directory)
  s3://videos/street.mp4                 a URI: file://, s3://, http(s)://
  {\"video_uri\": \"s3://v/a.mp4\", \"query\": \"find cars\", \"profile\": \"cold\"}
  # a comment; blank lines are skipped too

Rerunning the same command resumes: finished lines are skipped, running ones are followed,
and nothing is submitted twice (each line carries the same Idempotency-Key every time).
Exit code 0 when every line completed; 1 when any line failed, was cancelled, was refused
by the orchestrator or could not be read (a bad line counts as a failure: the batch did not
do what it was given); 3 when the gateway could not be reached (the lines not run are left
for a rerun); 130 when interrupted.

Examples:
  fave batch videos.txt
  fave batch videos.jsonl --concurrency 8 --query 'find scenes with cars'
  find /data -name '*.mp4' | fave batch - --name nightly-2024-05-01")]
pub struct BatchArgs {
    /// The batch file, or `-` to read standard input (then --name is required).
    pub file: String,
    /// The batch's identity, for its idempotency keys and (with `-`) its journal and
    /// results file names; default: the file's canonical path.
    #[arg(long)]
    pub name: Option<String>,
    /// How many requests run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// The results file (JSONL); default `<file>.results.jsonl`.
    #[arg(long, value_name = "PATH")]
    pub results: Option<PathBuf>,
    /// The journal that makes the batch resumable; default `<file>.journal.jsonl`.
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// The query for lines that do not give one.
    #[arg(long)]
    pub query: Option<String>,
    /// The profile for lines that do not give one.
    #[arg(long, value_parser = ["cold", "warm"])]
    pub profile: Option<String>,
    /// Seconds between polls of a running request.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub poll: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// The results lines so far, by line number, and how many lines ended which way, in
/// earlier runs and this one.
#[derive(Default)]
struct Tally {
    results: BTreeMap<usize, Value>,
    total_lines: usize,
    bad_lines: usize,
    completed: usize,
    failed: usize,
    rejected: usize,
    not_run: usize,
    earlier_done: usize,
}

pub async fn run(args: BatchArgs) -> anyhow::Result<u8> {
    if args.file == "-" && args.name.is_none() {
        eprintln!(
            "error: reading the batch from standard input needs --name (its identity, which \
             keeps its idempotency keys and journal the same from run to run)"
        );
        return Ok(exit::USAGE);
    }
    let (text, identity, base_dir) = read_batch(&args)?;
    let journal_path = args
        .journal
        .clone()
        .unwrap_or_else(|| default_path(&args.file, args.name.as_deref(), "journal.jsonl"));
    let results_path = args
        .results
        .clone()
        .unwrap_or_else(|| default_path(&args.file, args.name.as_deref(), "results.jsonl"));
    let client = Client::new(&args.gateway)?;
    let defaults = Defaults {
        query: args.query.clone(),
        profile: args.profile.clone(),
        base_dir,
    };
    let (items, bad) = parse(&text, &defaults, &identity);

    // The journal: read what earlier runs did, then hold it for this run alone.
    let Some((journal, known)) = journal::open(&journal_path, &identity)? else {
        return Ok(exit::USAGE);
    };
    let ctx = Arc::new(Ctx {
        client,
        journal,
        counters: Counters::default(),
        bar: progress_bar(items.len()),
        poll: Duration::from_secs_f64(args.poll.clamp(0.05, 60.0)),
        gave_up: AtomicBool::new(false),
    });
    let (mut tally, todo) = resume(&ctx, items, &bad, &known);
    let ran = run_lines(&ctx, todo, args.concurrency, &mut tally).await;
    // The results are written also when the journal failed or the run was interrupted.
    write_results(&results_path, &tally.results)?;
    let interrupted = ran?;

    print_summary(
        &tally,
        &identity,
        interrupted,
        &results_path,
        &journal_path,
        args.json,
    );
    if interrupted {
        eprintln!(
            "interrupted: requests already accepted keep running; run the same command again \
             to follow them and submit the rest"
        );
        return Ok(exit::INTERRUPTED);
    }
    Ok(if tally.not_run > 0 {
        exit::API
    } else if tally.failed + tally.rejected + tally.bad_lines > 0 {
        exit::FAILED
    } else {
        exit::OK
    })
}

/// Reads the batch from its file or from standard input: its text, its identity (`name:`
/// and --name, else `file:` and the file's canonical path) and the directory its relative
/// paths are read from.
fn read_batch(args: &BatchArgs) -> anyhow::Result<(String, String, PathBuf)> {
    let (text, identity, base_dir) = if args.file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        (text, String::new(), std::env::current_dir()?)
    } else {
        let path = std::fs::canonicalize(&args.file)
            .map_err(|e| anyhow::anyhow!("no batch file at {}: {e}", args.file))?;
        let bytes =
            std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        (
            String::from_utf8_lossy(&bytes).into_owned(),
            format!("file:{}", path.display()),
            dir,
        )
    };
    let identity = match &args.name {
        Some(name) => format!("name:{name}"),
        None => identity,
    };
    Ok((text, identity, base_dir))
}

fn default_path(file: &str, name: Option<&str>, suffix: &str) -> PathBuf {
    match (file, name) {
        ("-", Some(name)) => PathBuf::from(format!("{name}.{suffix}")),
        _ => PathBuf::from(format!("{file}.{suffix}")),
    }
}

/// The progress bar for `len` lines, drawn on standard error when it is a terminal, else
/// hidden.
fn progress_bar(len: usize) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr_with_hz(8))
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} · {per_sec} · ETA {eta}\n  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Takes stock before anything runs: reports the bad lines and counts them, with the lines
/// an earlier run finished, into the tally and the progress bar, and returns the lines
/// still to run, each with the request an earlier run submitted for it, if any.
fn resume(
    ctx: &Ctx,
    items: Vec<Item>,
    bad: &[BadLine],
    known: &HashMap<String, Known>,
) -> (Tally, Vec<(Item, Option<String>)>) {
    let err = Palette::stderr();
    let mut tally = Tally {
        total_lines: items.len() + bad.len(),
        bad_lines: bad.len(),
        ..Tally::default()
    };
    for b in bad {
        ctx.say(format!(
            "line {}: {}: {}",
            b.line,
            err.paint(Paint::Red, "bad line"),
            b.error
        ));
        tally.results.insert(b.line, b.result());
    }
    let mut todo = Vec::new();
    for item in items {
        let entry = known.get(&item.key);
        match entry.and_then(|k| k.finished.clone()) {
            Some(result) => {
                tally.earlier_done += 1;
                if result["status"] == "COMPLETED" {
                    tally.completed += 1;
                    ctx.counters.done.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.failed += 1;
                    ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                tally.results.insert(item.line, result);
            }
            None => {
                let id = entry.and_then(|k| k.request_id.clone());
                todo.push((item, id));
            }
        }
    }
    ctx.counters.failed.fetch_add(bad.len(), Ordering::Relaxed);
    ctx.bar.set_position(tally.earlier_done as u64);
    ctx.bar.reset_eta();
    ctx.refresh();
    if tally.earlier_done > 0 {
        ctx.say(format!(
            "resuming: {} line(s) finished in an earlier run, {} to go",
            tally.earlier_done,
            todo.len()
        ));
    }
    (tally, todo)
}

/// Runs the lines `concurrency` at a time, adding each one's result to `tally`, until all
/// have ended or Ctrl-C or SIGTERM stops the run (`Ok(true)`); fails when the journal
/// cannot be written. The line tasks are stopped and the progress bar closed either way.
async fn run_lines(
    ctx: &Arc<Ctx>,
    todo: Vec<(Item, Option<String>)>,
    concurrency: u16,
    tally: &mut Tally,
) -> anyhow::Result<bool> {
    let mut lines = futures::stream::iter(todo)
        .map(|(item, id)| {
            let ctx = ctx.clone();
            async move { run_line(&ctx, item, id).await }
        })
        .buffer_unordered(usize::from(concurrency));
    let signal = stop_signal();
    tokio::pin!(signal);
    let mut interrupted = false;
    loop {
        tokio::select! {
            next = lines.next() => match next {
                Some(Ok((line, outcome, result))) => {
                    match outcome {
                        Outcome::Completed => tally.completed += 1,
                        Outcome::Failed => tally.failed += 1,
                        Outcome::Rejected => tally.rejected += 1,
                        Outcome::NotRun => tally.not_run += 1,
                    }
                    ctx.bar.inc(1);
                    tally.results.insert(line, result);
                }
                Some(Err(e)) => {
                    // The journal could not be written: stop, rather than run what could
                    // not be recorded.
                    drop(lines);
                    ctx.bar.abandon();
                    return Err(e);
                }
                None => break,
            },
            () = &mut signal => {
                interrupted = true;
                break;
            }
        }
    }
    // Dropping the stream stops the line tasks at their next await; every journal event
    // is written whole, so the journal is consistent wherever they stopped.
    drop(lines);
    if interrupted {
        ctx.bar.abandon();
    } else {
        ctx.bar.finish_and_clear();
    }
    Ok(interrupted)
}

/// Prints what the batch came to: how many lines ended which way, and where the results
/// and the journal are; as JSON when `as_json`.
fn print_summary(
    tally: &Tally,
    identity: &str,
    interrupted: bool,
    results_path: &Path,
    journal_path: &Path,
    as_json: bool,
) {
    let Tally {
        total_lines,
        bad_lines,
        completed,
        failed,
        rejected,
        not_run,
        earlier_done,
        ..
    } = *tally;
    let unfinished = total_lines.saturating_sub(tally.results.len());
    let summary = json!({
        "batch": identity,
        "lines": total_lines,
        "completed": completed,
        "failed": failed,
        "rejected": rejected,
        "bad_lines": bad_lines,
        "not_run": not_run,
        "unfinished": unfinished,
        "from_earlier_runs": earlier_done,
        "interrupted": interrupted,
        "results": results_path,
        "journal": journal_path,
    });
    if as_json {
        println!("{}", crate::client::pretty(&summary));
    } else {
        let out = Palette::stdout();
        let mut parts = vec![out.paint(Paint::Green, format!("{completed} completed"))];
        for (n, what, paint) in [
            (unfinished, "unfinished (interrupted)", Paint::Yellow),
            (failed, "failed or cancelled", Paint::Red),
            (rejected, "refused", Paint::Red),
            (bad_lines, "bad line(s)", Paint::Red),
            (not_run, "not run (gateway unreachable)", Paint::Yellow),
        ] {
            if n > 0 {
                parts.push(out.paint(paint, format!("{n} {what}")));
            }
        }
        let earlier = if earlier_done > 0 {
            format!(" ({earlier_done} from earlier runs)")
        } else {
            String::new()
        };
        println!(
            "batch: {total_lines} line(s): {}{earlier}",
            parts.join(", ")
        );
        println!("results  {}", results_path.display());
        println!("journal  {}", journal_path.display());
    }
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Writes the results file whole, through a temporary file, so a reader never sees half.
fn write_results(path: &Path, results: &BTreeMap<usize, Value>) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in results.values() {
        text.push_str(&ordered(r)?);
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("writing the results {}: {e}", path.display()))
}

/// A results line with its fields in reading order (serde_json's maps sort keys).
fn ordered(result: &Value) -> serde_json::Result<String> {
    const FIRST: [&str; 10] = [
        "line",
        "uri",
        "query",
        "profile",
        "request_id",
        "status",
        "seconds",
        "answer",
        "error",
        "text",
    ];
    let Some(map) = result.as_object() else {
        return serde_json::to_string(result);
    };
    let mut fields = Vec::with_capacity(map.len());
    let rest = map.keys().filter(|k| !FIRST.contains(&k.as_str()));
    for key in FIRST.iter().copied().chain(rest.map(String::as_str)) {
        if let Some(value) = map.get(key) {
            fields.push(format!(
                "{}:{}",
                serde_json::to_string(key)?,
                serde_json::to_string(value)?
            ));
        }
    }
    Ok(format!("{{{}}}", fields.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_lines_read_in_order() {
        let line =
            ordered(&json!({"status": "INVALID", "zeta": 1, "line": 4, "error": {"code": "x"}}))
                .unwrap();
        assert_eq!(
            line,
            r#"{"line":4,"status":"INVALID","error":{"code":"x"},"zeta":1}"#
        );
    }
}
