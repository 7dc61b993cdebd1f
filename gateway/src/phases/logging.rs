//! The end of every proxied request (`logging`): the watch is disarmed, latency observed, one
//! access line written (never a token, only its fingerprint; always the request and trace ids),
//! and every request the STS granted leaves evidence whatever happened upstream. Denials log at
//! info; forwarded requests at info for the `ACCESS_LOG_SAMPLE` share of them, with their phase
//! timings, else at debug.

use pingora::proxy::Session;

use crate::ctx::RequestCtx;
use crate::trace::Timings;
use crate::{Deps, audit};

/// Whether this request is in the sampled share (no random draw at the default 0).
fn sampled(share: f64) -> bool {
    share > 0.0 && (share >= 1.0 || fastrand::f64() < share)
}

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
    let trace_id = ctx.trace.as_ref().map_or("", |t| t.trace_id.as_str());
    match (&ctx.forward, &ctx.denial) {
        (Some(fwd), None) if sampled(deps.cfg.access_log_sample) => {
            let (t, subject) = (&ctx.timings, ctx.subject.as_ref());
            tracing::info!(
                request_id = %ctx.request_id,
                trace_id,
                method = %session.req_header().method,
                // The path only: a query may carry what its owner would not want logged.
                path = session.req_header().uri.path(),
                status,
                zone_id = subject.map_or("", |s| s.zone_id.as_str()),
                resource = subject.map_or("", |s| s.resource.as_str()),
                token_fp = fp,
                upstream = %fwd.peer.authority,
                latency_us = elapsed.as_micros() as u64,
                verify_ms = Timings::ms(t.verify),
                replay_ms = Timings::ms(t.replay),
                sts_ms = Timings::ms(t.sts),
                upstream_ms = Timings::ms(t.upstream),
                "forwarded"
            );
        }
        (Some(fwd), None) => tracing::debug!(
            request_id = %ctx.request_id,
            trace_id,
            status,
            token_fp = fp,
            upstream = %fwd.peer.authority,
            latency_us = elapsed.as_micros() as u64,
            "forwarded"
        ),
        (_, Some(d)) => tracing::info!(request_id = %ctx.request_id, trace_id, status, token_fp = fp, denial = d.metric_label(), "denied"),
        (None, None) => {}
    }
    if let Some(otel) = &deps.otel {
        let req = session.req_header();
        super::spans::export(otel, ctx, req.method.as_str(), req.uri.path(), status);
    }
    if ctx.forward.is_some() {
        audit::forwarded(&deps.audit, ctx, session.req_header().method.as_str(), status, elapsed);
    }
}
