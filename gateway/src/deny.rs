//! Every way the gateway refuses a request, and the one place that maps a refusal to its status,
//! wire code, description and metric label.
//!
//! The match in [`Denial::wire`] has no wildcard arm: a new denial must choose its status. Bodies are
//! `{"error","error_description","requestId"}` (DESIGN §4); descriptions never carry tokens or
//! internal addresses.

use bytes::Bytes;
use caracal_shared::{ErrorCode, WireError};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::config::GatewayConfig;
use crate::discovery;

/// Why a request was not forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The revocation view is stale: nothing can be allowed.
    RevocationStale,
    /// A mandate anchor (`sid`, `root_sid`, agent session, delegation edge) is revoked.
    Revoked,
    /// No `Authorization: Bearer …`.
    MissingBearer,
    /// Bearer longer than 4 KiB.
    BearerTooLarge,
    /// Not a compact ES256 JWS with parseable claims.
    MalformedBearer,
    /// Expires within the pre-flight window (or already expired).
    Expiring,
    /// The client sent `X-Caracal-Client-ID`: client identity comes from the mandate only.
    ClientIdHeader,
    /// No `X-Caracal-Resource`.
    MissingResource,
    /// `zone_id` or `client_id` claim missing or malformed.
    BadIdentityClaims,
    /// A mandate minted for another `use` (session or resource mandate at the gateway).
    WrongUse,
    /// `iss` or `aud` is not this deployment's issuer.
    WrongIssuer,
    /// The mandate does not list the requested resource in `target`.
    TargetMismatch,
    /// Dot segments, backslashes or undecodable escapes in the path.
    PathTraversal,
    /// Request body over `MAX_REQUEST_BYTES`.
    PayloadTooLarge,
    /// Signature does not verify against the zone's published keys (or the zone has none).
    Signature,
    /// The zone's keys could not be fetched and none are cached.
    KeysUnavailable,
    /// The mandate's `jti` was already used.
    Replay,
    /// The replay store (Redis) failed: deny rather than risk a replay.
    ReplayCheckUnavailable,
    /// The STS refused the exchange (4xx); its status, code and description are relayed (and the
    /// scope that would allow an MCP operation, when that is the reason).
    StsRefused { status: u16, code: String, description: String, scope: Option<String> },
    /// The STS failed the exchange (5xx with its error body, e.g. `policy_eval_failed`); relayed
    /// like a refusal, but counted as an STS failure (and by the zone's circuit).
    StsFailed { status: u16, code: String, description: String },
    /// The STS could not be reached or answered outside the contract.
    StsUnavailable { status: u16, description: &'static str },
    /// The STS circuit is open: fail fast.
    StsCircuitOpen,
    /// The STS granted the exchange but named no usable upstream for the resource.
    NoUpstream,
    /// The upstream URL is not something the gateway will dial.
    UpstreamNotAddressable,
    /// The upstream could not be reached or failed before answering.
    UpstreamUnreachable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// Every member of the resource's pool is down (probes or passive ejection): fail closed.
    UpstreamUnavailable,
    /// Every live member of the resource's pool is at its concurrency cap: shed, never queue.
    UpstreamOverloaded,
    /// A POST to an MCP resource that is not well-formed JSON-RPC, whose mirrored headers do not
    /// match its body, or that could not be read (no length, over `MCP_MAX_BODY_BYTES`).
    McpMalformed(crate::phases::mcp::Refusal),
    /// The STS refused an MCP operation: answered as JSON-RPC (`phases::mcp::answer`).
    McpDenied(Box<crate::phases::mcp::answer::McpDenial>),
    /// An `Mcp-Session-Id` this principal's root session does not hold (another's, or never
    /// issued through the gateway): the transport's 404 for an unknown session.
    McpSessionUnknown,
    /// The session store (Redis) failed: deny rather than let a session cross principals.
    McpSessionUnavailable,
    /// OAuth discovery: the request names no plausible authority to build the public URL from.
    BadHost,
}

impl Denial {
    /// Status, wire code and client-safe description.
    pub fn wire(&self) -> (u16, &str, &str) {
        use ErrorCode::*;
        let (status, code, description): (u16, ErrorCode, &str) = match self {
            Self::RevocationStale => (503, StsUnavailable, "revocation state unavailable"),
            Self::Revoked => (401, InvalidToken, "session revoked"),
            Self::MissingBearer => (401, InvalidToken, "missing bearer token"),
            Self::BearerTooLarge => (401, InvalidToken, "bearer token too large"),
            Self::MalformedBearer => (401, InvalidToken, "malformed bearer token"),
            Self::Expiring => (401, CredentialExpiredNotRenewable, "credential expiring within pre-flight window"),
            Self::ClientIdHeader => (400, InvalidToken, "client identity derives from the bearer token"),
            Self::MissingResource => (400, InvalidToken, "missing routing headers"),
            Self::BadIdentityClaims => (401, InvalidToken, "missing token zone or client"),
            Self::WrongUse => (401, InvalidToken, "only gateway mandates are accepted here"),
            Self::WrongIssuer => (401, InvalidToken, "mandate issuer or audience not accepted"),
            Self::TargetMismatch => (403, AccessDenied, "mandate does not target this resource"),
            Self::PathTraversal => (400, InvalidToken, "path traversal not permitted"),
            Self::PayloadTooLarge => (413, ErrorCode::PayloadTooLarge, "request body too large"),
            Self::Signature => (401, InvalidToken, "bearer signature invalid"),
            Self::KeysUnavailable => (503, StsUnavailable, "signing keys unavailable"),
            Self::Replay => (401, InvalidToken, "token replay detected"),
            Self::ReplayCheckUnavailable => (503, ErrorCode::ReplayCheckUnavailable, "replay protection unavailable"),
            Self::StsRefused { status, code, description, .. } | Self::StsFailed { status, code, description } => {
                return (*status, code, description);
            }
            Self::StsUnavailable { status, description } => (*status, StsUnavailable, description),
            Self::StsCircuitOpen => (503, StsUnavailable, "sts unavailable"),
            Self::NoUpstream => (403, AccessDenied, "resource upstream not configured"),
            Self::UpstreamNotAddressable => (502, InternalError, "upstream not addressable"),
            Self::UpstreamUnreachable => (502, InternalError, "upstream unreachable"),
            Self::UpstreamTimeout => (504, ErrorCode::UpstreamTimeout, "upstream timeout"),
            Self::UpstreamUnavailable => (503, ErrorCode::UpstreamUnavailable, "no healthy upstream endpoint"),
            Self::UpstreamOverloaded => (503, ErrorCode::UpstreamOverloaded, "upstream endpoints at capacity"),
            Self::McpMalformed(r) => (r.status(), InvalidRequest, "malformed MCP request"),
            Self::McpDenied(d) => return (d.status, &d.code, &d.description),
            Self::McpSessionUnknown => (404, InvalidRequest, "Session not found"),
            Self::McpSessionUnavailable => (503, ErrorCode::ReplayCheckUnavailable, "session store unavailable"),
            Self::BadHost => (400, InvalidRequest, "the Host header is not a valid authority"),
        };
        (status, code.as_str(), description)
    }

    /// The metric this denial counts in: `caracal_gateway_denials_<label>_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::RevocationStale => "revocation_stale",
            Self::Revoked => "revoked",
            Self::MissingBearer => "missing_auth",
            Self::BearerTooLarge | Self::MalformedBearer => "bad_bearer",
            Self::Expiring => "expiring",
            Self::ClientIdHeader | Self::MissingResource | Self::BadIdentityClaims => "bad_routing",
            Self::WrongUse => "wrong_use",
            Self::WrongIssuer => "bad_claims",
            Self::TargetMismatch => "target_mismatch",
            Self::PathTraversal => "path_traversal",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Signature => "signature",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Replay => "jti_replay",
            Self::ReplayCheckUnavailable => "jti_unavailable",
            Self::StsRefused { .. } => "sts_refused",
            Self::StsUnavailable { .. } | Self::StsFailed { .. } => "sts_exchange_errors",
            Self::StsCircuitOpen => "sts_circuit_open",
            Self::NoUpstream => "no_upstream",
            Self::UpstreamNotAddressable | Self::UpstreamUnreachable | Self::UpstreamTimeout => "upstream_errors",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamOverloaded => "upstream_overloaded",
            Self::McpMalformed(_) => "mcp_malformed",
            Self::McpDenied(_) => "mcp_denied",
            Self::McpSessionUnknown => "mcp_session_unknown",
            Self::McpSessionUnavailable => "jti_unavailable",
            Self::BadHost => "bad_host",
        }
    }

    /// The RFC 6750 §3.1 `error` of this denial's 401 challenge: none when the request carried no
    /// token, the STS's own code for a relayed step-up hold, else `invalid_token`.
    pub fn challenge_error(&self) -> Option<&'static str> {
        match self {
            Self::MissingBearer => None,
            Self::StsRefused { code, .. } if code == "interaction_required" => Some("interaction_required"),
            _ => Some("invalid_token"),
        }
    }

    /// Every metric label, so all counters exist (at zero) from start-up.
    pub const METRIC_LABELS: &'static [&'static str] = &[
        "revocation_stale",
        "revoked",
        "missing_auth",
        "bad_bearer",
        "expiring",
        "bad_routing",
        "wrong_use",
        "bad_claims",
        "target_mismatch",
        "path_traversal",
        "payload_too_large",
        "signature",
        "keys_unavailable",
        "jti_replay",
        "jti_unavailable",
        "sts_refused",
        "sts_exchange_errors",
        "sts_circuit_open",
        "no_upstream",
        "upstream_errors",
        "upstream_unavailable",
        "upstream_overloaded",
        "mcp_malformed",
        "mcp_denied",
        "mcp_session_unknown",
        "bad_host",
    ];
}

/// Writes a complete response (status, JSON body, `X-Request-Id`) and ends it.
pub async fn respond_json(
    session: &mut Session,
    status: u16,
    request_id: &str,
    body: Bytes,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header(caracal_shared::request_id::HEADER, request_id)?;
    for (name, value) in extra {
        resp.insert_header(*name, *value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Writes the denial's wire body: JSON-RPC for MCP refusals, the error body otherwise; a 401
/// carries the challenge that leads to OAuth discovery.
pub async fn respond(session: &mut Session, denial: &Denial, request_id: &str, cfg: &GatewayConfig) -> pingora::Result<()> {
    match denial {
        Denial::McpMalformed(r) => return respond_json(session, r.status(), request_id, Bytes::from(r.body().to_string()), &[]).await,
        Denial::McpSessionUnknown => {
            // What an MCP server answers for a session it does not know: the client starts anew.
            let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "Session not found"}});
            return respond_json(session, 404, request_id, Bytes::from(body.to_string()), &[]).await;
        }
        Denial::McpDenied(d) => {
            // The step-up challenge names the resource metadata too, as the MCP spec's 403 does.
            let challenge = d.challenge.as_deref().map(|c| {
                let req = session.req_header();
                match discovery::origin(cfg, req) {
                    Some(origin) => format!("{c}, resource_metadata=\"{}\"", discovery::metadata_url(&origin, req.uri.path())),
                    None => c.to_owned(),
                }
            });
            let pair = challenge.as_deref().map(|c| ("www-authenticate", c));
            return respond_json(session, d.status, request_id, d.body.clone(), pair.as_slice()).await;
        }
        _ => {}
    }
    let (status, code, description) = denial.wire();
    let body =
        WireError { error: code.to_owned(), error_description: description.to_owned(), request_id: request_id.to_owned(), scope: None };
    let challenge = (status == 401).then(|| {
        let req = session.req_header();
        discovery::challenge(discovery::origin(cfg, req).as_deref(), req.uri.path(), denial.challenge_error())
    });
    let pair;
    let extra: &[(&str, &str)] = match &challenge {
        Some(c) => {
            pair = [("www-authenticate", c.as_str())];
            &pair
        }
        None => &[],
    };
    respond_json(session, status, request_id, Bytes::from(body.to_json()), extra).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_listed_and_status_is_an_error() {
        let all = [
            Denial::RevocationStale,
            Denial::Revoked,
            Denial::MissingBearer,
            Denial::BearerTooLarge,
            Denial::MalformedBearer,
            Denial::Expiring,
            Denial::ClientIdHeader,
            Denial::MissingResource,
            Denial::BadIdentityClaims,
            Denial::WrongUse,
            Denial::WrongIssuer,
            Denial::TargetMismatch,
            Denial::PathTraversal,
            Denial::PayloadTooLarge,
            Denial::Signature,
            Denial::KeysUnavailable,
            Denial::Replay,
            Denial::ReplayCheckUnavailable,
            Denial::StsRefused { status: 403, code: "access_denied".into(), description: "policy denied".into(), scope: None },
            Denial::StsUnavailable { status: 502, description: "sts unavailable" },
            Denial::StsFailed { status: 503, code: "policy_eval_failed".into(), description: "policy evaluation failed".into() },
            Denial::StsCircuitOpen,
            Denial::NoUpstream,
            Denial::UpstreamNotAddressable,
            Denial::UpstreamUnreachable,
            Denial::UpstreamTimeout,
            Denial::UpstreamUnavailable,
            Denial::UpstreamOverloaded,
            Denial::McpMalformed(crate::phases::mcp::Refusal::TooLarge),
            Denial::McpSessionUnknown,
            Denial::McpSessionUnavailable,
            Denial::BadHost,
        ];
        for d in &all {
            assert!(Denial::METRIC_LABELS.contains(&d.metric_label()), "{d:?}");
            let (status, code, description) = d.wire();
            assert!((400..600).contains(&status), "{d:?}");
            assert!(!code.is_empty() && !description.is_empty(), "{d:?}");
        }
    }

    #[test]
    fn the_challenge_error_says_invalid_token_only_when_a_token_was_presented() {
        assert_eq!(Denial::MissingBearer.challenge_error(), None, "RFC 6750 §3.1: no credentials, no error code");
        for d in [Denial::MalformedBearer, Denial::BearerTooLarge, Denial::Expiring, Denial::Signature, Denial::Replay, Denial::Revoked] {
            assert_eq!(d.challenge_error(), Some("invalid_token"), "{d:?}");
        }
        let refused = |code: &str| Denial::StsRefused { status: 401, code: code.into(), description: "x".into(), scope: None };
        assert_eq!(refused("interaction_required").challenge_error(), Some("interaction_required"), "the STS's own challenge");
        assert_eq!(refused("invalid_token").challenge_error(), Some("invalid_token"));
        assert_eq!(refused("bad\"code").challenge_error(), Some("invalid_token"), "a relayed code never reaches the header");
    }

    #[test]
    fn sts_refusals_are_relayed_verbatim() {
        let d = Denial::StsRefused { status: 403, code: "operation_not_permitted".into(), description: "GET /x".into(), scope: None };
        assert_eq!(d.wire(), (403, "operation_not_permitted", "GET /x"));
    }
}
