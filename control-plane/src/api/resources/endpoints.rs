//! The endpoint sub-resource (docs/pools.md §1): edit one member of a resource's pool without
//! resending the set.
//!
//! | route | does |
//! |---|---|
//! | `GET …/resources/{id}/endpoints` | the set, each member with its index |
//! | `POST …/resources/{id}/endpoints` | adds `{url, weight?, drain?}` at the end (201) |
//! | `PATCH …/resources/{id}/endpoints/{n}` | `{weight?, drain?}`: re-weights, drains or undrains member `n` |
//! | `DELETE …/resources/{id}/endpoints/{n}` | removes member `n` (not the last one) |
//!
//! Each edit is a resource update ([`super::rewrite`]) whose body is the edited set, so every rule
//! of a full-set `PATCH` applies unchanged: every problem at once, never every member draining,
//! `upstream_url` kept as the first member, a provider key never sent to a destination it was not
//! given for (409 `credential_secret_required`), the catalog announcement, the row lock (two
//! concurrent edits both land) and the admin-action audit. Every answer is the new set: indexes
//! shift when a member is removed. An unknown index is 404 `endpoint_not_found`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::definition::Body;
use super::pool_body::EndpointBody;
use super::{ResourceRow, fetch, rewrite};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AdminPrincipal, AppJson};
use crate::state::AppState;

/// Routes.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/zones/{zone_id}/resources/{id}/endpoints", get(list).post(add))
        .route("/v1/zones/{zone_id}/resources/{id}/endpoints/{n}", patch(change).delete(remove))
}

/// A resource's endpoint set, as every route here answers it.
#[derive(Serialize)]
struct EndpointSet {
    endpoints: Vec<Member>,
}

/// One member and its index in the set.
#[derive(Serialize)]
struct Member {
    index: usize,
    url: String,
    weight: u32,
    drain: bool,
}

impl From<ResourceRow> for EndpointSet {
    fn from(r: ResourceRow) -> Self {
        let set = caracal_shared::pool::endpoints_or_single(&r.endpoints.0, &r.upstream_url);
        let endpoints =
            set.into_iter().enumerate().map(|(index, e)| Member { index, url: e.url, weight: e.weight, drain: e.drain }).collect();
        Self { endpoints }
    }
}

/// `PATCH …/endpoints/{n}`: what changes (absent ⇒ unchanged).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberChange {
    weight: Option<i64>,
    drain: Option<bool>,
}

async fn list(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult<Json<EndpointSet>> {
    who.require_zone(&zone_id)?;
    Ok(Json(fetch(&state, &zone_id, &id).await?.into()))
}

async fn add(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id)): Path<(String, String)>,
    AppJson(e): AppJson<EndpointBody>,
) -> ApiResult<(StatusCode, Json<EndpointSet>)> {
    who.require_zone(&zone_id)?;
    let row = edit_set(&state, &who, &zone_id, &id, |set| {
        set.push(e);
        Ok(())
    })
    .await?;
    tracing::info!(zone_id, resource_id = %id, by = %who.actor(), "resource endpoint added");
    Ok((StatusCode::CREATED, Json(row.into())))
}

async fn change(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id, n)): Path<(String, String, String)>,
    AppJson(c): AppJson<MemberChange>,
) -> ApiResult<Json<EndpointSet>> {
    who.require_zone(&zone_id)?;
    let row = edit_set(&state, &who, &zone_id, &id, |set| {
        let i = index(set, &n)?;
        let e = &mut set[i];
        e.weight = c.weight.or(e.weight);
        e.drain = c.drain.unwrap_or(e.drain);
        Ok(())
    })
    .await?;
    tracing::info!(zone_id, resource_id = %id, endpoint = %n, by = %who.actor(), "resource endpoint changed");
    Ok(Json(row.into()))
}

async fn remove(
    State(state): State<AppState>,
    who: AdminPrincipal,
    Path((zone_id, id, n)): Path<(String, String, String)>,
) -> ApiResult<Json<EndpointSet>> {
    who.require_zone(&zone_id)?;
    let row = edit_set(&state, &who, &zone_id, &id, |set| {
        let i = index(set, &n)?;
        if set.len() == 1 {
            return Err(ApiError::bad_request(
                "invalid_resource",
                "the last endpoint of a resource cannot be removed: add its replacement first, or archive the resource",
            ));
        }
        set.remove(i);
        Ok(())
    })
    .await?;
    tracing::info!(zone_id, resource_id = %id, endpoint = %n, by = %who.actor(), "resource endpoint removed");
    Ok(Json(row.into()))
}

/// A resource update whose only change is `edit` applied to the stored set.
async fn edit_set(
    state: &AppState,
    who: &AdminPrincipal,
    zone_id: &str,
    id: &str,
    edit: impl FnOnce(&mut Vec<EndpointBody>) -> ApiResult<()>,
) -> ApiResult<ResourceRow> {
    rewrite(state, who, zone_id, id, |cur| {
        let stored = caracal_shared::pool::endpoints_or_single(&cur.endpoints.0, &cur.upstream_url);
        let mut set: Vec<EndpointBody> = stored.into_iter().map(EndpointBody::from).collect();
        edit(&mut set)?;
        Ok(Body::endpoints(set))
    })
    .await
}

/// The member `n` names, or 404.
fn index(set: &[EndpointBody], n: &str) -> ApiResult<usize> {
    n.parse::<usize>().ok().filter(|i| *i < set.len()).ok_or_else(|| ApiError::not_found("endpoint_not_found"))
}
