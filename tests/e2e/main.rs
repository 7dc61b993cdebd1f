//! End-to-end tests on real processes (see `caracal_e2e` for the harness).

mod admin_api;
mod admin_auth;
mod audit_backlog;
mod audit_emission;
mod audit_ledger;
mod bypass;
mod catalog_changes;
mod control;
mod coordinator;
mod credentials;
mod delegation_limits;
mod denials;
mod governed;
mod key_publication;
mod lifecycle;
mod limits;
mod policy;
mod revocation;
mod step_up;
mod sts_and_keys;
mod sts_instances;
mod sts_review;
mod transport_security;
mod upstream_safety;
mod upstream_timeouts;
mod zone_archive;
