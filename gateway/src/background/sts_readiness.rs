//! The `sts readiness` background service: while an STS circuit is open, asks the STS's `/ready`
//! every [`POLL`]. When the STS answers ready after having been seen unready (its Postgres or
//! Redis away, or the STS itself not answering), every open circuit may probe with its next
//! request instead of sitting out the rest of `STS_CIRCUIT_OPEN`.
//!
//! Without it a Redis failover that the STS got through in 2 s kept the gateway refusing for the
//! full 10 s open period (issue 15, bench S8). A circuit that opened while the STS stayed ready (a
//! zone's broken policy) keeps its period: the STS's readiness says nothing about that zone.
//! Readiness only lets a probe through; the probe's own outcome still closes or re-opens the
//! circuit, so nothing is admitted on the strength of `/ready` alone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::Deps;

/// How often `/ready` is asked while a circuit is open (never while all are closed).
const POLL: Duration = Duration::from_millis(250);
/// How long one `/ready` may take (the STS bounds its own dependency checks at 2 s).
const POLL_TIMEOUT: Duration = Duration::from_secs(3);

/// Watches the STS's readiness while a circuit is open.
pub struct StsReadiness(pub Arc<Deps>);

#[async_trait]
impl BackgroundService for StsReadiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let deps = &self.0;
        let url = format!("{}/ready", deps.cfg.sts_base);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unready_seen = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !deps.circuits.any_open() {
                unready_seen = false;
                continue;
            }
            let ready = tokio::select! {
                r = deps.http.get(&url).timeout(POLL_TIMEOUT).send() => r.is_ok_and(|r| r.status().is_success()),
                _ = shutdown.changed() => return,
            };
            if !ready {
                unready_seen = true;
            } else if std::mem::take(&mut unready_seen) {
                let opened = deps.circuits.probe_now();
                deps.metrics.sts_ready_probes.inc();
                tracing::info!(circuits = opened, "the STS is ready again: open circuits probe now");
            }
        }
    }
}
