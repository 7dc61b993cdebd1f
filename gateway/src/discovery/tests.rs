use std::collections::HashMap;

use super::*;

fn config(public_url: Option<&'static str>, tls: bool) -> GatewayConfig {
    let mut env = HashMap::from([
        ("CARACAL_MODE", "dev"),
        ("STS_URL", "http://127.0.0.1:8080"),
        ("ISSUER_URL", "https://sts.example/caracal"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("GATEWAY_STS_HMAC_KEY", "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"),
    ]);
    if let Some(u) = public_url {
        env.insert("GATEWAY_PUBLIC_URL", u);
    }
    if tls {
        env.insert("TLS_CERT_FILE", "/etc/caracal/cert.pem");
        env.insert("TLS_KEY_FILE", "/etc/caracal/key.pem");
    }
    GatewayConfig::from_source(&env).unwrap()
}

fn request(target: &str, hosts: &[&str]) -> RequestHeader {
    let mut req = RequestHeader::build("POST", target.as_bytes(), None).unwrap();
    for h in hosts {
        req.append_header("host", *h).unwrap();
    }
    req
}

#[test]
fn plausible_authorities_are_lowercased_and_anything_else_is_refused() {
    for (raw, want) in [
        ("gw.example", "gw.example"),
        ("GW.Example:8443", "gw.example:8443"),
        ("127.0.0.1:8081", "127.0.0.1:8081"),
        ("[::1]:8081", "[::1]:8081"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
        ("mcp_server.internal", "mcp_server.internal"),
    ] {
        assert_eq!(plausible_authority(raw).as_deref(), Some(want), "{raw}");
    }
    let long = "a".repeat(254);
    for raw in [
        "",
        "evil\"x",
        "a b",
        "host\\",
        "x,resource_metadata=y",
        "user@host",
        "host:",
        "host:0",
        "host:65536",
        "host:99999",
        "host:80:80",
        "[zz::1]:80",
        "[::1",
        "[::1]x",
        ":8080",
        ".host",
        "host/path",
        "höst",
        long.as_str(),
    ] {
        assert_eq!(plausible_authority(raw), None, "{raw:?} must be refused");
    }
}

#[test]
fn unsafe_path_characters_are_percent_encoded() {
    assert_eq!(safe_path("/mcp"), "/mcp");
    assert!(matches!(safe_path("/a/b-c_d.e~f:@!$&'()*+,;=/%41"), Cow::Borrowed(_)), "RFC 3986 path characters stay");
    assert_eq!(safe_path("/a\"b\\c"), "/a%22b%5Cc");
    assert_eq!(safe_path("/a b\tc\r\nd"), "/a%20b%09c%0D%0Ad");
    assert_eq!(safe_path("/é"), "/%C3%A9");
    assert_eq!(safe_path("/50%/%zz/%4"), "/50%25/%25zz/%254", "a % that starts no escape is itself escaped");
    assert_eq!(safe_path("/<x>{y}|^`"), "/%3Cx%3E%7By%7D%7C%5E%60");
}

#[test]
fn the_well_known_path_names_the_protected_path() {
    assert_eq!(protected_path("/.well-known/oauth-protected-resource"), Some(""));
    assert_eq!(protected_path("/.well-known/oauth-protected-resource/mcp"), Some("/mcp"));
    assert_eq!(protected_path("/.well-known/oauth-protected-resource/public/mcp"), Some("/public/mcp"));
    assert_eq!(protected_path("/.well-known/oauth-protected-resource-x"), None);
    assert_eq!(protected_path("/.well-known/oauth-authorization-server"), None);
    assert_eq!(protected_path("/mcp"), None);
}

#[test]
fn metadata_urls_insert_the_well_known_segment_before_the_path() {
    assert_eq!(metadata_url("https://gw.example", "/mcp"), "https://gw.example/.well-known/oauth-protected-resource/mcp");
    assert_eq!(metadata_url("https://gw.example", "/"), "https://gw.example/.well-known/oauth-protected-resource", "RFC 9728 §3.1");
    assert_eq!(metadata_url("https://gw.example", "/a\"b"), "https://gw.example/.well-known/oauth-protected-resource/a%22b");
}

#[test]
fn the_document_is_for_the_url_it_was_built_from() {
    let d = document("https://gw.example", "/mcp", "https://sts.example/caracal");
    assert_eq!(d["resource"], "https://gw.example/mcp", "RFC 9728 §3.3");
    assert_eq!(d["authorization_servers"], serde_json::json!(["https://sts.example/caracal"]));
    assert_eq!(d["bearer_methods_supported"], serde_json::json!(["header"]));
    assert!(d["resource_name"].is_string());
    assert!(d.get("scopes_supported").is_none(), "scopes are per zone: no zone-independent answer");
    assert_eq!(document("https://gw.example", "", "https://sts.example")["resource"], "https://gw.example", "the root form");
    assert_eq!(
        document("https://gw.example", "/a\"b", "https://sts.example")["resource"],
        "https://gw.example/a%22b",
        "as in the challenge"
    );
}

#[test]
fn the_challenge_names_the_metadata_and_an_error_only_for_a_refused_token() {
    assert_eq!(
        challenge(Some("https://gw.example"), "/mcp", None),
        r#"Bearer realm="caracal-gateway", resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcp""#
    );
    assert_eq!(
        challenge(Some("https://gw.example"), "/", Some("invalid_token")),
        r#"Bearer realm="caracal-gateway", resource_metadata="https://gw.example/.well-known/oauth-protected-resource", error="invalid_token""#
    );
    assert_eq!(challenge(None, "/mcp", Some("invalid_token")), r#"Bearer realm="caracal-gateway", error="invalid_token""#);
    let c = challenge(Some("https://gw.example"), "/x\"y\\z\r\n", None);
    assert_eq!(c.matches('"').count(), 4, "nothing in the path ends a quoted string: {c}");
    assert!(http::HeaderValue::from_str(&c).is_ok(), "a valid header value: {c}");
}

#[test]
fn the_origin_comes_from_the_configuration_else_from_the_request() {
    let configured = config(Some("https://MCP.example.test:8443/"), false);
    assert_eq!(origin(&configured, &request("/mcp", &["attacker.example"])).as_deref(), Some("https://mcp.example.test:8443"));
    assert_eq!(origin(&configured, &request("/mcp", &["evil\"x"])).as_deref(), Some("https://mcp.example.test:8443"), "Host unused");

    let plain = config(None, false);
    assert_eq!(origin(&plain, &request("/mcp", &["gw.example:8081"])).as_deref(), Some("http://gw.example:8081"));
    assert_eq!(origin(&config(None, true), &request("/mcp", &["gw.example"])).as_deref(), Some("https://gw.example"), "TLS listener");
    assert_eq!(origin(&plain, &request("/mcp", &["evil\"x"])), None);
    assert_eq!(origin(&plain, &request("/mcp", &[])), None, "no Host");
    assert_eq!(origin(&plain, &request("/mcp", &["a.example", "b.example"])), None, "two Hosts (RFC 9112 §3.2: 400)");
    // HTTP/2 carries `:authority` in the URI; it wins over Host (Pingora refuses a conflicting
    // HTTP/1.1 absolute-form target itself, and keeps only its path in the URI).
    let mut h2 = request("/mcp", &["other.example"]);
    h2.set_uri("http://h2.example:8081/mcp".parse().unwrap());
    assert_eq!(origin(&plain, &h2).as_deref(), Some("http://h2.example:8081"));
}
