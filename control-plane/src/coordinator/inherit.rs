//! `parent_authority: inherit`: a child session receives the authority its parent received.
//!
//! The parent's live inbound edge (issued to the child's application) is mirrored onto
//! parent → child: same scopes, resources, constraints and hop allowance, expiring no later than
//! the edge or the child, derived from it (`parent_edge_id`), so revoking the parent's edge or
//! ending the parent takes the child's with it. A mirrored edge is marked `inherited`: it hands the
//! same authority one session further down the caller's own tree, so it does not count as a hop
//! (a narrowing edge allows one hop, and a child of the narrowed session still uses it).

use chrono::Utc;

use crate::coordinator::agents::AgentSession;
use crate::coordinator::delegations::{EDGE_COLUMNS, Edge};
use crate::error::{ApiError, ApiResult};

type Tx<'c> = sqlx::Transaction<'c, sqlx::Postgres>;

/// The edge a child of `parent` inherits: `asked` (which must be one of the parent's live inbound
/// edges for `app`), else the only one; none when the parent holds none.
pub async fn parent_edge(tx: &mut Tx<'_>, zone_id: &str, parent: &AgentSession, app: &str, asked: Option<&str>) -> ApiResult<Option<Edge>> {
    if let Some(asked) = asked {
        let edge: Option<Edge> = sqlx::query_as(sql!(
            "SELECT {EDGE_COLUMNS} FROM delegation_edges WHERE zone_id = $1 AND id = $2 AND target_session_id = $3 \
             AND receiver_application_id = $4 AND status = 'active' AND expires_at > now()"
        ))
        .bind(zone_id)
        .bind(asked)
        .bind(&parent.id)
        .bind(app)
        .fetch_optional(&mut **tx)
        .await?;
        return edge.map(Some).ok_or_else(|| {
            ApiError::conflict("inherit_parent_edge_not_active", "the named edge is not a live inbound edge of the parent")
        });
    }
    let live: Vec<Edge> = sqlx::query_as(sql!(
        "SELECT {EDGE_COLUMNS} FROM delegation_edges WHERE zone_id = $1 AND target_session_id = $2 AND receiver_application_id = $3 \
         AND status = 'active' AND expires_at > now() ORDER BY created_at, id LIMIT 2"
    ))
    .bind(zone_id)
    .bind(&parent.id)
    .bind(app)
    .fetch_all(&mut **tx)
    .await?;
    match live.len() {
        0 => Ok(None),
        1 => Ok(live.into_iter().next()),
        _ => Err(ApiError::conflict(
            "inherit_parent_edge_ambiguous",
            "the parent holds several live inbound edges: name one in inherit_parent_edge_id",
        )),
    }
}

/// Inserts the mirror of `from` onto `child`'s parent → `child`, with id `edge_id`.
pub async fn mirror(tx: &mut Tx<'_>, zone_id: &str, from: &Edge, edge_id: &str, child: &AgentSession) -> ApiResult<()> {
    let parent = child.parent_id.as_deref().ok_or_else(|| ApiError::internal("an inherited edge needs a parent session"))?;
    let expires_at = from.expires_at.min(child.expires_at);
    if expires_at <= Utc::now() {
        return Err(ApiError::conflict("inherit_parent_edge_not_active", "the parent's edge expires now"));
    }
    sqlx::query(
        "INSERT INTO delegation_edges (zone_id, id, source_session_id, target_session_id, parent_edge_id, issuer_application_id, \
           receiver_application_id, scopes, resources, max_hops, hop, constraints, expires_at, inherited) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, true)",
    )
    .bind(zone_id)
    .bind(edge_id)
    .bind(parent)
    .bind(&child.id)
    .bind(&from.id)
    .bind(&from.receiver_application_id)
    .bind(&child.application_id)
    .bind(&from.scopes)
    .bind(&from.resources)
    .bind(from.max_hops)
    .bind(from.hop)
    .bind(&from.constraints)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
