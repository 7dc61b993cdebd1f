//! Sends queued audit events to `caracal.audit.events` in pipelined batches, spools them while
//! Redis is down, and drains the spool as soon as Redis answers again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use caracal_shared::audit::{AuditEvent, Frame};
use caracal_shared::redis_primary::{Dedicated, Primary};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{Mutex, mpsc};

use crate::audit::AuditMetrics;
use crate::audit::spool::Spool;

/// Largest batch per pipeline.
const BATCH: usize = 1000;
/// How often queued events are collected and sent.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// The shipper service.
pub struct Shipper {
    pub primary: Primary,
    pub rx: Mutex<mpsc::Receiver<AuditEvent>>,
    pub spool: Arc<Spool>,
    pub key: Option<Vec<u8>>,
    pub metrics: AuditMetrics,
    pub lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Shipper {
    async fn connect(&self) -> redis::RedisResult<Dedicated> {
        self.primary.dedicated(Duration::from_secs(1), Duration::from_secs(2)).await
    }

    /// One pipelined `XADD` per frame (and `WAIT` for the replicas REDIS_MIN_REPLICAS asks for).
    async fn send(&self, conn: &mut Dedicated, frames: &[Frame]) -> redis::RedisResult<()> {
        self.primary.durability().write_pipe(conn, &caracal_shared::audit::xadd_pipeline(frames)).await
    }

    fn spool_or_lose(&self, frames: &[Frame]) {
        match self.spool.append(frames) {
            Ok(()) => self.metrics.spooled.inc_by(frames.len() as u64),
            Err(e) => {
                self.metrics.lost.inc_by(frames.len() as u64);
                self.lost.store(true, std::sync::atomic::Ordering::Release);
                tracing::error!(events = frames.len(), error = %e, "audit events lost: Redis down and spool unwritable");
            }
        }
    }

    /// Sends spooled files, oldest first; stops at the first failure.
    async fn drain(&self, conn: &mut Dedicated) -> redis::RedisResult<()> {
        for path in self.spool.files().unwrap_or_default() {
            let frames = match self.spool.read(&path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read audit spool file");
                    continue;
                }
            };
            for chunk in frames.chunks(BATCH) {
                self.send(conn, chunk).await?;
            }
            self.metrics.drained.inc_by(frames.len() as u64);
            if let Err(e) = self.spool.remove(&path) {
                tracing::error!(file = %path.display(), error = %e, "cannot remove drained audit spool file");
            }
        }
        Ok(())
    }

    async fn ship(&self, conn: &mut Option<Dedicated>, events: &[AuditEvent]) {
        let frames: Vec<Frame> = events.iter().map(|e| Frame::seal(e, self.key.as_deref())).collect();
        if conn.is_none() {
            *conn = self.connect().await.ok();
        }
        let sent = match conn.as_mut() {
            Some(c) => self.send(c, &frames).await,
            None => Err(redis::RedisError::from((redis::ErrorKind::Io, "not connected"))),
        };
        match sent {
            Ok(()) => self.metrics.emitted.inc_by(frames.len() as u64),
            Err(e) => {
                tracing::warn!(events = frames.len(), error = %e, "audit stream unreachable; spooling");
                *conn = None;
                self.spool_or_lose(&frames);
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Shipper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut rx = self.rx.lock().await;
        let mut conn: Option<Dedicated> = None;
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Collect on a timer instead of waking per event: at a thousand requests a
                // second, a wake-up per event costs the request path a context switch each.
                _ = flush.tick() => loop {
                    while batch.len() < BATCH && let Ok(e) = rx.try_recv() {
                        batch.push(e);
                    }
                    let full = batch.len() == BATCH;
                    if !batch.is_empty() {
                        self.ship(&mut conn, &batch).await;
                        batch.clear();
                    }
                    if !full {
                        break;
                    }
                },
                _ = tick.tick() => {
                    // Drain as soon as Redis answers again, not at the next start.
                    if self.spool.usage().0 > 0 {
                        if conn.is_none() {
                            conn = self.connect().await.ok();
                        }
                        if let Some(c) = conn.as_mut()
                            && let Err(e) = self.drain(c).await
                        {
                            tracing::warn!(error = %e, "audit spool drain interrupted");
                            conn = None;
                        }
                    }
                }
                _ = shutdown.changed() => {
                    // Whatever is still queued goes to disk, not to the void.
                    while let Ok(e) = rx.try_recv() {
                        batch.push(e);
                    }
                    let frames: Vec<Frame> = batch.iter().map(|e| Frame::seal(e, self.key.as_deref())).collect();
                    self.spool_or_lose(&frames);
                    return;
                }
            }
        }
    }
}
