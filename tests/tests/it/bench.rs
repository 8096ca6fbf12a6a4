//! The orchestrator's benchmark suites run in their quick modes, print figures and write
//! their report and chart (CI runs them here; nothing is asserted about speed, only that
//! each measured what it says and the report and chart hold the same).

use std::process::Command;

use serde_json::Value;

use crate::util::{bin_dir, repo_root};

/// Runs `fave bench SUITE --quick`; returns what it printed, its JSON report and its SVG.
fn quick(suite: &str) -> (String, Value, String) {
    let data = tempfile::tempdir().expect("a temp dir");
    let reports = data.path().join("reports");
    let out = Command::new(bin_dir().join("fave"))
        .current_dir(repo_root())
        .args(["bench", suite, "--quick", "--data-dir"])
        .arg(data.path())
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .expect("fave runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let json_path = reports.join(format!("{suite}.json"));
    let svg_path = reports.join(format!("{suite}.svg"));
    assert!(
        stdout.contains(&json_path.display().to_string()),
        "the report's path is printed: {stdout}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).expect("a report"))
        .expect("the report is JSON");
    assert_eq!(report["suite"], suite);
    let svg = std::fs::read_to_string(&svg_path).expect("a chart");
    (stdout, report, svg)
}

/// How many points the chart plots (a circle each), and the chart parsed.
fn chart(svg: &str) -> (usize, roxmltree::Document<'_>) {
    let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let points = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "circle")
        .count();
    (points, doc)
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
fn bench_overhead_and_fanout_run_in_quick_mode_and_write_reports_and_charts() {
    let (overhead, report, svg) = quick("overhead");
    // 3 requests of 5 steps, the first of each left out: 12 steps measured.
    assert!(overhead.contains("(n=12)"), "{overhead}");
    let p50 = figure(&overhead, "per step", "p50");
    assert!(p50 > 0.0 && p50.is_finite(), "{overhead}");
    // The report holds what was printed, and every step measured.
    let figures = &report["figures"];
    assert_eq!(report["setup"]["steps"], 5);
    assert_eq!(figures["per_step_ms"]["n"], 12);
    assert_eq!(figures["steps_ms"].as_array().map(Vec::len), Some(12));
    let reported = figures["per_step_ms"]["p50"].as_f64().expect("a p50");
    assert!((reported - p50).abs() < 0.01, "{reported} vs printed {p50}");
    // Two latency curves of 12 points each.
    let (points, _) = chart(&svg);
    assert_eq!(points, 2 * 12, "{svg}");
    assert!(svg.contains("orchestration overhead per step"));

    let (fanout, report, svg) = quick("fanout");
    let settings = report["figures"]["settings"].as_array().expect("settings");
    assert_eq!(settings.len(), 2, "{report}");
    for (setting, (c, line)) in settings
        .iter()
        .zip([(1, "concurrency   1:"), (4, "concurrency   4:")])
    {
        let rate = figure(&fanout, line, ":");
        assert!(rate > 0.0 && rate.is_finite(), "{fanout}");
        assert_eq!(setting["max_concurrent_invocations"], c);
        let median = setting["median"].as_f64().expect("a median");
        assert!((median - rate).abs() < 0.1, "{median} vs printed {rate}");
    }
    // The median and the slowest run, at each of the two settings.
    let (points, _) = chart(&svg);
    assert_eq!(points, 2 * 2, "{svg}");
    assert!(svg.contains("MAX_CONCURRENT_INVOCATIONS"));
}
