// The request path is one deep async state machine; its layout needs more than the default 128.
#![recursion_limit = "256"]

//! Caracal gateway: the Pingora data plane in front of MCP servers and HTTP APIs.
//!
//! A request is forwarded only after every check of DESIGN §4 passed ([`phases::run_request`]);
//! each refusal is a [`deny::Denial`] with its own status, wire code and metric.

pub mod admin;
pub mod app;
pub mod audit;
pub mod background;
pub mod config;
pub mod ctx;
pub mod deny;
pub mod discovery;
pub mod jwks;
pub mod metrics;
pub mod phases;
pub mod proxy;
pub mod trace;

pub use app::Deps;
