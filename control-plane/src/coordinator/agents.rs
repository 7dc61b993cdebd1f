//! Agent sessions: `POST /zones/{z}/agents` (idempotent with `Idempotency-Key`), read, heartbeat,
//! lease, suspend, resume, terminate (`DELETE`, cascading). Wire shapes follow the published SDK
//! (`docs/coordinator.md`).
//!
//! Lifetimes are the session's own, not the starting mandate's: a task session lives
//! `ttl_seconds` (default 3600, at most 86400); a service session lives while its lease is renewed
//! (heartbeats), never past `AGENT_SESSION_MAX_SECONDS`. Revoking the root session (the mandate's
//! authority record) still terminates every session started under it ([`cascade`]).
//!
//! A service session's lease has a generation: the start answers 1, `POST …/lease` (a process
//! taking the session over) bumps it, and a heartbeat or a terminate that presents another one is
//! fenced (409 `session_lease_fenced`), so a previous holder cannot renew or end what it no longer
//! holds.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::sessions::announce_anchors;
use crate::coordinator::auth::Caller;
use crate::coordinator::{cascade, idempotency, inherit};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{AppJson, optional_json};
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/zones/{zone_id}/agents", post(start))
        .route("/zones/{zone_id}/agents/{id}", get(read).delete(terminate))
        .route("/zones/{zone_id}/agents/{id}/heartbeat", post(heartbeat))
        .route("/zones/{zone_id}/agents/{id}/lease", post(lease))
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
    pub metadata: sqlx::types::Json<serde_json::Value>,
    /// A task session's requested lifetime (none for a service session).
    pub ttl_seconds: Option<i32>,
    /// 0 for a task session; a service session's lease generation (≥ 1).
    pub lease_generation: i64,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Distance from the root of the session tree (a session without parent is 0).
    pub depth: i32,
    /// The edge this session inherited from its parent at start (`parent_authority: inherit`).
    pub delegation_edge_id: Option<String>,
    #[serde(skip)]
    pub idempotency_request_sha256: Option<Vec<u8>>,
}

const COLUMNS: &str = "id, zone_id, application_id, subject_authority_record_id, parent_id, status, lifecycle, expires_at, \
     heartbeat_interval_seconds, heartbeat_deadline_at, labels, started_at, terminated_at, termination_reason, metadata, \
     ttl_seconds, lease_generation, last_heartbeat_at, depth, delegation_edge_id, idempotency_request_sha256";

/// An agent session as the Coordinator answers it: the row plus `agent_session_id` (the SDK's name
/// for `id`).
#[derive(Serialize)]
pub struct SessionView<'a> {
    pub agent_session_id: &'a str,
    #[serde(flatten)]
    pub session: &'a AgentSession,
}

impl AgentSession {
    /// Active, unexpired, and (for a service session) within its lease.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == "active" && self.expires_at > now && self.heartbeat_deadline_at.is_none_or(|d| d > now)
    }

    /// The answer's shape.
    pub fn view(&self) -> SessionView<'_> {
        SessionView { agent_session_id: &self.id, session: self }
    }
}

/// Heartbeats a service session may miss before its lease lapses.
const MISSED_HEARTBEATS: i32 = 3;
/// Deepest session tree (a session without parent is depth 0).
const MAX_DEPTH: i32 = 10;
/// Largest `metadata`, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What a session does with its parent's authority at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum ParentAuthority {
    /// Receive the parent's (single, live) inbound edge, mirrored onto parent → child.
    #[default]
    Inherit,
    /// Start with lifecycle authority only (the SDK then narrows with its own edge).
    None,
}

/// The start request. Serialized (in this field order) for the idempotency digest.
#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct StartBody {
    /// Must be the caller's application (the SDK always sends it).
    application_id: Option<String>,
    #[serde(default)]
    lifecycle: Option<String>,
    ttl_seconds: Option<i64>,
    heartbeat_interval_seconds: Option<i32>,
    #[serde(default)]
    labels: Vec<String>,
    parent_id: Option<String>,
    parent_authority: Option<ParentAuthority>,
    /// Which of the parent's inbound edges to inherit (default: the only live one).
    inherit_parent_edge_id: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The authority record the session acts for (default: the bearer's root session); an active
    /// record of the caller's application.
    subject_session_id: Option<String>,
    /// That record's mandate; accepted and not used (the record itself is checked).
    subject_token: Option<String>,
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

fn gone() -> ApiError {
    ApiError::conflict("session_not_found_or_not_active", "the session is suspended, terminated, expired or its lease lapsed")
}

fn fenced() -> ApiError {
    ApiError::conflict("session_lease_fenced", "another holder has taken the session's lease (lease_generation is stale)")
}

/// Lifetime and lease of a new session.
struct Lifetime {
    expires_at: DateTime<Utc>,
    ttl_seconds: Option<i32>,
    interval: Option<i32>,
}

fn lifetime(b: &StartBody, lifecycle: &str, now: DateTime<Utc>, service_cap_seconds: i64) -> ApiResult<Lifetime> {
    match lifecycle {
        "task" => {
            let ttl = b.ttl_seconds.unwrap_or(3600);
            if !(1..=86_400).contains(&ttl) || b.heartbeat_interval_seconds.is_some() {
                return Err(ApiError::bad_request("invalid_session", "a task session takes ttl_seconds (1..86400) and no heartbeat"));
            }
            Ok(Lifetime { expires_at: now + chrono::Duration::seconds(ttl), ttl_seconds: Some(ttl as i32), interval: None })
        }
        "service" => {
            let interval = b.heartbeat_interval_seconds.unwrap_or(30);
            if !(1..=3600).contains(&interval) || b.ttl_seconds.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_session",
                    "a service session takes heartbeat_interval_seconds (1..3600) and no ttl",
                ));
            }
            Ok(Lifetime { expires_at: now + chrono::Duration::seconds(service_cap_seconds), ttl_seconds: None, interval: Some(interval) })
        }
        _ => Err(ApiError::bad_request("invalid_session", "lifecycle must be task or service")),
    }
}

async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(zone_id): Path<String>,
    headers: HeaderMap,
    AppJson(b): AppJson<StartBody>,
) -> ApiResult<Response> {
    let Caller::Runtime(claims) = &caller else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "runtime_required", "agent sessions are started by an application's runtime"));
    };
    let app = claims.client_id.as_str();
    if b.application_id.as_deref().is_some_and(|a| a != app) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "application_ownership_required",
            "a runtime starts sessions for its own application only",
        ));
    }
    let key = idempotency::read(&headers, &b)?;
    let lifecycle = b.lifecycle.clone().unwrap_or_else(|| "task".into());
    let now = Utc::now();
    let life = lifetime(&b, &lifecycle, now, state.cfg.agent_session_max_seconds)?;
    if b.labels.len() > 32 || b.labels.iter().any(|l| l.is_empty() || l.len() > 128) {
        return Err(ApiError::bad_request("invalid_session", "labels: at most 32, each 1..128 characters"));
    }
    let metadata = serde_json::Value::Object(b.metadata.clone().unwrap_or_default());
    if serde_json::to_vec(&metadata).map_or(usize::MAX, |v| v.len()) > MAX_METADATA_BYTES {
        return Err(ApiError::bad_request("invalid_session", format!("metadata: at most {MAX_METADATA_BYTES} bytes")));
    }
    // Under the graph lock, the root session and the parent are checked and the session inserted
    // in one transaction: a revocation running at the same time either sees this session (and
    // terminates it) or is seen here. The idempotency lookup runs under it too, so two requests
    // with one key never both insert.
    let mut tx = state.db.begin().await?;
    cascade::lock_graph(&mut tx, &zone_id).await?;
    if let Some(k) = &key {
        let existing: Option<AgentSession> = sqlx::query_as(sql!(
            "SELECT {COLUMNS} FROM agent_sessions WHERE zone_id = $1 AND application_id = $2 AND idempotency_key = $3"
        ))
        .bind(&zone_id)
        .bind(app)
        .bind(&k.key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(s) = existing {
            idempotency::check_replay(s.idempotency_request_sha256.as_deref(), k, s.is_live(now))?;
            return Ok(idempotency::replayed(s.view()));
        }
    }
    let subject = subject_record(&mut tx, &zone_id, app, b.subject_session_id.as_deref(), &claims.root_sid).await?;
    let (depth, inherited) = match &b.parent_id {
        Some(parent) => {
            let p = fetch(&mut *tx, &zone_id, parent).await.map_err(|_| ApiError::not_found("parent_not_found"))?;
            if p.application_id != app {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "parent_ownership_required",
                    "the parent session belongs to another application",
                ));
            }
            if !p.is_live(now) {
                return Err(ApiError::not_found("parent_not_found"));
            }
            if p.depth + 1 > MAX_DEPTH {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "session_depth_limit_exceeded",
                    format!("sessions nest at most {MAX_DEPTH} deep"),
                ));
            }
            let inherited = match b.parent_authority.unwrap_or_default() {
                ParentAuthority::Inherit => inherit::parent_edge(&mut tx, &zone_id, &p, app, b.inherit_parent_edge_id.as_deref()).await?,
                ParentAuthority::None => None,
            };
            (p.depth + 1, inherited)
        }
        None => (0, None),
    };
    let id = uuid::Uuid::now_v7().to_string();
    let edge_id = inherited.as_ref().map(|_| uuid::Uuid::now_v7().to_string());
    let deadline = life.interval.map(|i| now + chrono::Duration::seconds(i64::from(i * MISSED_HEARTBEATS)));
    let inserted = sqlx::query_as::<_, AgentSession>(sql!(
        "INSERT INTO agent_sessions (zone_id, id, application_id, subject_authority_record_id, parent_id, lifecycle, expires_at, \
           heartbeat_interval_seconds, heartbeat_deadline_at, labels, idempotency_key, metadata, ttl_seconds, lease_generation, \
           last_heartbeat_at, depth, delegation_edge_id, idempotency_request_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(app)
    .bind(&subject)
    .bind(&b.parent_id)
    .bind(&lifecycle)
    .bind(life.expires_at)
    .bind(life.interval)
    .bind(deadline)
    .bind(&b.labels)
    .bind(key.as_ref().map(|k| &k.key))
    .bind(sqlx::types::Json(&metadata))
    .bind(life.ttl_seconds)
    .bind(i64::from(life.interval.is_some()))
    .bind(life.interval.map(|_| now))
    .bind(depth)
    .bind(&edge_id)
    .bind(key.as_ref().map(|k| &k.request_sha256))
    .fetch_one(&mut *tx)
    .await;
    let row = match inserted {
        Ok(row) => row,
        // Cannot happen under the graph lock; should it anyway, the other request's answer is ours.
        Err(e) if is_unique_violation(&e) && key.is_some() => {
            drop(tx);
            return replay_after_race(&state, &zone_id, app, key.as_ref().expect("checked")).await;
        }
        Err(e) => return Err(e.into()),
    };
    if let (Some(parent_edge), Some(edge_id)) = (&inherited, &edge_id) {
        inherit::mirror(&mut tx, &zone_id, parent_edge, edge_id, &row).await?;
    }
    tx.commit().await?;
    tracing::info!(zone_id, agent_session_id = %id, application_id = %app, lifecycle, inherited_edge = ?edge_id, "agent session started");
    Ok((StatusCode::CREATED, Json(row.view())).into_response())
}

async fn replay_after_race(state: &AppState, zone_id: &str, app: &str, key: &idempotency::Key) -> ApiResult<Response> {
    let s: AgentSession =
        sqlx::query_as(sql!("SELECT {COLUMNS} FROM agent_sessions WHERE zone_id = $1 AND application_id = $2 AND idempotency_key = $3"))
            .bind(zone_id)
            .bind(app)
            .bind(&key.key)
            .fetch_one(&state.db)
            .await?;
    idempotency::check_replay(s.idempotency_request_sha256.as_deref(), key, s.is_live(Utc::now()))?;
    Ok(idempotency::replayed(s.view()))
}

/// The authority record a new session acts for: `asked` (an active record of the caller's
/// application, else 404 `session_not_found`), or the bearer's root session (else 401: the
/// bearer's own root is revoked or expired, and a fresh mint cures that).
async fn subject_record(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    zone_id: &str,
    app: &str,
    asked: Option<&str>,
    root_sid: &str,
) -> ApiResult<String> {
    let record = asked.unwrap_or(root_sid);
    let (live,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM authority_records WHERE zone_id = $1 AND id = $2 AND application_id = $3 \
         AND status = 'active' AND expires_at > now())",
    )
    .bind(zone_id)
    .bind(record)
    .bind(app)
    .fetch_one(&mut **tx)
    .await?;
    match (live, asked) {
        (true, _) => Ok(record.to_owned()),
        (false, Some(_)) => Err(ApiError::not_found("session_not_found")),
        (false, None) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the root session is revoked or expired")),
    }
}

async fn read(State(state): State<AppState>, caller: Caller, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<Response> {
    let s = fetch(&state.db, &zone_id, &id).await?;
    caller.require_owner(&s.application_id)?;
    Ok(Json(s.view()).into_response())
}

/// A service's health, as its heartbeat reports it (accepted, not stored).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Health {
    Starting,
    Healthy,
    Degraded,
    Unhealthy,
}

/// `POST …/heartbeat`: the SDK's fields; only `lease_generation` is acted on.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    lease_generation: Option<i64>,
    #[allow(dead_code)]
    status: Option<Health>,
    #[allow(dead_code)]
    service_id: Option<String>,
    #[allow(dead_code)]
    active_invocations: Option<i64>,
    #[allow(dead_code)]
    metadata: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct HeartbeatAnswer<'a> {
    agent: SessionView<'a>,
    service: Option<()>,
    active_invocations: u32,
}

fn require_service(s: &AgentSession) -> ApiResult<()> {
    if s.lifecycle != "service" {
        return Err(ApiError::conflict("not_a_service_session", "only service sessions hold a lease"));
    }
    Ok(())
}

/// Renews the lease of the holder presenting the current generation; never changes the generation.
async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let b: HeartbeatBody = optional_json(&body)?;
    let s = fetch(&state.db, &zone_id, &id).await?;
    caller.require_owner(&s.application_id)?;
    require_service(&s)?;
    let generation =
        b.lease_generation.ok_or_else(|| ApiError::bad_request("lease_generation_required", "a heartbeat names its lease_generation"))?;
    let row: Option<AgentSession> = sqlx::query_as(sql!(
        "UPDATE agent_sessions SET heartbeat_deadline_at = now() + make_interval(secs => heartbeat_interval_seconds * $4), \
           last_heartbeat_at = now(), updated_at = now() \
         WHERE zone_id = $1 AND id = $2 AND lease_generation = $3 AND status = 'active' AND expires_at > now() \
           AND heartbeat_deadline_at > now() RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(generation)
    .bind(f64::from(MISSED_HEARTBEATS))
    .fetch_optional(&state.db)
    .await?;
    let Some(row) = row else {
        let now_s = fetch(&state.db, &zone_id, &id).await?;
        return Err(if !now_s.is_live(Utc::now()) { gone() } else { fenced() });
    };
    Ok(Json(HeartbeatAnswer { agent: row.view(), service: None, active_invocations: 0 }).into_response())
}

/// `POST …/lease`: a process takes a live service session over (after a restart, say): the
/// generation is bumped, so the previous holder's heartbeats and terminate are fenced.
async fn lease(State(state): State<AppState>, caller: Caller, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<Response> {
    let s = fetch(&state.db, &zone_id, &id).await?;
    caller.require_owner(&s.application_id)?;
    require_service(&s)?;
    let row: Option<AgentSession> = sqlx::query_as(sql!(
        "UPDATE agent_sessions SET lease_generation = lease_generation + 1, last_heartbeat_at = now(), updated_at = now(), \
           heartbeat_deadline_at = now() + make_interval(secs => heartbeat_interval_seconds * $3) \
         WHERE zone_id = $1 AND id = $2 AND status = 'active' AND expires_at > now() AND heartbeat_deadline_at > now() \
         RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(f64::from(MISSED_HEARTBEATS))
    .fetch_optional(&state.db)
    .await?;
    let Some(row) = row else {
        let s = fetch(&state.db, &zone_id, &id).await?;
        let now = Utc::now();
        return Err(if s.status == "active" && s.expires_at > now && s.heartbeat_deadline_at.is_some_and(|d| d <= now) {
            ApiError::conflict("session_lease_expired", "the session's lease lapsed before it was taken over")
        } else {
            gone()
        });
    };
    tracing::info!(zone_id, agent_session_id = %id, lease_generation = row.lease_generation, by = %caller.actor(), "service session lease taken");
    Ok(Json(row.view()).into_response())
}

async fn set_status(state: &AppState, caller: &Caller, zone_id: &str, id: &str, from: &str, to: &str) -> ApiResult<Response> {
    let s = fetch(&state.db, zone_id, id).await?;
    caller.require_owner(&s.application_id)?;
    // Resuming a service session gives it a fresh lease (it could not heartbeat while suspended).
    let row: Option<AgentSession> = sqlx::query_as(sql!(
        "UPDATE agent_sessions SET status = $4, updated_at = now(), heartbeat_deadline_at = CASE \
           WHEN $4 = 'active' AND lifecycle = 'service' THEN now() + make_interval(secs => heartbeat_interval_seconds * $5) \
           ELSE heartbeat_deadline_at END \
         WHERE zone_id = $1 AND id = $2 AND status = $3 RETURNING {COLUMNS}"
    ))
    .bind(zone_id)
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(f64::from(MISSED_HEARTBEATS))
    .fetch_optional(&state.db)
    .await?;
    tracing::info!(zone_id, agent_session_id = id, status = to, by = %caller.actor(), "agent session status changed");
    let row = row.ok_or_else(|| ApiError::conflict("invalid_transition", format!("the session is {}, not {from}", s.status)))?;
    Ok(Json(row.view()).into_response())
}

async fn suspend(State(state): State<AppState>, caller: Caller, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<Response> {
    set_status(&state, &caller, &zone_id, &id, "active", "suspended").await
}

async fn resume(State(state): State<AppState>, caller: Caller, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<Response> {
    set_status(&state, &caller, &zone_id, &id, "suspended", "active").await
}

/// `DELETE …/agents/{id}` body (optional): the holder's lease generation.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TerminateBody {
    lease_generation: Option<i64>,
}

/// Terminates the session and its subtree (idempotent: 204 for one already terminated). A runtime
/// ending a live service session presents its lease generation (400 `lease_generation_required`,
/// 409 `session_lease_fenced` when another holder has taken the lease).
async fn terminate(
    State(state): State<AppState>,
    caller: Caller,
    Path((zone_id, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let b: TerminateBody = optional_json(&body)?;
    let s = fetch(&state.db, &zone_id, &id).await?;
    caller.require_owner(&s.application_id)?;
    let mut tx = state.db.begin().await?;
    cascade::lock_graph(&mut tx, &zone_id).await?;
    let (status, lifecycle, generation): (String, String, i64) =
        sqlx::query_as("SELECT status, lifecycle, lease_generation FROM agent_sessions WHERE zone_id = $1 AND id = $2 FOR UPDATE")
            .bind(&zone_id)
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
    if status != "terminated" && lifecycle == "service" && matches!(caller, Caller::Runtime(_)) {
        match b.lease_generation {
            None => {
                return Err(ApiError::bad_request("lease_generation_required", "ending a service session names its lease_generation"));
            }
            Some(g) if g != generation => return Err(fenced()),
            Some(_) => {}
        }
    }
    let revoked = cascade::terminate_sessions(&mut tx, &zone_id, std::slice::from_ref(&id), "session_terminated").await?;
    tx.commit().await?;
    announce_anchors(&state, &zone_id, &revoked.anchors());
    tracing::info!(zone_id, agent_session_id = %id, sessions = revoked.sessions.len(), edges = revoked.edges.len(), by = %caller.actor(), "agent session terminated");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> StartBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_sdk_start_body_is_accepted_and_unknown_fields_are_not() {
        let b = body(serde_json::json!({
            "application_id": "app", "ttl_seconds": 300, "metadata": {"task": "e2e"}, "labels": ["e2e"],
            "parent_authority": "inherit", "parent_id": "p", "subject_session_id": "s", "subject_token": "t",
            "inherit_parent_edge_id": "e", "lifecycle": "task"
        }));
        assert_eq!(b.parent_authority, Some(ParentAuthority::Inherit));
        assert!(serde_json::from_value::<StartBody>(serde_json::json!({"parent_authority": "all"})).is_err());
        assert!(serde_json::from_value::<StartBody>(serde_json::json!({"surprise": 1})).is_err());
        assert!(serde_json::from_value::<StartBody>(serde_json::json!({"metadata": [1]})).is_err(), "metadata is an object");
    }

    #[test]
    fn lifetimes_are_the_sessions_own() {
        let now = Utc::now();
        let task = lifetime(&body(serde_json::json!({})), "task", now, 604_800).unwrap();
        assert_eq!((task.expires_at - now).num_seconds(), 3600, "default task lifetime");
        let task = lifetime(&body(serde_json::json!({"ttl_seconds": 86_400})), "task", now, 604_800).unwrap();
        assert_eq!((task.expires_at - now).num_seconds(), 86_400);
        assert!(lifetime(&body(serde_json::json!({"ttl_seconds": 86_401})), "task", now, 604_800).is_err());
        let svc = lifetime(&body(serde_json::json!({})), "service", now, 604_800).unwrap();
        assert_eq!(((svc.expires_at - now).num_seconds(), svc.interval), (604_800, Some(30)));
        assert!(lifetime(&body(serde_json::json!({"ttl_seconds": 5})), "service", now, 604_800).is_err());
    }

    #[test]
    fn heartbeat_bodies_of_the_sdk_parse() {
        let b: HeartbeatBody = optional_json(br#"{"status":"healthy","lease_generation":1}"#).unwrap();
        assert_eq!(b.lease_generation, Some(1));
        let b: HeartbeatBody = optional_json(b"").unwrap();
        assert_eq!(b.lease_generation, None);
        assert!(optional_json::<HeartbeatBody>(br#"{"status":"asleep","lease_generation":1}"#).is_err());
    }
}
