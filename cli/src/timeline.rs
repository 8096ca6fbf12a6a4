//! `fave timeline`: where one request spent its time, drawn from its `state.json`.
//!
//! The rows and the SVG are `fave_common::timeline`'s (the web page shows the same picture);
//! [`text`] draws them in the terminal.

use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::Utc;
use clap::Args;
use fave_common::ids::RequestId;
use fave_common::state::{RequestState, StageStatus};
pub use fave_common::timeline::{Outcome, Timeline};
use fave_common::timeline::{axis_label, nice_step};

use crate::client::{Client, GatewayArgs, exit, request_id};
use crate::term::{self, Paint, Palette};

#[derive(Args, Debug)]
#[command(after_help = "\
One row per request-wide stage and per clip task, one bar per attempt; retried and failed
attempts are marked, and so are the calls their function reported as cold starts.

Examples:
  fave timeline 0190f3c4a9b87d6e8f0a1b2c3d4e5f60
  fave timeline 0190f3c4a9b87d6e8f0a1b2c3d4e5f60 -o request.svg
  fave timeline --state state.json -o request.svg")]
pub struct TimelineArgs {
    /// The request id.
    #[arg(value_parser = request_id, required_unless_present = "state")]
    pub id: Option<RequestId>,
    /// Also write the picture as SVG to this file.
    #[arg(short = 'o', long = "output", value_name = "FILE.svg")]
    pub output: Option<PathBuf>,
    /// Draw from a state.json file instead of asking the orchestrator.
    #[arg(long, value_name = "STATE.json", conflicts_with = "id")]
    pub state: Option<PathBuf>,
    /// Columns for the terminal drawing (default: the terminal's width).
    #[arg(long, value_parser = clap::value_parser!(u16).range(60..))]
    pub width: Option<u16>,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

pub async fn run(args: TimelineArgs) -> anyhow::Result<u8> {
    let state: RequestState = match (&args.state, &args.id) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a state.json: {e}", path.display()))?
        }
        (None, Some(id)) => match Client::new(&args.gateway)?.state(id).await {
            Ok((_, state)) => state,
            Err(e) => return Ok(e.report(false)),
        },
        (None, None) => anyhow::bail!("give a request id or --state"),
    };
    let timeline = Timeline::build(&state, Utc::now());
    let width = args.width.map_or_else(term::width, usize::from);
    print!("{}", text(&timeline, width, Palette::stdout()));
    if let Some(path) = &args.output {
        std::fs::write(path, timeline.svg())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(exit::OK)
}
/// The plain-text drawing of `tl`, `width` columns wide.
pub fn text(tl: &Timeline, width: usize, p: Palette) -> String {
    let mut out = String::new();
    let label_w = tl
        .rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let note_w = tl
        .rows
        .iter()
        .map(|r| Timeline::notes(r).chars().count())
        .max()
        .unwrap_or(0);
    // label │bars│ duration notes
    let suffix_w = 10 + if note_w > 0 { note_w + 2 } else { 0 };
    let plot_w = width.saturating_sub(label_w + suffix_w + 4).max(20);
    let scale = plot_w as f64 / tl.total;
    let column = |t: f64| ((t * scale).floor().max(0.0) as usize).min(plot_w - 1);
    let _ = writeln!(
        out,
        "{}  {}  {}  {}, {}   (1 column = {})",
        p.paint(Paint::Bold, format!("request {}", tl.request_id)),
        p.request_status(tl.status),
        term::duration(tl.total),
        term::plural(tl.rows.len(), "row"),
        term::plural(tl.attempts(), "attempt"),
        term::duration(tl.total / plot_w as f64),
    );
    for row in &tl.rows {
        let mut cells: Vec<Option<Outcome>> = vec![None; plot_w];
        for bar in &row.bars {
            let (a, b) = (column(bar.start), column(bar.end).max(column(bar.start)));
            for cell in &mut cells[a..=b] {
                *cell = Some(bar.outcome);
            }
        }
        let mut bars = String::new();
        let mut run: Option<(Option<Outcome>, String)> = None;
        // Paint runs of one outcome at once, so escape codes stay few.
        for cell in cells {
            let ch = cell.map_or(' ', block);
            match &mut run {
                Some((o, s)) if *o == cell => s.push(ch),
                _ => {
                    if let Some((o, s)) = run.take() {
                        bars.push_str(&paint_run(p, o, &s));
                    }
                    run = Some((cell, ch.to_string()));
                }
            }
        }
        if let Some((o, s)) = run {
            bars.push_str(&paint_run(p, o, &s));
        }
        let took = row.seconds.map(term::duration).unwrap_or_default();
        let notes = Timeline::notes(row);
        let notes = if notes.is_empty() {
            String::new()
        } else {
            let paint = if row.status == StageStatus::Failed {
                Paint::Red
            } else if row.bars.len() > 1 {
                Paint::Yellow
            } else {
                Paint::Cyan
            };
            format!("  {}", p.paint(paint, notes))
        };
        let _ = writeln!(out, "{:<label_w$} │{bars}│ {took:>9}{notes}", row.label);
    }
    // The axis: ticks at round steps, labels where they fit.
    let step = nice_step(tl.total, (plot_w / 14).max(1));
    let mut axis = vec![' '; plot_w + 12];
    let mut ticks = vec!['─'; plot_w];
    let mut t = 0.0;
    let mut free_from = 0;
    while t <= tl.total + 1e-9 {
        let col = column(t);
        ticks[col] = '┬';
        let label = axis_label(t, step);
        if col >= free_from && col + label.len() <= axis.len() {
            for (i, ch) in label.chars().enumerate() {
                axis[col + i] = ch;
            }
            free_from = col + label.len() + 2;
        }
        t += step;
    }
    let _ = writeln!(
        out,
        "{:<label_w$} └{}┘",
        "",
        ticks.into_iter().collect::<String>()
    );
    let _ = writeln!(
        out,
        "{:<label_w$}  {}",
        "",
        axis.into_iter().collect::<String>().trim_end()
    );
    let mut legend = vec![format!("{} succeeded", p.paint(Paint::Green, '█'))];
    if tl.any(Outcome::Retried) {
        legend.push(format!("{} failed, retried", p.paint(Paint::Yellow, '▒')));
    }
    if tl.any(Outcome::Failed) {
        legend.push(format!("{} failed", p.paint(Paint::Red, '░')));
    }
    if tl.any(Outcome::Running) || tl.any(Outcome::Interrupted) {
        legend.push(format!(
            "{} running / interrupted",
            p.paint(Paint::Blue, '▓')
        ));
    }
    let _ = writeln!(out, "{}", legend.join("   "));
    let _ = writeln!(out, "{}", p.paint(Paint::Dim, tl.cold_note()));
    out
}

/// The terminal drawing's block for an outcome.
fn block(o: Outcome) -> char {
    match o {
        Outcome::Succeeded => '█',
        Outcome::Retried => '▒',
        Outcome::Failed => '░',
        Outcome::Running | Outcome::Interrupted => '▓',
    }
}

fn paint(o: Outcome) -> Paint {
    match o {
        Outcome::Succeeded => Paint::Green,
        Outcome::Retried => Paint::Yellow,
        Outcome::Failed => Paint::Red,
        Outcome::Running => Paint::Blue,
        Outcome::Interrupted => Paint::Dim,
    }
}

fn paint_run(p: Palette, outcome: Option<Outcome>, s: &str) -> String {
    match outcome {
        Some(o) => p.paint(paint(o), s),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::tests::sample_state;
    use fave_common::contract::detect;

    #[test]
    fn rows_and_bars_follow_the_state() {
        let state = sample_state();
        let tl = Timeline::build(&state, Utc::now());
        let labels: Vec<&str> = tl.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "stage-ffmpeg-0",
                "stage-audio",
                "clip-0000 stage-ffmpeg-2",
                "clip-0000 stage-detect",
                "clip-0001 stage-ffmpeg-2",
                "clip-0001 stage-detect"
            ]
        );
        let audio = &tl.rows[1];
        assert_eq!(audio.bars.len(), 2);
        assert_eq!(audio.bars[0].outcome, Outcome::Retried);
        assert_eq!(audio.bars[1].outcome, Outcome::Succeeded);
        assert!((audio.bars[0].start - 1.2).abs() < 1e-9);
        assert!((tl.total - 3.6).abs() < 1e-9);
        assert_eq!(
            tl.attempts(),
            state.tasks().map(|t| t.attempts.len()).sum::<usize>()
        );
        assert!(!tl.rows.iter().any(|r| r.bars.iter().any(|b| b.cold)));
    }

    #[test]
    fn a_clips_detection_says_how_many_frames_the_gate_carried() {
        let mut state = sample_state();
        let seen = detect::Output {
            frames: 12,
            detected: 5,
            carried: 7,
            labels: Default::default(),
            detect_ms: 900,
        };
        let task = &mut state.clips[0].tasks[1];
        assert_eq!(task.name.as_str(), detect::NAME);
        task.result = Some(serde_json::to_value(&seen).unwrap());
        let tl = Timeline::build(&state, Utc::now());
        let row = |label: &str| tl.rows.iter().find(|r| r.label == label).unwrap();
        let notes = Timeline::notes(row("clip-0000 stage-detect"));
        assert!(notes.contains("5 looked at, 7 carried"), "{notes}");
        // The other clip's detection carried nothing: nothing to say.
        assert!(!Timeline::notes(row("clip-0001 stage-detect")).contains("carried"));
    }

    #[test]
    fn only_a_call_its_function_reported_is_marked_as_a_cold_start() {
        let mut state = sample_state();
        let stage = &mut state.stages[0];
        stage.metrics.call_ms = Some(900);
        stage.metrics.work_ms = Some(300);
        stage.metrics.cold_start_ms = Some(600.0);
        // Slow, with little work, but not reported: not a cold start.
        state.stages[1].metrics.call_ms = Some(2500);
        state.stages[1].metrics.work_ms = Some(250);
        let tl = Timeline::build(&state, Utc::now());
        assert!(tl.rows[0].bars[0].cold);
        assert!(!tl.rows[1].bars.iter().any(|b| b.cold));
        let text = text(&tl, 100, Palette::plain());
        assert!(Timeline::notes(&tl.rows[0]).contains("cold"));
        assert!(!Timeline::notes(&tl.rows[1]).contains("cold"));
        assert!(text.contains("its function reported"), "{text}");
        assert!(tl.svg().contains("class=\"mark cold\""));
    }

    #[test]
    fn the_text_drawing_has_every_row_scaled_to_the_width() {
        let tl = Timeline::build(&sample_state(), Utc::now());
        let text = text(&tl, 100, Palette::plain());
        for row in &tl.rows {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{} ", row.label)))
                .unwrap_or_else(|| panic!("no row {} in\n{text}", row.label));
            assert!(line.contains('█'), "{line}");
            assert!(line.chars().count() <= 100, "{line}");
        }
        assert!(text.contains("2 attempts"), "{text}");
        assert!(text.contains('▒'), "a retried attempt is drawn: {text}");
        assert!(
            text.starts_with("request req1  COMPLETED  3.60 s"),
            "{text}"
        );
        assert!(text.contains("0 s"), "{text}");
    }

    #[test]
    fn the_svg_has_one_bar_per_attempt_and_escapes_text() {
        let mut state = sample_state();
        state.stages[1].attempts[0]
            .failure
            .as_mut()
            .unwrap()
            .error_detail = "<bad & \"quoted\">\u{1}".into();
        let tl = Timeline::build(&state, Utc::now());
        let svg = tl.svg();
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        let attempts: usize = state.tasks().map(|t| t.attempts.len()).sum();
        assert_eq!(attempts, 7);
        assert_eq!(svg.matches("<rect class=\"bar ").count(), attempts);
        assert_eq!(svg.matches("<rect class=\"bar retried\"").count(), 1);
        assert!(svg.contains("&lt;bad &amp; &quot;quoted&quot;&gt; "));
        assert!(svg.contains("class=\"mark retried\""));
    }
}
