//! The in-memory revocation view every verifying service consults.
//!
//! Anchors are the ids a mandate hangs from — `sid`, `root_sid`, `agent_session_id`,
//! `delegation_edge_id` — in one namespace (they are UUIDv7s, unique across kinds and zones). A
//! lookup takes a shard's read lock of a sharded map and hashes: cheap enough for a synchronous
//! body hook, and never waits on more than one shard's insert. Adding costs the batch, not the
//! view: the view held a map that every added batch copied whole, which at a million anchors
//! took 0.6 s per revocation and 260 MiB (bench C1). Adding bumps an epoch and wakes subscribers,
//! so a streaming response can re-check its anchors the moment a revocation lands instead of
//! waiting for its next chunk. Expired anchors are dropped by [`RevocationView::prune`].
//!
//! Entries are only ever added or expired, never removed by a reload: a periodic snapshot merges
//! into what the stream delivered (the original replaced the map and lost stream-only entries).
//! The view also tracks when its sources last succeeded; callers treat a stale view as "cannot
//! tell" and deny.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

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
    /// Anchor → expiry (Unix seconds).
    anchors: DashMap<String, i64>,
    epoch: AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
    /// Unix ms of the last successful snapshot, or `i64::MAX` when snapshots are not configured.
    snapshot_ok_ms: AtomicI64,
    /// Unix ms of the last successful stream read, or `i64::MAX` when there is no stream.
    stream_ok_ms: AtomicI64,
    max_staleness_ms: i64,
}

/// How often a reader of `revocations` re-reads the whole table (and prunes what expired); in
/// between it reads only what was revoked since the newest row it saw.
pub const FULL_RELOAD_EVERY: Duration = Duration::from_secs(300);
/// How far back an incremental reload looks before the newest `revoked_at` it has seen (a
/// transaction that commits late carries an earlier `revoked_at`).
pub const RELOAD_OVERLAP: Duration = Duration::from_secs(60);

/// Rows a reader of `revocations` applies between two yields to the runtime.
pub const CHUNK: usize = 4_096;

/// Hands the rows of `rows` to `apply` a [`CHUNK`] at a time as they arrive, yielding to the
/// runtime in between; how many there were. A million rows read whole and applied at once held
/// another copy of the view in memory and a runtime worker for over a second (bench C1).
pub async fn in_chunks<T, E>(
    mut rows: impl futures_util::Stream<Item = Result<T, E>> + Unpin,
    mut apply: impl FnMut(&[T]),
) -> Result<usize, E> {
    use futures_util::TryStreamExt as _;
    let (mut chunk, mut n) = (Vec::with_capacity(CHUNK), 0);
    while let Some(row) = rows.try_next().await? {
        chunk.push(row);
        if chunk.len() == CHUNK {
            apply(&chunk);
            n += chunk.len();
            chunk.clear();
            tokio::task::yield_now().await;
        }
    }
    apply(&chunk);
    Ok(n + chunk.len())
}

/// Shards of the view's map.
const SHARDS: usize = 64;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RevocationView {
    /// An empty view. `snapshots` / `stream` say which sources feed it: a source that is not
    /// configured never makes the view stale; one that is makes it stale until it first succeeds.
    pub fn new(max_staleness: Duration, snapshots: bool, stream: bool) -> Arc<Self> {
        let (changed, _) = tokio::sync::watch::channel(0);
        Arc::new(Self {
            // Many shards: a prune holds each one's write lock only for its slice of the view.
            anchors: DashMap::with_shard_amount(SHARDS),
            epoch: AtomicU64::new(0),
            changed,
            snapshot_ok_ms: AtomicI64::new(if snapshots { 0 } else { i64::MAX }),
            stream_ok_ms: AtomicI64::new(if stream { 0 } else { i64::MAX }),
            max_staleness_ms: max_staleness.as_millis() as i64,
        })
    }

    /// Whether any of `anchors` is revoked (empty ids never are).
    pub fn any_revoked<'a>(&self, anchors: impl IntoIterator<Item = &'a str>) -> bool {
        let now = now_ms() / 1000;
        anchors.into_iter().any(|a| !a.is_empty() && self.anchors.get(a).is_some_and(|exp| *exp > now))
    }

    /// The change counter; bumps whenever an anchor is added.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A receiver woken on every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Adds anchors (keeping the later expiry of one already held). Returns how many were new.
    pub fn add(&self, batch: &[Revoked]) -> usize {
        let now = now_ms() / 1000;
        let mut added = 0;
        for r in batch.iter().filter(|r| !r.anchor.is_empty() && r.expires_at > now) {
            // A snapshot mostly repeats what is held: a read lock settles those.
            if self.anchors.get(r.anchor.as_str()).is_some_and(|exp| *exp >= r.expires_at) {
                continue;
            }
            match self.anchors.get_mut(r.anchor.as_str()) {
                Some(mut exp) => *exp = (*exp).max(r.expires_at),
                None => {
                    // Another adder may have inserted it meanwhile: count it once.
                    let mut fresh = false;
                    self.anchors.entry(r.anchor.clone()).and_modify(|exp| *exp = (*exp).max(r.expires_at)).or_insert_with(|| {
                        fresh = true;
                        r.expires_at
                    });
                    added += usize::from(fresh);
                }
            }
        }
        if added > 0 {
            let e = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            self.changed.send_replace(e);
        }
        added
    }

    /// Drops expired anchors; returns how many went.
    pub fn prune(&self) -> usize {
        let now = now_ms() / 1000;
        let before = self.anchors.len();
        self.anchors.retain(|_, exp| *exp > now);
        before.saturating_sub(self.anchors.len())
    }

    /// Number of live anchors held (walks the view: for metrics, not per request).
    pub fn len(&self) -> usize {
        let now = now_ms() / 1000;
        self.anchors.iter().filter(|e| *e.value() > now).count()
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
    fn prune_drops_only_what_expired() {
        let v = RevocationView::new(Duration::from_secs(70), false, false);
        v.add(&[r("live", 60)]);
        v.anchors.insert("old".into(), now_ms() / 1000 - 5);
        assert!(!v.any_revoked(["old"]), "an expired anchor no longer counts, pruned or not");
        assert_eq!(v.prune(), 1);
        assert!(v.any_revoked(["live"]));
        assert_eq!(v.len(), 1);
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
