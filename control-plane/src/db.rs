//! The control plane's Postgres pool: runs as `caracal_control`, with each checkout's zone context.
//!
//! Migrations run first on a connection of their own, as the owner. The serving pool then switches
//! every connection to the role `caracal_control` (row-level security applies to it, not to the
//! owner) and, on every checkout, stores the zone the checking-out task acts for in
//! `caracal.zone_id` ([`caracal_shared::zone_context`]): a connection only ever sees the rows of the
//! zone its current user works for, and a task without a zone sees none.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, Executor as _, PgConnection};

/// The role the serving pool runs as (migration 0006).
pub const ROLE: &str = "caracal_control";

/// Applies the migrations on a connection of their own (as the login, which owns the tables).
pub async fn migrate(options: &PgConnectOptions) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(options).await?;
    crate::MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

async fn set_zone(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config($1, $2, false)")
        .bind(caracal_shared::zone_context::SETTING)
        .bind(caracal_shared::zone_context::setting())
        .execute(conn)
        .await
        .map(|_| ())
}

/// The serving pool: `SET ROLE caracal_control` once per connection, the zone context per checkout.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(format!("SET ROLE {ROLE}"))).await?;
                set_zone(conn).await
            })
        })
        .before_acquire(|conn, _| {
            Box::pin(async move {
                set_zone(conn).await?;
                Ok(true)
            })
        })
}
