//! The request pipeline (DESIGN §4), in order, one line per step.
//!
//! Each step is a module below; each refusal is a [`Denial`] with its own status, code and metric.
//! Order matters: everything that costs nothing comes first, the signature before anything that
//! touches shared state, the single-use mark only once the mandate is known to be genuine (so
//! forged tokens cannot burn real `jti`s), and the STS — the only network hop besides Redis — last.

pub mod admission;
pub mod auth;
pub mod circuit;
pub mod egress;
pub mod exchange;
pub mod failure;
pub mod headers;
pub mod logging;
pub mod mcp;
pub mod pool;
pub mod replay;
pub mod retry;
pub mod revocation;
pub mod spans;
pub mod stream;
pub mod upstream;
pub mod watch;

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::ctx::{Forward, RequestCtx, Subject};
use crate::deny::{self, Denial};
use crate::trace::Timings;
use crate::{Deps, audit};
use exchange::ExchangeRequest;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `request_filter`: the gateway's own endpoints, else the pipeline; `Ok(true)` when answered here.
pub async fn request(deps: &Deps, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
    let inbound = session.req_header().headers.get(caracal_shared::request_id::HEADER).and_then(|v| v.to_str().ok());
    ctx.request_id = caracal_shared::request_id::from_inbound(inbound);
    if crate::admin::serve(deps, session, &ctx.request_id).await? {
        ctx.internal = true;
        return Ok(true);
    }
    deps.metrics.requests.inc();
    let cfg = &deps.cfg;
    ctx.timings = Timings::new(cfg.server_timing || cfg.access_log_sample > 0.0 || deps.otel.is_some());
    let trace = ctx.trace.insert(crate::trace::Trace::of(session.req_header()));
    let traceparent = trace.traceparent();
    ctx.mcp = mcp::intake::take(session, deps.cfg.mcp_max_body_bytes).await?;
    let checks =
        run_request(deps, session.req_header(), &ctx.request_id, &traceparent, &mut ctx.subject, &mut ctx.timings, ctx.mcp.as_ref());
    match checks.await {
        Ok(forward) => {
            deps.metrics.allowed.inc();
            ctx.forward = Some(forward);
            Ok(false)
        }
        Err(denial) => {
            refuse(deps, session, ctx, denial).await?;
            Ok(true)
        }
    }
}

/// Counts the denial, files a replay as evidence, and answers with the denial's wire body.
pub async fn refuse(deps: &Deps, session: &mut Session, ctx: &mut RequestCtx, denial: Denial) -> pingora::Result<()> {
    deps.metrics.deny(&denial);
    if denial == Denial::Replay {
        audit::replay(&deps.audit, ctx);
    }
    let result = deny::respond(session, &denial, &ctx.request_id, &deps.cfg).await;
    ctx.denial = Some(denial);
    result
}

/// `request_body_filter`: the body limit as the body streams (a chunked body has no
/// `Content-Length` to check up front), and progress for the upstream watch.
pub fn request_body(deps: &Deps, body: Option<&Bytes>, ctx: &mut RequestCtx) -> pingora::Result<()> {
    if let Some(w) = &ctx.upstream {
        w.progress();
    }
    admission::body_chunk(&mut ctx.body_bytes, body.map_or(0, Bytes::len), deps.cfg.max_request_bytes)
}

/// Runs every check; on success the request may be forwarded as described by the [`Forward`].
/// `mcp` is the POST's MCP reading, when it looks like one.
pub async fn run_request(
    deps: &Deps,
    req: &RequestHeader,
    request_id: &str,
    traceparent: &str,
    subject: &mut Option<Subject>,
    timings: &mut Timings,
    mcp: Option<&mcp::intake::Intake>,
) -> Result<Forward, Denial> {
    let now = now_ms();
    // Nothing is allowed while the gateway cannot tell whether a session was revoked.
    revocation::fresh(&deps.revocations)?;
    let token = admission::bearer(req)?;
    let peeked = auth::peek(token)?;
    auth::not_expiring(&peeked, now / 1000, deps.cfg.preflight.as_secs() as i64)?;
    let resource = admission::resource(req)?;
    auth::check_claims(&peeked, &deps.cfg.issuer, resource)?;
    *subject = Some(Subject {
        zone_id: peeked.claims.zone_id.clone(),
        client_id: peeked.claims.client_id.clone(),
        jti: peeked.claims.jti.clone(),
        sub_type: match peeked.claims.sub_type {
            caracal_shared::SubType::Application => "application",
            caracal_shared::SubType::User => "user",
        },
        resource: resource.to_owned(),
        fingerprint: caracal_shared::sig::fingerprint(token),
    });
    admission::path_traversal(req.uri.path())?;
    // Before the signature, Redis and the STS: an oversized body must not burn the token.
    admission::content_length(req, deps.cfg.max_request_bytes)?;
    // Likewise a malformed or unreadable POST to a resource known to be MCP.
    mcp::refuse_known(deps, mcp, &peeked.claims.zone_id, resource)?;
    let mandate = timings.time(|t| &mut t.verify, auth::verify(&deps.jwks, peeked)).await?;
    // In memory, before the single-use mark and the STS: a revoked mandate costs nothing more.
    let revocation_epoch = deps.revocations.epoch();
    revocation::check(&deps.revocations, &mandate.claims)?;
    let anchors = Arc::new(revocation::anchors(&mandate.claims));
    let mandate_exp = mandate.claims.exp;
    let fresh = timings.time(|t| &mut t.replay, deps.jti.consume(mandate, request_id, now)).await?;
    let zone_id = fresh.0.claims.zone_id.as_str();
    let mcp_json = mcp.and_then(|m| match m {
        mcp::intake::Intake::Read { json, .. } => Some(json.as_str()),
        _ => None,
    });
    let exchange = ExchangeRequest { resource, method: req.method.as_str(), path: req.uri.path(), request_id, traceparent, mcp: mcp_json };
    // Per zone: one zone's failing policy must not fail every zone fast.
    let ticket = deps.circuits.admit(&fresh.0.claims.zone_id).ok_or(Denial::StsCircuitOpen)?;
    let grant = timings.time_always(|t| &mut t.sts, deps.sts.exchange(&fresh, &exchange)).await;
    deps.metrics.sts_exchange_seconds.observe(timings.sts.map_or(0.0, |p| p.took.as_secs_f64()));
    ticket.record(exchange::health(&grant));
    let mut grant = mcp::after_exchange(deps, mcp, zone_id, resource, grant)?;
    let mcp_owner = mcp::session_owner(deps, &grant, &req.headers, zone_id, resource, &fresh.0.claims.root_sid, request_id).await?;
    // A plain upstream keeps the single-URL path; a pool picks a member (docs/pools.md).
    // A plain upstream with one address keeps the single-URL path; a pool, or a name with
    // several addresses, picks a member (docs/pools.md).
    if grant.directive.endpoints.is_empty()
        && let upstream::Resolved::One(peer) = upstream::resolve(&grant.directive, &deps.egress).await?
    {
        return Ok(Forward { grant, peer, mandate_exp, anchors, revocation_epoch, route: None, mcp_owner });
    }
    let claims = &fresh.0.claims;
    let key = pool::RequestKey { headers: &req.headers, path: req.uri.path(), sid: &claims.sid, root_sid: &claims.root_sid, request_id };
    let (peer, route) = deps.pools.route(&mut grant.directive, resource, &key, &deps.egress).await?;
    Ok(Forward { grant, peer, mandate_exp, anchors, revocation_epoch, route: Some(route), mcp_owner })
}
