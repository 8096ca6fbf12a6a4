//! A request's timeline, drawn from its `state.json`: one row per request-wide stage and
//! per clip task, one bar per attempt (from `started_at` to `ended_at`, relative to the
//! request's `created_at`). [`Timeline::svg`] draws it as a Gantt chart, written by hand: a
//! few rectangles and labels do not need a plotting library. `fave timeline` draws the same
//! rows in the terminal and writes the SVG; the orchestrator's web page shows the SVG.
//!
//! Cold starts: a call its function reported as one (`X-Fave-Cold-Start`, by the one rule in
//! `readiness`, kept in the stage's metrics as `cold_start_ms`) is marked `cold`, the same
//! under fave's local gateway and OpenFaaS's; `/metrics` counts
//! `fave_stage_cold_starts_total` from the same reports.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::contract::detect;
use crate::state::{RequestState, RequestStatus, StageState, StageStatus};

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed, and another attempt followed.
    Retried,
    /// Failed, and the stage with it.
    Failed,
    /// Still under way.
    Running,
    /// Never ended: the request ended first (cancelled, or failed elsewhere).
    Interrupted,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::Running => "running",
            Self::Interrupted => "interrupted",
        }
    }

    /// The SVG's colour for this outcome.
    pub fn fill(self) -> &'static str {
        match self {
            Self::Succeeded => "#2e9d5b",
            Self::Retried => "#f0a030",
            Self::Failed => "#d64541",
            Self::Running => "#4a7bd0",
            Self::Interrupted => "#9aa0a6",
        }
    }
}

/// One attempt, in seconds since the request was created.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub attempt: u32,
    pub start: f64,
    pub end: f64,
    pub outcome: Outcome,
    pub call_id: Option<String>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// The call looks like it waited for a cold start (see the module's note).
    pub cold: bool,
}

/// One stage, or one clip's task.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `stage-audio`, or `clip-0001 stage-detect`.
    pub label: String,
    pub status: StageStatus,
    pub bars: Vec<Bar>,
    pub seconds: Option<f64>,
    /// The stage's `error_code`, when it failed.
    pub error_code: Option<String>,
    /// What the task's result says worth seeing beside it: the frames the detector looked at
    /// and those it carried (the difference gate).
    pub detail: Option<String>,
}

/// A request's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub request_id: String,
    pub status: RequestStatus,
    /// Seconds from creation to the end (or to now, while running).
    pub total: f64,
    pub rows: Vec<Row>,
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1e3
}

impl Timeline {
    pub fn build(state: &RequestState, now: DateTime<Utc>) -> Self {
        let origin = state.created_at;
        let end = state.ended_at.unwrap_or(now);
        let terminal = state.status.is_terminal();
        let row = |label: String, stage: &StageState| {
            // The function's own report of its last, succeeded call.
            let cold = stage.metrics.cold_start_ms.is_some();
            let last = stage.attempts.len();
            let bars = stage
                .attempts
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let is_last = i + 1 == last;
                    let outcome = match (a.ended_at, &a.failure) {
                        (None, _) if terminal || stage.status.is_terminal() => Outcome::Interrupted,
                        (None, _) => Outcome::Running,
                        (Some(_), Some(_)) if is_last && stage.status != StageStatus::Retrying => {
                            Outcome::Failed
                        }
                        (Some(_), Some(_)) => Outcome::Retried,
                        (Some(_), None) => Outcome::Succeeded,
                    };
                    Bar {
                        attempt: a.number,
                        start: seconds_between(origin, a.started_at),
                        end: seconds_between(origin, a.ended_at.unwrap_or(end)),
                        outcome,
                        call_id: a.call_id.clone(),
                        http_status: a.http_status,
                        error: a
                            .failure
                            .as_ref()
                            .map(|f| format!("{}: {}", f.error_code, f.error_detail)),
                        cold: cold && is_last && outcome == Outcome::Succeeded,
                    }
                })
                .collect();
            Row {
                label,
                status: stage.status,
                bars,
                seconds: stage.duration_ms.map(|ms| ms as f64 / 1e3),
                error_code: stage.failure.as_ref().map(|f| f.error_code.clone()),
                detail: (stage.name.as_str() == detect::NAME)
                    .then(|| stage.result::<detect::Output>())
                    .flatten()
                    .and_then(Result::ok)
                    .filter(|seen| seen.carried > 0)
                    .map(|seen| format!("{} looked at, {} carried", seen.detected, seen.carried)),
            }
        };
        let mut rows: Vec<Row> = state
            .stages
            .iter()
            .map(|s| row(s.name.to_string(), s))
            .collect();
        for clip in &state.clips {
            for task in &clip.tasks {
                rows.push(row(format!("{} {}", clip.clip, task.name), task));
            }
        }
        let latest = rows
            .iter()
            .flat_map(|r| r.bars.iter().map(|b| b.end))
            .fold(0.0_f64, f64::max);
        Self {
            request_id: state.request_id.to_string(),
            status: state.status,
            total: seconds_between(origin, end).max(latest).max(0.001),
            rows,
        }
    }

    pub fn attempts(&self) -> usize {
        self.rows.iter().map(|r| r.bars.len()).sum()
    }

    pub fn any(&self, outcome: Outcome) -> bool {
        self.rows
            .iter()
            .any(|r| r.bars.iter().any(|b| b.outcome == outcome))
    }

    pub fn cold_note(&self) -> &'static str {
        let marked = self.rows.iter().any(|r| r.bars.iter().any(|b| b.cold));
        if marked {
            "cold = a cold start its function reported (cold_start_ms: from its process's start \
             until it could serve the call)"
        } else {
            "cold starts: none reported by the functions"
        }
    }

    /// What each row's suffix says: duration, attempts, failure, cold start.
    pub fn notes(row: &Row) -> String {
        let mut notes = Vec::new();
        if row.bars.len() > 1 {
            notes.push(format!("{} attempts", row.bars.len()));
        }
        match row.status {
            StageStatus::Failed => notes.push(match &row.error_code {
                Some(code) => format!("FAILED {code}"),
                None => "FAILED".into(),
            }),
            StageStatus::Skipped => notes.push("skipped".into()),
            StageStatus::Pending => notes.push("pending".into()),
            _ => {}
        }
        if row.bars.iter().any(|b| b.cold) {
            notes.push("cold".into());
        }
        notes.extend(row.detail.clone());
        notes.join(", ")
    }

    /// The SVG picture: a title, one row per stage or task, one `<rect class="bar …">` per
    /// attempt (with a tooltip), marks for retries, failures and likely cold starts, a time
    /// axis and a legend.
    pub fn svg(&self) -> String {
        const LABEL_W: f64 = 230.0;
        const PLOT_W: f64 = 760.0;
        const NOTE_W: f64 = 150.0;
        const ROW_H: f64 = 22.0;
        const BAR_H: f64 = 14.0;
        const TOP: f64 = 58.0;
        let width = LABEL_W + PLOT_W + NOTE_W;
        let plot_bottom = TOP + ROW_H * self.rows.len() as f64;
        let legend_top = plot_bottom + 44.0;
        let height = legend_top + 64.0;
        let x = |t: f64| LABEL_W + (t / self.total).clamp(0.0, 1.0) * PLOT_W;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
        );
        let title = format!(
            "request {} · {} · {}",
            self.request_id,
            self.status.as_str(),
            duration(self.total)
        );
        let _ = writeln!(s, "<title>{}</title>", xml(&title));
        let _ = writeln!(
            s,
            r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text class="title" x="12" y="24" font-size="16" font-weight="bold">{}</text>"#,
            xml(&title)
        );
        let _ = writeln!(
            s,
            r##"<text x="12" y="42" fill="#555555">{}, {}; time since the request was created</text>"##,
            plural(self.rows.len(), "row"),
            plural(self.attempts(), "attempt")
        );
        // Grid and axis.
        let step = nice_step(self.total, 10);
        let mut t = 0.0;
        while t <= self.total + 1e-9 {
            let gx = x(t);
            let _ = writeln!(
                s,
                r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#e3e3e3"/>"##,
                plot_bottom + 4.0
            );
            let _ = writeln!(
                s,
                r##"<text class="tick" x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#555555">{}</text>"##,
                plot_bottom + 18.0,
                xml(&axis_label(t, step))
            );
            t += step;
        }
        let _ = writeln!(
            s,
            r##"<line x1="{LABEL_W}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888888"/>"##,
            plot_bottom + 4.0,
            LABEL_W + PLOT_W,
            plot_bottom + 4.0
        );
        for (i, row) in self.rows.iter().enumerate() {
            let y = TOP + ROW_H * i as f64;
            if i % 2 == 0 {
                let _ = writeln!(
                    s,
                    r##"<rect class="stripe" x="0" y="{y}" width="{width}" height="{ROW_H}" fill="#f6f7f9"/>"##
                );
            }
            let _ = writeln!(
                s,
                r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LABEL_W - 8.0,
                y + ROW_H / 2.0 + 4.0,
                xml(&row.label)
            );
            let by = y + (ROW_H - BAR_H) / 2.0;
            for bar in &row.bars {
                let (x0, x1) = (x(bar.start), x(bar.end));
                let w = (x1 - x0).max(1.5);
                let mut tip = format!(
                    "{} attempt {}: {} ({:.3}–{:.3} s, {})",
                    row.label,
                    bar.attempt,
                    bar.outcome.name(),
                    bar.start,
                    bar.end,
                    duration(bar.end - bar.start)
                );
                if let Some(c) = &bar.call_id {
                    let _ = write!(tip, ", call {c}");
                }
                if let Some(h) = bar.http_status {
                    let _ = write!(tip, ", HTTP {h}");
                }
                if let Some(e) = &bar.error {
                    let _ = write!(tip, ", {e}");
                }
                if bar.cold {
                    tip.push_str(", likely cold start");
                }
                let _ = writeln!(
                    s,
                    r#"<rect class="bar {}" data-row="{}" data-attempt="{}" x="{x0:.2}" y="{by:.1}" width="{w:.2}" height="{BAR_H}" rx="2" fill="{}"><title>{}</title></rect>"#,
                    bar.outcome.name(),
                    xml(&row.label),
                    bar.attempt,
                    bar.outcome.fill(),
                    xml(&tip)
                );
                let mark = match bar.outcome {
                    Outcome::Retried => Some(("↻", "#b36b00")),
                    Outcome::Failed => Some(("✕", "#a31f1b")),
                    _ => None,
                };
                if let Some((glyph, colour)) = mark {
                    let _ = writeln!(
                        s,
                        r#"<text class="mark {}" x="{:.1}" y="{:.1}" fill="{colour}" font-weight="bold">{glyph}</text>"#,
                        bar.outcome.name(),
                        x0 + w + 2.0,
                        by + BAR_H - 2.0
                    );
                }
                if bar.cold {
                    let _ = writeln!(
                        s,
                        r##"<text class="mark cold" x="{:.1}" y="{:.1}" fill="#1f5fbf" font-size="10">cold</text>"##,
                        x0 + 1.0,
                        by - 1.0
                    );
                }
            }
            let note = [
                row.seconds.map(duration).unwrap_or_default(),
                Self::notes(row),
            ]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join(" · ");
            let _ = writeln!(
                s,
                r##"<text class="note" x="{:.1}" y="{:.1}" fill="#333333">{}</text>"##,
                LABEL_W + PLOT_W + 8.0,
                y + ROW_H / 2.0 + 4.0,
                xml(&note)
            );
        }
        // Legend.
        let mut lx = 12.0;
        for outcome in [
            Outcome::Succeeded,
            Outcome::Retried,
            Outcome::Failed,
            Outcome::Running,
            Outcome::Interrupted,
        ] {
            let label = match outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::Retried => "failed, retried (↻)",
                Outcome::Failed => "failed (✕)",
                Outcome::Running => "running",
                Outcome::Interrupted => "interrupted",
            };
            let _ = writeln!(
                s,
                r#"<rect class="legend" x="{lx}" y="{legend_top}" width="14" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                outcome.fill(),
                lx + 18.0,
                legend_top + 10.0,
                xml(label)
            );
            lx += 36.0 + 7.0 * label.chars().count() as f64;
        }
        let _ = writeln!(
            s,
            r##"<text class="cold-note" x="12" y="{:.1}" fill="#555555" font-size="11">{}</text>"##,
            legend_top + 32.0,
            xml(self.cold_note())
        );
        s.push_str("</svg>\n");
        s
    }
}

/// A duration as people read it: "850 ms", "3.60 s", "2 m 05 s".
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".to_owned();
    }
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1e3)
    } else if seconds < 60.0 {
        format!("{seconds:.2} s")
    } else {
        let whole = seconds.round() as u64;
        format!("{} m {:02} s", whole / 60, whole % 60)
    }
}

/// "1 attempt", "3 attempts".
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A round step (1, 2 or 5 × 10ⁿ seconds) that cuts `total` into at most about `ticks`.
pub fn nice_step(total: f64, ticks: usize) -> f64 {
    let raw = total / ticks.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
        .max(0.001)
}

pub fn axis_label(t: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else if step >= 0.1 {
        1
    } else if step >= 0.01 {
        2
    } else {
        3
    };
    format!("{t:.decimals$} s")
}

/// Text safe inside an XML element or attribute.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(3.6, 10), 0.5);
        assert_eq!(nice_step(42.0, 10), 5.0);
        assert_eq!(nice_step(0.05, 10), 0.005);
        assert_eq!(axis_label(1.5, 0.5), "1.5 s");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(0.85), "850 ms");
        assert_eq!(duration(3.6), "3.60 s");
        assert_eq!(duration(125.0), "2 m 05 s");
        assert_eq!(plural(1, "row"), "1 row");
        assert_eq!(plural(3, "row"), "3 rows");
    }
}
