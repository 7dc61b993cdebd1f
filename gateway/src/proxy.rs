//! `impl ProxyHttp for Gateway`: each hook hands over to the module that owns its phase.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::ctx::RequestCtx;
use crate::deny::{self, Denial};
use crate::phases::headers::{self, Outbound};
use crate::phases::revocation::StreamGuard;
use crate::phases::{self, now_ms};
use crate::{Deps, audit};

/// The gateway proxy.
pub struct Gateway {
    pub deps: Arc<Deps>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let inbound = session.req_header().headers.get(caracal_shared::request_id::HEADER).and_then(|v| v.to_str().ok());
        ctx.request_id = caracal_shared::request_id::from_inbound(inbound);
        if crate::admin::serve(&self.deps, session, &ctx.request_id).await? {
            ctx.internal = true;
            return Ok(true);
        }
        self.deps.metrics.requests.inc();
        match phases::run_request(&self.deps, session.req_header(), &ctx.request_id, &mut ctx.subject).await {
            Ok(forward) => {
                self.deps.metrics.allowed.inc();
                ctx.forward = Some(forward);
                Ok(false)
            }
            Err(denial) => {
                self.refuse(session, ctx, denial).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(&self, _session: &mut Session, body: &mut Option<Bytes>, _eos: bool, ctx: &mut RequestCtx) -> Result<()> {
        // A body without Content-Length (chunked) is counted as it streams.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > self.deps.cfg.max_request_bytes {
            return Error::e_explain(ErrorType::HTTPStatus(413), "request body over MAX_REQUEST_BYTES");
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let Some(fwd) = &ctx.forward else {
            return Error::e_explain(ErrorType::InternalError, "upstream_peer without a granted request");
        };
        let p = &fwd.peer;
        let mut peer = HttpPeer::new(p.addr, p.tls, p.host.clone());
        peer.options.connection_timeout = Some(self.deps.cfg.upstream_timeout.min(Duration::from_secs(5)));
        peer.options.total_connection_timeout = Some(self.deps.cfg.upstream_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(&self, session: &mut Session, upstream: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<()> {
        let Some(fwd) = &ctx.forward else {
            return Error::e_explain(ErrorType::InternalError, "upstream request without a granted request");
        };
        let client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string());
        let out = Outbound {
            peer: &fwd.peer,
            mandate: &fwd.grant.mandate,
            request_id: &ctx.request_id,
            client_ip,
            tls_downstream: self.deps.cfg.tls.is_some(),
        };
        headers::upstream_request(upstream, &out)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::fd::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_fd = Some(fd);
        Ok(())
    }

    async fn response_filter(&self, _session: &mut Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        let Some(fwd) = &ctx.forward else { return Ok(()) };
        ctx.upstream_status = Some(resp.status.as_u16());
        headers::downstream_response(resp, &ctx.request_id, fwd.mandate_exp - now_ms() / 1000)?;
        let mut guard = StreamGuard::new(self.deps.revocations.clone(), fwd.anchors.clone(), fwd.revocation_epoch);
        // A response that may stay open (SSE, or no declared length) gets a watcher that cuts it
        // even while the upstream is silent; a sized response only needs the per-4 KiB checks.
        if is_streaming(resp)
            && let Some(fd) = ctx.upstream_fd
        {
            let (metrics, rid) = (self.deps.metrics.stream_cuts.clone(), ctx.request_id.clone());
            guard.watch(fd, move || {
                metrics.inc();
                tracing::warn!(request_id = %rid, "revocation cut an open stream");
            });
        }
        ctx.stream = Some(guard);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        eos: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(guard) = ctx.stream.as_mut() else { return Ok(None) };
        if guard.on_body(body.as_ref().map_or(0, Bytes::len)) {
            *body = None;
            guard.disarm();
            self.deps.metrics.stream_cuts.inc();
            tracing::warn!(request_id = %ctx.request_id, "revocation cut a response mid-body");
            return Error::e_explain(ErrorType::Custom("session revoked"), "session revoked while the response streamed");
        }
        if eos {
            // Complete: stop watching before the upstream connection can be reused.
            guard.disarm();
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let denial = match e.etype() {
            ErrorType::HTTPStatus(413) => Denial::PayloadTooLarge,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => Denial::UpstreamTimeout,
            _ if e.esource() == &ErrorSource::Downstream => {
                // The client went away or sent garbage; there is nobody to answer.
                return FailToProxy { error_code: 0, can_reuse_downstream: false };
            }
            _ => Denial::UpstreamUnreachable,
        };
        tracing::warn!(request_id = %ctx.request_id, error = %e, "proxying failed");
        let status = denial.wire().0;
        if session.response_written().is_none() {
            let _ = self.refuse(session, ctx, denial).await;
        } else {
            self.deps.metrics.deny(&denial);
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.internal {
            return;
        }
        let elapsed = ctx.started.elapsed();
        self.deps.metrics.request_seconds.observe(elapsed.as_secs_f64());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let fp = ctx.subject.as_ref().map_or("", |s| s.fingerprint.as_str());
        match (&ctx.forward, &ctx.denial) {
            // Per-request access lines are debug: at edge rates an info line per request costs more
            // than the checks. Denials stay at info.
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
        // Every request the STS granted leaves evidence, whatever happened upstream.
        if ctx.forward.is_some() {
            audit::forwarded(&self.deps.audit, ctx, session.req_header().method.as_str(), status, elapsed);
        }
    }
}

/// SSE, or a body of unknown length: it may stay open indefinitely.
fn is_streaming(resp: &ResponseHeader) -> bool {
    let sse =
        resp.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("text/event-stream"));
    sse || !resp.headers.contains_key(http::header::CONTENT_LENGTH)
}

impl Gateway {
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, denial: Denial) -> Result<()> {
        self.deps.metrics.deny(&denial);
        if denial == Denial::Replay {
            audit::replay(&self.deps.audit, ctx);
        }
        let result = deny::respond(session, &denial, &ctx.request_id).await;
        ctx.denial = Some(denial);
        result
    }
}
