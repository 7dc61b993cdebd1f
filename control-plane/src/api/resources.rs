//! Resources: what the gateway protects. Each names its upstream, its scopes, the operations
//! (`{method, path, scope}`) an enforced resource lets through, and how the upstream credential is
//! injected (`none` or `caracal_jwt`, the resource mandate as a bearer).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_sts::operations::Operation;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;

use crate::api::require_live_zone;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{AdminPrincipal, AppJson, PageQuery, Paged, fetch_page};
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/resources", post(create).get(list))
        .route("/v1/zones/{zone_id}/resources/{id}", get(read).patch(update).delete(archive))
}

/// A resource.
#[derive(Serialize, sqlx::FromRow)]
pub struct ResourceRow {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub identifier: String,
    pub upstream_url: String,
    pub scopes: Vec<String>,
    pub operations: SqlJson<Vec<Operation>>,
    pub operation_enforcement: String,
    pub credential_mode: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::extract::keyed!(ResourceRow, id);

const COLUMNS: &str =
    "id, zone_id, name, identifier, upstream_url, scopes, operations, operation_enforcement, credential_mode, created_at, updated_at";

/// Create and update body; on update every field is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Body {
    name: Option<String>,
    identifier: Option<String>,
    upstream_url: Option<String>,
    scopes: Option<Vec<String>>,
    operations: Option<Vec<Operation>>,
    operation_enforcement: Option<String>,
    credential_mode: Option<String>,
}

/// A complete resource definition, checked.
struct Definition {
    name: String,
    identifier: String,
    upstream_url: String,
    scopes: Vec<String>,
    operations: Vec<Operation>,
    operation_enforcement: String,
    credential_mode: String,
}

impl Definition {
    /// Binds the definition's fields as the next seven parameters (name … credential_mode).
    fn bind<'q, O>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        q.bind(&self.name)
            .bind(&self.identifier)
            .bind(&self.upstream_url)
            .bind(&self.scopes)
            .bind(SqlJson(&self.operations))
            .bind(&self.operation_enforcement)
            .bind(&self.credential_mode)
    }

    /// Checks every field and reports every problem at once.
    fn validate(mut self) -> ApiResult<Self> {
        let mut problems = Vec::new();
        self.identifier = self.identifier.trim().to_owned();
        match url::Url::parse(&self.identifier) {
            Ok(u) if u.username().is_empty() && u.password().is_none() && self.identifier.len() <= 512 => {}
            _ => problems.push(
                "identifier must be an absolute URI (e.g. https://api.example.com or mcp://tools) without userinfo, ≤ 512 chars".to_owned(),
            ),
        }
        if self.name.is_empty() {
            self.name = self.identifier.chars().take(200).collect();
        }
        if self.name.chars().count() > 200 || self.name.chars().any(char::is_control) {
            problems.push("name must be ≤ 200 printable characters".into());
        }
        match url::Url::parse(&self.upstream_url) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.fragment().is_none() => {}
            _ => problems.push("upstream_url must be an absolute http(s) URL without userinfo or fragment".into()),
        }
        let scope_ok = |s: &String| (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b":_./-".contains(&b));
        if self.scopes.is_empty() || self.scopes.len() > 64 || !self.scopes.iter().all(scope_ok) {
            problems.push("scopes: 1..64 entries, each ^[A-Za-z0-9:_./-]{1,200}$".into());
        }
        self.scopes.dedup();
        if self.operations.len() > 256 {
            problems.push("operations: at most 256".into());
        }
        for op in &mut self.operations {
            op.method = op.method.to_ascii_uppercase();
            if let Err(p) = op.validate(&self.scopes) {
                problems.push(p);
            }
        }
        for (i, a) in self.operations.iter().enumerate() {
            if self.operations[..i].iter().any(|b| b.method == a.method && b.path == a.path) {
                problems.push(format!("operation {} {} is declared twice", a.method, a.path));
            }
        }
        if !matches!(self.operation_enforcement.as_str(), "enforced" | "transport_uniform") {
            problems.push("operation_enforcement must be enforced or transport_uniform".into());
        }
        if !matches!(self.credential_mode.as_str(), "none" | "caracal_jwt") {
            problems.push("credential_mode must be none or caracal_jwt".into());
        }
        if problems.is_empty() { Ok(self) } else { Err(ApiError::bad_request("invalid_resource", problems.join("; "))) }
    }
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
    let (Some(identifier), Some(upstream_url), Some(scopes)) = (b.identifier, b.upstream_url, b.scopes) else {
        return Err(ApiError::bad_request("invalid_resource", "identifier, upstream_url and scopes are required"));
    };
    let def = Definition {
        name: b.name.unwrap_or_default().trim().to_owned(),
        identifier,
        upstream_url,
        scopes,
        operations: b.operations.unwrap_or_default(),
        operation_enforcement: b.operation_enforcement.unwrap_or_else(|| "enforced".into()),
        credential_mode: b.credential_mode.unwrap_or_else(|| "caracal_jwt".into()),
    }
    .validate()?;
    let id = uuid::Uuid::now_v7().to_string();
    let q = sqlx::query_as::<_, ResourceRow>(sql!(
        "INSERT INTO resources (zone_id, id, name, identifier, upstream_url, scopes, operations, operation_enforcement, credential_mode) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id);
    let row = def.bind(q).fetch_one(&state.db).await.map_err(conflict_or)?;
    tracing::info!(zone_id, resource_id = %id, identifier = %def.identifier, by = %who.actor(), "resource created");
    Ok((StatusCode::CREATED, Json(row)))
}

async fn list(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paged<ResourceRow>>> {
    who.require_zone(&zone_id)?;
    let page = q.page()?;
    let q = sqlx::query_as::<_, ResourceRow>(sql!(
        "SELECT {COLUMNS} FROM resources WHERE zone_id = $1 AND archived_at IS NULL \
         AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(&zone_id);
    Ok(Json(fetch_page(&state.db, q, &page).await?))
}

async fn fetch(state: &AppState, zone_id: &str, id: &str) -> ApiResult<ResourceRow> {
    let row: Option<ResourceRow> =
        sqlx::query_as(sql!("SELECT {COLUMNS} FROM resources WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL"))
            .bind(zone_id)
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    row.ok_or_else(|| ApiError::not_found("resource_not_found"))
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
    let cur = fetch(&state, &zone_id, &id).await?;
    let cur_identifier = cur.identifier.clone();
    let def = Definition {
        name: b.name.unwrap_or(cur.name).trim().to_owned(),
        identifier: b.identifier.unwrap_or(cur.identifier),
        upstream_url: b.upstream_url.unwrap_or(cur.upstream_url),
        scopes: b.scopes.unwrap_or(cur.scopes),
        operations: b.operations.unwrap_or(cur.operations.0),
        operation_enforcement: b.operation_enforcement.unwrap_or(cur.operation_enforcement),
        credential_mode: b.credential_mode.unwrap_or(cur.credential_mode),
    }
    .validate()?;
    let q = sqlx::query_as::<_, ResourceRow>(sql!(
        "UPDATE resources SET name = $3, identifier = $4, upstream_url = $5, scopes = $6, operations = $7, \
         operation_enforcement = $8, credential_mode = $9, updated_at = now() \
         WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id);
    let row = def.bind(q).fetch_optional(&state.db).await.map_err(conflict_or)?;
    state.sts.catalog.invalidate_resource(&zone_id, &cur_identifier).await;
    state.sts.catalog.invalidate_resource(&zone_id, &def.identifier).await;
    tracing::info!(zone_id, resource_id = %id, by = %who.actor(), "resource updated");
    row.map(Json).ok_or_else(|| ApiError::not_found("resource_not_found"))
}

async fn archive(State(state): State<AppState>, who: AdminPrincipal, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    who.require_zone(&zone_id)?;
    let archived: Option<(String,)> = sqlx::query_as(
        "UPDATE resources SET archived_at = now() WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL RETURNING identifier",
    )
    .bind(&zone_id)
    .bind(&id)
    .fetch_optional(&state.db)
    .await?;
    let (identifier,) = archived.ok_or_else(|| ApiError::not_found("resource_not_found"))?;
    state.sts.catalog.invalidate_resource(&zone_id, &identifier).await;
    tracing::info!(zone_id, resource_id = %id, by = %who.actor(), "resource archived");
    Ok(StatusCode::NO_CONTENT)
}
