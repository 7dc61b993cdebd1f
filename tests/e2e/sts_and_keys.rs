//! The gateway's dependence on the STS: key fetching (JWKS cache, negative cache, rotation,
//! stale keys during an outage) and the circuit breaker.

use std::time::{Duration, Instant};

use caracal_e2e::{Stack, StackOptions};
use caracal_shared::jws::SigningKey;
use serde_json::Value;

fn opts(env: &[(&str, &str)]) -> StackOptions {
    StackOptions { gateway_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() }
}

/// A token with the claims of `genuine`, edited by `edit`, signed by a key the STS never published.
fn forge(genuine: &str, kid: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = jsonwebtoken::dangerous::insecure_decode::<Value>(genuine).unwrap().claims;
    claims["jti"] = uuid::Uuid::now_v7().to_string().into();
    edit(&mut claims);
    SigningKey::generate(kid).unwrap().0.sign(&claims).unwrap()
}

#[tokio::test]
async fn forged_kids_and_unknown_zones_cannot_turn_into_a_fetch_per_request() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let genuine = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &genuine, &d.resource).await.status, 200);
    let fetches = s.gateway_metric("caracal_gateway_jwks_fetches_total").await;
    assert_eq!(fetches, 1.0, "one fetch warmed the zone");
    for i in 0..20 {
        let kid = format!("forged-{i}");
        let a = s.governed("GET", "/items/1", &forge(&genuine, &kid, |_| {}), &d.resource).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.body["error_description"], "bearer signature invalid");
        let b = s.governed("GET", "/items/1", &forge(&genuine, &kid, |c| c["zone_id"] = "ghost-zone".into()), &d.resource).await;
        assert_eq!(b.status, 401);
    }
    let after = s.gateway_metric("caracal_gateway_jwks_fetches_total").await;
    assert!(after <= fetches + 2.0, "40 forged tokens cost at most one forced refetch and one negative lookup, not {after}");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_signature_total").await, 40.0);
    assert!(s.upstream.requests().len() == 1);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_at_once() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200);
    s.admin_ok("POST", &format!("/v1/zones/{}/keys/rotate", d.zone_id), &d.admin, None, 200).await;
    let after = s.gateway_mandate(&d, &session, "tools.read").await;
    let a = s.governed("GET", "/items/1", &after, &d.resource).await;
    assert_eq!(a.status, 200, "a mandate signed by the new key verifies: {}", a.text);
    assert_eq!(s.gateway_metric("caracal_gateway_jwks_fetches_total").await, 2.0);
}

#[tokio::test]
async fn known_keys_keep_verifying_while_the_jwks_endpoint_is_down() {
    let mut s = Stack::start_with(opts(&[("JWKS_CACHE_TTL", "1s"), ("STS_TIMEOUT", "1s")])).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let warm = s.gateway_mandate(&d, &session, "tools.read").await;
    let later = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &warm, &d.resource).await.status, 200);
    s.stop_control_plane();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let a = s.governed("GET", "/items/1", &later, &d.resource).await;
    assert_eq!(a.status, 502, "the signature still verified with the cached key; the STS is what failed: {}", a.text);
    assert_eq!(a.error(), "sts_unavailable");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_signature_total").await, 0.0);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_keys_unavailable_total").await, 0.0);
}

#[tokio::test]
async fn an_sts_outage_fails_closed_opens_the_circuit_and_a_probe_closes_it() {
    let mut s = Stack::start_with(opts(&[("STS_CIRCUIT_FAILURES", "3"), ("STS_CIRCUIT_OPEN", "1s"), ("STS_TIMEOUT", "1s")])).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let mut mandates = Vec::new();
    for _ in 0..7 {
        mandates.push(s.gateway_mandate(&d, &session, "tools.read").await);
    }
    assert_eq!(s.governed("GET", "/items/1", &mandates[0], &d.resource).await.status, 200, "warm the key cache");
    s.stop_control_plane();
    for m in &mandates[1..4] {
        let a = s.governed("GET", "/items/1", m, &d.resource).await;
        assert_eq!(a.status, 502, "STS down: {}", a.text);
        assert_eq!(a.error(), "sts_unavailable");
    }
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_exchange_errors_total").await, 3.0);
    let t = Instant::now();
    let open = s.governed("GET", "/items/1", &mandates[4], &d.resource).await;
    assert_eq!(open.status, 503, "{}", open.text);
    assert_eq!(open.error(), "sts_unavailable");
    assert!(t.elapsed() < Duration::from_millis(200), "an open circuit fails fast, took {:?}", t.elapsed());
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_circuit_open_total").await, 1.0);
    assert_eq!(s.gateway_metric("caracal_gateway_sts_circuit_opened_total").await, 1.0);

    s.restart_control_plane().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let probe = s.governed("GET", "/items/1", &mandates[5], &d.resource).await;
    assert_eq!(probe.status, 200, "the half-open probe succeeds: {}", probe.text);
    assert_eq!(s.governed("GET", "/items/1", &mandates[6], &d.resource).await.status, 200, "and closes the circuit");
    assert_eq!(s.upstream.requests().len(), 3);
}
