#!/usr/bin/env bash
# Triggers the heirflow_smoke DAG (16 tasks) on the first scheduler host and waits for the run.
# Exits 0 only when the DAG run succeeded; prints the UI URL and where the admin password is.
# usage: scripts/smoke-dag.sh [--print-run-id]   (last line of output = the run id)
# env: SMOKE_TIMEOUT (seconds, default 600)
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
PRINT_ID=0; [ "${1:-}" = --print-run-id ] && PRINT_ID=1
web=$(group_hosts web | head -1)
run_id="smoke-$(date +%Y%m%dT%H%M%S)-$$"
run_dag heirflow_smoke "$run_id" "${SMOKE_TIMEOUT:-600}" || exit 1
echo "UI: https://$(host_ip "$web"):8080  (user admin, password in inventory/local/.secrets/airflow_admin_password; the cluster CA: inventory/local/.secrets/tls/ca.crt)" >&2
[ "$PRINT_ID" = 1 ] && echo "$run_id"
exit 0
