//! What the commands print for people: colour only on a terminal (never with `NO_COLOR`),
//! the width to draw in, times and durations.

use std::fmt::Display;
use std::io::IsTerminal;

use fave_common::state::{RequestStatus, StageStatus};

/// A colour (or weight) for a bit of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    Green,
    Red,
    Yellow,
    Blue,
    Cyan,
    Dim,
    Bold,
}

/// Paints text for one stream: ANSI codes on a terminal, plain text anywhere else.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    on: bool,
}

impl Palette {
    pub fn stdout() -> Self {
        Self::new(std::io::stdout().is_terminal())
    }

    pub fn stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    fn new(terminal: bool) -> Self {
        Self {
            on: terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// No colour at all (tests, files).
    #[cfg(test)]
    pub fn plain() -> Self {
        Self { on: false }
    }

    pub fn paint(self, paint: Paint, text: impl Display) -> String {
        if !self.on {
            return text.to_string();
        }
        let code = match paint {
            Paint::Green => "32",
            Paint::Red => "31",
            Paint::Yellow => "33",
            Paint::Blue => "34",
            Paint::Cyan => "36",
            Paint::Dim => "2",
            Paint::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    pub fn request_status(self, status: RequestStatus) -> String {
        let paint = match status {
            RequestStatus::Completed => Paint::Green,
            RequestStatus::Failed => Paint::Red,
            RequestStatus::Cancelled => Paint::Yellow,
            RequestStatus::Init | RequestStatus::Running => Paint::Blue,
        };
        self.paint(paint, status.as_str())
    }

    pub fn stage_status(self, status: StageStatus) -> String {
        let (paint, name) = match status {
            StageStatus::Pending => (Paint::Dim, "PENDING"),
            StageStatus::Running => (Paint::Blue, "RUNNING"),
            StageStatus::Retrying => (Paint::Yellow, "RETRYING"),
            StageStatus::Succeeded => (Paint::Green, "SUCCEEDED"),
            StageStatus::Failed => (Paint::Red, "FAILED"),
            StageStatus::Skipped => (Paint::Dim, "SKIPPED"),
        };
        self.paint(paint, name)
    }

    /// Pads before painting, so escape codes do not upset column widths.
    pub fn padded(self, paint: Paint, text: &str, width: usize) -> String {
        self.paint(paint, format!("{text:<width$}"))
    }
}

/// The columns of the terminal on stdout, else `COLUMNS`, else 100.
pub fn width() -> usize {
    console::Term::stdout()
        .size_checked()
        .map(|(_, w)| usize::from(w))
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .unwrap_or(100)
        .clamp(60, 400)
}

/// Durations and counts read the same in the terminal and on the web page.
pub use fave_common::timeline::{duration, plural};

/// Cuts text to `max` characters, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(0.25), "250 ms");
        assert_eq!(duration(4.214), "4.21 s");
        assert_eq!(duration(125.2), "2 m 05 s");
        assert_eq!(duration(f64::NAN), "?");
    }

    #[test]
    fn plain_text_has_no_escape_codes() {
        let p = Palette::plain();
        assert_eq!(p.paint(Paint::Red, "x"), "x");
        assert_eq!(p.request_status(RequestStatus::Failed), "FAILED");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
