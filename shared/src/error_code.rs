//! Wire error codes and the error body every Caracal service answers with.
//!
//! Body: `{"error","error_description","requestId"}` (camelCase `requestId`, as the original
//! clients expect). Codes are the original's catalogue plus a few this implementation adds where the
//! original reused a misleading one (noted per variant).

use serde::{Deserialize, Serialize};

/// An error code as it appears in the `error` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    AccessDenied,
    InvalidToken,
    InvalidRequest,
    ResourceNotFound,
    InternalError,
    PolicyEvalFailed,
    ProviderRateLimited,
    InteractionRequired,
    ApprovalConsumed,
    StsUnavailable,
    CredentialExpiredNotRenewable,
    PayloadTooLarge,
    ZoneInvalid,
    ScopeInsufficient,
    OperationNotPermitted,
    HttpRequestFailed,
    /// The gateway could not reach its replay store; the original answered `invalid_token`
    /// ("token replay detected"), which tells an honest client its token was stolen.
    ReplayCheckUnavailable,
    /// A `use` other than the one this endpoint accepts (token confusion).
    WrongTokenUse,
    /// The upstream did not answer in time (the original said `internal_error`).
    UpstreamTimeout,
    /// Every member of the resource's upstream pool is down.
    UpstreamUnavailable,
    /// Every member of the resource's upstream pool is at its concurrency cap.
    UpstreamOverloaded,
    McpBodyRequired,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessDenied => "access_denied",
            Self::InvalidToken => "invalid_token",
            Self::InvalidRequest => "invalid_request",
            Self::ResourceNotFound => "resource_not_found",
            Self::InternalError => "internal_error",
            Self::PolicyEvalFailed => "policy_eval_failed",
            Self::ProviderRateLimited => "provider_rate_limited",
            Self::InteractionRequired => "interaction_required",
            Self::ApprovalConsumed => "approval_consumed",
            Self::StsUnavailable => "sts_unavailable",
            Self::CredentialExpiredNotRenewable => "credential_expired_not_renewable",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ZoneInvalid => "zone_invalid",
            Self::ScopeInsufficient => "scope_insufficient",
            Self::OperationNotPermitted => "operation_not_permitted",
            Self::HttpRequestFailed => "http_request_failed",
            Self::ReplayCheckUnavailable => "replay_check_unavailable",
            Self::WrongTokenUse => "wrong_token_use",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamOverloaded => "upstream_overloaded",
            Self::McpBodyRequired => "mcp_body_required",
        }
    }
}

/// The JSON error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Machine-readable code (an [`ErrorCode`] for our own errors, free text when relayed).
    pub error: String,
    /// Human-readable description; never carries secrets or internal addresses.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_description: String,
    /// The request id echoed in `X-Request-Id`.
    #[serde(rename = "requestId", default)]
    pub request_id: String,
    /// With `scope_insufficient` on an MCP operation: the scope that would allow it (the gateway
    /// puts it in its `WWW-Authenticate: Bearer error="insufficient_scope", scope=…` challenge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl WireError {
    /// Builds a body for one of our own codes.
    pub fn new(code: ErrorCode, description: impl Into<String>, request_id: impl Into<String>) -> Self {
        Self { error: code.as_str().to_owned(), error_description: description.into(), request_id: request_id.into(), scope: None }
    }

    /// Serializes the body to JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("WireError serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_uses_camel_case_request_id_and_omits_empty_description() {
        let body = WireError::new(ErrorCode::InvalidToken, "", "r1");
        assert_eq!(String::from_utf8(body.to_json()).unwrap(), r#"{"error":"invalid_token","requestId":"r1"}"#);
    }

    #[test]
    fn serde_names_match_as_str() {
        for code in [ErrorCode::AccessDenied, ErrorCode::CredentialExpiredNotRenewable, ErrorCode::ReplayCheckUnavailable] {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::Value::String(code.as_str().into()));
        }
    }
}
