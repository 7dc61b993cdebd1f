//! Delegation edges: `POST /zones/{z}/delegations` (idempotent with `Idempotency-Key`), read,
//! `PATCH …/{id}/revoke` (cascading), `GET …/inbound/{sid}` and `GET …/inbound/{sid}/{id}`. Wire
//! shapes follow the published SDK (`docs/coordinator.md`).
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
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::sessions::announce_anchors;
use crate::coordinator::agents::fetch as fetch_session;
use crate::coordinator::auth::Caller;
use crate::coordinator::cascade::{self, Revoked};
use crate::coordinator::idempotency;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::AppJson;
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/zones/{zone_id}/delegations", post(create))
        .route("/zones/{zone_id}/delegations/{id}", get(read))
        .route("/zones/{zone_id}/delegations/{id}/revoke", patch(revoke).post(revoke))
        .route("/zones/{zone_id}/delegations/inbound/{sid}", get(inbound))
        .route("/zones/{zone_id}/delegations/inbound/{sid}/{id}", get(inbound_one))
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
    /// Mirrored from the source session's own inbound edge at the target's start
    /// (`parent_authority: inherit`); does not count as a hop.
    pub inherited: bool,
    #[serde(skip)]
    pub idempotency_request_sha256: Option<Vec<u8>>,
}

pub(crate) const EDGE_COLUMNS: &str = "id, zone_id, source_session_id, target_session_id, parent_edge_id, issuer_application_id, \
     receiver_application_id, scopes, resources, max_hops, hop, constraints, status, expires_at, created_at, revoked_at, inherited, \
     idempotency_request_sha256";

/// An edge as the Coordinator answers it: the row plus `delegation_edge_id` (the SDK's name for
/// `id`), with `status` `expired` for an active edge past its expiry.
#[derive(Serialize)]
pub struct EdgeView<'a> {
    pub delegation_edge_id: &'a str,
    #[serde(flatten)]
    pub edge: &'a Edge,
}

impl Edge {
    /// The answer's shape.
    pub fn view(&mut self) -> EdgeView<'_> {
        if self.status == "active" && self.expires_at <= Utc::now() {
            self.status = "expired".into();
        }
        EdgeView { delegation_edge_id: &self.id, edge: self }
    }
}

/// What else limits an edge, as stored (the STS reads `max_ttl_seconds`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Constraints {
    /// Longest lifetime of a mandate minted through this edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<i64>,
    /// Recorded as given (not enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<i64>,
    /// Recorded as given (not enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_approved: Option<bool>,
    /// Recorded as given (not enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broad_reason: Option<String>,
}

/// `constraints` (or `constraints_json`) of a create, strict: an unknown key is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskedConstraints {
    max_ttl_seconds: Option<i64>,
    #[serde(default)]
    resources: Vec<String>,
    max_hops: Option<i32>,
    /// The original's name for `max_hops`; both given must agree.
    max_depth: Option<i32>,
    ttl_seconds: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
    budget: Option<i64>,
    policy_approved: Option<bool>,
    broad_reason: Option<String>,
}

/// The create request. Serialized (in this field order) for the idempotency digest.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// Must be the caller's application, which owns the source session.
    issuer_application_id: Option<String>,
    source_session_id: String,
    target_session_id: String,
    /// Must be the target session's application (409 `delegation_application_mismatch`).
    receiver_application_id: Option<String>,
    scopes: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    /// One resource, by row id or identifier (added to `resources`).
    resource_id: Option<String>,
    ttl_seconds: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
    max_hops: Option<i32>,
    parent_edge_id: Option<String>,
    #[serde(default)]
    constraints: Option<serde_json::Value>,
    /// The original's alias of `constraints`.
    #[serde(default)]
    constraints_json: Option<serde_json::Value>,
}

/// What a create asks, once the aliases are merged.
struct Asked {
    constraints: Constraints,
    /// Identifiers (and row ids, resolved later) named anywhere in the request.
    resources: Vec<String>,
    max_hops: Option<i32>,
    ttl_seconds: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
}

fn invalid(why: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_delegation", why)
}

/// Merges top-level fields, `constraints` and `constraints_json`; values given twice must agree
/// (hops) or the narrower wins (lifetimes).
fn merge(b: &CreateBody, now: DateTime<Utc>) -> ApiResult<Asked> {
    if b.constraints.is_some() && b.constraints_json.is_some() {
        return Err(invalid("send constraints or constraints_json, not both"));
    }
    let c: AskedConstraints = match b.constraints.clone().or_else(|| b.constraints_json.clone()) {
        None | Some(serde_json::Value::Null) => AskedConstraints::default(),
        Some(v) => serde_json::from_value(v).map_err(|e| invalid(format!("constraints: {e}")))?,
    };
    let mut hops = None;
    for h in [b.max_hops, c.max_hops, c.max_depth].into_iter().flatten() {
        if hops.is_some_and(|prev| prev != h) {
            return Err(invalid("max_hops and max_depth must agree"));
        }
        hops = Some(h);
    }
    let ttl_seconds = [b.ttl_seconds, c.ttl_seconds].into_iter().flatten().min();
    if ttl_seconds.is_some_and(|t| !(1..=86_400).contains(&t)) {
        return Err(invalid("ttl_seconds must be 1..86400"));
    }
    let expires_at = [b.expires_at, c.expires_at].into_iter().flatten().min();
    if expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::bad_request("delegation_expired", "expires_at is in the past"));
    }
    let mut resources = b.resources.clone();
    resources.extend(c.resources.iter().cloned());
    resources.extend(b.resource_id.iter().cloned());
    resources.sort();
    resources.dedup();
    Ok(Asked {
        constraints: Constraints {
            max_ttl_seconds: c.max_ttl_seconds,
            budget: c.budget,
            policy_approved: c.policy_approved,
            broad_reason: c.broad_reason,
        },
        resources,
        max_hops: hops,
        ttl_seconds,
        expires_at,
    })
}

async fn fetch<'e>(db: impl sqlx::PgExecutor<'e>, zone_id: &str, id: &str) -> ApiResult<Edge> {
    let row: Option<Edge> = sqlx::query_as(sql!("SELECT {EDGE_COLUMNS} FROM delegation_edges WHERE zone_id = $1 AND id = $2"))
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
    headers: HeaderMap,
    AppJson(b): AppJson<CreateBody>,
) -> ApiResult<Response> {
    let Some(app) = caller.application().map(str::to_owned) else {
        return Err(forbidden("runtime_required", "delegations are issued by the source session's runtime"));
    };
    if b.issuer_application_id.as_deref().is_some_and(|i| i != app) {
        return Err(forbidden("issuer_ownership_required", "a runtime issues delegations for its own application only"));
    }
    let key = idempotency::read(&headers, &b)?;
    let now = Utc::now();
    let asked = merge(&b, now)?;
    let scope_ok = |s: &String| (1..=200).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || b":_./-".contains(&c));
    if b.scopes.is_empty() || b.scopes.len() > 64 || !b.scopes.iter().all(scope_ok) || asked.resources.len() > 64 {
        return Err(invalid("scopes: 1..64 valid scopes; resources: at most 64"));
    }
    let mut constraints = asked.constraints;
    if constraints.max_ttl_seconds.is_some_and(|t| !(1..=3600).contains(&t)) {
        return Err(invalid("constraints.max_ttl_seconds must be 1..3600"));
    }
    let requested_hops = asked.max_hops.unwrap_or(1);
    if !(1..=MAX_HOPS).contains(&requested_hops) {
        return Err(invalid(format!("max_hops must be 1..{MAX_HOPS}")));
    }
    let mut tx = state.db.begin().await?;
    cascade::lock_graph(&mut tx, &zone_id).await?;
    if let Some(k) = &key {
        let existing: Option<Edge> = sqlx::query_as(sql!(
            "SELECT {EDGE_COLUMNS} FROM delegation_edges WHERE zone_id = $1 AND issuer_application_id = $2 AND idempotency_key = $3"
        ))
        .bind(&zone_id)
        .bind(&app)
        .bind(&k.key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(mut e) = existing {
            idempotency::check_replay(e.idempotency_request_sha256.as_deref(), k, e.status == "active" && e.expires_at > now)?;
            return Ok(idempotency::replayed(e.view()));
        }
    }
    let resources = resource_identifiers(&mut tx, &zone_id, &asked.resources).await?;
    let source = fetch_session(&mut *tx, &zone_id, &b.source_session_id).await?;
    let target = fetch_session(&mut *tx, &zone_id, &b.target_session_id).await?;
    if source.application_id != app {
        return Err(forbidden("not_owner", "only the source session's application may delegate from it"));
    }
    if b.receiver_application_id.as_deref().is_some_and(|r| r != target.application_id) {
        return Err(ApiError::conflict(
            "delegation_application_mismatch",
            "receiver_application_id is not the target session's application",
        ));
    }
    if source.id == target.id {
        return Err(invalid("source and target must differ"));
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
            if !parent.resources.is_empty() && (resources.is_empty() || resources.iter().any(|r| !parent.resources.contains(r))) {
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
            check_root_scopes(&mut tx, &zone_id, &b.scopes, &resources).await?;
            (1, requested_hops)
        }
    };
    if let Some(ttl) = asked.ttl_seconds {
        expires_at = expires_at.min(now + chrono::Duration::seconds(ttl));
    }
    if let Some(at) = asked.expires_at {
        expires_at = expires_at.min(at);
    }
    let id = uuid::Uuid::now_v7().to_string();
    let inserted = sqlx::query_as::<_, Edge>(sql!(
        "INSERT INTO delegation_edges (zone_id, id, source_session_id, target_session_id, parent_edge_id, issuer_application_id, \
           receiver_application_id, scopes, resources, max_hops, hop, constraints, expires_at, idempotency_key, idempotency_request_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING {EDGE_COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&source.id)
    .bind(&target.id)
    .bind(&b.parent_edge_id)
    .bind(&source.application_id)
    .bind(&target.application_id)
    .bind(&b.scopes)
    .bind(&resources)
    .bind(max_hops)
    .bind(hop)
    .bind(sqlx::types::Json(&constraints))
    .bind(expires_at)
    .bind(key.as_ref().map(|k| &k.key))
    .bind(key.as_ref().map(|k| &k.request_sha256))
    .fetch_one(&mut *tx)
    .await;
    let mut row = match inserted {
        Ok(row) => row,
        // Cannot happen under the graph lock; should it anyway, a 409 beats a 500.
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict("idempotency_key_conflict", "a request with this Idempotency-Key is in progress"));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    tracing::info!(zone_id, delegation_edge_id = %id, source = %source.id, target = %target.id, hop, max_hops, "delegation created");
    Ok((StatusCode::CREATED, Json(row.view())).into_response())
}

/// The identifiers of the named resources: each an identifier or a row id of a live resource of
/// the zone (else 400).
async fn resource_identifiers(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, zone_id: &str, named: &[String]) -> ApiResult<Vec<String>> {
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, identifier FROM resources WHERE zone_id = $1 AND archived_at IS NULL AND (identifier = ANY($2) OR id = ANY($2))",
    )
    .bind(zone_id)
    .bind(named)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::with_capacity(named.len());
    for n in named {
        let (_, identifier) = found
            .iter()
            .find(|(id, ident)| ident == n || id == n)
            .ok_or_else(|| invalid(format!("resource {n} does not exist in the zone")))?;
        out.push(identifier.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
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

async fn read(State(state): State<AppState>, caller: Caller, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<Response> {
    let mut e = fetch(&state.db, &zone_id, &id).await?;
    if caller.require_owner(&e.issuer_application_id).is_err() {
        caller.require_owner(&e.receiver_application_id)?;
    }
    Ok(Json(e.view()).into_response())
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
struct Inbound<'a> {
    items: Vec<EdgeView<'a>>,
}

async fn inbound(State(state): State<AppState>, caller: Caller, Path((zone_id, sid)): Path<(String, String)>) -> ApiResult<Response> {
    let target = fetch_session(&state.db, &zone_id, &sid).await?;
    caller.require_owner(&target.application_id)?;
    let mut items: Vec<Edge> = sqlx::query_as(sql!(
        "SELECT {EDGE_COLUMNS} FROM delegation_edges WHERE zone_id = $1 AND target_session_id = $2 AND status = 'active' AND expires_at > now() \
         ORDER BY created_at DESC, id DESC LIMIT 500"
    ))
    .bind(&zone_id)
    .bind(&sid)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Inbound { items: items.iter_mut().map(Edge::view).collect() }).into_response())
}

/// `GET …/inbound/{sid}/{id}`: one edge received by `sid` (the caller owns `sid`), whatever its
/// state (`status` tells: `active`, `revoked` or `expired`); 404 `delegation_not_found` for an edge
/// that does not target `sid`.
async fn inbound_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((zone_id, sid, id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let target = fetch_session(&state.db, &zone_id, &sid).await?;
    caller.require_owner(&target.application_id)?;
    let mut e = fetch(&state.db, &zone_id, &id).await?;
    if e.target_session_id != sid {
        return Err(ApiError::not_found("delegation_not_found"));
    }
    Ok(Json(e.view()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> CreateBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_sdk_delegation_body_is_accepted() {
        let now = Utc::now();
        let b = body(serde_json::json!({
            "issuer_application_id": "a", "source_session_id": "s1", "target_session_id": "s2", "receiver_application_id": "b",
            "scopes": ["tools.read"], "resource_id": "https://r", "parent_edge_id": "e0", "ttl_seconds": 120,
            "constraints": {"resources": ["https://q"], "max_depth": 2, "max_hops": 2, "ttl_seconds": 60, "policy_approved": true,
                            "broad_reason": "x", "budget": 3}
        }));
        let a = merge(&b, now).unwrap();
        assert_eq!(a.resources, ["https://q", "https://r"]);
        assert_eq!((a.max_hops, a.ttl_seconds), (Some(2), Some(60)), "the narrower lifetime wins");
        assert_eq!(a.constraints.budget, Some(3));
        let alias = body(serde_json::json!({"source_session_id": "s1", "target_session_id": "s2", "scopes": ["x"],
            "constraints_json": {"max_hops": 3}}));
        assert_eq!(merge(&alias, now).unwrap().max_hops, Some(3));
    }

    #[test]
    fn disagreeing_or_unknown_constraints_are_refused() {
        let now = Utc::now();
        let base = serde_json::json!({"source_session_id": "s1", "target_session_id": "s2", "scopes": ["x"]});
        let with = |c: serde_json::Value| {
            let mut v = base.clone();
            v["constraints"] = c;
            merge(&body(v), now)
        };
        assert_eq!(with(serde_json::json!({"max_hops": 2, "max_depth": 3})).err().unwrap().code, "invalid_delegation");
        assert_eq!(with(serde_json::json!({"surprise": 1})).err().unwrap().code, "invalid_delegation");
        assert_eq!(with(serde_json::json!({"ttl_seconds": 0})).err().unwrap().code, "invalid_delegation");
        let past = (now - chrono::Duration::seconds(5)).to_rfc3339();
        assert_eq!(with(serde_json::json!({"expires_at": past})).err().unwrap().code, "delegation_expired");
        assert!(
            serde_json::from_value::<CreateBody>(serde_json::json!({"source_session_id": "s1", "target_session_id": "s2",
            "scopes": ["x"], "surprise": 1}))
            .is_err()
        );
    }
}
