//! Delegation edges: `POST /zones/{z}/delegations`, read, `PATCH …/{id}/revoke` (cascading),
//! `GET …/inbound/{sid}`.
//!
//! An edge only narrows: its scopes are a subset of what it derives from (the parent edge's; for a
//! root edge the declared scopes of the resources it names, or — naming none — scopes some live
//! resource of the zone declares), it expires no later than its source session and its parent
//! edge, its `max_ttl_seconds` is at most its parent's (inherited when not given), and it may not
//! travel more hops than its root allowed (default 1, cap 10).
//!
//! The checks and the insert run in one transaction under the zone's graph lock
//! ([`cascade::lock_graph`]), so an edge is never created under a parent edge or session that a
//! concurrent revocation is taking away.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::sessions::announce_anchors;
use crate::coordinator::agents::fetch as fetch_session;
use crate::coordinator::auth::Caller;
use crate::coordinator::cascade::{self, Revoked};
use crate::error::{ApiError, ApiResult};
use crate::extract::AppJson;
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/zones/{zone_id}/delegations", post(create))
        .route("/zones/{zone_id}/delegations/{id}", get(read))
        .route("/zones/{zone_id}/delegations/{id}/revoke", patch(revoke).post(revoke))
        .route("/zones/{zone_id}/delegations/inbound/{sid}", get(inbound))
}

/// Hard cap on hops.
pub const MAX_HOPS: i32 = 10;

/// A delegation edge.
#[derive(Serialize, sqlx::FromRow)]
pub struct Edge {
    pub id: String,
    pub zone_id: String,
    pub source_session_id: String,
    pub target_session_id: String,
    pub parent_edge_id: Option<String>,
    pub issuer_application_id: String,
    pub receiver_application_id: String,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub max_hops: i32,
    pub hop: i32,
    pub constraints: sqlx::types::Json<Constraints>,
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, zone_id, source_session_id, target_session_id, parent_edge_id, issuer_application_id, receiver_application_id, \
     scopes, resources, max_hops, hop, constraints, status, expires_at, created_at, revoked_at";

/// What else limits an edge (unknown keys are refused).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Longest lifetime of a mandate minted through this edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    source_session_id: String,
    target_session_id: String,
    scopes: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    ttl_seconds: Option<i64>,
    max_hops: Option<i32>,
    parent_edge_id: Option<String>,
    #[serde(default)]
    constraints: Option<serde_json::Value>,
}

async fn fetch<'e>(db: impl sqlx::PgExecutor<'e>, zone_id: &str, id: &str) -> ApiResult<Edge> {
    let row: Option<Edge> = sqlx::query_as(sql!("SELECT {COLUMNS} FROM delegation_edges WHERE zone_id = $1 AND id = $2"))
        .bind(zone_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.ok_or_else(|| ApiError::not_found("delegation_not_found"))
}

fn forbidden(code: &'static str, why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, why)
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(zone_id): Path<String>,
    AppJson(b): AppJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let Some(app) = caller.application().map(str::to_owned) else {
        return Err(forbidden("runtime_required", "delegations are issued by the source session's runtime"));
    };
    let now = Utc::now();
    let scope_ok = |s: &String| (1..=200).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || b":_./-".contains(&c));
    if b.scopes.is_empty() || b.scopes.len() > 64 || !b.scopes.iter().all(scope_ok) || b.resources.len() > 64 {
        return Err(ApiError::bad_request("invalid_delegation", "scopes: 1..64 valid scopes; resources: at most 64"));
    }
    let mut constraints: Constraints = match b.constraints {
        None => Constraints::default(),
        Some(v) => serde_json::from_value(v).map_err(|e| ApiError::bad_request("invalid_delegation", format!("constraints: {e}")))?,
    };
    if constraints.max_ttl_seconds.is_some_and(|t| !(1..=3600).contains(&t)) {
        return Err(ApiError::bad_request("invalid_delegation", "constraints.max_ttl_seconds must be 1..3600"));
    }
    let requested_hops = b.max_hops.unwrap_or(1);
    if !(1..=MAX_HOPS).contains(&requested_hops) {
        return Err(ApiError::bad_request("invalid_delegation", format!("max_hops must be 1..{MAX_HOPS}")));
    }
    let mut tx = state.db.begin().await?;
    cascade::lock_graph(&mut tx, &zone_id).await?;
    let source = fetch_session(&mut *tx, &zone_id, &b.source_session_id).await?;
    let target = fetch_session(&mut *tx, &zone_id, &b.target_session_id).await?;
    if source.application_id != app {
        return Err(forbidden("not_owner", "only the source session's application may delegate from it"));
    }
    if source.id == target.id {
        return Err(ApiError::bad_request("invalid_delegation", "source and target must differ"));
    }
    if !source.is_live(now) || !target.is_live(now) {
        return Err(ApiError::conflict("session_not_active", "source and target sessions must be active"));
    }
    let mut expires_at = source.expires_at;
    let (hop, max_hops) = match &b.parent_edge_id {
        Some(pid) => {
            let parent = fetch(&mut *tx, &zone_id, pid).await?;
            if parent.status != "active" || parent.expires_at <= now {
                return Err(ApiError::conflict("delegation_not_active", "the parent edge is revoked or expired"));
            }
            if parent.target_session_id != source.id {
                return Err(forbidden("broken_chain", "the parent edge must target the source session"));
            }
            if let Some(extra) = b.scopes.iter().find(|s| !parent.scopes.contains(s)) {
                return Err(forbidden("scope_widening", format!("{extra} is not delegated to the source")));
            }
            if !parent.resources.is_empty() && (b.resources.is_empty() || b.resources.iter().any(|r| !parent.resources.contains(r))) {
                return Err(forbidden("resource_widening", "an edge may only name resources its parent names"));
            }
            if parent.hop + 1 > parent.max_hops {
                return Err(forbidden("hop_limit", format!("the chain allows {} hop(s)", parent.max_hops)));
            }
            constraints.max_ttl_seconds = narrowed_ttl(parent.constraints.0.max_ttl_seconds, constraints.max_ttl_seconds)?;
            expires_at = expires_at.min(parent.expires_at);
            // The root edge fixed how far authority may travel; a derived edge cannot extend it.
            (parent.hop + 1, parent.max_hops)
        }
        None => {
            check_root_scopes(&mut tx, &zone_id, &b.scopes, &b.resources).await?;
            (1, requested_hops)
        }
    };
    if let Some(ttl) = b.ttl_seconds {
        if !(1..=86_400).contains(&ttl) {
            return Err(ApiError::bad_request("invalid_delegation", "ttl_seconds must be 1..86400"));
        }
        expires_at = expires_at.min(now + chrono::Duration::seconds(ttl));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let row: Edge = sqlx::query_as(sql!(
        "INSERT INTO delegation_edges (zone_id, id, source_session_id, target_session_id, parent_edge_id, issuer_application_id, \
           receiver_application_id, scopes, resources, max_hops, hop, constraints, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&source.id)
    .bind(&target.id)
    .bind(&b.parent_edge_id)
    .bind(&source.application_id)
    .bind(&target.application_id)
    .bind(&b.scopes)
    .bind(&b.resources)
    .bind(max_hops)
    .bind(hop)
    .bind(sqlx::types::Json(&constraints))
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(zone_id, delegation_edge_id = %id, source = %source.id, target = %target.id, hop, max_hops, "delegation created");
    Ok((StatusCode::CREATED, Json(row)))
}

/// A derived edge's `max_ttl_seconds`: the parent's when none is asked, the asked one when it is
/// no longer; a longer one is refused (403 `ttl_widening`).
fn narrowed_ttl(parent: Option<i64>, asked: Option<i64>) -> ApiResult<Option<i64>> {
    match (parent, asked) {
        (Some(p), Some(a)) if a > p => Err(forbidden("ttl_widening", format!("the parent edge caps mandates at {p} s"))),
        (Some(p), None) => Ok(Some(p)),
        (_, asked) => Ok(asked),
    }
}

/// A root edge's scopes: declared by the resources it names, or — naming none — by some live
/// resource of the zone (otherwise an edge could carry any scope at all, `agent:lifecycle` say).
async fn check_root_scopes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    zone_id: &str,
    scopes: &[String],
    resources: &[String],
) -> ApiResult<()> {
    let declared: Vec<(Vec<String>,)> = sqlx::query_as(
        "SELECT scopes FROM resources WHERE zone_id = $1 AND archived_at IS NULL AND (cardinality($2::text[]) = 0 OR identifier = ANY($2))",
    )
    .bind(zone_id)
    .bind(resources)
    .fetch_all(&mut **tx)
    .await?;
    if !resources.is_empty() && declared.len() != resources.len() {
        return Err(ApiError::bad_request("invalid_delegation", "every resource must exist in the zone"));
    }
    if let Some(extra) = scopes.iter().find(|s| !declared.iter().any(|(sc,)| sc.contains(s))) {
        let whose = if resources.is_empty() { "no resource of the zone" } else { "no named resource" };
        return Err(forbidden("scope_widening", format!("{whose} declares {extra}")));
    }
    Ok(())
}

async fn read(State(state): State<AppState>, caller: Caller, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<Json<Edge>> {
    let e = fetch(&state.db, &zone_id, &id).await?;
    if caller.require_owner(&e.issuer_application_id).is_err() {
        caller.require_owner(&e.receiver_application_id)?;
    }
    Ok(Json(e))
}

#[derive(Serialize)]
struct RevokedEdges {
    revoked: Vec<String>,
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<RevokedEdges>> {
    let e = fetch(&state.db, &zone_id, &id).await?;
    if caller.require_owner(&e.issuer_application_id).is_err() {
        caller.require_owner(&e.receiver_application_id)?;
    }
    let mut tx = state.db.begin().await?;
    let edges = cascade::revoke_edges(&mut tx, &zone_id, std::slice::from_ref(&id), "delegation_revoked").await?;
    let revoked = Revoked { sessions: Vec::new(), edges };
    cascade::record(&mut tx, &zone_id, &revoked, "delegation_revoked").await?;
    tx.commit().await?;
    announce_anchors(&state, &zone_id, &revoked.anchors());
    tracing::info!(zone_id, delegation_edge_id = %id, revoked = revoked.edges.len(), by = %caller.actor(), "delegation revoked");
    Ok(Json(RevokedEdges { revoked: revoked.edges }))
}

#[derive(Serialize)]
struct Inbound {
    items: Vec<Edge>,
}

async fn inbound(State(state): State<AppState>, caller: Caller, Path((zone_id, sid)): Path<(String, String)>) -> ApiResult<Json<Inbound>> {
    let target = fetch_session(&state.db, &zone_id, &sid).await?;
    caller.require_owner(&target.application_id)?;
    let items: Vec<Edge> = sqlx::query_as(sql!(
        "SELECT {COLUMNS} FROM delegation_edges WHERE zone_id = $1 AND target_session_id = $2 AND status = 'active' AND expires_at > now() \
         ORDER BY created_at DESC, id DESC LIMIT 500"
    ))
    .bind(&zone_id)
    .bind(&sid)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Inbound { items }))
}
