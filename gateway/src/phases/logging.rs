//! The end of every proxied request (`logging`): the watch is disarmed, latency observed, one
//! access line written (debug for forwarded requests, info for denials; never a token, only its
//! fingerprint), and every request the STS granted leaves evidence whatever happened upstream.

use pingora::proxy::Session;

use crate::ctx::RequestCtx;
use crate::{Deps, audit};

/// `logging`.
pub fn finish(deps: &Deps, session: &Session, ctx: &mut RequestCtx) {
    if let Some(w) = ctx.upstream.as_mut() {
        w.disarm();
    }
    if ctx.internal {
        return;
    }
    let elapsed = ctx.started.elapsed();
    deps.metrics.request_seconds.observe(elapsed.as_secs_f64());
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let fp = ctx.subject.as_ref().map_or("", |s| s.fingerprint.as_str());
    match (&ctx.forward, &ctx.denial) {
        // At edge rates an info line per request costs more than the checks: forwarded requests
        // log at debug, denials at info.
        (Some(fwd), None) => tracing::debug!(
            request_id = %ctx.request_id,
            status,
            token_fp = fp,
            upstream = %fwd.peer.authority,
            latency_us = elapsed.as_micros() as u64,
            "forwarded"
        ),
        (_, Some(d)) => tracing::info!(request_id = %ctx.request_id, status, token_fp = fp, denial = d.metric_label(), "denied"),
        (None, None) => {}
    }
    if ctx.forward.is_some() {
        audit::forwarded(&deps.audit, ctx, session.req_header().method.as_str(), status, elapsed);
    }
}
