//! Bootstrap and admin tokens.
//!
//! `POST /v1/bootstrap` with `Authorization: Bearer <BOOTSTRAP_ADMIN_TOKEN>` creates the first global
//! admin token and returns it once; afterwards it answers 409 (seed 003: the bootstrap token is for
//! initial setup only). Tokens are `cat_` + 32 random bytes (base64url), stored as SHA-256.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::{check_name, require_live_zone};
use crate::auth_failures::{self, Surface};
use crate::error::{ApiError, ApiResult};
use crate::extract::AppQuery;
use crate::extract::{AdminPrincipal, AppJson, Page, PageQuery, Paged, fetch_page, optional_json};
use crate::state::AppState;

/// Routes (behind the admin layer).
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin-tokens", post(create).get(list)).route("/v1/admin-tokens/{id}", delete(revoke))
}

/// `POST /v1/bootstrap`: public, it checks its own token.
pub fn public_router() -> Router<AppState> {
    Router::new().route("/v1/bootstrap", post(bootstrap))
}

/// A token row, without its digest.
#[derive(Serialize, sqlx::FromRow)]
pub struct AdminTokenRow {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub zone_id: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// When the token stops working; `None` never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last successful authentication, to the minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

crate::extract::keyed!(AdminTokenRow, id);

#[derive(Serialize)]
struct Created {
    #[serde(flatten)]
    row: AdminTokenRow,
    /// The plaintext token, shown once.
    token: String,
}

async fn insert(
    conn: &mut sqlx::PgConnection,
    name: &str,
    scope: &str,
    zone_id: Option<&str>,
    created_by: &str,
    expires_at: Option<DateTime<Utc>>,
) -> ApiResult<Created> {
    let token = caracal_shared::b64::random_secret("cat_", 32);
    let digest = caracal_shared::sig::sha256(token.as_bytes());
    let id = uuid::Uuid::now_v7().to_string();
    let row: AdminTokenRow = sqlx::query_as(
        "INSERT INTO admin_tokens (id, name, token_sha256, scope, zone_id, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING id, name, scope, zone_id, created_by, created_at, expires_at, last_used_at, revoked_at",
    )
    .bind(&id)
    .bind(name)
    .bind(&digest[..])
    .bind(scope)
    .bind(zone_id)
    .bind(created_by)
    .bind(expires_at)
    .fetch_one(conn)
    .await?;
    tracing::info!(admin_token_id = %row.id, scope, zone_id, created_by, "admin token created");
    Ok(Created { row, token })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BootstrapBody {
    name: Option<String>,
}

async fn bootstrap(
    State(state): State<AppState>,
    actor: Option<axum::Extension<crate::evidence::Actor>>,
    req: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    let Some(expected) = &state.cfg.bootstrap_admin_token else {
        return Err(ApiError::not_found("bootstrap_disabled"));
    };
    let ip = crate::extract::client_ip(&req);
    if let Err(throttled) = auth_failures::check(&state, ip, Surface::Bootstrap).await {
        return Ok(throttled);
    }
    let (parts, body) = req.into_parts();
    let presented = crate::extract::bearer(&parts.headers).unwrap_or("");
    if !caracal_shared::sig::ct_eq(presented.as_bytes(), expected.expose().as_bytes()) {
        auth_failures::record(&state, ip, Surface::Bootstrap).await;
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_bootstrap_token", "the bootstrap token is not valid"));
    }
    let body = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| ApiError::bad_request("invalid_body", "body too large"))?;
    let body: BootstrapBody = optional_json(&body)?;
    if let Some(axum::Extension(slot)) = actor {
        slot.bootstrap();
    }
    let mut tx = state.db.begin().await?;
    // Serializes concurrent bootstraps: exactly one wins.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('caracal.bootstrap'))").execute(&mut *tx).await?;
    let (done,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM admin_tokens WHERE created_by = 'bootstrap')").fetch_one(&mut *tx).await?;
    if done {
        return Err(ApiError::conflict("already_bootstrapped", "bootstrap already created the first admin token; use an admin token"));
    }
    let name = match body.name {
        Some(n) => check_name(&n, 120, "invalid_admin_token_request")?,
        None => "bootstrap".to_owned(),
    };
    let created = insert(&mut tx, &name, "global", None, "bootstrap", None).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    scope: String,
    zone_id: Option<String>,
    /// Lifetime in seconds (60 s to a year); absent, the token lives until revoked.
    expires_in_seconds: Option<i64>,
}

/// Longest lifetime a token may be given (one that must live longer is created without one).
const MAX_EXPIRES_IN_SECONDS: i64 = 365 * 24 * 3600;

async fn create(State(state): State<AppState>, who: AdminPrincipal, AppJson(body): AppJson<CreateBody>) -> ApiResult<impl IntoResponse> {
    who.require_global()?;
    let name = check_name(&body.name, 120, "invalid_admin_token_request")?;
    let zone_id = match (body.scope.as_str(), body.zone_id.as_deref()) {
        ("global", None) => None,
        ("global", Some(_)) => return Err(ApiError::bad_request("zone_id_not_allowed_for_global", "a global token has no zone_id")),
        ("zone", Some(z)) => {
            require_live_zone(&state.db, z).await?;
            Some(z)
        }
        ("zone", None) => return Err(ApiError::bad_request("zone_id_required", "a zone token needs zone_id")),
        _ => return Err(ApiError::bad_request("invalid_admin_token_request", "scope must be global or zone")),
    };
    let expires_at = match body.expires_in_seconds {
        None => None,
        Some(s) if (60..=MAX_EXPIRES_IN_SECONDS).contains(&s) => Some(Utc::now() + chrono::Duration::seconds(s)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_admin_token_request",
                "expires_in_seconds must be 60..31536000 (a minute to a year); omit it for a token that lives until revoked",
            ));
        }
    };
    let mut conn = state.db.acquire().await?;
    let created = insert(&mut conn, &name, &body.scope, zone_id, &who.actor(), expires_at).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(
    State(state): State<AppState>,
    who: AdminPrincipal,
    AppQuery(q): AppQuery<PageQuery>,
) -> ApiResult<Json<Paged<AdminTokenRow>>> {
    who.require_global()?;
    let page: Page = q.page()?;
    let q = sqlx::query_as::<_, AdminTokenRow>(
        "SELECT id, name, scope, zone_id, created_by, created_at, expires_at, last_used_at, revoked_at FROM admin_tokens \
         WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2)) ORDER BY created_at DESC, id DESC LIMIT $3",
    );
    Ok(Json(fetch_page(&state.db, q, &page).await?))
}

async fn revoke(State(state): State<AppState>, who: AdminPrincipal, Path(id): Path<String>) -> ApiResult<StatusCode> {
    who.require_global()?;
    let done =
        sqlx::query("UPDATE admin_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL").bind(&id).execute(&state.db).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("admin_token_not_found"));
    }
    tracing::info!(admin_token_id = %id, by = %who.actor(), "admin token revoked");
    Ok(StatusCode::NO_CONTENT)
}
