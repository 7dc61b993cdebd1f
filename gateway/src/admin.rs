//! The gateway's own endpoints: `/health`, `/ready`, `/metrics`, `/metrics.json`, and OAuth
//! discovery (`/.well-known/oauth-protected-resource…`, [`crate::discovery`]).
//!
//! They answer only requests without `X-Caracal-Resource`, so an upstream's own `/health` is still
//! reachable through the gateway (the original shadowed those paths for every request). Discovery
//! is the exception: its documents are the gateway's whatever the request names.

use std::time::Duration;

use bytes::Bytes;
use caracal_shared::config_env::Mode;
use caracal_shared::sig;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::Deps;
use crate::background::revocation_snapshot::ReloadRequest;
use crate::deny::respond_json;
use crate::phases::admission::RESOURCE_HEADER;

/// Serves the request if it is for a gateway endpoint; `Ok(true)` if it was answered.
pub async fn serve(deps: &Deps, session: &mut Session, request_id: &str) -> pingora::Result<bool> {
    // Before the resource check: the gateway, not the upstream, is the OAuth resource server.
    if crate::discovery::serve(deps, session, request_id).await? {
        return Ok(true);
    }
    let req = session.req_header();
    if req.headers.contains_key(RESOURCE_HEADER) {
        return Ok(false);
    }
    match req.uri.path() {
        "/health" => respond_json(session, 200, request_id, Bytes::from_static(br#"{"ok":true}"#), &[]).await?,
        "/ready" => {
            let (status, mut body) = match readiness(deps).await {
                Ok(()) => (200, serde_json::json!({"ok": true, "ready": true})),
                Err(reason) => (503, serde_json::json!({"ok": false, "ready": false, "reason": reason})),
            };
            // Pool health is a detail: a pool whose members are all down does not make the
            // gateway unready (its requests are refused 503 `upstream_unavailable`).
            let pools = pool_health(deps);
            if !pools.is_empty() {
                body["pools"] = pools.into();
            }
            respond_json(session, status, request_id, Bytes::from(body.to_string()), &[]).await?
        }
        "/internal/revocations/reload" => {
            let authorized = req.method == http::Method::POST
                && deps.cfg.admin_token.as_ref().is_some_and(|t| {
                    req.headers.get(http::header::AUTHORIZATION).is_some_and(|a| sig::ct_eq(a.as_bytes(), format!("Bearer {t}").as_bytes()))
                });
            // Anything but an authorized POST looks like a path that does not exist.
            let (status, body) = match (authorized, &deps.reload) {
                (false, _) => (404, r#"{"error":"not_found"}"#.to_owned()),
                (true, None) => (503, r#"{"ok":false,"reason":"revocation_snapshot_not_configured"}"#.to_owned()),
                (true, Some(tx)) => match reload(tx).await {
                    Ok(n) => (200, format!(r#"{{"ok":true,"revocations":{n}}}"#)),
                    Err(_) => (503, r#"{"ok":false,"ready":false,"reason":"revocation_reload_failed"}"#.to_owned()),
                },
            };
            respond_json(session, status, request_id, Bytes::from(body), &[]).await?
        }
        "/metrics" | "/metrics.json" => {
            if !metrics_authorized(deps, req.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes())) {
                let mut resp = ResponseHeader::build(401, Some(3))?;
                resp.insert_header("content-type", "text/plain")?;
                resp.insert_header("content-length", "12")?;
                resp.insert_header("www-authenticate", "Bearer realm=\"caracal-metrics\"")?;
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(Bytes::from_static(b"unauthorized")), true).await?;
                return Ok(true);
            }
            let json = req.uri.path() == "/metrics.json";
            deps.metrics.revocations_active.set(deps.revocations.len() as i64);
            deps.metrics.audit_spool_files.set(deps.audit.spool_files() as i64);
            deps.metrics.revocation_staleness_seconds.set(deps.revocations.staleness_ms() as f64 / 1000.0);
            let (body, ct) = if json {
                (deps.metrics.render_json(), "application/json")
            } else {
                (deps.metrics.render_text(), "text/plain; version=0.0.4; charset=utf-8")
            };
            let mut resp = ResponseHeader::build(200, Some(3))?;
            resp.insert_header("content-type", ct)?;
            resp.insert_header("content-length", body.len().to_string())?;
            resp.insert_header("cache-control", "no-store")?;
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(Bytes::from(body)), true).await?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn metrics_authorized(deps: &Deps, authorization: Option<&[u8]>) -> bool {
    match &deps.cfg.metrics_bearer {
        Some(bearer) => authorization.is_some_and(|a| sig::ct_eq(a, format!("Bearer {bearer}").as_bytes())),
        None => deps.cfg.mode == Mode::Dev,
    }
}

/// `{resource: {healthy, total}}` for the pools in use (the newest pool of each resource).
fn pool_health(deps: &Deps) -> serde_json::Map<String, serde_json::Value> {
    let mut newest = std::collections::HashMap::new();
    for pool in deps.pools.all() {
        match newest.entry(pool.label.clone()) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(pool);
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if pool.built > o.get().built {
                    o.insert(pool);
                }
            }
        }
    }
    newest
        .into_iter()
        .map(|(label, pool)| {
            let (healthy, total) = pool.health_counts();
            (label, serde_json::json!({"healthy": healthy, "total": total}))
        })
        .collect()
}

/// Asks the snapshot service to reload now.
async fn reload(tx: &tokio::sync::mpsc::Sender<ReloadRequest>) -> Result<usize, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send(reply).await.map_err(|_| "snapshot service stopped".to_owned())?;
    answer.await.map_err(|_| "snapshot service stopped".to_owned())?
}

/// Ready when the revocation view is fresh, Redis answers and the STS is healthy; the reason
/// names the first failure.
async fn readiness(deps: &Deps) -> Result<(), &'static str> {
    if !deps.revocations.is_fresh() {
        return Err("revocation_stale");
    }
    if deps.audit.lost_any() {
        return Err("audit_evidence_lost");
    }
    if !deps.audit.spool_writable() {
        return Err("audit_replay_unavailable");
    }
    let redis_ok = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = deps.jti.connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    if !matches!(redis_ok, Ok(Ok(_))) {
        return Err("redis_unreachable");
    }
    let sts = deps.http.get(format!("{}/health", deps.cfg.sts_base)).timeout(Duration::from_secs(2)).send().await;
    match sts {
        Ok(r) if r.status().is_success() => Ok(()),
        _ => Err("sts_unreachable"),
    }
}
