#!/usr/bin/env bash
# Stops what deploy/local/up.sh started, with `caracal run stop` (state in .local/stack is kept;
# delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh
STACK="$PWD/.local/stack"
# The binaries `caracal run start` ran from (recorded in run.env), else whichever build has `caracal`.
BIN="$(sed -n 's/^BIN_DIR=//p' "$STACK/run.env" 2>/dev/null || true)"
for dir in "$BIN" "$PWD/target/${CARACAL_PROFILE:-release}" "$PWD/target/release" "$PWD/target/debug"; do
  [ -n "$dir" ] && [ -x "$dir/caracal" ] && { BIN="$dir"; break; }
done
[ -x "$BIN/caracal" ] || die "no caracal binary: build it (cargo build --bins) or run deploy/local/up.sh"
"$BIN/caracal" run stop --stack-dir "$STACK"
