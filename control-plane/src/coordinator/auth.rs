//! Who is calling the Coordinator: a runtime (session mandate with `agent:lifecycle`) or an
//! operator (admin token).

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use caracal_shared::Claims;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AdminPrincipal, Scope, bearer};
use crate::state::AppState;

/// The scope a runtime mandate needs for the Coordinator.
pub const LIFECYCLE_SCOPE: &str = "agent:lifecycle";

/// The caller of a Coordinator route, already checked against the zone in the path.
pub enum Caller {
    /// An application's runtime, by its session mandate.
    Runtime(Box<Claims>),
    /// An operator with an admin token for the zone.
    Operator(AdminPrincipal),
}

impl Caller {
    /// The application a runtime acts for (operators act for none).
    pub fn application(&self) -> Option<&str> {
        match self {
            Self::Runtime(c) => Some(&c.client_id),
            Self::Operator(_) => None,
        }
    }

    /// Refuses a runtime acting on another application's objects.
    pub fn require_owner(&self, application_id: &str) -> ApiResult<()> {
        match self.application() {
            None => Ok(()),
            Some(a) if a == application_id => Ok(()),
            Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "not_owner", "the object belongs to another application")),
        }
    }

    /// Who did it, for logs.
    pub fn actor(&self) -> String {
        match self {
            Self::Runtime(c) => format!("application:{}", c.client_id),
            Self::Operator(p) => p.actor(),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let zone_id = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|Path(p)| p.into_iter().find(|(k, _)| k == "zone_id").map(|(_, v)| v))
            .ok_or_else(|| ApiError::bad_request("invalid_params", "zone id missing"))?;
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "a session mandate or an admin token is required"))?;
        if token.starts_with("cat_") {
            let admin = AdminPrincipal::authenticate(state, &parts.headers).await?;
            match &admin.scope {
                Scope::Global => crate::evidence::Actor::record(&parts.extensions, || admin.actor()),
                Scope::Zone(z) => crate::evidence::Actor::record_in_zone(&parts.extensions, || admin.actor(), z),
            }
            admin.require_zone(&zone_id)?;
            crate::api::require_live_zone(&state.db, &zone_id).await?;
            return Ok(Self::Operator(admin));
        }
        let claims = state.sts.verify_runtime_mandate(&zone_id, token).await.map_err(|e| match e {
            caracal_sts::StsError::InvalidSubjectToken("zone mismatch") => {
                ApiError::new(StatusCode::FORBIDDEN, "zone_mismatch", "the mandate belongs to another zone")
            }
            other => ApiError::from(other),
        })?;
        crate::evidence::Actor::record_in_zone(
            &parts.extensions,
            || format!("mandate:{}:{}", claims.client_id, claims.sub),
            &claims.zone_id,
        );
        if !claims.scopes().any(|s| s == LIFECYCLE_SCOPE) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "missing_scope", "the session mandate lacks the agent:lifecycle scope"));
        }
        // An archived zone has no Coordinator, even for a mandate whose signature check is
        // remembered (the zone's sessions are revoked too; this holds while that message travels).
        match state.sts.keys.zone(&zone_id).await {
            Ok(_) => {}
            Err(caracal_sts::StsError::ZoneNotFound) => return Err(ApiError::not_found("zone_not_found")),
            Err(e) => return Err(e.into()),
        }
        Ok(Self::Runtime(Box::new(claims)))
    }
}
