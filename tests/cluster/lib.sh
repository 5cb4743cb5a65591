# shellcheck shell=bash
# Helpers for the cluster tests (sourced): ssh into local-cluster hosts, read the inventory,
# parse hfplay's --json output.
TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$TESTS_DIR/../../cluster/lib.sh"
HFPLAY="${HFPLAY:-$REPO_ROOT/target/release/hfplay}"
INV="$INVENTORY_DIR/hosts.ini"

step() { printf '\n\033[1;35m### %s  (%s)\033[0m\n' "$*" "$(date -u +%T)"; }
pass() { printf '\033[1;32mPASS\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31mFAIL\033[0m %s\n' "$*" >&2; exit 1; }

# ip of an inventory host (from the cluster's fixed layout)
host_ip() { cluster_hosts | awk -v h="$1" '$1 == h { print $2 }'; }
# hosts of a group, one per line
group_hosts() { cluster_hosts | awk -v g="$1" '$3 == g { print $1 }'; }

# hssh HOST CMD...: run a command as root on a cluster host over SSH (the project's key).
hssh() {
  local h=$1; shift
  ssh -i "$SSH_KEY" -o UserKnownHostsFile="$SSH_KNOWN_HOSTS" -o StrictHostKeyChecking=yes \
    -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR "root@$(host_ip "$h")" "$@"
}

# psql on the current primary (as postgres, airflow DB): hpsql SQL
hpsql() {
  local db
  for db in $(group_hosts db); do
    if [ "$(hssh "$db" "cd / && sudo -u postgres psql -Atqc 'select pg_is_in_recovery()'" 2>/dev/null)" = f ]; then
      hssh "$db" "cd / && sudo -u postgres psql -d airflow -Atq -F '|' -c \"$1\""
      return
    fi
  done
  fail "no Postgres primary found"
}

# libpq options of a TCP connection to Postgres (hostssl only: TLS, certificate and name checked
# against the cluster CA), from the controller and from a cluster host.
PG_TLS_CTL="sslmode=verify-full sslrootcert=$INVENTORY_DIR/.secrets/tls/ca.crt"
PG_TLS_HOST="sslmode=verify-full sslrootcert=/etc/heirflow/tls/ca.crt"

AIRFLOW_CMD="sudo -u airflow env AIRFLOW_HOME=/opt/airflow /opt/airflow/venv/bin/airflow"

# json_changed FILE: prints "host changed" for every host of an hfplay --json document
json_changed() {
  python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
for h, s in sorted(d["stats"].items()): print(h, s["changed"], s["failed"], s["unreachable"])' "$1"
}

# run_dag DAG_ID RUN_ID [TIMEOUT]: waits until the DAG is parsed, unpauses and triggers it on
# the first scheduler host, then follows the run (state changes on stderr). Returns 0 when the
# run succeeded, 1 when it failed or did not finish within TIMEOUT seconds (default 600).
run_dag() {
  local dag=$1 run_id=$2 timeout=${3:-600} sched i start state last="" errors
  sched=$(group_hosts scheduler | head -1)
  # The DAG processor may not have parsed the file yet right after a deploy: wait for it.
  for ((i = 0; ; i++)); do
    hssh "$sched" "$AIRFLOW_CMD dags list -o json 2>/dev/null" | grep -q "\"$dag\"" && break
    # a DAG file that does not import never appears: say why at once
    errors=$(hssh "$sched" "$AIRFLOW_CMD dags list-import-errors -o json 2>/dev/null" | grep "$dag" || true)
    [ -z "$errors" ] || { echo "$dag does not import: $errors" >&2; return 1; }
    [ "$i" -lt 60 ] || { echo "$dag is not parsed after 5 minutes (dag-processor running?)" >&2; return 1; }
    sleep 5
  done
  echo "triggering $dag ($run_id) on $sched" >&2
  hssh "$sched" "$AIRFLOW_CMD dags unpause $dag >/dev/null 2>&1; $AIRFLOW_CMD dags trigger $dag -r $run_id >/dev/null"
  start=$(date +%s)
  while :; do
    state=$(dag_run_state "$dag" "$run_id")
    [ "$state" != "$last" ] && { echo "  $(($(date +%s) - start)) s: ${state:-not visible yet}" >&2; last=$state; }
    case "$state" in
      success) echo "DAG run $run_id: success" >&2; return 0 ;;
      failed) echo "DAG run $run_id: failed" >&2; return 1 ;;
    esac
    [ $(($(date +%s) - start)) -lt "$timeout" ] || { echo "DAG run $run_id did not finish in $timeout s" >&2; return 1; }
    sleep 3
  done
}

# celery_pong HOST SECONDS: how many Celery workers answer `inspect ping` asked from HOST (0 on error).
celery_pong() {
  hssh "$1" "cd /opt/airflow && sudo -u airflow env AIRFLOW_HOME=/opt/airflow /opt/airflow/venv/bin/celery -A airflow.providers.celery.executors.celery_executor.app inspect ping -t $2 -j" 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0
}

# dag_run_state DAG_ID RUN_ID: the run's state from the metadata DB (empty while not visible)
dag_run_state() {
  hpsql "select state from dag_run where dag_id = '$1' and run_id = '$2'" 2>/dev/null || true
}

# model_select_result RUN_ID: the JSON the run's `final` task returned (its XCom)
model_select_result() {
  hpsql "select value from xcom where dag_id = 'model_select' and run_id = '$1' and task_id = 'final' and key = 'return_value'"
}
