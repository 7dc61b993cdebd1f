//! Upstream safety through the real gateway: private and metadata addresses, the host allowlist,
//! redirects.

use caracal_e2e::{Stack, StackOptions};

fn opts(env: &[(&str, &str)]) -> StackOptions {
    StackOptions { gateway_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() }
}

#[tokio::test]
async fn private_upstreams_are_refused_by_default() {
    let s = Stack::start_with(opts(&[("ALLOW_PRIVATE_UPSTREAMS", "false")])).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    // The demo upstream is on 127.0.0.1; also try a name that resolves to loopback.
    s.add_resource(&d, "https://named.e2e.test", &format!("http://localhost:{}/", s.upstream.addr.port())).await;
    for resource in [d.resource.clone(), "https://named.e2e.test".to_owned()] {
        let m = s.mandate_for(&d, &session, &resource, "tools.read").await;
        let a = s.governed("GET", "/items/1", &m, &resource).await;
        assert_eq!(a.status, 502, "{resource}: {}", a.text);
        assert_eq!(a.error(), "internal_error");
        assert_eq!(a.body["error_description"], "upstream not addressable");
    }
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 2.0);
    assert!(s.upstream.requests().is_empty(), "the loopback upstream was never dialed");
}

#[tokio::test]
async fn metadata_is_refused_even_when_private_upstreams_are_allowed() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    for (identifier, url) in [
        ("https://meta.e2e.test", "http://169.254.169.254/latest/"),
        ("https://meta6.e2e.test", "http://[::ffff:169.254.169.254]/"),
        ("https://zero.e2e.test", "http://0.0.0.0:80/"),
    ] {
        s.add_resource(&d, identifier, url).await;
        let m = s.mandate_for(&d, &session, identifier, "tools.read").await;
        let a = s.governed("GET", "/x", &m, identifier).await;
        assert_eq!(a.status, 502, "{url}: {}", a.text);
        assert_eq!(a.body["error_description"], "upstream not addressable");
    }
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 3.0);
}

#[tokio::test]
async fn the_host_allowlist_is_enforced() {
    let s = Stack::start_with(opts(&[("UPSTREAM_HOST_ALLOWLIST", "api.only.example")])).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let a = s.governed("GET", "/items/1", &m, &d.resource).await;
    assert_eq!(a.status, 502, "{}", a.text);
    assert_eq!(a.body["error_description"], "upstream not addressable");
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn redirects_are_returned_not_followed_and_absolute_locations_are_stripped() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    s.add_resource(&d, "https://redirects.e2e.test", &format!("{}/base", s.upstream.url())).await;
    let m = s.mandate_for(&d, &session, "https://redirects.e2e.test", "tools.read").await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects
        .get(format!("{}/redirect", s.gw_url))
        .bearer_auth(&m)
        .header("x-caracal-resource", "https://redirects.e2e.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the upstream's redirect is relayed, not followed");
    assert!(r.headers().get("location").is_none(), "an absolute Location is stripped");
    assert!(r.headers().get("server").is_none(), "server banners are stripped");
    assert!(r.headers().get("x-request-id").is_some());
    assert_eq!(s.upstream.requests().len(), 0, "the recording fallback was not hit; only the redirect route");
}

#[tokio::test]
async fn path_traversal_is_refused_before_anything_is_spent() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    for path in
        ["/items/../admin", "/items/%2e%2e/admin", "/items/%252e%252e/admin", "/items/..%2fadmin", "/items/%5c..%5cadmin", "/items/%zz"]
    {
        let bearer = format!("Bearer {m}");
        let a = s.raw("GET", path, &[("authorization", &bearer), ("x-caracal-resource", &d.resource)]).await;
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        assert_eq!(a.error(), "invalid_token");
        assert_eq!(a.body["error_description"], "path traversal not permitted");
    }
    assert_eq!(s.gateway_metric("caracal_gateway_denials_path_traversal_total").await, 6.0);
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200, "the mandate was not burned");
}

#[tokio::test]
async fn locations_a_browser_reads_as_another_host_are_stripped() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let resource = "https://redirects.e2e.test";
    s.add_resource(&d, resource, &format!("{}/base", s.upstream.url())).await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cases: &[(&str, bool)] = &[
        ("/\\evil.example", false),
        ("\\\\evil.example", false),
        ("\\/evil.example", false),
        ("/%5Cevil.example", false),
        ("/%5cevil.example/x", false),
        ("/%2F/evil.example", false),
        ("%2F%2Fevil.example", false),
        ("https:/evil.example", false),
        ("https:evil.example", false),
        ("//evil.example", false),
        ("/ /evil.example", false),
        ("/v2/items?page=2", true),
        ("next/page", true),
        ("?page=2", true),
    ];
    for (location, kept) in cases {
        let m = s.mandate_for(&d, &session, resource, "tools.read").await;
        let r = no_redirects
            .get(format!("{}/redirect-to?to={}", s.gw_url, encode(location)))
            .bearer_auth(&m)
            .header("x-caracal-resource", resource)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{location}: the redirect is relayed");
        let got = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        let content = r.headers().get("content-location").map(|v| v.to_str().unwrap().to_owned());
        if *kept {
            assert_eq!(got.as_deref(), Some(*location), "an unambiguous relative reference is kept");
            assert_eq!(content.as_deref(), Some(*location));
        } else {
            assert_eq!(got, None, "{location:?} is read as another host by browsers and must be stripped");
            assert_eq!(content, None, "{location:?} (Content-Location)");
        }
    }
    assert_eq!(s.gateway_metric("caracal_gateway_requests_allowed_total").await, cases.len() as f64);
    assert_eq!(s.gateway_metric("caracal_gateway_requests_denied_total").await, 0.0);
}

/// Percent-encodes every byte but the unreserved ones.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
