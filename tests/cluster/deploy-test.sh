#!/usr/bin/env bash
# Cluster integration test (issue 3): local cluster up -> hfplay deploys playbooks/site.yml ->
# every component is redundant -> a 16-task DAG succeeds on >= 2 workers -> a second run and a
# --check run report changed=0 on every host -> least privilege (tests/cluster/least-privilege-test.sh)
# -> TLS (tests/cluster/tls-test.sh) -> the UI's FAB login in a headless browser (tests/cluster/ui-login-test.sh)
# -> the demo DAG model_select equals its
# single-process result and survives a worker host kill (tests/cluster/model-select-test.sh) -> heir-supervisor under real faults (issue 4,
# tests/cluster/heir-test.sh) -> automatic DB failover under real faults (tests/cluster/db-test.sh)
# -> one fault of each kind on each component class while DAGs run, with the invariants
# (tests/cluster/chaos-test.sh) -> a worker, a scheduler host and a queue node added and removed,
# then airflow.cfg rolled, while DAGs run (tests/cluster/scale-test.sh) -> make local-down leaves
# nothing behind.
# usage: tests/cluster/deploy-test.sh [--keep]   (--keep: leave the cluster up at the end)
# Prints the timings it measured; exits non-zero at the first failed check.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
KEEP=0; [ "${1:-}" = --keep ] && KEEP=1
OUT=$(mktemp -d /tmp/heirflow-deploy-test.XXXXXX)
cd "$REPO_ROOT"

secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

step "build hfplay"
cargo build --release -q --workspace --bins --examples

step "local cluster up"
t=$(now); make -s local-up > "$OUT/up.log" 2>&1 || { tail -30 "$OUT/up.log"; fail "make local-up"; }
T_UP=$(secs "$t"); pass "cluster up in $T_UP s"

step "deploy: hfplay playbooks/site.yml -i inventory/local"
t=$(now)
# Every command line of the machine (controller and every cluster host: containers share the
# kernel) is sampled during the deploy; none may hold a secret (checked once the secrets exist).
( while :; do ps -eww -o args=; sleep 0.1; done | awk '!seen[$0]++' > "$OUT/cmdlines.txt" ) &
SAMPLER=$!
# The task banners and anything not "ok"/"skipping" stream to the log as they happen, so a CI
# log shows where a slow deploy is (hfplay prints "still running" lines for long tasks).
set +o pipefail
"$HFPLAY" playbooks/site.yml -i inventory/local 2>&1 | tee "$OUT/deploy.log" \
  | grep --line-buffered -Ev '^(ok|skipping): |^$'
rc=${PIPESTATUS[0]}; set -o pipefail
[ "$rc" = 0 ] || fail "deploy exited $rc (log: $OUT/deploy.log)"
T_DEPLOY=$(secs "$t"); pass "deployed in $T_DEPLOY s"

step "no secret on any command line during the deploy"
kill "$SAMPLER" 2>/dev/null; pkill -P "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
SECRETS_LIST=$(mktemp); chmod 600 "$SECRETS_LIST"
{
  for f in "$INVENTORY_DIR"/.secrets/*; do
    [ -f "$f" ] || continue
    cat "$f"; echo
    [[ "$f" != *fernet* ]] || { tr -d '\n' < "$f" | base64 -w0 | tr '+/' '-_'; echo; }   # the key derived from it
  done
  # the TLS private keys (CA and hosts): their PEM body lines
  cat "$INVENTORY_DIR"/.secrets/tls/*.key 2>/dev/null | grep -v -- '-----'
} | grep -v '^$' > "$SECRETS_LIST"
n_secrets=$(wc -l < "$SECRETS_LIST"); n_lines=$(wc -l < "$OUT/cmdlines.txt")
[ "$n_secrets" -ge 8 ] || fail "only $n_secrets secrets found under $INVENTORY_DIR/.secrets"
[ "$n_lines" -ge 100 ] || fail "the sampler saw only $n_lines command lines"
if grep -F -f "$SECRETS_LIST" "$OUT/cmdlines.txt" > "$OUT/leaks.txt"; then
  rm -f "$SECRETS_LIST"
  fail "secrets on command lines (the lines, masked): $(sed -E 's/[A-Za-z0-9]{16,}/<…>/g' "$OUT/leaks.txt" | head -5)"
fi
rm -f "$SECRETS_LIST"
pass "$n_lines distinct command lines seen during the deploy, none holds one of $n_secrets secrets"

step "redundancy"
# Services restarted by the deploy's handlers need a while to come up (api-servers ~30 s,
# workers and triggerers until their first heartbeat): each check is retried for up to 4 min.
eventually() {  # eventually CHECK_FUNCTION: retries it every 5 s for up to 240 s
  local i
  for ((i = 0; i < 48; i++)); do "$1" && return 0; sleep 5; done
  return 1
}
db_hosts=($(group_hosts db)); queue_hosts=($(group_hosts queue)); workers=($(group_hosts worker))
sync=$(hpsql "select count(*) from pg_stat_replication where state = 'streaming' and sync_state = 'sync'")
[ "$sync" -ge 1 ] || fail "no synchronous standby streaming (pg_stat_replication: $(hpsql 'select application_name, state, sync_state from pg_stat_replication'))"
pg_version=$(hpsql "show server_version")
[ "${pg_version%%.*}" = 17 ] || fail "PostgreSQL $pg_version (want 17)"
pass "PostgreSQL $pg_version: $sync synchronous standby streaming ($(hpsql "select application_name || ' ' || sync_state from pg_stat_replication"))"
running=$(hssh "${queue_hosts[0]}" "rabbitmqctl cluster_status --formatter json" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
[ "$running" -eq "${#queue_hosts[@]}" ] || fail "RabbitMQ: $running of ${#queue_hosts[@]} nodes running in the cluster"
rmq_version=$(hssh "${queue_hosts[0]}" "rabbitmqctl -q version")
[ "${rmq_version%%.*}" = 4 ] || fail "RabbitMQ $rmq_version (want 4.x)"
pass "RabbitMQ $rmq_version: $running nodes in one cluster"
api_hosts=($(group_hosts scheduler) $(group_hosts web))
api_check() {
  local h; api_ok=0
  for h in "${api_hosts[@]}"; do
    if hssh "$h" "curl -fsS -m 5 --cacert /etc/heirflow/tls/ca.crt https://127.0.0.1:8080/api/v2/monitor/health" > /dev/null 2>&1; then api_ok=$((api_ok + 1)); fi
  done
  [ "$api_ok" -eq "${#api_hosts[@]}" ]
}
eventually api_check; [ "$api_ok" -ge 2 ] || fail "only $api_ok api-servers healthy"
pass "api-servers healthy: $api_ok of ${#api_hosts[@]}"
alive() { hpsql "select count(distinct hostname) from job where job_type = '$1' and state = 'running' and latest_heartbeat > now() - interval '60 seconds'"; }
triggerers_check() { n=$(alive TriggererJob); [ "$n" -ge 2 ]; }
eventually triggerers_check || fail "triggerers alive: $n (want >= 2)"; pass "triggerers alive: $n"
# heir mode (default): every scheduler host registered in heir-supervisor's table, one leader
# per group; native mode: every scheduler's SchedulerJob heartbeating.
sched_hosts=($(group_hosts scheduler))
status=$(hssh "${sched_hosts[0]}" '. /etc/heirflow/heir-supervisor.env 2>/dev/null && export HEIR_DSN && heir-supervisor status --json' 2>/dev/null || true)
if [ -n "$status" ]; then
  for g in scheduler dag-processor; do
    read -r live leader < <(python3 -c 'import json,sys
d = json.loads(sys.argv[1]); g = [x for x in d["groups"] if x["group"] == sys.argv[2]]
print(sum(m["live"] for m in g[0]["members"]) if g else 0, (g[0]["leader"] or "-") if g else "-")' "$status" "$g")
    [ "$live" -ge "${#sched_hosts[@]}" ] || fail "heir group $g: $live live members (want ${#sched_hosts[@]})"
    [ "$leader" != "-" ] || fail "heir group $g has no leader"
    pass "heir group $g: $live members registered, leader $leader"
  done
  sched1_check() { n=$(alive SchedulerJob); [ "$n" -ge 1 ]; }
  eventually sched1_check || fail "no scheduler heartbeating"; pass "scheduler heartbeating: $n (the heir)"
else
  sched2_check() { n=$(alive SchedulerJob); [ "$n" -ge 2 ]; }
  eventually sched2_check || fail "schedulers alive: $n (want 2)"; pass "schedulers alive (native mode): $n"
fi
ping_check() {
  pong=$(celery_pong "${workers[0]}" 10)
  [ "$pong" -eq "${#workers[@]}" ]
}
eventually ping_check || fail "celery inspect ping: $pong of ${#workers[@]} workers answered"
pass "celery workers answering ping: $pong"

step "DAG heirflow_smoke (16 tasks) on the workers"
t=$(now)
run_id=$(scripts/smoke-dag.sh --print-run-id | tail -1) || fail "smoke DAG run failed"
T_DAG=$(secs "$t")
hosts=$(hpsql "select count(*), count(distinct hostname) from task_instance where dag_id = 'heirflow_smoke' and run_id = '$run_id' and state = 'success'")
IFS='|' read -r ntasks nhosts <<< "$hosts"
[ "$ntasks" -ge 10 ] || fail "only $ntasks successful task instances"
[ "$nhosts" -ge 2 ] || fail "all tasks ran on $nhosts worker(s)"
pass "$ntasks tasks succeeded on $nhosts different workers in $T_DAG s: $(hpsql "select string_agg(distinct hostname, ' ') from task_instance where dag_id = 'heirflow_smoke' and run_id = '$run_id'")"

check_zero() {  # check_zero FILE LABEL
  local bad
  bad=$(json_changed "$1" | awk '$2 != 0 || $3 != 0 || $4 != 0')
  if [ -n "$bad" ]; then
    python3 - "$1" <<'PY' >&2
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["plays"]:
    for t in p["tasks"]:
        for h, r in t["hosts"].items():
            if isinstance(r, dict) and (r.get("changed") or r.get("failed") or r.get("status") in ("changed", "failed")):
                print("  changed/failed:", h, "|", t["task"])
PY
    fail "$2: hosts with changes or failures: $bad"
  fi
}

step "second run: changed=0 on every host"
t=$(now); "$HFPLAY" playbooks/site.yml -i inventory/local --json > "$OUT/rerun.json" 2> "$OUT/rerun.err" || true
T_RERUN=$(secs "$t"); check_zero "$OUT/rerun.json" "re-run"; pass "re-run: changed=0 on $(json_changed "$OUT/rerun.json" | wc -l) hosts in $T_RERUN s"

step "--check: changed=0 on every host"
t=$(now); "$HFPLAY" playbooks/site.yml -i inventory/local --check --json > "$OUT/check.json" 2> "$OUT/check.err" || true
T_CHECK=$(secs "$t"); check_zero "$OUT/check.json" "--check"; pass "--check: changed=0 in $T_CHECK s"

step "least privilege: registry login and schema, superuser from db hosts, supervised commands, witnesses (tests/cluster/least-privilege-test.sh)"
"$TESTS_DIR/least-privilege-test.sh" || fail "least-privilege cluster test"

step "TLS: certificates, Postgres refuses plaintext / another CA / another name, every client on TLS (tests/cluster/tls-test.sh)"
"$TESTS_DIR/tls-test.sh" || fail "TLS cluster test"

step "the UI in a headless browser: HTTPS with the cluster CA, the FAB login, no development banner (tests/cluster/ui-login-test.sh)"
UI_LOGIN_OUT=${UI_LOGIN_OUT:-$(mktemp -d /tmp/heirflow-ui-login-test.XXXXXX)} "$TESTS_DIR/ui-login-test.sh" || fail "UI login browser test"

step "demo DAG model_select over the KV ring, a worker host killed (tests/cluster/model-select-test.sh)"
"$TESTS_DIR/model-select-test.sh" || fail "model_select cluster test"

step "heir-supervisor with real faults (tests/cluster/heir-test.sh)"
"$TESTS_DIR/heir-test.sh" || fail "heir-supervisor cluster test"

step "DB failover with real faults (tests/cluster/db-test.sh)"
"$TESTS_DIR/db-test.sh" || fail "DB failover cluster test"

step "bounded chaos run under running DAGs (tests/cluster/chaos-test.sh)"
"$TESTS_DIR/chaos-test.sh" || fail "chaos cluster test"

step "grow, shrink and roll the cluster under running DAGs (tests/cluster/scale-test.sh)"
"$TESTS_DIR/scale-test.sh" || fail "grow/shrink/roll cluster test"

if [ "$KEEP" = 1 ]; then
  echo "cluster kept (--keep)"
else
  step "make local-down leaves nothing"
  make -s local-down > "$OUT/down.log" 2>&1 || { tail -20 "$OUT/down.log"; fail "make local-down"; }
  left="$(docker ps -aq --filter "label=$HF_LABEL")$(docker network ls -q --filter "label=$HF_LABEL")$(docker volume ls -q --filter "label=$HF_LABEL")"
  left+="$(docker ps -aq --filter name='^hf-')$(docker network ls -q --filter name='^heirflow$')$(docker volume ls -q --filter name='^heirflow')"
  [ -z "$left" ] || fail "left behind: $left"
  pass "no container, network or volume left"
fi

step "figures"
printf 'cluster up %s s | deploy %s s | DAG %s s | no-change re-run %s s | --check %s s\n' \
  "$T_UP" "$T_DEPLOY" "$T_DAG" "$T_RERUN" "$T_CHECK"
rm -rf "$OUT"
