#!/usr/bin/env bash
# Issue 15 on the deployed local cluster: grow, shrink and roll it while ledger DAG runs go on.
# heirflow-chaos runs the workload and, instead of faults, these operator steps one after
# another (each followed by the membership checks, tests/cluster/scale-check.sh):
#   add a worker, a scheduler host and a queue node   make local-add GROUP=… ×3, then site.yml
#   remove the three again                            make local-remove HOST=… ×3 (drains), site.yml
#   roll an airflow.cfg change over every host        site.yml with a changed airflow_config_extra
# then checks the invariants (every DAG run succeeded, no (task, try) ran twice, every task
# instance ran, no acknowledged commit lost, never two leaders) and prints each step's extra DAG
# time. Fails on any breach or failed step. The output folder (report, ledger, timeline, one log
# per step) stays in $SCALE_OUT (default: a temporary folder, removed on success).
# The cluster keeps its shape in the end (the added hosts are the removed ones) but carries the
# rolled setting: this test runs last, before local-down.
# usage: tests/cluster/scale-test.sh [extra heirflow-chaos run arguments]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
cd "$REPO_ROOT"
OUT=${SCALE_OUT:-$(mktemp -d /tmp/heirflow-scale-test.XXXXXX)}
cargo build --release -q --workspace --bins --examples
CHAOS=./target/release/heirflow-chaos

# The names add.sh will give (the next free one of each group), known before the run.
next_of() {
  local prefix n=1; prefix=$(group_prefix "$1")
  while group_hosts "$1" | grep -qx "$prefix$n"; do n=$((n + 1)); done
  echo "$prefix$n"
}
W=$(next_of worker); S=$(next_of scheduler); Q=$(next_of queue)
DEPLOY="$HFPLAY playbooks/site.yml -i inventory/local"
CHECK=tests/cluster/scale-check.sh
# A setting Airflow reads, changed on every host (its default is 1024).
ROLL_EXTRA='{"airflow_config_extra": {"core": {"max_map_length": 1025}}}'

step "grow, shrink and roll under running DAGs: + $W, $S, $Q, then - the same, then roll airflow.cfg"
# One step per operator action: the three hosts join in one deploy and leave in one deploy (each
# class's own checks after it), as an operator growing the cluster would do it; three deploys
# instead of seven keep this test within CI's budget.
if "$CHAOS" run -i "$INVENTORY_DIR" --out "$OUT" --step-gap 20 --tail 30 \
    --step "add-worker-scheduler-queue=cluster/add.sh worker && cluster/add.sh scheduler && cluster/add.sh queue && $DEPLOY && $CHECK present $W && $CHECK present $S && $CHECK present $Q" \
    --step "remove-worker-scheduler-queue=cluster/remove.sh $W && cluster/remove.sh $S && cluster/remove.sh $Q && $DEPLOY && $CHECK absent $W worker && $CHECK absent $S scheduler && $CHECK absent $Q queue" \
    --step "roll-airflow-cfg=$DEPLOY -e '$ROLL_EXTRA'" \
    "$@"; then
  pass "grow, shrink and roll: every step done, every invariant held"
else
  fail "grow, shrink and roll: a step or an invariant failed (report, ledger, step logs: $OUT)"
fi

step "the new worker took tasks while it was in the cluster"
n=$(grep -c "\"host\": *\"$W\"" "$OUT/ledger.jsonl" || true)
[ "$n" -ge 1 ] || fail "no task ran on $W (ledger $OUT/ledger.jsonl)"
pass "$n ledger events from $W"

step "the roll reached every Airflow host, one at a time"
for h in $(group_hosts scheduler) $(group_hosts worker) $(group_hosts web); do
  hssh "$h" "grep -qx 'max_map_length = 1025' /opt/airflow/airflow.cfg" || fail "$h: airflow.cfg without the rolled setting"
done
pass "airflow.cfg rolled on every Airflow host"
[ -n "${SCALE_OUT:-}" ] || rm -rf "$OUT"
