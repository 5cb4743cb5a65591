#!/usr/bin/env bash
# A PostgreSQL 15 primary + synchronous standby in two network namespaces, for the DB
# failover tests (tests/db_*.rs) and bench/db-failover.sh.
#
#   tests/pgpair.sh up     (re)create pair $HF_PAIR: netns, bridge, primary a, standby b (sync)
#   tests/pgpair.sh down   stop everything of pair $HF_PAIR and delete it; without HF_PAIR,
#                          every pair found (the tests use pairs 41..45)
#   tests/pgpair.sh info   print the pair's variables (shell syntax)
#
# Layout of pair N (HF_PAIR, 1..250, default 1):
#   bridge hfpNbr 10.213.N.1/24 in the root namespace (clients and witnesses live here);
#   netns hfpNa: eth0 10.213.N.11, PostgreSQL node `a` (primary) on 5432;
#   netns hfpNb: eth0 10.213.N.12, PostgreSQL node `b` (standby, synchronous) on 5432;
#   floating IP 10.213.N.100/24 (nobody holds it after `up`);
#   data, sockets and logs under /tmp/heir-pair-N (never in the repository).
# Why namespaces rather than two ports on 127.0.0.1: each node gets its own address, so the
# floating IP moves for real (ip addr + gratuitous ARP on a bridge) and a primary<->standby
# partition is an iptables rule inside one namespace.
#
# HF_PAIR_LAYOUT=debian keeps postgresql.conf, pg_hba.conf and pg_ident.conf outside the data
# directory (in $DIR/etc-a, $DIR/etc-b, with data_directory set), as Debian's clusters do: start
# with `pg_ctl -D $DIR/etc-N`, stop with `pg_ctl -D $DIR/N`, pg_rewind needs --config-file.
#
# Needs root (netns, iptables) and the PostgreSQL 15 server (apt-get install postgresql).
# Superuser `heir`, trust authentication inside 10.213.0.0/16 (test only).
set -euo pipefail

if [ "${1:-}" = down ] && [ -z "${HF_PAIR:-}" ]; then
  for d in /tmp/heir-pair-*; do
    n=${d##*-}
    case "$n" in ''|*[!0-9]*) continue;; esac
    HF_PAIR=$n "$0" down
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^hfp[0-9]+[ab]$' || true); do
    n=${ns#hfp}; n=${n%[ab]}
    HF_PAIR=$n "$0" down
  done
  exit 0
fi
N="${HF_PAIR:-1}"
case "$N" in ''|*[!0-9]*) echo "pgpair.sh: HF_PAIR must be a number" >&2; exit 2;; esac
if [ "$N" -lt 1 ] || [ "$N" -gt 250 ]; then echo "pgpair.sh: HF_PAIR must be 1..250" >&2; exit 2; fi
NET="10.213.$N"
BR="hfp${N}br"
NSA="hfp${N}a"
NSB="hfp${N}b"
DIR="${HF_PAIR_DIR:-/tmp/heir-pair-$N}"
VIP="$NET.100"
LAYOUT="${HF_PAIR_LAYOUT:-plain}"

bindir() {
  local d
  for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_rewind" ]; then echo "$d"; return; fi
  done
  echo "pgpair.sh: PostgreSQL server binaries not found (apt-get install -y postgresql)" >&2
  exit 2
}

info() {
  cat <<INFO
PAIR=$N
NET=$NET
BR=$BR
NSA=$NSA
NSB=$NSB
DIR=$DIR
VIP=$VIP
A_ADDR=$NET.11
B_ADDR=$NET.12
BRIDGE_ADDR=$NET.1
LAYOUT=$LAYOUT
PGBIN=$BIN
INFO
}

pg() { # pg NS cmd...: run as postgres inside a namespace
  local ns=$1; shift
  ip netns exec "$ns" runuser -u postgres -- "$@"
}

ctl_dir() { # the directory pg_ctl -D starts from
  if [ "$LAYOUT" = debian ]; then echo "$DIR/etc-$1"; else echo "$DIR/$1"; fi
}

etc_dir() { # etc_dir NODE: move/copy the configuration files out of the data directory
  local n=$1 e="$DIR/etc-$1"
  mkdir -p "$e"
  if [ "$n" = a ]; then
    mv "$DIR/a/postgresql.conf" "$DIR/a/pg_hba.conf" "$DIR/a/pg_ident.conf" "$e/"
  else
    cp "$DIR/etc-a/postgresql.conf" "$DIR/etc-a/pg_hba.conf" "$DIR/etc-a/pg_ident.conf" "$e/"
    sed -i '/^data_directory\|^hba_file\|^ident_file/d' "$e/postgresql.conf"
  fi
  cat >>"$e/postgresql.conf" <<CONF
data_directory = '$DIR/$n'
hba_file = '$e/pg_hba.conf'
ident_file = '$e/pg_ident.conf'
CONF
  chown -R postgres: "$e"
}

opts() { # node-specific settings live on the command line (pg_basebackup/pg_rewind copy the conf)
  echo "-c cluster_name=$1 -k $DIR/sock-$1"
}

down() {
  for n in a b; do
    if [ -f "$DIR/$n/postmaster.pid" ]; then
      pid=$(head -1 "$DIR/$n/postmaster.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        pkill -9 -P "$pid" 2>/dev/null || true
        kill -9 "$pid" 2>/dev/null || true
      fi
    fi
  done
  ip netns del "$NSA" 2>/dev/null || true
  ip netns del "$NSB" 2>/dev/null || true
  # A namespace that a process still holds outlives `netns del`, and with it the root side of
  # its veth pair; the next `up` of this pair would then fail on "File exists".
  ip link del "${NSA}0" 2>/dev/null || true
  ip link del "${NSB}0" 2>/dev/null || true
  ip link del "$BR" 2>/dev/null || true
  while iptables -D FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null; do :; done
  rm -rf "$DIR"
}

wait_sql() { # wait_sql HOST SQL EXPECTED TIMEOUT
  local i
  for ((i = 0; i < $4 * 5; i++)); do
    if [ "$(psql_at "$1" "$2" 2>/dev/null || true)" = "$3" ]; then return 0; fi
    sleep 0.2
  done
  echo "pgpair.sh: timed out waiting for [$2] = [$3] on $1" >&2
  return 1
}

psql_at() {
  "$BIN/psql" -X -A -t -q -h "$1" -U heir -d postgres -c "$2"
}

up() {
  [ "$(id -u)" = 0 ] || { echo "pgpair.sh: must run as root (network namespaces)" >&2; exit 2; }
  down
  mkdir -p "$DIR"
  chown postgres: "$DIR"
  ip link add "$BR" type bridge
  ip addr add "$NET.1/24" dev "$BR"
  ip link set "$BR" up
  # Docker sets FORWARD's policy to DROP and br_netfilter filters bridged frames: allow ours.
  iptables -I FORWARD 1 -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null || true
  local ns host
  for n in a b; do
    ns="hfp${N}$n"
    host=$([ $n = a ] && echo 11 || echo 12)
    ip netns add "$ns"
    ip link add "${ns}0" type veth peer name eth0 netns "$ns"
    ip link set "${ns}0" master "$BR" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$NET.$host/24" dev eth0
    ip -n "$ns" link set eth0 up
    mkdir -p "$DIR/sock-$n"
    chown postgres: "$DIR/sock-$n"
  done
  runuser -u postgres -- "$BIN/initdb" -D "$DIR/a" -U heir -A trust -E UTF8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
  cat >>"$DIR/a/postgresql.conf" <<CONF
# heir-supervisor test pair
listen_addresses = '*'
port = 5432
max_connections = 60
shared_buffers = 32MB
wal_level = replica
wal_log_hints = on
hot_standby = on
max_wal_senders = 10
wal_keep_size = 256MB
synchronous_commit = on
synchronous_standby_names = 'FIRST 1 (a, b)'
wal_receiver_status_interval = 1s
wal_retrieve_retry_interval = 500ms
wal_sender_timeout = 5s
wal_receiver_timeout = 5s
CONF
  cat >>"$DIR/a/pg_hba.conf" <<HBA
host all all 10.213.0.0/16 trust
host replication all 10.213.0.0/16 trust
HBA
  if [ "$LAYOUT" = debian ]; then etc_dir a; fi
  pg "$NSA" "$BIN/pg_ctl" -D "$(ctl_dir a)" -l "$DIR/a.log" -w -t 60 -o "$(opts a)" start >/dev/null \
    || { tail -20 "$DIR/a.log" >&2; exit 1; }
  pg "$NSB" "$BIN/pg_basebackup" -d "host=$NET.11 user=heir connect_timeout=2" -D "$DIR/b" -X stream -R -c fast \
    >"$DIR/basebackup.log" 2>&1 || { cat "$DIR/basebackup.log" >&2; exit 1; }
  if [ "$LAYOUT" = debian ]; then etc_dir b; fi
  pg "$NSB" "$BIN/pg_ctl" -D "$(ctl_dir b)" -l "$DIR/b.log" -w -t 60 -o "$(opts b)" start >/dev/null \
    || { tail -20 "$DIR/b.log" >&2; exit 1; }
  wait_sql "$NET.11" "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'b'" sync 30
  info
}

BIN="$(bindir)"
case "${1:-}" in
  up) up ;;
  down) down ;;
  info) info ;;
  *) echo "usage: HF_PAIR=N $0 up|down|info" >&2; exit 2 ;;
esac
