//! Dispatch: an allowed operation becomes one in-process request to this control plane's admin
//! API (`tower::ServiceExt::oneshot` on its router), presenting `CONTROL_API_TOKEN`.
//!
//! Never a shell, a subprocess or a loopback socket: the request is built from the catalog's
//! route template, path segments come only from named flags that look like ids, the zone only
//! from the token, and every other flag is the JSON body (POST, PATCH) or the query string (GET,
//! DELETE); a flag the operation names as a document is JSON text, decoded here. The request
//! carries the [`ViaControl`] extension, which the admin API reads to keep a control key from
//! widening its own authority; otherwise it applies its own validation and authorization as for
//! any admin caller. Its refusals map to Control codes: 400/422 → `invalid`, 403 → `denied`, 404 →
//! `not_found`, 409 → `conflict`, anything else → 502 `upstream`.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use caracal_shared::mandate::is_valid_id;
use caracal_shared::request_id;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use crate::control::Refusal;
use crate::control::catalog::{CATALOG, Method, Target, placeholders};
use crate::error::ApiError;
use crate::extract::ViaControl;

/// Largest admin answer relayed (a full page of the largest rows is far below this).
const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// What a dispatched request carries besides the route.
pub struct Caller<'a> {
    pub zone: &'a str,
    pub api_token: &'a str,
    pub request_id: &'a str,
    pub authorized_by: Option<&'a str>,
}

/// Decodes the flags named in `documents` (an operation's `json_flags`) from JSON text; a value
/// that is not a string is passed on as it is.
pub fn decode_documents(documents: &[&str], mut flags: Map<String, Value>) -> Result<Map<String, Value>, Refusal> {
    for name in documents {
        if let Some(Value::String(text)) = flags.get(*name) {
            let doc = serde_json::from_str(text).map_err(|e| Refusal::Invalid(format!("flag {name} must be JSON text: {e}")))?;
            flags.insert((*name).to_owned(), doc);
        }
    }
    Ok(flags)
}

/// Builds the admin request for `method route` from the flags.
pub fn build(method: Method, route: &str, mut flags: Map<String, Value>, who: &Caller<'_>) -> Result<Request<Body>, Refusal> {
    // The zone is the token's: a zone_id flag may only repeat it.
    match flags.remove("zone_id") {
        None => {}
        Some(Value::String(z)) if z == who.zone => {}
        Some(_) => return Err(Refusal::ZoneMismatch),
    }
    let mut path = String::with_capacity(route.len() + 64);
    for seg in route.split('/').skip(1) {
        path.push('/');
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            None => path.push_str(seg),
            Some("zone") => path.push_str(who.zone),
            Some(name) => path.push_str(&path_param(name, flags.remove(name))?),
        }
    }
    let mut builder = Request::builder()
        .extension(ViaControl)
        .method(method.http())
        .header(header::AUTHORIZATION, format!("Bearer {}", who.api_token))
        .header(request_id::HEADER, who.request_id);
    if let Some(v) = who.authorized_by.and_then(|a| HeaderValue::from_str(a).ok()) {
        builder = builder.header("x-caracal-authorized-by", v);
    }
    let body = if method.has_body() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
        Body::from(serde_json::to_vec(&flags).expect("flags serialize"))
    } else {
        let query = query_string(&flags);
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query);
        }
        Body::empty()
    };
    builder.uri(path).body(body).map_err(|e| Refusal::Invalid(format!("cannot build the request: {e}")))
}

/// A path segment from flag `name`: an id (`[A-Za-z0-9._:-]{1,128}`, not only dots) or a
/// non-negative integer (an index such as an endpoint's `n`).
fn path_param(name: &str, value: Option<Value>) -> Result<String, Refusal> {
    match value {
        Some(Value::String(v)) if is_valid_id(&v) && !v.bytes().all(|b| b == b'.') => Ok(v),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(Refusal::Invalid(format!("flag {name} must be an id ([A-Za-z0-9._:-]{{1,128}}) or an index"))),
        None => Err(Refusal::Invalid(format!("flag {name} is required"))),
    }
}

fn query_string(flags: &Map<String, Value>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in flags {
        let items: &[Value] = match v {
            Value::Array(a) => a,
            other => std::slice::from_ref(other),
        };
        for item in items {
            match item {
                Value::Null => {}
                Value::String(s) => {
                    q.append_pair(k, s);
                }
                other => {
                    q.append_pair(k, &other.to_string());
                }
            }
        }
    }
    q.finish()
}

/// Sends `req` to the admin router and relays its answer.
pub async fn call(admin: &Router, req: Request<Body>) -> Result<Value, Refusal> {
    let resp = admin.clone().oneshot(req).await.unwrap_or_else(|e: Infallible| match e {});
    let status = resp.status();
    let api_error = resp.extensions().get::<ApiError>().cloned();
    let body = axum::body::to_bytes(resp.into_body(), MAX_RESULT_BYTES)
        .await
        .map_err(|e| Refusal::Upstream(format!("reading the admin answer failed: {e}")))?;
    if status.is_success() {
        if body.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&body).map_err(|_| Refusal::Upstream("the admin API answered with a body that is not JSON".into()));
    }
    Err(failure(status, api_error.as_ref(), &body))
}

/// Maps an admin refusal onto a Control code.
fn failure(status: StatusCode, err: Option<&ApiError>, body: &[u8]) -> Refusal {
    if let Some(cause) = err.and_then(|e| e.internal.as_deref()) {
        tracing::error!(status = status.as_u16(), error = cause, "control dispatch: admin API failed");
    }
    let reason = match err {
        Some(e) => format!("{}: {}", e.code, e.description),
        // Extractor rejections answer plain text.
        None => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    };
    match (status.as_u16(), err) {
        (400 | 422, _) => Refusal::Invalid(reason),
        (403, _) => Refusal::Denied(reason),
        (404, Some(_)) => Refusal::NotFound(reason),
        (409, _) => Refusal::Conflict(reason),
        (401, _) => {
            tracing::error!("control dispatch: the admin API refused CONTROL_API_TOKEN");
            Refusal::Upstream("the admin API refused Control's credentials".into())
        }
        // A 404 without an API error is a route that does not exist: a catalog bug, not the
        // caller's.
        _ => Refusal::Upstream(format!("admin API answered {}", status.as_u16())),
    }
}

/// `catalog describe`: every operation with the scope it needs.
pub fn describe() -> Value {
    let ops: Vec<Value> = CATALOG
        .iter()
        .map(|o| {
            let mut v = json!({"command": o.command, "subcommand": o.subcommand, "verb": o.verb, "scope": o.scope()});
            if let Target::Admin { method, route } = o.target {
                v["method"] = json!(method);
                v["route"] = route.into();
                v["path_flags"] = placeholders(route).filter(|p| *p != "zone").collect::<Vec<_>>().into();
            }
            v
        })
        .collect();
    json!({"commands": ops})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Caller<'static> {
        Caller { zone: "zone-1", api_token: "cat_x", request_id: "rid-1", authorized_by: Some("ana") }
    }

    fn flags(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[tokio::test]
    async fn path_from_named_flags_rest_as_body() {
        let req = build(Method::Patch, "/v1/zones/{zone}/resources/{id}", flags(json!({"id": "r-1", "name": "x"})), &who()).unwrap();
        assert_eq!(req.uri(), "/v1/zones/zone-1/resources/r-1");
        assert_eq!(req.method(), axum::http::Method::PATCH);
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer cat_x");
        assert_eq!(req.headers()[request_id::HEADER], "rid-1");
        let body = axum::body::to_bytes(req.into_body(), 1024).await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"name": "x"}), "path flags leave the body");
    }

    #[test]
    fn document_flags_are_decoded_and_others_kept() {
        let f =
            decode_documents(&["config_json", "input"], flags(json!({"config_json": "{\"a\":[1]}", "input": 5, "name": "{}"}))).unwrap();
        assert_eq!(Value::Object(f), json!({"config_json": {"a": [1]}, "input": 5, "name": "{}"}), "only named flags are decoded");
        let bad = decode_documents(&["config_json"], flags(json!({"config_json": "{not json"})));
        assert!(matches!(bad, Err(Refusal::Invalid(_))));
    }

    #[test]
    fn the_request_is_marked_as_controls() {
        let req = build(Method::Get, "/v1/zones/{zone}/resources", Map::new(), &who()).unwrap();
        assert!(req.extensions().get::<ViaControl>().is_some());
    }

    #[test]
    fn reads_carry_flags_in_the_query() {
        let req = build(Method::Get, "/v1/zones/{zone}/resources", flags(json!({"limit": 5, "status": ["a", "b c"], "x": null})), &who())
            .unwrap();
        assert_eq!(req.uri(), "/v1/zones/zone-1/resources?limit=5&status=a&status=b+c");
    }

    #[test]
    fn path_params_are_ids_and_the_zone_is_the_tokens() {
        let route = "/v1/zones/{zone}/resources/{id}";
        for bad in [
            json!({}),
            json!({"id": "../../admin-tokens"}),
            json!({"id": ".."}),
            json!({"id": "a/b"}),
            json!({"id": -1}),
            json!({"id": 1.5}),
            json!({"id": true}),
        ] {
            assert!(matches!(build(Method::Get, route, flags(bad.clone()), &who()), Err(Refusal::Invalid(_))), "{bad}");
        }
        let index = build(Method::Get, "/v1/zones/{zone}/resources/{id}/endpoints/{n}", flags(json!({"id": "r", "n": 2})), &who()).unwrap();
        assert_eq!(index.uri(), "/v1/zones/zone-1/resources/r/endpoints/2", "an index may be a number");
        assert!(matches!(build(Method::Get, route, flags(json!({"id": "r", "zone_id": "other"})), &who()), Err(Refusal::ZoneMismatch)));
        let same = build(Method::Get, route, flags(json!({"id": "r", "zone_id": "zone-1"})), &who()).unwrap();
        assert_eq!(same.uri(), "/v1/zones/zone-1/resources/r", "a zone_id flag equal to the token's zone is dropped");
    }

    #[test]
    fn admin_refusals_map_to_control_codes() {
        let e = |status: u16| ApiError::new(StatusCode::from_u16(status).unwrap(), "x", "y");
        let cases: [(u16, &str); 7] = [
            (400, "invalid"),
            (422, "invalid"),
            (403, "denied"),
            (404, "not_found"),
            (409, "conflict"),
            (401, "upstream"),
            (500, "upstream"),
        ];
        for (status, code) in cases {
            assert_eq!(failure(StatusCode::from_u16(status).unwrap(), Some(&e(status)), b"").code(), code, "{status}");
        }
        assert_eq!(failure(StatusCode::NOT_FOUND, None, b"").code(), "upstream", "a missing route is our bug");
    }

    #[test]
    fn describe_lists_scopes() {
        let d = describe();
        let ops = d["commands"].as_array().unwrap();
        assert_eq!(ops.len(), CATALOG.len());
        assert!(ops.iter().any(|o| o["scope"] == "control:resource:write" && o["method"] == "POST" && o["path_flags"] == json!([])));
    }
}
