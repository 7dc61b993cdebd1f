//! The Coordinator and delegated mints: authority only narrows, travels only as far as allowed,
//! and disappears downstream when anything upstream is revoked, suspended or terminated.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::stack::{ACCESS_TOKEN, Answer, Demo, GRANT};
use serde_json::{Value, json};

/// An application with its runtime's session mandate (scope `agent:lifecycle`).
pub(crate) struct App {
    pub(crate) id: String,
    pub(crate) secret: String,
    pub(crate) runtime: String,
}

pub(crate) async fn app(s: &Stack, d: &Demo, name: &str) -> App {
    let (id, secret) = if name == "demo" {
        (d.app_id.clone(), d.secret.clone())
    } else {
        let a = s.admin_ok("POST", &format!("/v1/zones/{}/applications", d.zone_id), &d.admin, Some(json!({"name": name})), 201).await;
        (a["id"].as_str().unwrap().to_owned(), a["client_secret"].as_str().unwrap().to_owned())
    };
    let r = s
        .token(&[
            ("grant_type", GRANT),
            ("zone_id", &d.zone_id),
            ("application_id", &id),
            ("client_secret", &secret),
            ("scope", "agent:lifecycle"),
        ])
        .await;
    assert_eq!(r.status, 200, "runtime session: {}", r.text);
    App { id, secret, runtime: r.body["access_token"].as_str().unwrap().to_owned() }
}

pub(crate) async fn coord(s: &Stack, method: &str, path: &str, bearer: &str, body: Option<Value>) -> Answer {
    s.admin(method, path, bearer, body).await
}

pub(crate) async fn start_session(s: &Stack, d: &Demo, a: &App) -> String {
    let r =
        coord(s, "POST", &format!("/zones/{}/agents", d.zone_id), &a.runtime, Some(json!({"lifecycle": "task", "ttl_seconds": 600}))).await;
    assert_eq!(r.status, 201, "start: {}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn delegate(s: &Stack, d: &Demo, from: &App, body: Value) -> Answer {
    coord(s, "POST", &format!("/zones/{}/delegations", d.zone_id), &from.runtime, Some(body)).await
}

pub(crate) async fn delegated_mint(s: &Stack, d: &Demo, a: &App, session: &str, edge: &str, scope: &str) -> Answer {
    s.token(&[
        ("grant_type", GRANT),
        ("zone_id", &d.zone_id),
        ("application_id", &a.id),
        ("client_secret", &a.secret),
        ("agent_session_id", session),
        ("delegation_edge_id", edge),
        ("resource", &d.resource),
        ("scope", scope),
    ])
    .await
}

pub(crate) fn claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token).unwrap().claims
}

#[tokio::test]
async fn delegated_authority_narrows_and_the_gateway_honours_it() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let (sa, sb) = (start_session(&s, &d, &a).await, start_session(&s, &d, &b).await);

    let widening =
        delegate(&s, &d, &a, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["admin.all"], "resources": [d.resource]}))
            .await;
    assert_eq!((widening.status, widening.error()), (403, "scope_widening"), "{}", widening.text);
    let too_far =
        delegate(&s, &d, &a, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"], "max_hops": 11})).await;
    assert_eq!(too_far.status, 400, "hop cap is 10: {}", too_far.text);
    let foreign = delegate(&s, &d, &b, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"]})).await;
    assert_eq!((foreign.status, foreign.error()), (403, "not_owner"), "only the source's application delegates");

    let edge = delegate(
        &s,
        &d,
        &a,
        json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"], "resources": [d.resource]}),
    )
    .await;
    assert_eq!(edge.status, 201, "{}", edge.text);
    let edge_id = edge.body["id"].as_str().unwrap();
    assert_eq!(edge.body["max_hops"], 1);

    let minted = delegated_mint(&s, &d, &b, &sb, edge_id, "tools.read").await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    let mandate = minted.body["access_token"].as_str().unwrap();
    let c = claims(mandate);
    assert_eq!(c["use"], "gateway");
    assert_eq!(c["client_id"], b.id.as_str());
    assert_eq!(c["agent_session_id"], sb.as_str());
    assert_eq!(c["delegation_edge_id"], edge_id);
    assert_eq!(c["delegation_path"], json!([edge_id]));
    assert_eq!(c["hop_count"], 1);
    assert!(c["delegation_graph_epoch"].is_u64());
    assert_eq!(c["delegation_chain"].as_array().unwrap().len(), 2, "issuer hop and final receiver");
    assert_eq!(c["delegation_chain"][0]["application_id"], a.id.as_str());

    let up = s.governed("GET", "/items/1", mandate, &d.resource).await;
    assert_eq!(up.status, 200, "{}", up.text);
    let forwarded = s.upstream.requests()[0].header("authorization").unwrap().trim_start_matches("Bearer ").to_owned();
    let rc = claims(&forwarded);
    assert_eq!(rc["use"], "resource");
    assert_eq!(rc["delegation_edge_id"], edge_id, "the resource mandate inherits the delegation");
    assert_eq!(rc["scope"], "tools.read");

    let wider = delegated_mint(&s, &d, &b, &sb, edge_id, "tools.write").await;
    assert_eq!(wider.status, 403, "scopes beyond the edge: {}", wider.text);
    let not_mine = delegated_mint(&s, &d, &a, &sa, edge_id, "tools.read").await;
    assert_eq!(not_mine.status, 403, "the edge was issued to B, not A: {}", not_mine.text);
}

#[tokio::test]
async fn revoking_an_edge_revokes_everything_downstream_and_hops_are_limited() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b, c) = (app(&s, &d, "demo").await, app(&s, &d, "middle").await, app(&s, &d, "leaf").await);
    let (sa, sb, sc) = (start_session(&s, &d, &a).await, start_session(&s, &d, &b).await, start_session(&s, &d, &c).await);
    let ab = delegate(
        &s,
        &d,
        &a,
        json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read", "tools.write"], "max_hops": 2}),
    )
    .await;
    assert_eq!(ab.status, 201, "{}", ab.text);
    let ab = ab.body["id"].as_str().unwrap().to_owned();
    let wider =
        delegate(&s, &d, &b, json!({"source_session_id": sb, "target_session_id": sc, "scopes": ["tools.admin"], "parent_edge_id": ab}))
            .await;
    assert_eq!(wider.status, 403, "a derived edge only narrows: {}", wider.text);
    let bc =
        delegate(&s, &d, &b, json!({"source_session_id": sb, "target_session_id": sc, "scopes": ["tools.read"], "parent_edge_id": ab}))
            .await;
    assert_eq!(bc.status, 201, "{}", bc.text);
    assert_eq!(bc.body["hop"], 2);
    let bc = bc.body["id"].as_str().unwrap().to_owned();
    let sd = start_session(&s, &d, &a).await;
    let third =
        delegate(&s, &d, &c, json!({"source_session_id": sc, "target_session_id": sd, "scopes": ["tools.read"], "parent_edge_id": bc}))
            .await;
    assert_eq!((third.status, third.error()), (403, "hop_limit"), "two hops allowed, not three: {}", third.text);

    let minted = delegated_mint(&s, &d, &c, &sc, &bc, "tools.read").await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    let mc = claims(minted.body["access_token"].as_str().unwrap());
    assert_eq!(mc["delegation_path"], json!([ab, bc]), "root → leaf");
    assert_eq!(mc["hop_count"], 2);
    let epoch_before = mc["delegation_graph_epoch"].as_u64().unwrap();
    let held = delegated_mint(&s, &d, &c, &sc, &bc, "tools.read").await.body["access_token"].as_str().unwrap().to_owned();

    let r = coord(&s, "PATCH", &format!("/zones/{}/delegations/{ab}/revoke", d.zone_id), &a.runtime, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["revoked"].as_array().unwrap().len(), 2, "the derived edge goes with it");
    let after = delegated_mint(&s, &d, &c, &sc, &bc, "tools.read").await;
    assert_eq!(after.status, 403, "nothing is minted from a revoked chain: {}", after.text);
    // The mandate C already holds dies at the gateway too, in memory: both edge anchors were
    // announced (one message each), and the gateway refuses before asking the STS.
    s.wait_gateway_metric("caracal_gateway_revocation_messages_total", 2.0, Duration::from_secs(2)).await;
    let g = s.governed("GET", "/items/1", &held, &d.resource).await;
    assert_eq!((g.status, g.body["error_description"].as_str()), (401, Some("session revoked")), "{}", g.text);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_refused_total").await, 0.0, "denied in memory, the STS was not asked");
    let fresh_edge = delegate(&s, &d, &a, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"]})).await;
    let e2 = fresh_edge.body["id"].as_str().unwrap();
    let m2 = claims(delegated_mint(&s, &d, &b, &sb, e2, "tools.read").await.body["access_token"].as_str().unwrap());
    assert!(m2["delegation_graph_epoch"].as_u64().unwrap() > epoch_before, "every revocation bumps the graph epoch");
}

#[tokio::test]
async fn suspension_termination_and_root_revocation_cascade() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let (sa, sb) = (start_session(&s, &d, &a).await, start_session(&s, &d, &b).await);
    let edge = delegate(&s, &d, &a, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"]})).await;
    let edge = edge.body["id"].as_str().unwrap().to_owned();
    let z = &d.zone_id;

    assert_eq!(coord(&s, "PATCH", &format!("/zones/{z}/agents/{sb}/suspend"), &b.runtime, None).await.status, 200);
    assert_eq!(delegated_mint(&s, &d, &b, &sb, &edge, "tools.read").await.status, 403, "a suspended session mints nothing");
    assert_eq!(coord(&s, "PATCH", &format!("/zones/{z}/agents/{sb}/resume"), &b.runtime, None).await.status, 200);
    let held = delegated_mint(&s, &d, &b, &sb, &edge, "tools.read").await;
    assert_eq!(held.status, 200, "{}", held.text);
    let held = held.body["access_token"].as_str().unwrap().to_owned();

    let hb = coord(&s, "POST", &format!("/zones/{z}/agents/{sb}/heartbeat"), &b.runtime, None).await;
    assert_eq!((hb.status, hb.error()), (409, "not_a_service_session"));
    assert!(hb.body["request_id"].is_string(), "Coordinator errors carry request_id");
    let svc = coord(
        &s,
        "POST",
        &format!("/zones/{z}/agents"),
        &b.runtime,
        Some(json!({"lifecycle": "service", "heartbeat_interval_seconds": 5})),
    )
    .await;
    let svc_id = svc.body["id"].as_str().unwrap();
    assert_eq!(coord(&s, "POST", &format!("/zones/{z}/agents/{svc_id}/heartbeat"), &b.runtime, None).await.status, 200);

    // Revoking A's root session terminates A's agent session and revokes the edge it issued.
    let root = claims(&a.runtime)["sid"].as_str().unwrap().to_owned();
    s.admin_ok("POST", &format!("/v1/zones/{z}/authority-records/{root}/revoke"), &d.admin, None, 200).await;
    let sa_now = coord(&s, "GET", &format!("/zones/{z}/agents/{sa}"), &d.admin, None).await;
    assert_eq!(sa_now.body["status"], "terminated", "{}", sa_now.text);
    let e_now = coord(&s, "GET", &format!("/zones/{z}/delegations/{edge}"), &d.admin, None).await;
    assert_eq!(e_now.body["status"], "revoked");
    assert_eq!(delegated_mint(&s, &d, &b, &sb, &edge, "tools.read").await.status, 403);
    let start = Instant::now();
    while s.governed("GET", "/items/1", &held, &d.resource).await.status != 401 {
        assert!(start.elapsed() < Duration::from_secs(2), "B's mandate dies with A's root session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B's own agent session is untouched: only authority derived from A went away.
    assert_eq!(coord(&s, "GET", &format!("/zones/{z}/agents/{sb}"), &b.runtime, None).await.body["status"], "active");
    assert_eq!(coord(&s, "DELETE", &format!("/zones/{z}/agents/{sb}"), &b.runtime, None).await.status, 204);
}

#[tokio::test]
async fn the_coordinator_checks_who_is_asking() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let a = app(&s, &d, "demo").await;
    let z = &d.zone_id;
    let plain = s.session(&d).await;
    let no_scope = coord(&s, "POST", &format!("/zones/{z}/agents"), &plain, Some(json!({}))).await;
    assert_eq!((no_scope.status, no_scope.error()), (403, "missing_scope"), "{}", no_scope.text);
    let other = s.admin_ok("POST", "/v1/zones", &d.admin, Some(json!({"name": "other"})), 201).await;
    let wrong_zone = coord(&s, "POST", &format!("/zones/{}/agents", other["id"].as_str().unwrap()), &a.runtime, Some(json!({}))).await;
    assert_eq!(wrong_zone.status, 403, "a mandate of zone A is not a caller in zone B: {}", wrong_zone.text);
    assert_eq!(coord(&s, "POST", &format!("/zones/{z}/agents"), "garbage.token.here", Some(json!({}))).await.status, 401);
    let k1 = s
        .http
        .post(format!("{}/zones/{z}/agents", s.cp_url))
        .bearer_auth(&a.runtime)
        .header("idempotency-key", "k-1")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(k1.status(), 201);
    let id1 = k1.json::<Value>().await.unwrap()["id"].clone();
    let k2 = s
        .http
        .post(format!("{}/zones/{z}/agents", s.cp_url))
        .bearer_auth(&a.runtime)
        .header("idempotency-key", "k-1")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(k2.status(), 200, "a retried start returns the same session");
    assert_eq!(k2.json::<Value>().await.unwrap()["id"], id1);
}

#[tokio::test]
async fn mandates_are_never_accepted_for_another_use_or_zone() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let gateway = s.gateway_mandate(&d, &session, "tools.read").await;
    // A gateway mandate is not a session mandate.
    let as_subject = s.mint_gateway(&d, &gateway, "tools.read").await;
    assert_eq!((as_subject.status, as_subject.error()), (401, "wrong_token_use"), "{}", as_subject.text);
    // A mandate of another zone is not accepted here, even with a valid signature there.
    let other = s.admin_ok("POST", "/v1/zones", &d.admin, Some(json!({"name": "elsewhere"})), 201).await;
    let oz = other["id"].as_str().unwrap();
    let oapp = s.admin_ok("POST", &format!("/v1/zones/{oz}/applications"), &d.admin, Some(json!({"name": "x"})), 201).await;
    s.admin_ok("POST", &format!("/v1/zones/{oz}/policy-sets"), &d.admin, Some(json!({"name": "p"})), 201).await;
    let foreign = s
        .token(&[
            ("grant_type", GRANT),
            ("zone_id", &d.zone_id),
            ("application_id", oapp["id"].as_str().unwrap()),
            ("client_secret", oapp["client_secret"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(foreign.status, 401, "an application of another zone is unknown here");
    let cross = s
        .token(&[
            ("grant_type", GRANT),
            ("zone_id", oz),
            ("application_id", oapp["id"].as_str().unwrap()),
            ("client_secret", oapp["client_secret"].as_str().unwrap()),
            ("subject_token", &session),
            ("subject_token_type", ACCESS_TOKEN),
            ("resource", &d.resource),
            ("scope", "tools.read"),
        ])
        .await;
    assert_eq!((cross.status, cross.error()), (401, "invalid_token"), "a session of zone A minting in zone B: {}", cross.text);
}
