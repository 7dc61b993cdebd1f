//! The per-request context every hook reads and writes.
//!
//! Grouped by phase; each field says who writes it and who reads it.

use std::time::Instant;

use crate::deny::Denial;
use crate::phases::exchange::ExchangeGrant;
use crate::phases::revocation::StreamGuard;
use crate::phases::upstream::SafePeer;
use crate::phases::watch::{Trip, UpstreamWatch};

/// State of one request through the gateway.
pub struct RequestCtx {
    /// Written by `request_filter` (inbound `X-Request-Id` if safe, else a new UUIDv7); read by
    /// every response, the STS exchange and the logs.
    pub request_id: String,
    /// Written by `new_ctx`; read by `logging` for the latency histogram.
    pub started: Instant,
    /// Written by `request_filter` when the request is a gateway endpoint (`/health`, …) rather
    /// than a proxied request; read by `logging` so such requests are not counted as traffic.
    pub internal: bool,
    /// Written by the pipeline on refusal; read by `logging`.
    pub denial: Option<Denial>,
    /// Who the request is from, once the mandate's claims were read (written by the pipeline;
    /// read by audit emission in the refusal path and `logging`).
    pub subject: Option<Subject>,
    /// The upstream's status, written by `response_filter`; read by `logging` for the audit event.
    pub upstream_status: Option<u16>,
    /// Written by the pipeline once every check passed; read by `upstream_peer`,
    /// `upstream_request_filter` and `response_filter`.
    pub forward: Option<Forward>,
    /// A POST that looks like MCP, read before the exchange (`phases::mcp::intake`); written by
    /// `request_filter`, read by the exchange, the denial and the audit event.
    pub mcp: Option<crate::phases::mcp::intake::Intake>,
    /// Filters the answer to an MCP listing (`phases::mcp::lists`); written by `response_filter`,
    /// fed by `response_body_filter`.
    pub lists: Option<crate::phases::mcp::lists::ListFilter>,
    /// Request body bytes seen so far; written and read by `request_body_filter` (size limit).
    pub body_bytes: u64,
    /// The upstream watch (deadlines, idle-stream cut), armed by `connected_to_upstream`; fed by
    /// the body filters, told the body's shape by `response_filter`, disarmed at the end of the
    /// body and first thing in `error_while_proxy`, `fail_to_proxy` and `logging`.
    pub upstream: Option<UpstreamWatch>,
    /// Written by `response_filter`; read by `response_body_filter` (4 KiB re-checks, cut) and
    /// `logging` (bytes for the audit event).
    pub stream: Option<StreamGuard>,
    /// The request's trace (continued or new), written by `request_filter`; read by the STS
    /// exchange, `upstream_request_filter` and the logs.
    pub trace: Option<crate::trace::Trace>,
    /// Phase timings: written by the pipeline, `upstream_request_filter` and `response_filter`;
    /// read by `response_filter` (`Server-Timing`) and `logging`.
    pub timings: crate::trace::Timings,
}

/// The mandate's identity facts the audit trail records (never the token itself).
pub struct Subject {
    pub zone_id: String,
    pub client_id: String,
    pub jti: String,
    pub sub_type: &'static str,
    pub resource: String,
    /// First 8 bytes of the bearer's SHA-256, hex.
    pub fingerprint: String,
}

/// What a request that passed every check carries to the proxy hooks.
pub struct Forward {
    /// The resource mandate and upstream directive from the STS.
    pub grant: ExchangeGrant,
    /// The resolved, checked upstream.
    pub peer: SafePeer,
    /// `exp` of the inbound gateway mandate (for `X-Caracal-Token-Expires-In`).
    pub mandate_exp: i64,
    /// The mandate's revocation anchors, re-checked while the response streams.
    pub anchors: std::sync::Arc<Vec<String>>,
    /// The revocation view's epoch when the anchors were checked at admission.
    pub revocation_epoch: u64,
    /// The request's route through its pool (pools only): the member held in flight (released
    /// with the context), the members tried, each attempt.
    pub route: Option<crate::phases::pool::Route>,
    /// MCP resources only: who may use the resource's sessions (`phases::mcp::sessions`).
    pub mcp_owner: Option<crate::phases::mcp::sessions::Owner>,
}

impl RequestCtx {
    /// A fresh context.
    pub fn new() -> Self {
        Self {
            request_id: String::new(),
            started: Instant::now(),
            internal: false,
            denial: None,
            subject: None,
            upstream_status: None,
            forward: None,
            mcp: None,
            lists: None,
            body_bytes: 0,
            upstream: None,
            stream: None,
            trace: None,
            timings: crate::trace::Timings::default(),
        }
    }

    /// Whether a revocation cut the response.
    pub fn revocation_cut(&self) -> bool {
        self.upstream.as_ref().is_some_and(|w| w.tripped() == Some(Trip::Revoked))
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
