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
use caracal_e2e::stack::StackOptions;
use serde_json::json;

/// Where the second resource's upstream is: the Python test serves it itself.
const VERIFY_RESOURCE: &str = "https://verify.e2e.test";

async fn run_module(s: &Stack, module: &str) {
    let python = std::env::var("CARACAL_SDK_PYTHON")
        .expect("CARACAL_SDK_PYTHON is unset: run the suite with deploy/local/test.sh, which installs the published SDK's venv");
    let d = s.demo(true).await;
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
        .env_remove("CARACAL_ENV")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    assert!(out.status.success(), "tests/sdk/{module} failed:\n{stdout}\n{stderr}");
}

#[tokio::test]
async fn the_published_sdk_mints_lifecycle_and_bootstrap_tokens() {
    run_module(&Stack::start().await, "test_mints.py").await;
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
