//! The audit ledger (DESIGN §2, §5, §6): consumes `caracal.audit.events`, files each event in its
//! zone's HMAC chain through an INSERT/SELECT-only role, sweeps the chains for tampering, prunes
//! them with anchors, and serves searches, exports and range verification to the control plane.
//!
//! Keys: producers sign frames with `AUDIT_HMAC_KEY`; the chain is linked with `AUDIT_CHAIN_KEY`,
//! which only the ledger holds, so a producer can forge neither a row nor a link.

pub mod canonical;
pub mod chain;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod retention;
pub mod status;
pub mod store;
pub mod sweep;
pub mod trim;
