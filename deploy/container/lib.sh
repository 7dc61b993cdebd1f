# Shared helpers for deploy/container and deploy/compose: logging, and making `podman run` work on
# this machine (or saying precisely why it cannot).
# shellcheck shell=bash

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
need() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null || die "$c is not installed (Debian: see deploy/container/README.md)"; done
}

# State that must not live in the work tree (generated containers.conf, secrets, logs).
CARACAL_CONTAINER_STATE="${CARACAL_CONTAINER_STATE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.local/container}"

# podman_can_run <image>: 0 when `podman run` works here, possibly after writing a containers.conf
# (exported as CONTAINERS_CONF, so podman, podman build and podman-compose all read it). 1 when
# containers cannot run on this machine; the reason is in PODMAN_FAILURE. The probe execs the
# dynamic loader, the one program every glibc image holds (the minimal base has no other).
#
# Two host quirks are handled, each only when the default configuration failed:
# - crun refuses a cgroup v1/v2 "hybrid" host ("cgroups in hybrid mode not supported"): runc does not;
# - without CAP_SYS_RESOURCE, podman's default rlimits (nofile 1048576, nproc above the hard
#   limit) cannot be set ("setrlimit RLIMIT_NOFILE: Operation not permitted"): ask for lower ones.
podman_can_run() {
  local image="$1" err conf nofile nproc
  PODMAN_FAILURE=""
  command -v podman >/dev/null || { PODMAN_FAILURE="podman is not installed"; return 1; }
  err="$(podman_probe "$image")" && return 0
  if [ -n "${CONTAINERS_CONF:-}" ]; then
    PODMAN_FAILURE="podman run --rm --network=none $image /lib64/ld-linux-x86-64.so.2 --version failed with CONTAINERS_CONF=$CONTAINERS_CONF: $err"
    return 1
  fi
  log "podman run with the default configuration failed: $err"
  mkdir -p "$CARACAL_CONTAINER_STATE"
  conf="$CARACAL_CONTAINER_STATE/containers.conf"
  nofile="$(ulimit -Hn)"; [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
  for nproc in 32768 8192 2048; do
    {
      echo '# Written by deploy/container/lib.sh (podman_can_run) for this host; see the comment there.'
      echo '[containers]'
      echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
      echo '[engine]'
      command -v runc >/dev/null && echo 'runtime = "runc"'
      echo 'events_logger = "file"'
      echo 'cgroup_manager = "cgroupfs"'
    } > "$conf"
    if err="$(CONTAINERS_CONF="$conf" podman_probe "$image")"; then
      export CONTAINERS_CONF="$conf"
      log "podman runs containers with $conf (runtime $(command -v runc >/dev/null && echo runc || echo default), nofile=$nofile, nproc=$nproc)"
      return 0
    fi
  done
  PODMAN_FAILURE="podman run --rm --network=none $image /lib64/ld-linux-x86-64.so.2 --version failed, also with $conf: $err"
  command -v runc >/dev/null || PODMAN_FAILURE="$PODMAN_FAILURE (runc is not installed: apt-get install runc)"
  rm -f "$conf"
  return 1
}

podman_probe() {
  timeout 120 podman run --rm --network=none "$1" /lib64/ld-linux-x86-64.so.2 --version 2>&1 >/dev/null | tail -3
  return "${PIPESTATUS[0]}"
}

# skip_unless_podman_runs <image>: exits 0 with the reason when containers cannot run here.
skip_unless_podman_runs() {
  if ! podman_can_run "$1"; then
    printf 'SKIP: podman cannot run containers on this machine: %s\n' "$PODMAN_FAILURE" >&2
    exit 0
  fi
}

# image_size <image>: its size as podman reports it.
image_size() { podman image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1000000 }'; }

# prune_build_leftovers: removes the untagged images our builds leave behind (the strip stage holds
# a full unstripped binary; a rebuild untags the previous image), recognised by their title label,
# so nothing else in the image store is touched.
prune_build_leftovers() {
  local title
  for title in caracal-tools caracal-debian caracal-gateway caracal-control-plane caracal-demo-echo caracal-postgres caracal-redis; do
    podman image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null 2>&1 || true
  done
}
