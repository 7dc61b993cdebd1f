//! Revoked sessions, agent sessions and delegation edges, in memory.
//!
//! Every derived mandate carries its anchors (`sid`, `root_sid`, `agent_session_id`,
//! `delegation_edge_id`); the STS refuses to mint or exchange when any of them is revoked. The set
//! is read on every exchange, so it lives in a sharded concurrent map: a lookup takes one shard's
//! read lock (never contended by other readers), an insert touches one shard — nothing copies the
//! whole set. Anchors are UUIDs, unique across zones; an entry still records its zone(s), so one
//! zone's revocation can never be read as another's.
//!
//! Fed by this instance's own revocations (at once), the `caracal.sessions.revoke` stream, and the
//! `revocations` table: an incremental reload every `REVOCATION_RELOAD_INTERVAL` reads only rows
//! revoked since the last one (with an overlap, since `revoked_at` is a transaction's start time),
//! and a full reload every [`FULL_RELOAD_EVERY`] backs it up and prunes. An entry is dropped once
//! its `expires_at` (after which no mandate hanging from the anchor can be valid) is past by
//! [`EXPIRY_GRACE`]. If reloads keep failing the view goes stale, and after `max_staleness` every
//! exchange is refused (fail closed) until a reload succeeds.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use sqlx::PgPool;

/// How often the whole table is re-read (and expired entries pruned).
pub const FULL_RELOAD_EVERY: Duration = Duration::from_secs(300);
/// How far back an incremental reload looks before the newest `revoked_at` it has seen.
pub const RELOAD_OVERLAP: Duration = Duration::from_secs(60);
/// How long an entry outlives its `expires_at` (clock skew between services).
pub const EXPIRY_GRACE: Duration = Duration::from_secs(300);
/// Retention of an anchor revoked here or announced on the stream, before the table's own
/// `expires_at` replaces it (longer than any mandate lives).
pub const LOCAL_RETENTION: Duration = caracal_shared::revocation::DEFAULT_RETENTION;

/// Zones an anchor is revoked in, each with its expiry (Unix seconds); nearly always one.
type Zones = Vec<(Box<str>, i64)>;

/// The revoked-anchor view.
pub struct RevokedRoots {
    anchors: DashMap<Box<str>, Zones>,
    /// Unix milliseconds of the last successful reload.
    loaded_at_ms: AtomicI64,
    /// Newest `revoked_at` read (Unix microseconds); incremental reloads start before it.
    watermark_us: AtomicI64,
    max_staleness: Duration,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

type Row = (String, String, DateTime<Utc>, DateTime<Utc>);

impl RevokedRoots {
    /// An empty, never-loaded view (stale until the first reload).
    pub fn new(max_staleness: Duration) -> Self {
        Self { anchors: DashMap::new(), loaded_at_ms: AtomicI64::new(0), watermark_us: AtomicI64::new(i64::MIN), max_staleness }
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
        Some(
            anchors.into_iter().any(|a| !a.is_empty() && self.anchors.get(a).is_some_and(|z| z.iter().any(|(zone, _)| &**zone == zone_id))),
        )
    }

    fn add(&self, zone_id: &str, anchor: &str, expires_at: i64) {
        let mut zones = self.anchors.entry(anchor.into()).or_default();
        match zones.iter_mut().find(|(z, _)| &**z == zone_id) {
            Some((_, exp)) => *exp = (*exp).max(expires_at),
            None => zones.push((zone_id.into(), expires_at)),
        }
    }

    /// Records revoked anchors of a zone (this instance's own revocations, or the stream's).
    pub fn insert_many(&self, zone_id: &str, anchors: &[&str]) {
        let expires_at = Utc::now().timestamp() + LOCAL_RETENTION.as_secs() as i64;
        for a in anchors.iter().filter(|a| !a.is_empty()) {
            self.add(zone_id, a, expires_at);
        }
    }

    /// Records one revoked anchor.
    pub fn insert(&self, zone_id: &str, sid: &str) {
        self.insert_many(zone_id, &[sid]);
    }

    /// Number of revoked anchors held.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Drops entries expired longer than [`EXPIRY_GRACE`] ago; returns how many anchors went.
    pub fn prune(&self, now_secs: i64) -> usize {
        let cutoff = now_secs - EXPIRY_GRACE.as_secs() as i64;
        let before = self.anchors.len();
        self.anchors.retain(|_, zones| {
            zones.retain(|(_, exp)| *exp > cutoff);
            !zones.is_empty()
        });
        before - self.anchors.len()
    }

    fn merge(&self, rows: &[Row]) {
        let mut newest = self.watermark_us.load(Ordering::Relaxed);
        for (zone, anchor, expires_at, revoked_at) in rows {
            // The table's expiry is authoritative: it replaces the local retention guess.
            let mut zones = self.anchors.entry(anchor.as_str().into()).or_default();
            match zones.iter_mut().find(|(z, _)| **z == **zone) {
                Some((_, exp)) => *exp = expires_at.timestamp(),
                None => zones.push((zone.as_str().into(), expires_at.timestamp())),
            }
            drop(zones);
            newest = newest.max(revoked_at.timestamp_micros());
        }
        self.watermark_us.store(newest, Ordering::Relaxed);
    }

    /// Reads every live revocation, merges it in and prunes; returns how many rows were read.
    pub async fn reload(&self, db: &PgPool) -> Result<usize, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT zone_id, anchor_id, expires_at, revoked_at FROM revocations WHERE expires_at > now() - make_interval(secs => $1)",
        )
        .bind(EXPIRY_GRACE.as_secs() as f64)
        .fetch_all(db)
        .await?;
        self.merge(&rows);
        self.prune(Utc::now().timestamp());
        self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        Ok(rows.len())
    }

    /// Reads the revocations made since the last reload (minus [`RELOAD_OVERLAP`]).
    pub async fn reload_recent(&self, db: &PgPool) -> Result<usize, sqlx::Error> {
        let since = self.watermark_us.load(Ordering::Relaxed);
        if since == i64::MIN {
            return self.reload(db).await;
        }
        let since = DateTime::from_timestamp_micros(since - RELOAD_OVERLAP.as_micros() as i64).unwrap_or_default();
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT zone_id, anchor_id, expires_at, revoked_at FROM revocations \
             WHERE revoked_at >= $1 AND expires_at > now() - make_interval(secs => $2)",
        )
        .bind(since)
        .bind(EXPIRY_GRACE.as_secs() as f64)
        .fetch_all(db)
        .await?;
        self.merge(&rows);
        self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        Ok(rows.len())
    }

    /// Reloads what is new every `every`, and everything every [`FULL_RELOAD_EVERY`], until
    /// `shutdown` flips.
    pub async fn run(self: std::sync::Arc<Self>, db: PgPool, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut last_full = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let full = last_full.elapsed() >= FULL_RELOAD_EVERY;
            let result = if full { self.reload(&db).await } else { self.reload_recent(&db).await };
            match result {
                Ok(_) if full => last_full = tokio::time::Instant::now(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, full, "revoked-session reload failed; the view ages"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> RevokedRoots {
        let v = RevokedRoots::new(Duration::from_secs(30));
        v.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        v
    }

    #[test]
    fn stale_view_refuses_to_answer_and_inserts_are_visible() {
        let v = RevokedRoots::new(Duration::from_secs(30));
        assert_eq!(v.is_revoked("z", "s"), None, "never loaded = stale");
        v.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        assert_eq!(v.is_revoked("z", "s"), Some(false));
        v.insert("z", "s");
        assert_eq!(v.is_revoked("z", "s"), Some(true));
        assert_eq!(v.is_revoked("other", "s"), Some(false), "zones are separate");
        v.insert("other", "s");
        assert_eq!(v.is_revoked("z", "s"), Some(true), "a second zone does not replace the first");
        v.loaded_at_ms.store(now_ms() - 31_000, Ordering::Relaxed);
        assert_eq!(v.is_revoked("z", "s"), None);
    }

    #[test]
    fn expired_anchors_are_pruned_and_the_table_sets_the_expiry() {
        let v = fresh();
        let now = Utc::now();
        let row = |anchor: &str, expires_in: i64| -> Row {
            ("z".into(), anchor.into(), now + chrono::Duration::seconds(expires_in), now - chrono::Duration::seconds(1))
        };
        v.insert("z", "local");
        v.merge(&[row("local", -(EXPIRY_GRACE.as_secs() as i64) - 10), row("live", 60), row("gone", -(EXPIRY_GRACE.as_secs() as i64) - 1)]);
        assert_eq!(v.len(), 3);
        assert_eq!(v.prune(now.timestamp()), 2, "the table's expiry replaced the local guess");
        assert_eq!(v.is_revoked("z", "live"), Some(true));
        assert_eq!(v.is_revoked("z", "local"), Some(false));
        assert_eq!(v.watermark_us.load(Ordering::Relaxed), (now - chrono::Duration::seconds(1)).timestamp_micros());
    }
}
