#!/usr/bin/env bash
# Throwaway PostgreSQL for heir-supervisor's tests (and bench/succession.sh).
#
#   tests/pg.sh up     start (idempotent) on 127.0.0.1:$HEIR_PG_PORT, print the DSN
#   tests/pg.sh dsn    print the DSN of the running instance
#   tests/pg.sh down   stop it and delete its directory
#
# Needs the PostgreSQL server binaries (Debian: apt-get install -y postgresql). As root, the
# server runs as the `postgres` user (postgres refuses to run as root). Data lives in
# $HEIR_PG_DIR (default /tmp/heir-pg-$HEIR_PG_PORT), never in the repository.
#
# TLS only (tests/pg_tls.rs): HEIR_PG_TLS_DIR holds server.crt, server.key and password (of the
# user heir); the server then has ssl=on and a pg_hba.conf of `hostssl ... scram-sha-256` lines
# alone (plain TCP and the socket are refused). HEIR_PG_LISTEN: listen_addresses.
set -euo pipefail

PORT="${HEIR_PG_PORT:-55432}"
DIR="${HEIR_PG_DIR:-${TMPDIR:-/tmp}/heir-pg-$PORT}"
TLS="${HEIR_PG_TLS_DIR:-}"
LISTEN="${HEIR_PG_LISTEN:-127.0.0.1}"
DSN="host=127.0.0.1 port=$PORT user=heir dbname=postgres connect_timeout=2"

bindir() {
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return
  fi
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  done
  echo "pg.sh: PostgreSQL server binaries not found (apt-get install -y postgresql)" >&2
  exit 2
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# install FILE DEST: private to the server's user (it refuses a key others can read).
install_pg() {
  if [ "$(id -u)" = 0 ]; then
    install -o postgres -g postgres -m 600 "$1" "$2"
  else
    install -m 600 "$1" "$2"
  fi
}

running() {
  [ -f "$DIR/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1
}

up() {
  mkdir -p "$DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR"; fi
  # Serialise concurrent `up`s (several test binaries may start at once).
  exec 9>"$DIR.lock"
  flock -w 60 9
  if ! running; then
    local tls_opts="" auth=(-A trust)
    if [ -n "$TLS" ]; then
      install_pg "$TLS/password" "$DIR/pwfile"
      auth=(-A scram-sha-256 --pwfile "$DIR/pwfile")
      tls_opts="-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
    fi
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
      rm -rf "$DIR/data"
      as_pg "$BIN/initdb" -D "$DIR/data" -U heir "${auth[@]}" -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
      if [ -n "$TLS" ]; then
        install_pg "$TLS/server.crt" "$DIR/data/server.crt"
        install_pg "$TLS/server.key" "$DIR/data/server.key"
        printf 'hostssl all all 127.0.0.0/8 scram-sha-256\n' >"$DIR/data/pg_hba.conf"
      fi
    fi
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
      -o "-c listen_addresses=$LISTEN -p $PORT -k $DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off $tls_opts" \
      start >/dev/null 9>&- || { tail -20 "$DIR/server.log" >&2; exit 1; }
  fi
  echo "$DSN" >"$DIR/dsn"
  echo "$DSN"
}

down() {
  if [ -d "$DIR/data" ]; then
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR" "$DIR.lock"
}

BIN="$(bindir)"
case "${1:-}" in
  up) up ;;
  down) down ;;
  dsn) running && echo "$DSN" ;;
  *) echo "usage: $0 up|down|dsn" >&2; exit 2 ;;
esac
