//! Taking authority away, transitively, in one transaction.
//!
//! Root session revoked ⇒ the agent sessions derived from it terminate; an agent session
//! terminates ⇒ its child sessions terminate and every edge it issued or received is revoked; an
//! edge is revoked ⇒ every edge derived from it is revoked. Each terminated session and revoked edge
//! is recorded in `revocations` and announced on `caracal.sessions.revoke` (outbox), and the zone's
//! graph epoch is bumped and announced on `caracal.delegations.invalidate`.
//!
//! Every change to a zone's graph — a cascade, creating an agent session or an edge — first takes
//! the zone's graph lock ([`lock_graph`]), before any other lock of its transaction: a check made
//! under the lock (the parent edge is active, the root session is live) stays true until commit,
//! and a cascade sees every session and edge committed before it, so nothing is created under
//! authority that is being taken away.

use caracal_shared::streams;
use sqlx::{Postgres, Transaction};

use crate::error::ApiResult;
use crate::outbox;

/// What a cascade took away.
#[derive(Debug, Default)]
pub struct Revoked {
    pub sessions: Vec<String>,
    pub edges: Vec<String>,
}

impl Revoked {
    /// Every anchor, for the in-memory views.
    pub fn anchors(&self) -> Vec<&str> {
        self.sessions.iter().chain(&self.edges).map(String::as_str).collect()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.edges.is_empty()
    }
}

/// Takes the zone's graph lock for the rest of `tx` (re-entrant). Call it before anything else in
/// the transaction locks a row, so that every graph change takes its locks in one order.
pub async fn lock_graph(tx: &mut Transaction<'_, Postgres>, zone_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('caracal.delegation_graph:' || $1))").bind(zone_id).execute(&mut **tx).await?;
    Ok(())
}

/// Terminates the agent sessions derived from the given root sessions (authority records).
pub async fn for_root_sessions(tx: &mut Transaction<'_, Postgres>, zone_id: &str, records: &[String], reason: &str) -> ApiResult<Revoked> {
    lock_graph(tx, zone_id).await?;
    let sessions: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM agent_sessions WHERE zone_id = $1 AND subject_authority_record_id = ANY($2) AND status <> 'terminated'",
    )
    .bind(zone_id)
    .bind(records)
    .fetch_all(&mut **tx)
    .await?;
    let ids: Vec<String> = sessions.into_iter().map(|(id,)| id).collect();
    terminate_sessions(tx, zone_id, &ids, reason).await
}

/// Terminates agent sessions and their descendants, and revokes every edge touching them.
pub async fn terminate_sessions(tx: &mut Transaction<'_, Postgres>, zone_id: &str, ids: &[String], reason: &str) -> ApiResult<Revoked> {
    if ids.is_empty() {
        return Ok(Revoked::default());
    }
    lock_graph(tx, zone_id).await?;
    let sessions: Vec<(String,)> = sqlx::query_as(
        "WITH RECURSIVE tree AS ( \
             SELECT id FROM agent_sessions WHERE zone_id = $1 AND id = ANY($2) \
             UNION SELECT s.id FROM agent_sessions s JOIN tree t ON s.parent_id = t.id WHERE s.zone_id = $1) \
         UPDATE agent_sessions SET status = 'terminated', terminated_at = now(), termination_reason = $3, updated_at = now() \
         WHERE zone_id = $1 AND id IN (SELECT id FROM tree) AND status <> 'terminated' RETURNING id",
    )
    .bind(zone_id)
    .bind(ids)
    .bind(reason)
    .fetch_all(&mut **tx)
    .await?;
    let sessions: Vec<String> = sessions.into_iter().map(|(id,)| id).collect();
    let touching: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM delegation_edges WHERE zone_id = $1 AND status = 'active' \
         AND (source_session_id = ANY($2) OR target_session_id = ANY($2))",
    )
    .bind(zone_id)
    .bind(&sessions)
    .fetch_all(&mut **tx)
    .await?;
    let touching: Vec<String> = touching.into_iter().map(|(id,)| id).collect();
    let edges = revoke_edges(tx, zone_id, &touching, reason).await?;
    let revoked = Revoked { sessions, edges };
    record(tx, zone_id, &revoked, reason).await?;
    Ok(revoked)
}

/// Revokes edges and every edge derived from them; returns all revoked ids. (Recorded by the
/// caller through [`record`], or by [`terminate_sessions`].)
pub async fn revoke_edges(tx: &mut Transaction<'_, Postgres>, zone_id: &str, ids: &[String], reason: &str) -> ApiResult<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    lock_graph(tx, zone_id).await?;
    let edges: Vec<(String,)> = sqlx::query_as(
        "WITH RECURSIVE down AS ( \
             SELECT id FROM delegation_edges WHERE zone_id = $1 AND id = ANY($2) \
             UNION SELECT e.id FROM delegation_edges e JOIN down d ON e.parent_edge_id = d.id WHERE e.zone_id = $1) \
         UPDATE delegation_edges SET status = 'revoked', revoked_at = now(), revoked_reason = $3 \
         WHERE zone_id = $1 AND id IN (SELECT id FROM down) AND status = 'active' RETURNING id",
    )
    .bind(zone_id)
    .bind(ids)
    .bind(reason)
    .fetch_all(&mut **tx)
    .await?;
    Ok(edges.into_iter().map(|(id,)| id).collect())
}

/// Records revoked anchors, enqueues their announcements and bumps the graph epoch.
pub async fn record(tx: &mut Transaction<'_, Postgres>, zone_id: &str, revoked: &Revoked, reason: &str) -> ApiResult<()> {
    if revoked.is_empty() {
        return Ok(());
    }
    let revoked_at = chrono::Utc::now();
    // Mandates live at most an hour; a day of memory is ample.
    let expires = (revoked_at + chrono::Duration::hours(24)).to_rfc3339();
    let at = revoked_at.to_rfc3339();
    for (kind, ids) in [("agent_session_id", &revoked.sessions), ("delegation_edge_id", &revoked.edges)] {
        for id in ids {
            sqlx::query(
                "INSERT INTO revocations (zone_id, anchor_kind, anchor_id, reason, expires_at) \
                 VALUES ($1, $2, $3, $4, now() + interval '24 hours') ON CONFLICT (zone_id, anchor_kind, anchor_id) DO NOTHING",
            )
            .bind(zone_id)
            .bind(kind)
            .bind(id)
            .bind(reason)
            .execute(&mut **tx)
            .await?;
            let fields = [
                ("zone_id", zone_id),
                (kind, id.as_str()),
                ("reason", reason),
                ("revoked_at", at.as_str()),
                ("expires_at", expires.as_str()),
            ];
            outbox::enqueue(tx, Some(zone_id), streams::SESSIONS_REVOKE, &fields).await?;
        }
    }
    let (epoch,): (i64,) = sqlx::query_as(
        "INSERT INTO delegation_graph_epochs (zone_id, epoch) VALUES ($1, 1) \
         ON CONFLICT (zone_id) DO UPDATE SET epoch = delegation_graph_epochs.epoch + 1 RETURNING epoch",
    )
    .bind(zone_id)
    .fetch_one(&mut **tx)
    .await?;
    let epoch = epoch.to_string();
    outbox::enqueue(tx, Some(zone_id), streams::DELEGATIONS_INVALIDATE, &[("zone_id", zone_id), ("epoch", &epoch), ("reason", reason)])
        .await?;
    Ok(())
}
