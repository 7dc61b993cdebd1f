//! Credential providers against a real OAuth server (`oidc-provider`, client credentials grant;
//! `tests/oidc/provider.mjs`): the STS fetches the provider's access token with the sealed client
//! secret, the gateway injects it, the token is held and replaced before it expires, and an
//! outage of the provider refuses the request (fail closed) without opening the zone's circuit.
//! The provider is provisioned by the published `ensure_client_credentials_provider`; the API-key
//! providers and the other reconcilers are in `sdk.rs`.

use std::time::Duration;

use caracal_e2e::oidc::{CLIENT_SECRET, OpenIdProvider};
use caracal_e2e::pki::TestPki;
use caracal_e2e::{Stack, StackOptions};
use serde_json::{Value, json};

const RESOURCE: &str = "https://weather.oauth.e2e";

/// The bearer the upstream saw on its last request.
fn last_bearer(s: &Stack) -> String {
    let seen = s.upstream.requests();
    seen.last().and_then(|r| r.header("authorization")).and_then(|v| v.strip_prefix("Bearer ")).expect("a bearer upstream").to_owned()
}

/// A real OAuth server on the test PKI and a stack whose STS trusts it (`PROVIDER_CA_FILE`) and may
/// reach it on loopback (`PROVIDER_PRIVATE_HOSTS`), with the demo zone active.
async fn with_provider(name: &str) -> (std::path::PathBuf, TestPki, OpenIdProvider, Stack, caracal_e2e::stack::Demo) {
    let dir = caracal_e2e::infra::scratch_dir(name);
    let pki = TestPki::generate(&dir.join("pki"));
    let op = OpenIdProvider::start(&pki, &dir).await;
    let opts = StackOptions {
        control_plane_env: vec![
            ("PROVIDER_CA_FILE".into(), pki.ca.display().to_string()),
            ("PROVIDER_PRIVATE_HOSTS".into(), "localhost".into()),
        ],
        ..Default::default()
    };
    let s = Stack::start_with(opts).await;
    let d = s.demo(true).await;
    (dir, pki, op, s, d)
}

/// What the provider says of `token` (RFC 7662), asked as its `upstream-api` client.
async fn introspect(pki: &TestPki, op: &OpenIdProvider, token: &str) -> Value {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let answer = http
        .post(format!("{}/token/introspection", op.issuer))
        .basic_auth("upstream-api", Some(CLIENT_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    answer.json().await.unwrap()
}

/// Runs the published `caracalai_admin.ensure_client_credentials_provider` for the provider's
/// `upstream-api` client; the provider id.
async fn ensure_client_credentials_provider(s: &Stack, d: &caracal_e2e::stack::Demo, issuer: &str) -> String {
    let python = std::env::var("CARACAL_SDK_PYTHON").expect("CARACAL_SDK_PYTHON (deploy/local/test.sh installs the published clients)");
    let script = r#"
import os
from caracalai_admin import AdminClient, ensure_client_credentials_provider
admin = AdminClient(api_url=os.environ["CP"], admin_token=os.environ["ADMIN_TOKEN"])
print(ensure_client_credentials_provider(admin, os.environ["ZONE"], name="weather-oauth", identifier="provider://weather-oauth",
      public_config={"token_url": os.environ["ISSUER"] + "/token", "client_id": "upstream-api", "scope": "weather.read"},
      client_secret=os.environ["OP_SECRET"]))
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script])
        .env("CP", &s.cp_url)
        .env("ADMIN_TOKEN", &d.admin)
        .env("ZONE", &d.zone_id)
        .env("ISSUER", issuer)
        .env("OP_SECRET", CLIENT_SECRET)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ensure_client_credentials_provider failed:\n{stdout}\n{stderr}");
    stdout.trim().to_owned()
}

#[tokio::test]
async fn a_client_credentials_provider_yields_held_refreshed_tokens_and_fails_closed() {
    let (_dir, pki, mut op, s, d) = with_provider("provider-oauth").await;
    let z = &d.zone_id;
    // Provisioned by the published reconciler, `ensure_client_credentials_provider`.
    let id = ensure_client_credentials_provider(&s, &d, &op.issuer).await;
    assert_eq!(ensure_client_credentials_provider(&s, &d, &op.issuer).await, id, "converges: the same provider");
    let provider = s.admin_ok("GET", &format!("/v1/zones/{z}/providers/{id}"), &d.admin, None, 200).await;
    assert_eq!(provider["secret_config_keys"], json!(["client_secret"]));
    assert!(!provider.to_string().contains(CLIENT_SECRET), "{provider}");
    s.admin_ok(
        "POST",
        &format!("/v1/zones/{z}/resources"),
        &d.admin,
        Some(json!({"identifier": RESOURCE, "upstream_url": s.upstream.url(), "scopes": ["tools.read"],
            "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}], "credential_provider_id": provider["id"]})),
        201,
    )
    .await;
    let session = s.session(&d).await;
    let call = || async { s.governed("GET", "/forecast", &s.mandate_for(&d, &session, RESOURCE, "tools.read").await, RESOURCE).await };

    let a = call().await;
    assert_eq!(a.status, 200, "{}\n{}", a.text, s.control_plane.log_tail(20));
    let first = last_bearer(&s);
    // A real token of the provider, for the client and scope configured.
    let introspected = introspect(&pki, &op, first.as_str()).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["client_id"], "upstream-api");
    assert_eq!(introspected["scope"], "weather.read");

    // Held: the next request carries the same token.
    assert_eq!(call().await.status, 200);
    assert_eq!(last_bearer(&s), first, "the token is held, not fetched per request");
    // It lives 36 s and is replaced 30 s before it expires.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(call().await.status, 200);
    let second = last_bearer(&s);
    assert_ne!(second, first, "replaced before expiry");

    // An outage: once the held token is due, the request is refused and reaches nothing.
    op.stop().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let seen = s.upstream.requests().len();
    for _ in 0..6 {
        let a = call().await;
        assert_eq!((a.status, a.error()), (502, "http_request_failed"), "{}", a.text);
    }
    assert_eq!(s.upstream.requests().len(), seen, "nothing reached the upstream without its credential");
    assert_eq!(s.control_plane_metric("caracal_sts_denials_total{reason=\"provider_unavailable\"}").await, 6.0);
    assert_eq!(s.gateway_metric("caracal_gateway_sts_circuit_opened_total").await, 0.0, "a provider outage is not an STS outage");
    assert!(!s.control_plane.log().contains(CLIENT_SECRET), "the client secret is never logged");
    assert!(!s.control_plane.log().contains(&second), "nor a token");
}

/// `bearer_token` and `http_basic` providers: the sealed secret becomes the header the upstream
/// sees (never shown by the API), and a malformed configuration is refused with every problem.
#[tokio::test]
async fn static_credential_providers_are_injected_as_configured() {
    use base64::Engine;
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let z = &d.zone_id;
    let session = s.session(&d).await;
    let cases = [
        ("bearer", json!({"kind": "bearer_token", "config_json": {"token": "tok-123"}}), "Bearer tok-123".to_owned()),
        (
            "basic",
            json!({"kind": "http_basic", "config_json": {"username": "svc", "password": "pw-456"}}),
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("svc:pw-456")),
        ),
    ];
    for (name, mut body, expected) in cases {
        body["name"] = name.into();
        let p = s.admin_ok("POST", &format!("/v1/zones/{z}/providers"), &d.admin, Some(body), 201).await;
        assert!(!p.to_string().contains("tok-123") && !p.to_string().contains("pw-456"), "{p}");
        let identifier = format!("https://{name}.static.e2e");
        s.admin_ok(
            "POST",
            &format!("/v1/zones/{z}/resources"),
            &d.admin,
            Some(json!({"identifier": identifier, "upstream_url": s.upstream.url(), "scopes": ["tools.read"],
                "operation_enforcement": "transport_uniform", "credential_provider_id": p["id"]})),
            201,
        )
        .await;
        let a = s.governed("GET", "/x", &s.mandate_for(&d, &session, &identifier, "tools.read").await, &identifier).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(s.upstream.requests().last().unwrap().header("authorization"), Some(expected.as_str()), "{name}");
    }
    let bad = s
        .admin(
            "POST",
            &format!("/v1/zones/{z}/providers"),
            &d.admin,
            Some(json!({"name": "bad", "kind": "http_basic", "config_json": {"username": "a:b", "header": "Host"}})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    for needle in ["username", "Host", "password"] {
        assert!(bad.text.contains(needle), "{needle}: {}", bad.text);
    }
}

/// `private_key_jwt` (RFC 7523 §2.2): the STS authenticates to the real provider with a client
/// assertion signed by the sealed private key, never shown or logged; a key the provider does not
/// know is refused there, and the request fails closed; a key that is not a key is refused on upload.
#[tokio::test]
async fn a_private_key_jwt_provider_authenticates_with_a_signed_assertion() {
    let (dir, pki, op, s, d) = with_provider("provider-jwt").await;
    let z = &d.zone_id;
    let pem = std::fs::read_to_string(&op.jwt_client_key).unwrap();
    let key_body = pem.lines().nth(1).unwrap().to_owned();
    let config = |key: &str| {
        json!({"token_url": format!("{}/token", op.issuer), "client_id": "upstream-api-jwt", "client_auth_method": "private_key_jwt",
               "key_id": "svc-1", "scope": "weather.read", "private_key": key})
    };
    let providers = format!("/v1/zones/{z}/providers");
    let p = s
        .admin_ok(
            "POST",
            &providers,
            &d.admin,
            Some(json!({"name": "jwt", "kind": "oauth2_client_credentials", "config_json": config(&pem)})),
            201,
        )
        .await;
    assert_eq!(p["secret_config_keys"], json!(["private_key"]));
    assert!(!p.to_string().contains(&key_body), "the key is never shown: {p}");
    let id = p["id"].as_str().unwrap();
    s.admin_ok(
        "POST",
        &format!("/v1/zones/{z}/resources"),
        &d.admin,
        Some(json!({"identifier": RESOURCE, "upstream_url": s.upstream.url(), "scopes": ["tools.read"],
            "operation_enforcement": "transport_uniform", "credential_provider_id": id})),
        201,
    )
    .await;
    let session = s.session(&d).await;
    let call = || async { s.governed("GET", "/forecast", &s.mandate_for(&d, &session, RESOURCE, "tools.read").await, RESOURCE).await };
    let a = call().await;
    assert_eq!(a.status, 200, "{}\n{}", a.text, s.control_plane.log_tail(20));
    let introspected = introspect(&pki, &op, last_bearer(&s).as_str()).await;
    assert_eq!(
        (introspected["active"].as_bool(), introspected["client_id"].as_str()),
        (Some(true), Some("upstream-api-jwt")),
        "{introspected}"
    );

    // Another key, unknown to the provider: its assertion is refused there; nothing goes upstream.
    let other = dir.join("other.key");
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let other_pem = std::fs::read_to_string(&other).unwrap();
    s.admin_ok("PATCH", &format!("{providers}/{id}"), &d.admin, Some(json!({"config_json": config(&other_pem)})), 200).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = call().await;
        if a.status == 502 {
            assert_eq!(a.error(), "http_request_failed", "{}", a.text);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the changed key applies: {} {}", a.status, a.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = s.upstream.requests().len();
    assert_eq!(call().await.status, 502);
    assert_eq!(s.upstream.requests().len(), after, "refused requests reach nothing");

    for (body, needle) in [
        (
            json!({"name": "no-key", "kind": "oauth2_client_credentials", "config_json": {"token_url": "https://idp.e2e/token", "client_id": "c", "client_auth_method": "private_key_jwt"}}),
            "private_key",
        ),
        (
            json!({"name": "bad-key", "kind": "oauth2_client_credentials", "config_json": config("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}),
            "PEM",
        ),
    ] {
        let a = s.admin("POST", &providers, &d.admin, Some(body)).await;
        assert_eq!((a.status, a.error()), (400, "invalid_provider_config"), "{}", a.text);
        assert!(a.text.contains(needle), "{needle}: {}", a.text);
    }
    let log = s.control_plane.log();
    assert!(!log.contains(&key_body) && !log.contains(other_pem.lines().nth(1).unwrap()), "no key in the log");
}
