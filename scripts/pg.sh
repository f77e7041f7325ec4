#!/usr/bin/env bash
# A throwaway PostgreSQL server for development and tests: its own folder,
# a unix socket in that folder, no TCP port. Installs Debian's PostgreSQL
# when missing; runs the server as `postgres` when invoked as root (initdb
# refuses root).
#   scripts/pg.sh start DIR   creates (first time) and starts it; prints its URI
#   scripts/pg.sh stop DIR    stops it (the folder stays; remove it yourself)
#   scripts/pg.sh uri DIR     prints the URI
#   scripts/pg.sh destroy DIR stops it at once and removes the folder
#   scripts/pg.sh standby DIR PRIMARY_DIR
#                             creates (first time) and starts a streaming replica of the
#                             server in PRIMARY_DIR, and makes the primary synchronous
#                             (every commit is on both before it is acknowledged); prints
#                             the URI of both, primary first: libpq connects to whichever
#                             is writable (target_session_attrs=read-write)
#   scripts/pg.sh promote DIR makes the standby in DIR the primary
#   scripts/pg.sh kill DIR    stops the server at once (pg_ctl -m immediate: a crash)
#   scripts/pg.sh secure DIR CERT KEY PORT
#                             creates (first time) and starts a server that also listens on
#                             127.0.0.1:PORT, TLS only (CERT and KEY in PEM, TLS 1.2 or later),
#                             where every role logs in with a SCRAM-SHA-256 password; its unix
#                             socket (trust, for setting up roles) is what it prints
# Durable settings (fsync, synchronous_commit) stay on; commit timestamps are
# kept (track_commit_timestamp), for the tests that order commits by them.
set -euo pipefail
cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: scripts/pg.sh start|stop|uri|destroy|kill|promote DIR, scripts/pg.sh standby DIR PRIMARY_DIR," \
    "scripts/pg.sh secure DIR CERT KEY PORT" >&2
  exit 2
fi
port=5432
[ -f "$dir/secure" ] && port="$(cat "$dir/secure")" # made by `secure`: its TCP port is its socket's too
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

# Creates the server in $dir the first time (initdb), then starts it unless
# it runs; the rest of the arguments are more server options.
start_server() {
  local bin
  bin="$(find_bin)" || { install_server; bin="$(find_bin)"; } || { echo "PostgreSQL is not installed and could not be installed" >&2; exit 1; }
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      { echo "initdb failed:" >&2; cat "$dir/initdb.log" >&2; exit 1; }
    [ -n "${hba:-}" ] && printf '%s\n' "$hba" >"$dir/data/pg_hba.conf"
    [ -n "${hba:-}" ] && [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/data/pg_hba.conf"
  fi
  if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-k $dir -p $port -c max_connections=500 -c shared_buffers=128MB -c track_commit_timestamp=on $*" start >/dev/null ||
      { echo "PostgreSQL did not start:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
  fi
}

pair_uri() { # primary dir, standby dir
  echo "postgresql:///postgres?host=$1,$2&port=${port},${port}&user=postgres&target_session_attrs=read-write"
}

case "$cmd" in
  uri)
    echo "$uri"
    ;;
  standby)
    primary="${3:-}"
    [ -n "$primary" ] || { echo "usage: scripts/pg.sh standby DIR PRIMARY_DIR" >&2; exit 2; }
    bin="$(find_bin)" || { echo "PostgreSQL is not installed (scripts/pg.sh start installs it)" >&2; exit 1; }
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      # A copy of the primary that follows its WAL (-R writes primary_conninfo
      # and standby.signal).
      as_owner "$bin/pg_basebackup" -h "$primary" -p "$port" -U postgres -D "$dir/data" -R -X stream \
        >"$dir/basebackup.log" 2>&1 || { echo "pg_basebackup failed:" >&2; cat "$dir/basebackup.log" >&2; exit 1; }
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-k $dir -c listen_addresses='' -p $port -c max_connections=500 -c shared_buffers=128MB -c track_commit_timestamp=on" start >/dev/null ||
        { echo "the standby did not start:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
    fi
    # Synchronous from now on: a commit is acknowledged once the standby has
    # it too (set on the primary only, after the copy, so that a promoted
    # standby does not wait for a standby of its own).
    psql -qAt "postgresql:///postgres?host=${primary}&port=${port}&user=postgres" \
      -c "ALTER SYSTEM SET synchronous_standby_names = '*'" -c "SELECT pg_reload_conf()" >/dev/null
    # Wait until the standby streams synchronously.
    for _ in $(seq 1 100); do
      state=$(psql -qAt "postgresql:///postgres?host=${primary}&port=${port}&user=postgres" \
        -c "SELECT sync_state FROM pg_stat_replication LIMIT 1")
      [ "$state" = "sync" ] && break
      sleep 0.1
    done
    [ "$state" = "sync" ] || { echo "the standby does not stream synchronously (state: '$state')" >&2; exit 1; }
    pair_uri "$primary" "$dir"
    ;;
  promote)
    bin="$(find_bin)" || exit 1
    as_owner "$bin/pg_ctl" -D "$dir/data" -w -t 60 promote >/dev/null
    ;;
  kill)
    bin="$(find_bin)" || exit 0
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
    ;;
  start)
    if [ -f "$dir/secure" ]; then # a secure server started again: as it was made
      port="$(cat "$dir/secure")"
      start_server "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_min_protocol_version=TLSv1.2" \
        "-c password_encryption=scram-sha-256"
      echo "postgresql:///postgres?host=${dir}&port=${port}&user=postgres"
    else
      start_server "-c listen_addresses=''"
      echo "$uri"
    fi
    ;;
  secure)
    cert="${3:-}"; key="${4:-}"; port="${5:-}"
    [ -n "$cert" ] && [ -n "$key" ] && [ -n "$port" ] || { echo "usage: scripts/pg.sh secure DIR CERT KEY PORT" >&2; exit 2; }
    # Only TLS over TCP, only SCRAM passwords there; the socket in DIR
    # trusts whoever can open it (the folder is the server owner's).
    hba="local all all trust
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128 scram-sha-256"
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    echo "$port" >"$dir/secure"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      start_server "-c listen_addresses=''" # created with its pg_hba.conf, then stopped to add the files
      bin="$(find_bin)"
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    fi
    # The server reads its key only if no one else may (mode 600, its owner's).
    install -m 600 "$cert" "$dir/data/server.crt"
    install -m 600 "$key" "$dir/data/server.key"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/data/server.crt" "$dir/data/server.key"
    start_server "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_min_protocol_version=TLSv1.2" \
      "-c password_encryption=scram-sha-256"
    echo "postgresql:///postgres?host=${dir}&port=${port}&user=postgres"
    ;;
  stop)
    bin="$(find_bin)" || exit 0
    if [ -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
    ;;
  destroy)
    # At once (immediate): its data goes next, so the shutdown checkpoint
    # a fast stop writes and fsyncs first (13 s after the suite) is wasted.
    bash "$0" kill "$dir"
    rm -rf "$dir"
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop|uri|destroy|kill|promote DIR, scripts/pg.sh standby DIR PRIMARY_DIR" >&2
    exit 2
    ;;
esac
