//! Approval holds in Postgres (`step_up_approvals`, migration 0004).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Challenge, Requirement, Subject};

/// A hold as the STS sees it.
#[derive(Debug, sqlx::FromRow)]
pub struct Hold {
    pub id: String,
    pub application_id: String,
    pub binding: String,
    pub tier: String,
    /// Effective state: `pending`, `approved`, `rejected`, `consumed` or `expired`.
    pub state: String,
    pub expires_at: DateTime<Utc>,
}

impl Hold {
    /// The 401 body for this hold.
    pub fn challenge(&self) -> Challenge {
        Challenge {
            approval_id: self.id.clone(),
            approval_type: "human_approval",
            state: self.state.clone(),
            tier: self.tier.clone(),
            binding: self.binding.clone(),
            approval_expires_at: self.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// The effective state, by precedence consumed > rejected > expired > approved > pending.
pub const STATE: &str = "CASE WHEN state IN ('consumed', 'rejected', 'expired') THEN state \
     WHEN expires_at <= now() THEN 'expired' ELSE state END";

/// The live hold for this request, created if there is none. Asking twice returns the same hold;
/// a live hold past its expiry is marked expired and replaced.
pub async fn open(db: &PgPool, s: &Subject<'_>, binding: &str, req: &Requirement, request_id: &str) -> Result<Hold, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE step_up_approvals SET state = 'expired' \
         WHERE zone_id = $1 AND application_id = $2 AND binding = $3 AND state IN ('pending', 'approved') AND expires_at <= now()",
    )
    .bind(s.zone_id)
    .bind(s.application_id)
    .bind(binding)
    .execute(&mut *tx)
    .await?;
    let expires_at = Utc::now() + req.ttl;
    sqlx::query(
        "INSERT INTO step_up_approvals (zone_id, id, application_id, principal, authority_record_id, agent_session_id, \
           delegation_edge_id, resources, scopes, policy_version_id, binding, tier, approver, expires_at, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (zone_id, application_id, binding) WHERE state IN ('pending', 'approved') DO NOTHING",
    )
    .bind(s.zone_id)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(s.application_id)
    .bind(s.principal)
    .bind(s.authority_record_id)
    .bind(s.agent_session_id)
    .bind(s.delegation_edge_id)
    .bind(s.resources)
    .bind(s.scopes)
    .bind(s.policy_version_id)
    .bind(binding)
    .bind(&req.tier)
    .bind(req.approver.as_str())
    .bind(expires_at)
    .bind(request_id)
    .execute(&mut *tx)
    .await?;
    let hold = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, application_id, binding, tier, {STATE} AS state, expires_at FROM step_up_approvals \
         WHERE zone_id = $1 AND application_id = $2 AND binding = $3 AND state IN ('pending', 'approved')"
    )))
    .bind(s.zone_id)
    .bind(s.application_id)
    .bind(binding)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(hold)
}

/// The hold `id` of the zone, if any.
pub async fn find(db: &PgPool, zone_id: &str, id: &str) -> Result<Option<Hold>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, application_id, binding, tier, {STATE} AS state, expires_at FROM step_up_approvals WHERE zone_id = $1 AND id = $2"
    )))
    .bind(zone_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Consumes an approved, unexpired hold; `false` when another request got there first (or it
/// expired in between).
pub async fn consume(db: &PgPool, zone_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE step_up_approvals SET state = 'consumed', consumed_at = now() \
         WHERE zone_id = $1 AND id = $2 AND state = 'approved' AND expires_at > now()",
    )
    .bind(zone_id)
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes holds settled or expired more than a day ago.
pub async fn sweep(db: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM step_up_approvals \
         WHERE GREATEST(expires_at, COALESCE(decided_at, expires_at), COALESCE(consumed_at, expires_at)) < now() - interval '24 hours'",
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// What a consumed hold approved, for checking an approval a presented mandate carries.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Approved {
    pub application_id: String,
    pub authority_record_id: Option<String>,
    pub agent_session_id: Option<String>,
    pub delegation_edge_id: Option<String>,
    pub resources: Vec<String>,
    pub scopes: Vec<String>,
    pub policy_version_id: Option<String>,
    pub tier: String,
}

/// The hold `id` if it was approved and consumed by a mint (the only state in which a mandate can
/// carry it).
pub async fn consumed(db: &PgPool, zone_id: &str, id: &str) -> Result<Option<Approved>, sqlx::Error> {
    sqlx::query_as(
        "SELECT application_id, authority_record_id, agent_session_id, delegation_edge_id, resources, scopes, \
                policy_version_id, tier FROM step_up_approvals WHERE zone_id = $1 AND id = $2 AND state = 'consumed'",
    )
    .bind(zone_id)
    .bind(id)
    .fetch_optional(db)
    .await
}
