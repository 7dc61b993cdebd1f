//! Policy behaviour: the documented example policies, engine failures, compile-once.

use caracal_e2e::Stack;
use caracal_e2e::stack::{ACCESS_TOKEN, ALLOW_POLICY, Demo, GATEWAY_MANDATE, GRANT, TRAITS_POLICY};
use serde_json::{Value, json};

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

/// A policy-set version made from a manifest of several policies: a grant document, a freeze list
/// and the module that decides from both are evaluated as one policy; replacing one entry changes
/// the decision; a manifest that repeats an entry, has two deciders, or names another zone's
/// version is refused before anything is stored.
#[tokio::test]
async fn a_manifest_of_several_policies_decides_as_one() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let z = &d.zone_id;
    let policy = |name: &'static str, content: String| {
        let s = &s;
        let d = &d;
        async move {
            let p = s
                .admin_ok(
                    "POST",
                    &format!("/v1/zones/{}/policies", d.zone_id),
                    &d.admin,
                    Some(json!({"name": name, "content": content})),
                    201,
                )
                .await;
            (p["id"].as_str().unwrap().to_owned(), p["version_id"].as_str().unwrap().to_owned())
        }
    };
    let document = |rules: String| format!("# caracal:data-document\npackage caracal.authz\nimport rego.v1\n{rules}\n");
    let app = &d.app_id;
    let (_, grants) = policy(
        "grants",
        document(format!(
            r#"app_ids := {{"{app}": "{app}"}}
grants := {{"{}": {{"application": "{app}", "roles": {{"{app}": ["tools.read"]}}}}}}"#,
            d.resource
        )),
    )
    .await;
    let (freeze_policy, unfrozen) = policy("freeze", document("frozen := set()".into())).await;
    let decider = r#"package caracal.authz
import rego.v1

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": ["gate"], "diagnostics": [{"reason": "frozen_or_not_granted"}]}

# The other modules' rules, by their full name: each module is also checked alone when stored.
allowed if {
	data.caracal.authz.app_ids[input.principal.id]
	not input.principal.id in data.caracal.authz.frozen
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["gate"], "diagnostics": []} if {
	allowed
	input.resource == null
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["gate"], "diagnostics": []} if {
	allowed
	every s in input.context.requested_scopes { s in data.caracal.authz.grants[input.resource.identifier].roles[input.principal.id] }
}
"#;
    let (_, gate) = policy("gate", decider.to_owned()).await;
    let versions = format!("/v1/zones/{z}/policy-sets/{}/versions", d.policy_set_id);
    let manifest = |ids: &[&str]| json!({"manifest": ids.iter().map(|i| json!({"policy_version_id": i})).collect::<Vec<_>>()});
    let activate = |version: Value| {
        let s = &s;
        let d = &d;
        async move {
            s.admin_ok(
                "POST",
                &format!("/v1/zones/{}/policy-sets/{}/activate", d.zone_id, d.policy_set_id),
                &d.admin,
                Some(json!({"version_id": version["version_id"]})),
                202,
            )
            .await;
        }
    };
    let v1 = s.admin_ok("POST", &versions, &d.admin, Some(manifest(&[&grants, &unfrozen, &gate])), 201).await;
    activate(v1).await;
    let demo_app = (d.app_id.clone(), d.secret.clone());
    let read = mint(&s, &d, &demo_app, "tools.read").await;
    assert_eq!(read.status, 200, "granted by the document, not frozen: {}", read.text);
    let write = mint(&s, &d, &demo_app, "tools.write").await;
    assert_eq!(write.status, 403, "not granted: {}", write.text);

    let frozen = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{z}/policies/{freeze_policy}/versions"),
            &d.admin,
            Some(json!({"content": document(format!(r#"frozen := {{"{app}"}}"#))})),
            201,
        )
        .await;
    let v2 = s.admin_ok("POST", &versions, &d.admin, Some(manifest(&[&grants, frozen["version_id"].as_str().unwrap(), &gate])), 201).await;
    activate(v2).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let a = s.token(&[("grant_type", GRANT), ("zone_id", z), ("application_id", &d.app_id), ("client_secret", &d.secret)]).await;
        if a.status == 403 {
            assert!(a.text.contains("frozen_or_not_granted"), "the decider's reason: {}", a.text);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the frozen list in the new manifest applies: {}", a.text);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let refused = [
        (manifest(&[&grants, &grants]), 400, "invalid_manifest"),
        (manifest(&[&grants, &gate, &gate]), 400, "invalid_manifest"),
        (manifest(&[&grants, &unfrozen]), 201, ""),
        (manifest(&[&grants, "no-such-version"]), 404, "policy_version_not_found"),
    ];
    for (body, status, code) in refused {
        let a = s.admin("POST", &versions, &d.admin, Some(body.clone())).await;
        assert_eq!((a.status, a.error()), (status, code), "{body}: {}", a.text);
    }
    let second_gate = policy("gate-2", decider.to_owned()).await.1;
    let two = s.admin("POST", &versions, &d.admin, Some(manifest(&[&grants, &gate, &second_gate]))).await;
    assert_eq!((two.status, two.error()), (422, "invalid_rego"), "{}", two.text);
    assert!(two.text.contains("one module decides"), "{}", two.text);
    let other = s.another_zone(&d, "elsewhere", caracal_e2e::stack::ALLOW_POLICY).await;
    let foreign = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{}/policies", other.zone_id),
            &other.admin,
            Some(json!({"name": "elsewhere", "content": document("frozen := set()".into())})),
            201,
        )
        .await;
    let cross = s.admin("POST", &versions, &d.admin, Some(manifest(&[&grants, foreign["version_id"].as_str().unwrap()]))).await;
    assert_eq!((cross.status, cross.error()), (404, "policy_version_not_found"), "another zone's version: {}", cross.text);
}

#[tokio::test]
async fn zones_with_the_same_policy_share_one_compilation() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let compiled = "caracal_sts_policy_compilations_total";
    // A session, then a gateway mandate the zone's policy allows (`gateway_mandate` asserts 200).
    s.gateway_mandate(&d, &s.session(&d).await, "tools.read").await;
    let first = s.control_plane_metric(compiled).await;
    assert!(first >= 1.0, "the demo zone's policy was compiled: {first}");

    // Another zone, another version id, the same sources: the compiled policy is shared.
    let twin = s.another_zone(&d, "twin", ALLOW_POLICY).await;
    s.gateway_mandate(&twin, &s.session(&twin).await, "tools.read").await;
    assert_eq!(s.control_plane_metric(compiled).await, first, "the same sources compile once");

    // Different sources (one comment more) compile on their own, and still decide.
    let other = s.another_zone(&d, "other", &format!("{ALLOW_POLICY}\n# another zone's copy\n")).await;
    s.gateway_mandate(&other, &s.session(&other).await, "tools.read").await;
    assert_eq!(s.control_plane_metric(compiled).await, first + 1.0, "different sources compile anew");
}
