//! Redis stream names (DESIGN §5).

/// Session, agent-session and delegation-edge revocations.
pub const SESSIONS_REVOKE: &str = "caracal.sessions.revoke";
/// A zone's active policy changed.
pub const POLICY_INVALIDATE: &str = "caracal.policy.invalidate";
/// A zone's signing keys changed.
pub const KEYS_INVALIDATE: &str = "caracal.keys.invalidate";
/// Audit frames `{id, data, sig}`.
pub const AUDIT_EVENTS: &str = "caracal.audit.events";
