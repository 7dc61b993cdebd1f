//! Step-up approvals: operators decide the holds the STS opened (docs/policy.md, "Step-up").
//!
//! * `GET /v1/zones/{zoneId}/approvals[?state=]` and `GET …/approvals/{id}`: the holds, with what
//!   was asked (resources, scopes, principal, session, delegation) so the operator can judge it.
//! * `POST …/approvals/{id}/decision` `{decision: approved|rejected, binding, reason?}`: decides a
//!   pending hold. `binding` must repeat the hold's, so an operator approves the request they
//!   looked at and not one swapped in since. Update and `pg_notify` commit together.
//! * `GET /approvals/{id}[?wait=N]` (no auth: the random id is the capability, as in the original):
//!   `{id, state, expires_at}`, long-polling up to 25 s for a decision, woken by `LISTEN`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_sts::step_up::holds::STATE;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::extract::AppQuery;
use crate::extract::{AdminPrincipal, AppJson, PageQuery, Paged, fetch_page};
use crate::state::AppState;

/// The Postgres channel a decision is announced on (payload: the hold id).
pub const CHANNEL: &str = "caracal_approval_decided";
/// Longest long-poll.
const MAX_WAIT: Duration = Duration::from_secs(25);
/// Re-read interval while waiting, in case a notification was missed (listener reconnecting).
const FALLBACK_REREAD: Duration = Duration::from_secs(5);

/// Routes (behind the admin layer).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/approvals", get(list))
        .route("/v1/zones/{zone_id}/approvals/{id}", get(show))
        .route("/v1/zones/{zone_id}/approvals/{id}/decision", post(decide))
        .route("/v1/zones/{zone_id}/approvals/{id}/{verdict}", post(verdict))
}

/// `GET /approvals/{id}`: public, the random id is the capability.
pub fn public_router() -> Router<AppState> {
    Router::new().route("/approvals/{id}", get(status)).route("/approvals/{id}/decision", post(subject_decides))
}

/// A hold, as operators see it.
#[derive(Serialize, sqlx::FromRow)]
pub struct ApprovalRow {
    pub id: String,
    pub zone_id: String,
    pub application_id: String,
    pub principal: String,
    pub authority_record_id: Option<String>,
    pub agent_session_id: Option<String>,
    pub delegation_edge_id: Option<String>,
    pub resources: Vec<String>,
    pub scopes: Vec<String>,
    pub policy_version_id: Option<String>,
    pub binding: String,
    pub approval_type: String,
    pub tier: String,
    pub approver: String,
    pub state: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub consumed_at: Option<DateTime<Utc>>,
}

crate::extract::keyed!(ApprovalRow, id);

const COLUMNS: &str = "id, zone_id, application_id, principal, authority_record_id, agent_session_id, delegation_edge_id, \
     resources, scopes, policy_version_id, binding, approval_type, tier, approver, {STATE} AS state, expires_at, created_at, \
     request_id, decided_at, decided_by, decision_reason, consumed_at";

fn columns() -> String {
    COLUMNS.replace("{STATE}", STATE)
}

const STATES: [&str; 5] = ["pending", "approved", "rejected", "consumed", "expired"];

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn list(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<Json<Paged<ApprovalRow>>> {
    who.require_zone(&zone_id)?;
    let page = q.page.page()?;
    if let Some(s) = &q.state
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request("invalid_query", "state must be pending, approved, rejected, consumed or expired"));
    }
    let query = sqlx::query_as::<_, ApprovalRow>(sql!(
        "SELECT * FROM (SELECT {} FROM step_up_approvals WHERE zone_id = $1 \
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))) a \
         WHERE ($2::text IS NULL OR a.state = $2) ORDER BY created_at DESC, id DESC LIMIT $5",
        columns()
    ))
    .bind(&zone_id)
    .bind(q.state);
    Ok(Json(fetch_page(&state.db, query, &page).await?))
}

async fn load(db: &sqlx::PgPool, zone_id: &str, id: &str) -> ApiResult<ApprovalRow> {
    sqlx::query_as(sql!("SELECT {} FROM step_up_approvals WHERE zone_id = $1 AND id = $2", columns()))
        .bind(zone_id)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("approval_not_found"))
}

async fn show(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<ApprovalRow>> {
    who.require_zone(&zone_id)?;
    Ok(Json(load(&state.db, &zone_id, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: String,
    binding: String,
    reason: Option<String>,
}

/// The original's `approve` / `reject` body: a reason, and (ours) the binding the operator saw.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VerdictBody {
    reason: Option<String>,
    binding: Option<String>,
}

/// `POST …/approvals/{id}/approve` or `…/reject` (`…/decision` is its own, static, route).
async fn verdict(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id, verdict)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ApprovalRow>> {
    let decision = match verdict.as_str() {
        "approve" => "approved",
        "reject" => "rejected",
        _ => return Err(ApiError::not_found("route_not_found")),
    };
    let b: VerdictBody = crate::extract::optional_json(&body)?;
    settle(&state, &who, &zone_id, &id, decision, b.binding.as_deref(), b.reason).await
}

async fn decide(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
    AppJson(body): AppJson<DecisionBody>,
) -> ApiResult<Json<ApprovalRow>> {
    let decision = match body.decision.as_str() {
        "approved" => "approved",
        "rejected" => "rejected",
        _ => return Err(ApiError::bad_request("invalid_body", "decision must be approved or rejected")),
    };
    settle(&state, &who, &zone_id, &id, decision, Some(&body.binding), body.reason).await
}

/// Decides a pending hold. `binding`, when given, must be the held request's (the operator decides
/// what they were shown); the original's `approve` / `reject` send none.
async fn settle(
    state: &AppState,
    who: &AdminPrincipal,
    zone_id: &str,
    id: &str,
    decision: &'static str,
    binding: Option<&str>,
    reason: Option<String>,
) -> ApiResult<Json<ApprovalRow>> {
    who.require_zone(zone_id)?;
    record(state, zone_id, id, decision, binding, reason, Decider::Operator(&who.actor())).await
}

/// Who decides a hold.
enum Decider<'a> {
    /// An admin (operator) of the zone: any hold not reserved for its subject.
    Operator(&'a str),
    /// The federated user a `subject` hold was opened for (the hold's principal).
    Subject { sub: &'a str, session: &'a str },
}

/// `POST /approvals/{id}/decision` with the user's own session mandate as bearer (the SDK's
/// `decide_approval`): only the federated user a `subject` hold acts for decides it, and only with
/// the hold's binding (a prompt that did not show the held request cannot decide it).
async fn subject_decides(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<ApprovalRow>> {
    let unauthorized = || ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "invalid_token", "a user's session mandate is required");
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .filter(|t| !t.is_empty() && t.len() <= 4096)
        .ok_or_else(unauthorized)?;
    // Authenticated first: the mandate names its zone, and must verify there as a live user session.
    let zone_id = caracal_shared::jws::Compact::parse(token)
        .ok()
        .and_then(|c| c.claims::<caracal_shared::Claims>().ok())
        .map(|c| c.zone_id)
        .filter(|z| caracal_shared::mandate::is_valid_id(z))
        .ok_or_else(unauthorized)?;
    let claims = state.sts.verify_runtime_mandate(&zone_id, token).await.map_err(|_| unauthorized())?;
    if claims.sub_type != caracal_shared::SubType::User {
        return Err(unauthorized());
    }
    let b: DecisionBody = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let decision = match b.decision.as_str() {
        "approved" | "approve" => "approved",
        "rejected" | "reject" => "rejected",
        _ => return Err(ApiError::bad_request("invalid_body", "decision must be approved or rejected")),
    };
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::not_found("approval_not_found"));
    }
    record(&state, &zone_id, &id, decision, Some(&b.binding), b.reason, Decider::Subject { sub: &claims.sub, session: &claims.sid }).await
}

/// Records a decision on a pending hold (see [`Decider`] for who may).
async fn record(
    state: &AppState,
    zone_id: &str,
    id: &str,
    decision: &'static str,
    binding: Option<&str>,
    reason: Option<String>,
    decider: Decider<'_>,
) -> ApiResult<Json<ApprovalRow>> {
    if let Some(r) = &reason
        && (r.chars().count() > 500 || r.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("invalid_body", "reason must be at most 500 printable characters"));
    }
    let mut tx = state.db.begin().await?;
    let current: Option<(String, String, String, String)> = sqlx::query_as(sql!(
        "SELECT {STATE} AS state, binding, approver, principal FROM step_up_approvals WHERE zone_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(zone_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (current, held, approver, principal) = current.ok_or_else(|| ApiError::not_found("approval_not_found"))?;
    let decided_by = match (&decider, approver.as_str()) {
        (Decider::Operator(actor), "operator" | "any") => (*actor).to_owned(),
        (Decider::Operator(_), _) => {
            return Err(ApiError::conflict("approval_reserved_for_subject", "the policy reserves this approval for the user it acts for"));
        }
        (Decider::Subject { sub, session }, "subject") if *sub == principal => format!("subject:{session}"),
        (Decider::Subject { .. }, _) => {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "access_denied",
                "only the user this approval acts for decides it",
            ));
        }
    };
    if current != "pending" {
        return Err(ApiError::conflict("approval_not_pending", format!("the approval is {current}")));
    }
    if let Some(seen) = binding
        && !caracal_shared::sig::ct_eq(held.as_bytes(), seen.as_bytes())
    {
        return Err(ApiError::conflict("binding_mismatch", "binding does not match the held request"));
    }
    sqlx::query(
        "UPDATE step_up_approvals SET state = $3, decided_at = now(), decided_by = $4, decision_reason = $5 \
         WHERE zone_id = $1 AND id = $2",
    )
    .bind(zone_id)
    .bind(id)
    .bind(decision)
    .bind(&decided_by)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(zone_id, approval_id = %id, decision, by = %decided_by, "step-up approval decided");
    Ok(Json(load(&state.db, zone_id, id).await?))
}

#[derive(Deserialize)]
struct StatusQuery {
    wait: Option<String>,
}

#[derive(Serialize, sqlx::FromRow)]
struct Status {
    id: String,
    state: String,
    expires_at: DateTime<Utc>,
}

async fn read_status(db: &sqlx::PgPool, id: &str) -> ApiResult<Status> {
    sqlx::query_as(sql!("SELECT id, {STATE} AS state, expires_at FROM step_up_approvals WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("approval_not_found"))
}

async fn status(State(state): State<AppState>, Path(id): Path<String>, AppQuery(q): AppQuery<StatusQuery>) -> ApiResult<Json<Status>> {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::not_found("approval_not_found"));
    }
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => {
            let secs: u64 = w.parse().map_err(|_| ApiError::bad_request("invalid_query", "wait must be a non-negative integer"))?;
            Duration::from_secs(secs).min(MAX_WAIT)
        }
    };
    // Subscribe before the first read, so a decision between the read and the wait is not missed.
    let mut decided = state.approvals.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let s = read_status(&state.db, &id).await?;
        if s.state != "pending" || tokio::time::Instant::now() >= deadline {
            return Ok(Json(s));
        }
        let until = deadline.min(tokio::time::Instant::now() + FALLBACK_REREAD);
        loop {
            match tokio::time::timeout_at(until, decided.recv()).await {
                Ok(Ok(decided_id)) if decided_id != id => continue,
                // Ours, lagged (re-read to be safe), closed, or time to re-read.
                _ => break,
            }
        }
    }
}

/// Forwards `NOTIFY caracal_approval_decided` to waiting requests; reconnects on its own.
pub async fn listen(db: sqlx::PgPool, tx: broadcast::Sender<String>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&db).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "approval listener: connecting failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "approval listener: LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) => {
                        let _ = tx.send(n.payload().to_owned());
                    }
                    Err(e) => {
                        // Waiters re-read on their own every few seconds, so a gap only delays them.
                        tracing::warn!(error = %e, "approval listener: connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
