#!/usr/bin/env bash
# Scheduler takeover on the deployed local cluster (heir mode, issue 4), real Airflow: each trial
# pauses heirflow_smoke, triggers a run (it cannot start while paused), kill -9s the scheduler
# leader's heir-supervisor, unpauses at once, and measures from the kill (one clock: the kernel
# the containers share) to
#   gone   - the old child's process group has vanished on the old leader's host
#   lease  - the other host took the lease (heirflow_leases.acquired_at)
#   job    - the new SchedulerJob started (job.start_date = its first heartbeat)
#   queued - the first task of the new run was queued (task_instance.queued_dttm)
# then waits until systemd restarted the killed supervisor and it rejoined (warm) as standby.
#
#   bench/heir-takeover.sh            TRIALS=20 (default)
#   MODE=native bench/heir-takeover.sh
#     for comparison, on a cluster deployed with -e scheduler_mode=native (both schedulers
#     active): kill -9 of one host's `airflow scheduler` processes (alternating hosts), measure
#     kill -> queued only (the other scheduler goes on: this is native mode's scheduling gap).
#     bench/scheduler-gap.sh runs both modes, redeploying in between.
# Prints median/p95 per measure; per-trial values go to bench/results/<mode>-takeover-<measure>.s
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
source "$(dirname "$0")/../tests/cluster/heir-lib.sh"
need_root
cd "$REPO_ROOT"
TRIALS=${TRIALS:-20}
OUT=$(mktemp -d /tmp/heir-takeover.XXXXXX)
RES=bench/results
mkdir -p "$RES"
mapfile -t SCHED < <(group_hosts scheduler)
other() { [ "$1" = "${SCHED[0]}" ] && echo "${SCHED[1]}" || echo "${SCHED[0]}"; }
cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  hpsql "update dag set is_paused = false where dag_id = 'heirflow_smoke'" > /dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT
die_() { echo "ERROR: $*" >&2; exit 1; }
wait_sql() {
  local end=$((SECONDS + $1)) v
  while [ $SECONDS -lt $end ]; do
    v=$(hpsql "$2" 2>/dev/null || true)
    [ -n "$v" ] && { echo "$v"; return 0; }
    sleep 0.2
  done
  return 1
}
MODE=${MODE:-heir}
MEASURES="gone lease job queued"
NATIVE_TRIALS=0; HEIR_TRIALS=$TRIALS
[ "$MODE" = native ] && { MEASURES="queued"; NATIVE_TRIALS=$TRIALS; HEIR_TRIALS=0; }
for m in $MEASURES; do : > "$OUT/$m"; done

alive_schedulers() {
  hpsql "select count(distinct hostname) from job where job_type = 'SchedulerJob' and state = 'running' and latest_heartbeat > now() - interval '15 seconds'"
}
for ((t = 1; t <= NATIVE_TRIALS; t++)); do
  for ((i = 0; i < 240; i++)); do [ "$(alive_schedulers)" -ge 2 ] && break; sleep 0.5; done
  [ "$(alive_schedulers)" -ge 2 ] || die_ "trial $t: want 2 schedulers heartbeating (deployed with -e scheduler_mode=native?)"
  L=${SCHED[$((t % 2))]}; O=$(other "$L")
  run="nativebench-$(date +%Y%m%dT%H%M%S)-$t"
  hpsql "update dag set is_paused = true where dag_id = 'heirflow_smoke'" > /dev/null
  hssh "$O" "$AIRFLOW_CMD dags trigger heirflow_smoke -r $run > /dev/null 2>&1" || die_ "trigger failed"
  t_kill=$(hssh "$L" "pkill -9 -f '[a]irflow scheduler'; date +%s.%N")
  hpsql "update dag set is_paused = false where dag_id = 'heirflow_smoke'" > /dev/null
  t_q=$(wait_sql 90 "select extract(epoch from min(queued_dttm)) from task_instance where dag_id = 'heirflow_smoke' and run_id = '$run' having count(queued_dttm) > 0") || die_ "trial $t: nothing queued"
  q=$(fsub "$t_q" "$t_kill"); echo "$q" >> "$OUT/queued"
  printf 'trial %2d: kill -9 scheduler on %s (%s goes on)  queued %5s s\n' "$t" "$L" "$O" "$q"
  # systemd restarts the killed scheduler: wait for a SchedulerJob started on L after the kill
  # (the killed one's row still looks alive for up to 15 s)
  wait_sql 180 "select 1 from job where job_type = 'SchedulerJob' and hostname like '$L%' and start_date > to_timestamp($t_kill) and latest_heartbeat > now() - interval '15 seconds' limit 1" > /dev/null \
    || die_ "trial $t: the killed scheduler on $L did not come back within 180 s"
done

for ((t = 1; t <= HEIR_TRIALS; t++)); do
  s=$(wait_group scheduler 2 120 "${SCHED[@]}") || die_ "scheduler group not healthy: $s"
  L=$(awk '{print $2}' <<< "$s"); O=$(other "$L")
  # the standby's warm child must be ready (imports done), as in steady state
  for ((i = 0; i < 120; i++)); do heir_procs "$O" scheduler | grep -q standby && break; sleep 0.5; done
  pg=$(heir_procs "$L" scheduler | awk '$2 == "active" { print $1 }')
  [ -n "$pg" ] || die_ "no active scheduler on the leader $L"
  read -r ep0 _ <<< "$(lease_acquired scheduler)"
  run="heirbench-$(date +%Y%m%dT%H%M%S)-$t"
  hpsql "update dag set is_paused = true where dag_id = 'heirflow_smoke'" > /dev/null
  hssh "$O" "$AIRFLOW_CMD dags trigger heirflow_smoke -r $run > /dev/null 2>&1" || die_ "trigger failed"
  rm -f "$OUT/gone.t"
  timeout 30 docker exec "$L" sh -c "while pgrep -g $pg > /dev/null; do sleep 0.01; done; date +%s.%N" > "$OUT/gone.t" &
  sleep 0.3
  t_kill=$(hssh "$L" "pkill -9 -f 'heir-supervisor run --group schedule[r]'; date +%s.%N")
  hpsql "update dag set is_paused = false where dag_id = 'heirflow_smoke'" > /dev/null
  wait
  [ -s "$OUT/gone.t" ] || die_ "trial $t: the old scheduler group $pg still runs on $L 30 s after the kill"
  t_lease=""
  for ((i = 0; i < 150; i++)); do
    read -r ep tl holder <<< "$(lease_acquired scheduler)"
    if [ "$ep" -gt "$ep0" ] && [ "$holder" = "$O" ]; then t_lease=$tl; break; fi
    sleep 0.2
  done
  [ -n "$t_lease" ] || die_ "trial $t: no takeover by $O"
  t_job=$(wait_sql 90 "select extract(epoch from min(start_date)) from job where job_type = 'SchedulerJob' and hostname like '$O%' and start_date > to_timestamp($t_kill) having count(*) > 0") || die_ "trial $t: no SchedulerJob"
  t_q=$(wait_sql 90 "select extract(epoch from min(queued_dttm)) from task_instance where dag_id = 'heirflow_smoke' and run_id = '$run' having count(queued_dttm) > 0") || die_ "trial $t: nothing queued"
  g=$(fsub "$(cat "$OUT/gone.t")" "$t_kill"); l=$(fsub "$t_lease" "$t_kill"); j=$(fsub "$t_job" "$t_kill"); q=$(fsub "$t_q" "$t_kill")
  echo "$g" >> "$OUT/gone"; echo "$l" >> "$OUT/lease"; echo "$j" >> "$OUT/job"; echo "$q" >> "$OUT/queued"
  printf 'trial %2d: %s -> %s  gone %5s  lease %5s  job %5s  queued %5s s\n' "$t" "$L" "$O" "$g" "$l" "$j" "$q"
done

if [ "$MODE" = native ]; then
  echo "# native mode on the local cluster: kill -9 of one of the 2 active schedulers, $TRIALS trials, $(nproc) cores, $(date -u +%F)"
else
  echo "# heir takeover on the local cluster: kill -9 of the scheduler leader's heir-supervisor, $TRIALS trials, $(nproc) cores, $(date -u +%F)"
fi
for m in $MEASURES; do
  cp "$OUT/$m" "$RES/$MODE-takeover-$m.s"
  python3 - "$m" "$OUT/$m" <<'PY'
import statistics, sys
v = sorted(float(x) for x in open(sys.argv[2]) if x.strip())
p95 = v[min(len(v) - 1, max(0, int(len(v) * 0.95 + 0.999) - 1))]
print(f"kill -> {sys.argv[1]:<7} median {statistics.median(v):6.2f} s  p95 {p95:6.2f} s  min {v[0]:6.2f}  max {v[-1]:6.2f}  (n={len(v)})")
PY
done
