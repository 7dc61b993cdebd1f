#!/usr/bin/env bash
# Stops what deploy/local/up.sh started (state in .local/stack is kept; delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh
STACK="$PWD/.local/stack"
# SIGINT stops the services at once; the echo upstream was started in the background of a script,
# where SIGINT is ignored, so it gets SIGTERM.
for p in gateway control-plane echo; do
  sig=INT; [ "$p" = echo ] && sig=TERM
  [ -f "$STACK/$p.pid" ] && kill -"$sig" "$(cat "$STACK/$p.pid")" 2>/dev/null || true
  rm -f "$STACK/$p.pid"
done
stop_redis "${REDIS_PORT:-26379}"
stop_postgres "$STACK/pg"
log "stopped"
