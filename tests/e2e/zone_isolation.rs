//! The data layer keeps zones apart on its own (seed 000): the control plane serves as
//! `caracal_control`, whose zone tables are under row-level security keyed on `caracal.zone_id`,
//! and the gateway reads as `caracal_gateway`, which may read revocations and nothing else.

use caracal_e2e::Stack;
use serde_json::json;
use sqlx::{Connection, PgConnection};

async fn as_role(s: &Stack, role: &str) -> PgConnection {
    let mut c = PgConnection::connect(&s.database_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET ROLE {role}"))).execute(&mut c).await.unwrap();
    c
}

async fn set_zone(c: &mut PgConnection, zone: &str) {
    sqlx::query("SELECT set_config('caracal.zone_id', $1, false)").bind(zone).execute(c).await.unwrap();
}

async fn count(c: &mut PgConnection, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(c).await.unwrap();
    n
}

#[tokio::test]
async fn without_a_zone_context_the_control_plane_role_sees_no_rows() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let other = s.admin_ok("POST", "/v1/zones", &d.admin, Some(json!({"name": "other"})), 201).await;
    let other = other["id"].as_str().unwrap();
    s.admin_ok("POST", &format!("/v1/zones/{other}/applications"), &d.admin, Some(json!({"name": "b"})), 201).await;
    assert!(s.control_plane.log().contains(r#""db_role":"caracal_control""#), "the control plane serves as caracal_control");

    let mut c = as_role(&s, "caracal_control").await;
    for table in [
        "zones",
        "applications",
        "resources",
        "signing_keys",
        "authority_records",
        "policy_sets",
        "admin_tokens",
        "providers",
        "subject_issuers",
        "policies",
        "policy_versions",
    ] {
        assert_eq!(count(&mut c, table).await, 0, "{table}: no zone context, no rows");
    }
    set_zone(&mut c, &d.zone_id).await;
    assert_eq!(count(&mut c, "applications").await, 1, "one zone's rows");
    assert_eq!(count(&mut c, "zones").await, 1);
    let (seen,): (String,) = sqlx::query_as("SELECT zone_id FROM applications").fetch_one(&mut c).await.unwrap();
    assert_eq!(seen, d.zone_id);
    // Writing into another zone from this one is refused by the policy's check.
    let update = sqlx::query("UPDATE applications SET name = 'x' WHERE zone_id = $1").bind(other).execute(&mut c).await.unwrap();
    assert_eq!(update.rows_affected(), 0, "another zone's rows cannot even be addressed");
    let insert =
        sqlx::query("INSERT INTO applications (zone_id, id, name, client_secret_sha256, traits) VALUES ($1, 'x', 'x', '\\x00', '{}')")
            .bind(other)
            .execute(&mut c)
            .await
            .unwrap_err();
    assert!(insert.to_string().contains("row-level security"), "{insert}");
    set_zone(&mut c, "*").await;
    assert_eq!(count(&mut c, "applications").await, 2, "every zone under *");
    set_zone(&mut c, "").await;
    assert_eq!(count(&mut c, "applications").await, 0, "an empty setting is no context");
}

#[tokio::test]
async fn the_gateway_role_reads_revocations_and_nothing_else() {
    let s = Stack::start().await;
    let d = s.demo(true).await;
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    assert_eq!(s.governed("GET", "/items/1", &m, &d.resource).await.status, 200, "the gateway's snapshot works under its role");
    let mut c = as_role(&s, "caracal_gateway").await;
    count(&mut c, "revocations").await;
    for table in ["applications", "resources", "signing_keys", "zones", "admin_tokens", "outbox", "audit_events", "providers"] {
        let err = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 1 FROM {table} LIMIT 1"))).execute(&mut c).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{table}: {err}");
    }
}
