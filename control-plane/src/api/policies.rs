//! Policy sets, their immutable versions (Rego, checked with regorus on upload), and activation.
//!
//! Activation sets the zone's active version and enqueues `caracal.policy.invalidate` in the same
//! transaction; this process's STS recompiles at once, others on the stream or within their
//! cache TTL. A zone without an active version denies every exchange.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_shared::streams;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::{check_name, require_live_zone};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::AppQuery;
use crate::extract::{AdminPrincipal, AppJson, PageQuery, Paged, fetch_page};
use crate::outbox;
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/policy-sets", post(create_set).get(list_sets))
        .route("/v1/zones/{zone_id}/policy-sets/{id}", get(read_set).delete(archive_set))
        .route("/v1/zones/{zone_id}/policy-sets/{id}/versions", post(create_version).get(list_versions))
        .route("/v1/zones/{zone_id}/policy-sets/{id}/versions/{version_id}", get(read_version))
        .route("/v1/zones/{zone_id}/policy-sets/{id}/activate", post(activate))
}

/// A policy set, with the zone's active version if it belongs to this set.
#[derive(Serialize, sqlx::FromRow)]
pub struct PolicySetRow {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub description: String,
    pub active_version_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

crate::extract::keyed!(PolicySetRow, id);

const SET_SELECT: &str = "SELECT s.id, s.zone_id, s.name, s.description, a.version_id AS active_version_id, s.created_at \
     FROM policy_sets s LEFT JOIN zone_active_policies a ON a.zone_id = s.zone_id AND a.policy_set_id = s.id";

/// A version (the Rego source only on the single-version read).
#[derive(Serialize, sqlx::FromRow)]
pub struct VersionRow {
    pub id: String,
    pub policy_set_id: String,
    pub version: i32,
    pub rego_sha256: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rego: Option<String>,
}

crate::extract::keyed!(VersionRow, id);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSet {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_set(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(b): AppJson<CreateSet>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    require_live_zone(&state.db, &zone_id).await?;
    let name = check_name(&b.name, 200, "invalid_policy_set")?;
    if b.description.chars().count() > 2000 {
        return Err(ApiError::bad_request("invalid_policy_set", "description must be ≤ 2000 characters"));
    }
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query("INSERT INTO policy_sets (zone_id, id, name, description) VALUES ($1, $2, $3, $4)")
        .bind(&zone_id)
        .bind(&id)
        .bind(&name)
        .bind(&b.description)
        .execute(&state.db)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                ApiError::conflict("policy_set_name_conflict", "a policy set with this name exists")
            } else {
                e.into()
            }
        })?;
    tracing::info!(zone_id, policy_set_id = %id, by = %who.actor(), "policy set created");
    Ok((StatusCode::CREATED, Json(fetch_set(&state, &zone_id, &id).await?)))
}

async fn fetch_set(state: &AppState, zone_id: &str, id: &str) -> ApiResult<PolicySetRow> {
    let row: Option<PolicySetRow> = sqlx::query_as(sql!("{SET_SELECT} WHERE s.zone_id = $1 AND s.id = $2 AND s.archived_at IS NULL"))
        .bind(zone_id)
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    row.ok_or_else(|| ApiError::not_found("policy_set_not_found"))
}

async fn list_sets(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppQuery(q): AppQuery<PageQuery>,
) -> ApiResult<Json<Paged<PolicySetRow>>> {
    who.require_zone(&zone_id)?;
    let page = q.page()?;
    let q = sqlx::query_as::<_, PolicySetRow>(sql!(
        "{SET_SELECT} WHERE s.zone_id = $1 AND s.archived_at IS NULL \
         AND ($2::timestamptz IS NULL OR (s.created_at, s.id) < ($2, $3)) ORDER BY s.created_at DESC, s.id DESC LIMIT $4"
    ))
    .bind(&zone_id);
    Ok(Json(fetch_page(&state.db, q, &page).await?))
}

async fn read_set(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<PolicySetRow>> {
    who.require_zone(&zone_id)?;
    fetch_set(&state, &zone_id, &id).await.map(Json)
}

async fn archive_set(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require_zone(&zone_id)?;
    let mut tx = state.db.begin().await?;
    let done = sqlx::query("UPDATE policy_sets SET archived_at = now() WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL")
        .bind(&zone_id)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("policy_set_not_found"));
    }
    // Archiving the active set leaves the zone without a policy: deny all.
    let was_active = sqlx::query("DELETE FROM zone_active_policies WHERE zone_id = $1 AND policy_set_id = $2")
        .bind(&zone_id)
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if was_active {
        outbox::enqueue(&mut tx, Some(&zone_id), streams::POLICY_INVALIDATE, &[("zone_id", &zone_id), ("policy_set_id", &id)]).await?;
    }
    tx.commit().await?;
    if was_active {
        state.sts.policies.invalidate(&zone_id).await;
        state.outbox_notify.notify_one();
    }
    tracing::info!(zone_id, policy_set_id = %id, was_active, by = %who.actor(), "policy set archived");
    Ok(StatusCode::NO_CONTENT)
}

/// How long an upload's sample evaluation may take.
const UPLOAD_EVAL_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// A version is Rego, or a manifest of policy versions (`/policies`) whose Rego it takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVersion {
    /// The Rego source (`content` is accepted as the original's name for it).
    #[serde(alias = "content")]
    rego: Option<String>,
    manifest: Option<Vec<super::policy_library::ManifestEntry>>,
}

/// A created version, with `version_id` as the original's clients read it.
#[derive(Serialize)]
struct CreatedVersion {
    #[serde(flatten)]
    row: VersionRow,
    version_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<Vec<super::policy_library::ManifestEntry>>,
}

async fn create_version(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, set_id)): Path<(String, String)>,
    AppJson(b): AppJson<CreateVersion>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    let mut tx = state.db.begin().await?;
    let modules = match (b.rego, &b.manifest) {
        (Some(rego), None) => vec![rego],
        (None, Some(manifest)) => super::policy_library::manifest_modules(&mut tx, &zone_id, manifest).await?,
        _ => return Err(ApiError::bad_request("invalid_policy_version", "send rego (content) or a manifest, not both")),
    };
    // Compile and evaluate once on sample inputs before anything is stored: a version that cannot
    // evaluate, or exceeds an evaluation bound, is never activatable.
    caracal_sts::policy::check_upload_modules(modules.clone(), UPLOAD_EVAL_BUDGET)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rego", e))?;
    let set: Option<(String,)> =
        sqlx::query_as("SELECT id FROM policy_sets WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL FOR UPDATE")
            .bind(&zone_id)
            .bind(&set_id)
            .fetch_optional(&mut *tx)
            .await?;
    if set.is_none() {
        return Err(ApiError::not_found("policy_set_not_found"));
    }
    let id = uuid::Uuid::now_v7().to_string();
    // One module: its digest, as before manifests had several. Several: the digest of them joined
    // by NUL, which no module contains.
    let sha = caracal_shared::sig::sha256_hex(modules.join("\0").as_bytes());
    let (rego, extra_modules) = modules.split_first().expect("one module at least");
    let row: VersionRow = sqlx::query_as(
        "INSERT INTO policy_set_versions (zone_id, id, policy_set_id, version, rego, rego_sha256, manifest, extra_modules) \
         VALUES ($1, $2, $3, (SELECT coalesce(max(version), 0) + 1 FROM policy_set_versions WHERE zone_id = $1 AND policy_set_id = $3), $4, $5, $6, $7) \
         RETURNING id, policy_set_id, version, rego_sha256, created_at, NULL::text AS rego",
    )
    .bind(&zone_id)
    .bind(&id)
    .bind(&set_id)
    .bind(rego)
    .bind(&sha)
    .bind(b.manifest.as_ref().map(sqlx::types::Json))
    .bind(extra_modules)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(zone_id, policy_set_id = %set_id, version_id = %id, version = row.version, by = %who.actor(), "policy version created");
    Ok((StatusCode::CREATED, Json(CreatedVersion { version_id: row.id.clone(), row, manifest: b.manifest })))
}

async fn list_versions(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, set_id)): Path<(String, String)>,
    AppQuery(q): AppQuery<PageQuery>,
) -> ApiResult<Json<Paged<VersionRow>>> {
    who.require_zone(&zone_id)?;
    let page = q.page()?;
    let q = sqlx::query_as::<_, VersionRow>(
        "SELECT id, policy_set_id, version, rego_sha256, created_at, NULL::text AS rego FROM policy_set_versions \
         WHERE zone_id = $1 AND policy_set_id = $2 AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5",
    )
    .bind(&zone_id)
    .bind(&set_id);
    Ok(Json(fetch_page(&state.db, q, &page).await?))
}

async fn read_version(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, set_id, version_id)): Path<(String, String, String)>,
) -> ApiResult<Json<VersionRow>> {
    who.require_zone(&zone_id)?;
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT id, policy_set_id, version, rego_sha256, created_at, rego FROM policy_set_versions \
         WHERE zone_id = $1 AND policy_set_id = $2 AND id = $3",
    )
    .bind(&zone_id)
    .bind(&set_id)
    .bind(&version_id)
    .fetch_optional(&state.db)
    .await?;
    row.map(Json).ok_or_else(|| ApiError::not_found("version_not_found"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    version_id: String,
}

#[derive(Serialize)]
struct Activated {
    activated: bool,
    policy_set_id: String,
    version_id: String,
    outbox_id: String,
}

async fn activate(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, set_id)): Path<(String, String)>,
    AppJson(b): AppJson<Activate>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    let mut tx = state.db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('caracal.policy.activate:' || $1))").bind(&zone_id).execute(&mut *tx).await?;
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT v.id FROM policy_set_versions v JOIN policy_sets s ON s.zone_id = v.zone_id AND s.id = v.policy_set_id \
         WHERE v.zone_id = $1 AND v.policy_set_id = $2 AND v.id = $3 AND s.archived_at IS NULL",
    )
    .bind(&zone_id)
    .bind(&set_id)
    .bind(&b.version_id)
    .fetch_optional(&mut *tx)
    .await?;
    if found.is_none() {
        return Err(ApiError::not_found("version_not_found"));
    }
    sqlx::query(
        "INSERT INTO zone_active_policies (zone_id, policy_set_id, version_id) VALUES ($1, $2, $3) \
         ON CONFLICT (zone_id) DO UPDATE SET policy_set_id = EXCLUDED.policy_set_id, version_id = EXCLUDED.version_id, activated_at = now()",
    )
    .bind(&zone_id)
    .bind(&set_id)
    .bind(&b.version_id)
    .execute(&mut *tx)
    .await?;
    let outbox_id = outbox::enqueue(
        &mut tx,
        Some(&zone_id),
        streams::POLICY_INVALIDATE,
        &[("zone_id", &zone_id), ("policy_set_id", &set_id), ("policy_set_version_id", &b.version_id)],
    )
    .await?;
    tx.commit().await?;
    state.sts.policies.invalidate(&zone_id).await;
    state.outbox_notify.notify_one();
    tracing::info!(zone_id, policy_set_id = %set_id, version_id = %b.version_id, by = %who.actor(), "policy version activated");
    Ok((StatusCode::ACCEPTED, Json(Activated { activated: true, policy_set_id: set_id, version_id: b.version_id, outbox_id })))
}
