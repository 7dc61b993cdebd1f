//! Transactional outbox: a change and the stream message announcing it commit together, and a relay
//! publishes committed messages to Redis, signed (`_sig`), until each is delivered.
//!
//! The relay claims rows with `FOR UPDATE SKIP LOCKED` (several control-plane replicas share the
//! work), publishes with `XADD <stream> MAXLEN ~ 100000` — except to `caracal.audit.events`, which
//! no producer trims (only the ledger, what it filed: `caracal_audit::trim`) — and on failure
//! retries with exponential backoff (1 s doubling to 60 s). A crash between publish and mark re-publishes: consumers treat
//! messages as idempotent and can dedupe on `outbox_id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use caracal_shared::streams;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;

/// Appends a message to the outbox inside `tx`; returns its id.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    zone_id: Option<&str>,
    stream: &str,
    fields: &[(&str, &str)],
) -> Result<String, sqlx::Error> {
    let id = uuid::Uuid::now_v7().to_string();
    let map: BTreeMap<&str, &str> = fields.iter().copied().collect();
    sqlx::query("INSERT INTO outbox (id, zone_id, stream, fields) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(zone_id)
        .bind(stream)
        .bind(sqlx::types::Json(map))
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// The relay task.
pub struct Relay {
    pub db: PgPool,
    pub redis: caracal_shared::redis_primary::Conn,
    pub streams_key: Vec<u8>,
    pub notify: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

type Claimed = (String, String, sqlx::types::Json<BTreeMap<String, String>>, i32);

impl Relay {
    /// Runs until `shutdown` resolves.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.publish_batch().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox relay: claiming failed; retrying"),
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Publishes up to 32 due messages; returns how many were claimed.
    pub async fn publish_batch(&self) -> Result<usize, sqlx::Error> {
        let rows: Vec<Claimed> = sqlx::query_as(
            "UPDATE outbox SET locked_until = now() + interval '30 seconds', attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox WHERE dispatched_at IS NULL AND available_at <= now() \
                          AND (locked_until IS NULL OR locked_until < now()) \
                          ORDER BY available_at, id LIMIT 32 FOR UPDATE SKIP LOCKED) \
             RETURNING id, stream, fields, attempts",
        )
        .fetch_all(&self.db)
        .await?;
        let n = rows.len();
        for (id, stream, fields, attempts) in rows {
            match self.publish(&id, &stream, fields.0).await {
                Ok(()) => {
                    sqlx::query("UPDATE outbox SET dispatched_at = now(), locked_until = NULL, last_error = NULL WHERE id = $1")
                        .bind(&id)
                        .execute(&self.db)
                        .await?;
                    self.metrics.outbox_published.with_label_values(&[&stream]).inc();
                }
                Err(e) => {
                    let backoff = 2i64.pow(attempts.clamp(0, 6) as u32).min(60);
                    tracing::warn!(outbox_id = %id, stream, attempts, error = %e, "outbox publish failed; will retry");
                    self.metrics.outbox_failures.with_label_values(&[&stream]).inc();
                    sqlx::query(
                        "UPDATE outbox SET locked_until = NULL, last_error = $2, \
                         available_at = now() + make_interval(secs => $3) WHERE id = $1",
                    )
                    .bind(&id)
                    .bind(e.to_string())
                    .bind(backoff as f64)
                    .execute(&self.db)
                    .await?;
                }
            }
        }
        let pending: (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE dispatched_at IS NULL").fetch_one(&self.db).await?;
        self.metrics.outbox_pending.set(pending.0);
        Ok(n)
    }

    async fn publish(&self, id: &str, stream: &str, mut fields: BTreeMap<String, String>) -> redis::RedisResult<()> {
        fields.insert("outbox_id".into(), id.to_owned());
        fields.remove("_sig");
        let sig = caracal_shared::sig::stream_signature(&self.streams_key, stream, fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        fields.insert("_sig".into(), sig);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream);
        // Operational streams are capped (their consumers also reload from Postgres); audit
        // evidence is never trimmed before the ledger filed it.
        if stream != streams::AUDIT_EVENTS {
            cmd.arg("MAXLEN").arg("~").arg(100_000);
        }
        cmd.arg("*");
        for (k, v) in &fields {
            cmd.arg(k).arg(v);
        }
        // Dispatched only once the replicas REDIS_MIN_REPLICAS asks for hold it: a failover
        // must not lose a revocation the outbox already crossed off.
        self.redis.durability().write::<String, _>(&mut self.redis.clone(), &cmd).await.map(|_| ())
    }
}
