//! The `pool probes` background service: every tick, each cached pool whose resource asks for
//! active probes runs a round when its interval is due (docs/pools.md §4), and every pool's
//! `upstream_endpoint_healthy` gauges are refreshed (a passive ejection ends by time alone).
//! A pool nobody uses is evicted from the cache and stops being probed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::TransportConnector;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::Deps;

/// How often pools are looked at; the shortest probe interval allowed is 200 ms.
const TICK: Duration = Duration::from_millis(100);

/// Runs probe rounds until shutdown.
pub struct PoolProbes(pub Arc<Deps>);

#[async_trait]
impl BackgroundService for PoolProbes {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Arc::new(TransportConnector::new(None));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for pool in self.0.pools.all() {
                pool.refresh_gauges();
                if pool.claim_probe_round() {
                    // A slow round must not hold the others back.
                    let connector = connector.clone();
                    tokio::spawn(async move { pool.probe_round(&connector).await });
                }
            }
        }
    }
}
