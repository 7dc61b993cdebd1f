//! Replay: every gateway mandate is accepted once.
//!
//! `SET seen:jti:<jti> <request id> NX PX <ms until exp>`: created ⇒ first use; exists ⇒ replay
//! (401 `invalid_token`, `jti_replay`). Any Redis failure denies (503 `replay_check_unavailable`,
//! `jti_unavailable`) unless `JTI_FAIL_OPEN` is set, which production refuses. The key is the
//! mandate's `jti` (its issuer is fixed by the claim checks), never a hash of the token bytes: ES256
//! signatures are malleable, so a re-encoded signature would otherwise pass as a new token.

use std::time::Duration;

use caracal_shared::redis_primary::{Conn, Primary};
use redis::aio::ConnectionManagerConfig;
use tokio::sync::OnceCell;

use crate::deny::Denial;
use crate::phases::auth::VerifiedMandate;

/// A mandate whose `jti` was unused until this request.
pub struct FreshJti<'a>(pub VerifiedMandate<'a>);

/// The JTI store.
pub struct JtiStore {
    primary: Primary,
    conn: OnceCell<Conn>,
    fail_open: bool,
    metrics_seconds: prometheus::Histogram,
}

impl JtiStore {
    /// A store on `primary`; connects on first use, on the runtime that serves requests.
    pub fn new(primary: Primary, fail_open: bool, metrics_seconds: prometheus::Histogram) -> Self {
        Self { primary, conn: OnceCell::new(), fail_open, metrics_seconds }
    }

    /// A connection, created on first use (a failed attempt is retried by the next request).
    pub async fn connection(&self) -> redis::RedisResult<Conn> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(1);
                self.primary.connect(cfg).await
            })
            .await?;
        Ok(conn.clone())
    }

    /// Marks the mandate's `jti` used; refuses a second use.
    pub async fn consume<'a>(&self, m: VerifiedMandate<'a>, request_id: &str, now_ms: i64) -> Result<FreshJti<'a>, Denial> {
        let ttl_ms = (m.claims.exp * 1000 - now_ms).max(1);
        let timer = self.metrics_seconds.start_timer();
        let result = async {
            let mut conn = self.connection().await?;
            let mut set = redis::cmd("SET");
            set.arg(format!("seen:jti:{}", m.claims.jti)).arg(request_id).arg("NX").arg("PX").arg(ttl_ms);
            // With REDIS_MIN_REPLICAS the marker must reach the replicas before the request
            // passes: a failover would otherwise forget it and accept the mandate again.
            conn.durability().write::<Option<String>, _>(&mut conn, &set).await
        }
        .await;
        timer.observe_duration();
        match result {
            Ok(Some(_)) => Ok(FreshJti(m)),
            Ok(None) => {
                tracing::warn!(request_id, jti = %m.claims.jti, client_id = %m.claims.client_id, "mandate replay refused");
                Err(Denial::Replay)
            }
            Err(e) if self.fail_open => {
                tracing::warn!(request_id, error = %e, "JTI store failed; JTI_FAIL_OPEN allows the request (dev only)");
                Ok(FreshJti(m))
            }
            Err(e) => {
                tracing::error!(request_id, error = %e, "JTI store failed; denying");
                Err(Denial::ReplayCheckUnavailable)
            }
        }
    }
}
