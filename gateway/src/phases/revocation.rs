//! Revocation: the request's anchors against the in-memory view, at admission and while the
//! response streams.
//!
//! Denials: a stale view answers 503 `sts_unavailable` "revocation state unavailable"
//! (`revocation_stale`) before anything else; a revoked `sid`, `root_sid`, `agent_session_id` or
//! `delegation_edge_id` answers 401 `invalid_token` "session revoked" (`revoked`), checked in
//! memory right after the signature so a revoked mandate never burns a `jti` or reaches the STS.
//!
//! While a response streams, [`StreamGuard`] re-checks at every 4 KiB boundary the body crosses
//! (an atomic epoch load; the anchors are looked up only when the view changed), and a watcher
//! task subscribed to the view cuts an idle stream the moment a revocation lands by shutting
//! down the upstream socket. The watcher is aborted when the request ends or the body completes,
//! so it can never touch a connection that went back to the pool.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Per-response revocation state.
pub struct StreamGuard {
    view: Arc<RevocationView>,
    anchors: Arc<Vec<String>>,
    seen_epoch: u64,
    bytes: u64,
    next_check: u64,
    /// Set by the watcher when it cut the stream.
    cut: Arc<AtomicBool>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl StreamGuard {
    /// A guard for a response whose request passed admission at `epoch`.
    pub fn new(view: Arc<RevocationView>, anchors: Vec<String>, epoch: u64) -> Self {
        Self {
            view,
            anchors: Arc::new(anchors),
            seen_epoch: epoch,
            bytes: 0,
            next_check: CHECK_EVERY,
            cut: Arc::new(AtomicBool::new(false)),
            watcher: None,
        }
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
        let revoked = self.view.any_revoked(self.anchors.iter().map(String::as_str));
        if revoked {
            self.cut.store(true, Ordering::Release);
        }
        revoked
    }

    /// Body bytes seen.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a revocation cut this stream (at a 4 KiB check or by the idle watcher).
    pub fn was_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Watches the view while the response is open; on revocation shuts the upstream socket down,
    /// which ends the proxied stream even when the upstream is silent.
    pub fn watch(&mut self, upstream_fd: RawFd, on_cut: impl FnOnce() + Send + 'static) {
        let (view, anchors, cut) = (self.view.clone(), self.anchors.clone(), self.cut.clone());
        let mut changes = view.subscribe();
        self.watcher = Some(tokio::spawn(async move {
            loop {
                if view.any_revoked(anchors.iter().map(String::as_str)) {
                    cut.store(true, Ordering::Release);
                    // The fd is the upstream socket of this request; the task is aborted before
                    // the connection can be reused (see `disarm`).
                    let _ = nix::sys::socket::shutdown(upstream_fd, nix::sys::socket::Shutdown::Both);
                    on_cut();
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        }));
    }

    /// Stops the watcher (the body is complete, or the request ends).
    pub fn disarm(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.disarm();
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
        let mut g = StreamGuard::new(view.clone(), vec!["root".into()], view.epoch());
        assert!(!g.on_body(4095));
        view.add(&[Revoked { anchor: "root".into(), expires_at: i64::MAX }]);
        assert!(!g.on_body(0), "below the boundary nothing is checked");
        assert!(g.on_body(1), "crossing 4 KiB sees the revocation");
        let mut other = StreamGuard::new(view.clone(), vec!["else".into()], view.epoch() - 1);
        assert!(!other.on_body(100_000), "other anchors are unaffected");
    }

    #[tokio::test]
    async fn the_watcher_fires_on_revocation_of_its_anchors() {
        let view = RevocationView::new(Duration::from_secs(70), false, false);
        let mut g = StreamGuard::new(view.clone(), vec!["a".into()], view.epoch());
        let (tx, rx) = tokio::sync::oneshot::channel();
        g.watch(-1, move || {
            let _ = tx.send(());
        });
        view.add(&[Revoked { anchor: "b".into(), expires_at: i64::MAX }]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!g.was_cut(), "another anchor does not cut");
        view.add(&[Revoked { anchor: "a".into(), expires_at: i64::MAX }]);
        tokio::time::timeout(Duration::from_secs(1), rx).await.expect("cut within a second").unwrap();
        assert!(g.was_cut());
    }
}
