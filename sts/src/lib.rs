//! Caracal STS: the only issuer of mandates.
//!
//! Token exchange (RFC 8693 form body at `POST /oauth/2/token`), client authentication, Rego policy
//! evaluation with regorus, zone signing keys sealed under `ZONE_KEK`, and the per-zone JWKS. The
//! mint path keeps its state in memory — compiled policies and decrypted keys — so a mint costs a
//! policy evaluation and a signature plus the few row reads that revocation needs (DESIGN §8).
//!
//! Only [`http`] knows axum; the rest is plain async Rust.

pub mod config;
pub mod error;
pub mod exchange;
pub mod form;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod operations;
pub mod policy;
pub mod store;

use std::sync::Arc;

use sqlx::PgPool;

pub use config::StsConfig;
pub use error::StsError;
pub use exchange::{GatewaySignature, TokenRequest};

/// The STS service: configuration, state and caches.
pub struct Sts {
    cfg: StsConfig,
    db: PgPool,
    redis: redis::aio::ConnectionManager,
    /// Zone signing keys, decrypted once per zone.
    pub keys: keys::KeyStore,
    /// Active policies, compiled once per zone.
    pub policies: policy::PolicyCache,
    metrics: metrics::StsMetrics,
}

impl Sts {
    /// Builds the service and registers its metrics in `registry`.
    pub fn new(
        cfg: StsConfig,
        db: PgPool,
        redis: redis::aio::ConnectionManager,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let keys = keys::KeyStore::new(db.clone(), keys::Kek::new(&cfg.zone_kek), cfg.key_activation_delay);
        let policies = policy::PolicyCache::new(db.clone());
        let metrics = metrics::StsMetrics::new(registry)?;
        Ok(Arc::new(Self { cfg, db, redis, keys, policies, metrics }))
    }

    /// The configured issuer URL.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// The zone's JWKS document (the two newest keys).
    pub async fn jwks(&self, zone_id: &str) -> Result<bytes::Bytes, StsError> {
        Ok(self.keys.zone(zone_id).await?.jwks_json())
    }
}
