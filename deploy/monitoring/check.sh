#!/usr/bin/env bash
# Checks the Prometheus rules and the Grafana dashboard; exits non-zero on any problem. Installs nothing.
#  1. promtool check rules: syntax, PromQL, templates.
#  2. promtool test rules: every alert fires in one case and stays silent in another.
#  3. The dashboard is JSON, and check_names.py finds every metric the dashboard and the rules name in
#     the Rust sources (promtool cannot: its tests invent their own series); promtool parses every
#     dashboard query.
# Needs promtool (Debian 12: apt-get install -y --no-install-recommends prometheus; it has no
# promtool-only package) and python3 with PyYAML (python3-yaml).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
rules="$here/prometheus/caracal-rules.yml"
tests="$here/prometheus/caracal-rules.test.yml"
dashboard="$here/grafana/caracal.json"

fail() { echo "FAIL: $*" >&2; exit 1; }
command -v promtool >/dev/null \
  || fail "promtool is missing: apt-get install -y --no-install-recommends prometheus (Debian 12), or a Prometheus release tarball"
command -v python3 >/dev/null || fail "python3 is missing"
python3 -c 'import yaml' 2>/dev/null || fail "PyYAML is missing: apt-get install -y python3-yaml"

promtool check rules "$rules" || fail "promtool check rules"
# Run from the test file's directory: rule_files are relative to it.
out="$(cd "$(dirname "$tests")" && promtool test rules "$(basename "$tests")" 2>&1)" || fail "promtool test rules:"$'\n'"$out"
echo "$out"
alerts="$(grep -c '^ *- alert:' "$rules")"
cases="$(grep -c '^ *- name:' "$tests")"
# Every alert must fire in some case and stay silent in another (an untested alert is a FAIL).
for a in $(sed -n 's/^ *- alert: *//p' "$rules"); do
  grep -A1 "alertname: $a\$" "$tests" | grep -q 'exp_alerts:$' || fail "alert $a never fires in $tests"
  grep -A1 "alertname: $a\$" "$tests" | grep -q 'exp_alerts: \[\]$' || fail "alert $a has no case where it must stay silent"
done
echo "ok   $alerts alerts, each firing in one and silent in another of $cases test cases"

python3 -m json.tool "$dashboard" >/dev/null || fail "$dashboard is not valid JSON"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 "$here/check_names.py" "$repo" "$rules" "$dashboard" "$tmp/dashboard-queries.yml"
# The dashboard's PromQL, parsed by promtool as recording rules (Grafana variables replaced).
promtool check rules "$tmp/dashboard-queries.yml" >/dev/null || fail "a dashboard query is not valid PromQL (above)"
echo "ok   every dashboard query parses (promtool check rules)"
echo "all monitoring checks passed"
