//! The latency plots of S1–S4 at the reference rate (log scale; SVG so no font library is needed):
//! the percentile spectrum, and the p99 of each 100 ms over the window (latency over time).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::hist::SPECTRUM;
use crate::report::Report;

/// One line: a label and `(percentile, ms)` points.
pub(crate) type Series = (String, Vec<(f64, f64)>);

/// Writes the plot of `report` to `path`.
pub(crate) fn latency_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let rate = report.ratios.at_rate;
    let series: Vec<Series> = report
        .reference_runs()
        .filter(|r| !r.run.spectrum.is_empty())
        .map(|r| (format!("{} {}", r.scenario, r.label), r.run.spectrum.clone()))
        .collect();
    draw(&series, &format!("Latency by percentile at {rate:.0} req/s (coordinated-omission corrected)"), path)
}

/// Writes the latency over time of each S1–S4 target at the reference rate to `path`: the p99 of
/// every 100 ms slice of the measured window, so a stall shows where it happened.
pub(crate) fn over_time_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let rate = report.ratios.at_rate;
    let series: Vec<Series> = report
        .reference_runs()
        .filter(|r| !r.run.over_time.is_empty())
        .map(|r| (format!("{} {}", r.scenario, r.label), r.run.over_time.iter().map(|s| (s.start_ms as f64 / 1e3, s.p99_ms)).collect()))
        .collect();
    let (lo, hi) = bounds(&series);
    let end = series.iter().flat_map(|(_, p)| p.iter().map(|(t, _)| *t)).fold(1.0f64, f64::max) + 0.1;
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("p99 of each 100 ms at {rate:.0} req/s, over the measured window"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..end, (lo..hi).log_scale())
        .map_err(|e| anyhow!("plot: {e}"))?;
    chart.configure_mesh().x_desc("seconds").y_desc("p99 latency (ms)").draw().map_err(|e| anyhow!("plot: {e}"))?;
    lines(&mut chart, &series, |_, (t, ms)| (*t, *ms))?;
    root.present().map_err(|e| anyhow!("plot: {e}"))?;
    Ok(())
}

/// The latency axis's range over every point of `series`.
fn bounds(series: &[Series]) -> (f64, f64) {
    let all = series.iter().flat_map(|(_, p)| p.iter().map(|(_, ms)| *ms));
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi > 0.0 { ((lo * 0.8).max(0.01), hi * 1.5) } else { (0.01, 1.0) }
}

type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::combinators::LogCoord<f64>>>;

/// One line per series, `at` placing point `j`, and the legend.
fn lines<'a>(chart: &mut Chart<'a, 'a>, series: &[Series], at: impl Fn(usize, &(f64, f64)) -> (f64, f64)) -> anyhow::Result<()> {
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().enumerate().map(|(j, p)| at(j, p)), color.stroke_width(2)))
            .map_err(|e| anyhow!("plot: {e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    Ok(())
}

/// Draws `series` on a log-scale latency axis over the [`SPECTRUM`] percentiles.
pub(crate) fn draw(series: &[Series], title: &str, path: &Path) -> anyhow::Result<()> {
    let (lo, hi) = bounds(series);
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let last = (SPECTRUM.len() - 1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..last, (lo..hi).log_scale())
        .map_err(|e| anyhow!("plot: {e}"))?;
    chart
        .configure_mesh()
        .x_labels(SPECTRUM.len())
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    lines(&mut chart, series, |j, (_, ms)| (j as f64, *ms))?;
    root.present().map_err(|e| anyhow!("plot: {e}"))?;
    Ok(())
}

/// The tick label of spectrum index `x` ("p99.9", "max").
fn percentile_label(x: f64) -> String {
    let i = x.round() as usize;
    match SPECTRUM.get(i) {
        Some(p) if *p == 0.0 => "min".into(),
        Some(p) if *p == 100.0 => "max".into(),
        Some(p) => format!("p{p}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_a_legend() {
        let path = std::env::temp_dir().join(format!("caracal-bench-plot-{}.svg", std::process::id()));
        let pts = |base: f64| SPECTRUM.iter().map(|p| (*p, base * (1.0 + p / 10.0))).collect();
        draw(&[("S2 proxy".into(), pts(0.3)), ("S3 gateway".into(), pts(1.1))], "test", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert!(svg.starts_with("<svg"), "an SVG document");
        assert!(svg.contains("S3 gateway") && svg.contains("p99.9"), "legend and ticks are text");
    }

    #[test]
    fn tick_labels() {
        assert_eq!(percentile_label(0.0), "min");
        assert_eq!(percentile_label(4.0), "p99");
        assert_eq!(percentile_label(7.0), "max");
        assert_eq!(percentile_label(9.0), "");
    }
}
