//! Caracal STS: the only issuer of mandates.
//!
//! Token exchange (RFC 8693 form body at `POST /oauth/2/token`), client authentication, Rego policy
//! evaluation with regorus, zone signing keys sealed under `ZONE_KEK`, and the per-zone JWKS. The
//! mint path keeps its state in memory — compiled policies and decrypted keys — so a mint costs a
//! policy evaluation and a signature plus the few row reads that revocation needs (DESIGN §8).
//!
//! Only [`http`] knows axum; the rest is plain async Rust.

pub mod catalog;
pub mod config;
pub mod delegation;
pub mod error;
pub mod exchange;
pub mod federation;
pub mod form;
pub mod http;
pub mod keys;
pub mod limits;
pub mod metadata;
pub mod metrics;
pub mod operations;
pub mod policy;
pub mod provider_tokens;
pub mod revoked;
pub mod step_up;
pub mod store;
pub mod zone_directory;

use std::sync::Arc;

use sqlx::PgPool;

pub use config::StsConfig;
pub use error::StsError;
pub use exchange::{GatewaySignature, TokenRequest};

/// The STS service: configuration, state and caches.
pub struct Sts {
    cfg: StsConfig,
    db: PgPool,
    redis: caracal_shared::redis_primary::Conn,
    /// Zone signing keys, decrypted once per zone.
    pub keys: keys::KeyStore,
    /// Active policies, compiled once per zone.
    pub policies: policy::PolicyCache,
    /// Applications and resources, cached.
    pub catalog: catalog::Catalog,
    /// Mint rate limits and bad-credential lockouts.
    pub limits: limits::Limits,
    /// Revoked root sessions, in memory.
    pub revoked: Arc<revoked::RevokedRoots>,
    /// Session mandates whose signature verified, by SHA-256 of the token bytes.
    verified_sessions: moka::sync::Cache<[u8; 32], Arc<caracal_shared::Claims>>,
    metrics: metrics::StsMetrics,
    /// Subject issuers' key sets (subject federation).
    federation: federation::jwks::JwksFetcher,
    /// Access tokens of client-credentials credential providers.
    provider_tokens: provider_tokens::ProviderTokens,
    /// Where token-exchange evidence goes (set by the binary; unset in unit tests).
    evidence: std::sync::OnceLock<tokio::sync::mpsc::Sender<caracal_shared::audit::AuditEvent>>,
}

impl Sts {
    /// Builds the service and registers its metrics in `registry`.
    pub fn new(
        cfg: StsConfig,
        db: PgPool,
        redis: caracal_shared::redis_primary::Conn,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let zones = Arc::new(zone_directory::ZoneDirectory::new(db.clone(), registry)?);
        let keys = keys::KeyStore::new(db.clone(), keys::Kek::new(&cfg.zone_kek), cfg.key_activation_delay, zones.clone(), registry)?;
        let policies = policy::PolicyCache::new(db.clone(), cfg.policy_eval_timeout, registry)?;
        let catalog = catalog::Catalog::new(db.clone(), zones, registry)?;
        let revoked = Arc::new(revoked::RevokedRoots::new(cfg.revocation_max_staleness));
        let limits = limits::Limits::new(redis.clone(), cfg.mints_per_minute, cfg.auth_failure_limit, cfg.auth_lockout);
        let metrics = metrics::StsMetrics::new(registry)?;
        let federation = federation::jwks::JwksFetcher::new(cfg.subject_issuer_private_hosts.clone(), cfg.subject_issuer_ca.as_deref())
            .map_err(|e| prometheus::Error::Msg(format!("subject issuer JWKS client: {e}")))?;
        let provider_tokens = provider_tokens::ProviderTokens::new(cfg.provider_private_hosts.clone(), cfg.provider_ca.as_deref())
            .map_err(|e| prometheus::Error::Msg(format!("credential provider token client: {e}")))?;
        // Bounded by count and by the longest session lifetime; entries are only a memo of a check.
        let verified_sessions = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(std::time::Duration::from_secs(config::SESSION_TTL_CAP))
            .build();
        Ok(Arc::new(Self {
            cfg,
            db,
            redis,
            keys,
            policies,
            catalog,
            limits,
            revoked,
            verified_sessions,
            metrics,
            federation,
            provider_tokens,
            evidence: std::sync::OnceLock::new(),
        }))
    }

    /// Loads the revoked-session view (fails if Postgres cannot be read) and keeps it fresh in
    /// the background until `shutdown` flips.
    pub async fn start_background(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<(), sqlx::Error> {
        let n = self.revoked.reload(&self.db).await?;
        tracing::info!(revoked_sessions = n, "loaded revoked sessions");
        use caracal_shared::zone_context::all_zones;
        tokio::spawn(all_zones(self.revoked.clone().run(self.db.clone(), self.cfg.revocation_reload, shutdown.clone())));
        tokio::spawn(all_zones(sweep_holds(self.db.clone(), shutdown)));
        Ok(())
    }

    /// Sends an audit event for every token exchange decided from here on.
    pub fn set_evidence(&self, tx: tokio::sync::mpsc::Sender<caracal_shared::audit::AuditEvent>) {
        let _ = self.evidence.set(tx);
    }

    /// The configured issuer URL.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// The zone's JWKS document (every key a live mandate may carry; see [`keys`]).
    pub async fn jwks(&self, zone_id: &str) -> Result<bytes::Bytes, StsError> {
        Ok(self.keys.zone(zone_id).await?.jwks_json())
    }
}

/// Hourly: forgets approval holds settled or expired more than a day ago.
async fn sweep_holds(db: PgPool, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        match step_up::holds::sweep(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "swept old approval holds"),
            Err(e) => tracing::warn!(error = %e, "sweeping approval holds failed; next try in an hour"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
