#!/usr/bin/env bash
# Replaces the advisory-database snapshot (deploy/release/advisory-db/) with the newest RustSec
# database: from a checkout given as $1, else cloned from GitHub. The database is CC0-1.0 data.
set -euo pipefail
cd "$(dirname "$0")/../.."
src="${1:-}"
if [ -z "$src" ]; then
  src="$(mktemp -d)/advisory-db"
  git clone -q --depth 1 https://github.com/rustsec/advisory-db "$src"
fi
dest=deploy/release/advisory-db
rm -rf "$dest" && mkdir -p "$dest"
git -C "$src" archive HEAD crates rust LICENSE.txt | tar -x -C "$dest"
printf 'commit=%s\ndate=%s\nsource=https://github.com/rustsec/advisory-db\n' \
  "$(git -C "$src" log -1 --format=%H)" "$(git -C "$src" log -1 --format=%cI)" > "$dest/SNAPSHOT"
cat "$dest/SNAPSHOT"
