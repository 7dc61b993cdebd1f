//! Retries without re-spending authority (docs/pools.md §5): a request whose pool member fails
//! moves to another member with the **same resource mandate** — the agent mandate was spent
//! once and the STS exchange ran once, in `request_filter`; a retry re-runs only the proxy hooks
//! (`upstream_peer`, `upstream_request_filter`), which read the new member from the context.
//!
//! * A connect failure (`fail_to_connect`) is always retryable: nothing reached the upstream.
//! * A member that fails after the connection was made and before it answered (reset, closed:
//!   e.g. killed mid-request; `error_while_proxy`) is retried when the request is idempotent and
//!   has no body; never after the watch ended it (a timeout: the member may have acted on it).
//! * A 502/503 answer (`upstream_response_filter`, before anything reaches the client) is
//!   retried only when the resource opted in (`retry.on_unavailable`) and the request is
//!   idempotent and has no body.
//!
//! Either way within the resource's `retry.attempts` (each on a member not tried yet) and the
//! pool's retry budget; every attempt is recorded (metrics, passive health, the audit event).

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::ctx::RequestCtx;
use crate::phases::pool::health::Outcome;

/// The `ErrorType::Custom` label of an answer set aside for a retry.
pub const RETRIED_ANSWER: &str = "upstream unavailable, retried";

/// `fail_to_connect`: records the failure and, when the route allows, moves to another member.
pub fn after_connect_failure(ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
    let Some(fwd) = ctx.forward.as_mut() else { return e };
    let Some(route) = fwd.route.as_mut() else { return e };
    route.record(Outcome::ConnectFailed);
    if let Some(peer) = route.retry(&fwd.peer) {
        tracing::info!(request_id = %ctx.request_id, endpoint = route.endpoint(), error = %e, "connect failed: retrying on another pool member");
        fwd.peer = peer;
        e.set_retry(true);
    }
    e
}

/// `upstream_response_filter`: records the member's answer; sets aside a 502/503 for a retry
/// when the resource opted in and the request can be sent again as it was.
pub fn at_response_header(session: &Session, status: u16, ctx: &mut RequestCtx) -> pingora::Result<()> {
    let Some(fwd) = ctx.forward.as_mut() else { return Ok(()) };
    let Some(route) = fwd.route.as_mut() else { return Ok(()) };
    if status < 200 {
        return Ok(()); // informational: the final answer is still to come
    }
    route.record(Outcome::Answered(status));
    if !(route.retries_unavailable() && matches!(status, 502 | 503) && ctx.body_bytes == 0 && resendable(session.req_header())) {
        return Ok(());
    }
    let Some(peer) = route.retry(&fwd.peer) else { return Ok(()) };
    tracing::info!(request_id = %ctx.request_id, status, endpoint = route.endpoint(), "upstream unavailable: retrying on another pool member");
    fwd.peer = peer;
    let mut e = Error::explain(ErrorType::Custom(RETRIED_ANSWER), "retrying on another pool member");
    e.set_retry(true);
    Err(e)
}

/// `error_while_proxy` (after Pingora's own retry decision): records the member's failure; an
/// unanswered idempotent body-less request moves to another member.
pub fn after_proxy_error(session: &Session, ctx: &mut RequestCtx, e: &mut Error, watch_ended: bool) {
    let Some(fwd) = ctx.forward.as_mut() else { return };
    let Some(route) = fwd.route.as_mut() else { return };
    match e.etype() {
        // Recorded when it was set aside, and the route already moved on to the next member.
        ErrorType::Custom(label) if *label == RETRIED_ANSWER => return,
        // Sent again to the same member (a stale kept-alive connection): a new attempt.
        _ if e.retry() => return route.again(),
        _ if *e.esource() == pingora::ErrorSource::Downstream => return,
        _ => {}
    }
    let answered = route.answered();
    route.record(Outcome::Failed); // no-op when the member's answer was recorded
    if answered || watch_ended || ctx.body_bytes != 0 || !resendable(session.req_header()) || session.response_written().is_some() {
        return;
    }
    if let Some(peer) = route.retry(&fwd.peer) {
        tracing::info!(request_id = %ctx.request_id, endpoint = route.endpoint(), error = %e, "member failed before answering: retrying on another pool member");
        fwd.peer = peer;
        e.set_retry(true);
    }
}

/// An idempotent request without a body: sending it again changes nothing.
fn resendable(req: &RequestHeader) -> bool {
    let no_body = !req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && req.headers.get(http::header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
    req.method.is_idempotent() && no_body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_requests_without_a_body_are_resent() {
        let req = |method: &str, headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build(method, b"/x", None).unwrap();
            for (k, v) in headers {
                r.insert_header(k.to_string(), *v).unwrap();
            }
            resendable(&r)
        };
        assert!(req("GET", &[]));
        assert!(req("DELETE", &[("content-length", "0")]));
        assert!(!req("POST", &[]), "not idempotent");
        assert!(!req("PUT", &[("content-length", "3")]), "a body");
        assert!(!req("GET", &[("transfer-encoding", "chunked")]), "a body");
    }
}
