#!/usr/bin/env bash
# Runs the whole stack locally: PostgreSQL and Redis on loopback (installed from Debian packages if
# missing), the control plane (STS + admin API) on :8080, the gateway on :8081, an echo upstream on
# :9000; seeds a demo zone, application, resource and policy; then makes one governed request and
# prints the commands to make your own. State lives in .local/stack; `deploy/local/down.sh` stops it.
# The processes are started by the runtime CLI (`caracal run start`), the demo is seeded with the
# admin client (`caracal-admin`).
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

# The process lifecycle is the runtime CLI's: Postgres, Redis, the control plane, the gateway and the
# echo upstream, with their pid files, logs and generated keys (secrets.env) in $STACK.
"$BIN/caracal" run start --stack-dir "$STACK" --bin-dir "$BIN" --cp-port "$CP_PORT" --gw-port "$GW_PORT" \
  --echo-port "$ECHO_PORT" --pg-port "$PG_PORT" --redis-port "$REDIS_PORT" >/dev/null

# The demo's product state goes through the admin API, with the admin client.
json_field() { sed -nE "s/.*\"$1\": *\"([^\"]*)\".*/\1/p" | head -1; }
admin() { "$BIN/caracal-admin" --quiet --url "$CP" --token-file "$STACK/admin.token" "$@"; }

if [ ! -f "$STACK/demo.env" ]; then
  log "seeding: admin token, zone, application, resource, policy"
  if [ ! -s "$STACK/admin.token" ]; then
    CARACAL_BOOTSTRAP_TOKEN="$(sed -n 's/^BOOTSTRAP_ADMIN_TOKEN=//p' "$STACK/secrets.env")" \
      "$BIN/caracal-admin" --quiet --url "$CP" bootstrap --save "$STACK/admin.token" >/dev/null || die "bootstrap failed"
  fi
  ZONE=$(admin zones create --name demo | json_field id)
  APP=$(admin apps create --zone "$ZONE" --name demo-agent)
  APP_ID=$(echo "$APP" | json_field id); SECRET=$(echo "$APP" | json_field client_secret)
  cat > "$STACK/demo-resource.json" <<RESOURCE
{"identifier": "https://echo.local", "upstream_url": "http://127.0.0.1:$ECHO_PORT", "scopes": ["echo.read", "echo.write"],
 "operations": [{"method": "GET", "path": "/**", "scope": "echo.read"}, {"method": "POST", "path": "/**", "scope": "echo.write"}]}
RESOURCE
  admin resources create --zone "$ZONE" --file "$STACK/demo-resource.json" >/dev/null
  admin policies apply --zone "$ZONE" --name demo --file docs/policies/per-resource-scopes.rego --activate >/dev/null
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
                  $BIN/caracal-admin --url $CP --token-file $STACK/admin.token audit verify --zone $ZONE
Status:           $BIN/caracal run status --stack-dir $STACK
Stop everything:  deploy/local/down.sh
DONE
