//! One member's health: passive ejection with a back-off, and the verdict of active probes
//! (docs/pools.md §4). Lock-free: the request path reads two atomics.
//!
//! * A connect failure ejects the member at once; [`CONSECUTIVE_5XX`] answers of 500/502/503/504
//!   (or transport failures after connecting) in a row eject it too. An ejection lasts
//!   [`BASE_EJECTION`] doubled for each ejection in a row, at most [`MAX_EJECTION`]; when it ends the
//!   member is tried again (on probation: its first failure of any kind ejects it for twice as
//!   long; a success ends the probation).
//! * With probes, `unhealthy_threshold` failures in a row take the member down until
//!   `healthy_threshold` successes in a row bring it back; reaching that threshold also lifts a
//!   passive ejection (the probe is the authority on recovery).
//! * Times are milliseconds since the pool's epoch; `0` means "not ejected".

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use caracal_shared::pool::HealthProbe;

/// 5xx answers in a row that eject a member.
pub const CONSECUTIVE_5XX: u32 = 5;
/// First ejection.
pub const BASE_EJECTION: Duration = Duration::from_secs(1);
/// Longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(30);

/// What one attempt on a member came to, as far as health goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The connection (TCP or TLS) could not be made.
    ConnectFailed,
    /// The member answered with this status.
    Answered(u16),
    /// The member failed after the connection was made (reset, timeout).
    Failed,
}

impl Outcome {
    /// Whether this counts against the member.
    fn is_failure(self) -> bool {
        match self {
            Self::ConnectFailed | Self::Failed => true,
            Self::Answered(s) => matches!(s, 500 | 502 | 503 | 504),
        }
    }
}

/// One member's health state.
#[derive(Default)]
pub struct MemberHealth {
    ejected_until_ms: AtomicU64,
    failures_in_a_row: AtomicU32,
    ejections_in_a_row: AtomicU32,
    probe_down: AtomicBool,
    /// Probe results in a row: positive successes, negative failures.
    probe_run: AtomicI32,
}

impl MemberHealth {
    /// Whether the member may take a request now (`now_ms` is read only while ejected).
    #[inline]
    pub fn available(&self, now_ms: impl FnOnce() -> u64) -> bool {
        if self.probe_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// Records an attempt's outcome; `true` when it ejected the member.
    pub fn record(&self, outcome: Outcome, now_ms: u64) -> bool {
        if !outcome.is_failure() {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            if self.ejected_until_ms.load(Ordering::Relaxed) != 0 {
                self.ejected_until_ms.store(0, Ordering::Relaxed);
            }
            self.ejections_in_a_row.store(0, Ordering::Relaxed);
            return false;
        }
        let failures = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        // A member back from an ejection is on probation: its first failure ejects it again.
        let probation = self.ejections_in_a_row.load(Ordering::Relaxed) > 0;
        if outcome != Outcome::ConnectFailed && failures < CONSECUTIVE_5XX && !probation {
            return false;
        }
        // Already ejected (another request saw the same failure): do not extend it.
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until != 0 && now_ms < until {
            return false;
        }
        let n = self.ejections_in_a_row.fetch_add(1, Ordering::Relaxed).min(16);
        let span = (BASE_EJECTION.as_millis() as u64).saturating_mul(1 << n).min(MAX_EJECTION.as_millis() as u64);
        self.ejected_until_ms.store(now_ms + span, Ordering::Relaxed);
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        true
    }

    /// Records a probe result; `Some(healthy)` when the probe verdict changed.
    pub fn probed(&self, ok: bool, probe: &HealthProbe) -> Option<bool> {
        let run = self.probe_run.load(Ordering::Relaxed);
        let run = match (ok, run) {
            (true, r) if r > 0 => r.saturating_add(1),
            (true, _) => 1,
            (false, r) if r < 0 => r.saturating_sub(1),
            (false, _) => -1,
        };
        self.probe_run.store(run, Ordering::Relaxed);
        let down = self.probe_down.load(Ordering::Relaxed);
        if ok && run >= i32::from(probe.healthy_threshold) {
            // Back, by the probe's word: a passive ejection ends too.
            self.ejected_until_ms.store(0, Ordering::Relaxed);
            self.ejections_in_a_row.store(0, Ordering::Relaxed);
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            self.probe_down.store(false, Ordering::Relaxed);
            return down.then_some(true);
        }
        if !ok && -run >= i32::from(probe.unhealthy_threshold) && !down {
            self.probe_down.store(true, Ordering::Relaxed);
            return Some(false);
        }
        None
    }

    /// Healthy by both the probes and passive ejection, for `/ready` and the gauge.
    pub fn healthy(&self, now_ms: u64) -> bool {
        self.available(|| now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(healthy: u8, unhealthy: u8) -> HealthProbe {
        serde_json::from_value(serde_json::json!({"healthy_threshold": healthy, "unhealthy_threshold": unhealthy})).unwrap()
    }

    #[test]
    fn a_connect_failure_ejects_at_once_with_a_doubling_back_off() {
        let h = MemberHealth::default();
        assert!(h.available(|| 0));
        assert!(h.record(Outcome::ConnectFailed, 1_000));
        assert!(!h.available(|| 1_999), "ejected for 1 s");
        assert!(!h.record(Outcome::ConnectFailed, 1_500), "a second failure during the ejection does not extend it");
        assert!(h.available(|| 2_000), "tried again after the back-off");
        assert!(h.record(Outcome::ConnectFailed, 2_000));
        assert!(!h.available(|| 3_999) && h.available(|| 4_000), "then 2 s");
        for i in 0..10 {
            h.record(Outcome::ConnectFailed, 100_000 * (i + 1));
        }
        assert!(!h.available(|| 1_000_000 + 29_999) && h.available(|| 1_000_000 + 30_000), "capped at 30 s");
        assert!(!h.record(Outcome::Answered(200), 2_000_000));
        assert!(h.record(Outcome::ConnectFailed, 3_000_000));
        assert!(h.available(|| 3_001_000), "a success resets the back-off to 1 s");
    }

    #[test]
    fn five_5xx_in_a_row_eject_and_a_success_in_between_resets_the_count() {
        let h = MemberHealth::default();
        for _ in 0..4 {
            assert!(!h.record(Outcome::Answered(503), 10));
        }
        assert!(!h.record(Outcome::Answered(404), 10), "a 4xx is the client's problem: the member is fine");
        for _ in 0..4 {
            assert!(!h.record(Outcome::Answered(502), 10));
        }
        assert!(h.record(Outcome::Failed, 10), "the fifth failure in a row");
        assert!(!h.available(|| 500));
        assert!(h.record(Outcome::Answered(503), 1_010), "back on probation: the first failure ejects again");
        assert!(!h.available(|| 3_009) && h.available(|| 3_010), "for 2 s");
        assert!(!h.record(Outcome::Answered(200), 3_010));
        assert!(!h.record(Outcome::Answered(503), 3_020), "a success ended the probation");
    }

    #[test]
    fn probes_take_a_member_down_and_bring_it_back_by_their_thresholds() {
        let (h, p) = (MemberHealth::default(), probe(2, 3));
        assert_eq!(h.probed(false, &p), None);
        assert_eq!(h.probed(false, &p), None);
        assert_eq!(h.probed(false, &p), Some(false), "third failure in a row");
        assert!(!h.available(|| 0));
        assert_eq!(h.probed(true, &p), None);
        assert_eq!(h.probed(false, &p), None, "a failure restarts the count");
        assert_eq!(h.probed(true, &p), None);
        assert_eq!(h.probed(true, &p), Some(true));
        assert!(h.available(|| 0));
        h.record(Outcome::ConnectFailed, 100);
        assert!(!h.available(|| 200));
        assert_eq!(h.probed(true, &p), None, "already healthy by the probes: no change to report");
        assert!(h.available(|| 200), "but a good probe lifts the passive ejection");
    }
}
