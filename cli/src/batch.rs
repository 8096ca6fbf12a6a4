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

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use fave_common::ids::RequestId;
use fave_common::state::{RequestState, RequestStatus};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{Client, ClientError, GatewayArgs, Submission, Submitted, exit};
use crate::term::{self, Paint, Palette};

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

/// One line to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub line: usize,
    pub submission: Submission,
    pub key: String,
}

/// A line that cannot be submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub text: String,
    pub error: String,
}

impl BadLine {
    fn result(&self) -> Value {
        json!({
            "line": self.line,
            "status": "INVALID",
            "error": {"code": "invalid_line", "message": self.error},
            "text": term::cut(&self.text, 500),
        })
    }
}

/// A JSON line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineSpec {
    video_uri: String,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    profile: Option<String>,
}

/// What a line falls back on.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub query: Option<String>,
    pub profile: Option<String>,
    /// Where relative paths are read from.
    pub base_dir: PathBuf,
}

/// Reads the batch: items to submit and bad lines, in line order (1-based numbers).
pub fn parse(text: &str, defaults: &Defaults, identity: &str) -> (Vec<Item>, Vec<BadLine>) {
    let (mut items, mut bad) = (Vec::new(), Vec::new());
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_line(trimmed, defaults) {
            Ok(submission) => {
                let key = idempotency_key(identity, line, &submission);
                items.push(Item {
                    line,
                    submission,
                    key,
                });
            }
            Err(error) => bad.push(BadLine {
                line,
                text: trimmed.to_owned(),
                error,
            }),
        }
    }
    (items, bad)
}

fn parse_line(text: &str, defaults: &Defaults) -> Result<Submission, String> {
    let (uri, query, profile) = if text.starts_with('{') {
        let spec: LineSpec =
            serde_json::from_str(text).map_err(|e| format!("not a batch JSON line: {e}"))?;
        (spec.video_uri, spec.query, spec.profile)
    } else {
        (text.to_owned(), None, None)
    };
    let profile = profile.or_else(|| defaults.profile.clone());
    if let Some(p) = &profile
        && !matches!(p.as_str(), "cold" | "warm")
    {
        return Err(format!(
            "unknown profile {p:?}: expected \"cold\" or \"warm\""
        ));
    }
    Ok(Submission {
        video_uri: video_uri(&uri, &defaults.base_dir)?,
        query: query
            .or_else(|| defaults.query.clone())
            .filter(|q| !q.trim().is_empty()),
        profile,
    })
}

/// A URI as it is (the orchestrator judges its scheme), or a path made into an absolute
/// file:// URI.
fn video_uri(text: &str, base_dir: &Path) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("video_uri is empty".into());
    }
    if text.contains("://") {
        return url::Url::parse(text)
            .map(|_| text.to_owned())
            .map_err(|e| format!("{text:?} is not a URI: {e}"));
    }
    let path = base_dir.join(text);
    let path =
        std::fs::canonicalize(&path).map_err(|e| format!("no video at {}: {e}", path.display()))?;
    if !path.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    url::Url::from_file_path(&path)
        .map(|u| u.to_string())
        .map_err(|()| format!("{} cannot be a file:// URI", path.display()))
}

/// `fave-batch-` and 40 hex digits of SHA-256 over the batch's identity, the line's number
/// and the submission the line makes (after defaults): stable across runs, distinct for two
/// equal lines, and new when a line's meaning changes (so a changed line is a new request
/// rather than a `409 idempotency_key_reused`).
pub fn idempotency_key(identity: &str, line: usize, submission: &Submission) -> String {
    let mut h = Sha256::new();
    h.update(b"fave batch v1\0");
    h.update(identity.as_bytes());
    h.update(b"\0");
    h.update(line.to_string().as_bytes());
    h.update(b"\0");
    h.update(
        serde_json::to_string(submission)
            .unwrap_or_default()
            .as_bytes(),
    );
    format!("fave-batch-{}", &hex::encode(h.finalize())[..40])
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Written once, when the journal is created.
    Batch { identity: String, at: DateTime<Utc> },
    /// The orchestrator accepted the line's submission as this request.
    Submitted {
        line: usize,
        key: String,
        request_id: String,
        at: DateTime<Utc>,
    },
    /// The request ended; `result` is its results line.
    Finished {
        line: usize,
        key: String,
        request_id: String,
        status: String,
        result: Value,
        at: DateTime<Utc>,
    },
}

/// What the journal says about one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    pub request_id: Option<String>,
    pub finished: Option<Value>,
}

/// Everything the journal knows, by idempotency key; and how many lines it skipped.
pub fn read_journal(text: &str) -> (Option<String>, HashMap<String, Known>, usize) {
    let mut identity = None;
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Event>(line) {
            Ok(Event::Batch { identity: i, .. }) => identity = Some(i),
            Ok(Event::Submitted {
                key, request_id, ..
            }) => known.entry(key).or_default().request_id = Some(request_id),
            Ok(Event::Finished {
                key,
                request_id,
                result,
                ..
            }) => {
                let k = known.entry(key).or_default();
                k.request_id = Some(request_id);
                k.finished = Some(result);
            }
            // A line torn by a kill mid-write, or edited by hand.
            Err(_) => skipped += 1,
        }
    }
    (identity, known, skipped)
}

/// The journal file, appended to one whole, synced line at a time.
struct Journal {
    file: std::sync::Mutex<std::fs::File>,
    path: PathBuf,
}

impl Journal {
    fn append(&self, event: &Event) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(event)?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| anyhow::anyhow!("writing the journal {}: {e}", self.path.display()))
    }
}

/// How one line ended in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    /// FAILED or CANCELLED.
    Failed,
    /// Refused before it was accepted (a 4xx such as `invalid_video_uri`); not journaled,
    /// so a rerun tries it again.
    Rejected,
    /// The gateway could not be reached; left for a rerun.
    NotRun,
}

/// The counters the progress bar shows.
#[derive(Default)]
struct Counters {
    submitted: AtomicUsize,
    running: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
}

impl Counters {
    fn message(&self) -> String {
        let n = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        format!(
            "{} submitted · {} running · {} done · {} failed",
            n(&self.submitted),
            n(&self.running),
            n(&self.done),
            n(&self.failed)
        )
    }
}

/// What every line's task shares.
struct Ctx {
    client: Client,
    journal: Journal,
    counters: Counters,
    bar: ProgressBar,
    poll: Duration,
    /// Set when the gateway stayed unreachable: the lines not started yet are left alone.
    gave_up: AtomicBool,
}

impl Ctx {
    fn refresh(&self) {
        self.bar.set_message(self.counters.message());
    }

    fn say(&self, text: String) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

fn default_path(file: &str, name: Option<&str>, suffix: &str) -> PathBuf {
    match (file, name) {
        ("-", Some(name)) => PathBuf::from(format!("{name}.{suffix}")),
        _ => PathBuf::from(format!("{file}.{suffix}")),
    }
}

pub async fn run(args: BatchArgs) -> anyhow::Result<u8> {
    let stdin = args.file == "-";
    if stdin && args.name.is_none() {
        eprintln!(
            "error: reading the batch from standard input needs --name (its identity, which \
             keeps its idempotency keys and journal the same from run to run)"
        );
        return Ok(exit::USAGE);
    }
    let (text, identity, base_dir) = if stdin {
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
    let total_lines = items.len() + bad.len();

    // The journal: read what earlier runs did, then hold it for this run alone.
    let earlier = match std::fs::read(&journal_path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("reading the journal {}: {e}", journal_path.display()),
    };
    let (journal_identity, known, torn) = read_journal(&earlier);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&journal_path)
        .map_err(|e| anyhow::anyhow!("opening the journal {}: {e}", journal_path.display()))?;
    if let Err(e) = file.try_lock() {
        eprintln!(
            "error: the journal {} is in use by another fave batch ({e})",
            journal_path.display()
        );
        return Ok(exit::USAGE);
    }
    let err = Palette::stderr();
    if torn > 0 {
        eprintln!(
            "{}: skipped {torn} unreadable line(s) of the journal {} (a run killed mid-write)",
            err.paint(Paint::Yellow, "warning"),
            journal_path.display()
        );
    }
    if journal_identity.as_ref().is_some_and(|j| j != &identity) {
        eprintln!(
            "{}: the journal {} was written for {}; this batch is {identity}, so its entries \
             do not apply",
            err.paint(Paint::Yellow, "warning"),
            journal_path.display(),
            journal_identity.as_deref().unwrap_or("?")
        );
    }
    let journal = Journal {
        file: std::sync::Mutex::new(file),
        path: journal_path.clone(),
    };
    if journal_identity.is_none() {
        journal.append(&Event::Batch {
            identity: identity.clone(),
            at: Utc::now(),
        })?;
    }

    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(
            Some(items.len() as u64),
            ProgressDrawTarget::stderr_with_hz(8),
        )
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} · {per_sec} · ETA {eta}\n  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ctx = Arc::new(Ctx {
        client,
        journal,
        counters: Counters::default(),
        bar,
        poll: Duration::from_secs_f64(args.poll.clamp(0.05, 60.0)),
        gave_up: AtomicBool::new(false),
    });

    let mut results: BTreeMap<usize, Value> = BTreeMap::new();
    for b in &bad {
        ctx.say(format!(
            "line {}: {}: {}",
            b.line,
            err.paint(Paint::Red, "bad line"),
            b.error
        ));
        results.insert(b.line, b.result());
    }
    let (mut completed, mut failed, mut rejected, mut not_run, mut earlier_done) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut todo = Vec::new();
    for item in items {
        let entry = known.get(&item.key);
        match entry.and_then(|k| k.finished.clone()) {
            Some(result) => {
                earlier_done += 1;
                if result["status"] == "COMPLETED" {
                    completed += 1;
                    ctx.counters.done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed += 1;
                    ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                results.insert(item.line, result);
            }
            None => {
                let id = entry.and_then(|k| k.request_id.clone());
                todo.push((item, id));
            }
        }
    }
    ctx.counters.failed.fetch_add(bad.len(), Ordering::Relaxed);
    ctx.bar.set_position(earlier_done as u64);
    ctx.bar.reset_eta();
    ctx.refresh();
    if earlier_done > 0 {
        ctx.say(format!(
            "resuming: {earlier_done} line(s) finished in an earlier run, {} to go",
            todo.len()
        ));
    }

    let mut lines = futures::stream::iter(todo)
        .map(|(item, id)| {
            let ctx = ctx.clone();
            async move { run_line(&ctx, item, id).await }
        })
        .buffer_unordered(usize::from(args.concurrency));
    let signal = stop_signal();
    tokio::pin!(signal);
    let mut interrupted = false;
    loop {
        tokio::select! {
            next = lines.next() => match next {
                Some(Ok((line, outcome, result))) => {
                    match outcome {
                        Outcome::Completed => completed += 1,
                        Outcome::Failed => failed += 1,
                        Outcome::Rejected => rejected += 1,
                        Outcome::NotRun => not_run += 1,
                    }
                    ctx.bar.inc(1);
                    results.insert(line, result);
                }
                Some(Err(e)) => {
                    // The journal could not be written: stop, rather than run what could
                    // not be recorded.
                    drop(lines);
                    ctx.bar.abandon();
                    write_results(&results_path, &results)?;
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
    write_results(&results_path, &results)?;

    let unfinished = total_lines.saturating_sub(results.len());
    let summary = json!({
        "batch": identity,
        "lines": total_lines,
        "completed": completed,
        "failed": failed,
        "rejected": rejected,
        "bad_lines": bad.len(),
        "not_run": not_run,
        "unfinished": unfinished,
        "from_earlier_runs": earlier_done,
        "interrupted": interrupted,
        "results": results_path,
        "journal": journal_path,
    });
    if args.json {
        println!("{}", crate::client::pretty(&summary));
    } else {
        let out = Palette::stdout();
        let mut parts = vec![out.paint(Paint::Green, format!("{completed} completed"))];
        for (n, what, paint) in [
            (unfinished, "unfinished (interrupted)", Paint::Yellow),
            (failed, "failed or cancelled", Paint::Red),
            (rejected, "refused", Paint::Red),
            (bad.len(), "bad line(s)", Paint::Red),
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
    if interrupted {
        eprintln!(
            "interrupted: requests already accepted keep running; run the same command again \
             to follow them and submit the rest"
        );
        return Ok(exit::INTERRUPTED);
    }
    Ok(if not_run > 0 {
        exit::API
    } else if failed + rejected + bad.len() > 0 {
        exit::FAILED
    } else {
        exit::OK
    })
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

/// Submits (or re-attaches to) one line's request and follows it to its end.
async fn run_line(
    ctx: &Ctx,
    item: Item,
    known_id: Option<String>,
) -> anyhow::Result<(usize, Outcome, Value)> {
    let started = Instant::now();
    let base = json!({
        "line": item.line,
        "uri": item.submission.video_uri,
        "query": item.submission.query,
        "profile": item.submission.profile,
    });
    let with = |mut extra: Value| {
        let mut v = base.clone();
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object_mut()) {
            v.append(extra);
        }
        v
    };
    if ctx.gave_up.load(Ordering::Relaxed) {
        return Ok((
            item.line,
            Outcome::NotRun,
            with(
                json!({"status": "NOT_RUN", "error": {"code": "gateway_unreachable",
                "message": "not submitted: the gateway could not be reached"}}),
            ),
        ));
    }
    let p = Palette::stderr();
    // Re-attach to a request an earlier run submitted; if the orchestrator does not know
    // it (another store?), submitting with the same key is safe and recreates it.
    let mut attached = None;
    if let Some(id) = known_id
        .as_deref()
        .and_then(|id| id.parse::<RequestId>().ok())
    {
        if let Err(ClientError::Refused { status: 404, .. }) = ctx.client.state(&id).await {
            ctx.say(format!(
                "line {}: the orchestrator does not know {id}; submitting it again",
                item.line
            ));
        } else {
            ctx.counters.running.fetch_add(1, Ordering::Relaxed);
            ctx.refresh();
            ctx.say(format!(
                "line {}: following {id} (submitted earlier)",
                item.line
            ));
            attached = Some(id);
        }
    }
    let (id, early_end) = match attached {
        Some(id) => (id, None),
        None => match submit_line(ctx, &item).await {
            Ok(Submitted::Accepted { id, .. }) => {
                let id = parse_id(&id)?;
                journal_submitted(ctx, &item, &id)?;
                (id, None)
            }
            Ok(Submitted::Completed { id, result }) => {
                let id = parse_id(&id)?;
                journal_submitted(ctx, &item, &id)?;
                (id, Some(Ok(result)))
            }
            Ok(Submitted::Ended { id, .. }) => {
                let id = parse_id(&id)?;
                journal_submitted(ctx, &item, &id)?;
                (id, Some(Err(())))
            }
            Err(e) if e.is_transient() => {
                ctx.gave_up.store(true, Ordering::Relaxed);
                ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                ctx.refresh();
                ctx.say(format!(
                    "line {}: {}: {e}",
                    item.line,
                    p.paint(Paint::Yellow, "not run")
                ));
                return Ok((
                    item.line,
                    Outcome::NotRun,
                    with(json!({"status": "NOT_RUN", "error": e.detail()})),
                ));
            }
            Err(e) => {
                ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                ctx.refresh();
                ctx.say(format!(
                    "line {}: {}: {e}",
                    item.line,
                    p.paint(Paint::Red, "refused")
                ));
                return Ok((
                    item.line,
                    Outcome::Rejected,
                    with(json!({"status": "REJECTED", "error": e.detail()})),
                ));
            }
        },
    };
    // Follow it to its end (a sync answer has ended already; one poll gives its times).
    let waited = match early_end {
        Some(_) => ctx.client.state(&id).await,
        None => ctx.client.wait(&id, ctx.poll, |_| {}).await,
    };
    let state = match waited {
        Ok((_, state)) => state,
        Err(e) => {
            // Still running on the server as far as anyone knows: leave it for a rerun.
            if e.is_transient() {
                ctx.gave_up.store(true, Ordering::Relaxed);
            }
            ctx.counters.running.fetch_sub(1, Ordering::Relaxed);
            ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
            ctx.refresh();
            ctx.say(format!(
                "line {}: {} {id}: {e}",
                item.line,
                p.paint(Paint::Yellow, "lost track of"),
            ));
            return Ok((
                item.line,
                Outcome::NotRun,
                with(json!({"request_id": id, "status": "NOT_RUN", "error": e.detail()})),
            ));
        }
    };
    let seconds = state
        .ended_at
        .map(|end| (end - state.created_at).num_milliseconds() as f64 / 1e3)
        .unwrap_or_else(|| started.elapsed().as_secs_f64());
    let mut result = with(json!({
        "request_id": id,
        "status": state.status,
        "seconds": (seconds * 1000.0).round() / 1000.0,
    }));
    let outcome = if state.status == RequestStatus::Completed {
        let final_json = match early_end {
            Some(Ok(result)) => Ok(result),
            _ => ctx.client.result(&id).await,
        };
        match final_json {
            Ok(final_json) => result["answer"] = summarize(&final_json),
            Err(e) => result["answer_error"] = e.detail(),
        }
        Outcome::Completed
    } else {
        result["error"] = failure(&state);
        Outcome::Failed
    };
    ctx.journal.append(&Event::Finished {
        line: item.line,
        key: item.key.clone(),
        request_id: id.to_string(),
        status: state.status.as_str().to_owned(),
        result: result.clone(),
        at: Utc::now(),
    })?;
    ctx.counters.running.fetch_sub(1, Ordering::Relaxed);
    let (counter, paint) = match outcome {
        Outcome::Completed => (&ctx.counters.done, Paint::Green),
        _ => (&ctx.counters.failed, Paint::Red),
    };
    counter.fetch_add(1, Ordering::Relaxed);
    ctx.refresh();
    let what = match outcome {
        Outcome::Completed => result["answer"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        _ => format!(
            "{}: {}",
            result["error"]["code"].as_str().unwrap_or("?"),
            term::cut(result["error"]["message"].as_str().unwrap_or(""), 120)
        ),
    };
    ctx.say(format!(
        "line {}: {} {id} in {}  {what}",
        item.line,
        p.paint(paint, state.status.as_str()),
        term::duration(seconds)
    ));
    Ok((item.line, outcome, result))
}

fn parse_id(id: &str) -> anyhow::Result<RequestId> {
    id.parse()
        .map_err(|e| anyhow::anyhow!("the orchestrator answered with a bad request id: {e}"))
}

fn journal_submitted(ctx: &Ctx, item: &Item, id: &RequestId) -> anyhow::Result<()> {
    ctx.journal.append(&Event::Submitted {
        line: item.line,
        key: item.key.clone(),
        request_id: id.to_string(),
        at: Utc::now(),
    })?;
    ctx.counters.running.fetch_add(1, Ordering::Relaxed);
    ctx.refresh();
    Ok(())
}

/// `POST /` with the line's key; transient trouble (connect errors, 429, 502–504, a
/// replica shutting down) is retried with backoff, which the key makes safe.
async fn submit_line(ctx: &Ctx, item: &Item) -> Result<Submitted, ClientError> {
    ctx.counters.submitted.fetch_add(1, Ordering::Relaxed);
    ctx.refresh();
    let mut delay = Duration::from_millis(500);
    let mut tries = 0;
    loop {
        match ctx
            .client
            .submit(&item.submission, Some(&item.key), false)
            .await
        {
            Err(e) if e.is_transient() && tries < 5 && !ctx.gave_up.load(Ordering::Relaxed) => {
                tries += 1;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
}

fn failure(state: &RequestState) -> Value {
    match &state.failure {
        Some(f) => json!({"code": f.error_code, "message": f.error_detail}),
        None => json!({"code": "cancelled", "message": "the request was cancelled"}),
    }
}

/// The answer to the query and what was seen, from `final.json`: the answer's message, its
/// best three clips, and the five labels seen with the best scores.
pub fn summarize(final_json: &Value) -> Value {
    let answer = &final_json["answer"];
    let clips: Vec<Value> = answer["clips"]
        .as_array()
        .map(|c| {
            c.iter()
                .take(3)
                .map(|m| {
                    json!({
                        "clip": m["clip"],
                        "start_s": m["start_s"],
                        "end_s": m["end_s"],
                        "score": m["score"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut labels: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for clip in final_json["clips"].as_array().into_iter().flatten() {
        for (label, s) in clip["labels"].as_object().into_iter().flatten() {
            let e = labels.entry(label.clone()).or_insert((0.0, 0));
            e.0 = e.0.max(s["best_score"].as_f64().unwrap_or(0.0));
            e.1 += 1;
        }
    }
    let mut labels: Vec<(String, (f64, usize))> = labels.into_iter().collect();
    labels.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    json!({
        "message": answer["message"],
        "clips": clips,
        "labels": labels.iter().take(5).map(|(l, (score, n))| json!({
            "label": l,
            "best_score": (score * 1000.0).round() / 1000.0,
            "clips": n,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(dir: &Path) -> Defaults {
        Defaults {
            query: Some("find bikes".into()),
            profile: None,
            base_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn lines_are_uris_paths_or_json_and_bad_ones_keep_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"x").unwrap();
        let text = "\
# videos
a.mp4

s3://bucket/b.mp4
{\"video_uri\": \"s3://bucket/c.mp4\", \"query\": \"cars\", \"profile\": \"cold\"}
{\"video_uri\": \"s3://bucket/d.mp4\", \"profile\": \"hot\"}
{not json
missing.mp4
{\"uri\": \"s3://x\"}
ftp://host/e.mp4
";
        let (items, bad) = parse(text, &defaults(dir.path()), "name:t");
        let lines: Vec<usize> = items.iter().map(|i| i.line).collect();
        assert_eq!(lines, [2, 4, 5, 10]);
        assert!(items[0].submission.video_uri.starts_with("file:///"));
        assert!(items[0].submission.video_uri.ends_with("/a.mp4"));
        assert_eq!(items[0].submission.query.as_deref(), Some("find bikes"));
        assert_eq!(items[2].submission.query.as_deref(), Some("cars"));
        assert_eq!(items[2].submission.profile.as_deref(), Some("cold"));
        // The orchestrator, not the CLI, judges schemes.
        assert_eq!(items[3].submission.video_uri, "ftp://host/e.mp4");
        let bad_lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(bad_lines, [6, 7, 8, 9]);
        assert!(bad[0].error.contains("unknown profile"), "{:?}", bad[0]);
        assert!(
            bad[1].error.contains("not a batch JSON line"),
            "{:?}",
            bad[1]
        );
        assert!(bad[2].error.contains("no video at"), "{:?}", bad[2]);
        assert!(bad[3].error.contains("unknown field"), "{:?}", bad[3]);
        assert_eq!(bad[1].result()["line"], 7);
    }

    #[test]
    fn keys_are_stable_distinct_and_valid_headers() {
        let sub = |q: &str| Submission {
            video_uri: "s3://b/k".into(),
            query: Some(q.into()),
            profile: None,
        };
        let a = idempotency_key("name:x", 1, &sub("cars"));
        assert_eq!(a, idempotency_key("name:x", 1, &sub("cars")));
        assert_ne!(a, idempotency_key("name:x", 2, &sub("cars")));
        assert_ne!(a, idempotency_key("name:y", 1, &sub("cars")));
        assert_ne!(a, idempotency_key("name:x", 1, &sub("bikes")));
        assert_eq!(a.len(), "fave-batch-".len() + 40);
        assert!(a.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn the_journal_is_read_by_key_and_a_torn_line_is_skipped() {
        let at = Utc::now();
        let events = [
            Event::Batch {
                identity: "name:x".into(),
                at,
            },
            Event::Submitted {
                line: 1,
                key: "k1".into(),
                request_id: "r1".into(),
                at,
            },
            Event::Submitted {
                line: 2,
                key: "k2".into(),
                request_id: "r2".into(),
                at,
            },
            Event::Finished {
                line: 1,
                key: "k1".into(),
                request_id: "r1".into(),
                status: "COMPLETED".into(),
                result: json!({"line": 1, "status": "COMPLETED"}),
                at,
            },
        ];
        let mut text: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        text.push_str("{\"event\":\"finished\",\"line\":2,\"ke");
        let (identity, known, torn) = read_journal(&text);
        assert_eq!(identity.as_deref(), Some("name:x"));
        assert_eq!(torn, 1);
        assert_eq!(
            known["k1"].finished.as_ref().unwrap()["status"],
            "COMPLETED"
        );
        assert_eq!(known["k2"].request_id.as_deref(), Some("r2"));
        assert!(known["k2"].finished.is_none());
    }

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

    #[test]
    fn an_answer_is_summarized() {
        let final_json = json!({
            "answer": {"message": "1 of 2 clips show bicycle", "clips": [
                {"clip": "clip-0001", "start_s": 5.0, "end_s": 9.5, "score": 0.91, "why": ["x"]}
            ]},
            "clips": [
                {"labels": {"bicycle": {"best_score": 0.91}, "person": {"best_score": 0.8}}},
                {"labels": {"person": {"best_score": 0.95}}}
            ]
        });
        let s = summarize(&final_json);
        assert_eq!(s["message"], "1 of 2 clips show bicycle");
        assert_eq!(
            s["clips"][0],
            json!({"clip": "clip-0001", "start_s": 5.0, "end_s": 9.5, "score": 0.91})
        );
        assert_eq!(
            s["labels"][0],
            json!({"label": "person", "best_score": 0.95, "clips": 2})
        );
        assert_eq!(s["labels"][1]["label"], "bicycle");
    }
}
