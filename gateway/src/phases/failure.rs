//! A request that failed after it was granted: what the client is told, what is counted, and
//! whether Pingora may retry it (`error_while_proxy`, `fail_to_proxy`).
//!
//! [`classify`] is the one table from a Pingora error to a [`Failure`]. The upstream watch's own
//! verdict comes first: when it shut the socket down, the read error Pingora reports is only the
//! consequence. Then, by `(error type, source)`:
//!
//! | error | failure |
//! |---|---|
//! | watch: header timeout, body idle | 504 `upstream_timeout` "upstream timeout" (`upstream_errors`) |
//! | watch: revoked; or the body filter's `session revoked` | stream cut (`stream_cuts` only) |
//! | `HTTPStatus(413)` (the body limit) | 413 `payload_too_large` |
//! | connect, read or write timeout | 504 `upstream_timeout` "upstream timeout" (`upstream_errors`) |
//! | anything else from the client side | nobody to answer: close, count nothing |
//! | anything else | 502 `internal_error` "upstream unreachable" (`upstream_errors`) |
//!
//! Once the response header was sent, a denial is only counted (the client sees the connection
//! end). A request the watch ended is never retried: a retry would wait the whole deadline again.

use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType};

use crate::Deps;
use crate::ctx::RequestCtx;
use crate::deny::Denial;
use crate::phases::watch::Trip;

/// The `ErrorType::Custom` label of a response the body filter cut for a revocation.
pub const STREAM_CUT: &str = "session revoked";

/// What a failed request amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Refuse (or, once the response started, count) with this denial.
    Deny(Denial),
    /// A revocation ended the response: already counted as a stream cut.
    StreamCut,
    /// The client went away or sent garbage: there is nobody to answer.
    ClientGone,
}

/// The table (see the module doc).
pub fn classify(etype: &ErrorType, source: &ErrorSource, tripped: Option<Trip>) -> Failure {
    match tripped {
        Some(Trip::Revoked) => return Failure::StreamCut,
        Some(Trip::HeaderTimeout | Trip::BodyIdle) => return Failure::Deny(Denial::UpstreamTimeout),
        None => {}
    }
    match (etype, source) {
        (ErrorType::HTTPStatus(413), _) => Failure::Deny(Denial::PayloadTooLarge),
        (ErrorType::Custom(label), _) if *label == STREAM_CUT => Failure::StreamCut,
        (ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout, _) => Failure::Deny(Denial::UpstreamTimeout),
        (_, ErrorSource::Downstream) => Failure::ClientGone,
        _ => Failure::Deny(Denial::UpstreamUnreachable),
    }
}

/// `error_while_proxy`: the attempt is over (disarm its watch); retry only what Pingora would
/// retry and the watch did not end, then let the retry phase record a pool member's failure (and
/// perhaps move to another member).
pub fn while_proxying(session: &Session, mut e: Box<Error>, ctx: &mut RequestCtx, client_reused: bool) -> Box<Error> {
    let tripped = ctx.upstream.as_mut().and_then(|w| {
        w.disarm();
        w.tripped()
    });
    if tripped.is_some() || !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
        e.set_retry(false);
    } else {
        e.retry.decide_reuse(client_reused);
    }
    super::retry::after_proxy_error(session, ctx, &mut e, tripped.is_some());
    e
}

/// `fail_to_proxy`: answers (or counts) the failure.
pub async fn respond(deps: &Deps, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let tripped = ctx.upstream.as_mut().and_then(|w| {
        w.disarm();
        w.tripped()
    });
    let written = session.response_written().map(|r| r.status.as_u16());
    let denial = match classify(e.etype(), e.esource(), tripped) {
        Failure::Deny(d) => d,
        Failure::StreamCut => return FailToProxy { error_code: written.unwrap_or(0), can_reuse_downstream: false },
        Failure::ClientGone => return FailToProxy { error_code: 0, can_reuse_downstream: false },
    };
    tracing::warn!(request_id = %ctx.request_id, error = %e, "proxying failed");
    let status = denial.wire().0;
    if written.is_none() {
        // Pingora closes the connection after a failure: say so, or a client that pools
        // connections sends its next request into a socket about to be reset.
        session.set_keepalive(None);
        let _ = super::refuse(deps, session, ctx, denial).await;
    } else {
        deps.metrics.deny(&denial);
    }
    FailToProxy { error_code: status, can_reuse_downstream: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(etype: ErrorType, source: ErrorSource) -> Failure {
        classify(&etype, &source, None)
    }

    #[test]
    fn the_body_limit_is_413() {
        assert_eq!(table(ErrorType::HTTPStatus(413), ErrorSource::Downstream), Failure::Deny(Denial::PayloadTooLarge));
    }

    #[test]
    fn a_revocation_cut_by_the_body_filter_is_only_a_cut() {
        assert_eq!(table(ErrorType::Custom(STREAM_CUT), ErrorSource::Internal), Failure::StreamCut);
        assert_eq!(table(ErrorType::Custom(STREAM_CUT), ErrorSource::Downstream), Failure::StreamCut);
    }

    #[test]
    fn timeouts_are_upstream_timeouts() {
        for t in [ErrorType::ConnectTimedout, ErrorType::ReadTimedout, ErrorType::WriteTimedout] {
            assert_eq!(table(t.clone(), ErrorSource::Upstream), Failure::Deny(Denial::UpstreamTimeout), "{t:?}");
        }
    }

    #[test]
    fn other_client_side_errors_have_nobody_to_answer() {
        assert_eq!(table(ErrorType::ConnectionClosed, ErrorSource::Downstream), Failure::ClientGone);
        assert_eq!(table(ErrorType::InvalidHTTPHeader, ErrorSource::Downstream), Failure::ClientGone);
    }

    #[test]
    fn everything_else_is_an_unreachable_upstream() {
        assert_eq!(table(ErrorType::ConnectionClosed, ErrorSource::Upstream), Failure::Deny(Denial::UpstreamUnreachable));
        assert_eq!(table(ErrorType::ConnectRefused, ErrorSource::Upstream), Failure::Deny(Denial::UpstreamUnreachable));
        assert_eq!(table(ErrorType::Custom("other"), ErrorSource::Internal), Failure::Deny(Denial::UpstreamUnreachable));
    }

    #[test]
    fn the_watch_verdict_comes_first() {
        // The read error is only the consequence of the watch shutting the socket down.
        let closed = (ErrorType::ConnectionClosed, ErrorSource::Upstream);
        assert_eq!(classify(&closed.0, &closed.1, Some(Trip::HeaderTimeout)), Failure::Deny(Denial::UpstreamTimeout));
        assert_eq!(classify(&closed.0, &closed.1, Some(Trip::BodyIdle)), Failure::Deny(Denial::UpstreamTimeout));
        assert_eq!(classify(&closed.0, &closed.1, Some(Trip::Revoked)), Failure::StreamCut);
        assert_eq!(classify(&ErrorType::ConnectionClosed, &ErrorSource::Downstream, Some(Trip::Revoked)), Failure::StreamCut);
    }
}
