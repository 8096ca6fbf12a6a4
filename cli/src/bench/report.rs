//! What a `fave bench` suite leaves besides its printout: `<suite>.json`, every figure it
//! measured with its setup, for scripts; and `<suite>.svg`, a chart of them, for people.
//! The suites build a [`Report`]; `main` writes it under `--report-dir`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use serde_json::{Value, json};

/// One suite's results.
pub struct Report {
    pub suite: &'static str,
    /// What was run: sizes, settings, the video.
    pub setup: Value,
    /// Every figure measured, and the summary that was printed.
    pub figures: Value,
    pub chart: Chart,
}

/// The chart drawn of a report.
pub enum Chart {
    /// One line per series; the x axis logarithmic if `log_x`; a dashed target line if any.
    Lines {
        title: String,
        x_label: String,
        y_label: String,
        log_x: bool,
        series: Vec<Series>,
        target: Option<(String, f64)>,
    },
    /// One group of bars per category, one bar per series (its values in category order).
    Bars {
        title: String,
        y_label: String,
        categories: Vec<String>,
        series: Vec<(String, Vec<f64>)>,
    },
}

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The points of a sorted sample as (percentile, value), for a latency curve.
fn percentile_curve(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &v)| (100.0 * (i as f64 + 1.0) / n, v))
        .collect()
}

impl Report {
    /// Writes `<suite>.json` and `<suite>.svg` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json_path = dir.join(format!("{}.json", self.suite));
        let svg_path = dir.join(format!("{}.svg", self.suite));
        let document = json!({
            "suite": self.suite,
            "fave_version": env!("CARGO_PKG_VERSION"),
            "created_at": chrono::Utc::now(),
            "machine": {
                "cores": std::thread::available_parallelism().map_or(1, usize::from),
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
            },
            "setup": self.setup,
            "figures": self.figures,
        });
        std::fs::write(&json_path, serde_json::to_vec_pretty(&document)?)
            .with_context(|| format!("writing {}", json_path.display()))?;
        let svg = self.chart.to_svg()?;
        std::fs::write(&svg_path, svg)
            .with_context(|| format!("writing {}", svg_path.display()))?;
        Ok((json_path, svg_path))
    }
}

const SIZE: (u32, u32) = (860, 500);

/// Colours for series, in order.
const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

impl Chart {
    /// Latency curves: each sorted sample against its percentiles, in ms.
    pub fn latency(
        title: String,
        samples: &[(&str, &[f64])],
        target: Option<(String, f64)>,
    ) -> Self {
        Chart::Lines {
            title,
            x_label: "percentile".into(),
            y_label: "ms".into(),
            log_x: false,
            series: samples
                .iter()
                .map(|(name, sorted)| Series {
                    name: (*name).to_owned(),
                    points: percentile_curve(sorted),
                })
                .collect(),
            target,
        }
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> anyhow::Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(draw)?;
            match self {
                Chart::Lines {
                    title,
                    x_label,
                    y_label,
                    log_x,
                    series,
                    target,
                } => lines(&root, title, x_label, y_label, *log_x, series, target)?,
                Chart::Bars {
                    title,
                    y_label,
                    categories,
                    series,
                } => bars(&root, title, y_label, categories, series)?,
            }
            root.present().map_err(draw)?;
        }
        Ok(svg)
    }
}

fn draw(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// The top of the y axis: a tenth above the highest value, and never an empty range.
fn y_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 { max * 1.1 } else { 1.0 }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn lines(
    root: &Area<'_>,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    series: &[Series],
    target: &Option<(String, f64)>,
) -> anyhow::Result<()> {
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0, x1)
    } else {
        (0.0, 1.0)
    };
    let y1 = y_top(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(target.iter().map(|t| t.1)),
    );
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64);
    // The two axis kinds are different types; the drawing after is the same.
    macro_rules! draw_on {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(draw)?;
            for (i, s) in series.iter().enumerate() {
                let colour = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        colour.stroke_width(2),
                    ))
                    .map_err(draw)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(draw)?;
            }
            if let Some((name, y)) = target {
                let red = RED.stroke_width(1);
                chart
                    .draw_series(DashedLineSeries::new([(x0, *y), (x1, *y)], 6, 4, red))
                    .map_err(draw)?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], red));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(draw)?;
        }};
    }
    if log_x && x0 > 0.0 {
        draw_on!(
            builder
                .build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
                .map_err(draw)?
        );
    } else {
        draw_on!(builder.build_cartesian_2d(x0..x1, 0.0..y1).map_err(draw)?);
    }
    Ok(())
}

fn bars(
    root: &Area<'_>,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let n = categories.len().max(1) as f64;
    // Room above the bars for the legend.
    let y1 = 1.15 * y_top(series.iter().flat_map(|s| s.1.iter().copied()));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..n - 0.5, 0.0..y1)
        .map_err(draw)?;
    // Category names under the middle of each group; no other x labels.
    let name_at = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            categories.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(categories.len() * 2 + 1)
        .x_label_formatter(&name_at)
        .y_desc(y_label)
        .draw()
        .map_err(draw)?;
    let width = 0.8 / series.len().max(1) as f64;
    for (j, (name, values)) in series.iter().enumerate() {
        let colour = PALETTE[j % PALETTE.len()];
        let left = |i: usize| i as f64 - 0.4 + j as f64 * width;
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        Rectangle::new([(left(i), 0.0), (left(i) + width, v)], colour.filled())
                    }),
            )
            .map_err(draw)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_run_to_a_hundred() {
        let curve = percentile_curve(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            curve,
            vec![(25.0, 1.0), (50.0, 2.0), (75.0, 3.0), (100.0, 4.0)]
        );
        assert!(percentile_curve(&[]).is_empty());
    }

    #[test]
    fn charts_are_svg_with_their_titles_labels_and_one_bar_per_value() {
        let lines = Chart::Lines {
            title: "tasks per second".into(),
            x_label: "MAX_CONCURRENT_INVOCATIONS".into(),
            y_label: "tasks/s".into(),
            log_x: true,
            series: vec![Series {
                name: "median".into(),
                points: vec![(1.0, 60.0), (4.0, 150.0), (64.0, 1000.0)],
            }],
            target: Some(("target".into(), 1000.0)),
        }
        .to_svg()
        .unwrap();
        let doc = roxmltree::Document::parse(&lines).expect("well-formed SVG");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        for text in [
            "tasks per second",
            "MAX_CONCURRENT_INVOCATIONS",
            "median",
            "target",
        ] {
            assert!(lines.contains(text), "{text} missing");
        }

        let bars = Chart::Bars {
            title: "peak RSS".into(),
            y_label: "MiB".into(),
            categories: vec!["stage-audio".into(), "stage-detect".into()],
            series: vec![
                ("80 s".into(), vec![18.0, 198.0]),
                ("20 min".into(), vec![19.6, f64::NAN]),
            ],
        }
        .to_svg()
        .unwrap();
        let doc = roxmltree::Document::parse(&bars).expect("well-formed SVG");
        let filled = |rgb: &str| {
            doc.descendants()
                .filter(|n| n.tag_name().name() == "rect" && n.attribute("fill") == Some(rgb))
                .count()
        };
        // Three finite values, one legend swatch per series; the NaN is left out.
        assert_eq!(filled("#1F77B4"), 2 + 1);
        assert_eq!(filled("#FF7F0E"), 1 + 1);
        assert!(bars.contains("stage-detect"));
    }
}
