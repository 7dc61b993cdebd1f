//! Shared application state: one `Clone` struct of handles.

use std::sync::Arc;

use axum::extract::FromRef;
use caracal_sts::Sts;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::config::ControlPlaneConfig;
use crate::metrics::Metrics;

/// What every handler may reach.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub redis: caracal_shared::redis_primary::Conn,
    pub sts: Arc<Sts>,
    pub cfg: Arc<ControlPlaneConfig>,
    pub metrics: Arc<Metrics>,
    /// Woken after a commit that enqueued outbox rows, so the relay publishes at once.
    pub outbox_notify: Arc<Notify>,
    /// Ids of approvals just decided (from `LISTEN`), for long-polling status requests.
    pub approvals: tokio::sync::broadcast::Sender<String>,
    /// Audit events this process produces, shipped by [`crate::evidence::ship`].
    pub evidence: tokio::sync::mpsc::Sender<caracal_shared::audit::AuditEvent>,
    /// The audit ledger, when this process runs it.
    pub ledger: Option<Arc<crate::ledger::LedgerHandle>>,
    /// Trace export, when an OTLP endpoint is configured.
    pub otel: Option<Arc<caracal_shared::otel::Exporter>>,
}

impl FromRef<AppState> for Arc<Sts> {
    fn from_ref(s: &AppState) -> Self {
        s.sts.clone()
    }
}
