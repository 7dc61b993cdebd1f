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

# ensure_debs <package>...: installs the Debian packages not yet present.
ensure_debs() {
  local want=() p
  for p in "$@"; do
    has_pkg "$p" || want+=("$p")
  done
  if [ ${#want[@]} -gt 0 ]; then
    log "installing ${want[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}"
  fi
}

# Installs what building and running the stack needs (Debian packages), skipping what is present.
ensure_packages() {
  ensure_debs cmake libclang1-14 libclang-common-14-dev redis-server redis-tools postgresql curl openssl python3
}

# The real tools the deploy artifacts are checked with (deploy/check.sh): promtool (Debian ships
# it only in `prometheus`; its service is not started without systemd), systemd-analyze and
# systemd for the units' boot test, podman and friends for the images and the compose stack.
ensure_deploy_packages() {
  ensure_debs prometheus systemd python3-yaml podman aardvark-dns podman-compose mmdebstrap runc
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

# ensure_venv <dir> <requirements> <what>: a venv in <dir> (Python >= 3.12, see sdk_python) with
# <requirements> installed, again only when that file changed; prints its python.
ensure_venv() {
  local venv="$1" req="$2" what="$3" stamp py
  stamp="$(sha256sum "$req" | cut -c1-16)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$stamp" ]; then
    py="$(sdk_python)" || die "$what needs Python >= 3.12 (python3.12 on PATH, or: pyenv install 3.12)"
    log "installing $what ($req) into $venv with $py"
    rm -rf "$venv"
    "$py" -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
    echo "$stamp" > "$venv/.requirements"
  fi
  echo "$venv/bin/python"
}

# ensure_sdk_venv: .local/sdk-venv with the published SDK of tests/sdk/requirements.txt; prints its python.
ensure_sdk_venv() {
  ensure_venv "$PWD/.local/sdk-venv" "$PWD/tests/sdk/requirements.txt" "the published SDK"
}

# ensure_mcp_venv: .local/mcp-venv with the official MCP Python SDK of tests/mcp/requirements.txt (the
# MCP tests' client and Python server); prints its python.
ensure_mcp_venv() {
  ensure_venv "$PWD/.local/mcp-venv" "$PWD/tests/mcp/requirements.txt" "the MCP Python SDK"
}

# ensure_npm <dir> <source dir> <package> <what>: `npm ci` of <source dir>'s package.json and
# package-lock.json into <dir> (again only when the lock changed; needs node >= 20 and npm); prints <dir>.
ensure_npm() {
  local dir="$1" src="$2" pkg="$3" what="$4" stamp
  command -v node >/dev/null && command -v npm >/dev/null || die "$what needs node >= 20 and npm"
  stamp="$(sha256sum "$src/package-lock.json" | cut -c1-16)"
  if [ ! -d "$dir/node_modules/$pkg" ] || [ "$(cat "$dir/.lock" 2>/dev/null)" != "$stamp" ]; then
    log "installing $what ($src/package-lock.json) into $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$stamp" > "$dir/.lock"
  fi
  echo "$dir"
}

# ensure_oidc_provider: .local/oidc-provider with tests/oidc/package-lock.json: the real OpenID
# provider the subject-federation test runs with node; prints the directory.
ensure_oidc_provider() {
  ensure_npm "$PWD/.local/oidc-provider" "$PWD/tests/oidc" oidc-provider "the subject-federation test"
}

# ensure_mcp_node: .local/mcp-node with tests/mcp/package-lock.json: the reference MCP server
# (@modelcontextprotocol/server-everything) the MCP tests run with node; prints the directory.
ensure_mcp_node() {
  ensure_npm "$PWD/.local/mcp-node" "$PWD/tests/mcp" @modelcontextprotocol/server-everything "the MCP tests"
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
