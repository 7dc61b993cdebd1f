//! Seed 003's transport checklist on real processes: the control plane serves TLS ≥ 1.2 itself and
//! the gateway reaches it (exchange and JWKS) through a private CA; both binaries speak `rediss://`
//! to a TLS-only `redis-server` and authenticate with the URL's credentials (a wrong password fails
//! closed); production refuses plaintext or unauthenticated hops and lists every violation at once.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use caracal_e2e::infra::{RedisOptions, free_port, scratch_dir};
use caracal_e2e::pki::{TestPki, assert_tls_floor_is_1_2};
use caracal_e2e::procs::{Proc, binary};
use caracal_e2e::stack::Demo;
use caracal_e2e::{Stack, StackOptions};
use serde_json::Value;

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Runs a binary with exactly `env`; its exit code and stderr.
fn run_env(name: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(binary(name)).env_clear().envs(env.iter().copied()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// One governed GET with a fresh gateway mandate; asserts it reached the upstream.
async fn governed_ok(s: &Stack, d: &Demo, session: &str, path: &str) -> String {
    let m = s.gateway_mandate(d, session, "tools.read").await;
    let a = s.governed("GET", path, &m, &d.resource).await;
    assert_eq!(a.status, 200, "governed request: {}\ngateway:\n{}", a.text, s.gateway.log_tail(20));
    assert!(s.upstream.requests().iter().any(|r| r.path == format!("/base{path}")), "the upstream saw {path}");
    m
}

#[tokio::test]
async fn the_control_plane_serves_tls_1_2_plus_and_the_gateway_reaches_it_through_a_private_ca() {
    let pki = TestPki::generate(&scratch_dir("pki"));
    let s = Stack::start_with(StackOptions { control_plane_tls: Some(pki.clone()), ..Default::default() }).await;
    assert!(s.cp_url.starts_with("https://"), "{}", s.cp_url);
    let port = port_of(&s.cp_url);

    // HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3 only, no plaintext on the TLS port.
    let h2 = s.http.get(format!("{}/health", s.cp_url)).send().await.unwrap();
    assert_eq!((h2.status().as_u16(), h2.version()), (200, reqwest::Version::HTTP_2), "h2 negotiated by ALPN");
    let h1 = reqwest::Client::builder().tls_certs_only([pki.reqwest_root()]).http1_only().build().unwrap();
    let r = h1.get(format!("{}/health", s.cp_url)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11), "HTTP/1.1 still served");
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/health")).timeout(Duration::from_secs(3)).send().await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()), "no plaintext answer on the TLS listener");
    assert_tls_floor_is_1_2(port);
    // A client that does not trust the test CA is refused: the certificate is what it claims.
    assert!(reqwest::Client::new().get(format!("{}/health", s.cp_url)).send().await.is_err(), "an untrusted CA fails the handshake");

    // The gateway's exchange and JWKS fetch go over https to the private CA's certificate.
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    governed_ok(&s, &d, &session, "/items/tls").await;
    assert!(s.gateway_metric("caracal_gateway_jwks_fetches_total").await >= 1.0, "the JWKS came over TLS");
    let jwks = s.jwks(&d.zone_id).await;
    assert!(!jwks["keys"].as_array().unwrap().is_empty());

    // Seed 003: an empty UPSTREAM_HOST_ALLOWLIST is said at start (the harness sets none).
    assert!(
        s.gateway.log().contains("UPSTREAM_HOST_ALLOWLIST is empty"),
        "the gateway warns that any public host is reachable:\n{}",
        s.gateway.log_tail(30)
    );
}

#[tokio::test]
async fn a_tls_only_redis_with_an_acl_user_carries_every_redis_path_of_both_binaries() {
    let pki = TestPki::generate(&scratch_dir("pki"));
    let redis = RedisOptions {
        tls: Some(pki.clone()),
        password: Some(format!("default-{}", uuid::Uuid::new_v4().simple())),
        acl_user: Some(("caracal".into(), format!("acl-{}", uuid::Uuid::new_v4().simple()))),
        ..Default::default()
    };
    let s = Stack::start_with(StackOptions { control_plane_tls: Some(pki.clone()), redis, ..Default::default() }).await;
    assert!(s.redis.url().starts_with("rediss://caracal:"), "{}", s.redis.url());
    // The server speaks TLS only: a plaintext client gets nowhere.
    let plain = redis::Client::open(s.redis.url().replacen("rediss://", "redis://", 1)).unwrap();
    let plain_ping = tokio::time::timeout(Duration::from_secs(3), async {
        let mut c = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await;
    assert!(!matches!(plain_ping, Ok(Ok(_))), "plaintext is refused by the TLS-only server");

    let d = s.demo(true).await;
    let session = s.session(&d).await;
    // JTI single use (gateway → Redis).
    let m = governed_ok(&s, &d, &session, "/items/one").await;
    let replay = s.governed("GET", "/items/one", &m, &d.resource).await;
    assert_eq!((replay.status, replay.error()), (401, "invalid_token"), "{}", replay.text);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_jti_replay_total").await, 1.0);

    // Evidence: the gateway and the STS write frames, the control plane's ledger reads them back.
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let start = Instant::now();
    loop {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT event FROM audit_events WHERE zone_id = $1").bind(&d.zone_id).fetch_all(&db).await.unwrap();
        let types: Vec<Value> = rows.iter().map(|(e,)| serde_json::from_str::<Value>(e).unwrap()["event_type"].clone()).collect();
        // The STS's exchange, and the gateway's forwarded request and replay.
        if ["token_exchange", "gateway_resource_request", "replay_detected"].iter().all(|t| types.iter().any(|x| x == t)) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "audit evidence filed through rediss://: {types:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revocation: the control plane's outbox publishes on the stream, the gateway's consumer applies it.
    let pending = s.gateway_mandate(&d, &session, "tools.read").await;
    s.revoke_session(&d, &session).await;
    s.wait_gateway_metric("caracal_gateway_revocation_messages_total", 1.0, Duration::from_secs(5)).await;
    let a = s.governed("GET", "/items/after", &pending, &d.resource).await;
    assert_eq!((a.status, a.body["error_description"].as_str()), (401, Some("session revoked")), "{}", a.text);
}

#[tokio::test]
async fn redis_auth_comes_from_the_url_and_a_wrong_password_fails_closed() {
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let redis = RedisOptions { password: Some(password), ..Default::default() };
    let s = Stack::start_with(StackOptions { redis, ..Default::default() }).await;
    assert!(s.redis.url().starts_with("redis://:pw-"), "{}", s.redis.url());
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    governed_ok(&s, &d, &session, "/items/auth").await;

    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let wrong_url = s.redis.url_with_userinfo(&format!(":{wrong}@"));

    // A gateway with the wrong password: not ready, and a governed request is denied before the
    // upstream (the revocation view is fed by the snapshot alone, so the JTI store is what fails).
    let gw_port = free_port();
    let mut env: BTreeMap<String, String> = s.gw_env.clone();
    env.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{gw_port}"));
    env.insert("REDIS_URL".into(), wrong_url.clone());
    env.insert("STREAMS_HMAC_KEY".into(), String::new());
    env.insert("AUDIT_REPLAY_DIR".into(), s.dir.join("audit-replay-wrong").display().to_string());
    let gw = Proc::start_with_args("caracal-gateway", &[], &env, &s.dir, "gateway-wrong-redis-password");
    let gw_url = format!("http://127.0.0.1:{gw_port}");
    let start = Instant::now();
    let ready = loop {
        if let Ok(r) = s.http.get(format!("{gw_url}/ready")).send().await {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the gateway listens:\n{}", gw.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.status(), 503, "not ready with a wrong Redis password");
    assert_eq!(ready.json::<Value>().await.unwrap()["reason"], "redis_unreachable");
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let seen = s.upstream.requests().len();
    let r = s.http.get(format!("{gw_url}/items/wrong")).bearer_auth(&m).header("x-caracal-resource", &d.resource).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "replay_check_unavailable");
    let metrics = s.http.get(format!("{gw_url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("caracal_gateway_denials_jti_unavailable_total 1"), "denial counted");
    assert_eq!(s.upstream.requests().len(), seen, "nothing reached the upstream");
    assert!(!gw.log().contains(&wrong), "the password is never logged");

    // A control plane with the wrong password (or none) refuses to start.
    for url in [wrong_url.clone(), s.redis.url_with_userinfo("")] {
        let mut env = s.cp_env.clone();
        env.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{}", free_port()));
        env.insert("REDIS_URL".into(), url);
        let mut cp = Proc::start_with_args("caracal-control-plane", &[], &env, &s.dir, "control-plane-wrong-redis-password");
        let status = cp.wait_exit(Duration::from_secs(30));
        assert!(status.is_some_and(|s| !s.success()), "the control plane exits: {status:?}\n{}", cp.log_tail(20));
        let log = cp.log();
        assert!(log.contains("Redis") && !log.contains(&wrong), "says Redis refused, never the password:\n{log}");
    }
}

#[test]
fn production_refuses_plaintext_and_unauthenticated_hops_listing_every_one() {
    let kek = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let streams = "0102030405060708091011121314151617181920212223242526272829303132";
    let gw_key = "2122232425262728293031323334353637383940414243444546474849505152";
    let audit = "1112131415161718192021222324252627282930313233343536373839404142";
    let chain = "5152535455565758596061626364656667686970717273747576777879808182";
    let base = [
        ("CARACAL_MODE", "production"),
        ("ISSUER_URL", "https://sts.example"),
        ("ZONE_KEK", kek),
        ("STREAMS_HMAC_KEY", streams),
        ("GATEWAY_STS_HMAC_KEY", gw_key),
        ("METRICS_BEARER", "metrics-bearer-0123456789"),
    ];
    // Plaintext listener, plaintext Postgres (both URLs), passwordless Redis.
    let mut env = base.to_vec();
    env.extend([
        ("DATABASE_URL", "postgres://caracal@db.internal/caracal"),
        ("AUDIT_DATABASE_URL", "postgres://audit@db.internal/caracal?sslmode=prefer"),
        ("REDIS_URL", "rediss://redis.internal:6380"),
        ("AUDIT_HMAC_KEY", audit),
        ("AUDIT_CHAIN_KEY", chain),
    ]);
    let (code, err) = run_env("caracal-control-plane", &env);
    assert_eq!(code, Some(64), "{err}");
    for name in ["TLS_CERT_FILE", "DATABASE_URL", "AUDIT_DATABASE_URL", "REDIS_URL"] {
        assert!(err.contains(&format!("- {name}:")), "{name} missing from:\n{err}");
    }
    assert!(err.contains("TLS_TERMINATED_BY_PROXY") && err.contains("sslmode"), "the fixes are named:\n{err}");

    // The split-ledger topology still signs its evidence; a URL that does not parse says so.
    let mut env = base.to_vec();
    env.extend([
        ("TLS_TERMINATED_BY_PROXY", "true"),
        ("DATABASE_URL", "postgres://caracal@db.internal:port/caracal?sslmode=require"),
        ("REDIS_URL", "rediss://:secret-redis-password@redis.internal:6380"),
        ("AUDIT_LEDGER_ENABLED", "false"),
    ]);
    let (code, err) = run_env("caracal-control-plane", &env);
    assert_eq!(code, Some(64), "{err}");
    for name in ["AUDIT_HMAC_KEY", "DATABASE_URL"] {
        assert!(err.contains(&format!("- {name}:")), "{name} missing from:\n{err}");
    }
    assert!(!err.contains("TLS_CERT_FILE") && !err.contains("REDIS_URL"), "only the two problems:\n{err}");
    assert!(!err.contains("secret-redis-password"), "secrets are never echoed:\n{err}");

    let (code, err) = run_env(
        "caracal-gateway",
        &[
            ("CARACAL_MODE", "production"),
            ("STS_URL", "https://sts.example"),
            ("STS_CA_FILE", "/nonexistent/ca.pem"),
            ("GATEWAY_STS_HMAC_KEY", gw_key),
            ("STREAMS_HMAC_KEY", streams),
            ("AUDIT_HMAC_KEY", audit),
            ("METRICS_BEARER", "metrics-bearer-0123456789"),
            ("TLS_CERT_FILE", "/etc/caracal/cert.pem"),
            ("TLS_KEY_FILE", "/etc/caracal/key.pem"),
            ("DATABASE_URL", "postgresql://gateway@db.internal/caracal?sslmode=disable"),
            ("REDIS_URL", "redis://redis.internal:6379"),
            ("REDIS_CA_FILE", "/etc/caracal/redis-ca.pem"),
            ("ALLOW_PRIVATE_UPSTREAMS", "true"),
        ],
    );
    assert_eq!(code, Some(64), "{err}");
    for name in ["STS_CA_FILE", "DATABASE_URL", "REDIS_URL", "REDIS_CA_FILE", "ALLOW_PRIVATE_UPSTREAMS"] {
        assert!(err.contains(&format!("- {name}:")), "{name} missing from:\n{err}");
    }
    assert!(err.contains("UPSTREAM_HOST_ALLOWLIST"), "the fix is named:\n{err}");
}

/// A gateway on the control plane's host reaches the STS over the control plane's Unix socket
/// (`LISTEN_SOCKET` / `STS_SOCKET`): every request to the STS goes there, so a gateway given a
/// socket nothing listens on fails closed although `STS_URL` is reachable over TCP.
#[tokio::test]
async fn a_co_located_gateway_reaches_the_sts_over_its_unix_socket() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let dir = scratch_dir("uds");
    let socket = dir.join("sts.sock").display().to_string();
    let s = Stack::start_with(StackOptions {
        control_plane_env: vec![("LISTEN_SOCKET".into(), socket.clone())],
        gateway_env: vec![("STS_SOCKET".into(), socket.clone())],
        ..Default::default()
    })
    .await;
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "owner and group only");
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    governed_ok(&s, &d, &session, "/items/7").await;
    assert_eq!(s.gateway_metric("caracal_gateway_jwks_fetches_total").await, 1.0, "the keys came over the socket too");

    let nowhere = dir.join("nothing.sock").display().to_string();
    let (_gw, elsewhere) = s.second_gateway(&[("STS_SOCKET", nowhere.as_str())]).await;
    let ready = s.call_at(&elsewhere, "GET", "/ready", &[]).await;
    assert_eq!(ready.status, 503, "not ready without its STS: {}", ready.text);
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let a = s.governed_at(&elsewhere, "GET", "/items/1", &m, &d.resource).await;
    assert_eq!((a.status, a.error()), (503, "sts_unavailable"), "{}", a.text);
    assert_eq!(a.body["error_description"], "signing keys unavailable");
    assert_eq!(s.gateway_metric_at(&elsewhere, "caracal_gateway_denials_keys_unavailable_total").await, 1.0);
    assert_eq!(s.upstream.requests().len(), 1, "nothing reached the upstream through the second gateway");
}
