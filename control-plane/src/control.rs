//! Control: `POST /v1/control/invoke`, management by signed request instead of a console (seed
//! 000, "Control boundary").
//!
//! Mounted only when `CARACAL_CONTROL_ENABLED=true`. The pipeline, in order (each step a
//! [`Refusal`] with its own code; see `docs/control.md`):
//!
//! 1. [`gate`] — the gate file exists (503 `control_disabled`).
//! 2. [`ratelimit::per_address`] — per client address per minute, Redis, fail closed (429).
//! 3. [`body::read`] — at most 256 KiB (413).
//! 4. [`auth`] — a session mandate of this STS for `CONTROL_AUDIENCE` (401 `unauthorized`).
//! 5. [`replay`] — its `jti` unused (401 `token_replay`).
//! 6. [`ratelimit::Buckets`] — per-subject token bucket (429).
//! 7. [`body::parse`], [`catalog::lookup`], [`body::validate_flags`], the
//!    `control:<command>:<verb>` scope, and the admin request built from the flags (400, 501,
//!    403, 409).
//! 8. [`audit`] — the allow recorded durably, or 500 `audit_unavailable` and nothing happens.
//! 9. [`dispatch`] — one in-process call to the admin API with `CONTROL_API_TOKEN`.
//!
//! Denials from step 3 on are audited; steps 1–2 are only counted, so a flood against a closed
//! or throttled endpoint cannot flood the ledger.

pub mod audit;
pub mod auth;
pub mod body;
pub mod catalog;
pub mod dispatch;
pub mod error;
pub mod gate;
pub mod ratelimit;
pub mod replay;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use caracal_shared::request_id;
use serde_json::{Value, json};

pub use error::Refusal;

use crate::config::ControlConfig;
use crate::control::audit::Trail;
use crate::control::catalog::Target;
use crate::evidence::Delivery;
use crate::state::AppState;

/// The route.
pub const ROUTE: &str = "/v1/control/invoke";

/// Everything an invoke needs.
pub struct Control {
    state: AppState,
    cfg: ControlConfig,
    /// The admin API and Coordinator routes with their evidence and zone layers: dispatch target.
    admin: Router,
    buckets: ratelimit::Buckets,
    recorder: Delivery,
}

/// How far an invoke got, which decides how its failure is counted and audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Gate and per-address limit: counted, not audited.
    Admission,
    /// From the body on: a refusal is an audited deny.
    Authorization,
    /// The allow is recorded and the admin API was called: a failure is the admin API's.
    Dispatched,
}

/// The Control route when enabled, else `None`.
pub fn router(state: &AppState) -> Option<Router<AppState>> {
    let cfg = state.cfg.control.clone()?;
    // The same routes and layers as on the wire: evidence of each change, and row-level security
    // in the zone the path names.
    let admin = crate::app::managed(state).layer(axum::middleware::from_fn(crate::app::zone_context)).with_state(state.clone());
    let buckets = ratelimit::Buckets::new(cfg.rate_capacity, cfg.rate_window, ratelimit::MAX_SUBJECTS);
    let recorder = Delivery {
        redis: state.redis.clone(),
        db: state.db.clone(),
        key: state.cfg.audit_key(),
        outbox_notify: state.outbox_notify.clone(),
    };
    let control = Arc::new(Control { state: state.clone(), cfg, admin, buckets, recorder });
    Some(Router::new().route(ROUTE, post(invoke)).with_state(control))
}

async fn invoke(State(ctl): State<Arc<Control>>, req: Request) -> Response {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let (parts, body) = req.into_parts();
    let mut trail = Trail {
        request_id: parts.headers.get(request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let mut stage = Stage::Admission;
    let out = ctl.run(ip, &parts.headers, body, &mut trail, &mut stage).await;
    ctl.conclude(out, &trail, stage)
}

impl Control {
    /// The ordered pipeline (module docs).
    async fn run(
        &self,
        ip: IpAddr,
        headers: &axum::http::HeaderMap,
        body: axum::body::Body,
        trail: &mut Trail,
        stage: &mut Stage,
    ) -> Result<Value, Refusal> {
        gate::check(&self.cfg.gate_file).await?;
        // Before any token work: bounds what an unauthenticated caller can make us spend.
        ratelimit::per_address(&mut self.state.redis.clone(), ip, self.cfg.ip_limit_per_min).await?;
        *stage = Stage::Authorization;
        let raw = body::read(headers, body).await?;
        // Parsed now so denials can name the command; acted on only after authentication.
        let parsed = body::parse(&raw);
        if let Ok(b) = &parsed {
            trail.command = Some(body::label(&b.command).to_owned());
            trail.subcommand = Some(body::label(&b.subcommand).to_owned());
            trail.authorized_by.clone_from(&b.authorized_by);
        }
        let principal = auth::authenticate(&self.state.sts, headers, &self.cfg.audience).await?;
        trail.principal = Some(principal.clone());
        replay::claim(&mut self.state.redis.clone(), &principal.claims.jti, principal.claims.exp, self.cfg.replay_ttl).await?;
        self.buckets.take(&principal.subject_key(), Instant::now())?;
        let invoke = parsed?;
        let op = catalog::lookup(&invoke.command, &invoke.subcommand)?;
        let flags = body::validate_flags(invoke.flags)?;
        principal.require_scope(&op.scope())?;
        // Built before the allow is recorded, so a malformed request is a deny, not an allow.
        let request = match op.target {
            Target::Admin { method, route } => {
                let caller = dispatch::Caller {
                    zone: principal.zone(),
                    api_token: self.cfg.api_token.expose(),
                    request_id: &trail.request_id,
                    authorized_by: invoke.authorized_by.as_deref(),
                };
                Some(dispatch::build(method, route, dispatch::decode_documents(op.json_flags, flags)?, &caller)?)
            }
            Target::Describe => None,
        };
        if let Err(e) = self.recorder.deliver(&[trail.event("allow", "ok", "")]).await {
            self.state.metrics.control_audit_failures.with_label_values(&["allow"]).inc();
            tracing::error!(request_id = %trail.request_id, error = %e, "control allow could not be recorded; not dispatching");
            return Err(Refusal::AuditUnavailable);
        }
        *stage = Stage::Dispatched;
        match request {
            Some(req) => dispatch::call(&self.admin, req).await,
            None => Ok(dispatch::describe()),
        }
    }

    /// Counts, logs, audits a deny, and answers.
    fn conclude(&self, out: Result<Value, Refusal>, trail: &Trail, stage: Stage) -> Response {
        let fp = trail.principal.as_ref().map_or("", |p| p.fingerprint.as_str());
        let (command, subcommand) = (trail.command.as_deref().unwrap_or(""), trail.subcommand.as_deref().unwrap_or(""));
        let refusal = match out {
            Ok(result) => {
                self.state.metrics.control_invocations.with_label_values(&["ok", "ok"]).inc();
                tracing::info!(request_id = %trail.request_id, token_fp = fp, command, subcommand, "control invoke done");
                return axum::Json(json!({"ok": true, "result": result})).into_response();
            }
            Err(r) => r,
        };
        let code = refusal.code();
        let outcome = match stage {
            Stage::Dispatched => "failed",
            Stage::Admission | Stage::Authorization => "deny",
        };
        self.state.metrics.control_invocations.with_label_values(&[code, outcome]).inc();
        tracing::info!(request_id = %trail.request_id, token_fp = fp, command, subcommand, code, reason = %refusal, outcome, "control invoke refused");
        if stage == Stage::Authorization && refusal != Refusal::AuditUnavailable {
            if trail.principal.is_some() {
                self.audit_deny(trail.event("deny", code, &refusal.to_string()));
            } else {
                // Nobody was authenticated: a row per such request (in `_global`) would let anyone
                // write unbounded evidence; it is counted instead (and logged above).
                self.state.metrics.unauthenticated_requests.with_label_values(&["control"]).inc();
            }
        }
        refusal.into_response()
    }

    /// Records a deny in the background: the answer does not wait for evidence of a refusal.
    fn audit_deny(&self, event: caracal_shared::audit::AuditEvent) {
        let recorder = self.recorder.clone();
        let failures = self.state.metrics.control_audit_failures.with_label_values(&["deny"]);
        tokio::spawn(caracal_shared::zone_context::all_zones(async move {
            if let Err(e) = recorder.deliver(std::slice::from_ref(&event)).await {
                failures.inc();
                tracing::warn!(event_id = %event.id, error = %e, "control deny could not be recorded");
            }
        }));
    }
}
