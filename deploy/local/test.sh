#!/usr/bin/env bash
# Runs the whole test suite: lints, unit tests and end-to-end tests on real Postgres and Redis with
# the real binaries. Uses CARACAL_TEST_DATABASE_URL if set; otherwise starts a private PostgreSQL
# on 127.0.0.1:${CARACAL_TEST_PG_PORT:-25433} for the run (the e2e harness starts one redis-server
# per test stack itself). The published Python SDK the tests drive is installed into .local/sdk-venv,
# the OpenID provider of the federation test into .local/oidc-provider, the MCP tests' reference server
# into .local/mcp-node and the official MCP Python SDK into .local/mcp-venv. Then deploy/check.sh
# checks the deploy artifacts with their real tools (CARACAL_SKIP_DEPLOY=1 skips that).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh

ensure_packages

if [ -z "${CARACAL_TEST_DATABASE_URL:-}" ]; then
  PG_DIR="$PWD/.local/test-pg"
  PG_PORT="${CARACAL_TEST_PG_PORT:-25433}"
  log "starting PostgreSQL for the tests on 127.0.0.1:$PG_PORT"
  start_postgres "$PG_DIR" "$PG_PORT"
  trap 'stop_postgres "$PG_DIR"' EXIT
  export CARACAL_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi

CARACAL_SDK_PYTHON="$(ensure_sdk_venv)"
export CARACAL_SDK_PYTHON
CARACAL_OIDC_PROVIDER_DIR="$(ensure_oidc_provider)"
export CARACAL_OIDC_PROVIDER_DIR
CARACAL_MCP_NODE_DIR="$(ensure_mcp_node)"
export CARACAL_MCP_NODE_DIR
CARACAL_MCP_PYTHON="$(ensure_mcp_venv)"
export CARACAL_MCP_PYTHON

log "building"
cargo build --workspace --bins --locked

if [ "${CARACAL_SKIP_LINT:-}" != 1 ]; then
  log "clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

log "tests"
failed=()
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast || failed+=(tests)
else
  cargo test --workspace --locked --no-fail-fast || failed+=(tests)
fi

# The deploy artifacts, each by its real tool (docs/operations.md); CARACAL_SKIP_DEPLOY=1 skips them.
if [ "${CARACAL_SKIP_DEPLOY:-}" != 1 ]; then
  log "deploy artifacts"
  deploy/check.sh || failed+=(deploy)
fi
[ ${#failed[@]} -eq 0 ] || die "failed: ${failed[*]}"
