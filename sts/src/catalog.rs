//! The zone configuration the mint path reads — applications and resources — cached in memory.
//!
//! A mint must not cost a database round trip per table (DESIGN §8). Entries live for
//! `CATALOG_TTL`; the admin API invalidates an entry the moment it changes it, and announces the
//! change on `caracal.catalog.invalidate` in the same transaction, so a rotated secret, an archived
//! application or an edited resource takes effect on every instance as the message lands; the TTL
//! is only a backstop. Misses are not cached, so a new application or resource is usable
//! immediately everywhere; a zone the [`ZoneDirectory`] does not know costs no query at all (zone
//! ids in token requests come from unauthenticated callers).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::error::StsError;
use crate::store::{self, Application, Resource};
use crate::zone_directory::ZoneDirectory;

/// How long a cached entry is trusted.
pub const CATALOG_TTL: Duration = Duration::from_secs(30);

type Key = (String, String);

/// Cached applications and resources.
pub struct Catalog {
    db: PgPool,
    zones: Arc<ZoneDirectory>,
    apps: moka::future::Cache<Key, Arc<Application>>,
    resources: moka::future::Cache<Key, Arc<Resource>>,
    /// Rows read from Postgres on a cache miss, by kind (`application`, `resource`).
    loads: prometheus::IntCounterVec,
}

impl Catalog {
    /// A catalog over `db`, asking `zones` before any query; registers its metrics.
    pub fn new(db: PgPool, zones: Arc<ZoneDirectory>, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let loads = prometheus::IntCounterVec::new(
            prometheus::Opts::new("caracal_sts_catalog_loads_total", "Applications and resources read from Postgres on a cache miss."),
            &["kind"],
        )?;
        registry.register(Box::new(loads.clone()))?;
        Ok(Self {
            db,
            zones,
            apps: moka::future::Cache::builder().max_capacity(200_000).time_to_live(CATALOG_TTL).build(),
            resources: moka::future::Cache::builder().max_capacity(200_000).time_to_live(CATALOG_TTL).build(),
            loads,
        })
    }

    /// A live application of the zone.
    pub async fn application(&self, zone_id: &str, id: &str) -> Result<Option<Arc<Application>>, StsError> {
        let key = (zone_id.to_owned(), id.to_owned());
        if let Some(a) = self.apps.get(&key).await {
            return Ok(Some(a));
        }
        if !self.zones.is_live(zone_id).await? {
            return Ok(None);
        }
        self.loads.with_label_values(&["application"]).inc();
        let Some(app) = store::application(&self.db, zone_id, id).await? else { return Ok(None) };
        let app = Arc::new(app);
        self.apps.insert(key, app.clone()).await;
        Ok(Some(app))
    }

    /// A live resource of the zone, by identifier.
    pub async fn resource(&self, zone_id: &str, identifier: &str) -> Result<Option<Arc<Resource>>, StsError> {
        let key = (zone_id.to_owned(), identifier.to_owned());
        if let Some(r) = self.resources.get(&key).await {
            return Ok(Some(r));
        }
        if !self.zones.is_live(zone_id).await? {
            return Ok(None);
        }
        self.loads.with_label_values(&["resource"]).inc();
        let Some(r) = store::resource(&self.db, zone_id, identifier).await? else { return Ok(None) };
        let r = Arc::new(r);
        self.resources.insert(key, r.clone()).await;
        Ok(Some(r))
    }

    /// Forgets an application (after its secret rotated or it was archived).
    pub async fn invalidate_application(&self, zone_id: &str, id: &str) {
        self.apps.invalidate(&(zone_id.to_owned(), id.to_owned())).await;
    }

    /// Forgets a resource identifier (after the resource changed or was archived).
    pub async fn invalidate_resource(&self, zone_id: &str, identifier: &str) {
        self.resources.invalidate(&(zone_id.to_owned(), identifier.to_owned())).await;
    }
}
