//! Agent sessions: `POST /zones/{z}/agents` (idempotent with `Idempotency-Key`), read, heartbeat,
//! suspend, resume, terminate (`DELETE`, cascading).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::sessions::announce_anchors;
use crate::coordinator::auth::Caller;
use crate::coordinator::cascade;
use crate::error::{ApiError, ApiResult};
use crate::extract::AppJson;
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/zones/{zone_id}/agents", post(start))
        .route("/zones/{zone_id}/agents/{id}", get(read).delete(terminate))
        .route("/zones/{zone_id}/agents/{id}/heartbeat", post(heartbeat))
        .route("/zones/{zone_id}/agents/{id}/suspend", patch(suspend).post(suspend))
        .route("/zones/{zone_id}/agents/{id}/resume", patch(resume).post(resume))
}

/// An agent session.
#[derive(Serialize, sqlx::FromRow)]
pub struct AgentSession {
    pub id: String,
    pub zone_id: String,
    pub application_id: String,
    pub subject_authority_record_id: String,
    pub parent_id: Option<String>,
    pub status: String,
    pub lifecycle: String,
    pub expires_at: DateTime<Utc>,
    pub heartbeat_interval_seconds: Option<i32>,
    pub heartbeat_deadline_at: Option<DateTime<Utc>>,
    pub labels: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub terminated_at: Option<DateTime<Utc>>,
    pub termination_reason: Option<String>,
}

const COLUMNS: &str = "id, zone_id, application_id, subject_authority_record_id, parent_id, status, lifecycle, expires_at, \
     heartbeat_interval_seconds, heartbeat_deadline_at, labels, started_at, terminated_at, termination_reason";

/// Heartbeats a service session may miss before it counts as gone.
const MISSED_HEARTBEATS: i32 = 3;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    lifecycle: Option<String>,
    ttl_seconds: Option<i64>,
    heartbeat_interval_seconds: Option<i32>,
    #[serde(default)]
    labels: Vec<String>,
    parent_id: Option<String>,
}

/// An agent session of the zone, read through `db` (the pool, or a transaction).
pub(crate) async fn fetch<'e>(db: impl sqlx::PgExecutor<'e>, zone_id: &str, id: &str) -> ApiResult<AgentSession> {
    let row: Option<AgentSession> = sqlx::query_as(sql!("SELECT {COLUMNS} FROM agent_sessions WHERE zone_id = $1 AND id = $2"))
        .bind(zone_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.ok_or_else(|| ApiError::not_found("session_not_found"))
}

impl AgentSession {
    /// Active, unexpired, and (for a service session) heartbeating.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == "active" && self.expires_at > now && self.heartbeat_deadline_at.is_none_or(|d| d > now)
    }
}

async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(zone_id): Path<String>,
    headers: HeaderMap,
    AppJson(b): AppJson<StartBody>,
) -> ApiResult<impl IntoResponse> {
    let Caller::Runtime(claims) = &caller else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "runtime_required", "agent sessions are started by an application's runtime"));
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(k) = &key {
        if k.is_empty() || k.len() > 128 {
            return Err(ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1..128 characters"));
        }
        let existing: Option<AgentSession> = sqlx::query_as(sql!(
            "SELECT {COLUMNS} FROM agent_sessions WHERE zone_id = $1 AND application_id = $2 AND idempotency_key = $3"
        ))
        .bind(&zone_id)
        .bind(&claims.client_id)
        .bind(k)
        .fetch_optional(&state.db)
        .await?;
        if let Some(s) = existing {
            return Ok((StatusCode::OK, Json(s)));
        }
    }
    let lifecycle = b.lifecycle.unwrap_or_else(|| "task".into());
    let now = Utc::now();
    // A session never outlives the root session it derives from.
    let root_expiry = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
    let (expires_at, interval) = match lifecycle.as_str() {
        "task" => {
            let ttl = b.ttl_seconds.unwrap_or(3600);
            if !(1..=86_400).contains(&ttl) || b.heartbeat_interval_seconds.is_some() {
                return Err(ApiError::bad_request("invalid_session", "a task session takes ttl_seconds (1..86400) and no heartbeat"));
            }
            ((now + chrono::Duration::seconds(ttl)).min(root_expiry), None)
        }
        "service" => {
            let interval = b.heartbeat_interval_seconds.unwrap_or(30);
            if !(1..=3600).contains(&interval) || b.ttl_seconds.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_session",
                    "a service session takes heartbeat_interval_seconds (1..3600) and no ttl",
                ));
            }
            (root_expiry, Some(interval))
        }
        _ => return Err(ApiError::bad_request("invalid_session", "lifecycle must be task or service")),
    };
    if b.labels.len() > 32 || b.labels.iter().any(|l| l.is_empty() || l.len() > 128) {
        return Err(ApiError::bad_request("invalid_session", "labels: at most 32, each 1..128 characters"));
    }
    // Under the graph lock, the root session and the parent are checked and the session inserted
    // in one transaction: a revocation running at the same time either sees this session (and
    // terminates it) or is seen here.
    let mut tx = state.db.begin().await?;
    cascade::lock_graph(&mut tx, &zone_id).await?;
    let (root_live,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM authority_records WHERE zone_id = $1 AND id = $2 AND status = 'active' AND expires_at > now())",
    )
    .bind(&zone_id)
    .bind(&claims.root_sid)
    .fetch_one(&mut *tx)
    .await?;
    if !root_live {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the root session is revoked or expired"));
    }
    if let Some(parent) = &b.parent_id {
        let p = fetch(&mut *tx, &zone_id, parent).await?;
        if p.application_id != claims.client_id || !p.is_live(now) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_parent",
                "the parent session is not a live session of this application",
            ));
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    let deadline = interval.map(|i| now + chrono::Duration::seconds(i64::from(i * MISSED_HEARTBEATS)));
    let row: AgentSession = sqlx::query_as(sql!(
        "INSERT INTO agent_sessions (zone_id, id, application_id, subject_authority_record_id, parent_id, lifecycle, expires_at, \
           heartbeat_interval_seconds, heartbeat_deadline_at, labels, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&claims.client_id)
    .bind(&claims.root_sid)
    .bind(&b.parent_id)
    .bind(&lifecycle)
    .bind(expires_at)
    .bind(interval)
    .bind(deadline)
    .bind(&b.labels)
    .bind(&key)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(zone_id, agent_session_id = %id, application_id = %claims.client_id, lifecycle, "agent session started");
    Ok((StatusCode::CREATED, Json(row)))
}

async fn read(State(state): State<AppState>, caller: Caller, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<Json<AgentSession>> {
    let s = fetch(&state.db, &zone_id, &id).await?;
    caller.require_owner(&s.application_id)?;
    Ok(Json(s))
}

async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<AgentSession>> {
    let s = fetch(&state.db, &zone_id, &id).await?;
    caller.require_owner(&s.application_id)?;
    if s.lifecycle != "service" {
        return Err(ApiError::conflict("not_a_service_session", "only service sessions heartbeat"));
    }
    if !s.is_live(Utc::now()) {
        return Err(ApiError::conflict("session_not_active", "the session is suspended, terminated, expired or missed its heartbeats"));
    }
    let row: AgentSession = sqlx::query_as(sql!(
        "UPDATE agent_sessions SET heartbeat_deadline_at = now() + make_interval(secs => heartbeat_interval_seconds * $3), updated_at = now() \
         WHERE zone_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(f64::from(MISSED_HEARTBEATS))
    .fetch_one(&state.db)
    .await?;
    Ok(Json(row))
}

async fn set_status(state: &AppState, caller: &Caller, zone_id: &str, id: &str, from: &str, to: &str) -> ApiResult<Json<AgentSession>> {
    let s = fetch(&state.db, zone_id, id).await?;
    caller.require_owner(&s.application_id)?;
    let row: Option<AgentSession> = sqlx::query_as(sql!(
        "UPDATE agent_sessions SET status = $4, updated_at = now() WHERE zone_id = $1 AND id = $2 AND status = $3 RETURNING {COLUMNS}"
    ))
    .bind(zone_id)
    .bind(id)
    .bind(from)
    .bind(to)
    .fetch_optional(&state.db)
    .await?;
    tracing::info!(zone_id, agent_session_id = id, status = to, by = %caller.actor(), "agent session status changed");
    row.map(Json).ok_or_else(|| ApiError::conflict("invalid_transition", format!("the session is {}, not {from}", s.status)))
}

async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<AgentSession>> {
    set_status(&state, &caller, &zone_id, &id, "active", "suspended").await
}

async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<AgentSession>> {
    set_status(&state, &caller, &zone_id, &id, "suspended", "active").await
}

async fn terminate(State(state): State<AppState>, caller: Caller, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let s = fetch(&state.db, &zone_id, &id).await?;
    caller.require_owner(&s.application_id)?;
    let mut tx = state.db.begin().await?;
    let revoked = cascade::terminate_sessions(&mut tx, &zone_id, std::slice::from_ref(&id), "session_terminated").await?;
    tx.commit().await?;
    announce_anchors(&state, &zone_id, &revoked.anchors());
    tracing::info!(zone_id, agent_session_id = %id, sessions = revoked.sessions.len(), edges = revoked.edges.len(), by = %caller.actor(), "agent session terminated");
    Ok(StatusCode::NO_CONTENT)
}
