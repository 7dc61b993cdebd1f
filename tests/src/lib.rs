//! End-to-end test harness: real Postgres, real Redis, the real `caracal-control-plane` and
//! `caracal-gateway` binaries, and a recording upstream, all on loopback.
//!
//! Postgres: `CARACAL_TEST_DATABASE_URL` (an admin URL; `.ci/run` and `deploy/local/test.sh` set it)
//! or, if unset, a private cluster started in a temp dir. Each stack gets its own database and its
//! own `redis-server`, so tests never share state and a test may stop "its" Redis.
//! Binaries: `CARACAL_BIN_DIR`, else the `target/<profile>` the test binary was built into; run
//! `cargo build --bins` first (the README's test command does).
//! The operator CLIs, run as built binaries: [`cli`].
//! Real MCP servers and the official MCP client for the MCP tests: [`mcp`].

pub mod cli;
pub mod endpoint;
pub mod infra;
pub mod mcp;
pub mod oidc;
pub mod otlp;
pub mod pki;
pub mod procs;
pub mod redis_ha;
pub mod routes;
pub mod stack;
pub mod upstream;

pub use stack::{Stack, StackOptions};
