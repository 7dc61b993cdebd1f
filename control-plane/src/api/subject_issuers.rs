//! Subject issuers: the OpenID providers whose `id_token`s a zone's applications may exchange for
//! a user session (`docs/federation.md`). `issuer` must equal the token's `iss` byte for byte;
//! `jwks_url` is where its keys are fetched (HTTPS only); `audience` must be in the token's `aud`.
//! At most [`MAX_ACTIVE`] per zone, one active row per issuer; deleting archives the row, and the
//! sessions it federated live on.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::require_live_zone;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{AdminPrincipal, AppJson, ZoneRows, ZoneTable, list_rows, read_row};
use crate::state::AppState;

/// Active issuers a zone may have.
pub const MAX_ACTIVE: i64 = 20;
const CODE: &str = "invalid_subject_issuer";

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/subject-issuers", post(create).get(list_rows::<SubjectIssuerRow>))
        .route("/v1/zones/{zone_id}/subject-issuers/{id}", get(read_row::<SubjectIssuerRow>).delete(archive))
}

/// A subject issuer.
#[derive(Serialize, sqlx::FromRow)]
pub struct SubjectIssuerRow {
    pub id: String,
    pub zone_id: String,
    pub issuer: String,
    pub jwks_url: String,
    pub audience: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::extract::keyed!(SubjectIssuerRow, id);

impl ZoneRows for SubjectIssuerRow {
    const TABLE: ZoneTable = TABLE;
}

const COLUMNS: &str = "id, zone_id, issuer, jwks_url, audience, created_at, updated_at";

/// How the admin API lists and reads subject_issuers.
const TABLE: ZoneTable = ZoneTable { table: "subject_issuers", columns: COLUMNS, not_found: "subject_issuer_not_found" };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    issuer: String,
    jwks_url: String,
    audience: String,
}

/// An absolute `https` URL of at most 2048 bytes, without userinfo, query or fragment.
fn check_url(field: &str, raw: &str) -> ApiResult<()> {
    let bad = |why: &str| Err(ApiError::bad_request(CODE, format!("{field} {why}")));
    if raw.is_empty() || raw.len() > 2048 {
        return bad("must be 1..2048 bytes");
    }
    match url::Url::parse(raw) {
        Ok(u) if u.scheme() != "https" => bad("must be an https URL"),
        Ok(u) if u.host().is_none() => bad("must name a host"),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => bad("must not carry userinfo"),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => bad("must not carry a query or fragment"),
        Ok(_) => Ok(()),
        Err(_) => bad("must be an absolute URL"),
    }
}

/// The rules of a create body, pure so each is unit-tested.
fn check(b: &CreateBody) -> ApiResult<()> {
    check_url("issuer", &b.issuer)?;
    check_url("jwks_url", &b.jwks_url)?;
    if b.audience.is_empty() || b.audience.len() > 512 || b.audience.trim() != b.audience || b.audience.chars().any(char::is_control) {
        return Err(ApiError::bad_request(CODE, "audience must be 1..512 bytes, printable, without surrounding whitespace"));
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(body): AppJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    check(&body)?;
    require_live_zone(&state.db, &zone_id).await?;
    let mut tx = state.db.begin().await?;
    // Serialises creates of one zone, so the count below cannot be raced past the limit.
    sqlx::query("SELECT id FROM zones WHERE id = $1 FOR UPDATE").bind(&zone_id).execute(&mut *tx).await?;
    let (active,): (i64,) = sqlx::query_as("SELECT count(*) FROM subject_issuers WHERE zone_id = $1 AND archived_at IS NULL")
        .bind(&zone_id)
        .fetch_one(&mut *tx)
        .await?;
    if active >= MAX_ACTIVE {
        return Err(ApiError::conflict("subject_issuer_limit_reached", format!("a zone has at most {MAX_ACTIVE} subject issuers")));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let row: SubjectIssuerRow = match sqlx::query_as(sql!(
        "INSERT INTO subject_issuers (zone_id, id, issuer, jwks_url, audience) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&body.issuer)
    .bind(&body.jwks_url)
    .bind(&body.audience)
    .fetch_one(&mut *tx)
    .await
    {
        Ok(r) => r,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict("subject_issuer_exists", "this issuer is already registered in the zone"));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    tracing::info!(zone_id, subject_issuer_id = %id, issuer = %row.issuer, by = %who.actor(), "subject issuer registered");
    Ok((StatusCode::CREATED, Json(row)))
}

/// Archives the issuer: no new federation through it; sessions it federated live on.
async fn archive(State(state): State<AppState>, who: AdminPrincipal, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    who.require_zone(&zone_id)?;
    let done = sqlx::query(
        "UPDATE subject_issuers SET archived_at = now(), updated_at = now() WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
    )
    .bind(&zone_id)
    .bind(&id)
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("subject_issuer_not_found"));
    }
    tracing::info!(zone_id, subject_issuer_id = %id, by = %who.actor(), "subject issuer archived");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(issuer: &str, jwks_url: &str, audience: &str) -> CreateBody {
        CreateBody { issuer: issuer.into(), jwks_url: jwks_url.into(), audience: audience.into() }
    }

    #[test]
    fn urls_must_be_plain_https() {
        assert!(check(&body("https://idp.example", "https://idp.example/jwks", "app")).is_ok());
        for (iss, jwks) in [
            ("http://idp.example", "https://idp.example/jwks"),
            ("https://idp.example", "http://idp.example/jwks"),
            ("https://u:p@idp.example", "https://idp.example/jwks"),
            ("https://idp.example?x=1", "https://idp.example/jwks"),
            ("https://idp.example", "https://idp.example/jwks#k"),
            ("idp.example", "https://idp.example/jwks"),
            ("", "https://idp.example/jwks"),
        ] {
            assert!(check(&body(iss, jwks, "app")).is_err(), "{iss} {jwks}");
        }
        let long = format!("https://idp.example/{}", "a".repeat(2048));
        assert!(check(&body(&long, "https://idp.example/jwks", "app")).is_err());
    }

    #[test]
    fn audience_is_bounded_and_printable() {
        for aud in ["", " app", "app\n", &"a".repeat(513)] {
            assert!(check(&body("https://idp.example", "https://idp.example/jwks", aud)).is_err(), "{aud:?}");
        }
    }
}
