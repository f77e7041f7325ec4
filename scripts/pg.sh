#!/usr/bin/env bash
# A throwaway PostgreSQL server for development and tests: its own folder,
# a unix socket in that folder, no TCP port. Installs Debian's PostgreSQL
# when missing; runs the server as `postgres` when invoked as root (initdb
# refuses root).
#   scripts/pg.sh start DIR   creates (first time) and starts it; prints its URI
#   scripts/pg.sh stop DIR    stops it (the folder stays; remove it yourself)
#   scripts/pg.sh uri DIR     prints the URI
#   scripts/pg.sh destroy DIR stops it and removes the folder
# Durable settings (fsync, synchronous_commit) stay on.
set -euo pipefail
cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: scripts/pg.sh start|stop|uri|destroy DIR" >&2
  exit 2
fi
port=5432
uri="postgresql:///postgres?host=${dir}&port=${port}&user=postgres"

find_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

install_server() {
  echo "installing PostgreSQL (postgresql, postgresql-client)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install PostgreSQL" >&2; exit 1; }
    sudo="sudo"
  fi
  # No cluster of Debian's own: we start ours in a folder of our choosing.
  $sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/sourcery.conf >/dev/null
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  uri)
    echo "$uri"
    ;;
  start)
    bin="$(find_bin)" || { install_server; bin="$(find_bin)"; } || { echo "PostgreSQL is not installed and could not be installed" >&2; exit 1; }
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { echo "initdb failed:" >&2; cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-k $dir -c listen_addresses='' -p $port -c max_connections=500 -c shared_buffers=128MB" start >/dev/null ||
        { echo "PostgreSQL did not start:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
    fi
    echo "$uri"
    ;;
  stop)
    bin="$(find_bin)" || exit 0
    if [ -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
    ;;
  destroy)
    bash "$0" stop "$dir"
    rm -rf "$dir"
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop|uri|destroy DIR" >&2
    exit 2
    ;;
esac
