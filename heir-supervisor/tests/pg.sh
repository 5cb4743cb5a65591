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
set -euo pipefail

PORT="${HEIR_PG_PORT:-55432}"
DIR="${HEIR_PG_DIR:-${TMPDIR:-/tmp}/heir-pg-$PORT}"
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
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
      rm -rf "$DIR/data"
      as_pg "$BIN/initdb" -D "$DIR/data" -U heir -A trust -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
    fi
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
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
