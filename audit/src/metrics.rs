//! Ledger metrics, registered in the owning binary's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::chain::BreakKind;

/// Everything the ledger counts.
pub struct AuditMetrics {
    /// Events filed (new rows).
    pub ingested: IntCounter,
    /// Redeliveries of events already filed with the same content.
    pub duplicates: IntCounter,
    /// Frames moved to the dead-letter stream, by reason class.
    pub dead_letters: IntCounterVec,
    /// Frames whose `sig` did not verify.
    pub hmac_failures: IntCounter,
    /// Batches retried because Postgres was unavailable.
    pub store_retries: IntCounter,
    /// Pending entries claimed from idle consumers.
    pub reclaimed: IntCounter,
    /// Redis read errors (the consumer reconnects).
    pub read_errors: IntCounter,
    /// Time to file and acknowledge one batch.
    pub batch_seconds: Histogram,
    /// Tamper findings, by kind (`content_mismatch`, `chain_break`, `hmac_mismatch`).
    pub tamper: IntCounterVec,
    /// Rows checked by sweeps.
    pub sweep_checked: IntCounter,
    /// Unix time of the last finished sweep, and of the last full one.
    pub last_sweep: IntGauge,
    pub last_full_sweep: IntGauge,
    /// Rows removed by retention.
    pub pruned: IntCounter,
    /// Entries of `caracal.audit.events` not yet delivered to the ledger (`XINFO GROUPS` lag).
    pub consumer_lag: IntGauge,
    /// Entries delivered and not yet acknowledged (being filed, or held by a dead consumer).
    pub consumer_pending: IntGauge,
    /// Entries waiting in the dead-letter stream.
    pub dead_letter_backlog: IntGauge,
    /// Entries in `caracal.audit.events` (producers never trim it; the ledger trims what it filed).
    pub stream_length: IntGauge,
    /// Entries the ledger trimmed after filing them.
    pub trimmed: IntCounter,
}

impl AuditMetrics {
    /// Creates and registers.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let dead_letters =
            IntCounterVec::new(Opts::new("caracal_audit_dead_letters_total", "Audit frames dead-lettered, by reason."), &["reason"])?;
        registry.register(Box::new(dead_letters.clone()))?;
        let tamper = IntCounterVec::new(Opts::new("caracal_audit_tamper_total", "Tamper findings of the sweeps, by kind."), &["kind"])?;
        for k in BreakKind::ALL {
            tamper.with_label_values(&[k.as_str()]);
        }
        registry.register(Box::new(tamper.clone()))?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new("caracal_audit_batch_seconds", "Time to file and acknowledge one batch of audit events.")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        registry.register(Box::new(batch_seconds.clone()))?;
        Ok(Self {
            ingested: counter("caracal_audit_ingested_total", "Audit events filed in the ledger.")?,
            duplicates: counter("caracal_audit_duplicates_total", "Redelivered audit events already filed.")?,
            dead_letters,
            hmac_failures: counter("caracal_audit_hmac_failures_total", "Audit frames whose producer signature did not verify.")?,
            store_retries: counter("caracal_audit_store_retries_total", "Audit batches retried because Postgres was unavailable.")?,
            reclaimed: counter("caracal_audit_reclaimed_total", "Pending audit entries claimed from idle consumers.")?,
            read_errors: counter("caracal_audit_read_errors_total", "Audit consumer Redis errors.")?,
            batch_seconds,
            tamper,
            sweep_checked: counter("caracal_audit_sweep_checked_total", "Ledger rows checked by tamper sweeps.")?,
            last_sweep: gauge("caracal_audit_last_sweep_unix", "Unix time of the last finished tamper sweep.")?,
            last_full_sweep: gauge("caracal_audit_last_full_sweep_unix", "Unix time of the last finished full tamper sweep.")?,
            pruned: counter("caracal_audit_retention_pruned_total", "Ledger rows removed by retention.")?,
            consumer_lag: gauge("caracal_audit_consumer_lag", "Audit stream entries not yet delivered to the ledger.")?,
            consumer_pending: gauge("caracal_audit_consumer_pending", "Audit stream entries delivered and not yet acknowledged.")?,
            dead_letter_backlog: gauge("caracal_audit_dead_letter_backlog", "Entries in caracal.audit.events.dlq.")?,
            stream_length: gauge("caracal_audit_stream_length", "Entries in caracal.audit.events (filed or not).")?,
            trimmed: counter(
                "caracal_audit_trimmed_total",
                "Entries trimmed from caracal.audit.events after every group acknowledged them.",
            )?,
        })
    }
}
