//! Audit evidence from the gateway: signed frames, spooling while Redis is down, draining as
//! soon as it is back, and readiness once evidence was lost.

use std::time::{Duration, Instant};

use caracal_e2e::infra::Redis;
use caracal_e2e::{Stack, StackOptions};
use caracal_shared::audit::{AuditEvent, Frame};

/// The gateway's frames on the stream (the control plane's own evidence is there too).
async fn frames(redis_url: &str) -> Vec<Frame> {
    let mut conn = redis::Client::open(redis_url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("caracal.audit.events").arg("-").arg("+").query_async(&mut conn).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            let get = |k: &str| e.map.get(k).map(|v| redis::from_redis_value::<String>(v.clone()).unwrap());
            Frame { id: get("id").unwrap(), data: get("data").unwrap(), sig: get("sig") }
        })
        .filter(|f| ["\"gateway_resource_request\"", "\"replay_detected\""].iter().any(|t| f.data.contains(t)))
        .collect()
}

#[tokio::test]
async fn forwarded_requests_and_replays_leave_signed_evidence_without_secrets() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/7", &m, &d.resource).await.status, 200);
    assert_eq!(s.governed("GET", "/items/7", &m, &d.resource).await.status, 401);
    let start = Instant::now();
    let found = loop {
        let f = frames(&s.redis.url()).await;
        if f.len() >= 2 || start.elapsed() > Duration::from_secs(5) {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found.len(), 2, "one event per forwarded request and per replay");
    let key = hex::decode(&s.audit_key).unwrap();
    let events: Vec<AuditEvent> = found
        .iter()
        .map(|f| {
            assert!(f.verify(&key), "every frame is signed with AUDIT_HMAC_KEY");
            assert!(!f.data.contains(&m), "no token in evidence");
            assert!(!f.data.contains(&session));
            serde_json::from_str(&f.data).unwrap()
        })
        .collect();
    let fwd = events.iter().find(|e| e.event_type == "gateway_resource_request").expect("forwarded event");
    assert_eq!(fwd.decision, "allow");
    assert_eq!(fwd.evaluation_status, "executed");
    assert_eq!(fwd.zone_id, d.zone_id);
    assert_eq!(fwd.metadata_json["upstream_status"], 200);
    assert_eq!(fwd.metadata_json["resource"], d.resource.as_str());
    assert_eq!(fwd.metadata_json["subject_fingerprint"].as_str().unwrap().len(), 16);
    let replay = events.iter().find(|e| e.event_type == "replay_detected").expect("replay event");
    assert_eq!(replay.decision, "deny");
    assert_eq!(replay.evaluation_status, "anomaly");
    assert_eq!(s.gateway_metric("caracal_gateway_audit_emitted_total").await, 2.0);
}

#[tokio::test]
async fn evidence_is_spooled_while_redis_is_down_and_drained_when_it_returns() {
    let (mut s, _cp_redis) = split_redis_stack().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let mandates: Vec<String> = mint_many(&s, &d, &session, 3).await;
    s.redis.stop();
    for m in &mandates {
        assert_eq!(s.governed("GET", "/items/1", m, &d.resource).await.status, 200);
    }
    let spool = s.dir.join("audit-replay");
    let start = Instant::now();
    while s.gateway_metric("caracal_gateway_audit_spooled_total").await < 3.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "events are spooled:\n{}", s.gateway.log_tail(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_dir(&spool).unwrap().count() >= 1, "spool files exist while Redis is down");
    s.redis.restart();
    let start = Instant::now();
    loop {
        let f = frames(&s.redis.url()).await;
        if f.len() == 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "spooled events are drained once Redis is back (have {})", f.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.gateway_metric("caracal_gateway_audit_drained_total").await, 3.0);
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "ndjson")).count(),
        0
    );
    assert_eq!(s.gateway_metric("caracal_gateway_audit_dropped_total").await, 0.0);
}

/// A stack whose control plane has a Redis of its own (so exchanges keep working while the
/// gateway's Redis is down) and whose gateway fails open on JTI (dev only) so requests still flow.
async fn split_redis_stack() -> (Stack, Redis) {
    let cp_redis = Redis::start();
    let s = Stack::start_with(StackOptions {
        gateway_env: vec![("JTI_FAIL_OPEN".into(), "true".into())],
        control_plane_env: vec![("REDIS_URL".into(), cp_redis.url())],
        ..Default::default()
    })
    .await;
    (s, cp_redis)
}

async fn mint_many(s: &Stack, d: &caracal_e2e::stack::Demo, session: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(s.gateway_mandate(d, session, "tools.read").await);
    }
    out
}

#[tokio::test]
async fn ready_fails_once_evidence_was_lost() {
    let (mut s, _cp_redis) = split_redis_stack().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    // Neither Redis nor the spool can take the event.
    let spool = s.dir.join("audit-replay");
    std::fs::remove_dir_all(&spool).unwrap();
    std::fs::write(&spool, b"not a directory").unwrap();
    s.redis.stop();
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200);
    let start = Instant::now();
    while s.gateway_metric("caracal_gateway_audit_dropped_total").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the loss is counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready = s.http.get(format!("{}/ready", s.gw_url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "lost evidence keeps the gateway unready");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(body["reason"] == "audit_evidence_lost" || body["reason"] == "audit_replay_unavailable", "{body}");
}
