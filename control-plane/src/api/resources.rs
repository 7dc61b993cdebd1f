//! Resources: what the gateway protects. Each names its upstream, its scopes, the operations
//! (`{method, path, scope}`) an enforced resource lets through, and how the upstream credential is
//! injected (`none`, `caracal_jwt` — the resource mandate as a bearer — or `provider_apikey`).
//!
//! A provider key is write-only and bound to where it was given for: an update that moves the
//! upstream to another scheme, host or port, or renames the identifier, while keeping the stored
//! key is refused (409 `credential_secret_required`); it must bring the key for the new
//! destination. (Refused rather than silently dropped: a resource that quietly lost its key would
//! fail upstream with an error that hides the cause, and the operator who moved it should state
//! which key the new host may see.)
//!
//! Every update — a `PATCH` of the resource or an edit of one endpoint ([`endpoints`]) — reads
//! the row under a lock, checks and writes it in one transaction ([`rewrite`]): concurrent
//! updates apply one after the other, and none overwrites another unseen.

mod definition;
mod endpoints;
mod pool_body;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_shared::pool::{Connections, Endpoint, HealthProbe, LoadBalancing, Retry, Timeouts};
use caracal_sts::operations::{McpOperation, Operation};
use caracal_sts::store::CredentialPlacement;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json as SqlJson;

use self::definition::{Body, Definition, control_audience};
use crate::api::{CatalogEntry, announce_catalog, forget_catalog, require_live_zone};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{AdminPrincipal, AppJson, ZoneRows, ZoneTable, list_rows};
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/resources", post(create).get(list_rows::<ResourceRow>))
        .route("/v1/zones/{zone_id}/resources/{id}", get(read).patch(update).delete(archive))
        .merge(endpoints::router())
}

/// A resource.
#[derive(Serialize, sqlx::FromRow)]
pub struct ResourceRow {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub identifier: String,
    /// The first endpoint (what readers that predate pools use).
    pub upstream_url: String,
    /// The pool (docs/pools.md): `[{url, weight}]`.
    pub endpoints: SqlJson<Vec<Endpoint>>,
    pub load_balancing: SqlJson<LoadBalancing>,
    /// Upstream deadlines in ms (`{}` ⇒ the gateway's).
    pub timeouts: SqlJson<Timeouts>,
    /// Active probes of the endpoints (`null` ⇒ none).
    pub health: Option<SqlJson<HealthProbe>>,
    /// Retries on another endpoint.
    pub retry: SqlJson<Retry>,
    /// Per-endpoint concurrency cap and HTTP/2 (`{}` ⇒ no cap, HTTP/1.1).
    pub connections: SqlJson<Connections>,
    pub scopes: Vec<String>,
    pub operations: SqlJson<Vec<Operation>>,
    pub operation_enforcement: String,
    /// `http` or `mcp` (docs/mcp.md).
    pub protocol: String,
    /// Declared MCP operations `[{mcp_method, name?, scope}]`.
    pub mcp_operations: SqlJson<Vec<McpOperation>>,
    pub credential_mode: String,
    /// The credential provider (`credential_mode = provider`).
    pub credential_provider_id: Option<String>,
    /// Where a provider key goes; the key itself is write-only.
    pub credential: SqlJson<CredentialPlacement>,
    /// Whether a provider key is stored.
    pub credential_secret_set: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::extract::keyed!(ResourceRow, id);

impl ZoneRows for ResourceRow {
    const TABLE: ZoneTable = TABLE;
}

const COLUMNS: &str = "id, zone_id, name, identifier, upstream_url, endpoints, load_balancing, timeouts, health, retry, connections, \
     scopes, operations, operation_enforcement, protocol, mcp_operations, credential_mode, credential_provider_id, \
     credential_placement AS credential, credential_secret IS NOT NULL AS credential_secret_set, created_at, updated_at";

/// How the admin API lists and reads resources.
const TABLE: ZoneTable = ZoneTable { table: "resources", columns: COLUMNS, not_found: "resource_not_found" };

/// A referenced credential provider must be live in the zone, and allowed for every upstream host.
async fn check_provider<'e>(db: impl sqlx::PgExecutor<'e>, zone_id: &str, def: &Definition) -> ApiResult<()> {
    let Some(provider_id) = &def.credential_provider_id else { return Ok(()) };
    let config: Option<(SqlJson<serde_json::Value>,)> =
        sqlx::query_as("SELECT config_json FROM providers WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL")
            .bind(zone_id)
            .bind(provider_id)
            .fetch_optional(db)
            .await?;
    let (config,) = config.ok_or_else(|| ApiError::not_found("provider_not_found"))?;
    let allowed: Vec<String> = config.0.get("allowed_hosts").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    if let Some(e) = caracal_shared::pool::endpoint_outside(&allowed, def.endpoints()) {
        return Err(ApiError::bad_request("invalid_resource", format!("the credential provider is not allowed for upstream {}", e.url)));
    }
    Ok(())
}

/// Control acts for a control key, which must not reshape the resource its own tokens are minted
/// for (its scopes bound what Control may be asked): through Control the Control resource is not
/// created, changed or archived (403 `protected_resource`); an administrator does that.
pub(super) fn refuse_control_resource_via_control(state: &AppState, who: &AdminPrincipal, identifier: &str) -> ApiResult<()> {
    who.refuse_via_control(
        control_audience(state) == Some(identifier),
        "protected_resource",
        "the Control resource is changed by an administrator, not through Control",
    )
}

fn conflict_or(e: sqlx::Error) -> ApiError {
    if is_unique_violation(&e) {
        ApiError::conflict("resource_identifier_conflict", "a live resource with this identifier exists in the zone")
    } else {
        e.into()
    }
}

async fn create(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(b): AppJson<Body>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    require_live_zone(&state.db, &zone_id).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let def = Definition::create(&state, &zone_id, &id, b)?;
    refuse_control_resource_via_control(&state, &who, &def.identifier)?;
    check_provider(&state.db, &zone_id, &def).await?;
    let q = sqlx::query_as::<_, ResourceRow>(sql!(
        "INSERT INTO resources (zone_id, id, name, identifier, upstream_url, scopes, operations, operation_enforcement, credential_mode, \
         credential_placement, credential_secret, credential_kek_id, endpoints, load_balancing, timeouts, health, retry, connections, protocol, mcp_operations, credential_provider_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id);
    let row = def.bind(q).fetch_one(&state.db).await.map_err(conflict_or)?;
    tracing::info!(zone_id, resource_id = %id, identifier = %def.identifier, by = %who.actor(), "resource created");
    Ok((StatusCode::CREATED, Json(row)))
}

/// A live resource of the zone (404 `resource_not_found` otherwise).
async fn fetch(state: &AppState, zone_id: &str, id: &str) -> ApiResult<ResourceRow> {
    TABLE.live(&state.db, zone_id, id).await
}

async fn read(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<ResourceRow>> {
    who.require_zone(&zone_id)?;
    fetch(&state, &zone_id, &id).await.map(Json)
}

async fn update(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
    AppJson(b): AppJson<Body>,
) -> ApiResult<Json<ResourceRow>> {
    who.require_zone(&zone_id)?;
    let row = rewrite(&state, &who, &zone_id, &id, |_| Ok(b)).await?;
    tracing::info!(zone_id, resource_id = %id, by = %who.actor(), "resource updated");
    Ok(Json(row))
}

/// Updates resource `id` with the body `edit` makes from the stored row: the row is read under
/// `FOR UPDATE`, merged, checked ([`Definition::update`]: every problem at once, the provider
/// key's binding) and written in one transaction, and the change is announced on
/// `caracal.catalog.invalidate` with the write (under the old identifier and, when renamed, the
/// new one), so every STS forgets its cached copy as soon as it commits.
async fn rewrite(
    state: &AppState,
    who: &AdminPrincipal,
    zone_id: &str,
    id: &str,
    edit: impl FnOnce(&ResourceRow) -> ApiResult<Body>,
) -> ApiResult<ResourceRow> {
    let mut tx = state.db.begin().await?;
    let cur: ResourceRow =
        sqlx::query_as(sql!("SELECT {COLUMNS} FROM resources WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL FOR UPDATE"))
            .bind(zone_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::not_found("resource_not_found"))?;
    refuse_control_resource_via_control(state, who, &cur.identifier)?;
    let stored: (Option<Vec<u8>>, Option<String>) =
        sqlx::query_as("SELECT credential_secret, credential_kek_id FROM resources WHERE zone_id = $1 AND id = $2")
            .bind(zone_id)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let body = edit(&cur)?;
    let cur_identifier = cur.identifier.clone();
    let def = Definition::update(state, zone_id, cur, stored.0.zip(stored.1), body)?;
    refuse_control_resource_via_control(state, who, &def.identifier)?;
    check_provider(&mut *tx, zone_id, &def).await?;
    let q = sqlx::query_as::<_, ResourceRow>(sql!(
        "UPDATE resources SET name = $3, identifier = $4, upstream_url = $5, scopes = $6, operations = $7, \
         operation_enforcement = $8, credential_mode = $9, credential_placement = $10, credential_secret = $11, \
         credential_kek_id = $12, endpoints = $13, load_balancing = $14, timeouts = $15, health = $16, retry = $17, \
         connections = $18, protocol = $19, mcp_operations = $20, credential_provider_id = $21, updated_at = now() WHERE zone_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(zone_id)
    .bind(id);
    let row = def.bind(q).fetch_one(&mut *tx).await.map_err(conflict_or)?;
    announce_catalog(&mut tx, zone_id, CatalogEntry::Resource(&cur_identifier)).await?;
    if def.identifier != cur_identifier {
        announce_catalog(&mut tx, zone_id, CatalogEntry::Resource(&def.identifier)).await?;
    }
    tx.commit().await?;
    forget_catalog(state, zone_id, CatalogEntry::Resource(&cur_identifier)).await;
    forget_catalog(state, zone_id, CatalogEntry::Resource(&def.identifier)).await;
    Ok(row)
}

async fn archive(State(state): State<AppState>, who: AdminPrincipal, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    who.require_zone(&zone_id)?;
    // Archiving the Control resource would lock Control out of the zone (including through
    // Control itself); disable Control first.
    let identifier = fetch(&state, &zone_id, &id).await?.identifier;
    refuse_control_resource_via_control(&state, &who, &identifier)?;
    if control_audience(&state) == Some(identifier.as_str()) {
        return Err(ApiError::conflict("protected_resource", "the Control resource cannot be archived while Control is enabled"));
    }
    let mut tx = state.db.begin().await?;
    let archived: Option<(String,)> = sqlx::query_as(
        "UPDATE resources SET archived_at = now() WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL RETURNING identifier",
    )
    .bind(&zone_id)
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?;
    let (identifier,) = archived.ok_or_else(|| ApiError::not_found("resource_not_found"))?;
    announce_catalog(&mut tx, &zone_id, CatalogEntry::Resource(&identifier)).await?;
    tx.commit().await?;
    forget_catalog(&state, &zone_id, CatalogEntry::Resource(&identifier)).await;
    tracing::info!(zone_id, resource_id = %id, by = %who.actor(), "resource archived");
    Ok(StatusCode::NO_CONTENT)
}
