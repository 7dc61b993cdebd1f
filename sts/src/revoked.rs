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

use caracal_shared::revocation::in_chunks;
pub use caracal_shared::revocation::{FULL_RELOAD_EVERY, RELOAD_OVERLAP};
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
    /// The database's clock when the last successful reload began (Unix microseconds); the next
    /// incremental reload reads from [`RELOAD_OVERLAP`] before it. Not the newest `revoked_at`
    /// read: after a burst, that would re-read the whole burst on every reload until a newer
    /// revocation came along (a million rows every few seconds, bench C1).
    watermark_us: AtomicI64,
    max_staleness: Duration,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The database's clock (the reloads' watermark is on it, like `revoked_at`).
async fn db_now(db: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(db).await
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
        for (zone, anchor, expires_at, _) in rows {
            // Most rows of a full reload are held already, with this expiry: a read lock and no
            // allocation for those.
            let held =
                self.anchors.get(anchor.as_str()).is_some_and(|z| z.iter().any(|(z, e)| **z == **zone && *e == expires_at.timestamp()));
            if held {
                continue;
            }
            // The table's expiry is authoritative: it replaces the local retention guess.
            let mut zones = self.anchors.entry(anchor.as_str().into()).or_default();
            match zones.iter_mut().find(|(z, _)| **z == **zone) {
                Some((_, exp)) => *exp = expires_at.timestamp(),
                None => zones.push((zone.as_str().into(), expires_at.timestamp())),
            }
        }
    }

    /// Merges `rows` as they arrive, a chunk at a time ([`in_chunks`]): a full reload of a
    /// million rows merged in one go held a runtime worker, and the requests queued behind it, for
    /// over a second (bench C1).
    async fn merge_streamed(&self, rows: futures_util::stream::BoxStream<'_, Result<Row, sqlx::Error>>) -> Result<usize, sqlx::Error> {
        in_chunks(rows, |chunk| self.merge(chunk)).await
    }

    /// Reads every live revocation, merges it in and prunes; returns how many rows were read.
    pub async fn reload(&self, db: &PgPool) -> Result<usize, sqlx::Error> {
        let started = db_now(db).await?;
        let rows = sqlx::query_as(
            "SELECT zone_id, anchor_id, expires_at, revoked_at FROM revocations WHERE expires_at > now() - make_interval(secs => $1)",
        )
        .bind(EXPIRY_GRACE.as_secs() as f64)
        .fetch(db);
        let n = self.merge_streamed(rows).await?;
        self.prune(Utc::now().timestamp());
        self.watermark_us.store(started.timestamp_micros(), Ordering::Relaxed);
        self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        Ok(n)
    }

    /// Reads the revocations made since the last reload (minus [`RELOAD_OVERLAP`]).
    pub async fn reload_recent(&self, db: &PgPool) -> Result<usize, sqlx::Error> {
        let since = self.watermark_us.load(Ordering::Relaxed);
        if since == i64::MIN {
            return self.reload(db).await;
        }
        let since = DateTime::from_timestamp_micros(since - RELOAD_OVERLAP.as_micros() as i64).unwrap_or_default();
        let started = db_now(db).await?;
        let rows = sqlx::query_as(
            "SELECT zone_id, anchor_id, expires_at, revoked_at FROM revocations \
             WHERE revoked_at >= $1 AND expires_at > now() - make_interval(secs => $2)",
        )
        .bind(since)
        .bind(EXPIRY_GRACE.as_secs() as f64)
        .fetch(db);
        let n = self.merge_streamed(rows).await?;
        self.watermark_us.store(started.timestamp_micros(), Ordering::Relaxed);
        self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        Ok(n)
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
        assert_eq!(v.watermark_us.load(Ordering::Relaxed), i64::MIN, "rows do not move the watermark; a reload's start does");
    }
}
