//! Each refusal through the real gateway: status, wire code, metric, and nothing upstream.

use caracal_e2e::stack::{DENY_POLICY, Demo};
use caracal_e2e::{Stack, StackOptions};

async fn ready(s: &Stack) -> (Demo, String) {
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    (d, session)
}

#[tokio::test]
async fn replayed_mandate_is_refused() {
    let s = Stack::start().await;
    let (d, session) = ready(&s).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200);
    let again = s.governed("GET", "/items/1", &m, &d.resource).await;
    assert_eq!(again.status, 401, "{}", again.text);
    assert_eq!(again.error(), "invalid_token");
    assert_eq!(again.body["error_description"], "token replay detected");
    assert!(again.body["requestId"].is_string());
    assert_eq!(s.gateway_metric("caracal_gateway_denials_jti_replay_total").await, 1.0);
    assert_eq!(s.upstream.requests().len(), 1, "the replay never reached the upstream");
}

#[tokio::test]
async fn tampered_signature_is_refused_without_burning_the_real_token() {
    let s = Stack::start().await;
    let (d, session) = ready(&s).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let (head, sig) = m.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged = format!("{head}.{}", String::from_utf8(sig).unwrap());
    let a = s.governed("GET", "/items/1", &forged, &d.resource).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.error(), "invalid_token");
    assert_eq!(a.body["error_description"], "bearer signature invalid");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_signature_total").await, 1.0);
    assert!(s.upstream.requests().is_empty());
    // The forgery carried the real jti; it must not have consumed it.
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200, "the genuine mandate still works");
}

#[tokio::test]
async fn session_mandate_is_refused_at_the_gateway() {
    let s = Stack::start().await;
    let (d, session) = ready(&s).await;
    let a = s.governed("GET", "/items/1", &session, &d.resource).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.error(), "invalid_token");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_wrong_use_total").await, 1.0);
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn routing_headers_are_required_and_client_identity_is_never_taken_from_headers() {
    let s = Stack::start().await;
    let (d, session) = ready(&s).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let bearer = format!("Bearer {m}");
    let a = s.call("GET", "/items/1", &[("authorization", &bearer)]).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.error(), "invalid_token");
    assert_eq!(a.body["error_description"], "missing routing headers");
    let b = s
        .call(
            "GET",
            "/items/1",
            &[("authorization", &bearer), ("x-caracal-resource", &d.resource), ("x-caracal-client-id", "someone-else")],
        )
        .await;
    assert_eq!(b.status, 400, "{}", b.text);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_bad_routing_total").await, 2.0);
    let c = s.call("GET", "/items/1", &[("x-caracal-resource", &d.resource)]).await;
    assert_eq!(c.status, 401);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_missing_auth_total").await, 1.0);
    assert!(s.upstream.requests().is_empty());
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200, "refusals before the signature burn nothing");
}

#[tokio::test]
async fn no_active_policy_denies_everything() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let a = s
        .token(&[
            ("grant_type", caracal_e2e::stack::GRANT),
            ("zone_id", &d.zone_id),
            ("application_id", &d.app_id),
            ("client_secret", &d.secret),
        ])
        .await;
    assert_eq!(a.status, 403, "no policy, no mandate: {}", a.text);
    assert_eq!(a.error(), "access_denied");
    assert!(a.body["error_description"].as_str().unwrap().contains("no_active_policy"), "{}", a.text);

    // A mandate minted while a policy was active is refused at the gateway once it is gone.
    s.activate_policy(&d, caracal_e2e::stack::ALLOW_POLICY).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    s.admin_ok("DELETE", &format!("/v1/zones/{}/policy-sets/{}", d.zone_id, d.policy_set_id), &d.admin, None, 204).await;
    let g = s.governed("GET", "/items/1", &m, &d.resource).await;
    assert_eq!(g.status, 403, "{}", g.text);
    assert_eq!(g.error(), "access_denied");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_refused_total").await, 1.0);
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn denying_policy_refuses_the_exchange() {
    let s = Stack::start().await;
    let (d, session) = ready(&s).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    s.activate_policy(&d, DENY_POLICY).await;
    let g = s.governed("GET", "/items/1", &m, &d.resource).await;
    assert_eq!(g.status, 403, "{}", g.text);
    assert_eq!(g.error(), "access_denied");
    assert!(g.body["error_description"].as_str().unwrap().contains("frozen_by_test"), "the policy's reason is relayed: {}", g.text);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_refused_total").await, 1.0);
    let mint = s.mint_gateway(&d, &session, "tools.read").await;
    assert_eq!(mint.status, 403, "the STS mints nothing under a denying policy: {}", mint.text);
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn undeclared_operation_is_refused_by_the_sts() {
    let s = Stack::start().await;
    let (d, session) = ready(&s).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let a = s.governed("DELETE", "/items/1", &m, &d.resource).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(a.error(), "operation_not_permitted");
    let m2 = s.gateway_mandate(&d, &session, "tools.read").await;
    let b = s.governed("POST", "/items", &m2, &d.resource).await;
    assert_eq!(b.status, 403, "tools.read does not cover POST /items: {}", b.text);
    assert_eq!(b.error(), "operation_not_permitted");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_refused_total").await, 2.0);
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn redis_down_denies_and_never_allows() {
    let mut s = Stack::start().await;
    let (d, session) = ready(&s).await;
    let m1 = s.gateway_mandate(&d, &session, "tools.read").await;
    s.redis.stop();
    let a = s.governed("GET", "/items/1", &m1, &d.resource).await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.error(), "replay_check_unavailable");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_jti_unavailable_total").await, 1.0);
    assert!(s.upstream.requests().is_empty(), "nothing is forwarded while replay protection is down");
    let ready = s.http.get(format!("{}/ready", s.gw_url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "the gateway reports itself not ready without Redis");

    s.redis.restart();
    let mut ok = false;
    for _ in 0..50 {
        // A fresh mandate each time: an attempt that fails after the single-use mark (the STS may
        // still be reconnecting) has spent its mandate, as it should.
        // The STS itself may still be reconnecting to Redis (it fails closed too).
        let mint = s.mint_gateway(&d, &session, "tools.read").await;
        let Some(m) = mint.body["access_token"].as_str() else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        if s.governed("GET", "/items/1", m, &d.resource).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the gateway recovers once Redis is back:\n{}", s.gateway.log_tail(20));
}

#[tokio::test]
async fn oversized_body_is_refused_before_the_token_is_spent() {
    let s = Stack::start_with(StackOptions { gateway_env: vec![("MAX_REQUEST_BYTES".into(), "1024".into())], ..Default::default() }).await;
    let (d, session) = ready(&s).await;
    let m = s.gateway_mandate(&d, &session, "tools.write").await;
    let big = s
        .http
        .post(format!("{}/items", s.gw_url))
        .bearer_auth(&m)
        .header("x-caracal-resource", &d.resource)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let body: serde_json::Value = big.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_payload_too_large_total").await, 1.0);
    let small = s
        .http
        .post(format!("{}/items", s.gw_url))
        .bearer_auth(&m)
        .header("x-caracal-resource", &d.resource)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200, "the refused request did not burn the mandate");
    assert_eq!(s.upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_tampered_session_mandate_never_mints_even_after_the_genuine_one_did() {
    let s = Stack::start().await;
    let (d, session) = ready(&s).await;
    s.gateway_mandate(&d, &session, "tools.read").await;
    // Same claims, different signature bytes: must be verified afresh, not served from memory.
    let (head, sig) = session.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    sig[20] = if sig[20] == b'A' { b'B' } else { b'A' };
    let forged = format!("{head}.{}", String::from_utf8(sig).unwrap());
    let a = s.mint_gateway(&d, &forged, "tools.read").await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.error(), "invalid_token");
    // And a resource mandate is never accepted as a subject token.
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200);
    let resource_mandate = s.upstream.requests()[0].header("authorization").unwrap().trim_start_matches("Bearer ").to_owned();
    let b = s.mint_gateway(&d, &resource_mandate, "tools.read").await;
    assert_eq!(b.status, 401, "its audience is the resource, not the issuer: {}", b.text);
    assert_eq!(b.error(), "invalid_token");
}

/// Re-signs edited claims with a key the zone never published (for claim checks that come
/// before the signature: they must refuse without looking at it).
fn edited(genuine: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(genuine).unwrap().claims;
    edit(&mut claims);
    caracal_shared::jws::SigningKey::generate("k").unwrap().0.sign(&claims).unwrap()
}

#[tokio::test]
async fn bearer_shape_lifetime_and_claims_are_checked_before_anything_else() {
    let s = Stack::start().await;
    let (d, session) = ready(&s).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(String, u16, &str, &str, &str)> = vec![
        ("x".repeat(4097), 401, "invalid_token", "bearer token too large", "bad_bearer"),
        ("not.a-jwt".into(), 401, "invalid_token", "malformed bearer token", "bad_bearer"),
        (
            edited(&m, |c| c["exp"] = (now + 20).into()),
            401,
            "credential_expired_not_renewable",
            "credential expiring within pre-flight window",
            "expiring",
        ),
        (
            edited(&m, |c| c["exp"] = (now - 5).into()),
            401,
            "credential_expired_not_renewable",
            "credential expiring within pre-flight window",
            "expiring",
        ),
        (
            edited(&m, |c| c["iss"] = "https://evil.example".into()),
            401,
            "invalid_token",
            "mandate issuer or audience not accepted",
            "bad_claims",
        ),
        (
            edited(&m, |c| c["aud"] = serde_json::json!(["https://api.e2e.test/tools"])),
            401,
            "invalid_token",
            "mandate issuer or audience not accepted",
            "bad_claims",
        ),
        (
            edited(&m, |c| c["target"] = serde_json::json!(["https://other.e2e.test"])),
            403,
            "access_denied",
            "mandate does not target this resource",
            "target_mismatch",
        ),
        (edited(&m, |c| c["zone_id"] = "bad zone!".into()), 401, "invalid_token", "missing token zone or client", "bad_routing"),
        (edited(&m, |c| c["use"] = "resource".into()), 401, "invalid_token", "only gateway mandates are accepted here", "wrong_use"),
    ];
    for (token, status, code, description, metric) in &cases {
        let before = s.gateway_metric(&format!("caracal_gateway_denials_{metric}_total")).await;
        let a = s.governed("GET", "/items/1", token, &d.resource).await;
        assert_eq!(
            (a.status, a.error(), a.body["error_description"].as_str().unwrap_or("")),
            (*status, *code, *description),
            "{metric}: {}",
            a.text
        );
        assert_eq!(s.gateway_metric(&format!("caracal_gateway_denials_{metric}_total")).await, before + 1.0, "{metric} counted");
    }
    assert_eq!(s.gateway_metric("caracal_gateway_jwks_fetches_total").await, 0.0, "no key was fetched for any of them");
    assert!(s.upstream.requests().is_empty());
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200, "the genuine mandate was never burned");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused() {
    let s = Stack::start_with(StackOptions { gateway_env: vec![("MAX_REQUEST_BYTES".into(), "1024".into())], ..Default::default() }).await;
    let (d, session) = ready(&s).await;
    let m = s.gateway_mandate(&d, &session, "tools.write").await;
    // No Content-Length: the body streams and is counted as it goes.
    let mut body = Vec::new();
    for _ in 0..8 {
        body.extend_from_slice(b"200\r\n");
        body.extend_from_slice(&[b'x'; 512]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let bearer = format!("Bearer {m}");
    let a = s
        .raw_with_body(
            "POST",
            "/items",
            &[("authorization", &bearer), ("x-caracal-resource", &d.resource), ("transfer-encoding", "chunked")],
            &body,
        )
        .await;
    assert_eq!(a.status, 413, "a streamed body over the limit is refused: {}", a.text);
    assert_eq!(a.error(), "payload_too_large");
    let received: usize = s.upstream.requests().iter().map(|r| r.body.len()).sum();
    assert!(received <= 1024, "the upstream never receives more than the limit ({received} bytes)");
}
