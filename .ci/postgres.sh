# A throwaway PostgreSQL cluster for the tests (SPEC §13). Source this file:
#   pg_start        starts one on 127.0.0.1 (loopback only) in a temporary
#                   directory and exports CREDSTORE_POSTGRES_URL, and the
#                   CA of its TLS certificate as CREDSTORE_TEST_POSTGRES_CA;
#                   PG_FSYNC=on keeps fsync (the durability bench), else off;
#                   PG_LOG_STATEMENTS=1 logs every statement (round trips);
#   pg_stop         stops it and removes the directory.
# Installs Debian's postgresql package when no server is on the machine.
# The newest /usr/lib/postgresql/*/bin is used. initdb refuses root, so the
# cluster belongs to the postgres user.

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_start() {
  local bin port dir
  bin=$(pg_bin)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    (export DEBIAN_FRONTEND=noninteractive
     apt-get install -y postgresql || { apt-get update && apt-get install -y postgresql; }) \
      >/tmp/credstore-ci-apt-pg.log 2>&1 || tail -n 5 /tmp/credstore-ci-apt-pg.log
    bin=$(pg_bin)
  fi
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || { echo "no PostgreSQL server could be installed" >&2; return 1; }
  dir=$(mktemp -d /tmp/credstore-pg.XXXXXX)
  chmod 755 "$dir"
  local owner=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres: "$dir"
    owner=(runuser -u postgres --)
  fi
  port=${PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
  "${owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  # TLS for the tests that ask for it (sslmode=require): a CA of this
  # cluster's own and a server certificate naming 127.0.0.1 only (so that a
  # connection to "localhost" fails on the host name); plain connections
  # are still accepted.
  local tls="$dir/tls"
  mkdir -p "$tls"
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$tls/ext"
  { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=credstore test CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
    && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=127.0.0.1" -keyout "$tls/server.key" -out "$tls/server.csr" \
    && openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 2 -extfile "$tls/ext" -out "$tls/server.pem"; } \
    >"$dir/tls.log" 2>&1 || { cat "$dir/tls.log" >&2; return 1; }
  chmod 600 "$tls/server.key"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$tls"
  local opts="-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=300"
  opts="$opts -c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key"
  [ "${PG_FSYNC:-off}" = on ] || opts="$opts -c fsync=off"
  [ "${PG_LOG_STATEMENTS:-0}" = 1 ] && opts="$opts -c log_statement=all -c log_line_prefix=%p:%x:"
  "${owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "$opts" start >/dev/null \
    || { cat "$dir/log" >&2; return 1; }
  export CREDSTORE_PG_DIR="$dir" CREDSTORE_PG_BIN="$bin"
  export CREDSTORE_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  export CREDSTORE_TEST_POSTGRES_CA="$tls/ca.pem"
  echo "PostgreSQL ($("$bin/postgres" --version)) on 127.0.0.1:$port, data in $dir"
}

pg_stop() {
  [ -n "${CREDSTORE_PG_DIR:-}" ] || return 0
  local owner=()
  [ "$(id -u)" = 0 ] && owner=(runuser -u postgres --)
  "${owner[@]}" "$CREDSTORE_PG_BIN/pg_ctl" -D "$CREDSTORE_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$CREDSTORE_PG_DIR"
  unset CREDSTORE_PG_DIR CREDSTORE_POSTGRES_URL CREDSTORE_TEST_POSTGRES_CA
}
