#!/usr/bin/env bash
# Checks every deploy artifact with the real tool an operator would meet it with (docs/operations.md):
# release supply chain, systemd units, Prometheus rules, the Helm chart, the images and the compose
# stack. Each check exits non-zero on a problem; all run, and the failures are listed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
source deploy/local/lib.sh
ensure_deploy_packages

failed=()
for check in deploy/release/check.sh "deploy/systemd/check.sh --boot" deploy/monitoring/check.sh deploy/helm/check.sh \
  deploy/container/check.sh deploy/compose/check.sh; do
  log "deploy check: $check"
  start=$SECONDS
  if $check; then
    log "deploy check: $check passed in $((SECONDS - start)) s"
  else
    failed+=("$check")
  fi
done
[ ${#failed[@]} -eq 0 ] || die "deploy checks failed: ${failed[*]}"
