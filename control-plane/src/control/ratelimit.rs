//! Rate limits of the Control endpoint.
//!
//! * Per client address, in Redis (`api:control_invoke_ip:{ip}:{minute}`, the original's key): a
//!   counter per wall-clock minute shared by every control-plane instance. It runs before the
//!   token is looked at, so it bounds what an unauthenticated caller can make us spend. A Redis
//!   error counts as limited (fail closed).
//! * Per subject, in memory: a token bucket of `CONTROL_RATE_CAPACITY` refilled over
//!   `CONTROL_RATE_WINDOW_SEC`, after authentication.
//!
//! Both answer 429 `rate_limited` with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::control::Refusal;

/// Most subjects tracked at once; a subject is only tracked after it authenticated.
pub const MAX_SUBJECTS: usize = 10_000;

/// Counts one invoke from `ip` in the current minute; refuses past `limit`.
pub async fn per_address(redis: &mut caracal_shared::redis_primary::Conn, ip: IpAddr, limit: u32) -> Result<(), Refusal> {
    let now = chrono::Utc::now().timestamp();
    let key = format!("api:control_invoke_ip:{ip}:{}", now / 60);
    let next_minute = (60 - now.rem_euclid(60)) as u64;
    // One round trip; the expiry outlives the minute so a late INCR never leaves a key behind.
    let counted: redis::RedisResult<(u64,)> =
        redis::pipe().cmd("INCR").arg(&key).cmd("EXPIRE").arg(&key).arg(90).ignore().query_async(redis).await;
    match counted {
        Ok((n,)) if n <= u64::from(limit) => Ok(()),
        Ok(_) => Err(Refusal::RateLimited { retry_after_secs: next_minute }),
        Err(e) => {
            tracing::warn!(error = %e, "control per-address limit unavailable; refusing");
            Err(Refusal::RateLimited { retry_after_secs: 1 })
        }
    }
}

/// Token buckets per subject.
pub struct Buckets {
    capacity: f64,
    window: Duration,
    max_keys: usize,
    inner: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    /// `capacity` invokes, refilled evenly over `window`; at most `max_keys` subjects tracked.
    pub fn new(capacity: u32, window: Duration, max_keys: usize) -> Self {
        Self { capacity: f64::from(capacity.max(1)), window: window.max(Duration::from_millis(1)), max_keys, inner: Mutex::default() }
    }

    fn per_sec(&self) -> f64 {
        self.capacity / self.window.as_secs_f64()
    }

    /// Takes one token for `key` at `now`, or answers how many seconds until one is back.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Refusal> {
        let mut map = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(key) && map.len() >= self.max_keys {
            // A bucket untouched for a whole window is full again: forgetting it loses nothing.
            map.retain(|_, b| now.saturating_duration_since(b.at) < self.window);
            if map.len() >= self.max_keys {
                // Every tracked subject is active: refuse rather than reset someone's budget.
                return Err(Refusal::RateLimited { retry_after_secs: self.window.as_secs().max(1) });
            }
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket { tokens: self.capacity, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec()).min(self.capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / self.per_sec()).ceil() as u64;
            Err(Refusal::RateLimited { retry_after_secs: wait.max(1) })
        }
    }

    /// Subjects tracked (for tests).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no subject is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(r: Result<(), Refusal>) -> u64 {
        match r {
            Err(Refusal::RateLimited { retry_after_secs }) => retry_after_secs,
            other => panic!("expected rate_limited, got {other:?}"),
        }
    }

    #[test]
    fn bucket_allows_capacity_then_refills_evenly() {
        let b = Buckets::new(3, Duration::from_secs(60), 10);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(b.take("z/app", t0).is_ok(), "take {i} is within capacity");
        }
        assert_eq!(retry(b.take("z/app", t0)), 20, "one token every 20 s");
        assert!(b.take("z/other", t0).is_ok(), "each subject has its own bucket");
        assert!(b.take("z/app", t0 + Duration::from_secs(20)).is_ok(), "refilled one token");
        assert!(b.take("z/app", t0 + Duration::from_secs(21)).is_err());
        for _ in 0..3 {
            assert!(b.take("z/app", t0 + Duration::from_secs(600)).is_ok(), "never more than capacity after idling");
        }
        assert!(b.take("z/app", t0 + Duration::from_secs(600)).is_err());
    }

    #[test]
    fn map_is_bounded_and_forgets_only_idle_subjects() {
        let b = Buckets::new(1, Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert!(b.take("a", t0).is_ok());
        assert!(b.take("b", t0).is_ok());
        assert!(b.take("c", t0).is_err(), "full of active subjects: a new one waits");
        assert_eq!(b.len(), 2);
        assert!(b.take("c", t0 + Duration::from_secs(10)).is_ok(), "idle subjects are forgotten to make room");
        assert!(b.len() <= 2);
        assert!(b.take("a", t0 + Duration::from_secs(10)).is_ok(), "a forgotten subject starts full, as it would have been");
    }
}
