//! `ApiError`: every failure of an admin route, rendered as
//! `{"error","error_description","requestId"}`.
//!
//! Handlers return `ApiError`; its `IntoResponse` stores the error in the response extensions and
//! the request-context middleware ([`crate::app`]) writes the body with the request id, logging
//! internal causes there. Clients never see an internal cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use caracal_sts::StsError;

/// An admin API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Logged, never sent.
    pub internal: Option<String>,
}

/// `Result` with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a client-facing code and description.
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self { status, code, description: description.into(), internal: None }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }

    /// 404 `<thing>_not_found`.
    pub fn not_found(code: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, "not found")
    }

    /// 409.
    pub fn conflict(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, description)
    }

    /// 500 with a logged cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error",
            description: "The service failed to process the request".into(),
            internal: Some(cause.to_string()),
        }
    }

    /// 503 with a logged cause.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "service_unavailable",
            description: "A dependency of the service is unavailable".into(),
            internal: Some(cause.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.status.into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => Self::unavailable(format!("postgres: {e}")),
            _ => Self::internal(format!("postgres: {e}")),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        Self::unavailable(format!("redis: {e}"))
    }
}

impl From<StsError> for ApiError {
    fn from(e: StsError) -> Self {
        let (status, code, description) = e.wire();
        let mut err = Self::new(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), code.as_str(), description);
        if status >= 500 {
            err.internal = Some(e.to_string());
        }
        err
    }
}

/// Whether a database error is a unique-constraint violation (to answer 409 instead of 500).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
