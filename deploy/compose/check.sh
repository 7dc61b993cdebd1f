#!/usr/bin/env bash
# Brings the compose stack up with podman-compose (fresh secrets, fresh volumes, its own project
# name), checks it, runs the demo flow (demo.sh: bootstrap → zone → application → resource → policy
# → session → mandate → one governed request through the gateway over TLS, which must answer 200,
# and its replay, which must answer 401), waits for the request's evidence in the audit ledger and
# verifies the zone's chain, stops the gateway with SIGTERM (exit 0 expected), then tears it all down.
#
#   deploy/compose/check.sh                      # target/debug binaries (built if missing)
#   CARACAL_PROFILE=release deploy/compose/check.sh
#
# Exits non-zero on any failure (printing the services' logs); exits 0 with "SKIP: …" only when
# podman cannot run a container on this machine (detected by running one). CARACAL_KEEP=1 leaves the
# stack running for a look around (tear it down with the command it prints).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/container/lib.sh

PROFILE="${CARACAL_PROFILE:-debug}"
PROJECT="${CARACAL_COMPOSE_PROJECT:-caracal-check}"
export CARACAL_PROFILE="$PROFILE" CARACAL_TAG="${CARACAL_TAG:-dev}"
export CARACAL_CP_PORT="${CARACAL_CP_PORT:-28080}" CARACAL_GW_PORT="${CARACAL_GW_PORT:-28443}"
export CARACAL_SHUTDOWN_GRACE_SECONDS="${CARACAL_SHUTDOWN_GRACE_SECONDS:-5}"
# podman-compose builds with plain `podman build`: the docker format keeps the HEALTHCHECKs.
export BUILDAH_FORMAT=docker
STATE="$CARACAL_CONTAINER_STATE/$PROJECT"
export CARACAL_SECRETS_DIR="$STATE/secrets" CARACAL_DEMO_DIR="$STATE/demo"
COMPOSE=(podman-compose -p "$PROJECT" -f deploy/compose/compose.yaml)
need podman podman-compose openssl curl

deploy/container/base.sh
skip_unless_podman_runs localhost/caracal-base:bookworm

for bin in caracal-gateway caracal-control-plane caracal-bench; do
  if [ ! -x "target/$PROFILE/$bin" ]; then
    [ "$PROFILE" = debug ] || die "target/$PROFILE/$bin is missing: cargo build --release --bins --locked"
    log "target/debug/$bin is missing: cargo build --bins --locked"
    cargo build --bins --locked
  fi
done
for port in "$CARACAL_CP_PORT" "$CARACAL_GW_PORT"; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "port $port is in use (set CARACAL_CP_PORT / CARACAL_GW_PORT)"
done

teardown() {
  log "tearing down $PROJECT"
  "${COMPOSE[@]}" down -v -t 10 >"$STATE/down.log" 2>&1 || cat "$STATE/down.log" >&2
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
}
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    for svc in postgres redis control-plane gateway echo; do
      printf '\n----- %s (last 25 lines) -----\n' "$svc" >&2
      podman logs --tail 25 "${PROJECT}_${svc}_1" 2>&1 | cut -c1-400 >&2 || true
    done
  fi
  if [ "${CARACAL_KEEP:-0}" = 1 ]; then
    log "kept running; tear down with: CONTAINERS_CONF=${CONTAINERS_CONF:-} ${COMPOSE[*]} down -v -t 40"
  else
    teardown
  fi
  exit "$rc"
}

mkdir -p "$STATE"
# A leftover from an interrupted run would hold the names and volumes.
teardown
rm -rf "$CARACAL_SECRETS_DIR" "$CARACAL_DEMO_DIR"
trap on_exit EXIT
deploy/compose/secrets.sh

log "building the images (profile $PROFILE)"
"${COMPOSE[@]}" build >"$STATE/build.log" 2>&1 || { tail -30 "$STATE/build.log" >&2; die "podman-compose build failed"; }
prune_build_leftovers
for image in caracal-postgres:15 caracal-redis:7 "caracal-control-plane:$CARACAL_TAG" "caracal-gateway:$CARACAL_TAG" "caracal-demo-echo:$CARACAL_TAG"; do
  log "  localhost/$image: $(image_size "localhost/$image")"
done

log "podman-compose up -d ($PROJECT)"
"${COMPOSE[@]}" up -d >"$STATE/up.log" 2>&1 || { tail -30 "$STATE/up.log" >&2; die "podman-compose up failed"; }

CA=(--cacert "$CARACAL_SECRETS_DIR/ca.pem")
wait_ready() { # <name> <url> <seconds>
  local i
  for i in $(seq "$(( $3 * 2 ))"); do
    curl -fsS "${CA[@]}" -o /dev/null "$2" 2>/dev/null && { log "$1 ready ($2) after ~$(( i / 2 ))s"; return 0; }
    sleep 0.5
  done
  die "$1 not ready at $2 after $3 s"
}
wait_ready "control plane" "https://localhost:$CARACAL_CP_PORT/ready" 180
wait_ready gateway "https://localhost:$CARACAL_GW_PORT/ready" 120

log "checking the containers"
for svc in postgres redis control-plane gateway echo; do
  ctr="${PROJECT}_${svc}_1"
  [ "$(podman inspect --format '{{.State.Running}}' "$ctr")" = true ] || die "$ctr is not running"
  [ "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$ctr")" = true ] || die "$ctr: root filesystem is writable"
  user="$(podman inspect --format '{{.Config.User}}' "$ctr")"
  case "$user" in 0|0:*|root|root:*|"") die "$ctr runs as '$user'" ;; esac
  if [ "$svc" != echo ]; then
    # No systemd here to schedule health checks: run each once, as the timer would.
    podman healthcheck run "$ctr" >/dev/null 2>&1 || die "$ctr: HEALTHCHECK fails"
  fi
  case "$svc" in control-plane|gateway)
    # The binaries probe themselves (https, LISTEN_ADDR's port); no curl in these images.
    hc="$(podman inspect --format '{{json .Config.Healthcheck.Test}}' "$ctr")"
    [ "$hc" = "[\"CMD\",\"/usr/local/bin/caracal-$svc\",\"health\"]" ] || die "$ctr: HEALTHCHECK is $hc, not caracal-$svc health"
  esac
  log "  $ctr: running, read-only root, user $user$([ "$svc" = echo ] || echo ', healthy')${hc:+ ($hc)}"; hc=""
done
# Every hop is TLS: the plaintext ports do not answer HTTP.
curl -fsS -o /dev/null "http://localhost:$CARACAL_GW_PORT/health" 2>/dev/null && die "the gateway answers plaintext HTTP"
curl -fsS -o /dev/null "http://localhost:$CARACAL_CP_PORT/health" 2>/dev/null && die "the control plane answers plaintext HTTP"
log "  plaintext HTTP refused by the gateway and the control plane"
# Postgres and Redis accept TLS only, with credentials (tried from inside their containers).
out="$(podman exec "${PROJECT}_postgres_1" psql "host=127.0.0.1 dbname=caracal user=caracal sslmode=disable" -c 'SELECT 1' 2>&1 || true)"
grep -q 'no encryption' <<< "$out" || die "Postgres did not refuse a plaintext connection: $out"
out="$(podman exec "${PROJECT}_redis_1" redis-cli -h 127.0.0.1 -p 6379 ping 2>&1 || true)"
! grep -q PONG <<< "$out" || die "Redis answered a plaintext PING"
out="$(podman exec "${PROJECT}_redis_1" redis-cli --tls --cacert /run/secrets/ca.pem -h 127.0.0.1 -p 6379 ping 2>&1 || true)"
grep -q NOAUTH <<< "$out" || die "Redis answered a PING without AUTH: $out"
log "  Postgres refuses plaintext (hostssl only); Redis refuses plaintext and requires AUTH"
restarts="$(podman inspect --format '{{.RestartCount}}' "${PROJECT}_control-plane_1")"
[ "$restarts" = 0 ] || log "  (the control plane was restarted $restarts time(s) while Postgres was starting: restart: on-failure)"

deploy/compose/demo.sh

log "waiting for the governed request's evidence in the audit ledger"
source "$CARACAL_DEMO_DIR/demo.env"
audit() { curl -fsS "${CA[@]}" "https://localhost:$CARACAL_CP_PORT/v1/zones/$ZONE/audit$1" -H "Authorization: Bearer $(cat "$CARACAL_DEMO_DIR/admin.token")"; }
found=0
for _ in $(seq 60); do
  if audit '?limit=100' | grep -q '"event_type":"gateway_resource_request"'; then found=1; break; fi
  sleep 0.5
done
[ "$found" = 1 ] || die "no gateway_resource_request event in the zone's audit ledger after 30 s"
audit /verify | grep -q '"ok":true' || die "the zone's audit chain does not verify: $(audit /verify)"
log "  gateway_resource_request recorded (signed by the gateway, shipped over rediss://); chain verifies"

start=$(date +%s)
podman stop -t 40 "${PROJECT}_gateway_1" >/dev/null 2>&1
code="$(podman inspect --format '{{.State.ExitCode}}' "${PROJECT}_gateway_1")"
[ "$code" = 0 ] || die "the gateway exited $code after SIGTERM"
log "gateway stopped by SIGTERM: exit 0 after $(( $(date +%s) - start ))s (SHUTDOWN_GRACE_SECONDS=$CARACAL_SHUTDOWN_GRACE_SECONDS)"
log "compose check passed"
