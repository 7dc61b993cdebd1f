//! `impl ProxyHttp for Gateway`: each hook hands over to the phase module that owns it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, Result};

use crate::Deps;
use crate::ctx::RequestCtx;
use crate::phases::{self, failure, headers, logging, retry, stream, upstream};

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
        phases::request(&self.deps, session, ctx).await
    }

    async fn request_body_filter(&self, _session: &mut Session, body: &mut Option<Bytes>, _eos: bool, ctx: &mut RequestCtx) -> Result<()> {
        phases::request_body(&self.deps, body.as_ref(), ctx)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        upstream::http_peer(ctx.forward.as_ref().map(|f| &f.peer), self.deps.cfg.upstream_timeout)
    }

    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut RequestCtx, e: Box<Error>) -> Box<Error> {
        retry::after_connect_failure(ctx, e)
    }

    async fn upstream_response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        retry::at_response_header(session, resp.status.as_u16(), ctx)
    }

    async fn upstream_request_filter(&self, session: &mut Session, upstream: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<()> {
        headers::upstream_request_for(session, upstream, ctx, self.deps.cfg.tls.is_some())
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
        stream::connected(&self.deps, ctx, fd);
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        let req = session.req_header();
        phases::mcp::at_response(&self.deps, &req.method, &req.headers, resp, ctx).await?;
        stream::response_header(&self.deps, &session.req_header().method, resp, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        eos: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        stream::response_body(&self.deps, body, eos, ctx)
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        failure::while_proxying(session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        failure::respond(&self.deps, session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        logging::finish(&self.deps, session, ctx);
    }
}
