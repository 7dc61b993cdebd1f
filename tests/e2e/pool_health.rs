//! Pool health and retries (docs/pools.md §4, §5), with members as real processes that are
//! killed and started again: no client-visible error when a member dies, fail-closed 503 when
//! every member is down, a hung member ejected, each attempt in the audit event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_e2e::endpoint::{Behaviour, Endpoint};
use caracal_e2e::stack::Demo;
use caracal_e2e::upstream::Upstream;
use caracal_e2e::{Stack, StackOptions};
use serde_json::{Value, json};

async fn pool(s: &Stack, d: &Demo, identifier: &str, endpoints: &[String], extra: Value) {
    let mut body = json!({
        "identifier": identifier,
        "endpoints": endpoints.iter().map(|u| json!({"url": u})).collect::<Vec<_>>(),
        "scopes": ["tools.read"],
        "operations": [{"method": "GET", "path": "/**", "scope": "tools.read"}, {"method": "POST", "path": "/**", "scope": "tools.read"}]
    });
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    s.admin_ok("POST", &format!("/v1/zones/{}/resources", d.zone_id), &d.admin, Some(body), 201).await;
}

/// A gateway mandate; a mint the STS sheds under load (503) is tried again: the tests count
/// what the gateway answers, not the client's preparation.
async fn mandate(s: &Stack, d: &Demo, session: &str, resource: &str) -> String {
    for _ in 0..50 {
        let a = s.mint_gateway_for(d, session, resource, "tools.read").await;
        if a.status == 200 {
            return a.body["access_token"].as_str().unwrap().to_owned();
        }
        assert_eq!(a.status, 503, "gateway mint for {resource}: {}", a.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no mandate for {resource}");
}

/// One governed GET with a fresh mandate: (status, the serving member's name, the body).
async fn call(s: &Stack, d: &Demo, session: &str, resource: &str, path: &str) -> (u16, String, Value) {
    call_with(s, d, session, resource, "GET", path).await
}

async fn call_with(s: &Stack, d: &Demo, session: &str, resource: &str, method: &str, path: &str) -> (u16, String, Value) {
    let m = mandate(s, d, session, resource).await;
    let a = s.governed(method, path, &m, resource).await;
    let served = a.body["endpoint"].as_str().unwrap_or_default().to_owned();
    (a.status, served, a.body)
}

fn sample(name: &str, resource: &str, endpoint: usize, outcome: Option<&str>) -> String {
    match outcome {
        Some(o) => format!(r#"{name}{{endpoint="{endpoint}",outcome="{o}",resource="{resource}"}}"#),
        None => format!(r#"{name}{{endpoint="{endpoint}",resource="{resource}"}}"#),
    }
}

#[tokio::test]
async fn a_member_killed_under_load_costs_no_client_errors_and_takes_traffic_again_when_back() {
    const R: &str = "https://killed.e2e.test";
    // Four clients on a busy 2-core CI box: give the policy the room a debug build needs, so only
    // the pool is under test (its bounds have their own tests).
    let opts = StackOptions { control_plane_env: vec![("POLICY_EVAL_TIMEOUT".into(), "5s".into())], ..Default::default() };
    let s = Arc::new(Stack::start_with(opts).await);
    let d = Arc::new(s.demo(true).await);
    let mut members =
        [Endpoint::start("a", Behaviour::Answers), Endpoint::start("b", Behaviour::Answers), Endpoint::start("c", Behaviour::Answers)];
    pool(&s, &d, R, &members.iter().map(Endpoint::url).collect::<Vec<_>>(), json!({})).await;
    let session = Arc::new(s.session(&d).await);
    let started = Instant::now();
    // Four clients in a loop for 9 s; b dies at 2 s and is back at 4 s.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (s, d, session) = (s.clone(), d.clone(), session.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while started.elapsed() < Duration::from_secs(9) {
                    let (status, served, body) = call(&s, &d, &session, R, "/items/1").await;
                    seen.push((started.elapsed(), status, served, body));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    members[1].kill();
    let killed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    members[1].restart();
    let back = started.elapsed();
    let mut seen = Vec::new();
    for c in clients {
        seen.extend(c.await.unwrap());
    }
    let errors: Vec<_> = seen.iter().filter(|(_, st, ..)| *st != 200).collect();
    assert!(errors.is_empty(), "no client-visible error: {} of {} failed: {:?}", errors.len(), seen.len(), errors.first());
    assert!(seen.len() > 40, "steady load: {} requests", seen.len());
    let by_b_while_dead = seen.iter().filter(|(t, _, who, _)| who == "b" && *t > killed + Duration::from_millis(200) && *t < back).count();
    assert_eq!(by_b_while_dead, 0, "nothing is served by a dead member");
    // Passive ejection: 1 s, then 2 s, then 4 s while b stays dead; once back, the next trial
    // (at most 4 s after the restart) re-admits it.
    let recovered = seen.iter().filter(|(t, _, who, _)| who == "b" && *t > back).map(|(t, ..)| *t).min();
    let recovered = recovered.expect("b serves again after it came back");
    assert!(recovered - back < Duration::from_millis(4_500), "recovered {:?} after the restart", recovered - back);
    let connect_failed = s.gateway_metric(&sample("caracal_gateway_upstream_requests_total", R, 1, Some("connect_failed"))).await;
    // Each ejection window ends with at most one trial per concurrent client.
    assert!((1.0..=12.0).contains(&connect_failed), "attempts on the dead member: {connect_failed}");
    assert!(s.gateway_metric(&format!(r#"caracal_gateway_upstream_retries_total{{resource="{R}"}}"#)).await >= connect_failed);
    assert!(s.gateway_metric(&sample("caracal_gateway_upstream_ejections_total", R, 1, None)).await >= 1.0);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 0.0);
    // One STS exchange per client request: a retry spends no authority.
    let exchanges = s.gateway_metric("caracal_gateway_sts_exchange_duration_seconds_count").await;
    assert_eq!(exchanges as usize, seen.len(), "one exchange per request, retries included");
}

#[tokio::test]
async fn a_member_killed_while_answering_an_idempotent_request_costs_no_client_error() {
    const R: &str = "https://killed-mid-request.e2e.test";
    let s = Arc::new(Stack::start().await);
    let d = Arc::new(s.demo(true).await);
    let a = Endpoint::start("a", Behaviour::Answers);
    let mut b = Endpoint::start("b", Behaviour::Answers);
    pool(&s, &d, R, &[a.url(), b.url()], json!({})).await;
    let session = Arc::new(s.session(&d).await);
    // Round robin: one slow request on each member; b dies while it works on its own.
    let m1 = mandate(&s, &d, &session, R).await;
    let m2 = mandate(&s, &d, &session, R).await;
    let (s1, s2) = (s.clone(), s.clone());
    let one = tokio::spawn(async move { s1.governed("GET", "/slow", &m1, R).await });
    let two = tokio::spawn(async move { s2.governed("GET", "/slow", &m2, R).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.kill();
    for answer in [one.await.unwrap(), two.await.unwrap()] {
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["endpoint"], "a", "served by the member that lived");
    }
    assert_eq!(s.gateway_metric(&sample("caracal_gateway_upstream_requests_total", R, 1, Some("failed"))).await, 1.0);
    assert_eq!(s.gateway_metric(&format!(r#"caracal_gateway_upstream_retries_total{{resource="{R}"}}"#)).await, 1.0);
    // A POST is never sent twice: the one on the member that dies fails.
    b.restart();
    let m1 = mandate(&s, &d, &session, R).await;
    let m2 = mandate(&s, &d, &session, R).await;
    let (s1, s2) = (s.clone(), s.clone());
    let one = tokio::spawn(async move { s1.governed("POST", "/slow", &m1, R).await.status });
    let two = tokio::spawn(async move { s2.governed("POST", "/slow", &m2, R).await.status });
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.kill();
    let mut statuses = [one.await.unwrap(), two.await.unwrap()];
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
}

#[tokio::test]
async fn when_every_member_is_down_requests_are_refused_503_until_one_returns() {
    const R: &str = "https://all-down.e2e.test";
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let mut a = Endpoint::start("a", Behaviour::Answers);
    a.kill();
    let b = Endpoint::dead_url();
    pool(&s, &d, R, &[a.url(), b], json!({})).await;
    let session = s.session(&d).await;
    // The first request tries both (one retry by default) and finds nobody.
    let (status, _, body) = call(&s, &d, &session, R, "/x").await;
    assert_eq!((status, body["error"].as_str()), (502, Some("internal_error")), "{body}");
    // Both are ejected now: refused at once, nothing dialed.
    let t = Instant::now();
    let (status, _, body) = call(&s, &d, &session, R, "/x").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "upstream_unavailable");
    assert_eq!(body["error_description"], "no healthy upstream endpoint");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_unavailable_total").await, 1.0);
    let ready: Value = s.http.get(format!("{}/ready", s.gw_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["pools"][R], json!({"healthy": 0, "total": 2}), "{ready}");
    // a returns; its ejection (1 s) ends and it is tried again.
    a.restart();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, served, body) = call(&s, &d, &session, R, "/x").await;
    assert_eq!((status, served.as_str()), (200, "a"), "{body}");
}

#[tokio::test]
async fn a_hung_member_answers_upstream_timeout_and_is_ejected_after_five_in_a_row() {
    const R: &str = "https://hung.e2e.test";
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let good = Endpoint::start("good", Behaviour::Answers);
    let hung = Endpoint::start("hung", Behaviour::Hangs);
    pool(&s, &d, R, &[good.url(), hung.url()], json!({"timeouts": {"response_header_ms": 400}})).await;
    let session = s.session(&d).await;
    // Round robin alternates: every other request lands on the hung member until it is ejected.
    let mut statuses = Vec::new();
    while statuses.iter().filter(|st| **st == 504).count() < 5 {
        assert!(statuses.len() < 12, "five timeouts within twelve requests: {statuses:?}");
        let (status, _, body) = call(&s, &d, &session, R, "/x").await;
        if status == 504 {
            assert_eq!(body["error"], "upstream_timeout", "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(s.gateway_metric(&sample("caracal_gateway_upstream_ejections_total", R, 1, None)).await, 1.0);
    // Ejected for 1 s: the next requests (round robin would send every other one to it) all go to
    // the good member.
    for _ in 0..2 {
        let (status, served, _) = call(&s, &d, &session, R, "/x").await;
        assert_eq!((status, served.as_str()), (200, "good"), "after {statuses:?}");
    }
    assert_eq!(s.gateway_metric(&sample("caracal_gateway_upstream_requests_total", R, 1, Some("failed"))).await, 5.0);
}

#[tokio::test]
async fn a_retry_is_audited_attempt_by_attempt() {
    const R: &str = "https://audited-retry.e2e.test";
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let live = Endpoint::start("live", Behaviour::Answers);
    pool(&s, &d, R, &[Endpoint::dead_url(), live.url()], json!({})).await;
    let session = s.session(&d).await;
    for _ in 0..3 {
        let (status, served, _) = call(&s, &d, &session, R, "/x").await;
        assert_eq!((status, served.as_str()), (200, "live"));
    }
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let start = Instant::now();
    let events = loop {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT event FROM audit_events WHERE zone_id = $1 AND event_type = 'gateway_resource_request' ORDER BY occurred_at",
        )
        .bind(&d.zone_id)
        .fetch_all(&db)
        .await
        .unwrap();
        if rows.len() >= 3 || start.elapsed() > Duration::from_secs(10) {
            break rows.into_iter().map(|(e,)| serde_json::from_str::<Value>(&e).unwrap()).collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(events.len(), 3, "{events:?}");
    let attempts: Vec<&Value> = events.iter().map(|e| &e["metadata_json"]["upstream_attempts"]).collect();
    let retried: Vec<_> = attempts.iter().filter(|a| a.as_array().is_some_and(|a| a.len() == 2)).collect();
    assert_eq!(retried.len(), 1, "the dead member was tried once, then ejected: {attempts:?}");
    assert_eq!(*retried[0], &json!([{"endpoint": 0, "outcome": "connect_failed"}, {"endpoint": 1, "outcome": 200}]));
    assert!(events.iter().all(|e| e["metadata_json"]["upstream_endpoint"] == 1), "{events:?}");
}

#[tokio::test]
async fn probes_take_a_hung_member_out_before_traffic_finds_it_and_bring_it_back() {
    const R: &str = "https://probed.e2e.test";
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let good = Endpoint::start("good", Behaviour::Answers);
    let mut flaky = Endpoint::start("flaky", Behaviour::Answers);
    let health = json!({"kind": "http", "path": "/healthz", "interval_ms": 200, "timeout_ms": 150, "healthy_threshold": 1, "unhealthy_threshold": 2});
    pool(&s, &d, R, &[good.url(), flaky.url()], json!({"health": health})).await;
    let session = s.session(&d).await;
    // The first request builds the pool; its probes start.
    assert_eq!(call(&s, &d, &session, R, "/x").await.0, 200);
    assert_eq!(s.gateway_metric(&sample("caracal_gateway_upstream_endpoint_healthy", R, 1, None)).await, 1.0);
    flaky.kill();
    // Two failed probes (≤ 2 intervals + timeouts) take it out without any traffic on it.
    let down =
        s.wait_gateway_metric_eq(&sample("caracal_gateway_upstream_endpoint_healthy", R, 1, None), 0.0, Duration::from_secs(3)).await;
    assert!(down < Duration::from_secs(2), "down after {down:?}");
    for _ in 0..6 {
        let (status, served, _) = call(&s, &d, &session, R, "/x").await;
        assert_eq!((status, served.as_str()), (200, "good"));
    }
    assert_eq!(
        s.gateway_metric(&sample("caracal_gateway_upstream_requests_total", R, 1, Some("connect_failed"))).await,
        0.0,
        "traffic never found it"
    );
    let ready: Value = s.http.get(format!("{}/ready", s.gw_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["pools"][R], json!({"healthy": 1, "total": 2}), "{ready}");
    flaky.restart();
    let up = s.wait_gateway_metric_eq(&sample("caracal_gateway_upstream_endpoint_healthy", R, 1, None), 1.0, Duration::from_secs(3)).await;
    assert!(up < Duration::from_secs(2), "back after {up:?}");
    let mut served = Vec::new();
    for _ in 0..6 {
        served.push(call(&s, &d, &session, R, "/x").await.1);
    }
    assert!(served.iter().any(|w| w == "flaky"), "serves again: {served:?}");
}

#[tokio::test]
async fn a_probe_never_dials_a_member_the_egress_policy_refused() {
    const R: &str = "https://probe-trap.e2e.test";
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let good = Endpoint::start("good", Behaviour::Answers);
    // Reachable if dialed: a connection to 0.0.0.0 lands on the local host's listener.
    let trap = Upstream::start().await;
    let trap_url = format!("http://0.0.0.0:{}/base", trap.addr.port());
    let health = json!({"kind": "tcp", "interval_ms": 200, "timeout_ms": 100});
    pool(&s, &d, R, &[trap_url, good.url()], json!({"health": health})).await;
    let session = s.session(&d).await;
    assert_eq!(call(&s, &d, &session, R, "/x").await.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(trap.carried().is_empty() && trap.requests().is_empty(), "neither traffic nor probes reached the refused member");
    let ready: Value = s.http.get(format!("{}/ready", s.gw_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["pools"][R], json!({"healthy": 1, "total": 1}), "the refused member is not in the pool: {ready}");
}

#[tokio::test]
async fn a_503_is_retried_on_another_member_only_when_the_resource_opts_in_and_only_if_idempotent() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let sick = Endpoint::start("sick", Behaviour::Unavailable);
    let good = Endpoint::start("good", Behaviour::Answers);
    let members = [sick.url(), good.url()];
    pool(&s, &d, "https://opted-in.e2e.test", &members, json!({"retry": {"attempts": 2, "on_unavailable": true}})).await;
    pool(&s, &d, "https://default.e2e.test", &members, json!({})).await;
    let session = s.session(&d).await;
    for _ in 0..4 {
        let (status, served, _) = call(&s, &d, &session, "https://opted-in.e2e.test", "/x").await;
        assert_eq!((status, served.as_str()), (200, "good"), "a GET is retried on the good member");
    }
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(call_with(&s, &d, &session, "https://opted-in.e2e.test", "POST", "/x").await.0);
    }
    assert!(posts.contains(&503), "a POST is never sent twice: {posts:?}");
    let mut defaults = Vec::new();
    for _ in 0..4 {
        defaults.push(call(&s, &d, &session, "https://default.e2e.test", "/x").await.0);
    }
    assert!(defaults.contains(&503), "without the opt-in the 503 reaches the client: {defaults:?}");
    assert!(s.gateway_metric(r#"caracal_gateway_upstream_retries_total{resource="https://opted-in.e2e.test"}"#).await >= 1.0);
    // The retried attempts are the good member's successes, not failures.
    const OPTED: &str = "https://opted-in.e2e.test";
    assert_eq!(s.gateway_metric(&sample("caracal_gateway_upstream_requests_total", OPTED, 1, Some("failed"))).await, 0.0);
    let good_ok = s.gateway_metric(&sample("caracal_gateway_upstream_requests_total", OPTED, 1, Some("success"))).await;
    let posts_ok = posts.iter().filter(|st| **st == 200).count() as f64;
    assert_eq!(good_ok, 4.0 + posts_ok, "every GET ended on the good member, with its answer recorded");
}

#[tokio::test]
async fn a_member_at_its_cap_is_skipped_and_a_full_pool_sheds_503_at_once() {
    const R: &str = "https://capped.e2e.test";
    let s = Arc::new(Stack::start().await);
    let d = Arc::new(s.demo(true).await);
    let a = Endpoint::start("a", Behaviour::Answers);
    let b = Endpoint::start("b", Behaviour::Answers);
    pool(&s, &d, R, &[a.url(), b.url()], json!({"connections": {"max_in_flight": 1}, "timeouts": {"response_header_ms": 3000}})).await;
    let session = Arc::new(s.session(&d).await);
    // Two requests that hang hold both members' only place.
    let hangs: Vec<_> = (0..2)
        .map(|_| {
            let (s, d, session) = (s.clone(), d.clone(), session.clone());
            tokio::spawn(async move { call(&s, &d, &session, R, "/hang").await.0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t = Instant::now();
    let (status, _, body) = call(&s, &d, &session, R, "/x").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "upstream_overloaded");
    assert!(t.elapsed() < Duration::from_secs(1), "shed at once, not queued");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_overloaded_total").await, 1.0);
    for h in hangs {
        assert_eq!(h.await.unwrap(), 504, "the hanging requests end at their deadline");
    }
    assert_eq!(call(&s, &d, &session, R, "/x").await.0, 200, "places are freed");
}

#[tokio::test]
async fn http2_to_the_members_when_the_resource_asks_for_it() {
    const R: &str = "https://h2.e2e.test";
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let members = [format!("{}/base", a.url()), format!("{}/base", b.url())];
    pool(&s, &d, R, &members, json!({"connections": {"http2": true}})).await;
    pool(&s, &d, "https://h1.e2e.test", &members, json!({})).await;
    let session = s.session(&d).await;
    for _ in 0..4 {
        assert_eq!(call(&s, &d, &session, R, "/items/1").await.0, 200);
        assert_eq!(call(&s, &d, &session, "https://h1.e2e.test", "/items/2").await.0, 200);
    }
    let seen: Vec<_> = a.requests().into_iter().chain(b.requests()).collect();
    assert!(seen.iter().filter(|r| r.path == "/base/items/1").all(|r| r.version == "HTTP/2.0"), "h2c by prior knowledge");
    assert!(seen.iter().filter(|r| r.path == "/base/items/2").all(|r| r.version == "HTTP/1.1"));
    assert_eq!(seen.len(), 8);
}
