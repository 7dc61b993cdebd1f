# Shared helpers for the local scripts and CI: install Debian packages if missing, start and stop
# PostgreSQL and Redis on loopback in a private directory (no systemd needed).
# shellcheck shell=bash

PG_BIN_DIR="${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) to run: $*"; fi
}

has_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Installs what building and running the stack needs (Debian packages), skipping what is present.
ensure_packages() {
  local want=() p
  for p in cmake libclang1-14 libclang-common-14-dev redis-server redis-tools postgresql curl openssl python3; do
    has_pkg "$p" || want+=("$p")
  done
  if [ ${#want[@]} -gt 0 ]; then
    log "installing ${want[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}"
  fi
}

# sdk_python: the first Python >= 3.12 found (the published caracalai-* clients need it; Debian 12's
# python3 is 3.11): python3.12/python3.13 on PATH, else a pyenv-installed one.
sdk_python() {
  local p
  for p in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3 python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3; do
    command -v "$p" >/dev/null 2>&1 || continue
    "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { command -v "$p"; return 0; }
  done
  return 1
}

# ensure_sdk_venv: .local/sdk-venv with tests/sdk/requirements.txt installed (again only when that file
# changed); prints its python.
ensure_sdk_venv() {
  local venv="$PWD/.local/sdk-venv" req="$PWD/tests/sdk/requirements.txt" stamp py
  stamp="$(sha256sum "$req" | cut -c1-16)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$stamp" ]; then
    py="$(sdk_python)" || die "the published SDK tests need Python >= 3.12 (python3.12 on PATH, or: pyenv install 3.12)"
    log "installing the published SDK ($req) into $venv with $py"
    rm -rf "$venv"
    "$py" -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
    echo "$stamp" > "$venv/.requirements"
  fi
  echo "$venv/bin/python"
}

# ensure_oidc_provider: .local/oidc-provider with tests/oidc/package-lock.json installed by `npm ci`
# (again only when that file changed): the real OpenID provider the subject-federation test runs with
# node (>= 20); prints the directory.
ensure_oidc_provider() {
  local dir="$PWD/.local/oidc-provider" lock="$PWD/tests/oidc/package-lock.json" stamp
  command -v node >/dev/null && command -v npm >/dev/null || die "the subject-federation test needs node >= 20 and npm"
  stamp="$(sha256sum "$lock" | cut -c1-16)"
  if [ ! -d "$dir/node_modules/oidc-provider" ] || [ "$(cat "$dir/.lock" 2>/dev/null)" != "$stamp" ]; then
    log "installing oidc-provider ($lock) into $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    cp tests/oidc/package.json "$lock" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$stamp" > "$dir/.lock"
  fi
  echo "$dir"
}

# run_pg <command...>: runs a PostgreSQL tool as the postgres user when we are root (initdb refuses root).
run_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

# start_postgres <dir> <port>: initializes a cluster in <dir>/data on first use, starts it on 127.0.0.1.
start_postgres() {
  local dir="$1" port="$2"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    run_pg "$PG_BIN_DIR/initdb -D '$dir/data' -A trust -U postgres -E UTF8 --no-sync >/dev/null"
  fi
  if ! run_pg "$PG_BIN_DIR/pg_ctl -D '$dir/data' status" >/dev/null 2>&1; then
    run_pg "$PG_BIN_DIR/pg_ctl -D '$dir/data' -l '$dir/postgres.log' -w start -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=300\"" >/dev/null
  fi
}

stop_postgres() {
  local dir="$1"
  [ -f "$dir/data/PG_VERSION" ] && run_pg "$PG_BIN_DIR/pg_ctl -D '$dir/data' -m fast -w stop" >/dev/null 2>&1 || true
}

# start_redis <dir> <port>
start_redis() {
  local dir="$1" port="$2"
  mkdir -p "$dir"
  if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
    die "redis did not start on port $port (see $dir/redis.log)"
  fi
}

stop_redis() {
  redis-cli -p "$1" shutdown nosave >/dev/null 2>&1 || true
}

# wait_http <url> <seconds>
wait_http() {
  local url="$1" secs="${2:-60}"
  for _ in $(seq $((secs * 10))); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
