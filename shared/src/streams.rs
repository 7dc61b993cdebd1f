//! Redis stream names (DESIGN §5).

/// Session, agent-session and delegation-edge revocations.
pub const SESSIONS_REVOKE: &str = "caracal.sessions.revoke";
/// A zone's active policy changed.
pub const POLICY_INVALIDATE: &str = "caracal.policy.invalidate";
/// An application or resource the STS caches changed (`{zone_id, kind, id}`).
pub const CATALOG_INVALIDATE: &str = "caracal.catalog.invalidate";
/// A zone's signing keys changed.
pub const KEYS_INVALIDATE: &str = "caracal.keys.invalidate";
/// Audit frames `{id, data, sig}`.
pub const AUDIT_EVENTS: &str = "caracal.audit.events";
/// Delegation graph epochs `{zone_id, epoch}`, bumped on every revocation in the graph.
pub const DELEGATIONS_INVALIDATE: &str = "caracal.delegations.invalidate";
