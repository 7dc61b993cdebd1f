//! The gateway's dependence on the STS: key fetching (JWKS cache, negative cache, rotation,
//! stale keys during an outage) and the circuit breaker.

use std::time::{Duration, Instant};

use caracal_e2e::{Stack, StackOptions};
use caracal_shared::b64;
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

#[tokio::test]
async fn an_sts_back_from_an_outage_is_probed_at_once_not_after_the_open_period() {
    let open_period = Duration::from_secs(60);
    let mut s = Stack::start_with(opts(&[("STS_CIRCUIT_FAILURES", "3"), ("STS_CIRCUIT_OPEN", "60s"), ("STS_TIMEOUT", "1s")])).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let mut mandates = Vec::new();
    for _ in 0..40 {
        mandates.push(s.gateway_mandate(&d, &session, "tools.read").await);
    }
    assert_eq!(s.governed("GET", "/items/1", &mandates[0], &d.resource).await.status, 200, "warm the key cache");
    s.stop_control_plane();
    for m in &mandates[1..4] {
        assert_eq!(s.governed("GET", "/items/1", m, &d.resource).await.error(), "sts_unavailable");
    }
    assert_eq!(s.gateway_metric("caracal_gateway_sts_circuit_opened_total").await, 1.0);
    // Let the readiness watch see the STS away (it asks every 250 ms while a circuit is open).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.gateway_metric("caracal_gateway_sts_circuit_ready_probes_total").await, 0.0, "the STS is still away");

    s.restart_control_plane().await;
    let back = Instant::now();
    let mut fast_failed = 0;
    let mut next = mandates[4..].iter();
    loop {
        let a = s.governed("GET", "/items/1", next.next().expect("enough mandates"), &d.resource).await;
        if a.status == 200 {
            break;
        }
        assert_eq!((a.status, a.error()), (503, "sts_unavailable"), "only the open circuit refuses: {}", a.text);
        fast_failed += 1;
        assert!(back.elapsed() < Duration::from_secs(5), "still refused {:?} after the STS came back", back.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = back.elapsed();
    eprintln!("the STS ready: the gateway passed again {recovered:?} later ({fast_failed} fast failures meanwhile)");
    assert!(recovered < open_period / 10);
    assert_eq!(s.gateway_metric("caracal_gateway_sts_circuit_ready_probes_total").await, 1.0);
    assert_eq!(s.gateway_metric("caracal_gateway_sts_circuit_opened_total").await, 1.0, "the probe closed it; nothing re-opened");
    assert_eq!(s.upstream.requests().len(), 2);
}

#[tokio::test]
async fn forged_tokens_for_random_zones_cost_at_most_the_cold_fetch_budget() {
    let s = Stack::start_with(opts(&[("JWKS_COLD_FETCH_BURST", "3"), ("JWKS_COLD_FETCH_RATE", "1")])).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let genuine = s.gateway_mandate(&d, &session, "tools.read").await;
    let started = Instant::now();
    let (mut refused_unavailable, mut refused_signature) = (0, 0);
    for i in 0..30 {
        let zone = format!("ghost-{i}-{}", uuid::Uuid::new_v4().simple());
        let a = s.governed("GET", "/items/1", &forge(&genuine, "k", |c| c["zone_id"] = zone.into()), &d.resource).await;
        match a.status {
            401 => {
                assert_eq!(a.body["error_description"], "bearer signature invalid", "{}", a.text);
                refused_signature += 1;
            }
            503 => {
                assert_eq!(a.error(), "sts_unavailable", "{}", a.text);
                assert_eq!(a.body["error_description"], "signing keys unavailable");
                refused_unavailable += 1;
            }
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    let budget = 3.0 + started.elapsed().as_secs_f64().ceil();
    let fetches = s.gateway_metric("caracal_gateway_jwks_fetches_total").await;
    assert!(fetches <= budget, "30 random zones cost {fetches} JWKS fetches; the budget allows {budget}");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_keys_unavailable_total").await, refused_unavailable as f64);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_signature_total").await, refused_signature as f64);
    assert!(refused_unavailable >= 30 - budget as usize, "beyond the budget an unknown zone is refused without a fetch");
    assert!(s.gateway_metric("caracal_gateway_jwks_cold_fetches_refused_total").await >= refused_unavailable as f64);
    // Once the flood stops the budget refills, and a zone the gateway never saw works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = s.governed("GET", "/items/1", &genuine, &d.resource).await;
    assert_eq!(a.status, 200, "a genuine new zone is served after the flood: {}", a.text);
    assert!(s.upstream.requests().len() == 1);
}

/// Allows mints, but its answer to the gateway's per-request exchange is outside the contract:
/// the STS answers 503 `policy_eval_failed` for every governed request of the zone.
const FAILING_POLICY: &str = r#"package caracal.authz

import rego.v1

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_rule_matched"}]}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["mint"], "diagnostics": []} if {
	input.action.use != "resource"
}

result := {"decision": "undecided", "evaluation_status": "complete", "determining_policies": [], "diagnostics": []} if {
	input.action.use == "resource"
}
"#;

#[tokio::test]
async fn sts_5xx_answers_open_the_circuit() {
    let s = Stack::start_with(opts(&[("STS_CIRCUIT_FAILURES", "3"), ("STS_CIRCUIT_OPEN", "1s")])).await;
    let d = s.demo(false).await;
    s.activate_policy(&d, FAILING_POLICY).await;
    let session = s.session(&d).await;
    let mut mandates = Vec::new();
    for _ in 0..6 {
        mandates.push(s.gateway_mandate(&d, &session, "tools.read").await);
    }
    for m in &mandates[..3] {
        let a = s.governed("GET", "/items/1", m, &d.resource).await;
        assert_eq!(a.status, 503, "the STS's failure is relayed: {}", a.text);
        assert_eq!(a.error(), "policy_eval_failed");
    }
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_exchange_errors_total").await, 3.0, "a 5xx is an STS failure");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_refused_total").await, 0.0, "not a policy refusal");
    let open = s.governed("GET", "/items/1", &mandates[3], &d.resource).await;
    assert_eq!(open.status, 503, "{}", open.text);
    assert_eq!(open.error(), "sts_unavailable");
    assert_eq!(open.body["error_description"], "sts unavailable");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_circuit_open_total").await, 1.0);
    assert_eq!(s.gateway_metric("caracal_gateway_sts_circuit_opened_total").await, 1.0);

    // Fixed policy, open period over: the probe passes and closes the circuit.
    s.activate_policy(&d, caracal_e2e::stack::ALLOW_POLICY).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for m in &mandates[4..] {
        let a = s.governed("GET", "/items/1", m, &d.resource).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    assert_eq!(s.upstream.requests().len(), 2);
}

#[tokio::test]
async fn one_zones_failures_do_not_trip_another_zones_traffic() {
    let s = Stack::start_with(opts(&[("STS_CIRCUIT_FAILURES", "3"), ("STS_CIRCUIT_OPEN", "30s")])).await;
    let healthy = s.demo(true).await;
    let failing = s.another_zone(&healthy, "failing", FAILING_POLICY).await;
    let (hs, fs) = (s.session(&healthy).await, s.session(&failing).await);
    for _ in 0..3 {
        let m = s.gateway_mandate(&failing, &fs, "tools.read").await;
        let a = s.governed("GET", "/items/1", &m, &failing.resource).await;
        assert_eq!((a.status, a.error()), (503, "policy_eval_failed"), "{}", a.text);
    }
    let m = s.gateway_mandate(&failing, &fs, "tools.read").await;
    let open = s.governed("GET", "/items/1", &m, &failing.resource).await;
    assert_eq!((open.status, open.error()), (503, "sts_unavailable"), "the failing zone's circuit is open: {}", open.text);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_circuit_open_total").await, 1.0);
    for i in 0..3 {
        let m = s.gateway_mandate(&healthy, &hs, "tools.read").await;
        let a = s.governed("GET", "/items/1", &m, &healthy.resource).await;
        assert_eq!(a.status, 200, "request {i} of the healthy zone flows: {}", a.text);
    }
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_circuit_open_total").await, 1.0, "only the failing zone fails fast");
    let ready = s.http.get(format!("{}/ready", s.gw_url)).send().await.unwrap();
    assert_eq!(ready.status(), 200, "one zone's circuit does not make the gateway unready");
    assert_eq!(s.upstream.requests().len(), 3);
}

/// The STS knows the gateway mandates the gateway brings back by their issuer tag
/// (`caracal_shared::jws`) instead of verifying their ES256 signature a second time; a client
/// presenting a mandate is still held to the signature. A tag moved onto other claims, or made by
/// another key under a published `kid`, proves nothing even in the gateway's signed exchange: the
/// signature then decides, and it does not verify.
#[tokio::test]
async fn the_sts_knows_its_own_mandates_by_their_tag_and_a_lifted_tag_proves_nothing() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let header = |t: &str| -> Value { serde_json::from_slice(&b64::decode(t.split('.').next().unwrap()).unwrap()).unwrap() };
    for t in [&session, &m] {
        assert_eq!(header(t)["ctag"].as_str().map(str::len), Some(22), "a 16-byte tag: {}", header(t));
    }
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200);
    let checks = |by: &str| {
        let sample = format!("caracal_sts_issuer_checks_total{{by=\"{by}\"}}");
        let s = &s;
        async move { s.control_plane_metric(&sample).await }
    };
    assert_eq!(checks("tag").await, 1.0, "the gateway mandate in the gateway's exchange");
    assert_eq!(checks("signature").await, 1.0, "the session mandate a client presented to mint");

    // Forged gateway mandates in a correctly signed gateway exchange.
    let genuine = s.gateway_mandate(&d, &session, "tools.read").await;
    let (head, rest) = genuine.split_once('.').unwrap();
    let signature = rest.rsplit_once('.').unwrap().1;
    let mut claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&genuine).unwrap().claims;
    claims["exp"] = (claims["exp"].as_i64().unwrap() + 86_400).into();
    let lifted = format!("{head}.{}.{signature}", b64::encode(claims.to_string()));
    let made_up = SigningKey::generate(header(&genuine)["kid"].as_str().unwrap()).unwrap().0.sign(&claims).unwrap();
    for forged in [lifted, made_up] {
        let a = s.gateway_exchange(&d, &forged, &d.resource).await;
        assert_eq!((a.status, a.error()), (401, "invalid_token"), "{}", a.text);
        assert_eq!(a.body["error_description"], "invalid subject_token: signature invalid");
    }
    assert_eq!(s.control_plane_metric("caracal_sts_denials_total{reason=\"invalid_subject_token\"}").await, 2.0);
    assert_eq!((checks("tag").await, checks("signature").await), (1.0, 1.0), "neither forgery passed either check");
    let a = s.gateway_exchange(&d, &genuine, &d.resource).await;
    assert_eq!(a.status, 200, "the genuine mandate, by its tag: {}", a.text);
    assert_eq!(checks("tag").await, 2.0);
}
