//! One token per invoke: the token's `jti` is claimed in Redis with
//! `SET caracal:control:jti:<jti> 1 PX <ttl> NX` (the original's key).
//!
//! A taken key, or a Redis error, is 401 `token_replay` (fail closed). The original let the
//! marker expire after `min(CONTROL_REPLAY_TTL_SEC, exp − now)`, so a token living longer than
//! the replay TTL could be replayed once its marker was gone; here such a token is refused
//! instead (401 `unauthorized`), so a marker always outlives the token it guards.

use std::time::Duration;

use crate::control::Refusal;

/// How long the marker of a token expiring at `exp` (unix seconds) must live, seen at `now_ms`.
pub fn marker_ttl(exp: i64, now_ms: i64, max: Duration) -> Result<u64, Refusal> {
    let left_ms = exp.saturating_mul(1000).saturating_sub(now_ms);
    if left_ms <= 0 {
        return Err(Refusal::Unauthorized("token expired"));
    }
    let left_ms = left_ms as u64;
    if left_ms > max.as_millis() as u64 {
        return Err(Refusal::Unauthorized("the token outlives CONTROL_REPLAY_TTL_SEC; mint it with a shorter ttl_seconds"));
    }
    Ok(left_ms)
}

/// Claims `jti` until the token expires.
pub async fn claim(redis: &mut caracal_shared::redis_primary::Conn, jti: &str, exp: i64, max: Duration) -> Result<(), Refusal> {
    let ttl_ms = marker_ttl(exp, chrono::Utc::now().timestamp_millis(), max)?;
    let mut cmd = redis::cmd("SET");
    cmd.arg(format!("caracal:control:jti:{jti}")).arg(1).arg("PX").arg(ttl_ms).arg("NX");
    let set: redis::RedisResult<Option<String>> = redis.durability().write(redis, &cmd).await;
    match set {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Refusal::Replay("token already used")),
        Err(e) => {
            tracing::warn!(error = %e, "control replay check unavailable; refusing");
            Err(Refusal::Replay("token replay check unavailable"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_lives_exactly_as_long_as_the_token() {
        let hour = Duration::from_secs(3600);
        assert_eq!(marker_ttl(1_000, 999_500, hour), Ok(500));
        assert!(matches!(marker_ttl(1_000, 1_000_000, hour), Err(Refusal::Unauthorized(_))), "expired");
        assert!(matches!(marker_ttl(10_000, 1_000_000, hour), Err(Refusal::Unauthorized(_))), "outlives the replay window");
        assert_eq!(marker_ttl(4_600, 1_000_000, hour), Ok(3_600_000), "exactly the window is fine");
    }
}
