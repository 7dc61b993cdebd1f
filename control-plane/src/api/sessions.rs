//! Root sessions (authority records) and their revocation.
//!
//! `POST /v1/zones/{zoneId}/authority-records/{id}/revoke` marks the record revoked, records the
//! anchor in `revocations`, and enqueues `caracal.sessions.revoke` (signed by the relay) in one
//! transaction. Every mandate minted from the session carries its id as `root_sid`, so the STS stops
//! minting and exchanging for it at once, and gateways cut it as the message arrives.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_shared::streams;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::AppQuery;
use crate::extract::{AdminPrincipal, PageQuery, Paged, fetch_page, optional_json};
use crate::outbox;
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/authority-records", get(list))
        .route("/v1/zones/{zone_id}/authority-records/{id}/revoke", post(revoke))
}

/// A root session.
#[derive(Serialize, sqlx::FromRow)]
pub struct AuthorityRecordRow {
    pub authority_record_id: String,
    pub zone_id: String,
    pub session_type: String,
    pub subject_id: String,
    pub application_id: String,
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

crate::extract::keyed!(AuthorityRecordRow, authority_record_id);

const COLUMNS: &str = "id AS authority_record_id, zone_id, session_type, subject_id, application_id, \
     CASE WHEN status = 'active' AND expires_at <= now() THEN 'expired' ELSE status END AS status, \
     expires_at, created_at, revoked_at, revoked_reason";

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn list(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<Json<Paged<AuthorityRecordRow>>> {
    who.require_zone(&zone_id)?;
    let page = q.page.page()?;
    if let Some(s) = &q.status
        && !matches!(s.as_str(), "active" | "revoked" | "expired")
    {
        return Err(ApiError::bad_request("invalid_query", "status must be active, revoked or expired"));
    }
    let query = sqlx::query_as::<_, AuthorityRecordRow>(sql!(
        "SELECT * FROM (SELECT {COLUMNS} FROM authority_records WHERE zone_id = $1 \
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))) r \
         WHERE ($2::text IS NULL OR r.status = $2) ORDER BY created_at DESC, authority_record_id DESC LIMIT $5"
    ))
    .bind(&zone_id)
    .bind(q.status);
    Ok(Json(fetch_page(&state.db, query, &page).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: Option<String>,
}

#[derive(Serialize)]
struct Revoked {
    #[serde(flatten)]
    record: AuthorityRecordRow,
    /// The outbox message announcing the revocation (absent when it was already revoked).
    outbox_id: Option<String>,
}

async fn revoke(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Revoked>> {
    who.require_zone(&zone_id)?;
    let body: RevokeBody = optional_json(&body)?;
    let reason = body.reason.unwrap_or_else(|| "session_revoked".into());
    if reason.is_empty() || reason.chars().count() > 512 || reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_revocation", "reason must be 1..512 printable characters"));
    }
    let mut tx = state.db.begin().await?;
    let revoked = revoke_records(&mut tx, &zone_id, Which::Record(&id), &reason).await?;
    let outbox_id = revoked.first().map(|(_, outbox)| outbox.clone()).filter(|o| !o.is_empty());
    let record: Option<AuthorityRecordRow> = sqlx::query_as(sql!("SELECT {COLUMNS} FROM authority_records WHERE zone_id = $1 AND id = $2"))
        .bind(&zone_id)
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?;
    let record = record.ok_or_else(|| ApiError::not_found("authority_record_not_found"))?;
    tx.commit().await?;
    announce(&state, &zone_id, &revoked);
    if outbox_id.is_some() {
        tracing::info!(zone_id, authority_record_id = %id, reason, by = %who.actor(), "session revoked");
    }
    Ok(Json(Revoked { record, outbox_id }))
}

/// Which root sessions to revoke.
pub(crate) enum Which<'a> {
    /// One authority record.
    Record(&'a str),
    /// Every live session of an application.
    Application(&'a str),
    /// Every unexpired live session of the zone (archiving it).
    Zone,
}

/// Revokes live root sessions inside `tx`: marks the records, records the anchors in
/// `revocations`, and enqueues one `caracal.sessions.revoke` message each. Returns
/// `(anchor id, outbox id)` per revoked root session and then per derived agent session and edge
/// (with an empty outbox id: the cascade recorded those); call [`announce`] after commit.
pub(crate) async fn revoke_records(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    zone_id: &str,
    which: Which<'_>,
    reason: &str,
) -> ApiResult<Vec<(String, String)>> {
    let (record, application, unexpired_only) = match which {
        Which::Record(id) => (Some(id), None, false),
        Which::Application(app) => (None, Some(app), false),
        // Expired records anchor no valid mandate; a zone may hold very many of them.
        Which::Zone => (None, None, true),
    };
    // Before this transaction locks any row (the cascade below needs it; see `cascade`).
    crate::coordinator::cascade::lock_graph(tx, zone_id).await?;
    let changed: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE authority_records SET status = 'revoked', revoked_at = now(), revoked_reason = $4 \
         WHERE zone_id = $1 AND ($2::text IS NULL OR id = $2) AND ($3::text IS NULL OR application_id = $3) \
           AND status = 'active' AND (NOT $5 OR expires_at > now()) RETURNING id, expires_at",
    )
    .bind(zone_id)
    .bind(record)
    .bind(application)
    .bind(reason)
    .bind(unexpired_only)
    .fetch_all(&mut **tx)
    .await?;
    let revoked_at = Utc::now().to_rfc3339();
    let mut out = Vec::with_capacity(changed.len());
    for (id, expires_at) in changed {
        sqlx::query(
            "INSERT INTO revocations (zone_id, anchor_kind, anchor_id, reason, expires_at) VALUES ($1, 'sid', $2, $3, $4) \
             ON CONFLICT (zone_id, anchor_kind, anchor_id) DO NOTHING",
        )
        .bind(zone_id)
        .bind(&id)
        .bind(reason)
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
        // `expires_at` tells verifiers when keeping the anchor stops mattering.
        let expires = expires_at.to_rfc3339();
        let fields = [
            ("zone_id", zone_id),
            ("session_id", &id),
            ("sid", &id),
            ("reason", reason),
            ("revoked_at", &revoked_at),
            ("expires_at", &expires),
        ];
        let outbox_id = outbox::enqueue(tx, Some(zone_id), streams::SESSIONS_REVOKE, &fields).await?;
        out.push((id, outbox_id));
    }
    // Authority derived from these root sessions goes with them.
    let ids: Vec<String> = out.iter().map(|(id, _)| id.clone()).collect();
    let derived = crate::coordinator::cascade::for_root_sessions(tx, zone_id, &ids, reason).await?;
    out.extend(derived.anchors().into_iter().map(|a| (a.to_owned(), String::new())));
    Ok(out)
}

/// Takes away all authority in a zone inside `tx` (archiving it): every unexpired root session
/// (announced one message each, like any revocation), the agent sessions derived from them, and
/// any other agent session still live, with every edge touching them. Returns the anchors for
/// [`announce_anchors`] after commit.
pub(crate) async fn revoke_zone(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, zone_id: &str, reason: &str) -> ApiResult<Vec<String>> {
    let mut anchors: Vec<String> = revoke_records(tx, zone_id, Which::Zone, reason).await?.into_iter().map(|(a, _)| a).collect();
    let rest: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM agent_sessions WHERE zone_id = $1 AND status <> 'terminated' AND expires_at > now()")
            .bind(zone_id)
            .fetch_all(&mut **tx)
            .await?;
    let rest: Vec<String> = rest.into_iter().map(|(id,)| id).collect();
    let derived = crate::coordinator::cascade::terminate_sessions(tx, zone_id, &rest, reason).await?;
    anchors.extend(derived.anchors().into_iter().map(str::to_owned));
    Ok(anchors)
}

/// After commit: this instance's STS stops at once, and the relay publishes without waiting.
pub(crate) fn announce(state: &AppState, zone_id: &str, revoked: &[(String, String)]) {
    let anchors: Vec<&str> = revoked.iter().map(|(id, _)| id.as_str()).collect();
    announce_anchors(state, zone_id, &anchors);
}

/// After commit: marks anchors revoked in this instance's STS and wakes the outbox relay.
pub(crate) fn announce_anchors(state: &AppState, zone_id: &str, anchors: &[&str]) {
    if anchors.is_empty() {
        return;
    }
    state.sts.revoked.insert_many(zone_id, anchors);
    state.outbox_notify.notify_one();
}
