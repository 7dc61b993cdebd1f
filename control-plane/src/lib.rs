//! Caracal control plane: the STS, the admin API, the Coordinator and the audit ledger on one axum
//! server.

/// SQL assembled from constant fragments only (shared column lists); values are always bound, never
/// formatted in.
macro_rules! sql {
    ($($t:tt)*) => {
        sqlx::AssertSqlSafe(format!($($t)*))
    };
}

pub mod api;
pub mod app;
pub mod auth_failures;
pub mod config;
pub mod consumers;
pub mod control;
pub mod coordinator;
pub mod db;
pub mod error;
pub mod evidence;
pub mod extract;
pub mod ledger;
pub mod metrics;
pub mod outbox;
pub mod state;
pub mod tls;

/// Migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
