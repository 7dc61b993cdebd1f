//! Tamper sweeps and range verification.
//!
//! A full sweep walks every zone's chain from its retention anchor (or seq 1) to its head; an
//! incremental sweep continues each zone from where the last sweep left it and re-checks the tail.
//! The tail check compares the head with the newest checkpoint (an authenticated `(seq,
//! chain_hmac)` written after each clean walk), so rows deleted from the end are noticed even
//! across restarts. Findings are logged under the seed's alert names (`chain_break`,
//! `hmac_mismatch`, `content_mismatch`), counted in `caracal_audit_tamper_total{kind}` and shown
//! on `/ready`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{Mutex, watch};

use crate::chain::{BreakKind, GENESIS, Verifier};
use crate::metrics::AuditMetrics;
use crate::status::{Findings, Status};
use crate::store::{self, Ledger};

/// Rows read per query while walking.
const PAGE: i64 = 2_000;
/// Findings kept in a report.
const MAX_REPORTED: usize = 100;

/// The result of verifying one zone (or a range of it).
#[derive(Clone, Debug, Serialize)]
pub struct ZoneReport {
    pub zone_id: String,
    pub ok: bool,
    /// Rows checked.
    pub checked: u64,
    /// First and last seq checked.
    pub from_seq: Option<i64>,
    pub to_seq: Option<i64>,
    /// The chain's last row (0 when empty).
    pub head_seq: i64,
    /// Rows up to here were removed by retention.
    pub retention_anchor_seq: Option<i64>,
    /// The first break, where the chain stops being trustworthy.
    pub first_break: Option<crate::chain::Break>,
    pub breaks: Vec<crate::chain::Break>,
    /// Where the walk ended `(seq, chain_hmac)`; not serialized.
    #[serde(skip)]
    pub position: (i64, [u8; 32]),
}

/// Verifies `zone` over `[from, to]` (whole chain when both are `None`). Starting inside the
/// chain trusts the stored link of the row before `from`; the tail is checked only when the
/// range reaches the head. Everything is read from one snapshot, so a retention cut or an
/// append committed meanwhile never looks like damage.
pub async fn verify_zone(db: &PgPool, key: &[u8], zone: &str, from: Option<i64>, to: Option<i64>) -> Result<ZoneReport, sqlx::Error> {
    let mut tx = snapshot(db).await?;
    let db = &mut *tx;
    let (head_seq, _) = store::head(db, zone).await?;
    let anchor = store::latest_anchor(&mut *db, key, zone, "retention").await?;
    let floor = anchor.as_ref().map_or(0, |a| a.seq);
    let mut v;
    match from {
        Some(f) if f > floor + 1 => {
            let before: Option<(Vec<u8>,)> = sqlx::query_as("SELECT chain_hmac FROM audit_events WHERE zone_id = $1 AND seq = $2")
                .bind(zone)
                .bind(f - 1)
                .fetch_optional(&mut *db)
                .await?;
            v = Verifier::new(key, zone, (f - 1, before.as_ref().and_then(|(h,)| h.as_slice().try_into().ok()).unwrap_or(GENESIS)));
            if before.is_none() {
                v.report(f, BreakKind::ChainBreak, format!("the row before seq {f} is missing"));
            }
        }
        _ => {
            v = Verifier::new(key, zone, anchor.as_ref().map_or((0, GENESIS), |a| (a.seq, a.chain_hmac)));
            if let Some(a) = anchor.as_ref().filter(|a| !a.authentic) {
                v.report(a.seq + 1, BreakKind::ChainBreak, format!("the retention anchor at seq {} does not verify", a.seq));
            }
        }
    }
    let upto = to.unwrap_or(i64::MAX);
    walk(db, &mut v, zone, upto).await?;
    if to.is_none_or(|t| t >= head_seq) {
        check_tail(db, key, zone, &mut v, floor).await?;
    }
    tx.commit().await?;
    Ok(report(zone, v, from, head_seq, anchor.map(|a| a.seq)))
}

/// A read-only transaction on one snapshot.
async fn snapshot(db: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    Ok(tx)
}

async fn walk(db: &mut sqlx::PgConnection, v: &mut Verifier<'_>, zone: &str, upto: i64) -> Result<(), sqlx::Error> {
    loop {
        let rows = store::rows_after(&mut *db, zone, v.position().0, upto, PAGE).await?;
        rows.iter().for_each(|r| v.check(r));
        if (rows.len() as i64) < PAGE {
            return Ok(());
        }
    }
}

/// The newest checkpoint must still be in the chain, unchanged.
async fn check_tail(db: &mut sqlx::PgConnection, key: &[u8], zone: &str, v: &mut Verifier<'_>, floor: i64) -> Result<(), sqlx::Error> {
    let Some(cp) = store::latest_anchor(&mut *db, key, zone, "checkpoint").await? else { return Ok(()) };
    if !cp.authentic {
        v.report(cp.seq, BreakKind::ChainBreak, format!("the checkpoint at seq {} does not verify", cp.seq));
        return Ok(());
    }
    if cp.seq <= floor {
        return Ok(());
    }
    let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT chain_hmac FROM audit_events WHERE zone_id = $1 AND seq = $2")
        .bind(zone)
        .bind(cp.seq)
        .fetch_optional(&mut *db)
        .await?;
    match row {
        None => v.report(cp.seq, BreakKind::ChainBreak, format!("the chain ends before seq {}, which a sweep saw: tail truncated", cp.seq)),
        Some((h,)) if h.as_slice() != cp.chain_hmac => {
            v.report(cp.seq, BreakKind::HmacMismatch, format!("seq {} differs from the checkpoint a sweep recorded", cp.seq))
        }
        Some(_) => {}
    }
    Ok(())
}

fn report(zone: &str, v: Verifier<'_>, from: Option<i64>, head_seq: i64, anchor: Option<i64>) -> ZoneReport {
    let position = v.position();
    let checked = v.checked;
    let mut breaks = v.breaks;
    breaks.sort_by_key(|b| b.seq);
    let from_seq = (checked > 0).then(|| from.unwrap_or(anchor.unwrap_or(0) + 1).max(anchor.unwrap_or(0) + 1));
    ZoneReport {
        zone_id: zone.to_owned(),
        ok: breaks.is_empty(),
        checked,
        from_seq,
        to_seq: (checked > 0).then_some(position.0),
        head_seq,
        retention_anchor_seq: anchor,
        first_break: breaks.first().cloned(),
        breaks: breaks.into_iter().take(MAX_REPORTED).collect(),
        position,
    }
}

/// Runs sweeps and keeps where each zone's last clean walk ended.
pub struct Sweeper {
    pub db: PgPool,
    pub ledger: Ledger,
    pub metrics: Arc<AuditMetrics>,
    pub status: Arc<Status>,
    /// Zone → position verified so far.
    verified: Mutex<HashMap<String, (i64, [u8; 32])>>,
}

/// What a sweep did.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub full: bool,
    pub zones: usize,
    pub checked: u64,
    pub findings: Findings,
}

impl Sweeper {
    pub fn new(db: PgPool, ledger: Ledger, metrics: Arc<AuditMetrics>, status: Arc<Status>) -> Self {
        Self { db, ledger, metrics, status, verified: Mutex::default() }
    }

    /// Walks every zone from its start. Only one sweep runs at a time.
    pub async fn full(&self) -> Result<SweepReport, sqlx::Error> {
        let mut verified = self.verified.lock().await;
        verified.clear();
        let mut findings = Findings::default();
        let zones = store::zones(&self.db).await?;
        let mut checked = 0;
        for zone in &zones {
            let r = verify_zone(&self.db, self.ledger.key(), zone, None, None).await?;
            checked += r.checked;
            self.absorb(&mut findings, zone, &r, &mut verified).await?;
        }
        let now = chrono::Utc::now();
        findings.last_sweep_at = Some(now);
        findings.last_full_sweep_at = Some(now);
        self.metrics.last_full_sweep.set(now.timestamp());
        self.finish(true, zones.len(), checked, findings)
    }

    /// Continues every zone from its verified position (zones not yet walked are walked whole).
    pub async fn incremental(&self) -> Result<SweepReport, sqlx::Error> {
        let mut verified = self.verified.lock().await;
        let mut findings = self.status.findings();
        findings.first.truncate(MAX_REPORTED);
        let zones = store::zones(&self.db).await?;
        let mut checked = 0;
        for zone in &zones {
            let r = match verified.get(zone).copied() {
                Some((seq, link)) => {
                    let mut tx = snapshot(&self.db).await?;
                    let floor = store::latest_anchor(&mut tx, self.ledger.key(), zone, "retention").await?.map_or(0, |a| a.seq);
                    if floor > seq {
                        // Retention cut past where we were: walk from its anchor.
                        tx.commit().await?;
                        verify_zone(&self.db, self.ledger.key(), zone, None, None).await?
                    } else {
                        let mut v = Verifier::new(self.ledger.key(), zone, (seq, link));
                        walk(&mut tx, &mut v, zone, i64::MAX).await?;
                        let (head, _) = store::head(&mut tx, zone).await?;
                        check_tail(&mut tx, self.ledger.key(), zone, &mut v, floor).await?;
                        tx.commit().await?;
                        if head < seq {
                            v.report(
                                seq,
                                BreakKind::ChainBreak,
                                format!("the chain ends at seq {head} but seq {seq} was verified: tail truncated"),
                            );
                        }
                        report(zone, v, Some(seq + 1), head, None)
                    }
                }
                None => verify_zone(&self.db, self.ledger.key(), zone, None, None).await?,
            };
            checked += r.checked;
            self.absorb(&mut findings, zone, &r, &mut verified).await?;
        }
        findings.last_sweep_at = Some(chrono::Utc::now());
        self.finish(false, zones.len(), checked, findings)
    }

    /// Counts and logs a zone's findings; a clean walk moves the zone's position and checkpoint.
    async fn absorb(
        &self,
        findings: &mut Findings,
        zone: &str,
        r: &ZoneReport,
        verified: &mut HashMap<String, (i64, [u8; 32])>,
    ) -> Result<(), sqlx::Error> {
        for b in &r.breaks {
            findings.count(b.kind);
            self.metrics.tamper.with_label_values(&[b.kind.as_str()]).inc();
            tracing::error!(alert = b.kind.as_str(), zone_id = %b.zone_id, seq = b.seq, detail = %b.detail, "audit ledger tampering detected");
            if findings.first.len() < 10 {
                findings.first.push(b.clone());
            }
        }
        if r.ok && r.position.0 > 0 {
            let before = verified.insert(zone.to_owned(), r.position);
            if before.is_none_or(|(s, _)| s < r.position.0) {
                let mut tx = self.ledger.writer().begin().await?;
                store::insert_anchor(&mut tx, self.ledger.key(), zone, "checkpoint", r.position.0, &r.position.1).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    fn finish(&self, full: bool, zones: usize, checked: u64, findings: Findings) -> Result<SweepReport, sqlx::Error> {
        self.metrics.sweep_checked.inc_by(checked);
        self.metrics.last_sweep.set(chrono::Utc::now().timestamp());
        if findings.total() > 0 {
            tracing::error!(
                full,
                zones,
                checked,
                content_mismatch = findings.content_mismatch,
                chain_break = findings.chain_break,
                hmac_mismatch = findings.hmac_mismatch,
                "audit tamper sweep complete"
            );
        } else {
            tracing::info!(full, zones, checked, "audit tamper sweep complete");
        }
        self.status.set_findings(findings.clone());
        Ok(SweepReport { full, zones, checked, findings })
    }

    /// A full sweep now, incremental ones every `every`, a full one every `full_every`.
    pub async fn run(self: Arc<Self>, every: Duration, full_every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut last_full = tokio::time::Instant::now();
        let mut full = true;
        loop {
            let r = if full { self.full().await } else { self.incremental().await };
            match r {
                Ok(_) if full => last_full = tokio::time::Instant::now(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, full, "audit tamper sweep failed; retrying at the next interval"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            full = last_full.elapsed() >= full_every;
        }
    }
}
