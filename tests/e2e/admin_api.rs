//! The admin API's own rules.

use caracal_e2e::Stack;
use serde_json::json;

#[tokio::test]
async fn bootstrap_once_and_zone_tokens_stay_in_their_zone() {
    let s = Stack::start().await;
    let wrong = s.http.post(format!("{}/v1/bootstrap", s.cp_url)).bearer_auth("not-the-token").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let admin = s.bootstrap().await;
    let again = s.http.post(format!("{}/v1/bootstrap", s.cp_url)).bearer_auth(&s.bootstrap_token).send().await.unwrap();
    assert_eq!(again.status(), 409, "bootstrap works once");
    assert_eq!(s.admin("GET", "/v1/zones", &s.bootstrap_token, None).await.status, 401, "the bootstrap token is not an admin token");

    let a = s.admin_ok("POST", "/v1/zones", &admin, Some(json!({"name": "A"})), 201).await["id"].as_str().unwrap().to_owned();
    let b = s.admin_ok("POST", "/v1/zones", &admin, Some(json!({"name": "B"})), 201).await["id"].as_str().unwrap().to_owned();
    let tok = s.admin_ok("POST", "/v1/admin-tokens", &admin, Some(json!({"name": "a-ops", "scope": "zone", "zone_id": a})), 201).await;
    let zone_token = tok["token"].as_str().unwrap().to_owned();
    assert!(zone_token.starts_with("cat_"));

    assert_eq!(s.admin("GET", &format!("/v1/zones/{a}"), &zone_token, None).await.status, 200);
    let other = s.admin("GET", &format!("/v1/zones/{b}"), &zone_token, None).await;
    assert_eq!(other.status, 403);
    assert_eq!(other.error(), "admin_token_zone_mismatch");
    let other_write = s.admin("POST", &format!("/v1/zones/{b}/applications"), &zone_token, Some(json!({"name": "x"}))).await;
    assert_eq!(other_write.status, 403, "a zone token cannot change another zone");
    assert_eq!(s.admin("POST", "/v1/zones", &zone_token, Some(json!({"name": "C"}))).await.status, 403);
    let listed = s.admin_ok("GET", "/v1/zones", &zone_token, None, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "a zone token lists only its zone");

    s.admin_ok("DELETE", &format!("/v1/admin-tokens/{}", tok["id"].as_str().unwrap()), &admin, None, 204).await;
    assert_eq!(s.admin("GET", &format!("/v1/zones/{a}"), &zone_token, None).await.status, 401, "a revoked token stops working");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let z = &d.zone_id;
    let bad_rego = s
        .admin(
            "POST",
            &format!("/v1/zones/{z}/policy-sets/{}/versions", d.policy_set_id),
            &d.admin,
            Some(json!({"rego": "package other\nresult := 1"})),
        )
        .await;
    assert_eq!(bad_rego.status, 422, "{}", bad_rego.text);
    assert_eq!(bad_rego.error(), "invalid_rego");
    assert!(bad_rego.body["requestId"].is_string());

    let bad_resource = s
        .admin(
            "POST",
            &format!("/v1/zones/{z}/resources"),
            &d.admin,
            Some(json!({"identifier": "not a uri", "upstream_url": "ftp://x", "scopes": [], "operations": [{"method": "GET", "path": "x", "scope": "nope"}]})),
        )
        .await;
    assert_eq!(bad_resource.status, 400);
    assert_eq!(bad_resource.error(), "invalid_resource");
    let why = bad_resource.body["error_description"].as_str().unwrap();
    for needle in ["identifier", "upstream_url", "scopes", "absolute"] {
        assert!(why.contains(needle), "every problem is reported at once; missing {needle}: {why}");
    }
    let unknown_field =
        s.admin("POST", &format!("/v1/zones/{z}/applications"), &d.admin, Some(json!({"name": "x", "colour": "red"}))).await;
    assert_eq!(unknown_field.status, 400);
    assert_eq!(unknown_field.error(), "invalid_body");
    assert_eq!(s.admin("GET", "/v1/zones", "cat_bogus", None).await.status, 401);
    let dup = s
        .admin(
            "POST",
            &format!("/v1/zones/{z}/resources"),
            &d.admin,
            Some(json!({"identifier": d.resource, "upstream_url": "http://127.0.0.1:1", "scopes": ["a"]})),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.error(), "resource_identifier_conflict");
}

#[tokio::test]
async fn key_rotation_publishes_before_signing_and_jwks_serves_two_keys() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let before = s.jwks(&d.zone_id).await;
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);
    let r = s.admin_ok("POST", &format!("/v1/zones/{}/keys/rotate", d.zone_id), &d.admin, None, 200).await;
    let after = s.jwks(&d.zone_id).await;
    let kids: Vec<&str> = after["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0], r["kid"].as_str().unwrap(), "newest first");
    for k in after["keys"].as_array().unwrap() {
        assert_eq!(k["kty"], "EC");
        assert_eq!(k["crv"], "P-256");
        assert_eq!(k["x"].as_str().unwrap().len(), 43);
        assert_eq!(k["y"].as_str().unwrap().len(), 43);
    }
    // Mandates signed by either key keep working through the gateway.
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200);
    let unknown = s.http.get(format!("{}/.well-known/jwks.json?zone_id=nope", s.cp_url)).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

/// Credential providers (issue 14): a zone token cannot reach another zone's, the key is sealed in
/// the database (never in the clear, never shown), and every change is in the zone's audit chain.
#[tokio::test]
async fn providers_are_zone_scoped_sealed_and_audited() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let other = s.another_zone(&d, "other", caracal_e2e::stack::ALLOW_POLICY).await;
    let zone_token = s.zone_token(&d.admin, &d.zone_id).await;
    let body = json!({"name": "k", "kind": "api_key", "config_json": {"header": "X-Api-Key", "api_key": "sealed-secret-xyz"}});
    let created = s.admin_ok("POST", &format!("/v1/zones/{}/providers", other.zone_id), &d.admin, Some(body.clone()), 201).await;
    assert_eq!(created["secret_config_keys"], json!(["api_key"]));
    assert!(!created.to_string().contains("sealed-secret-xyz"), "{created}");
    let id = created["id"].as_str().unwrap();
    let base = format!("/v1/zones/{}/providers", other.zone_id);
    for (method, path, body) in [
        ("GET", base.clone(), None),
        ("GET", format!("{base}/{id}"), None),
        ("POST", base.clone(), Some(body.clone())),
        ("PATCH", format!("{base}/{id}"), Some(json!({"name": "mine"}))),
        ("DELETE", format!("{base}/{id}"), None),
    ] {
        let a = s.admin(method, &path, &zone_token, body).await;
        assert_eq!((a.status, a.error()), (403, "admin_token_zone_mismatch"), "{method} {path}");
    }
    // Its own zone's providers are the zone token's to manage.
    let own = s.admin_ok("POST", &format!("/v1/zones/{}/providers", d.zone_id), &zone_token, Some(body), 201).await;
    assert_eq!(
        s.admin_ok("GET", &format!("/v1/zones/{}/providers", d.zone_id), &zone_token, None, 200).await["items"].as_array().unwrap().len(),
        1
    );
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let (config, sealed): (String, Vec<u8>) = sqlx::query_as("SELECT config_json::text, secret_config FROM providers WHERE id = $1")
        .bind(own["id"].as_str().unwrap())
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(!config.contains("sealed-secret") && !String::from_utf8_lossy(&sealed).contains("sealed-secret"), "{config}");
    let start = std::time::Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events WHERE zone_id = $1 AND event_type = 'admin_action' \
             AND (event::jsonb)->'metadata_json'->>'route' = '/v1/zones/{zone_id}/providers'",
        )
        .bind(&other.zone_id)
        .fetch_one(&db)
        .await
        .unwrap();
        if n >= 1 {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the provider's creation was audited");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_list_route_reads_its_query_and_refuses_a_bad_one_in_the_error_shape() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let z = &d.zone_id;
    s.session(&d).await;
    // Routes whose query has filters beside the page (a flattened page once read `limit` as text).
    for ok in [format!("/v1/zones/{z}/authority-records?limit=1&status=active"), format!("/v1/zones/{z}/approvals?limit=1&state=pending")] {
        let a = s.admin("GET", &ok, &d.admin, None).await;
        assert_eq!(a.status, 200, "{ok}: {}", a.text);
        assert!(a.body["items"].as_array().unwrap().len() <= 1, "{ok}: the limit applies: {}", a.text);
    }
    let lists = [
        "/v1/zones".to_owned(),
        "/v1/admin-tokens".to_owned(),
        format!("/v1/zones/{z}/authority-records"),
        format!("/v1/zones/{z}/approvals"),
        format!("/v1/zones/{z}/applications"),
        format!("/v1/zones/{z}/policies"),
        format!("/v1/zones/{z}/sessions"),
    ];
    for route in &lists {
        let a = s.admin("GET", &format!("{route}?limit=many"), &d.admin, None).await;
        assert_eq!((a.status, a.error()), (400, "invalid_query"), "{route}: {}", a.text);
        assert!(a.body["requestId"].is_string(), "{route}: our error shape: {}", a.text);
    }
}
