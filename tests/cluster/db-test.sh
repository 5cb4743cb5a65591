#!/usr/bin/env bash
# Automatic DB failover on the deployed local cluster (issue 4; heir-supervisor db, role
# heir-supervisor-db), with a writer committing through the floating IP all along:
#   1. the pair is healthy: one primary holding the floating IP, a synchronous standby
#      streaming, heir-db on both db hosts, witnesses on the queue hosts;
#   2. partition of only the primary <-> standby link (iptables in the primary's network
#      namespace): the witnesses still see the primary, so there is NO promotion; the floating
#      IP stays; after the heal the standby streams synchronously again;
#   3. docker kill of the primary's host: the standby is promoted, the floating IP moves, writes
#      are acknowledged again (time measured from the kill), the Airflow smoke DAG still runs;
#   4. docker start of the old primary: it rejoins as the synchronous standby (pg_rewind);
#      then a rejoin left unfinished (its mark beside the data directory, PostgreSQL killed):
#      heir-db copies the primary afresh (pg_basebackup) instead of starting that directory;
#   5. every acknowledged commit is in the database (0 missing).
# usage: tests/cluster/db-test.sh        (needs the deployed local cluster; runs as root)
# The failover time is printed; its target (<= 10 s) is checked by bench/db-failover-cluster.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
cd "$REPO_ROOT"
T_START=$SECONDS
OUT=$(mktemp -d /tmp/heirflow-db-test.XXXXXX)
mapfile -t DB < <(group_hosts db)
[ "${#DB[@]}" -eq 2 ] || fail "want 2 db hosts, inventory has ${#DB[@]}"
VIP=$(awk '/^heirflow_floating_ip:/ { print $2 }' "$INVENTORY_DIR/group_vars/all.yml")
[ -n "$VIP" ] || fail "no heirflow_floating_ip in $INVENTORY_DIR/group_vars/all.yml"
WRITER_PID=""; CUT=""; KILLED=""
source "$(dirname "$0")/db-lib.sh"

cleanup() {
  [ -z "$CUT" ] || heal_link "$CUT" "$(other_db "$CUT")"
  [ -z "$KILLED" ] || docker start "$KILLED" > /dev/null 2>&1 || true
  stop_writer > /dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT

step "1. healthy pair"
P=$(wait_pair 120) || fail "pair not healthy: $(pair_state)"
S=$(other_db "$P")
pass "primary $P (holds $VIP), synchronous standby $S streaming; heir-db on both; $(witnesses_active) witnesses"

step "writer through the floating IP"
build_writer
start_writer "$OUT/acked"
wait_acks 50 30 || fail "writer: no commits acknowledged through $VIP"
pass "writer committing through $VIP ($(acks) acknowledged so far)"

step "2. partition only $P <-> $S: no promotion"
CUT=$P; cut_link "$P" "$S"
t=$SECONDS; promoted=""
while [ $((SECONDS - t)) -lt 20 ]; do
  [ "$(in_recovery "$S")" = t ] || { promoted=yes; break; }
  sleep 1
done
vip_holder=$(vip_holder)
heal_link "$P" "$S"; CUT=""; t_heal=$SECONDS
[ -z "$promoted" ] || fail "the standby $S was promoted although the witnesses saw the primary"
[ "$vip_holder" = "$P" ] || fail "floating IP on '$vip_holder' during the partition (want $P)"
pass "20 s cut off from each other: $S stayed standby, $P kept the floating IP"
P2=$(wait_pair 90) || fail "pair not healthy after the heal: $(pair_state)"
[ "$P2" = "$P" ] || fail "primary changed to $P2 after a link partition"
# The standby may promote only if it saw itself as the live synchronous standby within the
# sync window (DB-FAILOVER.md): wait until its supervisor says so again before the kill, else
# the kill lands in the seconds after the heal in which it rightly refuses (seen on PG 17).
t=$SECONDS
until hssh "$S" "journalctl -u heir-db --since '-$((SECONDS - t_heal + 2))s' --no-pager -o cat" 2>/dev/null | grep -q '(eligible)'; do
  [ $((SECONDS - t)) -lt 30 ] || fail "$S not eligible for promotion 30 s after the heal"
  sleep 0.5
done
pass "healed: $S streams synchronously again and is eligible for promotion"

step "3. docker kill $P (the primary's host)"
before=$(acks)
# Time from just before the kill; only commits issued after `docker kill` returned count (one
# issued just before may still be acknowledged by the dying primary).
t0=$(now); KILLED="$P"
docker kill "$P" > /dev/null
t_kill=$(now)
resumed=""
for _ in $(seq 1 600); do
  resumed=$(first_ack_after "$t_kill") && [ -n "$resumed" ] && break
  sleep 0.1
done
[ -n "$resumed" ] || fail "no write acknowledged through $VIP within 60 s of the kill ($(pair_state))"
T_FAILOVER=$(awk -v a="$resumed" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
[ "$(in_recovery "$S")" = f ] || fail "$S is not the primary after the failover"
[ "$(vip_holder)" = "$S" ] || fail "floating IP not on $S after the failover"
pass "$S promoted and holds $VIP: writes acknowledged again $T_FAILOVER s after the kill ($before before the kill)"

step "Airflow through the failover: the smoke DAG runs"
scripts/smoke-dag.sh > "$OUT/smoke.log" 2>&1 || { tail -20 "$OUT/smoke.log"; fail "smoke DAG after the DB failover"; }
pass "smoke DAG succeeded on the new primary $S"

step "4. docker start $P: it rejoins as the synchronous standby"
t=$SECONDS
docker start "$P" > /dev/null; KILLED=""
P3=$(wait_pair 180) || fail "old primary $P did not rejoin: $(pair_state)"
[ "$P3" = "$S" ] || fail "primary is $P3 after the rejoin (want $S)"
pass "$P back as synchronous standby of $S in $((SECONDS - t)) s (pg_rewind)"

step "4b. an unfinished rejoin on $P: never started as is, copied afresh"
# What a crash in the middle of pg_rewind leaves: the rejoin mark beside the data directory.
# heir-db must not start that directory (pg_rewind may later call it "no rewind required",
# yet it cannot replay); it copies the primary (pg_basebackup) and follows it.
PGDATA_DIR=$(docker exec "$P" sh -c 'ls -d /var/lib/postgresql/*/main' | head -1)
# the rejoin of step 4 has finished (its own mark is gone) and heir-db has settled
for ((i = 0; i < 60; i++)); do docker exec "$P" test -e "$PGDATA_DIR.heir-rejoin" || break; sleep 1; done
sleep 3
t=$SECONDS
since=$(docker exec "$P" date '+%Y-%m-%d %H:%M:%S')
# kill -9 of the postmaster by its pid inside the container: `systemctl kill` of a unit would
# reach the same-named unit's processes in the other db container (cgroup v1 under Docker).
docker exec "$P" sh -c "echo 'a rejoin of this data directory has not finished' > $PGDATA_DIR.heir-rejoin && kill -9 \$(head -1 $PGDATA_DIR/postmaster.pid)"
for ((i = 0; ; i++)); do
  docker exec "$P" journalctl -u heir-db --since "$since" --no-pager 2>/dev/null | grep -q db_reinitialized && break
  [ "$i" -lt 120 ] || fail "no fresh copy on $P within 2 minutes (no db_reinitialized in heir-db's journal): $(pair_state)"
  sleep 1
done
P4=$(wait_pair 180) || fail "$P did not come back after an unfinished rejoin: $(pair_state)"
[ "$P4" = "$S" ] || fail "primary is $P4 after the fresh copy (want $S)"
! docker exec "$P" test -e "$PGDATA_DIR.heir-rejoin" || fail "the rejoin mark is still there"
pass "$P copied $S afresh (pg_basebackup) and is its synchronous standby again in $((SECONDS - t)) s"

step "5. no acknowledged commit lost"
stop_writer > "$OUT/writer.out"
n_acked=$(wc -l < "$OUT/acked")
missing=$(missing_acks "$OUT/acked")
[ "$missing" = 0 ] || fail "$missing of $n_acked acknowledged commits missing"
pass "$n_acked acknowledged commits, 0 missing ($(cat "$OUT/writer.out"))"
drop_acked_table

step "DB failover figures"
printf 'failover (kill -> write acknowledged) %s s | rejoin as sync standby | test %d s\n' "$T_FAILOVER" $((SECONDS - T_START))
