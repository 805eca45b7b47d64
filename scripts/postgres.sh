#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on 127.0.0.1 only: installs Debian's `postgresql`
# when it is missing, starts a cluster in a temp folder (trust auth on loopback, fsync off: test
# data only) unless one already answers, and prints its URL. `./scripts/test.sh` runs it and
# exports the URL as FLOWRT_TEST_POSTGRES; the tests make a database of their own in it.
#   scripts/postgres.sh         start (if needed) and print the URL
#   scripts/postgres.sh stop    stop the cluster this script started
set -euo pipefail
port=${FLOWRT_PG_PORT:-55432}
dir=${FLOWRT_PG_DIR:-/tmp/flowrt-test-pg}
url="postgres://flowrt@127.0.0.1:${port}/postgres"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "==> installing postgresql (apt-get)" >&2
  as_root apt-get update >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

# The server refuses to run as root: root runs it as Debian's `postgres` user.
run_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-}" = "stop" ]; then
  [ -d "$dir" ] && run_pg "$bin/pg_ctl" -D "$dir" -m fast stop >&2 || true
  exit 0
fi

if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  echo "$url"
  exit 0
fi

if [ ! -f "$dir/PG_VERSION" ]; then
  rm -rf "$dir"
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  chmod 700 "$dir"
  run_pg "$bin/initdb" -D "$dir" -U flowrt -A trust --no-sync >"$dir.initdb.log" 2>&1 || {
    cat "$dir.initdb.log" >&2
    exit 1
  }
fi
run_pg "$bin/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" \
  -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
  start >&2
echo "$url"
