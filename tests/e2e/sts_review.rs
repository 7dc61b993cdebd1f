//! The STS defects of the security review (issue 10), each shown as a denial: a runaway policy,
//! ambiguous paths on enforced resources, evidence only for authenticated callers, lockouts that
//! cannot lock the right secret out, traits at the per-request exchange, approvals that settle
//! only what they approved, and revocations that reach the STS without an announcement.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::stack::{ALLOW_POLICY, Answer, Demo, GRANT, StackOptions};
use serde_json::json;

fn cp(env: &[(&str, &str)]) -> StackOptions {
    StackOptions { control_plane_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() }
}

async fn sts_denials(s: &Stack, reason: &str) -> f64 {
    s.control_plane_metric(&format!("caracal_sts_denials_total{{reason=\"{reason}\"}}")).await
}

/// A second zone with its own application, the demo resource and an active `rego`, made with the
/// demo's global admin token.
async fn another_zone(s: &Stack, d: &Demo, rego: &str) -> Demo {
    let zone = s.admin_ok("POST", "/v1/zones", &d.admin, Some(json!({"name": "other"})), 201).await;
    let z = zone["id"].as_str().unwrap().to_owned();
    let app = s.admin_ok("POST", &format!("/v1/zones/{z}/applications"), &d.admin, Some(json!({"name": "agent-b"})), 201).await;
    let set = s.admin_ok("POST", &format!("/v1/zones/{z}/policy-sets"), &d.admin, Some(json!({"name": "main"})), 201).await;
    let other = Demo {
        zone_id: z,
        app_id: app["id"].as_str().unwrap().to_owned(),
        secret: app["client_secret"].as_str().unwrap().to_owned(),
        resource: d.resource.clone(),
        policy_set_id: set["id"].as_str().unwrap().to_owned(),
        admin: d.admin.clone(),
    };
    s.add_resource(&other, &d.resource, &format!("{}/base", s.upstream.url())).await;
    s.activate_policy(&other, rego).await;
    other
}

async fn upload(s: &Stack, d: &Demo, rego: &str) -> Answer {
    s.admin("POST", &format!("/v1/zones/{}/policy-sets/{}/versions", d.zone_id, d.policy_set_id), &d.admin, Some(json!({"rego": rego})))
        .await
}

/// Allocates a hundred million numbers on every evaluation.
const BOMB: &str = r#"package caracal.authz
import rego.v1

result := {"decision": "allow", "evaluation_status": "complete", "diagnostics": [{"n": count(numbers.range(1, 100000000))}]}
"#;

/// Allows everything, but a request for `tools.write` makes the evaluation run for minutes — a
/// rule that passes the upload's sample evaluation and stalls at run time.
const RUNAWAY_ON_WRITES: &str = r#"package caracal.authz
import rego.v1

stalls if {
    "tools.write" in input.context.requested_scopes
    count([x | some x in numbers.range(1, 90000); some y in numbers.range(1, 90000); x > y]) > 0
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["all"], "diagnostics": []} if {
    not stalls
}
"#;

#[tokio::test]
async fn a_runaway_policy_answers_503_within_its_bound_and_other_zones_keep_minting() {
    let s = Stack::start_with(cp(&[("POLICY_EVAL_TIMEOUT", "200ms")])).await;
    let d = s.demo(false).await;

    // Refused at upload: an unconditional allocation bomb fails a bound on the sample input.
    let bomb = upload(&s, &d, BOMB).await;
    assert_eq!((bomb.status, bomb.error()), (422, "invalid_rego"), "{}", bomb.text);
    assert!(bomb.body["error_description"].as_str().unwrap().contains("bound"), "{}", bomb.text);

    s.activate_policy(&d, RUNAWAY_ON_WRITES).await;
    let b = another_zone(&s, &d, ALLOW_POLICY).await;
    let session_a = s.session(&d).await;
    let session_b = s.session(&b).await;

    let started = Instant::now();
    let stalled = s.mint_gateway(&d, &session_a, "tools.write").await;
    assert_eq!((stalled.status, stalled.error()), (503, "policy_eval_failed"), "{}", stalled.text);
    assert!(started.elapsed() < Duration::from_secs(3), "answered within the bound, took {:?}", started.elapsed());
    // Quarantined: the zone's next evaluations fail fast instead of queueing behind the runaway one.
    let quarantined = s.mint_gateway(&d, &session_a, "tools.read").await;
    assert_eq!((quarantined.status, quarantined.error()), (503, "policy_eval_failed"), "{}", quarantined.text);
    // Another zone is not affected, while zone A is quarantined.
    for _ in 0..5 {
        let ok = s.mint_gateway(&b, &session_b, "tools.read").await;
        assert_eq!(ok.status, 200, "zone B: {}", ok.text);
    }
    assert!(sts_denials(&s, "policy_eval_failed").await >= 2.0);
    // The quarantine lifts once the runaway evaluation stopped (regorus's own timer) and a few
    // seconds passed; reads are allowed again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = s.mint_gateway(&d, &session_a, "tools.read").await;
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "zone A stayed quarantined: {}", a.text);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn an_enforced_resource_refuses_paths_an_upstream_reads_differently() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    for path in ["/items/x;jsessionid=0", "/items/a%2Fadmin", "/items/%3Badmin", "/items/a%2541"] {
        let m = s.gateway_mandate(&d, &session, "tools.read").await;
        let a = s.raw("GET", path, &[("authorization", &format!("Bearer {m}")), ("x-caracal-resource", &d.resource)]).await;
        assert_eq!((a.status, a.error()), (403, "operation_not_permitted"), "{path}: {}", a.text);
        assert!(a.body["error_description"].as_str().unwrap().contains("ambiguous"), "{path}: {}", a.text);
    }
    assert_eq!(sts_denials(&s, "operation_not_permitted").await, 4.0);
    assert_eq!(s.upstream.requests().len(), 0, "nothing reached the upstream");
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let plain = s.raw("GET", "/items/caf%C3%A9", &[("authorization", &format!("Bearer {m}")), ("x-caracal-resource", &d.resource)]).await;
    assert_eq!(plain.status, 200, "an ordinary escape is fine: {}", plain.text);
}

#[tokio::test]
async fn unauthenticated_token_requests_are_counted_not_filed() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let mut zones = Vec::new();
    for i in 0..20 {
        let zone = format!("0190f3a1-0000-7000-8000-{i:012}");
        let a = s.token(&[("grant_type", GRANT), ("zone_id", &zone), ("application_id", &d.app_id), ("client_secret", "cs_guess")]).await;
        assert_eq!(a.status, 401, "{}", a.text);
        zones.push(zone);
    }
    for _ in 0..5 {
        let a =
            s.token(&[("grant_type", GRANT), ("zone_id", &d.zone_id), ("application_id", &d.app_id), ("client_secret", "cs_guess")]).await;
        assert_eq!(a.status, 401, "{}", a.text);
    }
    assert_eq!(s.control_plane_metric("caracal_sts_unauthenticated_refusals_total").await, 25.0);
    // An authenticated refusal is still evidence: wait for it, then look for the others.
    let refused = s.mint_gateway(&d, &s.session(&d).await, "tools.admin").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let rid = refused.body["requestId"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM audit_events WHERE request_id = $1").bind(&rid).fetch_one(&db).await.unwrap();
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the authenticated refusal was never filed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (foreign,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM audit_events WHERE zone_id = ANY($1)").bind(&zones).fetch_one(&db).await.unwrap();
    assert_eq!(foreign, 0, "no rows under zones the caller made up");
    let (guesses,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM audit_events WHERE zone_id = $1 AND event_type = 'token_exchange' AND event LIKE '%invalid_client%'",
    )
    .bind(&d.zone_id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(guesses, 0, "no rows for bad secrets under a real zone");
}

#[tokio::test]
async fn bad_secrets_spend_neither_the_mint_budget_nor_the_right_secret() {
    let s = Stack::start_with(cp(&[("STS_MINT_RATE_LIMIT_PER_MIN", "5"), ("STS_AUTH_FAILURE_LIMIT", "3")])).await;
    let d = s.demo(true).await;
    let bad = [("grant_type", GRANT), ("zone_id", d.zone_id.as_str()), ("application_id", d.app_id.as_str()), ("client_secret", "cs_x")];
    let good =
        [("grant_type", GRANT), ("zone_id", d.zone_id.as_str()), ("application_id", d.app_id.as_str()), ("client_secret", &d.secret)];
    for _ in 0..10 {
        assert!(matches!(s.token(&bad).await.status, 401 | 429));
    }
    let locked = s.token(&bad).await;
    assert_eq!((locked.status, locked.body["error_description"].as_str()), (429, Some("authentication rate limit exceeded")));
    assert_eq!(s.token(&good).await.status, 200, "the right secret is never locked out, nor charged for others' guesses");
    assert!(sts_denials(&s, "locked_out").await >= 1.0);
}

/// Allows every mint; at the per-request exchange, denies applications with the trait
/// `quarantined` — a deny-list that must see the traits on every exchange.
const DENY_QUARANTINED_AT_EXCHANGE: &str = r#"package caracal.authz
import rego.v1

default result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["all"], "diagnostics": []}

result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": ["deny-list"], "diagnostics": [{"reason": "quarantined"}]} if {
    input.action.use == "resource"
    "quarantined" in input.principal.traits
}
"#;

#[tokio::test]
async fn the_per_request_exchange_sees_the_applications_traits() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, DENY_QUARANTINED_AT_EXCHANGE).await;
    let app = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{}/applications", d.zone_id),
            &d.admin,
            Some(json!({"name": "suspect", "traits": ["quarantined"]})),
            201,
        )
        .await;
    let q = Demo { app_id: app["id"].as_str().unwrap().to_owned(), secret: app["client_secret"].as_str().unwrap().to_owned(), ..d.clone() };
    let m = s.gateway_mandate(&q, &s.session(&q).await, "tools.read").await;
    let a = s.governed("GET", "/items/1", &m, &q.resource).await;
    assert_eq!((a.status, a.error()), (403, "access_denied"), "{}", a.text);
    assert!(a.text.contains("quarantined"), "{}", a.text);
    let clean = s.gateway_mandate(&d, &s.session(&d).await, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &clean, &d.resource).await.status, 200, "other applications pass");
}

const STEP_UP_POLICY: &str = include_str!("../../docs/policies/writes-need-approval.rego");

/// A gateway mandate for `tools.write` whose mint an operator approved.
async fn approved_write(s: &Stack, d: &Demo, session: &str) -> String {
    let held = s.mint_gateway(d, session, "tools.write").await;
    assert_eq!(held.status, 401, "{}", held.text);
    let (id, binding) = (held.body["approval_id"].as_str().unwrap(), held.body["binding"].as_str().unwrap());
    s.admin_ok(
        "POST",
        &format!("/v1/zones/{}/approvals/{id}/decision", d.zone_id),
        &d.admin,
        Some(json!({"decision": "approved", "binding": binding, "reason": "e2e"})),
        200,
    )
    .await;
    let a = s.mint_gateway_with(d, session, &d.resource, "tools.write", &[("approval_id", id)]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_carried_approval_settles_only_the_request_it_approved() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, STEP_UP_POLICY).await;
    let session = s.session(&d).await;

    let approved = approved_write(&s, &d, &session).await;
    let a = s.governed("POST", "/items", &approved, &d.resource).await;
    assert_eq!(a.status, 200, "the approval covers the write it approved: {}", a.text);

    // The same policy activated again is another version: an approval given under one never
    // settles a step-up under another.
    let stale = approved_write(&s, &d, &session).await;
    s.activate_policy(&d, STEP_UP_POLICY).await;
    let a = s.governed("POST", "/items", &stale, &d.resource).await;
    assert_eq!((a.status, a.error()), (403, "access_denied"), "{}", a.text);
    assert!(a.text.contains("step-up required"), "{}", a.text);
}

#[tokio::test]
async fn a_revocation_written_by_another_instance_reaches_the_sts_by_the_incremental_reload() {
    let s = Stack::start_with(cp(&[("REVOCATION_RELOAD_INTERVAL", "500ms")])).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    assert_eq!(s.mint_gateway(&d, &session, "tools.read").await.status, 200);
    let sid = caracal_e2e::stack::sid_of(&session);
    // Written straight into the table, never announced: only the reload can bring it.
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    sqlx::query("INSERT INTO revocations (zone_id, anchor_kind, anchor_id, reason, expires_at) VALUES ($1, 'sid', $2, 'test', now() + interval '1 hour')")
        .bind(&d.zone_id)
        .bind(&sid)
        .execute(&db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = s.mint_gateway(&d, &session, "tools.read").await;
        if a.status == 401 {
            assert_eq!(a.body["error_description"], "session revoked or expired");
            break;
        }
        assert!(Instant::now() < deadline, "the STS never saw the revocation: {}", a.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
