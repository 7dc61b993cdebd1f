//! The Coordinator and delegated mints: authority only narrows, travels only as far as allowed,
//! and disappears downstream when anything upstream is revoked, suspended or terminated.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::stack::{ACCESS_TOKEN, Answer, Demo, GATEWAY_MANDATE, GRANT};
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
    let beat = coord(&s, "POST", &format!("/zones/{z}/agents/{svc_id}/heartbeat"), &b.runtime, Some(json!({"lease_generation": 1}))).await;
    assert_eq!(beat.status, 200, "{}", beat.text);

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
    assert_eq!(k2.status(), 201, "a retried start returns the same session, as created");
    assert_eq!(k2.headers().get("idempotency-replayed").and_then(|v| v.to_str().ok()), Some("true"));
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
    assert_eq!((as_subject.status, as_subject.error()), (401, "invalid_token"), "the original's code: {}", as_subject.text);
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
    assert_eq!((foreign.status, foreign.error()), (403, "zone_invalid"), "its own secret, the wrong zone: {}", foreign.text);
    assert_eq!(s.control_plane_metric("caracal_sts_denials_total{reason=\"zone_invalid\"}").await, 1.0);
    let guessed = s
        .token(&[
            ("grant_type", GRANT),
            ("zone_id", &d.zone_id),
            ("application_id", oapp["id"].as_str().unwrap()),
            ("client_secret", "cs_not_the_secret"),
        ])
        .await;
    assert_eq!((guessed.status, guessed.error()), (401, "access_denied"), "no oracle without the secret");
    let malformed = s.token(&[("grant_type", "client_credentials"), ("zone_id", &d.zone_id)]).await;
    assert_eq!((malformed.status, malformed.error()), (400, "invalid_token"), "the original's code for a malformed exchange");
    let cross = s
        .token(&[
            ("grant_type", GRANT),
            ("zone_id", oz),
            ("application_id", oapp["id"].as_str().unwrap()),
            ("client_secret", oapp["client_secret"].as_str().unwrap()),
            ("subject_token", &session),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", GATEWAY_MANDATE),
            ("resource", &d.resource),
            ("scope", "tools.read"),
        ])
        .await;
    assert_eq!((cross.status, cross.error()), (401, "invalid_token"), "a session of zone A minting in zone B: {}", cross.text);
}

// ---- The published SDK's wire shapes (issue 11) ----

/// A runtime session mandate of `a` living `ttl` seconds.
async fn short_runtime(s: &Stack, d: &Demo, a: &App, ttl: &str) -> String {
    let r = s
        .token(&[
            ("grant_type", GRANT),
            ("zone_id", &d.zone_id),
            ("application_id", &a.id),
            ("client_secret", &a.secret),
            ("scope", "agent:lifecycle"),
            ("ttl_seconds", ttl),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["access_token"].as_str().unwrap().to_owned()
}

/// `POST {path}` with an `Idempotency-Key`.
async fn post_keyed(s: &Stack, path: &str, bearer: &str, key: &str, body: Value) -> Answer {
    let r = s.http.post(format!("{}{path}", s.cp_url)).bearer_auth(bearer).header("idempotency-key", key).json(&body).send().await.unwrap();
    Answer::read(r).await
}

/// Seconds from now until an RFC 3339 instant.
fn secs_until(at: &Value) -> i64 {
    let at = chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap()).unwrap();
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
}

async fn denials(s: &Stack, code: &str) -> f64 {
    s.control_plane_metric(&format!("caracal_coordinator_denials_total{{code=\"{code}\"}}")).await
}

#[tokio::test]
async fn the_sdk_start_body_is_served() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let z = &d.zone_id;
    let root = claims(&a.runtime)["sid"].as_str().unwrap().to_owned();
    let body = json!({
        "application_id": a.id, "ttl_seconds": 300, "metadata": {"task": "e2e"}, "labels": ["e2e"],
        "parent_authority": "inherit", "subject_session_id": root, "subject_token": a.runtime,
    });
    let r = coord(&s, "POST", &format!("/zones/{z}/agents"), &a.runtime, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sid = r.body["agent_session_id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["id"], sid.as_str(), "id stays for existing clients");
    assert_eq!(r.body["lease_generation"], 0, "a task session holds no lease");
    assert_eq!(r.body["delegation_edge_id"], Value::Null);
    assert_eq!((r.body["ttl_seconds"].as_i64(), r.body["depth"].as_i64()), (Some(300), Some(0)));
    assert_eq!(r.body["metadata"], json!({"task": "e2e"}));
    assert_eq!(r.body["subject_authority_record_id"], root.as_str());
    assert!(r.body.get("last_heartbeat_at").is_some() && r.body.get("started_at").is_some());
    let child = coord(
        &s,
        "POST",
        &format!("/zones/{z}/agents"),
        &a.runtime,
        Some(json!({"application_id": a.id, "parent_id": sid, "parent_authority": "none"})),
    )
    .await;
    assert_eq!((child.status, child.body["depth"].as_i64()), (201, Some(1)), "{}", child.text);
    let read = coord(&s, "GET", &format!("/zones/{z}/agents/{sid}"), &a.runtime, None).await;
    assert_eq!(read.body["metadata"]["task"], "e2e", "metadata is stored");

    let before = denials(&s, "application_ownership_required").await;
    let foreign = coord(&s, "POST", &format!("/zones/{z}/agents"), &a.runtime, Some(json!({"application_id": b.id}))).await;
    assert_eq!((foreign.status, foreign.error()), (403, "application_ownership_required"), "{}", foreign.text);
    assert_eq!(denials(&s, "application_ownership_required").await, before + 1.0);
    let b_root = claims(&b.runtime)["sid"].as_str().unwrap().to_owned();
    let other_subject = coord(&s, "POST", &format!("/zones/{z}/agents"), &a.runtime, Some(json!({"subject_session_id": b_root}))).await;
    assert_eq!((other_subject.status, other_subject.error()), (404, "session_not_found"), "another application's record");
    let unknown = coord(&s, "POST", &format!("/zones/{z}/agents"), &a.runtime, Some(json!({"surprise": true}))).await;
    assert_eq!((unknown.status, unknown.error()), (400, "invalid_body"), "truly unknown fields stay refused");
    let widen = coord(&s, "POST", &format!("/zones/{z}/agents"), &a.runtime, Some(json!({"parent_authority": "all"}))).await;
    assert_eq!(widen.status, 400);
}

#[tokio::test]
async fn agent_sessions_outlive_the_mandate_that_started_them() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let z = &d.zone_id;
    let (short_a, short_b) = (short_runtime(&s, &d, &a, "4").await, short_runtime(&s, &d, &b, "4").await);
    let task = coord(&s, "POST", &format!("/zones/{z}/agents"), &short_a, Some(json!({"ttl_seconds": 600}))).await;
    assert_eq!(task.status, 201, "{}", task.text);
    assert!(secs_until(&task.body["expires_at"]) > 590, "the task session keeps its own ttl: {}", task.text);
    let sa = task.body["agent_session_id"].as_str().unwrap().to_owned();
    let sb = coord(&s, "POST", &format!("/zones/{z}/agents"), &short_b, Some(json!({}))).await;
    assert!(secs_until(&sb.body["expires_at"]) > 3500, "default task lifetime is 3600 s: {}", sb.text);
    let sb = sb.body["agent_session_id"].as_str().unwrap().to_owned();
    let svc = coord(&s, "POST", &format!("/zones/{z}/agents"), &short_b, Some(json!({"lifecycle": "service"}))).await;
    assert_eq!((svc.status, svc.body["lease_generation"].as_i64()), (201, Some(1)), "{}", svc.text);
    assert!(secs_until(&svc.body["expires_at"]) > 6 * 86_400, "a service session lives by its lease, under the 7-day cap");
    let svc = svc.body["agent_session_id"].as_str().unwrap().to_owned();
    let edge = delegate(
        &s,
        &d,
        &App { id: a.id.clone(), secret: a.secret.clone(), runtime: short_a.clone() },
        json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"], "ttl_seconds": 600}),
    )
    .await;
    assert_eq!(edge.status, 201, "{}", edge.text);
    assert!(secs_until(&edge.body["expires_at"]) > 590, "nor does the edge take the mandate's expiry");
    let edge = edge.body["delegation_edge_id"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_millis(4500)).await;
    let expired = coord(&s, "GET", &format!("/zones/{z}/agents/{sa}"), &short_a, None).await;
    assert_eq!(expired.status, 401, "the starting mandate itself is gone");
    let minted = delegated_mint(&s, &d, &b, &sb, &edge, "tools.read").await;
    assert_eq!(minted.status, 200, "the sessions and the edge outlive it: {}", minted.text);
    let up = s.governed("GET", "/items/1", minted.body["access_token"].as_str().unwrap(), &d.resource).await;
    assert_eq!(up.status, 200, "{}", up.text);
    let beat = coord(&s, "POST", &format!("/zones/{z}/agents/{svc}/heartbeat"), &b.runtime, Some(json!({"lease_generation": 1}))).await;
    assert_eq!(beat.status, 200, "the service session heartbeats past its starting mandate: {}", beat.text);

    // Revoking the root sessions (the starting mandates' records) still ends everything under them.
    for short in [&short_a, &short_b] {
        let root = claims(short)["sid"].as_str().unwrap().to_owned();
        s.admin_ok("POST", &format!("/v1/zones/{z}/authority-records/{root}/revoke"), &d.admin, None, 200).await;
    }
    for id in [&sa, &sb, &svc] {
        let now = coord(&s, "GET", &format!("/zones/{z}/agents/{id}"), &d.admin, None).await;
        assert_eq!(now.body["status"], "terminated", "{}", now.text);
    }
    let after = delegated_mint(&s, &d, &b, &sb, &edge, "tools.read").await;
    assert_eq!(after.status, 403, "{}", after.text);
}

#[tokio::test]
async fn service_leases_are_fenced_by_generation() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let a = app(&s, &d, "demo").await;
    let z = &d.zone_id;
    let svc =
        coord(&s, "POST", &format!("/zones/{z}/agents"), &a.runtime, Some(json!({"application_id": a.id, "lifecycle": "service"}))).await;
    assert_eq!((svc.status, svc.body["lease_generation"].as_i64()), (201, Some(1)), "{}", svc.text);
    let id = svc.body["agent_session_id"].as_str().unwrap().to_owned();
    let path = format!("/zones/{z}/agents/{id}");
    let hb_path = format!("{path}/heartbeat");
    let beat = |g: i64| coord(&s, "POST", &hb_path, &a.runtime, Some(json!({"status": "healthy", "lease_generation": g})));

    let b1 = beat(1).await;
    assert_eq!(b1.status, 200, "{}", b1.text);
    assert_eq!((b1.body["agent"]["lease_generation"].as_i64(), b1.body["service"].clone()), (Some(1), Value::Null));
    assert_eq!(b1.body["agent"]["agent_session_id"], id.as_str());
    assert!(b1.body["agent"]["heartbeat_deadline_at"].is_string() && b1.body["agent"]["last_heartbeat_at"].is_string());
    assert_eq!(beat(1).await.body["agent"]["lease_generation"], 1, "a heartbeat never bumps the generation");
    let no_gen = coord(&s, "POST", &format!("{path}/heartbeat"), &a.runtime, Some(json!({"status": "healthy"}))).await;
    assert_eq!((no_gen.status, no_gen.error()), (400, "lease_generation_required"));

    // Another process takes the lease over: the previous holder is fenced.
    let taken = coord(&s, "POST", &format!("{path}/lease"), &a.runtime, None).await;
    assert_eq!((taken.status, taken.body["lease_generation"].as_i64()), (200, Some(2)), "{}", taken.text);
    assert_eq!(taken.body["status"], "active");
    assert!(taken.body["heartbeat_deadline_at"].is_string());
    let before = denials(&s, "session_lease_fenced").await;
    let stale = beat(1).await;
    assert_eq!((stale.status, stale.error()), (409, "session_lease_fenced"), "{}", stale.text);
    let stale_end = coord(&s, "DELETE", &path, &a.runtime, Some(json!({"lease_generation": 1}))).await;
    assert_eq!((stale_end.status, stale_end.error()), (409, "session_lease_fenced"), "the old holder cannot end it");
    assert_eq!(denials(&s, "session_lease_fenced").await, before + 2.0);
    let bare_end = coord(&s, "DELETE", &path, &a.runtime, None).await;
    assert_eq!((bare_end.status, bare_end.error()), (400, "lease_generation_required"));
    assert_eq!(beat(2).await.status, 200, "the new holder keeps it alive");
    assert_eq!(coord(&s, "DELETE", &path, &a.runtime, Some(json!({"lease_generation": 2}))).await.status, 204);

    // Gone: the SDK stops beating on these codes.
    let gone = beat(2).await;
    assert_eq!((gone.status, gone.error()), (409, "session_not_found_or_not_active"), "{}", gone.text);
    let relapse = coord(&s, "POST", &format!("{path}/lease"), &a.runtime, None).await;
    assert_eq!((relapse.status, relapse.error()), (409, "session_not_found_or_not_active"));
    assert_eq!(coord(&s, "DELETE", &path, &a.runtime, None).await.status, 204, "ending an ended session is idempotent");
    let unknown = coord(&s, "POST", &format!("/zones/{z}/agents/nope/heartbeat"), &a.runtime, Some(json!({"lease_generation": 1}))).await;
    assert_eq!(unknown.status, 404);

    // A lease that lapsed cannot be taken over.
    let quick = coord(
        &s,
        "POST",
        &format!("/zones/{z}/agents"),
        &a.runtime,
        Some(json!({"lifecycle": "service", "heartbeat_interval_seconds": 1})),
    )
    .await;
    let qid = quick.body["agent_session_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let late = coord(&s, "POST", &format!("/zones/{z}/agents/{qid}/lease"), &a.runtime, None).await;
    assert_eq!((late.status, late.error()), (409, "session_lease_expired"), "{}", late.text);
    let late_beat =
        coord(&s, "POST", &format!("/zones/{z}/agents/{qid}/heartbeat"), &a.runtime, Some(json!({"lease_generation": 1}))).await;
    assert_eq!((late_beat.status, late_beat.error()), (409, "session_not_found_or_not_active"));
}

#[tokio::test]
async fn the_sdk_delegation_body_is_served() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let z = &d.zone_id;
    let (sa, sb) = (start_session(&s, &d, &a).await, start_session(&s, &d, &b).await);
    let resources = s.admin_ok("GET", &format!("/v1/zones/{z}/resources"), &d.admin, None, 200).await;
    let row_id = resources["items"][0]["id"].as_str().unwrap().to_owned();
    let body = |receiver: &str| {
        json!({
            "issuer_application_id": a.id, "source_session_id": sa, "target_session_id": sb, "receiver_application_id": receiver,
            "scopes": ["tools.read"], "resource_id": row_id, "ttl_seconds": 600,
            "constraints": {"max_hops": 2, "max_depth": 2, "ttl_seconds": 120, "policy_approved": true, "broad_reason": "e2e", "budget": 5},
        })
    };
    let before = denials(&s, "delegation_application_mismatch").await;
    let mismatch = delegate(&s, &d, &a, body(&a.id)).await;
    assert_eq!((mismatch.status, mismatch.error()), (409, "delegation_application_mismatch"), "{}", mismatch.text);
    assert_eq!(denials(&s, "delegation_application_mismatch").await, before + 1.0);
    let mut not_issuer = body(&b.id);
    not_issuer["issuer_application_id"] = json!(b.id);
    let not_issuer = delegate(&s, &d, &a, not_issuer).await;
    assert_eq!((not_issuer.status, not_issuer.error()), (403, "issuer_ownership_required"));
    let mut unknown = body(&b.id);
    unknown["constraints"]["surprise"] = json!(1);
    assert_eq!(delegate(&s, &d, &a, unknown).await.error(), "invalid_delegation");

    let edge = delegate(&s, &d, &a, body(&b.id)).await;
    assert_eq!(edge.status, 201, "{}", edge.text);
    let id = edge.body["delegation_edge_id"].as_str().unwrap().to_owned();
    assert_eq!(edge.body["id"], id.as_str());
    assert_eq!(edge.body["resources"], json!([d.resource]), "resource_id (a row id) names the resource by identifier");
    assert_eq!(edge.body["max_hops"], 2);
    let left = secs_until(&edge.body["expires_at"]);
    assert!((100..=120).contains(&left), "the narrower ttl wins: {left}");
    assert_eq!(edge.body["constraints"]["budget"], 5);

    let one = coord(&s, "GET", &format!("/zones/{z}/delegations/inbound/{sb}/{id}"), &b.runtime, None).await;
    assert_eq!(
        (one.status, one.body["id"].as_str(), one.body["status"].as_str()),
        (200, Some(id.as_str()), Some("active")),
        "{}",
        one.text
    );
    let not_mine = coord(&s, "GET", &format!("/zones/{z}/delegations/inbound/{sb}/{id}"), &a.runtime, None).await;
    assert_eq!(not_mine.status, 403, "only the receiving session's application looks it up");
    let wrong_target = coord(&s, "GET", &format!("/zones/{z}/delegations/inbound/{sa}/{id}"), &a.runtime, None).await;
    assert_eq!((wrong_target.status, wrong_target.error()), (404, "delegation_not_found"));
    assert_eq!(coord(&s, "PATCH", &format!("/zones/{z}/delegations/{id}/revoke"), &a.runtime, None).await.status, 200);
    let revoked = coord(&s, "GET", &format!("/zones/{z}/delegations/inbound/{sb}/{id}"), &b.runtime, None).await;
    assert_eq!((revoked.status, revoked.body["status"].as_str()), (200, Some("revoked")));
}

#[tokio::test]
async fn child_sessions_inherit_their_parents_edge() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let z = &d.zone_id;
    let (sa, sb) = (start_session(&s, &d, &a).await, start_session(&s, &d, &b).await);
    let edge =
        delegate(&s, &d, &a, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"], "ttl_seconds": 600})).await;
    let edge = edge.body["delegation_edge_id"].as_str().unwrap().to_owned();
    let child =
        coord(&s, "POST", &format!("/zones/{z}/agents"), &b.runtime, Some(json!({"parent_id": sb, "parent_authority": "inherit"}))).await;
    assert_eq!(child.status, 201, "{}", child.text);
    let (cid, inherited) = (child.body["agent_session_id"].as_str().unwrap(), child.body["delegation_edge_id"].as_str().unwrap());
    assert_ne!(inherited, edge, "a mirror of the parent's edge, onto parent → child");
    let mirrored = coord(&s, "GET", &format!("/zones/{z}/delegations/{inherited}"), &b.runtime, None).await;
    assert_eq!(
        (mirrored.body["source_session_id"].as_str(), mirrored.body["parent_edge_id"].as_str(), mirrored.body["inherited"].as_bool()),
        (Some(sb.as_str()), Some(edge.as_str()), Some(true))
    );
    // The mirror does not spend the edge's single hop: the child mints and calls.
    let minted = delegated_mint(&s, &d, &b, cid, inherited, "tools.read").await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    let c = claims(minted.body["access_token"].as_str().unwrap());
    assert_eq!(c["delegation_path"], json!([edge, inherited]));
    assert_eq!(s.governed("GET", "/items/1", minted.body["access_token"].as_str().unwrap(), &d.resource).await.status, 200);
    assert_eq!(delegated_mint(&s, &d, &b, cid, inherited, "tools.write").await.status, 403, "no more than the parent's edge");
    // A grandchild inherits the mirror in turn.
    let grand = coord(&s, "POST", &format!("/zones/{z}/agents"), &b.runtime, Some(json!({"parent_id": cid}))).await;
    let (gid, gedge) = (grand.body["agent_session_id"].as_str().unwrap(), grand.body["delegation_edge_id"].as_str().unwrap());
    assert_eq!(delegated_mint(&s, &d, &b, gid, gedge, "tools.read").await.status, 200);
    // `none`: lifecycle authority only.
    let bare =
        coord(&s, "POST", &format!("/zones/{z}/agents"), &b.runtime, Some(json!({"parent_id": sb, "parent_authority": "none"}))).await;
    assert_eq!((bare.status, bare.body["delegation_edge_id"].clone()), (201, Value::Null));
    // Revoking the parent's edge takes the mirrors with it.
    let r = coord(&s, "PATCH", &format!("/zones/{z}/delegations/{edge}/revoke"), &a.runtime, None).await;
    assert_eq!(r.body["revoked"].as_array().unwrap().len(), 3, "{}", r.text);
    assert_eq!(delegated_mint(&s, &d, &b, cid, inherited, "tools.read").await.status, 403);
    assert_eq!(delegated_mint(&s, &d, &b, gid, gedge, "tools.read").await.status, 403);
}

#[tokio::test]
async fn creates_are_idempotent_on_key_and_request() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let z = &d.zone_id;
    let agents = format!("/zones/{z}/agents");
    let key = format!("order-42-{}", "x".repeat(246));
    assert_eq!(key.len(), 255);
    let first = post_keyed(&s, &agents, &a.runtime, &key, json!({"application_id": a.id, "ttl_seconds": 120})).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert!(first.headers.get("idempotency-replayed").is_none());
    let again = post_keyed(&s, &agents, &a.runtime, &key, json!({"ttl_seconds": 120, "application_id": a.id})).await;
    assert_eq!((again.status, again.body["agent_session_id"].clone()), (201, first.body["agent_session_id"].clone()));
    assert_eq!(again.headers.get("idempotency-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    let before = denials(&s, "idempotency_key_conflict").await;
    let changed = post_keyed(&s, &agents, &a.runtime, &key, json!({"application_id": a.id, "ttl_seconds": 999})).await;
    assert_eq!((changed.status, changed.error()), (409, "idempotency_key_conflict"), "{}", changed.text);
    assert_eq!(denials(&s, "idempotency_key_conflict").await, before + 1.0);
    let too_long = post_keyed(&s, &agents, &a.runtime, &format!("{key}x"), json!({})).await;
    assert_eq!((too_long.status, too_long.error()), (400, "idempotency_key_invalid"));
    let other_app = post_keyed(&s, &agents, &b.runtime, &key, json!({"ttl_seconds": 120})).await;
    assert_eq!(other_app.status, 201, "keys are scoped by application");
    assert!(other_app.headers.get("idempotency-replayed").is_none());

    // Concurrent requests with one key: one session, no 500.
    let racing = futures_join(&s, &agents, &a.runtime, "race-1", json!({"ttl_seconds": 60})).await;
    assert!(racing.iter().all(|r| r.status == 201), "{:?}", racing.iter().map(|r| &r.text).collect::<Vec<_>>());
    let ids: std::collections::BTreeSet<_> = racing.iter().map(|r| r.body["agent_session_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1);

    // Delegations too: a retried delegate() gets the same edge.
    let sa = first.body["agent_session_id"].as_str().unwrap().to_owned();
    let sb = start_session(&s, &d, &b).await;
    let dl = format!("/zones/{z}/delegations");
    let edge = json!({"issuer_application_id": a.id, "source_session_id": sa, "target_session_id": sb, "receiver_application_id": b.id,
                      "scopes": ["tools.read"], "ttl_seconds": 60});
    let e1 = post_keyed(&s, &dl, &a.runtime, "deleg-1", edge.clone()).await;
    assert_eq!(e1.status, 201, "{}", e1.text);
    let e2 = post_keyed(&s, &dl, &a.runtime, "deleg-1", edge.clone()).await;
    assert_eq!((e2.status, e2.body["delegation_edge_id"].clone()), (201, e1.body["delegation_edge_id"].clone()));
    assert_eq!(e2.headers.get("idempotency-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    let mut wider = edge.clone();
    wider["scopes"] = json!(["tools.read", "tools.write"]);
    assert_eq!(post_keyed(&s, &dl, &a.runtime, "deleg-1", wider).await.error(), "idempotency_key_conflict");
    let inbound = coord(&s, "GET", &format!("/zones/{z}/delegations/inbound/{sb}"), &b.runtime, None).await;
    assert_eq!(inbound.body["items"].as_array().unwrap().len(), 1, "one edge, not two");

    // A replay of something no longer live is refused, not resurrected.
    assert_eq!(coord(&s, "DELETE", &format!("{agents}/{sa}"), &a.runtime, None).await.status, 204);
    let dead = post_keyed(&s, &agents, &a.runtime, &key, json!({"application_id": a.id, "ttl_seconds": 120})).await;
    assert_eq!((dead.status, dead.error()), (409, "idempotency_result_inactive"));
    let dead_edge = post_keyed(&s, &dl, &a.runtime, "deleg-1", edge).await;
    assert_eq!((dead_edge.status, dead_edge.error()), (409, "idempotency_result_inactive"));
}

/// Five concurrent `POST`s with one key.
async fn futures_join(s: &Stack, path: &str, bearer: &str, key: &str, body: Value) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let req = s.http.post(format!("{}{path}", s.cp_url)).bearer_auth(bearer).header("idempotency-key", key).json(&body);
        tasks.push(tokio::spawn(async move { Answer::read(req.send().await.unwrap()).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn lifecycle_mints_and_session_bound_mints() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let sr = &s;
    let mint = |app: &App, extra: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", GRANT.into()),
            ("zone_id", d.zone_id.clone()),
            ("application_id", app.id.clone()),
            ("client_secret", app.secret.clone()),
            ("resource", d.resource.clone()),
        ];
        form.extend(extra);
        async move {
            let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sr.token(&f).await
        }
    };
    // The SDK's bootstrap mint: agent:lifecycle on a resource that never declared it.
    let boot = mint(&a, vec![("scope", "agent:lifecycle".into())]).await;
    assert_eq!(boot.status, 200, "agent:lifecycle is implied by a resource with an upstream: {}", boot.text);
    let c = claims(boot.body["access_token"].as_str().unwrap());
    assert_eq!((c["use"].as_str(), c["target"].clone()), (Some("session"), json!([d.resource])));
    let undeclared = mint(&a, vec![("scope", "tools.admin".into())]).await;
    assert_eq!(undeclared.status, 403, "other undeclared scopes stay refused");

    // A session without a delegation: lifecycle authority only.
    let sa = start_session(&s, &d, &a).await;
    let bound = mint(&a, vec![("scope", "agent:lifecycle".into()), ("agent_session_id", sa.clone())]).await;
    assert_eq!(bound.status, 200, "{}", bound.text);
    let c = claims(bound.body["access_token"].as_str().unwrap());
    assert_eq!((c["use"].as_str(), c["agent_session_id"].as_str()), (Some("session"), Some(sa.as_str())));
    let resource_scope = mint(&a, vec![("scope", "tools.read".into()), ("agent_session_id", sa.clone())]).await;
    assert_eq!((resource_scope.status, resource_scope.error()), (403, "access_denied"), "{}", resource_scope.text);
    let not_mine = mint(&b, vec![("scope", "agent:lifecycle".into()), ("agent_session_id", sa.clone())]).await;
    assert_eq!((not_mine.status, not_mine.error()), (403, "access_denied"));
    assert_eq!(coord(&s, "DELETE", &format!("/zones/{}/agents/{sa}", d.zone_id), &a.runtime, None).await.status, 204);
    let ended = mint(&a, vec![("scope", "agent:lifecycle".into()), ("agent_session_id", sa.clone())]).await;
    assert_eq!((ended.status, ended.error()), (403, "access_denied"));
}
