//! SVG plots with `plotters`: one metric against connections (log scale),
//! one line per server, for one (suite, shape, mix) group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::{group_title, groups, Point, PointKey, Summary};

/// A plotted metric: file stem, axis label, and how to read it from a point.
pub struct Metric {
    /// Used in file names.
    pub stem: &'static str,
    /// The y axis label.
    pub label: &'static str,
    /// Reads the metric's summary.
    pub get: fn(&Point) -> Option<Summary>,
}

/// The metrics the report plots.
pub const PLOTTED: [Metric; 3] = [
    Metric {
        stem: "rps",
        label: "requests/s",
        get: |p| p.rps,
    },
    Metric {
        stem: "syscalls",
        label: "syscalls per request",
        get: |p| p.syscalls_per_req,
    },
    Metric {
        stem: "cpu",
        label: "server CPU µs per request",
        get: |p| p.cpu_us_per_req,
    },
];

const COLORS: [RGBColor; 8] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// The (log2 connections, median) series of each server in a group.
fn series(
    points: &BTreeMap<PointKey, Point>,
    group: &(String, String, String),
    metric: &Metric,
) -> Series {
    let mut lines: Series = BTreeMap::new();
    for (k, p) in points {
        if (&k.suite, &k.shape, &k.mix) != (&group.0, &group.1, &group.2) {
            continue;
        }
        if let Some(s) = (metric.get)(p) {
            let x = f64::from(k.conns.max(1)).log2();
            lines
                .entry(k.server.clone())
                .or_default()
                .push((x, s.median));
        }
    }
    for line in lines.values_mut() {
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines
}

/// Writes every plot into `dir`; returns the files written.
pub fn write_plots(points: &BTreeMap<PointKey, Point>, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for group in groups(points) {
        for metric in &PLOTTED {
            let lines = series(points, &group, metric);
            if lines.is_empty() {
                continue;
            }
            let path = dir.join(format!(
                "{}-{}-{}-{}.svg",
                group.0, group.1, group.2, metric.stem
            ));
            let title = group_title(&group.0, &group.1, &group.2);
            draw(&path, &title, metric.label, &lines)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

fn draw(
    path: &Path,
    title: &str,
    y_label: &str,
    lines: &Series,
) -> Result<(), Box<dyn std::error::Error>> {
    let x_max = lines.values().flatten().map(|p| p.0).fold(1.0, f64::max);
    let y_max = lines.values().flatten().map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..x_max + 0.2, 0f64..y_max.max(f64::MIN_POSITIVE))?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc(y_label)
        .x_labels(10)
        .x_label_formatter(&|x| format!("{:.0}", 2f64.powf(*x)))
        .draw()?;
    for (i, (server, points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(server.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
