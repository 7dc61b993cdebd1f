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
//! * A fetch for a zone without known keys (never seen, or remembered as unknown) spends a token
//!   of one global budget (`JWKS_COLD_FETCH_BURST` at once, refilled at `JWKS_COLD_FETCH_RATE` per
//!   second). Zone ids come from unverified tokens, so the negative cache alone let random ids
//!   cost one STS fetch (and one query) each; beyond the budget such a request is refused
//!   without a fetch: 503 `sts_unavailable` "signing keys unavailable" (`keys_unavailable`), the
//!   answer a client retries, not 401, which would call a genuine mandate of a new zone forged.
//!   Zones with known keys are never held back by the budget.
//! * Fetches are single-flight: concurrent lookups of one zone share one request (and one token).
//! * When the JWKS endpoint is down, keys already known keep verifying (a stale key set is better
//!   than refusing every valid mandate); a zone never fetched answers "unavailable" (503).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// A lock-free token bucket (GCRA): `burst` takes at once, one more every `1 / per_second`.
pub struct Budget {
    /// Theoretical arrival time of the next take, µs since `origin`.
    tat_us: AtomicU64,
    interval_us: u64,
    tolerance_us: u64,
    origin: Instant,
}

impl Budget {
    /// A full bucket.
    pub fn new(burst: u32, per_second: u32) -> Self {
        let interval_us = 1_000_000 / u64::from(per_second.max(1));
        Self { tat_us: AtomicU64::new(0), interval_us, tolerance_us: interval_us * u64::from(burst.max(1)), origin: Instant::now() }
    }

    /// Takes a token if one is left.
    pub fn take(&self) -> bool {
        let now = self.origin.elapsed().as_micros() as u64;
        let mut tat = self.tat_us.load(Ordering::Acquire);
        loop {
            let next = tat.max(now) + self.interval_us;
            if next > now + self.tolerance_us {
                return false;
            }
            match self.tat_us.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Why a zone's keys could not be fetched.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// The zone has no known keys and the cold-fetch budget is spent.
    #[error("cold-fetch budget spent")]
    OverBudget,
    #[error("{0}")]
    Failed(String),
}

/// JWKS cache settings.
pub struct JwksSettings {
    pub ttl: Duration,
    pub cooldown: Duration,
    /// Fetches for zones without known keys: at once, and per second after that.
    pub cold_burst: u32,
    pub cold_per_second: u32,
}

/// The cache's counters.
pub struct JwksMetrics {
    /// Fetches made.
    pub fetches: prometheus::IntCounter,
    /// Lookups refused without a fetch because the cold-fetch budget was spent.
    pub cold_refused: prometheus::IntCounter,
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
    cold: Budget,
    metrics: JwksMetrics,
}

impl JwksCache {
    /// A cache fetching from `sts_url` with `http`.
    pub fn new(http: reqwest::Client, sts_url: &str, settings: &JwksSettings, metrics: JwksMetrics) -> Self {
        Self {
            http,
            url: format!("{sts_url}/.well-known/jwks.json"),
            zones: moka::future::Cache::builder().max_capacity(100_000).build(),
            inflight: moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(1)).build(),
            ttl: settings.ttl,
            cooldown: settings.cooldown,
            cold: Budget::new(settings.cold_burst, settings.cold_per_second),
            metrics,
        }
    }

    /// The verifying key `kid` of `zone_id` (already checked against the id pattern, so it is
    /// safe in a query string).
    pub async fn key(&self, zone_id: &str, kid: &str) -> KeyLookup {
        let Some(entry) = self.zones.get(zone_id).await else {
            return match self.refresh(zone_id, true).await {
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
        // A zone remembered as unknown is as cold as one never seen.
        match self.refresh(zone_id, entry.keys.is_empty()).await {
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

    /// Fetches (single-flight) and stores the zone's keys; `None` if the fetch failed or, for a
    /// `cold` zone, the budget is spent.
    async fn refresh(&self, zone_id: &str, cold: bool) -> Option<Arc<ZoneKeys>> {
        let result = self.inflight.try_get_with_by_ref(zone_id, self.fetch(zone_id, cold)).await;
        // Callers that joined this fetch have their answer; the next refresh must fetch anew.
        self.inflight.invalidate(zone_id).await;
        match result {
            Ok(fresh) => {
                self.zones.insert(zone_id.to_owned(), fresh.clone()).await;
                Some(fresh)
            }
            // Counted, not logged: a flood of random zones would otherwise flood the log.
            Err(e) if matches!(*e, FetchError::OverBudget) => None,
            Err(e) => {
                tracing::warn!(zone_id, error = %e, "JWKS fetch failed");
                None
            }
        }
    }

    async fn fetch(&self, zone_id: &str, cold: bool) -> Result<Arc<ZoneKeys>, FetchError> {
        if cold && !self.cold.take() {
            self.metrics.cold_refused.inc();
            return Err(FetchError::OverBudget);
        }
        self.metrics.fetches.inc();
        self.fetch_keys(zone_id).await.map_err(FetchError::Failed)
    }

    async fn fetch_keys(&self, zone_id: &str) -> Result<Arc<ZoneKeys>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_refills_at_the_rate() {
        let b = Budget::new(3, 20);
        assert!((0..3).all(|_| b.take()), "the burst is available at once");
        assert!(!b.take(), "then the bucket is empty");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.take(), "one token every 50 ms");
        assert!(!b.take());
    }

    #[test]
    fn the_budget_never_exceeds_its_burst_after_a_long_pause() {
        let b = Budget::new(2, 1000);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!((0..10).filter(|_| b.take()).count(), 2, "idle time does not bank more than the burst");
    }
}
