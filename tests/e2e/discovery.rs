//! OAuth discovery as an MCP client walks it (MCP authorization 2025-11-25): a 401 from the
//! gateway names its RFC 9728 protected-resource metadata, that document names the STS as the
//! authorization server, and the STS's RFC 8414 metadata names the real token endpoint. The
//! public URL comes from `GATEWAY_PUBLIC_URL` when set, else from the request; a `Host` that is not
//! a plausible authority never reaches a header.

use caracal_e2e::stack::Answer;
use caracal_e2e::{Stack, StackOptions};
use serde_json::Value;

const PRM: &str = "/.well-known/oauth-protected-resource";

/// The `resource_metadata` parameter of a `WWW-Authenticate: Bearer …` challenge.
fn resource_metadata(challenge: &str) -> Option<&str> {
    let start = challenge.find("resource_metadata=\"")? + "resource_metadata=\"".len();
    let len = challenge[start..].find('"')?;
    Some(&challenge[start..start + len])
}

fn challenge(a: &Answer) -> &str {
    a.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("401 without a challenge: {a:?}"))
}

/// RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
fn authorization_server_metadata_url(issuer: &str) -> String {
    let u = reqwest::Url::parse(issuer).unwrap();
    let path = u.path().trim_end_matches('/');
    format!("{}/.well-known/oauth-authorization-server{path}", u.origin().ascii_serialization())
}

async fn get_json(http: &reqwest::Client, url: &str) -> Answer {
    Answer::read(http.get(url).send().await.unwrap()).await
}

/// What [`with_host`] read: status, headers (raw values), body.
struct Raw {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Value,
}

impl Raw {
    /// Every `WWW-Authenticate` value.
    fn challenges(&self) -> Vec<String> {
        self.headers.iter().filter(|(k, _)| k == "www-authenticate").map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
    }
}

/// One request written byte for byte with the given `Host` line (clients refuse odd ones).
async fn with_host(s: &Stack, method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> Raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.gw_url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let (head, body) = (&raw[..end], raw.get(end + 4..).unwrap_or_default());
    let mut lines = head.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().and_then(|l| std::str::from_utf8(l).ok()).and_then(|l| l.split(' ').nth(1)?.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| {
            let colon = l.iter().position(|b| *b == b':')?;
            Some((String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase(), l[colon + 1..].trim_ascii().to_vec()))
        })
        .collect();
    Raw { status, headers, body: serde_json::from_slice(body).unwrap_or(Value::Null) }
}

#[tokio::test]
async fn a_401_leads_to_the_resource_metadata_then_to_the_sts_metadata_and_its_token_endpoint() {
    let s = Stack::start().await;

    // 1. No token: 401 with the original's body, and a challenge naming the metadata (no error code:
    //    RFC 6750 §3.1 — the request carried no credentials).
    let a = s.call("POST", "/mcp?session=1", &[("x-caracal-resource", "mcp-demo"), ("content-type", "application/json")]).await;
    assert_eq!((a.status, a.error()), (401, "invalid_token"), "{}", a.text);
    assert_eq!(a.body["error_description"], "missing bearer token", "the JSON body is unchanged");
    assert!(a.body["requestId"].is_string());
    assert_eq!(s.gateway_metric("caracal_gateway_denials_missing_auth_total").await, 1.0);
    let c = challenge(&a);
    assert!(c.starts_with("Bearer "), "{c}");
    assert!(!c.contains("error="), "no credentials, no error code: {c}");
    let metadata_url = resource_metadata(c).unwrap_or_else(|| panic!("no resource_metadata in {c}"));
    assert_eq!(metadata_url, format!("{}{PRM}/mcp", s.gw_url), "path-inserted form of the request's URL, query dropped");

    // 2. The protected-resource metadata: `resource` is the URL the client asked for (RFC 9728 §3.3).
    let prm = get_json(&s.http, metadata_url).await;
    assert_eq!(prm.status, 200, "{}", prm.text);
    assert!(prm.headers["content-type"].to_str().unwrap().starts_with("application/json"));
    let cache = prm.headers["cache-control"].to_str().unwrap();
    assert!(cache.contains("max-age=") && !cache.contains("no-store"), "cacheable: {cache}");
    assert_eq!(prm.body["resource"], format!("{}/mcp", s.gw_url), "{}", prm.text);
    assert_eq!(prm.body["bearer_methods_supported"], serde_json::json!(["header"]));
    assert!(prm.body["resource_name"].is_string());
    let servers = prm.body["authorization_servers"].as_array().expect("authorization_servers");
    assert_eq!(servers.len(), 1);
    let issuer = servers[0].as_str().unwrap();
    assert_eq!(issuer, s.issuer, "the STS is the authorization server");

    // 3. RFC 8414 metadata, found by the RFC's construction, with a byte-identical issuer.
    let asm = get_json(&s.http, &authorization_server_metadata_url(issuer)).await;
    assert_eq!(asm.status, 200, "{}", asm.text);
    assert_eq!(asm.body["issuer"].as_str(), Some(issuer), "RFC 8414 §3.3: identical issuer");
    assert_eq!(asm.body["grant_types_supported"], serde_json::json!(["urn:ietf:params:oauth:grant-type:token-exchange"]));
    assert_eq!(asm.body["response_types_supported"], serde_json::json!([]), "no authorization endpoint, no response types");
    assert!(asm.body.get("authorization_endpoint").is_none(), "agents mint by client secret + token exchange");
    assert_eq!(asm.body["token_endpoint_auth_methods_supported"], serde_json::json!(["client_secret_post"]));
    let token_endpoint = asm.body["token_endpoint"].as_str().expect("token_endpoint");

    // 4. The token endpoint really is the STS's: a malformed form gets its own 400 (code
    //    `invalid_token` for a malformed exchange, as the original answered; README "Admin API").
    let r = s
        .http
        .post(token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=x")
        .send()
        .await
        .unwrap();
    let r = Answer::read(r).await;
    assert_eq!((r.status, r.error()), (400, "invalid_token"), "{}", r.text);
    assert!(r.body["error_description"].as_str().unwrap().contains("grant_type"), "{}", r.text);

    // The root form describes the gateway's origin; nothing reached the upstream.
    let root = get_json(&s.http, &format!("{}{PRM}", s.gw_url)).await;
    assert_eq!((root.status, root.body["resource"].as_str()), (200, Some(s.gw_url.as_str())), "{}", root.text);
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_refused_token_gets_invalid_token_in_the_challenge_and_the_metadata_is_the_gateways_own() {
    let s = Stack::start().await;
    let a = s.call("GET", "/tools/list", &[("authorization", "Bearer not.a.jwt"), ("x-caracal-resource", "mcp-demo")]).await;
    assert_eq!((a.status, a.error()), (401, "invalid_token"), "{}", a.text);
    assert_eq!(a.body["error_description"], "malformed bearer token", "the JSON body is unchanged");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_bad_bearer_total").await, 1.0);
    let c = challenge(&a);
    assert!(c.contains("error=\"invalid_token\""), "a presented and refused token: RFC 6750 §3.1 error code: {c}");
    assert_eq!(resource_metadata(c), Some(format!("{}{PRM}/tools/list", s.gw_url).as_str()), "{c}");

    // With `X-Caracal-Resource` the metadata is still the gateway's (the upstream's would name an
    // authorization server whose tokens the gateway does not accept), and is never proxied.
    let prm = s.call("GET", &format!("{PRM}/tools/list"), &[("x-caracal-resource", "mcp-demo")]).await;
    assert_eq!(prm.status, 200, "{}", prm.text);
    assert_eq!(prm.body["resource"], format!("{}/tools/list", s.gw_url));
    assert!(s.upstream.requests().is_empty());
    assert_eq!(s.gateway_metric("caracal_gateway_requests_total").await, 1.0, "metadata requests are not governed requests");
}

#[tokio::test]
async fn the_configured_public_url_wins_over_the_host_header() {
    let public = "https://mcp.example.test:8443";
    let opts = StackOptions { gateway_env: vec![("GATEWAY_PUBLIC_URL".into(), format!("{public}/"))], ..Default::default() };
    let s = Stack::start_with(opts).await;
    let a = with_host(&s, "POST", "/mcp", "attacker.example", &[("x-caracal-resource", "mcp-demo")]).await;
    assert_eq!(a.status, 401);
    let c = a.challenges().concat();
    assert_eq!(resource_metadata(&c), Some(format!("{public}{PRM}/mcp").as_str()), "{c}");
    assert!(!c.contains("attacker"), "{c}");

    let prm = s.call("GET", &format!("{PRM}/mcp"), &[]).await;
    assert_eq!((prm.status, prm.body["resource"].as_str()), (200, Some(format!("{public}/mcp").as_str())), "{}", prm.text);
    let prm = with_host(&s, "GET", &format!("{PRM}/mcp"), "attacker.example", &[]).await;
    assert_eq!((prm.status, prm.body["resource"].as_str()), (200, Some(format!("{public}/mcp").as_str())), "the Host is not consulted");
}

#[tokio::test]
async fn a_host_that_is_not_an_authority_never_reaches_a_header() {
    let s = Stack::start().await;
    let mut refused = 0.0;
    for host in ["evil\"x", "a b", "evil.example\\", "x,resource_metadata=y", "host:99999", "user@host"] {
        let a = with_host(&s, "POST", "/mcp", host, &[("x-caracal-resource", "mcp-demo")]).await;
        if a.status == 400 && a.challenges().is_empty() {
            continue; // The HTTP parser refused it before the gateway saw it: also fine.
        }
        assert_eq!(a.status, 401, "{host}");
        let c = a.challenges();
        assert_eq!(c.len(), 1, "{host}: {c:?}");
        assert_eq!(c[0], "Bearer realm=\"caracal-gateway\"", "no public URL can be derived from {host:?}, nothing of it is copied");
        let prm = with_host(&s, "GET", &format!("{PRM}/mcp"), host, &[]).await;
        assert_eq!((prm.status, prm.body["error"].as_str()), (400, Some("invalid_request")), "metadata refused for Host {host:?}");
        assert!(prm.challenges().is_empty());
        refused += 1.0;
    }
    assert!(refused >= 3.0, "most of these reach the gateway ({refused})");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_bad_host_total").await, refused);
    assert!(s.upstream.requests().is_empty());

    // A path with characters that would end the quoted string is percent-encoded, never copied.
    let a = with_host(&s, "GET", "/a\"b\\c", &s.gw_url["http://".len()..], &[("x-caracal-resource", "mcp-demo")]).await;
    if a.status == 401 {
        let c = a.challenges().concat();
        let url = resource_metadata(&c).unwrap_or_else(|| panic!("{c}"));
        assert_eq!(url, format!("{}{PRM}/a%22b%5Cc", s.gw_url), "{c}");
        let prm: Value = s.http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(prm["resource"], format!("{}/a%22b%5Cc", s.gw_url));
    } else {
        assert_eq!(a.status, 400, "the HTTP parser may refuse the path itself");
    }
}
