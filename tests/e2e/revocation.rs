//! Revocation at the gateway: propagation, mid-stream and idle-stream cuts, fail-closed
//! staleness, signed-stream hygiene and the snapshot reload.

use std::time::{Duration, Instant};

use caracal_e2e::stack::{GATEWAY_ADMIN_TOKEN, sid_of};
use caracal_e2e::{Stack, StackOptions};
use serde_json::Value;

#[tokio::test]
async fn a_revocation_reaches_the_gateway_within_a_second_and_denies_before_the_sts() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    s.revoke_session(&d, &session).await;
    let took = s.wait_gateway_metric("caracal_gateway_revocation_messages_total", 1.0, Duration::from_secs(1)).await;
    eprintln!("revocation applied at the gateway {took:?} after the revoke call returned");
    let a = s.governed("GET", "/items/1", &m, &d.resource).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.error(), "invalid_token");
    assert_eq!(a.body["error_description"], "session revoked");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_revoked_total").await, 1.0);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_sts_refused_total").await, 0.0, "denied in memory, the STS was not asked");
    assert_eq!(s.gateway_metric("caracal_gateway_revocations_active").await, 1.0);
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn an_idle_stream_is_cut_when_its_session_is_revoked() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let mut resp = s.http.get(format!("{}/sse", s.gw_url)).bearer_auth(&m).header("x-caracal-resource", &d.resource).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("the first event arrives at once");
    assert!(String::from_utf8_lossy(&first).contains("event 0"));
    // The upstream now stays silent; only a revocation can end this stream.
    let revoked_at = Instant::now();
    s.revoke_session(&d, &session).await;
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                _ => return Instant::now(),
            }
        }
    })
    .await
    .expect("the idle stream is cut");
    let took = ended - revoked_at;
    eprintln!("idle stream cut {took:?} after the revoke call");
    assert!(took < Duration::from_secs(1), "cut took {took:?}");
    assert_eq!(s.gateway_metric("caracal_gateway_stream_cuts_total").await, 1.0);
    assert_counted_only_as_a_cut(&s).await;
}

/// A revocation cut is a stream cut, not an upstream failure nor a denial.
async fn assert_counted_only_as_a_cut(s: &Stack) {
    // The gateway finishes the request (and would count an error) just after the client saw the end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 0.0, "a cut is not an upstream error");
    assert_eq!(s.gateway_metric("caracal_gateway_requests_denied_total").await, 0.0, "nor a denial");
    assert_eq!(s.gateway_metric("caracal_gateway_stream_cuts_total").await, 1.0, "counted once, as a cut");
}

#[tokio::test]
async fn a_streaming_body_is_cut_at_the_next_4k_boundary() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let total = 2 << 20;
    let mut resp = s
        .http
        .get(format!("{}/slow-body?bytes={total}&every_ms=20", s.gw_url))
        .bearer_auth(&m)
        .header("x-caracal-resource", &d.resource)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = 0usize;
    while got < 64 * 1024 {
        got += resp.chunk().await.unwrap().unwrap().len();
    }
    s.revoke_session(&d, &session).await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => got += c.len(),
                Ok(None) => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the body ends");
    assert!(outcome.is_err() || outcome.as_ref().is_ok_and(|n| *n < total), "the client must not receive the whole body: {outcome:?}");
    assert!(got < total, "received {got} of {total} bytes");
    assert_eq!(s.gateway_metric("caracal_gateway_stream_cuts_total").await, 1.0);
    assert_counted_only_as_a_cut(&s).await;
}

#[tokio::test]
async fn a_finished_response_never_cuts_the_next_request_on_its_pooled_connection() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let resource = "https://pooled.e2e.test";
    s.add_resource(&d, resource, &format!("{}/base", s.upstream.url())).await;
    let (first, second) = (s.session(&d).await, s.session(&d).await);

    // The first session: a stream that ends, then a 204 without Content-Length (no body follows).
    let m = s.mandate_for(&d, &first, resource, "tools.read").await;
    let done = s.http.get(format!("{}/sse?count=3&every_ms=10", s.gw_url)).bearer_auth(&m).header("x-caracal-resource", resource);
    let text = done.send().await.unwrap().text().await.unwrap();
    assert!(text.contains("event 2"), "the first stream completes: {text}");
    let m = s.mandate_for(&d, &first, resource, "tools.read").await;
    assert_eq!(s.governed("GET", "/no-content", &m, resource).await.status, 204);

    // The second session streams on the connection the first one's responses went back to the pool with.
    let m = s.mandate_for(&d, &second, resource, "tools.read").await;
    let mut open = s.http.get(format!("{}/sse", s.gw_url)).bearer_auth(&m).header("x-caracal-resource", resource).send().await.unwrap();
    assert_eq!(open.status(), 200);
    assert!(open.chunk().await.unwrap().is_some(), "the first event arrives");
    let carried = s.upstream.carried();
    assert_eq!(carried.len(), 3, "{carried:?}");
    assert!(carried.iter().all(|c| c.peer == carried[0].peer), "the upstream connection was reused: {carried:?}");

    s.revoke_session(&d, &first).await;
    s.wait_gateway_metric("caracal_gateway_revocation_messages_total", 1.0, Duration::from_secs(2)).await;
    let still_open = tokio::time::timeout(Duration::from_millis(1500), open.chunk()).await;
    assert!(still_open.is_err(), "the second session's stream must stay open: {still_open:?}");
    assert_eq!(s.gateway_metric("caracal_gateway_stream_cuts_total").await, 0.0);
    assert_eq!(s.gateway_metric("caracal_gateway_denials_upstream_errors_total").await, 0.0);
}

#[tokio::test]
async fn forged_and_malformed_revocations_are_dead_lettered_not_applied() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let sid = sid_of(&session);
    let mut conn = redis::Client::open(s.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let stream = "caracal.sessions.revoke";
    // Signed with the wrong key.
    let wrong = caracal_shared::sig::stream_signature(&[7u8; 32], stream, [("session_id", sid.as_str()), ("zone_id", d.zone_id.as_str())]);
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("session_id")
        .arg(&sid)
        .arg("zone_id")
        .arg(&d.zone_id)
        .arg("_sig")
        .arg(wrong)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Correctly signed but naming nothing.
    let key = hex::decode(&s.streams_key).unwrap();
    let good = caracal_shared::sig::stream_signature(&key, stream, [("zone_id", d.zone_id.as_str()), ("reason", "x")]);
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("zone_id")
        .arg(&d.zone_id)
        .arg("reason")
        .arg("x")
        .arg("_sig")
        .arg(good)
        .query_async(&mut conn)
        .await
        .unwrap();
    s.wait_gateway_metric("caracal_gateway_revocation_dead_letters_total", 2.0, Duration::from_secs(5)).await;
    assert_eq!(s.gateway_metric("caracal_gateway_revocation_invalid_signatures_total").await, 1.0);
    let dead: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("caracal.sessions.revoke.dead").arg("-").arg("+").query_async(&mut conn).await.unwrap();
    // Every consumer group (this gateway's, the STS's) dead-letters on its own; look at the gateway's.
    let field = |e: &redis::streams::StreamId, k: &str| -> String { redis::from_redis_value(e.map[k].clone()).unwrap() };
    let errors: Vec<String> =
        dead.ids.iter().filter(|e| field(e, "group").starts_with("gateway-revocation:")).map(|e| field(e, "error")).collect();
    assert_eq!(errors, ["invalid_signature", "no revocation anchor in message"], "each dead letter says why");
    // The runbook's dead-letter alert reads this gauge (the stream's whole depth, every group's letters).
    s.wait_gateway_metric("caracal_gateway_revocation_dead_letter_backlog", errors.len() as f64, Duration::from_secs(7)).await;
    assert_eq!(s.gateway_metric("caracal_gateway_revocation_consumer_lag_seconds").await, 0.0, "caught up");
    let summary: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(format!("gateway-revocation:{}", gateway_instance(&s)))
        .query_async(&mut conn)
        .await
        .unwrap();
    let pending: i64 = redis::from_redis_value(summary[0].clone()).unwrap();
    assert_eq!(pending, 0, "dead-lettered messages are acknowledged, nothing is left pending");
    // The forged message revoked nothing.
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200);
}

fn gateway_instance(s: &Stack) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    format!("{host}:{}:{}", s.gw_url.rsplit(':').next().unwrap(), s.gateway.pid())
}

#[tokio::test]
async fn a_stale_view_fails_closed_and_recovers() {
    let mut s = Stack::start_with(StackOptions {
        gateway_env: vec![("REVOCATION_MAX_STALENESS".into(), "2s".into()), ("REVOCATION_SNAPSHOT_INTERVAL".into(), "1s".into())],
        ..Default::default()
    })
    .await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    s.redis.stop();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let ready = s.http.get(format!("{}/ready", s.gw_url)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["reason"], "revocation_stale");
    let a = s.governed("GET", "/items/1", &m, &d.resource).await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.error(), "sts_unavailable");
    assert_eq!(a.body["error_description"], "revocation state unavailable");
    assert_eq!(s.gateway_metric("caracal_gateway_denials_revocation_stale_total").await, 1.0);
    s.redis.restart();
    let start = Instant::now();
    while s.http.get(format!("{}/ready", s.gw_url)).send().await.unwrap().status() != 200 {
        assert!(start.elapsed() < Duration::from_secs(10), "the gateway becomes ready again once Redis is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.upstream.requests().is_empty());
}

#[tokio::test]
async fn the_reload_endpoint_merges_the_database_snapshot() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let url = format!("{}/internal/revocations/reload", s.gw_url);
    assert_eq!(s.http.post(&url).send().await.unwrap().status(), 404, "hidden without the admin bearer");
    assert_eq!(s.http.post(&url).bearer_auth("wrong-token-wrong-token-wrong-token").send().await.unwrap().status(), 404);
    assert_eq!(s.http.get(&url).bearer_auth(GATEWAY_ADMIN_TOKEN).send().await.unwrap().status(), 404, "only POST");
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    // A revocation written by another control plane, not yet announced on the stream.
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    sqlx::query("INSERT INTO revocations (zone_id, anchor_kind, anchor_id, reason, expires_at) VALUES ($1, 'sid', $2, 'test', now() + interval '1 hour')")
        .bind(&d.zone_id)
        .bind(sid_of(&session))
        .execute(&db)
        .await
        .unwrap();
    let r = s.http.post(&url).bearer_auth(GATEWAY_ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["revocations"], 1);
    let a = s.governed("GET", "/items/1", &m, &d.resource).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.body["error_description"], "session revoked");
}

#[tokio::test]
async fn a_revocation_committed_while_redis_is_down_is_published_after_a_crash() {
    let mut s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let sid = sid_of(&session);
    // The revoke commits with its outbox row although Redis is gone; the relay fails and backs off.
    s.redis.stop();
    s.revoke_session(&d, &session).await;
    let db = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    let undelivered = "SELECT count(*) FROM outbox WHERE stream = 'caracal.sessions.revoke' AND dispatched_at IS NULL";
    let start = Instant::now();
    loop {
        let failed: (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE last_error IS NOT NULL").fetch_one(&db).await.unwrap();
        if failed.0 >= 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the relay tried and failed while Redis was down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (pending,): (i64,) = sqlx::query_as(undelivered).fetch_one(&db).await.unwrap();
    assert_eq!(pending, 1);
    // The control plane crashes (SIGKILL); Redis and then the control plane come back.
    s.stop_control_plane();
    s.redis.restart();
    s.restart_control_plane().await;
    let start = Instant::now();
    loop {
        let (pending,): (i64,) = sqlx::query_as(undelivered).fetch_one(&db).await.unwrap();
        if pending == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(70), "the relay delivers after the restart, within its backoff");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("outbox delivered {:?} after the restart", start.elapsed());
    // On the stream, signed, naming the revoked session.
    let mut redis = redis::Client::open(s.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("caracal.sessions.revoke").arg("-").arg("+").query_async(&mut redis).await.unwrap();
    let fields: std::collections::BTreeMap<String, String> = entries
        .ids
        .iter()
        .map(|e| e.map.iter().map(|(k, v)| (k.clone(), redis::from_redis_value(v.clone()).unwrap())).collect())
        .find(|f: &std::collections::BTreeMap<String, String>| f.values().any(|v| *v == sid))
        .expect("the revocation is on the stream");
    let unsigned = fields.iter().filter(|(k, _)| *k != "_sig").map(|(k, v)| (k.as_str(), v.as_str()));
    let expected = caracal_shared::sig::stream_signature(&hex::decode(&s.streams_key).unwrap(), "caracal.sessions.revoke", unsigned);
    assert_eq!(fields["_sig"], expected);
    // And the gateway applied it from the stream.
    s.wait_gateway_metric("caracal_gateway_revocation_messages_total", 1.0, Duration::from_secs(10)).await;
}

/// A handler that never finishes a message: everything it is given stays pending.
struct NeverDone;

impl caracal_shared::stream_consumer::Handler for NeverDone {
    fn handle(&self, batch: &[caracal_shared::stream_consumer::Message]) -> Vec<Result<(), caracal_shared::stream_consumer::Failure>> {
        batch.iter().map(|_| Err(caracal_shared::stream_consumer::Failure::Transient("not yet".into()))).collect()
    }
}

#[tokio::test]
async fn a_stream_consumer_reports_its_dead_letters_and_how_far_behind_it_is() {
    use caracal_shared::redis_primary::{Durability, Primary};
    use caracal_shared::stream_consumer::{Consumer, ConsumerMetrics};
    let redis = caracal_e2e::infra::Redis::start();
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let (stream, key) = ("caracal.sessions.revoke", [9u8; 32]);
    let signed = caracal_shared::sig::stream_signature(&key, stream, [("session_id", "s-1"), ("zone_id", "z")]);
    for sig in [signed.as_str(), "forged"] {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("session_id")
            .arg("s-1")
            .arg("zone_id")
            .arg("z")
            .arg("_sig")
            .arg(sig)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let added = Instant::now();
    let counter = |n: &str| prometheus::IntCounter::new(n, n).unwrap();
    let metrics = ConsumerMetrics {
        handled: counter("h"),
        invalid_signatures: counter("i"),
        dead_letters: counter("d"),
        reclaimed: counter("r"),
        read_errors: counter("e"),
        dead_letter_backlog: prometheus::IntGauge::new("b", "b").unwrap(),
        lag_seconds: prometheus::Gauge::new("l", "l").unwrap(),
    };
    let consumer = std::sync::Arc::new(Consumer {
        primary: Primary::fixed(redis.client(), Durability::default()),
        stream: stream.into(),
        group: "test-group".into(),
        consumer: "test-consumer".into(),
        key: key.to_vec(),
        handler: NeverDone,
        metrics: metrics.clone(),
        block: Duration::from_millis(200),
        start_id: "0",
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn({
        let c = consumer.clone();
        async move { c.run(stopped).await }
    });
    // The forged message is dead-lettered at once; the signed one stays pending. The gauges are
    // refreshed every 5 s, so the second refresh shows both.
    loop {
        if metrics.dead_letter_backlog.get() == 1 && metrics.lag_seconds.get() >= 1.0 {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(12),
            "backlog {} lag {}",
            metrics.dead_letter_backlog.get(),
            metrics.lag_seconds.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lag = metrics.lag_seconds.get();
    assert!(lag <= added.elapsed().as_secs_f64() + 0.5, "the lag is the pending message's age: {lag}");
    assert_eq!((metrics.handled.get(), metrics.dead_letters.get(), metrics.invalid_signatures.get()), (0, 1, 1));
    stop.send(true).unwrap();
    run.await.unwrap();
}
