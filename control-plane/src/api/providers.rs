//! Credential providers (the original's `providers`, issue 14): where an upstream credential comes
//! from, referenced by resources as `credential_provider_id` (`docs/providers.md`).
//!
//! `config_json` is the public configuration; its secret keys ([`SECRET_KEYS`]: `api_key`) are
//! taken out, sealed together with `ZONE_KEK` bound to the zone and the provider, and never shown
//! again — the row names them in `secret_config_keys`. A `PATCH` with `config_json` replaces the
//! public part; secrets it carries replace the sealed ones, and without any the sealed ones stay
//! (so a placement edit never needs the key again). Kinds: `api_key` (placement like an inline
//! provider key: `location` header|query, `header`, `scheme`, `query_param`,
//! `forward_caracal_identity`; optional `allowed_hosts` binds the key to those upstream hosts) and
//! `none`. Every change is announced for the resources that use the provider, so each STS instance
//! stops sending the old key at once.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_sts::provider_tokens::ClientCredentials;
use caracal_sts::store::{ProviderConfig, StaticCredential, provider_config_aad};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as SqlJson;

use crate::api::{CatalogEntry, announce_catalog, check_name, forget_catalog, require_live_zone};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{AdminPrincipal, AppJson, ZoneRows, ZoneTable, list_rows, read_row};
use crate::state::AppState;

const CODE: &str = "invalid_provider_config";

/// Keys of `config_json` that are secrets: sealed, never stored or shown in the clear.
pub const SECRET_KEYS: [&str; 5] = ["api_key", "token", "password", "client_secret", "private_key"];

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/providers", post(create).get(list_rows::<ProviderRow>))
        .route("/v1/zones/{zone_id}/providers/{id}", get(read_row::<ProviderRow>).patch(update).delete(archive))
}

/// A provider, without its secrets.
#[derive(Serialize, sqlx::FromRow)]
pub struct ProviderRow {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub identifier: String,
    pub kind: String,
    pub config_json: SqlJson<Value>,
    pub secret_config_keys: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::extract::keyed!(ProviderRow, id);

impl ZoneRows for ProviderRow {
    const TABLE: ZoneTable = TABLE;
}

const COLUMNS: &str = "id, zone_id, name, identifier, kind, config_json, secret_config_keys, created_at, updated_at";

/// How the admin API lists and reads providers.
const TABLE: ZoneTable = ZoneTable { table: "providers", columns: COLUMNS, not_found: "provider_not_found" };

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    identifier: Option<String>,
    kind: String,
    #[serde(default)]
    config_json: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    kind: Option<String>,
    config_json: Option<BTreeMap<String, Value>>,
}

/// A provider's kind, public configuration and the names of its sealed secrets, as stored.
type Stored = (String, SqlJson<BTreeMap<String, Value>>, Vec<String>);

/// A configuration split into its public part and its secrets, checked for `kind`.
struct Split {
    public: BTreeMap<String, Value>,
    secrets: BTreeMap<String, String>,
}

fn bad(why: impl Into<String>) -> ApiError {
    ApiError::bad_request(CODE, why)
}

/// Splits and checks a configuration; `stored` names the secret keys already sealed (a PATCH
/// without secrets keeps them).
fn split(kind: &str, config: BTreeMap<String, Value>, stored: &[String]) -> ApiResult<Split> {
    let mut public = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    for (k, v) in config {
        if SECRET_KEYS.contains(&k.as_str()) {
            let s = v.as_str().ok_or_else(|| bad(format!("{k} must be a string")))?;
            if k == "private_key" {
                // A PEM: lines of visible ASCII and spaces.
                if s.is_empty() || s.len() > 16384 || !s.bytes().all(|b| (0x20..=0x7e).contains(&b) || b == b'\n' || b == b'\r') {
                    return Err(bad("private_key must be a PEM of at most 16384 characters"));
                }
            } else if s.is_empty() || s.len() > 4096 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(bad(format!("{k} must be 1..4096 visible ASCII characters")));
            }
            secrets.insert(k, s.to_owned());
        } else {
            public.insert(k, v);
        }
    }
    let has = |k: &str| secrets.contains_key(k) || stored.iter().any(|s| s == k);
    let has_key = has("api_key");
    match kind {
        "oauth2_client_credentials" => {
            let typed: ClientCredentials =
                serde_json::from_value(serde_json::to_value(&public).unwrap_or_default()).map_err(|e| bad(format!("config_json: {e}")))?;
            let mut problems = typed.problems();
            let needed = typed.secret_name();
            if !has(needed) {
                problems.push(format!("an oauth2_client_credentials provider with this client_auth_method needs config_json.{needed}"));
            }
            if let Some(Err(e)) = secrets.get("private_key").map(|pem| caracal_sts::provider_tokens::assertion_key(pem)) {
                problems.push(e);
            }
            if !problems.is_empty() {
                return Err(bad(problems.join("; ")));
            }
        }
        "api_key" => {
            let typed: ProviderConfig =
                serde_json::from_value(serde_json::to_value(&public).unwrap_or_default()).map_err(|e| bad(format!("config_json: {e}")))?;
            let mut problems = Vec::new();
            typed.placement().problems("config_json.", &mut problems);
            if !problems.is_empty() {
                return Err(bad(problems.join("; ")));
            }
            for h in &typed.allowed_hosts {
                if h.is_empty() || h.len() > 253 || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
                    return Err(bad(format!("allowed_hosts: {h:?} is not a host name")));
                }
            }
            if !has_key {
                return Err(bad("an api_key provider needs config_json.api_key"));
            }
        }
        "bearer_token" | "http_basic" => {
            let typed: StaticCredential =
                serde_json::from_value(serde_json::to_value(&public).unwrap_or_default()).map_err(|e| bad(format!("config_json: {e}")))?;
            let (secret, basic) = if kind == "bearer_token" { ("token", false) } else { ("password", true) };
            let mut problems = typed.problems(basic);
            if !has(secret) {
                problems.push(format!("a {kind} provider needs config_json.{secret}"));
            }
            if !problems.is_empty() {
                return Err(bad(problems.join("; ")));
            }
        }
        "none" => {
            if !public.is_empty() || !secrets.is_empty() {
                return Err(bad("a none provider takes no configuration"));
            }
        }
        "caracal_mandate" => {
            return Err(ApiError::bad_request(
                "invalid_provider",
                "a caracal_mandate provider is a resource without one: credential_mode caracal_jwt sends the upstream the resource mandate",
            ));
        }
        "oauth2_authorization_code" => {
            return Err(ApiError::bad_request(
                "invalid_provider",
                "oauth2_authorization_code providers (per-user connections) are not offered (docs/providers.md, \"What is not here\"); \
                 kinds: api_key, bearer_token, http_basic, oauth2_client_credentials, none",
            ));
        }
        other => return Err(ApiError::bad_request("invalid_provider", format!("unknown provider kind {other:?}"))),
    }
    Ok(Split { public, secrets })
}

/// `provider://` plus a slug of the name, as the original defaults it.
fn default_identifier(name: &str) -> String {
    let slug: String = name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("provider://{}", slug.trim_matches('-'))
}

fn check_identifier(identifier: &str) -> ApiResult<()> {
    let ok = (1..=512).contains(&identifier.len())
        && url::Url::parse(identifier).is_ok_and(|u| u.username().is_empty() && u.password().is_none());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid_provider_identifier", "identifier must be an absolute URI (provider://…)"))
    }
}

/// Seals the secrets of provider `id`.
fn seal(state: &AppState, zone_id: &str, id: &str, secrets: &BTreeMap<String, String>) -> (Vec<u8>, String) {
    let kek = state.sts.keys.kek();
    let plain = serde_json::to_vec(secrets).expect("secrets serialize");
    (kek.seal(&provider_config_aad(zone_id, id), &plain), kek.id().to_owned())
}

async fn create(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(b): AppJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    require_live_zone(&state.db, &zone_id).await?;
    let name = match (&b.name, &b.identifier) {
        (Some(n), _) => check_name(n, 200, "invalid_provider")?,
        (None, Some(i)) => i.chars().take(200).collect(),
        (None, None) => return Err(ApiError::bad_request("invalid_provider", "name or identifier is required")),
    };
    let identifier = b.identifier.clone().unwrap_or_else(|| default_identifier(&name));
    check_identifier(&identifier)?;
    let split = split(&b.kind, b.config_json, &[])?;
    let id = uuid::Uuid::now_v7().to_string();
    let sealed = (!split.secrets.is_empty()).then(|| seal(&state, &zone_id, &id, &split.secrets));
    let keys: Vec<String> = split.secrets.keys().cloned().collect();
    let row: ProviderRow = sqlx::query_as(sql!(
        "INSERT INTO providers (zone_id, id, name, identifier, kind, config_json, secret_config_keys, secret_config, secret_kek_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&name)
    .bind(&identifier)
    .bind(&b.kind)
    .bind(SqlJson(&split.public))
    .bind(&keys)
    .bind(sealed.as_ref().map(|(s, _)| s))
    .bind(sealed.as_ref().map(|(_, k)| k))
    .fetch_one(&state.db)
    .await
    .map_err(conflict_or)?;
    tracing::info!(zone_id, provider_id = %id, kind = %b.kind, by = %who.actor(), "provider created");
    Ok((StatusCode::CREATED, Json(row)))
}

fn conflict_or(e: sqlx::Error) -> ApiError {
    if is_unique_violation(&e) {
        ApiError::conflict("provider_identifier_conflict", "a live provider with this identifier exists in the zone")
    } else {
        e.into()
    }
}

async fn update(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
    AppJson(b): AppJson<UpdateBody>,
) -> ApiResult<Json<ProviderRow>> {
    who.require_zone(&zone_id)?;
    if b.name.is_none() && b.kind.is_none() && b.config_json.is_none() {
        return Err(ApiError::bad_request("no_fields", "send name, kind or config_json"));
    }
    let mut tx = state.db.begin().await?;
    let cur: Option<Stored> = sqlx::query_as(
        "SELECT kind, config_json, secret_config_keys FROM providers WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL FOR UPDATE",
    )
    .bind(&zone_id)
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?;
    let (cur_kind, cur_config, cur_keys) = cur.ok_or_else(|| ApiError::not_found("provider_not_found"))?;
    let kind = b.kind.unwrap_or(cur_kind);
    let name = b.name.as_deref().map(|n| check_name(n, 200, "invalid_provider")).transpose()?;
    let split = split(&kind, b.config_json.unwrap_or(cur_config.0), &cur_keys)?;
    let sealed = (!split.secrets.is_empty()).then(|| seal(&state, &zone_id, &id, &split.secrets));
    let keys: Option<Vec<String>> = sealed.as_ref().map(|_| split.secrets.keys().cloned().collect());
    let row: ProviderRow = sqlx::query_as(sql!(
        "UPDATE providers SET name = COALESCE($3, name), kind = $4, config_json = $5, \
         secret_config_keys = COALESCE($6, secret_config_keys), secret_config = COALESCE($7, secret_config), \
         secret_kek_id = COALESCE($8, secret_kek_id), updated_at = now() WHERE zone_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id)
    .bind(&name)
    .bind(&kind)
    .bind(SqlJson(&split.public))
    .bind(&keys)
    .bind(sealed.as_ref().map(|(s, _)| s))
    .bind(sealed.as_ref().map(|(_, k)| k))
    .fetch_one(&mut *tx)
    .await?;
    let users = announce_users(&mut tx, &zone_id, &id).await?;
    tx.commit().await?;
    forget_users(&state, &zone_id, &users).await;
    tracing::info!(zone_id, provider_id = %id, resealed = keys.is_some(), by = %who.actor(), "provider updated");
    Ok(Json(row))
}

/// Archives the provider; refused while a live resource uses it.
async fn archive(State(state): State<AppState>, who: AdminPrincipal, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    who.require_zone(&zone_id)?;
    let mut tx = state.db.begin().await?;
    let used: Option<(String,)> = sqlx::query_as(
        "SELECT identifier FROM resources WHERE zone_id = $1 AND credential_provider_id = $2 AND archived_at IS NULL LIMIT 1",
    )
    .bind(&zone_id)
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((identifier,)) = used {
        return Err(ApiError::conflict("provider_in_use", format!("resource {identifier} uses this provider")));
    }
    let done = sqlx::query(
        "UPDATE providers SET archived_at = now(), secret_config = NULL WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL",
    )
    .bind(&zone_id)
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("provider_not_found"));
    }
    tx.commit().await?;
    tracing::info!(zone_id, provider_id = %id, by = %who.actor(), "provider archived");
    Ok(StatusCode::NO_CONTENT)
}

/// Announces every live resource that uses the provider (their directives change with it).
async fn announce_users(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, zone_id: &str, id: &str) -> ApiResult<Vec<String>> {
    let users: Vec<(String,)> =
        sqlx::query_as("SELECT identifier FROM resources WHERE zone_id = $1 AND credential_provider_id = $2 AND archived_at IS NULL")
            .bind(zone_id)
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    for (identifier,) in &users {
        announce_catalog(tx, zone_id, CatalogEntry::Resource(identifier)).await?;
    }
    Ok(users.into_iter().map(|(i,)| i).collect())
}

async fn forget_users(state: &AppState, zone_id: &str, users: &[String]) {
    for identifier in users {
        forget_catalog(state, zone_id, CatalogEntry::Resource(identifier)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn secrets_are_split_off_and_configs_checked_per_kind() {
        let s = split("api_key", cfg(serde_json::json!({"header": "X-Api-Key", "api_key": "k-123"})), &[]).unwrap();
        assert_eq!(s.secrets.get("api_key").map(String::as_str), Some("k-123"));
        assert!(!s.public.contains_key("api_key"), "the key never lands in the public config");
        assert!(split("api_key", cfg(serde_json::json!({"header": "X-Api-Key"})), &[]).is_err(), "a new api_key provider needs its key");
        assert!(
            split("api_key", cfg(serde_json::json!({"header": "X-Api-Key"})), &["api_key".into()]).is_ok(),
            "an edit keeps the sealed key"
        );
        assert!(split("api_key", cfg(serde_json::json!({"header": "Host", "api_key": "k"})), &[]).is_err());
        assert!(split("api_key", cfg(serde_json::json!({"location": "query", "api_key": "k"})), &[]).is_err(), "query needs query_param");
        assert!(split("api_key", cfg(serde_json::json!({"api_key": "k", "colour": "red"})), &[]).is_err(), "unknown keys are refused");
        assert!(split("api_key", cfg(serde_json::json!({"api_key": "k", "allowed_hosts": ["a b"]})), &[]).is_err());
        assert!(split("none", cfg(serde_json::json!({})), &[]).is_ok());
        assert!(split("none", cfg(serde_json::json!({"api_key": "k"})), &[]).is_err());
        assert!(split("warp_drive", BTreeMap::new(), &[]).is_err());
        assert_eq!(default_identifier("Weather API"), "provider://weather-api");
    }
}
