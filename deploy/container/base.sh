#!/usr/bin/env bash
# Builds the images' base from Debian packages, without any image registry:
#
#   localhost/caracal-base:bookworm    what the two binaries run on: glibc (libc6), libgcc-s1, libstdc++6
#                                      (the gateway's BoringSSL is C++), the CA bundle, /etc/passwd with
#                                      user `caracal` (10001) and the gateway's spool directory. No shell,
#                                      no apt, no dpkg, no coreutils, no curl: nothing to exec but ld.so
#                                      (the HEALTHCHECKs run the binaries' own `health` subcommand).
#   localhost/caracal-debian:bookworm  a plain minbase Debian (shell, apt) for the compose stack's
#                                      Postgres and Redis images (deploy/compose/Containerfile.*).
#   localhost/caracal-tools:bookworm   the same plus binutils: the build stage that strips the
#                                      binaries' debug info (never shipped).
#
# All three come from one `mmdebstrap --variant=minbase` run: the minimal base is assembled by copying
# only the files `dpkg` lists for the kept packages (plus the generated CA bundle), so what is in it
# is exactly what is listed here. Needs root (or sudo), mmdebstrap, podman; the mirror is
# $DEBIAN_MIRROR (deb.debian.org). `base.sh --force` rebuilds even when all three images exist.
set -euo pipefail
cd "$(dirname "$0")"
source ./lib.sh

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
BASE_IMAGE="${CARACAL_BASE_IMAGE:-localhost/caracal-base:bookworm}"
DEBIAN_IMAGE="${CARACAL_DEBIAN_IMAGE:-localhost/caracal-debian:bookworm}"
TOOLS_IMAGE="${CARACAL_TOOLS_IMAGE:-localhost/caracal-tools:bookworm}"
# What the binaries need (`ldd target/*/caracal-*`: libstdc++.so.6, libgcc_s.so.1, libm, libc) and
# the CA bundle for public roots (STS_CA_FILE / REDIS_CA_FILE / sslrootcert name private ones).
KEEP=(libc6 libgcc-s1 libstdc++6 ca-certificates)
APP_UID=10001

if [ "${1:-}" != --force ] && podman image exists "$BASE_IMAGE" && podman image exists "$DEBIAN_IMAGE" \
  && podman image exists "$TOOLS_IMAGE"; then
  log "$BASE_IMAGE, $DEBIAN_IMAGE and $TOOLS_IMAGE exist (base.sh --force rebuilds them)"
  exit 0
fi
need mmdebstrap podman tar ldconfig

work="$(mktemp -d /var/tmp/caracal-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
full="$work/minbase" slim="$work/slim"

log "mmdebstrap $SUITE minbase from $MIRROR"
# The plain Debian rootfs is saved by a hook before binutils goes in; what stays is the tools rootfs.
mmdebstrap --mode=root --variant=minbase --include="$(IFS=,; echo "${KEEP[*]}")" \
  --aptopt='Acquire::Retries "3"' \
  --customize-hook='chroot "$1" apt-get clean' \
  --customize-hook="tar -C \"\$1\" --numeric-owner --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' --exclude='./var/lib/apt/lists/*' --exclude=./etc/resolv.conf --exclude=./etc/hostname -cf $work/debian.tar ." \
  --customize-hook='chroot "$1" apt-get install -y -q --no-install-recommends binutils' \
  --customize-hook='chroot "$1" apt-get clean' \
  "$SUITE" "$full" "$MIRROR" "$MIRROR-security $SUITE-security main" "$MIRROR $SUITE-updates main" >&2

# --- the minimal rootfs ------------------------------------------------------------------------
# Paths as dpkg lists them (/lib/…) are read through the merged-/usr symlinks of the chroot and
# written below the same symlinks in the new root.
mkdir -p "$slim"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,tmp,var/lib/dpkg/status.d}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$slim/$d"; done
chmod 1777 "$slim/tmp"
: > "$work/files"
for p in "${KEEP[@]}"; do
  dpkg-query --admindir="$full/var/lib/dpkg" -L "$p" | while read -r f; do
    [ -d "$full$f" ] && [ ! -L "$full$f" ] && continue
    case "$f" in
      /usr/share/doc/*/copyright) ;;                 # licences stay
      /usr/share/doc/*|/usr/share/lintian/*|/usr/share/gdb/*|/usr/lib/x86_64-linux-gnu/gconv/*|/usr/share/man/*|/usr/share/locale/*|/usr/share/gcc/*|/usr/sbin/*|/usr/bin/*|/usr/share/ca-certificates/mozilla/*) continue ;;
    esac
    printf '%s\n' "${f#/}"
  done >> "$work/files"
  # A status entry per package, so image scanners see what is inside (as distroless does).
  dpkg-query --admindir="$full/var/lib/dpkg" -s "$p" > "$slim/var/lib/dpkg/status.d/$p"
done
# The generated CA bundle (update-ca-certificates ran in the chroot); the per-certificate links are
# not needed by anything that reads the bundle.
echo etc/ssl/certs/ca-certificates.crt >> "$work/files"
echo usr/lib/os-release >> "$work/files"
(cd "$full" && tar --no-recursion -cf - -T "$work/files") | tar -C "$slim" --keep-directory-symlink -xf -
ln -s ../usr/lib/os-release "$slim/etc/os-release"
ldconfig -r "$slim"
cat > "$slim/etc/passwd" <<EOF
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
caracal:x:$APP_UID:$APP_UID:caracal:/nonexistent:/usr/sbin/nologin
EOF
cat > "$slim/etc/group" <<EOF
root:x:0:
nogroup:x:65534:
caracal:x:$APP_UID:
EOF
cp "$full/etc/nsswitch.conf" "$slim/etc/"
# The gateway's AUDIT_REPLAY_DIR default, owned by the runtime user: a named volume mounted here
# starts with this owner and mode.
install -d -o "$APP_UID" -g "$APP_UID" -m 0700 "$slim/var/lib/caracal" "$slim/var/lib/caracal/audit-replay"

for forbidden in bin/sh bin/bash usr/bin/dpkg usr/bin/apt usr/bin/env usr/bin/curl; do
  [ ! -e "$slim/$forbidden" ] || die "the minimal base unexpectedly holds /$forbidden"
done

created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "importing $BASE_IMAGE"
tar -C "$slim" --numeric-owner -cf - . | podman import \
  --change "USER $APP_UID:$APP_UID" \
  --change 'ENV PATH=/usr/local/bin:/usr/bin' --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change "LABEL org.opencontainers.image.title=caracal-base org.opencontainers.image.created=$created org.opencontainers.image.base.name=debian:$SUITE org.opencontainers.image.description=glibc+libstdc++ runtime base without shell or package manager" \
  - "$BASE_IMAGE" >/dev/null

log "importing $DEBIAN_IMAGE"
podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.opencontainers.image.title=caracal-debian org.opencontainers.image.created=$created org.opencontainers.image.base.name=debian:$SUITE" \
  "$work/debian.tar" "$DEBIAN_IMAGE" >/dev/null

log "importing $TOOLS_IMAGE"
rm -rf "$full/var/lib/apt/lists/"*
tar -C "$full" --numeric-owner -cf - . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.opencontainers.image.title=caracal-tools org.opencontainers.image.created=$created org.opencontainers.image.base.name=debian:$SUITE" \
  - "$TOOLS_IMAGE" >/dev/null
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "caracal-(base|debian|tools):" >&2
