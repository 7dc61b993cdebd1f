#!/usr/bin/env bash
# The release build: both binaries from Cargo.lock exactly (--locked), with the toolchain named in
# the manifest, paths stripped of the build machine's (so the same commit built in another
# directory gives the same bytes), SOURCE_DATE_EPOCH from the commit; then SHA-256 sums and the
# SBOMs. Output: target/dist/caracal-<version>-<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh
ensure_packages

[ -z "$(git status --porcelain --untracked-files=no)" ] || die "uncommitted changes: a release is built from a commit"
target=x86_64-unknown-linux-gnu
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
commit="$(git rev-parse --short=12 HEAD)"
export SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)"
# Rust paths (the workspace, the registry) and C paths (BoringSSL, aws-lc, zstd built by cmake/cc).
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export RUSTFLAGS="--remap-path-prefix=$PWD=/caracal --remap-path-prefix=$cargo_home=/cargo ${RUSTFLAGS:-}"
export CFLAGS="-ffile-prefix-map=$PWD=/caracal -ffile-prefix-map=$cargo_home=/cargo ${CFLAGS:-}"
export CXXFLAGS="$CFLAGS"
log "building caracal $version ($commit) for $target"
# The `production` profile (Cargo.toml): release with fat LTO and one codegen unit.
cargo build --profile production --locked --bins -p caracal-gateway -p caracal-control-plane --target "$target"

dist="target/dist/caracal-$version-$target"
rm -rf "$dist" && mkdir -p "$dist"
cp "target/$target/production/caracal-gateway" "target/$target/production/caracal-control-plane" "$dist/"
deploy/release/check.sh
cp target/sbom/*.cdx.json "$dist/"
(cd "$dist" && sha256sum caracal-* > SHA256SUMS)
printf 'version=%s\ncommit=%s\nrustc=%s\nsource_date_epoch=%s\n' "$version" "$(git rev-parse HEAD)" "$(rustc --version)" "$SOURCE_DATE_EPOCH" > "$dist/BUILDINFO"
cat "$dist/SHA256SUMS"
log "release in $dist"
