//! Policy behaviour: the documented example policies, engine failures, compile-once.

use caracal_e2e::Stack;
use caracal_e2e::stack::{ACCESS_TOKEN, Demo, GATEWAY_MANDATE, GRANT, TRAITS_POLICY};
use serde_json::json;

async fn app(s: &Stack, d: &Demo, name: &str, traits: serde_json::Value) -> (String, String) {
    let a = s
        .admin_ok("POST", &format!("/v1/zones/{}/applications", d.zone_id), &d.admin, Some(json!({"name": name, "traits": traits})), 201)
        .await;
    (a["id"].as_str().unwrap().to_owned(), a["client_secret"].as_str().unwrap().to_owned())
}

/// A session mint (must succeed) then a gateway mint for the demo resource with `scope`.
async fn mint(s: &Stack, d: &Demo, (id, secret): &(String, String), scope: &str) -> caracal_e2e::stack::Answer {
    let base =
        [("grant_type", GRANT), ("zone_id", d.zone_id.as_str()), ("application_id", id.as_str()), ("client_secret", secret.as_str())];
    let session = s.token(&base).await;
    assert_eq!(session.status, 200, "sessions are allowed: {}", session.text);
    let subject = session.body["access_token"].as_str().unwrap().to_owned();
    let mut form = base.to_vec();
    form.extend([
        ("subject_token", subject.as_str()),
        ("subject_token_type", ACCESS_TOKEN),
        ("requested_token_type", GATEWAY_MANDATE),
        ("resource", d.resource.as_str()),
        ("scope", scope),
    ]);
    s.token(&form).await
}

#[tokio::test]
async fn the_trait_policy_of_the_docs_grants_least_privilege() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    s.activate_policy(&d, TRAITS_POLICY).await;
    let reader = app(&s, &d, "reader", json!(["grant:tools"])).await;
    let writer = app(&s, &d, "writer", json!(["grant:tools", "writer"])).await;
    let stranger = app(&s, &d, "stranger", json!([])).await;
    assert_eq!(mint(&s, &d, &reader, "tools.read").await.status, 200);
    let r = mint(&s, &d, &reader, "tools.write").await;
    assert_eq!(r.status, 403, "reading trait, writing scope: {}", r.text);
    assert_eq!(mint(&s, &d, &writer, "tools.write").await.status, 200);
    let st = mint(&s, &d, &stranger, "tools.read").await;
    assert_eq!(st.status, 403);
    assert!(st.body["error_description"].as_str().unwrap().contains("no_rule_matched"), "{}", st.text);
}

#[tokio::test]
async fn an_engine_error_is_a_503_never_an_allow() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    // Both rules match: a complete rule with two values is an evaluation error, not a decision.
    let conflicting = r#"package caracal.authz

import rego.v1

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["a"], "diagnostics": []} if {
	input.principal.type == "Application"
}

result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": ["b"], "diagnostics": []} if {
	input.principal.type == "Application"
}
"#;
    s.activate_policy(&d, conflicting).await;
    let a = s.token(&[("grant_type", GRANT), ("zone_id", &d.zone_id), ("application_id", &d.app_id), ("client_secret", &d.secret)]).await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.error(), "policy_eval_failed");
    // A result outside the contract is an engine failure too.
    s.activate_policy(
        &d,
        "package caracal.authz\n\nimport rego.v1\n\nresult := {\"decision\": \"maybe\", \"evaluation_status\": \"complete\"}\n",
    )
    .await;
    let b = s.token(&[("grant_type", GRANT), ("zone_id", &d.zone_id), ("application_id", &d.app_id), ("client_secret", &d.secret)]).await;
    assert_eq!(b.status, 503, "{}", b.text);
    assert_eq!(b.error(), "policy_eval_failed");
}
