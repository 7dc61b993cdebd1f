//! wrk2-style open-loop schedules: the whole run sends `rate` requests per second, spread evenly over
//! the connections, each connection keeping its own fixed cadence whatever the answers take.

use std::time::Duration;

/// The cadence of one connection in a fixed-rate run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Schedule {
    /// Offset of this connection's first request.
    first: Duration,
    /// Time between two requests of this connection.
    every: Duration,
    /// Requests this connection sends (warm-up included).
    count: u64,
}

impl Schedule {
    /// Connection `conn` of `conns`, at `rate` req/s in total, for a window of `window`.
    ///
    /// Request `i` of connection `c` is intended at `(c + i·conns) / rate`, so the union over all
    /// connections is one request every `1 / rate`, and every intended time is inside the window.
    pub(crate) fn new(conn: usize, conns: usize, rate: f64, window: Duration) -> Self {
        assert!(rate > 0.0 && conns > 0 && conn < conns, "a schedule needs a positive rate and a valid connection index");
        let first = Duration::from_secs_f64(conn as f64 / rate);
        let every = Duration::from_secs_f64(conns as f64 / rate);
        let count = if first >= window { 0 } else { ((window - first).as_secs_f64() / every.as_secs_f64()).ceil() as u64 };
        Self { first, every, count }
    }

    /// When request `i` is intended, from the start of the run.
    pub(crate) fn at(&self, i: u64) -> Duration {
        self.first + self.every.mul_f64(i as f64)
    }

    /// How many requests this connection sends.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_interleave_into_one_even_cadence() {
        let (rate, conns, window) = (1_000.0, 8, Duration::from_secs(2));
        let mut all: Vec<Duration> = (0..conns)
            .flat_map(|c| {
                let s = Schedule::new(c, conns, rate, window);
                (0..s.count()).map(move |i| s.at(i))
            })
            .collect();
        all.sort();
        assert_eq!(all.len(), 2_000, "rate × window requests in total");
        assert!(all.iter().all(|t| *t < window), "every request is intended inside the window");
        for pair in all.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            assert!((gap - 0.001).abs() < 1e-6, "one request every 1/rate, found a gap of {gap}");
        }
    }

    #[test]
    fn more_connections_than_requests() {
        let s = Schedule::new(7, 8, 2.0, Duration::from_secs(1));
        assert_eq!(s.count(), 0, "connection 7 starts at 3.5 s, after the window");
        let s = Schedule::new(1, 8, 2.0, Duration::from_secs(1));
        assert_eq!((s.count(), s.at(0)), (1, Duration::from_millis(500)));
    }
}
