//! Audit events and their stream frames (DESIGN §5, §9).
//!
//! A producer serializes an [`AuditEvent`] once to its `data` string and sends the frame
//! `{id, data, sig}` to `caracal.audit.events`, where `sig` = hex HMAC-SHA256(`AUDIT_HMAC_KEY`,
//! data). The ledger verifies `sig` over the raw `data` bytes before parsing and never
//! re-serializes. Events never carry tokens, secrets or bodies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{sig, streams};

/// One audit event, in the original's wire shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// UUIDv7; the ledger is idempotent on it.
    pub id: String,
    pub zone_id: String,
    pub event_type: String,
    pub request_id: String,
    /// `allow`, `deny`, …
    pub decision: String,
    pub evaluation_status: String,
    #[serde(default)]
    pub determining_policies_json: Value,
    /// An array or an object (both occur in the original's producers).
    #[serde(default)]
    pub diagnostics_json: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metadata_json: Value,
    /// RFC 3339 with nanoseconds; empty means "now" to the ledger.
    pub occurred_at: String,
}

impl AuditEvent {
    /// A new event with a fresh id and the current time.
    pub fn new(zone_id: &str, event_type: &str, request_id: &str, decision: &str, evaluation_status: &str, metadata: Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            zone_id: zone_id.to_owned(),
            event_type: event_type.to_owned(),
            request_id: request_id.to_owned(),
            decision: decision.to_owned(),
            evaluation_status: evaluation_status.to_owned(),
            determining_policies_json: Value::Array(vec![]),
            diagnostics_json: Value::Array(vec![]),
            metadata_json: metadata,
            occurred_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        }
    }
}

/// A frame as sent on the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub id: String,
    pub data: String,
    /// Absent only when no key is configured (dev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl Frame {
    /// Serializes and signs an event.
    pub fn seal(event: &AuditEvent, key: Option<&[u8]>) -> Self {
        let data = serde_json::to_string(event).expect("audit events serialize");
        let sig = key.map(|k| sig::hmac_hex(k, data.as_bytes()));
        Self { id: event.id.clone(), data, sig }
    }

    /// Whether `sig` verifies over the raw `data` (a missing `sig` never does).
    pub fn verify(&self, key: &[u8]) -> bool {
        Self::verify_parts(key, &self.data, self.sig.as_deref())
    }

    /// [`Frame::verify`] on fields still in a stream entry, without building a frame.
    pub fn verify_parts(key: &[u8], data: &str, sig: Option<&str>) -> bool {
        sig.is_some_and(|s| sig::hmac_hex_verify(key, data.as_bytes(), s))
    }
}

/// One pipelined `XADD` to `caracal.audit.events` per frame, replies ignored. No `MAXLEN`: a
/// producer-side cap would drop evidence the ledger has not filed; the ledger trims what it filed
/// (`caracal_audit::trim`).
pub fn xadd_pipeline(frames: &[Frame]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for f in frames {
        let cmd = pipe.cmd("XADD").arg(streams::AUDIT_EVENTS).arg("*");
        cmd.arg("id").arg(&f.id).arg("data").arg(&f.data);
        if let Some(sig) = &f.sig {
            cmd.arg("sig").arg(sig);
        }
        cmd.ignore();
    }
    pipe
}

/// Queues an event for a shipper; waits when the queue is full rather than dropping it.
pub async fn enqueue(tx: &tokio::sync::mpsc::Sender<AuditEvent>, event: AuditEvent) {
    if let Err(tokio::sync::mpsc::error::TrySendError::Full(e)) = tx.try_send(event) {
        let _ = tx.send(e).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_verify_over_the_raw_data() {
        let e = AuditEvent::new("z", "replay_detected", "r1", "deny", "anomaly", serde_json::json!({"jti": "j"}));
        let key = [9u8; 32];
        let f = Frame::seal(&e, Some(&key));
        assert!(f.verify(&key));
        assert!(!f.verify(&[8u8; 32]));
        let mut tampered = f.clone();
        tampered.data = tampered.data.replace("deny", "allow");
        assert!(!tampered.verify(&key));
        let parsed: AuditEvent = serde_json::from_str(&f.data).unwrap();
        assert_eq!(parsed, e);
        assert!(Frame::seal(&e, None).sig.is_none());
    }
}
