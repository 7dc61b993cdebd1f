//! Periodic Postgres snapshot of live revocations, merged into the view (never replacing it).
//!
//! Runs every `REVOCATION_SNAPSHOT_INTERVAL`, reading only the rows revoked since the newest it
//! saw (less [`RELOAD_OVERLAP`]); every [`FULL_RELOAD_EVERY`], at start and on demand
//! (`POST /internal/revocations/reload`, which asks this task through a channel so only this
//! task's runtime touches the pool) it reads them all and prunes what expired. A full read of a
//! million rows takes seconds; the incremental one, what changed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use caracal_shared::revocation::{FULL_RELOAD_EVERY, RELOAD_OVERLAP, RevocationView, Revoked, in_chunks};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
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
    /// The database's clock when the last successful read began; `None` until the first. The
    /// next incremental read starts [`RELOAD_OVERLAP`] before it (see `caracal_sts::revoked`).
    pub watermark: std::sync::Mutex<Option<DateTime<Utc>>>,
}

/// How a snapshot reads the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Every live row, then prune.
    Full,
    /// Rows revoked since the watermark, less the overlap.
    Recent,
}

/// Snapshot outcomes.
pub struct SnapshotMetrics {
    pub reloads: prometheus::IntCounter,
    pub reload_errors: prometheus::IntCounter,
}

impl RevocationSnapshot {
    async fn load(&self, pool: &sqlx::PgPool, read: Read) -> Result<usize, sqlx::Error> {
        let since = *self.watermark.lock().unwrap_or_else(|p| p.into_inner());
        let overlap = chrono::Duration::from_std(RELOAD_OVERLAP).unwrap_or_default();
        // Until a first read saw a row there is no watermark, and every read is a full one.
        let full = read == Read::Full || since.is_none();
        let started: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
        let rows = match since {
            Some(since) if !full => sqlx::query_as::<_, (String, i64)>(
                "SELECT anchor_id, extract(epoch FROM expires_at)::bigint FROM revocations WHERE revoked_at >= $1 AND expires_at > now()",
            )
            .bind(since - overlap)
            .fetch(pool),
            _ => sqlx::query_as("SELECT anchor_id, extract(epoch FROM expires_at)::bigint FROM revocations WHERE expires_at > now()")
                .fetch(pool),
        };
        let rows = rows.map_ok(|(anchor, expires_at)| Revoked { anchor, expires_at });
        let n = in_chunks(rows, |chunk| {
            self.view.add(chunk);
        })
        .await?;
        if full {
            self.view.prune();
        }
        *self.watermark.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
        self.view.snapshot_succeeded();
        Ok(n)
    }

    async fn load_counted(&self, pool: &sqlx::PgPool, read: Read) -> Result<usize, String> {
        match tokio::time::timeout(SNAPSHOT_TIMEOUT, self.load(pool, read)).await {
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

/// How long one snapshot may take (a full read of a million rows takes about two seconds here).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(15);

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
        while self.load_counted(&pool, Read::Full).await.is_err() && waited.elapsed() < FIRST_LOAD_WAIT {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ready.notify_ready();
        let mut next = tokio::time::Instant::now() + self.interval;
        let mut last_full = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    let read = if last_full.elapsed() >= FULL_RELOAD_EVERY { Read::Full } else { Read::Recent };
                    // A failed snapshot is retried within a second: the view is going stale.
                    let ok = self.load_counted(&pool, read).await.is_ok();
                    if ok && read == Read::Full {
                        last_full = tokio::time::Instant::now();
                    }
                    next = tokio::time::Instant::now() + if ok { self.interval } else { Duration::from_secs(1) };
                }
                Some(reply) = reloads.recv() => {
                    let _ = reply.send(self.load_counted(&pool, Read::Full).await);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
