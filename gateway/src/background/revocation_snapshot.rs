//! Periodic Postgres snapshot of live revocations, merged into the view (never replacing it).
//!
//! Runs every `REVOCATION_SNAPSHOT_INTERVAL` and on demand (`POST /internal/revocations/reload`,
//! which asks this task through a channel so only this task's runtime touches the pool).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use caracal_shared::revocation::{RevocationView, Revoked};
use pingora::server::ShutdownWatch;
use pingora::services::ServiceReadyNotifier;
use pingora::services::background::BackgroundService;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{Mutex, mpsc, oneshot};

/// The role the snapshot reads as (migration 0006): `SELECT` on `revocations`, nothing more.
pub const ROLE: &str = "caracal_gateway";

/// A request for an immediate reload; answered with the number of live revocations.
pub type ReloadRequest = oneshot::Sender<Result<usize, String>>;

/// The snapshot service.
pub struct RevocationSnapshot {
    pub database_url: String,
    pub view: Arc<RevocationView>,
    pub interval: Duration,
    pub reloads: Mutex<mpsc::Receiver<ReloadRequest>>,
    pub metrics: SnapshotMetrics,
}

/// Snapshot outcomes.
pub struct SnapshotMetrics {
    pub reloads: prometheus::IntCounter,
    pub reload_errors: prometheus::IntCounter,
}

impl RevocationSnapshot {
    async fn load(&self, pool: &sqlx::PgPool) -> Result<usize, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT anchor_id, extract(epoch FROM expires_at)::bigint FROM revocations WHERE expires_at > now()")
                .fetch_all(pool)
                .await?;
        let n = rows.len();
        let batch: Vec<Revoked> = rows.into_iter().map(|(anchor, expires_at)| Revoked { anchor, expires_at }).collect();
        self.view.add(&batch);
        self.view.snapshot_succeeded();
        Ok(n)
    }

    async fn load_counted(&self, pool: &sqlx::PgPool) -> Result<usize, String> {
        match tokio::time::timeout(Duration::from_secs(5), self.load(pool)).await {
            Ok(Ok(n)) => {
                self.metrics.reloads.inc();
                Ok(n)
            }
            Ok(Err(e)) => {
                self.metrics.reload_errors.inc();
                tracing::warn!(error = %e, "revocation snapshot failed; the view ages");
                Err(e.to_string())
            }
            Err(_) => {
                self.metrics.reload_errors.inc();
                tracing::warn!("revocation snapshot timed out; the view ages");
                Err("timeout".into())
            }
        }
    }
}

/// How long start-up waits for the first snapshot before serving anyway (answering 503 while
/// the view is stale).
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(10);

#[async_trait]
impl BackgroundService for RevocationSnapshot {
    /// Signals ready only after the first snapshot (or [`FIRST_LOAD_WAIT`]): the proxy depends on
    /// this service, so a new process — notably the new side of a zero-downtime upgrade — takes
    /// traffic with a fresh view instead of refusing it.
    async fn start_with_ready_notifier(&self, mut shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        // The gateway reads revocations and nothing else: every connection runs as caracal_gateway
        // (migration 0006), whatever else DATABASE_URL's login may do.
        let options = PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(5)).after_connect(|conn, _| {
            Box::pin(async move { sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(format!("SET ROLE {ROLE}"))).await.map(|_| ()) })
        });
        let pool = match options.connect_lazy(&self.database_url) {
            Ok(p) => p,
            Err(e) => {
                // The view stays stale, so every request is refused: fail closed, loudly.
                tracing::error!(error = %e, "DATABASE_URL is not usable; revocation snapshots disabled");
                return;
            }
        };
        let mut reloads = self.reloads.lock().await;
        let waited = tokio::time::Instant::now();
        while self.load_counted(&pool).await.is_err() && waited.elapsed() < FIRST_LOAD_WAIT {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ready.notify_ready();
        let mut next = tokio::time::Instant::now() + self.interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    // A failed snapshot is retried within a second: the view is going stale.
                    let ok = self.load_counted(&pool).await.is_ok();
                    next = tokio::time::Instant::now() + if ok { self.interval } else { Duration::from_secs(1) };
                }
                Some(reply) = reloads.recv() => {
                    let _ = reply.send(self.load_counted(&pool).await);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
