//! The per-request record of a fixed-rate run, kept when a run asks for it (the failover drill): when
//! each request was intended and answered, how long it took and whether it failed. From it the drill
//! reads a per-second series and the time of every error. A few tens of thousands of small samples;
//! per-second HDR histograms would cost far more memory.

use std::time::Duration;

use serde::Serialize;

use crate::hist::quantile;

/// One measured request; times from the start of the measured window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) intended: Duration,
    pub(crate) answered: Duration,
    pub(crate) latency: Duration,
    /// Non-2xx or no answer.
    pub(crate) failed: bool,
}

/// One second of a run, by intended send time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Second {
    /// Seconds since the start of the measured window.
    pub(crate) second: u64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

/// The per-second series of `samples` (every second up to the last one seen, empty ones included).
pub(crate) fn per_second(samples: &[Sample]) -> Vec<Second> {
    let Some(last) = samples.iter().map(|s| s.intended.as_secs()).max() else { return Vec::new() };
    let mut buckets: Vec<(u64, Vec<f64>)> = vec![(0, Vec::new()); last as usize + 1];
    for s in samples {
        let b = &mut buckets[s.intended.as_secs() as usize];
        b.0 += u64::from(s.failed);
        b.1.push(s.latency.as_secs_f64() * 1e3);
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(i, (errors, mut ms))| {
            ms.sort_by(f64::total_cmp);
            Second { second: i as u64, requests: ms.len() as u64, errors, p50_ms: quantile(&ms, 0.5), p99_ms: quantile(&ms, 0.99) }
        })
        .collect()
}

/// Width of a [`Slice`].
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// 100 ms of a run by intended send time: the latency over time, where a stall shows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct Slice {
    /// Milliseconds since the start of the measured window.
    pub(crate) start_ms: u64,
    pub(crate) requests: u64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// The [`Slice`]s of `samples` that saw a request.
pub(crate) fn slices(samples: &[Sample]) -> Vec<Slice> {
    let width = SLICE.as_millis() as u64;
    let mut buckets: Vec<Vec<f64>> = Vec::new();
    for s in samples {
        let i = (s.intended.as_millis() as u64 / width) as usize;
        if buckets.len() <= i {
            buckets.resize_with(i + 1, Vec::new);
        }
        buckets[i].push(s.latency.as_secs_f64() * 1e3);
    }
    buckets
        .into_iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, mut b)| {
            b.sort_by(f64::total_cmp);
            let max = *b.last().expect("not empty");
            Slice { start_ms: i as u64 * width, requests: b.len() as u64, p99_ms: quantile(&b, 0.99).unwrap_or(max), max_ms: max }
        })
        .collect()
}

/// What the [`Slice`]s of a run say about stalls: the median slice's p99, and the slices far above
/// it (p99 over 4 × the median and over 2 ms), in time order.
pub(crate) struct Stalls<'a> {
    pub(crate) median_p99: f64,
    pub(crate) slow: Vec<&'a Slice>,
}

/// The [`Stalls`] of `slices`.
pub(crate) fn stalls(slices: &[Slice]) -> Stalls<'_> {
    let mut p99s: Vec<f64> = slices.iter().map(|s| s.p99_ms).collect();
    p99s.sort_by(f64::total_cmp);
    let median_p99 = p99s.get(p99s.len() / 2).copied().unwrap_or(0.0);
    let slow = slices.iter().filter(|s| s.p99_ms > median_p99 * 4.0 && s.p99_ms > 2.0).collect();
    Stalls { median_p99, slow }
}

/// When each failed request was answered, in order.
pub(crate) fn error_times(samples: &[Sample]) -> Vec<Duration> {
    let mut v: Vec<Duration> = samples.iter().filter(|s| s.failed).map(|s| s.answered).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(intended_ms: u64, latency_ms: u64, failed: bool) -> Sample {
        let intended = Duration::from_millis(intended_ms);
        let latency = Duration::from_millis(latency_ms);
        Sample { intended, answered: intended + latency, latency, failed }
    }

    #[test]
    fn seconds_by_intended_time_with_empty_ones_kept() {
        let s = [sample(100, 1, false), sample(900, 3, true), sample(1_500, 2, false), sample(3_200, 5, true)];
        let rows = per_second(&s);
        assert_eq!(rows.len(), 4);
        assert_eq!((rows[0].requests, rows[0].errors, rows[0].p99_ms), (2, 1, Some(3.0)));
        assert_eq!((rows[2].requests, rows[2].p99_ms), (0, None), "a second with no request is shown empty");
        assert_eq!(rows[3].errors, 1);
        assert_eq!(error_times(&s), vec![Duration::from_millis(903), Duration::from_millis(3_205)]);
        assert!(per_second(&[]).is_empty());
    }

    #[test]
    fn slices_of_a_hundred_milliseconds() {
        let s = [sample(10, 1, false), sample(90, 9, false), sample(250, 2, false)];
        let rows = slices(&s);
        assert_eq!(rows.len(), 2, "an empty slice is left out");
        assert_eq!((rows[0].start_ms, rows[0].requests, rows[0].max_ms), (0, 2, 9.0));
        assert_eq!(rows[1].start_ms, 200);
    }
}
