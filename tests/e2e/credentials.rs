//! Credential injection modes: the upstream receives exactly the configured credential and
//! never the agent's own bearer.

use caracal_e2e::Stack;
use caracal_e2e::stack::Demo;
use serde_json::{Value, json};

async fn resource(s: &Stack, d: &Demo, identifier: &str, mode: &str, credential: Option<Value>) -> Value {
    let mut body = json!({
        "identifier": identifier,
        "upstream_url": format!("{}/base?fixed=1", s.upstream.url()),
        "scopes": ["tools.read"],
        "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}],
        "credential_mode": mode,
    });
    if let Some(c) = credential {
        body["credential"] = c;
    }
    s.admin_ok("POST", &format!("/v1/zones/{}/resources", d.zone_id), &d.admin, Some(body), 201).await
}

#[tokio::test]
async fn provider_keys_go_where_configured_and_never_leak_back() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let header = resource(
        &s,
        &d,
        "https://header.e2e.test",
        "provider_apikey",
        Some(json!({"location": "header", "header": "X-Api-Key", "secret": "hdr-key-123"})),
    )
    .await;
    assert_eq!(header["credential_secret_set"], true);
    assert!(!header.to_string().contains("hdr-key-123"), "the key is write-only: {header}");
    resource(
        &s,
        &d,
        "https://scheme.e2e.test",
        "provider_apikey",
        Some(json!({"header": "Authorization", "scheme": "Token", "secret": "sch-key-456", "forward_caracal_identity": true})),
    )
    .await;
    resource(
        &s,
        &d,
        "https://query.e2e.test",
        "provider_apikey",
        Some(json!({"location": "query", "query_param": "api_key", "secret": "qry-key-789"})),
    )
    .await;
    resource(&s, &d, "https://none.e2e.test", "none", None).await;
    let listed = s.admin_ok("GET", &format!("/v1/zones/{}/resources", d.zone_id), &d.admin, None, 200).await;
    for k in ["hdr-key-123", "sch-key-456", "qry-key-789"] {
        assert!(!listed.to_string().contains(k), "no key in listings");
    }

    for (i, r) in
        ["https://header.e2e.test", "https://scheme.e2e.test", "https://query.e2e.test", "https://none.e2e.test"].iter().enumerate()
    {
        let m = s.mandate_for(&d, &session, r, "tools.read").await;
        let a = s.governed("GET", &format!("/items/{i}?api_key=client-value&q=keep"), &m, r).await;
        assert_eq!(a.status, 200, "{r}: {}", a.text);
        let text = a.text.clone();
        assert!(!text.contains("key-"), "nothing of the key comes back to the client");
    }
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 4);
    let (hdr, sch, qry, none) = (&seen[0], &seen[1], &seen[2], &seen[3]);
    assert_eq!(hdr.header("x-api-key"), Some("hdr-key-123"));
    assert_eq!(hdr.header("authorization"), None, "the agent's bearer is stripped and no mandate is sent");
    assert_eq!(hdr.header("x-caracal-identity"), None, "identity only when opted in");
    assert_eq!(sch.header("authorization"), Some("Token sch-key-456"));
    let identity = sch.header("x-caracal-identity").expect("opted in");
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(identity).unwrap().claims;
    assert_eq!(claims["use"], "resource");
    assert_eq!(claims["aud"], json!(["https://scheme.e2e.test"]));
    let q = qry.query.clone().unwrap_or_default();
    assert!(q.contains("api_key=qry-key-789") && !q.contains("client-value"), "the key overrides the client's value: {q}");
    assert!(q.contains("q=keep") && q.contains("fixed=1"), "other parameters survive: {q}");
    assert_eq!(qry.header("authorization"), None);
    assert_eq!(none.header("authorization"), None, "mode none sends no credential");
    assert!(none.query.clone().unwrap_or_default().contains("api_key=client-value"), "mode none leaves the query alone");
}

#[tokio::test]
async fn unusable_credential_settings_are_refused_with_reasons() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let cases = [
        (json!({"header": "Host", "secret": "k"}), "credential.header"),
        (json!({"header": "X-Forwarded-For", "secret": "k"}), "credential.header"),
        (json!({"location": "query", "secret": "k"}), "query_param"),
        (json!({"location": "carrier-pigeon", "secret": "k"}), "location"),
        (json!({"header": "X-Api-Key"}), "needs credential.secret"),
        (json!({"header": "X-Api-Key", "secret": "bad\r\nInjected: yes"}), "visible ASCII"),
    ];
    for (i, (credential, needle)) in cases.into_iter().enumerate() {
        let a = s
            .admin(
                "POST",
                &format!("/v1/zones/{}/resources", d.zone_id),
                &d.admin,
                Some(json!({"identifier": format!("https://bad{i}.e2e.test"), "upstream_url": "http://127.0.0.1:9", "scopes": ["a"], "credential_mode": "provider_apikey", "credential": credential})),
            )
            .await;
        assert_eq!(a.status, 400, "{needle}: {}", a.text);
        assert!(a.body["error_description"].as_str().unwrap().contains(needle), "{needle}: {}", a.text);
    }
    let jwt_with_credential = s
        .admin(
            "POST",
            &format!("/v1/zones/{}/resources", d.zone_id),
            &d.admin,
            Some(json!({"identifier": "https://jwt.e2e.test", "upstream_url": "http://127.0.0.1:9", "scopes": ["a"], "credential": {"header": "X-K", "secret": "k"}})),
        )
        .await;
    assert_eq!(jwt_with_credential.status, 400, "a credential on a caracal_jwt resource is a mistake worth reporting");
}

/// A write-only provider key must not follow a resource to another destination: moving the
/// upstream to another scheme, host or port, or renaming the identifier, is refused unless a new
/// key comes with it (409 `credential_secret_required`).
#[tokio::test]
async fn a_provider_key_is_never_sent_to_a_destination_it_was_not_given_for() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let elsewhere = caracal_e2e::upstream::Upstream::start().await;
    let r =
        resource(&s, &d, "https://keyed.e2e.test", "provider_apikey", Some(json!({"header": "X-Api-Key", "secret": "orig-key-1"}))).await;
    let path = format!("/v1/zones/{}/resources/{}", d.zone_id, r["id"].as_str().unwrap());

    for (what, patch) in [
        ("another port", json!({"upstream_url": format!("{}/base", elsewhere.url())})),
        ("another host", json!({"upstream_url": "http://localhost:9/base"})),
        ("another scheme", json!({"upstream_url": format!("https://{}/base", s.upstream.addr)})),
        ("another identifier", json!({"identifier": "https://renamed.e2e.test"})),
        (
            "a placement change that keeps the key",
            json!({"upstream_url": format!("{}/base", elsewhere.url()), "credential": {"header": "X-Api-Key"}}),
        ),
    ] {
        let a = s.admin("PATCH", &path, &d.admin, Some(patch)).await;
        assert_eq!((a.status, a.error()), (409, "credential_secret_required"), "{what}: {}", a.text);
    }
    // Nothing changed: the key still goes only to the original upstream.
    let m = s.mandate_for(&d, &session, "https://keyed.e2e.test", "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, "https://keyed.e2e.test").await.status, 200);
    assert_eq!(s.upstream.requests().last().unwrap().header("x-api-key"), Some("orig-key-1"));
    assert!(elsewhere.requests().is_empty(), "the other host saw nothing");

    // Same destination, other path: the key stays.
    let a = s.admin("PATCH", &path, &d.admin, Some(json!({"upstream_url": format!("{}/base/v2", s.upstream.url())}))).await;
    assert_eq!(a.status, 200, "a path change keeps the destination: {}", a.text);
    assert_eq!(a.body["credential_secret_set"], true);
    // A new destination with a new key: accepted, and only the new key goes there.
    let a = s
        .admin(
            "PATCH",
            &path,
            &d.admin,
            Some(
                json!({"upstream_url": format!("{}/base", elsewhere.url()), "credential": {"header": "X-Api-Key", "secret": "new-key-2"}}),
            ),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let m = s.mandate_for(&d, &session, "https://keyed.e2e.test", "tools.read").await;
    assert_eq!(s.governed("GET", "/items/2", &m, "https://keyed.e2e.test").await.status, 200);
    let seen = elsewhere.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-api-key"), Some("new-key-2"), "the new host gets the key given for it");
}
