//! `Refusal`: every way an invoke can fail, and the envelope it is answered with.
//!
//! Body `{"ok":false,"error":{"code","reason","remediation"?}}`, the original's shape. The status
//! of each code is decided in one exhaustive `match`, so a new variant must be given one.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why an invoke was not carried out (or failed while it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The gate file is absent. 503 `control_disabled`.
    #[error("control is disabled")]
    Disabled,
    /// Per-address or per-subject limit, or the limiter could not answer. 429 `rate_limited`.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// The body exceeds the Control limit. 413 `payload_too_large`.
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    /// No valid control token. 401 `unauthorized`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The token's `jti` was seen before, or cannot be checked. 401 `token_replay`.
    #[error("{0}")]
    Replay(&'static str),
    /// Malformed body or flags, or the admin API refused the input. 400 `invalid`.
    #[error("{0}")]
    Invalid(String),
    /// Missing `control:<command>:<verb>` scope, or the admin API refused. 403 `denied`.
    #[error("{0}")]
    Denied(String),
    /// Not in the catalog. 501 `unsupported`.
    #[error("{0}")]
    Unsupported(String),
    /// A `zone_id` flag naming another zone than the token's. 409 `zone_mismatch`.
    #[error("the zone_id flag names another zone than the token's")]
    ZoneMismatch,
    /// The admin API answered 404. 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// The admin API answered 409. 409 `conflict`.
    #[error("{0}")]
    Conflict(String),
    /// The admin API failed otherwise. 502 `upstream`.
    #[error("{0}")]
    Upstream(String),
    /// The allow decision could not be recorded, so nothing was dispatched. 500 `audit_unavailable`.
    #[error("the decision could not be recorded; nothing was changed")]
    AuditUnavailable,
}

impl Refusal {
    /// HTTP status and wire code (also the metric label).
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Disabled => (StatusCode::SERVICE_UNAVAILABLE, "control_disabled"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Replay(_) => (StatusCode::UNAUTHORIZED, "token_replay"),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Self::Denied(_) => (StatusCode::FORBIDDEN, "denied"),
            Self::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            Self::ZoneMismatch => (StatusCode::CONFLICT, "zone_mismatch"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream"),
            Self::AuditUnavailable => (StatusCode::INTERNAL_SERVER_ERROR, "audit_unavailable"),
        }
    }

    /// The wire code.
    pub fn code(&self) -> &'static str {
        self.status_code().1
    }

    /// What the caller can do about it, where there is something useful to say.
    fn remediation(&self) -> Option<&'static str> {
        match self {
            Self::Replay(_) => Some("mint a new control token for every invoke"),
            Self::Unauthorized(_) => {
                Some("mint a session mandate at /oauth/2/token with resource=<CONTROL_AUDIENCE> and the control scopes you need")
            }
            Self::RateLimited { .. } => Some("retry after the number of seconds in Retry-After"),
            Self::Unsupported(_) => Some("run `catalog describe` for the commands this server exposes"),
            Self::Denied(_) => Some("request the named scope when minting the control token"),
            Self::AuditUnavailable => Some("retry once the audit stream is reachable"),
            _ => None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let mut error = json!({"code": code, "reason": self.to_string()});
        if let Some(r) = self.remediation() {
            error["remediation"] = r.into();
        }
        let mut resp = (status, Json(json!({"ok": false, "error": error}))).into_response();
        match self {
            Self::RateLimited { retry_after_secs } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            // The rest of the body was never read: the connection cannot carry another request,
            // and a client that pooled it would fail its next one.
            Self::TooLarge(_) => {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn envelope_carries_code_reason_and_retry_after() {
        let resp = Refusal::RateLimited { retry_after_secs: 7 }.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "rate_limited");
        assert!(v["error"]["remediation"].is_string());
    }
}
