//! Which signing keys a zone publishes, and what looking up a zone costs.
//!
//! * Every key that may still have signed an unexpired mandate stays published, however quickly
//!   keys are rotated.
//! * Unknown zone ids (they come from unverified tokens and query strings) cost no key query: the
//!   STS answers from its in-memory directory of live zones.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use serde_json::{Value, json};

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn two_quick_rotations_keep_the_first_key_published_while_its_mandates_live() {
    let s = Stack::start().await; // KEY_ACTIVATION_DELAY_SECONDS=0: each rotation signs at once
    let d = s.demo(true).await;
    let z = &d.zone_id;
    let session = s.session(&d).await;
    let unused_session = s.session(&d).await;
    let warm = s.gateway_mandate(&d, &session, "tools.read").await;
    let held = s.gateway_mandate(&d, &session, "tools.read").await;
    let k1 = kid(&held);
    assert_eq!(s.governed("GET", "/items/1", &warm, &d.resource).await.status, 200, "the gateway has fetched the zone's keys");

    let k2 = s.admin_ok("POST", &format!("/v1/zones/{z}/keys/rotate"), &d.admin, None, 200).await["kid"].as_str().unwrap().to_owned();
    let k3 = s.admin_ok("POST", &format!("/v1/zones/{z}/keys/rotate"), &d.admin, None, 200).await["kid"].as_str().unwrap().to_owned();
    let published = kids(&s.jwks(z).await);
    assert_eq!(published, vec![k3.clone(), k2, k1.clone()], "newest first, and the key that signed live mandates stays");

    // A mandate signed by the newest key makes the gateway refetch the zone's keys…
    let fresh_session = s.session(&d).await;
    let fresh = s.gateway_mandate(&d, &fresh_session, "tools.read").await;
    assert_eq!(kid(&fresh), k3);
    assert_eq!(s.governed("GET", "/items/2", &fresh, &d.resource).await.status, 200);
    // …and mandates of the first key still verify at the gateway and at the STS.
    let a = s.governed("GET", "/items/3", &held, &d.resource).await;
    assert_eq!(a.status, 200, "a mandate signed by the first key: {}", a.text);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_signature_total").await, 0.0);
    let minted = s.mint_gateway(&d, &unused_session, "tools.read").await;
    assert_eq!(minted.status, 200, "the STS still verifies a session mandate of the first key: {}", minted.text);
}

#[tokio::test]
async fn unknown_zones_cost_no_key_query_and_new_zones_are_visible_at_once() {
    let s = Stack::start().await;
    let admin = s.bootstrap().await;
    let (_cp2, cp2) = s.second_control_plane(&[]).await;
    let loads = |outcome: &'static str| {
        let s = &s;
        async move { s.control_plane_metric(&format!("caracal_sts_zone_key_loads_total{{outcome=\"{outcome}\"}}")).await }
    };
    let jwks_status = |base: String, zone: String| {
        let http = s.http.clone();
        async move { http.get(format!("{base}/.well-known/jwks.json?zone_id={zone}")).send().await.unwrap().status().as_u16() }
    };

    let applied = "caracal_sts_keys_invalidation_messages_total";
    let announced = s.control_plane_metric(applied).await;
    let live = s.admin_ok("POST", "/v1/zones", &admin, Some(json!({"name": "live"})), 201).await["id"].as_str().unwrap().to_owned();
    // The zone's creation is announced on `caracal.keys.invalidate`; once this instance has applied its
    // own announcement, nothing else invalidates the zone's keys (otherwise the announcement may land
    // between the two reads below and cost a second, correct, load).
    let start = Instant::now();
    while s.control_plane_metric(applied).await < announced + 1.0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the zone's key announcement is applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let found = loads("found").await;
    assert_eq!(jwks_status(s.cp_url.clone(), live.clone()).await, 200);
    assert_eq!(jwks_status(s.cp_url.clone(), live.clone()).await, 200);
    assert_eq!(loads("found").await, found + 1.0, "a live zone's keys are loaded once, then served from memory");

    let (not_found, directory) = (loads("not_found").await, s.control_plane_metric("caracal_sts_zone_directory_loads_total").await);
    let start = Instant::now();
    for _ in 0..50 {
        assert_eq!(jwks_status(s.cp_url.clone(), uuid::Uuid::now_v7().to_string()).await, 404);
    }
    let repeated = uuid::Uuid::now_v7().to_string();
    for _ in 0..20 {
        assert_eq!(jwks_status(s.cp_url.clone(), repeated.clone()).await, 404);
    }
    // Token requests naming unknown zones cost no application query either (one for a live zone).
    let app_loads = "caracal_sts_catalog_loads_total{kind=\"application\"}";
    let before = s.control_plane_metric(app_loads).await;
    let mint = |zone: String| {
        let s = &s;
        async move {
            let app = uuid::Uuid::now_v7().to_string();
            s.token(&[("grant_type", caracal_e2e::stack::GRANT), ("zone_id", &zone), ("application_id", &app), ("client_secret", "x")])
                .await
        }
    };
    for _ in 0..20 {
        assert_eq!(mint(uuid::Uuid::now_v7().to_string()).await.status, 401);
    }
    assert_eq!(s.control_plane_metric(app_loads).await, before, "no application query for unknown zones");
    assert_eq!(mint(live.clone()).await.status, 401);
    assert_eq!(s.control_plane_metric(app_loads).await, before + 1.0, "an unknown application of a live zone is looked up");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(loads("not_found").await, not_found, "no key query for a zone the directory does not know");
    let reloads = s.control_plane_metric("caracal_sts_zone_directory_loads_total").await - directory;
    assert!(reloads <= elapsed.ceil() + 1.0, "at most one directory reload per second under a stream of unknown zones: {reloads}");

    // A zone created on one instance is known on the other at once (announced on the stream).
    assert_eq!(jwks_status(cp2.clone(), repeated).await, 404, "the second instance has loaded its directory");
    let fresh = s.admin_ok("POST", "/v1/zones", &admin, Some(json!({"name": "fresh"})), 201).await["id"].as_str().unwrap().to_owned();
    assert_eq!(jwks_status(s.cp_url.clone(), fresh.clone()).await, 200, "the creating instance serves it at once");
    let start = Instant::now();
    while jwks_status(cp2.clone(), fresh.clone()).await != 200 {
        assert!(start.elapsed() < Duration::from_millis(1500), "the second instance serves the new zone's keys");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("a new zone reached the second instance in {:?}", start.elapsed());
}
