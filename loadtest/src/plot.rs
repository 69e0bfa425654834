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

/// Writes `latency-cdf.svg`, `throughput.svg` and `cpu.svg` into `dir`.
pub fn write_all(dir: &Path, title: &str, cdf: &[(f64, f64)], series: &[Sample]) -> Result<Vec<String>, PlotError> {
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let mut written = Vec::new();

    let file = dir.join("latency-cdf.svg");
    {
        let root = SVGBackend::new(&file, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(err(&file))?;
        let max_x = cdf.iter().map(|c| c.0).fold(0.1, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{title}: one-way latency CDF"), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_x * 1.05, 0.0..1.0)
            .map_err(err(&file))?;
        chart.configure_mesh().x_desc("latency (ms)").y_desc("fraction of packets").draw().map_err(err(&file))?;
        chart.draw_series(LineSeries::new(cdf.iter().copied(), &BLUE)).map_err(err(&file))?;
        root.present().map_err(err(&file))?;
    }
    written.push(file.display().to_string());

    let file = dir.join("throughput.svg");
    {
        let root = SVGBackend::new(&file, (800, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(err(&file))?;
        let (top, bottom) = root.split_vertically(360);
        let max_t = series.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
        let max_pps = series.iter().map(|s| s.rx_pps.max(s.tx_pps)).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&top)
            .caption(format!("{title}: packets per second"), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_t, 0.0..max_pps * 1.1)
            .map_err(err(&file))?;
        chart.configure_mesh().x_desc("s").y_desc("pkt/s").draw().map_err(err(&file))?;
        chart.draw_series(LineSeries::new(series.iter().map(|s| (s.t, s.rx_pps)), &BLUE)).map_err(err(&file))?.label("received").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart.draw_series(LineSeries::new(series.iter().map(|s| (s.t, s.tx_pps)), &GREEN)).map_err(err(&file))?.label("sent").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN));
        chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(err(&file))?;
        let max_loss = series.iter().map(|s| s.loss * 100.0).fold(0.1, f64::max);
        let mut chart = ChartBuilder::on(&bottom)
            .caption("loss", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_t, 0.0..max_loss * 1.1)
            .map_err(err(&file))?;
        chart.configure_mesh().x_desc("s").y_desc("loss %").draw().map_err(err(&file))?;
        chart.draw_series(LineSeries::new(series.iter().map(|s| (s.t, s.loss * 100.0)), &RED)).map_err(err(&file))?;
        root.present().map_err(err(&file))?;
    }
    written.push(file.display().to_string());

    let file = dir.join("cpu.svg");
    {
        let root = SVGBackend::new(&file, (800, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(err(&file))?;
        let max_t = series.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
        let max_cpu = series.iter().map(|s| s.server_cpu_pct.max(s.loadtest_cpu_pct)).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{title}: CPU (% of one core)"), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_t, 0.0..max_cpu * 1.1)
            .map_err(err(&file))?;
        chart.configure_mesh().x_desc("s").y_desc("%").draw().map_err(err(&file))?;
        chart.draw_series(LineSeries::new(series.iter().map(|s| (s.t, s.server_cpu_pct)), &RED)).map_err(err(&file))?.label("server").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        chart.draw_series(LineSeries::new(series.iter().map(|s| (s.t, s.loadtest_cpu_pct)), &BLUE)).map_err(err(&file))?.label("load tester").legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(err(&file))?;
        root.present().map_err(err(&file))?;
    }
    written.push(file.display().to_string());
    Ok(written)
}
