//! Archiving a zone stops it everywhere at once: the STS refuses to mint and publishes no keys,
//! gateways deny mandates minted before from memory (the zone's sessions are revoked), the zone's
//! admin tokens and Coordinator callers are refused — on every control-plane instance.

use std::future::Future;
use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_e2e::stack::{Answer, GRANT};
use serde_json::json;

/// Polls `probe` until `done` accepts its answer; fails after `within` with the last answer.
async fn eventually<F, Fut>(what: &str, within: Duration, mut probe: F, done: impl Fn(&Answer) -> bool) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Answer>,
{
    let start = Instant::now();
    loop {
        let a = probe().await;
        if done(&a) {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what} within {within:?}; last answer {} {}", a.status, a.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get(s: &Stack, url: String, bearer: &str) -> Answer {
    Answer::read(s.http.get(url).bearer_auth(bearer).send().await.unwrap()).await
}

#[tokio::test]
async fn archiving_a_zone_stops_minting_keys_mandates_admin_tokens_and_the_coordinator_everywhere() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let z = d.zone_id.clone();
    // The second instance reloads revocations from Postgres only every minute: what it refuses
    // within a second came through the streams or its own checks.
    let (_cp2, cp2) = s.second_control_plane(&[("REVOCATION_RELOAD_INTERVAL", "60s")]).await;
    let zone_token = s.zone_token(&d.admin, &z).await;
    let session_form = [("grant_type", GRANT), ("zone_id", z.as_str()), ("application_id", &d.app_id), ("client_secret", &d.secret)];
    let runtime_form = [
        ("grant_type", GRANT),
        ("zone_id", z.as_str()),
        ("application_id", &d.app_id),
        ("client_secret", &d.secret),
        ("scope", "agent:lifecycle"),
    ];
    let runtime = s.token(&runtime_form).await.body["access_token"].as_str().unwrap().to_owned();
    let agent = s
        .admin_ok("POST", &format!("/zones/{z}/agents"), &runtime, Some(json!({"lifecycle": "task", "ttl_seconds": 600})), 201)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = s.session(&d).await;
    let warm = s.gateway_mandate(&d, &session, "tools.read").await;
    let kept = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &warm, &d.resource).await.status, 200, "the zone works before");
    // Every cache of the second instance is warm: keys, application, the runtime's signature.
    assert_eq!(s.token_at(&cp2, &session_form).await.status, 200);
    assert_eq!(get(&s, format!("{cp2}/.well-known/jwks.json?zone_id={z}"), "").await.status, 200);
    assert_eq!(get(&s, format!("{cp2}/zones/{z}/agents/{agent}"), &runtime).await.status, 200);
    assert_eq!(get(&s, format!("{cp2}/v1/zones/{z}/applications"), &zone_token).await.status, 200);

    s.admin_ok("DELETE", &format!("/v1/zones/{z}"), &d.admin, None, 204).await;

    // The STS refuses the zone: no mint, no keys (404, what unknown zones get).
    let mint = s.token(&session_form).await;
    assert_eq!((mint.status, mint.error()), (404, "resource_not_found"), "session mint after archive: {}", mint.text);
    assert!(s.control_plane_metric("caracal_sts_denials_total{reason=\"zone_not_found\"}").await >= 1.0);
    let jwks = get(&s, format!("{}/.well-known/jwks.json?zone_id={z}", s.cp_url), "").await;
    assert_eq!((jwks.status, jwks.error()), (404, "resource_not_found"), "{}", jwks.text);
    let took = eventually(
        "the second instance refuses session mints",
        Duration::from_secs(1),
        || s.token_at(&cp2, &session_form),
        |a| a.status == 404 && a.error() == "resource_not_found",
    )
    .await;
    eprintln!("second instance refused mints {took:?} after the archive");
    eventually(
        "the second instance publishes no keys",
        Duration::from_secs(1),
        || get(&s, format!("{cp2}/.well-known/jwks.json?zone_id={z}"), ""),
        |a| a.status == 404,
    )
    .await;

    // Gateways deny mandates minted before, from memory (the zone's sessions are revoked).
    // Three root sessions (the runtime's, the demo's and the one minted at the second instance)
    // and one agent session; their messages arrive in any order.
    s.wait_gateway_metric("caracal_gateway_revocation_messages_total", 4.0, Duration::from_secs(1)).await;
    let a = s.governed("GET", "/items/2", &kept, &d.resource).await;
    assert_eq!((a.status, a.error()), (401, "invalid_token"), "{}", a.text);
    assert_eq!(a.body["error_description"], "session revoked");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_revoked_total").await, 1.0);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_refused_total").await, 0.0, "refused before the STS was asked");

    // The zone's admin tokens stop working, at once, on every instance.
    for base in [s.cp_url.as_str(), cp2.as_str()] {
        let a = get(&s, format!("{base}/v1/zones/{z}/applications"), &zone_token).await;
        assert_eq!((a.status, a.error()), (401, "invalid_admin_token"), "{base}: {}", a.text);
    }

    // The Coordinator refuses the zone's runtimes and operators.
    let a = get(&s, format!("{}/zones/{z}/agents/{agent}", s.cp_url), &runtime).await;
    assert_eq!((a.status, a.error()), (401, "invalid_token"), "{}", a.text);
    eventually(
        "the second instance's Coordinator refuses the runtime",
        Duration::from_secs(1),
        || get(&s, format!("{cp2}/zones/{z}/agents/{agent}"), &runtime),
        |a| a.status == 401 && a.error() == "invalid_token",
    )
    .await;
    for base in [s.cp_url.as_str(), cp2.as_str()] {
        let a = get(&s, format!("{base}/zones/{z}/agents/{agent}"), &d.admin).await;
        assert_eq!((a.status, a.error()), (404, "zone_not_found"), "a global operator finds no zone at {base}: {}", a.text);
    }
    let live_sessions: i64 = {
        let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM agent_sessions WHERE zone_id = $1 AND status <> 'terminated'")
            .bind(&z)
            .fetch_one(&db)
            .await
            .unwrap()
    };
    assert_eq!(live_sessions, 0, "every agent session of the zone is terminated");
}
