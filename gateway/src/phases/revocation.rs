//! Revocation: the request's anchors against the in-memory view, at admission and while the
//! response streams.
//!
//! Denials: a stale view answers 503 `sts_unavailable` "revocation state unavailable"
//! (`revocation_stale`) before anything else; a revoked `sid`, `root_sid`, `agent_session_id` or
//! `delegation_edge_id` answers 401 `invalid_token` "session revoked" (`revoked`), checked in
//! memory right after the signature so a revoked mandate never burns a `jti` or reaches the STS.
//!
//! While a response streams, [`StreamGuard`] re-checks at every 4 KiB boundary the body crosses
//! (an atomic epoch load; the anchors are looked up only when the view changed); an idle open
//! stream is cut by the request's [`super::watch::UpstreamWatch`] the moment a revocation lands.

use std::sync::Arc;

use caracal_shared::Claims;
use caracal_shared::revocation::RevocationView;

use crate::deny::Denial;

/// Body bytes between two checks.
pub const CHECK_EVERY: u64 = 4096;

/// Refuses every request while the view cannot be trusted.
pub fn fresh(view: &RevocationView) -> Result<(), Denial> {
    if view.is_fresh() { Ok(()) } else { Err(Denial::RevocationStale) }
}

/// The anchors a mandate hangs from.
pub fn anchors(c: &Claims) -> Vec<String> {
    c.anchors().map(str::to_owned).collect()
}

/// Refuses a mandate hanging from a revoked anchor.
pub fn check(view: &RevocationView, c: &Claims) -> Result<(), Denial> {
    if view.any_revoked(c.anchors()) { Err(Denial::Revoked) } else { Ok(()) }
}

/// Per-response revocation state: the 4 KiB re-checks.
pub struct StreamGuard {
    view: Arc<RevocationView>,
    anchors: Arc<Vec<String>>,
    seen_epoch: u64,
    bytes: u64,
    next_check: u64,
}

impl StreamGuard {
    /// A guard for a response whose request passed admission at `epoch`.
    pub fn new(view: Arc<RevocationView>, anchors: Arc<Vec<String>>, epoch: u64) -> Self {
        Self { view, anchors, seen_epoch: epoch, bytes: 0, next_check: CHECK_EVERY }
    }

    /// Counts `len` body bytes; `true` when a 4 KiB boundary was crossed and an anchor is now
    /// revoked.
    pub fn on_body(&mut self, len: usize) -> bool {
        self.bytes += len as u64;
        if self.bytes < self.next_check {
            return false;
        }
        self.next_check = (self.bytes / CHECK_EVERY + 1) * CHECK_EVERY;
        let epoch = self.view.epoch();
        if epoch == self.seen_epoch {
            return false;
        }
        self.seen_epoch = epoch;
        self.view.any_revoked(self.anchors.iter().map(String::as_str))
    }

    /// Body bytes seen.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use caracal_shared::revocation::Revoked;

    use super::*;

    #[test]
    fn checks_at_each_4k_boundary_only_when_the_view_changed() {
        let view = RevocationView::new(Duration::from_secs(70), false, false);
        let mut g = StreamGuard::new(view.clone(), Arc::new(vec!["root".into()]), view.epoch());
        assert!(!g.on_body(4095));
        view.add(&[Revoked { anchor: "root".into(), expires_at: i64::MAX }]);
        assert!(!g.on_body(0), "below the boundary nothing is checked");
        assert!(g.on_body(1), "crossing 4 KiB sees the revocation");
        let mut other = StreamGuard::new(view.clone(), Arc::new(vec!["else".into()]), view.epoch() - 1);
        assert!(!other.on_body(100_000), "other anchors are unaffected");
    }
}
