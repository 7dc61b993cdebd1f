//! The Coordinator: agent sessions and the delegation graph (no `/v1` prefix, as the original's
//! SDKs expect).
//!
//! Callers are runtimes presenting a session mandate with the `agent:lifecycle` scope (the
//! application acting for itself) or operators with an admin token. Every change that takes
//! authority away — terminating a session, revoking an edge, revoking the root session — runs the
//! [`cascade`] in one transaction with its outbox messages, so every verifier hears of it.

pub mod agents;
pub mod auth;
pub mod cascade;
pub mod delegations;
pub mod idempotency;
pub mod inherit;

use axum::Router;

use crate::state::AppState;

/// Coordinator routes.
pub fn router() -> Router<AppState> {
    Router::new().merge(agents::router()).merge(delegations::router())
}
