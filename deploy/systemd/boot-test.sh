#!/usr/bin/env bash
# Starts both units for real, unchanged but for paths, under a systemd of their own, and checks them.
#
# Where PID 1 is not systemd (a container or VM sandbox), this boots /lib/systemd/systemd as PID 1 of a
# new PID + mount namespace, with a unit path holding only our two units and empty stub targets, so it
# starts nothing else. A private PostgreSQL (Unix socket) and Redis (AUTH) back a production-mode
# control plane (TLS, private CA) and gateway. Checked: both become ready over https, /metrics needs
# the bearer, the sandbox is in force (dynamic uid, no capabilities, NoNewPrivs, seccomp), the audit
# spool lies in the StateDirectory, and SIGTERM stops the gateway within TimeoutStopSec.
# Root only; needs unshare/nsenter (util-linux), postgresql, redis-server, openssl, curl. Everything
# lives in $ROOT (not /tmp: PrivateTmp hides it from the services) and is removed at exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
BIN_DIR="${BIN_DIR:-$repo/target/debug}"
ROOT="${ROOT:-/opt/caracal-boot-test}"
PG_PORT="${PG_PORT:-25499}" REDIS_PORT="${REDIS_PORT:-26399}" CP_PORT="${CP_PORT:-28080}" GW_PORT="${GW_PORT:-28081}"
PG_BIN_DIR="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"

fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (boots a systemd in a namespace)"
# On a systemd host, install the units and use systemctl: this test cleans /var/lib/private/caracal-gateway
# and empty system.slice cgroups, which there could belong to a real installation.
if [ "$(cat /proc/1/comm)" = systemd ]; then
  echo "SKIP boot test: PID 1 is systemd here (the static checks above still ran); install the units and use systemctl"
  exit 0
fi
for t in unshare nsenter openssl curl redis-server "$PG_BIN_DIR/pg_ctl"; do command -v "$t" >/dev/null || fail "$t is missing"; done

E=$ROOT/etc/caracal; U=$ROOT/units; L=$ROOT/log; SD=""
cleanup() {
  [ -n "$SD" ] && kill -9 "$SD" 2>/dev/null || true   # PID 1 of the namespace: everything in it dies
  redis-cli -p "$REDIS_PORT" -a redis-pw --no-auth-warning shutdown nosave >/dev/null 2>&1 || true
  [ -f "$ROOT/pg/data/PG_VERSION" ] && su postgres -s /bin/sh -c "$PG_BIN_DIR/pg_ctl -D $ROOT/pg/data -m immediate -w stop" >/dev/null 2>&1 || true
  # What the namespaced systemd left on the shared disk and cgroup trees (empty directories only).
  rm -rf /var/lib/private/caracal-gateway /var/lib/caracal-gateway "$ROOT"
  rmdir /var/lib/private 2>/dev/null || true
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    for d in "$h"system.slice/*.service "$h"system.slice "$h"init.scope; do rmdir "$d" 2>/dev/null || true; done
  done
}
trap cleanup EXIT
cleanup; SD=""
mkdir -p "$E/tls" "$E/credentials/control-plane" "$E/credentials/gateway" "$U" "$L" "$ROOT/pg" "$ROOT/redis"
chmod 755 "$ROOT" "$ROOT/etc" "$E" "$E/tls"

# A private CA and one leaf for localhost (both services), so the gateway checks the STS's certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=caracal-test-ca \
  -keyout "$ROOT/ca.key" -out "$E/tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout "$ROOT/leaf.key" -out "$ROOT/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$ROOT/san.ext"
openssl x509 -req -in "$ROOT/leaf.csr" -CA "$E/tls/ca.pem" -CAkey "$ROOT/ca.key" -CAcreateserial -days 2 \
  -extfile "$ROOT/san.ext" -out "$E/tls/leaf.pem" 2>/dev/null
chmod 644 "$E/tls/"*.pem

# PostgreSQL on a Unix socket (production accepts a socket without sslmode) and Redis with AUTH.
chown postgres:postgres "$ROOT/pg"; chmod 755 "$ROOT/pg"
su postgres -s /bin/sh -c "$PG_BIN_DIR/initdb -D $ROOT/pg/data -A trust -U postgres -E UTF8 --no-sync" >/dev/null
su postgres -s /bin/sh -c "$PG_BIN_DIR/pg_ctl -D $ROOT/pg/data -l $ROOT/pg/log -w start -o \"-p $PG_PORT -k $ROOT/pg -c listen_addresses=''\"" >/dev/null
su postgres -s /bin/sh -c "psql -h $ROOT/pg -p $PG_PORT -qc 'CREATE DATABASE caracal'"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --requirepass redis-pw --daemonize yes --save '' --appendonly no \
  --dir "$ROOT/redis" --logfile "$ROOT/redis/log" >/dev/null
db="postgres://postgres@localhost/caracal?host=$ROOT/pg&port=$PG_PORT"

# Credentials: shared keys have one value for both services.
for k in gateway-sts-hmac-key streams-hmac-key audit-hmac-key; do
  v="$(openssl rand -hex 32)"; echo "$v" > "$E/credentials/control-plane/$k"; echo "$v" > "$E/credentials/gateway/$k"
done
openssl rand -hex 32 > "$E/credentials/control-plane/zone-kek"
openssl rand -hex 32 > "$E/credentials/control-plane/audit-chain-key"
bearer="$(openssl rand -hex 24)"
for s in control-plane gateway; do
  echo "$bearer" > "$E/credentials/$s/metrics-bearer"
  echo "redis://:redis-pw@127.0.0.1:$REDIS_PORT" > "$E/credentials/$s/redis-url"
  echo "$db" > "$E/credentials/$s/database-url"
  cp "$ROOT/leaf.key" "$E/credentials/$s/tls-key"
done
chmod -R go-rwx "$E/credentials"

# Env files: the examples, paths moved into $ROOT, then this host's addresses (later lines win).
sed "s#/etc/caracal/#$E/#g" "$here/caracal-control-plane.env.example" > "$E/caracal-control-plane.env"
cat >> "$E/caracal-control-plane.env" <<EOF
LISTEN_ADDR=127.0.0.1:$CP_PORT
ISSUER_URL=https://localhost:$CP_PORT
TLS_CERT_FILE=$E/tls/leaf.pem
REDIS_CA_FILE=
EOF
sed "s#/etc/caracal/#$E/#g" "$here/caracal-gateway.env.example" > "$E/caracal-gateway.env"
cat >> "$E/caracal-gateway.env" <<EOF
LISTEN_ADDR=127.0.0.1:$GW_PORT
GATEWAY_PUBLIC_URL=https://localhost:$GW_PORT
STS_URL=https://localhost:$CP_PORT
STS_CA_FILE=$E/tls/ca.pem
TLS_CERT_FILE=$E/tls/leaf.pem
REDIS_CA_FILE=
EOF

# Units: ExecStart -> copies of the built binaries in $ROOT (a checkout under /tmp or a home directory
# is hidden from the services by PrivateTmp / ProtectHome), /etc/caracal -> $E; output to files (no
# journald here).
mkdir -p "$ROOT/bin"
for s in control-plane gateway; do
  install -m 0755 "$BIN_DIR/caracal-$s" "$ROOT/bin/caracal-$s"
  u=caracal-$s
  sed "s#^ExecStart=/usr/local/bin/#ExecStart=$ROOT/bin/#; s#/etc/caracal/#$E/#g" "$here/$u.service" > "$U/$u.service"
  mkdir -p "$U/$u.service.d"
  printf '[Service]\nStandardOutput=append:%s/%s.log\nStandardError=append:%s/%s.log\n' "$L" "$u" "$L" "$u" > "$U/$u.service.d/log.conf"
done
for t in default sysinit basic multi-user network network-online sockets timers paths slices local-fs shutdown final umount; do
  printf '[Unit]\nDescription=stub %s\nDefaultDependencies=no\n' "$t" > "$U/$t.target"
done
printf '[Unit]\nDescription=stub\nDefaultDependencies=no\n' > "$U/system.slice"

# Boot. "/" is made shared inside the namespace only: systemd hands credentials to services by mount
# propagation. container= tells systemd it is not the machine's init.
setsid unshare --pid --fork --mount --propagation private --mount-proc --uts --ipc sh -c \
  "mount --make-rshared / && exec env -i container=caracal-test SYSTEMD_UNIT_PATH=$U /lib/systemd/systemd --system --unit=default.target" \
  > "$L/systemd.log" 2>&1 &
for _ in $(seq 50); do SD="$(pgrep -f "^/lib/systemd/systemd --system --unit=default.target" || true)"; [ -n "$SD" ] && break; sleep 0.1; done
[ -n "$SD" ] || fail "systemd did not start: $(cat "$L/systemd.log")"
ns() { nsenter -t "$SD" -m -p -u -i "$@"; }
for _ in $(seq 50); do ns systemctl is-system-running >/dev/null 2>&1 && break; sleep 0.2; done
echo "ok   systemd $(systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p') booted as PID 1 of a namespace (host PID $SD)"

wait_ready() { # name url
  for _ in $(seq 120); do
    curl -fsS --cacert "$E/tls/ca.pem" -o /dev/null "$2" 2>/dev/null && return 0
    ns systemctl is-failed -q "$1.service" && break
    sleep 0.5
  done
  fail "$1 not ready at $2; its log:"$'\n'"$(tail -20 "$L/$1.log")"
}
check_sandbox() { # unit
  local pid status
  pid="$(ns systemctl show -p MainPID --value "$1.service")"
  [ "$pid" -gt 0 ] || fail "$1 has no main process"
  status="$(ns cat "/proc/$pid/status")"
  grep -Eq '^Uid:\s+6[0-9]{4}\s' <<<"$status" || fail "$1 does not run as a dynamic user: $(grep ^Uid <<<"$status")"
  grep -Eq '^CapEff:\s+0+$' <<<"$status" && grep -Eq '^CapBnd:\s+0+$' <<<"$status" || fail "$1 holds capabilities"
  grep -Eq '^NoNewPrivs:\s+1$' <<<"$status" && grep -Eq '^Seccomp:\s+2$' <<<"$status" || fail "$1 runs without NoNewPrivs or seccomp"
  echo "ok   $1 runs sandboxed: $(grep -E '^Uid' <<<"$status" | awk '{print "uid " $2}'), CapEff 0, CapBnd 0, NoNewPrivs 1, seccomp filter"
}

ns systemctl start caracal-control-plane.service
wait_ready caracal-control-plane "https://localhost:$CP_PORT/ready"
echo "ok   caracal-control-plane.service ready over TLS (production mode, migrations applied)"
check_sandbox caracal-control-plane

ns systemctl start caracal-gateway.service
wait_ready caracal-gateway "https://localhost:$GW_PORT/ready"
echo "ok   caracal-gateway.service ready over TLS (STS over https with the private CA, revocation view loaded)"
check_sandbox caracal-gateway

for p in "$CP_PORT" "$GW_PORT"; do
  code="$(curl -sS --cacert "$E/tls/ca.pem" -o /dev/null -w '%{http_code}' "https://localhost:$p/metrics")"
  [ "$code" = 401 ] || [ "$code" = 403 ] || [ "$code" = 404 ] || fail "/metrics on :$p answered $code without the bearer"
  curl -fsS --cacert "$E/tls/ca.pem" -H "Authorization: Bearer $bearer" "https://localhost:$p/metrics" > "$L/metrics-$p.txt" \
    || fail "/metrics on :$p refused the bearer"
done
grep -q '^caracal_gateway_revocation_consumer_lag_seconds' "$L/metrics-$GW_PORT.txt" || echo "note: gateway /metrics has no caracal_gateway_revocation_consumer_lag_seconds yet"
echo "ok   /metrics of both needs the METRICS_BEARER credential"
# METRICS_OUT=dir keeps both expositions (e.g. to compare with deploy/monitoring's metric names).
[ -z "${METRICS_OUT:-}" ] || { mkdir -p "$METRICS_OUT"; cp "$L/metrics-$CP_PORT.txt" "$METRICS_OUT/control-plane.txt"; cp "$L/metrics-$GW_PORT.txt" "$METRICS_OUT/gateway.txt"; }
ns test -d /var/lib/private/caracal-gateway/audit-replay || fail "the audit spool is not in the gateway's StateDirectory"
echo "ok   audit spool at /var/lib/caracal-gateway/audit-replay (StateDirectory, owned by the dynamic user)"

start=$(date +%s)
ns systemctl stop caracal-gateway.service
took=$(( $(date +%s) - start ))
limit="$(sed -n 's/^TimeoutStopSec=//p' "$here/caracal-gateway.service")"
result="$(ns systemctl show -p Result --value caracal-gateway.service)"
[ "$result" = success ] && [ "$took" -lt "$limit" ] || fail "gateway stop: result $result after ${took}s (TimeoutStopSec=$limit)"
echo "ok   gateway drained and stopped on SIGTERM in ${took}s (TimeoutStopSec=$limit), result $result"
ns systemctl stop caracal-control-plane.service
echo "all boot checks passed"
