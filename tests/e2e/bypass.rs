//! Declared operations cannot be bypassed where the upstream normalises differently: method and
//! URL override headers and protocol upgrades never reach it, Tomcat/Spring path parameters
//! (`..;`) or backslashes cannot smuggle a dot segment past the gateway, and a parameter the
//! upstream URL fixes cannot be repeated by the client.

use caracal_e2e::Stack;

/// Headers some frameworks or proxies read as "the real method" or "the real path".
const OVERRIDES: &[(&str, &str)] = &[
    ("x-http-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-method-override", "DELETE"),
    ("x-original-method", "DELETE"),
    ("x-original-url", "/admin"),
    ("x-rewrite-url", "/admin"),
    ("x-original-uri", "/admin"),
    ("x-override-url", "/admin"),
    ("x-envoy-original-path", "/admin"),
    ("x-forwarded-prefix", "/admin"),
    ("x-middleware-subrequest", "middleware:middleware:middleware:middleware:middleware"),
    // CGI-style servers read `X_HTTP_METHOD_OVERRIDE` as the same variable as the dashed name.
    ("x_http_method_override", "DELETE"),
    ("X_Original_URL", "/admin"),
    ("x_forwarded_for", "6.6.6.6"),
];

#[tokio::test]
async fn method_and_url_override_headers_never_reach_the_upstream() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let bearer = format!("Bearer {m}");
    let mut headers = vec![("authorization", bearer.as_str()), ("x-caracal-resource", d.resource.as_str())];
    headers.extend_from_slice(OVERRIDES);
    let a = s.call("GET", "/items/1", &headers).await;
    assert_eq!(a.status, 200, "the declared GET is forwarded: {}", a.text);
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!((up.method.as_str(), up.path.as_str()), ("GET", "/base/items/1"), "the upstream sees the checked operation");
    let normalise = |n: &str| n.to_ascii_lowercase().replace('_', "-");
    // X-Forwarded-For is the gateway's own (checked below); every other name must be gone.
    let banned: Vec<String> = OVERRIDES.iter().map(|(n, _)| normalise(n)).filter(|n| n != "x-forwarded-for").collect();
    assert!(up.headers.get("x_forwarded_for").is_none());
    for (name, _) in up.headers.iter() {
        assert!(!banned.contains(&normalise(name.as_str())), "{name} must not reach the upstream");
    }
    assert_eq!(up.header("x-forwarded-for"), Some("127.0.0.1"), "only the gateway's own X-Forwarded-For");
    assert_eq!(s.gateway_metric("caracal_gateway_requests_allowed_total").await, 1.0);
    assert_eq!(s.gateway_metric("caracal_gateway_requests_denied_total").await, 0.0);
}

#[tokio::test]
async fn path_parameters_and_backslashes_cannot_smuggle_dot_segments() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let bearer = format!("Bearer {m}");
    let paths = [
        "/items/..;/admin",
        "/items/..;x=1/admin",
        "/items/.;/admin",
        "/items/%2e%2e;/admin",
        "/items/%2E%2E;jsessionid=x/admin",
        "/items/..%3b/admin",
        "/items/%2e%2e%3Bx/admin",
        "/items/..%253b/admin",
        "/items/..\\admin",
        "/items\\..\\admin",
        "/items/%5C..%5Cadmin",
        "/items/%5c..\\admin",
        "/items/..%5cadmin",
        "/items/%c0%ae%c0%ae/admin",
    ];
    for path in paths {
        let a = s.raw("GET", path, &[("authorization", &bearer), ("x-caracal-resource", &d.resource)]).await;
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        assert_eq!(a.error(), "invalid_token", "{path}");
        assert_eq!(a.body["error_description"], "path traversal not permitted", "{path}");
    }
    assert_eq!(s.gateway_metric("caracal_gateway_denials_path_traversal_total").await, paths.len() as f64);
    assert!(s.upstream.requests().is_empty(), "nothing reached the upstream");
    assert_eq!(
        s.governed("GET", "/items/1", &m, &d.resource).await.status,
        200,
        "refused before the signature: the mandate was not burned"
    );
}

#[tokio::test]
async fn a_parameter_the_upstream_url_sets_cannot_be_repeated_by_the_client() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let resource = "https://tenant.e2e.test";
    s.add_resource(&d, resource, &format!("{}/base?tenant=ops", s.upstream.url())).await;
    let m = s.mandate_for(&d, &session, resource, "tools.read").await;
    // Frameworks that read the last of repeated parameters would see the client's tenant.
    let a = s.governed("GET", "/items/1?tenant=evil&q=1&ten%61nt=evil2", &m, resource).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let seen = s.upstream.requests();
    assert_eq!(seen[0].query.as_deref(), Some("tenant=ops&q=1"), "the operator's parameter wins wholesale");
    assert_eq!(s.gateway_metric("caracal_gateway_requests_allowed_total").await, 1.0);
}

#[tokio::test]
async fn protocol_upgrades_never_reach_the_upstream() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    // h2c smuggling: an upstream that switched protocols would take any request on the tunnel,
    // none of them checked. A WebSocket is the same: one checked GET, then unchecked messages.
    let attempts: [&[(&str, &str)]; 2] = [
        &[("upgrade", "h2c"), ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"), ("connection", "Upgrade, HTTP2-Settings")],
        &[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ],
    ];
    for headers in attempts {
        let m = s.gateway_mandate(&d, &session, "tools.read").await;
        let bearer = format!("Bearer {m}");
        let mut all = vec![("authorization", bearer.as_str()), ("x-caracal-resource", d.resource.as_str()), ("keep-alive", "timeout=5")];
        all.extend_from_slice(headers);
        let a = s.raw("GET", "/items/1", &all).await;
        assert_eq!(a.status, 200, "served as a plain request: {}", a.text);
    }
    for seen in s.upstream.requests() {
        for name in ["upgrade", "http2-settings", "connection", "keep-alive"] {
            assert!(seen.header(name).is_none(), "{name} must not reach the upstream: {:?}", seen.headers);
        }
    }
    assert_eq!(s.gateway_metric("caracal_gateway_requests_allowed_total").await, 2.0);
}
