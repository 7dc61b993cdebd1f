//! Subject federation's own rules, on the real binaries: the subject-issuer admin API and the
//! refusals that happen before an issuer's keys are used (algorithm, `kid`, the SSRF guard of the
//! JWKS fetch). The flow with a real OpenID provider is `sdk::the_published_sdk_federates_…`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caracal_e2e::Stack;
use caracal_e2e::infra::free_port;
use caracal_e2e::stack::{Answer, Demo};
use serde_json::{Value, json};

const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// An unsigned-looking id_token with `header` and `claims` (its signature is never reached).
fn token(header: Value, claims: Value) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{}", enc(&header), enc(&claims), URL_SAFE_NO_PAD.encode([7u8; 64]))
}

fn claims(iss: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": iss, "sub": "user-1", "aud": "app", "iat": now, "exp": now + 300})
}

async fn federate(s: &Stack, d: &Demo, id_token: &str) -> Answer {
    s.token(&[
        ("grant_type", GRANT),
        ("zone_id", &d.zone_id),
        ("application_id", &d.app_id),
        ("client_secret", &d.secret),
        ("subject_token", id_token),
        ("subject_token_type", ID_TOKEN),
    ])
    .await
}

#[tokio::test]
async fn subject_issuers_are_validated_bounded_and_archived() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let path = format!("/v1/zones/{}/subject-issuers", d.zone_id);
    let body = |issuer: &str, jwks: &str, aud: &str| Some(json!({"issuer": issuer, "jwks_url": jwks, "audience": aud}));
    for (b, why) in [
        (body("http://idp.example", "https://idp.example/jwks", "app"), "http issuer"),
        (body("https://idp.example", "http://idp.example/jwks", "app"), "http jwks_url"),
        (body("https://u:p@idp.example", "https://idp.example/jwks", "app"), "userinfo"),
        (body("https://idp.example", "https://idp.example/jwks?x=1", "app"), "query"),
        (body("https://idp.example", "https://idp.example/jwks", ""), "empty audience"),
        (body("https://idp.example", "https://idp.example/jwks", &"a".repeat(513)), "long audience"),
    ] {
        let a = s.admin("POST", &path, &d.admin, b).await;
        assert_eq!((a.status, a.error()), (400, "invalid_subject_issuer"), "{why}: {}", a.text);
    }
    let unknown =
        s.admin("POST", &path, &d.admin, Some(json!({"issuer": "https://a", "jwks_url": "https://a/j", "audience": "x", "x": 1}))).await;
    assert_eq!(unknown.status, 400, "unknown fields are refused: {}", unknown.text);

    let first = s.admin_ok("POST", &path, &d.admin, body("https://idp.example", "https://idp.example/jwks", "app"), 201).await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["issuer"], "https://idp.example");
    let dup = s.admin("POST", &path, &d.admin, body("https://idp.example", "https://other.example/jwks", "app2")).await;
    assert_eq!((dup.status, dup.error()), (409, "subject_issuer_exists"));
    for i in 1..20 {
        s.admin_ok("POST", &path, &d.admin, body(&format!("https://idp{i}.example"), "https://idp.example/jwks", "app"), 201).await;
    }
    let over = s.admin("POST", &path, &d.admin, body("https://idp99.example", "https://idp.example/jwks", "app")).await;
    assert_eq!((over.status, over.error()), (409, "subject_issuer_limit_reached"));
    let listed = s.admin_ok("GET", &format!("{path}?limit=100"), &d.admin, None, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 20);
    assert_eq!(s.admin_ok("GET", &format!("{path}/{id}"), &d.admin, None, 200).await["audience"], "app");

    s.admin_ok("DELETE", &format!("{path}/{id}"), &d.admin, None, 204).await;
    let gone = s.admin("DELETE", &format!("{path}/{id}"), &d.admin, None).await;
    assert_eq!((gone.status, gone.error()), (404, "subject_issuer_not_found"));
    assert_eq!(s.admin("GET", &format!("{path}/{id}"), &d.admin, None).await.status, 404);
    // Archived: the issuer may be registered again, and the slot is free.
    s.admin_ok("POST", &path, &d.admin, body("https://idp.example", "https://idp.example/jwks2", "app"), 201).await;
}

#[tokio::test]
async fn id_tokens_are_refused_before_their_keys_and_jwks_stay_off_private_addresses() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let path = format!("/v1/zones/{}/subject-issuers", d.zone_id);
    let port = free_port();
    // Without SUBJECT_ISSUER_PRIVATE_HOSTS: an IP literal and a name resolving to loopback.
    for (iss, jwks) in [
        ("https://literal.e2e.test", format!("https://127.0.0.1:{port}/jwks")),
        ("https://named.e2e.test", format!("https://localhost:{port}/jwks")),
    ] {
        s.admin_ok("POST", &path, &d.admin, Some(json!({"issuer": iss, "jwks_url": jwks, "audience": "app"})), 201).await;
        let a = federate(&s, &d, &token(json!({"alg": "RS256", "kid": "k1"}), claims(iss))).await;
        assert_eq!((a.status, a.error()), (503, "sts_unavailable"), "{iss}: {}", a.text);
    }
    assert_eq!(s.control_plane_metric("caracal_sts_denials_total{reason=\"unavailable\"}").await, 2.0);

    let iss = "https://literal.e2e.test";
    for (header, why) in [
        (json!({"alg": "HS256", "kid": "k1"}), "algorithm not accepted"),
        (json!({"alg": "none", "kid": "k1"}), "malformed"),
        (json!({"alg": "RS256"}), "no kid"),
    ] {
        let a = federate(&s, &d, &token(header, claims(iss))).await;
        assert_eq!((a.status, a.error()), (401, "invalid_token"), "{why}: {}", a.text);
        assert!(a.body["error_description"].as_str().unwrap().contains(why), "{why}: {}", a.text);
    }
    let unknown = federate(&s, &d, &token(json!({"alg": "RS256", "kid": "k1"}), claims("https://nobody.e2e.test"))).await;
    assert_eq!((unknown.status, unknown.error()), (401, "invalid_token"), "{}", unknown.text);
    assert_eq!(s.control_plane_metric("caracal_sts_denials_total{reason=\"invalid_subject_token\"}").await, 4.0);

    // A wrong secret is refused before the id_token is looked at, like every client mint.
    let bad = s
        .token(&[
            ("grant_type", GRANT),
            ("zone_id", &d.zone_id),
            ("application_id", &d.app_id),
            ("client_secret", "cs_wrong"),
            ("subject_token", &token(json!({"alg": "RS256", "kid": "k1"}), claims(iss))),
            ("subject_token_type", ID_TOKEN),
        ])
        .await;
    assert_eq!(bad.status, 401);
}
