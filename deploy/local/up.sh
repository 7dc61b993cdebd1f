#!/usr/bin/env bash
# Runs the whole stack locally: PostgreSQL and Redis on loopback (installed from Debian packages if
# missing), the control plane (STS + admin API) on :8080, the gateway on :8081, an echo upstream on
# :9000; seeds a demo zone, application, resource and policy; then makes one governed request and
# prints the commands to make your own. State lives in .local/stack; `deploy/local/down.sh` stops it.
#
# CARACAL_PROFILE=debug builds faster; the default is release.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh

STACK="$PWD/.local/stack"
PROFILE="${CARACAL_PROFILE:-release}"
CP_PORT="${CP_PORT:-8080}" GW_PORT="${GW_PORT:-8081}" ECHO_PORT="${ECHO_PORT:-9000}"
PG_PORT="${PG_PORT:-25432}" REDIS_PORT="${REDIS_PORT:-26379}"
CP="http://127.0.0.1:$CP_PORT" GW="http://127.0.0.1:$GW_PORT"
mkdir -p "$STACK"

ensure_packages
log "building ($PROFILE)"
if [ "$PROFILE" = release ]; then cargo build --release --bins --locked; BIN="$PWD/target/release"
else cargo build --bins --locked; BIN="$PWD/target/debug"; fi

# Secrets are generated once and kept: the signing keys in Postgres are sealed with this ZONE_KEK.
if [ ! -f "$STACK/secrets.env" ]; then
  umask 077
  cat > "$STACK/secrets.env" <<SECRETS
ZONE_KEK=$(openssl rand -hex 32)
STREAMS_HMAC_KEY=$(openssl rand -hex 32)
GATEWAY_STS_HMAC_KEY=$(openssl rand -hex 32)
AUDIT_HMAC_KEY=$(openssl rand -hex 32)
AUDIT_CHAIN_KEY=$(openssl rand -hex 32)
BOOTSTRAP_ADMIN_TOKEN=$(openssl rand -base64 32 | tr -d '=+/')
SECRETS
fi
for k in AUDIT_HMAC_KEY AUDIT_CHAIN_KEY; do
  grep -q "^$k=" "$STACK/secrets.env" || echo "$k=$(openssl rand -hex 32)" >> "$STACK/secrets.env"
done
set -a; source "$STACK/secrets.env"; set +a

log "starting PostgreSQL (:$PG_PORT) and Redis (:$REDIS_PORT)"
start_postgres "$STACK/pg" "$PG_PORT"
run_pg "psql -h 127.0.0.1 -p $PG_PORT -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname = 'caracal'\"" | grep -q 1 \
  || run_pg "psql -h 127.0.0.1 -p $PG_PORT -U postgres -qc 'CREATE DATABASE caracal'"
start_redis "$STACK/redis" "$REDIS_PORT"

# SIGINT for the services; the echo upstream (a background job of a script ignores SIGINT) gets SIGTERM.
stop_pid() { local sig=INT; [ "$1" = echo ] && sig=TERM; [ -f "$STACK/$1.pid" ] && kill -"$sig" "$(cat "$STACK/$1.pid")" 2>/dev/null || true; rm -f "$STACK/$1.pid"; }
for p in control-plane gateway echo; do stop_pid "$p"; done
sleep 0.3

log "starting caracal-control-plane (:$CP_PORT), caracal-gateway (:$GW_PORT), echo upstream (:$ECHO_PORT)"
CARACAL_MODE=dev LISTEN_ADDR="127.0.0.1:$CP_PORT" ISSUER_URL="$CP" \
  DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/caracal" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
  nohup "$BIN/caracal-control-plane" > "$STACK/control-plane.log" 2>&1 &
echo $! > "$STACK/control-plane.pid"
wait_http "$CP/ready" 60 || die "control plane not ready; see $STACK/control-plane.log"
# The demo upstream is on loopback, which the gateway refuses unless told otherwise.
CARACAL_MODE=dev LISTEN_ADDR="127.0.0.1:$GW_PORT" STS_URL="$CP" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
  DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/caracal" ALLOW_PRIVATE_UPSTREAMS=true AUDIT_REPLAY_DIR="$STACK/audit-replay" \
  nohup "$BIN/caracal-gateway" > "$STACK/gateway.log" 2>&1 &
echo $! > "$STACK/gateway.pid"
nohup "$BIN/caracal-bench" echo "127.0.0.1:$ECHO_PORT" > "$STACK/echo.log" 2>&1 &
echo $! > "$STACK/echo.pid"
wait_http "$GW/ready" 60 || die "gateway not ready; see $STACK/gateway.log"

json_field() { sed -nE "s/.*\"$1\":\"([^\"]*)\".*/\1/p"; }
api() { # api METHOD PATH [JSON]
  curl -fsS -X "$1" "$CP$2" -H "Authorization: Bearer $(cat "$STACK/admin.token")" -H 'content-type: application/json' ${3:+-d "$3"}
}

if [ ! -f "$STACK/demo.env" ]; then
  log "seeding: admin token, zone, application, resource, policy"
  if [ ! -s "$STACK/admin.token" ]; then
    curl -fsS -X POST "$CP/v1/bootstrap" -H "Authorization: Bearer $BOOTSTRAP_ADMIN_TOKEN" | json_field token > "$STACK/admin.token"
    [ -s "$STACK/admin.token" ] || die "bootstrap failed"
    chmod 600 "$STACK/admin.token"
  fi
  ZONE=$(api POST /v1/zones '{"name":"demo"}' | json_field id | head -1)
  APP=$(api POST "/v1/zones/$ZONE/applications" '{"name":"demo-agent"}')
  APP_ID=$(echo "$APP" | json_field id | head -1); SECRET=$(echo "$APP" | json_field client_secret)
  api POST "/v1/zones/$ZONE/resources" "{\"identifier\":\"https://echo.local\",\"upstream_url\":\"http://127.0.0.1:$ECHO_PORT\",\"scopes\":[\"echo.read\",\"echo.write\"],\"operations\":[{\"method\":\"GET\",\"path\":\"/**\",\"scope\":\"echo.read\"},{\"method\":\"POST\",\"path\":\"/**\",\"scope\":\"echo.write\"}]}" >/dev/null
  SET=$(api POST "/v1/zones/$ZONE/policy-sets" '{"name":"demo"}' | json_field id | head -1)
  REGO=$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' docs/policies/per-resource-scopes.rego | awk '{printf "%s\\n", $0}')
  VERSION=$(api POST "/v1/zones/$ZONE/policy-sets/$SET/versions" "{\"rego\":\"$REGO\"}" | json_field id | head -1)
  api POST "/v1/zones/$ZONE/policy-sets/$SET/activate" "{\"version_id\":\"$VERSION\"}" >/dev/null
  umask 077
  printf 'ZONE=%s\nAPP_ID=%s\nSECRET=%s\n' "$ZONE" "$APP_ID" "$SECRET" > "$STACK/demo.env"
fi
source "$STACK/demo.env"

cat > "$STACK/call.sh" <<CALL
#!/usr/bin/env bash
# One governed request: mint a session mandate, mint a single-use gateway mandate, call the gateway.
set -euo pipefail
GRANT=urn:ietf:params:oauth:grant-type:token-exchange
SESSION=\$(curl -fsS $CP/oauth/2/token -d grant_type=\$GRANT -d zone_id=$ZONE -d application_id=$APP_ID -d client_secret=$SECRET \\
  | sed -nE 's/.*"access_token":"([^"]*)".*/\1/p')
MANDATE=\$(curl -fsS $CP/oauth/2/token -d grant_type=\$GRANT -d zone_id=$ZONE -d application_id=$APP_ID -d client_secret=$SECRET \\
  -d subject_token=\$SESSION -d subject_token_type=urn:ietf:params:oauth:token-type:access_token \\
  -d requested_token_type=urn:caracal:token-type:gateway-mandate \\
  -d resource=https://echo.local -d scope=echo.read | sed -nE 's/.*"access_token":"([^"]*)".*/\1/p')
curl -sS "$GW\${1:-/hello}" -H "Authorization: Bearer \$MANDATE" -H "X-Caracal-Resource: https://echo.local"
echo
CALL
chmod 700 "$STACK/call.sh"

log "a governed request through the gateway (what the upstream received):"
"$STACK/call.sh" /hello
cat <<DONE

Caracal is running:
  control plane (STS + admin API)  $CP      logs: $STACK/control-plane.log
  gateway                          $GW      logs: $STACK/gateway.log
  echo upstream                    http://127.0.0.1:$ECHO_PORT
  admin token                      $STACK/admin.token

Make a governed request yourself (mints a session mandate, then a single-use gateway mandate):
  $STACK/call.sh /any/path

Gateway metrics:  curl -s $GW/metrics | grep caracal_gateway_
Audit ledger:     curl -s "$CP/v1/zones/$ZONE/audit?limit=5" -H "Authorization: Bearer \$(cat $STACK/admin.token)"
                  (…/audit/verify checks the zone's chain; docs/audit.md)
Stop everything:  deploy/local/down.sh
DONE
