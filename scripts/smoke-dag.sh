#!/usr/bin/env bash
# Triggers the heirflow_smoke DAG on the first scheduler host and waits for its result.
# Exits 0 only when the DAG run succeeded; prints the UI URL and where the admin password is.
set -euo pipefail
cd "$(dirname "$0")/.."
inv=inventory/local/hosts.ini
key=$(sed -n 's/.*ansible_ssh_private_key_file=\([^ ]*\).*/\1/p' "$inv" | head -1)
sched=$(awk '/^\[scheduler\]/{f=1;next} /^\[/{f=0} f&&NF{for(i=1;i<=NF;i++) if($i ~ /^ansible_host=/){sub("ansible_host=","",$i); print $i; exit}}' "$inv")
web=$(awk '/^\[web\]/{f=1;next} /^\[/{f=0} f&&NF{for(i=1;i<=NF;i++) if($i ~ /^ansible_host=/){sub("ansible_host=","",$i); print $i; exit}}' "$inv")
ssh_() { ssh -i "$key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@$sched" "$@"; }
run_id="smoke-$(date +%s)"
airflow="sudo -u airflow env AIRFLOW_HOME=/opt/airflow /opt/airflow/venv/bin/airflow"
echo "triggering heirflow_smoke ($run_id) on $sched"
ssh_ "$airflow dags unpause heirflow_smoke >/dev/null 2>&1 || true; $airflow dags trigger heirflow_smoke -r $run_id >/dev/null"
for _ in $(seq 1 60); do
  state=$(ssh_ "$airflow dags list-runs heirflow_smoke -o plain 2>/dev/null | awk '\$2==\"$run_id\"{print \$3}'")
  case "$state" in
    success) echo "DAG run $run_id: success"; echo "UI: http://$web:8080  admin user: admin, password: inventory/local/.secrets/airflow_admin_password"; exit 0 ;;
    failed) echo "DAG run $run_id: failed" >&2; exit 1 ;;
  esac
  sleep 5
done
echo "DAG run $run_id did not finish in 5 minutes" >&2
exit 1
