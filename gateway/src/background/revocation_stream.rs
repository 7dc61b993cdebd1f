//! Feeds the revocation view from `caracal.sessions.revoke`.
//!
//! One consumer group per gateway instance (`gateway-revocation:<instance>`), so every gateway sees
//! every message. Messages are verified, handled and acknowledged by
//! [`caracal_shared::stream_consumer`]; a message naming no anchor is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use caracal_shared::revocation::{DEFAULT_RETENTION, RevocationView, Revoked};
use caracal_shared::stream_consumer::{Consumer, ConsumerMetrics, Failure, Handler, Message};
use caracal_shared::streams;
use pingora::server::ShutdownWatch;
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
    pub fn new(client: redis::Client, instance_id: &str, key: Vec<u8>, handler: ApplyRevocations, metrics: ConsumerMetrics) -> Self {
        Self {
            consumer: Consumer {
                client,
                stream: streams::SESSIONS_REVOKE.to_owned(),
                group: format!("gateway-revocation:{instance_id}"),
                consumer: format!("gateway-{instance_id}-{}", std::process::id()),
                key,
                handler,
                metrics,
                block: Duration::from_millis(500),
            },
        }
    }
}

#[async_trait]
impl BackgroundService for RevocationStream {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.consumer.run(shutdown).await;
    }
}
