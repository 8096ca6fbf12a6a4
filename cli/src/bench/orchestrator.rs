//! Benchmarks of the orchestrator itself, on the no-op stack (`bench/noop.yml`): the real
//! orchestrator, gateway and store, with stages that do no work, so what is measured is
//! fave's own cost per step, per fanned-out task and per API call.
//!
//! - `overhead`: time per sequential step (state written at every step), p50/p95/p99.
//! - `fanout`: per-clip tasks completed per second by one orchestrator, per
//!   `MAX_CONCURRENT_INVOCATIONS`, side by side with the first setting.
//! - `api`: status and submit latency under many concurrent clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use fave_common::state::{RequestState, StageState};
use fave_local::stack::Stack;
use serde_json::{Value, json};

use super::report::{Chart, Report, Series};
use crate::stack::StackArgs;

/// Targets from the issue that asked for these suites.
const OVERHEAD_TARGET_MS: f64 = 5.0;
const FANOUT_TARGET_PER_S: f64 = 1000.0;

/// Starts the no-op stack with `env` for its functions, under `{data_dir}/bench-{name}`;
/// returns it with that directory, for [`remove_data`] once nothing is measured any more.
async fn noop_stack(
    args: &StackArgs,
    name: &str,
    env: &[(&str, String)],
) -> anyhow::Result<(Stack, PathBuf)> {
    let mut args = args.clone();
    if args.stack == Path::new("stack.yml") {
        args.stack = "bench/noop.yml".into();
    }
    args.data_dir = args.data_dir.join(format!("bench-{name}"));
    // A fresh store each time: earlier runs' requests would make listings and the
    // resumer's scans slower than a new deployment's. (Normally there is nothing to remove:
    // each suite removes its stores when it is done.)
    let _ = std::fs::remove_dir_all(&args.data_dir);
    let data_dir = args.data_dir.clone();
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut options = crate::stack::stack_options(&args, any_port, any_port, true)?;
    options.extra_env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let stack = Stack::start(options).await?;
    stack
        .store
        .put_json(
            "uploads/bench/input.json",
            &json!({"what": "a stand-in video; no-op stages never read it"}),
        )
        .await?;
    Ok((stack, data_dir))
}

/// Removes the benchmark stores, after every measurement of a suite: on a filesystem without
/// a journal (this machine's ext4), inodes freed in the last 5–10 s are passed over when new
/// files are made, so deleting a store of thousands of objects right before a run makes that
/// run's own writes slow.
fn remove_data(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn input_uri(stack: &Stack) -> String {
    format!("s3://{}/uploads/bench/input.json", stack.store.bucket())
}

/// Submits and waits (sync window) for the end; returns the request's state.
async fn run_one(http: &reqwest::Client, stack: &Stack) -> anyhow::Result<RequestState> {
    let orchestrator = format!("{}function/orchestrator", stack.gateway_url);
    let answer: Value = http
        .post(&orchestrator)
        .json(&json!({ "video_uri": input_uri(stack) }))
        .send()
        .await?
        .json()
        .await?;
    if answer["status"] != "COMPLETED" {
        bail!("the request did not complete: {answer}");
    }
    let id = answer["request_id"].as_str().context("no request id")?;
    Ok(http
        .get(format!("{orchestrator}/requests/{id}"))
        .send()
        .await?
        .json()
        .await?)
}

/// The orchestrator's count of state.json writes and their bytes so far (its `/metrics`).
async fn state_written(http: &reqwest::Client, stack: &Stack) -> anyhow::Result<(f64, f64)> {
    let text = http
        .get(format!(
            "{}function/orchestrator/metrics",
            stack.gateway_url
        ))
        .send()
        .await?
        .text()
        .await?;
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .with_context(|| format!("no {name} in the orchestrator's metrics"))
    };
    Ok((
        counter("fave_state_writes_total")?,
        counter("fave_state_written_bytes_total")?,
    ))
}

fn ended(s: &StageState) -> Option<DateTime<Utc>> {
    s.attempts.last().and_then(|a| a.ended_at)
}

fn started(s: &StageState) -> Option<DateTime<Utc>> {
    s.attempts.first().map(|a| a.started_at)
}

fn ms(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3
}

/// The value below which `q` of the sorted `v` lie (nearest rank).
pub(super) fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub(super) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn print_spread(label: &str, v: &[f64], unit: &str) {
    println!(
        "  {label:<26} p50 {:>8.2}  p95 {:>8.2}  p99 {:>8.2}  min {:>8.2}  max {:>8.2} {unit}  (n={})",
        quantile(v, 0.5),
        quantile(v, 0.95),
        quantile(v, 0.99),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    );
}

/// The same figures as [`print_spread`], for a report.
fn spread(v: &[f64]) -> Value {
    json!({
        "p50": quantile(v, 0.5),
        "p95": quantile(v, 0.95),
        "p99": quantile(v, 0.99),
        "min": v.first(),
        "max": v.last(),
        "n": v.len(),
    })
}

/// `fave bench overhead`: the orchestrator's cost per sequential step.
pub async fn overhead(args: StackArgs, steps: usize, requests: usize) -> anyhow::Result<Report> {
    let (stack, data) =
        noop_stack(&args, "overhead", &[("FAVE_NOOP_STEPS", steps.to_string())]).await?;
    let http = reqwest::Client::new();
    println!(
        "fave bench overhead: {requests} requests of {steps} sequential no-op steps, one at a \
         time, after 2 warm-up requests; per step: the previous step's success and this step's \
         start written to state.json in one write, the call through the gateway (the stage \
         reads and writes its manifest). The first step of each request is left out (it \
         follows the input copy)."
    );
    let outcome = async {
        for _ in 0..2 {
            run_one(&http, &stack).await?;
        }
        let (mut step_ms, mut call_ms, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..requests {
            let state = run_one(&http, &stack).await?;
            // Every write of state.json bumps its revision.
            writes.push(state.revision as f64);
            for pair in state.stages.windows(2) {
                let (Some(before), Some(end)) = (ended(&pair[0]), ended(&pair[1])) else {
                    bail!("a step has no end in {}", state.request_id);
                };
                step_ms.push(ms(end - before));
                if let Some(c) = pair[1].metrics.call_ms {
                    call_ms.push(c as f64);
                }
            }
        }
        Ok((sorted(step_ms), sorted(call_ms), sorted(writes)))
    }
    .await;
    stack.shutdown().await;
    remove_data(&[data]);
    let (step_ms, call_ms, writes) = outcome?;
    let writes_per_request = quantile(&writes, 0.5);
    println!(
        "  state.json writes per request: p50 {writes_per_request:.0} for {steps} steps \
         ({:.2} per step, the input copy, the start and the end included)",
        writes_per_request / steps as f64
    );
    print_spread("per step (all of it)", &step_ms, "ms");
    print_spread("  of which the call", &call_ms, "ms");
    let p50 = quantile(&step_ms, 0.5);
    let state_p50 = p50 - quantile(&call_ms, 0.5);
    println!("  state writes and scheduling, p50 ≈ {state_p50:.2} ms");
    println!(
        "  p50 vs target {OVERHEAD_TARGET_MS} ms: {:.2}× ({})",
        p50 / OVERHEAD_TARGET_MS,
        if p50 <= OVERHEAD_TARGET_MS {
            "met"
        } else {
            "not met"
        }
    );
    Ok(Report {
        suite: "overhead",
        setup: json!({ "steps": steps, "requests": requests, "warm_up_requests": 2 }),
        figures: json!({
            "per_step_ms": spread(&step_ms),
            "call_ms": spread(&call_ms),
            "state_and_scheduling_p50_ms": state_p50,
            "state_writes_per_request_p50": writes_per_request,
            "target_p50_ms": OVERHEAD_TARGET_MS,
            "met": p50 <= OVERHEAD_TARGET_MS,
            "steps_ms": step_ms,
        }),
        chart: Chart::latency(
            format!("orchestration overhead per step ({requests} × {steps} no-op steps)"),
            &[
                ("per step (all of it)", &step_ms),
                ("of which the call", &call_ms),
            ],
            Some((
                format!("target p50 {OVERHEAD_TARGET_MS} ms"),
                OVERHEAD_TARGET_MS,
            )),
        ),
    })
}

/// `fave bench fanout`: per-clip no-op tasks per second, per concurrency setting.
pub async fn fanout(
    args: StackArgs,
    clips: usize,
    concurrency: &[usize],
    runs: usize,
) -> anyhow::Result<Report> {
    println!(
        "fave bench fanout: one request listing {clips} clips, each through one no-op task, \
         MAX_CONCURRENT_INVOCATIONS = {concurrency:?}, a fresh stack per setting, 1 warm-up + \
         {runs} runs each; tasks per second from the first task's start to the last one's end."
    );
    // Per setting: tasks/s of each run, bytes of state.json written per task, its size.
    let mut table: Vec<(usize, Vec<f64>, f64, f64)> = Vec::new();
    let mut stores = Vec::new();
    for &c in concurrency {
        let (stack, data) = noop_stack(
            &args,
            &format!("fanout-{c}"),
            &[
                ("FAVE_NOOP_STEPS", "1".into()),
                ("FAVE_NOOP_CLIPS", clips.to_string()),
                ("MAX_CONCURRENT_INVOCATIONS", c.to_string()),
            ],
        )
        .await?;
        let http = reqwest::Client::new();
        let outcome = async {
            run_one(&http, &stack).await?;
            let (mut rates, mut bytes_per_task, mut state_kb) = (Vec::new(), Vec::new(), 0.0);
            for _ in 0..runs.max(1) {
                let (_, bytes_before) = state_written(&http, &stack).await?;
                let state = run_one(&http, &stack).await?;
                let (_, bytes_after) = state_written(&http, &stack).await?;
                let tasks: Vec<&StageState> =
                    state.clips.iter().flat_map(|c| c.tasks.iter()).collect();
                let first = tasks.iter().filter_map(|t| started(t)).min();
                let last = tasks.iter().filter_map(|t| ended(t)).max();
                let (Some(first), Some(last)) = (first, last) else {
                    bail!("no clip task ran in {}", state.request_id);
                };
                rates.push(tasks.len() as f64 / (ms(last - first) / 1e3));
                bytes_per_task.push((bytes_after - bytes_before) / tasks.len() as f64);
                state_kb = serde_json::to_vec(&state)?.len() as f64 / 1024.0;
            }
            Ok((
                sorted(rates),
                quantile(&sorted(bytes_per_task), 0.5),
                state_kb,
            ))
        }
        .await;
        stack.shutdown().await;
        stores.push(data);
        let (rates, bytes_per_task, state_kb) = match outcome {
            Ok(measured) => measured,
            Err(e) => {
                remove_data(&stores);
                return Err(e);
            }
        };
        println!(
            "  concurrency {c:>3}: {:>8.1} tasks/s median  (min {:.1}, max {:.1}); \
             {:.1} KB of state.json written per task, state.json {state_kb:.0} KB",
            quantile(&rates, 0.5),
            rates.first().copied().unwrap_or(f64::NAN),
            rates.last().copied().unwrap_or(f64::NAN),
            bytes_per_task / 1024.0,
        );
        table.push((c, rates, bytes_per_task, state_kb));
    }
    remove_data(&stores);
    let base = table
        .first()
        .map_or(f64::NAN, |(_, r, ..)| quantile(r, 0.5));
    if let Some((base_c, ..)) = table.first() {
        println!(
            "  side by side (median tasks/s; ratio to concurrency {base_c}; vs target {FANOUT_TARGET_PER_S}/s):"
        );
    }
    let mut settings = Vec::new();
    for (c, rates, bytes_per_task, state_kb) in &table {
        let m = quantile(rates, 0.5);
        println!(
            "    {c:>3}: {m:>8.1}   {:>5.2}×   {:>5.2}× target",
            m / base,
            m / FANOUT_TARGET_PER_S
        );
        settings.push(json!({
            "max_concurrent_invocations": c,
            "tasks_per_s": rates,
            "median": m,
            "ratio_to_first": m / base,
            "ratio_to_target": m / FANOUT_TARGET_PER_S,
            "state_bytes_written_per_task": bytes_per_task,
            "state_json_kb": state_kb,
        }));
    }
    let point = |f: fn(&[f64]) -> f64| -> Vec<(f64, f64)> {
        table.iter().map(|(c, r, ..)| (*c as f64, f(r))).collect()
    };
    Ok(Report {
        suite: "fanout",
        setup: json!({
            "clips": clips,
            "max_concurrent_invocations": concurrency,
            "runs": runs.max(1),
            "warm_up_runs": 1,
            "data_dir": args.data_dir,
        }),
        figures: json!({ "settings": settings, "target_tasks_per_s": FANOUT_TARGET_PER_S }),
        chart: Chart::Lines {
            title: format!("no-op clip tasks per second, one request of {clips} clips"),
            x_label: "MAX_CONCURRENT_INVOCATIONS".into(),
            y_label: "tasks/s".into(),
            log_x: true,
            series: vec![
                Series {
                    name: "median".into(),
                    points: point(|r| quantile(r, 0.5)),
                },
                Series {
                    name: "slowest run".into(),
                    points: point(|r| r.first().copied().unwrap_or(f64::NAN)),
                },
            ],
            target: Some((
                format!("target {FANOUT_TARGET_PER_S}/s"),
                FANOUT_TARGET_PER_S,
            )),
        },
    })
}

/// `fave bench api`: latency of a status query and of a submit under `clients` concurrent
/// clients. Submits answer 202 at once (sync window 0) and run one no-op step after.
pub async fn api(args: StackArgs, clients: usize, per_client: usize) -> anyhow::Result<Report> {
    let (stack, data) = noop_stack(
        &args,
        "api",
        &[
            ("FAVE_NOOP_STEPS", "1".into()),
            ("FAVE_SYNC_WINDOW_SECS", "0".into()),
        ],
    )
    .await?;
    println!(
        "fave bench api: {clients} concurrent clients, each {per_client} status queries \
         (GET /requests/{{id}}) then {per_client} submits (POST /, answered 202 once state.json \
         and the input copy are written), through the gateway; after a warm-up round."
    );
    let orchestrator = format!("{}function/orchestrator", stack.gateway_url);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let outcome = async {
        let first: Value = http
            .post(&orchestrator)
            .json(&json!({ "video_uri": input_uri(&stack) }))
            .send()
            .await?
            .json()
            .await?;
        let id = first["request_id"]
            .as_str()
            .context("no request id")?
            .to_owned();
        let status_url = Arc::new(format!("{orchestrator}/requests/{id}"));
        let body = Arc::new(json!({ "video_uri": input_uri(&stack) }));
        let one = |submit: bool| {
            let (http, status_url, orchestrator, body) = (
                http.clone(),
                status_url.clone(),
                orchestrator.clone(),
                body.clone(),
            );
            async move {
                let clock = Instant::now();
                let response = if submit {
                    http.post(&orchestrator).json(&*body).send().await?
                } else {
                    http.get(&*status_url).send().await?
                };
                let status = response.status().as_u16();
                response.bytes().await?;
                let want = if submit { 202 } else { 200 };
                if status != want {
                    bail!("answered {status}, not {want}");
                }
                anyhow::Ok(clock.elapsed().as_secs_f64() * 1e3)
            }
        };
        let round = |submit: bool, n: usize| {
            let one = &one;
            async move {
                let clock = Instant::now();
                let per_client = futures::future::try_join_all((0..clients).map(|_| async move {
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(one(submit).await?);
                    }
                    anyhow::Ok(v)
                }))
                .await?;
                let wall = clock.elapsed();
                anyhow::Ok((sorted(per_client.into_iter().flatten().collect()), wall))
            }
        };
        round(false, 2).await?;
        let (status_ms, status_wall) = round(false, per_client).await?;
        let (submit_ms, submit_wall) = round(true, per_client).await?;
        anyhow::Ok((status_ms, status_wall, submit_ms, submit_wall))
    }
    .await;
    // Let the submitted requests' one step finish before stopping, so shutdown is quiet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.shutdown().await;
    remove_data(&[data]);
    let (status_ms, status_wall, submit_ms, submit_wall) = outcome?;
    print_spread("status query", &status_ms, "ms");
    print_spread("submit", &submit_ms, "ms");
    let status_per_s = status_ms.len() as f64 / status_wall.as_secs_f64();
    let submit_per_s = submit_ms.len() as f64 / submit_wall.as_secs_f64();
    println!("  throughput: {status_per_s:.0} status queries/s, {submit_per_s:.0} submits/s");
    let ratio = quantile(&submit_ms, 0.5) / quantile(&status_ms, 0.5);
    println!("  side by side, p50: submit / status = {ratio:.1}×");
    Ok(Report {
        suite: "api",
        setup: json!({ "clients": clients, "per_client": per_client, "warm_up_per_client": 2 }),
        figures: json!({
            "status_ms": spread(&status_ms),
            "submit_ms": spread(&submit_ms),
            "status_per_s": status_per_s,
            "submits_per_s": submit_per_s,
            "submit_over_status_p50": ratio,
        }),
        chart: Chart::latency(
            format!("API latency under {clients} concurrent clients"),
            &[
                ("GET /requests/{id}", &status_ms),
                ("POST / (202)", &submit_ms),
            ],
            None,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
