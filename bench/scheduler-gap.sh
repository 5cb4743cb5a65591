#!/usr/bin/env bash
# Scheduler succession vs native active-active, on the deployed local cluster (issue 4):
#   1. heir mode (as deployed): bench/heir-takeover.sh - kill -9 of the leader's supervisor ->
#      the next task queued by the new heir;
#   2. redeploys the scheduler hosts with -e scheduler_mode=native (both schedulers active),
#      MODE=native bench/heir-takeover.sh - kill -9 of one scheduler -> next task queued;
#   3. redeploys heir mode (also on failure, in a trap) and prints both side by side.
#   bench/scheduler-gap.sh        TRIALS=20 (default, per mode)
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
need_root
cd "$REPO_ROOT"
export TRIALS=${TRIALS:-20}
OUT=$(mktemp -d /tmp/scheduler-gap.XXXXXX)
deploy_mode() {
  echo "== redeploying the scheduler hosts with scheduler_mode=$1" >&2
  "$HFPLAY" playbooks/airflow.yml -i inventory/local --limit scheduler -e "scheduler_mode=$1" > "$OUT/deploy-$1.log" 2>&1 \
    || { tail -30 "$OUT/deploy-$1.log" >&2; return 1; }
}
restore() { deploy_mode heir || echo "restoring heir mode failed: see $OUT/deploy-heir.log" >&2; }
trap restore EXIT
bench/heir-takeover.sh | tee "$OUT/heir.txt"
deploy_mode native
MODE=native bench/heir-takeover.sh | tee "$OUT/native.txt"
trap - EXIT
restore
echo
echo "# kill -> next task queued, $TRIALS trials per mode"
printf 'heir mode   (one scheduler, takeover): %s\n' "$(grep 'kill -> queued' "$OUT/heir.txt" | sed 's/kill -> queued *//')"
printf 'native mode (two active, one killed):  %s\n' "$(grep 'kill -> queued' "$OUT/native.txt" | sed 's/kill -> queued *//')"
rm -rf "$OUT"
