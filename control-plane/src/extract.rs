//! Extractors: who is calling (`AdminPrincipal`), JSON bodies with our error shape (`AppJson`), and
//! keyset pagination (`Page`).
//!
//! Admin routes are authenticated once, by [`require_admin`], a layer over the whole admin router
//! (`crate::api::router`): a handler cannot forget it. The layer puts the [`AdminPrincipal`] in the
//! request extensions and the extractor only reads it there, so a handler mounted outside the layer
//! answers 401 instead of running unauthenticated.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth_failures::{self, Surface};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest accepted admin bearer.
const MAX_ADMIN_TOKEN_BYTES: usize = 4096;

/// What an admin token may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every zone and the global routes.
    Global,
    /// One zone only.
    Zone(String),
}

/// The authenticated caller of an admin route.
#[derive(Clone, Debug)]
pub struct AdminPrincipal {
    pub token_id: String,
    pub scope: Scope,
    /// The request was dispatched by Control on behalf of a control key ([`ViaControl`]).
    pub via_control: bool,
}

/// Marks a request Control dispatched in process (`control::dispatch`). A request extension, so
/// no caller on the wire can claim or shed it: admin handlers use it to keep a control key from
/// widening its own authority (docs/control.md, "What a control key cannot touch").
#[derive(Clone, Copy, Debug)]
pub struct ViaControl;

impl AdminPrincipal {
    /// Refuses a zone-scoped token.
    pub fn require_global(&self) -> ApiResult<()> {
        match self.scope {
            Scope::Global => Ok(()),
            Scope::Zone(_) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "admin_token_zone_mismatch", "this route needs a global admin token"))
            }
        }
    }

    /// Refuses a token scoped to another zone.
    pub fn require_zone(&self, zone_id: &str) -> ApiResult<()> {
        match &self.scope {
            Scope::Global => Ok(()),
            Scope::Zone(z) if z == zone_id => Ok(()),
            Scope::Zone(_) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "admin_token_zone_mismatch", "the admin token is scoped to another zone"))
            }
        }
    }

    /// Refuses what Control may not do on a control key's behalf (403 `code`).
    pub fn refuse_via_control(&self, refused: bool, code: &'static str, why: &'static str) -> ApiResult<()> {
        if self.via_control && refused {
            return Err(ApiError::new(StatusCode::FORBIDDEN, code, why));
        }
        Ok(())
    }

    /// Who did it, for `created_by` columns and audit.
    pub fn actor(&self) -> String {
        format!("admin:{}", self.token_id)
    }
}

/// The bearer of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_ADMIN_TOKEN_BYTES).then_some(token)
}

fn invalid_admin_token() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_admin_token", "a valid admin bearer token is required")
}

/// What authentication reads of a token.
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    scope: String,
    zone_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

impl AdminPrincipal {
    /// Checks an admin bearer: a live, unexpired token and, for a zone token, a zone that is not
    /// archived (archiving a zone takes its tokens with it, on every instance at once).
    pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Self> {
        let token = bearer(headers).ok_or_else(invalid_admin_token)?;
        let digest = caracal_shared::sig::sha256(token.as_bytes());
        // A token is looked up by its digest across zones; what it may touch is checked after.
        let row: Option<TokenRow> = caracal_shared::zone_context::all_zones(
            sqlx::query_as(
                "SELECT t.id, t.scope, t.zone_id, t.expires_at FROM admin_tokens t LEFT JOIN zones z ON z.id = t.zone_id \
                 WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND (t.zone_id IS NULL OR z.archived_at IS NULL)",
            )
            .bind(&digest[..])
            .fetch_optional(&state.db),
        )
        .await?;
        let TokenRow { id: token_id, scope, zone_id, expires_at } = row.ok_or_else(invalid_admin_token)?;
        // Only the token's holder sees why: the digest matched.
        if expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_admin_token", "the admin token has expired"));
        }
        let scope = match (scope.as_str(), zone_id) {
            ("global", _) => Scope::Global,
            ("zone", Some(z)) => Scope::Zone(z),
            _ => return Err(invalid_admin_token()),
        };
        Ok(Self { token_id, scope, via_control: false })
    }

    /// Records the token's use in `last_used_at`, at most once a minute per token (a Redis
    /// `SET NX` debounces it across instances, as in the original), off the request's path.
    fn touch(&self, state: &AppState) {
        let (state, id) = (state.clone(), self.token_id.clone());
        tokio::spawn(async move {
            let mut conn = state.redis.clone();
            let first: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(format!("api:admin_token_touched:{id}"))
                .arg(1)
                .arg("EX")
                .arg(60)
                .arg("NX")
                .query_async(&mut conn)
                .await;
            if !matches!(first, Ok(Some(_))) {
                return;
            }
            let updated = caracal_shared::zone_context::all_zones(
                sqlx::query("UPDATE admin_tokens SET last_used_at = now() WHERE id = $1").bind(&id).execute(&state.db),
            )
            .await;
            if let Err(e) = updated {
                tracing::warn!(admin_token_id = %id, error = %e, "last_used_at not recorded");
            }
        });
    }
}

/// The admin router's authentication layer: refuses the request (401 `invalid_admin_token`)
/// before any handler, body or query is looked at, else records the actor for the evidence; a zone
/// token naming another zone in the path is refused here too (403 `admin_token_zone_mismatch`), so
/// no route depends on its handler remembering to check — handlers still call
/// [`AdminPrincipal::require_zone`] — and the refusal comes before the body is read. Then the
/// principal goes to the handler. Failed authentications are counted and, past a per-address
/// budget, refused 429 ([`crate::auth_failures`]); Control's in-process dispatch is exempt.
pub async fn require_admin(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let via_control = req.extensions().get::<ViaControl>().is_some();
    let ip = client_ip(&req);
    if !via_control && let Err(throttled) = auth_failures::check(&state, ip, Surface::Admin).await {
        return throttled;
    }
    match AdminPrincipal::authenticate(&state, req.headers()).await {
        Ok(mut principal) => {
            principal.via_control = via_control;
            principal.touch(&state);
            match &principal.scope {
                Scope::Global => crate::evidence::Actor::record(req.extensions(), || principal.actor()),
                Scope::Zone(z) => crate::evidence::Actor::record_in_zone(req.extensions(), || principal.actor(), z),
            }
            if let Some(named) = caracal_shared::zone_context::zone_of_path(req.uri().path())
                && let Err(e) = principal.require_zone(named)
            {
                return e.into_response();
            }
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED && !via_control {
                auth_failures::record(&state, ip, Surface::Admin).await;
            }
            e.into_response()
        }
    }
}

/// The peer address of a request (unspecified over the Unix socket listener, which shares one budget).
pub fn client_ip(req: &Request) -> IpAddr {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

impl<S: Send + Sync> FromRequestParts<S> for AdminPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            tracing::error!(path = parts.uri.path(), "admin handler mounted outside the admin authentication layer; refused");
            invalid_admin_token()
        })
    }
}

/// A JSON body whose rejection is an [`ApiError`] (400 `invalid_body`).
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
        }
    }
}

/// An optional JSON body: empty means `T::default()`, anything else must parse.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_body", format!("Failed to deserialize the JSON body: {e}")))
}

/// `?limit=&cursor=` of a list route.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Read from text: a query that adds filters beside the page flattens this struct into its
    /// own, and serde then hands every value over as a string.
    #[serde(default, deserialize_with = "number_from_text")]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn number_from_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(t)) => t.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("limit must be a number, got {t:?}"))),
    }
}

/// A query string whose rejection is an [`ApiError`] (400 `invalid_query`), like [`AppJson`] for
/// bodies: a bad query gets the same error shape as every other refusal.
pub struct AppQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// A decoded page request: newest first, strictly after the cursor.
#[derive(Debug)]
pub struct Page {
    pub limit: i64,
    pub after: Option<(DateTime<Utc>, String)>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    ts: DateTime<Utc>,
    id: String,
}

impl PageQuery {
    /// Validates limit (1..=500, default 200) and cursor.
    pub fn page(&self) -> ApiResult<Page> {
        let limit = self.limit.unwrap_or(200);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::bad_request("invalid_query", "limit must be between 1 and 500"));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => {
                let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this server issued");
                if c.len() > 512 {
                    return Err(bad());
                }
                let raw = caracal_shared::b64::decode(c).map_err(|_| bad())?;
                let cur: Cursor = serde_json::from_slice(&raw).map_err(|_| bad())?;
                Some((cur.ts, cur.id))
            }
        };
        Ok(Page { limit, after })
    }
}

/// `{items, next_cursor}`; `next_cursor` only when the page is full.
#[derive(Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A listed row's position in keyset order: `(created_at, id)`, newest first.
pub trait Keyed {
    fn key(&self) -> (DateTime<Utc>, String);
}

/// Runs a list query whose last three parameters are the cursor's timestamp and id and the limit
/// (the query binds its own leading parameters), and builds the page.
pub async fn fetch_page<'q, T>(
    db: &sqlx::PgPool,
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>,
    page: &Page,
) -> ApiResult<Paged<T>>
where
    T: Keyed + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let (ts, id) = page.after.clone().unzip();
    let items = query.bind(ts).bind(id).bind(page.limit).fetch_all(db).await?;
    let next_cursor = (items.len() as i64 == page.limit)
        .then(|| items.last().map(Keyed::key))
        .flatten()
        .map(|(ts, id)| caracal_shared::b64::encode(serde_json::to_vec(&Cursor { ts, id }).expect("cursor serializes")));
    Ok(Paged { items, next_cursor })
}

/// A zone's table the admin API lists and reads: rows with `zone_id`, `id`, `created_at` and
/// `archived_at` (archived rows are never shown).
pub struct ZoneTable {
    pub table: &'static str,
    /// The columns a row is read from.
    pub columns: &'static str,
    /// The 404 code of a missing or archived row.
    pub not_found: &'static str,
}

impl ZoneTable {
    /// One page of the zone's live rows, newest first.
    pub async fn page<T>(&self, db: &sqlx::PgPool, zone_id: &str, page: &Page) -> ApiResult<Paged<T>>
    where
        T: Keyed + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let (table, columns) = (self.table, self.columns);
        let q = sqlx::query_as::<_, T>(sql!(
            "SELECT {columns} FROM {table} WHERE zone_id = $1 AND archived_at IS NULL \
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(zone_id);
        fetch_page(db, q, page).await
    }

    /// One live row of the zone, or 404 with [`ZoneTable::not_found`].
    pub async fn live<T>(&self, db: &sqlx::PgPool, zone_id: &str, id: &str) -> ApiResult<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let (table, columns) = (self.table, self.columns);
        let row: Option<T> = sqlx::query_as(sql!("SELECT {columns} FROM {table} WHERE zone_id = $1 AND id = $2 AND archived_at IS NULL"))
            .bind(zone_id)
            .bind(id)
            .fetch_optional(db)
            .await?;
        row.ok_or_else(|| ApiError::not_found(self.not_found))
    }
}

/// A row type the admin API lists and reads from its [`ZoneTable`]: the generic handlers
/// [`list_rows`] and [`read_row`] serve it (the caller must be allowed the zone).
pub trait ZoneRows: Keyed + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Serialize + Send + Unpin + 'static {
    const TABLE: ZoneTable;
}

/// `GET /v1/zones/{zone_id}/<rows>`: one page of the zone's live rows, newest first.
pub async fn list_rows<T: ZoneRows>(
    State(state): State<AppState>,
    who: AdminPrincipal,
    axum::extract::Path(zone_id): axum::extract::Path<String>,
    AppQuery(q): AppQuery<PageQuery>,
) -> ApiResult<axum::Json<Paged<T>>> {
    who.require_zone(&zone_id)?;
    Ok(axum::Json(T::TABLE.page(&state.db, &zone_id, &q.page()?).await?))
}

/// `GET /v1/zones/{zone_id}/<rows>/{id}`: one live row, or 404 with the table's code.
pub async fn read_row<T: ZoneRows>(
    State(state): State<AppState>,
    who: AdminPrincipal,
    axum::extract::Path((zone_id, id)): axum::extract::Path<(String, String)>,
) -> ApiResult<axum::Json<T>> {
    who.require_zone(&zone_id)?;
    T::TABLE.live(&state.db, &zone_id, &id).await.map(axum::Json)
}

/// Implements [`Keyed`] for a row with `created_at` and an id field.
macro_rules! keyed {
    ($t:ty, $id:ident) => {
        impl $crate::extract::Keyed for $t {
            fn key(&self) -> (chrono::DateTime<chrono::Utc>, String) {
                (self.created_at, self.$id.clone())
            }
        }
    };
}
pub(crate) use keyed;
