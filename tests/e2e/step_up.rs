//! Step-up: a policy that allows only after a human approval holds the mint (401
//! `interaction_required`) until an operator approves exactly that request; the approval is used
//! once; rejected, expired, foreign and stale approvals are refused and throttle the client.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::stack::{ACCESS_TOKEN, ALLOW_POLICY, Answer, Demo, GATEWAY_MANDATE, GRANT};
use serde_json::{Value, json};

const STEP_UP_POLICY: &str = include_str!("../../docs/policies/writes-need-approval.rego");

async fn mint(s: &Stack, d: &Demo, session: &str, scope: &str, approval_id: Option<&str>) -> Answer {
    let extra: Vec<(&str, &str)> = approval_id.map(|id| ("approval_id", id)).into_iter().collect();
    s.mint_gateway_with(d, session, &d.resource, scope, &extra).await
}

/// Asserts a 401 `interaction_required` with the hold in the body; returns `(approval_id, binding)`.
fn held(a: &Answer) -> (String, String) {
    assert_eq!((a.status, a.error()), (401, "interaction_required"), "{}", a.text);
    assert_eq!(a.headers["www-authenticate"], "Bearer error=\"interaction_required\"");
    assert_eq!(a.body["approval_type"], "human_approval");
    assert_eq!(a.body["tier"], "writes");
    assert!(a.body["approval_expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", a.text);
    assert!(a.body["requestId"].is_string());
    let binding = a.body["binding"].as_str().unwrap().to_owned();
    assert_eq!(binding.len(), 64);
    (a.body["approval_id"].as_str().unwrap().to_owned(), binding)
}

async fn decide(s: &Stack, d: &Demo, id: &str, decision: &str, binding: &str) -> Answer {
    s.admin(
        "POST",
        &format!("/v1/zones/{}/approvals/{id}/decision", d.zone_id),
        &d.admin,
        Some(json!({"decision": decision, "binding": binding, "reason": "checked by e2e"})),
    )
    .await
}

async fn status(s: &Stack, id: &str, wait: Option<u64>) -> Value {
    let q = wait.map(|w| format!("?wait={w}")).unwrap_or_default();
    let r = s.http.get(format!("{}/approvals/{id}{q}", s.cp_url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token).unwrap().claims
}

async fn sts_denials(s: &Stack, reason: &str) -> f64 {
    s.control_plane_metric(&format!("caracal_sts_denials_total{{reason=\"{reason}\"}}")).await
}

#[tokio::test]
async fn a_write_is_held_until_an_operator_approves_it_and_the_approval_is_used_once() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, STEP_UP_POLICY).await;
    let session = s.session(&d).await;

    // Reads are not held.
    let read = mint(&s, &d, &session, "tools.read", None).await;
    assert_eq!(read.status, 200, "{}", read.text);

    // A write is held; asking again returns the same hold, not a second one.
    let (id, binding) = held(&mint(&s, &d, &session, "tools.write", None).await);
    assert_eq!(held(&mint(&s, &d, &session, "tools.write", None).await).0, id);
    assert_eq!(status(&s, &id, None).await["state"], "pending");
    // Retrying before a decision is still held (and is not a failure).
    assert_eq!(held(&mint(&s, &d, &session, "tools.write", Some(&id)).await).0, id);
    assert!(sts_denials(&s, "interaction_required").await >= 3.0);

    // An operator sees what was asked.
    let pending = s.admin_ok("GET", &format!("/v1/zones/{}/approvals?state=pending", d.zone_id), &d.admin, None, 200).await;
    let items = pending["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["scopes"], json!(["tools.write"]));
    assert_eq!(items[0]["resources"], json!([d.resource]));
    assert_eq!(items[0]["application_id"], d.app_id.as_str());
    assert_eq!(items[0]["approver"], "operator");

    // A client long-polls the status; the decision wakes it at once.
    let waiter = {
        let (http, url) = (s.http.clone(), format!("{}/approvals/{id}?wait=20", s.cp_url));
        tokio::spawn(async move {
            let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            (v, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The operator must repeat the binding of the request they judged.
    let wrong = decide(&s, &d, &id, "approved", &"0".repeat(64)).await;
    assert_eq!((wrong.status, wrong.error()), (409, "binding_mismatch"), "{}", wrong.text);
    let bad = decide(&s, &d, &id, "maybe", &binding).await;
    assert_eq!((bad.status, bad.error()), (400, "invalid_body"), "{}", bad.text);
    let decided_at = Instant::now();
    let ok = decide(&s, &d, &id, "approved", &binding).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["state"], "approved");
    assert!(ok.body["decided_by"].as_str().unwrap().starts_with("admin:"));
    let (woken, at) = waiter.await.unwrap();
    assert_eq!(woken["state"], "approved");
    assert!(at.duration_since(decided_at) < Duration::from_secs(3), "the long poll is woken by the decision, not by its timeout");
    let again = decide(&s, &d, &id, "rejected", &binding).await;
    assert_eq!((again.status, again.error()), (409, "approval_not_pending"), "{}", again.text);

    // The retry with the approval mints; the mandate names the approval.
    let minted = mint(&s, &d, &session, "tools.write", Some(&id)).await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    let mandate = minted.body["access_token"].as_str().unwrap();
    assert_eq!(claims(mandate)["approval_id"], id.as_str());
    // The gateway's per-request exchange honours it and the resource mandate carries it on.
    let call = s.governed("POST", "/items", mandate, &d.resource).await;
    assert_eq!(call.status, 200, "{}", call.text);
    let seen = s.upstream.requests().pop().unwrap();
    let forwarded = seen.header("authorization").unwrap().strip_prefix("Bearer ").unwrap().to_owned();
    assert_eq!(claims(&forwarded)["approval_id"], id.as_str());

    // Used once: a second retry is refused, and the hold reads as consumed.
    let reuse = mint(&s, &d, &session, "tools.write", Some(&id)).await;
    assert_eq!((reuse.status, reuse.error()), (409, "approval_consumed"), "{}", reuse.text);
    assert_eq!(sts_denials(&s, "approval_consumed").await, 1.0);
    assert_eq!(status(&s, &id, Some(1)).await["state"], "consumed");
    // A new write asks anew.
    assert_ne!(held(&mint(&s, &d, &session, "tools.write", None).await).0, id);
}

#[tokio::test]
async fn rejected_expired_foreign_and_stale_approvals_are_refused_and_throttle_the_client() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, STEP_UP_POLICY).await;
    let session = s.session(&d).await;

    // 1: rejected.
    let (rejected, binding) = held(&mint(&s, &d, &session, "tools.write", None).await);
    assert_eq!(decide(&s, &d, &rejected, "rejected", &binding).await.status, 200);
    let r = mint(&s, &d, &session, "tools.write", Some(&rejected)).await;
    assert_eq!(
        (r.status, r.error(), r.body["error_description"].as_str()),
        (403, "access_denied", Some("approval rejected")),
        "{}",
        r.text
    );

    // 2: expired before it was used.
    let (expiring, binding) = held(&mint(&s, &d, &session, "tools.write tools.read", None).await);
    assert_eq!(decide(&s, &d, &expiring, "approved", &binding).await.status, 200);
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    sqlx::query("UPDATE step_up_approvals SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(&expiring)
        .execute(&db)
        .await
        .unwrap();
    let r = mint(&s, &d, &session, "tools.write tools.read", Some(&expiring)).await;
    assert_eq!((r.status, r.body["error_description"].as_str()), (401, Some("approval expired")), "{}", r.text);
    assert_eq!(status(&s, &expiring, None).await["state"], "expired");

    // 3: an approval for another request (different scopes), and 4, 5: ids that name no hold.
    let (other, binding) = held(&mint(&s, &d, &session, "tools.write", None).await);
    assert_eq!(decide(&s, &d, &other, "approved", &binding).await.status, 200);
    let r = mint(&s, &d, &session, "tools.write tools.read", Some(&other)).await;
    assert_eq!((r.status, r.body["error_description"].as_str()), (401, Some("approval invalid")), "{}", r.text);
    for _ in 0..2 {
        let r = mint(&s, &d, &session, "tools.write", Some(&uuid::Uuid::new_v4().to_string())).await;
        assert_eq!((r.status, r.body["error_description"].as_str()), (401, Some("approval invalid")), "{}", r.text);
    }
    assert_eq!(sts_denials(&s, "approval_invalid").await, 3.0);

    // Five failures within two minutes: the client's step-up cools off for five minutes, even
    // with a good approval in hand; mints that need no approval still work.
    let r = mint(&s, &d, &session, "tools.write", Some(&other)).await;
    assert_eq!((r.status, r.error()), (429, "provider_rate_limited"), "{}", r.text);
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((290..=300).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(sts_denials(&s, "step_up_throttled").await, 1.0);
    assert_eq!(mint(&s, &d, &session, "tools.read", None).await.status, 200);
    // The throttle lives in Redis: another STS instance enforces it too.
    let (_cp2, url2) = s.second_control_plane(&[]).await;
    let r = s
        .token_at(
            &url2,
            &[
                ("grant_type", GRANT),
                ("zone_id", &d.zone_id),
                ("application_id", &d.app_id),
                ("client_secret", &d.secret),
                ("subject_token", &session),
                ("subject_token_type", ACCESS_TOKEN),
                ("requested_token_type", GATEWAY_MANDATE),
                ("resource", &d.resource),
                ("scope", "tools.write"),
            ],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
}

#[tokio::test]
async fn approvals_do_not_outlive_the_policy_and_the_gateway_never_waives_a_step_up() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, ALLOW_POLICY).await;
    let session = s.session(&d).await;
    // A write mandate minted before step-up was required...
    let early = mint(&s, &d, &session, "tools.write", None).await;
    assert_eq!(early.status, 200, "{}", early.text);
    let early = early.body["access_token"].as_str().unwrap().to_owned();

    s.activate_policy(&d, STEP_UP_POLICY).await;
    // ...is refused at the gateway once the policy demands an approval: the gateway cannot hold a
    // request for a human, so the exchange denies instead of waiving the step-up.
    let call = s.governed("POST", "/items", &early, &d.resource).await;
    assert_eq!((call.status, call.error()), (403, "access_denied"), "{}", call.text);
    assert!(call.body["error_description"].as_str().unwrap().contains("step-up"), "{}", call.text);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_refused_total").await, 1.0);
    assert!(s.upstream.requests().is_empty(), "nothing reached the upstream");

    // An approval given under one policy version does not authorize a mint under the next.
    let (id, binding) = held(&mint(&s, &d, &session, "tools.write", None).await);
    assert_eq!(decide(&s, &d, &id, "approved", &binding).await.status, 200);
    s.activate_policy(&d, STEP_UP_POLICY).await;
    let r = mint(&s, &d, &session, "tools.write", Some(&id)).await;
    assert_eq!((r.status, r.body["error_description"].as_str()), (401, Some("approval invalid")), "{}", r.text);

    // The status endpoint takes only hold ids, and bad waits are refused.
    let r = s.http.get(format!("{}/approvals/not-a-uuid", s.cp_url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s.http.get(format!("{}/approvals/{id}?wait=-1", s.cp_url)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Another zone's admin cannot see or decide the hold.
    let other = s.admin_ok("POST", "/v1/zones", &d.admin, Some(json!({"name": "other"})), 201).await;
    let token = s.zone_token(&d.admin, other["id"].as_str().unwrap()).await;
    let r = s.admin("GET", &format!("/v1/zones/{}/approvals/{id}", d.zone_id), &token, None).await;
    assert_eq!(r.status, 403, "{}", r.text);
}

/// The original's `approve` / `reject` (the published admin client's `approvals.approve/reject`):
/// no binding needed, one given must match; a rejected hold refuses the retry.
#[tokio::test]
async fn the_originals_approve_and_reject_routes_decide_holds() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, STEP_UP_POLICY).await;
    let session = s.session(&d).await;
    let base = format!("/v1/zones/{}/approvals", d.zone_id);
    let (id, binding) = held(&mint(&s, &d, &session, "tools.write", None).await);
    let wrong = s.admin("POST", &format!("{base}/{id}/approve"), &d.admin, Some(json!({"binding": "0".repeat(64)}))).await;
    assert_eq!((wrong.status, wrong.error()), (409, "binding_mismatch"), "{}", wrong.text);
    let ok = s.admin("POST", &format!("{base}/{id}/approve"), &d.admin, Some(json!({}))).await;
    assert_eq!((ok.status, ok.body["state"].as_str()), (200, Some("approved")), "{}", ok.text);
    assert_eq!(mint(&s, &d, &session, "tools.write", Some(&id)).await.status, 200);
    let again = s.admin("POST", &format!("{base}/{id}/reject"), &d.admin, None).await;
    assert_eq!((again.status, again.error()), (409, "approval_not_pending"), "{}", again.text);

    let session = s.session(&d).await;
    let (id, _) = held(&mint(&s, &d, &session, "tools.write", None).await);
    let no = s.admin("POST", &format!("{base}/{id}/reject"), &d.admin, Some(json!({"reason": "not today", "binding": binding}))).await;
    assert_eq!((no.status, no.error()), (409, "binding_mismatch"), "another hold's binding: {}", no.text);
    let no = s.admin("POST", &format!("{base}/{id}/reject"), &d.admin, Some(json!({"reason": "not today"}))).await;
    assert_eq!((no.status, no.body["state"].as_str()), (200, Some("rejected")), "{}", no.text);
    let refused = mint(&s, &d, &session, "tools.write", Some(&id)).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
}

/// A stored version is simulated against an input without being activated; the activation status
/// tells which version is active and loaded.
#[tokio::test]
async fn a_policy_version_is_simulated_without_activation() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let z = &d.zone_id;
    let set = &d.policy_set_id;
    let v = s
        .admin_ok("POST", &format!("/v1/zones/{z}/policy-sets/{set}/versions"), &d.admin, Some(json!({"rego": STEP_UP_POLICY})), 201)
        .await;
    let version = v["version_id"].as_str().unwrap();
    let input = |scope: &str| {
        json!({"principal": {"type": "Application", "id": d.app_id, "zone_id": z, "traits": []},
               "resource": {"identifier": d.resource, "scopes": ["tools.read", "tools.write"]}, "action": {"id": "TokenExchange", "use": "gateway"},
               "context": {"requested_scopes": [scope]}})
    };
    let sim_path = format!("/v1/zones/{z}/policy-sets/{set}/simulate");
    let sim = |body: Value| s.admin_ok("POST", &sim_path, &d.admin, Some(body), 200);
    let read = sim(json!({"version_id": version, "input": input("tools.read")})).await;
    assert_eq!(read["result"]["decision"], "allow", "{read}");
    let write = sim(json!({"version_id": version, "input": input("tools.write")})).await;
    assert!(write["result"]["diagnostics"].to_string().contains("step_up_required"), "{write}");
    let status =
        s.admin_ok("GET", &format!("/v1/zones/{z}/policy-sets/{set}/activation-status?version_id={version}"), &d.admin, None, 200).await;
    assert_eq!(
        (status["active"].as_bool(), status["version_active"].as_bool()),
        (Some(false), Some(false)),
        "simulating activates nothing: {status}"
    );
    let session = s.token(&[("grant_type", GRANT), ("zone_id", z), ("application_id", &d.app_id), ("client_secret", &d.secret)]).await;
    assert_eq!(session.status, 403, "the zone still has no active policy: {}", session.text);
    s.admin_ok("POST", &format!("/v1/zones/{z}/policy-sets/{set}/activate"), &d.admin, Some(json!({"version_id": version})), 202).await;
    let status =
        s.admin_ok("GET", &format!("/v1/zones/{z}/policy-sets/{set}/activation-status?version_id={version}"), &d.admin, None, 200).await;
    assert_eq!((status["version_active"].as_bool(), status["loaded"].as_bool()), (Some(true), Some(true)), "{status}");
    // Replaying recorded traffic: a session mint and a read are recorded allows; against a version
    // that freezes the zone each would now be denied.
    let session = s.session(&d).await;
    assert_eq!(mint(&s, &d, &session, "tools.read", None).await.status, 200);
    let frozen = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{z}/policy-sets/{set}/versions"),
            &d.admin,
            Some(json!({"rego": caracal_e2e::stack::DENY_POLICY})),
            201,
        )
        .await;
    let start = Instant::now();
    let replayed = loop {
        let r = sim(json!({"version_id": frozen["version_id"], "recent_requests": 50})).await;
        if r["summary"]["changed"].as_u64().unwrap_or(0) >= 2 || start.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(replayed["summary"]["changed"].as_u64().unwrap() >= 2, "the recorded allows would now be denied: {replayed}");
    assert_eq!(replayed["summary"]["allow"], 0, "{replayed}");
    let status = s.admin_ok("GET", &format!("/v1/zones/{z}/policy-sets/{set}/activation-status"), &d.admin, None, 200).await;
    assert_eq!(status["active_version_id"], version, "replaying activates nothing: {status}");
    let missing = s
        .admin("POST", &format!("/v1/zones/{z}/policy-sets/{set}/simulate"), &d.admin, Some(json!({"version_id": "nope", "input": {}})))
        .await;
    assert_eq!((missing.status, missing.error()), (404, "policy_version_not_found"));
    let templates = s.admin_ok("GET", "/v1/policy-templates", &d.admin, None, 200).await;
    assert!(
        templates
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "writes-need-approval" && t["content"].as_str().unwrap().contains("package caracal.authz"))
    );
}
