//! Zones: the unit of isolation. Creating a zone also creates its first signing key, in the same
//! transaction, so a zone never exists without a JWKS.
//!
//! Archiving a zone (`DELETE`) stops it, in one transaction with the outbox: every live root
//! session, agent session and delegation edge of the zone is revoked and announced on
//! `caracal.sessions.revoke` (gateways deny its mandates from memory), and
//! `caracal.keys.invalidate` makes every STS instance drop the zone's keys, so none mints for it or
//! publishes its JWKS (404, like an unknown zone). Its zone-scoped admin tokens stop authenticating
//! (the token lookup reads only live zones) and its Coordinator refuses every caller.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_shared::streams;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::check_name;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::AppQuery;
use crate::extract::{AdminPrincipal, AppJson, PageQuery, Paged, Scope, fetch_page};
use crate::outbox;
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones", post(create).get(list))
        .route("/v1/zones/{zone_id}", get(read).patch(update).delete(archive))
        .route("/v1/zones/{zone_id}/dcr-status", get(dcr_status))
}

/// A zone.
#[derive(Serialize, sqlx::FromRow)]
pub struct ZoneRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    /// Whether admins may register short-lived applications (`…/applications/dcr`).
    pub dcr_enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::extract::keyed!(ZoneRow, id);

const COLUMNS: &str = "id, name, slug, dcr_enabled, created_at, updated_at";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    slug: Option<String>,
}

fn slugify(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-');
    if s.is_empty() { "zone".to_owned() } else { s.chars().take(100).collect() }
}

fn valid_slug(s: &str) -> bool {
    !s.is_empty() && s.len() <= 120 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `base`, or `base-2`, `base-3`, … whichever is free.
async fn free_slug(state: &AppState, base: &str) -> ApiResult<String> {
    let taken: Vec<(String,)> =
        sqlx::query_as("SELECT slug FROM zones WHERE slug = $1 OR slug LIKE $1 || '-%'").bind(base).fetch_all(&state.db).await?;
    let taken: std::collections::HashSet<String> = taken.into_iter().map(|(s,)| s).collect();
    Ok(std::iter::once(base.to_owned())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|s| !taken.contains(s))
        .expect("an unbounded sequence has a free slug"))
}

async fn create(State(state): State<AppState>, who: AdminPrincipal, AppJson(body): AppJson<CreateBody>) -> ApiResult<impl IntoResponse> {
    who.require_global()?;
    let name = check_name(&body.name, 120, "invalid_zone")?;
    let slug = match body.slug {
        Some(s) if valid_slug(&s) => s,
        Some(_) => return Err(ApiError::bad_request("invalid_zone", "slug must match ^[a-z0-9-]{1,120}$")),
        None => free_slug(&state, &slugify(&name)).await?,
    };
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = state.db.begin().await?;
    let row: ZoneRow = match sqlx::query_as(sql!("INSERT INTO zones (id, name, slug) VALUES ($1, $2, $3) RETURNING {COLUMNS}"))
        .bind(&id)
        .bind(&name)
        .bind(&slug)
        .fetch_one(&mut *tx)
        .await
    {
        Ok(r) => r,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict("zone_slug_conflict", format!("a zone with slug {slug:?} exists")));
        }
        Err(e) => return Err(e.into()),
    };
    let kid = state.sts.keys.create_initial(&mut tx, &id).await?;
    // Every STS instance learns of the zone at once (their zone directories reload).
    outbox::enqueue(&mut tx, Some(&id), streams::KEYS_INVALIDATE, &[("zone_id", &id), ("reason", "zone_created")]).await?;
    tx.commit().await?;
    state.sts.keys.invalidate(&id).await;
    state.outbox_notify.notify_one();
    tracing::info!(zone_id = %id, kid, by = %who.actor(), "zone created");
    Ok((StatusCode::CREATED, Json(row)))
}

async fn list(State(state): State<AppState>, who: AdminPrincipal, AppQuery(q): AppQuery<PageQuery>) -> ApiResult<Json<Paged<ZoneRow>>> {
    let page = q.page()?;
    let only = match &who.scope {
        Scope::Global => None,
        Scope::Zone(z) => Some(z.clone()),
    };
    let q = sqlx::query_as::<_, ZoneRow>(sql!(
        "SELECT {COLUMNS} FROM zones WHERE archived_at IS NULL AND ($1::text IS NULL OR id = $1) \
         AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(only);
    Ok(Json(fetch_page(&state.db, q, &page).await?))
}

async fn read(State(state): State<AppState>, who: AdminPrincipal, Path(zone_id): Path<String>) -> ApiResult<Json<ZoneRow>> {
    who.require_zone(&zone_id)?;
    let row: Option<ZoneRow> = sqlx::query_as(sql!("SELECT {COLUMNS} FROM zones WHERE id = $1 AND archived_at IS NULL"))
        .bind(&zone_id)
        .fetch_optional(&state.db)
        .await?;
    row.map(Json).ok_or_else(|| ApiError::not_found("zone_not_found"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    dcr_enabled: Option<bool>,
    /// With `dcr_enabled: false` while DCR applications are live: `keep_live` or `revoke_live`.
    dcr_shutdown: Option<String>,
}

async fn update(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(body): AppJson<UpdateBody>,
) -> ApiResult<Json<ZoneRow>> {
    who.require_zone(&zone_id)?;
    if body.name.is_none() && body.dcr_enabled.is_none() {
        return Err(ApiError::bad_request("no_fields", "nothing to update"));
    }
    let name = body.name.as_deref().map(|n| check_name(n, 120, "invalid_zone")).transpose()?;
    match (body.dcr_enabled, body.dcr_shutdown.as_deref()) {
        (_, None) | (Some(false), Some("keep_live" | "revoke_live")) => {}
        (Some(false), Some(_)) => return Err(ApiError::bad_request("invalid_zone", "dcr_shutdown must be keep_live or revoke_live")),
        (_, Some(_)) => return Err(ApiError::bad_request("dcr_shutdown_not_applicable", "dcr_shutdown goes with dcr_enabled: false")),
    }
    let mut tx = state.db.begin().await?;
    let mut revoked = crate::api::applications::Archived::default();
    if body.dcr_enabled == Some(false) {
        let live = crate::api::applications::live_dcr(&mut tx, &zone_id).await?;
        match body.dcr_shutdown.as_deref() {
            _ if live.is_empty() => {}
            None => {
                return Err(ApiError::conflict(
                    "dcr_shutdown_required",
                    format!("{} DCR applications are live: send dcr_shutdown keep_live or revoke_live", live.len()),
                ));
            }
            Some("revoke_live") => revoked = crate::api::applications::archive_all(&mut tx, &zone_id, &live).await?,
            Some(_) => {}
        }
    }
    let row: Option<ZoneRow> = sqlx::query_as(sql!(
        "UPDATE zones SET name = COALESCE($2, name), dcr_enabled = COALESCE($3, dcr_enabled), updated_at = now() \
         WHERE id = $1 AND archived_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&name)
    .bind(body.dcr_enabled)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| ApiError::not_found("zone_not_found"))?;
    tx.commit().await?;
    crate::api::applications::after_archive(&state, &zone_id, &revoked).await;
    Ok(Json(row))
}

/// Whether the zone registers DCR applications, and how many are live (not archived or expired).
async fn dcr_status(State(state): State<AppState>, who: AdminPrincipal, Path(zone_id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    who.require_zone(&zone_id)?;
    let (enabled, live): (bool, i64) = sqlx::query_as(
        "SELECT z.dcr_enabled, (SELECT count(*) FROM applications a WHERE a.zone_id = z.id AND a.registration_method = 'dcr' \
         AND a.archived_at IS NULL AND a.expires_at > now()) FROM zones z WHERE z.id = $1 AND z.archived_at IS NULL",
    )
    .bind(&zone_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("zone_not_found"))?;
    Ok(Json(serde_json::json!({"id": zone_id, "dcr_enabled": enabled, "live_dcr_applications": live})))
}

async fn archive(State(state): State<AppState>, who: AdminPrincipal, Path(zone_id): Path<String>) -> ApiResult<StatusCode> {
    who.require_global()?;
    let mut tx = state.db.begin().await?;
    crate::coordinator::cascade::lock_graph(&mut tx, &zone_id).await?;
    // Then `FOR UPDATE`: a session mint writing its authority record holds a key-share lock on
    // the zone row, so it either commits before this archive (and is revoked below) or sees the
    // zone archived and refuses.
    let live: Option<(String,)> = sqlx::query_as("SELECT id FROM zones WHERE id = $1 AND archived_at IS NULL FOR UPDATE")
        .bind(&zone_id)
        .fetch_optional(&mut *tx)
        .await?;
    if live.is_none() {
        return Err(ApiError::not_found("zone_not_found"));
    }
    sqlx::query("UPDATE zones SET archived_at = now(), updated_at = now() WHERE id = $1").bind(&zone_id).execute(&mut *tx).await?;
    let anchors = crate::api::sessions::revoke_zone(&mut tx, &zone_id, "zone_archived").await?;
    outbox::enqueue(&mut tx, Some(&zone_id), streams::KEYS_INVALIDATE, &[("zone_id", &zone_id), ("reason", "zone_archived")]).await?;
    tx.commit().await?;
    state.sts.keys.invalidate(&zone_id).await;
    let anchors: Vec<&str> = anchors.iter().map(String::as_str).collect();
    crate::api::sessions::announce_anchors(&state, &zone_id, &anchors);
    state.outbox_notify.notify_one();
    tracing::info!(zone_id, revoked = anchors.len(), by = %who.actor(), "zone archived");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(super::slugify("Payments Prod!"), "payments-prod");
        assert_eq!(super::slugify("  ***  "), "zone");
        assert!(super::valid_slug("a-1"));
        assert!(!super::valid_slug("A_1"));
    }
}
