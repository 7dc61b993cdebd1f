#!/usr/bin/env bash
# The demo flow of deploy/local/up.sh against the compose stack, over TLS from the host: bootstrap
# an admin token, create a zone, an application, a resource (the `echo` service), a policy; mint a
# session mandate, then a single-use gateway mandate; make one governed request through the gateway.
# Prints what the upstream received and exits non-zero unless the gateway answered 200.
#
# State (admin token, ids, the application's secret) goes to $CARACAL_DEMO_DIR (default
# .local/container/demo); a second run reuses it and only makes another request.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/container/lib.sh
need curl openssl

SECRETS="${CARACAL_SECRETS_DIR:-$PWD/deploy/compose/secrets}"
DEMO="${CARACAL_DEMO_DIR:-$CARACAL_CONTAINER_STATE/demo}"
CP="https://localhost:${CARACAL_CP_PORT:-18080}" GW="https://localhost:${CARACAL_GW_PORT:-18443}"
TLS=(--cacert "$SECRETS/ca.pem")   # every call verifies the service certificate against the compose CA
mkdir -p "$DEMO"
umask 077

json_field() { sed -nE "s/.*\"$1\":\"([^\"]*)\".*/\1/p"; }
api() { # api METHOD PATH [JSON]
  curl -fsS "${TLS[@]}" -X "$1" "$CP$2" -H "Authorization: Bearer $(cat "$DEMO/admin.token")" \
    -H 'content-type: application/json' ${3:+-d "$3"}
}

if [ ! -f "$DEMO/demo.env" ]; then
  log "seeding over $CP: admin token, zone, application, resource, policy"
  if [ ! -s "$DEMO/admin.token" ]; then
    # The bootstrap token is a root-owned secret file (0400, uid 10001): read as root.
    curl -fsS "${TLS[@]}" -X POST "$CP/v1/bootstrap" -H "Authorization: Bearer $(cat "$SECRETS/bootstrap_admin_token")" \
      | json_field token > "$DEMO/admin.token"
    [ -s "$DEMO/admin.token" ] || die "bootstrap failed"
  fi
  ZONE=$(api POST /v1/zones '{"name":"demo"}' | json_field id | head -1)
  [ -n "$ZONE" ] || die "zone creation failed"
  APP=$(api POST "/v1/zones/$ZONE/applications" '{"name":"demo-agent"}')
  APP_ID=$(echo "$APP" | json_field id | head -1); SECRET=$(echo "$APP" | json_field client_secret)
  [ -n "$APP_ID" ] && [ -n "$SECRET" ] || die "application creation failed"
  api POST "/v1/zones/$ZONE/resources" '{"identifier":"https://echo.local","upstream_url":"http://echo:9000","scopes":["echo.read","echo.write"],"operations":[{"method":"GET","path":"/**","scope":"echo.read"},{"method":"POST","path":"/**","scope":"echo.write"}]}' >/dev/null
  SET=$(api POST "/v1/zones/$ZONE/policy-sets" '{"name":"demo"}' | json_field id | head -1)
  REGO=$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' docs/policies/per-resource-scopes.rego | awk '{printf "%s\\n", $0}')
  VERSION=$(api POST "/v1/zones/$ZONE/policy-sets/$SET/versions" "{\"rego\":\"$REGO\"}" | json_field id | head -1)
  api POST "/v1/zones/$ZONE/policy-sets/$SET/activate" "{\"version_id\":\"$VERSION\"}" >/dev/null
  printf 'ZONE=%s\nAPP_ID=%s\nSECRET=%s\n' "$ZONE" "$APP_ID" "$SECRET" > "$DEMO/demo.env"
fi
source "$DEMO/demo.env"

log "minting a session mandate, then a single-use gateway mandate"
GRANT=urn:ietf:params:oauth:grant-type:token-exchange
SESSION=$(curl -fsS "${TLS[@]}" "$CP/oauth/2/token" -d grant_type=$GRANT -d zone_id="$ZONE" -d application_id="$APP_ID" \
  -d client_secret="$SECRET" | json_field access_token)
[ -n "$SESSION" ] || die "no session mandate"
MANDATE=$(curl -fsS "${TLS[@]}" "$CP/oauth/2/token" -d grant_type=$GRANT -d zone_id="$ZONE" -d application_id="$APP_ID" \
  -d client_secret="$SECRET" -d subject_token="$SESSION" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token \
  -d requested_token_type=urn:caracal:token-type:gateway-mandate -d resource=https://echo.local -d scope=echo.read \
  | json_field access_token)
[ -n "$MANDATE" ] || die "no gateway mandate"

log "a governed request through the gateway ($GW/hello, TLS verified against the compose CA)"
status=$(curl -sS "${TLS[@]}" -o "$DEMO/response.body" -w '%{http_code}' "$GW/hello" \
  -H "Authorization: Bearer $MANDATE" -H "X-Caracal-Resource: https://echo.local")
cat "$DEMO/response.body"; echo
[ "$status" = 200 ] || die "the governed request answered $status, not 200"
log "governed request: $status"
# The same mandate again must be refused: single use (JTI in Redis, over TLS).
replay=$(curl -sS "${TLS[@]}" -o /dev/null -w '%{http_code}' "$GW/hello" \
  -H "Authorization: Bearer $MANDATE" -H "X-Caracal-Resource: https://echo.local")
[ "$replay" = 401 ] || die "a replayed mandate answered $replay, not 401"
log "replayed mandate: $replay (refused)"
