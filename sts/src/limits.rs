//! Rate limits and the lockout of clients that keep presenting bad credentials (seed 003).
//!
//! * Mints per `(zone_id, client_id)`: a fixed one-minute window in Redis, counted only once the
//!   client's secret matched; over `STS_MINT_RATE_LIMIT_PER_MIN` answers 429 with `Retry-After`.
//!   Counting before authentication would let anyone who knows a client id exhaust its budget.
//!   The gateway's per-request exchange is not counted again: it spends a mandate that a counted
//!   mint produced (the original counted a governed request twice).
//! * Bad client credentials per `(zone_id, application_id)`: more than `STS_AUTH_FAILURE_LIMIT`
//!   in a minute locks the client out for `STS_AUTH_LOCKOUT`. A locked client's *bad* secrets are
//!   answered 429 without further counting; its right secret still authenticates (see
//!   `exchange::authenticate` for why).
//! * Failed step-up attempts per `(zone_id, client_id)` (seed 003): 5 within 2 minutes (invalid,
//!   expired or rejected approvals) cool the client's step-up off for 5 minutes — in Redis, so the
//!   throttle holds across restarts and STS instances (the original's lived in one process).
//! * Redis unavailable ⇒ 503: nothing is minted without the limiter (fail closed).

use std::time::Duration;

use crate::error::StsError;

/// Failed step-up attempts that trigger the cooldown, within [`STEP_UP_WINDOW`].
pub const STEP_UP_FAILURES: u64 = 5;
/// The window the failures are counted in.
pub const STEP_UP_WINDOW: Duration = Duration::from_secs(120);
/// How long a throttled client's step-up stays refused.
pub const STEP_UP_COOLDOWN: Duration = Duration::from_secs(300);

/// The limiter.
pub struct Limits {
    redis: caracal_shared::redis_primary::Conn,
    mints_per_minute: u64,
    auth_failures: u64,
    lockout: Duration,
}

fn window() -> (i64, u64) {
    let now = chrono::Utc::now().timestamp_millis();
    (now / 60_000, (60_000 - now % 60_000) as u64)
}

impl Limits {
    /// A limiter on `redis`.
    pub fn new(redis: caracal_shared::redis_primary::Conn, mints_per_minute: u64, auth_failures: u64, lockout: Duration) -> Self {
        Self { redis, mints_per_minute, auth_failures, lockout }
    }

    fn client_key(zone_id: &str, client_id: &str) -> String {
        // Hashed: client ids come from the request before authentication.
        format!("{zone_id}:{}", &caracal_shared::sig::sha256_hex(client_id.as_bytes())[..32])
    }

    /// Counts a mint of an authenticated client (one round trip); 429 past the limit.
    pub async fn admit(&self, zone_id: &str, client_id: &str) -> Result<(), StsError> {
        let (minute, left_ms) = window();
        let counter = format!("caracal:sts:rl:{}:{minute}", Self::client_key(zone_id, client_id));
        let (n,): (u64,) = redis::pipe()
            .cmd("INCR")
            .arg(&counter)
            .cmd("PEXPIRE")
            .arg(&counter)
            .arg(120_000)
            .arg("NX")
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        if n > self.mints_per_minute {
            return Err(StsError::RateLimited { retry_after_secs: left_ms.div_ceil(1000).max(1) });
        }
        Ok(())
    }

    /// Records a bad credential (one round trip). `Err(Locked)` while the client is locked out or
    /// once this failure crosses the threshold; `Ok` means "answer `invalid_client`".
    pub async fn record_failure(&self, zone_id: &str, application_id: &str) -> Result<(), StsError> {
        let (minute, _) = window();
        let client = Self::client_key(zone_id, application_id);
        // `{client}` is a hash tag: a client's keys share one Redis Cluster slot, so one pipeline may touch them.
        let (key, lock) = (format!("caracal:sts:authfail:{{{client}}}:{minute}"), format!("caracal:sts:lock:{{{client}}}"));
        let (locked_ms, n): (i64, u64) = redis::pipe()
            .cmd("PTTL")
            .arg(&lock)
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(120_000)
            .arg("NX")
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        if locked_ms > 0 {
            return Err(StsError::Locked { retry_after_secs: (locked_ms as u64).div_ceil(1000) });
        }
        if n > self.auth_failures {
            let _: () = redis::cmd("SET")
                .arg(&lock)
                .arg(1)
                .arg("PX")
                .arg(self.lockout.as_millis() as u64)
                .query_async(&mut self.redis.clone())
                .await?;
            tracing::warn!(zone_id, failures = n, "client locked out after repeated bad credentials");
            return Err(StsError::Locked { retry_after_secs: self.lockout.as_secs().max(1) });
        }
        Ok(())
    }

    /// Refuses step-up for a client in its cooldown.
    pub async fn step_up_admit(&self, zone_id: &str, client_id: &str) -> Result<(), StsError> {
        let lock = format!("caracal:sts:stepup:lock:{{{}}}", Self::client_key(zone_id, client_id));
        let ms: i64 = redis::cmd("PTTL").arg(&lock).query_async(&mut self.redis.clone()).await?;
        if ms > 0 {
            return Err(StsError::StepUpThrottled { retry_after_secs: (ms as u64).div_ceil(1000) });
        }
        Ok(())
    }

    /// Records a failed step-up attempt; the one that reaches the threshold starts the cooldown.
    /// The window opens at the first failure and is not extended by later ones.
    pub async fn step_up_failure(&self, zone_id: &str, client_id: &str) -> Result<(), StsError> {
        let client = Self::client_key(zone_id, client_id);
        let key = format!("caracal:sts:stepup:fail:{{{client}}}");
        let (n,): (u64,) = redis::pipe()
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(STEP_UP_WINDOW.as_millis() as u64)
            .arg("NX")
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        if n >= STEP_UP_FAILURES {
            let _: () = redis::pipe()
                .cmd("SET")
                .arg(format!("caracal:sts:stepup:lock:{{{client}}}"))
                .arg(1)
                .arg("PX")
                .arg(STEP_UP_COOLDOWN.as_millis() as u64)
                .ignore()
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .query_async(&mut self.redis.clone())
                .await?;
            tracing::warn!(zone_id, failures = n, "step-up throttled after repeated failed approvals");
        }
        Ok(())
    }
}
