//! The orchestrator's benchmark suites run in their quick modes and print figures (CI runs
//! them here; nothing is asserted about speed, only that each measured what it says).

use std::process::Command;

use crate::util::{bin_dir, repo_root};

/// Runs `fave bench ARGS --quick` and returns what it printed.
fn quick(args: &[&str]) -> String {
    let data = tempfile::tempdir().expect("a temp dir");
    let out = Command::new(bin_dir().join("fave"))
        .current_dir(repo_root())
        .arg("bench")
        .args(args)
        .arg("--quick")
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("fave runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    stdout
}

/// The number after `key` on the line starting with `line`.
fn figure(text: &str, line: &str, key: &str) -> f64 {
    let l = text
        .lines()
        .find(|l| l.trim_start().starts_with(line))
        .unwrap_or_else(|| panic!("no line {line:?} in\n{text}"));
    let after = l
        .split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("no {key:?} in {l:?}"));
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {l:?}"))
}

#[test]
fn bench_overhead_and_fanout_run_in_quick_mode() {
    let overhead = quick(&["overhead"]);
    // 3 requests of 5 steps, the first of each left out: 12 steps measured.
    assert!(overhead.contains("(n=12)"), "{overhead}");
    let p50 = figure(&overhead, "per step", "p50");
    assert!(p50 > 0.0 && p50.is_finite(), "{overhead}");

    let fanout = quick(&["fanout"]);
    for c in ["concurrency   1:", "concurrency   4:"] {
        let rate = figure(&fanout, c, ":");
        assert!(rate > 0.0 && rate.is_finite(), "{fanout}");
    }
}
