//! Revoked sessions, agent sessions and delegation edges, in memory.
//!
//! Every derived mandate carries its anchors (`sid`, `root_sid`, `agent_session_id`,
//! `delegation_edge_id`); the STS refuses to mint or exchange when any of them is revoked. The set is read on every exchange, so lookups are lock-free (an
//! `ArcSwap` of an immutable map); revocations are rare, so an insert copies the map.
//!
//! Fed by this instance's own revocations (at once), and by a reload of the `revocations` table
//! every [`RELOAD_EVERY`], which carries other instances' revocations. A reload merges: it never
//! drops an entry this instance added. If reloads keep failing the view goes stale, and after
//! `max_staleness` every exchange is refused (fail closed) until a reload succeeds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use sqlx::PgPool;

type Zones = HashMap<String, HashSet<String>>;

/// The revoked-root view.
pub struct RevokedRoots {
    zones: ArcSwap<Zones>,
    /// Unix milliseconds of the last successful reload.
    loaded_at_ms: AtomicI64,
    max_staleness: Duration,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RevokedRoots {
    /// An empty, never-loaded view (stale until the first reload).
    pub fn new(max_staleness: Duration) -> Self {
        Self { zones: ArcSwap::from_pointee(Zones::new()), loaded_at_ms: AtomicI64::new(0), max_staleness }
    }

    /// Whether `sid` of `zone_id` is revoked; `None` when the view is too stale to answer.
    pub fn is_revoked(&self, zone_id: &str, sid: &str) -> Option<bool> {
        self.any_revoked(zone_id, [sid])
    }

    /// Whether any of `anchors` (session ids, agent sessions, delegation edges) of `zone_id` is
    /// revoked; `None` when the view is too stale to answer.
    pub fn any_revoked<'a>(&self, zone_id: &str, anchors: impl IntoIterator<Item = &'a str>) -> Option<bool> {
        let age = now_ms() - self.loaded_at_ms.load(Ordering::Relaxed);
        if age > self.max_staleness.as_millis() as i64 {
            return None;
        }
        let zones = self.zones.load();
        let Some(set) = zones.get(zone_id) else { return Some(false) };
        Some(anchors.into_iter().any(|a| !a.is_empty() && set.contains(a)))
    }

    /// Records several revoked anchors of a zone at once (one copy of the map).
    pub fn insert_many(&self, zone_id: &str, anchors: &[&str]) {
        if anchors.is_empty() {
            return;
        }
        self.zones.rcu(|z| {
            let mut z = Zones::clone(z);
            let set = z.entry(zone_id.to_owned()).or_default();
            for a in anchors.iter().filter(|a| !a.is_empty()) {
                set.insert((*a).to_owned());
            }
            z
        });
    }

    /// Records a revocation made by this instance.
    pub fn insert(&self, zone_id: &str, sid: &str) {
        self.zones.rcu(|z| {
            let mut z = Zones::clone(z);
            z.entry(zone_id.to_owned()).or_default().insert(sid.to_owned());
            z
        });
    }

    /// Number of revoked roots held.
    pub fn len(&self) -> usize {
        self.zones.load().values().map(HashSet::len).sum()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reloads live revocations from Postgres and merges them in.
    pub async fn reload(&self, db: &PgPool) -> Result<usize, sqlx::Error> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT zone_id, anchor_id FROM revocations WHERE expires_at > now() - interval '5 minutes'")
                .fetch_all(db)
                .await?;
        let n = rows.len();
        self.zones.rcu(|current| {
            let mut z = Zones::clone(current);
            for (zone, sid) in &rows {
                z.entry(zone.clone()).or_default().insert(sid.clone());
            }
            z
        });
        self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        Ok(n)
    }

    /// Reloads every `every` until `shutdown` flips.
    pub async fn run(self: Arc<Self>, db: PgPool, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.reload(&db).await {
                tracing::warn!(error = %e, "revoked-session reload failed; the view ages");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_view_refuses_to_answer_and_inserts_are_visible() {
        let v = RevokedRoots::new(Duration::from_secs(30));
        assert_eq!(v.is_revoked("z", "s"), None, "never loaded = stale");
        v.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        assert_eq!(v.is_revoked("z", "s"), Some(false));
        v.insert("z", "s");
        assert_eq!(v.is_revoked("z", "s"), Some(true));
        assert_eq!(v.is_revoked("other", "s"), Some(false), "zones are separate");
        v.loaded_at_ms.store(now_ms() - 31_000, Ordering::Relaxed);
        assert_eq!(v.is_revoked("z", "s"), None);
    }
}
