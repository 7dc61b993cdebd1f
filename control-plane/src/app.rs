//! `fn app(state) -> Router`: the STS, the admin API and the operational endpoints on one server.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use caracal_shared::config_env::Mode;
use caracal_shared::{WireError, request_id};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let mut routes = Router::new().merge(managed(&state)).merge(caracal_sts::http::router());
    // Absent (404) unless enabled: a disabled Control has no surface at all.
    if let Some(control) = crate::control::router(&state) {
        routes = routes.merge(control);
    }
    routes
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        // Outermost first: a panic becomes a 500 with our body; the request context wraps every
        // response (request id, error body, status metrics); then time and size limits.
        .layer(middleware::from_fn_with_state(state.clone(), request_context))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(30)))
        .layer(RequestBodyLimitLayer::new(1024 * 1024))
        // Innermost: every handler's queries run in the zone its path names (row-level security).
        .layer(middleware::from_fn(zone_context))
        .with_state(state)
}

/// The admin API and Coordinator routes. Their changes are evidenced by one middleware; the token
/// endpoint (the hot path) does not pass through it: the STS records its own decisions. Control
/// dispatches to the same router, so what it changes is evidenced the same way.
pub fn managed(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(crate::api::router(state))
        .merge(crate::coordinator::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::evidence::actions))
}

/// The zone the request acts for, from its path; routes without one (global admin routes, the
/// token endpoint, JWKS) run for every zone, and the STS narrows to the form's zone itself.
pub async fn zone_context(req: Request, next: Next) -> Response {
    let ctx = match caracal_shared::zone_context::zone_of_path(req.uri().path()) {
        Some(z) => caracal_shared::zone_context::ZoneContext::Zone(z.to_owned()),
        None => caracal_shared::zone_context::ZoneContext::AllZones,
    };
    caracal_shared::zone_context::within(ctx, next.run(req)).await
}

/// Request id in and out; renders [`ApiError`]s with that id and logs internal causes.
async fn request_context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let rid = request_id::from_inbound(req.headers().get(request_id::HEADER).and_then(|v| v.to_str().ok()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The caller's trace (the gateway's span for an exchange) joins this process's log lines to
    // it; read only when there is a line to write.
    let traceparent = req.headers().get("traceparent").cloned();
    let started = state.otel.as_ref().map(|_| (std::time::Instant::now(), std::time::SystemTime::now()));
    if let Ok(v) = HeaderValue::from_str(&rid) {
        req.headers_mut().insert(request_id::HEADER, v);
    }
    let mut resp = next.run(req).await;
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        if let Some(cause) = &err.internal {
            let trace_id =
                traceparent.as_ref().and_then(|v| v.to_str().ok()).and_then(caracal_shared::trace_context::trace_id).unwrap_or("");
            tracing::error!(request_id = %rid, trace_id, %method, path, status = err.status.as_u16(), error = cause, "request failed");
        }
        if path.starts_with("/zones/") && err.status.is_client_error() {
            state.metrics.coordinator_denials.with_label_values(&[err.code]).inc();
        }
        let body = if path.starts_with("/zones/") {
            // Coordinator clients read `request_id` (the original's Coordinator spelling).
            serde_json::to_vec(&serde_json::json!({
                "error": err.code, "error_description": err.description, "requestId": rid, "request_id": rid,
            }))
            .expect("error body serializes")
        } else {
            WireError { error: err.code.to_owned(), error_description: err.description, request_id: rid.clone(), scope: None }.to_json()
        };
        let mut r = (err.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        *r.headers_mut() = std::mem::take(resp.headers_mut());
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut().remove(header::CONTENT_LENGTH);
        resp = r;
    }
    if path.starts_with("/v1/") {
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        state.metrics.api_responses.with_label_values(&[status_class(resp.status())]).inc();
    }
    if let (Some(otel), Some((at, wall))) = (&state.otel, started) {
        let caller = traceparent.as_ref().and_then(|v| v.to_str().ok()).and_then(caracal_shared::otel::Caller::of);
        otel.server_span(caller, &method, &path, &rid, resp.status().as_u16(), wall, at.elapsed());
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    resp
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

async fn health() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"ok":true}"#)
}

/// Ready when Postgres and Redis answer within 2 s and, unless `AUDIT_READY_ON_TAMPER=report`,
/// no tamper sweep found damage. The ledger's state is in the body either way.
async fn ready(State(state): State<AppState>) -> Response {
    let pg = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&state.db)).await;
    let reason = if !matches!(pg, Ok(Ok(_))) {
        Some("postgres_unreachable")
    } else {
        let mut conn = state.redis.clone();
        let ping = tokio::time::timeout(Duration::from_secs(2), redis::cmd("PING").query_async::<String>(&mut conn)).await;
        (!matches!(ping, Ok(Ok(_)))).then_some("redis_unreachable")
    };
    let reason = reason.or_else(|| state.ledger.as_ref().and_then(|l| l.ready_problem()));
    let mut body = serde_json::json!({"ok": reason.is_none(), "ready": reason.is_none()});
    if let Some(r) = reason {
        body["reason"] = r.into();
    }
    if let Some(l) = &state.ledger {
        body["audit"] = serde_json::json!({
            "ingest_healthy": l.status.ingest_healthy(),
            "store_failing": l.status.store_failing(),
            "tamper": l.status.findings(),
        });
    }
    let status = if reason.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let presented = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let allowed = match &state.cfg.metrics_bearer {
        Some(b) => presented.is_some_and(|p| caracal_shared::sig::ct_eq(p, format!("Bearer {}", b.expose()).as_bytes())),
        None => state.cfg.mode == Mode::Dev,
    };
    if !allowed {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer realm=\"caracal-metrics\"")], "unauthorized")
            .into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}
