//! The admin API (`/v1`, admin bearer required except `POST /v1/bootstrap`).
//!
//! Every admin route sits behind one authentication layer ([`crate::extract::require_admin`]);
//! only the routes of [`public`] are outside it, each on purpose.

pub mod admin_tokens;
pub mod applications;
pub mod approvals;
pub mod audit;
pub mod keys;
pub mod policies;
pub mod policy_library;
pub mod policy_tools;
pub mod providers;
pub mod resources;
pub mod session_list;
pub mod sessions;
pub mod subject_issuers;
pub mod zones;

use axum::Router;
use axum::middleware;
use sqlx::PgPool;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Every admin route, authenticated by one layer, plus the deliberately public ones.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(admin_tokens::router())
        .merge(zones::router())
        .merge(applications::router())
        .merge(resources::router())
        .merge(policies::router())
        .merge(policy_library::router())
        .merge(policy_tools::router())
        .merge(keys::router())
        .merge(sessions::router())
        .merge(session_list::router())
        .merge(subject_issuers::router())
        .merge(providers::router())
        .merge(approvals::router())
        .merge(audit::router())
        // `route_layer`: an unknown path stays 404 rather than 401.
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::extract::require_admin))
        .merge(public())
}

/// Routes without an admin token: the bootstrap (it checks `BOOTSTRAP_ADMIN_TOKEN` itself) and
/// the approval status (the random hold id is the capability, as in the original).
fn public() -> Router<AppState> {
    Router::new().merge(admin_tokens::public_router()).merge(approvals::public_router())
}

/// An entry of the STS catalog (`caracal_sts::catalog`).
#[derive(Clone, Copy)]
pub enum CatalogEntry<'a> {
    /// An application, by id.
    Application(&'a str),
    /// A resource, by identifier.
    Resource(&'a str),
}

/// Announces inside `tx` that a catalog entry changed (`caracal.catalog.invalidate`), so every STS
/// instance forgets it as soon as the change commits instead of at the cache lifetime; the
/// caller also forgets it locally after commit ([`forget_catalog`]).
pub async fn announce_catalog(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, zone_id: &str, entry: CatalogEntry<'_>) -> ApiResult<()> {
    let (kind, id) = match entry {
        CatalogEntry::Application(id) => ("application", id),
        CatalogEntry::Resource(identifier) => ("resource", identifier),
    };
    let stream = caracal_shared::streams::CATALOG_INVALIDATE;
    crate::outbox::enqueue(tx, Some(zone_id), stream, &[("zone_id", zone_id), ("kind", kind), ("id", id)]).await?;
    Ok(())
}

/// After commit: this instance forgets the entry now and the relay publishes the announcement.
pub async fn forget_catalog(state: &AppState, zone_id: &str, entry: CatalogEntry<'_>) {
    match entry {
        CatalogEntry::Application(id) => state.sts.catalog.invalidate_application(zone_id, id).await,
        CatalogEntry::Resource(identifier) => state.sts.catalog.invalidate_resource(zone_id, identifier).await,
    }
    state.outbox_notify.notify_one();
}

/// 404 `zone_not_found` unless the zone exists and is not archived.
pub async fn require_live_zone(db: &PgPool, zone_id: &str) -> ApiResult<()> {
    let live: Option<(bool,)> =
        sqlx::query_as("SELECT archived_at IS NULL FROM zones WHERE id = $1").bind(zone_id).fetch_optional(db).await?;
    match live {
        Some((true,)) => Ok(()),
        _ => Err(ApiError::not_found("zone_not_found")),
    }
}

/// Checks a free-text name: trimmed, 1..=max characters, no control characters.
pub fn check_name(name: &str, max: usize, code: &'static str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > max || n.chars().any(char::is_control) {
        return Err(ApiError::bad_request(code, format!("name must be 1..{max} printable characters")));
    }
    Ok(n.to_owned())
}
