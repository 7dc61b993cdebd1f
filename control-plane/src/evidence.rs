//! Audit evidence this process produces: token exchanges (from the STS), admin and Coordinator
//! actions, Control invocations. Frames are signed with `AUDIT_HMAC_KEY` and written to
//! `caracal.audit.events`; when Redis refuses, into the transactional outbox, which the relay
//! publishes later. Nothing is dropped: the shipper holds a batch and retries until one of the two
//! takes it, and a full queue makes producers wait rather than lose events.
//!
//! Admin and Coordinator actions are recorded by [`actions`], a middleware over every mutating
//! route: who (the admin token id or the mandate's subject, never a credential), what (method and
//! route template, never a body), the status, the zone and the request id. A request refused
//! before anyone was authenticated has no "who": it files no row — otherwise anyone could write
//! unbounded rows under any zone id they name, `_global` included, and crowd unfiled evidence —
//! and is counted in `caracal_unauthenticated_requests_total{surface}` instead. A caller bound to
//! one zone (a zone token) that names another zone is filed in its own zone's chain.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use caracal_shared::audit::{AuditEvent, Frame};
use caracal_shared::{request_id, streams};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, watch};

use crate::state::AppState;

/// Events queued before producers wait.
pub const QUEUE: usize = 65_536;
/// Frames per pipeline.
const BATCH: usize = 500;

/// Writes frames: one pipelined `XADD` per batch, the outbox when Redis refuses.
#[derive(Clone)]
pub struct Delivery {
    pub redis: caracal_shared::redis_primary::Conn,
    pub db: PgPool,
    pub key: Option<Vec<u8>>,
    pub outbox_notify: Arc<Notify>,
}

impl Delivery {
    /// Signs and delivers `events` durably, or says why neither Redis nor Postgres took them.
    pub async fn deliver(&self, events: &[AuditEvent]) -> Result<(), String> {
        let frames: Vec<Frame> = events.iter().map(|e| Frame::seal(e, self.key.as_deref())).collect();
        let Err(redis_err) = self.xadd(&frames).await else { return Ok(()) };
        tracing::warn!(frames = frames.len(), error = %redis_err, "audit XADD failed; writing to the outbox");
        match self.enqueue(events, &frames).await {
            Ok(()) => {
                self.outbox_notify.notify_one();
                Ok(())
            }
            Err(db_err) => Err(format!("redis: {redis_err}; outbox: {db_err}")),
        }
    }

    async fn xadd(&self, frames: &[Frame]) -> redis::RedisResult<()> {
        self.redis.durability().write_pipe(&mut self.redis.clone(), &caracal_shared::audit::xadd_pipeline(frames)).await
    }

    async fn enqueue(&self, events: &[AuditEvent], frames: &[Frame]) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        for (e, f) in events.iter().zip(frames) {
            let mut fields = vec![("id", f.id.as_str()), ("data", f.data.as_str())];
            if let Some(sig) = &f.sig {
                fields.push(("sig", sig.as_str()));
            }
            let zone = (!e.zone_id.is_empty()).then_some(e.zone_id.as_str());
            crate::outbox::enqueue(&mut tx, zone, streams::AUDIT_EVENTS, &fields).await?;
        }
        tx.commit().await
    }
}

/// Drains the queue in batches until shutdown, then drains what is left.
pub async fn ship(delivery: Delivery, mut rx: mpsc::Receiver<AuditEvent>, mut stop: watch::Receiver<bool>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut closing = false;
    loop {
        let n = if closing {
            rx.recv_many(&mut batch, BATCH).await
        } else {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                _ = stop.changed() => {
                    // No new events are accepted; what is queued is still delivered.
                    rx.close();
                    closing = true;
                    continue;
                }
            }
        };
        if n == 0 {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = delivery.deliver(&batch).await {
            tracing::error!(events = batch.len(), error = %e, "audit evidence not delivered; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        batch.clear();
    }
}

/// Filled by the authenticating layer or extractor with who is acting (token id or mandate
/// subject) and, for a caller bound to one zone, that zone.
#[derive(Clone, Default)]
pub struct Actor {
    who: Arc<OnceLock<String>>,
    home_zone: Arc<OnceLock<String>>,
}

impl Actor {
    /// Records the actor of the current request, if a slot was set up for it.
    pub fn record(extensions: &axum::http::Extensions, who: impl FnOnce() -> String) {
        if let Some(slot) = extensions.get::<Actor>() {
            let _ = slot.who.set(who());
        }
    }

    /// Records the bootstrap (authenticated by `BOOTSTRAP_ADMIN_TOKEN`) as the actor.
    pub fn bootstrap(&self) {
        let _ = self.who.set("bootstrap".to_owned());
    }

    /// Records an actor bound to one zone (a zone token, a runtime's mandate).
    pub fn record_in_zone(extensions: &axum::http::Extensions, who: impl FnOnce() -> String, zone_id: &str) {
        if let Some(slot) = extensions.get::<Actor>() {
            let _ = slot.who.set(who());
            let _ = slot.home_zone.set(zone_id.to_owned());
        }
    }
}

/// Records every mutating admin (`/v1/…`) and Coordinator (`/zones/…`) request once answered
/// (mounted on those routers only). Control (`/v1/control/…`) writes its own evidence before
/// dispatch; the token endpoint's comes from the STS.
pub async fn actions(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let recorded = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && (path.starts_with("/v1/") || path.starts_with("/zones/"))
        && !path.starts_with("/v1/control/");
    if !recorded {
        return next.run(req).await;
    }
    let actor = Actor::default();
    req.extensions_mut().insert(actor.clone());
    let method = req.method().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let zone = zone_of(&path).unwrap_or_default();
    let coordinator = path.starts_with("/zones/");
    let via_control = req.extensions().get::<crate::extract::ViaControl>().is_some();
    let rid = req.headers().get(request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let resp = next.run(req).await;
    let Some(who) = actor.who.get() else {
        let surface = if coordinator { "coordinator" } else { "admin" };
        state.metrics.unauthenticated_requests.with_label_values(&[surface]).inc();
        return resp;
    };
    let status = resp.status().as_u16();
    let event_type = if coordinator { "coordinator_action" } else { "admin_action" };
    let decision = if status < 400 { "allow" } else { "deny" };
    let mut meta = json!({
        "actor": who,
        "method": method,
        "route": route,
        "status": status,
    });
    if via_control {
        // The `control.invoke` allow with the same request id names the control key.
        meta["via"] = "control".into();
    }
    // A caller bound to one zone that names another is filed in its own chain: it cannot open
    // chains under zone ids of its choosing.
    let zone = match actor.home_zone.get() {
        Some(home) if *home != zone => home.clone(),
        _ => zone,
    };
    caracal_shared::audit::enqueue(&state.evidence, AuditEvent::new(&zone, event_type, &rid, decision, &status.to_string(), meta)).await;
    resp
}

/// The zone a `/v1/zones/{z}/…` or `/zones/{z}/…` path names, if it is a well-formed id.
fn zone_of(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches("/v1").trim_start_matches('/').split('/');
    (parts.next() == Some("zones")).then(|| parts.next()).flatten().filter(|z| caracal_shared::mandate::is_valid_id(z)).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_come_from_the_path() {
        assert_eq!(zone_of("/v1/zones/z1/applications").as_deref(), Some("z1"));
        assert_eq!(zone_of("/zones/z2/agents/a").as_deref(), Some("z2"));
        assert_eq!(zone_of("/v1/zones"), None);
        assert_eq!(zone_of("/v1/admin-tokens"), None);
        assert_eq!(zone_of("/v1/zones/bad%20id/x"), None);
    }
}
