//! The audit ledger through the real control plane: ingest and dead letters, the append-only
//! role, tamper sweeps, search/export/verify, retention and a crash under load.

use std::time::{Duration, Instant};

use caracal_e2e::Stack;
use caracal_shared::audit::{AuditEvent, Frame};
use serde_json::{Value, json};
use sqlx::PgPool;

fn event(zone: &str, n: usize) -> AuditEvent {
    let mut e = AuditEvent::new(
        zone,
        "token_exchange",
        &format!("req-{n}"),
        if n.is_multiple_of(2) { "allow" } else { "deny" },
        "complete",
        json!({"n": n}),
    );
    e.id = format!("evt-{zone}-{n}");
    e
}

async fn redis(s: &Stack) -> redis::aio::MultiplexedConnection {
    redis::Client::open(s.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// XADDs raw field lists to `caracal.audit.events`.
async fn xadd(s: &Stack, entries: &[Vec<(&str, String)>]) {
    let mut conn = redis(s).await;
    let mut pipe = redis::pipe();
    for fields in entries {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("caracal.audit.events").arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(v);
        }
        pipe.add_command(cmd).ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
}

fn signed(s: &Stack, e: &AuditEvent) -> Vec<(&'static str, String)> {
    let f = Frame::seal(e, Some(&hex::decode(&s.audit_key).unwrap()));
    vec![("id", f.id), ("data", f.data), ("sig", f.sig.unwrap())]
}

async fn emit(s: &Stack, events: &[AuditEvent]) {
    xadd(s, &events.iter().map(|e| signed(s, e)).collect::<Vec<_>>()).await;
}

async fn rows(db: &PgPool, zone: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE zone_id = $1").bind(zone).fetch_one(db).await.unwrap()
}

async fn wait_rows(s: &Stack, db: &PgPool, zone: &str, n: i64, within: Duration) {
    let start = Instant::now();
    loop {
        let have = rows(db, zone).await;
        if have >= n {
            assert_eq!(have, n, "exactly {n} rows in {zone}");
            return;
        }
        assert!(start.elapsed() < within, "{zone}: {have} of {n} rows filed after {within:?}\n{}", s.control_plane.log_tail(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a control-plane metric sample has exactly `value`.
async fn wait_cp_metric(s: &Stack, sample: &str, value: f64) {
    let start = Instant::now();
    loop {
        let have = s.control_plane_metric(sample).await;
        if have == value {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{sample} is {have}, expected {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dlq(s: &Stack) -> Vec<std::collections::HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("caracal.audit.events.dlq").arg("-").arg("+").query_async(&mut redis(s).await).await.unwrap();
    reply.ids.into_iter().map(|e| e.map.into_iter().map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap())).collect()).collect()
}

/// Superuser connection that bypasses the ledger's triggers: what an attacker with the database
/// would do.
async fn attacker(s: &Stack) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let mut c = db.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica").execute(&mut *c).await.unwrap();
    c
}

#[tokio::test]
async fn signed_frames_are_filed_once_and_everything_else_is_dead_lettered_with_a_reason() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let zone = "zone-ingest";
    let good: Vec<AuditEvent> = (1..=3).map(|n| event(zone, n)).collect();
    let mut forged = event(zone, 9);
    forged.decision = "allow".into();
    let mut bad_sig = signed(&s, &forged);
    bad_sig[2].1 = "00".repeat(32);
    let mut changed = good[0].clone();
    changed.decision = "allow-everything".into();
    let unparsable = Frame { id: "x".into(), data: "{not json".into(), sig: None };
    let unparsable_sig = caracal_shared::sig::hmac_hex(&hex::decode(&s.audit_key).unwrap(), unparsable.data.as_bytes());
    xadd(
        &s,
        &[
            signed(&s, &good[0]),
            signed(&s, &good[1]),
            signed(&s, &good[0]), // redelivery of the same event
            bad_sig,
            vec![("id", "no-data".into())],
            vec![("id", "x".into()), ("data", unparsable.data.clone()), ("sig", unparsable_sig)],
            signed(&s, &changed), // same id as good[0], other content
            signed(&s, &good[2]),
        ],
    )
    .await;
    wait_rows(&s, &db, zone, 3, Duration::from_secs(10)).await;

    let start = Instant::now();
    let dead = loop {
        let dead = dlq(&s).await;
        if dead.len() >= 4 || start.elapsed() > Duration::from_secs(10) {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut reasons: Vec<&str> = dead.iter().map(|m| m["reason"].split(':').next().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, ["hmac_verify_failed", "json_parse_error", "missing_data_field", "tamper_on_replay"]);
    let tampered = dead.iter().find(|m| m["reason"].starts_with("tamper_on_replay")).unwrap();
    assert!(tampered["src_data"].contains("allow-everything"), "the dead letter keeps the original frame: {tampered:?}");
    assert!(tampered.contains_key("src_stream_id") && tampered.contains_key("_sig"), "{tampered:?}");
    let streams_key = hex::decode(&s.streams_key).unwrap();
    for m in &dead {
        let pairs: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(caracal_shared::sig::verify_stream_signature(&streams_key, "caracal.audit.events.dlq", &pairs), "dead letters are signed");
    }
    for reason in ["hmac_verify_failed", "json_parse_error", "missing_data_field", "tamper_on_replay"] {
        // Counted right after the dead letter's XADD returned.
        wait_cp_metric(&s, &format!("caracal_audit_dead_letters_total{{reason=\"{reason}\"}}"), 1.0).await;
    }
    assert_eq!(s.control_plane_metric("caracal_audit_duplicates_total").await, 1.0);
    wait_cp_metric(&s, "caracal_audit_dead_letter_backlog", 4.0).await;
    assert_eq!(s.control_plane_metric("caracal_audit_hmac_failures_total").await, 1.0);
    let stored: String =
        sqlx::query_scalar("SELECT decision FROM audit_events WHERE id = $1").bind(&good[0].id).fetch_one(&db).await.unwrap();
    assert_eq!(stored, good[0].decision, "the first content stays");

    // Nothing is left pending: everything was acknowledged after being filed or dead-lettered.
    let pending: redis::streams::StreamPendingReply =
        redis::cmd("XPENDING").arg("caracal.audit.events").arg("audit-ingestor").query_async(&mut redis(&s).await).await.unwrap();
    assert_eq!(pending.count(), 0);

    // The gateway is a producer: a governed request ends up in the zone's ledger.
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200);
    let start = Instant::now();
    loop {
        let found: Option<(String, String)> =
            sqlx::query_as("SELECT decision, event FROM audit_events WHERE zone_id = $1 AND event_type = 'gateway_resource_request'")
                .bind(&d.zone_id)
                .fetch_optional(&db)
                .await
                .unwrap();
        if let Some((decision, event)) = found {
            assert_eq!(decision, "allow");
            assert!(!event.contains(&m), "no token in the ledger");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "gateway evidence reaches the ledger");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_ledger_role_can_only_insert_and_select_and_the_table_refuses_changes() {
    let s = Stack::start().await;
    let _d = s.demo(false).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    emit(&s, &[event("zone-role", 1)]).await;
    wait_rows(&s, &db, "zone-role", 1, Duration::from_secs(10)).await;

    let mut c = db.acquire().await.unwrap();
    sqlx::query("SET ROLE caracal_audit_writer").execute(&mut *c).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE zone_id = 'zone-role'").fetch_one(&mut *c).await.unwrap();
    assert_eq!(n, 1, "the writer reads");
    for stmt in [
        "UPDATE audit_events SET decision = 'allow'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_anchors SET seq = 1",
    ] {
        let err = sqlx::query(stmt).execute(&mut *c).await.expect_err(stmt);
        let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{stmt}: {err}");
    }
    sqlx::query("RESET ROLE").execute(&mut *c).await.unwrap();
    // Even the owner is refused by the triggers (only retention's DELETE is let through).
    for stmt in ["UPDATE audit_events SET decision = 'allow'", "DELETE FROM audit_events", "TRUNCATE audit_events"] {
        let err = sqlx::query(stmt).execute(&mut *c).await.expect_err(stmt);
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
    assert_eq!(rows(&db, "zone-role").await, 1);
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events").fetch_one(&db).await.unwrap();
    assert!(total > 1, "admin actions of the demo are in the ledger too");
}

#[tokio::test]
async fn sweeps_find_content_changes_rewritten_rows_deleted_rows_and_a_truncated_tail() {
    let mut s = Stack::start().await;
    let d = s.demo(false).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let zone = "zone-tamper";
    emit(&s, &(1..=8).map(|n| event(zone, n)).collect::<Vec<_>>()).await;
    wait_rows(&s, &db, zone, 8, Duration::from_secs(10)).await;
    let clean = s.admin_ok("POST", "/v1/audit/sweep", &d.admin, None, 200).await;
    assert_eq!(clean["findings"]["chain_break"], 0, "{clean}");
    assert!(clean["checked"].as_u64().unwrap() >= 8);
    let v = s.admin_ok("GET", &format!("/v1/zones/{zone}/audit/verify"), &d.admin, None, 200).await;
    assert_eq!((v["ok"].as_bool(), v["checked"].as_u64(), v["head_seq"].as_u64()), (Some(true), Some(8), Some(8)), "{v}");

    let mut c = attacker(&s).await;
    // 2: the decision flipped in the stored event, hash left alone.
    sqlx::query("UPDATE audit_events SET event = replace(event, '\"deny\"', '\"allow\"') WHERE zone_id = $1 AND seq = 3")
        .bind(zone)
        .execute(&mut *c)
        .await
        .unwrap();
    // 5: rewritten consistently, content hash recomputed: only the chain key could re-link it.
    sqlx::query(
        "UPDATE audit_events SET event = replace(event, '\"deny\"', '\"allow\"'), decision = 'allow' WHERE zone_id = $1 AND seq = 5",
    )
    .bind(zone)
    .execute(&mut *c)
    .await
    .unwrap();
    sqlx::query("UPDATE audit_events SET content_sha256 = sha256(convert_to(event, 'UTF8')) WHERE zone_id = $1 AND seq = 5")
        .bind(zone)
        .execute(&mut *c)
        .await
        .unwrap();
    // 7 and 8: one row from the middle and the tail.
    sqlx::query("DELETE FROM audit_events WHERE zone_id = $1 AND seq IN (6, 8)").bind(zone).execute(&mut *c).await.unwrap();

    let r = s.admin_ok("POST", "/v1/audit/sweep", &d.admin, None, 200).await;
    let f = &r["findings"];
    assert_eq!(
        (f["content_mismatch"].as_u64(), f["hmac_mismatch"].as_u64(), f["chain_break"].as_u64()),
        (Some(1), Some(1), Some(2)),
        "{r}"
    );
    let found: Vec<(u64, &str)> =
        f["first"].as_array().unwrap().iter().map(|b| (b["seq"].as_u64().unwrap(), b["kind"].as_str().unwrap())).collect();
    assert!(found.contains(&(3, "content_mismatch")), "{found:?}");
    assert!(found.contains(&(5, "hmac_mismatch")), "{found:?}");
    assert!(found.contains(&(7, "chain_break")), "a gap: {found:?}");
    assert!(found.contains(&(8, "chain_break")), "the tail a sweep saw is gone: {found:?}");
    for kind in ["content_mismatch", "hmac_mismatch", "chain_break"] {
        let sample = format!("caracal_audit_tamper_total{{kind=\"{kind}\"}}");
        assert!(s.control_plane_metric(&sample).await >= 1.0, "{sample}");
    }
    let log = s.control_plane.log();
    assert!(log.contains("\"alert\":\"chain_break\"") && log.contains("\"alert\":\"hmac_mismatch\""), "seed 003 alert names in the log");
    let ready = s.http.get(format!("{}/ready", s.cp_url)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["reason"], "audit_tamper_detected");
    assert_eq!(ready["audit"]["tamper"]["hmac_mismatch"], 1);

    let v = s.admin_ok("GET", &format!("/v1/zones/{zone}/audit/verify"), &d.admin, None, 200).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_break"]["seq"], 3, "verify says where the chain stops being trustworthy: {v}");
    let part = s.admin_ok("GET", &format!("/v1/zones/{zone}/audit/verify?from_seq=1&to_seq=2"), &d.admin, None, 200).await;
    assert_eq!((part["ok"].as_bool(), part["checked"].as_u64()), (Some(true), Some(2)), "{part}");

    // The full sweep at start-up finds it again after a restart.
    s.restart_control_plane_with(&[("AUDIT_READY_ON_TAMPER", "report")]).await;
    let start = Instant::now();
    loop {
        let ready: Value = s.http.get(format!("{}/ready", s.cp_url)).send().await.unwrap().json().await.unwrap();
        if ready["audit"]["tamper"]["chain_break"] == 2 {
            assert_eq!(ready["ready"], true, "AUDIT_READY_ON_TAMPER=report only reports");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "start-up sweep: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn search_pages_filters_exports_and_verifies_ranges() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let zone = "zone-search";
    let mut events: Vec<AuditEvent> = (1..=5).map(|n| event(zone, n)).collect();
    events[0].occurred_at = "2026-01-01T00:00:00Z".into();
    events[4].metadata_json = json!({"session_id": "sess-42", "note": "comma, \"quote\"\nnewline"});
    events[3].event_type = "step_up_issued".into();
    emit(&s, &events).await;
    wait_rows(&s, &db, zone, 5, Duration::from_secs(10)).await;
    let base = format!("/v1/zones/{zone}/audit");

    let p1 = s.admin_ok("GET", &format!("{base}?limit=2"), &d.admin, None, 200).await;
    let seqs = |v: &Value| v["items"].as_array().unwrap().iter().map(|i| i["seq"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(seqs(&p1), [1, 2]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = s.admin_ok("GET", &format!("{base}?limit=2&cursor={cursor}"), &d.admin, None, 200).await;
    assert_eq!(seqs(&p2), [3, 4]);
    let p3 = s.admin_ok("GET", &format!("{base}?limit=2&cursor={}", p2["next_cursor"].as_str().unwrap()), &d.admin, None, 200).await;
    assert_eq!((seqs(&p3), p3["next_cursor"].clone()), (vec![5], Value::Null));
    let item = &p1["items"][0];
    assert_eq!(item["event"]["id"], events[0].id);
    assert_eq!(item["event"]["occurred_at"], "2026-01-01T00:00:00.000000Z");

    for (query, expect) in [
        ("decision=allow", vec![2, 4]),
        ("event_type=step_up_issued", vec![4]),
        ("request_id=req-3", vec![3]),
        ("session_id=sess-42", vec![5]),
        ("until=2026-06-01T00:00:00Z", vec![1]),
        ("since=2026-06-01T00:00:00Z&decision=deny", vec![3, 5]),
    ] {
        let r = s.admin_ok("GET", &format!("{base}?{query}"), &d.admin, None, 200).await;
        assert_eq!(seqs(&r), expect, "{query}");
    }
    for bad in [
        "since=yesterday",
        "until=2026-13-01",
        "limit=0",
        "limit=1001",
        "cursor=abc",
        "colour=red",
        "since=2026-06-01T00:00:00Z&until=2026-01-01T00:00:00Z",
    ] {
        let r = s.admin("GET", &format!("{base}?{bad}"), &d.admin, None).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert!(matches!(r.error(), "invalid_query" | "invalid_cursor"), "{bad}: {}", r.text);
    }
    // A token of another zone reads nothing here.
    let other = s.admin_ok("POST", "/v1/zones", &d.admin, Some(json!({"name": "other"})), 201).await;
    let other_token = s.zone_token(&d.admin, other["id"].as_str().unwrap()).await;
    assert_eq!(s.admin("GET", &base, &other_token, None).await.status, 403);

    let nd = s.http.get(format!("{}{base}/export", s.cp_url)).bearer_auth(&d.admin).send().await.unwrap();
    assert_eq!(nd.status(), 200);
    assert_eq!(nd.headers()["content-type"], "application/x-ndjson");
    let text = nd.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        let embedded = line.split_once("\"event\":").unwrap().1.strip_suffix('}').unwrap();
        assert_eq!(hex::encode(caracal_shared::sig::sha256(embedded.as_bytes())), v["content_sha256"], "an export re-hashes offline");
    }
    let csv = s.http.get(format!("{}{base}/export?format=csv&decision=deny", s.cp_url)).bearer_auth(&d.admin).send().await.unwrap();
    assert_eq!(csv.status(), 200);
    let body = csv.text().await.unwrap();
    let mut rd = csv_records(&body);
    assert_eq!(rd.remove(0)[0], "seq");
    assert_eq!(rd.iter().map(|r| r[0].clone()).collect::<Vec<_>>(), ["1", "3", "5"]);
    assert!(rd[2][11].contains("newline"), "quoted fields survive: {:?}", rd[2]);
    let bad = s.admin("GET", &format!("{base}/export?format=xml"), &d.admin, None).await;
    assert_eq!((bad.status, bad.error()), (400, "invalid_query"));

    let v = s.admin_ok("GET", &format!("{base}/verify?from_seq=2&to_seq=4"), &d.admin, None, 200).await;
    assert_eq!(
        (v["ok"].as_bool(), v["checked"].as_u64(), v["from_seq"].as_u64(), v["to_seq"].as_u64()),
        (Some(true), Some(3), Some(2), Some(4)),
        "{v}"
    );
    let bad = s.admin("GET", &format!("{base}/verify?from_seq=4&to_seq=2"), &d.admin, None).await;
    assert_eq!(bad.status, 400);

    // A serving control plane without the ledger still searches; verifying needs the chain key.
    let (_cp2, url2) = s.second_control_plane(&[("AUDIT_LEDGER_ENABLED", "false")]).await;
    let get = |path: String| s.http.get(format!("{url2}{path}")).bearer_auth(&d.admin).send();
    let r = get(format!("{base}?limit=2")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get(format!("{base}/verify")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "audit_ledger_disabled");
}

/// Minimal CSV reader for the test (the server writes with the `csv` crate).
fn csv_records(body: &str) -> Vec<Vec<String>> {
    let (mut out, mut rec, mut field, mut quoted, mut chars) = (Vec::new(), Vec::new(), String::new(), false, body.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => rec.push(std::mem::take(&mut field)),
            ('\n', false) => {
                rec.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut rec));
            }
            (c, _) => field.push(c),
        }
    }
    out
}

#[tokio::test]
async fn retention_prunes_a_prefix_and_the_rest_still_verifies() {
    let mut s = Stack::start().await;
    let d = s.demo(false).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let zone = "zone-retention";
    let old = (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    let mut events: Vec<AuditEvent> = (1..=5).map(|n| event(zone, n)).collect();
    for e in &mut events[..3] {
        e.occurred_at = old.clone();
    }
    emit(&s, &events).await;
    wait_rows(&s, &db, zone, 5, Duration::from_secs(10)).await;

    s.restart_control_plane_with(&[("AUDIT_RETENTION_DAYS", "30"), ("AUDIT_RETENTION_INTERVAL", "1s")]).await;
    let start = Instant::now();
    while rows(&db, zone).await != 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "retention pruned the old prefix");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Counted once the pass over every zone ends.
    while s.control_plane_metric("caracal_audit_retention_pruned_total").await < 3.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "pruned rows are counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = s.admin_ok("GET", &format!("/v1/zones/{zone}/audit/verify"), &d.admin, None, 200).await;
    assert_eq!((v["ok"].as_bool(), v["checked"].as_u64(), v["retention_anchor_seq"].as_u64()), (Some(true), Some(2), Some(3)), "{v}");
    // The chain goes on from the kept rows.
    emit(&s, &[event(zone, 6)]).await;
    wait_rows(&s, &db, zone, 3, Duration::from_secs(10)).await;
    let v = s.admin_ok("GET", &format!("/v1/zones/{zone}/audit/verify"), &d.admin, None, 200).await;
    assert_eq!((v["ok"].as_bool(), v["head_seq"].as_u64()), (Some(true), Some(6)), "{v}");
    let sweep = s.admin_ok("POST", "/v1/audit/sweep", &d.admin, None, 200).await;
    assert_eq!(sweep["findings"]["chain_break"], 0, "a retention cut is not a break: {sweep}");
    // A cut nobody authorised is: rows removed below the anchor with a forged anchor.
    let mut c = attacker(&s).await;
    sqlx::query("DELETE FROM audit_events WHERE zone_id = $1 AND seq = 4").bind(zone).execute(&mut *c).await.unwrap();
    sqlx::query("INSERT INTO audit_anchors (zone_id, kind, seq, chain_hmac, anchor_mac) SELECT zone_id, 'retention', 4, chain_hmac, chain_hmac FROM audit_events WHERE zone_id = $1 AND seq = 5")
        .bind(zone)
        .execute(&mut *c)
        .await
        .unwrap();
    let v = s.admin_ok("GET", &format!("/v1/zones/{zone}/audit/verify"), &d.admin, None, 200).await;
    assert_eq!((v["ok"].as_bool(), v["first_break"]["kind"].as_str()), (Some(false), Some("chain_break")), "a forged anchor: {v}");
}

#[tokio::test]
async fn killing_the_ledger_under_load_loses_and_duplicates_nothing() {
    let mut s = Stack::start().await;
    let d = s.demo(false).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let zone = "zone-durable";
    const N: usize = 3000;
    let frames: Vec<Vec<(&'static str, String)>> = (1..=N).map(|n| signed(&s, &event(zone, n))).collect();
    // Producers keep writing while the ledger is killed and restarted.
    let url = s.redis.url();
    let producer = tokio::spawn(async move {
        let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
        for chunk in frames.chunks(50) {
            let mut pipe = redis::pipe();
            for fields in chunk {
                let mut cmd = redis::cmd("XADD");
                cmd.arg("caracal.audit.events").arg("*");
                for (k, v) in fields {
                    cmd.arg(*k).arg(v);
                }
                pipe.add_command(cmd).ignore();
            }
            let () = pipe.query_async(&mut conn).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let start = Instant::now();
    while rows(&db, zone).await < 300 {
        assert!(start.elapsed() < Duration::from_secs(20), "ingest started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop_control_plane(); // SIGKILL mid-batch
    let at_kill = rows(&db, zone).await;
    let pending: redis::streams::StreamPendingReply =
        redis::cmd("XPENDING").arg("caracal.audit.events").arg("audit-ingestor").query_async(&mut redis(&s).await).await.unwrap();
    eprintln!("{} entries read and not acknowledged when the ledger died", pending.count());
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.restart_control_plane().await;
    producer.await.unwrap();
    let t = Instant::now();
    wait_rows(&s, &db, zone, N as i64, Duration::from_secs(60)).await;
    eprintln!("killed at {at_kill} rows; all {N} filed {:?} after the producers finished", t.elapsed());
    let (distinct, min, max): (i64, i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT id), min(seq), max(seq) FROM audit_events WHERE zone_id = $1")
            .bind(zone)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((distinct, min, max), (N as i64, 1, N as i64), "every event once, seq contiguous");
    let v = s.admin_ok("GET", &format!("/v1/zones/{zone}/audit/verify"), &d.admin, None, 200).await;
    assert_eq!((v["ok"].as_bool(), v["checked"].as_u64()), (Some(true), Some(N as u64)), "the chain is continuous: {v}");
    assert!(dlq(&s).await.is_empty(), "nothing dead-lettered by the crash");
}

#[tokio::test]
async fn the_sts_the_admin_api_and_the_coordinator_leave_evidence_without_secrets() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let session = s.session(&d).await;
    let bad = s
        .token(&[
            ("grant_type", caracal_e2e::stack::GRANT),
            ("zone_id", &d.zone_id),
            ("application_id", &d.app_id),
            ("client_secret", "wrong-secret"),
        ])
        .await;
    assert_eq!(bad.status, 401, "{}", bad.text);
    // An authenticated client's refused mint is evidence; the bad secret above is only counted.
    let refused = s.mint_gateway(&d, &session, "tools.admin").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let coord =
        s.http.post(format!("{}/zones/{}/agents", s.cp_url, d.zone_id)).bearer_auth(&session).json(&json!({})).send().await.unwrap();
    assert_eq!(coord.status(), 403, "the demo session lacks agent:lifecycle");

    let start = Instant::now();
    let events: Vec<Value> = loop {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT event FROM audit_events WHERE zone_id = $1 ORDER BY seq").bind(&d.zone_id).fetch_all(&db).await.unwrap();
        let events: Vec<Value> = rows.iter().map(|(e,)| serde_json::from_str(e).unwrap()).collect();
        let has = |t: &str, decision: &str| events.iter().any(|e| e["event_type"] == t && e["decision"] == decision);
        if has("token_exchange", "allow")
            && has("token_exchange", "deny")
            && has("admin_action", "allow")
            && has("coordinator_action", "deny")
        {
            for (e,) in &rows {
                assert!(
                    !e.contains(&session) && !e.contains(&d.secret) && !e.contains("wrong-secret") && !e.contains(&d.admin),
                    "no secrets: {e}"
                );
            }
            break events;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "evidence from every producer: {events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mint = events.iter().find(|e| e["event_type"] == "token_exchange" && e["decision"] == "allow").unwrap();
    assert_eq!(mint["metadata_json"]["class"], "session_mint");
    assert_eq!(mint["metadata_json"]["application_id"], d.app_id.as_str());
    assert!(mint["metadata_json"]["session_id"].as_str().is_some_and(|s| !s.is_empty()), "{mint}");
    assert!(mint["metadata_json"]["policy_version_id"].as_str().is_some_and(|s| !s.is_empty()), "the deciding policy version: {mint}");
    let denied = events.iter().find(|e| e["event_type"] == "token_exchange" && e["decision"] == "deny").unwrap();
    assert_eq!(denied["evaluation_status"], "access_denied");
    assert_eq!(denied["metadata_json"]["class"], "gateway_mint");
    assert!(!events.iter().any(|e| e["evaluation_status"] == "invalid_client"), "a caller that never authenticated leaves no row");
    let admin = events
        .iter()
        .find(|e| e["event_type"] == "admin_action" && e["metadata_json"]["route"] == "/v1/zones/{zone_id}/applications")
        .unwrap();
    assert_eq!(admin["metadata_json"]["method"], "POST");
    assert!(admin["metadata_json"]["actor"].as_str().unwrap().starts_with("admin:"), "{admin}");
    let c = events.iter().find(|e| e["event_type"] == "coordinator_action").unwrap();
    assert_eq!(
        (c["evaluation_status"].as_str(), c["metadata_json"]["route"].as_str()),
        (Some("403"), Some("/zones/{zone_id}/agents")),
        "{c}"
    );
    assert!(c["metadata_json"]["actor"].as_str().unwrap().starts_with("mandate:"), "{c}");
    // Global actions (creating the zone) go to the `_global` chain, which only global tokens read.
    let global = s.admin_ok("GET", "/v1/zones/_global/audit?event_type=admin_action", &d.admin, None, 200).await;
    let routes: Vec<&str> =
        global["items"].as_array().unwrap().iter().filter_map(|i| i["event"]["metadata_json"]["route"].as_str()).collect();
    assert!(routes.contains(&"/v1/zones"), "{routes:?}");
    let zone_token = s.zone_token(&d.admin, &d.zone_id).await;
    assert_eq!(s.admin("GET", "/v1/zones/_global/audit", &zone_token, None).await.status, 403);
}

/// Ingest throughput and storage per event on this machine (not a pass/fail check; run with
/// `cargo nextest run --run-ignored only -E 'test(ingest_rate)'`, ideally with
/// `CARACAL_BIN_DIR=target/release`).
#[tokio::test]
#[ignore]
async fn ingest_rate() {
    let mut s = Stack::start().await;
    let _d = s.demo(false).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let zone = "zone-rate";
    const N: usize = 50_000;
    s.stop_control_plane();
    let mut sample = event(zone, 0);
    sample.metadata_json = json!({"class": "gateway_mint", "application_id": "01a2-app", "resources": ["https://api.example.com"], "requested_scopes": ["tools.read"], "session_id": "01a2-sess", "jti": "01a2-jti", "use": "gateway"});
    let frames: Vec<Vec<(&'static str, String)>> = (1..=N)
        .map(|n| {
            let mut e = sample.clone();
            e.id = format!("evt-rate-{n}");
            e.request_id = format!("req-{n}");
            signed(&s, &e)
        })
        .collect();
    for chunk in frames.chunks(1000) {
        xadd(&s, chunk).await;
    }
    let t = Instant::now();
    s.restart_control_plane().await;
    wait_rows(&s, &db, zone, N as i64, Duration::from_secs(600)).await;
    let took = t.elapsed();
    let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('audit_events')").fetch_one(&db).await.unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events").fetch_one(&db).await.unwrap();
    eprintln!(
        "ingest: {N} events in {took:?} (incl. start-up) = {:.0} events/s; {} bytes/event incl. indexes ({all} rows)",
        N as f64 / took.as_secs_f64(),
        bytes / all
    );
}

#[tokio::test]
async fn the_hourly_sweep_continues_from_where_it_stopped_and_sees_a_truncated_tail() {
    let mut s = Stack::start().await;
    let _d = s.demo(false).await;
    s.restart_control_plane_with(&[("AUDIT_SWEEP_INTERVAL", "200ms")]).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let zone = "zone-incremental";
    emit(&s, &(1..=3).map(|n| event(zone, n)).collect::<Vec<_>>()).await;
    wait_rows(&s, &db, zone, 3, Duration::from_secs(10)).await;
    let start = Instant::now();
    loop {
        let cp: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM audit_anchors WHERE zone_id = $1 AND kind = 'checkpoint'")
            .bind(zone)
            .fetch_one(&db)
            .await
            .unwrap();
        if cp == Some(3) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "an incremental sweep checkpointed the new rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.control_plane_metric("caracal_audit_tamper_total{kind=\"chain_break\"}").await, 0.0);
    let mut c = attacker(&s).await;
    sqlx::query("DELETE FROM audit_events WHERE zone_id = $1 AND seq = 3").bind(zone).execute(&mut *c).await.unwrap();
    let start = Instant::now();
    while s.control_plane_metric("caracal_audit_tamper_total{kind=\"chain_break\"}").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the next incremental sweep sees the tail is gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The sweep publishes its findings when it finishes its pass over every zone.
    while s.http.get(format!("{}/ready", s.cp_url)).send().await.unwrap().status() != 503 {
        assert!(start.elapsed() < Duration::from_secs(10), "tampering makes the control plane unready by default");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_ledgers_filing_one_zone_at_once_never_fork_the_chain() {
    let s = Stack::start().await;
    let d = s.demo(false).await;
    let (_cp2, url2) = s.second_control_plane(&[("AUDIT_CONSUMER_NAME", "audit-second")]).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    let zone = "zone-concurrent";
    const N: usize = 2000;
    for chunk in (1..=N).map(|n| event(zone, n)).collect::<Vec<_>>().chunks(100) {
        emit(&s, chunk).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_rows(&s, &db, zone, N as i64, Duration::from_secs(30)).await;
    let ingested = |body: String| {
        body.lines().find_map(|l| l.strip_prefix("caracal_audit_ingested_total ")).map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    // Counted just after each commit: wait until both counters cover the zone (the demo's admin
    // actions are filed too).
    let start = Instant::now();
    let (first, second) = loop {
        let first = ingested(s.http.get(format!("{}/metrics", s.cp_url)).send().await.unwrap().text().await.unwrap());
        let second = ingested(s.http.get(format!("{url2}/metrics")).send().await.unwrap().text().await.unwrap());
        if first + second >= N as f64 || start.elapsed() > Duration::from_secs(10) {
            break (first, second);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("filed by the first ledger: {first}, by the second: {second}");
    assert!(first > 0.0 && second > 0.0, "both ledgers filed part of the stream ({first} / {second})");
    let (distinct, max): (i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT id), max(seq) FROM audit_events WHERE zone_id = $1").bind(zone).fetch_one(&db).await.unwrap();
    assert_eq!((distinct, max), (N as i64, N as i64), "one chain, no gaps, no duplicates");
    let v = s.admin_ok("GET", &format!("/v1/zones/{zone}/audit/verify"), &d.admin, None, 200).await;
    assert_eq!((v["ok"].as_bool(), v["checked"].as_u64()), (Some(true), Some(N as u64)), "{v}");
}

/// The ledger's duplicate probe reads the id index even while `audit_events` has outgrown its
/// statistics (autoanalyze runs once a minute): a young ledger under load once read the whole table
/// for every batch (bench S3, 30 ms a batch at 100,000 rows).
#[tokio::test]
async fn a_ledger_that_outgrew_its_statistics_still_probes_by_index() {
    let s = Stack::start().await;
    let _d = s.demo(false).await;
    let db = PgPool::connect(&s.database_url).await.unwrap();
    emit(&s, &[event("zone-young", 1)]).await;
    wait_rows(&s, &db, "zone-young", 1, Duration::from_secs(10)).await;
    // Statistics of the nearly empty table, no autoanalyze to refresh them, then 100,000 rows.
    sqlx::query("ALTER TABLE audit_events SET (autovacuum_enabled = false)").execute(&db).await.unwrap();
    sqlx::query("ANALYZE audit_events").execute(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO audit_events (zone_id, seq, id, event_type, decision, request_id, occurred_at, event, content_sha256, chain_hmac) \
         SELECT 'zone-filler', g, 'filler-' || g, 't', 'allow', 'r-' || g, now(), repeat('x', 700), sha256(g::text::bytea), \
         sha256(g::text::bytea) FROM generate_series(1, 100000) g",
    )
    .execute(&db)
    .await
    .unwrap();
    // This test's own reads must not scan the table either.
    let probe = sqlx::postgres::PgPoolOptions::new()
        .after_connect(|c, _| Box::pin(async move { sqlx::query("SET enable_seqscan = off").execute(c).await.map(drop) }))
        .connect(&s.database_url)
        .await
        .unwrap();
    let seq_scans = || async {
        // Backends report their counters within a second of a transaction's end.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let n: i64 =
            sqlx::query_scalar("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'audit_events'").fetch_one(&probe).await.unwrap();
        n
    };
    let before = seq_scans().await;
    emit(&s, &(2..=40).map(|n| event("zone-young", n)).collect::<Vec<_>>()).await;
    wait_rows(&s, &probe, "zone-young", 40, Duration::from_secs(10)).await;
    let after = seq_scans().await;
    assert_eq!(after, before, "the ledger read audit_events sequentially {} times while filing 39 events", after - before);
}
