//! Evidence: every allow and every deny of an invoke becomes a signed audit frame
//! (`event_type: control.invoke`) on `caracal.audit.events`, `sig` = HMAC(`AUDIT_HMAC_KEY`, data).
//!
//! Metadata: `subject`, `jti`, `client_id`, `command`, `subcommand`, `reason`, `code`,
//! `authorized_by`, `token_fp` — never a token, a secret or a flag value.
//!
//! An allow is recorded *before* dispatch and must be durable ([`crate::evidence::Delivery`]):
//! `XADD`, or when Redis refuses, a row in the transactional outbox that the relay publishes later (as the original fell back to
//! its outbox). If neither takes it, the invoke answers 500 `audit_unavailable` and nothing is
//! dispatched, so no change happens without evidence (the original dispatched first and could
//! answer `audit_unavailable` after the change was made). A deny that cannot be recorded is
//! logged and counted, never turned into another answer.

use caracal_shared::audit::AuditEvent;
use serde_json::json;

use crate::control::auth::Principal;

/// Event type of every Control frame.
pub const EVENT_TYPE: &str = "control.invoke";

/// What is known about an invoke so far; grows as the pipeline advances.
#[derive(Debug, Default)]
pub struct Trail {
    pub request_id: String,
    pub principal: Option<Principal>,
    /// Catalog-like names only (see [`crate::control::body::label`]).
    pub command: Option<String>,
    pub subcommand: Option<String>,
    pub authorized_by: Option<String>,
}

impl Trail {
    /// The audit event for `decision` (`allow` | `deny`) with the wire `code` and `reason`.
    pub fn event(&self, decision: &str, code: &str, reason: &str) -> AuditEvent {
        let p = self.principal.as_ref();
        let meta = json!({
            "subject": p.map(|p| p.claims.sub.as_str()),
            "jti": p.map(|p| p.claims.jti.as_str()),
            "client_id": p.map(|p| p.claims.client_id.as_str()),
            "token_fp": p.map(|p| p.fingerprint.as_str()),
            "command": self.command,
            "subcommand": self.subcommand,
            "authorized_by": self.authorized_by,
            "code": code,
            "reason": reason,
        });
        // Before the token is verified there is no zone worth filing evidence under: an
        // unverified claim must not write into a zone's ledger. (Such denies are not filed at
        // all, only counted: `Control::conclude`.)
        let zone = p.map_or("", |p| p.zone());
        AuditEvent::new(zone, EVENT_TYPE, &self.request_id, decision, "complete", meta)
    }
}

#[cfg(test)]
mod tests {
    use caracal_shared::audit::Frame;

    use super::*;

    #[test]
    fn evidence_names_the_caller_and_command_but_no_values() {
        let trail =
            Trail { request_id: "rid".into(), command: Some("resource".into()), subcommand: Some("create".into()), ..Default::default() };
        let e = trail.event("deny", "unauthorized", "token expired");
        assert_eq!((e.event_type.as_str(), e.decision.as_str(), e.zone_id.as_str()), (EVENT_TYPE, "deny", ""));
        assert_eq!(e.metadata_json["command"], "resource");
        assert_eq!(e.metadata_json["reason"], "token expired");
        assert!(e.metadata_json["subject"].is_null(), "no verified subject yet");
        let key = [7u8; 32];
        assert!(Frame::seal(&e, Some(&key)).verify(&key));
    }
}
