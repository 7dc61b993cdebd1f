//! Several background services on one runtime. Pingora starts each service on a runtime of its
//! own, with its own thread; the gateway's light services (timers, a stream read, health polls)
//! need no thread each, and every extra thread costs resident memory and scheduler wake-ups.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::ServiceReadyNotifier;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

/// Runs each member as its own task on this service's runtime; ready once every member is.
pub struct Grouped(pub Vec<Arc<dyn BackgroundService + Send + Sync>>);

#[async_trait]
impl BackgroundService for Grouped {
    async fn start_with_ready_notifier(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let mut members = tokio::task::JoinSet::new();
        let mut readiness = Vec::with_capacity(self.0.len());
        for member in &self.0 {
            let (tx, rx) = watch::channel(false);
            readiness.push(rx);
            let (member, shutdown) = (member.clone(), shutdown.clone());
            members.spawn(async move { member.start_with_ready_notifier(shutdown, ServiceReadyNotifier::new(tx)).await });
        }
        members.spawn(async move {
            // A member's notifier signals ready when dropped, so a member that ends early never
            // holds the group back (Pingora's own rule for a single service).
            for mut rx in readiness {
                let _ = rx.wait_for(|&r| r).await;
            }
            ready.notify_ready();
        });
        while let Some(ended) = members.join_next().await {
            if let Err(e) = ended
                && e.is_panic()
            {
                tracing::error!(error = %e, "a background service panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Becomes ready when told, then runs until shutdown.
    struct Gate(tokio::sync::Notify);

    #[async_trait]
    impl BackgroundService for Gate {
        async fn start_with_ready_notifier(&self, mut shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
            self.0.notified().await;
            ready.notify_ready();
            let _ = shutdown.changed().await;
        }
    }

    /// Ends at once, dropping its notifier unused.
    struct Quitter;

    #[async_trait]
    impl BackgroundService for Quitter {
        async fn start_with_ready_notifier(&self, _shutdown: ShutdownWatch, _ready: ServiceReadyNotifier) {}
    }

    #[tokio::test]
    async fn the_group_is_ready_when_every_member_is_and_ends_on_shutdown() {
        let (a, b) = (Arc::new(Gate(Default::default())), Arc::new(Gate(Default::default())));
        let group = Arc::new(Grouped(vec![a.clone(), b.clone(), Arc::new(Quitter)]));
        let (stop, shutdown) = watch::channel(false);
        let (tx, mut ready) = watch::channel(false);
        let run = tokio::spawn({
            let group = group.clone();
            async move { group.start_with_ready_notifier(shutdown, ServiceReadyNotifier::new(tx)).await }
        });

        a.0.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!*ready.borrow(), "one member is still starting");
        b.0.notify_one();
        tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|&r| r)).await.expect("ready").expect("sender alive");

        assert!(!run.is_finished(), "members run until shutdown");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), run).await.expect("ends on shutdown").unwrap();
    }
}
