#!/usr/bin/env bash
# Supply-chain checks of Cargo.lock, each by its real tool, and the SBOM:
#   cargo deny   licences, bans, sources and advisories (deny.toml)
#   cargo audit  advisories again, as the RustSec client reports them
#   cargo cyclonedx  a CycloneDX 1.5 JSON SBOM per binary we ship, into target/sbom/
# The advisory database is fetched from GitHub when that is reachable; otherwise (these build
# machines reach only package registries) the dated snapshot in deploy/release/advisory-db/ is used
# and its age printed. Refresh it with deploy/release/refresh-advisory-db.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh

TOOLS="$PWD/.local/cargo-tools"
# Pinned: a check whose tool moves under it is not reproducible.
ensure_cargo_tool() {
  local crate="$1" version="$2"
  if ! cargo install --list --root "$TOOLS" 2>/dev/null | grep -qx "$crate v$version:"; then
    log "installing $crate $version into $TOOLS"
    CARGO_TARGET_DIR="$TOOLS/target" cargo install --locked --quiet --root "$TOOLS" "$crate@$version"
  fi
}
ensure_cargo_tool cargo-deny 0.20.2
ensure_cargo_tool cargo-audit 0.22.2
ensure_cargo_tool cargo-cyclonedx 0.5.9
export PATH="$TOOLS/bin:$PATH"

# cargo-deny keeps each database under db-path in a directory named for its URL.
DB="$PWD/.local/advisory-dbs/advisory-db-3157b0e258782691"
SNAPSHOT="$PWD/deploy/release/advisory-db"
rm -rf "$DB.new"
if timeout 30 git clone -q --depth 1 https://github.com/rustsec/advisory-db "$DB.new" 2>/dev/null; then
  log "advisory database: fetched now ($(git -C "$DB.new" log -1 --format=%cI))"
else
  # A git repository whose commit carries the snapshot's own date, so both tools see its real age.
  date="$(sed -n 's/^date=//p' "$SNAPSHOT/SNAPSHOT")"
  mkdir -p "$DB.new"
  cp -r "$SNAPSHOT/." "$DB.new/"
  (cd "$DB.new" && git init -q && git add -A \
    && GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" git -c user.name=snapshot -c user.email=snapshot@localhost commit -qm snapshot)
  age=$(( ($(date +%s) - $(date -d "$date" +%s)) / 86400 ))
  log "advisory database: GitHub unreachable, snapshot $(sed -n 's/^commit=//p' "$SNAPSHOT/SNAPSHOT" | cut -c1-12) of $date ($age days old)"
fi
rm -rf "$DB" && mv "$DB.new" "$DB"

log "cargo deny"
cargo deny --offline check

log "cargo audit"
# The one accepted notice is deny.toml's, with its reason.
cargo audit --no-fetch --db "$DB" --file Cargo.lock --deny warnings --ignore RUSTSEC-2024-0388

log "SBOM"
out="$PWD/target/sbom"
rm -rf "$out" && mkdir -p "$out"
# One SBOM per shipped binary (written beside each crate's manifest; collected, the rest removed).
cargo cyclonedx --format json --spec-version 1.5 --target x86_64-unknown-linux-gnu --describe binaries -q
for bin in caracal-gateway caracal-control-plane caracal-admin caracal; do
  mv "$(find . -path ./target -prune -o -path ./.local -prune -o -name "${bin}_bin.cdx.json" -print | head -1)" "$out/$bin.cdx.json"
done
find . -path ./target -prune -o -path ./.local -prune -o -name '*_bin.cdx.json' -print0 | xargs -0 rm -f
python3 - "$out" <<'PY'
import json, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.cdx.json")):
    bom = json.loads(f.read_text())
    comps = bom.get("components", [])
    assert bom["bomFormat"] == "CycloneDX" and comps, f"{f}: not a CycloneDX SBOM with components"
    missing = [c["name"] for c in comps if not c.get("purl") or not c.get("licenses")]
    assert not missing, f"{f}: components without purl or licence: {missing[:10]}"
    print(f"{f.name}: {len(comps)} components, each with purl and licence")
PY
