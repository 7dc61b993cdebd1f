//! The sweeping task of the upstream [`Watcher`]: header and body-idle deadlines, and revocations
//! of open streams (see `phases::watch`).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::phases::watch::Watcher;

/// Runs [`Watcher::run`] until shutdown.
pub struct WatchSweeper(pub Arc<Watcher>);

#[async_trait]
impl BackgroundService for WatchSweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            () = self.0.clone().run() => {}
            _ = shutdown.changed() => {}
        }
    }
}
