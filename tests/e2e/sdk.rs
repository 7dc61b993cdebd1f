//! The original Caracal's published Python clients (`caracalai-*` 1.0.0, pinned in
//! `tests/sdk/requirements.txt`) against the real binaries, unchanged: each test starts a stack,
//! seeds a zone with two applications and two resources, and runs one module of `tests/sdk/` with
//! the stack in its environment. The modules hold the assertions; their output is shown on failure.
//!
//! `CARACAL_SDK_PYTHON` names the interpreter of the venv `deploy/local/test.sh` installs (Python
//! ≥ 3.12, which the clients need). Without it these tests fail: they are part of the suite.

use std::path::Path;

use caracal_e2e::Stack;
use caracal_e2e::infra::free_port;
use caracal_e2e::oidc::{self, OpenIdProvider};
use caracal_e2e::pki::TestPki;
use caracal_e2e::stack::{Demo, StackOptions};
use serde_json::{Value, json};

/// Where the second resource's upstream is: the Python test serves it itself.
const VERIFY_RESOURCE: &str = "https://verify.e2e.test";

async fn run_module(s: &Stack, module: &str) {
    let d = s.demo(true).await;
    run_module_with(s, &d, module, &[]).await;
}

/// Runs `module` against the stack seeded on top of `d`, with `extra` in its environment; returns
/// its standard output.
async fn run_module_with(s: &Stack, d: &Demo, module: &str, extra: &[(&str, String)]) -> String {
    let python = std::env::var("CARACAL_SDK_PYTHON")
        .expect("CARACAL_SDK_PYTHON is unset: run the suite with deploy/local/test.sh, which installs the published SDK's venv");
    let z = &d.zone_id;
    let second = s.admin_ok("POST", &format!("/v1/zones/{z}/applications"), &d.admin, Some(json!({"name": "peer"})), 201).await;
    let verify_port = free_port();
    s.admin_ok(
        "POST",
        &format!("/v1/zones/{z}/resources"),
        &d.admin,
        Some(json!({
            "identifier": VERIFY_RESOURCE,
            "upstream_url": format!("http://127.0.0.1:{verify_port}"),
            "scopes": ["tools.read"],
            "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}]
        })),
        201,
    )
    .await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
    let out = tokio::process::Command::new(&python)
        .arg(dir.join(module))
        .current_dir(&dir)
        .env("CP_URL", &s.cp_url)
        .env("GW_URL", &s.gw_url)
        .env("ZONE_ID", z)
        .env("APP_ID", &d.app_id)
        .env("CLIENT_SECRET", &d.secret)
        .env("APP2_ID", second["id"].as_str().unwrap())
        .env("CLIENT_SECRET2", second["client_secret"].as_str().unwrap())
        .env("RESOURCE", &d.resource)
        .env("VERIFY_RESOURCE", VERIFY_RESOURCE)
        .env("VERIFY_PORT", verify_port.to_string())
        .env("REDIS_URL", s.redis.url())
        .env("STREAMS_HMAC_KEY", &s.streams_key)
        .env("ADMIN_TOKEN", &d.admin)
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .env_remove("CARACAL_ENV")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    assert!(out.status.success(), "tests/sdk/{module} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[tokio::test]
async fn the_published_sdk_mints_lifecycle_and_bootstrap_tokens() {
    run_module(&Stack::start().await, "test_mints.py").await;
}

/// `caracalai-admin`'s `ensure_application`, `ensure_api_key_provider` and `ensure_resource`, then governed
/// requests through the gateway that use what they provisioned (issue 14).
#[tokio::test]
async fn the_published_admin_client_provisions_applications_providers_and_resources() {
    run_module(&Stack::start().await, "test_admin.py").await;
}

#[tokio::test]
async fn the_published_sdk_runs_sessions_heartbeats_and_attach() {
    run_module(&Stack::start().await, "test_sessions.py").await;
}

#[tokio::test]
async fn the_published_sdk_delegates_narrows_and_sees_revocations() {
    run_module(&Stack::start().await, "test_delegation.py").await;
}

/// Tokens live 20 s here, so sessions that died with their creating token would show.
#[tokio::test]
async fn the_published_sdk_outlives_the_tokens_that_created_its_sessions() {
    let opts = StackOptions { control_plane_env: vec![("SESSION_TTL_SECONDS".into(), "20".into())], ..Default::default() };
    run_module(&Stack::start_with(opts).await, "test_lifetimes.py").await;
}

/// `federate_subject()` with id_tokens of a real OpenID provider (`tests/oidc/provider.mjs`) served
/// over HTTPS by a private CA on loopback: the stack trusts that CA (`SUBJECT_ISSUER_CA_FILE`) and
/// lets `localhost` resolve to loopback (`SUBJECT_ISSUER_PRIVATE_HOSTS`); the clock leeway is 2 s so
/// an expired id_token shows within seconds. The module asserts the mandate, the session and each
/// refusal; here the stored records and the denial metrics are checked.
#[tokio::test]
async fn the_published_sdk_federates_a_subject_from_a_real_openid_provider() {
    let dir = caracal_e2e::infra::scratch_dir("oidc");
    let pki = TestPki::generate(&dir.join("pki"));
    let op = OpenIdProvider::start(&pki, &dir).await;
    let opts = StackOptions {
        control_plane_env: vec![
            ("SUBJECT_ISSUER_CA_FILE".into(), pki.ca.display().to_string()),
            ("SUBJECT_ISSUER_PRIVATE_HOSTS".into(), "localhost".into()),
            ("STS_CLOCK_SKEW_SECONDS".into(), "2".into()),
        ],
        ..Default::default()
    };
    let s = Stack::start_with(opts).await;
    let d = s.demo(true).await;
    let row = s
        .admin_ok(
            "POST",
            &format!("/v1/zones/{}/subject-issuers", d.zone_id),
            &d.admin,
            Some(json!({"issuer": op.issuer, "jwks_url": op.jwks_url, "audience": oidc::CLIENT_ID})),
            201,
        )
        .await;
    let env = [
        ("OIDC_ISSUER", op.issuer.clone()),
        ("OIDC_CLIENT_ID", oidc::CLIENT_ID.to_owned()),
        ("OIDC_CLIENT_SECRET", oidc::CLIENT_SECRET.to_owned()),
        ("OIDC_CA_FILE", pki.ca.display().to_string()),
        ("ADMIN_TOKEN", d.admin.clone()),
        ("SUBJECT_ISSUER_ID", row["id"].as_str().unwrap().to_owned()),
    ];
    let out = run_module_with(&s, &d, "test_federation.py", &env).await;
    let line = out.lines().find_map(|l| l.strip_prefix("FEDERATED_SESSION ")).expect("the module names its session");
    let (session, record) = line.split_once(' ').unwrap();
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let (kind, subject, iss, app): (String, String, Option<String>, String) = sqlx::query_as(
        "SELECT r.session_type, r.subject_id, r.claims_json->>'iss', a.application_id FROM agent_sessions a \
         JOIN authority_records r ON r.zone_id = a.zone_id AND r.id = a.subject_authority_record_id WHERE a.zone_id = $1 AND a.id = $2",
    )
    .bind(&d.zone_id)
    .bind(session)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), subject.as_str(), iss.as_deref(), app.as_str()),
        ("user", "carol", Some(op.issuer.as_str()), d.app_id.as_str())
    );
    let (bound,): (String,) = sqlx::query_as("SELECT subject_authority_record_id FROM agent_sessions WHERE zone_id = $1 AND id = $2")
        .bind(&d.zone_id)
        .bind(session)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(bound, record);
    // Evidence: the allowed federations name the user, the refused ones their reason.
    let start = std::time::Instant::now();
    loop {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT event FROM audit_events WHERE zone_id = $1").bind(&d.zone_id).fetch_all(&db).await.unwrap();
        let events: Vec<Value> = rows.iter().map(|(e,)| serde_json::from_str(e).unwrap()).collect();
        let fed = |decision: &str| {
            events
                .iter()
                .filter(|e| e["metadata_json"]["class"] == "subject_federation" && e["decision"] == decision)
                .cloned()
                .collect::<Vec<_>>()
        };
        let (allowed, denied) = (fed("allow"), fed("deny"));
        if allowed.len() >= 3 && denied.len() >= 5 {
            assert!(allowed.iter().any(|e| e["metadata_json"]["subject_id"] == "carol" && e["metadata_json"]["session_id"] == record));
            assert!(allowed.iter().all(|e| e["metadata_json"]["determining_policy"] == "caracal-subject-federation"));
            assert!(denied.iter().all(|e| e["evaluation_status"] == "invalid_subject_token"), "{denied:#?}");
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "federation evidence: {allowed:#?} {denied:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // wrong audience, expired, reserved sub, tampered, unknown issuer
    assert_eq!(s.control_plane_metric("caracal_sts_denials_total{reason=\"invalid_subject_token\"}").await, 5.0);
    // the 3601 s ttl and the four extra-field forms
    assert_eq!(s.control_plane_metric("caracal_sts_denials_total{reason=\"invalid_request\"}").await, 5.0);
}
