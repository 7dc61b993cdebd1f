//! Audit emission: what the gateway did, as signed frames on `caracal.audit.events`.
//!
//! Events: `gateway_resource_request` for every forwarded request (with `revocation_interrupted`
//! when a revocation cut its response) and `replay_detected` for every replayed mandate. The
//! request path only queues an event ([`AuditSink::emit`], non-blocking); the [`shipper`] signs
//! and sends them in pipelined batches. While Redis is unreachable, batches go to files in
//! `AUDIT_REPLAY_DIR` ([`spool`]) and are sent as soon as Redis answers again (the original
//! drained them only at start-up). An event that can be neither queued, sent nor spooled is
//! counted as lost, and `/ready` fails from then on: evidence loss must be loud.

pub mod shipper;
pub mod spool;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use caracal_shared::audit::{AuditEvent, Frame};
use tokio::sync::mpsc;

use crate::audit::spool::Spool;

/// Queue capacity between the request path and the shipper.
pub const QUEUE: usize = 10_000;

/// Counters of the audit path.
#[derive(Clone)]
pub struct AuditMetrics {
    pub emitted: prometheus::IntCounter,
    pub spooled: prometheus::IntCounter,
    pub drained: prometheus::IntCounter,
    pub lost: prometheus::IntCounter,
}

/// The request path's handle.
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
    spool: Arc<Spool>,
    key: Option<Vec<u8>>,
    lost: Arc<AtomicBool>,
    metrics: AuditMetrics,
}

impl AuditSink {
    /// A sink and the receiver its shipper drains.
    pub fn new(spool: Arc<Spool>, key: Option<Vec<u8>>, metrics: AuditMetrics) -> (Self, mpsc::Receiver<AuditEvent>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let lost = Arc::new(AtomicBool::new(false));
        (Self { tx, spool, key, lost: lost.clone(), metrics }, rx, lost)
    }

    /// Queues an event; when the queue is full, writes it to the spool directly.
    pub fn emit(&self, event: AuditEvent) {
        let event = match self.tx.try_send(event) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => e,
        };
        let frame = Frame::seal(&event, self.key.as_deref());
        match self.spool.append(std::slice::from_ref(&frame)) {
            Ok(()) => self.metrics.spooled.inc(),
            Err(e) => {
                self.metrics.lost.inc();
                self.lost.store(true, Ordering::Release);
                tracing::error!(event_id = %event.id, error = %e, "audit event lost: queue full and spool unwritable");
            }
        }
    }

    /// Whether an event was ever lost (sticky: `/ready` fails until restart).
    pub fn lost_any(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Spooled files waiting.
    pub fn spool_files(&self) -> usize {
        self.spool.usage().0
    }

    /// Whether the spool directory accepts files.
    pub fn spool_writable(&self) -> bool {
        self.spool.probe().is_ok()
    }
}

/// `gateway_resource_request` for a forwarded request.
pub fn forwarded(sink: &AuditSink, ctx: &crate::ctx::RequestCtx, method: &str, status: u16, elapsed: std::time::Duration) {
    let (Some(subject), Some(fwd)) = (&ctx.subject, &ctx.forward) else { return };
    let interrupted = ctx.revocation_cut();
    let result_class = match ctx.upstream_status {
        Some(200..=299) => "success",
        Some(300..=399) => "redirect",
        Some(400..=499) => "client_error",
        Some(500..) => "server_error",
        _ => "unknown",
    };
    let mut meta = serde_json::json!({
        "application_id": subject.client_id,
        "resource": subject.resource,
        "subject_fingerprint": subject.fingerprint,
        "subject_kind": subject.sub_type,
        "method": method,
        "gateway_status": status,
        "latency_ms": elapsed.as_millis() as u64,
        "response_bytes": ctx.stream.as_ref().map_or(0, |g| g.bytes()),
        "upstream_host": fwd.peer.authority,
        "auth_mode": match fwd.peer.credential {
            crate::phases::upstream::Credential::None => "none",
            crate::phases::upstream::Credential::CaracalJwt { .. } => "caracal_jwt",
            crate::phases::upstream::Credential::ProviderHeader { .. } | crate::phases::upstream::Credential::ProviderQuery { .. } => {
                "provider_apikey"
            }
        },
        "result_class": result_class,
    });
    if let Some(s) = ctx.upstream_status {
        meta["upstream_status"] = s.into();
    }
    if let Some(post) = ctx.mcp.as_ref().and_then(|m| m.post()) {
        // Which tools, prompts and resources the call used (names and URIs; never arguments).
        meta["mcp_calls"] = serde_json::to_value(post.calls()).unwrap_or_default();
    }
    if let Some(route) = &fwd.route {
        // Every attempt on the pool, the retries included: same resource mandate each time.
        meta["upstream_endpoint"] = route.endpoint().into();
        meta["upstream_attempts"] = route.attempts();
    }
    let status_label = if interrupted {
        meta["revocation_interrupted"] = true.into();
        "revoked_mid_stream"
    } else if ctx.denial.is_some() || ctx.upstream_status.is_none() {
        "upstream_error"
    } else {
        "executed"
    };
    sink.emit(AuditEvent::new(&subject.zone_id, "gateway_resource_request", &ctx.request_id, "allow", status_label, meta));
}

/// `replay_detected` for a mandate presented a second time.
pub fn replay(sink: &AuditSink, ctx: &crate::ctx::RequestCtx) {
    let Some(subject) = &ctx.subject else { return };
    let meta = serde_json::json!({
        "jti": subject.jti,
        "resource": subject.resource,
        "client_id": subject.client_id,
        "subject_fp": subject.fingerprint,
        "request_id": ctx.request_id,
    });
    sink.emit(AuditEvent::new(&subject.zone_id, "replay_detected", &ctx.request_id, "deny", "anomaly", meta));
}
