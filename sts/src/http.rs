//! The STS's HTTP surface: `POST /oauth/2/token`, `GET /.well-known/jwks.json?zone_id=` and the
//! RFC 8414 metadata `GET /.well-known/oauth-authorization-server[/<issuer path>]` ([`metadata`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use caracal_shared::{WireError, request_id, sig};

use crate::exchange::{GatewaySignature, TokenRequest};
use crate::form::MAX_FORM_BYTES;
use crate::{Sts, StsError, metadata};

/// The STS routes, for any state that can hand out the [`Sts`].
pub fn router<S>() -> Router<S>
where
    Arc<Sts>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(metadata::TOKEN_PATH, post(token))
        .route("/oauth/2/mcp/visible", post(mcp_visible))
        .route("/.well-known/jwks.json", get(jwks))
        .route(metadata::WELL_KNOWN, get(authorization_server_metadata))
        .route(&format!("{}/{{*issuer_path}}", metadata::WELL_KNOWN), get(authorization_server_metadata))
}

/// Renders an STS error as the wire body.
pub fn error_response(err: &StsError, request_id: &str) -> Response {
    let (status, code, description) = err.wire();
    let body = match err {
        // The original's step-up body: the error fields plus the hold, so the client can poll it.
        StsError::InteractionRequired(challenge) => {
            let mut v = serde_json::to_value(WireError::new(code, description, request_id)).expect("error body serializes");
            if let (Some(obj), Ok(serde_json::Value::Object(extra))) = (v.as_object_mut(), serde_json::to_value(challenge)) {
                obj.extend(extra);
            }
            serde_json::to_vec(&v).expect("error body serializes")
        }
        StsError::McpScopeInsufficient { scope, .. } => {
            WireError { scope: Some(scope.clone()), ..WireError::new(code, description, request_id) }.to_json()
        }
        _ => WireError::new(code, description, request_id).to_json(),
    };
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
        body,
    )
        .into_response();
    if matches!(err, StsError::InteractionRequired(_)) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"interaction_required\""));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    if let Some(secs) = err.retry_after() {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// What a form-encoded STS endpoint does with its request.
#[derive(Clone, Copy)]
enum FormCall {
    /// `POST /oauth/2/token`.
    Token,
    /// `POST /oauth/2/mcp/visible` (gateway-signed; `docs/mcp.md` §3).
    McpVisible,
}

async fn token(State(sts): State<Arc<Sts>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    form_endpoint(&sts, FormCall::Token, method, uri, headers, body).await
}

async fn mcp_visible(State(sts): State<Arc<Sts>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    form_endpoint(&sts, FormCall::McpVisible, method, uri, headers, body).await
}

/// Reads a form-encoded request (body only, bounded, with the gateway's signature headers when
/// present) and answers with the call's JSON or its error.
async fn form_endpoint(sts: &Sts, call: FormCall, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let rid = request_id::from_inbound(header_str(request_id::HEADER));
    let result = async {
        if uri.query().is_some() {
            return Err(StsError::InvalidRequest("parameters must be sent in the body, not the query".into()));
        }
        let media = header_str(header::CONTENT_TYPE.as_str()).unwrap_or("").split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(StsError::UnsupportedMediaType);
        }
        let body = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| StsError::PayloadTooLarge)?;
        let gw_headers = [sig::GATEWAY_TIMESTAMP_HEADER, sig::GATEWAY_NONCE_HEADER, sig::GATEWAY_SIGNATURE_HEADER];
        let gateway = gw_headers.iter().any(|h| headers.contains_key(*h)).then(|| GatewaySignature {
            timestamp: header_str(sig::GATEWAY_TIMESTAMP_HEADER),
            nonce: header_str(sig::GATEWAY_NONCE_HEADER),
            signature: header_str(sig::GATEWAY_SIGNATURE_HEADER),
            request_id_header: header_str(request_id::HEADER),
        });
        let req = TokenRequest { request_id: &rid, method: method.as_str(), path: uri.path(), gateway, body: &body };
        match call {
            FormCall::Token => serde_json::to_value(sts.token(req).await?),
            FormCall::McpVisible => serde_json::to_value(sts.mcp_visible(req).await?),
        }
        .map_err(|e| StsError::Internal(e.to_string()))
    }
    .await;
    match result {
        Ok(resp) => {
            let mut r =
                (StatusCode::OK, [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], axum::Json(resp)).into_response();
            if let Ok(v) = HeaderValue::from_str(&rid) {
                r.headers_mut().insert(request_id::HEADER, v);
            }
            r
        }
        Err(e) => error_response(&e, &rid),
    }
}

#[derive(serde::Deserialize)]
struct JwksQuery {
    zone_id: Option<String>,
}

async fn jwks(State(sts): State<Arc<Sts>>, Query(q): Query<JwksQuery>, headers: HeaderMap) -> Response {
    let rid = request_id::from_inbound(headers.get(request_id::HEADER).and_then(|v| v.to_str().ok()));
    let Some(zone_id) = q.zone_id.filter(|z| caracal_shared::mandate::is_valid_id(z)) else {
        return error_response(&StsError::InvalidRequest("zone_id query parameter is required".into()), &rid);
    };
    match sts.jwks(&zone_id).await {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "public, max-age=300, must-revalidate"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        Err(e) => error_response(&e, &rid),
    }
}

/// RFC 8414 metadata for this STS's issuer; any other path under the prefix is not found.
async fn authorization_server_metadata(State(sts): State<Arc<Sts>>, uri: Uri) -> Response {
    if !metadata::is_metadata_path(uri.path(), sts.issuer()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        metadata::document(sts.issuer()).to_string(),
    )
        .into_response()
}
