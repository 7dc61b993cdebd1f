//! The in-memory revocation view every verifying service consults.
//!
//! Anchors are the ids a mandate hangs from — `sid`, `root_sid`, `agent_session_id`,
//! `delegation_edge_id` — in one namespace (they are UUIDv7s, unique across kinds and zones). A
//! lookup is lock-free: an `ArcSwap` load and hash lookups, cheap enough for a synchronous body
//! hook. Changes (rare) copy the map once per batch, bump an epoch, and wake subscribers, so a
//! streaming response can re-check its anchors the moment a revocation lands instead of waiting
//! for its next chunk.
//!
//! Entries are only ever added or expired, never removed by a reload: a periodic snapshot merges
//! into what the stream delivered (the original replaced the map and lost stream-only entries).
//! The view also tracks when its sources last succeeded; callers treat a stale view as "cannot
//! tell" and deny.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

/// How long an anchor delivered without an expiry is kept (the longest mandate lives 60 min).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// One revoked anchor and when keeping it stops mattering (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub anchor: String,
    pub expires_at: i64,
}

/// The view.
pub struct RevocationView {
    anchors: ArcSwap<HashMap<String, i64>>,
    epoch: AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
    /// Unix ms of the last successful snapshot, or `i64::MAX` when snapshots are not configured.
    snapshot_ok_ms: AtomicI64,
    /// Unix ms of the last successful stream read, or `i64::MAX` when there is no stream.
    stream_ok_ms: AtomicI64,
    max_staleness_ms: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RevocationView {
    /// An empty view. `snapshots` / `stream` say which sources feed it: a source that is not
    /// configured never makes the view stale; one that is makes it stale until it first succeeds.
    pub fn new(max_staleness: Duration, snapshots: bool, stream: bool) -> Arc<Self> {
        let (changed, _) = tokio::sync::watch::channel(0);
        Arc::new(Self {
            anchors: ArcSwap::from_pointee(HashMap::new()),
            epoch: AtomicU64::new(0),
            changed,
            snapshot_ok_ms: AtomicI64::new(if snapshots { 0 } else { i64::MAX }),
            stream_ok_ms: AtomicI64::new(if stream { 0 } else { i64::MAX }),
            max_staleness_ms: max_staleness.as_millis() as i64,
        })
    }

    /// Whether any of `anchors` is revoked (empty ids never are).
    pub fn any_revoked<'a>(&self, anchors: impl IntoIterator<Item = &'a str>) -> bool {
        let map = self.anchors.load();
        let now = now_ms() / 1000;
        anchors.into_iter().any(|a| !a.is_empty() && map.get(a).is_some_and(|exp| *exp > now))
    }

    /// The change counter; bumps whenever an anchor is added.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A receiver woken on every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Adds anchors (one copy of the map per call) and prunes expired ones. Returns how many
    /// were new.
    pub fn add(&self, batch: &[Revoked]) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let now = now_ms() / 1000;
        let mut added = 0;
        self.anchors.rcu(|current| {
            added = 0;
            let mut next: HashMap<String, i64> = current.iter().filter(|(_, exp)| **exp > now).map(|(k, v)| (k.clone(), *v)).collect();
            for r in batch.iter().filter(|r| !r.anchor.is_empty() && r.expires_at > now) {
                let slot = next.entry(r.anchor.clone()).or_insert_with(|| {
                    added += 1;
                    r.expires_at
                });
                *slot = (*slot).max(r.expires_at);
            }
            next
        });
        if added > 0 {
            let e = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            self.changed.send_replace(e);
        }
        added
    }

    /// Number of live anchors held.
    pub fn len(&self) -> usize {
        let now = now_ms() / 1000;
        self.anchors.load().values().filter(|exp| **exp > now).count()
    }

    /// Whether no anchor is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a successful snapshot.
    pub fn snapshot_succeeded(&self) {
        self.snapshot_ok_ms.store(now_ms(), Ordering::Release);
    }

    /// Records a successful stream read.
    pub fn stream_succeeded(&self) {
        self.stream_ok_ms.store(now_ms(), Ordering::Release);
    }

    /// Whether the stream source has succeeded at least once (or is not configured).
    pub fn stream_started(&self) -> bool {
        self.stream_ok_ms.load(Ordering::Acquire) > 0
    }

    /// Whether both sources succeeded recently enough to trust a negative answer.
    pub fn is_fresh(&self) -> bool {
        self.staleness_ms() <= self.max_staleness_ms
    }

    /// Age of the older of the two sources, in ms.
    pub fn staleness_ms(&self) -> i64 {
        let oldest = self.snapshot_ok_ms.load(Ordering::Acquire).min(self.stream_ok_ms.load(Ordering::Acquire));
        if oldest == i64::MAX { 0 } else { (now_ms() - oldest).max(0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &str, secs: i64) -> Revoked {
        Revoked { anchor: a.into(), expires_at: now_ms() / 1000 + secs }
    }

    #[test]
    fn adds_merge_and_bump_the_epoch() {
        let v = RevocationView::new(Duration::from_secs(70), false, false);
        let rx = v.subscribe();
        assert!(!v.any_revoked(["a", "b"]));
        assert_eq!(v.add(&[r("a", 60), r("", 60)]), 1, "empty anchors are ignored");
        assert!(v.any_revoked(["x", "a"]));
        assert_eq!(v.epoch(), 1);
        assert!(rx.has_changed().unwrap(), "subscribers are woken");
        assert_eq!(v.add(&[r("a", 60)]), 0, "a repeat is not a change");
        assert_eq!(v.epoch(), 1);
        assert_eq!(v.add(&[r("b", 60), r("c", -1)]), 1, "expired entries are not added");
        assert!(v.any_revoked(["b"]));
        assert!(!v.any_revoked(["c"]));
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn freshness_follows_configured_sources() {
        let v = RevocationView::new(Duration::from_secs(70), true, true);
        assert!(!v.is_fresh(), "a configured source that never succeeded is stale");
        v.snapshot_succeeded();
        assert!(!v.is_fresh(), "both sources must have succeeded");
        v.stream_succeeded();
        assert!(v.is_fresh());
        v.stream_ok_ms.store(now_ms() - 71_000, Ordering::Release);
        assert!(!v.is_fresh(), "an old stream read makes the view stale");
        let open = RevocationView::new(Duration::from_secs(70), false, false);
        assert!(open.is_fresh());
    }
}
