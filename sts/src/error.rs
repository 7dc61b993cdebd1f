//! STS errors and their wire form (status, code, description).
//!
//! One exhaustive `match` maps every variant to what the client sees; internal causes are logged by
//! the HTTP layer and never put in the body.

use caracal_shared::ErrorCode;

/// Everything a token exchange can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// Malformed request: wrong shape, missing or duplicated fields, bad values.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The body is not `application/x-www-form-urlencoded`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body exceeds the STS limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// Unknown application, wrong secret, archived application: one answer for all (no oracle).
    #[error("invalid client credentials")]
    InvalidClient,
    /// The application exists, with this secret, in another zone than the one named.
    #[error("application presented in another zone")]
    ZoneInvalid,
    /// The gateway exchange signature, timestamp or nonce is wrong.
    #[error("invalid gateway exchange signature")]
    InvalidGatewaySignature,
    /// The subject token is not a valid mandate for this exchange.
    #[error("invalid subject token: {0}")]
    InvalidSubjectToken(&'static str),
    /// A mandate presented for a `use` it was not minted for.
    #[error("token use not accepted here: {0}")]
    WrongTokenUse(&'static str),
    /// The session the request descends from is revoked, expired or unknown.
    #[error("session is not active")]
    SessionInactive,
    /// Policy, scope or target refusal.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// An enforced resource does not declare this operation, or the mandate lacks its scope.
    #[error("operation not permitted: {0}")]
    OperationNotPermitted(String),
    /// A POST to an MCP resource came without the MCP facts of its body: the gateway did not
    /// read it as MCP (no JSON body, no `Accept: text/event-stream`, or over its MCP body limit).
    #[error("mcp body required")]
    McpBodyRequired,
    /// An enforced MCP resource declares this MCP operation with a scope the mandate lacks.
    #[error("mcp operation needs scope {scope}")]
    McpScopeInsufficient { scope: String, description: String },
    /// The resource's credential provider could not yield a credential (its token endpoint failed).
    #[error("credential provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// The policy engine failed (compile or evaluation error, or a result outside the contract).
    #[error("policy evaluation failed: {0}")]
    PolicyEvalFailed(String),
    /// The zone does not exist (or has no signing keys).
    #[error("zone not found")]
    ZoneNotFound,
    /// The client minted more than its limit this minute.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// The client is locked out after repeated bad credentials.
    #[error("locked out")]
    Locked { retry_after_secs: u64 },
    /// The policy allows only after a human approval; the hold is pending (or was just opened).
    #[error("interaction required")]
    InteractionRequired(Box<crate::step_up::Challenge>),
    /// `approval_id` is unknown, or was issued for another request, client or policy version.
    #[error("approval invalid")]
    ApprovalInvalid,
    /// The approval expired before it was decided or used.
    #[error("approval expired")]
    ApprovalExpired,
    /// An approver rejected the request.
    #[error("approval rejected")]
    ApprovalRejected,
    /// The approval already authorized a mint.
    #[error("approval consumed")]
    ApprovalConsumed,
    /// Too many failed step-up attempts by this client.
    #[error("step-up throttled")]
    StepUpThrottled { retry_after_secs: u64 },
    /// A dependency (Postgres, Redis) failed: the STS denies rather than guess.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// A bug or a broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StsError {
    /// HTTP status, wire code and a description safe to show the client.
    pub fn wire(&self) -> (u16, ErrorCode, String) {
        match self {
            // The original's code for a malformed exchange (the published clients map it).
            Self::InvalidRequest(d) => (400, ErrorCode::InvalidToken, d.clone()),
            Self::UnsupportedMediaType => (415, ErrorCode::InvalidToken, "content type must be application/x-www-form-urlencoded".into()),
            Self::PayloadTooLarge => (413, ErrorCode::PayloadTooLarge, "request body too large".into()),
            Self::InvalidClient => (401, ErrorCode::AccessDenied, "invalid client credentials".into()),
            Self::ZoneInvalid => (403, ErrorCode::ZoneInvalid, "the application belongs to another zone".into()),
            Self::InvalidGatewaySignature => (401, ErrorCode::AccessDenied, "invalid gateway exchange signature".into()),
            Self::InvalidSubjectToken(d) => (401, ErrorCode::InvalidToken, format!("invalid subject_token: {d}")),
            // A mandate of another `use` is an invalid token to the original's clients.
            Self::WrongTokenUse(d) => (401, ErrorCode::InvalidToken, (*d).into()),
            Self::SessionInactive => (401, ErrorCode::InvalidToken, "session revoked or expired".into()),
            Self::AccessDenied(d) => (403, ErrorCode::AccessDenied, d.clone()),
            Self::OperationNotPermitted(d) => (403, ErrorCode::OperationNotPermitted, d.clone()),
            Self::McpBodyRequired => (
                400,
                ErrorCode::McpBodyRequired,
                "an MCP resource takes JSON-RPC POSTs with Content-Type application/json, Accept listing text/event-stream \
                 and a Content-Length within the gateway's MCP body limit"
                    .into(),
            ),
            Self::McpScopeInsufficient { description, .. } => (403, ErrorCode::ScopeInsufficient, description.clone()),
            Self::ProviderUnavailable(_) => (502, ErrorCode::HttpRequestFailed, "the resource's credential provider is unavailable".into()),
            Self::PolicyEvalFailed(_) => (503, ErrorCode::PolicyEvalFailed, "policy evaluation failed".into()),
            Self::ZoneNotFound => (404, ErrorCode::ResourceNotFound, "zone not found".into()),
            Self::RateLimited { .. } => (429, ErrorCode::ProviderRateLimited, "mint rate limit exceeded".into()),
            Self::Locked { .. } => (429, ErrorCode::ProviderRateLimited, "authentication rate limit exceeded".into()),
            Self::InteractionRequired(_) => (401, ErrorCode::InteractionRequired, "human approval required".into()),
            Self::ApprovalInvalid => (401, ErrorCode::AccessDenied, "approval invalid".into()),
            Self::ApprovalExpired => (401, ErrorCode::AccessDenied, "approval expired".into()),
            Self::ApprovalRejected => (403, ErrorCode::AccessDenied, "approval rejected".into()),
            Self::ApprovalConsumed => (409, ErrorCode::ApprovalConsumed, "approval already used".into()),
            Self::StepUpThrottled { .. } => (429, ErrorCode::ProviderRateLimited, "too many failed step-up attempts".into()),
            Self::Unavailable(_) => (503, ErrorCode::StsUnavailable, "a dependency of the STS is unavailable".into()),
            Self::Internal(_) => (500, ErrorCode::InternalError, "the STS failed to process the request".into()),
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::UnsupportedMediaType | Self::PayloadTooLarge => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::ZoneInvalid => "zone_invalid",
            Self::InvalidGatewaySignature => "gateway_signature",
            Self::InvalidSubjectToken(_) => "invalid_subject_token",
            Self::WrongTokenUse(_) => "wrong_token_use",
            Self::SessionInactive => "session_inactive",
            Self::AccessDenied(_) => "access_denied",
            Self::OperationNotPermitted(_) => "operation_not_permitted",
            Self::McpBodyRequired => "mcp_body_required",
            Self::McpScopeInsufficient { .. } => "scope_insufficient",
            Self::ProviderUnavailable(_) => "provider_unavailable",
            Self::PolicyEvalFailed(_) => "policy_eval_failed",
            Self::ZoneNotFound => "zone_not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Locked { .. } => "locked_out",
            Self::InteractionRequired(_) => "interaction_required",
            Self::ApprovalInvalid => "approval_invalid",
            Self::ApprovalExpired => "approval_expired",
            Self::ApprovalRejected => "approval_rejected",
            Self::ApprovalConsumed => "approval_consumed",
            Self::StepUpThrottled { .. } => "step_up_throttled",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl StsError {
    /// Seconds a client should wait before retrying, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } | Self::Locked { retry_after_secs } | Self::StepUpThrottled { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }
}

impl From<sqlx::Error> for StsError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(format!("postgres: {e}"))
    }
}

impl From<redis::RedisError> for StsError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(format!("redis: {e}"))
    }
}
