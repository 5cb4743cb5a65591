#!/usr/bin/env bash
# The demo DAG model_select on the deployed local cluster (issue 14):
#   1. a run succeeds, its tasks ran on >= 2 workers, its result equals heirflow_demo.model's
#      single-process computation (run on the controller);
#   2. a second run with a worker host killed (docker kill) in the middle still succeeds, and the
#      KV ring still serves every key whose task had succeeded before the kill (each task's XCom
#      names the key it wrote and its value; a put returned only after WAIT reached a replica);
#   3. the killed host comes back (docker start): its Redis nodes rejoin the ring, its Celery
#      worker answers again, so later tests start from a whole cluster.
# usage: tests/cluster/model-select-test.sh   (cluster up and deployed)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
KILLED="" OUT=""
cleanup() {
  [ -z "$OUT" ] || rm -f "$OUT"
  [ -z "$KILLED" ] || docker start "$KILLED" > /dev/null 2>&1 || true
}
trap cleanup EXIT
now_s() { date +%s; }
REFERENCE=$(python3 roles/airflow-common/files/dags/heirflow_demo/model.py)

same_result() {  # same_result RUN_ID: the run's final XCom equals the single-process result
  python3 - "$(model_select_result "$1")" "$REFERENCE" <<'PY'
import json, math, sys
got, want = json.loads(sys.argv[1]), json.loads(sys.argv[2])
got.pop("key", None)
def close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b
if not close(got, want):
    sys.exit(f"DAG result {got}\n != single-process {want}")
print(f"{got['features']}, cv rmse {got['cv_rmse']:.3f}")
PY
}

step "model_select: result equals the single-process computation, tasks on >= 2 workers"
t=$(now_s)
run_a=$(scripts/model-select.sh --print-run-id | tail -1) || fail "model_select run failed"
T_A=$(($(now_s) - t))
same=$(same_result "$run_a") || fail "$same"
IFS='|' read -r ntasks nhosts <<< "$(hpsql "select count(*), count(distinct hostname) from task_instance where dag_id = 'model_select' and run_id = '$run_a' and state = 'success'")"
[ "$nhosts" -ge 2 ] || fail "model_select's $ntasks tasks ran on $nhosts worker(s)"
pass "model_select in $T_A s: $ntasks tasks on $nhosts workers, result = single process: $same"

step "model_select with a worker host killed in the middle"
run_b="model-select-kill-$(date +%Y%m%dT%H%M%S)-$$"
OUT=$(mktemp); ( run_dag model_select "$run_b" 900 > "$OUT" 2>&1; echo "rc=$?" >> "$OUT" ) &
RUNNER=$!
# kill once round 2 is decided (round 1's scores and two states are in the ring, round 3 runs)
for ((i = 0; ; i++)); do
  [ "$(hpsql "select state from task_instance where dag_id = 'model_select' and run_id = '$run_b' and task_id = 'reduce_2'")" = success ] && break
  [ "$i" -lt 300 ] || fail "reduce_2 of $run_b did not succeed within 10 minutes"
  sleep 2
done
victim=$(hpsql "select hostname from task_instance where dag_id = 'model_select' and run_id = '$run_b' and hostname like '%worker%' order by start_date desc limit 1")
[ -n "$victim" ] || fail "no worker ran a task of $run_b"
victim=${victim%%.*}
# every finished task's XCom names the key it wrote and its value (score: return value; start
# and reduce: "state")
SNAPSHOT=$(hpsql "select value from xcom where dag_id = 'model_select' and run_id = '$run_b' and key in ('return_value', 'state')" | grep '"key"' || true)
nkeys=$(grep -c '"key"' <<< "$SNAPSHOT" || true)
[ "$nkeys" -ge 10 ] || fail "only $nkeys task results in the ring before the kill"
docker kill "$victim" > /dev/null; KILLED=$victim; t_kill=$(now_s)
echo "killed $victim with $nkeys task results already in the ring" >&2
wait "$RUNNER" || true
cat "$OUT" >&2
grep -q '^rc=0$' "$OUT" || fail "model_select run $run_b did not succeed after $victim was killed"
T_B=$(($(now_s) - t_kill))
same=$(same_result "$run_b") || fail "after the kill: $same"
pass "run $run_b succeeded $T_B s after the kill of $victim; result = single process"

step "the ring still serves every key written by a task that succeeded before the kill"
survivor=$(group_hosts worker | grep -vx "$victim" | head -1)
check=$(hssh "$survivor" "cd / && sudo -u airflow /opt/airflow/venv/bin/python -c '
import json, sys
sys.path.insert(0, \"$HF_DAG_MOUNT\")
from heirflow_demo import kv
ring, bad, n = kv.ring(), [], 0
for line in sys.stdin:
    d = json.loads(line)
    want = d[\"value\"] if \"value\" in d else d[\"state\"] if \"state\" in d else {k: v for k, v in d.items() if k != \"key\"}
    n += 1
    got = ring.get(d[\"key\"])
    if got != want:
        bad.append(\"%s: %r != %r\" % (d[\"key\"], got, want))
print(\"%d keys checked, %d wrong or missing\" % (n, len(bad)))
print(\"\\n\".join(bad[:5]))
'" <<< "$SNAPSHOT") || fail "KV check on $survivor: $check"
grep -q "^$nkeys keys checked, 0 wrong or missing" <<< "$check" || fail "KV after the kill: $check"
pass "KV ring after losing $victim: $(head -1 <<< "$check")"

step "$victim back: its Redis nodes rejoin, its worker answers"
docker start "$victim" > /dev/null; KILLED=""
for ((i = 0; ; i++)); do
  nodes=$(hssh "$survivor" "REDISCLI_AUTH=\$(python3 -c 'import json; print(json.load(open(\"/etc/heirflow/kv.json\"))[\"password\"])') redis-cli --no-auth-warning -h $(host_ip "$survivor") -p 7000 cluster nodes" 2>/dev/null || true)
  down=$(grep -cE 'fail|disconnected' <<< "$nodes" || true)
  [ -n "$nodes" ] && [ "$down" = 0 ] && break
  [ "$i" -lt 90 ] || fail "Redis nodes still failed/disconnected 3 minutes after docker start: $(grep -E 'fail|disconnected' <<< "$nodes" | cut -c1-120)"
  sleep 2
done
for ((i = 0; ; i++)); do
  pong=$(celery_pong "$survivor" 5)
  [ "$pong" -eq "$(group_hosts worker | wc -l)" ] && break
  [ "$i" -lt 36 ] || fail "celery inspect ping: $pong workers answer 3 minutes after docker start of $victim"
  sleep 5
done
pass "$victim back: $(grep -c master <<< "$nodes") masters, $(grep -c slave <<< "$nodes") replicas, all connected; $pong workers answer"
