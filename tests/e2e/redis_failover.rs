//! Redis behind Sentinel (`docs/redis.md`): a primary, two replicas and three Sentinels, real
//! processes on loopback. The primary is killed under load: requests are refused only until the
//! Sentinels promote a replica, no mandate is accepted twice across the failover, and a revocation
//! made while the primary is down and the evidence of every accepted request survive it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caracal_e2e::redis_ha::DOWN_AFTER;
use caracal_e2e::stack::{Demo, sid_of};
use caracal_e2e::{Stack, StackOptions};

/// Mints `n` gateway mandates for `session`, eight at a time.
async fn mandates(s: &Stack, d: &Demo, session: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = (n - out.len()).min(8);
        out.extend(futures_util::future::join_all((0..batch).map(|_| s.gateway_mandate(d, session, "tools.read"))).await);
    }
    out
}

/// One governed request of the load: when it was sent (since the kill), and its answer.
struct Outcome {
    at: Duration,
    mandate: String,
    status: u16,
    error: String,
}

#[tokio::test]
async fn killing_the_redis_primary_under_load_refuses_only_until_failover_and_loses_nothing() {
    let mut s = Stack::start_with(StackOptions { redis_ha: true, ..Default::default() }).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let doomed = s.session(&d).await;
    let doomed_mandate = s.gateway_mandate(&d, &doomed, "tools.read").await;

    // Spent just before the kill: their markers must be on a replica already.
    let spent_before = mandates(&s, &d, &session, 20).await;
    for m in &spent_before {
        assert_eq!(s.governed("GET", "/items/1", m, &d.resource).await.status, 200);
    }
    let load = Mutex::new(mandates(&s, &d, &session, 600).await.into_iter().collect::<VecDeque<_>>());
    let old = s.redis_ha.as_ref().unwrap().primary_port().expect("the Sentinels name a primary");
    assert_eq!(old, s.redis.port);

    s.redis.stop();
    let killed = Instant::now();
    // Revoked while the primary is down: Postgres takes it; the outbox publishes it once Redis can.
    s.revoke_session(&d, &doomed).await;

    // Four clients, one request each every 50 ms, until 40 requests passed after the failover.
    let outcomes = Mutex::new(Vec::new());
    let passed_after = std::sync::atomic::AtomicUsize::new(0);
    let worker = || async {
        while passed_after.load(std::sync::atomic::Ordering::Relaxed) < 40 {
            assert!(killed.elapsed() < Duration::from_secs(40), "no recovery within 40 s of the kill");
            let m = load.lock().unwrap().pop_front().expect("enough mandates for the load");
            let at = killed.elapsed();
            let a = s.governed("GET", "/items/1", &m, &d.resource).await;
            if a.status == 200 && outcomes.lock().unwrap().iter().any(|o: &Outcome| o.status != 200) {
                passed_after.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            outcomes.lock().unwrap().push(Outcome { at, mandate: m, status: a.status, error: a.error().to_owned() });
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::join!(worker(), worker(), worker(), worker());
    let outcomes = outcomes.into_inner().unwrap();

    let new = s.redis_ha.as_ref().unwrap().primary_port().unwrap();
    assert_ne!(new, old, "a replica was promoted");
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 200).collect();
    assert!(!refused.is_empty(), "the kill was noticed: requests were refused while no primary answered");
    for o in &refused {
        // Refused as unavailable (the JTI store or the STS behind it), never as a replay or a pass.
        assert_eq!(o.status, 503, "{}: {}", o.status, o.error);
        assert!(["replay_check_unavailable", "sts_unavailable"].contains(&o.error.as_str()), "{}", o.error);
    }
    let last_refused = refused.iter().map(|o| o.at).max().unwrap();
    let first_after = outcomes.iter().filter(|o| o.status == 200 && o.at > last_refused).map(|o| o.at).min().unwrap();
    eprintln!(
        "failover: {} requests, {} refused (last sent at {last_refused:?}), first pass after it sent at {first_after:?} (Sentinel down-after {DOWN_AFTER:?})",
        outcomes.len(),
        refused.len()
    );
    assert!(last_refused < Duration::from_secs(15), "refused for {last_refused:?} after the kill");
    assert!(outcomes.iter().filter(|o| o.at > last_refused).all(|o| o.status == 200), "no refusal after recovery");

    // No mandate is accepted twice across the failover.
    let accepted: Vec<&String> = spent_before.iter().chain(outcomes.iter().filter(|o| o.status == 200).map(|o| &o.mandate)).collect();
    for m in &accepted {
        let again = s.governed("GET", "/items/1", m, &d.resource).await;
        assert_eq!((again.status, again.body["error_description"].as_str()), (401, Some("token replay detected")), "{}", again.text);
    }
    assert_eq!(s.upstream.requests().len(), accepted.len(), "the upstream saw each accepted mandate once");

    // The revocation made during the outage reached the new primary's stream and the gateway.
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{new}")).unwrap().get_multiplexed_async_connection().await.unwrap();
    let start = Instant::now();
    let sid = sid_of(&doomed);
    loop {
        let entries: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg("caracal.sessions.revoke").arg("-").arg("+").query_async(&mut conn).await.unwrap();
        let published = entries
            .ids
            .iter()
            .any(|e| e.map.values().any(|v| redis::from_redis_value::<String>(v.clone()).is_ok_and(|v| v.contains(&sid))));
        if published {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the revocation never reached the new primary's stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = s.governed("GET", "/items/1", &doomed_mandate, &d.resource).await;
    assert_eq!((a.status, a.body["error_description"].as_str()), (401, Some("session revoked")), "{}", a.text);

    // Every accepted request's evidence is filed (a re-sent frame is filed once).
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let start = Instant::now();
    loop {
        let filed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events WHERE zone_id = $1 AND event_type = 'gateway_resource_request' AND decision = 'allow'",
        )
        .bind(&d.zone_id)
        .fetch_one(&db)
        .await
        .unwrap();
        if filed >= accepted.len() as i64 {
            assert_eq!(filed, accepted.len() as i64, "each accepted request filed once");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{filed} of {} events filed\n{}", accepted.len(), s.control_plane.log_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the kill; {} mandates accepted, none twice", first_after, accepted.len());
}

/// `REDIS_MIN_REPLICAS`: a JTI marker no replica holds would not survive a failover, so the
/// request is refused (503 `replay_check_unavailable`, `jti_unavailable`) rather than accepted.
#[tokio::test]
async fn a_mandate_is_not_accepted_while_no_replica_can_hold_its_marker() {
    let mut s = Stack::start_with(StackOptions { redis_ha: true, ..Default::default() }).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let [held, fresh]: [String; 2] = mandates(&s, &d, &session, 2).await.try_into().unwrap();
    for r in &mut s.redis_ha.as_mut().unwrap().replicas {
        r.stop();
    }
    let a = s.governed("GET", "/items/1", &held, &d.resource).await;
    assert_eq!((a.status, a.error()), (503, "replay_check_unavailable"), "{}", a.text);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_jti_unavailable_total").await, 1.0);
    assert!(s.upstream.requests().is_empty());

    for r in &mut s.redis_ha.as_mut().unwrap().replicas {
        r.restart();
    }
    let mut primary = s.redis.client().get_multiplexed_async_connection().await.unwrap();
    let start = Instant::now();
    loop {
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut primary).await.unwrap();
        if info.contains("state=online") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the replicas did not come back: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.governed("GET", "/items/1", &fresh, &d.resource).await.status, 200, "a replica holds markers again");
    // The refused request's marker reached the primary before WAIT gave up: that mandate is spent.
    let again = s.governed("GET", "/items/1", &held, &d.resource).await;
    assert_eq!((again.status, again.error()), (401, "invalid_token"), "{}", again.text);
    assert_eq!(s.upstream.requests().len(), 1);
}
