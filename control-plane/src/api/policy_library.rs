//! Named policies and their immutable content versions (the original's `/policies`, issue 14):
//! what the published admin client's `ensure_active_policy_set` reconciles, and what a policy-set
//! version may be composed from (`manifest: [{policy_version_id}]`, see [`super::policies`]).
//! Every version's Rego is compiled and evaluated on sample inputs before it is stored, exactly as a
//! policy-set version's is; `POST /v1/policies/validate` runs that check without storing anything.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{check_name, require_live_zone};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{AdminPrincipal, AppJson, ZoneRows, ZoneTable, list_rows};
use crate::state::AppState;

/// How long an upload's sample evaluation may take.
const UPLOAD_EVAL_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/policies/validate", post(validate))
        .route("/v1/zones/{zone_id}/policies", post(create).get(list_rows::<PolicyRow>))
        .route("/v1/zones/{zone_id}/policies/{id}", get(read).delete(archive))
        .route("/v1/zones/{zone_id}/policies/{id}/versions", post(add_version))
}

/// A policy.
#[derive(Serialize, sqlx::FromRow)]
pub struct PolicyRow {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::extract::keyed!(PolicyRow, id);

impl ZoneRows for PolicyRow {
    const TABLE: ZoneTable = TABLE;
}

const COLUMNS: &str = "id, zone_id, name, description, created_at, updated_at";

const TABLE: ZoneTable = ZoneTable { table: "policies", columns: COLUMNS, not_found: "policy_not_found" };

/// One content version (the content itself only where asked for).
#[derive(Serialize, sqlx::FromRow)]
pub struct PolicyVersionRow {
    pub id: String,
    pub policy_id: String,
    pub version: i32,
    pub content_sha256: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    content: String,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Content {
    content: String,
}

/// Compiles and evaluates `content` on sample inputs (422 `invalid_rego` otherwise).
async fn check(content: &str) -> ApiResult<()> {
    caracal_sts::policy::check_upload(content.to_owned(), UPLOAD_EVAL_BUDGET)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rego", e))
}

async fn validate(_who: AdminPrincipal, AppJson(b): AppJson<Content>) -> Json<serde_json::Value> {
    Json(match check(&b.content).await {
        Ok(()) => json!({"valid": true, "errors": []}),
        Err(e) => json!({"valid": false, "errors": [e.description]}),
    })
}

/// Inserts the next version of `policy_id`.
async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    zone_id: &str,
    policy_id: &str,
    content: &str,
) -> ApiResult<PolicyVersionRow> {
    Ok(sqlx::query_as(
        "INSERT INTO policy_versions (zone_id, id, policy_id, version, content, content_sha256) \
         VALUES ($1, $2, $3, (SELECT coalesce(max(version), 0) + 1 FROM policy_versions WHERE zone_id = $1 AND policy_id = $3), $4, $5) \
         RETURNING id, policy_id, version, content_sha256, created_at",
    )
    .bind(zone_id)
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(policy_id)
    .bind(content)
    .bind(caracal_shared::sig::sha256_hex(content.as_bytes()))
    .fetch_one(&mut **tx)
    .await?)
}

/// The answer to a new version: the row, and `version_id` as the original's clients read it.
fn created(policy: Option<&PolicyRow>, v: &PolicyVersionRow) -> serde_json::Value {
    let mut out = policy.map(|p| serde_json::to_value(p).unwrap_or_default()).unwrap_or_else(|| json!({"id": v.policy_id}));
    out["version_id"] = v.id.clone().into();
    out["version"] = v.version.into();
    out["content_sha256"] = v.content_sha256.clone().into();
    out
}

async fn create(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(b): AppJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    require_live_zone(&state.db, &zone_id).await?;
    let name = check_name(&b.name, 200, "invalid_policy")?;
    check(&b.content).await?;
    let mut tx = state.db.begin().await?;
    let id = uuid::Uuid::now_v7().to_string();
    let row: PolicyRow =
        sqlx::query_as(sql!("INSERT INTO policies (zone_id, id, name, description) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"))
            .bind(&zone_id)
            .bind(&id)
            .bind(&name)
            .bind(&b.description)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    ApiError::conflict("policy_name_taken", "a live policy with this name exists")
                } else {
                    e.into()
                }
            })?;
    let v = insert_version(&mut tx, &zone_id, &id, &b.content).await?;
    tx.commit().await?;
    tracing::info!(zone_id, policy_id = %id, by = %who.actor(), "policy created");
    Ok((StatusCode::CREATED, Json(created(Some(&row), &v))))
}

/// The policy with every version (newest last).
async fn read(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    who.require_zone(&zone_id)?;
    let row = TABLE.live::<PolicyRow>(&state.db, &zone_id, &id).await?;
    let versions: Vec<PolicyVersionRow> = sqlx::query_as(
        "SELECT id, policy_id, version, content_sha256, created_at FROM policy_versions WHERE zone_id = $1 AND policy_id = $2 ORDER BY version",
    )
    .bind(&zone_id)
    .bind(&id)
    .fetch_all(&state.db)
    .await?;
    let mut out = serde_json::to_value(&row).unwrap_or_default();
    out["versions"] = serde_json::to_value(&versions).unwrap_or_default();
    Ok(Json(out))
}

async fn add_version(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
    AppJson(b): AppJson<Content>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    check(&b.content).await?;
    let mut tx = state.db.begin().await?;
    let live: Option<(String,)> =
        sqlx::query_as("SELECT id FROM policies WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL FOR UPDATE")
            .bind(&zone_id)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
    if live.is_none() {
        return Err(ApiError::not_found("policy_not_found"));
    }
    let v = insert_version(&mut tx, &zone_id, &id, &b.content).await?;
    sqlx::query("UPDATE policies SET updated_at = now() WHERE zone_id = $1 AND id = $2").bind(&zone_id).bind(&id).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(zone_id, policy_id = %id, version = v.version, by = %who.actor(), "policy version created");
    Ok((StatusCode::CREATED, Json(created(None, &v))))
}

/// Archives the policy; its versions stay (set versions made from them keep their Rego).
async fn archive(State(state): State<AppState>, who: AdminPrincipal, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    who.require_zone(&zone_id)?;
    let done = sqlx::query("UPDATE policies SET archived_at = now() WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL")
        .bind(&zone_id)
        .bind(&id)
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("policy_not_found"));
    }
    tracing::info!(zone_id, policy_id = %id, by = %who.actor(), "policy archived");
    Ok(StatusCode::NO_CONTENT)
}

/// The modules of a manifest (`[{policy_version_id}]`, 1..256 distinct versions of the zone's
/// policies), in manifest order; compiled together by the STS ([`caracal_sts::policy::compile_modules`]).
pub async fn manifest_modules(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    zone_id: &str,
    manifest: &[ManifestEntry],
) -> ApiResult<Vec<String>> {
    let max = caracal_sts::policy::MAX_MODULES;
    if manifest.is_empty() || manifest.len() > max {
        return Err(ApiError::bad_request("invalid_manifest", format!("a manifest has 1..{max} policy versions")));
    }
    let ids: Vec<&str> = manifest.iter().map(|e| e.policy_version_id.as_str()).collect();
    if let Some((i, id)) = ids.iter().enumerate().find(|(i, id)| ids[..*i].contains(id)) {
        return Err(ApiError::bad_request("invalid_manifest", format!("entry {} repeats policy version {id}", i + 1)));
    }
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, content FROM policy_versions WHERE zone_id = $1 AND id = ANY($2)")
        .bind(zone_id)
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
    ids.iter()
        .map(|id| {
            rows.iter().find(|(r, _)| r == id).map(|(_, c)| c.clone()).ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, "policy_version_not_found", format!("policy version {id} is not in this zone"))
            })
        })
        .collect()
}

/// One entry of a policy-set version's manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub policy_version_id: String,
}
