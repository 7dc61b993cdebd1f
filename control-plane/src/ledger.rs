//! Starts the audit ledger in this process: the consumer, the sweeper and retention
//! (`caracal-audit`), sharing the control plane's registry and shutdown signal.

use std::sync::Arc;

use anyhow::Context as _;
use caracal_audit::ingest::{IngestConfig, Ingestor};
use caracal_audit::metrics::AuditMetrics;
use caracal_audit::status::Status;
use caracal_audit::store::Ledger;
use caracal_audit::sweep::Sweeper;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ControlPlaneConfig, LedgerConfig};

/// What the HTTP side of the ledger needs.
pub struct LedgerHandle {
    pub cfg: LedgerConfig,
    pub ledger: Ledger,
    pub sweeper: Arc<Sweeper>,
    pub status: Arc<Status>,
}

impl LedgerHandle {
    /// Why `/ready` should fail, if it should.
    pub fn ready_problem(&self) -> Option<&'static str> {
        (self.cfg.fail_ready_on_tamper && self.status.findings().total() > 0).then_some("audit_tamper_detected")
    }
}

/// Connects the writer pool and spawns the ledger's tasks.
pub async fn start(
    cfg: &ControlPlaneConfig,
    ledger_cfg: &LedgerConfig,
    db: PgPool,
    registry: &prometheus::Registry,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<LedgerHandle>, Vec<JoinHandle<()>>)> {
    let url = ledger_cfg.database_url.as_ref().unwrap_or(&cfg.database_url);
    let options: PgConnectOptions = url.expose().parse().context("AUDIT_DATABASE_URL / DATABASE_URL")?;
    let chain_key = ledger_cfg.chain_key();
    let ledger = Ledger::connect(options, &chain_key).await.context("connecting the audit writer (role caracal_audit_writer)")?;
    let metrics = Arc::new(AuditMetrics::new(registry)?);
    let status = Arc::new(Status::default());
    let ingestor = Ingestor {
        cfg: IngestConfig {
            stream: caracal_shared::streams::AUDIT_EVENTS.to_owned(),
            consumer: ledger_cfg.consumer_name.clone(),
            batch: ledger_cfg.batch,
            claim_idle: ledger_cfg.claim_idle,
            block: std::time::Duration::from_secs(1),
            linger: ledger_cfg.linger,
        },
        primary: cfg.redis.primary().context("REDIS_URL")?,
        ledger: ledger.clone(),
        frame_key: cfg.audit_key().context("AUDIT_HMAC_KEY")?,
        streams_key: cfg.streams_key(),
        metrics: metrics.clone(),
        status: status.clone(),
    };
    let sweeper = Arc::new(Sweeper::new(db.clone(), ledger.clone(), metrics.clone(), status.clone()));
    let tasks = vec![
        tokio::spawn(ingestor.run(stop.clone())),
        tokio::spawn(sweeper.clone().run(ledger_cfg.sweep_every, ledger_cfg.full_sweep_every, stop.clone())),
        tokio::spawn(caracal_audit::retention::run(
            db,
            chain_key.into(),
            ledger_cfg.retention_days,
            ledger_cfg.retention_every,
            metrics,
            stop,
        )),
    ];
    Ok((Arc::new(LedgerHandle { cfg: ledger_cfg.clone(), ledger, sweeper, status }), tasks))
}
