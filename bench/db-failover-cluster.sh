#!/usr/bin/env bash
# DB failover on the deployed local cluster (issue 4): each trial kills the primary's host
# (docker kill) while a writer commits through the floating IP, and measures from the kill to
#   promoted - the standby answers pg_is_in_recovery() = f
#   writes   - the first commit issued after the kill is acknowledged through the floating IP
# then starts the killed host again and waits until it streams as the synchronous standby
# (pg_rewind), so every trial starts from a healthy pair; the roles alternate.
# At the end every acknowledged commit must be in the database.
#
#   bench/db-failover-cluster.sh            TRIALS=20 (default)
# Prints median/p95; per-trial values go to bench/results/db-failover-cluster-<measure>.s
# Target: writes <= 10 s.
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
need_root
cd "$REPO_ROOT"
TRIALS=${TRIALS:-20}
OUT=$(mktemp -d /tmp/db-failover-cluster.XXXXXX)
RES=bench/results
mkdir -p "$RES"
mapfile -t DB < <(group_hosts db)
VIP=$(awk '/^heirflow_floating_ip:/ { print $2 }' "$INVENTORY_DIR/group_vars/all.yml")
WRITER_PID=""; KILLED=""
source "$(dirname "$0")/../tests/cluster/db-lib.sh"
cleanup() {
  [ -z "$KILLED" ] || docker start "$KILLED" > /dev/null 2>&1 || true
  stop_writer > /dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT
die_() { echo "ERROR: $*" >&2; exit 1; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

build_writer
start_writer "$OUT/acked"
wait_acks 50 60 || die_ "writer: no commits acknowledged through $VIP"
: > "$OUT/promoted"; : > "$OUT/writes"; : > "$OUT/rejoin"
for ((t = 1; t <= TRIALS; t++)); do
  P=$(wait_pair 240) || die_ "trial $t: pair not healthy: $(pair_state)"
  S=$(other_db "$P")
  wait_acks $(($(acks) + 20)) 60 || die_ "trial $t: writer stalled before the kill"
  # measured from just before the kill; only commits issued after it returned count
  t0=$(now); KILLED=$P
  docker kill "$P" > /dev/null
  t_kill=$(now)
  t_prom=""; t_w=""
  for _ in $(seq 1 600); do
    [ -n "$t_prom" ] || { [ "$(in_recovery "$S")" = f ] && t_prom=$(now); }
    [ -n "$t_w" ] || t_w=$(first_ack_after "$t_kill")
    [ -n "$t_prom" ] && [ -n "$t_w" ] && break
    sleep 0.1
  done
  [ -n "$t_w" ] || die_ "trial $t: no write acknowledged 60 s after the kill: $(pair_state)"
  t_start=$SECONDS
  docker start "$P" > /dev/null; KILLED=""
  P2=$(wait_pair 240) || die_ "trial $t: $P did not rejoin: $(pair_state)"
  [ "$P2" = "$S" ] || die_ "trial $t: primary is $P2, want $S"
  p=$(fsub "${t_prom:-$t_w}" "$t0"); w=$(fsub "$t_w" "$t0"); r=$((SECONDS - t_start))
  echo "$p" >> "$OUT/promoted"; echo "$w" >> "$OUT/writes"; echo "$r" >> "$OUT/rejoin"
  printf 'trial %2d: kill %s -> %s promoted %5s s  writes %5s s  (old primary back as sync standby %3d s after start)\n' \
    "$t" "$P" "$S" "$p" "$w" "$r"
done
stop_writer > "$OUT/writer.out"
n=$(wc -l < "$OUT/acked"); missing=$(missing_acks "$OUT/acked")
drop_acked_table

echo "# DB failover on the local cluster: docker kill of the primary's host, $TRIALS trials, $(nproc) cores, $(date -u +%F)"
for m in promoted writes rejoin; do
  cp "$OUT/$m" "$RES/db-failover-cluster-$m.s"
  python3 - "$m" "$OUT/$m" <<'PY'
import statistics, sys
v = sorted(float(x) for x in open(sys.argv[2]) if x.strip())
p95 = v[min(len(v) - 1, max(0, int(len(v) * 0.95 + 0.999) - 1))]
print(f"kill -> {sys.argv[1]:<8} median {statistics.median(v):6.2f} s  p95 {p95:6.2f} s  min {v[0]:6.2f}  max {v[-1]:6.2f}  (n={len(v)})")
PY
done
echo "acknowledged commits: $n, missing: $missing ($(cat "$OUT/writer.out"))"
[ "$missing" = 0 ] || die_ "$missing acknowledged commits missing"
