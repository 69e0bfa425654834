//! SVG plots of a report (plotters): latency CDF, throughput and loss over time, server CPU
//! over time.

use std::path::Path;

use plotters::prelude::*;

/// One sample of the time series.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Packets sent per second by the load tester.
    pub tx_pps: f64,
    /// Packets received per second by the load tester.
    pub rx_pps: f64,
    /// Video frames received whole per second (all receivers together).
    pub rx_fps: f64,
    /// Fraction of packets lost in this interval.
    pub loss: f64,
    /// Server CPU in percent of one core.
    pub server_cpu_pct: f64,
    /// Load tester CPU in percent of one core.
    pub loadtest_cpu_pct: f64,
    /// Connections up.
    pub connected: u64,
}

/// A failed plot.
#[derive(Debug, thiserror::Error)]
#[error("plot {0}: {1}")]
pub struct PlotError(String, String);

fn err<E: std::fmt::Display>(file: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError(file.display().to_string(), e.to_string())
}

/// One named line.
type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// Draws a captioned chart of lines from 0 to the largest point on `area`; a legend when
/// more than one line.
fn chart<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, caption: &str, axes: (&str, &str), lines: &[Line<'_>]) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let max = |f: fn(&(f64, f64)) -> f64| lines.iter().flat_map(|l| l.2.iter()).map(f).fold(0.1, f64::max) * 1.05;
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max(|p| p.0), 0.0..max(|p| p.1))
        .map_err(e)?;
    c.configure_mesh().x_desc(axes.0).y_desc(axes.1).draw().map_err(e)?;
    for (label, color, points) in lines {
        let color = *color;
        c.draw_series(LineSeries::new(points.iter().copied(), color)).map_err(e)?.label(*label).legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    if lines.len() > 1 {
        c.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(e)?;
    }
    Ok(())
}

/// Writes `latency-cdf.svg`, `throughput.svg` and `cpu.svg` into `dir`.
pub fn write_all(dir: &Path, title: &str, cdf: &[(f64, f64)], series: &[Sample]) -> Result<Vec<String>, PlotError> {
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let pts = |f: fn(&Sample) -> f64| series.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    let mut written = Vec::new();

    let file = dir.join("latency-cdf.svg");
    {
        let root = SVGBackend::new(&file, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(err(&file))?;
        chart(&root, &format!("{title}: one-way latency CDF"), ("latency (ms)", "fraction of packets"), &[("latency", BLUE, cdf.to_vec())]).map_err(err(&file))?;
        root.present().map_err(err(&file))?;
    }
    written.push(file.display().to_string());

    let file = dir.join("throughput.svg");
    {
        let root = SVGBackend::new(&file, (800, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(err(&file))?;
        let (top, bottom) = root.split_vertically(360);
        chart(&top, &format!("{title}: packets per second"), ("s", "pkt/s"), &[("received", BLUE, pts(|s| s.rx_pps)), ("sent", GREEN, pts(|s| s.tx_pps))]).map_err(err(&file))?;
        chart(&bottom, "loss", ("s", "loss %"), &[("loss", RED, pts(|s| s.loss * 100.0))]).map_err(err(&file))?;
        root.present().map_err(err(&file))?;
    }
    written.push(file.display().to_string());

    let file = dir.join("cpu.svg");
    {
        let root = SVGBackend::new(&file, (800, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(err(&file))?;
        let lines = [("server", RED, pts(|s| s.server_cpu_pct)), ("load tester", BLUE, pts(|s| s.loadtest_cpu_pct))];
        chart(&root, &format!("{title}: CPU (% of one core)"), ("s", "%"), &lines).map_err(err(&file))?;
        root.present().map_err(err(&file))?;
    }
    written.push(file.display().to_string());
    Ok(written)
}
