//! Resources: what the gateway protects. Each names its upstream, its scopes, the operations
//! (`{method, path, scope}`) an enforced resource lets through, and how the upstream credential is
//! injected (`none`, `caracal_jwt` — the resource mandate as a bearer — or `provider_apikey`).
//!
//! A provider key is write-only and bound to where it was given for: an update that moves the
//! upstream to another scheme, host or port, or renames the identifier, while keeping the stored
//! key is refused (409 `credential_secret_required`); it must bring the key for the new
//! destination. (Refused rather than silently dropped: a resource that quietly lost its key would
//! fail upstream with an error that hides the cause, and the operator who moved it should state
//! which key the new host may see.)

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use caracal_shared::pool::{Endpoint, HashKey, LoadBalancing, Policy, Timeouts};
use caracal_sts::operations::Operation;
use caracal_sts::store::{CredentialPlacement, provider_secret_aad};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;

use crate::api::{CatalogEntry, announce_catalog, forget_catalog, require_live_zone};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{AdminPrincipal, AppJson, PageQuery, Paged, fetch_page};
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/resources", post(create).get(list))
        .route("/v1/zones/{zone_id}/resources/{id}", get(read).patch(update).delete(archive))
}

/// A resource.
#[derive(Serialize, sqlx::FromRow)]
pub struct ResourceRow {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub identifier: String,
    /// The first endpoint (what readers that predate pools use).
    pub upstream_url: String,
    /// The pool (docs/pools.md): `[{url, weight}]`.
    pub endpoints: SqlJson<Vec<Endpoint>>,
    pub load_balancing: SqlJson<LoadBalancing>,
    /// Upstream deadlines in ms (`{}` ⇒ the gateway's).
    pub timeouts: SqlJson<Timeouts>,
    pub scopes: Vec<String>,
    pub operations: SqlJson<Vec<Operation>>,
    pub operation_enforcement: String,
    pub credential_mode: String,
    /// Where a provider key goes; the key itself is write-only.
    pub credential: SqlJson<CredentialPlacement>,
    /// Whether a provider key is stored.
    pub credential_secret_set: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::extract::keyed!(ResourceRow, id);

const COLUMNS: &str = "id, zone_id, name, identifier, upstream_url, endpoints, load_balancing, timeouts, scopes, operations, operation_enforcement, credential_mode, \
     credential_placement AS credential, credential_secret IS NOT NULL AS credential_secret_set, created_at, updated_at";

/// The `credential` object of a request: placement plus the provider key (write-only).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    #[serde(flatten)]
    placement: CredentialPlacement,
    secret: Option<String>,
}

fn placement_problems(mode: &str, p: &CredentialPlacement, has_secret: bool, problems: &mut Vec<String>) {
    if mode != "provider_apikey" {
        if *p != CredentialPlacement::default() {
            problems.push("credential applies to credential_mode provider_apikey only".into());
        }
        return;
    }
    if !has_secret {
        problems.push("provider_apikey needs credential.secret".into());
    }
    match p.location.as_deref().unwrap_or("header") {
        "header" => {
            let h = p.header.as_deref().unwrap_or("authorization");
            if !caracal_shared::exchange::is_writable_credential_header(h) {
                problems.push(format!("credential.header {h:?} is not a usable header name"));
            }
            if p.query_param.is_some() {
                problems.push("credential.query_param applies to location query only".into());
            }
        }
        "query" => {
            let ok = p
                .query_param
                .as_deref()
                .is_some_and(|q| (1..=64).contains(&q.len()) && q.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
            if !ok {
                problems.push("credential.query_param must match ^[A-Za-z0-9_.-]{1,64}$ for location query".into());
            }
            if p.header.is_some() || p.scheme.is_some() {
                problems.push("credential.header and credential.scheme apply to location header only".into());
            }
        }
        other => problems.push(format!("credential.location must be header or query, got {other:?}")),
    }
    if let Some(sc) = &p.scheme
        && !(1..=32).contains(&sc.len())
    {
        problems.push("credential.scheme must be 1..32 characters".into());
    }
}

/// A provider key must fit in a header or a query parameter without smuggling anything.
fn secret_problems(secret: &str, problems: &mut Vec<String>) {
    if secret.is_empty() || secret.len() > 4096 || !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        problems.push("credential.secret must be 1..4096 visible ASCII characters".into());
    }
}

/// An endpoint as sent: loosely typed, so a bad weight is reported with the other problems.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    url: String,
    weight: Option<i64>,
    /// No new requests go to a draining endpoint.
    #[serde(default)]
    drain: bool,
}

impl From<EndpointBody> for Endpoint {
    fn from(e: EndpointBody) -> Self {
        // Out of range becomes 0, which validation reports.
        Self { url: e.url, weight: e.weight.map_or(1, |w| u32::try_from(w).unwrap_or(0)), drain: e.drain }
    }
}

/// `load_balancing` as sent; checked by [`Definition::validate`].
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct LoadBalancingBody {
    policy: Option<String>,
    hash_key: Option<String>,
}

impl From<LoadBalancing> for LoadBalancingBody {
    fn from(lb: LoadBalancing) -> Self {
        let policy = serde_json::to_value(lb.policy).ok().and_then(|v| v.as_str().map(str::to_owned));
        Self { policy, hash_key: lb.hash_key.map(String::from) }
    }
}

fn load_balancing_problems(b: &LoadBalancingBody, problems: &mut Vec<String>) -> LoadBalancing {
    let policy = match b.policy.as_deref().map(Policy::parse) {
        None => Policy::RoundRobin,
        Some(Some(p)) => p,
        Some(None) => {
            problems.push("load_balancing.policy must be round_robin, least_outstanding or consistent_hash".into());
            Policy::RoundRobin
        }
    };
    let hash_key = match &b.hash_key {
        None => None,
        Some(k) => HashKey::try_from(k.clone()).map_err(|e| problems.push(format!("load_balancing.{e}"))).ok(),
    };
    match (policy, b.hash_key.is_some()) {
        (Policy::ConsistentHash, false) => problems.push("load_balancing.hash_key is required for consistent_hash".into()),
        (Policy::RoundRobin | Policy::LeastOutstanding, true) => {
            problems.push("load_balancing.hash_key applies to consistent_hash only".into())
        }
        _ => {}
    }
    LoadBalancing { policy, hash_key }
}

/// `timeouts` as sent (strict: an unknown deadline is a typo, not a no-op).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsBody {
    connect_ms: Option<u32>,
    response_header_ms: Option<u32>,
    body_idle_ms: Option<u32>,
}

impl From<TimeoutsBody> for Timeouts {
    fn from(t: TimeoutsBody) -> Self {
        Self { connect_ms: t.connect_ms, response_header_ms: t.response_header_ms, body_idle_ms: t.body_idle_ms }
    }
}

/// Create and update body; on update every field is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Body {
    name: Option<String>,
    identifier: Option<String>,
    upstream_url: Option<String>,
    endpoints: Option<Vec<EndpointBody>>,
    load_balancing: Option<LoadBalancingBody>,
    timeouts: Option<TimeoutsBody>,
    scopes: Option<Vec<String>>,
    operations: Option<Vec<Operation>>,
    operation_enforcement: Option<String>,
    credential_mode: Option<String>,
    credential: Option<CredentialBody>,
}

/// A complete resource definition, checked.
struct Definition {
    name: String,
    identifier: String,
    upstream_url: String,
    /// The set; `[upstream_url]` unless `endpoints` was sent.
    endpoints: Vec<Endpoint>,
    /// Whether `endpoints` was sent (then it is checked member by member).
    explicit_endpoints: bool,
    load_balancing_body: LoadBalancingBody,
    /// Filled by [`Definition::validate`].
    load_balancing: LoadBalancing,
    timeouts: Timeouts,
    scopes: Vec<String>,
    operations: Vec<Operation>,
    operation_enforcement: String,
    credential_mode: String,
    placement: CredentialPlacement,
    /// The provider key sealed with `ZONE_KEK`, and that KEK's id.
    sealed_secret: Option<(Vec<u8>, String)>,
}

impl Definition {
    /// Binds the definition's fields as the next thirteen parameters (name … credential_kek_id,
    /// endpoints, load_balancing, timeouts).
    fn bind<'q, O>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        q.bind(&self.name)
            .bind(&self.identifier)
            .bind(&self.upstream_url)
            .bind(&self.scopes)
            .bind(SqlJson(&self.operations))
            .bind(&self.operation_enforcement)
            .bind(&self.credential_mode)
            .bind(SqlJson(&self.placement))
            .bind(self.sealed_secret.as_ref().map(|(s, _)| s))
            .bind(self.sealed_secret.as_ref().map(|(_, k)| k))
            .bind(SqlJson(&self.endpoints))
            .bind(SqlJson(&self.load_balancing))
            .bind(SqlJson(&self.timeouts))
    }

    /// Checks every field and reports every problem at once. `control_audience` (when Control is
    /// enabled) is accepted as an identifier even though it is not a URI: the original's default
    /// audience is `caracal-control`, and Control clients already request that resource.
    fn validate(mut self, control_audience: Option<&str>) -> ApiResult<Self> {
        let mut problems = Vec::new();
        self.identifier = self.identifier.trim().to_owned();
        match url::Url::parse(&self.identifier) {
            Ok(u) if u.username().is_empty() && u.password().is_none() && self.identifier.len() <= 512 => {}
            _ if control_audience == Some(self.identifier.as_str()) => {}
            _ => problems.push(
                "identifier must be an absolute URI (e.g. https://api.example.com or mcp://tools) without userinfo, ≤ 512 chars".to_owned(),
            ),
        }
        if self.name.is_empty() {
            self.name = self.identifier.chars().take(200).collect();
        }
        if self.name.chars().count() > 200 || self.name.chars().any(char::is_control) {
            problems.push("name must be ≤ 200 printable characters".into());
        }
        if self.explicit_endpoints {
            caracal_shared::pool::endpoint_problems(&self.endpoints, &mut problems);
            if self.endpoints.first().is_some_and(|e| e.url != self.upstream_url) {
                problems.push("upstream_url must equal endpoints[0].url when both are given".into());
            }
        } else if !caracal_shared::pool::url_ok(&self.upstream_url) {
            problems.push("upstream_url must be an absolute http(s) URL without userinfo or fragment".into());
        }
        self.load_balancing = load_balancing_problems(&self.load_balancing_body, &mut problems);
        self.timeouts.problems(&mut problems);
        let scope_ok = |s: &String| (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b":_./-".contains(&b));
        if self.scopes.is_empty() || self.scopes.len() > 64 || !self.scopes.iter().all(scope_ok) {
            problems.push("scopes: 1..64 entries, each ^[A-Za-z0-9:_./-]{1,200}$".into());
        }
        self.scopes.dedup();
        if self.operations.len() > 256 {
            problems.push("operations: at most 256".into());
        }
        for op in &mut self.operations {
            op.method = op.method.to_ascii_uppercase();
            if let Err(p) = op.validate(&self.scopes) {
                problems.push(p);
            }
        }
        for (i, a) in self.operations.iter().enumerate() {
            if self.operations[..i].iter().any(|b| b.method == a.method && b.path == a.path) {
                problems.push(format!("operation {} {} is declared twice", a.method, a.path));
            }
        }
        if !matches!(self.operation_enforcement.as_str(), "enforced" | "transport_uniform") {
            problems.push("operation_enforcement must be enforced or transport_uniform".into());
        }
        if !matches!(self.credential_mode.as_str(), "none" | "caracal_jwt" | "provider_apikey") {
            problems.push("credential_mode must be none, caracal_jwt or provider_apikey".into());
        }
        placement_problems(&self.credential_mode, &self.placement, self.sealed_secret.is_some(), &mut problems);
        if self.credential_mode != "provider_apikey" {
            self.sealed_secret = None;
        }
        if problems.is_empty() { Ok(self) } else { Err(ApiError::bad_request("invalid_resource", problems.join("; "))) }
    }
}

/// The Control audience when Control is enabled.
fn control_audience(state: &AppState) -> Option<&str> {
    state.cfg.control.as_ref().map(|c| c.audience.as_str())
}

fn conflict_or(e: sqlx::Error) -> ApiError {
    if is_unique_violation(&e) {
        ApiError::conflict("resource_identifier_conflict", "a live resource with this identifier exists in the zone")
    } else {
        e.into()
    }
}

async fn create(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    AppJson(b): AppJson<Body>,
) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    require_live_zone(&state.db, &zone_id).await?;
    let (Some(identifier), Some(scopes)) = (b.identifier, b.scopes) else {
        return Err(ApiError::bad_request("invalid_resource", "identifier, upstream_url (or endpoints) and scopes are required"));
    };
    let Some((upstream_url, endpoints, explicit_endpoints)) = pool_of(b.upstream_url, b.endpoints) else {
        return Err(ApiError::bad_request("invalid_resource", "identifier, upstream_url (or endpoints) and scopes are required"));
    };
    let id = uuid::Uuid::now_v7().to_string();
    let credential = b.credential.unwrap_or_default();
    let def = Definition {
        name: b.name.unwrap_or_default().trim().to_owned(),
        identifier,
        upstream_url,
        endpoints,
        explicit_endpoints,
        load_balancing_body: b.load_balancing.unwrap_or_default(),
        load_balancing: LoadBalancing::default(),
        timeouts: b.timeouts.map(Timeouts::from).unwrap_or_default(),
        scopes,
        operations: b.operations.unwrap_or_default(),
        operation_enforcement: b.operation_enforcement.unwrap_or_else(|| "enforced".into()),
        credential_mode: b.credential_mode.unwrap_or_else(|| "caracal_jwt".into()),
        placement: credential.placement,
        sealed_secret: seal(&state, &zone_id, &id, credential.secret.as_deref())?,
    }
    .validate(control_audience(&state))?;
    let q = sqlx::query_as::<_, ResourceRow>(sql!(
        "INSERT INTO resources (zone_id, id, name, identifier, upstream_url, scopes, operations, operation_enforcement, credential_mode, \
         credential_placement, credential_secret, credential_kek_id, endpoints, load_balancing, timeouts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id);
    let row = def.bind(q).fetch_one(&state.db).await.map_err(conflict_or)?;
    tracing::info!(zone_id, resource_id = %id, identifier = %def.identifier, by = %who.actor(), "resource created");
    Ok((StatusCode::CREATED, Json(row)))
}

/// Checks and seals a provider key for resource `id` (bound to zone and resource).
fn seal(state: &AppState, zone_id: &str, id: &str, secret: Option<&str>) -> ApiResult<Option<(Vec<u8>, String)>> {
    let Some(secret) = secret else { return Ok(None) };
    let mut problems = Vec::new();
    secret_problems(secret, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::bad_request("invalid_resource", problems.join("; ")));
    }
    let kek = state.sts.keys.kek();
    Ok(Some((kek.seal(&provider_secret_aad(zone_id, id), secret.as_bytes()), kek.id().to_owned())))
}

/// The endpoint set a body asks for: `endpoints` when sent (with `upstream_url` defaulting to its
/// first URL), else `upstream_url` as a set of one; `None` when neither was sent. The flag says
/// whether `endpoints` was sent.
fn pool_of(upstream_url: Option<String>, endpoints: Option<Vec<EndpointBody>>) -> Option<(String, Vec<Endpoint>, bool)> {
    match (upstream_url, endpoints) {
        (url, Some(set)) => {
            let set: Vec<Endpoint> = set.into_iter().map(Endpoint::from).collect();
            let url = url.or_else(|| set.first().map(|e| e.url.clone())).unwrap_or_default();
            Some((url, set, true))
        }
        (Some(url), None) => Some((url.clone(), vec![Endpoint::single(url)], false)),
        (None, None) => None,
    }
}

/// Where requests to an upstream URL go: scheme, host and port (the default port when absent).
fn destination(upstream_url: &str) -> Option<(String, String, u16)> {
    let u = url::Url::parse(upstream_url).ok()?;
    Some((u.scheme().to_owned(), u.host_str()?.to_ascii_lowercase(), u.port_or_known_default()?))
}

/// The sealed provider key already stored for a resource.
async fn stored_secret(state: &AppState, zone_id: &str, id: &str) -> ApiResult<Option<(Vec<u8>, String)>> {
    let row: Option<(Option<Vec<u8>>, Option<String>)> =
        sqlx::query_as("SELECT credential_secret, credential_kek_id FROM resources WHERE zone_id = $1 AND id = $2")
            .bind(zone_id)
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    Ok(row.and_then(|(s, k)| s.zip(k)))
}

async fn list(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path(zone_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paged<ResourceRow>>> {
    who.require_zone(&zone_id)?;
    let page = q.page()?;
    let q = sqlx::query_as::<_, ResourceRow>(sql!(
        "SELECT {COLUMNS} FROM resources WHERE zone_id = $1 AND archived_at IS NULL \
         AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(&zone_id);
    Ok(Json(fetch_page(&state.db, q, &page).await?))
}

async fn fetch(state: &AppState, zone_id: &str, id: &str) -> ApiResult<ResourceRow> {
    let row: Option<ResourceRow> =
        sqlx::query_as(sql!("SELECT {COLUMNS} FROM resources WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL"))
            .bind(zone_id)
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    row.ok_or_else(|| ApiError::not_found("resource_not_found"))
}

async fn read(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<ResourceRow>> {
    who.require_zone(&zone_id)?;
    fetch(&state, &zone_id, &id).await.map(Json)
}

async fn update(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
    AppJson(b): AppJson<Body>,
) -> ApiResult<Json<ResourceRow>> {
    who.require_zone(&zone_id)?;
    let cur = fetch(&state, &zone_id, &id).await?;
    let cur_identifier = cur.identifier.clone();
    let cur_set = caracal_shared::pool::endpoints_or_single(&cur.endpoints.0, &cur.upstream_url);
    let cur_destinations: Vec<_> = cur_set.iter().map(|e| destination(&e.url)).collect();
    let cur_updated_at = cur.updated_at;
    let new_secret = b.credential.as_ref().is_some_and(|c| c.secret.is_some());
    let (placement, sealed_secret) = match b.credential {
        Some(c) => {
            let sealed = match c.secret.as_deref() {
                Some(secret) => seal(&state, &zone_id, &id, Some(secret))?,
                None => stored_secret(&state, &zone_id, &id).await?,
            };
            (c.placement, sealed)
        }
        None => (cur.credential.0, stored_secret(&state, &zone_id, &id).await?),
    };
    let (upstream_url, endpoints, explicit_endpoints) =
        pool_of(b.upstream_url, b.endpoints).unwrap_or_else(|| (cur.upstream_url.clone(), cur_set.clone(), false));
    let def = Definition {
        name: b.name.unwrap_or(cur.name).trim().to_owned(),
        identifier: b.identifier.unwrap_or(cur.identifier),
        upstream_url,
        endpoints,
        explicit_endpoints,
        load_balancing_body: b.load_balancing.unwrap_or_else(|| cur.load_balancing.0.into()),
        load_balancing: LoadBalancing::default(),
        timeouts: b.timeouts.map_or(cur.timeouts.0, Timeouts::from),
        scopes: b.scopes.unwrap_or(cur.scopes),
        operations: b.operations.unwrap_or(cur.operations.0),
        operation_enforcement: b.operation_enforcement.unwrap_or(cur.operation_enforcement),
        credential_mode: b.credential_mode.unwrap_or(cur.credential_mode),
        placement,
        sealed_secret,
    }
    .validate(control_audience(&state))?;
    // The key may go on to any endpoint of the set: adding a destination it was not given for is
    // a move; removing or re-weighting members is not.
    let moved = def.endpoints.iter().any(|e| !cur_destinations.contains(&destination(&e.url))) || def.identifier != cur_identifier;
    if def.sealed_secret.is_some() && !new_secret && moved {
        return Err(ApiError::conflict(
            "credential_secret_required",
            "the stored provider key is not sent to a new upstream scheme, host or port, or under a new identifier; \
             send credential.secret for the new destination",
        ));
    }
    let q = sqlx::query_as::<_, ResourceRow>(sql!(
        "UPDATE resources SET name = $3, identifier = $4, upstream_url = $5, scopes = $6, operations = $7, \
         operation_enforcement = $8, credential_mode = $9, credential_placement = $10, credential_secret = $11, \
         credential_kek_id = $12, endpoints = $13, load_balancing = $14, timeouts = $15, updated_at = now() \
         WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL AND updated_at = $16 RETURNING {COLUMNS}"
    ))
    .bind(&zone_id)
    .bind(&id);
    // Only the version checked above is replaced: a concurrent update (say, a new key or another
    // upstream) cannot slip in between the destination check and this write.
    let mut tx = state.db.begin().await?;
    let row = def.bind(q).bind(cur_updated_at).fetch_optional(&mut *tx).await.map_err(conflict_or)?;
    if row.is_some() {
        announce_catalog(&mut tx, &zone_id, CatalogEntry::Resource(&cur_identifier)).await?;
        if def.identifier != cur_identifier {
            announce_catalog(&mut tx, &zone_id, CatalogEntry::Resource(&def.identifier)).await?;
        }
    }
    tx.commit().await?;
    forget_catalog(&state, &zone_id, CatalogEntry::Resource(&cur_identifier)).await;
    forget_catalog(&state, &zone_id, CatalogEntry::Resource(&def.identifier)).await;
    let Some(row) = row else {
        fetch(&state, &zone_id, &id).await?;
        return Err(ApiError::conflict("resource_changed", "the resource changed while this update was checked; read it and retry"));
    };
    tracing::info!(zone_id, resource_id = %id, by = %who.actor(), "resource updated");
    Ok(Json(row))
}

async fn archive(State(state): State<AppState>, who: AdminPrincipal, Path((zone_id, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    who.require_zone(&zone_id)?;
    // Archiving the Control resource would lock Control out of the zone (including through
    // Control itself); disable Control first.
    if let Some(audience) = control_audience(&state)
        && fetch(&state, &zone_id, &id).await?.identifier == audience
    {
        return Err(ApiError::conflict("protected_resource", "the Control resource cannot be archived while Control is enabled"));
    }
    let mut tx = state.db.begin().await?;
    let archived: Option<(String,)> = sqlx::query_as(
        "UPDATE resources SET archived_at = now() WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL RETURNING identifier",
    )
    .bind(&zone_id)
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?;
    let (identifier,) = archived.ok_or_else(|| ApiError::not_found("resource_not_found"))?;
    announce_catalog(&mut tx, &zone_id, CatalogEntry::Resource(&identifier)).await?;
    tx.commit().await?;
    forget_catalog(&state, &zone_id, CatalogEntry::Resource(&identifier)).await;
    tracing::info!(zone_id, resource_id = %id, by = %who.actor(), "resource archived");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::destination;

    #[test]
    fn a_destination_is_scheme_host_and_port() {
        let d = |u: &str| destination(u);
        assert_eq!(d("https://API.example.com/v1"), d("https://api.example.com:443/v2?x=1"), "case, default port and path do not matter");
        assert_ne!(d("https://api.example.com"), d("http://api.example.com"));
        assert_ne!(d("https://api.example.com"), d("https://api.example.com:8443"));
        assert_ne!(d("https://api.example.com"), d("https://evil.example.com"));
        assert_eq!(d("not a url"), None);
    }
}
