#!/usr/bin/env bash
# Generates everything compose.yaml mounts as secrets, once, into $CARACAL_SECRETS_DIR (default
# deploy/compose/secrets, git-ignored): a private CA, a certificate per service (EC P-256, SAN = the
# service name, localhost and 127.0.0.1), the product's keys and tokens, the Postgres and Redis
# passwords and the URLs that carry them. Existing files are kept (the signing keys in Postgres are
# sealed with zone_kek); `secrets.sh --force` starts over (then also remove the volumes).
#
# Ownership: podman-compose 1.0 mounts a secret file as it is on the host (it ignores the `uid`,
# `gid` and `mode` of compose.yaml), so each file is owned by the numeric user that reads it:
# 10001 (caracal images), 999 (postgres), 998 (redis); mode 0400. The CA certificate is public.
# Needs root (chown) and openssl.
set -euo pipefail
cd "$(dirname "$0")"
source ../container/lib.sh
need openssl

DIR="${CARACAL_SECRETS_DIR:-$PWD/secrets}"
CARACAL_UID=10001 PG_UID=999 REDIS_UID=998
[ "${1:-}" = --force ] && rm -rf "$DIR"
if [ -f "$DIR/.complete" ]; then
  log "secrets exist in $DIR (secrets.sh --force regenerates them)"
  exit 0
fi
mkdir -p "$DIR"
chmod 0755 "$DIR"
umask 077

# secret <name> <owner uid> <value>: one file, owned by its reader, mode 0400.
secret() { printf '%s\n' "$3" > "$DIR/$1"; chown "$2:$2" "$DIR/$1"; chmod 0400 "$DIR/$1"; }
hex() { openssl rand -hex 32; }

log "private CA and service certificates in $DIR"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj '/CN=caracal compose CA' -keyout "$DIR/ca.key" -out "$DIR/ca.pem" \
  -addext 'basicConstraints=critical,CA:TRUE,pathlen:0' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
chmod 0444 "$DIR/ca.pem"
for svc in control-plane gateway postgres redis; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$svc" \
    -keyout "$DIR/$svc.key" -out "$DIR/$svc.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/$svc.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial -days 825 -sha256 \
    -extfile <(printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' "$svc") \
    -out "$DIR/$svc.pem" 2>/dev/null
  rm -f "$DIR/$svc.csr"
  chmod 0444 "$DIR/$svc.pem"
done
rm -f "$DIR/ca.srl"
chown "$CARACAL_UID:$CARACAL_UID" "$DIR/control-plane.key" "$DIR/gateway.key"
chown "$PG_UID:$PG_UID" "$DIR/postgres.key"
chown "$REDIS_UID:$REDIS_UID" "$DIR/redis.key"
chmod 0400 "$DIR"/*.key
# The CA key is not mounted anywhere; keep it for issuing more certificates, or delete it.

log "keys, tokens and passwords"
for name in zone_kek streams_hmac_key gateway_sts_hmac_key audit_hmac_key audit_chain_key; do
  secret "$name" "$CARACAL_UID" "$(hex)"
done
secret bootstrap_admin_token "$CARACAL_UID" "$(openssl rand -base64 48 | tr -d '=+/\n')"
secret metrics_bearer "$CARACAL_UID" "$(openssl rand -base64 32 | tr -d '=+/\n')"
redis_pw="$(hex)" pg_owner_pw="$(hex)" pg_gw_pw="$(hex)"
secret redis_password "$REDIS_UID" "$redis_pw"
secret pg_caracal_password "$PG_UID" "$pg_owner_pw"
secret pg_gateway_password "$PG_UID" "$pg_gw_pw"
# URLs as the binaries read them (NAME_FILE): TLS verified against the compose CA, by host name.
secret redis_url "$CARACAL_UID" "rediss://:$redis_pw@redis:6379"
secret database_url "$CARACAL_UID" \
  "postgres://caracal:$pg_owner_pw@postgres:5432/caracal?sslmode=verify-full&sslrootcert=/run/secrets/ca.pem"
secret gateway_database_url "$CARACAL_UID" \
  "postgres://caracal_gw:$pg_gw_pw@postgres:5432/caracal?sslmode=verify-full&sslrootcert=/run/secrets/ca.pem"
touch "$DIR/.complete"
log "secrets ready in $DIR"
