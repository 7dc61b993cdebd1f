//! Zone signing-key rotation: `POST /v1/zones/{zoneId}/keys/rotate`.
//!
//! The new key is published in the JWKS at once and signs only after `KEY_ACTIVATION_DELAY_SECONDS`
//! (verifiers cache the JWKS for five minutes and do not refetch on an unknown kid). The rotation
//! and its `caracal.keys.invalidate` message commit together. Retired keys stay published while
//! mandates they signed can live (`caracal_sts::keys`); a rotation that would publish more than
//! `MAX_PUBLISHED_KEYS` is refused (409 `rotation_limit`) until the oldest retires.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use caracal_shared::streams;
use caracal_sts::keys::RotateError;

use crate::error::{ApiError, ApiResult};
use crate::extract::AdminPrincipal;
use crate::outbox;
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/zones/{zone_id}/keys/rotate", post(rotate))
}

async fn rotate(State(state): State<AppState>, who: AdminPrincipal, Path(zone_id): Path<String>) -> ApiResult<impl IntoResponse> {
    who.require_zone(&zone_id)?;
    let mut tx = state.db.begin().await?;
    let rotation = match state.sts.keys.rotate(&mut tx, &zone_id).await {
        Ok(r) => r,
        Err(RotateError::ZoneNotFound) => return Err(ApiError::not_found("zone_not_found")),
        Err(RotateError::Pending(until)) => {
            return Err(ApiError::conflict(
                "rotation_pending",
                format!("the previous rotation starts signing at {until}; rotate after that"),
            ));
        }
        Err(RotateError::TooManyKeys(until)) => {
            return Err(ApiError::conflict(
                "rotation_limit",
                format!("the zone publishes the most keys it may while their mandates live; rotate after {until}"),
            ));
        }
        Err(RotateError::Sts(e)) => return Err(e.into()),
    };
    outbox::enqueue(&mut tx, Some(&zone_id), streams::KEYS_INVALIDATE, &[("zone_id", &zone_id), ("kid", &rotation.kid)]).await?;
    tx.commit().await?;
    state.sts.keys.invalidate(&zone_id).await;
    state.outbox_notify.notify_one();
    tracing::info!(zone_id, kid = %rotation.kid, not_before = %rotation.not_before, by = %who.actor(), "zone signing key rotated");
    Ok((StatusCode::OK, Json(rotation)))
}
