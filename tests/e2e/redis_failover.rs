//! Redis that survives a failover (`docs/redis.md`), with real processes on loopback: a primary
//! with two replicas behind three Sentinels, and a six-node Redis Cluster. A primary is killed
//! under load. Requests are refused only until a replica is promoted; no mandate is accepted twice
//! across the failover; a revocation made while the primary is down, and the evidence of every
//! accepted request, survive it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use caracal_e2e::redis_ha::{self, DOWN_AFTER};
use caracal_e2e::stack::{Demo, sid_of};
use caracal_e2e::{Stack, StackOptions};
use redis::aio::ConnectionLike;

/// Mints `n` gateway mandates for `session`, eight at a time.
async fn mandates(s: &Stack, d: &Demo, session: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = (n - out.len()).min(8);
        out.extend(futures_util::future::join_all((0..batch).map(|_| s.gateway_mandate(d, session, "tools.read"))).await);
    }
    out
}

/// The load: `ROUND` requests every `PAUSE` (plus their answer time). The mandates last at least
/// `LOAD_MANDATES / ROUND * PAUSE` = 50 s, past `DEADLINE`, so a slow failover fails that
/// assertion rather than running out (four every 50 ms ran out at 22 s on a loaded CI machine).
const ROUND: usize = 2;
const PAUSE: Duration = Duration::from_millis(100);
const LOAD_MANDATES: usize = 1000;
/// How long after the kill the load waits for recovery.
const DEADLINE: Duration = Duration::from_secs(40);
const _: () = assert!((LOAD_MANDATES / ROUND) as u128 * PAUSE.as_millis() > DEADLINE.as_millis(), "the mandates outlast the deadline");

/// One governed request of the load: when it was sent (since the kill), and its answer.
struct Outcome {
    at: Duration,
    mandate: String,
    status: u16,
    error: String,
}

/// The load and what it saw.
struct Load {
    mandates: VecDeque<String>,
    killed: Instant,
    seen: Vec<Outcome>,
}

impl Load {
    /// Everything a failover test needs up to the kill: a session to revoke during the outage
    /// (with a mandate held for it), 20 mandates spent just before the kill (their markers must
    /// be on a replica already) and [`LOAD_MANDATES`] fresh ones for the load, enough to outlast [`DEADLINE`].
    async fn prepare(s: &Stack, d: &Demo) -> (Self, Vec<String>, String, String) {
        let session = s.session(d).await;
        let doomed = s.session(d).await;
        let doomed_mandate = s.gateway_mandate(d, &doomed, "tools.read").await;
        let spent_before = mandates(s, d, &session, 20).await;
        for m in &spent_before {
            let a = s.governed("GET", "/items/1", m, &d.resource).await;
            assert_eq!(a.status, 200, "{}\n{}\n{}", a.text, s.gateway.log_tail(10), s.control_plane.log_tail(10));
        }
        let fresh = mandates(s, d, &session, LOAD_MANDATES).await.into();
        (Self { mandates: fresh, killed: Instant::now(), seen: Vec::new() }, spent_before, doomed, doomed_mandate)
    }

    /// Rounds of [`ROUND`] concurrent requests, one round every [`PAUSE`], until `done` says so.
    async fn until(&mut self, s: &Stack, d: &Demo, mut done: impl FnMut(&[Outcome]) -> bool) {
        while !done(&self.seen) {
            assert!(self.killed.elapsed() < DEADLINE, "no recovery within {DEADLINE:?} of the kill");
            let round: Vec<String> = (0..ROUND).map(|_| self.mandates.pop_front().expect("mandates that outlast the deadline")).collect();
            let at = self.killed.elapsed();
            let answers = futures_util::future::join_all(round.iter().map(|m| s.governed("GET", "/items/1", m, &d.resource))).await;
            for (mandate, a) in round.into_iter().zip(answers) {
                self.seen.push(Outcome { at, mandate, status: a.status, error: a.error().to_owned() });
            }
            tokio::time::sleep(PAUSE).await;
        }
    }

    /// Runs until some request was refused and the last 40 all passed.
    async fn until_recovered(&mut self, s: &Stack, d: &Demo) {
        self.until(s, d, |seen| {
            seen.iter().any(|o| o.status != 200) && seen.len() >= 40 && seen[seen.len() - 40..].iter().all(|o| o.status == 200)
        })
        .await;
    }

    /// Refusals were 503s or 504s (the JTI store or the STS behind it), never a replay or a pass; returns
    /// when the last one was sent.
    fn refused_only_as_unavailable(&self) -> Duration {
        let refused: Vec<&Outcome> = self.seen.iter().filter(|o| o.status != 200).collect();
        for o in &refused {
            // 504: the STS answered too late (its own Redis command was bounded, not instant).
            assert!([503, 504].contains(&o.status), "{}: {}", o.status, o.error);
            assert!(["replay_check_unavailable", "sts_unavailable"].contains(&o.error.as_str()), "{}", o.error);
        }
        let last = refused.iter().map(|o| o.at).max().expect("the kill was noticed: some request was refused");
        eprintln!("{} requests, {} refused, the last sent {last:?} after the kill", self.seen.len(), refused.len());
        last
    }

    /// Every accepted mandate is refused as a replay now and reached the upstream once; the
    /// revocation made during the outage is on the stream (read through `conn`) and enforced; the
    /// ledger filed one event per accepted request.
    async fn nothing_lost(
        &self,
        s: &Stack,
        d: &Demo,
        spent_before: &[String],
        doomed: &str,
        doomed_mandate: &str,
        conn: &mut (impl ConnectionLike + Send),
    ) {
        let accepted: Vec<&String> = spent_before.iter().chain(self.seen.iter().filter(|o| o.status == 200).map(|o| &o.mandate)).collect();
        for m in &accepted {
            let again = s.governed("GET", "/items/1", m, &d.resource).await;
            assert_eq!((again.status, again.body["error_description"].as_str()), (401, Some("token replay detected")), "{}", again.text);
        }
        assert_eq!(s.upstream.requests().len(), accepted.len(), "the upstream saw each accepted mandate once");

        let sid = sid_of(doomed);
        let start = Instant::now();
        loop {
            let entries: redis::streams::StreamRangeReply =
                redis::cmd("XRANGE").arg("caracal.sessions.revoke").arg("-").arg("+").query_async(conn).await.unwrap();
            let values = entries.ids.iter().flat_map(|e| e.map.values());
            if values.filter_map(|v| redis::from_redis_value::<String>(v.clone()).ok()).any(|v| v.contains(&sid)) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the revocation never reached the stream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The gateway's consumer reconnects with backoff after the failover: wait for its view.
        s.wait_gateway_metric("caracal_gateway_revocations_active", 1.0, Duration::from_secs(15)).await;
        let a = s.governed("GET", "/items/1", doomed_mandate, &d.resource).await;
        assert_eq!((a.status, a.body["error_description"].as_str()), (401, Some("session revoked")), "{}", a.text);

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
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{filed} of {} events filed\n{}",
                accepted.len(),
                s.control_plane.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{} mandates accepted, none twice; revocation and evidence kept", accepted.len());
    }
}

#[tokio::test]
async fn killing_the_sentinel_primary_under_load_refuses_only_until_failover_and_loses_nothing() {
    let mut s = Stack::start_with(StackOptions { redis_ha: true, ..Default::default() }).await;
    let d = s.demo(true).await;
    let old = s.redis_ha.as_ref().unwrap().primary_port().expect("the Sentinels name a primary");
    assert_eq!(old, s.redis.port);
    let (mut load, spent_before, doomed, doomed_mandate) = Load::prepare(&s, &d).await;

    s.redis.stop();
    load.killed = Instant::now();
    // Postgres takes the revocation; the outbox publishes it once a primary answers.
    s.revoke_session(&d, &doomed).await;
    load.until_recovered(&s, &d).await;

    let new = s.redis_ha.as_ref().unwrap().primary_port().unwrap();
    assert_ne!(new, old, "a replica was promoted");
    let last_refused = load.refused_only_as_unavailable();
    eprintln!("Sentinel failover: recovered {last_refused:?} after the kill (down-after {DOWN_AFTER:?})");
    assert!(last_refused < Duration::from_secs(15), "refused for {last_refused:?} after the kill");
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{new}")).unwrap().get_multiplexed_async_connection().await.unwrap();
    load.nothing_lost(&s, &d, &spent_before, &doomed, &doomed_mandate, &mut conn).await;
}

#[tokio::test]
async fn killing_a_cluster_primary_under_load_refuses_only_its_slots_until_failover_and_loses_nothing() {
    let mut s = Stack::start_with(StackOptions { redis_cluster: true, ..Default::default() }).await;
    let d = s.demo(true).await;
    let ports = s.redis_cluster.as_ref().unwrap().ports(&s.redis);
    assert_eq!(redis_ha::role(s.redis.port).as_deref(), Some("master"), "the first node is one of the three primaries");
    let replica = redis_ha::replica_of(s.redis.port).expect("the first primary has a replica");
    let (mut load, spent_before, doomed, doomed_mandate) = Load::prepare(&s, &d).await;

    s.redis.stop();
    load.killed = Instant::now();
    s.revoke_session(&d, &doomed).await;
    // Its replica takes over a third of the slots. Until then only keys on those slots fail.
    load.until(&s, &d, |_| redis_ha::role(replica).as_deref() == Some("master")).await;
    let promoted = load.killed.elapsed();
    // With REDIS_MIN_REPLICAS=1 the promoted primary needs a replica again: the old node rejoins
    // as one (its nodes.conf remembers the cluster).
    s.redis.restart();
    load.until_recovered(&s, &d).await;

    let last_refused = load.refused_only_as_unavailable();
    let passed_meanwhile = load.seen.iter().filter(|o| o.at < promoted && o.status == 200).count();
    eprintln!(
        "cluster failover: replica promoted {promoted:?} after the kill, {passed_meanwhile} requests on other slots passed meanwhile; recovered {last_refused:?} after the kill"
    );
    assert!(passed_meanwhile > 0, "the other primaries kept serving their slots");
    assert!(last_refused < Duration::from_secs(20), "refused for {last_refused:?} after the kill");
    let nodes: Vec<String> = ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
    let mut conn = redis::cluster::ClusterClient::new(nodes).unwrap().get_async_connection().await.unwrap();
    load.nothing_lost(&s, &d, &spent_before, &doomed, &doomed_mandate, &mut conn).await;
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
    redis_ha::wait_for_online_replicas(s.redis.port, 1, Duration::from_secs(20));
    assert_eq!(s.governed("GET", "/items/1", &fresh, &d.resource).await.status, 200, "a replica holds markers again");
    // The refused request's marker reached the primary before WAIT gave up: that mandate is spent.
    let again = s.governed("GET", "/items/1", &held, &d.resource).await;
    assert_eq!((again.status, again.error()), (401, "invalid_token"), "{}", again.text);
    assert_eq!(s.upstream.requests().len(), 1);
}

/// A process that saw Redis fail and then sent nothing while the Sentinels elected a new primary
/// still follows it: its first request afterwards passes. (Each process asks the Sentinels until
/// they name a usable primary; asking once left the STS on the dead one, bench S8.)
#[tokio::test]
async fn processes_that_went_quiet_during_the_election_follow_the_new_primary() {
    let mut s = Stack::start_with(StackOptions { redis_ha: true, ..Default::default() }).await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let [during, after]: [String; 2] = mandates(&s, &d, &session, 2).await.try_into().unwrap();
    let old = s.redis.port;
    s.redis.stop();
    // One failure each, then silence: the gateway's JTI check and the STS's mint both hit the dead primary.
    assert_eq!(s.governed("GET", "/items/1", &during, &d.resource).await.status, 503);
    assert_eq!(s.mint_gateway(&d, &session, "tools.read").await.status, 503);
    let new = s.redis_ha.as_ref().unwrap().wait_for_new_primary(old, Duration::from_secs(20));
    // The followers ask every 100 ms; give them that and the new primary's ROLE check.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = s.governed("GET", "/items/1", &after, &d.resource).await;
    assert_eq!(a.status, 200, "the gateway's first request after the election (primary now on {new}): {}", a.text);
    let m = s.mint_gateway(&d, &session, "tools.read").await;
    assert_eq!(m.status, 200, "the STS's first mint after the election: {}", m.text);
}
