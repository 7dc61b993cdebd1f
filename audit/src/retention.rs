//! Retention: removes the oldest part of each zone's chain and leaves an authenticated anchor, so
//! the rest still verifies from its first row.
//!
//! Only a prefix is ever removed (rows up to the first one that occurred inside the retention
//! window), in the same transaction that records the anchor and under the zone's write lock.
//! The DELETE runs as the owning role with `caracal.audit_retention` set, the one case the
//! append-only trigger lets through; the writer role cannot delete at all.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::metrics::AuditMetrics;
use crate::store;

/// Prunes every zone; returns how many rows went.
pub async fn prune(db: &PgPool, key: &[u8], days: u32) -> Result<u64, sqlx::Error> {
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    let mut pruned = 0;
    for zone in store::zones(db).await? {
        let mut tx = db.begin().await?;
        sqlx::query("SET LOCAL caracal.audit_retention = 'on'").execute(&mut *tx).await?;
        store::lock_head(&mut tx, &zone).await?;
        let upto: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "WITH young AS (SELECT min(seq) AS seq FROM audit_events WHERE zone_id = $1 AND occurred_at >= $2), \
                  last AS (SELECT CASE WHEN (SELECT seq FROM young) IS NULL THEN max(seq) ELSE (SELECT seq FROM young) - 1 END AS seq \
                           FROM audit_events WHERE zone_id = $1) \
             SELECT e.seq, e.chain_hmac FROM audit_events e, last WHERE e.zone_id = $1 AND e.seq = last.seq",
        )
        .bind(&zone)
        .bind(cutoff)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((seq, link)) = upto else { continue };
        let link: [u8; 32] = link.try_into().unwrap_or(crate::chain::GENESIS);
        store::insert_anchor(&mut tx, key, &zone, "retention", seq, &link).await?;
        let deleted =
            sqlx::query("DELETE FROM audit_events WHERE zone_id = $1 AND seq <= $2").bind(&zone).bind(seq).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(zone_id = %zone, upto_seq = seq, rows = deleted.rows_affected(), days, "audit retention pruned a chain prefix");
        pruned += deleted.rows_affected();
    }
    Ok(pruned)
}

/// Prunes now and every `every`; `days == 0` keeps everything.
pub async fn run(db: PgPool, key: Arc<[u8]>, days: u32, every: Duration, metrics: Arc<AuditMetrics>, mut shutdown: watch::Receiver<bool>) {
    if days == 0 {
        return;
    }
    loop {
        match prune(&db, &key, days).await {
            Ok(n) => metrics.pruned.inc_by(n),
            Err(e) => tracing::warn!(error = %e, "audit retention failed; retrying at the next interval"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
