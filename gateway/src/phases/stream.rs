//! The response of a granted request, from the upstream connection to the last body byte.
//!
//! * `connected_to_upstream` arms the request's [`UpstreamWatch`] with the gateway's watcher
//!   (header deadline first).
//! * At the response header: header hygiene, and [`body_kind`] tells the watch what follows: no
//!   body (disarmed at once, so a pooled connection is never watched), a sized body (idle limit)
//!   or an open stream — SSE, chunked, close-delimited or upgraded — that may stay open
//!   indefinitely and is cut the moment its session is revoked.
//! * Every body chunk: progress for the watch, the 4 KiB revocation re-check ([`StreamGuard`]);
//!   a revoked anchor ends the response with [`STREAM_CUT`], counted once as `stream_cuts`.
//! * At the end of the body the watch is disarmed before Pingora can return the connection to
//!   its pool. A body that "ended" because the watch shut the socket down (a close-delimited
//!   stream ends at EOF) fails instead of finishing cleanly, so a cut never looks complete.

use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use crate::Deps;
use crate::ctx::RequestCtx;
use crate::phases::failure::STREAM_CUT;
use crate::phases::revocation::StreamGuard;
use crate::phases::watch::{self, Phase, UpstreamWatch};
use crate::phases::{headers, mcp, now_ms};

/// What follows a response header, as far as watching goes.
pub fn body_kind(method: &http::Method, resp: &ResponseHeader) -> Phase {
    let status = resp.status.as_u16();
    match status {
        // Upgraded: bytes flow until either side closes.
        101 => return Phase::OpenStream,
        // Informational: the final header is still to come.
        100..=199 => return Phase::AwaitingHeader,
        204 | 304 => return Phase::Done,
        _ if method == http::Method::HEAD => return Phase::Done,
        _ => {}
    }
    let h = &resp.headers;
    let sse = h
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
    // Chunked framing wins over Content-Length (RFC 9112 §6.3), as in Pingora's reader.
    if sse || h.contains_key(http::header::TRANSFER_ENCODING) {
        return Phase::OpenStream;
    }
    match h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(0) => Phase::Done,
        Some(_) => Phase::SizedBody,
        None => Phase::OpenStream,
    }
}

/// `connected_to_upstream`: arms the watch over this request's upstream socket.
pub fn connected(deps: &Deps, ctx: &mut RequestCtx, fd: RawFd) {
    let Some(fwd) = &ctx.forward else { return };
    let (cuts, rid) = (deps.metrics.stream_cuts.clone(), ctx.request_id.clone());
    // A retry replaces the previous attempt's watch (dropping it disarms it).
    ctx.upstream = Some(deps.watcher.arm(
        fd,
        watch::cookie_of(fd),
        fwd.anchors.clone(),
        fwd.peer.deadlines(deps.watcher.limits()),
        Box::new(move || {
            cuts.inc();
            tracing::warn!(request_id = %rid, "revocation cut an open stream");
        }),
    ));
}

/// `response_filter`: hygiene, then the watch learns what follows.
pub fn response_header(deps: &Deps, method: &http::Method, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    let Some(fwd) = &ctx.forward else { return Ok(()) };
    headers::downstream_response(resp, &ctx.request_id, fwd.mandate_exp - now_ms() / 1000)?;
    ctx.timings.upstream = ctx.timings.upstream_sent.map(|start| crate::trace::Phase { start, took: start.elapsed() });
    if deps.cfg.server_timing {
        resp.insert_header("server-timing", ctx.timings.server_timing(ctx.started.elapsed()))?;
    }
    let next = body_kind(method, resp);
    if next == Phase::AwaitingHeader {
        if let Some(w) = &ctx.upstream {
            w.progress();
        }
        return Ok(());
    }
    ctx.upstream_status = Some(resp.status.as_u16());
    ctx.stream = Some(StreamGuard::new(deps.revocations.clone(), fwd.anchors.clone(), fwd.revocation_epoch));
    ctx.lists = mcp::visibility::filter_for(deps, ctx.mcp.as_ref(), ctx.forward.as_ref(), resp)?;
    if let Some(w) = ctx.upstream.as_mut() {
        w.header_arrived(next);
    }
    Ok(())
}

/// `response_body_filter`: the 4 KiB re-check and the end of the body.
pub fn response_body(deps: &Deps, body: &mut Option<Bytes>, eos: bool, ctx: &mut RequestCtx) -> Result<Option<Duration>> {
    let Some(guard) = ctx.stream.as_mut() else { return Ok(None) };
    if let Some(w) = &ctx.upstream {
        w.progress();
    }
    if let Some(filter) = ctx.lists.as_mut() {
        mcp::visibility::feed(deps, filter, body, eos, ctx.forward.as_ref(), ctx.subject.as_ref(), &ctx.request_id)?;
    }
    if guard.on_body(body.as_ref().map_or(0, Bytes::len)) {
        *body = None;
        if ctx.upstream.as_mut().is_none_or(UpstreamWatch::record_revoked) {
            deps.metrics.stream_cuts.inc();
            tracing::warn!(request_id = %ctx.request_id, "revocation cut a response mid-body");
        }
        return Error::e_explain(ErrorType::Custom(STREAM_CUT), "session revoked while the response streamed");
    }
    if eos && let Some(w) = ctx.upstream.as_mut() {
        // Disarmed before Pingora can return the connection to its pool.
        w.disarm();
        if let Some(why) = w.tripped() {
            *body = None;
            return Error::e_explain(ErrorType::Custom(STREAM_CUT), format!("the upstream watch ended the body: {why:?}"));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    const GET: http::Method = http::Method::GET;

    #[test]
    fn bodiless_responses_are_done_at_the_header() {
        assert_eq!(body_kind(&GET, &resp(204, &[])), Phase::Done);
        assert_eq!(body_kind(&GET, &resp(304, &[])), Phase::Done);
        assert_eq!(body_kind(&http::Method::HEAD, &resp(200, &[])), Phase::Done, "no Content-Length, yet no body");
        assert_eq!(body_kind(&GET, &resp(200, &[("content-length", "0")])), Phase::Done);
    }

    #[test]
    fn a_declared_length_is_a_sized_body() {
        assert_eq!(body_kind(&GET, &resp(200, &[("content-length", "12")])), Phase::SizedBody);
        assert_eq!(body_kind(&GET, &resp(302, &[("content-length", "5")])), Phase::SizedBody);
    }

    #[test]
    fn sse_chunked_unsized_and_upgraded_responses_are_open_streams() {
        assert_eq!(body_kind(&GET, &resp(200, &[("content-type", "text/event-stream; charset=utf-8")])), Phase::OpenStream);
        assert_eq!(body_kind(&GET, &resp(200, &[("content-type", "Text/Event-Stream"), ("content-length", "10")])), Phase::OpenStream);
        assert_eq!(body_kind(&GET, &resp(200, &[("transfer-encoding", "chunked"), ("content-length", "10")])), Phase::OpenStream);
        assert_eq!(body_kind(&GET, &resp(200, &[])), Phase::OpenStream, "close-delimited");
        assert_eq!(body_kind(&GET, &resp(101, &[])), Phase::OpenStream);
    }

    #[test]
    fn an_informational_header_keeps_waiting_for_the_final_one() {
        assert_eq!(body_kind(&GET, &resp(100, &[])), Phase::AwaitingHeader);
        assert_eq!(body_kind(&GET, &resp(103, &[("content-length", "0")])), Phase::AwaitingHeader);
    }
}
