#!/usr/bin/env bash
# Triggers the heirflow_smoke DAG (16 tasks) on the first scheduler host and waits for the run.
# Exits 0 only when the DAG run succeeded; prints the UI URL and where the admin password is.
# usage: scripts/smoke-dag.sh [--print-run-id]   (last line of output = the run id)
# env: SMOKE_TIMEOUT (seconds, default 600)
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
PRINT_ID=0; [ "${1:-}" = --print-run-id ] && PRINT_ID=1
timeout=${SMOKE_TIMEOUT:-600}
sched=$(group_hosts scheduler | head -1)
web=$(group_hosts web | head -1)
run_id="smoke-$(date +%Y%m%dT%H%M%S)-$$"

# The DAG processor may not have parsed the file yet right after a deploy: wait for it.
for ((i = 0; ; i++)); do
  hssh "$sched" "$AIRFLOW_CMD dags list -o json 2>/dev/null" | grep -q '"heirflow_smoke"' && break
  [ "$i" -lt 60 ] || { echo "heirflow_smoke is not parsed after 5 minutes (dag-processor running?)" >&2; exit 1; }
  sleep 5
done
echo "triggering heirflow_smoke ($run_id) on $sched" >&2
hssh "$sched" "$AIRFLOW_CMD dags unpause heirflow_smoke >/dev/null 2>&1; $AIRFLOW_CMD dags trigger heirflow_smoke -r $run_id >/dev/null"
start=$(date +%s); last=""
while :; do
  state=$(hssh "$sched" "$AIRFLOW_CMD dags list-runs heirflow_smoke -o json 2>/dev/null" \
    | python3 -c 'import json,sys
# the CLI prints warnings on stdout before the JSON document (one line)
for line in sys.stdin:
    if line.startswith("["):
        for r in json.loads(line):
            if r["run_id"] == sys.argv[1]: print(r["state"])' "$run_id" || true)
  [ "$state" != "$last" ] && { echo "  $(($(date +%s) - start)) s: ${state:-not visible yet}" >&2; last=$state; }
  case "$state" in
    success)
      echo "DAG run $run_id: success" >&2
      echo "UI: http://$(host_ip "$web"):8080  (user admin, password in inventory/local/.secrets/airflow_admin_password)" >&2
      [ "$PRINT_ID" = 1 ] && echo "$run_id"
      exit 0 ;;
    failed) echo "DAG run $run_id: failed" >&2; exit 1 ;;
  esac
  [ $(($(date +%s) - start)) -lt "$timeout" ] || { echo "DAG run $run_id did not finish in $timeout s" >&2; exit 1; }
  sleep 3
done
