//! One governed request through the real stack.

use caracal_e2e::Stack;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Verifies `token` with an independent JOSE implementation against the zone's JWKS.
fn verify_with_jwks(token: &str, jwks: &Value, issuer: &str, audience: &str) -> Value {
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.expect("kid header");
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("signing key is published");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    let key = DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(token, &key, &v).expect("mandate verifies against the JWKS").claims
}

#[tokio::test]
async fn governed_request_reaches_upstream_with_a_resource_mandate_only() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let mandate = s.gateway_mandate(&d, &session, "tools.read").await;

    let a = s
        .call(
            "GET",
            "/items/42?q=1",
            &[
                ("authorization", &format!("Bearer {mandate}")),
                ("x-caracal-resource", &d.resource),
                ("x-caracal-trace", "client-set"),
                ("x-forwarded-for", "6.6.6.6"),
                ("baggage", "caracal.zone=z,team=blue"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "governed request: {}\n{}", a.text, s.gateway.log_tail(20));
    assert_eq!(a.body["upstream"], "ok");
    assert!(a.headers.get("x-request-id").is_some(), "the gateway echoes a request id");

    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 1, "exactly one upstream request");
    let up = &seen[0];
    assert_eq!(up.path, "/base/items/42", "upstream base path joined with the request path");
    assert_eq!(up.query.as_deref(), Some("q=1"));
    for (name, _) in up.headers.iter() {
        assert!(!name.as_str().starts_with("x-caracal-"), "{name} must not reach the upstream");
    }
    assert_eq!(up.header("x-forwarded-for"), Some("127.0.0.1"), "client-supplied X-Forwarded-For is replaced");
    assert_eq!(up.header("baggage"), Some("team=blue"), "caracal.* baggage is stripped");
    let forwarded = up.header("authorization").expect("credential injected").strip_prefix("Bearer ").expect("bearer scheme");
    assert_ne!(forwarded, mandate, "the inbound gateway mandate never reaches the upstream");

    let claims = verify_with_jwks(forwarded, &s.jwks(&d.zone_id).await, &s.issuer, &d.resource);
    assert_eq!(claims["use"], "resource");
    assert_eq!(claims["aud"], serde_json::json!([d.resource]));
    assert_eq!(claims["target"], serde_json::json!([d.resource]));
    assert_eq!(claims["scope"], "tools.read");
    assert_eq!(claims["client_id"], d.app_id.as_str());
    let gw_claims = verify_with_jwks(&mandate, &s.jwks(&d.zone_id).await, &s.issuer, &s.issuer);
    assert_eq!(gw_claims["use"], "gateway");
    assert_eq!(claims["root_sid"], gw_claims["root_sid"], "the resource mandate hangs from the same root session");

    assert_eq!(s.gateway_metric("caracal_gateway_requests_allowed_total").await, 1.0);
    assert_eq!(s.gateway_metric("caracal_gateway_requests_denied_total").await, 0.0);
}

#[tokio::test]
async fn revoking_the_root_session_stops_further_exchanges() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let first = s.gateway_mandate(&d, &session, "tools.read").await;
    let second = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &first, &d.resource).await.status, 200);

    let sid = caracal_e2e::stack::sid_of(&session);
    let r = s.revoke_session(&d, &session).await;
    assert_eq!(r["status"], "revoked");
    assert!(r["outbox_id"].is_string(), "the revocation is announced through the outbox");

    let a = s.governed("GET", "/items/1", &second, &d.resource).await;
    assert_eq!(a.status, 401, "a mandate of a revoked session is refused: {}", a.text);
    assert_eq!(a.error(), "invalid_token");
    // Whichever sees it first refuses: the gateway's view (stream) or the STS (its own memory).
    assert_eq!(s.gateway_metric("caracal_gateway_requests_denied_total").await, 1.0);
    assert_eq!(s.upstream.requests().len(), 1, "nothing reached the upstream after the revocation");

    // The message reaches the stream, signed.
    let mut published = false;
    for _ in 0..100 {
        let mut conn = redis::Client::open(s.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("caracal.sessions.revoke")
            .arg("-")
            .arg("+")
            .query_async::<redis::Value>(&mut conn)
            .await
            .ok()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        if let Some((_, fields)) = entries.first() {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let key = hex::decode(&s.streams_key).unwrap();
            assert!(caracal_shared::sig::verify_stream_signature(&key, "caracal.sessions.revoke", &pairs), "message is signed: {pairs:?}");
            assert!(pairs.contains(&("session_id", sid.as_str())));
            published = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(published, "caracal.sessions.revoke received the revocation");
}

#[tokio::test]
async fn archiving_an_application_revokes_what_it_holds() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let mandate = s.gateway_mandate(&d, &session, "tools.read").await;
    s.admin_ok("DELETE", &format!("/v1/zones/{}/applications/{}", d.zone_id, d.app_id), &d.admin, None, 204).await;

    let a = s.governed("GET", "/items/1", &mandate, &d.resource).await;
    assert_eq!(a.status, 401, "a mandate of an archived application is refused: {}", a.text);
    assert_eq!(a.error(), "invalid_token");
    let mint = s.mint_gateway(&d, &session, "tools.read").await;
    assert_eq!(mint.status, 401, "an archived application cannot mint: {}", mint.text);
    assert_eq!(mint.error(), "access_denied");
    assert!(s.upstream.requests().is_empty());
    let records = s.admin_ok("GET", &format!("/v1/zones/{}/authority-records?status=revoked", d.zone_id), &d.admin, None, 200).await;
    assert_eq!(records["items"].as_array().unwrap().len(), 1, "its session is recorded as revoked: {records}");
}

#[tokio::test]
async fn the_trace_continues_through_the_gateway_and_each_phase_is_timed_when_asked() {
    let env = [("SERVER_TIMING", "true"), ("ACCESS_LOG_SAMPLE", "1")];
    let opts =
        caracal_e2e::StackOptions { gateway_env: env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), ..Default::default() };
    let s = Stack::start_with(opts).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let call = |mandate: String, traceparent: &'static str| {
        let s = &s;
        let resource = d.resource.clone();
        async move {
            let bearer = format!("Bearer {mandate}");
            let headers = [
                ("authorization", bearer.as_str()),
                ("x-caracal-resource", resource.as_str()),
                ("traceparent", traceparent),
                ("tracestate", "k=v"),
            ];
            s.call("GET", "/items/1", &headers).await
        }
    };
    let a = call(s.gateway_mandate(&d, &session, "tools.read").await, inbound).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let timing = a.headers["server-timing"].to_str().unwrap().to_owned();
    for phase in ["verify;dur=", "replay;dur=", "sts;dur=", "upstream;dur=", "gateway;dur="] {
        assert!(timing.contains(phase), "{phase} in {timing}");
    }
    let seen = s.upstream.requests().pop().unwrap();
    let out = seen.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(
        out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && !out.contains("00f067aa0ba902b7"),
        "same trace, the gateway's span: {out}"
    );
    assert_eq!(seen.headers["tracestate"], "k=v", "kept with the valid traceparent it belongs to");

    // A forged or malformed one is not continued: a new trace, and its tracestate dropped.
    let b = call(s.gateway_mandate(&d, &session, "tools.read").await, "00-zz-not-a-trace").await;
    assert_eq!(b.status, 200);
    let seen = s.upstream.requests().pop().unwrap();
    let fresh = seen.headers["traceparent"].to_str().unwrap();
    assert!(caracal_shared::trace_context::valid_traceparent(fresh) && !fresh.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{fresh}");
    assert!(seen.headers.get("tracestate").is_none());

    // The sampled access line carries both ids and the phases, never the token.
    let start = std::time::Instant::now();
    loop {
        let log = s.gateway.log();
        if let Some(line) = log.lines().find(|l| l.contains("\"forwarded\"") && l.contains("4bf92f3577b34da6a3ce929d0e0e4736")) {
            for field in ["\"request_id\"", "\"sts_ms\"", "\"verify_ms\"", "\"upstream_ms\"", "\"token_fp\"", "\"path\":\"/items/1\""] {
                assert!(line.contains(field), "{field} in {line}");
            }
            assert!(!line.contains("eyJ"), "no token in the log: {line}");
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(3), "no access line:\n{}", s.gateway.log_tail(10));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_server_timing_the_gateway_keeps_its_phase_times_to_itself() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let a = s.governed("GET", "/items/1", &s.gateway_mandate(&d, &session, "tools.read").await, &d.resource).await;
    assert_eq!(a.status, 200);
    assert!(a.headers.get("server-timing").is_none(), "off by default");
    let log = s.gateway.log();
    assert!(
        !log.lines().any(|l| l.contains("\"forwarded\"") && l.contains("\"level\":\"INFO\"")),
        "no info line per forwarded request by default"
    );
}

#[tokio::test]
async fn a_governed_request_is_one_trace_across_gateway_and_sts_at_an_otlp_collector() {
    let collector = caracal_e2e::otlp::Collector::start().await;
    let env: Vec<(String, String)> = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")]
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let opts = caracal_e2e::StackOptions { gateway_env: env.clone(), control_plane_env: env, ..Default::default() };
    let s = Stack::start_with(opts).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let call = |traceparent: &'static str| {
        let (s, d, session) = (&s, &d, &session);
        async move {
            let bearer = format!("Bearer {}", s.gateway_mandate(d, session, "tools.read").await);
            s.call(
                "GET",
                "/items/1",
                &[("authorization", bearer.as_str()), ("x-caracal-resource", d.resource.as_str()), ("traceparent", traceparent)],
            )
            .await
        }
    };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(call("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").await.status, 200);
    let unsampled = "5cf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(call("00-5cf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").await.status, 200);

    let start = std::time::Instant::now();
    let spans = loop {
        let spans = collector.trace(trace);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        if ["gateway GET", "verify", "replay", "sts", "upstream", "POST"].iter().all(|n| names.contains(n)) {
            break spans;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "spans so far: {names:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let server = spans.iter().find(|s| s.name == "gateway GET").unwrap();
    assert_eq!(
        (server.service.as_str(), server.parent_span_id.as_str()),
        ("caracal-gateway", "00f067aa0ba902b7"),
        "a child of the caller's span"
    );
    assert!(server.attributes.iter().any(|(k, v)| k == "http.response.status_code" && v == "200"), "{:?}", server.attributes);
    for phase in ["verify", "replay", "sts", "upstream"] {
        let p = spans.iter().find(|s| s.name == phase).unwrap();
        assert_eq!(p.parent_span_id, server.span_id, "{phase} is a phase of the gateway's span");
    }
    let exchange = spans.iter().find(|s| s.service == "caracal-control-plane").expect("the STS's span of the exchange");
    assert_eq!(exchange.parent_span_id, server.span_id, "propagated into the control plane");
    assert!(exchange.attributes.iter().any(|(k, v)| k == "url.path" && v == "/oauth/2/token"), "{:?}", exchange.attributes);
    // What went upstream named the gateway's span as parent, the span the collector holds.
    let upstream_parent = s.upstream.requests()[0].headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(upstream_parent, format!("00-{trace}-{}-01", server.span_id));

    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(collector.trace(unsampled).is_empty(), "a caller's unsampled trace is not exported");
}
