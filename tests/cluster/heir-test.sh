#!/usr/bin/env bash
# heir-supervisor on the deployed local cluster (issue 4), with real faults on the real Airflow
# deployment (scheduler_mode heir):
#   1. exactly one Airflow scheduler and one dag-processor run across the scheduler hosts
#      (processes on the hosts + job heartbeats in the Airflow DB);
#   2. kill -9 of the leader's supervisor → its child's process group is gone within 2 s, the
#      other host takes over (kill → lease, → SchedulerJob start, → first task queued), systemd
#      restarts the killed supervisor and it rejoins as standby;
#   3. partition (docker network disconnect) of the leader → it fences itself; the new leader's
#      lease starts only after the old child stopped (one clock: the shared kernel's realtime);
#      the network is healed (also on failure, in a trap) and the member rejoins;
#   4. SIGTERM (systemctl restart) of the leader hands over in < 2 s, watched from the operator's
#      terminal: `heir-supervisor interface` on the controller (in tmux, through the floating IP
#      and the news exchange) shows the old leader, then the new leader and epoch and the news
#      event of the takeover, never a password; `q` quits it;
# and the cluster is healthy again at the end. Prints the measured times.
# usage: tests/cluster/heir-test.sh        (needs the deployed local cluster; runs as root)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/heir-lib.sh"
need_root
cd "$REPO_ROOT"
T_START=$SECONDS
OUT=$(mktemp -d /tmp/heirflow-heir-test.XXXXXX)
mapfile -t SCHED < <(group_hosts scheduler)
[ "${#SCHED[@]}" -eq 2 ] || fail "want 2 scheduler hosts, inventory has ${#SCHED[@]}"
other() { [ "$1" = "${SCHED[0]}" ] && echo "${SCHED[1]}" || echo "${SCHED[0]}"; }
CUT=""    # container currently disconnected (healed by the trap)
heal() {
  if [ -n "$CUT" ]; then
    docker network connect --ip "$(host_ip "$CUT")" "$HF_NETWORK" "$CUT" 2>/dev/null || true
    echo "healed: $CUT reconnected to $HF_NETWORK" >&2
    CUT=""
  fi
}
cleanup() {
  heal
  jobs -p | xargs -r kill 2>/dev/null || true
  hpsql "update dag set is_paused = false where dag_id = 'heirflow_smoke'" > /dev/null 2>&1 || true
  ui_stop
}
trap cleanup EXIT
budget() { [ $((SECONDS - T_START)) -lt 300 ] || fail "time budget of 300 s exceeded"; }
declare -A R   # results

# one_active GROUP: exactly one active child across the scheduler hosts, on the leader; prints it
one_active() {
  local g=$1 h n total=0 where=""
  for h in "${SCHED[@]}"; do
    n=$(active_count "$h" "$g"); total=$((total + n))
    if [ "$n" -gt 0 ]; then where="$where $h"; fi
  done
  [ "$total" -eq 1 ] || { for h in "${SCHED[@]}"; do echo "$h: $(heir_procs "$h" "$g" | tr '\n' ';')" >&2; done; return 1; }
  echo "${where# }"
}

healthy() {  # both groups: 2 live members and a leader whose host runs the only active child
  local g s live leader epoch st host i
  for g in scheduler dag-processor; do
    s=$(wait_group "$g" 2 90 "${SCHED[@]}") || fail "group $g not healthy: $s"
    read -r live leader epoch st <<< "$s"
    # a freshly (re)started leader may still be importing Airflow: give it up to 60 s
    for ((i = 0; ; i++)); do
      host=$(one_active "$g" 2>"$OUT/one-active.err") && break
      [ "$i" -lt 30 ] || { cat "$OUT/one-active.err" >&2; fail "group $g: not exactly one active $g process"; }
      sleep 2
    done
    [ "$host" = "$leader" ] || fail "group $g: leader $leader but the active process runs on $host"
    pass "group $g: $live members ($st), epoch $epoch; the only active airflow $g runs on $leader"
  done
}

# prepare_run HOST: pause heirflow_smoke and trigger a run (it waits until unpaused); prints run id
prepare_run() {
  local run="heirtest-$(date +%Y%m%dT%H%M%S)-$RANDOM"
  hpsql "update dag set is_paused = true where dag_id = 'heirflow_smoke'" > /dev/null
  hssh "$1" "$AIRFLOW_CMD dags trigger heirflow_smoke -r $run > /dev/null 2>&1" || fail "triggering heirflow_smoke on $1"
  echo "$run"
}
unpause() { hpsql "update dag set is_paused = false where dag_id = 'heirflow_smoke'" > /dev/null; }

# watch_gone HOST PGID FILE: in the background, the realtime instant the process group is gone
watch_gone() {
  timeout 30 docker exec "$1" sh -c "while pgrep -g $2 > /dev/null; do sleep 0.01; done; date +%s.%N" > "$3" 2>/dev/null &
}
wait_file() { local end=$((SECONDS + $2)); until [ -s "$1" ]; do [ $SECONDS -lt $end ] || return 1; sleep 0.1; done; }
wait_sql() {  # wait_sql TIMEOUT SQL: until SQL returns a non-empty value; prints it
  local end=$((SECONDS + $1)) v
  while [ $SECONDS -lt $end ]; do
    v=$(hpsql "$2" 2>/dev/null || true)
    [ -n "$v" ] && { echo "$v"; return 0; }
    sleep 0.3
  done
  return 1
}
leader_is() {  # leader_is GROUP HOST TIMEOUT: until HOST leads GROUP (status asked via HOST first)
  local end=$((SECONDS + $3)) s
  while [ $SECONDS -lt $end ]; do
    s=$(group_summary "$(heir_status "$2" "${SCHED[@]}" || echo '{"groups":[]}')" "$1")
    [ "$(awk '{print $2}' <<< "$s")" = "$2" ] && return 0
    sleep 0.2
  done
  return 1
}

step "1. exactly one scheduler and one dag-processor"
healthy
adv=$(jobs_advancing 20)
for t in SchedulerJob DagProcessorJob; do
  hb=$(awk -v t="$t" '$1 == t { print $2 }' <<< "$adv" | sort -u)
  [ "$(grep -c . <<< "$hb")" -eq 1 ] || fail "$t heartbeating on: [$(echo $hb)] (want exactly one host)"
  pass "$t: exactly one job heartbeating (on $hb)"
done
budget

step "2. kill -9 of the leader's supervisor"
L=$(group_summary "$(heir_status "${SCHED[@]}")" scheduler | awk '{print $2}'); O=$(other "$L")
pg=$(heir_procs "$L" scheduler | awk '$2 == "active" { print $1 }')
[ -n "$pg" ] || fail "no active scheduler child on the leader $L"
read -r ep0 _ <<< "$(lease_acquired scheduler)"
run=$(prepare_run "$O")
watch_gone "$L" "$pg" "$OUT/gone"
t_kill=$(hssh "$L" "pkill -9 -f 'heir-supervisor run --group schedule[r]'; date +%s.%N")
unpause
wait_file "$OUT/gone" 10 || fail "child process group $pg still alive on $L 10 s after kill -9 of its supervisor"
R[kill_gone]=$(fsub "$(cat "$OUT/gone")" "$t_kill")
flt "${R[kill_gone]}" 2 || fail "child group gone only ${R[kill_gone]} s after the kill (want < 2 s)"
pass "old scheduler process group $pg on $L gone ${R[kill_gone]} s after kill -9"
leader_is scheduler "$O" 30 || fail "$O did not take over within 30 s"
read -r ep1 t_lease _ <<< "$(lease_acquired scheduler)"
[ "$ep1" -gt "$ep0" ] || fail "epoch did not increase ($ep0 → $ep1)"
R[kill_lease]=$(fsub "$t_lease" "$t_kill")
pass "$O leads scheduler (epoch $ep0 → $ep1): lease ${R[kill_lease]} s after the kill"
t_job=$(wait_sql 60 "select extract(epoch from min(start_date)) from job where job_type = 'SchedulerJob' and hostname like '$O%' and start_date > to_timestamp($t_kill) having count(*) > 0") \
  || fail "no new SchedulerJob on $O within 60 s"
R[kill_job]=$(fsub "$t_job" "$t_kill")
pass "new SchedulerJob on $O ${R[kill_job]} s after the kill"
t_q=$(wait_sql 60 "select extract(epoch from min(queued_dttm)) from task_instance where dag_id = 'heirflow_smoke' and run_id = '$run' having count(queued_dttm) > 0") \
  || fail "no task of $run queued within 60 s"
R[kill_queued]=$(fsub "$t_q" "$t_kill")
pass "first task of $run queued ${R[kill_queued]} s after the kill"
n=$(active_count "$L" scheduler); [ "$n" -eq 0 ] || fail "$L runs $n active scheduler(s) after losing the lead"
s=$(wait_group scheduler 2 60 "${SCHED[@]}") || fail "killed supervisor on $L did not rejoin: $s"
read -r _ leader _ st <<< "$s"
[ "$leader" = "$O" ] || fail "leader changed to $leader after $L rejoined"
pass "systemd restarted the supervisor on $L: rejoined as standby ($st)"
budget

step "3. partition: docker network disconnect the leader"
L=$O; O=$(other "$L")
# wait until the standby's warm child is ready again (it may still be importing Airflow)
for ((i = 0; i < 60; i++)); do heir_procs "$O" scheduler | grep -q standby && break; sleep 0.5; done
groups_led=()
for g in scheduler dag-processor; do
  if [ "$(group_summary "$(heir_status "${SCHED[@]}")" "$g" | awk '{print $2}')" = "$L" ]; then groups_led+=("$g"); fi
done
declare -A PG EP
for g in "${groups_led[@]}"; do
  PG[$g]=$(heir_procs "$L" "$g" | awk '$2 == "active" { print $1 }')
  [ -n "${PG[$g]}" ] || fail "no active $g child on its leader $L"
  read -r EP[$g] _ <<< "$(lease_acquired "$g")"
  watch_gone "$L" "${PG[$g]}" "$OUT/gone-$g"
done
t_cut=$(now); CUT=$L
docker network disconnect "$HF_NETWORK" "$L"
for g in "${groups_led[@]}"; do
  wait_file "$OUT/gone-$g" 15 || fail "$g child on the cut-off $L still runs 15 s after the partition"
  t_gone=$(cat "$OUT/gone-$g")
  leader_is "$g" "$O" 30 || fail "$O did not take over $g within 30 s of the partition"
  read -r ep t_lease _ <<< "$(lease_acquired "$g")"
  [ "$ep" -gt "${EP[$g]}" ] || fail "$g epoch did not increase"
  R[part_${g}_fenced]=$(fsub "$t_gone" "$t_cut"); R[part_${g}_lease]=$(fsub "$t_lease" "$t_cut")
  R[part_${g}_gap]=$(fsub "$t_lease" "$t_gone")
  flt "$t_gone" "$t_lease" || fail "$g: new lease at $t_lease but the old child stopped only at $t_gone"
  pass "$g: $L fenced its child ${R[part_${g}_fenced]} s after the cut; $O took the lease ${R[part_${g}_lease]} s after the cut, ${R[part_${g}_gap]} s after the old child stopped"
  n=$(active_count "$L" "$g"); [ "$n" -eq 0 ] || fail "cut-off $L still runs $n active $g"
done
[ "${#groups_led[@]}" -gt 0 ] || fail "$L led no group?"
for g in scheduler dag-processor; do
  # the new leader's child needs a few seconds after "go" to open its DB connections
  for ((i = 0; ; i++)); do
    h=$(one_active "$g" 2>"$OUT/one-active.err") && break
    [ "$i" -lt 15 ] || { cat "$OUT/one-active.err" >&2; fail "$g: not exactly one active process during the partition"; }
    sleep 2
  done
  [ "$h" = "$O" ] || fail "$g runs on $h during the partition (want $O)"
done
pass "during the partition: exactly one scheduler and one dag-processor, both on $O"
heal
for g in scheduler dag-processor; do
  s=$(wait_group "$g" 2 60 "${SCHED[@]}") || fail "$L did not rejoin $g after the heal: $s"
  pass "healed: $g back to 2 members ($(awk '{print $4}' <<< "$s"))"
done
budget

step "4. SIGTERM (systemctl restart) of the leader hands over"
L=$(group_summary "$(heir_status "${SCHED[@]}")" scheduler | awk '{print $2}'); O=$(other "$L")
for ((i = 0; i < 60; i++)); do heir_procs "$O" scheduler | grep -q standby && break; sleep 0.5; done
read -r ep0 _ <<< "$(lease_acquired scheduler)"
ui_start "$OUT"
ui_wait 20 "scheduler — leader $L · epoch $ep0" "db: ok · news: signed only · amqps://heirnews:\\*\\*\\*@.* key succession\\.scheduler" \
  || { ui_screen >&2; fail "the interface does not show $L leading epoch $ep0 with db and news connected"; }
pass "interface (operator's terminal): scheduler led by $L, epoch $ep0; db ok, signed news subscribed"
t_term=$(hssh "$L" "date +%s.%N; systemctl restart airflow-scheduler" | head -1)
leader_is scheduler "$O" 30 || fail "$O did not take over after SIGTERM of $L"
read -r ep1 t_lease _ <<< "$(lease_acquired scheduler)"
[ "$ep1" -gt "$ep0" ] || fail "epoch did not increase"
R[term_lease]=$(fsub "$t_lease" "$t_term")
flt "${R[term_lease]}" 2 || fail "SIGTERM handover took ${R[term_lease]} s (want < 2 s)"
pass "SIGTERM on $L: $O took the lease ${R[term_lease]} s later"
ui_wait 10 "scheduler — leader $O · epoch $ep1" "scheduler +leader +$O +e$ep1 took the lease" \
  || { ui_screen >&2; fail "the interface does not show the takeover by $O (epoch $ep1)"; }
# Someone with only the news vhost's password publishes a takeover: unsigned, then with a
# made-up signature. The interface counts both and shows neither.
q1=$(group_hosts queue | head -1)
for sig in "" "$(printf '%064d' 0)"; do
  HEIR_NEWS_CA_FILE="$INVENTORY_DIR/.secrets/tls/ca.crt" "$REPO_ROOT/target/release/examples/news_forge" "$(cat "$OUT/ui.news")" heirflow.news scheduler mallory $sig > /dev/null \
    || fail "news_forge could not publish to $q1"
done
ui_wait 10 "news: signed only, 2 rejected \\(unsigned or forged\\)" \
  || { ui_screen >&2; fail "the interface did not count the 2 forged events as rejected"; }
! ui_screen | grep -q mallory || { ui_screen >&2; fail "the interface shows a forged event"; }
pass "interface: 2 forged takeover events (unsigned, bad signature) rejected and counted, not shown"
! ui_screen | grep -qF -- "$(cat "$INVENTORY_DIR/.secrets/rabbitmq_news_password")" || fail "the interface shows the news password"
! ui_screen | grep -qF -- "$(cat "$INVENTORY_DIR/.secrets/postgres_heir_registry_password")" || fail "the interface shows the DB password"
tmux send-keys -t "$UI_SESSION" q
ui_wait 5 "interface exited: 0" || { ui_screen >&2; fail "q did not quit the interface"; }
pass "interface: $O leads, epoch $ep1, news event of the takeover shown; q quits"
ui_stop
budget

step "final: cluster healthy"
healthy
hb=$(jobs_advancing 20 | awk '$1 == "SchedulerJob" { print $2 }' | sort -u)
[ "$(grep -c . <<< "$hb")" -eq 1 ] || fail "SchedulerJob heartbeating on: [$(echo $hb)]"
pass "one SchedulerJob heartbeating (on $hb)"

step "measured (seconds)"
for k in $(printf '%s\n' "${!R[@]}" | sort); do printf '  %-36s %s\n' "$k" "${R[$k]}"; done
echo "  total test time                      $((SECONDS - T_START))"
rm -rf "$OUT"
