//! Feeds the revocation view from `caracal.sessions.revoke`.
//!
//! One consumer group per gateway process (`gateway-revocation:<instance>`, the instance id ending in
//! the pid), so every gateway — including the old and the new process during a zero-downtime
//! upgrade — sees every message. A new group starts at the beginning of the retained stream:
//! replaying old revocations is harmless (they merge, expired ones are ignored) and leaves no window
//! between the start-up snapshot and the first read. The group is removed on a clean exit.
//! Messages are verified, handled and acknowledged by [`caracal_shared::stream_consumer`]; a
//! message naming no anchor is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use caracal_shared::redis_primary::Primary;
use caracal_shared::revocation::{DEFAULT_RETENTION, RevocationView, Revoked};
use caracal_shared::stream_consumer::{Consumer, ConsumerMetrics, Failure, Handler, Message};
use caracal_shared::streams;
use pingora::server::ShutdownWatch;
use pingora::services::ServiceReadyNotifier;
use pingora::services::background::BackgroundService;

/// Fields that name an anchor (`edge_id` is the original's alias for `delegation_edge_id`).
const ANCHOR_FIELDS: &[&str] = &["session_id", "sid", "root_sid", "agent_session_id", "delegation_edge_id", "edge_id"];

/// Applies revocation messages to the view.
pub struct ApplyRevocations {
    pub view: Arc<RevocationView>,
    /// Age of the newest applied message (stream id time to now), for propagation metrics.
    pub propagation_seconds: prometheus::Gauge,
}

/// When a message's anchors stop mattering: its `expires_at` (RFC 3339) or 24 h after it was sent.
fn expiry(msg: &Message) -> i64 {
    msg.get("expires_at")
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
        .map(|t| t.timestamp())
        .unwrap_or_else(|| msg.id_ms().unwrap_or_else(|| chrono::Utc::now().timestamp_millis()) / 1000 + DEFAULT_RETENTION.as_secs() as i64)
}

impl Handler for ApplyRevocations {
    fn handle(&self, batch: &[Message]) -> Vec<Result<(), Failure>> {
        let mut revoked = Vec::new();
        let results = batch
            .iter()
            .map(|msg| {
                let expires_at = expiry(msg);
                let before = revoked.len();
                revoked.extend(ANCHOR_FIELDS.iter().filter_map(|f| msg.get(f)).map(|a| Revoked { anchor: a.to_owned(), expires_at }));
                if revoked.len() == before { Err(Failure::Permanent("no revocation anchor in message".into())) } else { Ok(()) }
            })
            .collect();
        self.view.add(&revoked);
        if let Some(ms) = batch.iter().filter_map(Message::id_ms).max() {
            self.propagation_seconds.set((chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0);
        }
        results
    }

    fn read_succeeded(&self) {
        self.view.stream_succeeded();
    }
}

/// The Pingora background service around the consumer.
pub struct RevocationStream {
    pub consumer: Consumer<ApplyRevocations>,
}

impl RevocationStream {
    /// A consumer for this gateway instance.
    pub fn new(primary: Primary, instance_id: &str, key: Vec<u8>, handler: ApplyRevocations, metrics: ConsumerMetrics) -> Self {
        Self {
            consumer: Consumer {
                primary,
                stream: streams::SESSIONS_REVOKE.to_owned(),
                group: format!("gateway-revocation:{instance_id}"),
                consumer: format!("gateway-{instance_id}-{}", std::process::id()),
                key,
                handler,
                metrics,
                block: Duration::from_millis(500),
                start_id: "0",
            },
        }
    }
}

/// How long start-up waits for the first stream read before serving anyway.
const FIRST_READ_WAIT: Duration = Duration::from_secs(10);

#[async_trait]
impl BackgroundService for RevocationStream {
    /// Signals ready after the first read (or [`FIRST_READ_WAIT`]); see the snapshot service.
    async fn start_with_ready_notifier(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let view = self.consumer.handler.view.clone();
        let first_read = async move {
            let start = tokio::time::Instant::now();
            while !view.stream_started() && start.elapsed() < FIRST_READ_WAIT {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ready.notify_ready();
        };
        tokio::join!(self.consumer.run(shutdown), first_read);
        if let Err(e) = self.consumer.destroy_group().await {
            tracing::warn!(group = %self.consumer.group, error = %e, "could not remove the revocation consumer group");
        }
    }
}
