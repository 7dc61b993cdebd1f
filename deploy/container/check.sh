#!/usr/bin/env bash
# Builds the base (base.sh) and the two product images, then smoke-tests them:
#   - metadata: numeric non-root USER, STOPSIGNAL, EXPOSE, OCI labels, the spool VOLUME, and a
#     HEALTHCHECK that execs the binary's own probe (`CMD ["/usr/local/bin/caracal-<name>", "health"]`);
#   - contents: no shell, no apt, no dpkg, no curl in either image;
#   - each binary starts on the base (its libraries resolve), prints its version, and refuses an
#     empty configuration with exit code 64, on a read-only root filesystem;
#   - the process runs as uid 10001, cannot write the root filesystem, can write the spool volume
#     (checked with `cat`/`touch` from the tools image, bind-mounted: the images have no such tools);
#   - a gateway (dev mode, TLS with a throwaway certificate, read-only root, no capabilities, no
#     network) passes `podman healthcheck run`; once SIGTERM has closed its listener (the process
#     still draining) the health check fails; it then exits 0.
#
#   deploy/container/check.sh                    # target/debug binaries (built if missing)
#   CARACAL_PROFILE=release deploy/container/check.sh
#
# Exits non-zero on any failure; exits 0 with "SKIP: …" only when podman cannot run a container on
# this machine (detected by running one; the images are still built). CARACAL_REUSE_BASE=1 keeps
# existing base images instead of rebuilding them.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/container/lib.sh

PROFILE="${CARACAL_PROFILE:-debug}"
TAG="${CARACAL_TAG:-dev}"
BASE_IMAGE=localhost/caracal-base:bookworm
need podman mmdebstrap openssl
failures=0
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }
ok() { printf 'ok: %s\n' "$*" >&2; }

if [ "${CARACAL_REUSE_BASE:-0}" = 1 ]; then deploy/container/base.sh; else deploy/container/base.sh --force; fi

for bin in caracal-gateway caracal-control-plane; do
  if [ ! -x "target/$PROFILE/$bin" ]; then
    [ "$PROFILE" = debug ] || die "target/$PROFILE/$bin is missing: cargo build --release --bins --locked"
    log "target/debug/$bin is missing: cargo build --bins --locked"
    cargo build --bins --locked
  fi
done

# Detect before building: podman_can_run may write the containers.conf the builds should use too.
can_run=1
podman_can_run "$BASE_IMAGE" || can_run=0

revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
for svc in gateway control-plane; do
  log "building localhost/caracal-$svc:$TAG from target/$PROFILE"
  if ! out="$(podman build --quiet --format docker -f "deploy/container/Containerfile.$svc" \
    --build-arg PROFILE="$PROFILE" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
    -t "localhost/caracal-$svc:$TAG" . 2>&1)"; then
    # The strip stage RUNs a command: a host that cannot run containers cannot build it either.
    [ "$can_run" = 1 ] || { printf 'SKIP: podman cannot run containers on this machine (%s), so the build stage that strips the binary fails too: %s\n' "$PODMAN_FAILURE" "$(tail -3 <<< "$out")" >&2; exit 0; }
    die "podman build of Containerfile.$svc failed: $(tail -5 <<< "$out")"
  fi
  log "localhost/caracal-$svc:$TAG: $(image_size "localhost/caracal-$svc:$TAG")"
done

prune_build_leftovers

# --- metadata and contents (no container needs to run) ------------------------------------------
check_metadata() { # <image> <port> <needs volume?>
  local image="$1" port="$2" volume="$3" got label
  got="$(podman image inspect --format '{{.Config.User}}|{{.Config.StopSignal}}|{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}|{{range $v, $_ := .Config.Volumes}}{{$v}} {{end}}' "$image")"
  IFS='|' read -r user stop ports volumes <<< "$got"
  [ "$user" = 10001:10001 ] && ok "$image: USER $user" || fail "$image: USER is '$user', expected 10001:10001"
  [ "$stop" = SIGTERM ] && ok "$image: STOPSIGNAL $stop" || fail "$image: STOPSIGNAL is '$stop'"
  [ "${ports% }" = "$port/tcp" ] && ok "$image: EXPOSE $port" || fail "$image: exposes '$ports', expected $port/tcp"
  if [ "$volume" = yes ]; then
    [ "${volumes% }" = /var/lib/caracal/audit-replay ] && ok "$image: VOLUME $volumes" || fail "$image: volumes '$volumes'"
  fi
  local name="${image##*/}"; name="${name%%:*}"
  got="$(podman image inspect --format '{{if .Config.Healthcheck}}{{json .Config.Healthcheck.Test}}{{end}}' "$image")"
  want="[\"CMD\",\"/usr/local/bin/$name\",\"health\"]"
  if [ "$got" = "$want" ]; then
    ok "$image: HEALTHCHECK $got (exec form, the binary's own probe)"
  else
    fail "$image: HEALTHCHECK is '$got', expected $want (built without --format docker?)"
  fi
  for label in title description version revision created licenses base.name; do
    [ -n "$(podman image inspect --format "{{index .Labels \"org.opencontainers.image.$label\"}}" "$image")" ] \
      || fail "$image: label org.opencontainers.image.$label is empty"
  done
  local ctr listing bad
  ctr="$(podman create --no-healthcheck "$image")"
  listing="$(podman export "$ctr" | tar -t)"
  podman rm -v "$ctr" >/dev/null
  bad="$(grep -E '^(\./)?((usr/)?s?bin/(sh|bash|dash|apt|apt-get|dpkg|curl|wget)$|(usr/)?lib/.*/libcurl)' <<< "$listing" || true)"
  if [ -n "$bad" ]; then
    fail "$image holds a shell, package manager or HTTP client: $(tr '\n' ' ' <<< "$bad")"
  else
    ok "$image: no shell, apt, dpkg or curl"
  fi
}
check_metadata "localhost/caracal-gateway:$TAG" 8081 yes
check_metadata "localhost/caracal-control-plane:$TAG" 8080 no

if [ "$can_run" = 0 ]; then
  [ "$failures" = 0 ] || die "$failures check(s) failed"
  printf 'SKIP: images built, but podman cannot run containers on this machine: %s\n' "$PODMAN_FAILURE" >&2
  exit 0
fi

# --- running them -----------------------------------------------------------------------------
# --no-healthcheck where nothing is served (and podman then has no timer to schedule).
RUN=(podman run --rm --read-only --network=none --cap-drop=ALL --security-opt=no-new-privileges)
tmp="$(mktemp -d)"
ctr=""
cleanup() { [ -z "$ctr" ] || podman rm -f -v -t 0 "$ctr" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
# The images have nothing to read or write a file with: borrow cat and touch (libc only) from the
# tools image, same Debian release and glibc as the base, and bind-mount them read-only.
mkdir "$tmp/tools"
tools_ctr="$(podman create localhost/caracal-tools:bookworm)"
podman cp "$tools_ctr:/usr/bin/cat" "$tmp/tools/cat" && podman cp "$tools_ctr:/usr/bin/touch" "$tmp/tools/touch"
podman rm "$tools_ctr" >/dev/null
TOOLS=(-v "$tmp/tools:/opt/check:ro")
for svc in gateway control-plane; do
  image="localhost/caracal-$svc:$TAG"
  set +e
  out="$("${RUN[@]}" --no-healthcheck "$image" 2>&1)"; rc=$?
  set -e
  if [ "$rc" = 64 ] && grep -q "caracal-$svc: refusing to start" <<< "$out"; then
    ok "$image: starts read-only and refuses an empty production configuration (exit 64)"
  else
    fail "$image: expected exit 64 and the configuration report, got $rc: $(tail -3 <<< "$out")"
  fi
  version="$("${RUN[@]}" --no-healthcheck "$image" --version 2>/dev/null || true)"
  [ "$version" = "caracal-$svc $(podman image inspect --format '{{index .Labels "org.opencontainers.image.version"}}' "$image")" ] \
    && ok "$image: --version prints '$version'" || fail "$image: --version printed '$version'"
  # A process started as the image's user reads its own /proc status.
  uid="$("${RUN[@]}" --no-healthcheck "${TOOLS[@]}" --entrypoint /opt/check/cat "$image" /proc/self/status | awk '/^Uid:/ { print $2 }' || true)"
  [ "$uid" = 10001 ] && ok "$image: runs as uid $uid" || fail "$image: runs as uid '$uid'"
  # As root, so that only --read-only (not file permissions) can stop the write: the same write
  # must succeed without it.
  write=(--no-healthcheck --user 0 "${TOOLS[@]}" --entrypoint /opt/check/touch "$image" /usr/local/bin/written)
  if ! podman run --rm --network=none "${write[@]}" 2>/dev/null; then
    fail "$image: the control write (root, writable root filesystem) failed"
  elif "${RUN[@]}" "${write[@]}" 2>/dev/null; then
    fail "$image: the root filesystem is writable with --read-only"
  else
    ok "$image: runs with a read-only root filesystem (a write as root is refused)"
  fi
done
if "${RUN[@]}" --no-healthcheck "${TOOLS[@]}" --entrypoint /opt/check/touch "localhost/caracal-gateway:$TAG" \
  /var/lib/caracal/audit-replay/probe; then
  ok "gateway: the spool volume is writable by uid 10001 on a read-only root"
else
  fail "gateway: cannot write /var/lib/caracal/audit-replay"
fi

# A live gateway: dev mode (no STS, Redis or Postgres here), TLS so that the image's HEALTHCHECK
# probes https on 127.0.0.1:8081 as in production. SHUTDOWN_GRACE_SECONDS=5: after SIGTERM the
# listener is closed at once while the process drains for 5 s, which is when the probe must fail.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=gateway \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
chmod 0444 "$tmp/cert.pem"; chown 10001:10001 "$tmp/key.pem"; chmod 0400 "$tmp/key.pem"
ctr="$(podman run -d --read-only --network=none --cap-drop=ALL --security-opt=no-new-privileges \
  -v "$tmp/cert.pem:/run/secrets/tls.pem:ro" -v "$tmp/key.pem:/run/secrets/tls.key:ro" \
  -e CARACAL_MODE=dev -e STS_URL=http://127.0.0.1:1 -e GATEWAY_STS_HMAC_KEY="$(openssl rand -hex 32)" \
  -e REDIS_URL=redis://127.0.0.1:1 -e TLS_CERT_FILE=/run/secrets/tls.pem -e TLS_KEY_FILE=/run/secrets/tls.key \
  -e SHUTDOWN_GRACE_SECONDS=5 "localhost/caracal-gateway:$TAG" 2>/dev/null)"
healthy=0
for _ in $(seq 60); do
  if podman healthcheck run "$ctr" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.5
done
if [ "$healthy" = 1 ]; then
  ok "gateway: podman healthcheck run passes (caracal-gateway health → https://127.0.0.1:8081/health)"
else
  fail "gateway: HEALTHCHECK never passed; logs: $(podman logs --tail 5 "$ctr" 2>&1)"
fi
user="$(podman top "$ctr" user huser 2>/dev/null | tail -1 | tr -s ' ' || true)"
[ "$user" = "caracal 10001" ] && ok "gateway: process user (in / on the host): $user" || fail "gateway: podman top says '$user'"
[ "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$ctr")" = true ] || fail "gateway: root filesystem not read-only"
# Stop the listener without ending the container: the image's STOPSIGNAL (SIGTERM) starts the drain,
# the process stays up for SHUTDOWN_GRACE_SECONDS, and the health check has to notice.
start=$(date +%s)
podman kill --signal "$(podman inspect --format '{{.Config.StopSignal}}' "$ctr")" "$ctr" >/dev/null
sleep 1
if [ "$(podman inspect --format '{{.State.Running}}' "$ctr")" != true ]; then
  fail "gateway: exited within 1 s of SIGTERM (SHUTDOWN_GRACE_SECONDS=5), nothing left to probe"
elif out="$(podman healthcheck run "$ctr" 2>/dev/null)"; then
  fail "gateway: podman healthcheck run passes with the listener closed: $out"
else
  ok "gateway: podman healthcheck run fails once SIGTERM closed the listener (process still draining): $out"
fi
timeout 60 podman wait "$ctr" >/dev/null 2>&1 || true
code="$(podman inspect --format '{{.State.ExitCode}}' "$ctr")"
took=$(( $(date +%s) - start ))
if [ "$code" = 0 ] && [ "$took" -lt 25 ]; then
  ok "gateway: SIGTERM drained and exited 0 in ${took}s (SHUTDOWN_GRACE_SECONDS=5)"
else
  fail "gateway: after SIGTERM exit code $code in ${took}s"
fi

[ "$failures" = 0 ] || die "$failures check(s) failed"
log "container checks passed: gateway $(image_size "localhost/caracal-gateway:$TAG"), control plane $(image_size "localhost/caracal-control-plane:$TAG"), base $(image_size "$BASE_IMAGE")"
