//! End-to-end tests on real processes (see `caracal_e2e` for the harness).

mod admin_api;
mod audit_emission;
mod audit_ledger;
mod bypass;
mod control;
mod coordinator;
mod credentials;
mod denials;
mod governed;
mod lifecycle;
mod limits;
mod policy;
mod revocation;
mod step_up;
mod sts_and_keys;
mod sts_instances;
mod upstream_safety;
mod upstream_timeouts;
