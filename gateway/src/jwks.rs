//! Per-zone cache of the STS's published signing keys.
//!
//! Keys of a zone are fetched from `{STS_URL}/.well-known/jwks.json?zone_id=Z` once per TTL (moka
//! gives single-flight: concurrent misses share one fetch). An unknown `kid` triggers one refetch per
//! zone per cooldown, so a rotated key is picked up at once while a stream of forged `kid`s cannot
//! turn into a fetch per request. An unknown zone (404) is cached as an empty key set for the same
//! cooldown: the zone id comes from an unverified token, so without this any caller could make the
//! gateway fetch once per request.

use std::sync::Arc;
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

struct ZoneKeys {
    keys: Vec<VerifyingKey>,
    fetched_at: Instant,
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
    cooldown: Duration,
}

impl JwksCache {
    /// A cache fetching from `sts_url` with `http`.
    pub fn new(http: reqwest::Client, sts_url: &str, ttl: Duration, cooldown: Duration) -> Self {
        let zones = moka::future::Cache::builder().max_capacity(100_000).time_to_live(ttl).build();
        Self { http, url: format!("{sts_url}/.well-known/jwks.json"), zones, cooldown }
    }

    /// The verifying key `kid` of `zone_id` (already checked against the id pattern, so it is
    /// safe in a query string).
    pub async fn key(&self, zone_id: &str, kid: &str) -> KeyLookup {
        let entry = match self.zones.try_get_with_by_ref(zone_id, self.fetch(zone_id)).await {
            Ok(e) => e,
            Err(_) => return KeyLookup::Unavailable,
        };
        if let Some(k) = entry.find(kid) {
            return KeyLookup::Found(k.clone());
        }
        if entry.fetched_at.elapsed() < self.cooldown {
            return KeyLookup::Unknown;
        }
        // A key we have not seen: the zone may have rotated. Refetch once, keeping the old keys if
        // the fetch fails.
        match self.fetch(zone_id).await {
            Ok(fresh) => {
                let found = fresh.find(kid).cloned();
                self.zones.insert(zone_id.to_owned(), fresh).await;
                found.map_or(KeyLookup::Unknown, KeyLookup::Found)
            }
            Err(e) => {
                tracing::warn!(zone_id, error = %e, "JWKS refetch failed; keeping cached keys");
                KeyLookup::Unknown
            }
        }
    }

    async fn fetch(&self, zone_id: &str) -> Result<Arc<ZoneKeys>, String> {
        let resp = self.http.get(format!("{}?zone_id={zone_id}", self.url)).send().await.map_err(|e| format!("JWKS fetch: {e}"))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            // Unknown zone: remember that for the cooldown (negative cache).
            return Ok(Arc::new(ZoneKeys { keys: Vec::new(), fetched_at: Instant::now() }));
        }
        if status != reqwest::StatusCode::OK {
            return Err(format!("JWKS fetch answered {status}"));
        }
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
        tracing::debug!(zone_id, keys = keys.len(), "fetched zone keys");
        Ok(Arc::new(ZoneKeys { keys, fetched_at: Instant::now() }))
    }
}
