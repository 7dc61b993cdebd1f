//! The STS circuit breaker.
//!
//! After `STS_CIRCUIT_FAILURES` unavailable answers (transport errors, 5xx) within
//! `STS_CIRCUIT_WINDOW`, the circuit opens and requests fail fast with 503 `sts_unavailable`
//! (`sts_circuit_open`) instead of piling onto a struggling STS. After `STS_CIRCUIT_OPEN` one
//! request is let through as a probe (half-open); its success closes the circuit, its failure
//! opens it again. The failure count resets when its window passes or on any success (the
//! original never reset it, so one stray failure re-opened the circuit). The hot path reads one
//! atomic.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What the circuit lets a request do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go ahead.
    Pass,
    /// Half-open: go ahead as the single probe.
    Probe,
    /// Open: fail fast.
    Reject,
}

/// The breaker.
pub struct Circuit {
    state: AtomicU8,
    failures: AtomicU32,
    window_start_ms: AtomicI64,
    opened_ms: AtomicI64,
    threshold: u32,
    window_ms: i64,
    open_ms: i64,
    /// Times the circuit opened.
    pub opened: prometheus::IntCounter,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Circuit {
    /// A closed circuit.
    pub fn new(threshold: u32, window: Duration, open: Duration, opened: prometheus::IntCounter) -> Self {
        Self {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            window_start_ms: AtomicI64::new(0),
            opened_ms: AtomicI64::new(0),
            threshold: threshold.max(1),
            window_ms: window.as_millis() as i64,
            open_ms: open.as_millis() as i64,
            opened,
        }
    }

    /// Whether a request may call the STS now.
    pub fn admit(&self) -> Admit {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admit::Pass,
            OPEN if now_ms() - self.opened_ms.load(Ordering::Acquire) >= self.open_ms => {
                // Exactly one request wins the probe.
                match self.state.compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => Admit::Probe,
                    Err(_) => Admit::Reject,
                }
            }
            _ => Admit::Reject,
        }
    }

    /// Records the outcome of an admitted call; `unavailable` is a transport error or 5xx.
    pub fn record(&self, admit: Admit, unavailable: bool) {
        if !unavailable {
            self.failures.store(0, Ordering::Release);
            if admit == Admit::Probe {
                self.state.store(CLOSED, Ordering::Release);
                tracing::info!("STS circuit closed after a successful probe");
            }
            return;
        }
        if admit == Admit::Probe {
            self.open();
            return;
        }
        let now = now_ms();
        let start = self.window_start_ms.load(Ordering::Acquire);
        let n = if now - start > self.window_ms {
            self.window_start_ms.store(now, Ordering::Release);
            self.failures.store(1, Ordering::Release);
            1
        } else {
            self.failures.fetch_add(1, Ordering::AcqRel) + 1
        };
        if n >= self.threshold && self.state.compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.opened_ms.store(now, Ordering::Release);
            self.failures.store(0, Ordering::Release);
            self.opened.inc();
            tracing::error!(failures = n, "STS circuit opened");
        }
    }

    fn open(&self) {
        self.opened_ms.store(now_ms(), Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        self.opened.inc();
        tracing::error!("STS circuit re-opened: the probe failed");
    }

    /// Whether the circuit is open (for `/ready` and metrics).
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(open_ms: u64) -> Circuit {
        Circuit::new(3, Duration::from_secs(10), Duration::from_millis(open_ms), prometheus::IntCounter::new("c", "c").unwrap())
    }

    #[test]
    fn opens_after_the_threshold_and_probes_one_at_a_time() {
        let c = circuit(50);
        for _ in 0..2 {
            assert_eq!(c.admit(), Admit::Pass);
            c.record(Admit::Pass, true);
        }
        assert!(!c.is_open());
        c.record(Admit::Pass, true);
        assert!(c.is_open());
        assert_eq!(c.admit(), Admit::Reject);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.admit(), Admit::Probe);
        assert_eq!(c.admit(), Admit::Reject, "only one probe at a time");
        c.record(Admit::Probe, true);
        assert_eq!(c.admit(), Admit::Reject, "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.admit(), Admit::Probe);
        c.record(Admit::Probe, false);
        assert_eq!(c.admit(), Admit::Pass, "a good probe closes");
        assert_eq!(c.opened.get(), 2);
    }

    #[test]
    fn a_success_or_a_passed_window_resets_the_count() {
        let c = circuit(50);
        c.record(Admit::Pass, true);
        c.record(Admit::Pass, true);
        c.record(Admit::Pass, false);
        c.record(Admit::Pass, true);
        c.record(Admit::Pass, true);
        assert!(!c.is_open(), "the success reset the count");
        let w = Circuit::new(2, Duration::from_millis(20), Duration::from_secs(1), prometheus::IntCounter::new("w", "w").unwrap());
        w.record(Admit::Pass, true);
        std::thread::sleep(Duration::from_millis(30));
        w.record(Admit::Pass, true);
        assert!(!w.is_open(), "failures in different windows do not add up");
    }
}
