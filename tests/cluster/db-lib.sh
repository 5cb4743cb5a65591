# shellcheck shell=bash
# Helpers for the DB failover cluster test and benchmark (sourced after lib.sh, with DB=(db
# hosts) and VIP set): state of the PostgreSQL pair read through `docker exec` (works while a
# host is cut off), a primary<->standby link cut, and the commit writer
# (heir-supervisor/examples/commit_writer.rs) that records acknowledged commits.

WRITER="$REPO_ROOT/target/release/examples/commit_writer"

other_db() { [ "$1" = "${DB[0]}" ] && echo "${DB[1]}" || echo "${DB[0]}"; }

# in_recovery HOST: t (standby), f (primary) or down
in_recovery() {
  docker exec "$1" timeout 5 runuser -u postgres -- psql -XAtqc 'select pg_is_in_recovery()' 2>/dev/null || echo down
}

# vip_holder: the db host(s) with the floating IP on an interface
vip_holder() {
  local h who=""
  for h in "${DB[@]}"; do
    docker exec "$h" ip -o -4 addr show 2>/dev/null | grep -q " inet $VIP/" && who="$who $h"
  done
  echo "${who# }"
}

# sync_streaming PRIMARY: the standby's application_name if it streams synchronously
sync_streaming() {
  docker exec "$1" timeout 5 runuser -u postgres -- psql -XAtqc \
    "select application_name from pg_stat_replication where state = 'streaming' and sync_state = 'sync'" 2>/dev/null | head -1
}

unit_active() { docker exec "$1" systemctl is-active "$2" 2>/dev/null | head -1; }

witnesses_active() {
  local h n=0
  for h in $(group_hosts queue); do [ "$(unit_active "$h" heir-db-witness)" = active ] && n=$((n + 1)); done
  echo "$n"
}

pair_state() {
  local h out=""
  for h in "${DB[@]}"; do
    out="$out $h: recovery=$(in_recovery "$h") heir-db=$(unit_active "$h" heir-db) sync=[$(sync_streaming "$h")];"
  done
  echo "${out# } vip on [$(vip_holder)]"
}

# wait_pair TIMEOUT: until one primary holds the VIP with the other as its streaming sync
# standby and heir-db runs on both; prints the primary
wait_pair() {
  local end=$((SECONDS + $1)) h s
  while [ $SECONDS -lt $end ]; do
    for h in "${DB[@]}"; do
      s=$(other_db "$h")
      if [ "$(in_recovery "$h")" = f ] && [ "$(in_recovery "$s")" = t ] && [ "$(vip_holder)" = "$h" ] \
        && [ -n "$(sync_streaming "$h")" ] && [ "$(unit_active "$h" heir-db)" = active ] \
        && [ "$(unit_active "$s" heir-db)" = active ]; then
        echo "$h"; return 0
      fi
    done
    sleep 1
  done
  return 1
}

# cut_link A B / heal_link A B: drop everything between A and B, in A's network namespace
# (the host's iptables entering the container's namespace; nothing else is affected)
_link_rules() {
  local op=$1 a=$2 b=$3 pid ip
  pid=$(docker inspect -f '{{.State.Pid}}' "$a") || return 1
  ip=$(host_ip "$b")
  nsenter -t "$pid" -n iptables -w "$op" INPUT -s "$ip" -j DROP
  nsenter -t "$pid" -n iptables -w "$op" OUTPUT -d "$ip" -j DROP
}
cut_link() { _link_rules -I "$1" "$2"; }
heal_link() { while _link_rules -D "$1" "$2" 2>/dev/null; do :; done; }

# Built with the same command as the deploy test's first build (deploy-test.sh): a build with
# another package selection unifies features differently and relinks heir-supervisor, whose
# deployed copy would then differ from target/release (a re-run would report changed).
build_writer() {
  cargo build --release -q --workspace --bins --examples || fail "building commit_writer"
}

writer_dsn() {
  local pw
  pw=$(awk '{ print $1; exit }' "$INVENTORY_DIR/.secrets/postgres_airflow_password") || return 1
  echo "host=$VIP port=5432 user=airflow password=$pw dbname=airflow $PG_TLS_CTL"
}

# start_writer FILE: commit continuously through the VIP; acknowledged ids go to FILE
start_writer() {
  WRITER_FILE=$1; : > "$WRITER_FILE"
  "$WRITER" "$(writer_dsn)" "$WRITER_FILE" > "$WRITER_FILE.out" 2> "$WRITER_FILE.err" &
  WRITER_PID=$!
}
acks() { wc -l < "$WRITER_FILE"; }
# wait_acks N TIMEOUT
wait_acks() {
  local end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do [ "$(acks)" -ge "$1" ] && return 0; sleep 0.5; done
  return 1
}
# first_ack_after T: acknowledgement time of the first commit issued after T (empty if none)
first_ack_after() { awk -v t="$1" '$2 > t { print $3; exit }' "$WRITER_FILE"; }
stop_writer() {
  [ -n "$WRITER_PID" ] || return 0
  kill -TERM "$WRITER_PID" 2>/dev/null || true
  wait "$WRITER_PID" 2>/dev/null || true
  WRITER_PID=""
  cat "$WRITER_FILE.out"
}

# psql through the floating IP as the airflow user
vip_psql() { PGCONNECT_TIMEOUT=5 psql "$(writer_dsn)" -XAtqc "$1"; }

# missing_acks FILE: how many acknowledged ids are not in the table
missing_acks() {
  vip_psql "select id from heirflow_acked" | sort > "$1.present" || { echo "unreadable"; return; }
  awk '{ print $1 }' "$1" | sort | comm -23 - "$1.present" | wc -l
}
drop_acked_table() { vip_psql "drop table if exists heirflow_acked" > /dev/null 2>&1 || true; }
