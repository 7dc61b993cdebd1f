//! Evidence the ledger has not filed is never trimmed from `caracal.audit.events`, whatever path
//! produced it; the ledger trims only what it filed.

use std::time::{Duration, Instant};

use caracal_e2e::{Stack, StackOptions};
use caracal_shared::audit::{AuditEvent, Frame};
use serde_json::json;
use sqlx::PgPool;

const STREAM: &str = "caracal.audit.events";

fn frame(s: &Stack, zone: &str, n: usize) -> Frame {
    let mut e = AuditEvent::new(zone, "token_exchange", &format!("r{n}"), "allow", "complete", json!({"n": n}));
    e.id = format!("evt-{zone}-{n}");
    Frame::seal(&e, Some(&hex::decode(&s.audit_key).unwrap()))
}

async fn xlen(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("XLEN").arg(STREAM).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_stopped_ledger_loses_no_evidence_to_stream_caps_and_trims_only_what_it_filed() {
    // The serving control plane runs without the ledger, like the split topology docs/audit.md
    // recommends; the ledger starts later.
    let mut s =
        Stack::start_with(StackOptions { control_plane_env: vec![("AUDIT_LEDGER_ENABLED".into(), "false".into())], ..Default::default() })
            .await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let mut conn = redis::Client::open(s.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let zone = "zone-backlog";
    // More than the relay's old cap (MAXLEN ~ 100 000) written by producers straight to the stream…
    const DIRECT: usize = 101_000;
    for chunk in (1..=DIRECT).collect::<Vec<_>>().chunks(2000) {
        let frames: Vec<Frame> = chunk.iter().map(|n| frame(&s, zone, *n)).collect();
        let () = caracal_shared::audit::xadd_pipeline(&frames).query_async(&mut conn).await.unwrap();
    }
    // …then evidence that went through the transactional outbox (what a producer does while
    // Redis refuses), published by the relay.
    const OUTBOX: usize = 300;
    for n in DIRECT + 1..=DIRECT + OUTBOX {
        let f = frame(&s, zone, n);
        let fields = json!({"id": f.id, "data": f.data, "sig": f.sig.unwrap()});
        sqlx::query("INSERT INTO outbox (id, zone_id, stream, fields) VALUES ($1, $2, $3, $4)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(zone)
            .bind(STREAM)
            .bind(&fields)
            .execute(&db)
            .await
            .unwrap();
    }
    let start = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE dispatched_at IS NULL").fetch_one(&db).await.unwrap();
        if left == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the relay published the outbox ({left} left)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = (DIRECT + OUTBOX) as i64;
    assert_eq!(xlen(&mut conn).await, total, "nothing unfiled was trimmed while the ledger was down");

    s.restart_control_plane_with(&[("AUDIT_LEDGER_ENABLED", "true")]).await;
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE zone_id = $1").bind(zone).fetch_one(&db).await.unwrap();
        if n == total {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "{n} of {total} events filed\n{}", s.control_plane.log_tail(20));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("{total} events filed {:?} after the ledger started", start.elapsed());
    // The ledger trims what it filed (approximately: whole stream nodes).
    let start = Instant::now();
    loop {
        let len = xlen(&mut conn).await;
        if len < 5_000 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the ledger trimmed the filed backlog (XLEN {len})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    while s.control_plane_metric("caracal_audit_stream_length").await >= 5_000.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the stream length is exported (refreshed every 5 s)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(s.control_plane_metric("caracal_audit_trimmed_total").await >= (total - 5_000) as f64, "the ledger counts what it trimmed");
}
