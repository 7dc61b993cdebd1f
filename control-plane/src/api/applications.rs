//! Applications (OAuth clients of the STS). The client secret is generated here (`cs_` + 32 random
//! bytes), returned once, and stored as its SHA-256 digest; an operator may also set one of their
//! own with `PATCH {client_secret}` (the original's provisioning clients rotate that way). Rows
//! carry the original's `registration_method` (`managed`; `dcr` applications expire) and
//! `expires_at`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::sessions::{Which, announce, revoke_records};
use crate::api::{CatalogEntry, announce_catalog, check_name, forget_catalog, require_live_zone};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{AdminPrincipal, AppJson, ZoneRows, ZoneTable, list_rows, read_row};
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/applications", post(create).get(list_rows::<ApplicationRow>))
        .route("/v1/zones/{zone_id}/applications/{id}", get(read_row::<ApplicationRow>).patch(update).delete(archive))
        .route("/v1/zones/{zone_id}/applications/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/zones/{zone_id}/applications/dcr", post(register))
}

/// An application, without its secret.
#[derive(Serialize, sqlx::FromRow)]
pub struct ApplicationRow {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub traits: Vec<String>,
    /// `managed` (by an operator) or `dcr` (dynamic client registration).
    pub registration_method: String,
    /// When the application stops minting (none: never).
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::extract::keyed!(ApplicationRow, id);

impl ZoneRows for ApplicationRow {
    const TABLE: ZoneTable = TABLE;
}

#[derive(Serialize)]
struct WithSecret {
    #[serde(flatten)]
    row: ApplicationRow,
    /// Shown once; only its digest is stored.
    client_secret: String,
}

const COLUMNS: &str = "id, zone_id, name, traits, registration_method, expires_at, created_at, updated_at";

/// How the admin API lists and reads applications.
const TABLE: ZoneTable = ZoneTable { table: "applications", columns: COLUMNS, not_found: "application_not_found" };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    traits: Vec<String>,
    /// Only `managed` is created here (the original's clients send it).
    registration_method: Option<String>,
}

/// `PATCH`: any of the name, a client secret of the operator's choosing, the traits.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    client_secret: Option<String>,
    traits: Option<Vec<String>>,
}

/// A client secret an operator sets: long enough to be a secret, and nothing that could be
/// mangled on its way through a form or a header.
fn check_secret(secret: &str) -> ApiResult<()> {
    if !(32..=512).contains(&secret.len()) || !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ApiError::bad_request("invalid_client_secret", "client_secret must be 32..512 visible ASCII characters"));
    }
    Ok(())
}

fn check_traits(traits: &[String]) -> ApiResult<()> {
    let ok = |t: &String| {
        (1..=128).contains(&t.len())
            && t.as_bytes()[0].is_ascii_alphabetic()
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    if traits.len() > 64 || !traits.iter().all(ok) {
        return Err(ApiError::bad_request("invalid_application", "traits: at most 64, each ^[A-Za-z][A-Za-z0-9._:-]{0,127}$"));
    }
    Ok(())
}

/// A trait of the `control` namespace: what makes an application a control key and says what it
/// may do through Control.
fn is_control_trait(t: &str) -> bool {
    t.starts_with("control:")
}

/// What a change of an existing application must pass, read in one `FOR UPDATE` of its row in `tx`
/// (a concurrent change cannot slip between the check and the write):
/// * Control acts for a control key, which must not widen its own authority: through Control no
///   control key is changed, rotated or archived (403 `control_key_protected`; giving `control:`
///   traits is refused by [`refuse_control_traits_via_control`]);
/// * a DCR application's secret is the one it was registered with and expires with it: when the
///   change `sets_secret`, 400 `client_secret_not_configured`, as in the original.
async fn check_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    who: &AdminPrincipal,
    zone_id: &str,
    id: &str,
    sets_secret: bool,
) -> ApiResult<()> {
    if !who.via_control && !sets_secret {
        return Ok(());
    }
    let row: Option<(Vec<String>, String)> =
        sqlx::query_as("SELECT traits, registration_method FROM applications WHERE zone_id = $1 AND id = $2 FOR UPDATE")
            .bind(zone_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    // A missing application is the write's to answer (404).
    let Some((traits, method)) = row else { return Ok(()) };
    who.refuse_via_control(
        traits.iter().any(|t| is_control_trait(t)),
        "control_key_protected",
        "Control cannot change, rotate or archive a control key",
    )?;
    if sets_secret && method == "dcr" {
        return Err(ApiError::bad_request("client_secret_not_configured", "a DCR application's secret expires with it; it is not set"));
    }
    Ok(())
}

fn refuse_control_traits_via_control(who: &AdminPrincipal, traits: &[String]) -> ApiResult<()> {
    who.refuse_via_control(
        traits.iter().any(|t| is_control_trait(t)),
        "control_trait_forbidden",
        "control: traits are given by an administrator, not through Control",
    )
}

fn new_secret() -> (String, [u8; 32]) {
    let secret = caracal_shared::b64::random_secret("cs_", 32);
    let digest = caracal_shared::sig::sha256(secret.as_bytes());
    (secret, digest)
}

async fn create(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(body): AppJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    require_live_zone(&state.db, &zone_id).await?;
    let name = check_name(&body.name, 200, "invalid_application")?;
    check_traits(&body.traits)?;
    refuse_control_traits_via_control(&who, &body.traits)?;
    if body.registration_method.as_deref().is_some_and(|m| m != "managed") {
        return Err(ApiError::bad_request(
            "invalid_application",
            "registration_method must be managed (dynamic client registration has its own route)",
        ));
    }
    let (client_secret, digest) = new_secret();
    let id = uuid::Uuid::now_v7().to_string();
    let row: ApplicationRow = match sqlx::query_as(sql!(
        "INSERT INTO applications (zone_id, id, name, client_secret_sha256, traits) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&name)
    .bind(&digest[..])
    .bind(&body.traits)
    .fetch_one(&state.db)
    .await
    {
        Ok(r) => r,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict("application_name_taken", "an application with this name exists"));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(zone_id, application_id = %id, by = %who.actor(), "application created");
    Ok((StatusCode::CREATED, Json(WithSecret { row, client_secret })))
}

async fn rotate_secret(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    let (client_secret, digest) = new_secret();
    let mut tx = state.db.begin().await?;
    check_change(&mut tx, &who, &zone_id, &id, true).await?;
    let row: Option<ApplicationRow> = sqlx::query_as(sql!(
        "UPDATE applications SET client_secret_sha256 = $3, updated_at = now() \
         WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&digest[..])
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| ApiError::not_found("application_not_found"))?;
    // The old secret stops working on every instance as the announcement lands, not at the
    // catalog's cache lifetime.
    announce_catalog(&mut tx, &zone_id, CatalogEntry::Application(&id)).await?;
    tx.commit().await?;
    forget_catalog(&state, &zone_id, CatalogEntry::Application(&id)).await;
    tracing::info!(zone_id, application_id = %id, by = %who.actor(), "client secret rotated");
    Ok(Json(WithSecret { row, client_secret }))
}

/// Most live DCR applications a zone may have.
const MAX_LIVE_DCR: i64 = 1000;

/// `POST …/applications/dcr`: a short-lived application (the original's admin-gated dynamic client
/// registration): only while the zone's `dcr_enabled`; `expires_in` 1..3600 s (default 3600); no
/// traits; its secret is shown once and cannot be set or rotated (it expires instead).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    name: String,
    expires_in: Option<i64>,
}

async fn register(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(body): AppJson<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    let name = check_name(&body.name, 200, "invalid_application")?;
    let expires_in = body.expires_in.unwrap_or(3600);
    if !(1..=3600).contains(&expires_in) {
        return Err(ApiError::bad_request("invalid_application", "expires_in must be 1..3600 seconds"));
    }
    let mut tx = state.db.begin().await?;
    // Locks the zone row: concurrent registrations count one after the other.
    let zone: Option<(bool,)> = sqlx::query_as("SELECT dcr_enabled FROM zones WHERE id = $1 AND archived_at IS NULL FOR UPDATE")
        .bind(&zone_id)
        .fetch_optional(&mut *tx)
        .await?;
    match zone {
        None => return Err(ApiError::not_found("zone_not_found")),
        Some((false,)) => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "dcr_disabled", "dynamic client registration is off for this zone"));
        }
        Some((true,)) => {}
    }
    if live_dcr(&mut tx, &zone_id).await?.len() as i64 >= MAX_LIVE_DCR {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "dcr_limit_exceeded",
            format!("at most {MAX_LIVE_DCR} live DCR applications"),
        ));
    }
    let (client_secret, digest) = new_secret();
    let id = uuid::Uuid::now_v7().to_string();
    let row: ApplicationRow = sqlx::query_as(sql!(
        "INSERT INTO applications (zone_id, id, name, client_secret_sha256, traits, registration_method, expires_at) \
         VALUES ($1, $2, $3, $4, '{{}}', 'dcr', now() + make_interval(secs => $5)) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&name)
    .bind(&digest[..])
    .bind(expires_in as f64)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::conflict("application_name_taken", "an application with this name exists")
        } else {
            e.into()
        }
    })?;
    tx.commit().await?;
    tracing::info!(zone_id, application_id = %id, expires_in, by = %who.actor(), "application registered (dcr)");
    Ok((StatusCode::CREATED, Json(WithSecret { row, client_secret })))
}

/// The zone's live (unexpired, unarchived) DCR applications.
pub(crate) async fn live_dcr(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, zone_id: &str) -> ApiResult<Vec<String>> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM applications WHERE zone_id = $1 AND registration_method = 'dcr' AND archived_at IS NULL AND expires_at > now()",
    )
    .bind(zone_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(ids.into_iter().map(|(i,)| i).collect())
}

/// Applications archived in a transaction: their ids, and the sessions revoked with them.
#[derive(Default)]
pub(crate) struct Archived {
    ids: Vec<String>,
    revoked: Vec<(String, String)>,
}

/// Archives `ids` and revokes their sessions inside `tx` (announced by [`after_archive`]).
pub(crate) async fn archive_all(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, zone_id: &str, ids: &[String]) -> ApiResult<Archived> {
    crate::coordinator::cascade::lock_graph(tx, zone_id).await?;
    let mut out = Archived::default();
    for id in ids {
        sqlx::query("UPDATE applications SET archived_at = now() WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL")
            .bind(zone_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        out.revoked.extend(revoke_records(tx, zone_id, Which::Application(id), "application_archived").await?);
        announce_catalog(tx, zone_id, CatalogEntry::Application(id)).await?;
        out.ids.push(id.clone());
    }
    Ok(out)
}

/// After commit: this instance forgets the archived applications and the revocations go out.
pub(crate) async fn after_archive(state: &AppState, zone_id: &str, archived: &Archived) {
    for id in &archived.ids {
        forget_catalog(state, zone_id, CatalogEntry::Application(id)).await;
    }
    announce(state, zone_id, &archived.revoked);
}

/// Changes the name, the traits or the client secret (the old secret stops working as the
/// catalog announcement lands on every STS instance).
async fn update(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
    AppJson(body): AppJson<UpdateBody>,
) -> ApiResult<Json<ApplicationRow>> {
    who.require_zone(&zone_id)?;
    if body.name.is_none() && body.client_secret.is_none() && body.traits.is_none() {
        return Err(ApiError::bad_request("no_fields", "send name, client_secret or traits"));
    }
    let name = body.name.as_deref().map(|n| check_name(n, 200, "invalid_application")).transpose()?;
    if let Some(t) = &body.traits {
        check_traits(t)?;
        refuse_control_traits_via_control(&who, t)?;
    }
    if let Some(s) = &body.client_secret {
        check_secret(s)?;
    }
    let digest = body.client_secret.as_deref().map(|s| caracal_shared::sig::sha256(s.as_bytes()).to_vec());
    let mut tx = state.db.begin().await?;
    check_change(&mut tx, &who, &zone_id, &id, body.client_secret.is_some()).await?;
    let row: Option<ApplicationRow> = match sqlx::query_as(sql!(
        "UPDATE applications SET name = COALESCE($3, name), client_secret_sha256 = COALESCE($4, client_secret_sha256), \
         traits = COALESCE($5, traits), updated_at = now() \
         WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&name)
    .bind(&digest)
    .bind(&body.traits)
    .fetch_optional(&mut *tx)
    .await
    {
        Ok(r) => r,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict("application_name_taken", "an application with this name exists"));
        }
        Err(e) => return Err(e.into()),
    };
    let row = row.ok_or_else(|| ApiError::not_found("application_not_found"))?;
    announce_catalog(&mut tx, &zone_id, CatalogEntry::Application(&id)).await?;
    tx.commit().await?;
    forget_catalog(&state, &zone_id, CatalogEntry::Application(&id)).await;
    let changed: Vec<&str> = [("name", name.is_some()), ("client_secret", digest.is_some()), ("traits", body.traits.is_some())]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
    tracing::info!(zone_id, application_id = %id, ?changed, by = %who.actor(), "application updated");
    Ok(Json(row))
}

/// Archives the application and revokes its live sessions in the same transaction: an archived
/// client must not keep acting through mandates it already holds.
async fn archive(State(state): State<AppState>, who: AdminPrincipal, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    who.require_zone(&zone_id)?;
    let mut tx = state.db.begin().await?;
    crate::coordinator::cascade::lock_graph(&mut tx, &zone_id).await?;
    check_change(&mut tx, &who, &zone_id, &id, false).await?;
    // `FOR UPDATE` before the change: a session mint writing its authority record key-share locks
    // this row, so it either commits first (and is revoked below) or sees the archive and refuses.
    let live: Option<(String,)> =
        sqlx::query_as("SELECT id FROM applications WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL FOR UPDATE")
            .bind(&zone_id)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
    if live.is_none() {
        return Err(ApiError::not_found("application_not_found"));
    }
    sqlx::query("UPDATE applications SET archived_at = now() WHERE zone_id = $1 AND id = $2")
        .bind(&zone_id)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let revoked = revoke_records(&mut tx, &zone_id, Which::Application(&id), "application_archived").await?;
    announce_catalog(&mut tx, &zone_id, CatalogEntry::Application(&id)).await?;
    tx.commit().await?;
    forget_catalog(&state, &zone_id, CatalogEntry::Application(&id)).await;
    announce(&state, &zone_id, &revoked);
    tracing::info!(zone_id, application_id = %id, sessions_revoked = revoked.len(), by = %who.actor(), "application archived");
    Ok(StatusCode::NO_CONTENT)
}
