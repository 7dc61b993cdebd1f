//! Failed admin and bootstrap authentications (issue 16; the original's `ADMIN_AUTH_FAIL_LIMIT_PER_MIN`).
//!
//! Each failure is counted per client address per wall-clock minute in Redis
//! (`api:admin_auth_fail:{ip}:{minute}`, the original's key, shared by every instance) and in
//! `caracal_admin_auth_failures_total{surface, outcome}`. Past the limit, every authentication
//! from that address is refused 429 `rate_limited` until the minute ends — before its token is
//! looked at, a right one included, so a guesser learns nothing from the budget's answers.
//!
//! A Redis error skips the budget rather than refusing. Every other Redis use here fails closed,
//! but this one only adds to a check that still runs (the token is verified either way), and an
//! operator must be able to revoke sessions while Redis is down (the outbox publishes them later).

use std::net::IpAddr;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Where the authentication was attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// An admin route's bearer.
    Admin,
    /// `POST /v1/bootstrap`'s bootstrap token.
    Bootstrap,
}

impl Surface {
    fn label(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Bootstrap => "bootstrap",
        }
    }
}

fn key(ip: IpAddr, now: i64) -> String {
    format!("api:admin_auth_fail:{ip}:{}", now / 60)
}

/// Refuses (429, with `Retry-After`) an address past its failure budget for this minute.
pub async fn check(state: &AppState, ip: IpAddr, surface: Surface) -> Result<(), Response> {
    let now = chrono::Utc::now().timestamp();
    let mut conn = state.redis.clone();
    let failures: Option<u32> = match redis::cmd("GET").arg(key(ip, now)).query_async(&mut conn).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "admin authentication budget unavailable (Redis); checking the token without it");
            return Ok(());
        }
    };
    if failures.unwrap_or(0) < state.cfg.admin_auth_fail_limit {
        return Ok(());
    }
    state.metrics.admin_auth_failures.with_label_values(&[surface.label(), "throttled"]).inc();
    let mut resp =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many failed authentications from this address").into_response();
    let retry_after = (60 - now.rem_euclid(60)).max(1);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    Err(resp)
}

/// Counts a failed authentication from `ip`.
pub async fn record(state: &AppState, ip: IpAddr, surface: Surface) {
    state.metrics.admin_auth_failures.with_label_values(&[surface.label(), "refused"]).inc();
    let key = key(ip, chrono::Utc::now().timestamp());
    let mut conn = state.redis.clone();
    // One round trip; the expiry outlives the minute so a late INCR never leaves a key behind.
    let counted: redis::RedisResult<()> =
        redis::pipe().cmd("INCR").arg(&key).ignore().cmd("EXPIRE").arg(&key).arg(90).ignore().query_async(&mut conn).await;
    if let Err(e) = counted {
        tracing::warn!(error = %e, "failed admin authentication not counted (Redis)");
    }
}
