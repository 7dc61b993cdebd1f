#!/bin/bash
# First start: initdb, then, on a socket-only server, the Caracal logins (passwords from the secret
# files) and the service roles the migrations would otherwise create (so the migrating login needs
# no CREATEROLE; docs/database.md). Every start: TLS-only on 5432 with the mounted certificate.
set -euo pipefail
S=/run/secrets
for f in ca.pem postgres.pem postgres.key pg_caracal_password pg_gateway_password; do
  [ -r "$S/$f" ] || { echo "postgres-entrypoint: cannot read $S/$f" >&2; exit 1; }
done
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=peer --auth-host=reject >/dev/null
  cat > "$PGDATA/pg_hba.conf" <<'HBA'
# local socket (inside this container only): the postgres OS user, for initialisation and health checks
local   all   postgres                 peer
local   all   all                      reject
# network: TLS and SCRAM only
hostssl all   all       0.0.0.0/0      scram-sha-256
hostssl all   all       ::/0           scram-sha-256
HBA
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/tmp" start >/dev/null
  psql -v ON_ERROR_STOP=1 -q -h /tmp -U postgres -d postgres \
    -v owner_pw="$(cat "$S/pg_caracal_password")" -v gw_pw="$(cat "$S/pg_gateway_password")" <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE caracal LOGIN PASSWORD :'owner_pw';
CREATE DATABASE caracal OWNER caracal;
CREATE ROLE caracal_control NOLOGIN NOBYPASSRLS;
CREATE ROLE caracal_gateway NOLOGIN NOBYPASSRLS;
CREATE ROLE caracal_audit_writer NOLOGIN NOBYPASSRLS;
CREATE ROLE caracal_audit_reader NOLOGIN NOBYPASSRLS;
GRANT caracal_control, caracal_audit_writer TO caracal;
CREATE ROLE caracal_gw LOGIN PASSWORD :'gw_pw';
GRANT caracal_gateway TO caracal_gw;
SQL
  pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
  echo "postgres-entrypoint: initialised $PGDATA (logins caracal, caracal_gw)" >&2
fi
exec postgres -D "$PGDATA" \
  -c listen_addresses='*' -c unix_socket_directories=/tmp \
  -c ssl=on -c ssl_min_protocol_version=TLSv1.2 \
  -c ssl_cert_file="$S/postgres.pem" -c ssl_key_file="$S/postgres.key" -c ssl_ca_file="$S/ca.pem" \
  -c password_encryption=scram-sha-256 -c max_connections=200 "$@"
