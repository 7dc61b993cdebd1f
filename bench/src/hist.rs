//! Latency histograms (HDR, microsecond resolution, 3 significant digits) and their summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest recordable latency: anything slower is clamped (and still counted).
const MAX_MICROS: u64 = 120_000_000;

/// A latency histogram in microseconds.
pub(crate) struct Latency(Histogram<u64>);

impl Latency {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("static bounds are valid"))
    }

    /// Records one latency.
    pub(crate) fn record(&mut self, d: std::time::Duration) {
        self.0.saturating_record((d.as_micros() as u64).clamp(1, MAX_MICROS));
    }

    /// Adds another histogram's counts.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.0.add(&other.0).expect("same bounds");
    }

    /// The percentiles the report shows.
    pub(crate) fn summary(&self) -> Summary {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            count: self.0.len(),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.0.max() as f64 / 1000.0,
            mean_ms: self.0.mean() / 1000.0,
        }
    }

    /// The percentile spectrum for plots: `(percentile, ms)` at 50, 75, 90, 99, 99.9, 99.99, max.
    pub(crate) fn spectrum(&self) -> Vec<(f64, f64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        SPECTRUM.iter().map(|&p| (p, self.0.value_at_percentile(p) as f64 / 1000.0)).collect()
    }
}

/// Percentiles plotted on the spectrum's x axis.
pub(crate) const SPECTRUM: [f64; 8] = [0.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0];

/// What a report shows of one histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
}

/// The `q` quantile (0..=1) of a small sample, nearest-rank; `None` when empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn percentiles_of_a_uniform_sample() {
        let mut h = Latency::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 9.9).abs() < 0.01, "{s:?}");
        assert!((s.p999_ms - 9.99).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 10.0).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn merge_adds_counts_and_clamps_outliers() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_secs(1_000));
        a.merge(&b);
        assert_eq!(a.summary().count, 2);
        assert!(a.summary().max_ms >= 119_000.0);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(100.0));
        assert_eq!(quantile(&v, 0.99), Some(198.0));
        assert_eq!(quantile(&v, 1.0), Some(200.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
