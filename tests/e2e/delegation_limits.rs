//! What a delegation edge may carry: a derived edge keeps every limit of its parent (lifetime cap
//! included), a root edge carries only scopes the zone's resources declare, and an edge is never
//! created under a parent that is being revoked.

use caracal_e2e::Stack;
use caracal_e2e::stack::{Answer, GRANT};
use serde_json::json;

use crate::coordinator::{app, coord, delegate, start_session};

#[tokio::test]
async fn a_derived_edge_inherits_its_parents_lifetime_cap() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b, c) = (app(&s, &d, "demo").await, app(&s, &d, "middle").await, app(&s, &d, "leaf").await);
    let (sa, sb, sc) = (start_session(&s, &d, &a).await, start_session(&s, &d, &b).await, start_session(&s, &d, &c).await);
    let root = delegate(
        &s,
        &d,
        &a,
        json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"], "max_hops": 2, "constraints": {"max_ttl_seconds": 60}}),
    )
    .await;
    assert_eq!(root.status, 201, "{}", root.text);
    let root = root.body["id"].as_str().unwrap().to_owned();
    let wider = delegate(
        &s,
        &d,
        &b,
        json!({"source_session_id": sb, "target_session_id": sc, "scopes": ["tools.read"], "parent_edge_id": root, "constraints": {"max_ttl_seconds": 600}}),
    )
    .await;
    assert_eq!((wider.status, wider.error()), (403, "ttl_widening"), "a derived edge cannot lift the cap: {}", wider.text);
    let child =
        delegate(&s, &d, &b, json!({"source_session_id": sb, "target_session_id": sc, "scopes": ["tools.read"], "parent_edge_id": root}))
            .await;
    assert_eq!(child.status, 201, "{}", child.text);
    assert_eq!(child.body["constraints"]["max_ttl_seconds"], 60, "the cap is inherited: {}", child.text);
    let child = child.body["id"].as_str().unwrap();
    let minted = s
        .token(&[
            ("grant_type", GRANT),
            ("zone_id", &d.zone_id),
            ("application_id", &c.id),
            ("client_secret", &c.secret),
            ("agent_session_id", &sc),
            ("delegation_edge_id", child),
            ("resource", &d.resource),
            ("scope", "tools.read"),
            ("ttl_seconds", "300"),
        ])
        .await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    let lifetime = minted.body["expires_in"].as_u64().unwrap();
    assert!(lifetime <= 60, "a mandate through the derived edge lives at most the root's cap, not {lifetime} s");
}

#[tokio::test]
async fn a_root_edge_without_resources_carries_only_declared_scopes() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (app(&s, &d, "demo").await, app(&s, &d, "helper").await);
    let (sa, sb) = (start_session(&s, &d, &a).await, start_session(&s, &d, &b).await);
    for scope in ["admin.all", "agent:lifecycle", "control:zone:delete"] {
        let e = delegate(&s, &d, &a, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read", scope]})).await;
        assert_eq!((e.status, e.error()), (403, "scope_widening"), "{scope} is declared by no resource: {}", e.text);
    }
    let ok = delegate(&s, &d, &a, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read", "tools.write"]})).await;
    assert_eq!(ok.status, 201, "declared scopes without resources are fine: {}", ok.text);
}

#[tokio::test]
async fn no_edge_survives_under_a_parent_revoked_while_it_was_being_created() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b, c) = (app(&s, &d, "demo").await, app(&s, &d, "middle").await, app(&s, &d, "leaf").await);
    let (sa, sb) = (start_session(&s, &d, &a).await, start_session(&s, &d, &b).await);
    let targets: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(start_session(&s, &d, &c).await);
        }
        v
    };
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let mut created_total = 0;
    for round in 0..6 {
        let parent =
            delegate(&s, &d, &a, json!({"source_session_id": sa, "target_session_id": sb, "scopes": ["tools.read"], "max_hops": 2})).await;
        assert_eq!(parent.status, 201, "{}", parent.text);
        let parent = parent.body["id"].as_str().unwrap().to_owned();
        // Concurrent creations (owned clients, so they run in parallel tasks) racing the revoke.
        let creations: Vec<_> = (0..24)
            .map(|i| {
                let body = json!({"source_session_id": sb, "target_session_id": targets[i % targets.len()], "scopes": ["tools.read"], "parent_edge_id": parent});
                let req = s.http.post(format!("{}/zones/{}/delegations", s.cp_url, d.zone_id)).bearer_auth(&b.runtime).json(&body);
                tokio::spawn(async move { Answer::read(req.send().await.unwrap()).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(2 + round * 3)).await;
        let revoked = coord(&s, "PATCH", &format!("/zones/{}/delegations/{parent}/revoke", d.zone_id), &a.runtime, None).await;
        let mut answers = Vec::new();
        for c in creations {
            answers.push(c.await.unwrap());
        }
        assert_eq!(revoked.status, 200, "{}", revoked.text);
        created_total += answers.iter().filter(|a| a.status == 201).count();
        for a in &answers {
            assert!(matches!(a.status, 201 | 409), "created, or refused because the parent is revoked: {}", a.text);
        }
        let alive: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM delegation_edges WHERE zone_id = $1 AND parent_edge_id = $2 AND status = 'active'")
                .bind(&d.zone_id)
                .bind(&parent)
                .fetch_all(&db)
                .await
                .unwrap();
        assert!(alive.is_empty(), "round {round}: edges outlived their revoked parent: {alive:?}");
    }
    eprintln!("{created_total} derived edges were created before their parent's revocation and went with it");
}
