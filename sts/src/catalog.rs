//! The zone configuration the mint path reads — applications and resources — cached in memory.
//!
//! A mint must not cost a database round trip per table (DESIGN §8). Entries live for
//! `CATALOG_TTL`; the admin API invalidates an entry the moment it changes it, and announces the
//! change on `caracal.catalog.invalidate` in the same transaction, so a rotated secret, an archived
//! application or an edited resource takes effect on every instance as the message lands; the TTL
//! is only a backstop. Misses are not cached, so a new application or resource is usable
//! immediately everywhere.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::error::StsError;
use crate::store::{self, Application, Resource};

/// How long a cached entry is trusted.
pub const CATALOG_TTL: Duration = Duration::from_secs(30);

type Key = (String, String);

/// Cached applications and resources.
pub struct Catalog {
    db: PgPool,
    apps: moka::future::Cache<Key, Arc<Application>>,
    resources: moka::future::Cache<Key, Arc<Resource>>,
}

impl Catalog {
    /// A catalog over `db`.
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            apps: moka::future::Cache::builder().max_capacity(200_000).time_to_live(CATALOG_TTL).build(),
            resources: moka::future::Cache::builder().max_capacity(200_000).time_to_live(CATALOG_TTL).build(),
        }
    }

    /// A live application of the zone.
    pub async fn application(&self, zone_id: &str, id: &str) -> Result<Option<Arc<Application>>, StsError> {
        let key = (zone_id.to_owned(), id.to_owned());
        if let Some(a) = self.apps.get(&key).await {
            return Ok(Some(a));
        }
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
