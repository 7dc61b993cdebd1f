//! Per-zone cache of the STS's published signing keys.
//!
//! * Keys of a zone are fetched from `{STS_URL}/.well-known/jwks.json?zone_id=Z` and trusted for
//!   `JWKS_CACHE_TTL`; then the next lookup refreshes them.
//! * An unknown `kid` triggers a refetch at most once per zone per `JWKS_REFETCH_COOLDOWN`, so a
//!   rotated key is picked up at once while a stream of forged `kid`s cannot turn into a fetch per
//!   request.
//! * An unknown zone (404) is remembered as an empty key set for the same cooldown: the zone id
//!   comes from an unverified token, so without this any caller could make the gateway fetch once
//!   per request (the original's weakness).
//! * Fetches are single-flight: concurrent lookups of one zone share one request.
//! * When the JWKS endpoint is down, keys already known keep verifying (a stale key set is better
//!   than refusing every valid mandate); a zone never fetched answers "unavailable" (503).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use caracal_shared::jwks::JwkSet;
use caracal_shared::jws::VerifyingKey;

/// Largest JWKS body read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Outcome of a key lookup.
pub enum KeyLookup {
    /// The zone publishes this key.
    Found(VerifyingKey),
    /// The zone does not publish this key (or the zone is unknown).
    Unknown,
    /// The keys could not be fetched and none are cached.
    Unavailable,
}

/// A zone's keys as last fetched.
pub struct ZoneKeys {
    keys: Vec<VerifyingKey>,
    fetched_at: Instant,
    /// Unix ms of the last refetch an unknown `kid` forced (0: none).
    forced_ms: AtomicI64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl ZoneKeys {
    fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.kid() == kid)
    }
}

/// The cache.
pub struct JwksCache {
    http: reqwest::Client,
    url: String,
    zones: moka::future::Cache<String, Arc<ZoneKeys>>,
    /// Single-flight: concurrent fetches of a zone share one (entries are removed once served).
    inflight: moka::future::Cache<String, Arc<ZoneKeys>>,
    ttl: Duration,
    cooldown: Duration,
    /// Fetches made (for tests and metrics).
    pub fetches: prometheus::IntCounter,
}

impl JwksCache {
    /// A cache fetching from `sts_url` with `http`.
    pub fn new(http: reqwest::Client, sts_url: &str, ttl: Duration, cooldown: Duration, fetches: prometheus::IntCounter) -> Self {
        Self {
            http,
            url: format!("{sts_url}/.well-known/jwks.json"),
            zones: moka::future::Cache::builder().max_capacity(100_000).build(),
            inflight: moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(1)).build(),
            ttl,
            cooldown,
            fetches,
        }
    }

    /// The verifying key `kid` of `zone_id` (already checked against the id pattern, so it is
    /// safe in a query string).
    pub async fn key(&self, zone_id: &str, kid: &str) -> KeyLookup {
        let Some(entry) = self.zones.get(zone_id).await else {
            return match self.refresh(zone_id).await {
                Some(fresh) => found(&fresh, kid),
                None => KeyLookup::Unavailable,
            };
        };
        let stale = entry.fetched_at.elapsed() >= self.ttl;
        if !stale && let Some(k) = entry.find(kid) {
            return KeyLookup::Found(k.clone());
        }
        let forced = !stale;
        if forced && !self.may_force(&entry) {
            return KeyLookup::Unknown;
        }
        match self.refresh(zone_id).await {
            Some(fresh) => {
                if forced {
                    // The cooldown outlives the entry it was forced from.
                    fresh.forced_ms.store(now_ms(), Ordering::Release);
                }
                found(&fresh, kid)
            }
            // The endpoint is down: keep verifying with what we know.
            None => found(&entry, kid),
        }
    }

    /// Whether an unknown `kid` may force a refetch now; exactly one caller per cooldown wins.
    fn may_force(&self, entry: &ZoneKeys) -> bool {
        let now = now_ms();
        let forced = entry.forced_ms.load(Ordering::Acquire);
        if now - forced < self.cooldown.as_millis() as i64 {
            return false;
        }
        entry.forced_ms.compare_exchange(forced, now, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Fetches (single-flight) and stores the zone's keys; `None` if the fetch failed.
    async fn refresh(&self, zone_id: &str) -> Option<Arc<ZoneKeys>> {
        let result = self.inflight.try_get_with_by_ref(zone_id, self.fetch(zone_id)).await;
        // Callers that joined this fetch have their answer; the next refresh must fetch anew.
        self.inflight.invalidate(zone_id).await;
        match result {
            Ok(fresh) => {
                self.zones.insert(zone_id.to_owned(), fresh.clone()).await;
                Some(fresh)
            }
            Err(e) => {
                tracing::warn!(zone_id, error = %e, "JWKS fetch failed");
                None
            }
        }
    }

    async fn fetch(&self, zone_id: &str) -> Result<Arc<ZoneKeys>, String> {
        self.fetches.inc();
        let resp = self
            .http
            .get(format!("{}?zone_id={zone_id}", self.url))
            .send()
            .await
            .map_err(|e| format!("JWKS fetch: {}", e.without_url()))?;
        let status = resp.status();
        let keys = if status == reqwest::StatusCode::NOT_FOUND {
            // Unknown zone: remember that (negative cache).
            Vec::new()
        } else if status != reqwest::StatusCode::OK {
            return Err(format!("JWKS fetch answered {status}"));
        } else {
            if resp.content_length().is_some_and(|n| n as usize > MAX_JWKS_BYTES) {
                return Err("JWKS body too large".into());
            }
            let body = resp.bytes().await.map_err(|e| format!("JWKS body: {e}"))?;
            if body.len() > MAX_JWKS_BYTES {
                return Err("JWKS body too large".into());
            }
            let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("JWKS parse: {e}"))?;
            let keys = set.verifying_keys();
            if keys.is_empty() {
                return Err("JWKS has no usable ES256 key".into());
            }
            keys
        };
        tracing::debug!(zone_id, keys = keys.len(), "fetched zone keys");
        // A negative answer counts as the forced fetch: the next one waits out the cooldown.
        let forced_ms = if keys.is_empty() { now_ms() } else { 0 };
        Ok(Arc::new(ZoneKeys { keys, fetched_at: Instant::now(), forced_ms: AtomicI64::new(forced_ms) }))
    }
}

fn found(entry: &ZoneKeys, kid: &str) -> KeyLookup {
    entry.find(kid).map_or(KeyLookup::Unknown, |k| KeyLookup::Found(k.clone()))
}
