#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, on 127.0.0.1 only.
#   source .ci/postgres.sh && pg_start   # exports CREDSTORE_POSTGRES_URL
#   pg_stop                              # stops it and removes its files
# Installs Debian's postgresql when no server is found. Runs as root (initdb
# refuses root, so the cluster belongs to the postgres user) or as any user
# who can run initdb. PG_FSYNC=on for a cluster that syncs (the benches).

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    (export DEBIAN_FRONTEND=noninteractive
     apt-get install -y postgresql || { apt-get update && apt-get install -y postgresql; }) \
      >/tmp/credstore-ci-pg-apt.log 2>&1 || tail -n 5 /tmp/credstore-ci-pg-apt.log >&2
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  fi
  [ -x "$bin/initdb" ] || { echo "no PostgreSQL server could be installed" >&2; return 1; }
  echo "$bin"
}

pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  local bin port
  bin=$(pg_bin) || return 1
  PG_DIR=$(mktemp -d /tmp/credstore-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  pg_as "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 \
    >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-k $PG_DIR -p $port -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=${PG_FSYNC:-off}" start >/dev/null \
    || { cat "$PG_DIR/log" >&2; return 1; }
  PG_BIN=$bin
  export PG_DIR PG_BIN
  export CREDSTORE_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_DIR)"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  unset PG_DIR CREDSTORE_POSTGRES_URL
}
