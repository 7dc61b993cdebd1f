//! `GET /v1/zones/{z}/sessions` (the original admin client's `sessions.list`): the zone's governed
//! agent sessions, newest first, with their subject attribution — the authority record they act
//! under, its subject, and for a federated user the user id and issuer. Filters `status`,
//! `application_id`, `subject_id`; keyset pages like every admin list.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::AppQuery;
use crate::extract::{AdminPrincipal, PageQuery, Paged, fetch_page};
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/zones/{zone_id}/sessions", get(list))
}

/// A governed session as the original lists it.
#[derive(Serialize, sqlx::FromRow)]
pub struct SessionRow {
    pub agent_session_id: String,
    pub zone_id: String,
    pub application_id: String,
    pub parent_id: Option<String>,
    pub subject_authority_record_id: String,
    pub subject_id: Option<String>,
    pub federated_user_id: Option<String>,
    pub federated_user_issuer: Option<String>,
    pub status: String,
    pub lifecycle: String,
    pub labels: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub terminated_at: Option<DateTime<Utc>>,
}

crate::extract::keyed!(SessionRow, agent_session_id);

#[derive(Deserialize)]
struct Filters {
    status: Option<String>,
    application_id: Option<String>,
    subject_id: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppQuery(f): AppQuery<Filters>,
) -> ApiResult<Json<Paged<SessionRow>>> {
    who.require_zone(&zone_id)?;
    if f.status.as_deref().is_some_and(|s| !matches!(s, "active" | "suspended" | "terminated")) {
        return Err(ApiError::bad_request("invalid_query", "status must be active, suspended or terminated"));
    }
    let page = PageQuery { limit: f.limit, cursor: f.cursor }.page()?;
    let q = sqlx::query_as::<_, SessionRow>(
        "SELECT s.id AS agent_session_id, s.zone_id, s.application_id, s.parent_id, s.subject_authority_record_id, \
         r.subject_id, \
         CASE WHEN r.session_type = 'user' THEN r.subject_id END AS federated_user_id, \
         CASE WHEN r.session_type = 'user' THEN r.claims_json->>'iss' END AS federated_user_issuer, \
         s.status, s.lifecycle, s.labels, s.expires_at, s.started_at AS created_at, s.terminated_at \
         FROM agent_sessions s JOIN authority_records r ON r.zone_id = s.zone_id AND r.id = s.subject_authority_record_id \
         WHERE s.zone_id = $1 AND ($2::text IS NULL OR s.status = $2) AND ($3::text IS NULL OR s.application_id = $3) \
         AND ($4::text IS NULL OR r.subject_id = $4) \
         AND ($5::timestamptz IS NULL OR (s.started_at, s.id) < ($5, $6)) ORDER BY s.started_at DESC, s.id DESC LIMIT $7",
    )
    .bind(&zone_id)
    .bind(&f.status)
    .bind(&f.application_id)
    .bind(&f.subject_id);
    Ok(Json(fetch_page(&state.db, q, &page).await?))
}
