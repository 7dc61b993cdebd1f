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
