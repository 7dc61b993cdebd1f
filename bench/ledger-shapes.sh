#!/usr/bin/env bash
# Issue 15 item 4: what filing audit rows costs Postgres, by shape of the write. Every shape files the
# same generated rows (one zone's chain, ≈ 700-byte events) into a fresh copy of `audit_events` (its
# DDL read from migrations/0005_audit_ledger.sql, so the copy has the real indexes), one transaction
# per batch, on a Postgres of its own on loopback. Rows per second, and each shape against the
# ledger's own (a set-based INSERT of 500 rows per transaction: AUDIT_BATCH's default).
#
#   bench/ledger-shapes.sh [rows]     (default 100000) → a markdown table on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/lib.sh

ROWS="${1:-100000}"
DIR="$PWD/.local/bench/ledger-pg"
PORT="${LEDGER_PG_PORT:-25455}"
ensure_packages
start_postgres "$DIR" "$PORT"
trap 'stop_postgres "$DIR"' EXIT
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
export PGOPTIONS="-c client_min_messages=warning"
psql_q() { psql "$URL" -v ON_ERROR_STOP=1 -qAt "$@"; }

# The audit_events DDL, table and indexes, renamed per shape.
ddl() { # ddl <table> [no-secondary]
  local body
  body="$(sed -n '/^CREATE TABLE audit_events (/,/^CREATE INDEX audit_events_session/p' migrations/0005_audit_ledger.sql)"
  [ -n "$body" ] || die "no audit_events DDL in migrations/0005_audit_ledger.sql"
  if [ "${2:-}" = no-secondary ]; then
    body="$(printf '%s\n' "$body" | grep -v '^CREATE INDEX')"
  fi
  printf 'DROP TABLE IF EXISTS %s;\n%s\n' "$1" "${body//audit_events/$1}"
}

# Rows (from, to] of the generated chain, as the ledger would file them.
psql_q <<'SQL'
CREATE OR REPLACE FUNCTION shape_rows(lo bigint, hi bigint) RETURNS TABLE (
  zone_id text, seq bigint, id text, event_type text, decision text, request_id text, session_id text,
  occurred_at timestamptz, event text, content_sha256 bytea, chain_hmac bytea, producer_sig text)
LANGUAGE sql AS $$
  SELECT 'zone-1', g, md5('e' || g), 'sts.token_exchange', 'allow', md5('r' || g), md5('s' || (g / 10)),
         now(), '{"actor":{"application_id":"' || md5('a') || '"},"decision":"allow","id":"' || md5('e' || g)
           || '","metadata":{"policy_version_id":"' || md5('p') || '","resource":"https://bench.local","scopes":["bench.read"]}'
           || ',"request_id":"' || md5('r' || g) || '","padding":"' || repeat('x', 420) || '"}',
         sha256(('e' || g)::bytea), sha256(('h' || g)::bytea), md5('sig' || g)
  FROM generate_series(lo + 1, hi) g
$$;
CREATE OR REPLACE PROCEDURE shape_fill(tbl text, total bigint, batch bigint) LANGUAGE plpgsql AS $$
DECLARE lo bigint := 0;
BEGIN
  WHILE lo < total LOOP
    EXECUTE format('INSERT INTO %I (zone_id, seq, id, event_type, decision, request_id, session_id, occurred_at, event, '
                   'content_sha256, chain_hmac, producer_sig) SELECT * FROM shape_rows($1, $2)', tbl)
      USING lo, least(lo + batch, total);
    COMMIT;
    lo := lo + batch;
  END LOOP;
END $$;
SQL

seconds() { date +%s.%N; }
declare -A RATE
measure() { # measure <name> <table> <ddl flag> <how> <batch>
  local name="$1" tbl="$2" flag="$3" how="$4" batch="$5" t0 t1
  ddl "$tbl" "$flag" | psql_q >/dev/null
  psql_q -c 'CHECKPOINT' >/dev/null
  if [ "$how" = insert ]; then
    t0=$(seconds); psql_q -c "CALL shape_fill('$tbl', $ROWS, $batch)"; t1=$(seconds)
  else
    local work="$DIR/copy-$tbl"
    rm -rf "$work"; mkdir -p "$work"
    psql_q -c "\\copy (SELECT * FROM shape_rows(0, $ROWS)) TO '$work/all.csv' WITH (FORMAT csv)"
    split -l "$batch" -d -a 6 "$work/all.csv" "$work/part-"
    for f in "$work"/part-*; do
      echo "\\copy $tbl (zone_id, seq, id, event_type, decision, request_id, session_id, occurred_at, event, content_sha256, chain_hmac, producer_sig) FROM '$f' WITH (FORMAT csv)"
    done >"$work/script.sql"
    t0=$(seconds); psql_q -f "$work/script.sql" >/dev/null; t1=$(seconds)
    rm -rf "$work"
  fi
  local n
  n=$(psql_q -c "SELECT count(*) FROM $tbl")
  [ "$n" = "$ROWS" ] || die "$name filed $n rows, expected $ROWS"
  RATE[$name]=$(echo "$ROWS / ($t1 - $t0)" | bc -l)
  log "$name: $(printf '%.0f' "${RATE[$name]}") rows/s"
  psql_q -c "DROP TABLE $tbl" >/dev/null
}

measure "INSERT … SELECT, 500 per transaction (the ledger's default)" shape_default full insert 500
measure "INSERT … SELECT, 2,000 per transaction" shape_2000 full insert 2000
measure "INSERT … SELECT, 10,000 per transaction (AUDIT_BATCH's maximum)" shape_10000 full insert 10000
measure "COPY, 500 per transaction" shape_copy full copy 500
measure "COPY, 10,000 per transaction" shape_copy_big full copy 10000
measure "INSERT … SELECT, 500 per transaction, no secondary indexes" shape_bare no-secondary insert 500

BASE="${RATE["INSERT … SELECT, 500 per transaction (the ledger's default)"]}"
echo "| shape ($ROWS rows, one zone's chain) | rows/s | vs the default |"
echo "|---|---|---|"
for name in "INSERT … SELECT, 500 per transaction (the ledger's default)" "INSERT … SELECT, 2,000 per transaction" \
  "INSERT … SELECT, 10,000 per transaction (AUDIT_BATCH's maximum)" "COPY, 500 per transaction" "COPY, 10,000 per transaction" \
  "INSERT … SELECT, 500 per transaction, no secondary indexes"; do
  printf '| %s | %.0f | %.0f%% |\n' "$name" "${RATE[$name]}" "$(echo "100 * ${RATE[$name]} / $BASE" | bc -l)"
done
