//! The ids of the live (not archived) zones, in memory, so a zone id nobody created costs no
//! Postgres query.
//!
//! The key store and the catalog consult it before any query of theirs for a zone.
//!
//! Zone ids reach the STS from unverified places — a forged mandate's `zone_id` relayed by a
//! gateway's JWKS fetch, a query string, a token form — so a per-zone negative cache would still
//! cost one query per fresh random id. Instead the STS keeps the set of live zone ids and answers
//! "unknown" from memory. A lookup that misses reloads the whole set (one `SELECT id FROM zones`),
//! single-flight and at most once per [`MIN_RELOAD`], so any stream of unknown ids costs at most
//! one query per second.
//!
//! Freshness: the instance that creates a zone marks the set stale (the next miss reloads at once),
//! and the zone's creation is announced on `caracal.keys.invalidate`, which marks it stale on every
//! other instance. A zone created on another instance is therefore unknown here only until that
//! message arrives, and at worst for [`MIN_RELOAD`]. Archived zones may linger in the set; the key
//! query, which only reads live zones, removes them on their next lookup.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use sqlx::PgPool;

use crate::error::StsError;

/// Least time between two reloads caused by misses (unless the set was marked stale).
pub const MIN_RELOAD: Duration = Duration::from_secs(1);

/// The live zone ids.
pub struct ZoneDirectory {
    db: PgPool,
    live: ArcSwap<HashSet<String>>,
    /// When the set was last loaded; the lock makes reloads single-flight.
    loaded_at: tokio::sync::Mutex<Option<Instant>>,
    /// Set by [`ZoneDirectory::mark_stale`]: the next miss reloads regardless of [`MIN_RELOAD`].
    stale: AtomicBool,
    loads: IntCounter,
}

impl ZoneDirectory {
    /// An empty directory (the first lookup loads it); registers its reload counter.
    pub fn new(db: PgPool, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let loads = IntCounter::new("caracal_sts_zone_directory_loads_total", "Reloads of the live-zone directory from Postgres.")?;
        registry.register(Box::new(loads.clone()))?;
        Ok(Self {
            db,
            live: ArcSwap::from_pointee(HashSet::new()),
            loaded_at: tokio::sync::Mutex::new(None),
            stale: AtomicBool::new(false),
            loads,
        })
    }

    /// Whether `zone_id` is a live zone. Fails only when the set must be reloaded and Postgres
    /// cannot answer (callers deny).
    pub async fn is_live(&self, zone_id: &str) -> Result<bool, StsError> {
        if self.live.load().contains(zone_id) {
            return Ok(true);
        }
        let mut loaded_at = self.loaded_at.lock().await;
        // Another lookup may have reloaded while this one waited.
        if self.live.load().contains(zone_id) {
            return Ok(true);
        }
        let stale = self.stale.swap(false, Ordering::AcqRel);
        if !stale && loaded_at.is_some_and(|t| t.elapsed() < MIN_RELOAD) {
            return Ok(false);
        }
        let query = sqlx::query_as("SELECT id FROM zones WHERE archived_at IS NULL").fetch_all(&self.db);
        let ids: Vec<(String,)> = match caracal_shared::zone_context::all_zones(query).await {
            Ok(ids) => ids,
            Err(e) => {
                self.stale.store(stale, Ordering::Release);
                return Err(e.into());
            }
        };
        self.loads.inc();
        self.live.store(Arc::new(ids.into_iter().map(|(id,)| id).collect()));
        *loaded_at = Some(Instant::now());
        Ok(self.live.load().contains(zone_id))
    }

    /// A zone was created, archived or changed somewhere: the next miss reloads at once.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Forgets a zone found to have no live keys (archived).
    pub fn remove(&self, zone_id: &str) {
        if self.live.load().contains(zone_id) {
            self.live.rcu(|set| {
                let mut set = HashSet::clone(set);
                set.remove(zone_id);
                set
            });
        }
    }
}
