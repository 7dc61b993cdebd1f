//! The finished request as OpenTelemetry spans (`caracal_shared::otel`), when export is on: the
//! gateway's server span (its id is the parent the upstream and the STS were given) and one child
//! per phase that ran — verify, replay, sts, upstream — from the times the path measured anyway.
//! A caller that marked its trace unsampled gets nothing exported.

use std::time::{Instant, SystemTime};

use caracal_shared::otel::{Exporter, FinishedSpan};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::ctx::RequestCtx;

/// Exports `ctx`'s spans; `status` is the one sent to the client.
pub fn export(otel: &Exporter, ctx: &RequestCtx, method: &str, path: &str, status: u16) {
    let Some(trace) = ctx.trace.as_ref().filter(|t| t.sampled()) else { return };
    let (Ok(trace_id), Ok(span_id)) = (u128::from_str_radix(&trace.trace_id, 16), u64::from_str_radix(&trace.span_id, 16)) else {
        return;
    };
    // One wall-clock reading anchors the monotonic instants the phases were measured with.
    let (now, now_wall) = (Instant::now(), SystemTime::now());
    let wall = |at: Instant| now_wall - now.saturating_duration_since(at);
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.to_owned()),
        KeyValue::new("url.path", path.to_owned()),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("caracal.request_id", ctx.request_id.clone()),
    ];
    if let Some(s) = &ctx.subject {
        attributes.push(KeyValue::new("caracal.zone_id", s.zone_id.clone()));
        attributes.push(KeyValue::new("caracal.resource", s.resource.clone()));
    }
    if let Some(d) = &ctx.denial {
        attributes.push(KeyValue::new("caracal.denial", d.metric_label()));
    }
    otel.record(FinishedSpan {
        trace_id,
        span_id,
        parent_span_id: trace.parent_span_id.unwrap_or(0),
        parent_is_remote: trace.parent_span_id.is_some(),
        name: format!("gateway {method}").into(),
        kind: SpanKind::Server,
        start: wall(ctx.started),
        duration: now.saturating_duration_since(ctx.started),
        attributes,
        error: status >= 500,
    });
    for (name, phase) in ctx.timings.phases() {
        otel.record(FinishedSpan {
            trace_id,
            span_id: fastrand::u64(1..),
            parent_span_id: span_id,
            parent_is_remote: false,
            name: name.into(),
            kind: if name == "verify" { SpanKind::Internal } else { SpanKind::Client },
            start: wall(phase.start),
            duration: phase.took,
            attributes: Vec::new(),
            error: false,
        });
    }
}
