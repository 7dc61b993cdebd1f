//! Running the gateway: production refusals, metrics auth, TLS and HTTP/2, graceful drain on
//! SIGTERM, and Pingora's zero-downtime upgrade.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use caracal_e2e::infra::{free_port, scratch_dir};
use caracal_e2e::pki::{TestPki, assert_tls_floor_is_1_2};
use caracal_e2e::procs::{Proc, binary};
use caracal_e2e::{Stack, StackOptions};

fn run_env(name: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(binary(name)).env_clear().envs(env.iter().copied()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn production_refuses_to_start_and_lists_every_problem_at_once() {
    let (code, err) = run_env(
        "caracal-gateway",
        &[
            ("CARACAL_MODE", "production"),
            ("STS_URL", "http://sts.internal:8080"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("JTI_FAIL_OPEN", "true"),
            ("INSECURE_STS", "true"),
            ("GATEWAY_STS_HMAC_KEY", "00"),
        ],
    );
    assert_eq!(code, Some(64), "{err}");
    for name in [
        "STS_URL",
        "JTI_FAIL_OPEN",
        "INSECURE_STS",
        "GATEWAY_STS_HMAC_KEY",
        "TLS_CERT_FILE",
        "DATABASE_URL",
        "STREAMS_HMAC_KEY",
        "AUDIT_HMAC_KEY",
    ] {
        assert!(err.contains(name), "{name} missing from:\n{err}");
    }
    let (code, err) = run_env(
        "caracal-control-plane",
        &[
            ("CARACAL_MODE", "production"),
            ("ZONE_KEK", &"00".repeat(32)),
            ("ISSUER_URL", "http://sts"),
            ("DATABASE_URL", "postgres://x@db/caracal"),
        ],
    );
    assert_eq!(code, Some(64), "{err}");
    for name in ["ZONE_KEK", "ISSUER_URL", "DATABASE_URL", "REDIS_URL", "STREAMS_HMAC_KEY", "GATEWAY_STS_HMAC_KEY"] {
        assert!(err.contains(name), "{name} missing from:\n{err}");
    }
    assert!(!err.contains(&"00".repeat(32)), "secret values are never echoed");
}

#[tokio::test]
async fn metrics_need_the_bearer_when_one_is_set() {
    let bearer = "metrics-bearer-for-e2e-0123456789";
    let s = Stack::start_with(StackOptions { gateway_env: vec![("METRICS_BEARER".into(), bearer.into())], ..Default::default() }).await;
    for path in ["/metrics", "/metrics.json"] {
        let url = format!("{}{path}", s.gw_url);
        assert_eq!(s.http.get(&url).send().await.unwrap().status(), 401);
        assert_eq!(s.http.get(&url).bearer_auth("wrong-wrong-wrong-wrong").send().await.unwrap().status(), 401);
        let ok = s.http.get(&url).bearer_auth(bearer).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        assert!(ok.text().await.unwrap().contains("requests"), "{path} has the counters");
    }
}

/// `CONTROL_PLANE_THREADS` sizes the control plane's runtime (read from the runtime itself).
#[tokio::test]
async fn the_control_plane_serves_with_the_configured_workers() {
    let s = Stack::start_with(StackOptions { control_plane_env: vec![("CONTROL_PLANE_THREADS".into(), "3".into())], ..Default::default() })
        .await;
    assert_eq!(s.control_plane_metric("caracal_control_plane_worker_threads").await, 3.0);
    // And it serves the governed path on them.
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let mandate = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &mandate, &d.resource).await.status, 200);
}

#[tokio::test]
async fn tls_is_at_least_1_2_and_speaks_http2() {
    let s = Stack::start().await;
    let dir = scratch_dir("tls");
    let pki = TestPki::generate(&dir);
    let port = free_port();
    let mut env: BTreeMap<String, String> = s.gw_env.clone();
    env.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{port}"));
    env.insert("TLS_CERT_FILE".into(), pki.cert.display().to_string());
    env.insert("TLS_KEY_FILE".into(), pki.key.display().to_string());
    let _gw = Proc::start_with_args("caracal-gateway", &[], &env, &dir, "tls-gateway");
    let client = pki.http_client();
    let url = format!("https://localhost:{port}/health");
    let start = Instant::now();
    let resp = loop {
        match client.get(&url).send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(30), "TLS gateway not up: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "HTTP/2 negotiated by ALPN");
    assert_tls_floor_is_1_2(port);
}

#[tokio::test]
async fn sigterm_stops_accepting_and_drains_in_flight_streams() {
    let mut s =
        Stack::start_with(StackOptions { gateway_env: vec![("SHUTDOWN_GRACE_SECONDS".into(), "3".into())], ..Default::default() }).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let mut stream = s
        .http
        .get(format!("{}/sse?every_ms=100", s.gw_url))
        .bearer_auth(&m)
        .header("x-caracal-resource", &d.resource)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    stream.chunk().await.unwrap().unwrap();
    s.gateway.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = reqwest::Client::new().get(format!("{}/health", s.gw_url)).timeout(Duration::from_secs(1)).send().await;
    assert!(fresh.is_err(), "no new connections once draining");
    let t = Instant::now();
    let mut events = 0;
    while t.elapsed() < Duration::from_millis(1500) {
        match tokio::time::timeout(Duration::from_secs(1), stream.chunk()).await {
            Ok(Ok(Some(_))) => events += 1,
            other => panic!("the in-flight stream ended during the grace period: {other:?}"),
        }
    }
    assert!(events >= 10, "the stream kept flowing while draining ({events} events)");
    let exit = s.gateway.wait_exit(Duration::from_secs(15));
    assert!(exit.is_some(), "the gateway exits after the grace period");
}

#[tokio::test]
async fn a_zero_downtime_upgrade_hands_the_listener_over() {
    let conf_dir = scratch_dir("upgrade");
    let yaml = conf_dir.join("pingora.yaml");
    std::fs::write(
        &yaml,
        format!(
            "---\nversion: 1\nupgrade_sock: {}/upgrade.sock\npid_file: {}/gateway.pid\ngrace_period_seconds: 2\ngraceful_shutdown_timeout_seconds: 1\n",
            conf_dir.display(),
            conf_dir.display()
        ),
    )
    .unwrap();
    let args = vec!["-c".to_owned(), yaml.display().to_string()];
    let mut s = Stack::start_with(StackOptions { gateway_args: args.clone(), ..Default::default() }).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let mut mandates = Vec::new();
    for _ in 0..60 {
        mandates.push(s.gateway_mandate(&d, &session, "tools.read").await);
    }
    // The new process waits for the listener on the upgrade socket.
    let mut upgraded = args.clone();
    upgraded.push("-u".into());
    let mut new_gw = Proc::start_with_args("caracal-gateway", &upgraded, &s.gw_env, &s.dir, "gateway-upgraded");
    let sock = conf_dir.join("upgrade.sock");
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "the new gateway listens on the upgrade socket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old_pid = s.gateway.pid();
    let mut failures = Vec::new();
    for (i, m) in mandates.iter().enumerate() {
        if i == 10 {
            s.gateway.signal("QUIT");
        }
        // A fresh connection each time: every request must find a listener.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        match client.get(format!("{}/items/{i}", s.gw_url)).bearer_auth(m).header("x-caracal-resource", &d.resource).send().await {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => failures.push(format!("{i}: {}", r.status())),
            Err(e) => failures.push(format!("{i}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failures.is_empty(),
        "no request failed across the upgrade: {failures:?}\nold:\n{}\nnew:\n{}",
        s.gateway.log_tail(15),
        new_gw.log_tail(15)
    );
    assert!(s.gateway.wait_exit(Duration::from_secs(15)).is_some(), "the old process {old_pid} exits");
    assert!(new_gw.exited().is_none(), "the new process keeps serving");
    let after = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/after", &after, &d.resource).await.status, 200);
    new_gw.kill();
}

#[tokio::test]
async fn the_control_plane_migrates_alone_for_a_deploys_migrations_job() {
    let url = caracal_e2e::infra::fresh_database().await;
    let migrate = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(binary("caracal-control-plane"));
        cmd.arg("migrate").env_clear().envs(env.iter().copied());
        cmd.output().unwrap()
    };
    // No keys needed: only the database and the mode that says how to reach it.
    for _ in 0..2 {
        let out = migrate(&[("CARACAL_MODE", "dev"), ("DATABASE_URL", &url)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&db).await.unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations")).unwrap().count() as i64;
    assert_eq!(applied, files, "every migration applied, once");

    let out = migrate(&[("DATABASE_URL", &url)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "production refuses a database reached without TLS: {err}");
    assert!(err.contains("DATABASE_URL") && err.contains("sslmode"), "{err}");
    let out = migrate(&[("CARACAL_MODE", "dev")]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL: is required"));
    let out = Command::new(binary("caracal-control-plane")).arg("migrat").output().unwrap();
    assert_eq!(out.status.code(), Some(64), "an unknown argument is a usage error, not a start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: caracal-control-plane"));
}

#[tokio::test]
async fn both_binaries_probe_their_own_health_for_a_container_healthcheck() {
    let pki = TestPki::generate(&scratch_dir("health-pki"));
    let s = Stack::start_with(StackOptions { control_plane_tls: Some(pki.clone()), ..Default::default() }).await;
    let probe = |bin: &str, listen: &str, tls: bool| {
        let mut cmd = Command::new(binary(bin));
        cmd.arg("health").env_clear().env("LISTEN_ADDR", listen);
        if tls {
            cmd.env("TLS_CERT_FILE", &pki.cert);
        }
        cmd.output().unwrap()
    };
    let port = |url: &str| url.rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    let out = probe("caracal-control-plane", &format!("0.0.0.0:{}", port(&s.cp_url)), true);
    assert!(out.status.success(), "the control plane over TLS: {}", String::from_utf8_lossy(&out.stderr));
    let out = probe("caracal-gateway", &format!("127.0.0.1:{}", port(&s.gw_url)), false);
    assert!(out.status.success(), "the gateway: {}", String::from_utf8_lossy(&out.stderr));
    let closed = free_port();
    let out = probe("caracal-gateway", &format!("127.0.0.1:{closed}"), false);
    assert_eq!(out.status.code(), Some(1), "nothing listening is unhealthy");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("127.0.0.1:{closed}/health")));
    let out = probe("caracal-control-plane", &format!("127.0.0.1:{}", port(&s.cp_url)), false);
    assert_eq!(out.status.code(), Some(1), "plain HTTP to a TLS listener is no answer");
    for bin in ["caracal-gateway", "caracal-control-plane"] {
        let v = Command::new(binary(bin)).arg("--version").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), format!("{bin} {}", env!("CARGO_PKG_VERSION")));
    }
}
